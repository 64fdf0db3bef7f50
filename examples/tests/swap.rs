//! The transport and the cache can be swapped: the same flow assertions, written once below,
//! pass with the default transport and cache, with the reqwest transport of
//! `examples/reqwest_transport/transport.rs`, and with the user-written cache of
//! `examples/custom_cache/cache.rs` (whose counters prove it was used). Then the reqwest
//! transport's own contract: it never sends a request with an identity it cannot present,
//! keeps one client per identity, follows no redirect and classifies failures into
//! oauth-core's codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The example's own modules, compiled here as they are (not every item is used by the tests).
#[allow(dead_code)]
#[path = "../examples/reqwest_transport/transport.rs"]
mod reqwest_transport;

#[allow(dead_code)]
#[path = "../examples/custom_cache/cache.rs"]
mod custom_cache;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use custom_cache::CountingCache;
use fic_emulator::{App, Emulator, EmulatorHandle, FederatedCredential};
use fic_examples::{
    jwt_claims, new_identity, transport_for, EXCHANGE_AUDIENCE, EXCHANGE_SCOPE, GRAPH_SCOPE,
    GRAPH_URL, TENANT, VAULT_SCOPE, VAULT_URL,
};
use fic_flows::{ConfidentialClient, ConfidentialClientBuilder, ResourceClient, TwoLeg};
use fic_oauth_core::request::JWT_BEARER;
use fic_oauth_core::{
    ClientIdentity, Error, ErrorCode, HttpTransport, KeyKind, SignatureAlgorithm, SigningKey,
    TokenCredential, TokenRequestOptions, TokenSource, TokenType, TransportRequest,
};
use fic_token_cache::{MemoryCache, TokenCache};
use reqwest_transport::ReqwestTransport;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

const APP: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
const LEG1_APP: &str = "8b7c6d5e-4f3a-4b2c-9d1e-0f9a8b7c6d5e";
const LEG2_APP: &str = "7c6d5e4f-3a2b-4c1d-8e0f-9a8b7c6d5e4f";

/// An emulator with the app of the vanilla flow and the two apps of the FIC flow.
struct World {
    emulator: EmulatorHandle,
    cert: ClientIdentity,
    other_cert: ClientIdentity,
    leg1_cert: ClientIdentity,
}

async fn world() -> World {
    let cert = new_identity("swap-app").unwrap();
    let other_cert = new_identity("swap-other").unwrap();
    let leg1_cert = new_identity("swap-leg1").unwrap();
    let leg1 = App::new(LEG1_APP, TENANT).certificate(leg1_cert.leaf_der().to_vec());
    let leg2 = App::new(LEG2_APP, TENANT).federated_credential(FederatedCredential::new(
        format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
        leg1.object_id.clone(),
        EXCHANGE_AUDIENCE,
    ));
    let emulator = Emulator::builder()
        .app(App::new(APP, TENANT).certificate(cert.leaf_der().to_vec()))
        .app(leg1)
        .app(leg2)
        .start()
        .await
        .unwrap();
    World {
        emulator,
        cert,
        other_cert,
        leg1_cert,
    }
}

/// The default transport, wired to the emulator.
fn default_transport(emulator: &EmulatorHandle) -> Arc<dyn HttpTransport> {
    Arc::new(transport_for(emulator).unwrap())
}

/// The reqwest transport, wired to the emulator the same way.
fn reqwest_builder(emulator: &EmulatorHandle) -> reqwest_transport::ReqwestTransportBuilder {
    let mut builder = ReqwestTransport::builder()
        .built_in_roots(false)
        .add_root_certificate_pem(emulator.ca_certificate_pem().as_bytes())
        .unwrap();
    for (pattern, addr) in emulator.resolver_map() {
        builder = builder.resolve(&pattern, addr);
    }
    builder
}

fn reqwest_for(emulator: &EmulatorHandle) -> Arc<ReqwestTransport> {
    Arc::new(reqwest_builder(emulator).build().unwrap())
}

/// A client of `client_id` on `transport`, and on `cache` when given (otherwise the client's
/// default cache).
fn client(
    transport: &Arc<dyn HttpTransport>,
    cache: Option<&Arc<dyn TokenCache>>,
    client_id: &str,
) -> ConfidentialClientBuilder {
    let builder = ConfidentialClient::builder(client_id)
        .authority(&format!("https://login.microsoftonline.com/{TENANT}"))
        .transport(transport.clone())
        .environment(std::collections::HashMap::new())
        .region_detector(Arc::new(fic_flows::RegionDetector::new()));
    match cache {
        Some(cache) => builder.cache(cache.clone()),
        None => builder,
    }
}

