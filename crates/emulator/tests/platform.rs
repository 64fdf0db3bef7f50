//! IMDS region endpoint, OIDC metadata, the resolver map, the request log and fault injection.
// Test helpers (not only #[test] functions) may unwrap.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use fic_emulator::{codes, Emulator, Fault, FaultTarget, Listener, Route};
use support::*;

const REGION_URL: &str = "http://169.254.169.254/metadata/instance/compute?api-version=2021-02-01";

fn secret_form() -> Vec<(&'static str, &'static str)> {
    vec![
        ("client_id", SECRET_APP),
        ("client_secret", SECRET),
        ("scope", GRAPH_SCOPE),
        ("grant_type", "client_credentials"),
    ]
}

#[tokio::test]
async fn imds_region_endpoint() {
    let emu = Emulator::builder()
        .imds_location("northeurope")
        .start()
        .await
        .unwrap();
    let response = send(&emu, "GET", REGION_URL, &[("Metadata", "true")], b"", None)
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["location"], "northeurope");
    assert!(response.header("server").unwrap().contains("IMDS"));
    // The region can change at run time.
    emu.update_settings(|s| s.imds_location = "westus3".into());
    let response = send(&emu, "GET", REGION_URL, &[("Metadata", "true")], b"", None)
        .await
        .unwrap();
    assert_eq!(response.json()["location"], "westus3");
    // No Metadata header.
    let response = send(&emu, "GET", REGION_URL, &[], b"", None).await.unwrap();
    assert_eq!(response.status, 400);
    assert!(response.json()["error"]
        .as_str()
        .unwrap()
        .contains("Required metadata header not specified"));
    // No api-version: the newest versions are listed.
    let response = send(
        &emu,
        "GET",
        "http://169.254.169.254/metadata/instance/compute",
        &[("Metadata", "true")],
        b"",
        None,
    )
    .await
    .unwrap();
    assert_eq!(response.status, 400);
    assert!(response.json()["newest-versions"][0].is_string());
    // Unknown path.
    let response = send(
        &emu,
        "GET",
        "http://169.254.169.254/metadata/other",
        &[("Metadata", "true")],
        b"",
        None,
    )
    .await
    .unwrap();
    assert_eq!(response.status, 404);
    let imds = emu.log().imds_requests();
    assert_eq!(imds.len(), 5);
    assert!(imds
        .iter()
        .all(|r| r.listener == Listener::Imds && r.route == Route::Imds));
    assert_eq!(
        imds[0].query_value("api-version").as_deref(),
        Some("2021-02-01")
    );
    assert_eq!(imds[0].header("metadata"), Some("true"));
}

