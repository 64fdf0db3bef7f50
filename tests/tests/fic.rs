//! FIC two-leg with confidential clients on both legs (Bearer and PoP), and its failures.
//! (Managed identity as Leg 1 is in `managed_identity.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use fic_emulator::{App, Emulator, FederatedCredential};
use fic_flows::{ConfidentialClient, FicLeg1, FicLeg2, TwoLeg};
use fic_oauth_core::{
    ErrorCode, ManualClock, TokenCredential, TokenRequestOptions, TokenSource, TokenType,
};
use fic_tests::{jwt_payload, new_identity, World, TENANT};

const LEG1_APP: &str = "1a1a1a1a-0000-4000-8000-000000000001";
const LEG2_APP: &str = "2b2b2b2b-0000-4000-8000-000000000002";
const GRAPH: &str = "https://graph.microsoft.com/.default";
const EXCHANGE: &str = "api://AzureADTokenExchange/.default";

fn issuer() -> String {
    format!("https://login.microsoftonline.com/{TENANT}/v2.0")
}

struct Setup {
    world: World,
    cert1: fic_oauth_core::ClientIdentity,
    cert2: fic_oauth_core::ClientIdentity,
    leg1: Arc<dyn TokenCredential>,
}

/// Leg 1 app (certificate 1, secret); Leg 2 app (certificate 2) trusting Leg 1's tokens.
async fn setup(clock: Option<ManualClock>, fic_audience: &str) -> Setup {
    let cert1 = new_identity("leg1");
    let cert2 = new_identity("leg2");
    let leg1_app = App::new(LEG1_APP, TENANT)
        .secret("leg1-secret")
        .certificate(cert1.leaf_der().to_vec());
    let leg1_object_id = leg1_app.object_id.clone();
    let mut builder = Emulator::builder().app(leg1_app).app(
        App::new(LEG2_APP, TENANT)
            .certificate(cert2.leaf_der().to_vec())
            .federated_credential(FederatedCredential::new(
                issuer(),
                leg1_object_id,
                fic_audience,
            )),
    );
    if let Some(clock) = &clock {
        builder = builder.clock(Arc::new(clock.clone()));
    }
    let world = World::start(builder).await;
    let mut leg1 = world.client(LEG1_APP).certificate(cert1.clone());
    if let Some(clock) = &clock {
        leg1 = leg1
            .clock(Arc::new(clock.clone()))
            .sleeper(Arc::new(clock.clone()));
    }
    let leg1: Arc<dyn TokenCredential> = Arc::new(leg1.build().unwrap());
    Setup {
        world,
        cert1,
        cert2,
        leg1,
    }
}

fn two_leg(setup: &Setup) -> fic_flows::TwoLegBuilder {
    let world_client = setup.world.client(LEG2_APP);
    TwoLeg::builder(setup.leg1.clone(), world_client)
}

