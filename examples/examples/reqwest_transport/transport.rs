//! A second [`HttpTransport`]: reqwest with rustls (ring), presenting client identities through
//! `fic_mtls_transport::tls` so the private key never leaves its `SigningKey`.
//!
//! - **One `reqwest::Client` per client identity.** reqwest's client certificate is
//!   client-wide, so each identity (keyed by its `x5t#S256`) gets a client of its own, built
//!   with [`tls_backend_preconfigured`](reqwest::ClientBuilder::tls_backend_preconfigured) from a
//!   rustls `ClientConfig` whose client-certificate resolver is
//!   [`IdentityCertResolver`]: rustls asks the identity's key to sign the handshake, no key
//!   bytes are exported. Requests without an identity use a client with no client
//!   certificate. At most `max_identities` clients are kept (least recently used dropped).
//! - **Trust**: the CAs added to the builder, plus the Mozilla roots of `webpki-roots` unless
//!   turned off. The crypto provider is ring's, passed explicitly (reqwest's
//!   `rustls-no-provider` feature: no aws-lc-rs, no process-wide default needed).
//! - **Resolver overrides**: `host[:port]` patterns go to reqwest's
//!   [`resolve`](reqwest::ClientBuilder::resolve) (reqwest overrides a name on every port);
//!   `*.suffix[:port]` patterns to a small DNS resolver that matches suffixes and asks the
//!   system for other names. reqwest never resolves IP-literal hosts, so an override for one
//!   (`169.254.169.254:80`) cannot be honoured: such requests are refused rather than sent to
//!   the real address.
//! - **No redirects** are followed (a 3xx is the response), no proxy is used, HTTP/1.1 only.
//! - **Failing loudly**: a request with an identity is never sent without it: over plain
//!   `http` it is `insecure_transport`, and an identity whose key has no TLS signature scheme
//!   fails with `invalid_certificate` before anything is sent. Plain `http` goes only to
//!   loopback and link-local hosts.
//! - **Errors** carry oauth-core's codes: `tls_handshake_failed` (a rustls error anywhere in
//!   the chain), `timeout`, `connection_failed` (refused, unreachable, DNS),
//!   `response_too_large`, `transport_error` otherwise. Messages name `scheme://host:port`,
//!   never a path, header or body.

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use fic_mtls_transport::tls::IdentityCertResolver;
use fic_oauth_core::{ClientIdentity, Error, ErrorCode, HttpTransport, TransportRequest};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;

/// The total timeout of a request, unless the request sets its own.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The connect timeout (TCP + TLS handshake).
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest response body accepted.
pub(crate) const DEFAULT_MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// How many per-identity clients are kept.
pub(crate) const DEFAULT_MAX_IDENTITIES: usize = 16;

/// Builds a [`ReqwestTransport`].
pub(crate) struct ReqwestTransportBuilder {
    roots: rustls::RootCertStore,
    built_in_roots: bool,
    overrides: Vec<(String, SocketAddr)>,
    timeout: Duration,
    connect_timeout: Duration,
    max_response_bytes: usize,
    max_identities: usize,
}

