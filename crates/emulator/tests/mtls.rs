//! mTLS Proof-of-Possession: the certificate alone on mtlsauth hosts (global and regional),
//! jwt-pop with a federated assertion, Bearer over mTLS, and the rejections.
// Test helpers (not only #[test] functions) may unwrap.
#![allow(clippy::unwrap_used)]

mod support;

use fic_emulator::{codes, App, Fault, FederatedCredential};
use serde_json::json;
use support::*;

const MTLS: &str = "mtlsauth.microsoft.com";
const MTLS_REGIONAL: &str = "westus3.mtlsauth.microsoft.com";

fn pop_form(client_id: &str) -> Vec<(&str, &str)> {
    vec![
        ("client_id", client_id),
        ("scope", "https://vault.azure.net/.default"),
        ("grant_type", "client_credentials"),
        ("client_info", "2"),
        ("token_type", "mtls_pop"),
    ]
}

#[tokio::test]
async fn certificate_alone_gets_a_bound_token_on_global_and_regional_mtlsauth() {
    let a = TestCert::a();
    let emu = standard_builder().start().await.unwrap();
    for host in [MTLS, MTLS_REGIONAL] {
        let response = token(&emu, host, &pop_form(CERT_APP), Some(&a.identity())).await;
        assert_eq!(response.status, 200, "{host}: {:#}", response.json());
        let body = response.json();
        assert_eq!(body["token_type"], "mtls_pop");
        let claims = claims_of(body["access_token"].as_str().unwrap());
        assert_eq!(claims["cnf"], json!({ "x5t#S256": a.thumbprint() }));
        assert_eq!(claims["aud"], "https://vault.azure.net");
        assert_eq!(claims["appid"], CERT_APP);
        let logged = emu.log().last_token_request().unwrap();
        assert_eq!(logged.host, host);
        assert_eq!(
            logged.client_cert_thumbprint.as_deref(),
            Some(a.thumbprint().as_str())
        );
    }
    // An SN+I registration authenticates through the TLS chain as well.
    let pki = sni_pki("Contoso Root", "client.contoso.com", false);
    emu.directory().add_app(
        App::new(SNI_APP, TENANT).subject_issuer("client.contoso.com", pki.root_der.clone()),
    );
    let response = token(&emu, MTLS, &pop_form(SNI_APP), Some(&pki.leaf.identity())).await;
    assert_eq!(response.status, 200, "{:#}", response.json());
    assert_eq!(
        claims_of(response.json()["access_token"].as_str().unwrap())["cnf"]["x5t#S256"],
        pki.leaf.thumbprint()
    );
}

#[tokio::test]
async fn mtls_pop_rejections() {
    let a = TestCert::a();
    let b = TestCert::b();
    let emu = standard_builder().start().await.unwrap();
    // Not on a login host.
    let response = token(
        &emu,
        "login.microsoftonline.com",
        &pop_form(CERT_APP),
        Some(&a.identity()),
    )
    .await;
    response.assert_aadsts(400, "invalid_request", codes::EMU_MTLS_HOST_REQUIRED);
    // No client certificate on the mtlsauth host.
    let response = token(&emu, MTLS, &pop_form(CERT_APP), None).await;
    response.assert_aadsts(
        401,
        "invalid_client",
        codes::EMU_CLIENT_CERTIFICATE_REQUIRED,
    );
    // A certificate that is not the app's.
    let response = token(&emu, MTLS, &pop_form(CERT_APP), Some(&b.identity())).await;
    response.assert_aadsts(401, "invalid_client", codes::BAD_ASSERTION_SIGNATURE);
    // A secret over mTLS.
    let mut f = pop_form(SECRET_APP);
    f.push(("client_secret", SECRET));
    token(&emu, MTLS, &f, Some(&a.identity()))
        .await
        .assert_aadsts(
            400,
            "invalid_request",
            codes::EMU_CREDENTIAL_NOT_ALLOWED_OVER_MTLS,
        );
    // A jwt-bearer assertion with token_type=mtls_pop.
    let assertion = cert_assertion(
        &a,
        "PS256",
        CERT_APP,
        &endpoint(MTLS, TENANT),
        now_unix(),
        true,
    );
    let mut f = pop_form(CERT_APP);
    f.push(("client_assertion_type", JWT_BEARER));
    f.push(("client_assertion", &assertion));
    token(&emu, MTLS, &f, Some(&a.identity()))
        .await
        .assert_aadsts(
            400,
            "invalid_request",
            codes::EMU_CREDENTIAL_NOT_ALLOWED_OVER_MTLS,
        );
    // Another token_type.
    let mut f = pop_form(CERT_APP);
    f.retain(|(k, _)| *k != "token_type");
    f.push(("token_type", "pop"));
    token(&emu, MTLS, &f, Some(&a.identity()))
        .await
        .assert_aadsts(400, "invalid_request", codes::EMU_UNSUPPORTED_TOKEN_TYPE);
    // The certificate alone without token_type: no credential.
    let mut f = pop_form(CERT_APP);
    f.retain(|(k, _)| *k != "token_type");
    token(&emu, MTLS, &f, Some(&a.identity()))
        .await
        .assert_aadsts(
            401,
            "invalid_client",
            codes::CREDENTIAL_REQUIRED_CLIENT_CREDENTIALS,
        );
}

