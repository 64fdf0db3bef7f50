//! Maps hyper, hyper-util, rustls and I/O failures to oauth-core's transport codes.
//!
//! Messages name the target as `scheme://host:port` and the failure; never a path, a query, a
//! header or a body, so no token or secret can end up in them.

use std::error::Error as StdError;
use std::io;

use fic_oauth_core::{Error, ErrorCode};
use rustls::AlertDescription;

use crate::connector::{ConnectError, ConnectErrorKind};
use crate::target::Target;

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

/// The chain's messages joined with `": "`.
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

/// Alerts a server sends when it refuses the handshake, typically the client certificate.
/// With TLS 1.3 the client has finished its side before the server judges its certificate, so
/// these arrive on the first read of the response instead of during the handshake.
fn is_handshake_rejection(err: &rustls::Error) -> bool {
    matches!(
        err,
        rustls::Error::AlertReceived(
            AlertDescription::HandshakeFailure
                | AlertDescription::BadCertificate
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnknownCA
                | AlertDescription::AccessDenied
                | AlertDescription::DecryptError
                | AlertDescription::InsufficientSecurity
                | AlertDescription::CertificateRequired
        )
    )
}

/// Classifies the failure of one exchange with `target`.
pub(crate) fn classify<E>(err: E, target: &Target) -> Error
where
    E: StdError + Send + Sync + 'static,
{
    let (code, message) = code_and_message(&err, target);
    let retryable = code == ErrorCode::TIMEOUT
        || code == ErrorCode::CONNECTION_FAILED
        || code == ErrorCode::TRANSPORT;
    Error::new(code, message)
        .with_retryable(retryable)
        .with_source(err)
}

fn code_and_message(err: &(dyn StdError + 'static), target: &Target) -> (ErrorCode, String) {
    for e in chain(err) {
        if let Some(connect) = e.downcast_ref::<ConnectError>() {
            let code = match connect.kind {
                ConnectErrorKind::Unreachable => ErrorCode::CONNECTION_FAILED,
                ConnectErrorKind::Timeout => ErrorCode::TIMEOUT,
                ConnectErrorKind::Tls => ErrorCode::TLS_HANDSHAKE_FAILED,
                ConnectErrorKind::Other => ErrorCode::TRANSPORT,
            };
            return (code, connect.describe());
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            if is_handshake_rejection(tls) {
                return (
                    ErrorCode::TLS_HANDSHAKE_FAILED,
                    format!("{target} rejected the TLS handshake: {tls}"),
                );
            }
        }
        let timed_out = e
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut)
            || e.downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_timeout);
        if timed_out {
            return (
                ErrorCode::TIMEOUT,
                format!("request to {target} timed out: {}", describe(err)),
            );
        }
    }
    (
        ErrorCode::TRANSPORT,
        format!("request to {target} failed: {}", describe(err)),
    )
}

/// The total timeout passed.
pub(crate) fn timed_out(target: &Target, timeout: std::time::Duration) -> Error {
    Error::new(
        ErrorCode::TIMEOUT,
        format!(
            "request to {target} did not complete within {} ms",
            timeout.as_millis()
        ),
    )
    .with_retryable(true)
}

/// The response body is (or announces to be) larger than `limit`.
pub(crate) fn too_large(target: &Target, limit: usize, announced: Option<u64>) -> Error {
    let message = match announced {
        Some(length) => format!(
            "the response from {target} announces {length} bytes, more than the limit of {limit}"
        ),
        None => format!("the response from {target} is larger than the limit of {limit} bytes"),
    };
    Error::new(ErrorCode::RESPONSE_TOO_LARGE, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target::from_uri(
            &"https://westus3.mtlsauth.microsoft.com/t/oauth2/v2.0/token"
                .parse()
                .unwrap(),
        )
        .unwrap()
    }

    #[derive(Debug)]
    struct Outer(io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("outer")
        }
    }
    impl StdError for Outer {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn alerts_inside_io_errors_are_handshake_failures() {
        let io = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
        );
        let err = classify(Outer(io), &target());
        assert_eq!(err.code(), &ErrorCode::TLS_HANDSHAKE_FAILED);
        assert!(!err.is_retryable());
        assert!(
            err.message().contains("westus3.mtlsauth.microsoft.com:443"),
            "{err}"
        );
        assert!(!err.message().contains("oauth2"), "{err}");

        // Other alerts after the handshake are transport errors.
        let io = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::RecordOverflow),
        );
        assert_eq!(classify(Outer(io), &target()).code(), &ErrorCode::TRANSPORT);
    }

    #[test]
    fn timeouts_and_other_failures() {
        let err = classify(Outer(io::Error::from(io::ErrorKind::TimedOut)), &target());
        assert_eq!(err.code(), &ErrorCode::TIMEOUT);
        assert!(err.is_retryable());
        let err = classify(
            Outer(io::Error::from(io::ErrorKind::ConnectionReset)),
            &target(),
        );
        assert_eq!(err.code(), &ErrorCode::TRANSPORT);
        assert!(
            err.message().starts_with(
                "request to https://westus3.mtlsauth.microsoft.com:443 failed: outer: "
            ),
            "{err}"
        );
        assert!(err.source().is_some());
    }
}
