//! Test support: a hand-written HTTP/1.1 client over tokio-rustls that connects to the emulator
//! with the production host name as SNI, trusts the emulator CA and can present a client
//! certificate; JWT assertions signed by hand with ring; test certificates and SN+I chains.
//!
//! Nothing here uses a client crate of the workspace.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::missing_panics_doc,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use fic_emulator::{App, EmulatorHandle, Tenant, User};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256, RSA_PSS_SHA256,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

pub const TENANT: &str = "10c419d4-4a50-45b2-aa4e-919fb84df24f";
pub const OTHER_TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const SECRET_APP: &str = "11111111-1111-1111-1111-111111111111";
pub const CERT_APP: &str = "22222222-2222-2222-2222-222222222222";
pub const EC_APP: &str = "33333333-3333-3333-3333-333333333333";
pub const SNI_APP: &str = "44444444-4444-4444-4444-444444444444";
pub const FIC_APP: &str = "55555555-5555-5555-5555-555555555555";
pub const BLUEPRINT: &str = "aab5089d-e764-47e3-9f28-cc11c2513821";
pub const AGENT: &str = "ab18ca07-d139-4840-8b3b-4be9610c6ed5";
pub const OTHER_AGENT: &str = "ab18ca07-d139-4840-8b3b-4be9610c6ed6";
pub const USER_UPN: &str = "alice@contoso.com";
pub const USER_OID: &str = "00000000-0000-0000-0000-000000000abc";
pub const SECRET: &str = "s3cret-value";
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
pub const JWT_POP: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-pop";
pub const EXCHANGE_SCOPE: &str = "api://AzureADTokenExchange/.default";
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

pub const RSA_A_KEY: &str = include_str!("../data/rsa_a.key.pem");
pub const RSA_A_CERT: &str = include_str!("../data/rsa_a.cert.pem");
pub const RSA_B_KEY: &str = include_str!("../data/rsa_b.key.pem");
pub const RSA_B_CERT: &str = include_str!("../data/rsa_b.cert.pem");

pub fn b64url(data: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

pub fn x5t_s256(der: &[u8]) -> String {
    b64url(Sha256::digest(der))
}

pub fn x5t_sha1(der: &[u8]) -> String {
    use sha1::Digest as _;
    b64url(sha1::Sha1::digest(der))
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A private key that signs JWTs.
pub enum TestKey {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// A certificate, its key, and the PKCS#8 DER of the key (for TLS).
pub struct TestCert {
    pub der: Vec<u8>,
    /// Leaf first, then intermediates (for TLS and x5c).
    pub chain: Vec<Vec<u8>>,
    pub pkcs8: Vec<u8>,
    pub key: TestKey,
}

impl TestCert {
    pub fn rsa(cert_pem: &str, key_pem: &str) -> Self {
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .unwrap()
            .to_vec();
        let pkcs8 = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes())
            .unwrap()
            .secret_pkcs8_der()
            .to_vec();
        let key = TestKey::Rsa(RsaKeyPair::from_pkcs8(&pkcs8).unwrap());
        Self {
            chain: vec![der.clone()],
            der,
            pkcs8,
            key,
        }
    }

    pub fn a() -> Self {
        Self::rsa(RSA_A_CERT, RSA_A_KEY)
    }

    pub fn b() -> Self {
        Self::rsa(RSA_B_CERT, RSA_B_KEY)
    }

    /// A self-signed ECDSA P-256 certificate generated now.
    pub fn ec(common_name: &str) -> Self {
        let key_pair = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let cert = params.self_signed(&key_pair).unwrap();
        Self::from_rcgen(cert.der().to_vec(), vec![], &key_pair)
    }

    fn from_rcgen(der: Vec<u8>, intermediates: Vec<Vec<u8>>, key_pair: &KeyPair) -> Self {
        let pkcs8 = key_pair.serialize_der();
        let key = if key_pair.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256 {
            TestKey::Ec(
                EcdsaKeyPair::from_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &pkcs8,
                    &SystemRandom::new(),
                )
                .unwrap(),
            )
        } else {
            TestKey::Rsa(RsaKeyPair::from_pkcs8(&pkcs8).unwrap())
        };
        let mut chain = vec![der.clone()];
        chain.extend(intermediates);
        Self {
            der,
            chain,
            pkcs8,
            key,
        }
    }

    pub fn thumbprint(&self) -> String {
        x5t_s256(&self.der)
    }

    pub fn identity(&self) -> Identity {
        Identity {
            chain: self.chain.clone(),
            pkcs8: self.pkcs8.clone(),
        }
    }
}

/// A root CA, an intermediate and a leaf (SN+I).
pub struct Pki {
    pub root_der: Vec<u8>,
    pub intermediate_der: Vec<u8>,
    pub leaf: TestCert,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Root → intermediate → leaf with `leaf_cn`; the leaf key is the RSA fixture A when `rsa_leaf`,
/// else a fresh P-256 key.
pub fn sni_pki(root_cn: &str, leaf_cn: &str, rsa_leaf: bool) -> Pki {
    let root_key = KeyPair::generate().unwrap();
    let root_params = ca_params(root_cn);
    let root_cert = root_params.self_signed(&root_key).unwrap();
    let root = Issuer::new(root_params, root_key);
    let inter_key = KeyPair::generate().unwrap();
    let inter_params = ca_params(&format!("{root_cn} intermediate"));
    let inter_cert = inter_params.signed_by(&inter_key, &root).unwrap();
    let inter = Issuer::new(inter_params, inter_key);
    let leaf_key = if rsa_leaf {
        KeyPair::from_pkcs8_pem_and_sign_algo(RSA_A_KEY, &rcgen::PKCS_RSA_SHA256).unwrap()
    } else {
        KeyPair::generate().unwrap()
    };
    let mut leaf_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, leaf_cn);
    let leaf_cert = leaf_params.signed_by(&leaf_key, &inter).unwrap();
    Pki {
        root_der: root_cert.der().to_vec(),
        intermediate_der: inter_cert.der().to_vec(),
        leaf: TestCert::from_rcgen(
            leaf_cert.der().to_vec(),
            vec![inter_cert.der().to_vec()],
            &leaf_key,
        ),
    }
}

/// Signs `header`/`claims` with `key` (`alg` is taken from the header).
pub fn sign_jwt(header: &Value, claims: &Value, key: &TestKey) -> String {
    let input = format!(
        "{}.{}",
        b64url(header.to_string()),
        b64url(claims.to_string())
    );
    let rng = SystemRandom::new();
    let alg = header["alg"].as_str().unwrap();
    let signature = match (alg, key) {
        ("RS256" | "PS256", TestKey::Rsa(pair)) => {
            let padding: &'static dyn ring::signature::RsaEncoding = if alg == "RS256" {
                &RSA_PKCS1_SHA256
            } else {
                &RSA_PSS_SHA256
            };
            let mut sig = vec![0; pair.public().modulus_len()];
            pair.sign(padding, &rng, input.as_bytes(), &mut sig)
                .unwrap();
            sig
        }
        ("ES256", TestKey::Ec(pair)) => {
            pair.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec()
        }
        _ => panic!("cannot sign {alg} with this key"),
    };
    format!("{input}.{}", b64url(signature))
}

