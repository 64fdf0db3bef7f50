//! The transport of the Service Fabric source: HTTPS to the cluster's local token endpoint,
//! whose certificate is usually self-signed and pinned by the SHA-1 thumbprint in
//! `IDENTITY_SERVER_THUMBPRINT`.
//!
//! The server certificate is accepted when it chains to a trusted root (the Mozilla roots and
//! any added CA) for the URL's host, **or** when the SHA-1 of its DER equals the pinned
//! thumbprint (compared in constant time). Either way rustls still verifies the handshake
//! signature with the certificate's key, so the peer must hold that key. No client certificate
//! is ever presented, plain http is refused, and each request uses a fresh connection (tokens
//! are cached, so this endpoint is called rarely).
//!
//! `fic-mtls-transport` has no pinning option (see the crate docs); this small transport keeps
//! the pinning verifier local until it has one.
//!
//! ```
//! use fic_managed_identity::service_fabric::ServiceFabricTransport;
//!
//! # fn main() -> Result<(), fic_oauth_core::Error> {
//! # // Without the crypto features the transport uses the process-default provider.
//! # #[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
//! # let _ = rustls::crypto::ring::default_provider().install_default();
//! let transport = ServiceFabricTransport::builder("3A:5B:62:1C:D8:8E:47:0F:9A:6B:2D:4E:5F:70:81:92:A3:B4:C5:D6")
//!     .timeout(std::time::Duration::from_secs(20))
//!     .build()?;
//! # let _ = transport;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fic_oauth_core::{Error, ErrorCode, HttpTransport, TransportRequest};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha1::{Digest as _, Sha1};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default total timeout of a request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The default largest response body.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Parses a SHA-1 thumbprint: 40 hex digits, case-insensitive; `:` and white space are
/// ignored (as Windows and `openssl x509 -fingerprint` print them).
///
/// ```
/// use fic_managed_identity::service_fabric::parse_thumbprint;
///
/// let pin = parse_thumbprint("a9:99:3e:36:47:06:81:6a:ba:3e:25:71:78:50:c2:6c:9c:d0:d8:9d")?;
/// assert_eq!(pin[0], 0xa9);
/// assert!(parse_thumbprint("a9993e").is_err());
/// # Ok::<(), fic_oauth_core::Error>(())
/// ```
pub fn parse_thumbprint(value: &str) -> Result<[u8; 20], Error> {
    let invalid = || {
        Error::new(
            ErrorCode::INVALID_ARGUMENT,
            "IDENTITY_SERVER_THUMBPRINT must be a SHA-1 thumbprint: 40 hexadecimal digits",
        )
    };
    let digits: Vec<u8> = value
        .bytes()
        .filter(|b| *b != b':' && !b.is_ascii_whitespace())
        .collect();
    if digits.len() != 40 {
        return Err(invalid());
    }
    let nibble = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    let mut out = [0u8; 20];
    for (slot, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *slot =
            (nibble(pair[0]).ok_or_else(invalid)? << 4) | nibble(pair[1]).ok_or_else(invalid)?;
    }
    Ok(out)
}

/// Compares a digest with the pin without branching on the bytes.
fn constant_time_eq(pin: &[u8; 20], digest: &[u8]) -> bool {
    if digest.len() != pin.len() {
        return false;
    }
    let difference = pin
        .iter()
        .zip(digest)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(difference) == 0
}

