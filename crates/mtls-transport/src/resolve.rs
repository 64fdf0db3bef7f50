//! Resolver overrides: `host[:port]` (or `*.suffix[:port]`) → socket address.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use fic_oauth_core::{Error, ErrorCode};

use crate::target::normalize_host;

/// The host part of an override entry.
#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    /// This host name or IP literal only.
    Exact(String),
    /// Any name ending in this suffix (stored with its leading dot) with at least one label
    /// in front of it.
    Suffix(String),
}

/// One override entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Override {
    pattern: HostPattern,
    port: Option<u16>,
    addr: SocketAddr,
}

impl Override {
    /// Parses `host`, `host:port`, `*.suffix`, `*.suffix:port`, `[v6]`, `[v6]:port` or a bare
    /// IPv6 literal.
    pub(crate) fn parse(entry: &str, addr: SocketAddr) -> Result<Self, Error> {
        let invalid = |why: &str| {
            Error::new(
                ErrorCode::INVALID_ARGUMENT,
                format!("invalid resolver override {entry:?}: {why}"),
            )
        };
        let entry_trimmed = entry.trim();
        let (host, port) = if let Some(rest) = entry_trimmed.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or_else(|| invalid("missing ']'"))?;
            if inside.parse::<Ipv6Addr>().is_err() {
                return Err(invalid("not an IPv6 address in brackets"));
            }
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| invalid("expected ':port' after ']'"))?,
                ),
            };
            (inside, port)
        } else if entry_trimmed.parse::<Ipv6Addr>().is_ok() {
            (entry_trimmed, None)
        } else {
            match entry_trimmed.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (entry_trimmed, None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(invalid("the port must be a number from 1 to 65535")),
                Ok(p) => Some(p),
            },
        };
        let host = normalize_host(host);
        let pattern = if let Some(suffix) = host.strip_prefix("*.") {
            if !is_dns_name(suffix) {
                return Err(invalid("a pattern is '*.' followed by a host name"));
            }
            HostPattern::Suffix(format!(".{suffix}"))
        } else if host.parse::<IpAddr>().is_ok() || is_dns_name(&host) {
            HostPattern::Exact(host)
        } else {
            return Err(invalid("not a host name, IP address or '*.' pattern"));
        };
        Ok(Self {
            pattern,
            port,
            addr,
        })
    }

    /// How well this entry matches, or `None`. Higher is more specific: exact names beat
    /// patterns, longer patterns beat shorter ones, an explicit port beats the default one.
    fn rank(&self, host: &str, port: u16, default_port: u16) -> Option<(bool, usize, bool)> {
        let port_matches = match self.port {
            Some(p) => p == port,
            None => port == default_port,
        };
        if !port_matches {
            return None;
        }
        let explicit_port = self.port.is_some();
        match &self.pattern {
            HostPattern::Exact(name) => (name == host).then_some((true, 0, explicit_port)),
            HostPattern::Suffix(suffix) => {
                if host.parse::<IpAddr>().is_ok() {
                    return None;
                }
                let prefix = host.strip_suffix(suffix.as_str())?;
                let labels_ok = !prefix.is_empty() && prefix.split('.').all(|l| !l.is_empty());
                labels_ok.then_some((false, suffix.len(), explicit_port))
            }
        }
    }
}

/// The override table.
#[derive(Clone, Debug, Default)]
pub(crate) struct Overrides {
    entries: Vec<Override>,
}

impl Overrides {
    /// Adds an entry; an entry for the same pattern and port replaces the earlier one.
    pub(crate) fn insert(&mut self, entry: Override) {
        self.entries
            .retain(|e| !(e.pattern == entry.pattern && e.port == entry.port));
        self.entries.push(entry);
    }