/// The claims of a client assertion: aud, iss = sub = client id, jti, nbf = iat = now, exp = now + 600.
pub fn assertion_claims(client_id: &str, aud: &str, now: u64) -> Value {
    json!({
        "aud": aud,
        "iss": client_id,
        "sub": client_id,
        "jti": uuid::Uuid::new_v4().to_string(),
        "nbf": now,
        "iat": now,
        "exp": now + 600,
    })
}

/// A PS256/RS256/ES256 client assertion with `x5t#S256` (and `x5c` when `send_x5c`).
pub fn cert_assertion(
    cert: &TestCert,
    alg: &str,
    client_id: &str,
    aud: &str,
    now: u64,
    send_x5c: bool,
) -> String {
    let mut header = json!({ "alg": alg, "typ": "JWT", "x5t#S256": cert.thumbprint() });
    if send_x5c {
        header["x5c"] = json!(cert
            .chain
            .iter()
            .map(|c| STANDARD.encode(c))
            .collect::<Vec<_>>());
    }
    sign_jwt(&header, &assertion_claims(client_id, aud, now), &cert.key)
}

/// Decodes a JWT payload without checking it.
pub fn claims_of(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// Decodes a JWT header without checking it.
pub fn header_of(jwt: &str) -> Value {
    let header = jwt.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap()
}

/// A TLS client identity.
#[derive(Clone)]
pub struct Identity {
    pub chain: Vec<Vec<u8>>,
    pub pkcs8: Vec<u8>,
}

/// An HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts an Entra error with `error` and AADSTS `code`.
    #[track_caller]
    pub fn assert_aadsts(&self, status: u16, error: &str, code: u32) {
        let body = self.json();
        assert_eq!(self.status, status, "{body:#}");
        assert_eq!(body["error"], error, "{body:#}");
        assert_eq!(body["error_codes"][0], code, "{body:#}");
        let description = body["error_description"].as_str().unwrap();
        assert!(
            description.starts_with(&format!("AADSTS{code}:")),
            "{description}"
        );
        assert!(body["trace_id"].is_string() && body["timestamp"].is_string());
    }
}

fn parse_url(url: &str) -> (bool, String, u16, String) {
    let parsed = url::Url::parse(url).unwrap();
    let https = parsed.scheme() == "https";
    let host = parsed.host_str().unwrap().to_owned();
    let port = parsed.port_or_known_default().unwrap();
    let mut target = parsed.path().to_owned();
    if let Some(q) = parsed.query() {
        target.push('?');
        target.push_str(q);
    }
    (https, host, port, target)
}

