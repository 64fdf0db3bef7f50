//! IMDSv2 mTLS PoP against a scripted IMDS that parses and verifies the CSR and issues a real
//! certificate for its key. The binding key needs a crypto backend: without one, see
//! `emulator.rs` for the error.
#![cfg(any(feature = "ring", feature = "aws-lc-rs"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use fic_managed_identity::{codes, ManagedIdentity, ManagedIdentityId};
use fic_oauth_core::time::unix_seconds;
use fic_oauth_core::{
    ErrorCode, HttpTransport, KeyKind, ManualClock, TokenCredential, TokenRequestOptions,
    TokenSource, TokenType,
};
use support::*;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::der_parser::oid::Oid;
use x509_parser::prelude::FromDer as _;
use x509_parser::signature_algorithm::RsaSsaPssParams;

const MI_CLIENT_ID: &str = "aaaaaaaa-1111-2222-3333-bbbbbbbbbbbb";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const VM_ID: &str = "vm-0f0e0d0c";
const VMSS_ID: &str = "vmss-01020304";
const MTLS_ENDPOINT: &str = "https://westus3.mtlsauth.microsoft.com";
const IMDS_SERVER: &str = "IMDS/150.870.65.1854";
/// 2023-11-21T00:00:00Z, the default `notAfter` of issued certificates.
const NOT_AFTER: u64 = 1_700_524_800;

/// A scripted IMDSv2 + Entra ID: checks what it receives and keeps the CSRs.
struct Fake {
    transport: FakeTransport,
    ca: Arc<rcgen::Issuer<'static, rcgen::KeyPair>>,
    csrs: Arc<Mutex<Vec<Vec<u8>>>>,
    issued: Arc<Mutex<Vec<Vec<u8>>>>,
    not_after: Arc<Mutex<(i32, u8, u8)>>,
}

fn with_server(status: u16, body: &str, server: Option<&str>) -> http::Response<Bytes> {
    let mut builder = http::Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some(server) = server {
        builder = builder.header("server", server);
    }
    builder.body(Bytes::from(body.to_owned())).unwrap()
}

struct RsaPublicKey(Vec<u8>);

impl rcgen::PublicKeyData for RsaPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

/// Reads one short-form TLV; returns (tag, contents, rest).
fn tlv(bytes: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = bytes[0];
    let (len, start) = match bytes[1] {
        n if n < 0x80 => (usize::from(n), 2),
        0x81 => (usize::from(bytes[2]), 3),
        0x82 => (usize::from(bytes[2]) << 8 | usize::from(bytes[3]), 4),
        _ => panic!("unexpected length in {:02x?}", &bytes[..bytes.len().min(8)]),
    };
    (tag, &bytes[start..start + len], &bytes[start + len..])
}

