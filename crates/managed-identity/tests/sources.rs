//! Source detection and the exact request of every source, for every kind of identity.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use fic_managed_identity::{codes, ManagedIdentityId, ManagedIdentitySource};
use fic_oauth_core::{ManualClock, TokenCredential, TokenRequestOptions};
use support::*;

const APP_SERVICE_ENDPOINT: &str = "http://127.0.0.1:41234/msi/token";
const SF_ENDPOINT: &str = "https://10.0.0.4:2377/metadata/identity/oauth2/token";
const ML_ENDPOINT: &str = "http://127.0.0.1:46808/msi/token";
const CLOUD_SHELL_ENDPOINT: &str = "http://localhost:50342/oauth2/token";
const ARC_ENDPOINT: &str = "http://127.0.0.1:40342/metadata/identity/oauth2/token";
const THUMBPRINT: &str = "A9993E364706816ABA3E25717850C26C9CD0D89D";

fn app_service_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("IDENTITY_ENDPOINT", APP_SERVICE_ENDPOINT),
        ("IDENTITY_HEADER", "app-secret"),
    ]
}

fn sf_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("IDENTITY_ENDPOINT", SF_ENDPOINT),
        ("IDENTITY_HEADER", "sf-secret"),
        ("IDENTITY_SERVER_THUMBPRINT", THUMBPRINT),
    ]
}

fn ml_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("MSI_ENDPOINT", ML_ENDPOINT),
        ("MSI_SECRET", "ml-secret"),
        ("DEFAULT_IDENTITY_CLIENT_ID", "ml-default-client"),
    ]
}

fn arc_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("IDENTITY_ENDPOINT", ARC_ENDPOINT),
        ("IMDS_ENDPOINT", "http://127.0.0.1:40342"),
    ]
}

/// Gets one token for ARM with `id` from the source of `environment`; returns the request.
async fn one_request(
    environment: &[(&str, &str)],
    id: ManagedIdentityId,
) -> (ManagedIdentitySource, Recorded) {
    let transport = FakeTransport::new();
    transport.reply(200, &token_body("tok"));
    let clock = ManualClock::at_unix(NOW);
    let credential = builder(&transport, &clock, env(environment))
        .id(id.clone())
        .build()
        .unwrap();
    let token = credential
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(token.token.expose(), "tok");
    let requests = transport.requests();
    assert_eq!(requests.len(), 1, "{id:?}");
    (credential.source(), requests.into_iter().next().unwrap())
}

fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn imds_requests() {
    let expected_id = [
        None,
        Some(("client_id", CLIENT_ID)),
        Some(("msi_res_id", RESOURCE_ID)),
        Some(("object_id", OBJECT_ID)),
    ];
    for (id, param) in all_ids().into_iter().zip(expected_id) {
        let (source, r) = one_request(&[], id.clone()).await;
        assert_eq!(source, ManagedIdentitySource::Imds);
        assert_eq!(r.method, "GET");
        assert_eq!(
            r.base(),
            "http://169.254.169.254/metadata/identity/oauth2/token"
        );
        let mut expected = vec![
            ("api-version", "2018-02-01"),
            ("resource", "https://management.azure.com"),
        ];
        expected.extend(param);
        assert_eq!(r.query(), query(&expected), "{id:?}");
        assert_eq!(r.header("metadata").as_deref(), Some("true"));
        assert_eq!(r.header("x-client-sku").as_deref(), Some("fic-rs"));
        assert!(r.header("x-ms-client-request-id").is_some());
        assert!(r.identity.is_none());
        assert!(r.body.is_empty());
    }
}

#[tokio::test]
async fn app_service_requests() {
    let expected_id = [
        None,
        Some(("client_id", CLIENT_ID)),
        Some(("mi_res_id", RESOURCE_ID)),
        Some(("object_id", OBJECT_ID)),
    ];
    for (id, param) in all_ids().into_iter().zip(expected_id) {
        let (source, r) = one_request(&app_service_env(), id.clone()).await;
        assert_eq!(source, ManagedIdentitySource::AppService);
        assert_eq!(r.method, "GET");
        assert_eq!(r.base(), APP_SERVICE_ENDPOINT);
        let mut expected = vec![
            ("api-version", "2019-08-01"),
            ("resource", "https://management.azure.com"),
        ];
        expected.extend(param);
        assert_eq!(r.query(), query(&expected), "{id:?}");
        assert_eq!(r.header("x-identity-header").as_deref(), Some("app-secret"));
        assert!(r.headers["x-identity-header"].is_sensitive());
        assert_eq!(r.header("metadata"), None);
    }
}