fn client_config(emulator: &EmulatorHandle, identity: Option<&Identity>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(emulator.ca_certificate_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(
                id.chain
                    .iter()
                    .map(|c| CertificateDer::from(c.clone()))
                    .collect(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.pkcs8.clone())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// Sends one request to `url` (a production URL) through the emulator's resolver map.
pub async fn send(
    emulator: &EmulatorHandle,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    identity: Option<&Identity>,
) -> Result<HttpResponse, String> {
    let (https, host, port, target) = parse_url(url);
    // Production names through the resolver map; loopback URLs (the managed identity
    // endpoints of App Service and friends) as they are.
    let loopback = host
        .parse::<std::net::IpAddr>()
        .ok()
        .filter(std::net::IpAddr::is_loopback)
        .map(|ip| std::net::SocketAddr::new(ip, port));
    let addr = emulator
        .resolve(&host, port)
        .or(loopback)
        .ok_or_else(|| format!("the emulator does not serve {host}:{port}"))?;
    let default_port = if https { 443 } else { 80 };
    let host_header = if port == default_port {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    let mut request =
        format!("{method} {target} HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\n");
    for (name, value) in headers {
        let _ = write!(request, "{name}: {value}\r\n");
    }
    let _ = write!(request, "Content-Length: {}\r\n\r\n", body.len());
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    if https {
        let connector =
            tokio_rustls::TlsConnector::from(Arc::new(client_config(emulator, identity)));
        let name = ServerName::try_from(host.clone()).unwrap();
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(&bytes).await.map_err(|e| e.to_string())?;
        read_all(&mut tls, &mut raw).await?;
    } else {
        let mut tcp = tcp;
        tcp.write_all(&bytes).await.map_err(|e| e.to_string())?;
        read_all(&mut tcp, &mut raw).await?;
    }
    parse_response(&raw)
}

async fn read_all<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    match reader.read_to_end(out).await {
        Ok(_) => Ok(()),
        // A peer that closes without close_notify after a full response is fine for these tests.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no HTTP response (got {} bytes)", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body);
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
}

/// POSTs a form to a token endpoint URL with MSAL's headers.
pub async fn post_form(
    emulator: &EmulatorHandle,
    url: &str,
    form: &[(&str, &str)],
    identity: Option<&Identity>,
) -> Result<HttpResponse, String> {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let correlation = uuid::Uuid::new_v4().to_string();
    send(
        emulator,
        "POST",
        url,
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Accept", "application/json"),
            ("client-request-id", &correlation),
            ("return-client-request-id", "true"),
        ],
        body.as_bytes(),
        identity,
    )
    .await
}

/// `POST https://{host}/{tenant}/oauth2/v2.0/token`, expecting an answer.
pub async fn token(
    emulator: &EmulatorHandle,
    host: &str,
    form: &[(&str, &str)],
    identity: Option<&Identity>,
) -> HttpResponse {
    post_form(emulator, &endpoint(host, TENANT), form, identity)
        .await
        .unwrap()
}

pub fn endpoint(host: &str, tenant: &str) -> String {
    format!("https://{host}/{tenant}/oauth2/v2.0/token")
}

/// GET a resource URL with an Authorization header.
pub async fn call_resource(
    emulator: &EmulatorHandle,
    url: &str,
    authorization: Option<&str>,
    identity: Option<&Identity>,
) -> HttpResponse {
    let mut headers = vec![];
    if let Some(a) = authorization {
        headers.push(("Authorization", a));
    }
    send(emulator, "GET", url, &headers, b"", identity)
        .await
        .unwrap()
}

/// The usual directory of the tests.
pub fn standard_builder() -> fic_emulator::EmulatorBuilder {
    let a = TestCert::a();
    fic_emulator::Emulator::builder()
        .tenant(Tenant::new(TENANT).domain("contoso.onmicrosoft.com"))
        .app(
            App::new(SECRET_APP, TENANT)
                .secret(SECRET)
                .roles(["Files.Read.All"]),
        )
        .app(App::new(CERT_APP, TENANT).certificate(a.der.clone()))
        .user(User::new(USER_UPN, USER_OID, TENANT).display_name("Alice"))
}

/// A client-credentials request with a secret for `scope`; returns the access token.
pub async fn secret_token(emulator: &EmulatorHandle, scope: &str) -> String {
    let response = token(
        emulator,
        "login.microsoftonline.com",
        &[
            ("client_id", SECRET_APP),
            ("client_secret", SECRET),
            ("scope", scope),
            ("grant_type", "client_credentials"),
        ],
        None,
    )
    .await;
    assert_eq!(response.status, 200, "{:#}", response.json());
    response.json()["access_token"].as_str().unwrap().to_owned()
}