#[tokio::test]
async fn resolver_map_covers_every_host() {
    let emu = Emulator::builder().start().await.unwrap();
    let map = emu.resolver_map();
    let https = emu.https_addr();
    for host in [
        "login.microsoftonline.com",
        "login.windows.net",
        "login.microsoft.com",
        "sts.windows.net",
        "*.login.microsoft.com",
        "mtlsauth.microsoft.com",
        "*.mtlsauth.microsoft.com",
        "login.microsoftonline.us",
        "mtlsauth.microsoftonline.us",
        "*.mtlsauth.microsoftonline.us",
        "login.partner.microsoftonline.cn",
        "mtlsauth.partner.microsoftonline.cn",
        "*.mtlsauth.partner.microsoftonline.cn",
        "login.sovcloud-identity.fr",
        "mtlsauth.sovcloud-identity.de",
        "*.mtlsauth.sovcloud-identity.sg",
        "graph.microsoft.com",
        "*.vault.azure.net",
        "management.azure.com",
    ] {
        assert!(map.contains(&(format!("{host}:443"), https)), "{host}");
    }
    assert!(map.contains(&("169.254.169.254:80".to_owned(), emu.imds_addr())));
    assert_eq!(
        emu.resolve("eastus2.mtlsauth.microsoft.com", 443),
        Some(https)
    );
    assert_eq!(emu.resolve("login.microsoftonline.com", 80), None);
    assert_eq!(emu.resolve("example.com", 443), None);
    // Every one of them is covered by the main server certificate (not by a certificate minted
    // for the name): its SANs hold each pattern, and that very certificate is what a TLS
    // client gets for each host, with a verified handshake.
    let main = emu.server_certificate_der().to_vec();
    let sans = dns_names(&main);
    for pattern in map
        .iter()
        .filter(|(_, addr)| *addr == https)
        .map(|(host_port, _)| host_port.trim_end_matches(":443"))
    {
        assert!(
            sans.iter().any(|s| s == pattern),
            "{pattern} not in {sans:?}"
        );
    }
    for host in [
        "login.microsoftonline.com",
        "sts.windows.net",
        "westus3.login.microsoft.com",
        "login.sovcloud-identity.sg",
        "eastus2.mtlsauth.microsoft.com",
        "westus.mtlsauth.microsoftonline.us",
        "graph.microsoft.com",
        "kv1.vault.azure.net",
        "management.azure.com",
    ] {
        assert_eq!(presented_leaf(&emu, host).await.unwrap(), main, "{host}");
        let response = send(
            &emu,
            "GET",
            &format!("https://{host}/nothing/here"),
            &[],
            b"",
            None,
        )
        .await
        .unwrap();
        assert!(
            response.status == 404 || response.status == 401,
            "{host}: {}",
            response.status
        );
    }
}

/// The DNS names of a certificate's subject alternative names.
fn dns_names(der: &[u8]) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(name) => Some((*name).to_owned()),
            _ => None,
        })
        .collect()
}

/// The leaf certificate the HTTPS listener presents for `sni`, after a handshake verified
/// against the emulator CA (an error when it does not verify for that name).
async fn presented_leaf(emu: &fic_emulator::EmulatorHandle, sni: &str) -> Result<Vec<u8>, String> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        rustls::pki_types::CertificateDer::pem_slice_iter(emu.ca_certificate_pem().as_bytes())
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(emu.https_addr())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (_, session) = tls.get_ref();
    Ok(session.peer_certificates().unwrap()[0].to_vec())
}

#[tokio::test]
async fn only_resource_hosts_registered_after_start_get_a_certificate_of_their_own() {
    let emu = Emulator::builder().start().await.unwrap();
    let main = emu.server_certificate_der().to_vec();
    // A name the emulator does not serve gets the main certificate, which does not name it:
    // the handshake fails (no certificate is minted for any name a client sends).
    for host in ["example.org", "login.microsoftonline.com.evil.example"] {
        let error = presented_leaf(&emu, host).await.unwrap_err();
        assert!(error.contains("not valid for name"), "{host}: {error}");
        assert!(!dns_names(&main).iter().any(|s| s == host));
    }
    // A resource host registered after start: a certificate of its own, naming only it, issued
    // by the same CA; the same one on the next connection.
    emu.directory()
        .add_resource(fic_emulator::Resource::new("api://contoso-api").host("*.contoso.com"));
    let minted = presented_leaf(&emu, "api.contoso.com").await.unwrap();
    assert_ne!(minted, main);
    assert_eq!(dns_names(&minted), vec!["api.contoso.com".to_owned()]);
    assert_eq!(
        presented_leaf(&emu, "api.contoso.com").await.unwrap(),
        minted
    );
    // The identity hosts keep the main certificate.
    assert_eq!(
        presented_leaf(&emu, "login.microsoftonline.com")
            .await
            .unwrap(),
        main
    );
}