/// Checks the CSR the way a strict IMDS would; returns the RSAPublicKey DER.
fn verify_csr(der: &[u8], cuid: &str) -> Vec<u8> {
    let (rest, csr) = X509CertificationRequest::from_der(der).unwrap();
    assert!(rest.is_empty());
    let info = &csr.certification_request_info;
    assert_eq!(info.version.0, 0);
    // Subject: [DC=<tenant>], [CN=<client id>] in DER order, i.e. "CN=…, DC=…".
    let rdns: Vec<_> = info.subject.iter_rdn().collect();
    assert_eq!(rdns.len(), 2);
    let dc = Oid::from(&[0, 9, 2342, 19_200_300, 100, 1, 25]).unwrap();
    let cn = Oid::from(&[2, 5, 4, 3]).unwrap();
    let first = rdns[0].iter().next().unwrap();
    assert_eq!(first.attr_type(), &dc);
    assert_eq!(first.as_str().unwrap(), TENANT);
    let second = rdns[1].iter().next().unwrap();
    assert_eq!(second.attr_type(), &cn);
    assert_eq!(second.as_str().unwrap(), MI_CLIENT_ID);
    // RSA-2048 public key.
    let spki = &info.subject_pki;
    assert_eq!(
        spki.algorithm.algorithm,
        Oid::from(&[1, 2, 840, 113_549, 1, 1, 1]).unwrap()
    );
    let public_key = spki.subject_public_key.data.to_vec();
    let (_, modulus_and_exponent, _) = tlv(&public_key);
    let (_, modulus, _) = tlv(modulus_and_exponent);
    assert_eq!(modulus.len(), 257, "2048-bit modulus with its sign byte");
    // RSASSA-PSS, SHA-256, MGF1-SHA-256, salt 32.
    let sha256 = Oid::from(&[2, 16, 840, 1, 101, 3, 4, 2, 1]).unwrap();
    assert_eq!(
        csr.signature_algorithm.algorithm,
        Oid::from(&[1, 2, 840, 113_549, 1, 1, 10]).unwrap()
    );
    let params =
        RsaSsaPssParams::try_from(csr.signature_algorithm.parameters.as_ref().unwrap()).unwrap();
    assert_eq!(params.hash_algorithm_oid(), &sha256);
    let mgf = params.mask_gen_algorithm().unwrap();
    assert_eq!(mgf.mgf, Oid::from(&[1, 2, 840, 113_549, 1, 1, 8]).unwrap());
    assert_eq!(mgf.hash, sha256);
    assert_eq!(params.salt_length(), 32);
    // The signature verifies with the CSR's own key.
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PSS_2048_8192_SHA256,
        &public_key,
    )
    .verify(info.raw, &csr.signature_value.data)
    .expect("the CSR's PSS signature verifies with its public key");
    // One attribute: 1.3.6.1.4.1.311.90.2.10 = UTF8String JSON.
    let attributes = info.attributes();
    assert_eq!(attributes.len(), 1);
    assert_eq!(
        attributes[0].oid,
        Oid::from(&[1, 3, 6, 1, 4, 1, 311, 90, 2, 10]).unwrap()
    );
    // x509-parser keeps only the header of an unknown attribute's values: walk the raw info.
    let (_, info_body, _) = tlv(info.raw);
    let (_, _, rest) = tlv(info_body); // version
    let (_, _, rest) = tlv(rest); // subject
    let (_, _, rest) = tlv(rest); // subjectPKInfo
    let (attributes_tag, attributes_body, rest) = tlv(rest);
    assert_eq!(attributes_tag, 0xa0);
    assert!(rest.is_empty());
    let (attribute_tag, attribute, rest) = tlv(attributes_body);
    assert_eq!(attribute_tag, 0x30);
    assert!(rest.is_empty(), "exactly one attribute");
    let (_, _, values) = tlv(attribute); // the OID, checked above
    let (set_tag, set, rest) = tlv(values);
    assert_eq!(set_tag, 0x31);
    assert!(rest.is_empty());
    let (string_tag, json, rest) = tlv(set);
    assert_eq!(string_tag, 0x0c, "UTF8String");
    assert!(rest.is_empty(), "one value");
    assert_eq!(std::str::from_utf8(json).unwrap(), cuid);
    public_key
}

