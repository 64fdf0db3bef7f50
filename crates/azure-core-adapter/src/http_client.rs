//! [`FicHttpClient`]: an `azure_core` HTTP client over a fic-rs transport that presents the
//! binding certificate of the tokens it sends.

use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::error::ErrorKind;
use azure_core::http::headers::{HeaderName, HeaderValue, Headers};
use azure_core::http::{AsyncRawResponse, Body, HttpClient, Request, StatusCode};
use bytes::{Bytes, BytesMut};
use fic_flows::AuthorizationScheme;
use fic_oauth_core::{ClientIdentity, HttpTransport, TokenType, TransportRequest};

use crate::bindings::TokenBindings;
use crate::error::transport_error;

/// An [`azure_core::http::HttpClient`] over a fic-rs [`HttpTransport`] (normally
/// [`MtlsTransport`](fic_mtls_transport::MtlsTransport)).
///
/// For each request it reads the token of the `Authorization` header (`<scheme> <token>`) and
/// looks it up in its [`TokenBindings`]. When the token is recorded there (a certificate-bound
/// token handed out by a linked [`AzureCoreCredential`](crate::AzureCoreCredential)):
///
/// - the request is sent over TLS with the token's binding certificate as client certificate
///   ([`TransportRequest::identity`]);
/// - the `Bearer` scheme `azure_core`'s bearer policy wrote is replaced by `mtls_pop` for
///   mtls_pop tokens, unless the scheme is [`AuthorizationScheme::Bearer`].
///
/// Every other request is sent as it is, without a client certificate. The `Authorization`
/// value is marked sensitive and never logged.
///
/// Limits are the transport's: its response cap (1 MiB by default for `MtlsTransport`; raise
/// it with `max_response_bytes` for large downloads) and its timeouts (or
/// [`with_timeout`](Self::with_timeout)). Streaming request bodies are read into memory before
/// sending. Responses are returned whole.
#[derive(Clone)]
pub struct FicHttpClient {
    transport: Arc<dyn HttpTransport>,
    bindings: TokenBindings,
    scheme: AuthorizationScheme,
    timeout: Option<Duration>,
}

impl FicHttpClient {
    /// A client over `transport`, with an empty registry of its own (so it presents no
    /// certificate until linked with [`with_bindings`](Self::with_bindings); or build it with
    /// [`AzureCoreCredential::http_client`](crate::AzureCoreCredential::http_client)).
    pub fn new(transport: Arc<dyn HttpTransport>) -> Self {
        Self {
            transport,
            bindings: TokenBindings::new(),
            scheme: AuthorizationScheme::TokenType,
            timeout: None,
        }
    }

    /// Looks tokens up in `bindings` (a credential's [`AzureCoreCredential::bindings`]).
    ///
    /// [`AzureCoreCredential::bindings`]: crate::AzureCoreCredential::bindings
    #[must_use]
    pub fn with_bindings(mut self, bindings: TokenBindings) -> Self {
        self.bindings = bindings;
        self
    }

    /// The `Authorization` scheme for bound tokens: [`AuthorizationScheme::TokenType`] (the
    /// default: `mtls_pop <token>` for mtls_pop tokens) or [`AuthorizationScheme::Bearer`]
    /// (keep `Bearer <token>`, for resources that take bound tokens with the Bearer scheme). The
    /// certificate is presented either way.
    #[must_use]
    pub fn with_scheme(mut self, scheme: AuthorizationScheme) -> Self {
        self.scheme = scheme;
        self
    }

    /// A total timeout per request, instead of the transport's default.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The registry tokens are looked up in.
    pub fn bindings(&self) -> &TokenBindings {
        &self.bindings
    }

    /// The transport requests go through.
    pub fn transport(&self) -> &Arc<dyn HttpTransport> {
        &self.transport
    }

    /// The `Authorization` value to send and the identity to present, for the value `header`.
    fn authorize(&self, header: &str) -> (Option<String>, Option<ClientIdentity>) {
        let Some((scheme, token)) = header.trim().split_once(' ') else {
            return (None, None);
        };
        let token = token.trim();
        let Some(binding) = self.bindings.lookup(token) else {
            return (None, None);
        };
        let rewrite = binding.token_type == TokenType::MtlsPop
            && self.scheme == AuthorizationScheme::TokenType
            && scheme.eq_ignore_ascii_case("bearer");
        let value =
            rewrite.then(|| format!("{} {token}", TokenType::MtlsPop.authorization_scheme()));
        (value, Some(binding.identity))
    }

