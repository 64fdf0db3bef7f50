//! Clouds and host names: which host is a login, regional, mtlsauth or resource host, and the
//! patterns the resolver map and the server certificate cover.

use crate::util::host_matches;

/// A Microsoft Entra cloud the emulator serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cloud {
    /// The public cloud (`login.microsoftonline.com`).
    Public,
    /// Azure US Government (`login.microsoftonline.us`).
    UsGov,
    /// Azure China, operated by 21Vianet (`login.partner.microsoftonline.cn`).
    China,
    /// The French sovereign cloud (`login.sovcloud-identity.fr`).
    France,
    /// The German sovereign cloud (`login.sovcloud-identity.de`).
    Germany,
    /// The Singapore sovereign cloud (`login.sovcloud-identity.sg`).
    Singapore,
}

impl Cloud {
    /// Every cloud.
    pub const ALL: [Cloud; 6] = [
        Cloud::Public,
        Cloud::UsGov,
        Cloud::China,
        Cloud::France,
        Cloud::Germany,
        Cloud::Singapore,
    ];

    /// The cloud's primary login host, used in issued `iss` values.
    pub fn login_host(self) -> &'static str {
        match self {
            Cloud::Public => "login.microsoftonline.com",
            Cloud::UsGov => "login.microsoftonline.us",
            Cloud::China => "login.partner.microsoftonline.cn",
            Cloud::France => "login.sovcloud-identity.fr",
            Cloud::Germany => "login.sovcloud-identity.de",
            Cloud::Singapore => "login.sovcloud-identity.sg",
        }
    }

    /// Other names of the login host (bearer only).
    pub fn login_aliases(self) -> &'static [&'static str] {
        match self {
            Cloud::Public => &[
                "login.windows.net",
                "login.microsoft.com",
                "sts.windows.net",
            ],
            Cloud::UsGov => &["login.usgovcloudapi.net"],
            Cloud::China => &["login.chinacloudapi.cn"],
            _ => &[],
        }
    }

    /// The host regional bearer hosts are made from (`{region}.{host}`).
    pub fn regional_base(self) -> &'static str {
        match self {
            Cloud::Public => "login.microsoft.com",
            other => other.login_host(),
        }
    }

    /// The global mTLS host (`mtlsauth.…`); regional ones are `{region}.{host}`.
    pub fn mtls_host(self) -> &'static str {
        match self {
            Cloud::Public => "mtlsauth.microsoft.com",
            Cloud::UsGov => "mtlsauth.microsoftonline.us",
            Cloud::China => "mtlsauth.partner.microsoftonline.cn",
            Cloud::France => "mtlsauth.sovcloud-identity.fr",
            Cloud::Germany => "mtlsauth.sovcloud-identity.de",
            Cloud::Singapore => "mtlsauth.sovcloud-identity.sg",
        }
    }

    /// The FIC token-exchange audience of the cloud (PROTOCOL §1): federated credentials and
    /// user FIC credentials presented in this cloud must have it. Singapore has no published
    /// value; the emulator uses `api://AzureADTokenExchangeSingapore` there, and its token
    /// endpoint issues tokens for it only once it is registered as a resource.
    pub fn token_exchange_audience(self) -> &'static str {
        match self {
            Cloud::Public => "api://AzureADTokenExchange",
            Cloud::UsGov => "api://AzureADTokenExchangeUSGov",
            Cloud::China => "api://AzureADTokenExchangeChina",
            Cloud::France => "api://AzureADTokenExchangeFrance",
            Cloud::Germany => "api://AzureADTokenExchangeGermany",
            Cloud::Singapore => "api://AzureADTokenExchangeSingapore",
        }
    }

    /// The token-exchange audience Microsoft publishes for the cloud (none for Singapore): the
    /// only exchange audience the cloud's token endpoint issues tokens for without a
    /// registration ([`Directory::add_resource`](crate::Directory::add_resource)).
    pub(crate) fn published_token_exchange_audience(self) -> Option<&'static str> {
        match self {
            Cloud::Singapore => None,
            other => Some(other.token_exchange_audience()),
        }
    }

    /// The cloud segment of FMI subjects (`/eid1/c/{segment}/…`).
    pub(crate) fn fmi_segment(self) -> &'static str {
        match self {
            Cloud::Public => "pub",
            Cloud::UsGov => "usg",
            Cloud::China => "chn",
            Cloud::France => "fra",
            Cloud::Germany => "deu",
            Cloud::Singapore => "sgp",
        }
    }

    /// The issuer of v2.0 tokens for `tenant_id` in this cloud.
    pub fn issuer(self, tenant_id: &str) -> String {
        format!("https://{}/{tenant_id}/v2.0", self.login_host())
    }
}