impl Fake {
    fn new() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            "managedidentitysnissuer.login.microsoft.com",
        );
        Self {
            transport: FakeTransport::new(),
            ca: Arc::new(rcgen::Issuer::new(params, ca_key)),
            csrs: Arc::default(),
            issued: Arc::default(),
            not_after: Arc::new(Mutex::new((2023, 11, 21))),
        }
    }

    fn credential(&self, clock: &ManualClock, id: ManagedIdentityId) -> ManagedIdentity {
        builder(&self.transport, clock, env(&[]))
            .id(id)
            .mtls_pop(true)
            .build()
            .unwrap()
    }

    /// A credential on `transport` (one instance shared by the credentials given it).
    fn credential_on(
        &self,
        transport: &Arc<dyn HttpTransport>,
        clock: &ManualClock,
        id: ManagedIdentityId,
    ) -> fic_managed_identity::ManagedIdentityBuilder {
        builder(&self.transport, clock, env(&[]))
            .transport(Arc::clone(transport))
            .id(id)
            .mtls_pop(true)
    }

    fn metadata(&self) -> &Self {
        self.transport.reply_with(with_server(
            200,
            &format!(
                r#"{{"cuId":{{"vmId":"{VM_ID}","vmssId":"{VMSS_ID}"}},"clientId":"{MI_CLIENT_ID}","tenantId":"{TENANT}","attestationEndpoint":"https://sharedeus2.eus2.attest.azure.net"}}"#
            ),
            Some(IMDS_SERVER),
        ));
        self
    }

    fn issue(&self) -> &Self {
        let (ca, csrs, issued, not_after) = (
            Arc::clone(&self.ca),
            Arc::clone(&self.csrs),
            Arc::clone(&self.issued),
            Arc::clone(&self.not_after),
        );
        self.transport.handle(move |request| {
            let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
            let csr = STANDARD.decode(body["csr"].as_str().unwrap()).unwrap();
            assert_eq!(
                body.as_object().unwrap().len(),
                1,
                "only csr: no attestation token"
            );
            let public_key = verify_csr(
                &csr,
                &format!(r#"{{"vmId":"{VM_ID}","vmssId":"{VMSS_ID}"}}"#),
            );
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, MI_CLIENT_ID);
            params.not_before = rcgen::date_time_ymd(2023, 11, 1);
            let (y, m, d) = *not_after.lock().unwrap();
            params.not_after = rcgen::date_time_ymd(y, m, d);
            let certificate = params.signed_by(&RsaPublicKey(public_key), &ca).unwrap();
            csrs.lock().unwrap().push(csr);
            issued.lock().unwrap().push(certificate.der().to_vec());
            Ok(response(
                200,
                &serde_json::json!({
                    "client_id": MI_CLIENT_ID,
                    "tenant_id": TENANT,
                    "certificate": STANDARD.encode(certificate.der()),
                    "identity_type": "SystemAssigned",
                    "mtls_authentication_endpoint": MTLS_ENDPOINT,
                })
                .to_string(),
            ))
        });
        self
    }

    fn token(&self, status: u16, body: &str) -> &Self {
        self.transport.reply(status, body);
        self
    }

    fn pop_token(&self, token: &str) -> &Self {
        self.token(
            200,
            &format!(r#"{{"token_type":"mtls_pop","access_token":"{token}","expires_in":3599}}"#),
        )
    }

    fn csr_count(&self) -> usize {
        self.csrs.lock().unwrap().len()
    }
}

