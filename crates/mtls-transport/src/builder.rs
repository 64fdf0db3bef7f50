//! [`MtlsTransportBuilder`]: trust roots, resolver overrides, plain-http policy, timeouts and
//! limits.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use fic_oauth_core::{Error, ErrorCode};
use rustls::crypto::CryptoProvider;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::connector::ConnectorShared;
use crate::pool::{ClientFactory, Pools};
use crate::resolve::{Override, Overrides};
use crate::MtlsTransport;

/// Default connect timeout (name resolution, TCP connect and TLS handshake): 10 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default total timeout of one request, response body included: 30 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default cap on a response body: 1 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1 << 20;
/// Default number of client identities that keep a connection pool: 32.
pub const DEFAULT_MAX_IDENTITIES: usize = 32;
/// Default time an idle pooled connection is kept: 90 s.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Default number of idle connections kept per host and pool: 8.
pub const DEFAULT_POOL_MAX_IDLE_PER_HOST: usize = 8;

/// Configures an [`MtlsTransport`]; start with [`MtlsTransport::builder`].
///
/// The defaults work in production: the Mozilla roots of `webpki-roots`, system DNS, plain
/// `http` only to loopback and link-local hosts, a 10 s connect timeout, a 30 s total timeout,
/// a 1 MiB response cap and up to 32 client identities with their own pools.
#[derive(Debug)]
#[must_use = "call build() to get the transport"]
pub struct MtlsTransportBuilder {
    added_roots: RootCertStore,
    built_in_roots: bool,
    overrides: Overrides,
    error: Option<Error>,
    system_dns: bool,
    allow_plain_http: bool,
    connect_timeout: Duration,
    timeout: Duration,
    max_response_bytes: usize,
    max_identities: usize,
    pool_idle_timeout: Option<Duration>,
    pool_max_idle_per_host: usize,
    provider: Option<Arc<CryptoProvider>>,
}

impl Default for MtlsTransportBuilder {
    fn default() -> Self {
        Self {
            added_roots: RootCertStore::empty(),
            built_in_roots: true,
            overrides: Overrides::default(),
            error: None,
            system_dns: true,
            allow_plain_http: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_identities: DEFAULT_MAX_IDENTITIES,
            pool_idle_timeout: Some(DEFAULT_POOL_IDLE_TIMEOUT),
            pool_max_idle_per_host: DEFAULT_POOL_MAX_IDLE_PER_HOST,
            provider: None,
        }
    }
}