    /// The address for `host` (normalized) and `port`, if an entry matches. An entry without
    /// a port matches the scheme's `default_port` only.
    pub(crate) fn lookup(&self, host: &str, port: u16, default_port: u16) -> Option<SocketAddr> {
        self.entries
            .iter()
            .filter_map(|e| e.rank(host, port, default_port).map(|rank| (rank, e.addr)))
            .max_by_key(|(rank, _)| *rank)
            .map(|(_, addr)| addr)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Dot-separated labels of letters, digits, `-` and `_`, none empty.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn table(entries: &[(&str, u16)]) -> Overrides {
        let mut t = Overrides::default();
        for (entry, port) in entries {
            t.insert(Override::parse(entry, addr(*port)).unwrap());
        }
        t
    }

    #[test]
    fn wildcard_matches_one_or_more_labels_and_nothing_else() {
        let t = table(&[("*.mtlsauth.microsoft.com:443", 1)]);
        assert_eq!(
            t.lookup("westus3.mtlsauth.microsoft.com", 443, 443),
            Some(addr(1))
        );
        assert_eq!(
            t.lookup("a.b.mtlsauth.microsoft.com", 443, 443),
            Some(addr(1))
        );
        for host in [
            "mtlsauth.microsoft.com",
            "mtlsauth.microsoft.com.evil.com",
            "evilmtlsauth.microsoft.com",
            ".mtlsauth.microsoft.com",
            "a..mtlsauth.microsoft.com",
            "westus3.mtlsauth.microsoft.co",
        ] {
            assert_eq!(t.lookup(host, 443, 443), None, "{host}");
        }
        assert_eq!(t.lookup("westus3.mtlsauth.microsoft.com", 8443, 443), None);
    }

    #[test]
    fn entries_without_port_match_the_default_port() {
        let t = table(&[("login.microsoftonline.com", 1), ("169.254.169.254", 2)]);
        assert_eq!(
            t.lookup("login.microsoftonline.com", 443, 443),
            Some(addr(1))
        );
        assert_eq!(t.lookup("login.microsoftonline.com", 80, 80), Some(addr(1)));
        assert_eq!(t.lookup("login.microsoftonline.com", 8443, 443), None);
        assert_eq!(t.lookup("169.254.169.254", 80, 80), Some(addr(2)));
        assert_eq!(t.lookup("169.254.169.254", 81, 80), None);
    }

    #[test]
    fn the_most_specific_entry_wins() {
        let t = table(&[
            ("*.microsoft.com", 1),
            ("*.mtlsauth.microsoft.com", 2),
            ("westus3.mtlsauth.microsoft.com", 3),
            ("westus3.mtlsauth.microsoft.com:443", 4),
        ]);
        assert_eq!(
            t.lookup("westus3.mtlsauth.microsoft.com", 443, 443),
            Some(addr(4))
        );
        assert_eq!(
            t.lookup("eastus.mtlsauth.microsoft.com", 443, 443),
            Some(addr(2))
        );
        assert_eq!(t.lookup("login.microsoft.com", 443, 443), Some(addr(1)));
        // The later entry for the same pattern and port replaces the earlier one.
        let t = table(&[
            ("login.microsoftonline.com:443", 1),
            ("LOGIN.microsoftonline.com.:443", 2),
        ]);
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.lookup("login.microsoftonline.com", 443, 443),
            Some(addr(2))
        );
    }

    #[test]
    fn ip_literals_and_ipv6() {
        let t = table(&[("[::1]:8443", 1), ("fe80::1", 2), ("*.0.1", 3)]);
        assert_eq!(t.lookup("::1", 8443, 443), Some(addr(1)));
        assert_eq!(t.lookup("fe80::1", 80, 80), Some(addr(2)));
        // Patterns never match IP literals.
        assert_eq!(t.lookup("127.0.0.1", 443, 443), None);
    }

    #[test]
    fn invalid_entries_are_refused() {
        for entry in [
            "",
            "*",
            "*.",
            "*.*.example.com",
            "a*.example.com",
            "example.com:0",
            "example.com:http",
            "example.com:70000",
            "[::1",
            "[not-v6]:443",
            "[::1]443",
            "exa mple.com",
            "example..com",
        ] {
            let err = Override::parse(entry, addr(1)).unwrap_err();
            assert_eq!(err.code(), &ErrorCode::INVALID_ARGUMENT, "{entry:?}");
        }
    }
}