#[tokio::test]
async fn bearer_over_mtls_with_a_jwt_bearer_assertion() {
    let a = TestCert::a();
    let emu = standard_builder().start().await.unwrap();
    let assertion = cert_assertion(
        &a,
        "PS256",
        CERT_APP,
        &endpoint(MTLS_REGIONAL, TENANT),
        now_unix(),
        true,
    );
    let response = token(
        &emu,
        MTLS_REGIONAL,
        &[
            ("client_id", CERT_APP),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &assertion),
            ("scope", GRAPH_SCOPE),
            ("grant_type", "client_credentials"),
        ],
        Some(&a.identity()),
    )
    .await;
    assert_eq!(response.status, 200, "{:#}", response.json());
    assert_eq!(response.json()["token_type"], "Bearer");
    assert!(claims_of(response.json()["access_token"].as_str().unwrap())
        .get("cnf")
        .is_none());
}

/// Leg 1: a Bearer token of the secret app for the exchange audience (the FIC subject is its
/// service principal). Leg 2: the FIC app presents it as jwt-pop with its binding certificate.
#[tokio::test]
async fn jwt_pop_with_a_federated_assertion_and_the_client_certificate() {
    let a = TestCert::a();
    let b = TestCert::b();
    let emu = standard_builder().start().await.unwrap();
    let leg1_subject = emu.directory().app(SECRET_APP).unwrap().object_id;
    emu.directory().add_app(
        App::new(FIC_APP, TENANT)
            .certificate(a.der.clone())
            .federated_credential(FederatedCredential::new(
                format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
                leg1_subject,
                "api://AzureADTokenExchange",
            )),
    );
    let leg1 = secret_token(&emu, EXCHANGE_SCOPE).await;
    let leg2 =
        |identity: Option<Identity>, assertion_type: &'static str, assertion: String, pop: bool| {
            let emu = &emu;
            async move {
                let mut f = vec![
                    ("client_id", FIC_APP),
                    ("client_assertion_type", assertion_type),
                    ("client_assertion", assertion.as_str()),
                    ("scope", "https://vault.azure.net/.default"),
                    ("grant_type", "client_credentials"),
                ];
                if pop {
                    f.push(("token_type", "mtls_pop"));
                }
                token(emu, MTLS, &f, identity.as_ref()).await
            }
        };
    // jwt-pop + mtls_pop: a token bound to the TLS certificate.
    let response = leg2(Some(a.identity()), JWT_POP, leg1.clone(), true).await;
    assert_eq!(response.status, 200, "{:#}", response.json());
    assert_eq!(response.json()["token_type"], "mtls_pop");
    let claims = claims_of(response.json()["access_token"].as_str().unwrap());
    assert_eq!(claims["cnf"]["x5t#S256"], a.thumbprint());
    assert_eq!(claims["appid"], FIC_APP);
    // jwt-pop without token_type: Bearer over mTLS.
    let response = leg2(Some(a.identity()), JWT_POP, leg1.clone(), false).await;
    assert_eq!(response.json()["token_type"], "Bearer");
    // The assertion has no cnf, so the TLS certificate must be registered: B is not.
    let response = leg2(Some(b.identity()), JWT_POP, leg1.clone(), true).await;
    response.assert_aadsts(
        401,
        "invalid_client",
        codes::EMU_CERTIFICATE_BINDING_MISMATCH,
    );
    // No certificate at all.
    let response = leg2(None, JWT_POP, leg1.clone(), true).await;
    response.assert_aadsts(
        401,
        "invalid_client",
        codes::EMU_CLIENT_CERTIFICATE_REQUIRED,
    );
    // jwt-pop on a login host.
    let response = token(
        &emu,
        "login.microsoftonline.com",
        &[
            ("client_id", FIC_APP),
            ("client_assertion_type", JWT_POP),
            ("client_assertion", &leg1),
            ("scope", GRAPH_SCOPE),
            ("grant_type", "client_credentials"),
        ],
        None,
    )
    .await;
    response.assert_aadsts(400, "invalid_request", codes::EMU_MTLS_HOST_REQUIRED);
}