// ---------------------------------------------------------------------------------------------
// The flow assertions, written once.
// ---------------------------------------------------------------------------------------------

/// Vanilla mTLS PoP, global: the request goes to `mtlsauth.microsoft.com` with
/// `token_type=mtls_pop`, no client assertion, the binding certificate as TLS client
/// certificate; the token's `cnf` is the binding; the second call is a cache hit; the resource
/// accepts the token with the binding certificate and refuses it without (or with another).
async fn assert_vanilla_pop_global(
    w: &World,
    transport: &Arc<dyn HttpTransport>,
    cache: Option<&Arc<dyn TokenCache>>,
) {
    let log = w.emulator.log();
    log.clear();
    let client = client(transport, cache, APP)
        .certificate(w.cert.clone())
        .build()
        .unwrap();
    let token = client
        .acquire_token_for_client([VAULT_SCOPE])
        .with_mtls_pop()
        .await
        .unwrap();

    let requests = log.token_requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.host, "mtlsauth.microsoft.com");
    assert_eq!(request.sni.as_deref(), Some("mtlsauth.microsoft.com"));
    assert_eq!(request.path, format!("/{TENANT}/oauth2/v2.0/token"));
    assert_eq!(request.form_value("grant_type"), Some("client_credentials"));
    assert_eq!(request.form_value("token_type"), Some("mtls_pop"));
    assert_eq!(request.form_value("client_assertion"), None);
    assert_eq!(request.form_value("client_assertion_type"), None);
    assert_eq!(
        request.client_cert_thumbprint.as_deref(),
        Some(w.cert.thumbprint_s256()),
        "the TLS client certificate is the binding certificate"
    );

    assert_eq!(token.token_type, TokenType::MtlsPop);
    assert_eq!(token.source, TokenSource::IdentityProvider);
    assert_eq!(token.binding_thumbprint(), Some(w.cert.thumbprint_s256()));
    let claims = jwt_claims(token.token.expose()).unwrap();
    assert_eq!(claims["cnf"]["x5t#S256"], w.cert.thumbprint_s256());
    assert_eq!(claims["appid"], APP);

    let again = client
        .acquire_token_for_client([VAULT_SCOPE])
        .with_mtls_pop()
        .await
        .unwrap();
    assert_eq!(again.source, TokenSource::Cache);
    assert_eq!(again.token.expose(), token.token.expose());
    assert_eq!(again.binding_thumbprint(), Some(w.cert.thumbprint_s256()));
    assert_eq!(log.token_requests().len(), 1, "the cache hit sends nothing");

    let resource = ResourceClient::new(transport.clone());
    let answer = resource.get(VAULT_URL, &token).await.unwrap();
    assert_eq!(answer.status, 200);
    let body = answer.json().unwrap();
    assert_eq!(body["bound"], true);
    assert_eq!(body["client_cert_thumbprint"], w.cert.thumbprint_s256());

    // The resource client will not send a bound token without its certificate...
    let mut unbound = token.clone();
    unbound.binding = None;
    let sent = log.resource_requests().len();
    let err = ResourceClient::new(transport.clone())
        .get(VAULT_URL, &unbound)
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::MTLS_CERTIFICATE_NOT_PROVIDED);
    assert_eq!(log.resource_requests().len(), sent, "nothing was sent");
    // ...and the resource refuses it when it comes that way (a stolen token replayed as Bearer).
    let mut stolen = unbound;
    stolen.token_type = TokenType::Bearer;
    let answer = ResourceClient::new(transport.clone())
        .get(VAULT_URL, &stolen)
        .await
        .unwrap();
    assert_eq!(
        answer.status, 401,
        "refused without the binding certificate"
    );
    assert!(answer.www_authenticate().is_some());
    let last = log.resource_requests().pop().unwrap();
    assert_eq!(last.client_cert_thumbprint, None);

    let mut wrong = token.clone();
    wrong.binding = Some(w.other_cert.clone());
    let answer = resource.get(VAULT_URL, &wrong).await.unwrap();
    assert_eq!(answer.status, 401, "refused with another certificate");
}

