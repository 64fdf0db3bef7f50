//! fic-mtls-transport against local rustls/hyper servers on 127.0.0.1, with production URLs
//! reaching them through resolver overrides. System DNS is off in every transport built here,
//! so nothing can leave the machine.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fic_mtls_transport::{MtlsTransport, MtlsTransportBuilder};
use fic_oauth_core::{ClientIdentity, Error, ErrorCode, HttpTransport, TransportRequest};
use rustls::SignatureScheme;
use support::{
    closed_port, field, get, text, ClientAuth, Pki, RingEcdsaKey, RingRsaPkcs1Key, ServerOptions,
    StallingServer, TestServer, RSA_PKCS8,
};

const LOGIN: &str = "https://login.microsoftonline.com";
const MTLS: &str = "https://westus3.mtlsauth.microsoft.com";

/// Trusts only `pki`'s CA, no system DNS, the login and mtlsauth hosts on `addr`.
#[allow(clippy::unwrap_used)] // Test helper: a panic is a test failure.
fn builder(pki: &Pki, addr: SocketAddr) -> MtlsTransportBuilder {
    MtlsTransport::builder()
        .built_in_roots(false)
        .add_root_certificate_pem(pki.ca_pem.as_bytes())
        .unwrap()
        .system_dns(false)
        .resolve("login.microsoftonline.com:443", addr)
        .resolve("*.mtlsauth.microsoft.com:443", addr)
}

async fn send(
    transport: &MtlsTransport,
    uri: &str,
    identity: Option<&ClientIdentity>,
) -> Result<http::Response<Bytes>, Error> {
    transport
        .send(TransportRequest::new(get(uri)).with_identity(identity.cloned()))
        .await
}

#[tokio::test]
async fn the_server_sees_the_identity_only_on_requests_that_carry_it() {
    let pki = Pki::new("ca");
    let server = TestServer::https(&pki, ServerOptions::default()).await;
    let transport = builder(&pki, server.addr).build().unwrap();
    let alice = pki.client_identity("alice");

    let with = send(&transport, &format!("{MTLS}/echo"), Some(&alice))
        .await
        .unwrap();
    assert_eq!(with.status(), 200);
    let body = text(&with);
    assert_eq!(field(&body, "cert"), alice.thumbprint_s256());
    assert_eq!(field(&body, "host"), "westus3.mtlsauth.microsoft.com");

    let without = send(&transport, &format!("{MTLS}/echo"), None)
        .await
        .unwrap();
    let body2 = text(&without);
    assert_eq!(field(&body2, "cert"), "none");
    assert_ne!(
        field(&body2, "conn"),
        field(&body, "conn"),
        "identity connection reused"
    );

    // Back to the identity: its own connection is still pooled.
    let again = send(&transport, &format!("{MTLS}/echo"), Some(&alice))
        .await
        .unwrap();
    assert_eq!(field(&text(&again), "conn"), field(&body, "conn"));
    assert_eq!(field(&text(&again), "cert"), alice.thumbprint_s256());

    // SNI is the URL's host, though the connection went to 127.0.0.1.
    let handshakes = server.handshakes();
    assert_eq!(handshakes.len(), 2);
    assert_eq!(
        handshakes[0].sni.as_deref(),
        Some("westus3.mtlsauth.microsoft.com")
    );
    assert_eq!(
        handshakes[0].client_thumbprint.as_deref(),
        Some(alice.thumbprint_s256())
    );
    assert_eq!(handshakes[1].client_thumbprint, None);
    assert_eq!(transport.identity_pool_count(), 1);
    assert_eq!(transport.connections_opened(), 2);
}