impl MtlsTransportBuilder {
    /// A builder with the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also trusts every `CERTIFICATE` in `pem` (for example the emulator's CA, or a private
    /// CA). Fails with `invalid_certificate` when there is none or one is not a usable CA
    /// certificate.
    pub fn add_root_certificate_pem(mut self, pem: &[u8]) -> Result<Self, Error> {
        let mut found = 0_usize;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|err| {
                Error::new(
                    ErrorCode::INVALID_CERTIFICATE,
                    format!("could not read a PEM root certificate: {err}"),
                )
            })?;
            self.add_root(cert)?;
            found += 1;
        }
        if found == 0 {
            return Err(Error::new(
                ErrorCode::INVALID_CERTIFICATE,
                "the PEM holds no CERTIFICATE section",
            ));
        }
        Ok(self)
    }

    /// Also trusts the DER-encoded certificate `der`. Fails with `invalid_certificate` when it
    /// cannot be parsed as a trust anchor.
    pub fn add_root_certificate_der(mut self, der: &[u8]) -> Result<Self, Error> {
        self.add_root(CertificateDer::from(der.to_vec()))?;
        Ok(self)
    }

    fn add_root(&mut self, cert: CertificateDer<'static>) -> Result<(), Error> {
        self.added_roots.add(cert).map_err(|err| {
            Error::new(
                ErrorCode::INVALID_CERTIFICATE,
                format!("not a usable root certificate: {err}"),
            )
        })
    }

    /// Whether to trust the Mozilla roots of `webpki-roots` (default `true`). With `false`,
    /// only the certificates added with [`add_root_certificate_pem`](Self::add_root_certificate_pem)
    /// or [`add_root_certificate_der`](Self::add_root_certificate_der) are trusted.
    pub fn built_in_roots(mut self, enabled: bool) -> Self {
        self.built_in_roots = enabled;
        self
    }

    /// Sends connections for `host` to `addr` instead of resolving it; SNI, the `Host` header
    /// and certificate verification still use the URL's host name.
    ///
    /// `host` is a host name or IP address (IPv6 in brackets when a port follows), optionally
    /// with `:port`; without a port the entry applies to the scheme's default port (443 for
    /// `https`, 80 for `http`). A host starting with `*.` is a pattern that matches any name
    /// ending in the rest with one or more labels in front: `*.mtlsauth.microsoft.com` matches
    /// `westus3.mtlsauth.microsoft.com`, not `mtlsauth.microsoft.com` nor
    /// `mtlsauth.microsoft.com.evil.com`. Exact names win over patterns, longer patterns over
    /// shorter ones; a later entry for the same host and port replaces an earlier one.
    ///
    /// This is how tests, the demo and private endpoints reach a local server with production
    /// URLs. An invalid entry makes [`build`](Self::build) fail with `invalid_argument`.
    pub fn resolve(mut self, host: &str, addr: SocketAddr) -> Self {
        match Override::parse(host, addr) {
            Ok(entry) => self.overrides.insert(entry),
            Err(err) => {
                if self.error.is_none() {
                    self.error = Some(err);
                }
            }
        }
        self
    }

    /// Adds every `(host, address)` entry of `map` with [`resolve`](Self::resolve) — e.g. an
    /// emulator's resolver map.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use fic_mtls_transport::MtlsTransport;
    ///
    /// let local = SocketAddr::from(([127, 0, 0, 1], 8443));
    /// let map = vec![
    ///     ("login.microsoftonline.com:443".to_string(), local),
    ///     ("*.mtlsauth.microsoft.com:443".to_string(), local),
    /// ];
    /// let transport = MtlsTransport::builder().resolve_all(map).build()?;
    /// # Ok::<(), fic_oauth_core::Error>(())
    /// ```
    pub fn resolve_all(mut self, map: impl IntoIterator<Item = (String, SocketAddr)>) -> Self {
        for (host, addr) in map {
            self = self.resolve(&host, addr);
        }
        self
    }

    /// Whether hosts without a resolver override are looked up in the system resolver
    /// (default `true`). With `false`, only overrides and IP-literal URLs can be reached; any
    /// other host fails with `connection_failed` before a packet is sent.
    pub fn system_dns(mut self, enabled: bool) -> Self {
        self.system_dns = enabled;
        self
    }

    /// Allows plain `http` to any host (default `false`: only to loopback addresses,
    /// `localhost`, and link-local addresses such as IMDS at 169.254.169.254, judged by the
    /// URL's host, not by where an override points). A request with a client identity over
    /// plain `http` is refused either way.
    pub fn allow_plain_http(mut self, allowed: bool) -> Self {
        self.allow_plain_http = allowed;
        self
    }

    /// The time allowed to open a connection: name resolution, TCP connect and TLS handshake
    /// (default 10 s). Passing it fails the request with `timeout`.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The default total time of one request, from sending to the last byte of the response
    /// body (default 30 s); [`TransportRequest::timeout`](fic_oauth_core::TransportRequest)
    /// overrides it per request. Passing it fails the request with `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The largest response body accepted (default 1 MiB). A larger one, or one whose
    /// `Content-Length` announces more, fails with `response_too_large` without being read
    /// further.
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// How many client identities keep their own connection pool (default 32, at least 1).
    /// Using one more drops the pool of the least recently used identity.
    pub fn max_identities(mut self, max: usize) -> Self {
        self.max_identities = max;
        self
    }

    /// How long an idle connection stays in its pool (default 90 s; `None` keeps it until
    /// the server closes it).
    pub fn pool_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// How many idle connections each pool keeps per host (default 8; 0 disables reuse).
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// The rustls crypto provider. By default it is ring with the `ring` feature, else
    /// aws-lc-rs with the `aws-lc-rs` feature, else the process default installed with
    /// [`CryptoProvider::install_default`].
    pub fn crypto_provider(mut self, provider: Arc<CryptoProvider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Builds the transport. Fails with `invalid_argument` for an invalid resolver override,
    /// a zero timeout or identity count, no trust roots at all, or no crypto provider.
    ///
    /// Needs no runtime; the transport must be used within a tokio runtime.
    pub fn build(self) -> Result<MtlsTransport, Error> {
        if let Some(err) = self.error {
            return Err(err);
        }
        let invalid = |message: &str| Error::new(ErrorCode::INVALID_ARGUMENT, message.to_owned());
        if self.connect_timeout.is_zero() || self.timeout.is_zero() {
            return Err(invalid("timeouts must be greater than zero"));
        }
        let max_identities = NonZeroUsize::new(self.max_identities)
            .ok_or_else(|| invalid("max_identities must be at least 1"))?;
        let provider = match self.provider {
            Some(provider) => provider,
            None => default_provider().ok_or_else(|| {
                invalid(
                    "no rustls crypto provider: enable the `ring` or `aws-lc-rs` feature, \
                     install a process default, or pass one to crypto_provider()",
                )
            })?,
        };
        let mut roots = RootCertStore::empty();
        if self.built_in_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        roots.roots.extend(self.added_roots.roots);
        if roots.is_empty() {
            return Err(invalid(
                "no trust roots: add a root certificate or keep the built-in roots",
            ));
        }
        let shared = Arc::new(ConnectorShared {
            overrides: self.overrides,
            connect_timeout: self.connect_timeout,
            system_dns: self.system_dns,
            connections_opened: AtomicU64::new(0),
        });
        let factory = ClientFactory {
            provider,
            roots: Arc::new(roots),
            shared: Arc::clone(&shared),
            pool_idle_timeout: self.pool_idle_timeout,
            pool_max_idle_per_host: self.pool_max_idle_per_host,
        };
        let pools = Pools::new(factory, max_identities)?;
        Ok(MtlsTransport::from_parts(
            pools,
            shared,
            self.allow_plain_http,
            self.timeout,
            self.max_response_bytes,
        ))
    }
}

