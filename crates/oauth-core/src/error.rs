//! The one error type of fic-rs.
//!
//! Every crate of the workspace returns [`Error`]. An error always has a stable snake_case
//! [`ErrorCode`] (the MSAL code where MSAL has one, e.g. `token_type_mismatch`), a human message,
//! whether a retry can help, and, when the identity provider answered with an error body, the
//! whole [`ServerError`] (AADSTS code, `error_codes`, `suberror`, `claims`, trace and correlation
//! ids).
//!
//! ```
//! use fic_oauth_core::{Error, ErrorCode};
//!
//! let err = Error::new(ErrorCode::TOKEN_TYPE_MISMATCH, "asked for mtls_pop, received Bearer");
//! assert_eq!(err.code(), &ErrorCode::TOKEN_TYPE_MISMATCH);
//! assert_eq!(err.code().as_str(), "token_type_mismatch");
//! assert!(!err.is_retryable());
//! assert_eq!(err.to_string(), "token_type_mismatch: asked for mtls_pop, received Bearer");
//! ```

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A stable, snake_case error code.
///
/// Codes defined by this workspace are associated constants here or in the crate that raises
/// them (built with [`ErrorCode::from_static`]); errors answered by the identity provider carry
/// the server's own `error` value (`invalid_client`, `invalid_grant`, ...), built with
/// [`ErrorCode::server`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ErrorCode(Cow<'static, str>);

impl ErrorCode {
    /// A code known at compile time.
    pub const fn from_static(code: &'static str) -> Self {
        Self(Cow::Borrowed(code))
    }

    /// A code taken from the identity provider's `error` field.
    pub fn server(code: impl Into<String>) -> Self {
        Self(Cow::Owned(code.into()))
    }

    /// The code as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    // Configuration and request building.
    /// The authority URL could not be parsed or is not of a supported shape.
    pub const INVALID_AUTHORITY: Self = Self::from_static("invalid_authority");
    /// A configured value (region, client id, scope, parameter...) is not valid.
    pub const INVALID_ARGUMENT: Self = Self::from_static("invalid_argument");
    /// mTLS PoP was asked for but no certificate is available to bind the token to.
    pub const MTLS_CERTIFICATE_NOT_PROVIDED: Self =
        Self::from_static("mtls_certificate_not_provided");
    /// mTLS PoP is not supported by this cloud or host.
    pub const MTLS_POP_NOT_SUPPORTED_FOR_ENVIRONMENT: Self =
        Self::from_static("mtls_pop_not_supported_for_environment");
    /// mTLS PoP (or another flow) needs a tenanted authority, not `common`/`organizations`.
    pub const MISSING_TENANTED_AUTHORITY: Self = Self::from_static("missing_tenanted_authority");
    /// The caller passed a scope the library adds itself (`openid`, `profile`, `offline_access`).
    pub const RESERVED_SCOPE: Self = Self::from_static("reserved_scope");
    /// A client assertion was empty.
    pub const INVALID_CLIENT_ASSERTION: Self = Self::from_static("invalid_client_assertion");
    /// A `user_fic` request must name exactly one of username or user object id.
    pub const USER_IDENTIFIER_REQUIRED: Self = Self::from_static("user_identifier_required");
    /// The claims (challenge or capabilities) are not valid JSON objects.
    pub const INVALID_CLAIMS: Self = Self::from_static("invalid_claims");

    // Responses.
    /// The token response had no `token_type`.
    pub const TOKEN_TYPE_MISSING: Self = Self::from_static("token_type_missing");
    /// The token response's `token_type` is not the one requested.
    pub const TOKEN_TYPE_MISMATCH: Self = Self::from_static("token_type_mismatch");
    /// A response body could not be understood (not JSON, missing or wrongly typed fields).
    pub const INVALID_RESPONSE: Self = Self::from_static("invalid_response");
    /// A response body is larger than the library accepts.
    pub const RESPONSE_TOO_LARGE: Self = Self::from_static("response_too_large");
    /// An HTTP error status without an OAuth error body.
    pub const HTTP_STATUS: Self = Self::from_static("http_status");
    /// The endpoint answered 429/503 with `Retry-After`; the request must not be sent again yet.
    pub const THROTTLED: Self = Self::from_static("throttled");
    /// An OAuth error body without an `error` field.
    pub const UNKNOWN_SERVER_ERROR: Self = Self::from_static("unknown_server_error");