/// FIC two-leg CC → CC, Bearer: Leg 1 asks for the exchange scope with a jwt-bearer
/// certificate assertion, Leg 2 sends the Leg-1 token as jwt-bearer client assertion; nothing
/// goes over mTLS; both legs are cached; the resource accepts the token.
async fn assert_fic_cc_to_cc_bearer(
    w: &World,
    transport: &Arc<dyn HttpTransport>,
    cache: Option<&Arc<dyn TokenCache>>,
) {
    let log = w.emulator.log();
    log.clear();
    let leg1: Arc<dyn TokenCredential> = Arc::new(
        client(transport, cache, LEG1_APP)
            .certificate(w.leg1_cert.clone())
            .build()
            .unwrap(),
    );
    let leg2 = client(transport, cache, LEG2_APP);
    let two_leg = TwoLeg::builder(leg1.clone(), leg2).build().unwrap();
    let token = two_leg.acquire_token([GRAPH_SCOPE]).await.unwrap();
    assert_eq!(token.token_type, TokenType::Bearer);
    assert_eq!(token.binding_thumbprint(), None);
    assert_eq!(jwt_claims(token.token.expose()).unwrap()["appid"], LEG2_APP);

    let requests = log.token_requests();
    assert_eq!(requests.len(), 2);
    let (first, second) = (&requests[0], &requests[1]);
    assert_eq!(first.host, "login.microsoftonline.com");
    assert_eq!(first.form_value("client_id"), Some(LEG1_APP));
    assert_eq!(first.form_value("scope"), Some(EXCHANGE_SCOPE));
    assert_eq!(first.form_value("client_assertion_type"), Some(JWT_BEARER));
    assert_eq!(first.client_cert_thumbprint, None);
    assert_eq!(second.host, "login.microsoftonline.com");
    assert_eq!(second.form_value("client_id"), Some(LEG2_APP));
    assert_eq!(second.form_value("grant_type"), Some("client_credentials"));
    assert_eq!(second.form_value("client_assertion_type"), Some(JWT_BEARER));
    assert_eq!(second.client_cert_thumbprint, None);
    let leg1_token = leg1
        .get_token(&[EXCHANGE_SCOPE], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(leg1_token.source, TokenSource::Cache);
    assert_eq!(
        second.form_value("client_assertion"),
        Some(leg1_token.token.expose()),
        "the Leg-1 token is Leg 2's client assertion"
    );

    let again = two_leg.acquire_token([GRAPH_SCOPE]).await.unwrap();
    assert_eq!(again.source, TokenSource::Cache);
    assert_eq!(log.token_requests().len(), 2, "both legs cached");

    let answer = ResourceClient::new(transport.clone())
        .get(GRAPH_URL, &token)
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
}

/// Every flow assertion on one transport and cache.
async fn assert_flows(
    w: &World,
    transport: &Arc<dyn HttpTransport>,
    cache: Option<&Arc<dyn TokenCache>>,
) {
    assert_vanilla_pop_global(w, transport, cache).await;
    assert_fic_cc_to_cc_bearer(w, transport, cache).await;
}

#[tokio::test]
async fn default_transport_default_cache() {
    let w = world().await;
    let transport = default_transport(&w.emulator);
    assert_flows(&w, &transport, None).await;
    // The library's cache, given explicitly, passes too.
    let memory: Arc<dyn TokenCache> = Arc::new(MemoryCache::new());
    assert_flows(&w, &transport, Some(&memory)).await;
}

#[tokio::test]
async fn reqwest_transport_default_cache() {
    let w = world().await;
    let reqwest = reqwest_for(&w.emulator);
    let transport: Arc<dyn HttpTransport> = reqwest.clone();
    assert_flows(&w, &transport, None).await;
    // The PoP requests and the bound resource calls went through the binding
    // certificate's own reqwest client (the other certificate has one too).
    let clients = reqwest.identity_clients();
    assert!(clients.iter().any(|t| t == w.cert.thumbprint_s256()));
    assert!(clients.iter().any(|t| t == w.other_cert.thumbprint_s256()));
    assert_eq!(clients.len(), 2, "Bearer requests use no identity client");
}

#[tokio::test]
async fn default_transport_user_cache() {
    let w = world().await;
    let transport = default_transport(&w.emulator);
    let counting = Arc::new(CountingCache::new());
    let cache: Arc<dyn TokenCache> = counting.clone();
    assert_flows(&w, &transport, Some(&cache)).await;
    let stats = counting.stats();
    // 3 tokens from the identity provider (vanilla; Leg 1, Leg 2), each stored here.
    assert!(stats.puts >= 3, "{stats:?}");
    // The vanilla second call, the Leg-1 token read again, and the FIC second call.
    assert!(stats.hits >= 3, "{stats:?}");
    assert!(stats.gets > stats.hits, "the first calls missed: {stats:?}");
    assert!(stats.entries >= 3, "{stats:?}");
}

#[tokio::test]
async fn reqwest_transport_user_cache() {
    let w = world().await;
    let transport: Arc<dyn HttpTransport> = reqwest_for(&w.emulator);
    let counting = Arc::new(CountingCache::new());
    let cache: Arc<dyn TokenCache> = counting.clone();
    assert_flows(&w, &transport, Some(&cache)).await;
    let stats = counting.stats();
    assert!(stats.puts >= 3 && stats.hits >= 3, "{stats:?}");
}

// ---------------------------------------------------------------------------------------------
// The reqwest transport's own contract.
// ---------------------------------------------------------------------------------------------

/// A key that signs with no TLS signature scheme: an identity no transport can present.
#[derive(Debug)]
struct NoTlsKey;

impl SigningKey for NoTlsKey {
    fn kind(&self) -> KeyKind {
        KeyKind::EcP256
    }
    fn algorithms(&self) -> &[SignatureAlgorithm] {
        &[]
    }
    fn sign(&self, _: SignatureAlgorithm, _: &[u8]) -> Result<Vec<u8>, Error> {
        Err(Error::new(ErrorCode::SIGNING_FAILED, "no"))
    }
}

fn post(url: &str) -> http::Request<Bytes> {
    http::Request::post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Bytes::from_static(b"client_id=x"))
        .unwrap()
}

