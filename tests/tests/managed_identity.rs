//! Managed identity end to end: `fic_managed_identity::ManagedIdentity` against the emulator's
//! endpoints for every source (the exact request each one sends, for the system-assigned and each
//! kind of user-assigned identity), retries in virtual time, the Azure Arc challenge with a real
//! file, IMDSv2 mTLS PoP (certificate minting, reuse and re-minting), and managed identity as
//! Leg 1 of FIC.
//!
//! The credentials get their environment from `.environment(map)` (never the process
//! environment), a `ManualClock` as clock and sleeper, and the world's transport: production
//! URLs (`169.254.169.254`, `*.mtlsauth.microsoft.com`, Arc's `127.0.0.1:40342`) through its
//! resolver overrides, the loopback endpoints of App Service, Machine Learning, Cloud Shell and
//! Azure Arc as the emulator publishes them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fic_emulator::{
    App, Emulator, EmulatorBuilder, Fault, FaultTarget, FederatedCredential, LoggedRequest,
    ManagedIdentity as EmulatedIdentity, ManagedIdentitySource as Host, Route,
};
use fic_flows::{ResourceClient, TwoLeg};
use fic_managed_identity::service_fabric::ServiceFabricTransport;
use fic_managed_identity::{
    codes, ManagedIdentity, ManagedIdentityBuilder, ManagedIdentityId, ManagedIdentitySource,
};
use fic_mtls_transport::MtlsTransport;
use fic_oauth_core::{
    AccessToken, Clock as _, Error, ManualClock, TokenCredential, TokenRequestOptions, TokenSource,
    TokenType,
};
use fic_tests::{jwt_payload, World, TENANT};

const SAMI_CLIENT: &str = "0c1d2e3f-4a5b-4c6d-8e7f-000000005a01";
const SAMI_OBJECT: &str = "0c1d2e3f-4a5b-4c6d-8e7f-000000005a02";
const UAMI_CLIENT: &str = "0c1d2e3f-4a5b-4c6d-8e7f-00000000ba01";
const UAMI_OBJECT: &str = "0c1d2e3f-4a5b-4c6d-8e7f-00000000ba02";
const UAMI_RESOURCE: &str = "/subscriptions/9f8e7d6c-0000-4000-8000-000000000001/resourceGroups/e2e/providers/Microsoft.ManagedIdentity/userAssignedIdentities/e2e-uami";
const LEG2_APP: &str = "3c4d5e6f-0000-4000-8000-0000000000f2";
const ARM: &str = "https://management.azure.com";
const ARM_SCOPE: &str = "https://management.azure.com/.default";
const VAULT_SCOPE: &str = "https://vault.azure.net/.default";
const VAULT_URL: &str = "https://e2e-mi.vault.azure.net/secrets/s1";
const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
const EXCHANGE: &str = "api://AzureADTokenExchange";
const IMDS_TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
const PLATFORM_METADATA: &str = "/metadata/identity/getplatformmetadata";
const ISSUE_CREDENTIAL: &str = "/metadata/identity/issuecredential";

fn issuer() -> String {
    format!("https://login.microsoftonline.com/{TENANT}/v2.0")
}

/// The host's identities, and a Leg-2 app trusting both as federated credentials.
fn directory(clock: &ManualClock) -> EmulatorBuilder {
    Emulator::builder()
        .clock(Arc::new(clock.clone()))
        .managed_identity(EmulatedIdentity::system_assigned(
            SAMI_CLIENT,
            SAMI_OBJECT,
            TENANT,
        ))
        .managed_identity(EmulatedIdentity::user_assigned(
            UAMI_CLIENT,
            UAMI_OBJECT,
            UAMI_RESOURCE,
            TENANT,
        ))
        .app(
            App::new(LEG2_APP, TENANT)
                .roles(["Sites.Read.All"])
                .federated_credential(FederatedCredential::new(issuer(), SAMI_OBJECT, EXCHANGE))
                .federated_credential(FederatedCredential::new(issuer(), UAMI_OBJECT, EXCHANGE)),
        )
}

/// A manual clock at the current time, on a whole second (expiries are whole seconds).
fn whole_second_clock() -> ManualClock {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    ManualClock::at_unix(now)
}

/// A world and the manual clock both the emulator and the credentials run on.
async fn world() -> (World, ManualClock) {
    let clock = whole_second_clock();
    (World::start(directory(&clock)).await, clock)
}

/// A credential for `id` on a host whose environment is `env`: the world's transport, the
/// clock as clock and sleeper, no Azure Arc agent binary.
fn credential(
    world: &World,
    clock: &ManualClock,
    env: HashMap<String, String>,
    id: ManagedIdentityId,
) -> ManagedIdentityBuilder {
    ManagedIdentity::builder()
        .id(id)
        .environment(env)
        .arc_agent_path("/nonexistent/azcmagent/bin/himds")
        .transport(world.transport.clone())
        .clock(Arc::new(clock.clone()))
        .sleeper(Arc::new(clock.clone()))
}

fn env_of(world: &World, host: Host) -> HashMap<String, String> {
    world.emulator.managed_identity_environment(host)
}

