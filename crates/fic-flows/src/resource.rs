//! Calling a protected resource with a token: over mTLS with the binding certificate for
//! mtls_pop tokens (RFC 8705), plain TLS otherwise.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fic_oauth_core::{AccessToken, Error, ErrorCode, HttpTransport, TokenType, TransportRequest};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

/// Which `Authorization` scheme to send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthorizationScheme {
    /// The token's own type: `mtls_pop <token>` for PoP tokens, `Bearer <token>` otherwise
    /// (as MSAL.NET).
    #[default]
    TokenType,
    /// Always `Bearer <token>` (resources that take bound tokens with the Bearer scheme).
    Bearer,
}

/// What a resource answered.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ResourceResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers (`WWW-Authenticate` tells why a token was refused).
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl ResourceResponse {
    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value, Error> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::new(
                ErrorCode::INVALID_RESPONSE,
                format!("the resource's answer is not JSON: {e}"),
            )
        })
    }

    /// The `WWW-Authenticate` header, if any.
    pub fn www_authenticate(&self) -> Option<&str> {
        self.headers
            .get(http::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
    }
}

/// Calls resources with tokens, through the same transport that acquired them.
///
/// An mtls_pop token is sent over a TLS connection authenticated with its binding certificate
/// (the resource checks that the certificate's `x5t#S256` equals the token's `cnf`); a Bearer
/// token over plain TLS.
///
/// ```no_run
/// # async fn demo(token: fic_oauth_core::AccessToken, transport: std::sync::Arc<dyn fic_oauth_core::HttpTransport>) -> Result<(), fic_oauth_core::Error> {
/// use fic_flows::ResourceClient;
///
/// let resource = ResourceClient::new(transport);
/// let answer = resource.get("https://myvault.vault.azure.net/secrets/db?api-version=7.4", &token).await?;
/// println!("{} {}", answer.status, String::from_utf8_lossy(&answer.body));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ResourceClient {
    transport: Arc<dyn HttpTransport>,
    scheme: AuthorizationScheme,
    timeout: Option<Duration>,
}

impl fmt::Debug for ResourceClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceClient")
            .field("transport", &self.transport)
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

impl ResourceClient {
    /// A client over `transport`.
    pub fn new(transport: Arc<dyn HttpTransport>) -> Self {
        Self {
            transport,
            scheme: AuthorizationScheme::TokenType,
            timeout: None,
        }
    }

    /// The `Authorization` scheme.
    #[must_use]
    pub fn with_scheme(mut self, scheme: AuthorizationScheme) -> Self {
        self.scheme = scheme;
        self
    }

    /// A total timeout per call.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// `GET url` with the token.
    pub async fn get(&self, url: &str, token: &AccessToken) -> Result<ResourceResponse, Error> {
        let request = http::Request::builder()
            .method(Method::GET)
            .uri(url)
            .header(http::header::ACCEPT, "application/json")
            .body(Bytes::new())
            .map_err(|e| {
                Error::new(
                    ErrorCode::INVALID_ARGUMENT,
                    format!("invalid resource URL: {e}"),
                )
            })?;
        self.send(request, token).await
    }

    /// Sends `request` with the token in `Authorization` and, for mtls_pop tokens, the binding
    /// certificate in TLS.
    pub async fn send(
        &self,
        mut request: http::Request<Bytes>,
        token: &AccessToken,
    ) -> Result<ResourceResponse, Error> {
        if token.token_type == TokenType::MtlsPop && token.binding.is_none() {
            // A bound token without its certificate is refused by the resource (RFC 8705); say
            // so here rather than send it over a connection that cannot prove the binding.
            return Err(Error::new(
                ErrorCode::MTLS_CERTIFICATE_NOT_PROVIDED,
                "an mtls_pop token carries no binding certificate: the resource call needs it \
                 (use the AccessToken returned by the acquisition, which carries it)",
            ));
        }
        let header = match self.scheme {
            AuthorizationScheme::TokenType => token.authorization_header(),
            AuthorizationScheme::Bearer => token.bearer_authorization_header(),
        };
        let mut value = HeaderValue::from_str(header.expose()).map_err(|_| {
            Error::new(
                ErrorCode::INVALID_ARGUMENT,
                "the token is not a valid header value",
            )
        })?;
        value.set_sensitive(true);
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, value);
        let mut outgoing = TransportRequest::new(request).with_identity(token.binding.clone());
        if let Some(timeout) = self.timeout {
            outgoing = outgoing.with_timeout(timeout);
        }
        let response = self.transport.send(outgoing).await?;
        let (parts, body) = response.into_parts();
        Ok(ResourceResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}