fn token_url() -> String {
    format!("https://mtlsauth.microsoft.com/{TENANT}/oauth2/v2.0/token")
}

#[tokio::test]
async fn reqwest_never_sends_without_the_identity_it_was_asked_for() {
    let w = world().await;
    let transport = reqwest_for(&w.emulator);

    // Plain http cannot carry a client certificate.
    let err = transport
        .send(
            TransportRequest::new(post("http://localhost:1/token"))
                .with_identity(Some(w.cert.clone())),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::INSECURE_TRANSPORT);

    // A key that cannot sign a TLS handshake: refused before any connection.
    let keyless =
        ClientIdentity::new(vec![w.cert.leaf_der().to_vec()], Arc::new(NoTlsKey)).unwrap();
    let err = transport
        .send(TransportRequest::new(post(&token_url())).with_identity(Some(keyless)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::INVALID_CERTIFICATE);
    assert!(w.emulator.log().is_empty(), "nothing reached the emulator");

    // The same through a confidential client whose assertion is bound to that identity
    // (jwt-pop): the mTLS PoP request fails, unsent.
    let keyless =
        ClientIdentity::new(vec![w.cert.leaf_der().to_vec()], Arc::new(NoTlsKey)).unwrap();
    let dyn_transport: Arc<dyn HttpTransport> = transport.clone();
    let bound = fic_assertion::BoundAssertion::new(
        fic_assertion::StaticAssertion::new("a-leg-1-token").unwrap(),
        keyless,
    );
    let err = client(&dyn_transport, None, APP)
        .assertion_provider(bound)
        .build()
        .unwrap()
        .acquire_token_for_client([VAULT_SCOPE])
        .with_mtls_pop()
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::INVALID_CERTIFICATE, "{err}");
    assert!(w.emulator.log().is_empty(), "nothing reached the emulator");

    // reqwest cannot redirect an IP-literal host: refused rather than sent to the real address.
    let imds = http::Request::get(
        "http://169.254.169.254/metadata/instance/compute?api-version=2021-02-01",
    )
    .header("Metadata", "true")
    .body(Bytes::new())
    .unwrap();
    let err = transport
        .send(TransportRequest::new(imds))
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::TRANSPORT);
    assert!(w.emulator.log().is_empty());
}

