//! Sending token requests: the request hook, retries (PROTOCOL §4), response parsing.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use fic_oauth_core::request::TokenRequest;
use fic_oauth_core::response::TokenResponse;
use fic_oauth_core::retry::{send_with_retries, TokenEndpointRetry};
use fic_oauth_core::{
    ClientIdentity, Clock, Error, ErrorCode, HttpTransport, Secret, Sleeper, TokenType,
    TransportRequest,
};
use http::{HeaderMap, Uri};

/// A token request as it is about to be sent, for a [`RequestHook`] to read and extend.
pub struct OutgoingTokenRequest {
    uri: Uri,
    headers: HeaderMap,
    form: Vec<(String, Secret)>,
    identity: Option<ClientIdentity>,
    changed: bool,
}

impl OutgoingTokenRequest {
    /// The URI (the token endpoint actually called, query included).
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The headers, to add some.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        self.changed = true;
        &mut self.headers
    }

    /// The form parameters in the order they are sent. Values can be secrets
    /// (`client_assertion`, `client_secret`): never log them.
    pub fn form(&self) -> &[(String, Secret)] {
        &self.form
    }

    /// The value of a form parameter.
    pub fn form_parameter(&self, name: &str) -> Option<&Secret> {
        self.form.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Adds a form parameter (after all others). Replacing one the library set is refused.
    pub fn add_form_parameter(
        &mut self,
        name: impl Into<String>,
        value: impl Into<Secret>,
    ) -> Result<(), Error> {
        let name = name.into();
        if self.form.iter().any(|(n, _)| *n == name) {
            return Err(Error::new(
                ErrorCode::INVALID_ARGUMENT,
                format!("the request hook may not replace the form parameter {name:?}"),
            ));
        }
        self.form.push((name, value.into()));
        self.changed = true;
        Ok(())
    }

    /// The `x5t#S256` of the TLS client certificate presented, if any.
    pub fn client_certificate_thumbprint(&self) -> Option<&str> {
        self.identity.as_ref().map(ClientIdentity::thumbprint_s256)
    }
}

impl fmt::Debug for OutgoingTokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.form.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("OutgoingTokenRequest")
            .field("uri", &self.uri)
            .field("form_parameters", &names)
            .field("client_certificate", &self.client_certificate_thumbprint())
            .finish_non_exhaustive()
    }
}

/// Sees every token request before it is sent and may add form parameters or headers
/// (monitoring, test slices, extra parameters a tenant needs).
///
/// Any `Fn(&mut OutgoingTokenRequest) -> Result<(), Error>` is a hook.
pub trait RequestHook: Send + Sync {
    /// Called once per token request, before it is first sent (a retry resends the same
    /// request without calling the hook again).
    fn on_token_request(&self, request: &mut OutgoingTokenRequest) -> Result<(), Error>;
}

impl<F> RequestHook for F
where
    F: Fn(&mut OutgoingTokenRequest) -> Result<(), Error> + Send + Sync,
{
    fn on_token_request(&self, request: &mut OutgoingTokenRequest) -> Result<(), Error> {
        self(request)
    }
}

/// Sends token requests with the retry policy of the token endpoint.
#[derive(Clone)]
pub(crate) struct Sender {
    pub(crate) transport: Arc<dyn HttpTransport>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) sleeper: Arc<dyn Sleeper>,
    pub(crate) hook: Option<Arc<dyn RequestHook>>,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("transport", &self.transport)
            .field("hook", &self.hook.is_some())
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// Applies the hook to a built request.
    fn hooked(&self, outgoing: TransportRequest) -> Result<TransportRequest, Error> {
        let Some(hook) = &self.hook else {
            return Ok(outgoing);
        };
        let (parts, body) = outgoing.request.into_parts();
        let form = url::form_urlencoded::parse(&body)
            .map(|(n, v)| (n.into_owned(), Secret::new(v.into_owned())))
            .collect();
        let mut view = OutgoingTokenRequest {
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            form,
            identity: outgoing.identity.clone(),
            changed: false,
        };
        hook.on_token_request(&mut view)?;
        let body = if view.changed {
            let mut encoded = url::form_urlencoded::Serializer::new(String::new());
            for (name, value) in &view.form {
                encoded.append_pair(name, value.expose());
            }
            Bytes::from(encoded.finish())
        } else {
            body
        };
        let mut request = http::Request::from_parts(parts, body);
        *request.headers_mut() = view.headers;
        let mut rebuilt = TransportRequest::new(request).with_identity(outgoing.identity);
        rebuilt.timeout = outgoing.timeout;
        Ok(rebuilt)
    }

    /// Sends `request` and parses the answer, expecting `expected`; one retry after 1 s on 5xx
    /// or a timeout, none when the server sent `Retry-After`.
    pub(crate) async fn send(
        &self,
        request: TokenRequest,
        expected: TokenType,
    ) -> Result<TokenResponse, Error> {
        let prepared = self.hooked(request.into_transport_request()?)?;
        let response = send_with_retries(
            self.transport.as_ref(),
            self.clock.as_ref(),
            self.sleeper.as_ref(),
            &prepared,
            &mut TokenEndpointRetry::default(),
            &mut |attempt, delay| {
                tracing::debug!(
                    ?attempt,
                    delay_ms = delay.as_millis(),
                    "retrying the token request"
                );
            },
        )
        .await?;
        TokenResponse::parse_at(
            response.status().as_u16(),
            response.headers(),
            response.body(),
            expected,
            self.clock.now(),
        )
    }
}