/// Accepts a server certificate that chains to a trusted root, or whose SHA-1 is the pin.
#[derive(Debug)]
struct PinnedVerifier {
    chained: Option<Arc<WebPkiServerVerifier>>,
    pin: [u8; 20],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(chained) = &self.chained {
            if chained
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .is_ok()
            {
                return Ok(ServerCertVerified::assertion());
            }
        }
        let digest = Sha1::digest(end_entity.as_ref());
        if constant_time_eq(&self.pin, &digest) {
            tracing::debug!(
                "the Service Fabric endpoint's certificate matches the pinned thumbprint"
            );
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(feature = "ring")]
#[allow(clippy::unnecessary_wraps)] // The signature is shared with the other variants.
fn default_provider() -> Option<Arc<CryptoProvider>> {
    Some(Arc::new(rustls::crypto::ring::default_provider()))
}

#[cfg(all(feature = "aws-lc-rs", not(feature = "ring")))]
#[allow(clippy::unnecessary_wraps)] // The signature is shared with the other variants.
fn default_provider() -> Option<Arc<CryptoProvider>> {
    Some(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

#[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
fn default_provider() -> Option<Arc<CryptoProvider>> {
    CryptoProvider::get_default().cloned()
}

/// Builds a [`ServiceFabricTransport`].
pub struct ServiceFabricTransportBuilder {
    pin: Result<[u8; 20], Error>,
    built_in_roots: bool,
    roots: RootCertStore,
    error: Option<Error>,
    overrides: HashMap<(String, Option<u16>), SocketAddr>,
    connect_timeout: Duration,
    timeout: Duration,
    max_response_bytes: usize,
    provider: Option<Arc<CryptoProvider>>,
}

impl fmt::Debug for ServiceFabricTransportBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceFabricTransportBuilder")
            .field("pin_valid", &self.pin.is_ok())
            .field("built_in_roots", &self.built_in_roots)
            .field("added_roots", &self.roots.len())
            .field("overrides", &self.overrides.len())
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ServiceFabricTransportBuilder {
    /// Whether certificates chaining to the Mozilla roots are accepted too (default true).
    #[must_use]
    pub fn built_in_roots(mut self, enabled: bool) -> Self {
        self.built_in_roots = enabled;
        self
    }

    /// Trusts a CA (DER) besides the pin.
    #[must_use]
    pub fn add_root_certificate_der(mut self, der: &[u8]) -> Self {
        if let Err(e) = self.roots.add(CertificateDer::from(der.to_vec())) {
            self.error = Some(Error::new(
                ErrorCode::INVALID_CERTIFICATE,
                format!("the root certificate cannot be used: {e}"),
            ));
        }
        self
    }

    /// Connects to `addr` for `host` (`"host"` for any port, or `"host:port"`), as
    /// `fic-mtls-transport`'s resolver overrides do; SNI and verification keep using the host.
    #[must_use]
    pub fn resolve(mut self, host: &str, addr: SocketAddr) -> Self {
        let (name, port) = match host.rsplit_once(':') {
            Some((name, port)) if !name.contains(':') => {
                let Ok(port) = port.parse::<u16>() else {
                    self.error = Some(Error::new(
                        ErrorCode::INVALID_ARGUMENT,
                        format!("invalid resolver override {host:?}"),
                    ));
                    return self;
                };
                (name, Some(port))
            }
            _ => (host, None),
        };
        self.overrides.insert(
            (name.trim_matches(['[', ']']).to_ascii_lowercase(), port),
            addr,
        );
        self
    }

    /// The connect timeout (TCP and TLS handshake).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The total timeout of a request (overridden by [`TransportRequest::timeout`]).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The largest response body accepted.
    #[must_use]
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// The rustls crypto provider (default: ring, or aws-lc-rs with only that feature).
    #[must_use]
    pub fn crypto_provider(mut self, provider: Arc<CryptoProvider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// The transport.
    pub fn build(self) -> Result<ServiceFabricTransport, Error> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let pin = self.pin?;
        if self.connect_timeout.is_zero() || self.timeout.is_zero() {
            return Err(Error::new(
                ErrorCode::INVALID_ARGUMENT,
                "timeouts must be greater than zero",
            ));
        }
        let provider = self.provider.or_else(default_provider).ok_or_else(|| {
            Error::new(
                ErrorCode::INVALID_ARGUMENT,
                "no rustls crypto provider: enable the `ring` or `aws-lc-rs` feature",
            )
        })?;
        let mut roots = self.roots;
        if self.built_in_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        let chained = if roots.is_empty() {
            None
        } else {
            Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| Error::new(ErrorCode::INVALID_ARGUMENT, e.to_string()))?,
            )
        };
        let verifier = Arc::new(PinnedVerifier {
            chained,
            pin,
            algorithms: provider.signature_verification_algorithms,
        });
        let tls = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| Error::new(ErrorCode::INVALID_ARGUMENT, e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(ServiceFabricTransport {
            inner: Arc::new(Inner {
                tls: Arc::new(tls),
                overrides: self.overrides,
                connect_timeout: self.connect_timeout,
                timeout: self.timeout,
                max_response_bytes: self.max_response_bytes,
            }),
        })
    }
}

/// An [`HttpTransport`] for Service Fabric's local token endpoint: HTTPS only, the server
/// certificate trusted through a root or the pinned SHA-1 thumbprint, no client certificate.
#[derive(Clone)]
pub struct ServiceFabricTransport {
    inner: Arc<Inner>,
}

struct Inner {
    tls: Arc<ClientConfig>,
    overrides: HashMap<(String, Option<u16>), SocketAddr>,
    connect_timeout: Duration,
    timeout: Duration,
    max_response_bytes: usize,
}

impl fmt::Debug for ServiceFabricTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceFabricTransport")
            .field("overrides", &self.inner.overrides.len())
            .field("connect_timeout", &self.inner.connect_timeout)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl ServiceFabricTransport {
    /// A builder pinning `thumbprint` (see [`parse_thumbprint`]).
    pub fn builder(thumbprint: &str) -> ServiceFabricTransportBuilder {
        ServiceFabricTransportBuilder {
            pin: parse_thumbprint(thumbprint),
            built_in_roots: true,
            roots: RootCertStore::empty(),
            error: None,
            overrides: HashMap::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            provider: None,
        }
    }

    /// A transport pinning `thumbprint`, with the defaults.
    pub fn new(thumbprint: &str) -> Result<Self, Error> {
        Self::builder(thumbprint).build()
    }

    async fn exchange(
        &self,
        request: http::Request<Bytes>,
        host: &str,
        port: u16,
        target: &str,
    ) -> Result<http::Response<Bytes>, Error> {
        let addrs = self.resolve(host, port, target).await?;
        let connect = async {
            let mut last = None;
            for addr in &addrs {
                match TcpStream::connect(addr).await {
                    Ok(tcp) => return Ok(tcp),
                    Err(e) => last = Some(e),
                }
            }
            Err(last)
        };
        let tcp = match tokio::time::timeout(self.inner.connect_timeout, connect).await {
            Err(_) => return Err(timed_out(target, self.inner.connect_timeout)),
            Ok(Err(e)) => {
                let message = format!("could not connect to {target}");
                let err = Error::new(ErrorCode::CONNECTION_FAILED, message);
                return Err(match e {
                    Some(e) => err.with_source(e),
                    None => err,
                });
            }
            Ok(Ok(tcp)) => tcp,
        };
        let _ = tcp.set_nodelay(true);
        let name = match host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.to_owned()).map_err(|_| {
                Error::new(
                    ErrorCode::INVALID_ARGUMENT,
                    format!("{target}: the host is not a valid TLS server name"),
                )
            })?,
        };
        let handshake = TlsConnector::from(Arc::clone(&self.inner.tls)).connect(name, tcp);
        let tls = match tokio::time::timeout(self.inner.connect_timeout, handshake).await {
            Err(_) => return Err(timed_out(target, self.inner.connect_timeout)),
            Ok(Err(e)) => {
                return Err(Error::new(
                    ErrorCode::TLS_HANDSHAKE_FAILED,
                    format!(
                        "TLS handshake with {target} failed: the server certificate chains to no trusted root and its SHA-1 thumbprint is not IDENTITY_SERVER_THUMBPRINT, or the handshake broke ({e})"
                    ),
                )
                .with_source(e))
            }
            Ok(Ok(tls)) => tls,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| transport_error(target, &e))?;
        tokio::spawn(async move {
            // The connection ends with the exchange; its errors surface through the request.
            let _ = connection.await;
        });
        let (mut parts, body) = request.into_parts();
        let authority = parts
            .uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str)
            .to_owned();
        parts.uri = path.parse().map_err(|_| {
            Error::new(
                ErrorCode::INVALID_ARGUMENT,
                format!("{target}: invalid path"),
            )
        })?;
        parts.version = http::Version::HTTP_11;
        let host_value = http::HeaderValue::from_str(&authority).map_err(|_| {
            Error::new(
                ErrorCode::INVALID_ARGUMENT,
                format!("{target}: invalid host"),
            )
        })?;
        parts.headers.insert(http::header::HOST, host_value);
        let response = sender
            .send_request(http::Request::from_parts(parts, Full::new(body)))
            .await
            .map_err(|e| transport_error(target, &e))?;
        let (parts, body) = response.into_parts();
        let collected = Limited::new(body, self.inner.max_response_bytes)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    Error::new(
                        ErrorCode::RESPONSE_TOO_LARGE,
                        format!(
                            "the response of {target} is larger than {} bytes",
                            self.inner.max_response_bytes
                        ),
                    )
                } else {
                    Error::new(
                        ErrorCode::TRANSPORT,
                        format!("reading the response of {target} failed: {e}"),
                    )
                }
            })?;
        Ok(http::Response::from_parts(parts, collected.to_bytes()))
    }

    async fn resolve(&self, host: &str, port: u16, target: &str) -> Result<Vec<SocketAddr>, Error> {
        let key = host.to_ascii_lowercase();
        if let Some(addr) = self
            .inner
            .overrides
            .get(&(key.clone(), Some(port)))
            .or_else(|| self.inner.overrides.get(&(key, None)))
        {
            return Ok(vec![*addr]);
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| {
                Error::new(
                    ErrorCode::CONNECTION_FAILED,
                    format!("could not resolve {target}"),
                )
                .with_source(e)
            })?
            .collect();
        if addrs.is_empty() {
            return Err(Error::new(
                ErrorCode::CONNECTION_FAILED,
                format!("{target} resolved to no address"),
            ));
        }
        Ok(addrs)
    }
}

