//! fic-rs errors as `azure_core` errors.

use azure_core::error::ErrorKind;
use fic_oauth_core::{Error, ErrorCode};

/// The `azure_core` error for a failed token acquisition, as
/// [`AzureCoreCredential`](crate::AzureCoreCredential) returns it.
///
/// The kind is `Credential` (as for `azure_identity`'s credentials). The message is
/// `"fic-rs token acquisition failed: <code>: <message>"`, with the AADSTS number added when the
/// identity provider sent one the message does not already show; it never contains a secret.
/// The source is the original error: get it back with
/// `err.downcast_ref::<fic_oauth_core::Error>()`.
///
/// ```
/// use fic_oauth_core::{Error, ServerError};
///
/// let mut body = ServerError::default();
/// body.status = 401;
/// body.error = "invalid_client".into();
/// body.error_description = Some("Invalid client secret provided.".into());
/// body.error_codes = vec![7_000_215];
/// let err = fic_azure_core::to_azure_error(Error::from_server(body));
/// assert_eq!(err.kind(), &azure_core::error::ErrorKind::Credential);
/// assert_eq!(
///     err.to_string(),
///     "fic-rs token acquisition failed: invalid_client: Invalid client secret provided. \
///      (AADSTS7000215)"
/// );
/// let original = err.downcast_ref::<Error>().unwrap();
/// assert_eq!(original.aadsts(), Some(7_000_215));
/// ```
pub fn to_azure_error(error: Error) -> azure_core::Error {
    let mut message = format!("fic-rs token acquisition failed: {error}");
    if let Some(aadsts) = error.aadsts() {
        let tag = format!("AADSTS{aadsts}");
        if !message.contains(&tag) {
            message = format!("{message} ({tag})");
        }
    }
    azure_core::Error::with_error(ErrorKind::Credential, error, message)
}

/// The `azure_core` error for a request our transport could not complete. Connection and TLS
/// failures are `Connection` and timeouts and other I/O failures `Io` (the kinds `azure_core`'s
/// retry policy retries, as for its reqwest client); the rest (a refused or malformed request,
/// a response over the size limit) `Other`.
pub(crate) fn transport_error(error: Error) -> azure_core::Error {
    let kind = match error.code() {
        c if *c == ErrorCode::CONNECTION_FAILED || *c == ErrorCode::TLS_HANDSHAKE_FAILED => {
            ErrorKind::Connection
        }
        c if *c == ErrorCode::TIMEOUT || *c == ErrorCode::TRANSPORT => ErrorKind::Io,
        _ => ErrorKind::Other,
    };
    let message = format!("fic-rs transport failed: {error}");
    azure_core::Error::with_error(kind, error, message)
}

#[cfg(test)]
mod tests {
    use fic_oauth_core::ServerError;

    use super::*;

    #[test]
    fn keeps_the_code_the_aadsts_number_and_the_source() {
        let mut body = ServerError::default();
        body.status = 401;
        body.error = "invalid_client".into();
        body.error_description = Some("AADSTS7000215: Invalid client secret provided.".into());
        let err = to_azure_error(Error::from_server(body));
        let text = err.to_string();
        assert!(text.contains("invalid_client"), "{text}");
        // Already in the description: not repeated.
        assert_eq!(text.matches("AADSTS7000215").count(), 1, "{text}");
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert_eq!(
            source.as_deref(),
            Some("invalid_client: AADSTS7000215: Invalid client secret provided.")
        );
        assert_eq!(
            err.downcast_ref::<Error>().map(|e| e.code().as_str()),
            Some("invalid_client")
        );
    }

    #[test]
    fn transport_kinds() {
        let kind = |code| transport_error(Error::new(code, "x")).kind().clone();
        assert_eq!(kind(ErrorCode::CONNECTION_FAILED), ErrorKind::Connection);
        assert_eq!(kind(ErrorCode::TLS_HANDSHAKE_FAILED), ErrorKind::Connection);
        assert_eq!(kind(ErrorCode::TIMEOUT), ErrorKind::Io);
        assert_eq!(kind(ErrorCode::TRANSPORT), ErrorKind::Io);
        assert_eq!(kind(ErrorCode::INSECURE_TRANSPORT), ErrorKind::Other);
        assert_eq!(kind(ErrorCode::RESPONSE_TOO_LARGE), ErrorKind::Other);
    }
}