#[tokio::test]
async fn cc_to_cc_bearer_exchanges_the_leg1_token() {
    let setup = setup(None, "api://AzureADTokenExchange").await;
    let two_leg = two_leg(&setup).build().unwrap();
    let token = two_leg.acquire_token([GRAPH]).await.unwrap();
    assert_eq!(token.token_type, TokenType::Bearer);
    assert_eq!(jwt_payload(token.token.expose())["appid"], LEG2_APP);

    let requests = setup.world.emulator.log().token_requests();
    assert_eq!(requests.len(), 2);
    let (leg1, leg2) = (&requests[0], &requests[1]);
    assert_eq!(leg1.host, "login.microsoftonline.com");
    assert_eq!(leg1.form_value("client_id"), Some(LEG1_APP));
    assert_eq!(leg1.form_value("scope"), Some(EXCHANGE));
    assert_eq!(leg1.form_value("grant_type"), Some("client_credentials"));
    // Leg 1 authenticates with its certificate: a jwt-bearer assertion signed by it.
    assert_eq!(
        leg1.form_value("client_assertion_type"),
        Some(fic_oauth_core::request::JWT_BEARER)
    );
    assert_eq!(
        jwt_payload(leg1.form_value("client_assertion").unwrap())["iss"],
        LEG1_APP
    );
    assert_eq!(leg1.form_value("token_type"), None);
    assert_eq!(leg2.form_value("client_id"), Some(LEG2_APP));
    assert_eq!(leg2.form_value("grant_type"), Some("client_credentials"));
    assert_eq!(leg2.form_value("scope"), Some(GRAPH));
    assert_eq!(
        leg2.form_value("client_assertion_type"),
        Some(fic_oauth_core::request::JWT_BEARER)
    );
    assert_eq!(leg2.form_value("token_type"), None);
    assert_eq!(leg2.form_value("client_secret"), None);
    assert_eq!(leg2.host, "login.microsoftonline.com");
    assert!(leg2.client_cert_thumbprint.is_none());
    // The assertion is exactly the Leg-1 token (served again from Leg 1's cache).
    let leg1_token = setup
        .leg1
        .get_token(&[EXCHANGE], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(leg1_token.source, TokenSource::Cache);
    assert_eq!(
        leg2.form_value("client_assertion"),
        Some(leg1_token.token.expose())
    );
    assert_eq!(
        jwt_payload(leg1_token.token.expose())["aud"],
        "api://AzureADTokenExchange"
    );

    // Both legs cached: no request.
    two_leg.acquire_token([GRAPH]).await.unwrap();
    assert_eq!(setup.world.token_requests(), 2);
}

#[tokio::test]
async fn cc_to_cc_with_pop_on_leg2_is_jwt_pop_over_mtls() {
    let setup = setup(None, "api://AzureADTokenExchange").await;
    let two_leg = two_leg(&setup)
        .binding_certificate(setup.cert2.clone())
        .build()
        .unwrap();
    let token = two_leg
        .acquire_token([GRAPH])
        .with_mtls_pop()
        .await
        .unwrap();
    assert_eq!(token.token_type, TokenType::MtlsPop);
    assert_eq!(
        token.binding_thumbprint(),
        Some(setup.cert2.thumbprint_s256())
    );
    assert_eq!(
        jwt_payload(token.token.expose())["cnf"]["x5t#S256"],
        setup.cert2.thumbprint_s256()
    );
    let requests = setup.world.emulator.log().token_requests();
    assert_eq!(requests.len(), 2);
    let leg2 = &requests[1];
    assert_eq!(leg2.host, "mtlsauth.microsoft.com");
    assert_eq!(leg2.form_value("client_id"), Some(LEG2_APP));
    assert_eq!(leg2.form_value("grant_type"), Some("client_credentials"));
    assert_eq!(leg2.form_value("scope"), Some(GRAPH));
    assert_eq!(
        leg2.form_value("client_assertion_type"),
        Some(fic_oauth_core::request::JWT_POP)
    );
    assert_eq!(leg2.form_value("token_type"), Some("mtls_pop"));
    let leg1_token = setup
        .leg1
        .get_token(&[EXCHANGE], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(leg1_token.source, TokenSource::Cache);
    assert_eq!(
        leg2.form_value("client_assertion"),
        Some(leg1_token.token.expose())
    );
    assert_eq!(
        leg2.client_cert_thumbprint.as_deref(),
        Some(setup.cert2.thumbprint_s256())
    );
    // Leg 1 stayed Bearer, without a certificate.
    let leg1 = &setup.world.emulator.log().token_requests()[0];
    assert_eq!(leg1.host, "login.microsoftonline.com");
    assert!(leg1.client_cert_thumbprint.is_none());
}

#[tokio::test]
async fn pop_on_both_legs_binds_leg2_to_the_leg1_certificate() {
    let setup = setup(None, "api://AzureADTokenExchange").await;
    // Leg 1 asks for mTLS PoP: its token's cnf is certificate 1.
    let leg1_client = Arc::new(
        setup
            .world
            .client(LEG1_APP)
            .certificate(setup.cert1.clone())
            .mtls_pop(true)
            .build()
            .unwrap(),
    );
    let two_leg = TwoLeg::builder(leg1_client.clone(), setup.world.client(LEG2_APP))
        .binding_certificate(setup.cert2.clone())
        .build()
        .unwrap();
    let token = two_leg
        .acquire_token([GRAPH])
        .with_mtls_pop()
        .await
        .unwrap();
    let requests = setup.world.emulator.log().token_requests();
    assert_eq!(requests.len(), 2);
    let (leg1_request, leg2) = (&requests[0], &requests[1]);
    assert_eq!(leg1_request.host, "mtlsauth.microsoft.com");
    assert_eq!(leg1_request.form_value("client_id"), Some(LEG1_APP));
    assert_eq!(leg1_request.form_value("scope"), Some(EXCHANGE));
    assert_eq!(leg1_request.form_value("token_type"), Some("mtls_pop"));
    // Vanilla PoP: the TLS certificate authenticates Leg 1, no assertion.
    assert_eq!(leg1_request.form_value("client_assertion"), None);
    assert_eq!(
        leg1_request.client_cert_thumbprint.as_deref(),
        Some(setup.cert1.thumbprint_s256())
    );
    // Leg 2 presents what the assertion's cnf requires: certificate 1.
    assert_eq!(
        leg2.client_cert_thumbprint.as_deref(),
        Some(setup.cert1.thumbprint_s256())
    );
    assert_eq!(leg2.host, "mtlsauth.microsoft.com");
    assert_eq!(leg2.form_value("client_id"), Some(LEG2_APP));
    assert_eq!(leg2.form_value("grant_type"), Some("client_credentials"));
    assert_eq!(leg2.form_value("scope"), Some(GRAPH));
    assert_eq!(leg2.form_value("token_type"), Some("mtls_pop"));
    assert_eq!(
        leg2.form_value("client_assertion_type"),
        Some(fic_oauth_core::request::JWT_POP)
    );
    // The assertion is exactly the (bound) Leg-1 token, served again from Leg 1's cache.
    let leg1_token = leg1_client
        .get_token(&[EXCHANGE], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(leg1_token.source, TokenSource::Cache);
    assert_eq!(leg1_token.token_type, TokenType::MtlsPop);
    assert_eq!(
        leg2.form_value("client_assertion"),
        Some(leg1_token.token.expose())
    );
    assert_eq!(
        jwt_payload(leg2.form_value("client_assertion").unwrap())["cnf"]["x5t#S256"],
        setup.cert1.thumbprint_s256()
    );
    assert_eq!(token.token_type, TokenType::MtlsPop);
    assert_eq!(
        token.binding_thumbprint(),
        Some(setup.cert1.thumbprint_s256())
    );
    assert_eq!(
        jwt_payload(token.token.expose())["cnf"]["x5t#S256"],
        setup.cert1.thumbprint_s256()
    );
}

#[tokio::test]
async fn legs_by_hand_match_the_seed_api() {
    let setup = setup(None, "api://AzureADTokenExchange").await;
    let leg1 = FicLeg1::new(setup.leg1.clone());
    let assertion = leg1.acquire_assertion().await.unwrap();
    assert_eq!(
        jwt_payload(assertion.token.expose())["aud"],
        "api://AzureADTokenExchange"
    );
    let leg2 = FicLeg2::new(setup.world.client(LEG2_APP))
        .unwrap()
        .with_certificate(setup.cert2.clone());
    let token = leg2
        .exchange(&assertion, [GRAPH])
        .unwrap()
        .with_mtls_pop()
        .await
        .unwrap();
    assert_eq!(
        token.binding_thumbprint(),
        Some(setup.cert2.thumbprint_s256())
    );
    let leg2_request = setup.world.emulator.log().last_token_request().unwrap();
    assert_eq!(
        leg2_request.form_value("client_assertion"),
        Some(assertion.token.expose())
    );
    assert_eq!(leg2_request.form_value("client_secret"), None);
}

#[tokio::test]
async fn a_leg1_token_near_expiry_is_renewed_never_reused() {
    let clock = ManualClock::new(std::time::SystemTime::now());
    let setup = setup(Some(clock.clone()), "api://AzureADTokenExchange").await;
    let two_leg = TwoLeg::builder(setup.leg1.clone(), {
        setup
            .world
            .client(LEG2_APP)
            .clock(Arc::new(clock.clone()))
            .sleeper(Arc::new(clock.clone()))
    })
    .build()
    .unwrap();
    two_leg.acquire_token([GRAPH]).await.unwrap();
    let first_assertion = setup
        .world
        .emulator
        .log()
        .last_token_request()
        .unwrap()
        .form_value("client_assertion")
        .unwrap()
        .to_string();
    // Past both tokens' useful life (the emulator issues 1 h tokens): both legs are renewed.
    clock.advance(Duration::from_secs(3600 - 200));
    two_leg.acquire_token([GRAPH]).await.unwrap();
    let requests = setup.world.emulator.log().token_requests();
    assert_eq!(requests.len(), 4, "Leg 1 and Leg 2 were both renewed");
    assert_eq!(requests[2].form_value("client_id"), Some(LEG1_APP));
    assert_ne!(
        requests[3].form_value("client_assertion"),
        Some(first_assertion.as_str())
    );
}

#[tokio::test]
async fn a_wrong_exchange_audience_is_aadsts7002206() {
    let setup = setup(None, "api://SomethingElse").await;
    setup
        .world
        .emulator
        .directory()
        .add_resource(fic_emulator::Resource::new("api://SomethingElse"));
    let two_leg = two_leg(&setup)
        .exchange_audience("api://SomethingElse")
        .build()
        .unwrap();
    let err = two_leg.acquire_token([GRAPH]).await.unwrap_err();
    assert_eq!(err.aadsts(), Some(7_002_206), "{err}");
    assert_eq!(err.code(), &"invalid_client");
    // Leg 1 asked for the configured audience; Leg 2 presented that token and was refused.
    let requests = setup.world.emulator.log().token_requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].form_value("scope"),
        Some("api://SomethingElse/.default")
    );
    let assertion = requests[1].form_value("client_assertion").unwrap();
    assert_eq!(jwt_payload(assertion)["aud"], "api://SomethingElse");
    assert_eq!(requests[1].status, Some(401));
}

/// Leg 2's only federated credential is `credential`: the exchange is refused; returns the
/// error after checking that Leg 2 was sent (with the Leg-1 token) and answered 401.
async fn refused_with_only(credential: FederatedCredential) -> fic_oauth_core::Error {
    let setup = setup(None, "api://AzureADTokenExchange").await;
    setup
        .world
        .emulator
        .directory()
        .update_app(LEG2_APP, |app| {
            app.federated_credentials = vec![credential];
        });
    let err = two_leg(&setup)
        .build()
        .unwrap()
        .acquire_token([GRAPH])
        .await
        .unwrap_err();
    assert_eq!(err.code(), &"invalid_client", "{err}");
    let requests = setup.world.emulator.log().token_requests();
    assert_eq!(requests.len(), 2, "Leg 1, then the refused Leg 2");
    assert_eq!(requests[1].form_value("client_id"), Some(LEG2_APP));
    assert_eq!(requests[1].status, Some(401));
    err
}

fn leg1_object_id() -> String {
    App::new(LEG1_APP, TENANT).object_id
}

#[tokio::test]
async fn no_federated_credential_with_the_issuer_is_aadsts700211() {
    let err = refused_with_only(FederatedCredential::new(
        "https://token.actions.githubusercontent.com",
        leg1_object_id(),
        "api://AzureADTokenExchange",
    ))
    .await;
    assert_eq!(err.aadsts(), Some(700_211), "{err}");
}

#[tokio::test]
async fn no_federated_credential_with_the_subject_is_aadsts700213() {
    let err = refused_with_only(FederatedCredential::new(
        issuer(),
        "0f0f0f0f-0000-4000-8000-00000000dead",
        "api://AzureADTokenExchange",
    ))
    .await;
    assert_eq!(err.aadsts(), Some(700_213), "{err}");
}

#[tokio::test]
async fn no_federated_credential_with_the_audience_is_aadsts700212() {
    let err = refused_with_only(FederatedCredential::new(
        issuer(),
        leg1_object_id(),
        "api://SomethingElse",
    ))
    .await;
    assert_eq!(err.aadsts(), Some(700_212), "{err}");
}

#[tokio::test]
async fn an_assertion_expired_at_the_server_is_aadsts700024() {
    // The emulator (and Leg 1) run on a manual clock moved past the Leg-1 token's expiry; the
    // Leg-2 client runs on the system clock, so it still thinks the token valid and sends it.
    let clock = ManualClock::new(std::time::SystemTime::now());
    let setup = setup(Some(clock.clone()), "api://AzureADTokenExchange").await;
    let assertion = FicLeg1::new(setup.leg1.clone())
        .acquire_assertion()
        .await
        .unwrap();
    clock.advance(Duration::from_secs(2 * 3600));
    let leg2 = FicLeg2::new(setup.world.client(LEG2_APP)).unwrap();
    let err = leg2
        .exchange(&assertion, [GRAPH])
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(err.aadsts(), Some(700_024), "{err}");
    assert_eq!(err.code(), &"invalid_client");
    let last = setup.world.emulator.log().last_token_request().unwrap();
    assert_eq!(last.form_value("client_id"), Some(LEG2_APP));
    assert_eq!(
        last.form_value("client_assertion"),
        Some(assertion.token.expose())
    );
    assert_eq!(last.status, Some(401));
}

#[tokio::test]
async fn an_expired_assertion_is_refused_before_it_is_sent() {
    let clock = ManualClock::new(std::time::SystemTime::now());
    let setup = setup(Some(clock.clone()), "api://AzureADTokenExchange").await;
    let assertion = FicLeg1::new(setup.leg1.clone())
        .acquire_assertion()
        .await
        .unwrap();
    clock.advance(Duration::from_secs(2 * 3600));
    let leg2 = FicLeg2::new(setup.world.client(LEG2_APP).clock(Arc::new(clock.clone()))).unwrap();
    let err = leg2.exchange(&assertion, [GRAPH]).unwrap_err();
    assert_eq!(err.code(), &ErrorCode::INVALID_CLIENT_ASSERTION, "{err}");
    assert_eq!(setup.world.token_requests(), 1, "only Leg 1 was ever sent");
}

#[tokio::test]
async fn leg2_pop_without_a_certificate_is_refused_locally() {
    let setup = setup(None, "api://AzureADTokenExchange").await;
    let two_leg = two_leg(&setup).build().unwrap();
    let err = two_leg
        .acquire_token([GRAPH])
        .with_mtls_pop()
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::MTLS_CERTIFICATE_NOT_PROVIDED);
    assert_eq!(
        setup
            .world
            .emulator
            .log()
            .count(|r| r.form_value("client_id") == Some(LEG2_APP)),
        0,
        "Leg 2 was never sent"
    );
}

