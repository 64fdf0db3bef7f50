//! # fic-mtls-transport
//!
//! The [`HttpTransport`] of fic-rs: hyper-util's pooled HTTP/1.1 client on tokio and rustls,
//! able to present a TLS client certificate (mTLS, RFC 8705) per request.
//!
//! - **Client identities.** A [`ClientIdentity`] is presented only on the requests that
//!   carry it ([`TransportRequest::identity`]). Its key stays behind oauth-core's
//!   [`SigningKey`](fic_oauth_core::SigningKey) (see [`tls`]); rustls asks it to sign the
//!   handshake and never sees the key bytes. Each identity gets its own connection pool and
//!   rustls configuration (at most [`max_identities`](MtlsTransportBuilder::max_identities)
//!   pools, least recently used dropped first), and requests without an identity use a pool
//!   of their own, so a connection authenticated as one identity never carries another's
//!   request, and TLS sessions are never resumed across identities. An identity is its
//!   certificate's `x5t#S256` *and* its key object (the same `Arc` of the
//!   [`SigningKey`](fic_oauth_core::SigningKey)) *and* its chain, not merely the (public)
//!   certificate: another key object for that certificate (a second load of the same
//!   certificate file, a reopened HSM handle, or a wrong key) gets a pool of its own next to
//!   the first, and never rides on the first one's connections. Each such pool counts against
//!   `max_identities`; share one key object (clones of a [`ClientIdentity`] do) to keep a
//!   single pool.
//! - **The certificate is presented or the request fails.** When a server asks for a client
//!   certificate and accepts none of the key's signature schemes, the handshake fails with
//!   `tls_handshake_failed` ("... cannot present its certificate ...") instead of going on
//!   without the certificate; an identity whose key signs RSA PKCS#1 v1.5 only (not allowed
//!   in TLS 1.3) is offered over TLS 1.2 only.
//! - **Trust.** The built-in roots are the Mozilla set compiled into `webpki-roots`, not the
//!   operating system's store (so a CA installed on the machine is *not* trusted by default).
//!   Add a private or corporate CA with
//!   [`add_root_certificate_pem`](MtlsTransportBuilder::add_root_certificate_pem) or
//!   [`add_root_certificate_der`](MtlsTransportBuilder::add_root_certificate_der) (it is
//!   trusted in addition to the Mozilla roots), and turn the built-in set off with
//!   [`built_in_roots(false)`](MtlsTransportBuilder::built_in_roots) to trust only your own.
//!   TLS 1.2 minimum.
//! - **Resolver overrides.** `host[:port]` or `*.suffix[:port]` → socket address, so the
//!   production URLs (`https://login.microsoftonline.com/...`,
//!   `https://westus3.mtlsauth.microsoft.com/...`, `http://169.254.169.254/...`) reach a local
//!   emulator or a private endpoint while SNI, `Host` and certificate verification still use
//!   the URL's host. There is no other test switch.
//! - **Plain http** only to loopback, `localhost` and link-local hosts (IMDS) unless allowed,
//!   never with a client identity: `insecure_transport`.
//! - **Limits.** A connect timeout, a total timeout (overridable per request), a response cap
//!   (also enforced on an announced `Content-Length`). No redirect is ever followed: a 3xx is
//!   returned as the response.
//! - **Errors** carry oauth-core's transport codes: `connection_failed` (refused, unreachable,
//!   DNS), `timeout`, `tls_handshake_failed` (untrusted or mismatched server certificate, and a
//!   server that rejects the client certificate, which with TLS 1.3 shows on the first read),
//!   `response_too_large`, `insecure_transport`, `invalid_argument` (a URL that cannot be
//!   sent, a zero per-request timeout) and `transport_error` for the rest. Messages name
//!   `scheme://host:port` only, never a path, header or body.
//!
//! ## Place in the workspace
//!
//! The crates layer as `oauth-core ← {mtls-transport, assertion, token-cache} ←
//! managed-identity ← fic-flows ← cli`. This crate depends on only one crate of ours,
//! `fic-oauth-core` (the [`HttpTransport`] seam, [`ClientIdentity`] and its
//! [`SigningKey`](fic_oauth_core::SigningKey), the error codes), and nothing of ours depends
//! on it at its own level: `fic-managed-identity`, `fic-flows`, the `fic` CLI (and the
//! `fic-azure-core` adapter) use it as their transport; anything else implementing
//! [`HttpTransport`] can replace it.
//!
//! ## Features
//!
//! - `ring` (default): rustls with the ring crypto provider.
//! - `aws-lc-rs`: rustls with the aws-lc-rs provider, for embedders that forbid ring. With
//!   both on, ring is used.
//! - neither (`default-features = false`): no provider is compiled in; pass one to
//!   [`MtlsTransportBuilder::crypto_provider`] or install a process default with
//!   `rustls::crypto::CryptoProvider::install_default`, or [`build`](MtlsTransportBuilder::build)
//!   fails with `invalid_argument`.
//!
//! The provider does the TLS cryptography (key exchange, record encryption, verifying the
//! server); client-certificate signatures are always made by the identity's own key object.
//!
//! ## Example
//!
//! Production needs no configuration (`MtlsTransport::new()`). Against a local emulator:
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::Duration;
//! use fic_mtls_transport::MtlsTransport;
//!
//! # fn main() -> Result<(), fic_oauth_core::Error> {
//! let emulator = SocketAddr::from(([127, 0, 0, 1], 8443));
//! let imds = SocketAddr::from(([127, 0, 0, 1], 8080));
//! let transport = MtlsTransport::builder()
//!     // .add_root_certificate_pem(&emulator_ca_pem)?
//!     .resolve("login.microsoftonline.com", emulator)
//!     .resolve("*.mtlsauth.microsoft.com:443", emulator)
//!     .resolve("169.254.169.254:80", imds)
//!     .connect_timeout(Duration::from_secs(5))
//!     .timeout(Duration::from_secs(20))
//!     .max_response_bytes(256 * 1024)
//!     .max_identities(8)
//!     .build()?;
//! assert_eq!(transport.identity_pool_count(), 0);
//! # Ok(())
//! # }
//! ```
//!
//! Sending a token request over mTLS with a binding certificate:
//!
//! ```no_run
//! use bytes::Bytes;
//! use fic_mtls_transport::MtlsTransport;
//! use fic_oauth_core::{ClientIdentity, Error, ErrorCode, HttpTransport, TransportRequest};
//!
//! async fn token(transport: &MtlsTransport, identity: ClientIdentity) -> Result<Bytes, Error> {
//!     let request = http::Request::post(
//!         "https://westus3.mtlsauth.microsoft.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
//!     )
//!     .header("content-type", "application/x-www-form-urlencoded")
//!     .body(Bytes::from_static(
//!         b"client_id=...&scope=...&grant_type=client_credentials&token_type=mtls_pop",
//!     ))
//!     .map_err(|e| Error::new(ErrorCode::INVALID_ARGUMENT, e.to_string()))?;
//!     let response = transport
//!         .send(TransportRequest::new(request).with_identity(Some(identity)))
//!         .await?;
//!     Ok(response.into_body())
//! }
//! ```
#![deny(missing_docs)]