#[tokio::test]
async fn oidc_metadata_and_keys() {
    let emu = standard_builder().start().await.unwrap();
    let response = send(
        &emu,
        "GET",
        &format!("https://login.microsoftonline.us/{TENANT}/v2.0/.well-known/openid-configuration"),
        &[],
        b"",
        None,
    )
    .await
    .unwrap();
    assert_eq!(response.status, 200);
    let doc = response.json();
    assert_eq!(
        doc["issuer"],
        format!("https://login.microsoftonline.us/{TENANT}/v2.0")
    );
    assert_eq!(
        doc["token_endpoint"],
        format!("https://login.microsoftonline.us/{TENANT}/oauth2/v2.0/token")
    );
    assert_eq!(
        doc["mtls_endpoint_aliases"]["token_endpoint"],
        format!("https://mtlsauth.microsoftonline.us/{TENANT}/oauth2/v2.0/token")
    );
    let keys = send(
        &emu,
        "GET",
        doc["jwks_uri"].as_str().unwrap(),
        &[],
        b"",
        None,
    )
    .await
    .unwrap()
    .json();
    assert_eq!(keys["keys"][0]["kid"], emu.signing_key_id());
    assert_eq!(keys["keys"][0]["kty"], "RSA");
    assert_eq!(keys, {
        let mut expected = emu.jwks();
        expected["keys"][0]["issuer"] = doc["issuer"].clone();
        expected
    });
    // An unknown tenant.
    let response = send(
        &emu,
        "GET",
        &format!("https://login.microsoftonline.com/{OTHER_TENANT}/v2.0/.well-known/openid-configuration"),
        &[],
        b"",
        None,
    )
    .await
    .unwrap();
    response.assert_aadsts(400, "invalid_tenant", codes::TENANT_NOT_FOUND);
    assert_eq!(emu.log().metadata_requests().len(), 3);
}

#[tokio::test]
async fn the_log_records_requests_with_form_headers_and_certificate() {
    let a = TestCert::a();
    let emu = standard_builder().start().await.unwrap();
    let _ = token(&emu, "login.microsoftonline.com", &secret_form(), None).await;
    let _ = token(
        &emu,
        "mtlsauth.microsoft.com",
        &[
            ("client_id", CERT_APP),
            ("scope", GRAPH_SCOPE),
            ("grant_type", "client_credentials"),
            ("token_type", "mtls_pop"),
        ],
        Some(&a.identity()),
    )
    .await;
    let requests = emu.log().token_requests();
    assert_eq!(requests.len(), 2);
    let first = &requests[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.host, "login.microsoftonline.com");
    assert_eq!(first.sni.as_deref(), Some("login.microsoftonline.com"));
    assert_eq!(first.path, format!("/{TENANT}/oauth2/v2.0/token"));
    assert_eq!(
        first.form[0],
        ("client_id".to_owned(), SECRET_APP.to_owned())
    );
    assert_eq!(first.form_value("grant_type"), Some("client_credentials"));
    assert_eq!(first.header("return-client-request-id"), Some("true"));
    assert_eq!(first.client_cert_thumbprint, None);
    assert_eq!(first.status, Some(200));
    assert_eq!(first.listener, Listener::Https);
    let second = &requests[1];
    assert_eq!(
        second.client_cert_thumbprint.as_deref(),
        Some(a.thumbprint().as_str())
    );
    assert_eq!(
        emu.log()
            .count(|r| r.form_value("token_type") == Some("mtls_pop")),
        1
    );
    assert!(first.id < second.id);
    emu.log().clear();
    assert!(emu.log().is_empty());
}

