//! Vanilla mTLS PoP and the other confidential-client flows, end to end against the emulator,
//! asserted from its request log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use fic_emulator::{App, Emulator, Fault, FaultTarget};
use fic_flows::ResourceClient;
use fic_oauth_core::{ErrorCode, TokenSource, TokenType};
use fic_tests::{jwt_payload, new_identity, World, TENANT};

const APP: &str = "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d";
const VAULT: &str = "https://vault.azure.net/.default";
const VAULT_URL: &str = "https://e2e.vault.azure.net/secrets/s1";

async fn world_with_certificates(certs: &[&fic_oauth_core::ClientIdentity]) -> World {
    let mut app = App::new(APP, TENANT).secret("right-secret");
    for cert in certs {
        app = app.certificate(cert.leaf_der().to_vec());
    }
    World::start(Emulator::builder().app(app)).await
}

#[tokio::test]
async fn global_mtls_pop_binds_the_token_to_the_certificate() {
    let cert = new_identity("app-cert");
    let world = world_with_certificates(&[&cert]).await;
    let client = world.client(APP).certificate(cert.clone()).build().unwrap();
    let token = client
        .acquire_token_for_client([VAULT])
        .with_mtls_pop()
        .await
        .unwrap();

    let log = world.emulator.log().token_requests();
    assert_eq!(log.len(), 1);
    let request = &log[0];
    assert_eq!(request.host, "mtlsauth.microsoft.com");
    assert_eq!(request.path, format!("/{TENANT}/oauth2/v2.0/token"));
    assert_eq!(request.form_value("token_type"), Some("mtls_pop"));
    assert_eq!(request.form_value("grant_type"), Some("client_credentials"));
    assert_eq!(request.form_value("client_assertion"), None);
    assert_eq!(request.form_value("client_assertion_type"), None);
    assert_eq!(
        request.client_cert_thumbprint.as_deref(),
        Some(cert.thumbprint_s256())
    );

    assert_eq!(token.token_type, TokenType::MtlsPop);
    assert_eq!(token.binding_thumbprint(), Some(cert.thumbprint_s256()));
    let claims = jwt_payload(token.token.expose());
    assert_eq!(claims["cnf"]["x5t#S256"], cert.thumbprint_s256());
    assert_eq!(claims["appid"], APP);
    assert_eq!(claims["tid"], TENANT);
}

#[tokio::test]
async fn regional_mtls_pop_goes_to_the_regional_mtlsauth_host() {
    let cert = new_identity("app-cert");
    let world = world_with_certificates(&[&cert]).await;
    let client = world
        .client(APP)
        .certificate(cert.clone())
        .region("westus3")
        .build()
        .unwrap();
    client
        .acquire_token_for_client([VAULT])
        .with_mtls_pop()
        .await
        .unwrap();
    let request = world.emulator.log().last_token_request().unwrap();
    assert_eq!(request.host, "westus3.mtlsauth.microsoft.com");
    assert_eq!(
        request.sni.as_deref(),
        Some("westus3.mtlsauth.microsoft.com")
    );
    assert_eq!(
        request.client_cert_thumbprint.as_deref(),
        Some(cert.thumbprint_s256())
    );
}

#[tokio::test]
async fn the_cache_serves_the_same_certificate_and_misses_for_another() {
    let cert1 = new_identity("cert-1");
    let cert2 = new_identity("cert-2");
    let world = world_with_certificates(&[&cert1, &cert2]).await;
    let cache: Arc<dyn fic_token_cache::TokenCache> = Arc::new(fic_token_cache::MemoryCache::new());
    let client1 = world
        .client(APP)
        .certificate(cert1.clone())
        .cache(cache.clone())
        .build()
        .unwrap();
    let client2 = world
        .client(APP)
        .certificate(cert2.clone())
        .cache(cache.clone())
        .build()
        .unwrap();

    client1
        .acquire_token_for_client([VAULT])
        .with_mtls_pop()
        .await
        .unwrap();
    let again = client1
        .acquire_token_for_client([VAULT])
        .with_mtls_pop()
        .await
        .unwrap();
    assert_eq!(again.source, TokenSource::Cache);
    assert_eq!(
        world.token_requests(),
        1,
        "the second call makes no request"
    );

    let other = client2
        .acquire_token_for_client([VAULT])
        .with_mtls_pop()
        .await
        .unwrap();
    assert_eq!(other.source, TokenSource::IdentityProvider);
    assert_eq!(other.binding_thumbprint(), Some(cert2.thumbprint_s256()));
    let requests = world.emulator.log().token_requests();
    assert_eq!(requests.len(), 2, "another certificate is a new request");
    assert_eq!(
        requests[1].client_cert_thumbprint.as_deref(),
        Some(cert2.thumbprint_s256())
    );
    assert_eq!(
        jwt_payload(other.token.expose())["cnf"]["x5t#S256"],
        cert2.thumbprint_s256()
    );
}