#[tokio::test]
async fn a_server_requiring_a_certificate_refuses_requests_without_one() {
    let pki = Pki::new("ca");
    for tls12_only in [false, true] {
        let server = TestServer::https(
            &pki,
            ServerOptions {
                client_auth: ClientAuth::Required,
                tls12_only,
                ..ServerOptions::default()
            },
        )
        .await;
        let transport = builder(&pki, server.addr).build().unwrap();

        // TLS 1.3: the client finishes first, the rejection arrives on the first read.
        let err = send(&transport, &format!("{MTLS}/echo"), None)
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            &ErrorCode::TLS_HANDSHAKE_FAILED,
            "tls12_only={tls12_only}: {err}"
        );
        assert_eq!(server.failed_handshakes(), 1);
        assert_eq!(server.requests(), 0);

        let bob = pki.client_identity("bob");
        let ok = send(&transport, &format!("{MTLS}/echo"), Some(&bob))
            .await
            .unwrap();
        assert_eq!(field(&text(&ok), "cert"), bob.thumbprint_s256());
    }
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_rejected_by_the_server() {
    let pki = Pki::new("ca");
    let stranger = Pki::new("other ca").client_identity("mallory");
    let server = TestServer::https(&pki, ServerOptions::default()).await;
    let transport = builder(&pki, server.addr).build().unwrap();
    let err = send(&transport, &format!("{MTLS}/echo"), Some(&stranger))
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::TLS_HANDSHAKE_FAILED, "{err}");
    assert_eq!(server.requests(), 0);
}

#[tokio::test]
async fn two_identities_get_two_pools() {
    let pki = Pki::new("ca");
    let server = TestServer::https(&pki, ServerOptions::default()).await;
    let transport = builder(&pki, server.addr).build().unwrap();
    let (alice, bob) = (pki.client_identity("alice"), pki.client_identity("bob"));
    assert_ne!(alice.thumbprint_s256(), bob.thumbprint_s256());

    let mut conns = Vec::new();
    for identity in [&alice, &bob, &alice, &bob] {
        let body = text(
            &send(&transport, &format!("{LOGIN}/echo"), Some(identity))
                .await
                .unwrap(),
        );
        assert_eq!(field(&body, "cert"), identity.thumbprint_s256());
        conns.push(field(&body, "conn"));
    }
    assert_ne!(conns[0], conns[1]);
    assert_eq!(conns[0], conns[2]);
    assert_eq!(conns[1], conns[3]);

    let seen: Vec<_> = server
        .handshakes()
        .into_iter()
        .map(|h| h.client_thumbprint)
        .collect();
    assert_eq!(
        seen,
        [
            Some(alice.thumbprint_s256().to_owned()),
            Some(bob.thumbprint_s256().to_owned())
        ]
    );
    assert_eq!(transport.identity_pool_count(), 2);
}

#[tokio::test]
async fn one_handshake_for_a_hundred_sequential_requests() {
    let pki = Pki::new("ca");
    let server = TestServer::https(&pki, ServerOptions::default()).await;
    let transport = builder(&pki, server.addr).build().unwrap();
    let alice = pki.client_identity("alice");
    for _ in 0..100 {
        let response = send(&transport, &format!("{MTLS}/echo"), Some(&alice))
            .await
            .unwrap();
        assert_eq!(field(&text(&response), "cert"), alice.thumbprint_s256());
    }
    assert_eq!(server.requests(), 100);
    assert_eq!(server.accepts(), 1);
    assert_eq!(server.handshakes().len(), 1);
    assert_eq!(transport.connections_opened(), 1);
}

/// On a multi-thread runtime hyper-util's pool can race a request against the previous
/// connection's return to the pool and open a spare connection (its checkout and connect are
/// raced, and a started connect is finished in the background); connections are still reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_reused_on_a_multi_thread_runtime() {
    let pki = Pki::new("ca");
    let server = TestServer::https(&pki, ServerOptions::default()).await;
    let transport = builder(&pki, server.addr).build().unwrap();
    let alice = pki.client_identity("alice");
    for _ in 0..100 {
        send(&transport, &format!("{MTLS}/echo"), Some(&alice))
            .await
            .unwrap();
    }
    assert_eq!(server.requests(), 100);
    assert!(
        server.accepts() <= 5,
        "{} connections for 100 requests",
        server.accepts()
    );
    assert_eq!(server.accepts() as u64, transport.connections_opened());
}