    // Transport.
    /// The server could not be reached (connection refused, host unreachable, DNS).
    pub const CONNECTION_FAILED: Self = Self::from_static("connection_failed");
    /// The request did not complete within its timeout.
    pub const TIMEOUT: Self = Self::from_static("timeout");
    /// The TLS handshake failed (untrusted server, rejected client certificate...).
    pub const TLS_HANDSHAKE_FAILED: Self = Self::from_static("tls_handshake_failed");
    /// The transport refused to send a request (e.g. plain http to a public host).
    pub const INSECURE_TRANSPORT: Self = Self::from_static("insecure_transport");
    /// Another transport failure.
    pub const TRANSPORT: Self = Self::from_static("transport_error");

    // Keys and certificates.
    /// A certificate or key could not be loaded or used.
    pub const INVALID_CERTIFICATE: Self = Self::from_static("invalid_certificate");
    /// Signing with a key failed.
    pub const SIGNING_FAILED: Self = Self::from_static("signing_failed");

    /// An internal invariant did not hold; please report it.
    pub const INTERNAL: Self = Self::from_static("internal_error");
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ErrorCode({})", self.0)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for ErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// The error body of an OAuth endpoint (PROTOCOL §3), kept whole.
///
/// The `error_description` of Entra ID starts with `AADSTS<code>:`; [`ServerError::aadsts`]
/// gives that number.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerError {
    /// The HTTP status of the answer.
    pub status: u16,
    /// The `error` field (`invalid_client`, `invalid_grant`, ...).
    pub error: String,
    /// The `error_description` field.
    pub error_description: Option<String>,
    /// The `error_codes` field (AADSTS numbers).
    pub error_codes: Vec<u64>,
    /// The `suberror` field (`bad_token`, `consent_required`, ...).
    pub suberror: Option<String>,
    /// The `claims` challenge, to be sent back with the next request.
    pub claims: Option<String>,
    /// The `timestamp` field.
    pub timestamp: Option<String>,
    /// The `trace_id` field.
    pub trace_id: Option<String>,
    /// The `correlation_id` field (falls back to the `client-request-id` response header).
    pub correlation_id: Option<String>,
}