#[tokio::test]
async fn reqwest_keeps_one_client_per_identity_least_recently_used_dropped() {
    let w = world().await;
    let transport = Arc::new(
        reqwest_builder(&w.emulator)
            .max_identities(1)
            .build()
            .unwrap(),
    );
    let dyn_transport: Arc<dyn HttpTransport> = transport.clone();
    for cert in [&w.cert, &w.other_cert] {
        // Only the first certificate is registered: the second is refused by Entra, after
        // the TLS handshake with it.
        let _ = client(&dyn_transport, None, APP)
            .certificate(cert.clone())
            .build()
            .unwrap()
            .acquire_token_for_client([VAULT_SCOPE])
            .with_mtls_pop()
            .await;
    }
    let requests = w.emulator.log().token_requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].client_cert_thumbprint.as_deref(),
        Some(w.cert.thumbprint_s256())
    );
    assert_eq!(
        requests[1].client_cert_thumbprint.as_deref(),
        Some(w.other_cert.thumbprint_s256()),
        "each identity presents its own certificate"
    );
    assert_eq!(
        transport.identity_clients(),
        vec![w.other_cert.thumbprint_s256().to_string()]
    );
}

/// A one-shot HTTP server on 127.0.0.1 that answers every connection with `response` after
/// `delay`, counting connections.
async fn raw_server(response: &'static str, delay: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buffer = [0_u8; 4096];
                let _ = socket.read(&mut buffer).await;
                tokio::time::sleep(delay).await;
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (addr, connections)
}

#[tokio::test]
async fn reqwest_follows_no_redirect() {
    let (target, target_hits) = raw_server(
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno",
        Duration::ZERO,
    )
    .await;
    let redirect: &'static str = Box::leak(
        format!(
            "HTTP/1.1 302 Found\r\nLocation: http://{target}/elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .into_boxed_str(),
    );
    let (addr, _) = raw_server(redirect, Duration::ZERO).await;
    let transport = ReqwestTransport::builder()
        .built_in_roots(false)
        .build()
        .unwrap();
    let response = transport
        .send(TransportRequest::new(post(&format!("http://{addr}/token"))))
        .await
        .unwrap();
    assert_eq!(response.status(), 302, "the 3xx is the response");
    assert_eq!(
        response.headers()["location"],
        format!("http://{target}/elsewhere").as_str()
    );
    assert_eq!(
        target_hits.load(Ordering::SeqCst),
        0,
        "the redirect was not followed"
    );
}

#[tokio::test]
async fn reqwest_classifies_failures() {
    let w = world().await;

    // Nothing listens: connection_failed.
    let closed = {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        listener.local_addr().unwrap()
    };
    let transport = ReqwestTransport::builder()
        .built_in_roots(false)
        .add_root_certificate_pem(w.emulator.ca_certificate_pem().as_bytes())
        .unwrap()
        .resolve("login.microsoftonline.com:443", closed)
        .build()
        .unwrap();
    let err = transport
        .send(TransportRequest::new(post(&format!(
            "https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"
        ))))
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::CONNECTION_FAILED, "{err}");
    assert!(err.is_retryable());
    assert!(
        !err.message().contains("oauth2"),
        "no path in messages: {err}"
    );

    // The emulator's certificate, not trusted: tls_handshake_failed.
    let other_ca = rcgen::generate_simple_self_signed(vec!["some-other-ca".to_string()]).unwrap();
    let mut untrusting = ReqwestTransport::builder()
        .built_in_roots(false)
        .add_root_certificate_pem(other_ca.cert.pem().as_bytes())
        .unwrap();
    for (pattern, addr) in w.emulator.resolver_map() {
        untrusting = untrusting.resolve(&pattern, addr);
    }
    let err = untrusting
        .build()
        .unwrap()
        .send(TransportRequest::new(post(&token_url())).with_identity(Some(w.cert.clone())))
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::TLS_HANDSHAKE_FAILED, "{err}");
    assert!(w.emulator.log().token_requests().is_empty());

    // A server that answers too late: timeout (the request's own timeout wins).
    let (slow, _) = raw_server(
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let transport = ReqwestTransport::builder()
        .built_in_roots(false)
        .build()
        .unwrap();
    let err = transport
        .send(
            TransportRequest::new(post(&format!("http://{slow}/token")))
                .with_timeout(Duration::from_millis(200)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::TIMEOUT, "{err}");

    // A body over the limit: response_too_large.
    let (big, _) = raw_server(
        "HTTP/1.1 200 OK\r\nContent-Length: 64\r\nConnection: close\r\n\r\n\
         0123456789012345678901234567890123456789012345678901234567890123",
        Duration::ZERO,
    )
    .await;
    let transport = ReqwestTransport::builder()
        .built_in_roots(false)
        .max_response_bytes(16)
        .build()
        .unwrap();
    let err = transport
        .send(TransportRequest::new(post(&format!("http://{big}/token"))))
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::RESPONSE_TOO_LARGE, "{err}");
}
