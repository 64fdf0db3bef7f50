//! The scheme, host and port a request goes to, read from its URI.

use std::fmt;
use std::net::IpAddr;

use fic_oauth_core::{Error, ErrorCode};
use http::Uri;

/// `http` or `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub(crate) fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// Where a request goes: scheme, normalized host (lower case, no brackets, no trailing dot)
/// and port (the scheme's default when the URI has none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) scheme: Scheme,
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Target {
    /// Reads the target of an absolute `http`/`https` URI. Messages name at most the scheme
    /// and host, never the path or query.
    pub(crate) fn from_uri(uri: &Uri) -> Result<Self, Error> {
        let scheme = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => Scheme::Https,
            Some(s) if s.eq_ignore_ascii_case("http") => Scheme::Http,
            Some(_) => {
                return Err(Error::new(
                    ErrorCode::INVALID_ARGUMENT,
                    "only http and https URLs are supported",
                ))
            }
            None => {
                return Err(Error::new(
                    ErrorCode::INVALID_ARGUMENT,
                    "the request URL must be absolute (scheme and host)",
                ))
            }
        };
        let authority = uri.authority().ok_or_else(|| {
            Error::new(
                ErrorCode::INVALID_ARGUMENT,
                "the request URL must be absolute (scheme and host)",
            )
        })?;
        if authority.as_str().contains('@') {
            return Err(Error::new(
                ErrorCode::INVALID_ARGUMENT,
                "URLs with user information are not supported",
            ));
        }
        let host = normalize_host(authority.host());
        if host.is_empty() {
            return Err(Error::new(
                ErrorCode::INVALID_ARGUMENT,
                "the request URL has an empty host",
            ));
        }
        let port = authority.port_u16().unwrap_or(scheme.default_port());
        Ok(Self { scheme, host, port })
    }

    /// The host as an IP address, when it is an IP literal.
    pub(crate) fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for Target {
    /// `scheme://host:port`, IPv6 hosts in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(
                f,
                "{}://[{}]:{}",
                self.scheme.as_str(),
                self.host,
                self.port
            )
        } else {
            write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port)
        }
    }
}

/// Lower case, without IPv6 brackets and without a trailing dot.
pub(crate) fn normalize_host(host: &str) -> String {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    host.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(uri: &str) -> Result<Target, Error> {
        Target::from_uri(&uri.parse::<Uri>().unwrap())
    }

    #[test]
    fn reads_scheme_host_and_port() {
        let t = target("https://Login.MicrosoftOnline.com./tenant/oauth2/v2.0/token?x=1").unwrap();
        assert_eq!(t.scheme, Scheme::Https);
        assert_eq!(t.host, "login.microsoftonline.com");
        assert_eq!(t.port, 443);
        assert_eq!(t.to_string(), "https://login.microsoftonline.com:443");

        let t = target("http://169.254.169.254/metadata").unwrap();
        assert_eq!((t.scheme, t.port), (Scheme::Http, 80));
        assert_eq!(t.ip(), Some(IpAddr::from([169, 254, 169, 254])));

        let t = target("http://[::1]:8080/").unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(t.port, 8080);
        assert_eq!(t.to_string(), "http://[::1]:8080");
    }

    #[test]
    fn refuses_what_it_cannot_send() {
        for uri in [
            "/relative",
            "ftp://example.com/",
            "https://user:pw@example.com/",
        ] {
            let err = target(uri).unwrap_err();
            assert_eq!(err.code(), &ErrorCode::INVALID_ARGUMENT, "{uri}");
            assert!(!err.message().contains("pw"), "{err}");
        }
    }
}