fn timed_out(target: &str, after: Duration) -> Error {
    Error::new(
        ErrorCode::TIMEOUT,
        format!("{target} did not answer within {} ms", after.as_millis()),
    )
    .with_retryable(true)
}

fn transport_error(target: &str, error: &hyper::Error) -> Error {
    Error::new(
        ErrorCode::TRANSPORT,
        format!("the HTTP exchange with {target} failed: {error}"),
    )
}

#[async_trait]
impl HttpTransport for ServiceFabricTransport {
    async fn send(&self, request: TransportRequest) -> Result<http::Response<Bytes>, Error> {
        let TransportRequest {
            request,
            identity,
            timeout,
            ..
        } = request;
        if identity.is_some() {
            return Err(Error::new(
                ErrorCode::INSECURE_TRANSPORT,
                "the Service Fabric transport never presents a client certificate",
            ));
        }
        let uri = request.uri();
        if uri.scheme_str() != Some("https") {
            return Err(Error::new(
                ErrorCode::INSECURE_TRANSPORT,
                "the Service Fabric endpoint must be called over https",
            ));
        }
        let host = uri
            .host()
            .map(|h| h.trim_matches(['[', ']']).to_owned())
            .filter(|h| !h.is_empty())
            .ok_or_else(|| Error::new(ErrorCode::INVALID_ARGUMENT, "the URL has no host"))?;
        let port = uri.port_u16().unwrap_or(443);
        let target = format!(
            "https://{}",
            uri.authority().map_or("", http::uri::Authority::as_str)
        );
        let timeout = timeout.unwrap_or(self.inner.timeout);
        match tokio::time::timeout(timeout, self.exchange(request, &host, port, &target)).await {
            Ok(result) => result,
            Err(_) => Err(timed_out(&target, timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_parse_and_compare() {
        let pin = parse_thumbprint("A9993E364706816ABA3E25717850C26C9CD0D89D").unwrap();
        assert_eq!(
            pin,
            parse_thumbprint("a9 99 3e 36 47 06 81 6a ba 3e 25 71 78 50 c2 6c 9c d0 d8 9d")
                .unwrap()
        );
        assert!(constant_time_eq(&pin, &Sha1::digest(b"abc")));
        assert!(!constant_time_eq(&pin, &Sha1::digest(b"abd")));
        assert!(!constant_time_eq(&pin, &pin[..19]));
        for bad in [
            "",
            "A9993E",
            "Z9993E364706816ABA3E25717850C26C9CD0D89D",
            "A9993E364706816ABA3E25717850C26C9CD0D89D00",
        ] {
            assert_eq!(
                parse_thumbprint(bad).unwrap_err().code(),
                &ErrorCode::INVALID_ARGUMENT,
                "{bad}"
            );
        }
    }
}