#[tokio::test]
async fn csr_certificate_and_mtls_token() {
    let fake = Fake::new();
    fake.metadata().issue().pop_token("pop-1");
    let clock = ManualClock::at_unix(NOW);
    let credential = fake.credential(&clock, ManagedIdentityId::SystemAssigned);
    assert_eq!(credential.token_type(), TokenType::MtlsPop);
    let token = credential
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap();

    assert_eq!(token.token_type, TokenType::MtlsPop);
    assert_eq!(token.authorization_header().expose(), "mtls_pop pop-1");
    assert_eq!(token.source, TokenSource::IdentityProvider);
    assert_eq!(unix_seconds(token.expires_on), NOW + 3599);
    let binding = token
        .binding
        .clone()
        .expect("bound to the minted certificate");
    assert_eq!(
        binding.leaf_der(),
        fake.issued.lock().unwrap()[0].as_slice()
    );
    assert_eq!(binding.key().kind(), KeyKind::Rsa { bits: 2048 });

    let requests = fake.transport.requests();
    assert_eq!(requests.len(), 3);
    let (metadata, issue, token_request) = (&requests[0], &requests[1], &requests[2]);
    assert_eq!(metadata.method, "GET");
    assert_eq!(
        metadata.uri,
        "http://169.254.169.254/metadata/identity/getplatformmetadata?cred-api-version=2.0"
    );
    assert_eq!(metadata.header("metadata").as_deref(), Some("true"));
    assert!(metadata.header("x-ms-client-request-id").is_some());
    assert!(metadata.identity.is_none());
    assert_eq!(issue.method, "POST");
    assert_eq!(
        issue.uri,
        "http://169.254.169.254/metadata/identity/issuecredential?cred-api-version=2.0"
    );
    assert_eq!(issue.header("metadata").as_deref(), Some("true"));
    assert_eq!(
        issue.header("content-type").as_deref(),
        Some("application/json")
    );
    assert!(issue.identity.is_none());
    assert_eq!(token_request.method, "POST");
    assert_eq!(
        token_request.uri,
        format!("{MTLS_ENDPOINT}/{TENANT}/oauth2/v2.0/token")
    );
    assert_eq!(
        token_request.body_text(),
        format!("client_id={MI_CLIENT_ID}&scope=https%3A%2F%2Fmanagement.azure.com%2F.default&grant_type=client_credentials&token_type=mtls_pop")
    );
    let presented = token_request
        .identity
        .as_ref()
        .expect("the token request is sent over mTLS");
    assert!(presented.same_certificate(&binding));
    assert!(token_request.header("client-request-id").is_some());

    // The second call is a cache hit: no CSR, no request.
    let again = credential
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(again.source, TokenSource::Cache);
    assert_eq!(again.token.expose(), "pop-1");
    assert!(again.binding.as_ref().unwrap().same_certificate(&binding));
    assert_eq!(fake.transport.request_count(), 3);
    assert_eq!(fake.csr_count(), 1);

    // A Bearer credential on the same cache never sees the PoP token.
    let bearer = builder(&fake.transport, &clock, env(&[]))
        .engine(Arc::clone(credential.engine()))
        .build()
        .unwrap();
    fake.transport.reply(200, &token_body("bearer-1"));
    let plain = bearer
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(plain.token.expose(), "bearer-1");
    assert_eq!(plain.token_type, TokenType::Bearer);
    assert!(plain.binding.is_none());
}

#[tokio::test]
async fn user_assigned_parameters_on_both_imds_calls() {
    for (id, param) in [
        (
            ManagedIdentityId::ClientId(CLIENT_ID.into()),
            format!("client_id={CLIENT_ID}"),
        ),
        (
            ManagedIdentityId::ResourceId("/subscriptions/s/rg/mi".into()),
            "mi_res_id=%2Fsubscriptions%2Fs%2Frg%2Fmi".to_owned(),
        ),
        (
            ManagedIdentityId::ObjectId(OBJECT_ID.into()),
            format!("object_id={OBJECT_ID}"),
        ),
    ] {
        let fake = Fake::new();
        fake.metadata().issue().pop_token("t");
        let clock = ManualClock::at_unix(NOW);
        fake.credential(&clock, id)
            .get_token(&[ARM], &TokenRequestOptions::default())
            .await
            .unwrap();
        let requests = fake.transport.requests();
        assert!(
            requests[0]
                .uri
                .ends_with(&format!("getplatformmetadata?cred-api-version=2.0&{param}")),
            "{}",
            requests[0].uri
        );
        assert!(
            requests[1]
                .uri
                .ends_with(&format!("issuecredential?cred-api-version=2.0&{param}")),
            "{}",
            requests[1].uri
        );
    }
}