/// What a host name is, for the HTTPS listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HostKind {
    /// A login host: global (`region` is `None`) or regional.
    Login {
        cloud: Cloud,
        region: Option<String>,
    },
    /// An mtlsauth host: global or regional.
    Mtls {
        cloud: Cloud,
        region: Option<String>,
    },
    /// Anything else (maybe a resource host; the directory decides).
    Other,
}

fn region_of(host: &str, base: &str) -> Option<String> {
    let prefix = host.strip_suffix(base)?.strip_suffix('.')?;
    (!prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| prefix.to_owned())
}

/// Classifies `host` (lower-cased, without port).
pub(crate) fn classify(host: &str) -> HostKind {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    for cloud in Cloud::ALL {
        if host == cloud.login_host() || cloud.login_aliases().contains(&host.as_str()) {
            return HostKind::Login {
                cloud,
                region: None,
            };
        }
        if host == cloud.mtls_host() {
            return HostKind::Mtls {
                cloud,
                region: None,
            };
        }
        if let Some(region) = region_of(&host, cloud.mtls_host()) {
            return HostKind::Mtls {
                cloud,
                region: Some(region),
            };
        }
        if let Some(region) = region_of(&host, cloud.regional_base()) {
            return HostKind::Login {
                cloud,
                region: Some(region),
            };
        }
    }
    HostKind::Other
}

/// The identity host patterns served on the HTTPS listener (resolver map and certificate SANs).
pub(crate) fn identity_host_patterns() -> Vec<String> {
    let mut out = Vec::new();
    for cloud in Cloud::ALL {
        out.push(cloud.login_host().to_owned());
        out.extend(cloud.login_aliases().iter().map(|h| (*h).to_owned()));
        out.push(format!("*.{}", cloud.regional_base()));
        out.push(cloud.mtls_host().to_owned());
        out.push(format!("*.{}", cloud.mtls_host()));
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|h| seen.insert(h.clone()));
    out
}

/// True when some pattern of `patterns` matches `host`.
pub(crate) fn any_matches(patterns: &[String], host: &str) -> bool {
    patterns.iter().any(|p| host_matches(p, host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_hosts() {
        assert_eq!(
            classify("login.microsoftonline.com"),
            HostKind::Login {
                cloud: Cloud::Public,
                region: None
            }
        );
        assert_eq!(
            classify("westus3.login.microsoft.com"),
            HostKind::Login {
                cloud: Cloud::Public,
                region: Some("westus3".into())
            }
        );
        assert_eq!(
            classify("mtlsauth.microsoft.com"),
            HostKind::Mtls {
                cloud: Cloud::Public,
                region: None
            }
        );
        assert_eq!(
            classify("EastUS.mtlsauth.microsoft.com"),
            HostKind::Mtls {
                cloud: Cloud::Public,
                region: Some("eastus".into())
            }
        );
        assert_eq!(
            classify("westus.mtlsauth.microsoftonline.us"),
            HostKind::Mtls {
                cloud: Cloud::UsGov,
                region: Some("westus".into())
            }
        );
        assert_eq!(classify("graph.microsoft.com"), HostKind::Other);
        assert_eq!(classify("a.b.login.microsoft.com"), HostKind::Other);
    }

    #[test]
    fn patterns_cover_every_identity_host() {
        let patterns = identity_host_patterns();
        for host in [
            "login.microsoftonline.com",
            "sts.windows.net",
            "westus3.login.microsoft.com",
            "mtlsauth.microsoft.com",
            "westus3.mtlsauth.microsoft.com",
            "login.sovcloud-identity.sg",
            "x.mtlsauth.sovcloud-identity.fr",
            "mtlsauth.partner.microsoftonline.cn",
        ] {
            assert!(any_matches(&patterns, host), "{host}");
        }
    }
}
