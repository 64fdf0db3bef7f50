//! The HTTP seam.
//!
//! fic-rs never opens a socket outside an [`HttpTransport`]. `fic-mtls-transport` is the default
//! implementation (hyper + rustls, a connection pool per client identity); tests may use a
//! recording fake; embedders may bring their own client.
//!
//! The binding certificate reaches TLS through [`TransportRequest::identity`]. A transport that
//! cannot present a client certificate must fail with [`ErrorCode::INSECURE_TRANSPORT`] when a
//! request carries one, never send it without.
//!
//! ```
//! use async_trait::async_trait;
//! use bytes::Bytes;
//! use fic_oauth_core::{Error, ErrorCode, HttpTransport, TransportRequest};
//!
//! /// A transport that answers every request with `{}`; refuses client identities.
//! #[derive(Debug)]
//! struct Canned;
//!
//! #[async_trait]
//! impl HttpTransport for Canned {
//!     async fn send(&self, request: TransportRequest) -> Result<http::Response<Bytes>, Error> {
//!         if request.identity.is_some() {
//!             return Err(Error::new(ErrorCode::INSECURE_TRANSPORT, "no mTLS support"));
//!         }
//!         Ok(http::Response::new(Bytes::from_static(b"{}")))
//!     }
//! }
//! ```

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Error;
use crate::identity::ClientIdentity;

/// One HTTP request and how to send it.
///
/// `Debug` shows the method, URI (without its query), header names, body length and the
/// identity's thumbprint — never header values or the body, which carry secrets.
#[non_exhaustive]
pub struct TransportRequest {
    /// The request (absolute URI).
    pub request: http::Request<Bytes>,
    /// The TLS client identity to present, if any (mTLS).
    pub identity: Option<ClientIdentity>,
    /// A total timeout for this request, overriding the transport's default.
    pub timeout: Option<Duration>,
}

impl TransportRequest {
    /// A request sent without a client identity, with the transport's default timeout.
    pub fn new(request: http::Request<Bytes>) -> Self {
        Self {
            request,
            identity: None,
            timeout: None,
        }
    }

    /// Presents `identity` in the TLS handshake.
    #[must_use]
    pub fn with_identity(mut self, identity: Option<ClientIdentity>) -> Self {
        self.identity = identity;
        self
    }

    /// Sets a total timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// `scheme://host[:port]/path` of a URI, without its query (which may carry secrets): for
/// logs, messages and `Debug`.
pub fn describe_uri(uri: &http::Uri) -> String {
    format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("?"),
        uri.authority().map_or("?", http::uri::Authority::as_str),
        uri.path()
    )
}

/// A copy sharing the body (cheap): method, URI, version, headers, identity and timeout.
/// Request extensions are not copied.
impl Clone for TransportRequest {
    fn clone(&self) -> Self {
        let mut request = http::Request::new(self.request.body().clone());
        *request.method_mut() = self.request.method().clone();
        *request.uri_mut() = self.request.uri().clone();
        *request.version_mut() = self.request.version();
        *request.headers_mut() = self.request.headers().clone();
        Self {
            request,
            identity: self.identity.clone(),
            timeout: self.timeout,
        }
    }
}

impl fmt::Debug for TransportRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<&str> = self
            .request
            .headers()
            .keys()
            .map(http::HeaderName::as_str)
            .collect();
        f.debug_struct("TransportRequest")
            .field("method", self.request.method())
            .field("uri", &describe_uri(self.request.uri()))
            .field("headers", &headers)
            .field("body_len", &self.request.body().len())
            .field(
                "identity",
                &self.identity.as_ref().map(ClientIdentity::thumbprint_s256),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Sends one HTTP request and returns the whole response.
///
/// Implementations follow no redirects and map failures to the transport codes of
/// [`ErrorCode`](crate::ErrorCode) (`connection_failed`, `timeout`, `tls_handshake_failed`,
/// `response_too_large`, `insecure_transport`, `transport_error`), which the managed identity
/// retry policy tells apart. HTTP error statuses are responses, not errors.
#[async_trait]
pub trait HttpTransport: Send + Sync + fmt::Debug {
    /// Sends `request`.
    async fn send(&self, request: TransportRequest) -> Result<http::Response<Bytes>, Error>;
}

#[async_trait]
impl<T: HttpTransport + ?Sized> HttpTransport for std::sync::Arc<T> {
    async fn send(&self, request: TransportRequest) -> Result<http::Response<Bytes>, Error> {
        (**self).send(request).await
    }
}
