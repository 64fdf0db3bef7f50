//! The protected resource: signature, audience, expiry and the RFC 8705 certificate binding.
// Test helpers (not only #[test] functions) may unwrap.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fic_emulator::Resource;
use fic_oauth_core::{Clock as _, ManualClock};
use support::*;

const VAULT_URL: &str = "https://myvault.vault.azure.net/secrets/db?api-version=7.4";

async fn pop_token(emu: &fic_emulator::EmulatorHandle, cert: &TestCert, scope: &str) -> String {
    let response = token(
        emu,
        "westus3.mtlsauth.microsoft.com",
        &[
            ("client_id", CERT_APP),
            ("scope", scope),
            ("grant_type", "client_credentials"),
            ("token_type", "mtls_pop"),
        ],
        Some(&cert.identity()),
    )
    .await;
    assert_eq!(response.status, 200, "{:#}", response.json());
    response.json()["access_token"].as_str().unwrap().to_owned()
}

#[track_caller]
fn assert_invalid_token(response: &HttpResponse, scheme: &str, needle: &str) {
    assert_eq!(
        response.status,
        401,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let challenge = response.header("www-authenticate").unwrap();
    assert!(
        challenge.starts_with(&format!("{scheme} error=\"invalid_token\"")),
        "{challenge}"
    );
    assert!(challenge.contains("error_description=\""), "{challenge}");
    assert!(
        challenge.contains(needle),
        "{challenge} should mention {needle}"
    );
}

#[tokio::test]
async fn bound_token_needs_its_certificate() {
    let a = TestCert::a();
    let b = TestCert::b();
    let emu = standard_builder().start().await.unwrap();
    let token = pop_token(&emu, &a, "https://vault.azure.net/.default").await;
    // The right certificate, with either scheme.
    for scheme in ["mtls_pop", "Bearer"] {
        let response = call_resource(
            &emu,
            VAULT_URL,
            Some(&format!("{scheme} {token}")),
            Some(&a.identity()),
        )
        .await;
        assert_eq!(
            response.status,
            200,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        let body = response.json();
        assert_eq!(body["bound"], true);
        assert_eq!(body["token_type"], "mtls_pop");
        assert_eq!(body["cnf_x5t#S256"], a.thumbprint());
        assert_eq!(body["appid"], CERT_APP);
        assert_eq!(body["tid"], TENANT);
        assert_eq!(body["host"], "myvault.vault.azure.net");
        assert_eq!(body["path"], "/secrets/db");
        assert_eq!(body["resource"], "https://vault.azure.net");
    }
    // No certificate.
    let response = call_resource(&emu, VAULT_URL, Some(&format!("mtls_pop {token}")), None).await;
    assert_invalid_token(&response, "mtls_pop", "no TLS client certificate");
    // Another certificate.
    let response = call_resource(
        &emu,
        VAULT_URL,
        Some(&format!("mtls_pop {token}")),
        Some(&b.identity()),
    )
    .await;
    assert_invalid_token(&response, "mtls_pop", "does not match");
    let logged = emu.log().resource_requests();
    assert_eq!(
        logged.last().unwrap().client_cert_thumbprint.as_deref(),
        Some(b.thumbprint().as_str())
    );
    assert_eq!(logged.last().unwrap().status, Some(401));
}

#[tokio::test]
async fn bearer_tokens_audience_and_scheme() {
    let a = TestCert::a();
    let emu = standard_builder().start().await.unwrap();
    let graph = secret_token(&emu, GRAPH_SCOPE).await;
    let response = call_resource(
        &emu,
        "https://graph.microsoft.com/v1.0/me",
        Some(&format!("Bearer {graph}")),
        None,
    )
    .await;
    assert_eq!(response.status, 200);
    let body = response.json();
    assert_eq!(body["bound"], false);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["idtyp"], "app");
    assert_eq!(body["roles"], serde_json::json!(["Files.Read.All"]));
    // Wrong audience: a Graph token at Key Vault.
    let response = call_resource(&emu, VAULT_URL, Some(&format!("Bearer {graph}")), None).await;
    assert_invalid_token(&response, "Bearer", "audience");
    // An unbound token with the mtls_pop scheme.
    let response = call_resource(
        &emu,
        "https://graph.microsoft.com/v1.0/me",
        Some(&format!("mtls_pop {graph}")),
        Some(&a.identity()),
    )
    .await;
    assert_invalid_token(&response, "mtls_pop", "certificate-bound");
    // No Authorization header, another scheme, garbage token, tampered token.
    let response = call_resource(&emu, "https://graph.microsoft.com/v1.0/me", None, None).await;
    assert_invalid_token(&response, "Bearer", "No access token");
    let response = call_resource(
        &emu,
        "https://graph.microsoft.com/v1.0/me",
        Some("Basic dXNlcjpwYXNz"),
        None,
    )
    .await;
    assert_invalid_token(&response, "Bearer", "scheme");
    let response = call_resource(
        &emu,
        "https://graph.microsoft.com/v1.0/me",
        Some("Bearer not.a.jwt"),
        None,
    )
    .await;
    assert_invalid_token(&response, "Bearer", "malformed");
    let mut parts: Vec<String> = graph.split('.').map(str::to_owned).collect();
    let mut claims = claims_of(&graph);
    claims["roles"] = serde_json::json!(["Everything"]);
    parts[1] = b64url(claims.to_string());
    let response = call_resource(
        &emu,
        "https://graph.microsoft.com/v1.0/me",
        Some(&format!("Bearer {}", parts.join("."))),
        None,
    )
    .await;
    assert_invalid_token(&response, "Bearer", "signature");
}

#[tokio::test]
async fn expired_token_is_refused_after_the_skew() {
    let clock = ManualClock::new(SystemTime::now());
    let a = TestCert::a();
    let emu = standard_builder()
        .clock(Arc::new(clock.clone()))
        .start()
        .await
        .unwrap();
    let token = pop_token(&emu, &a, "https://vault.azure.net/.default").await;
    let claims = claims_of(&token);
    assert_eq!(
        claims["exp"].as_u64().unwrap(),
        fic_oauth_core::time::unix_seconds(clock.now()) + 3599
    );
    // Within the 5 minutes of skew after exp: still accepted.
    clock.advance(Duration::from_secs(3599 + 200));
    let response = call_resource(
        &emu,
        VAULT_URL,
        Some(&format!("mtls_pop {token}")),
        Some(&a.identity()),
    )
    .await;
    assert_eq!(response.status, 200);
    clock.advance(Duration::from_secs(200));
    let response = call_resource(
        &emu,
        VAULT_URL,
        Some(&format!("mtls_pop {token}")),
        Some(&a.identity()),
    )
    .await;
    assert_invalid_token(&response, "mtls_pop", "expired");
}

#[tokio::test]
async fn resources_registered_at_run_time_are_served() {
    let emu = standard_builder().start().await.unwrap();
    assert!(emu.resolve("api.contoso.com", 443).is_none());
    emu.directory()
        .add_resource(Resource::new("api://contoso-api").host("api.contoso.com"));
    assert_eq!(emu.resolve("api.contoso.com", 443), Some(emu.https_addr()));
    assert!(emu
        .resolver_map()
        .contains(&("api.contoso.com:443".to_owned(), emu.https_addr())));
    let token = secret_token(&emu, "api://contoso-api/.default").await;
    // The server certificate for a host added after start is minted on first use.
    let response = call_resource(
        &emu,
        "https://api.contoso.com/orders",
        Some(&format!("Bearer {token}")),
        None,
    )
    .await;
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.json()["aud"], "api://contoso-api");
}