async fn token_for(credential: &ManagedIdentity, scope: &str) -> Result<AccessToken, Error> {
    credential
        .get_token(&[scope], &TokenRequestOptions::default())
        .await
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The identity kinds and what each looks like on the wire of a source: `None` when the
/// source refuses the kind (with that error code).
struct Kind {
    id: ManagedIdentityId,
    client_id: &'static str,
    object_id: &'static str,
}

fn kinds() -> Vec<Kind> {
    vec![
        Kind {
            id: ManagedIdentityId::SystemAssigned,
            client_id: SAMI_CLIENT,
            object_id: SAMI_OBJECT,
        },
        Kind {
            id: ManagedIdentityId::ClientId(UAMI_CLIENT.into()),
            client_id: UAMI_CLIENT,
            object_id: UAMI_OBJECT,
        },
        Kind {
            id: ManagedIdentityId::ResourceId(UAMI_RESOURCE.into()),
            client_id: UAMI_CLIENT,
            object_id: UAMI_OBJECT,
        },
        Kind {
            id: ManagedIdentityId::ObjectId(UAMI_OBJECT.into()),
            client_id: UAMI_CLIENT,
            object_id: UAMI_OBJECT,
        },
    ]
}

#[track_caller]
fn assert_identity(token: &AccessToken, kind: &Kind, resource: &str) {
    assert_eq!(token.token_type, TokenType::Bearer);
    assert_eq!(token.source, TokenSource::IdentityProvider);
    let claims = jwt_payload(token.token.expose());
    assert_eq!(claims["appid"], kind.client_id, "{claims:#}");
    assert_eq!(claims["oid"], kind.object_id);
    assert_eq!(claims["sub"], kind.object_id);
    assert_eq!(claims["aud"], resource);
    assert_eq!(claims["idtyp"], "app");
    assert_eq!(claims["iss"], issuer());
}

fn last_of(world: &World, route: Route) -> LoggedRequest {
    world
        .emulator
        .log()
        .route_requests(route)
        .pop()
        .unwrap_or_else(|| panic!("no {route:?} request"))
}

// ---------------------------------------------------------------------------------------------
// The exact request of each source.

#[tokio::test]
async fn imds_requests_for_each_identity_kind() {
    let (world, clock) = world().await;
    let wire = [
        None,
        Some(("client_id", UAMI_CLIENT)),
        Some(("msi_res_id", UAMI_RESOURCE)),
        Some(("object_id", UAMI_OBJECT)),
    ];
    for (kind, parameter) in kinds().iter().zip(wire) {
        let mi = credential(&world, &clock, HashMap::new(), kind.id.clone())
            .build()
            .unwrap();
        assert_eq!(mi.source(), ManagedIdentitySource::Imds);
        let token = token_for(&mi, ARM_SCOPE).await.unwrap();
        assert_identity(&token, kind, ARM);
        let request = last_of(&world, Route::Imds);
        assert_eq!(request.method, "GET");
        assert_eq!(request.host, "169.254.169.254");
        assert_eq!(request.path, IMDS_TOKEN_PATH);
        let mut expected = vec![("api-version", "2018-02-01"), ("resource", ARM)];
        expected.extend(parameter);
        assert_eq!(request.query_pairs(), pairs(&expected), "{:?}", kind.id);
        assert_eq!(request.header("metadata"), Some("true"));
        assert!(request.header("x-ms-client-request-id").is_some());
        assert!(request.header("x-identity-header").is_none());
        assert_eq!(request.status, Some(200));
        // The expiry is the emulator's (a day, on the shared clock).
        let lifetime = token.expires_on.duration_since(clock.now()).unwrap();
        assert_eq!(lifetime, Duration::from_secs(86_399));
    }
    assert_eq!(world.emulator.log().route_requests(Route::Imds).len(), 4);
}

#[tokio::test]
async fn app_service_requests_for_each_identity_kind() {
    let (world, clock) = world().await;
    let env = env_of(&world, Host::AppService);
    let secret = env["IDENTITY_HEADER"].clone();
    let wire = [
        None,
        Some(("client_id", UAMI_CLIENT)),
        Some(("mi_res_id", UAMI_RESOURCE)),
        Some(("object_id", UAMI_OBJECT)),
    ];
    for (kind, parameter) in kinds().iter().zip(wire) {
        let mi = credential(&world, &clock, env.clone(), kind.id.clone())
            .build()
            .unwrap();
        assert_eq!(mi.source(), ManagedIdentitySource::AppService);
        let token = token_for(&mi, ARM_SCOPE).await.unwrap();
        assert_identity(&token, kind, ARM);
        let request = last_of(&world, Route::AppService);
        assert_eq!(request.method, "GET");
        assert_eq!(request.host, "127.0.0.1");
        assert_eq!(request.path, "/msi/token");
        let mut expected = vec![("api-version", "2019-08-01"), ("resource", ARM)];
        expected.extend(parameter);
        assert_eq!(request.query_pairs(), pairs(&expected), "{:?}", kind.id);
        assert_eq!(request.header("x-identity-header"), Some(secret.as_str()));
        assert!(request.header("metadata").is_none());
    }
}

#[tokio::test]
async fn machine_learning_requests_and_unsupported_kinds() {
    let (world, clock) = world().await;
    let env = env_of(&world, Host::MachineLearning);
    assert_eq!(env["DEFAULT_IDENTITY_CLIENT_ID"], SAMI_CLIENT);
    let secret = env["MSI_SECRET"].clone();
    for kind in kinds() {
        let built = credential(&world, &clock, env.clone(), kind.id.clone()).build();
        let (clientid, supported) = match &kind.id {
            ManagedIdentityId::SystemAssigned => (SAMI_CLIENT, true),
            ManagedIdentityId::ClientId(_) => (UAMI_CLIENT, true),
            _ => ("", false),
        };
        if !supported {
            assert_eq!(
                built.unwrap_err().code(),
                &codes::INVALID_MANAGED_IDENTITY_ID_TYPE,
                "{:?}",
                kind.id
            );
            continue;
        }
        let mi = built.unwrap();
        assert_eq!(mi.source(), ManagedIdentitySource::MachineLearning);
        let token = token_for(&mi, ARM_SCOPE).await.unwrap();
        assert_identity(&token, &kind, ARM);
        let request = last_of(&world, Route::MachineLearning);
        assert_eq!(request.method, "GET");
        assert_eq!(request.host, "127.0.0.1");
        assert_eq!(
            request.query_pairs(),
            pairs(&[
                ("api-version", "2017-09-01"),
                ("resource", ARM),
                ("clientid", clientid)
            ])
        );
        assert_eq!(request.header("metadata"), Some("true"));
        assert_eq!(request.header("secret"), Some(secret.as_str()));
    }
    // The numeric expires_on of Machine Learning is read.
    let mi = credential(&world, &clock, env, ManagedIdentityId::SystemAssigned)
        .build()
        .unwrap();
    let token = token_for(&mi, VAULT_SCOPE).await.unwrap();
    assert_eq!(
        token.expires_on.duration_since(clock.now()).unwrap(),
        Duration::from_secs(86_399)
    );
    // Without DEFAULT_IDENTITY_CLIENT_ID the system-assigned identity cannot be named.
    let mut bare = env_of(&world, Host::MachineLearning);
    bare.remove("DEFAULT_IDENTITY_CLIENT_ID");
    let err = credential(&world, &clock, bare, ManagedIdentityId::SystemAssigned)
        .build()
        .unwrap_err();
    assert_eq!(err.code(), &codes::INVALID_MANAGED_IDENTITY_ID_TYPE);
}

#[tokio::test]
async fn cloud_shell_request_and_unsupported_kinds() {
    let (world, clock) = world().await;
    let env = env_of(&world, Host::CloudShell);
    let mi = credential(
        &world,
        &clock,
        env.clone(),
        ManagedIdentityId::SystemAssigned,
    )
    .build()
    .unwrap();
    assert_eq!(mi.source(), ManagedIdentitySource::CloudShell);
    let token = token_for(&mi, ARM_SCOPE).await.unwrap();
    assert_identity(&token, &kinds()[0], ARM);
    let request = last_of(&world, Route::CloudShell);
    assert_eq!(request.method, "POST");
    assert_eq!(request.host, "127.0.0.1");
    assert_eq!(request.path, "/cloud-shell/oauth2/token");
    assert_eq!(request.query, None);
    assert_eq!(request.form, pairs(&[("resource", ARM)]));
    assert_eq!(request.header("metadata"), Some("true"));
    assert!(request
        .header("content-type")
        .unwrap()
        .starts_with("application/x-www-form-urlencoded"));
    for kind in kinds().into_iter().skip(1) {
        let err = credential(&world, &clock, env.clone(), kind.id.clone())
            .build()
            .unwrap_err();
        assert_eq!(
            err.code(),
            &codes::USER_ASSIGNED_MANAGED_IDENTITY_NOT_SUPPORTED,
            "{:?}",
            kind.id
        );
    }
    assert_eq!(
        world.emulator.log().route_requests(Route::CloudShell).len(),
        1
    );
}

#[tokio::test]
async fn service_fabric_requests_and_unsupported_kinds() {
    let (world, clock) = world().await;
    let env = env_of(&world, Host::ServiceFabric);
    let secret = env["IDENTITY_HEADER"].clone();
    let pinned = || {
        Arc::new(
            ServiceFabricTransport::builder(&env["IDENTITY_SERVER_THUMBPRINT"])
                .built_in_roots(false)
                .resolve(
                    fic_emulator::SERVICE_FABRIC_HOST_PORT,
                    world.emulator.service_fabric_addr(),
                )
                .build()
                .unwrap(),
        )
    };
    for kind in kinds() {
        let built = credential(&world, &clock, env.clone(), kind.id.clone())
            .service_fabric_transport(pinned())
            .build();
        let parameter = match &kind.id {
            ManagedIdentityId::SystemAssigned => None,
            ManagedIdentityId::ObjectId(_) => Some(("principalId", UAMI_OBJECT)),
            _ => {
                assert_eq!(
                    built.unwrap_err().code(),
                    &codes::USER_ASSIGNED_MANAGED_IDENTITY_NOT_CONFIGURABLE_AT_RUNTIME,
                    "{:?}",
                    kind.id
                );
                continue;
            }
        };
        let mi = built.unwrap();
        assert_eq!(mi.source(), ManagedIdentitySource::ServiceFabric);
        let token = token_for(&mi, ARM_SCOPE).await.unwrap();
        assert_identity(&token, &kind, ARM);
        let request = last_of(&world, Route::ServiceFabric);
        assert_eq!(request.method, "GET");
        assert_eq!(request.host, "10.0.0.4");
        assert_eq!(request.path, IMDS_TOKEN_PATH);
        let mut expected = vec![("api-version", "2020-05-01"), ("resource", ARM)];
        expected.extend(parameter);
        assert_eq!(request.query_pairs(), pairs(&expected));
        assert_eq!(request.header("secret"), Some(secret.as_str()));
    }
    // A wrong pin never reaches the endpoint's application layer.
    let wrong = Arc::new(
        ServiceFabricTransport::builder("00112233445566778899AABBCCDDEEFF00112233")
            .built_in_roots(false)
            .resolve(
                fic_emulator::SERVICE_FABRIC_HOST_PORT,
                world.emulator.service_fabric_addr(),
            )
            .build()
            .unwrap(),
    );
    let before = world
        .emulator
        .log()
        .route_requests(Route::ServiceFabric)
        .len();
    let mi = credential(&world, &clock, env, ManagedIdentityId::SystemAssigned)
        .service_fabric_transport(wrong)
        .build()
        .unwrap();
    assert!(token_for(&mi, VAULT_SCOPE).await.is_err());
    assert_eq!(
        world
            .emulator
            .log()
            .route_requests(Route::ServiceFabric)
            .len(),
        before
    );
}

// ---------------------------------------------------------------------------------------------
// Azure Arc: the challenge with a real file.

#[tokio::test]
async fn azure_arc_challenge_with_a_real_file() {
    let clock = whole_second_clock();
    let tokens = tempfile::tempdir().unwrap();
    let world = World::start(directory(&clock).azure_arc_token_directory(tokens.path())).await;
    let env = env_of(&world, Host::AzureArc);
    let mi = credential(
        &world,
        &clock,
        env.clone(),
        ManagedIdentityId::SystemAssigned,
    )
    .arc_token_directory(tokens.path())
    .build()
    .unwrap();
    assert_eq!(mi.source(), ManagedIdentitySource::AzureArc);
    let token = token_for(&mi, ARM_SCOPE).await.unwrap();
    assert_identity(&token, &kinds()[0], ARM);

    let requests = world.emulator.log().route_requests(Route::AzureArc);
    assert_eq!(requests.len(), 2, "the challenge, then the answer");
    let expected = pairs(&[("api-version", "2020-06-01"), ("resource", ARM)]);
    for request in &requests {
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/azure-arc/metadata/identity/oauth2/token");
        assert_eq!(request.query_pairs(), expected);
        assert_eq!(request.header("metadata"), Some("true"));
    }
    assert_eq!(requests[0].status, Some(401));
    assert!(requests[0].header("authorization").is_none());
    assert_eq!(requests[1].status, Some(200));
    let secret = requests[1]
        .header("authorization")
        .unwrap()
        .strip_prefix("Basic ")
        .unwrap();
    assert_eq!(secret.len(), 64);
    // The emulator removed the file it wrote once it was used.
    assert_eq!(std::fs::read_dir(tokens.path()).unwrap().count(), 0);

    // A user-assigned identity is refused before any request.
    for kind in kinds().into_iter().skip(1) {
        let err = credential(&world, &clock, env.clone(), kind.id)
            .arc_token_directory(tokens.path())
            .build()
            .unwrap_err();
        assert_eq!(
            err.code(),
            &codes::USER_ASSIGNED_MANAGED_IDENTITY_NOT_SUPPORTED
        );
    }
    // A client whose token directory is elsewhere refuses the emulator's challenge file.
    let elsewhere = tempfile::tempdir().unwrap();
    let mi = credential(&world, &clock, env, ManagedIdentityId::SystemAssigned)
        .arc_token_directory(elsewhere.path())
        .build()
        .unwrap();
    let err = token_for(&mi, VAULT_SCOPE).await.unwrap_err();
    assert_eq!(err.code(), &codes::AZURE_ARC_KEY_PATH_REJECTED, "{err}");
}

#[tokio::test]
async fn azure_arc_detected_by_its_agent_uses_the_default_endpoint() {
    let clock = whole_second_clock();
    let tokens = tempfile::tempdir().unwrap();
    let world = World::start(directory(&clock).azure_arc_token_directory(tokens.path())).await;
    let agent = tempfile::NamedTempFile::new().unwrap();
    // The agent's endpoint, http://127.0.0.1:40342, is the emulator's IMDS listener.
    let mut transport = MtlsTransport::builder()
        .built_in_roots(false)
        .add_root_certificate_pem(world.emulator.ca_certificate_pem().as_bytes())
        .unwrap()
        .resolve(
            fic_emulator::AZURE_ARC_HOST_PORT,
            world.emulator.imds_addr(),
        );
    for (pattern, addr) in world.emulator.resolver_map() {
        transport = transport.resolve(&pattern, addr);
    }
    let mi = credential(
        &world,
        &clock,
        HashMap::new(),
        ManagedIdentityId::SystemAssigned,
    )
    .transport(Arc::new(transport.build().unwrap()))
    .arc_agent_path(agent.path())
    .arc_token_directory(tokens.path())
    .build()
    .unwrap();
    assert_eq!(mi.source(), ManagedIdentitySource::AzureArc);
    token_for(&mi, ARM_SCOPE).await.unwrap();
    let requests = world.emulator.log().route_requests(Route::AzureArc);
    assert_eq!(requests.len(), 2);
    // http://127.0.0.1:40342/metadata/identity/oauth2/token, through the override.
    assert_eq!(requests[1].host, "127.0.0.1");
    assert_eq!(requests[1].header("host"), Some("127.0.0.1:40342"));
    assert_eq!(requests[1].path, IMDS_TOKEN_PATH);
}

// ---------------------------------------------------------------------------------------------
// Retries, in virtual time.

fn imds_credential(world: &World, clock: &ManualClock) -> ManagedIdentity {
    credential(
        world,
        clock,
        HashMap::new(),
        ManagedIdentityId::SystemAssigned,
    )
    .build()
    .unwrap()
}

#[tokio::test]
async fn imds_410_waits_ten_seconds_then_succeeds() {
    let (world, clock) = world().await;
    world
        .emulator
        .faults()
        .inject(Fault::status(410).on(FaultTarget::Imds).times(1));
    let token = token_for(&imds_credential(&world, &clock), ARM_SCOPE)
        .await
        .unwrap();
    assert_eq!(token.token_type, TokenType::Bearer);
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(10)]);
    let statuses: Vec<_> = world
        .emulator
        .log()
        .imds_requests()
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![Some(410), Some(200)]);
}