// ---------------------------------------------------------------------------------------------
// PoP and Bearer tokens of one client never cross in its cache.

/// How many token requests `client_id` has sent.
fn requests_of(world: &World, client_id: &str) -> usize {
    world
        .emulator
        .log()
        .count(|r| r.is_token_request() && r.form_value("client_id") == Some(client_id))
}

async fn acquire(client: &ConfidentialClient, pop: bool) -> fic_oauth_core::AccessToken {
    let request = client.acquire_token_for_client([GRAPH]);
    if pop {
        request.with_mtls_pop().await.unwrap()
    } else {
        request.await.unwrap()
    }
}

/// The token is of the kind asked for: `mtls_pop` bound to `binding` (type, binding, `cnf`),
/// or Bearer with neither.
#[track_caller]
fn assert_kind(token: &fic_oauth_core::AccessToken, pop: bool, binding: &str) {
    let cnf = jwt_payload(token.token.expose())["cnf"]["x5t#S256"].clone();
    if pop {
        assert_eq!(token.token_type, TokenType::MtlsPop);
        assert_eq!(token.binding_thumbprint(), Some(binding));
        assert_eq!(cnf, binding);
    } else {
        assert_eq!(token.token_type, TokenType::Bearer);
        assert_eq!(token.binding_thumbprint(), None);
        assert!(cnf.is_null(), "a Bearer token has no cnf");
    }
}

