//! Service Fabric's pinned HTTPS: a local rustls server with a self-signed rcgen certificate;
//! the right thumbprint is accepted, a wrong one refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use fic_managed_identity::service_fabric::ServiceFabricTransport;
use fic_managed_identity::{ManagedIdentity, ManagedIdentityId, ManagedIdentitySource};
use fic_oauth_core::thumbprint::sha1_hex;
use fic_oauth_core::{
    ErrorCode, HttpTransport, ManualClock, TokenCredential, TokenRequestOptions, TransportRequest,
};
use support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A one-endpoint HTTPS server answering every request with a token; keeps the request heads.
struct Server {
    addr: SocketAddr,
    thumbprint: String,
    heads: Arc<Mutex<Vec<String>>>,
}

async fn start_server() -> Server {
    process_crypto_provider();
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let thumbprint = sha1_hex(generated.cert.der());
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![generated.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&heads);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let recorded = Arc::clone(&recorded);
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                recorded
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let body = token_body("sf-token");
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    Server {
        addr,
        thumbprint,
        heads,
    }
}

fn get(uri: &str) -> TransportRequest {
    TransportRequest::new(
        http::Request::get(uri)
            .header("secret", "sf-secret")
            .body(Bytes::new())
            .unwrap(),
    )
}

#[tokio::test]
async fn right_thumbprint_is_accepted() {
    let server = start_server().await;
    let transport = ServiceFabricTransport::new(&server.thumbprint).unwrap();
    let uri = format!(
        "https://127.0.0.1:{}/metadata/identity/oauth2/token?api-version=2020-05-01",
        server.addr.port()
    );
    let response = transport.send(get(&uri)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(std::str::from_utf8(response.body())
        .unwrap()
        .contains("sf-token"));
    let heads = server.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1);
    let head = heads[0].to_ascii_lowercase();
    assert!(
        head.starts_with("get /metadata/identity/oauth2/token?api-version=2020-05-01 http/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!("host: 127.0.0.1:{}\r\n", server.addr.port())),
        "{head}"
    );
    assert!(head.contains("secret: sf-secret\r\n"), "{head}");

    // Colon-separated, lower-case thumbprints work too, and so does a resolver override.
    let spaced: String = server
        .thumbprint
        .to_ascii_lowercase()
        .as_bytes()
        .chunks(2)
        .map(|pair| std::str::from_utf8(pair).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    let transport = ServiceFabricTransport::builder(&spaced)
        .resolve("sf.cluster.local:2377", server.addr)
        .build()
        .unwrap();
    let response = transport
        .send(get(
            "https://sf.cluster.local:2377/metadata/identity/oauth2/token",
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn wrong_thumbprint_is_refused() {
    let server = start_server().await;
    let mut wrong = server.thumbprint.clone().into_bytes();
    wrong[39] = if wrong[39] == b'0' { b'1' } else { b'0' };
    let transport = ServiceFabricTransport::new(std::str::from_utf8(&wrong).unwrap()).unwrap();
    let uri = format!(
        "https://127.0.0.1:{}/metadata/identity/oauth2/token",
        server.addr.port()
    );
    let err = transport.send(get(&uri)).await.unwrap_err();
    assert_eq!(err.code(), &ErrorCode::TLS_HANDSHAKE_FAILED);
    assert!(
        err.message().contains("IDENTITY_SERVER_THUMBPRINT"),
        "{err}"
    );
    assert!(
        server.heads.lock().unwrap().is_empty(),
        "no request reached the server"
    );
}

#[tokio::test]
async fn plain_http_and_client_certificates_are_refused() {
    process_crypto_provider();
    let transport =
        ServiceFabricTransport::new("A9993E364706816ABA3E25717850C26C9CD0D89D").unwrap();
    let err = transport
        .send(get("http://127.0.0.1:2377/token"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::INSECURE_TRANSPORT);
    assert_eq!(
        ServiceFabricTransport::new("not-a-thumbprint")
            .unwrap_err()
            .code(),
        &ErrorCode::INVALID_ARGUMENT
    );
    // Nothing listens on a freshly closed port: connection refused.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = transport
        .send(get(&format!("https://127.0.0.1:{port}/token")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::CONNECTION_FAILED);
}

#[tokio::test]
async fn service_fabric_credential_over_the_pinned_transport() {
    let server = start_server().await;
    let endpoint = format!(
        "https://127.0.0.1:{}/metadata/identity/oauth2/token",
        server.addr.port()
    );
    let clock = ManualClock::at_unix(NOW);
    // The default Service Fabric transport, pinned from the environment.
    let credential = ManagedIdentity::builder()
        .environment(env(&[
            ("IDENTITY_ENDPOINT", &endpoint),
            ("IDENTITY_HEADER", "sf-secret"),
            ("IDENTITY_SERVER_THUMBPRINT", &server.thumbprint),
        ]))
        .arc_agent_path("/nonexistent")
        .transport(Arc::new(FakeTransport::new()))
        .id(ManagedIdentityId::ObjectId(OBJECT_ID.into()))
        .clock(Arc::new(clock.clone()))
        .sleeper(Arc::new(clock))
        .build()
        .unwrap();
    assert_eq!(credential.source(), ManagedIdentitySource::ServiceFabric);
    let token = credential
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(token.token.expose(), "sf-token");
    let head = server.heads.lock().unwrap()[0].clone();
    assert!(
        head.starts_with(&format!(
            "GET /metadata/identity/oauth2/token?api-version=2020-05-01&resource=https%3A%2F%2Fmanagement.azure.com&principalId={OBJECT_ID} HTTP/1.1"
        )),
        "{head}"
    );
}