#[tokio::test]
async fn invalid_client_mints_a_new_certificate_once() {
    let fake = Fake::new();
    fake.metadata()
        .issue()
        .token(401, r#"{"error":"invalid_client","error_description":"AADSTS700027: Client assertion contains an invalid signature.","error_codes":[700027]}"#)
        .metadata()
        .issue()
        .pop_token("pop-2");
    let clock = ManualClock::at_unix(NOW);
    let credential = fake.credential(&clock, ManagedIdentityId::SystemAssigned);
    let token = credential
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(token.token.expose(), "pop-2");
    assert_eq!(fake.csr_count(), 2);
    let issued = fake.issued.lock().unwrap().clone();
    assert_ne!(issued[0], issued[1]);
    assert_eq!(token.binding.unwrap().leaf_der(), issued[1].as_slice());
    let requests = fake.transport.requests();
    assert_eq!(requests.len(), 6);
    assert_eq!(
        requests[2].identity.as_ref().unwrap().leaf_der(),
        issued[0].as_slice()
    );
    assert_eq!(
        requests[5].identity.as_ref().unwrap().leaf_der(),
        issued[1].as_slice()
    );
    // The new certificate is the one kept.
    assert_eq!(
        credential.binding_certificate().unwrap().leaf_der(),
        issued[1].as_slice()
    );

    // Only once: a second invalid_client is the caller's error.
    let fake = Fake::new();
    let refusal = r#"{"error":"invalid_client","error_description":"AADSTS700027: no."}"#;
    fake.metadata()
        .issue()
        .token(401, refusal)
        .metadata()
        .issue()
        .token(401, refusal);
    let credential = fake.credential(
        &ManualClock::at_unix(NOW),
        ManagedIdentityId::SystemAssigned,
    );
    let err = credential
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code().as_str(), "invalid_client");
    assert_eq!(fake.csr_count(), 2);
    assert_eq!(fake.transport.pending(), 0);
}

#[tokio::test]
async fn tls_handshake_failure_mints_a_new_certificate() {
    let fake = Fake::new();
    fake.metadata().issue();
    fake.transport.fail(ErrorCode::TLS_HANDSHAKE_FAILED);
    fake.metadata().issue().pop_token("pop-3");
    let clock = ManualClock::at_unix(NOW);
    let credential = fake.credential(&clock, ManagedIdentityId::SystemAssigned);
    let token = credential
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(token.token.expose(), "pop-3");
    assert_eq!(fake.csr_count(), 2);
}

/// What hyper does with an I/O failure: its own error, the I/O error as its source.
#[derive(Debug)]
struct Hyperish(std::io::Error);

impl std::fmt::Display for Hyperish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("error reading a body from connection")
    }
}

impl std::error::Error for Hyperish {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// The transport's error for an exchange that failed with `io` (as fic-mtls-transport
/// classifies a connection reset: `transport_error`, the cause as its source).
fn transport_error(io: std::io::Error) -> fic_oauth_core::Error {
    fic_oauth_core::Error::new(
        ErrorCode::TRANSPORT,
        "request to https://westus3.mtlsauth.microsoft.com:443 failed",
    )
    .with_source(Hyperish(io))
}

#[tokio::test]
async fn connection_reset_mints_a_new_certificate() {
    use std::io::{Error as IoError, ErrorKind};
    // The reset directly under the transport's error, and wrapped in another I/O error.
    for reset in [
        IoError::from(ErrorKind::ConnectionReset),
        IoError::other(IoError::from(ErrorKind::ConnectionReset)),
    ] {
        let fake = Fake::new();
        fake.metadata().issue();
        fake.transport.fail_with(transport_error(reset));
        fake.metadata().issue().pop_token("pop-reset");
        let credential = fake.credential(
            &ManualClock::at_unix(NOW),
            ManagedIdentityId::SystemAssigned,
        );
        let token = credential
            .get_token(&[ARM], &TokenRequestOptions::default())
            .await
            .unwrap();
        assert_eq!(token.token.expose(), "pop-reset");
        assert_eq!(fake.csr_count(), 2);
        let issued = fake.issued.lock().unwrap().clone();
        let requests = fake.transport.requests();
        assert_eq!(requests.len(), 6);
        assert_eq!(
            requests[2].identity.as_ref().unwrap().leaf_der(),
            issued[0].as_slice()
        );
        assert_eq!(
            requests[5].identity.as_ref().unwrap().leaf_der(),
            issued[1].as_slice()
        );
        assert_eq!(token.binding.unwrap().leaf_der(), issued[1].as_slice());
    }

    // Other transport failures (a connection closed without a reset, a reset-free chain) are
    // the caller's error: no new certificate.
    for other in [
        IoError::from(ErrorKind::UnexpectedEof),
        IoError::other("connection closed before message completed"),
    ] {
        let fake = Fake::new();
        fake.metadata().issue();
        fake.transport.fail_with(transport_error(other));
        let err = fake
            .credential(
                &ManualClock::at_unix(NOW),
                ManagedIdentityId::SystemAssigned,
            )
            .get_token(&[ARM], &TokenRequestOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), &ErrorCode::TRANSPORT);
        assert_eq!(fake.csr_count(), 1);
        assert_eq!(fake.transport.request_count(), 3);
    }
}

