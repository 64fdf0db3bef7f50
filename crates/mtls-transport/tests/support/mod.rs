//! Test support: a throw-away PKI made with rcgen, a ring-backed `SigningKey`, and local
//! servers (rustls + hyper) that record what they see.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // Test support: panics are test failures.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use fic_oauth_core::{ClientIdentity, Error, ErrorCode, KeyKind, SignatureAlgorithm, SigningKey};
use hyper::body::{Body, Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// An ECDSA P-256 key held by ring: the software `SigningKey` of these tests.
#[derive(Debug)]
pub struct RingEcdsaKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
    signs: AtomicUsize,
}

impl RingEcdsaKey {
    pub fn from_pkcs8(pkcs8: &[u8]) -> Self {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8, &rng).unwrap();
        Self {
            pair,
            rng,
            signs: AtomicUsize::new(0),
        }
    }

    /// A fresh P-256 key (PKCS#8 DER) with no certificate.
    pub fn generate_pkcs8() -> Vec<u8> {
        KeyPair::generate().unwrap().serialize_der()
    }

    /// How many signatures (TLS handshakes) this key object made.
    pub fn signs(&self) -> usize {
        self.signs.load(Ordering::SeqCst)
    }
}

impl SigningKey for RingEcdsaKey {
    fn kind(&self) -> KeyKind {
        KeyKind::EcP256
    }

    fn algorithms(&self) -> &[SignatureAlgorithm] {
        &[SignatureAlgorithm::EcdsaP256Sha256]
    }

    fn sign(&self, algorithm: SignatureAlgorithm, message: &[u8]) -> Result<Vec<u8>, Error> {
        if algorithm != SignatureAlgorithm::EcdsaP256Sha256 {
            return Err(Error::new(
                ErrorCode::SIGNING_FAILED,
                "unsupported algorithm",
            ));
        }
        self.signs.fetch_add(1, Ordering::SeqCst);
        self.pair
            .sign(&self.rng, message)
            .map(|sig| sig.as_ref().to_vec())
            .map_err(|_| Error::new(ErrorCode::SIGNING_FAILED, "ring failed to sign"))
    }
}

/// The committed RSA-2048 test key (PKCS#8 DER); ring cannot generate RSA keys.
pub const RSA_PKCS8: &[u8] = include_bytes!("../data/rsa2048.pkcs8.der");

/// An RSA key held by ring that signs with RSASSA-PKCS1-v1_5 / SHA-256 only, as some HSM and
/// OS-store keys do. TLS 1.3 allows RSA-PSS only, so it can authenticate over TLS 1.2 only.
#[derive(Debug)]
pub struct RingRsaPkcs1Key {
    pair: RsaKeyPair,
    rng: SystemRandom,
    signs: AtomicUsize,
}

impl RingRsaPkcs1Key {
    pub fn from_pkcs8(pkcs8: &[u8]) -> Self {
        Self {
            pair: RsaKeyPair::from_pkcs8(pkcs8).unwrap(),
            rng: SystemRandom::new(),
            signs: AtomicUsize::new(0),
        }
    }

    pub fn signs(&self) -> usize {
        self.signs.load(Ordering::SeqCst)
    }
}

impl SigningKey for RingRsaPkcs1Key {
    fn kind(&self) -> KeyKind {
        KeyKind::Rsa { bits: 2048 }
    }

    fn algorithms(&self) -> &[SignatureAlgorithm] {
        &[SignatureAlgorithm::RsaPkcs1Sha256]
    }

    fn sign(&self, algorithm: SignatureAlgorithm, message: &[u8]) -> Result<Vec<u8>, Error> {
        if algorithm != SignatureAlgorithm::RsaPkcs1Sha256 {
            return Err(Error::new(
                ErrorCode::SIGNING_FAILED,
                "unsupported algorithm",
            ));
        }
        self.signs.fetch_add(1, Ordering::SeqCst);
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &self.rng,
                message,
                &mut signature,
            )
            .map_err(|_| Error::new(ErrorCode::SIGNING_FAILED, "ring failed to sign"))?;
        Ok(signature)
    }
}

/// A client certificate (DER) and its private key (PKCS#8 DER), before any key object.
pub struct ClientParts {
    pub cert_der: Vec<u8>,
    pub pkcs8: Vec<u8>,
}