#[tokio::test]
async fn imds_500_twice_backs_off_then_succeeds() {
    let (world, clock) = world().await;
    world
        .emulator
        .faults()
        .inject(Fault::status(500).on(FaultTarget::Imds).times(2));
    token_for(&imds_credential(&world, &clock), ARM_SCOPE)
        .await
        .unwrap();
    assert_eq!(
        clock.sleeps(),
        vec![Duration::from_secs(1), Duration::from_secs(2)]
    );
    assert_eq!(world.emulator.log().imds_requests().len(), 3);
}

#[tokio::test]
async fn imds_gives_up_after_three_retries_with_the_last_status() {
    let (world, clock) = world().await;
    world
        .emulator
        .faults()
        .inject(Fault::status(503).on(FaultTarget::Imds));
    let err = token_for(&imds_credential(&world, &clock), ARM_SCOPE)
        .await
        .unwrap_err();
    assert_eq!(err.code(), &codes::MANAGED_IDENTITY_REQUEST_FAILED, "{err}");
    assert_eq!(err.status(), Some(503));
    assert_eq!(
        clock.sleeps(),
        vec![
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::from_secs(4)
        ]
    );
    assert_eq!(world.emulator.log().imds_requests().len(), 4);
}

#[tokio::test]
async fn app_service_429_honours_retry_after() {
    let (world, clock) = world().await;
    world.emulator.faults().inject(
        Fault::status(429)
            .retry_after("5")
            .on(FaultTarget::ManagedIdentity)
            .times(1),
    );
    let mi = credential(
        &world,
        &clock,
        env_of(&world, Host::AppService),
        ManagedIdentityId::SystemAssigned,
    )
    .build()
    .unwrap();
    token_for(&mi, ARM_SCOPE).await.unwrap();
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(5)]);
    let requests = world.emulator.log().route_requests(Route::AppService);
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].status, Some(429));
    assert_eq!(requests[1].status, Some(200));
}