#[tokio::test]
async fn service_fabric_requests_and_unsupported_kinds() {
    for id in [
        ManagedIdentityId::SystemAssigned,
        ManagedIdentityId::ObjectId(OBJECT_ID.into()),
    ] {
        let (source, r) = one_request(&sf_env(), id.clone()).await;
        assert_eq!(source, ManagedIdentitySource::ServiceFabric);
        assert_eq!(r.method, "GET");
        assert_eq!(r.base(), SF_ENDPOINT);
        let mut expected = vec![
            ("api-version", "2020-05-01"),
            ("resource", "https://management.azure.com"),
        ];
        if id.is_user_assigned() {
            expected.push(("principalId", OBJECT_ID));
        }
        assert_eq!(r.query(), query(&expected), "{id:?}");
        assert_eq!(r.header("secret").as_deref(), Some("sf-secret"));
        assert!(r.headers["secret"].is_sensitive());
    }
    let clock = ManualClock::at_unix(NOW);
    for id in [
        ManagedIdentityId::ClientId(CLIENT_ID.into()),
        ManagedIdentityId::ResourceId(RESOURCE_ID.into()),
    ] {
        let err = builder(&FakeTransport::new(), &clock, env(&sf_env()))
            .id(id)
            .build()
            .unwrap_err();
        assert_eq!(
            err.code(),
            &codes::USER_ASSIGNED_MANAGED_IDENTITY_NOT_CONFIGURABLE_AT_RUNTIME
        );
        assert!(err.message().contains("principalId"), "{err}");
    }
    // The endpoint must be https: its certificate is pinned.
    let mut plain = sf_env();
    plain[0].1 = "http://10.0.0.4:2377/metadata/identity/oauth2/token";
    let err = builder(&FakeTransport::new(), &clock, env(&plain))
        .build()
        .unwrap_err();
    assert_eq!(err.code(), &codes::INVALID_MANAGED_IDENTITY_ENDPOINT);
}

#[tokio::test]
async fn machine_learning_requests_and_unsupported_kinds() {
    for (id, client) in [
        (ManagedIdentityId::SystemAssigned, "ml-default-client"),
        (ManagedIdentityId::ClientId(CLIENT_ID.into()), CLIENT_ID),
    ] {
        let (source, r) = one_request(&ml_env(), id).await;
        assert_eq!(source, ManagedIdentitySource::MachineLearning);
        assert_eq!(r.method, "GET");
        assert_eq!(r.base(), ML_ENDPOINT);
        assert_eq!(
            r.query(),
            query(&[
                ("api-version", "2017-09-01"),
                ("resource", "https://management.azure.com"),
                ("clientid", client)
            ])
        );
        assert_eq!(r.header("metadata").as_deref(), Some("true"));
        assert_eq!(r.header("secret").as_deref(), Some("ml-secret"));
    }
    let clock = ManualClock::at_unix(NOW);
    for id in [
        ManagedIdentityId::ResourceId(RESOURCE_ID.into()),
        ManagedIdentityId::ObjectId(OBJECT_ID.into()),
    ] {
        let err = builder(&FakeTransport::new(), &clock, env(&ml_env()))
            .id(id)
            .build()
            .unwrap_err();
        assert_eq!(err.code(), &codes::INVALID_MANAGED_IDENTITY_ID_TYPE);
    }
    let without_default = &ml_env()[..2];
    let err = builder(&FakeTransport::new(), &clock, env(without_default))
        .build()
        .unwrap_err();
    assert_eq!(err.code(), &codes::INVALID_MANAGED_IDENTITY_ID_TYPE);
    assert!(
        err.message().contains("DEFAULT_IDENTITY_CLIENT_ID"),
        "{err}"
    );
}