#[tokio::test]
async fn certificate_reused_until_a_day_before_expiry() {
    let fake = Fake::new();
    fake.metadata()
        .issue()
        .pop_token("pop-a")
        .pop_token("pop-b");
    let clock = ManualClock::at_unix(NOW);
    let credential = fake.credential(&clock, ManagedIdentityId::SystemAssigned);
    let first = credential
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap();
    // The token expires; the certificate (until 2023-11-21, reused until 2023-11-20) does not.
    clock.set(fic_oauth_core::time::from_unix_seconds(
        NOT_AFTER - 86_400 - 60,
    ));
    let second = credential
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(second.token.expose(), "pop-b");
    assert_eq!(second.source, TokenSource::IdentityProvider);
    assert!(second
        .binding
        .as_ref()
        .unwrap()
        .same_certificate(first.binding.as_ref().unwrap()));
    assert_eq!(fake.csr_count(), 1, "the certificate is reused");
    assert_eq!(fake.transport.request_count(), 4);

    // Past NotAfter - 24 h: a new CSR, and the cached token (bound to the old one) is not used.
    *fake.not_after.lock().unwrap() = (2023, 12, 31);
    fake.metadata().issue().pop_token("pop-c");
    clock.advance(Duration::from_secs(120));
    let third = credential
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(third.token.expose(), "pop-c");
    assert_eq!(fake.csr_count(), 2);
    assert!(!third
        .binding
        .as_ref()
        .unwrap()
        .same_certificate(first.binding.as_ref().unwrap()));
    // And the new one is kept.
    let fourth = credential
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(fourth.source, TokenSource::Cache);
    assert!(fourth
        .binding
        .unwrap()
        .same_certificate(third.binding.as_ref().unwrap()));
}

#[tokio::test]
async fn imds_v1_only_and_spoofed_servers() {
    // 404 (after IMDS retries) means no IMDSv2 here.
    let fake = Fake::new();
    for _ in 0..4 {
        fake.transport.reply_with(with_server(
            404,
            r#"{"error":"Not found"}"#,
            Some(IMDS_SERVER),
        ));
    }
    let clock = ManualClock::at_unix(NOW);
    let err = fake
        .credential(&clock, ManagedIdentityId::SystemAssigned)
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), &codes::MTLS_POP_TOKEN_NOT_SUPPORTED_IN_IMDS_V1);
    assert_eq!(clock.sleeps(), [1, 2, 4].map(Duration::from_secs));

    // A metadata answer without `server: IMDS…` is refused before anything is generated.
    for server in [None, Some("nginx/1.25")] {
        let fake = Fake::new();
        fake.transport.reply_with(with_server(
            200,
            &format!(r#"{{"cuId":{{"vmId":"{VM_ID}"}},"clientId":"{MI_CLIENT_ID}","tenantId":"{TENANT}"}}"#),
            server,
        ));
        let err = fake
            .credential(
                &ManualClock::at_unix(NOW),
                ManagedIdentityId::SystemAssigned,
            )
            .get_token(&[ARM], &TokenRequestOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), &codes::MANAGED_IDENTITY_REQUEST_FAILED);
        assert!(err.message().contains("server"), "{err}");
        assert_eq!(fake.transport.request_count(), 1);
    }
}

