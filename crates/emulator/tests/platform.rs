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
    // Every one of them has a valid certificate: a TLS request to each answers.
    for host in [
        "login.sovcloud-identity.sg",
        "eastus2.mtlsauth.microsoft.com",
        "kv1.vault.azure.net",
    ] {
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