#[tokio::test]
async fn app_service_gives_up_after_three_retries_with_the_last_status() {
    let (world, clock) = world().await;
    world
        .emulator
        .faults()
        .inject(Fault::status(500).on(FaultTarget::ManagedIdentity));
    let mi = credential(
        &world,
        &clock,
        env_of(&world, Host::AppService),
        ManagedIdentityId::SystemAssigned,
    )
    .build()
    .unwrap();
    let err = token_for(&mi, ARM_SCOPE).await.unwrap_err();
    assert_eq!(err.code(), &codes::MANAGED_IDENTITY_REQUEST_FAILED);
    assert_eq!(err.status(), Some(500));
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(1); 3]);
    assert_eq!(
        world.emulator.log().route_requests(Route::AppService).len(),
        4
    );
}

#[tokio::test]
async fn a_refused_connection_is_not_retried() {
    let (world, clock) = world().await;
    let closed: SocketAddr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut builder = MtlsTransport::builder()
        .built_in_roots(false)
        .add_root_certificate_pem(world.emulator.ca_certificate_pem().as_bytes())
        .unwrap();
    for (pattern, addr) in world.emulator.resolver_map() {
        let addr = if pattern == fic_emulator::IMDS_HOST_PORT {
            closed
        } else {
            addr
        };
        builder = builder.resolve(&pattern, addr);
    }
    let mi = credential(
        &world,
        &clock,
        HashMap::new(),
        ManagedIdentityId::SystemAssigned,
    )
    .transport(Arc::new(builder.build().unwrap()))
    .build()
    .unwrap();
    let err = token_for(&mi, ARM_SCOPE).await.unwrap_err();
    assert_eq!(
        err.code(),
        &codes::MANAGED_IDENTITY_UNREACHABLE_NETWORK,
        "{err}"
    );
    assert!(clock.sleeps().is_empty(), "no retry: {:?}", clock.sleeps());
    assert!(world.emulator.log().is_empty());
}