#[tokio::test]
async fn malformed_issuance_and_bearer_downgrade() {
    // issuecredential without mtls_authentication_endpoint.
    let fake = Fake::new();
    fake.metadata().token(
        200,
        &format!(r#"{{"client_id":"{MI_CLIENT_ID}","tenant_id":"{TENANT}","certificate":"AAAA","identity_type":"SystemAssigned"}}"#),
    );
    let err = fake
        .credential(
            &ManualClock::at_unix(NOW),
            ManagedIdentityId::SystemAssigned,
        )
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), &codes::MANAGED_IDENTITY_REQUEST_FAILED);
    assert!(
        err.message().contains("mtls_authentication_endpoint"),
        "{err}"
    );

    // A certificate that is not for the generated key.
    let fake = Fake::new();
    let other = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).unwrap();
    fake.metadata().token(
        200,
        &serde_json::json!({
            "client_id": MI_CLIENT_ID, "tenant_id": TENANT, "identity_type": "SystemAssigned",
            "certificate": STANDARD.encode(other.cert.der()), "mtls_authentication_endpoint": MTLS_ENDPOINT,
        })
        .to_string(),
    );
    let err = fake
        .credential(
            &ManualClock::at_unix(NOW),
            ManagedIdentityId::SystemAssigned,
        )
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::INVALID_CERTIFICATE);

    // Entra ID answering Bearer to an mtls_pop request is an error, not a token.
    let fake = Fake::new();
    fake.metadata().issue().token(
        200,
        r#"{"token_type":"Bearer","access_token":"downgraded","expires_in":3599}"#,
    );
    let err = fake
        .credential(
            &ManualClock::at_unix(NOW),
            ManagedIdentityId::SystemAssigned,
        )
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::TOKEN_TYPE_MISMATCH);
}

#[tokio::test]
async fn separately_built_credentials_share_the_minted_certificate() {
    let fake = Fake::new();
    let shared: Arc<dyn HttpTransport> = Arc::new(fake.transport.clone());
    let clock = ManualClock::at_unix(NOW);
    let id = ManagedIdentityId::ClientId(CLIENT_ID.into());
    fake.metadata().issue().pop_token("pop-1");
    let first = fake
        .credential_on(&shared, &clock, id.clone())
        .build()
        .unwrap();
    let token = first
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap();
    let certificate = token.binding.clone().unwrap();

    // Another credential for the same identity on the same engine: a cache hit, no request.
    let second = fake
        .credential_on(&shared, &clock, id.clone())
        .engine(Arc::clone(first.engine()))
        .build()
        .unwrap();
    assert!(second
        .binding_certificate()
        .unwrap()
        .same_certificate(&certificate));
    let hit = second
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(hit.source, TokenSource::Cache);
    assert_eq!(hit.token.expose(), "pop-1");
    assert_eq!(fake.transport.request_count(), 3);

    // A third with its own engine asks for a token, over mTLS with the same certificate.
    fake.pop_token("pop-2");
    let third = fake
        .credential_on(&shared, &clock, id.clone())
        .build()
        .unwrap();
    let own = third
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(own.token.expose(), "pop-2");
    assert!(own.binding.as_ref().unwrap().same_certificate(&certificate));
    let requests = fake.transport.requests();
    assert_eq!(requests.len(), 4, "no metadata or CSR for the third");
    assert!(requests[3]
        .identity
        .as_ref()
        .unwrap()
        .same_certificate(&certificate));
    assert_eq!(fake.csr_count(), 1);

    // A re-mint by one is seen by the others.
    fake.token(
        401,
        r#"{"error":"invalid_client","error_description":"AADSTS700027: no."}"#,
    )
    .metadata()
    .issue()
    .pop_token("pop-3");
    let renewed = third
        .get_token(
            &[ARM],
            &TokenRequestOptions::default().with_force_refresh(true),
        )
        .await
        .unwrap();
    assert_eq!(renewed.token.expose(), "pop-3");
    assert_eq!(fake.csr_count(), 2);
    let new_certificate = renewed.binding.unwrap();
    assert!(!new_certificate.same_certificate(&certificate));
    for credential in [&first, &second] {
        assert!(credential
            .binding_certificate()
            .unwrap()
            .same_certificate(&new_certificate));
    }

    // Other identities, and the same identity through another transport instance, mint their
    // own.
    fake.metadata().issue().pop_token("pop-other-id");
    let other_id = fake
        .credential_on(
            &shared,
            &clock,
            ManagedIdentityId::ObjectId(CLIENT_ID.into()),
        )
        .build()
        .unwrap();
    assert!(other_id.binding_certificate().is_none());
    other_id
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap();
    fake.metadata().issue().pop_token("pop-other-transport");
    let other_transport: Arc<dyn HttpTransport> = Arc::new(fake.transport.clone());
    let elsewhere = fake
        .credential_on(&other_transport, &clock, id.clone())
        .build()
        .unwrap();
    assert!(elsewhere.binding_certificate().is_none());
    elsewhere
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(fake.csr_count(), 4);
    assert_eq!(fake.transport.pending(), 0);

    // The store keeps a certificate only while a credential uses it: once all are gone, the
    // next credential mints anew.
    drop((first, second, third));
    fake.metadata().issue().pop_token("pop-fresh");
    let fresh = fake.credential_on(&shared, &clock, id).build().unwrap();
    assert!(fresh.binding_certificate().is_none());
    let token = fresh
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(token.token.expose(), "pop-fresh");
    assert_eq!(fake.csr_count(), 5);
}