#[tokio::test]
async fn cloud_shell_request_and_unsupported_kinds() {
    let (source, r) = one_request(
        &[("MSI_ENDPOINT", CLOUD_SHELL_ENDPOINT)],
        ManagedIdentityId::SystemAssigned,
    )
    .await;
    assert_eq!(source, ManagedIdentitySource::CloudShell);
    assert_eq!(r.method, "POST");
    assert_eq!(r.uri, CLOUD_SHELL_ENDPOINT);
    assert_eq!(r.body_text(), "resource=https%3A%2F%2Fmanagement.azure.com");
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(r.header("metadata").as_deref(), Some("true"));
    let clock = ManualClock::at_unix(NOW);
    for id in all_ids().into_iter().skip(1) {
        let err = builder(
            &FakeTransport::new(),
            &clock,
            env(&[("MSI_ENDPOINT", CLOUD_SHELL_ENDPOINT)]),
        )
        .id(id)
        .build()
        .unwrap_err();
        assert_eq!(
            err.code(),
            &codes::USER_ASSIGNED_MANAGED_IDENTITY_NOT_SUPPORTED
        );
    }
}

#[tokio::test]
async fn azure_arc_first_request_and_unsupported_kinds() {
    let (source, r) = one_request(&arc_env(), ManagedIdentityId::SystemAssigned).await;
    assert_eq!(source, ManagedIdentitySource::AzureArc);
    assert_eq!(r.method, "GET");
    assert_eq!(r.base(), ARC_ENDPOINT);
    assert_eq!(
        r.query(),
        query(&[
            ("api-version", "2020-06-01"),
            ("resource", "https://management.azure.com")
        ])
    );
    assert_eq!(r.header("metadata").as_deref(), Some("true"));
    assert_eq!(r.header("authorization"), None);
    let clock = ManualClock::at_unix(NOW);
    for id in all_ids().into_iter().skip(1) {
        let err = builder(&FakeTransport::new(), &clock, env(&arc_env()))
            .id(id)
            .build()
            .unwrap_err();
        assert_eq!(
            err.code(),
            &codes::USER_ASSIGNED_MANAGED_IDENTITY_NOT_SUPPORTED
        );
    }
}

#[tokio::test]
async fn azure_arc_detected_by_agent_binary_uses_the_default_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("himds");
    std::fs::write(&agent, b"").unwrap();
    let transport = FakeTransport::new();
    transport.reply(200, &token_body("tok"));
    let clock = ManualClock::at_unix(NOW);
    let credential = builder(&transport, &clock, env(&[]))
        .arc_agent_path(&agent)
        .build()
        .unwrap();
    assert_eq!(credential.source(), ManagedIdentitySource::AzureArc);
    credential
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(
        transport.requests()[0].base(),
        "http://127.0.0.1:40342/metadata/identity/oauth2/token"
    );
    // Without the binary: IMDS.
    let credential = builder(&transport, &clock, env(&[]))
        .arc_agent_path(dir.path().join("missing"))
        .build()
        .unwrap();
    assert_eq!(credential.source(), ManagedIdentitySource::Imds);
}

#[test]
fn detection_order_and_empty_variables() {
    let detect = |pairs: &[(&str, &str)]| ManagedIdentitySource::detect(&env(pairs), || false);
    let mut all = sf_env();
    all.extend(ml_env());
    all.push(("IMDS_ENDPOINT", "http://127.0.0.1:40342"));
    assert_eq!(detect(&all), ManagedIdentitySource::ServiceFabric);
    assert_eq!(
        detect(&all[1..]),
        ManagedIdentitySource::MachineLearning,
        "no IDENTITY_ENDPOINT"
    );
    let mut app = app_service_env();
    app.extend(ml_env());
    assert_eq!(detect(&app), ManagedIdentitySource::AppService);
    let mut sf_empty_thumbprint = sf_env();
    sf_empty_thumbprint[2].1 = "";
    assert_eq!(
        detect(&sf_empty_thumbprint),
        ManagedIdentitySource::AppService
    );
    assert_eq!(
        detect(&[("MSI_ENDPOINT", ML_ENDPOINT), ("MSI_SECRET", "")]),
        ManagedIdentitySource::CloudShell
    );
    assert_eq!(
        detect(&[("MSI_ENDPOINT", ""), ("MSI_SECRET", "x")]),
        ManagedIdentitySource::Imds
    );
    let mut arc_and_cloud_shell = arc_env();
    arc_and_cloud_shell.push(("MSI_ENDPOINT", CLOUD_SHELL_ENDPOINT));
    assert_eq!(
        detect(&arc_and_cloud_shell),
        ManagedIdentitySource::CloudShell
    );
    assert_eq!(detect(&arc_env()), ManagedIdentitySource::AzureArc);
    assert_eq!(
        detect(&[("IDENTITY_ENDPOINT", ARC_ENDPOINT)]),
        ManagedIdentitySource::Imds
    );
    assert_eq!(
        ManagedIdentitySource::detect(&env(&[]), || true),
        ManagedIdentitySource::AzureArc
    );
    // The agent is looked for only when no variable decides.
    let asked = std::cell::Cell::new(false);
    ManagedIdentitySource::detect(&env(&app_service_env()), || {
        asked.set(true);
        true
    });
    assert!(!asked.get());
}