#[tokio::test]
async fn bound_token_with_the_bearer_scheme_still_needs_its_certificate() {
    let a = TestCert::a();
    let b = TestCert::b();
    let emu = standard_builder().start().await.unwrap();
    let token = pop_token(&emu, &a, "https://vault.azure.net/.default").await;
    let bearer = format!("Bearer {token}");
    // No certificate: the Bearer scheme does not unbind the token.
    let response = call_resource(&emu, VAULT_URL, Some(&bearer), None).await;
    assert_invalid_token(&response, "Bearer", "no TLS client certificate");
    // Another certificate.
    let response = call_resource(&emu, VAULT_URL, Some(&bearer), Some(&b.identity())).await;
    assert_invalid_token(&response, "Bearer", "does not match");
    assert!(
        response
            .header("www-authenticate")
            .unwrap()
            .contains(&format!("cnf x5t#S256 '{}'", a.thumbprint())),
        "names the bound certificate"
    );
    let logged = emu.log().resource_requests();
    assert_eq!(logged.len(), 2);
    assert_eq!(logged[0].client_cert_thumbprint, None);
    assert_eq!(
        logged[1].client_cert_thumbprint.as_deref(),
        Some(b.thumbprint().as_str())
    );
    assert!(logged.iter().all(|r| r.status == Some(401)));
}

#[tokio::test]
async fn bound_token_for_another_audience_is_refused_even_with_its_certificate() {
    let a = TestCert::a();
    let emu = standard_builder().start().await.unwrap();
    // A Graph token bound to A, presented to Key Vault with A, in either scheme.
    let token = pop_token(&emu, &a, "https://graph.microsoft.com/.default").await;
    assert_eq!(claims_of(&token)["cnf"]["x5t#S256"], a.thumbprint());
    for scheme in ["mtls_pop", "Bearer"] {
        let response = call_resource(
            &emu,
            VAULT_URL,
            Some(&format!("{scheme} {token}")),
            Some(&a.identity()),
        )
        .await;
        assert_invalid_token(&response, scheme, "audience 'https://graph.microsoft.com'");
    }
    // At Graph it is accepted.
    let response = call_resource(
        &emu,
        "https://graph.microsoft.com/v1.0/me",
        Some(&format!("mtls_pop {token}")),
        Some(&a.identity()),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["bound"], true);
}