impl ServerError {
    /// The AADSTS number: the first of `error_codes`, else parsed from `AADSTS<digits>` in the
    /// description.
    pub fn aadsts(&self) -> Option<u64> {
        if let Some(code) = self.error_codes.first() {
            return Some(*code);
        }
        let description = self.error_description.as_deref()?;
        let start = description.find("AADSTS")? + "AADSTS".len();
        let digits: String = description[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    }
}

/// The error of every fic-rs operation.
///
/// Cheap to move (one box) and to clone (a failed request shared by every caller waiting on it
/// is cloned to each). Match on [`Error::code`]; read the server's answer with
/// [`Error::server_error`]; ask [`Error::is_retryable`] whether trying again later may help and
/// [`Error::retry_after`] when the server said how long to wait.
#[derive(Clone)]
pub struct Error {
    inner: Box<Inner>,
}

#[derive(Clone)]
struct Inner {
    code: ErrorCode,
    message: String,
    retryable: bool,
    retry_after: Option<Duration>,
    server: Option<ServerError>,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new error with a code and a message; not retryable.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            inner: Box::new(Inner {
                code,
                message: message.into(),
                retryable: false,
                retry_after: None,
                server: None,
                source: None,
            }),
        }
    }

    /// An error answered by the identity provider. Retryable for 5xx and 429 statuses.
    pub fn from_server(server: ServerError) -> Self {
        let code = if server.error.is_empty() {
            ErrorCode::UNKNOWN_SERVER_ERROR
        } else {
            ErrorCode::server(server.error.clone())
        };
        let message = match (&server.error_description, server.error.is_empty()) {
            (Some(description), _) => description.clone(),
            (None, false) => format!("the server answered {}", server.error),
            (None, true) => format!("the server answered HTTP {}", server.status),
        };
        let retryable = server.status >= 500 || server.status == 429;
        let mut err = Self::new(code, message);
        err.inner.retryable = retryable;
        err.inner.server = Some(server);
        err
    }

    /// Marks whether a retry can help.
    #[must_use]
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.inner.retryable = retryable;
        self
    }

    /// Attaches the delay the server asked for (`Retry-After`); implies retryable.
    #[must_use]
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.inner.retry_after = Some(delay);
        self.inner.retryable = true;
        self
    }

    /// Attaches the underlying cause.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.inner.source = Some(Arc::new(source));
        self
    }

    /// Attaches the server's error body.
    #[must_use]
    pub fn with_server_error(mut self, server: ServerError) -> Self {
        self.inner.server = Some(server);
        self
    }

    /// The stable code.
    pub fn code(&self) -> &ErrorCode {
        &self.inner.code
    }

    /// The human message (never contains a secret).
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// Whether trying again (later) may succeed.
    pub fn is_retryable(&self) -> bool {
        self.inner.retryable
    }

    /// How long the server asked to wait before the next attempt.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// The identity provider's error body, when it answered with one.
    pub fn server_error(&self) -> Option<&ServerError> {
        self.inner.server.as_ref()
    }

    /// The AADSTS number of the server's answer, if any.
    pub fn aadsts(&self) -> Option<u64> {
        self.inner.server.as_ref().and_then(ServerError::aadsts)
    }

    /// The HTTP status of the server's answer, if any.
    pub fn status(&self) -> Option<u16> {
        self.inner.server.as_ref().map(|s| s.status)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("code", &self.inner.code.as_str())
            .field("message", &self.inner.message)
            .field("retryable", &self.inner.retryable);
        if let Some(delay) = self.inner.retry_after {
            d.field("retry_after", &delay);
        }
        if let Some(server) = &self.inner.server {
            d.field("server", server);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.inner.code, self.inner.message)?;
        if let Some(server) = &self.inner.server {
            if let Some(trace) = &server.trace_id {
                write!(f, " (trace id {trace}")?;
                if let Some(correlation) = &server.correlation_id {
                    write!(f, ", correlation id {correlation}")?;
                }
                f.write_str(")")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aadsts_from_codes_or_description() {
        let mut server = ServerError {
            status: 401,
            error: "invalid_client".into(),
            error_description: Some("AADSTS7000215: Invalid client secret provided.".into()),
            ..ServerError::default()
        };
        assert_eq!(server.aadsts(), Some(7_000_215));
        server.error_codes = vec![700_027];
        assert_eq!(server.aadsts(), Some(700_027));
        server.error_codes.clear();
        server.error_description = Some("no code here".into());
        assert_eq!(server.aadsts(), None);
    }

    #[test]
    fn server_errors_keep_their_code_and_retryability() {
        let err = Error::from_server(ServerError {
            status: 500,
            error: "temporarily_unavailable".into(),
            trace_id: Some("t-1".into()),
            correlation_id: Some("c-1".into()),
            ..ServerError::default()
        });
        assert_eq!(err.code(), &"temporarily_unavailable");
        assert!(err.is_retryable());
        assert_eq!(err.status(), Some(500));
        assert!(err.to_string().contains("trace id t-1, correlation id c-1"));
        let err = Error::from_server(ServerError {
            status: 400,
            ..ServerError::default()
        });
        assert_eq!(err.code(), &ErrorCode::UNKNOWN_SERVER_ERROR);
        assert!(!err.is_retryable());
    }

    #[test]
    fn retry_after_implies_retryable() {
        let err =
            Error::new(ErrorCode::THROTTLED, "slow down").with_retry_after(Duration::from_secs(5));
        assert!(err.is_retryable());
        assert_eq!(err.retry_after(), Some(Duration::from_secs(5)));
    }
}