#[tokio::test]
async fn status_fault_with_retry_after_count_limited_and_host_limited() {
    let emu = standard_builder().start().await.unwrap();
    emu.faults().inject(
        Fault::status(429)
            .retry_after("12")
            .on(FaultTarget::Token)
            .host("login.microsoftonline.com")
            .times(2),
    );
    // Another host is not affected.
    let other = token(&emu, "login.windows.net", &secret_form(), None).await;
    assert_eq!(other.status, 200);
    for _ in 0..2 {
        let response = token(&emu, "login.microsoftonline.com", &secret_form(), None).await;
        assert_eq!(response.status, 429);
        assert_eq!(response.header("retry-after"), Some("12"));
        assert_eq!(response.json()["error"], "temporarily_unavailable");
        assert!(response.json()["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS"));
    }
    let response = token(&emu, "login.microsoftonline.com", &secret_form(), None).await;
    assert_eq!(response.status, 200);
    let faulted = emu.log().filter(|r| r.fault.is_some());
    assert_eq!(faulted.len(), 2);
    assert!(faulted
        .iter()
        .all(|r| r.status == Some(429) && r.fault.as_deref() == Some("status 429")));
    // A custom body.
    emu.faults().inject(
        Fault::status(503)
            .body("upstream down")
            .on(FaultTarget::Token)
            .times(1),
    );
    let response = token(&emu, "login.microsoftonline.com", &secret_form(), None).await;
    assert_eq!(response.status, 503);
    assert_eq!(response.body, b"upstream down");
}

#[tokio::test]
async fn predicate_malformed_delay_and_dropped_connection() {
    let emu = standard_builder().start().await.unwrap();
    // Only requests with a particular client id lose their connection; the fault stays.
    let id = emu.faults().inject(
        Fault::drop_connection()
            .on(FaultTarget::Token)
            .when(|r| r.form_value("client_id") == Some(CERT_APP)),
    );
    let dropped = post_form(
        &emu,
        &endpoint("login.microsoftonline.com", TENANT),
        &[
            ("client_id", CERT_APP),
            ("grant_type", "client_credentials"),
        ],
        None,
    )
    .await;
    assert!(dropped.is_err(), "{dropped:?}");
    assert_eq!(
        token(&emu, "login.microsoftonline.com", &secret_form(), None)
            .await
            .status,
        200
    );
    let last_dropped = emu
        .log()
        .filter(|r| r.fault.as_deref() == Some("drop connection"));
    assert_eq!(last_dropped.len(), 1);
    assert_eq!(last_dropped[0].status, None);
    assert!(emu.faults().remove(id));
    // A malformed body once.
    emu.faults()
        .inject(Fault::malformed_body().on(FaultTarget::Token).times(1));
    let response = token(&emu, "login.microsoftonline.com", &secret_form(), None).await;
    assert_eq!(response.status, 200);
    assert!(serde_json::from_slice::<serde_json::Value>(&response.body).is_err());
    // A delay on the metadata route.
    emu.faults().inject(
        Fault::delay(Duration::from_millis(150))
            .on(FaultTarget::Metadata)
            .times(1),
    );
    let started = Instant::now();
    let response = send(
        &emu,
        "GET",
        &format!("https://login.microsoftonline.com/{TENANT}/discovery/v2.0/keys"),
        &[],
        b"",
        None,
    )
    .await
    .unwrap();
    assert_eq!(response.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
    // Faults on IMDS and the resource.
    emu.faults()
        .inject(Fault::status(500).on(FaultTarget::Imds).times(1));
    let response = send(&emu, "GET", REGION_URL, &[("Metadata", "true")], b"", None)
        .await
        .unwrap();
    assert_eq!(response.status, 500);
    emu.faults().inject(
        Fault::status(503)
            .retry_after("1")
            .on(FaultTarget::Resource)
            .times(1),
    );
    let response = call_resource(&emu, "https://graph.microsoft.com/v1.0/me", None, None).await;
    assert_eq!(response.status, 503);
    assert_eq!(response.header("retry-after"), Some("1"));
    assert_eq!(emu.faults().active(), 0);
}

#[tokio::test]
async fn dropping_the_handle_stops_the_listeners() {
    let emu = Emulator::builder().start().await.unwrap();
    let https = emu.https_addr();
    let imds = emu.imds_addr();
    drop(emu);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect(https).await.is_err());
    assert!(tokio::net::TcpStream::connect(imds).await.is_err());
}