// ---------------------------------------------------------------------------------------------
// IMDSv2: mTLS PoP.

fn pop_credential(world: &World, clock: &ManualClock, id: ManagedIdentityId) -> ManagedIdentity {
    credential(world, clock, HashMap::new(), id)
        .mtls_pop(true)
        .build()
        .unwrap()
}

fn count_path(world: &World, path: &str) -> usize {
    world.emulator.log().imds_path_requests(path).len()
}

#[tokio::test]
async fn imds_v2_mints_a_certificate_and_binds_the_token_to_it() {
    let (world, clock) = world().await;
    let mi = pop_credential(&world, &clock, ManagedIdentityId::SystemAssigned);
    assert_eq!(mi.token_type(), TokenType::MtlsPop);
    let token = token_for(&mi, VAULT_SCOPE).await.unwrap();
    assert_eq!(token.token_type, TokenType::MtlsPop);
    let binding = token.binding.clone().expect("a binding certificate");
    let thumbprint = binding.thumbprint_s256().to_owned();
    assert_eq!(token.binding_thumbprint(), Some(thumbprint.as_str()));
    let claims = jwt_payload(token.token.expose());
    assert_eq!(claims["cnf"]["x5t#S256"], thumbprint);
    assert_eq!(claims["oid"], SAMI_OBJECT);
    assert_eq!(claims["appid"], SAMI_CLIENT);
    assert_eq!(claims["idtyp"], "app");
    assert_eq!(claims["aud"], "https://vault.azure.net");

    // What the emulator saw: platform metadata, one CSR, the token over mTLS with the minted
    // certificate (which the emulator registered for the identity).
    let log = world.emulator.log();
    let metadata = log.imds_path_requests(PLATFORM_METADATA);
    assert_eq!(metadata.len(), 1);
    assert_eq!(metadata[0].method, "GET");
    assert_eq!(
        metadata[0].query_pairs(),
        pairs(&[("cred-api-version", "2.0")])
    );
    assert_eq!(metadata[0].header("metadata"), Some("true"));
    let issue = log.imds_path_requests(ISSUE_CREDENTIAL);
    assert_eq!(issue.len(), 1);
    assert_eq!(issue[0].method, "POST");
    assert_eq!(issue[0].status, Some(200));
    assert!(issue[0]
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let requests = log.token_requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.host, "westus3.mtlsauth.microsoft.com");
    assert_eq!(request.path, format!("/{TENANT}/oauth2/v2.0/token"));
    assert_eq!(
        request.form,
        pairs(&[
            ("client_id", SAMI_CLIENT),
            ("scope", VAULT_SCOPE),
            ("grant_type", "client_credentials"),
            ("token_type", "mtls_pop"),
        ])
    );
    assert_eq!(
        request.client_cert_thumbprint.as_deref(),
        Some(thumbprint.as_str())
    );
    let registered = world
        .emulator
        .directory()
        .managed_identity(SAMI_CLIENT)
        .unwrap()
        .certificates;
    assert_eq!(registered, vec![binding.leaf_der().to_vec()]);
    assert_eq!(
        mi.binding_certificate().unwrap().thumbprint_s256(),
        thumbprint
    );

    // The resource accepts the token with the certificate and refuses it without.
    let resource = ResourceClient::new(world.transport.clone());
    let answer = resource.get(VAULT_URL, &token).await.unwrap();
    assert_eq!(answer.status.as_u16(), 200);
    let body = answer.json().unwrap();
    assert_eq!(body["bound"], true);
    assert_eq!(body["client_cert_thumbprint"], thumbprint);
    // Without its certificate the library will not present the token; sent anyway (as
    // Bearer, no TLS client certificate), the resource refuses it.
    let mut unbound = token.clone();
    unbound.binding = None;
    let err = resource.get(VAULT_URL, &unbound).await.unwrap_err();
    assert_eq!(
        err.code(),
        &fic_oauth_core::ErrorCode::MTLS_CERTIFICATE_NOT_PROVIDED
    );
    unbound.token_type = TokenType::Bearer;
    let answer = resource.get(VAULT_URL, &unbound).await.unwrap();
    assert_eq!(answer.status.as_u16(), 401);

    // Again: the cached token, no request at all.
    let again = token_for(&mi, VAULT_SCOPE).await.unwrap();
    assert_eq!(again.source, TokenSource::Cache);
    assert_eq!(again.binding_thumbprint(), Some(thumbprint.as_str()));
    assert_eq!(log.len(), 5, "metadata, CSR, token, two resource calls");
    // Forced: a new token with the same certificate, no CSR.
    let forced = mi.get_token(&[VAULT_SCOPE], &forced()).await.unwrap();
    assert_eq!(forced.source, TokenSource::IdentityProvider);
    assert_eq!(forced.binding_thumbprint(), Some(thumbprint.as_str()));
    assert_eq!(count_path(&world, ISSUE_CREDENTIAL), 1);
    assert_eq!(log.token_requests().len(), 2);
    // Another resource: also the same certificate.
    let graph = token_for(&mi, GRAPH_SCOPE).await.unwrap();
    assert_eq!(graph.binding_thumbprint(), Some(thumbprint.as_str()));
    assert_eq!(count_path(&world, ISSUE_CREDENTIAL), 1);
}