/// A bound Leg-1 token (mtls_pop, cnf = A) used as a jwt-pop assertion must come with A.
#[tokio::test]
async fn jwt_pop_assertion_with_cnf_must_match_the_tls_certificate() {
    let a = TestCert::a();
    let b = TestCert::b();
    let emu = standard_builder().start().await.unwrap();
    let leg1_subject = emu.directory().app(CERT_APP).unwrap().object_id;
    emu.directory()
        .add_app(
            App::new(FIC_APP, TENANT).federated_credential(FederatedCredential::new(
                format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
                leg1_subject,
                "api://AzureADTokenExchange",
            )),
        );
    let mut f = pop_form(CERT_APP);
    f.retain(|(k, _)| *k != "scope");
    f.push(("scope", EXCHANGE_SCOPE));
    let leg1 = token(&emu, MTLS, &f, Some(&a.identity())).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(claims_of(&leg1)["cnf"]["x5t#S256"], a.thumbprint());
    let leg2 = |identity: Identity, assertion_type: &'static str| {
        let emu = &emu;
        let leg1 = leg1.clone();
        async move {
            token(
                emu,
                MTLS,
                &[
                    ("client_id", FIC_APP),
                    ("client_assertion_type", assertion_type),
                    ("client_assertion", &leg1),
                    ("scope", GRAPH_SCOPE),
                    ("grant_type", "client_credentials"),
                    ("token_type", "mtls_pop"),
                ],
                Some(&identity),
            )
            .await
        }
    };
    let response = leg2(a.identity(), JWT_POP).await;
    assert_eq!(response.status, 200, "{:#}", response.json());
    assert_eq!(
        claims_of(response.json()["access_token"].as_str().unwrap())["cnf"]["x5t#S256"],
        a.thumbprint()
    );
    leg2(b.identity(), JWT_POP).await.assert_aadsts(
        401,
        "invalid_client",
        codes::EMU_CERTIFICATE_BINDING_MISMATCH,
    );
    // The bound assertion sent as jwt-bearer (no proof) is refused.
    let response = token(
        &emu,
        "login.microsoftonline.com",
        &[
            ("client_id", FIC_APP),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &leg1),
            ("scope", GRAPH_SCOPE),
            ("grant_type", "client_credentials"),
        ],
        None,
    )
    .await;
    response.assert_aadsts(
        401,
        "invalid_client",
        codes::EMU_CERTIFICATE_BINDING_MISMATCH,
    );
}

#[tokio::test]
async fn bearer_downgrade_fault_answers_a_bearer_token_to_an_mtls_pop_request() {
    let a = TestCert::a();
    let emu = standard_builder().start().await.unwrap();
    emu.faults().inject(Fault::bearer_downgrade().times(1));
    // A Bearer request does not use the fault up.
    let secret = secret_token(&emu, GRAPH_SCOPE).await;
    assert!(!secret.is_empty());
    assert_eq!(emu.faults().active(), 1);
    let response = token(&emu, MTLS, &pop_form(CERT_APP), Some(&a.identity())).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["token_type"], "Bearer");
    assert!(claims_of(response.json()["access_token"].as_str().unwrap())
        .get("cnf")
        .is_none());
    assert_eq!(
        emu.log().last_token_request().unwrap().fault.as_deref(),
        Some("bearer downgrade")
    );
    assert_eq!(emu.faults().active(), 0);
    // Next one is bound again.
    let response = token(&emu, MTLS, &pop_form(CERT_APP), Some(&a.identity())).await;
    assert_eq!(response.json()["token_type"], "mtls_pop");
}