#[tokio::test]
async fn a_bearer_downgrade_is_a_mismatch_and_nothing_is_cached() {
    let cert = new_identity("app-cert");
    let world = world_with_certificates(&[&cert]).await;
    world
        .emulator
        .faults()
        .inject(Fault::bearer_downgrade().on(FaultTarget::Token).times(1));
    let client = world.client(APP).certificate(cert.clone()).build().unwrap();
    let err = client
        .acquire_token_for_client([VAULT])
        .with_mtls_pop()
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::TOKEN_TYPE_MISMATCH);
    assert!(
        err.message()
            .contains("asked for mtls_pop, received Bearer"),
        "{err}"
    );
    let token = client
        .acquire_token_for_client([VAULT])
        .with_mtls_pop()
        .await
        .unwrap();
    assert_eq!(token.source, TokenSource::IdentityProvider);
    assert_eq!(token.token_type, TokenType::MtlsPop);
    assert_eq!(
        world.token_requests(),
        2,
        "the downgraded answer was not cached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_callers_on_a_cold_key_make_one_request() {
    let cert = new_identity("app-cert");
    let world = world_with_certificates(&[&cert]).await;
    // The one token request is held for a moment, so every caller misses while it is in flight.
    world.emulator.faults().inject(
        Fault::delay(std::time::Duration::from_millis(300))
            .on(FaultTarget::Token)
            .times(1),
    );
    let client = world.client(APP).certificate(cert.clone()).build().unwrap();
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (client, started) = (client.clone(), started.clone());
        tasks.push(tokio::spawn(async move {
            started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            client
                .acquire_token_for_client([VAULT])
                .with_mtls_pop()
                .await
        }));
    }
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.push(task.await.unwrap().unwrap());
    }
    assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 1000);
    assert_eq!(world.token_requests(), 1);
    assert!(tokens
        .iter()
        .all(|t| t.token.expose() == tokens[0].token.expose()));
    assert!(
        tokens
            .iter()
            .filter(|t| t.source == TokenSource::IdentityProvider)
            .count()
            > 1,
        "callers overlapped the request and shared its result"
    );
}

#[tokio::test]
async fn the_resource_accepts_only_the_binding_certificate() {
    let cert = new_identity("app-cert");
    let other = new_identity("other-cert");
    let world = world_with_certificates(&[&cert]).await;
    let client = world.client(APP).certificate(cert.clone()).build().unwrap();
    let token = client
        .acquire_token_for_client([VAULT])
        .with_mtls_pop()
        .await
        .unwrap();
    let resource = ResourceClient::new(world.transport.clone());

    let ok = resource.get(VAULT_URL, &token).await.unwrap();
    assert_eq!(ok.status, 200);
    let body = ok.json().unwrap();
    assert_eq!(body["bound"], true);
    let seen = world.emulator.log().resource_requests();
    assert_eq!(
        seen.last().unwrap().client_cert_thumbprint.as_deref(),
        Some(cert.thumbprint_s256())
    );

    // Without its certificate the library will not present a bound token; sent anyway (as
    // Bearer, no TLS client certificate), the resource refuses it.
    let mut unbound = token.clone();
    unbound.binding = None;
    let err = resource.get(VAULT_URL, &unbound).await.unwrap_err();
    assert_eq!(
        err.code(),
        &fic_oauth_core::ErrorCode::MTLS_CERTIFICATE_NOT_PROVIDED
    );
    unbound.token_type = fic_oauth_core::TokenType::Bearer;
    let refused = resource.get(VAULT_URL, &unbound).await.unwrap();
    assert_eq!(refused.status, 401);
    assert_eq!(
        world
            .emulator
            .log()
            .resource_requests()
            .last()
            .unwrap()
            .client_cert_thumbprint,
        None
    );
    assert!(refused
        .www_authenticate()
        .unwrap()
        .contains("invalid_token"));

    let mut wrong = token.clone();
    wrong.binding = Some(other);
    let refused = resource.get(VAULT_URL, &wrong).await.unwrap();
    assert_eq!(refused.status, 401);
}