/// A CA that issues server and client certificates.
pub struct Pki {
    pub ca_pem: String,
    pub ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self {
            ca_pem: cert.pem(),
            ca_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` and its key.
    pub fn server_cert(
        &self,
        names: &[&str],
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params
            .distinguished_name
            .push(DnType::CommonName, "fic-rs test server");
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (
            vec![cert.der().clone(), self.ca_der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }

    /// A client certificate with subject `CN=name` and its ring-held key.
    pub fn client_identity(&self, name: &str) -> ClientIdentity {
        let parts = self.client_parts(name);
        let signing_key = RingEcdsaKey::from_pkcs8(&parts.pkcs8);
        ClientIdentity::new(vec![parts.cert_der], Arc::new(signing_key)).unwrap()
    }

    /// A P-256 client certificate with subject `CN=name` and its key, as bytes.
    pub fn client_parts(&self, name: &str) -> ClientParts {
        let key = KeyPair::generate().unwrap();
        ClientParts {
            cert_der: self.client_cert_for(&key, name),
            pkcs8: key.serialize_der(),
        }
    }

    /// A client certificate (DER) with subject `CN=name` for the public key of `key`.
    pub fn client_cert_for(&self, key: &KeyPair, name: &str) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.distinguished_name.push(DnType::CommonName, name);
        params.signed_by(key, &self.issuer).unwrap().der().to_vec()
    }

    /// A client certificate for the committed RSA key ([`RSA_PKCS8`]).
    pub fn rsa_client_cert(&self, name: &str) -> Vec<u8> {
        let key = KeyPair::from_pkcs8_der_and_sign_algo(&RSA_PKCS8.into(), &rcgen::PKCS_RSA_SHA256)
            .unwrap();
        self.client_cert_for(&key, name)
    }
}

/// Whether the server asks for a client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// Never asks.
    Off,
    /// Asks, accepts connections without one.
    Optional,
    /// Asks, refuses connections without one.
    Required,
}

/// How a test server is set up.
pub struct ServerOptions<'a> {
    pub names: &'a [&'a str],
    pub client_auth: ClientAuth,
    pub tls12_only: bool,
    pub tls13_only: bool,
    /// When set, the only signature schemes the server accepts for the client's
    /// `CertificateVerify` (what its `CertificateRequest` offers).
    pub client_schemes: Option<&'static [SignatureScheme]>,
}

impl Default for ServerOptions<'_> {
    fn default() -> Self {
        Self {
            names: &["login.microsoftonline.com", "*.mtlsauth.microsoft.com"],
            client_auth: ClientAuth::Optional,
            tls12_only: false,
            tls13_only: false,
            client_schemes: None,
        }
    }
}

/// A client-certificate verifier that offers only some signature schemes.
#[derive(Debug)]
struct RestrictedSchemes {
    inner: Arc<dyn ClientCertVerifier>,
    schemes: &'static [SignatureScheme],
}

impl ClientCertVerifier for RestrictedSchemes {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.to_vec()
    }
}

/// One completed TLS handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub conn: usize,
    pub sni: Option<String>,
    /// `x5t#S256` of the client's leaf certificate, if it sent one.
    pub client_thumbprint: Option<String>,
    /// The negotiated protocol version.
    pub version: Option<rustls::ProtocolVersion>,
}

/// What a server records.
#[derive(Debug, Default)]
pub struct Recorder {
    accepts: AtomicUsize,
    failed_handshakes: AtomicUsize,
    handshakes: Mutex<Vec<Handshake>>,
    requests: AtomicUsize,
}

/// A local HTTP(S) server answering by path:
/// - `/echo`: `conn=<n>;cert=<x5t#S256|none>;host=<Host header>`
/// - `/big/<n>`: `n` bytes with a Content-Length
/// - `/chunked/<n>/<chunk>`: `n` bytes, chunked, in frames of `chunk` bytes
/// - `/announce/<n>`: a Content-Length of `n`, then nothing, forever
/// - `/stall`: no answer, ever
/// - `/redirect`: 302 to `https://elsewhere.example/`
pub struct TestServer {
    pub addr: SocketAddr,
    recorder: Arc<Recorder>,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// An HTTPS server with a certificate from `pki`.
    pub async fn https(pki: &Pki, options: ServerOptions<'_>) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = if options.tls12_only {
            &[&rustls::version::TLS12]
        } else if options.tls13_only {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca_der.clone()).unwrap();
        let roots = Arc::new(roots);
        let verifier: Option<Arc<dyn ClientCertVerifier>> = match options.client_auth {
            ClientAuth::Off => None,
            ClientAuth::Optional => Some(
                WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider))
                    .allow_unauthenticated()
                    .build()
                    .unwrap(),
            ),
            ClientAuth::Required => Some(
                WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider))
                    .build()
                    .unwrap(),
            ),
        };
        let verifier = match (verifier, options.client_schemes) {
            (Some(inner), Some(schemes)) => {
                Some(Arc::new(RestrictedSchemes { inner, schemes }) as Arc<dyn ClientCertVerifier>)
            }
            (verifier, _) => verifier,
        };
        let builder = match verifier {
            None => builder.with_no_client_auth(),
            Some(verifier) => builder.with_client_cert_verifier(verifier),
        };
        let (chain, key) = pki.server_cert(options.names);
        let config = builder.with_single_cert(chain, key).unwrap();
        Self::start(Some(TlsAcceptor::from(Arc::new(config)))).await
    }

    /// A plain HTTP server.
    pub async fn http() -> Self {
        Self::start(None).await
    }

    async fn start(tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let recorder = Arc::new(Recorder::default());
        let rec = Arc::clone(&recorder);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let conn = rec.accepts.fetch_add(1, Ordering::SeqCst) + 1;
                let rec = Arc::clone(&rec);
                let tls = tls.clone();
                tokio::spawn(async move { serve(tcp, conn, tls, rec).await });
            }
        });
        Self {
            addr,
            recorder,
            task,
        }
    }

    /// TCP connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.recorder.accepts.load(Ordering::SeqCst)
    }

    /// Completed TLS handshakes so far, in order.
    pub fn handshakes(&self) -> Vec<Handshake> {
        self.recorder.handshakes.lock().unwrap().clone()
    }

    /// TLS handshakes the server failed or refused.
    pub fn failed_handshakes(&self) -> usize {
        self.recorder.failed_handshakes.load(Ordering::SeqCst)
    }

    /// HTTP requests received.
    pub fn requests(&self) -> usize {
        self.recorder.requests.load(Ordering::SeqCst)
    }
}