impl fmt::Debug for ReqwestTransportBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqwestTransportBuilder")
            .field("added_roots", &self.roots.len())
            .field("built_in_roots", &self.built_in_roots)
            .field("overrides", &self.overrides)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ReqwestTransportBuilder {
    /// Trusts the Mozilla roots too (default `true`).
    #[must_use]
    pub(crate) fn built_in_roots(mut self, on: bool) -> Self {
        self.built_in_roots = on;
        self
    }

    /// Trusts every certificate of a PEM text.
    pub(crate) fn add_root_certificate_pem(mut self, pem: &[u8]) -> Result<Self, Error> {
        let mut added = 0;
        for certificate in CertificateDer::pem_slice_iter(pem) {
            let certificate = certificate.map_err(|e| {
                Error::new(
                    ErrorCode::INVALID_CERTIFICATE,
                    format!("a root certificate is not valid PEM: {e}"),
                )
            })?;
            self.roots.add(certificate).map_err(|e| {
                Error::new(
                    ErrorCode::INVALID_CERTIFICATE,
                    format!("a root certificate was refused: {e}"),
                )
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(Error::new(
                ErrorCode::INVALID_CERTIFICATE,
                "no certificate in the PEM text",
            ));
        }
        Ok(self)
    }

    /// Sends `pattern` (`host`, `host:port`, `*.suffix`, `*.suffix:port`) to `addr`.
    #[must_use]
    pub(crate) fn resolve(mut self, pattern: &str, addr: SocketAddr) -> Self {
        self.overrides.push((pattern.to_ascii_lowercase(), addr));
        self
    }

    /// The total timeout of a request (default 30 s).
    #[must_use]
    pub(crate) fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The connect timeout (default 10 s).
    #[must_use]
    pub(crate) fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The largest response body accepted (default 1 MiB).
    #[must_use]
    pub(crate) fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// How many per-identity clients are kept (default 16, at least 1).
    #[must_use]
    pub(crate) fn max_identities(mut self, max: usize) -> Self {
        self.max_identities = max.max(1);
        self
    }

    /// The transport.
    pub(crate) fn build(self) -> Result<ReqwestTransport, Error> {
        let mut roots = self.roots;
        if self.built_in_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        let mut exact = Vec::new();
        let mut wildcard = Vec::new();
        let mut ip_literals = Vec::new();
        for (pattern, addr) in self.overrides {
            let host = host_of_pattern(&pattern);
            if let Some(suffix) = host.strip_prefix('*') {
                wildcard.push((suffix.to_string(), addr));
            } else if parse_ip(host).is_some() {
                ip_literals.push(host.trim_matches(['[', ']']).to_string());
            } else {
                exact.push((host.to_string(), addr));
            }
        }
        let shared = Shared {
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            roots: Arc::new(roots),
            exact,
            wildcard: Arc::new(wildcard),
            connect_timeout: self.connect_timeout,
        };
        let anonymous = shared.client(None)?;
        Ok(ReqwestTransport {
            inner: Arc::new(Inner {
                shared,
                anonymous,
                identities: Mutex::new(VecDeque::new()),
                ip_literals,
                timeout: self.timeout,
                max_response_bytes: self.max_response_bytes,
                max_identities: self.max_identities,
            }),
        })
    }
}

/// The host part of an override pattern (`host`, `host:port`, `[v6]:port`).
fn host_of_pattern(pattern: &str) -> &str {
    if pattern.starts_with('[') {
        return pattern.split_once(']').map_or(pattern, |(h, _)| &h[1..]);
    }
    match pattern.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => host,
        _ => pattern,
    }
}

fn parse_ip(host: &str) -> Option<IpAddr> {
    host.trim_matches(['[', ']']).parse().ok()
}

/// An [`HttpTransport`] on reqwest + rustls (ring); see the module documentation. Clones share
/// the clients.
#[derive(Clone)]
pub(crate) struct ReqwestTransport {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Shared,
    anonymous: reqwest::Client,
    /// Most recently used first: (`x5t#S256`, client).
    identities: Mutex<VecDeque<(String, reqwest::Client)>>,
    ip_literals: Vec<String>,
    timeout: Duration,
    max_response_bytes: usize,
    max_identities: usize,
}

/// What every client is built from.
struct Shared {
    provider: Arc<rustls::crypto::CryptoProvider>,
    roots: Arc<rustls::RootCertStore>,
    exact: Vec<(String, SocketAddr)>,
    wildcard: Arc<Vec<(String, SocketAddr)>>,
    connect_timeout: Duration,
}

impl Shared {
    /// A reqwest client presenting `identity` (or no client certificate).
    fn client(&self, identity: Option<&ClientIdentity>) -> Result<reqwest::Client, Error> {
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| {
                Error::new(
                    ErrorCode::TRANSPORT,
                    format!("the TLS configuration was refused: {e}"),
                )
            })?
            .with_root_certificates(Arc::clone(&self.roots));
        let mut config = match identity {
            // The key stays behind the identity's SigningKey: rustls asks it to sign.
            Some(identity) => {
                builder.with_client_cert_resolver(Arc::new(IdentityCertResolver::new(identity)?))
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];

        let mut client = reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .http1_only()
            .connect_timeout(self.connect_timeout);
        for (host, addr) in &self.exact {
            client = client.resolve(host, *addr);
        }
        if !self.wildcard.is_empty() {
            client = client.dns_resolver(Arc::new(SuffixResolver {
                suffixes: Arc::clone(&self.wildcard),
            }));
        }
        client.build().map_err(|e| {
            Error::new(
                ErrorCode::TRANSPORT,
                format!("the reqwest client could not be built: {}", describe(&e)),
            )
        })
    }
}

/// Resolves `*.suffix` overrides; other names through the system resolver.
struct SuffixResolver {
    suffixes: Arc<Vec<(String, SocketAddr)>>,
}

impl reqwest::dns::Resolve for SuffixResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        let hit = self
            .suffixes
            .iter()
            .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            .map(|(_, addr)| *addr);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match hit {
                Some(addr) => vec![addr],
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

impl fmt::Debug for ReqwestTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqwestTransport")
            .field("identity_clients", &self.identity_clients())
            .field("exact_overrides", &self.inner.shared.exact.len())
            .field("wildcard_overrides", &self.inner.shared.wildcard.len())
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// Where a request goes, for checks and messages (no path, no query).
struct Target {
    https: bool,
    host: String,
    port: u16,
}

impl Target {
    fn of(uri: &http::Uri) -> Result<Self, Error> {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(Error::new(
                    ErrorCode::INVALID_ARGUMENT,
                    "only absolute http and https URLs can be sent",
                ))
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| Error::new(ErrorCode::INVALID_ARGUMENT, "the URL has no host"))?
            .trim_matches(['[', ']'])
            .to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(Self { https, host, port })
    }

    fn is_local(&self) -> bool {
        self.host == "localhost"
            || parse_ip(&self.host).is_some_and(|ip| match ip.to_canonical() {
                IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local(),
                IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xffc0) == 0xfe80,
            })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl ReqwestTransport {
    /// A builder: Mozilla roots, no overrides, the default limits.
    pub(crate) fn builder() -> ReqwestTransportBuilder {
        ReqwestTransportBuilder {
            roots: rustls::RootCertStore::empty(),
            built_in_roots: true,
            overrides: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_identities: DEFAULT_MAX_IDENTITIES,
        }
    }

    /// The production defaults.
    pub(crate) fn new() -> Result<Self, Error> {
        Self::builder().build()
    }

    /// The `x5t#S256` of the identities that have a client, most recently used first.
    pub(crate) fn identity_clients(&self) -> Vec<String> {
        self.inner
            .identities
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(thumbprint, _)| thumbprint.clone())
            .collect()
    }

    /// The client of `identity` (built on first use), or the identity-less one.
    fn client_for(&self, identity: Option<&ClientIdentity>) -> Result<reqwest::Client, Error> {
        let Some(identity) = identity else {
            return Ok(self.inner.anonymous.clone());
        };
        let thumbprint = identity.thumbprint_s256();
        {
            let mut clients = self
                .inner
                .identities
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(index) = clients.iter().position(|(t, _)| t == thumbprint) {
                let entry = clients.remove(index);
                if let Some((t, client)) = entry {
                    clients.push_front((t, client.clone()));
                    return Ok(client);
                }
            }
        }
        // Built outside the lock; a racing builder's client is simply replaced.
        let client = self.inner.shared.client(Some(identity))?;
        let mut clients = self
            .inner
            .identities
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        clients.retain(|(t, _)| t != thumbprint);
        clients.push_front((thumbprint.to_string(), client.clone()));
        clients.truncate(self.inner.max_identities);
        Ok(client)
    }

    /// Refuses what must not be sent: plain `http` with an identity or to a non-local host,
    /// and IP-literal hosts reqwest cannot redirect.
    fn check(&self, target: &Target, has_identity: bool) -> Result<(), Error> {
        if !target.https && has_identity {
            return Err(Error::new(
                ErrorCode::INSECURE_TRANSPORT,
                format!("a client certificate cannot be presented over plain http ({target})"),
            ));
        }
        if !target.https && !target.is_local() {
            return Err(Error::new(
                ErrorCode::INSECURE_TRANSPORT,
                format!("plain http is only sent to loopback and link-local hosts, not {target}"),
            ));
        }
        if self.inner.ip_literals.contains(&target.host) {
            return Err(Error::new(
                ErrorCode::TRANSPORT,
                format!(
                    "{target} has a resolver override, but reqwest does not resolve IP-literal hosts: not sent"
                ),
            ));
        }
        Ok(())
    }

    async fn exchange(
        &self,
        client: &reqwest::Client,
        request: reqwest::Request,
        target: &Target,
    ) -> Result<http::Response<Bytes>, Error> {
        let mut response = client
            .execute(request)
            .await
            .map_err(|e| classify(e, target))?;
        let limit = self.inner.max_response_bytes;
        if let Some(announced) = response.content_length() {
            if announced > u64::try_from(limit).unwrap_or(u64::MAX) {
                return Err(too_large(target, limit));
            }
        }
        let mut builder = http::Response::builder()
            .status(response.status())
            .version(response.version());
        if let Some(headers) = builder.headers_mut() {
            headers.clone_from(response.headers());
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| classify(e, target))? {
            if chunk.len() > limit - body.len() {
                return Err(too_large(target, limit));
            }
            body.extend_from_slice(&chunk);
        }
        builder.body(body.freeze()).map_err(|e| {
            Error::new(
                ErrorCode::TRANSPORT,
                format!("the response from {target} could not be rebuilt: {e}"),
            )
        })
    }
}

#[async_trait]
impl HttpTransport for ReqwestTransport {
    async fn send(&self, request: TransportRequest) -> Result<http::Response<Bytes>, Error> {
        let TransportRequest {
            request,
            identity,
            timeout,
            ..
        } = request;
        let target = Target::of(request.uri())?;
        self.check(&target, identity.is_some())?;
        // Fails (invalid_certificate) for an identity it cannot present: nothing is sent.
        let client = self.client_for(identity.as_ref())?;
        let (mut parts, body) = request.into_parts();
        parts.version = http::Version::HTTP_11;
        let request =
            reqwest::Request::try_from(http::Request::from_parts(parts, body)).map_err(|e| {
                Error::new(
                    ErrorCode::INVALID_ARGUMENT,
                    format!(
                        "the request to {target} cannot be sent: {}",
                        describe(&e.without_url())
                    ),
                )
            })?;
        let total = timeout.unwrap_or(self.inner.timeout);
        match tokio::time::timeout(total, self.exchange(&client, request, &target)).await {
            Ok(result) => result,
            Err(_) => Err(Error::new(
                ErrorCode::TIMEOUT,
                format!(
                    "request to {target} did not complete within {} ms",
                    total.as_millis()
                ),
            )
            .with_retryable(true)),
        }
    }
}

/// The error chain, looking inside `io::Error`s (whose `source` skips the wrapped error).
fn chain<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(err), |&e| {
        match e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        }
    })
}

/// The chain's messages, joined with `": "`.
fn describe(err: &(dyn StdError + 'static)) -> String {
    let mut out = String::new();
    for e in chain(err) {
        let text = e.to_string();
        if text.is_empty() || out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Maps a reqwest failure to oauth-core's transport codes (the URL is dropped first: its path
/// and query stay out of the message).
fn classify(err: reqwest::Error, target: &Target) -> Error {
    let err = err.without_url();
    let tls = chain(&err).any(<dyn StdError>::is::<rustls::Error>);
    let (code, retryable) = if tls {
        (ErrorCode::TLS_HANDSHAKE_FAILED, false)
    } else if err.is_timeout() {
        (ErrorCode::TIMEOUT, true)
    } else if err.is_connect() {
        (ErrorCode::CONNECTION_FAILED, true)
    } else {
        (ErrorCode::TRANSPORT, true)
    };
    Error::new(
        code,
        format!("request to {target} failed: {}", describe(&err)),
    )
    .with_retryable(retryable)
    .with_source(err)
}

fn too_large(target: &Target, limit: usize) -> Error {
    Error::new(
        ErrorCode::RESPONSE_TOO_LARGE,
        format!("the response from {target} is larger than the limit of {limit} bytes"),
    )
}