#[test]
fn invalid_endpoints_and_forced_sources() {
    let clock = ManualClock::at_unix(NOW);
    for bad in [
        "not a url",
        "ftp://127.0.0.1/token",
        "/relative/token",
        "http://user:pw@127.0.0.1/t",
    ] {
        let err = builder(
            &FakeTransport::new(),
            &clock,
            env(&[("IDENTITY_ENDPOINT", bad), ("IDENTITY_HEADER", "h")]),
        )
        .build()
        .unwrap_err();
        assert_eq!(
            err.code(),
            &codes::INVALID_MANAGED_IDENTITY_ENDPOINT,
            "{bad}"
        );
        assert!(err.message().contains("IDENTITY_ENDPOINT"), "{err}");
    }
    let err = builder(
        &FakeTransport::new(),
        &clock,
        env(&[("MSI_ENDPOINT", "nope")]),
    )
    .build()
    .unwrap_err();
    assert_eq!(err.code(), &codes::INVALID_MANAGED_IDENTITY_ENDPOINT);
    // A forced source needs its variables.
    let err = builder(&FakeTransport::new(), &clock, env(&[]))
        .source(ManagedIdentitySource::AppService)
        .build()
        .unwrap_err();
    assert_eq!(err.code(), &codes::MISSING_MANAGED_IDENTITY_ENV_VAR);
    // A forced IMDS ignores the App Service variables.
    let credential = builder(&FakeTransport::new(), &clock, env(&app_service_env()))
        .source(ManagedIdentitySource::Imds)
        .build()
        .unwrap();
    assert_eq!(credential.source(), ManagedIdentitySource::Imds);
    // mTLS PoP is IMDS only.
    let err = builder(&FakeTransport::new(), &clock, env(&app_service_env()))
        .mtls_pop(true)
        .build()
        .unwrap_err();
    assert_eq!(
        err.code().as_str(),
        "mtls_pop_not_supported_for_environment"
    );
    // Blank user-assigned ids are refused.
    let err = builder(&FakeTransport::new(), &clock, env(&[]))
        .id(ManagedIdentityId::ClientId("  ".into()))
        .build()
        .unwrap_err();
    assert_eq!(err.code().as_str(), "invalid_argument");
}

#[tokio::test]
async fn scopes_become_one_resource() {
    let transport = FakeTransport::new();
    let clock = ManualClock::at_unix(NOW);
    let credential = builder(&transport, &clock, env(&[])).build().unwrap();
    let options = TokenRequestOptions::default();
    let err = credential
        .get_token(&[ARM, "https://graph.microsoft.com/.default"], &options)
        .await
        .unwrap_err();
    assert_eq!(err.code(), &codes::EXACTLY_ONE_SCOPE_EXPECTED);
    let err = credential.get_token(&[], &options).await.unwrap_err();
    assert_eq!(err.code(), &codes::EXACTLY_ONE_SCOPE_EXPECTED);
    assert_eq!(transport.request_count(), 0);

    for (scope, resource) in [
        (
            "api://AzureADTokenExchange/.default",
            "api://AzureADTokenExchange",
        ),
        ("https://vault.azure.net", "https://vault.azure.net"),
        (
            "https://storage.azure.com//.default",
            "https://storage.azure.com/",
        ),
    ] {
        transport.reply(200, &token_body("t"));
        credential.get_token(&[scope], &options).await.unwrap();
        let last = transport.requests().pop().unwrap();
        assert!(
            last.query()
                .contains(&("resource".to_owned(), resource.to_owned())),
            "{scope}"
        );
    }
}