fn forced() -> TokenRequestOptions {
    TokenRequestOptions::default().with_force_refresh(true)
}

#[tokio::test]
async fn imds_v2_invalid_client_re_mints_once() {
    let (world, clock) = world().await;
    let mi = pop_credential(&world, &clock, ManagedIdentityId::SystemAssigned);
    let first = token_for(&mi, VAULT_SCOPE).await.unwrap();
    let first_thumbprint = first.binding_thumbprint().unwrap().to_owned();

    // The token endpoint refuses the next request with invalid_client.
    world
        .emulator
        .faults()
        .inject(Fault::status(401).on(FaultTarget::Token).times(1));
    let token = mi.get_token(&[VAULT_SCOPE], &forced()).await.unwrap();
    let second_thumbprint = token.binding_thumbprint().unwrap().to_owned();
    assert_ne!(second_thumbprint, first_thumbprint, "a new certificate");
    assert_eq!(count_path(&world, ISSUE_CREDENTIAL), 2, "two CSRs in all");
    let requests = world.emulator.log().token_requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[1].status, Some(401));
    assert_eq!(
        requests[1].client_cert_thumbprint.as_deref(),
        Some(first_thumbprint.as_str())
    );
    assert_eq!(requests[2].status, Some(200));
    assert_eq!(
        requests[2].client_cert_thumbprint.as_deref(),
        Some(second_thumbprint.as_str())
    );
    let answer = ResourceClient::new(world.transport.clone())
        .get(VAULT_URL, &token)
        .await
        .unwrap();
    assert_eq!(answer.status.as_u16(), 200);

    // Refused twice: the client re-mints only once and reports invalid_client.
    world
        .emulator
        .faults()
        .inject(Fault::status(401).on(FaultTarget::Token).times(2));
    let err = mi.get_token(&[VAULT_SCOPE], &forced()).await.unwrap_err();
    assert_eq!(err.code().as_str(), "invalid_client", "{err}");
    assert_eq!(count_path(&world, ISSUE_CREDENTIAL), 3);
}

#[tokio::test]
async fn imds_v2_a_revoked_certificate_is_refused_by_the_emulator_and_replaced() {
    let (world, clock) = world().await;
    let mi = pop_credential(
        &world,
        &clock,
        ManagedIdentityId::ResourceId(UAMI_RESOURCE.into()),
    );
    let first = token_for(&mi, VAULT_SCOPE).await.unwrap();
    assert_eq!(jwt_payload(first.token.expose())["oid"], UAMI_OBJECT);
    let metadata = world.emulator.log().imds_path_requests(PLATFORM_METADATA);
    assert_eq!(
        metadata[0].query_pairs(),
        pairs(&[("cred-api-version", "2.0"), ("mi_res_id", UAMI_RESOURCE)])
    );
    // The identity's certificates are revoked: the real emulator answer is invalid_client.
    world
        .emulator
        .directory()
        .update_managed_identity(UAMI_CLIENT, |identity| identity.certificates.clear());
    let token = mi.get_token(&[VAULT_SCOPE], &forced()).await.unwrap();
    assert_ne!(token.binding_thumbprint(), first.binding_thumbprint());
    let requests = world.emulator.log().token_requests();
    assert_eq!(requests[1].status, Some(401));
    assert_eq!(requests[2].status, Some(200));
    assert_eq!(count_path(&world, ISSUE_CREDENTIAL), 2);
}

#[tokio::test]
async fn imds_v2_on_a_v1_only_host() {
    let clock = whole_second_clock();
    let world = World::start(directory(&clock).imds_v1_only()).await;
    let mi = pop_credential(&world, &clock, ManagedIdentityId::SystemAssigned);
    let err = token_for(&mi, VAULT_SCOPE).await.unwrap_err();
    assert_eq!(err.code(), &codes::MTLS_POP_TOKEN_NOT_SUPPORTED_IN_IMDS_V1);
    assert_eq!(count_path(&world, ISSUE_CREDENTIAL), 0);
    // PoP is IMDS only.
    let err = credential(
        &world,
        &clock,
        env_of(&world, Host::AppService),
        ManagedIdentityId::SystemAssigned,
    )
    .mtls_pop(true)
    .build()
    .unwrap_err();
    assert_eq!(
        err.code().as_str(),
        "mtls_pop_not_supported_for_environment"
    );
}

// ---------------------------------------------------------------------------------------------
// FIC: managed identity as Leg 1, confidential client as Leg 2.