async fn serve(tcp: TcpStream, conn: usize, tls: Option<TlsAcceptor>, rec: Arc<Recorder>) {
    match tls {
        None => serve_http(TokioIo::new(tcp), conn, None, rec).await,
        Some(acceptor) => {
            let Ok(stream) = acceptor.accept(tcp).await else {
                rec.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                return;
            };
            let (_, session) = stream.get_ref();
            let thumbprint = session
                .peer_certificates()
                .and_then(|certs| certs.first())
                .map(|leaf| fic_oauth_core::thumbprint::x5t_s256(leaf));
            let sni = session.server_name().map(str::to_owned);
            rec.handshakes.lock().unwrap().push(Handshake {
                conn,
                sni,
                client_thumbprint: thumbprint.clone(),
                version: session.protocol_version(),
            });
            serve_http(TokioIo::new(stream), conn, thumbprint, rec).await;
        }
    }
}

async fn serve_http<I>(io: I, conn: usize, thumbprint: Option<String>, rec: Arc<Recorder>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        rec.requests.fetch_add(1, Ordering::SeqCst);
        let thumbprint = thumbprint.clone();
        async move { Ok::<_, Infallible>(respond(&req, conn, thumbprint.as_deref()).await) }
    });
    // Errors (a client hanging up, a TLS alert) end the connection; nothing to record.
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await;
}

async fn respond(
    req: &hyper::Request<hyper::body::Incoming>,
    conn: usize,
    thumbprint: Option<&str>,
) -> hyper::Response<TestBody> {
    let path = req.uri().path();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let number = |i: usize| {
        segments
            .get(i)
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(0)
    };
    match segments[0] {
        "big" => hyper::Response::new(TestBody::Full(Some(Bytes::from(vec![b'a'; number(1)])))),
        "chunked" => hyper::Response::new(TestBody::Chunks {
            remaining: number(1),
            chunk: number(2).max(1),
        }),
        "announce" => hyper::Response::new(TestBody::Stalled {
            announced: number(1) as u64,
        }),
        "stall" => std::future::pending().await,
        "redirect" => hyper::Response::builder()
            .status(302)
            .header("location", "https://elsewhere.example/")
            .body(TestBody::Full(None))
            .unwrap(),
        _ => {
            let host = req
                .headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            let body = format!(
                "conn={conn};cert={};host={host}",
                thumbprint.unwrap_or("none")
            );
            hyper::Response::new(TestBody::Full(Some(Bytes::from(body))))
        }
    }
}

/// Response bodies of the test server.
pub enum TestBody {
    Full(Option<Bytes>),
    Chunks { remaining: usize, chunk: usize },
    Stalled { announced: u64 },
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Self::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Self::Chunks { remaining, chunk } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let n = (*chunk).min(*remaining);
                *remaining -= n;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'c'; n])))))
            }
            Self::Stalled { .. } => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(data) => data.is_none(),
            Self::Chunks { remaining, .. } => *remaining == 0,
            Self::Stalled { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(data)) => SizeHint::with_exact(data.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Chunks { .. } => SizeHint::default(),
            Self::Stalled { announced } => SizeHint::with_exact(*announced),
        }
    }
}

/// A listener that accepts TCP connections and never reads or writes.
pub struct StallingServer {
    pub addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for StallingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StallingServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepts);
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(tcp);
            }
        });
        Self {
            addr,
            accepts,
            task,
        }
    }

    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// A GET request.
pub fn get(uri: &str) -> http::Request<Bytes> {
    http::Request::get(uri).body(Bytes::new()).unwrap()
}

/// Body of a response as text.
pub fn text(response: &http::Response<Bytes>) -> String {
    String::from_utf8(response.body().to_vec()).unwrap()
}

/// The value of `key` in an `/echo` body (`conn=..;cert=..;host=..`).
pub fn field(body: &str, key: &str) -> String {
    body.split(';')
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key} in {body}"))
        .to_owned()
}
