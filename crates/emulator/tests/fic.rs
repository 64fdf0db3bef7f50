//! FIC two-leg: an emulator-issued (or trusted external) token as the client assertion, matched
//! against the app's federated credentials; and the rejections.
// Test helpers (not only #[test] functions) may unwrap.
#![allow(clippy::unwrap_used)]

mod support;

use fic_emulator::{codes, App, FederatedCredential, ManagedIdentity, TrustedIssuer};
use serde_json::json;
use support::*;

const LOGIN: &str = "login.microsoftonline.com";

fn issuer() -> String {
    format!("https://login.microsoftonline.com/{TENANT}/v2.0")
}

async fn leg2(emu: &fic_emulator::EmulatorHandle, host: &str, assertion: &str) -> HttpResponse {
    post_form(
        emu,
        &endpoint(host, TENANT),
        &[
            ("client_id", FIC_APP),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
            ("scope", GRAPH_SCOPE),
            ("grant_type", "client_credentials"),
        ],
        None,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn exchange_of_an_emulator_issued_token() {
    let emu = standard_builder().start().await.unwrap();
    let subject = emu.directory().app(SECRET_APP).unwrap().object_id;
    emu.directory().add_app(
        App::new(FIC_APP, TENANT)
            .roles(["Sites.Read.All"])
            .federated_credential(FederatedCredential::new(
                issuer(),
                subject,
                "api://AzureADTokenExchange",
            )),
    );
    let leg1 = secret_token(&emu, EXCHANGE_SCOPE).await;
    assert_eq!(claims_of(&leg1)["aud"], "api://AzureADTokenExchange");
    let response = leg2(&emu, LOGIN, &leg1).await;
    assert_eq!(response.status, 200, "{:#}", response.json());
    let claims = claims_of(response.json()["access_token"].as_str().unwrap());
    assert_eq!(claims["appid"], FIC_APP);
    assert_eq!(claims["roles"], json!(["Sites.Read.All"]));
    // The federated token can be presented again (no jti replay rule for it), on a regional host too.
    let response = leg2(&emu, "eastus.login.microsoft.com", &leg1).await;
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn managed_identity_subject_in_the_federated_credential() {
    // A managed identity's tokens have sub = its object id; the FIC names that subject. The MI
    // token endpoints come later, so the test registers an app standing in for the MI's SP.
    let mi_object_id = "6325cd32-9911-41f3-819c-416cdf9104e7";
    let emu = standard_builder()
        .managed_identity(ManagedIdentity::system_assigned(
            "mi-client",
            mi_object_id,
            TENANT,
        ))
        .app(
            App::new("77777777-7777-7777-7777-777777777777", TENANT)
                .secret("mi")
                .object_id(mi_object_id),
        )
        .app(
            App::new(FIC_APP, TENANT).federated_credential(FederatedCredential::new(
                issuer(),
                mi_object_id,
                "api://AzureADTokenExchange",
            )),
        )
        .start()
        .await
        .unwrap();
    assert_eq!(emu.directory().managed_identities().len(), 1);
    let leg1 = token(
        &emu,
        LOGIN,
        &[
            ("client_id", "77777777-7777-7777-7777-777777777777"),
            ("client_secret", "mi"),
            ("scope", EXCHANGE_SCOPE),
            ("grant_type", "client_credentials"),
        ],
        None,
    )
    .await
    .json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(claims_of(&leg1)["sub"], mi_object_id);
    assert_eq!(leg2(&emu, LOGIN, &leg1).await.status, 200);
}

#[tokio::test]
async fn federated_credential_rejections() {
    let emu = standard_builder().start().await.unwrap();
    let subject = emu.directory().app(SECRET_APP).unwrap().object_id;
    let leg1_exchange = secret_token(&emu, EXCHANGE_SCOPE).await;
    let leg1_graph = secret_token(&emu, GRAPH_SCOPE).await;
    let set_fic = |fic: FederatedCredential| {
        emu.directory()
            .add_app(App::new(FIC_APP, TENANT).federated_credential(fic));
    };
    // Issuer does not match.
    set_fic(FederatedCredential::new(
        format!("https://login.microsoftonline.com/{OTHER_TENANT}/v2.0"),
        subject.clone(),
        "api://AzureADTokenExchange",
    ));
    leg2(&emu, LOGIN, &leg1_exchange).await.assert_aadsts(
        401,
        "invalid_client",
        codes::FIC_ISSUER_NO_MATCH,
    );
    // Subject does not match.
    set_fic(FederatedCredential::new(
        issuer(),
        "someone-else",
        "api://AzureADTokenExchange",
    ));
    leg2(&emu, LOGIN, &leg1_exchange).await.assert_aadsts(
        401,
        "invalid_client",
        codes::FIC_SUBJECT_NO_MATCH,
    );
    // Audience does not match the credential.
    set_fic(FederatedCredential::new(
        issuer(),
        subject.clone(),
        "api://AzureADTokenExchange",
    ));
    leg2(&emu, LOGIN, &leg1_graph).await.assert_aadsts(
        401,
        "invalid_client",
        codes::FIC_AUDIENCE_NO_MATCH,
    );
    // The credential matches but its audience is not a token-exchange audience.
    set_fic(FederatedCredential::new(
        issuer(),
        subject.clone(),
        "https://graph.microsoft.com",
    ));
    leg2(&emu, LOGIN, &leg1_graph).await.assert_aadsts(
        401,
        "invalid_client",
        codes::NOT_TOKEN_EXCHANGE_AUDIENCE,
    );
    // The public exchange audience presented in the US Gov cloud.
    set_fic(FederatedCredential::new(
        issuer(),
        subject.clone(),
        "api://AzureADTokenExchange",
    ));
    leg2(&emu, "login.microsoftonline.us", &leg1_exchange)
        .await
        .assert_aadsts(401, "invalid_client", codes::NOT_TOKEN_EXCHANGE_AUDIENCE);
    // A tampered token: signature fails.
    let mut parts: Vec<String> = leg1_exchange.split('.').map(str::to_owned).collect();
    let mut claims = claims_of(&leg1_exchange);
    claims["sub"] = json!("forged");
    parts[1] = b64url(claims.to_string());
    leg2(&emu, LOGIN, &parts.join(".")).await.assert_aadsts(
        401,
        "invalid_client",
        codes::BAD_ASSERTION_SIGNATURE,
    );
}

#[tokio::test]
async fn expired_federated_token_is_refused() {
    let clock = fic_oauth_core::ManualClock::new(std::time::SystemTime::now());
    let emu = standard_builder()
        .clock(std::sync::Arc::new(clock.clone()))
        .start()
        .await
        .unwrap();
    let subject = emu.directory().app(SECRET_APP).unwrap().object_id;
    emu.directory()
        .add_app(
            App::new(FIC_APP, TENANT).federated_credential(FederatedCredential::new(
                issuer(),
                subject,
                "api://AzureADTokenExchange",
            )),
        );
    let leg1 = secret_token(&emu, EXCHANGE_SCOPE).await;
    clock.advance(std::time::Duration::from_secs(3599 + 301));
    leg2(&emu, LOGIN, &leg1)
        .await
        .assert_aadsts(401, "invalid_client", codes::ASSERTION_EXPIRED);
}

#[tokio::test]
async fn trusted_external_issuer() {
    let ec = TestCert::ec("external idp");
    let TestKey::Ec(pair) = &ec.key else {
        unreachable!()
    };
    let point = ring::signature::KeyPair::public_key(pair).as_ref().to_vec();
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "kid": "ext-1",
        "x": b64url(&point[1..33]), "y": b64url(&point[33..65]),
    });
    let external = "https://token.actions.githubusercontent.com";
    let emu = standard_builder()
        .trusted_issuer(TrustedIssuer::from_jwks(external, &json!({ "keys": [jwk] })).unwrap())
        .app(
            App::new(FIC_APP, TENANT).federated_credential(FederatedCredential::new(
                external,
                "repo:contoso/app:ref:refs/heads/main",
                "api://AzureADTokenExchange",
            )),
        )
        .start()
        .await
        .unwrap();
    let now = now_unix();
    let claims = json!({
        "iss": external, "sub": "repo:contoso/app:ref:refs/heads/main",
        "aud": "api://AzureADTokenExchange", "iat": now, "nbf": now, "exp": now + 300,
    });
    let token = sign_jwt(
        &json!({ "alg": "ES256", "typ": "JWT", "kid": "ext-1" }),
        &claims,
        &ec.key,
    );
    let response = leg2(&emu, LOGIN, &token).await;
    assert_eq!(response.status, 200, "{:#}", response.json());
    // Signed by a key the issuer does not publish.
    let other = TestCert::ec("impostor");
    let forged = sign_jwt(
        &json!({ "alg": "ES256", "typ": "JWT", "kid": "ext-1" }),
        &claims,
        &other.key,
    );
    leg2(&emu, LOGIN, &forged).await.assert_aadsts(
        401,
        "invalid_client",
        codes::BAD_ASSERTION_SIGNATURE,
    );
    // An issuer nobody trusts and no credential names.
    let mut unknown = claims.clone();
    unknown["iss"] = json!("https://idp.example");
    let token = sign_jwt(&json!({ "alg": "ES256", "typ": "JWT" }), &unknown, &ec.key);
    leg2(&emu, LOGIN, &token).await.assert_aadsts(
        401,
        "invalid_client",
        codes::FIC_ISSUER_NO_MATCH,
    );
}