    /// The `http` request for `request`, and the identity to present.
    async fn convert(
        &self,
        request: &Request,
    ) -> azure_core::Result<(http::Request<Bytes>, Option<ClientIdentity>)> {
        let mut builder = http::Request::builder()
            .method(
                http::Method::from_bytes(request.method().as_str().as_bytes())
                    .map_err(|_| other(format!("unsupported HTTP method {}", request.method())))?,
            )
            .uri(request.url().as_str());
        let mut identity = None;
        for (name, value) in request.headers().iter() {
            let header_name = http::HeaderName::from_bytes(name.as_str().as_bytes())
                .map_err(|_| other(format!("invalid header name {}", name.as_str())))?;
            let is_authorization = header_name == http::header::AUTHORIZATION;
            let rewritten = if is_authorization {
                let (rewritten, bound) = self.authorize(value.as_str());
                identity = bound;
                rewritten
            } else {
                None
            };
            // The value is not quoted in the error: it may be a secret.
            let mut header_value =
                http::HeaderValue::from_str(rewritten.as_deref().unwrap_or(value.as_str()))
                    .map_err(|_| other(format!("invalid value for header {}", name.as_str())))?;
            if is_authorization || header_name == http::header::PROXY_AUTHORIZATION {
                header_value.set_sensitive(true);
            }
            builder = builder.header(header_name, header_value);
        }
        let body = match request.body() {
            Body::Bytes(bytes) => bytes.clone(),
            Body::SeekableStream(stream) => read_stream(stream.clone()).await?,
        };
        let http_request = builder
            .body(body)
            .map_err(|e| other(format!("the request cannot be sent: {e}")))?;
        Ok((http_request, identity))
    }
}

impl fmt::Debug for FicHttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FicHttpClient")
            .field("transport", &self.transport)
            .field("bindings", &self.bindings)
            .field("scheme", &self.scheme)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[async_trait]
impl HttpClient for FicHttpClient {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let (http_request, identity) = self.convert(request).await?;
        tracing::debug!(
            method = %http_request.method(),
            host = http_request.uri().host().unwrap_or_default(),
            client_certificate = identity.as_ref().map(ClientIdentity::thumbprint_s256),
            "sending an azure_core request"
        );
        let mut outgoing = TransportRequest::new(http_request).with_identity(identity);
        if let Some(timeout) = self.timeout {
            outgoing = outgoing.with_timeout(timeout);
        }
        let response = self
            .transport
            .send(outgoing)
            .await
            .map_err(transport_error)?;
        let (parts, body) = response.into_parts();
        Ok(AsyncRawResponse::from_bytes(
            StatusCode::from(parts.status.as_u16()),
            headers(&parts.headers),
            body,
        ))
    }
}

/// The response headers; repeated ones joined with `, ` (RFC 9110 §5.3), values that are not
/// visible ASCII dropped.
fn headers(map: &http::HeaderMap) -> Headers {
    let mut headers = Headers::new();
    for name in map.keys() {
        let values: Vec<&str> = map
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if !values.is_empty() {
            headers.insert(
                HeaderName::from(name.as_str().to_owned()),
                HeaderValue::from(values.join(", ")),
            );
        }
    }
    headers
}

/// Reads a streaming request body to its end.
async fn read_stream(
    mut stream: Box<dyn azure_core::stream::SeekableStream>,
) -> azure_core::Result<Bytes> {
    let capacity = stream
        .len()
        .and_then(|len| usize::try_from(len).ok())
        .unwrap_or(0);
    let mut body = BytesMut::with_capacity(capacity);
    let mut buffer = vec![0_u8; stream.buffer_size().max(1)];
    loop {
        let read = poll_fn(|cx| Pin::new(&mut *stream).poll_read(cx, &mut buffer))
            .await
            .map_err(|e| {
                azure_core::Error::with_error(ErrorKind::Io, e, "could not read the request body")
            })?;
        if read == 0 {
            return Ok(body.freeze());
        }
        body.extend_from_slice(&buffer[..read]);
    }
}