/// IMDS from the script, the mTLS token endpoint over a real socket.
#[derive(Debug)]
struct Split {
    imds: FakeTransport,
    entra: fic_mtls_transport::MtlsTransport,
}

#[async_trait::async_trait]
impl HttpTransport for Split {
    async fn send(
        &self,
        request: fic_oauth_core::TransportRequest,
    ) -> Result<http::Response<Bytes>, fic_oauth_core::Error> {
        if request.request.uri().host() == Some("westus3.mtlsauth.microsoft.com") {
            self.entra.send(request).await
        } else {
            self.imds.send(request).await
        }
    }
}

/// A TLS token endpoint that resets (RST) its first connection once it has read the token
/// request, and answers the next with an mtls_pop token. Returns its address, its CA (PEM) and
/// how many requests it has read.
async fn resetting_token_endpoint() -> (std::net::SocketAddr, String, Arc<Mutex<usize>>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_cert =
        rcgen::CertificateParams::new(vec!["westus3.mtlsauth.microsoft.com".to_owned()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![server_cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(Mutex::new(0usize));
    let count = Arc::clone(&served);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(19).any(|w| w == b"token_type=mtls_pop") {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let first = {
                let mut served = count.lock().unwrap();
                *served += 1;
                *served == 1
            };
            if first {
                // Close with SO_LINGER 0: the peer sees a reset, not an orderly close.
                tls.get_ref().0.set_zero_linger().unwrap();
                drop(tls);
            } else {
                let body =
                    r#"{"token_type":"mtls_pop","access_token":"after-reset","expires_in":3599}"#;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        }
    });
    (addr, ca_cert.pem(), served)
}

#[tokio::test]
async fn a_real_connection_reset_mints_a_new_certificate() {
    let (addr, ca_pem, served) = resetting_token_endpoint().await;
    let fake = Fake::new();
    fake.metadata().issue().metadata().issue();
    let entra = fic_mtls_transport::MtlsTransport::builder()
        .crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .built_in_roots(false)
        .add_root_certificate_pem(ca_pem.as_bytes())
        .unwrap()
        .resolve("westus3.mtlsauth.microsoft.com:443", addr)
        .build()
        .unwrap();
    let split: Arc<dyn HttpTransport> = Arc::new(Split {
        imds: fake.transport.clone(),
        entra,
    });
    let credential = fake
        .credential_on(
            &split,
            &ManualClock::at_unix(NOW),
            ManagedIdentityId::SystemAssigned,
        )
        .build()
        .unwrap();
    let token = credential
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(token.token.expose(), "after-reset");
    assert_eq!(
        *served.lock().unwrap(),
        2,
        "the reset request, then the retry"
    );
    assert_eq!(fake.csr_count(), 2, "a new certificate after the reset");
    let issued = fake.issued.lock().unwrap().clone();
    assert_eq!(token.binding.unwrap().leaf_der(), issued[1].as_slice());
    assert_eq!(fake.transport.pending(), 0);
}