mod builder;
mod connector;
mod error;
mod policy;
mod pool;
mod resolve;
mod target;
pub mod tls;

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use fic_oauth_core::{ClientIdentity, Error, ErrorCode, HttpTransport, TransportRequest};
use http_body_util::{BodyExt, Full};
use hyper::body::Body;

pub use builder::{
    MtlsTransportBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_IDENTITIES,
    DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_POOL_IDLE_TIMEOUT, DEFAULT_POOL_MAX_IDLE_PER_HOST,
    DEFAULT_TIMEOUT,
};

use connector::ConnectorShared;
use pool::{PooledClient, Pools};
use target::Target;

/// An [`HttpTransport`] on hyper-util, tokio and rustls with a connection pool per client
/// identity. Clones are cheap and share the pools.
///
/// Build one with [`MtlsTransport::builder`] (or [`MtlsTransport::new`] for the defaults)
/// and keep it for the life of the process; it must be used within a tokio runtime.
#[derive(Clone)]
pub struct MtlsTransport {
    inner: Arc<Inner>,
}

struct Inner {
    pools: Pools,
    shared: Arc<ConnectorShared>,
    allow_plain_http: bool,
    timeout: Duration,
    max_response_bytes: usize,
}

impl MtlsTransport {
    /// A builder with the production defaults (see [`MtlsTransportBuilder`]).
    pub fn builder() -> MtlsTransportBuilder {
        MtlsTransportBuilder::new()
    }

    /// A transport with the production defaults.
    pub fn new() -> Result<Self, Error> {
        Self::builder().build()
    }