fn other(message: impl Into<String>) -> azure_core::Error {
    azure_core::Error::with_message(ErrorKind::Other, message.into())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use azure_core::http::{Method, Url};
    use azure_core::stream::BytesStream;
    use fic_oauth_core::Error;

    use super::*;
    use crate::bindings::tests::bound;

    const HOUR: Duration = Duration::from_secs(3600);

    /// Records what it is asked to send; answers 200 with two `x-multi` headers.
    #[derive(Debug, Default)]
    struct Recorder {
        sent: Mutex<Vec<(http::Request<Bytes>, Option<String>)>>,
    }

    #[async_trait]
    impl HttpTransport for Recorder {
        async fn send(&self, request: TransportRequest) -> Result<http::Response<Bytes>, Error> {
            let thumbprint = request
                .identity
                .as_ref()
                .map(|i| i.thumbprint_s256().to_owned());
            self.sent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((request.request, thumbprint));
            http::Response::builder()
                .status(201)
                .header("x-multi", "a")
                .header("x-multi", "b")
                .body(Bytes::from_static(b"{\"ok\":true}"))
                .map_err(|e| Error::new(fic_oauth_core::ErrorCode::INTERNAL, e.to_string()))
        }
    }

    fn request(authorization: Option<&str>) -> Request {
        let url = Url::parse("https://x.vault.azure.net/secrets/a?api-version=7.4")
            .unwrap_or_else(|e| panic!("{e}"));
        let mut request = Request::new(url, Method::Put);
        if let Some(value) = authorization {
            request.insert_header("authorization", value.to_owned());
        }
        request.insert_header("x-ms-client-request-id", "abc");
        request
    }

    fn sent(recorder: &Recorder) -> (http::Request<Bytes>, Option<String>) {
        recorder
            .sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()
            .unwrap_or_else(|| panic!("nothing sent"))
    }

    #[tokio::test]
    async fn presents_the_binding_and_rewrites_the_scheme_of_pop_tokens() {
        let recorder = Arc::new(Recorder::default());
        let bindings = TokenBindings::new();
        let token = bound("pop.token.value", 3, HOUR);
        bindings.record(&token);
        let client = FicHttpClient::new(recorder.clone()).with_bindings(bindings);

        let mut req = request(Some("Bearer pop.token.value"));
        req.set_body(Bytes::from_static(b"{\"value\":1}"));
        let response = client
            .execute_request(&req)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(response.status(), StatusCode::Created);
        assert_eq!(
            response
                .headers()
                .get_optional_str(&HeaderName::from("x-multi")),
            Some("a, b")
        );
        let (http_request, thumbprint) = sent(&recorder);
        assert_eq!(thumbprint.as_deref(), token.binding_thumbprint());
        assert_eq!(http_request.method(), http::Method::PUT);
        assert_eq!(
            http_request.uri().to_string(),
            "https://x.vault.azure.net/secrets/a?api-version=7.4"
        );
        let authorization = &http_request.headers()[http::header::AUTHORIZATION];
        assert_eq!(authorization, "mtls_pop pop.token.value");
        assert!(authorization.is_sensitive());
        assert_eq!(http_request.headers()["x-ms-client-request-id"], "abc");
        assert_eq!(http_request.body().as_ref(), b"{\"value\":1}");

        // The Bearer option keeps the scheme, still presents the certificate.
        let client = client.with_scheme(AuthorizationScheme::Bearer);
        client
            .execute_request(&request(Some("Bearer pop.token.value")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (http_request, thumbprint) = sent(&recorder);
        assert_eq!(thumbprint.as_deref(), token.binding_thumbprint());
        assert_eq!(
            http_request.headers()[http::header::AUTHORIZATION],
            "Bearer pop.token.value"
        );
    }

    #[tokio::test]
    async fn sends_unknown_tokens_and_unauthenticated_requests_unchanged() {
        let recorder = Arc::new(Recorder::default());
        let bindings = TokenBindings::new();
        bindings.record(&bound("pop.token.value", 3, HOUR));
        // Not linked: an empty registry of its own.
        let unlinked = FicHttpClient::new(recorder.clone());
        unlinked
            .execute_request(&request(Some("Bearer pop.token.value")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (http_request, thumbprint) = sent(&recorder);
        assert_eq!(thumbprint, None);
        assert_eq!(
            http_request.headers()[http::header::AUTHORIZATION],
            "Bearer pop.token.value"
        );

        let linked = FicHttpClient::new(recorder.clone()).with_bindings(bindings);
        for authorization in [Some("Bearer other.token"), Some("garbage"), None] {
            linked
                .execute_request(&request(authorization))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let (http_request, thumbprint) = sent(&recorder);
            assert_eq!(thumbprint, None);
            assert_eq!(
                http_request
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok()),
                authorization
            );
        }
    }

    #[tokio::test]
    async fn reads_streaming_bodies() {
        let recorder = Arc::new(Recorder::default());
        let client = FicHttpClient::new(recorder.clone());
        let mut req = request(None);
        let payload: Vec<u8> = (0..200_000_u32).map(|i| (i % 251) as u8).collect();
        let stream: Box<dyn azure_core::stream::SeekableStream> =
            Box::new(BytesStream::new(payload.clone()));
        req.set_body(stream);
        client
            .execute_request(&req)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (http_request, _) = sent(&recorder);
        assert_eq!(http_request.body().as_ref(), payload.as_slice());
    }

    #[tokio::test]
    async fn maps_transport_errors() {
        #[derive(Debug)]
        struct Refused;
        #[async_trait]
        impl HttpTransport for Refused {
            async fn send(&self, _: TransportRequest) -> Result<http::Response<Bytes>, Error> {
                Err(Error::new(
                    fic_oauth_core::ErrorCode::CONNECTION_FAILED,
                    "https://x.vault.azure.net:443 refused the connection",
                ))
            }
        }
        let client = FicHttpClient::new(Arc::new(Refused));
        let err = client
            .execute_request(&request(Some("Bearer t")))
            .await
            .err()
            .unwrap_or_else(|| panic!("an error"));
        assert_eq!(err.kind(), &ErrorKind::Connection);
        assert!(err.to_string().contains("connection_failed"), "{err}");
        assert!(!err.to_string().contains("Bearer t"), "{err}");
    }
}