#[cfg(feature = "ring")]
#[allow(clippy::unnecessary_wraps)] // The signature is shared with the feature-less variant.
fn default_provider() -> Option<Arc<CryptoProvider>> {
    Some(Arc::new(rustls::crypto::ring::default_provider()))
}

#[cfg(all(feature = "aws-lc-rs", not(feature = "ring")))]
#[allow(clippy::unnecessary_wraps)] // The signature is shared with the feature-less variant.
fn default_provider() -> Option<Arc<CryptoProvider>> {
    Some(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

#[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
fn default_provider() -> Option<Arc<CryptoProvider>> {
    CryptoProvider::get_default().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_settings_fail_at_build() {
        let err = MtlsTransportBuilder::new()
            .resolve(
                "login.microsoftonline.com:https",
                SocketAddr::from(([127, 0, 0, 1], 1)),
            )
            .build()
            .unwrap_err();
        assert_eq!(err.code(), &ErrorCode::INVALID_ARGUMENT);
        assert!(
            err.message().contains("login.microsoftonline.com:https"),
            "{err}"
        );

        let err = MtlsTransportBuilder::new()
            .max_identities(0)
            .build()
            .unwrap_err();
        assert_eq!(err.code(), &ErrorCode::INVALID_ARGUMENT);
        let err = MtlsTransportBuilder::new()
            .timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err.code(), &ErrorCode::INVALID_ARGUMENT);
        let err = MtlsTransportBuilder::new()
            .built_in_roots(false)
            .build()
            .unwrap_err();
        assert_eq!(err.code(), &ErrorCode::INVALID_ARGUMENT);
    }

    #[test]
    fn bad_root_certificates_are_refused() {
        let err = MtlsTransportBuilder::new()
            .add_root_certificate_pem(b"no pem here")
            .unwrap_err();
        assert_eq!(err.code(), &ErrorCode::INVALID_CERTIFICATE);
        let err = MtlsTransportBuilder::new()
            .add_root_certificate_pem(
                b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            )
            .unwrap_err();
        assert_eq!(err.code(), &ErrorCode::INVALID_CERTIFICATE);
        let err = MtlsTransportBuilder::new()
            .add_root_certificate_der(&[0x30, 0x03, 0x02, 0x01, 0x01])
            .unwrap_err();
        assert_eq!(err.code(), &ErrorCode::INVALID_CERTIFICATE);
    }

    #[test]
    fn defaults_build() {
        let transport = MtlsTransportBuilder::new().build().unwrap();
        assert_eq!(transport.identity_pool_count(), 0);
        assert_eq!(transport.connections_opened(), 0);
    }
}