    pub(crate) fn from_parts(
        pools: Pools,
        shared: Arc<ConnectorShared>,
        allow_plain_http: bool,
        timeout: Duration,
        max_response_bytes: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                pools,
                shared,
                allow_plain_http,
                timeout,
                max_response_bytes,
            }),
        }
    }

    /// How many client identities currently have a connection pool (one pool per
    /// certificate, key object and chain).
    pub fn identity_pool_count(&self) -> usize {
        self.inner.pools.identity_count()
    }

    /// The `x5t#S256` thumbprint of each identity connection pool, most recently used first.
    /// A certificate used with two key objects (or two chains) has two pools and appears
    /// twice.
    pub fn identity_pools(&self) -> Vec<String> {
        self.inner.pools.thumbprints()
    }

    /// How many connections (TCP, with their TLS handshake when `https`) this transport has
    /// opened so far, over all pools.
    pub fn connections_opened(&self) -> u64 {
        self.inner.shared.connections_opened.load(Ordering::Relaxed)
    }

    fn client_for(&self, identity: Option<&ClientIdentity>) -> Result<PooledClient, Error> {
        match identity {
            Some(identity) => self.inner.pools.for_identity(identity),
            None => Ok(self.inner.pools.anonymous()),
        }
    }

    async fn exchange(
        &self,
        client: PooledClient,
        request: http::Request<Bytes>,
        target: &Target,
    ) -> Result<http::Response<Bytes>, Error> {
        let (mut parts, body) = request.into_parts();
        // The pools speak HTTP/1.1 only.
        parts.version = http::Version::HTTP_11;
        let response = client
            .request(http::Request::from_parts(parts, Full::new(body)))
            .await
            .map_err(|err| error::classify(err, target))?;
        let (parts, mut body) = response.into_parts();

        let limit = self.inner.max_response_bytes;
        let limit_u64 = u64::try_from(limit).unwrap_or(u64::MAX);
        // hyper's lower size bound is the Content-Length, when there is one.
        let announced = body.size_hint().lower();
        if announced > limit_u64 {
            return Err(error::too_large(target, limit, Some(announced)));
        }
        let capacity = usize::try_from(announced)
            .unwrap_or(limit)
            .min(limit)
            .min(64 * 1024);
        let mut collected = BytesMut::with_capacity(capacity);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|err| error::classify(err, target))?;
            if let Ok(data) = frame.into_data() {
                if data.len() > limit - collected.len() {
                    return Err(error::too_large(target, limit, None));
                }
                collected.extend_from_slice(&data);
            }
        }
        // hyper-util puts the connection back into its pool from a task of its own, woken as
        // the body ends. Letting it run first means the caller's next request finds the
        // connection idle instead of racing it with a new connect (and a new TLS handshake).
        drop(body);
        tokio::task::yield_now().await;
        Ok(http::Response::from_parts(parts, collected.freeze()))
    }
}

impl fmt::Debug for MtlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MtlsTransport")
            .field("pools", &self.inner.pools)
            .field("overrides", &self.inner.shared.overrides.len())
            .field("system_dns", &self.inner.shared.system_dns)
            .field("allow_plain_http", &self.inner.allow_plain_http)
            .field("connect_timeout", &self.inner.shared.connect_timeout)
            .field("timeout", &self.inner.timeout)
            .field("max_response_bytes", &self.inner.max_response_bytes)
            .finish()
    }
}

#[async_trait]
impl HttpTransport for MtlsTransport {
    /// Sends `request` over the pool of its identity (or the identity-less pool) and returns
    /// the whole response, following no redirect.
    async fn send(&self, request: TransportRequest) -> Result<http::Response<Bytes>, Error> {
        let TransportRequest {
            request,
            identity,
            timeout,
            ..
        } = request;
        let target = Target::from_uri(request.uri())?;
        if timeout.is_some_and(|t| t.is_zero()) {
            // A zero timeout could only ever time out; it is a caller's mistake, not a
            // network condition to retry.
            return Err(Error::new(
                ErrorCode::INVALID_ARGUMENT,
                format!("the timeout of a request to {target} must be greater than zero"),
            ));
        }
        policy::check(&target, identity.is_some(), self.inner.allow_plain_http)?;
        let client = self.client_for(identity.as_ref())?;
        let timeout = timeout.unwrap_or(self.inner.timeout);
        match tokio::time::timeout(timeout, self.exchange(client, request, &target)).await {
            Ok(result) => result,
            Err(_) => Err(error::timed_out(&target, timeout)),
        }
    }
}