#[tokio::test]
async fn certificate_bearer_and_secret_get_bearer_tokens() {
    let cert = new_identity("app-cert");
    let world = world_with_certificates(&[&cert]).await;
    let by_cert = world.client(APP).certificate(cert.clone()).build().unwrap();
    let token = by_cert.acquire_token_for_client([VAULT]).await.unwrap();
    assert_eq!(token.token_type, TokenType::Bearer);
    let request = world.emulator.log().last_token_request().unwrap();
    assert_eq!(request.host, "login.microsoftonline.com");
    assert_eq!(
        request.form_value("client_assertion_type"),
        Some(fic_oauth_core::request::JWT_BEARER)
    );
    assert!(request.client_cert_thumbprint.is_none());
    assert!(jwt_payload(token.token.expose()).get("cnf").is_none());

    let by_secret = world
        .client(APP)
        .client_secret("right-secret")
        .region("eastus")
        .build()
        .unwrap();
    by_secret.acquire_token_for_client([VAULT]).await.unwrap();
    let request = world.emulator.log().last_token_request().unwrap();
    assert_eq!(request.host, "eastus.login.microsoft.com");
    assert_eq!(request.form_value("client_secret"), Some("right-secret"));
}

#[tokio::test]
async fn server_errors_surface_with_their_aadsts_code() {
    let cert = new_identity("app-cert");
    let unregistered = new_identity("unregistered");
    let world = world_with_certificates(&[&cert]).await;

    let wrong_secret = world.client(APP).client_secret("wrong").build().unwrap();
    let err = wrong_secret
        .acquire_token_for_client([VAULT])
        .await
        .unwrap_err();
    assert_eq!(err.code(), &"invalid_client");
    assert_eq!(err.aadsts(), Some(7_000_215));
    assert!(err.server_error().unwrap().trace_id.is_some());

    let unknown_app = world
        .client("00000000-0000-0000-0000-00000000beef")
        .client_secret("x")
        .build()
        .unwrap();
    let err = unknown_app
        .acquire_token_for_client([VAULT])
        .await
        .unwrap_err();
    assert_eq!(err.aadsts(), Some(700_016));

    let bad_cert = world.client(APP).certificate(unregistered).build().unwrap();
    let err = bad_cert
        .acquire_token_for_client([VAULT])
        .with_mtls_pop()
        .await
        .unwrap_err();
    assert!(err.aadsts().is_some(), "{err}");
    assert_eq!(err.status(), Some(401));

    world.emulator.faults().inject(
        Fault::status(503)
            .retry_after("20")
            .on(FaultTarget::Token)
            .times(1),
    );
    let client = world
        .client(APP)
        .client_secret("right-secret")
        .build()
        .unwrap();
    let err = client
        .acquire_token_for_client(["https://graph.microsoft.com/.default"])
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::THROTTLED);
    assert_eq!(err.retry_after(), Some(std::time::Duration::from_secs(20)));
}

#[tokio::test]
async fn a_cache_hit_is_ready_at_the_first_poll_and_a_miss_is_a_request() {
    use std::future::{Future, IntoFuture};
    use std::task::{Context, Poll, Waker};

    let cert = new_identity("app-cert");
    let world = world_with_certificates(&[&cert]).await;
    let client = world.client(APP).certificate(cert.clone()).build().unwrap();
    let miss = client
        .acquire_token_for_client([VAULT])
        .with_mtls_pop()
        .into_future();
    assert_eq!(format!("{miss:?}"), "AcquireTokenFuture(request)");
    let first = miss.await.unwrap();
    assert_eq!(first.source, TokenSource::IdentityProvider);

    let mut hit = client
        .acquire_token_for_client([VAULT])
        .with_mtls_pop()
        .into_future();
    assert_eq!(format!("{hit:?}"), "AcquireTokenFuture(cache hit)");
    let mut context = Context::from_waker(Waker::noop());
    let Poll::Ready(token) = std::pin::Pin::new(&mut hit).poll(&mut context) else {
        panic!("a cache hit must not wait");
    };
    let token = token.unwrap();
    assert_eq!(token.source, TokenSource::Cache);
    assert_eq!(token.token.expose(), first.token.expose());
    assert_eq!(token.binding_thumbprint(), Some(cert.thumbprint_s256()));
    // Polled again after completion: an error, not a panic.
    let Poll::Ready(again) = std::pin::Pin::new(&mut hit).poll(&mut context) else {
        panic!("ready");
    };
    assert_eq!(again.unwrap_err().code(), &ErrorCode::INTERNAL);
    assert_eq!(world.token_requests(), 1);
}