async fn fic_with(world: &World, clock: &ManualClock, kind: &Kind, wire: Option<(&str, &str)>) {
    world.emulator.log().clear();
    let mi = Arc::new(
        credential(world, clock, HashMap::new(), kind.id.clone())
            .build()
            .unwrap(),
    );
    let two_leg = TwoLeg::builder(mi.clone(), world.client(LEG2_APP))
        .build()
        .unwrap();
    let token = two_leg.acquire_token([GRAPH_SCOPE]).await.unwrap();
    assert_eq!(token.token_type, TokenType::Bearer);
    let claims = jwt_payload(token.token.expose());
    assert_eq!(claims["appid"], LEG2_APP);
    assert_eq!(claims["roles"][0], "Sites.Read.All");

    // Leg 1: IMDS for the token-exchange audience.
    let imds = world.emulator.log().route_requests(Route::Imds);
    assert_eq!(imds.len(), 1, "{:?}", kind.id);
    let mut expected = vec![("api-version", "2018-02-01"), ("resource", EXCHANGE)];
    expected.extend(wire);
    assert_eq!(imds[0].query_pairs(), pairs(&expected));
    // Leg 2: client credentials with the managed identity's token as the assertion.
    let requests = world.emulator.log().token_requests();
    assert_eq!(requests.len(), 1);
    let leg2 = &requests[0];
    assert_eq!(leg2.host, "login.microsoftonline.com");
    assert_eq!(leg2.form_value("client_id"), Some(LEG2_APP));
    assert_eq!(leg2.form_value("grant_type"), Some("client_credentials"));
    assert_eq!(leg2.form_value("scope"), Some(GRAPH_SCOPE));
    assert_eq!(
        leg2.form_value("client_assertion_type"),
        Some(fic_oauth_core::request::JWT_BEARER)
    );
    let leg1 = mi
        .get_token(
            &["api://AzureADTokenExchange/.default"],
            &TokenRequestOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(leg1.source, TokenSource::Cache);
    assert_eq!(
        leg2.form_value("client_assertion"),
        Some(leg1.token.expose())
    );
    let assertion = jwt_payload(leg1.token.expose());
    assert_eq!(assertion["sub"], kind.object_id);
    assert_eq!(assertion["aud"], EXCHANGE);
    assert_eq!(assertion["iss"], issuer());

    // Both legs cached.
    two_leg.acquire_token([GRAPH_SCOPE]).await.unwrap();
    assert_eq!(world.emulator.log().len(), 2);
    let answer = ResourceClient::new(world.transport.clone())
        .get("https://graph.microsoft.com/v1.0/sites", &token)
        .await
        .unwrap();
    assert_eq!(answer.status.as_u16(), 200);
}

#[tokio::test]
async fn fic_system_assigned_identity_to_confidential_client() {
    let (world, clock) = world().await;
    fic_with(&world, &clock, &kinds()[0], None).await;
}

#[tokio::test]
async fn fic_user_assigned_identity_to_confidential_client_by_each_id() {
    let (world, clock) = world().await;
    let wire = [
        ("client_id", UAMI_CLIENT),
        ("msi_res_id", UAMI_RESOURCE),
        ("object_id", UAMI_OBJECT),
    ];
    for (kind, parameter) in kinds().iter().skip(1).zip(wire) {
        fic_with(&world, &clock, kind, Some(parameter)).await;
    }
}

/// Managed identity (Bearer, IMDS v1) as Leg 1; Leg 2 with a binding certificate: jwt-pop over
/// mTLS to mtlsauth, `token_type=mtls_pop`, the token bound to that certificate (seed 000,
/// scenarios 1 and 2 with `usePoP: true`).
async fn fic_pop_with(world: &World, clock: &ManualClock, kind: &Kind, wire: Option<(&str, &str)>) {
    world.emulator.log().clear();
    let leg2_certificate = fic_tests::new_identity("leg2-binding");
    // Leg 2's app has the binding certificate registered (the Leg-1 token is not bound, so the
    // emulator accepts the TLS certificate only as a credential of the app).
    world.emulator.directory().update_app(LEG2_APP, |app| {
        app.certificates = App::new(LEG2_APP, TENANT)
            .certificate(leg2_certificate.leaf_der().to_vec())
            .certificates;
    });
    let binding = leg2_certificate.thumbprint_s256().to_owned();
    let mi = Arc::new(
        credential(world, clock, HashMap::new(), kind.id.clone())
            .build()
            .unwrap(),
    );
    let two_leg = TwoLeg::builder(mi.clone(), world.client(LEG2_APP))
        .binding_certificate(leg2_certificate.clone())
        .build()
        .unwrap();
    let token = two_leg
        .acquire_token([GRAPH_SCOPE])
        .with_mtls_pop()
        .await
        .unwrap();
    assert_eq!(token.token_type, TokenType::MtlsPop);
    assert_eq!(token.source, TokenSource::IdentityProvider);
    assert_eq!(token.binding_thumbprint(), Some(binding.as_str()));
    let claims = jwt_payload(token.token.expose());
    assert_eq!(claims["cnf"]["x5t#S256"], binding.as_str(), "{:?}", kind.id);
    assert_eq!(claims["appid"], LEG2_APP);
    assert_eq!(claims["roles"][0], "Sites.Read.All");

    // Leg 1: IMDS v1, Bearer, for the token-exchange audience.
    let imds = world.emulator.log().route_requests(Route::Imds);
    assert_eq!(imds.len(), 1, "{:?}", kind.id);
    let mut expected = vec![("api-version", "2018-02-01"), ("resource", EXCHANGE)];
    expected.extend(wire);
    assert_eq!(imds[0].query_pairs(), pairs(&expected));
    assert!(imds[0].client_cert_thumbprint.is_none());
    let leg1 = mi
        .get_token(
            &["api://AzureADTokenExchange/.default"],
            &TokenRequestOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(leg1.source, TokenSource::Cache);
    assert_eq!(leg1.token_type, TokenType::Bearer);
    let assertion = jwt_payload(leg1.token.expose());
    assert_eq!(assertion["sub"], kind.object_id);
    assert_eq!(assertion["aud"], EXCHANGE);
    assert!(assertion["cnf"].is_null(), "Leg 1 is Bearer");

    // Leg 2: client credentials over mTLS with the binding certificate, jwt-pop, the
    // managed identity's token as the assertion.
    let requests = world.emulator.log().token_requests();
    assert_eq!(requests.len(), 1);
    let leg2 = &requests[0];
    assert_eq!(leg2.host, "mtlsauth.microsoft.com");
    assert_eq!(leg2.sni.as_deref(), Some("mtlsauth.microsoft.com"));
    assert_eq!(leg2.form_value("client_id"), Some(LEG2_APP));
    assert_eq!(leg2.form_value("grant_type"), Some("client_credentials"));
    assert_eq!(leg2.form_value("scope"), Some(GRAPH_SCOPE));
    assert_eq!(leg2.form_value("token_type"), Some("mtls_pop"));
    assert_eq!(
        leg2.form_value("client_assertion_type"),
        Some(fic_oauth_core::request::JWT_POP)
    );
    assert_eq!(
        leg2.form_value("client_assertion"),
        Some(leg1.token.expose())
    );
    assert_eq!(
        leg2.client_cert_thumbprint.as_deref(),
        Some(binding.as_str()),
        "the TLS certificate the emulator saw is Leg 2's binding certificate"
    );
    assert_eq!(leg2.status, Some(200));

    // Both legs cached; the resource accepts the token over the binding certificate.
    let again = two_leg
        .acquire_token([GRAPH_SCOPE])
        .with_mtls_pop()
        .await
        .unwrap();
    assert_eq!(again.source, TokenSource::Cache);
    assert_eq!(again.binding_thumbprint(), Some(binding.as_str()));
    assert_eq!(world.emulator.log().len(), 2);
    let answer = ResourceClient::new(world.transport.clone())
        .get("https://graph.microsoft.com/v1.0/sites", &token)
        .await
        .unwrap();
    assert_eq!(answer.status.as_u16(), 200);
    assert_eq!(answer.json().unwrap()["bound"], true);
}

#[tokio::test]
async fn fic_system_assigned_identity_to_confidential_client_with_pop_on_leg2() {
    let (world, clock) = world().await;
    fic_pop_with(&world, &clock, &kinds()[0], None).await;
}

#[tokio::test]
async fn fic_user_assigned_identity_by_client_id_to_confidential_client_with_pop_on_leg2() {
    let (world, clock) = world().await;
    fic_pop_with(
        &world,
        &clock,
        &kinds()[1],
        Some(("client_id", UAMI_CLIENT)),
    )
    .await;
}

#[tokio::test]
async fn fic_user_assigned_identity_by_resource_id_to_confidential_client_with_pop_on_leg2() {
    let (world, clock) = world().await;
    fic_pop_with(
        &world,
        &clock,
        &kinds()[2],
        Some(("msi_res_id", UAMI_RESOURCE)),
    )
    .await;
}

#[tokio::test]
async fn fic_user_assigned_identity_by_object_id_to_confidential_client_with_pop_on_leg2() {
    let (world, clock) = world().await;
    fic_pop_with(
        &world,
        &clock,
        &kinds()[3],
        Some(("object_id", UAMI_OBJECT)),
    )
    .await;
}

#[tokio::test]
async fn fic_an_identity_without_a_federated_credential_is_refused() {
    let (world, clock) = world().await;
    world.emulator.directory().update_app(LEG2_APP, |app| {
        app.federated_credentials
            .retain(|f| f.subject != UAMI_OBJECT);
    });
    let mi = Arc::new(
        credential(
            &world,
            &clock,
            HashMap::new(),
            ManagedIdentityId::ClientId(UAMI_CLIENT.into()),
        )
        .build()
        .unwrap(),
    );
    let err = TwoLeg::builder(mi, world.client(LEG2_APP))
        .build()
        .unwrap()
        .acquire_token([GRAPH_SCOPE])
        .await
        .unwrap_err();
    assert_eq!(err.aadsts(), Some(700_213), "{err}");
}

#[tokio::test]
async fn fic_pop_on_both_legs_with_the_minted_certificate() {
    let (world, clock) = world().await;
    let mi = Arc::new(pop_credential(
        &world,
        &clock,
        ManagedIdentityId::SystemAssigned,
    ));
    let two_leg = TwoLeg::builder(mi.clone(), world.client(LEG2_APP))
        .build()
        .unwrap();
    let token = two_leg
        .acquire_token([GRAPH_SCOPE])
        .with_mtls_pop()
        .await
        .unwrap();
    let minted = mi.binding_certificate().unwrap();
    assert_eq!(token.token_type, TokenType::MtlsPop);
    assert_eq!(token.binding_thumbprint(), Some(minted.thumbprint_s256()));
    let requests = world.emulator.log().token_requests();
    assert_eq!(requests.len(), 2);
    let (leg1, leg2) = (&requests[0], &requests[1]);
    // Leg 1: the identity over mTLS with its minted certificate, for the exchange audience.
    assert_eq!(leg1.host, "westus3.mtlsauth.microsoft.com");
    assert_eq!(leg1.form_value("client_id"), Some(SAMI_CLIENT));
    assert_eq!(
        leg1.form_value("scope"),
        Some("api://AzureADTokenExchange/.default")
    );
    assert_eq!(leg1.form_value("token_type"), Some("mtls_pop"));
    assert_eq!(
        leg1.client_cert_thumbprint.as_deref(),
        Some(minted.thumbprint_s256())
    );
    // Leg 2: jwt-pop over mTLS presenting the same certificate (the assertion's cnf).
    assert_eq!(leg2.host, "mtlsauth.microsoft.com");
    assert_eq!(leg2.form_value("client_id"), Some(LEG2_APP));
    assert_eq!(leg2.form_value("grant_type"), Some("client_credentials"));
    assert_eq!(leg2.form_value("scope"), Some(GRAPH_SCOPE));
    assert_eq!(leg2.form_value("token_type"), Some("mtls_pop"));
    assert_eq!(
        leg2.form_value("client_assertion_type"),
        Some(fic_oauth_core::request::JWT_POP)
    );
    // The assertion is exactly the identity's (bound) Leg-1 token, from its cache.
    let leg1_token = mi
        .get_token(
            &["api://AzureADTokenExchange/.default"],
            &TokenRequestOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(leg1_token.source, TokenSource::Cache);
    assert_eq!(leg1_token.token_type, TokenType::MtlsPop);
    assert_eq!(
        leg2.form_value("client_assertion"),
        Some(leg1_token.token.expose())
    );
    assert_eq!(
        leg2.client_cert_thumbprint.as_deref(),
        Some(minted.thumbprint_s256())
    );
    assert_eq!(
        jwt_payload(leg2.form_value("client_assertion").unwrap())["cnf"]["x5t#S256"],
        minted.thumbprint_s256()
    );
    let answer = ResourceClient::new(world.transport.clone())
        .get("https://graph.microsoft.com/v1.0/sites", &token)
        .await
        .unwrap();
    assert_eq!(answer.status.as_u16(), 200);
}
