//! When plain `http` is acceptable.

use std::net::IpAddr;

use fic_oauth_core::{Error, ErrorCode};

use crate::target::{Scheme, Target};

/// Whether `target`'s host (as written in the URL) is a loopback or link-local address or
/// `localhost`. Where a resolver override sends the connection does not matter.
pub(crate) fn is_local(target: &Target) -> bool {
    if target.host == "localhost" {
        return true;
    }
    match target.ip().map(|ip| ip.to_canonical()) {
        Some(IpAddr::V4(v4)) => v4.is_loopback() || v4.is_link_local(),
        Some(IpAddr::V6(v6)) => v6.is_loopback() || (v6.segments()[0] & 0xffc0) == 0xfe80,
        None => false,
    }
}

/// Refuses plain `http` to other than local targets (unless `allow_plain_http`) and any
/// request with a client identity over plain `http`.
pub(crate) fn check(
    target: &Target,
    has_identity: bool,
    allow_plain_http: bool,
) -> Result<(), Error> {
    if target.scheme == Scheme::Https {
        return Ok(());
    }
    if has_identity {
        return Err(Error::new(
            ErrorCode::INSECURE_TRANSPORT,
            format!("a client certificate cannot be presented over plain http ({target})"),
        ));
    }
    if allow_plain_http || is_local(target) {
        return Ok(());
    }
    Err(Error::new(
        ErrorCode::INSECURE_TRANSPORT,
        format!(
            "plain http is only allowed to loopback and link-local hosts, not {target}; use https"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(uri: &str) -> Target {
        Target::from_uri(&uri.parse().unwrap()).unwrap()
    }

    #[test]
    fn local_hosts() {
        for uri in [
            "http://127.0.0.1/",
            "http://127.10.20.30:8080/",
            "http://localhost/",
            "http://LOCALHOST./",
            "http://[::1]/",
            "http://169.254.169.254/metadata",
            "http://169.254.0.1/",
            "http://[fe80::1]/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            assert!(is_local(&target(uri)), "{uri}");
            assert!(check(&target(uri), false, false).is_ok(), "{uri}");
        }
        for uri in [
            "http://login.microsoftonline.com/",
            "http://localhost.evil.com/",
            "http://10.0.0.1/",
            "http://169.255.0.1/",
            "http://[2001:db8::1]/",
            "http://[fec0::1]/",
        ] {
            assert!(!is_local(&target(uri)), "{uri}");
            let err = check(&target(uri), false, false).unwrap_err();
            assert_eq!(err.code(), &ErrorCode::INSECURE_TRANSPORT, "{uri}");
            assert!(check(&target(uri), false, true).is_ok(), "{uri}");
        }
    }

    #[test]
    fn identities_need_tls() {
        let err = check(&target("http://127.0.0.1/"), true, true).unwrap_err();
        assert_eq!(err.code(), &ErrorCode::INSECURE_TRANSPORT);
        assert!(check(&target("https://login.microsoftonline.com/"), true, false).is_ok());
        assert!(check(&target("https://example.com/"), false, false).is_ok());
    }
}
