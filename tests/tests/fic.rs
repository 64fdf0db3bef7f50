//! FIC two-leg with confidential clients on both legs (Bearer and PoP), and its failures.
//! (Managed identity as Leg 1 is in `managed_identity.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use fic_emulator::{App, Emulator, FederatedCredential};
use fic_flows::{FicLeg1, FicLeg2, TwoLeg};
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
    assert_eq!(leg1.form_value("client_id"), Some(LEG1_APP));
    assert_eq!(leg1.form_value("scope"), Some(EXCHANGE));
    assert_eq!(leg1.form_value("grant_type"), Some("client_credentials"));
    assert_eq!(leg2.form_value("client_id"), Some(LEG2_APP));
    assert_eq!(leg2.form_value("grant_type"), Some("client_credentials"));
    assert_eq!(
        leg2.form_value("client_assertion_type"),
        Some(fic_oauth_core::request::JWT_BEARER)
    );
    assert_eq!(leg2.host, "login.microsoftonline.com");
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
    let leg2 = setup.world.emulator.log().last_token_request().unwrap();
    assert_eq!(leg2.host, "mtlsauth.microsoft.com");
    assert_eq!(
        leg2.form_value("client_assertion_type"),
        Some(fic_oauth_core::request::JWT_POP)
    );
    assert_eq!(leg2.form_value("token_type"), Some("mtls_pop"));
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
    let leg1 = Arc::new(
        setup
            .world
            .client(LEG1_APP)
            .certificate(setup.cert1.clone())
            .mtls_pop(true)
            .build()
            .unwrap(),
    );
    let two_leg = TwoLeg::builder(leg1, setup.world.client(LEG2_APP))
        .binding_certificate(setup.cert2.clone())
        .build()
        .unwrap();
    let token = two_leg
        .acquire_token([GRAPH])
        .with_mtls_pop()
        .await
        .unwrap();
    let requests = setup.world.emulator.log().token_requests();
    let (leg1, leg2) = (&requests[0], &requests[1]);
    assert_eq!(leg1.host, "mtlsauth.microsoft.com");
    assert_eq!(leg1.form_value("token_type"), Some("mtls_pop"));
    assert_eq!(
        leg1.client_cert_thumbprint.as_deref(),
        Some(setup.cert1.thumbprint_s256())
    );
    // Leg 2 presents what the assertion's cnf requires: certificate 1.
    assert_eq!(
        leg2.client_cert_thumbprint.as_deref(),
        Some(setup.cert1.thumbprint_s256())
    );
    assert_eq!(
        leg2.form_value("client_assertion_type"),
        Some(fic_oauth_core::request::JWT_POP)
    );
    assert_eq!(
        jwt_payload(leg2.form_value("client_assertion").unwrap())["cnf"]["x5t#S256"],
        setup.cert1.thumbprint_s256()
    );
    assert_eq!(
        token.binding_thumbprint(),
        Some(setup.cert1.thumbprint_s256())
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
}

#[tokio::test]
async fn no_matching_federated_credential_is_refused() {
    let setup = setup(None, "api://AzureADTokenExchange").await;
    setup
        .world
        .emulator
        .directory()
        .update_app(LEG2_APP, |app| app.federated_credentials.clear());
    let err = two_leg(&setup)
        .build()
        .unwrap()
        .acquire_token([GRAPH])
        .await
        .unwrap_err();
    assert!(
        matches!(err.aadsts(), Some(700_211 | 700_213 | 700_212 | 70_021)),
        "{err}"
    );
    assert_eq!(err.code(), &"invalid_client");
}

#[tokio::test]
async fn an_expired_assertion_is_aadsts700024() {
    let clock = ManualClock::new(std::time::SystemTime::now());
    let setup = setup(Some(clock.clone()), "api://AzureADTokenExchange").await;
    let assertion = FicLeg1::new(setup.leg1.clone())
        .acquire_assertion()
        .await
        .unwrap();
    clock.advance(Duration::from_secs(2 * 3600));
    let leg2 = FicLeg2::new(setup.world.client(LEG2_APP).clock(Arc::new(clock.clone()))).unwrap();
    let err = leg2
        .exchange(&assertion, [GRAPH])
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(err.aadsts(), Some(700_024), "{err}");
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