/// `first` (PoP or Bearer) is acquired and cached, then the other kind is a request of its
/// own; then both are served from the cache, each of its own kind.
async fn pop_and_bearer_never_cross(
    world: &World,
    client: &ConfidentialClient,
    first_pop: bool,
    binding: &str,
) {
    let id = client.client_id().to_owned();
    let before = requests_of(world, &id);
    let first = acquire(client, first_pop).await;
    assert_eq!(first.source, TokenSource::IdentityProvider);
    assert_eq!(requests_of(world, &id), before + 1);
    assert_kind(&first, first_pop, binding);
    let request = world.emulator.log().last_token_request().unwrap();
    assert_eq!(
        request.form_value("token_type"),
        first_pop.then_some("mtls_pop")
    );

    // The other kind is not served from the first one's entry.
    let second = acquire(client, !first_pop).await;
    assert_eq!(second.source, TokenSource::IdentityProvider);
    assert_eq!(requests_of(world, &id), before + 2, "a request of its own");
    assert_kind(&second, !first_pop, binding);
    assert_ne!(second.token.expose(), first.token.expose());
    let request = world.emulator.log().last_token_request().unwrap();
    assert_eq!(
        request.form_value("token_type"),
        (!first_pop).then_some("mtls_pop")
    );

    // Both cached now: each kind is served its own token, with no request.
    for (pop, expected) in [(first_pop, &first), (!first_pop, &second)] {
        let again = acquire(client, pop).await;
        assert_eq!(again.source, TokenSource::Cache);
        assert_eq!(again.token.expose(), expected.token.expose());
        assert_kind(&again, pop, binding);
    }
    assert_eq!(requests_of(world, &id), before + 2, "repeats send nothing");
}