#[tokio::test]
async fn the_override_does_not_weaken_certificate_verification() {
    let pki = Pki::new("ca");
    // Trusted CA, but the certificate names another host.
    let wrong_name = TestServer::https(
        &pki,
        ServerOptions {
            names: &["other.example.com"],
            ..ServerOptions::default()
        },
    )
    .await;
    let transport = builder(&pki, wrong_name.addr).build().unwrap();
    let err = send(&transport, &format!("{LOGIN}/echo"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::TLS_HANDSHAKE_FAILED, "{err}");
    assert!(
        err.message()
            .contains("https://login.microsoftonline.com:443"),
        "{err}"
    );
    assert_eq!(wrong_name.accepts(), 1);
    assert_eq!(wrong_name.requests(), 0);

    // Right name, untrusted CA.
    let untrusted = TestServer::https(&Pki::new("rogue ca"), ServerOptions::default()).await;
    let transport = builder(&pki, untrusted.addr).build().unwrap();
    let err = send(&transport, &format!("{LOGIN}/echo"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::TLS_HANDSHAKE_FAILED, "{err}");
    assert_eq!(untrusted.requests(), 0);
}

#[tokio::test]
async fn wildcard_overrides_match_subdomains_only() {
    let pki = Pki::new("ca");
    let server = TestServer::https(&pki, ServerOptions::default()).await;
    let transport = builder(&pki, server.addr).build().unwrap();

    let body = text(
        &send(&transport, &format!("{MTLS}/echo"), None)
            .await
            .unwrap(),
    );
    assert_eq!(field(&body, "host"), "westus3.mtlsauth.microsoft.com");
    assert_eq!(server.accepts(), 1);
    // Several labels match too: the connection reaches the server, whose `*.` certificate
    // covers one label only, so verification (by the URL's host) refuses it.
    let err = send(&transport, "https://a.b.mtlsauth.microsoft.com/echo", None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::TLS_HANDSHAKE_FAILED, "{err}");
    assert_eq!(server.accepts(), 2);

    for uri in [
        "https://mtlsauth.microsoft.com.evil.com/echo",
        "https://mtlsauth.microsoft.com/echo",
        "https://westus3.mtlsauth.microsoft.com:8443/echo",
    ] {
        let err = send(&transport, uri, None).await.unwrap_err();
        assert_eq!(err.code(), &ErrorCode::CONNECTION_FAILED, "{uri}: {err}");
        assert!(err.message().contains("no resolver override"), "{err}");
    }
    assert_eq!(
        server.accepts(),
        2,
        "no connection for names the pattern does not match"
    );
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn response_size_is_capped() {
    let pki = Pki::new("ca");
    let server = TestServer::https(&pki, ServerOptions::default()).await;
    let transport = builder(&pki, server.addr)
        .max_response_bytes(2500)
        .build()
        .unwrap();

    let exact = send(&transport, &format!("{LOGIN}/big/2500"), None)
        .await
        .unwrap();
    assert_eq!(exact.body().len(), 2500);
    let chunked = send(&transport, &format!("{LOGIN}/chunked/2000/1000"), None)
        .await
        .unwrap();
    assert_eq!(chunked.body(), &Bytes::from(vec![b'c'; 2000]));

    let err = send(&transport, &format!("{LOGIN}/big/2501"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::RESPONSE_TOO_LARGE, "{err}");
    assert!(err.message().contains("announces 2501 bytes"), "{err}");

    // No Content-Length: stopped while streaming, after the third chunk.
    let err = send(&transport, &format!("{LOGIN}/chunked/3000/1000"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::RESPONSE_TOO_LARGE, "{err}");
    assert!(
        err.message().contains("larger than the limit of 2500"),
        "{err}"
    );

    // The Content-Length alone is enough: the body never comes, yet the answer is immediate
    // (reading it would end in a timeout instead).
    let err = transport
        .send(
            TransportRequest::new(get(&format!("{LOGIN}/announce/2000000")))
                .with_timeout(Duration::from_secs(20)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::RESPONSE_TOO_LARGE, "{err}");

    // The default cap is 1 MiB.
    let default = builder(&pki, server.addr).build().unwrap();
    assert_eq!(
        send(&default, &format!("{LOGIN}/big/1048576"), None)
            .await
            .unwrap()
            .body()
            .len(),
        1 << 20
    );
    let err = send(&default, &format!("{LOGIN}/chunked/1048577/65536"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::RESPONSE_TOO_LARGE, "{err}");
}

#[tokio::test]
async fn a_stalled_handshake_hits_the_connect_timeout() {
    let pki = Pki::new("ca");
    let stall = StallingServer::start().await;
    let transport = builder(&pki, stall.addr)
        .connect_timeout(Duration::from_millis(200))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let err = send(&transport, &format!("{LOGIN}/echo"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::TIMEOUT, "{err}");
    assert!(err.message().contains("connect timeout (200 ms)"), "{err}");
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(stall.accepts(), 1);
}

#[tokio::test]
async fn a_stalled_response_hits_the_total_timeout() {
    let pki = Pki::new("ca");
    let server = TestServer::https(&pki, ServerOptions::default()).await;
    let transport = builder(&pki, server.addr)
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = send(&transport, &format!("{LOGIN}/stall"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::TIMEOUT, "{err}");
    assert!(err.message().contains("within 200 ms"), "{err}");

    // The per-request timeout overrides the transport's.
    let patient = builder(&pki, server.addr)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let err = patient
        .send(
            TransportRequest::new(get(&format!("{LOGIN}/stall")))
                .with_timeout(Duration::from_millis(200)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::TIMEOUT, "{err}");
    assert!(err.message().contains("within 200 ms"), "{err}");
}

#[tokio::test]
async fn connection_refused_is_connection_failed() {
    let pki = Pki::new("ca");
    let closed = closed_port().await;
    let transport = builder(&pki, closed).build().unwrap();

    let err = send(
        &transport,
        &format!("http://127.0.0.1:{}/", closed.port()),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::CONNECTION_FAILED, "{err}");
    let err = send(&transport, &format!("{LOGIN}/echo"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::CONNECTION_FAILED, "{err}");
    assert!(err.message().contains(&closed.to_string()), "{err}");
}

#[tokio::test]
async fn plain_http_only_to_local_hosts() {
    let pki = Pki::new("ca");
    let server = TestServer::http().await;
    let transport = builder(&pki, server.addr)
        .resolve("169.254.169.254:80", server.addr)
        .resolve("login.microsoftonline.com:80", server.addr)
        .build()
        .unwrap();

    let local = send(
        &transport,
        &format!("http://127.0.0.1:{}/echo", server.addr.port()),
        None,
    )
    .await
    .unwrap();
    assert_eq!(field(&text(&local), "host"), server.addr.to_string());
    let metadata = send(&transport, "http://169.254.169.254/metadata/instance", None)
        .await
        .unwrap();
    assert_eq!(field(&text(&metadata), "host"), "169.254.169.254");
    assert_eq!(server.requests(), 2);

    // Judged by the URL's host, not by where the override points.
    let err = send(&transport, "http://login.microsoftonline.com/echo", None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::INSECURE_TRANSPORT, "{err}");
    // A certificate needs TLS, even to loopback.
    let alice = pki.client_identity("alice");
    let err = send(&transport, "http://169.254.169.254/metadata", Some(&alice))
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::INSECURE_TRANSPORT, "{err}");
    assert_eq!(server.requests(), 2, "refused requests must not be sent");
    assert_eq!(transport.identity_pool_count(), 0);

    let relaxed = builder(&pki, server.addr)
        .resolve("login.microsoftonline.com:80", server.addr)
        .allow_plain_http(true)
        .build()
        .unwrap();
    let ok = send(&relaxed, "http://login.microsoftonline.com/echo", None)
        .await
        .unwrap();
    assert_eq!(field(&text(&ok), "host"), "login.microsoftonline.com");
    let err = send(
        &relaxed,
        "http://login.microsoftonline.com/echo",
        Some(&alice),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::INSECURE_TRANSPORT, "{err}");
}

#[tokio::test]
async fn least_recently_used_identity_pool_is_evicted() {
    let pki = Pki::new("ca");
    let server = TestServer::https(&pki, ServerOptions::default()).await;
    let transport = builder(&pki, server.addr)
        .max_identities(2)
        .build()
        .unwrap();
    let (a, b, c) = (
        pki.client_identity("a"),
        pki.client_identity("b"),
        pki.client_identity("c"),
    );
    for identity in [&a, &b, &a, &c, &a, &b] {
        let body = text(
            &send(&transport, &format!("{MTLS}/echo"), Some(identity))
                .await
                .unwrap(),
        );
        assert_eq!(field(&body, "cert"), identity.thumbprint_s256());
        assert!(transport.identity_pool_count() <= 2);
    }
    // a stayed (used before c arrived), b was evicted by c, then c by b.
    let seen: Vec<_> = server
        .handshakes()
        .into_iter()
        .map(|h| h.client_thumbprint.unwrap())
        .collect();
    let expected: Vec<_> = [&a, &b, &c, &b]
        .iter()
        .map(|i| i.thumbprint_s256().to_owned())
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(
        transport.identity_pools(),
        [
            b.thumbprint_s256().to_owned(),
            a.thumbprint_s256().to_owned()
        ]
    );
}

#[tokio::test]
async fn redirects_are_returned_not_followed() {
    let pki = Pki::new("ca");
    let server = TestServer::https(&pki, ServerOptions::default()).await;
    let transport = builder(&pki, server.addr).build().unwrap();
    let response = send(&transport, &format!("{LOGIN}/redirect"), None)
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "https://elsewhere.example/");
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn errors_never_carry_the_path_query_or_body() {
    let pki = Pki::new("ca");
    let server = TestServer::https(&pki, ServerOptions::default()).await;
    let transport = builder(&pki, server.addr)
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let request = http::Request::post(format!("{LOGIN}/stall?client_secret=s3cr3t-query"))
        .header("authorization", "Bearer s3cr3t-header")
        .body(Bytes::from_static(b"client_assertion=s3cr3t-body"))
        .unwrap();
    let err = transport
        .send(TransportRequest::new(request))
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::TIMEOUT);
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(!text.contains("/stall"), "{text}");
    }

    let closed = closed_port().await;
    let transport = builder(&pki, closed).build().unwrap();
    let request = http::Request::post(format!("{LOGIN}/t/oauth2/v2.0/token?code=s3cr3t"))
        .body(Bytes::from_static(b"client_secret=s3cr3t"))
        .unwrap();
    let err = transport
        .send(TransportRequest::new(request))
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::CONNECTION_FAILED);
    assert!(!format!("{err} {err:?}").contains("s3cr3t"), "{err:?}");
}

#[tokio::test]
async fn requests_that_cannot_be_sent_are_invalid_arguments() {
    let pki = Pki::new("ca");
    let transport = builder(&pki, closed_port().await).build().unwrap();
    for uri in ["/relative/path", "ftp://login.microsoftonline.com/"] {
        let err = send(&transport, uri, None).await.unwrap_err();
        assert_eq!(err.code(), &ErrorCode::INVALID_ARGUMENT, "{uri}");
    }
}

/// Sends `identity`'s request to the echo endpoint and returns the server's connection id,
/// after checking the server saw `identity`'s certificate.
#[allow(clippy::unwrap_used)] // Test helper: a panic is a test failure.
async fn echo_conn(transport: &MtlsTransport, identity: &ClientIdentity) -> String {
    let body = text(
        &send(transport, &format!("{MTLS}/echo"), Some(identity))
            .await
            .unwrap(),
    );
    assert_eq!(field(&body, "cert"), identity.thumbprint_s256());
    field(&body, "conn")
}

#[tokio::test]
async fn same_certificate_with_another_key_object_never_shares_a_connection() {
    let pki = Pki::new("ca");
    let server = TestServer::https(&pki, ServerOptions::default()).await;
    let transport = builder(&pki, server.addr).build().unwrap();
    let parts = pki.client_parts("alice");
    // The same key material behind two key objects, as when two clients each load the same
    // certificate file (or after reopening an HSM handle).
    let key_a = Arc::new(RingEcdsaKey::from_pkcs8(&parts.pkcs8));
    let key_b = Arc::new(RingEcdsaKey::from_pkcs8(&parts.pkcs8));
    let alice_a = ClientIdentity::new(vec![parts.cert_der.clone()], key_a.clone()).unwrap();
    let alice_b = ClientIdentity::new(vec![parts.cert_der.clone()], key_b.clone()).unwrap();
    let thumbprint = alice_a.thumbprint_s256().to_owned();
    assert_eq!(alice_b.thumbprint_s256(), thumbprint);

    let mut conns = Vec::new();
    for identity in [&alice_a, &alice_a, &alice_b, &alice_b] {
        conns.push(echo_conn(&transport, identity).await);
    }
    assert_eq!(conns[0], conns[1], "same identity, same connection");
    assert_ne!(
        conns[1], conns[2],
        "another key object rode on the connection"
    );
    assert_eq!(conns[2], conns[3]);
    // Each key object signed the handshake of its own connection.
    assert_eq!(key_a.signs(), 1);
    assert_eq!(key_b.signs(), 1);
    assert_eq!(server.accepts(), 2);
    // One pool per key object, side by side: neither evicts the other.
    assert_eq!(transport.identity_pool_count(), 2);
    assert_eq!(
        transport.identity_pools(),
        [thumbprint.clone(), thumbprint.clone()]
    );

    // Two clients sharing the transport, taking turns: each keeps its own warm connection,
    // and no request costs a handshake.
    for round in 0..10 {
        let (identity, conn) = if round % 2 == 0 {
            (&alice_a, &conns[0])
        } else {
            (&alice_b, &conns[2])
        };
        assert_eq!(
            &echo_conn(&transport, identity).await,
            conn,
            "round {round}"
        );
    }
    assert_eq!(
        server.accepts(),
        2,
        "alternating key objects cost handshakes"
    );
    assert_eq!(server.handshakes().len(), 2);
    assert_eq!(server.requests(), 14);
    assert_eq!(key_a.signs(), 1);
    assert_eq!(key_b.signs(), 1);
    assert_eq!(transport.identity_pool_count(), 2);

    // A new identity around the same key object is the same identity: its pool is reused.
    let alice_b2 = ClientIdentity::new(vec![parts.cert_der.clone()], key_b.clone()).unwrap();
    assert_eq!(echo_conn(&transport, &alice_b2).await, conns[2]);
    assert_eq!(key_b.signs(), 1);
    assert_eq!(transport.identity_pool_count(), 2);

    // A chain that differs is not: same leaf and key object, an intermediate added.
    let with_ca = ClientIdentity::new(
        vec![parts.cert_der.clone(), pki.ca_der.to_vec()],
        key_b.clone(),
    )
    .unwrap();
    let with_ca_conn = echo_conn(&transport, &with_ca).await;
    assert!(
        !conns.contains(&with_ca_conn),
        "another chain rode on a connection"
    );
    assert_eq!(key_b.signs(), 2);
    assert_eq!(server.accepts(), 3);
    assert_eq!(transport.identity_pool_count(), 3);
    // ... and it too lives next to the others.
    for _ in 0..3 {
        assert_eq!(echo_conn(&transport, &alice_b).await, conns[2]);
        assert_eq!(echo_conn(&transport, &with_ca).await, with_ca_conn);
        assert_eq!(echo_conn(&transport, &alice_a).await, conns[0]);
    }
    assert_eq!(server.accepts(), 3);
    assert_eq!((key_a.signs(), key_b.signs()), (1, 2));
}

#[tokio::test]
async fn a_pool_keeps_its_key_object_alive() {
    let pki = Pki::new("ca");
    let server = TestServer::https(&pki, ServerOptions::default()).await;
    let transport = builder(&pki, server.addr).build().unwrap();
    let parts = pki.client_parts("alice");
    let key = Arc::new(RingEcdsaKey::from_pkcs8(&parts.pkcs8));
    let weak = Arc::downgrade(&key);
    let alice = ClientIdentity::new(vec![parts.cert_der.clone()], key).unwrap();
    echo_conn(&transport, &alice).await;
    drop(alice);
    // The caller let go of the key object; the pool did not, so the allocation (whose
    // address tells the pools apart) cannot be handed to another key object.
    let kept = weak.upgrade().expect("the pool dropped its key object");
    assert_eq!(kept.signs(), 1);
    let again = ClientIdentity::new(vec![parts.cert_der.clone()], kept.clone()).unwrap();
    echo_conn(&transport, &again).await;
    assert_eq!(kept.signs(), 1, "the pool was not reused");
    assert_eq!(server.accepts(), 1);
}

#[tokio::test]
async fn key_objects_of_one_certificate_count_against_the_pool_bound() {
    let pki = Pki::new("ca");
    let server = TestServer::https(&pki, ServerOptions::default()).await;
    let transport = builder(&pki, server.addr)
        .max_identities(2)
        .build()
        .unwrap();
    let parts = pki.client_parts("alice");
    let keys: Vec<_> = (0..3)
        .map(|_| Arc::new(RingEcdsaKey::from_pkcs8(&parts.pkcs8)))
        .collect();
    let identities: Vec<_> = keys
        .iter()
        .map(|key| ClientIdentity::new(vec![parts.cert_der.clone()], key.clone()).unwrap())
        .collect();
    let (a, b, c) = (&identities[0], &identities[1], &identities[2]);
    for identity in [a, b, a, c, a, b] {
        echo_conn(&transport, identity).await;
        assert!(transport.identity_pool_count() <= 2);
    }
    // a stayed (used before c arrived), b was evicted by c, then c by b.
    let signs: Vec<_> = keys.iter().map(|key| key.signs()).collect();
    assert_eq!(signs, [1, 2, 1]);
    assert_eq!(server.accepts(), 4);
    let thumbprint = a.thumbprint_s256().to_owned();
    assert_eq!(transport.identity_pools(), [thumbprint.clone(), thumbprint]);
    // b's and a's pools are the ones kept: neither needs a handshake.
    echo_conn(&transport, b).await;
    echo_conn(&transport, a).await;
    assert_eq!(server.accepts(), 4);
}

#[tokio::test]
async fn a_public_certificate_with_the_wrong_key_cannot_ride_on_an_authenticated_connection() {
    let pki = Pki::new("ca");
    let server = TestServer::https(&pki, ServerOptions::default()).await;
    let transport = builder(&pki, server.addr).build().unwrap();
    let parts = pki.client_parts("alice");
    let alice_key = Arc::new(RingEcdsaKey::from_pkcs8(&parts.pkcs8));
    let alice = ClientIdentity::new(vec![parts.cert_der.clone()], alice_key.clone()).unwrap();
    let alice_conn = echo_conn(&transport, &alice).await;
    assert_eq!(server.requests(), 1);

    // Alice's certificate is public; Mallory pairs it with a key of her own.
    let wrong_key = Arc::new(RingEcdsaKey::from_pkcs8(&RingEcdsaKey::generate_pkcs8()));
    let mallory = ClientIdentity::new(vec![parts.cert_der.clone()], wrong_key.clone()).unwrap();
    assert_eq!(mallory.thumbprint_s256(), alice.thumbprint_s256());
    let err = send(&transport, &format!("{MTLS}/echo"), Some(&mallory))
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::TLS_HANDSHAKE_FAILED, "{err}");
    assert_eq!(
        wrong_key.signs(),
        1,
        "Mallory's key had to sign a handshake"
    );
    assert_eq!(server.failed_handshakes(), 1);
    assert_eq!(server.requests(), 1, "Mallory's request reached the server");
    assert_eq!(server.accepts(), 2);

    // Alice still gets through, on her own connection: Mallory's pool did not replace hers.
    assert_eq!(echo_conn(&transport, &alice).await, alice_conn);
    assert_eq!(alice_key.signs(), 1);
    assert_eq!(server.requests(), 2);
    assert_eq!(server.accepts(), 2);
    // Mallory tries again: her own pool, another handshake her key must sign, another failure.
    let err = send(&transport, &format!("{MTLS}/echo"), Some(&mallory))
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::TLS_HANDSHAKE_FAILED, "{err}");
    assert_eq!(wrong_key.signs(), 2);
    assert_eq!(server.failed_handshakes(), 2);
    assert_eq!(server.requests(), 2, "Mallory's request reached the server");
}

#[tokio::test]
async fn a_pkcs1_only_rsa_key_presents_its_certificate_over_tls12() {
    let pki = Pki::new("ca");
    let server = TestServer::https(&pki, ServerOptions::default()).await;
    let transport = builder(&pki, server.addr).build().unwrap();
    let key = Arc::new(RingRsaPkcs1Key::from_pkcs8(RSA_PKCS8));
    let identity = ClientIdentity::new(vec![pki.rsa_client_cert("rsa")], key.clone()).unwrap();

    // TLS 1.3 allows no PKCS#1 v1.5 signature: over TLS 1.3 rustls would send no certificate.
    let body = text(
        &send(&transport, &format!("{MTLS}/echo"), Some(&identity))
            .await
            .unwrap(),
    );
    assert_eq!(field(&body, "cert"), identity.thumbprint_s256());
    assert_eq!(key.signs(), 1);
    let handshakes = server.handshakes();
    assert_eq!(handshakes.len(), 1);
    assert_eq!(
        handshakes[0].version,
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    // Requests without an identity still speak TLS 1.3.
    send(&transport, &format!("{LOGIN}/echo"), None)
        .await
        .unwrap();
    assert_eq!(
        server.handshakes()[1].version,
        Some(rustls::ProtocolVersion::TLSv1_3)
    );

    // A server that speaks TLS 1.3 only cannot be given the certificate: a loud failure.
    let tls13 = TestServer::https(
        &pki,
        ServerOptions {
            tls13_only: true,
            ..ServerOptions::default()
        },
    )
    .await;
    let transport = builder(&pki, tls13.addr).build().unwrap();
    let err = send(&transport, &format!("{MTLS}/echo"), Some(&identity))
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::TLS_HANDSHAKE_FAILED, "{err}");
    assert_eq!(tls13.requests(), 0);
}

#[tokio::test]
async fn a_key_the_server_accepts_no_scheme_of_fails_instead_of_sending_no_certificate() {
    let pki = Pki::new("ca");
    for (tls12_only, client_auth) in [
        (false, ClientAuth::Optional),
        (true, ClientAuth::Optional),
        (false, ClientAuth::Required),
    ] {
        // The server asks for a certificate but verifies RSA signatures only.
        let server = TestServer::https(
            &pki,
            ServerOptions {
                client_auth,
                tls12_only,
                client_schemes: Some(&[
                    SignatureScheme::RSA_PSS_SHA256,
                    SignatureScheme::RSA_PKCS1_SHA256,
                ]),
                ..ServerOptions::default()
            },
        )
        .await;
        let transport = builder(&pki, server.addr).build().unwrap();
        let alice = pki.client_identity("alice");
        let err = send(&transport, &format!("{MTLS}/echo"), Some(&alice))
            .await
            .unwrap_err();
        let case = format!("tls12_only={tls12_only} {client_auth:?}");
        assert_eq!(
            err.code(),
            &ErrorCode::TLS_HANDSHAKE_FAILED,
            "{case}: {err}"
        );
        assert!(
            err.message().contains("cannot present its certificate"),
            "{case}: {err}"
        );
        assert!(
            err.message().contains(alice.thumbprint_s256()),
            "{case}: {err}"
        );
        assert!(!err.is_retryable());
        assert_eq!(server.requests(), 0, "{case}: sent without the certificate");
        assert!(server.handshakes().is_empty(), "{case}");

        if client_auth == ClientAuth::Optional {
            // Without an identity the same server is fine.
            let body = text(
                &send(&transport, &format!("{MTLS}/echo"), None)
                    .await
                    .unwrap(),
            );
            assert_eq!(field(&body, "cert"), "none");
        }
    }
}

#[tokio::test]
async fn a_zero_request_timeout_is_an_invalid_argument() {
    let pki = Pki::new("ca");
    let server = TestServer::https(&pki, ServerOptions::default()).await;
    let transport = builder(&pki, server.addr).build().unwrap();
    let err = transport
        .send(TransportRequest::new(get(&format!("{LOGIN}/echo"))).with_timeout(Duration::ZERO))
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::INVALID_ARGUMENT, "{err}");
    assert!(err.message().contains("greater than zero"), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(server.accepts(), 0);
    // The smallest non-zero timeout is a timeout, not an argument error.
    let err = transport
        .send(
            TransportRequest::new(get(&format!("{LOGIN}/stall")))
                .with_timeout(Duration::from_nanos(1)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::TIMEOUT, "{err}");
}