#[tokio::test]
async fn pop_and_bearer_tokens_of_a_certificate_client_never_cross() {
    let setup = setup(None, "api://AzureADTokenExchange").await;
    for first_pop in [false, true] {
        // One client, one cache, for each order.
        let client = setup
            .world
            .client(LEG1_APP)
            .certificate(setup.cert1.clone())
            .cache(Arc::new(fic_token_cache::MemoryCache::new()))
            .build()
            .unwrap();
        pop_and_bearer_never_cross(
            &setup.world,
            &client,
            first_pop,
            setup.cert1.thumbprint_s256(),
        )
        .await;
    }
    // Bearer went to the login host with a signed assertion, PoP to mtlsauth with none.
    for request in setup.world.emulator.log().token_requests() {
        if request.form_value("token_type") == Some("mtls_pop") {
            assert_eq!(request.host, "mtlsauth.microsoft.com");
            assert_eq!(request.form_value("client_assertion"), None);
        } else {
            assert_eq!(request.host, "login.microsoftonline.com");
            assert_eq!(
                request.form_value("client_assertion_type"),
                Some(fic_oauth_core::request::JWT_BEARER)
            );
        }
    }
}

#[tokio::test]
async fn pop_and_bearer_tokens_of_a_two_leg_client_never_cross() {
    let setup = setup(None, "api://AzureADTokenExchange").await;
    for first_pop in [false, true] {
        let two_leg = two_leg(&setup)
            .binding_certificate(setup.cert2.clone())
            .build()
            .unwrap();
        pop_and_bearer_never_cross(
            &setup.world,
            two_leg.leg2(),
            first_pop,
            setup.cert2.thumbprint_s256(),
        )
        .await;
    }
    // Leg 1 was asked once (then served from its cache); every Leg 2 request was jwt-pop over
    // mTLS with the binding certificate and the Leg-1 token as the assertion.
    assert_eq!(requests_of(&setup.world, LEG1_APP), 1);
    let leg1_token = setup
        .leg1
        .get_token(&[EXCHANGE], &TokenRequestOptions::default())
        .await
        .unwrap();
    let leg2_requests = setup
        .world
        .emulator
        .log()
        .filter(|r| r.is_token_request() && r.form_value("client_id") == Some(LEG2_APP));
    assert_eq!(leg2_requests.len(), 4);
    for request in leg2_requests {
        assert_eq!(request.host, "mtlsauth.microsoft.com");
        assert_eq!(
            request.form_value("client_assertion_type"),
            Some(fic_oauth_core::request::JWT_POP)
        );
        assert_eq!(
            request.form_value("client_assertion"),
            Some(leg1_token.token.expose())
        );
        assert_eq!(
            request.client_cert_thumbprint.as_deref(),
            Some(setup.cert2.thumbprint_s256())
        );
    }
}
