//! Authorities, clouds, regions and token endpoints (PROTOCOL §1).
//!
//! ```
//! use fic_oauth_core::authority::{Authority, EndpointOptions, Region};
//!
//! let authority = Authority::parse("https://login.microsoftonline.com/contoso.onmicrosoft.com/")?;
//! assert_eq!(authority.token_exchange_audience(), Some("api://AzureADTokenExchange"));
//!
//! // Plain Bearer, global host.
//! let endpoint = authority.token_endpoint(&EndpointOptions::default())?;
//! assert_eq!(
//!     endpoint.url().as_str(),
//!     "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
//! );
//!
//! // mTLS (a certificate is presented), regional.
//! let region = Region::parse("westus3")?;
//! let endpoint = authority.token_endpoint(&EndpointOptions::mtls().with_region(Some(region)))?;
//! assert_eq!(
//!     endpoint.url().as_str(),
//!     "https://westus3.mtlsauth.microsoft.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
//! );
//! # Ok::<(), fic_oauth_core::Error>(())
//! ```

use std::collections::HashMap;
use std::fmt;

use url::Url;

use crate::error::{Error, ErrorCode};

/// The kind of an authority; decides the token endpoint shape, whether mTLS hosts are rewritten,
/// and how client assertions are signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthorityKind {
    /// Microsoft Entra ID (`https://login.microsoftonline.com/{tenant}/`).
    Aad,
    /// dSTS (`https://{host}/dstsv2/{tenant}/`).
    Dsts,
    /// AD FS (`https://{host}/adfs/`).
    Adfs,
    /// Azure AD B2C (`https://{tenant}.b2clogin.com/tfp/{tenant}/{policy}/`).
    B2c,
    /// Microsoft Entra External ID (CIAM, `https://{tenant}.ciamlogin.com/{tenant}/`).
    Ciam,
    /// Any other OpenID Connect provider, with an explicit token endpoint.
    Generic,
}

impl AuthorityKind {
    /// Whether client assertions use SHA-2: `PS256` with `x5t#S256` (AAD, B2C, CIAM), rather
    /// than `RS256` with `x5t` (ADFS, dSTS, generic).
    pub fn uses_sha2_assertions(self) -> bool {
        matches!(self, Self::Aad | Self::B2c | Self::Ciam)
    }
}

/// A known Microsoft cloud.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cloud {
    /// The public cloud (`login.microsoftonline.com`).
    Public,
    /// Azure US Government (`login.microsoftonline.us`).
    UsGovernment,
    /// Azure operated by 21Vianet (`login.partner.microsoftonline.cn`).
    China,
    /// The French sovereign cloud, Bleu (`login.sovcloud-identity.fr`).
    France,
    /// The German sovereign cloud, Delos (`login.sovcloud-identity.de`).
    Germany,
    /// The Singapore government cloud (`login.sovcloud-identity.sg`).
    Singapore,
}

impl Cloud {
    /// Every known cloud.
    pub const ALL: [Cloud; 6] = [
        Cloud::Public,
        Cloud::UsGovernment,
        Cloud::China,
        Cloud::France,
        Cloud::Germany,
        Cloud::Singapore,
    ];

    /// The cloud's preferred login host.
    pub fn login_host(self) -> &'static str {
        match self {
            Self::Public => "login.microsoftonline.com",
            Self::UsGovernment => "login.microsoftonline.us",
            Self::China => "login.partner.microsoftonline.cn",
            Self::France => "login.sovcloud-identity.fr",
            Self::Germany => "login.sovcloud-identity.de",
            Self::Singapore => "login.sovcloud-identity.sg",
        }
    }

    /// Every host that names this cloud's Entra ID (the preferred one first).
    pub fn hosts(self) -> &'static [&'static str] {
        match self {
            Self::Public => &[
                "login.microsoftonline.com",
                "login.windows.net",
                "login.microsoft.com",
                "sts.windows.net",
            ],
            Self::UsGovernment => &["login.microsoftonline.us", "login.usgovcloudapi.net"],
            Self::China => &["login.partner.microsoftonline.cn", "login.chinacloudapi.cn"],
            Self::France => &["login.sovcloud-identity.fr"],
            Self::Germany => &["login.sovcloud-identity.de"],
            Self::Singapore => &["login.sovcloud-identity.sg"],
        }
    }

    /// The audience of Leg-1 tokens for a federated identity credential exchange in this cloud
    /// (`None` where Microsoft publishes none: Singapore; configure it explicitly there).
    pub fn token_exchange_audience(self) -> Option<&'static str> {
        match self {
            Self::Public => Some("api://AzureADTokenExchange"),
            Self::UsGovernment => Some("api://AzureADTokenExchangeUSGov"),
            Self::China => Some("api://AzureADTokenExchangeChina"),
            Self::France => Some("api://AzureADTokenExchangeFrance"),
            Self::Germany => Some("api://AzureADTokenExchangeGermany"),
            Self::Singapore => None,
        }
    }

    /// The cloud a host belongs to (case-insensitive), if known.
    pub fn from_host(host: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|cloud| cloud.hosts().iter().any(|h| h.eq_ignore_ascii_case(host)))
    }
}

/// An Azure region name such as `westus3`, validated as `^[A-Za-z0-9]+$`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Region(String);

impl Region {
    /// Validates a region name.
    pub fn parse(name: &str) -> Result<Self, Error> {
        if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Ok(Self(name.to_string()))
        } else {
            Err(Error::new(
                ErrorCode::INVALID_ARGUMENT,
                format!(
                    "region {name:?} is not a valid Azure region name (letters and digits only)"
                ),
            ))
        }
    }

    /// The region as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Normalises a `REGION_NAME` value: spaces removed, lower-cased, then validated.
    pub fn from_region_name_variable(value: &str) -> Result<Self, Error> {
        let cleaned: String = value
            .chars()
            .filter(|c| *c != ' ')
            .collect::<String>()
            .to_lowercase();
        Self::parse(&cleaned)
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a confidential client chooses its region.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RegionConfig {
    /// No region: the global host.
    #[default]
    None,
    /// This region, validated when used (an invalid one falls back to the global host).
    Explicit(String),
    /// Detect the region once per process: `REGION_NAME`, then IMDS.
    AutoDetect,
}

impl RegionConfig {
    /// The value that, set explicitly, disables a region forced through `MSAL_FORCE_REGION`.
    pub const DISABLE_FORCE_REGION: &'static str = "DisableMsalForceRegion";

    /// Applies `MSAL_DISABLE_REGION` (any non-empty value removes the region) and
    /// `MSAL_FORCE_REGION` (supplies a region when none is configured) from an environment
    /// snapshot. The process environment is never read here.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use fic_oauth_core::authority::RegionConfig;
    ///
    /// let env = HashMap::from([("MSAL_FORCE_REGION".to_string(), "eastus".to_string())]);
    /// assert_eq!(RegionConfig::None.with_environment(&env), RegionConfig::Explicit("eastus".into()));
    /// ```
    #[must_use]
    pub fn with_environment(self, env: &HashMap<String, String>) -> Self {
        let non_empty = |name: &str| {
            env.get(name)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        if non_empty("MSAL_DISABLE_REGION").is_some() {
            return Self::None;
        }
        match self {
            Self::Explicit(name) if name == Self::DISABLE_FORCE_REGION => Self::None,
            Self::None => non_empty("MSAL_FORCE_REGION").map_or(Self::None, Self::Explicit),
            other => other,
        }
    }
}

/// An authority: where and as whom tokens are requested.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authority {
    kind: AuthorityKind,
    /// Canonical URL with a trailing slash, e.g. `https://login.microsoftonline.com/tenant/`.
    url: Url,
    host: String,
    tenant: String,
    /// Generic authorities: the explicit token endpoint.
    token_endpoint: Option<Url>,
}

/// How to reach the token endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointOptions {
    /// The (validated) region, if any.
    pub region: Option<Region>,
    /// Whether a TLS client certificate is presented (mTLS PoP or a jwt-pop assertion).
    pub mtls: bool,
}

impl EndpointOptions {
    /// Options for a request that presents a TLS client certificate.
    pub fn mtls() -> Self {
        Self {
            region: None,
            mtls: true,
        }
    }

    /// Sets the region.
    #[must_use]
    pub fn with_region(mut self, region: Option<Region>) -> Self {
        self.region = region;
        self
    }

    /// Sets whether a client certificate is presented.
    #[must_use]
    pub fn with_mtls(mut self, mtls: bool) -> Self {
        self.mtls = mtls;
        self
    }
}

/// A resolved token endpoint: the URL to POST to, and what it was derived from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenEndpoint {
    url: Url,
    kind: AuthorityKind,
    tenant: String,
    environment: String,
    mtls: bool,
}

impl TokenEndpoint {
    /// The URL (no query string).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The host actually called (regional or mtlsauth included).
    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or_default()
    }

    /// The authority kind.
    pub fn kind(&self) -> AuthorityKind {
        self.kind
    }

    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The authority host the cache files tokens under (the original, not the regional host).
    pub fn environment(&self) -> &str {
        &self.environment
    }

    /// Whether a TLS client certificate is presented to this endpoint.
    pub fn is_mtls(&self) -> bool {
        self.mtls
    }
}

impl fmt::Display for TokenEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url.as_str())
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::INVALID_AUTHORITY, message)
}

fn mtls_unsupported(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::MTLS_POP_NOT_SUPPORTED_FOR_ENVIRONMENT, message)
}

impl Authority {
    /// Parses an authority URL. The kind is inferred: `/adfs` → ADFS, `/dstsv2/` → dSTS,
    /// `*.b2clogin.com` or `/tfp/` → B2C, `*.ciamlogin.com` → CIAM, otherwise AAD.
    pub fn parse(authority: &str) -> Result<Self, Error> {
        let url = Url::parse(authority.trim())
            .map_err(|e| invalid(format!("authority {authority:?} is not a URL: {e}")))?;
        if url.scheme() != "https" {
            return Err(invalid(format!("authority {authority:?} must use https")));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(format!(
                "authority {authority:?} must not have a query or fragment"
            )));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid(format!("authority {authority:?} has no host")))?
            .to_ascii_lowercase();
        let segments: Vec<String> = url
            .path_segments()
            .map(|s| s.filter(|p| !p.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        let first = segments.first().map(|s| s.to_ascii_lowercase());
        let (kind, tenant, path): (AuthorityKind, String, Vec<String>) = match first.as_deref() {
            Some("adfs") => (AuthorityKind::Adfs, "adfs".into(), vec!["adfs".into()]),
            Some("dstsv2") => {
                let tenant = segments.get(1).cloned().ok_or_else(|| {
                    invalid("a dSTS authority needs a tenant: https://host/dstsv2/{tenant}/")
                })?;
                (
                    AuthorityKind::Dsts,
                    tenant.clone(),
                    vec!["dstsv2".into(), tenant],
                )
            }
            Some("tfp") => {
                if segments.len() < 3 {
                    return Err(invalid(
                        "a B2C authority needs a tenant and a policy: https://host/tfp/{tenant}/{policy}/",
                    ));
                }
                (
                    AuthorityKind::B2c,
                    segments[1].clone(),
                    segments[..3].to_vec(),
                )
            }
            _ if host.ends_with(".b2clogin.com") => {
                if segments.len() < 2 {
                    return Err(invalid(
                        "a B2C authority needs a tenant and a policy: https://host/{tenant}/{policy}/",
                    ));
                }
                (
                    AuthorityKind::B2c,
                    segments[0].clone(),
                    segments[..2].to_vec(),
                )
            }
            _ if host.ends_with(".ciamlogin.com") => {
                // `https://contoso.ciamlogin.com/` means the tenant contoso.onmicrosoft.com.
                let tenant = segments.first().cloned().unwrap_or_else(|| {
                    let label = host.split('.').next().unwrap_or_default();
                    format!("{label}.onmicrosoft.com")
                });
                (AuthorityKind::Ciam, tenant.clone(), vec![tenant])
            }
            Some(_) => {
                let tenant = segments[0].clone();
                (AuthorityKind::Aad, tenant.clone(), vec![tenant])
            }
            None => {
                return Err(invalid(format!(
                    "authority {authority:?} has no tenant: use https://{host}/{{tenant}}/"
                )))
            }
        };
        let canonical = format!("https://{host}{}/{}/", port_suffix(&url), path.join("/"));
        let url = Url::parse(&canonical).map_err(|e| invalid(e.to_string()))?;
        Ok(Self {
            kind,
            url,
            host,
            tenant,
            token_endpoint: None,
        })
    }

    /// An Entra ID authority for `tenant` in `cloud`.
    pub fn aad(cloud: Cloud, tenant: &str) -> Result<Self, Error> {
        Self::parse(&format!("https://{}/{tenant}/", cloud.login_host()))
    }

    /// A generic OpenID Connect authority with an explicit token endpoint.
    pub fn generic(issuer: &str, token_endpoint: &str) -> Result<Self, Error> {
        let url = Url::parse(issuer).map_err(|e| invalid(format!("issuer: {e}")))?;
        let endpoint =
            Url::parse(token_endpoint).map_err(|e| invalid(format!("token endpoint: {e}")))?;
        if endpoint.scheme() != "https" {
            return Err(invalid("the token endpoint must use https"));
        }
        let host = url
            .host_str()
            .ok_or_else(|| invalid("the issuer has no host"))?
            .to_ascii_lowercase();
        Ok(Self {
            kind: AuthorityKind::Generic,
            url,
            host,
            tenant: String::new(),
            token_endpoint: Some(endpoint),
        })
    }

    /// The kind.
    pub fn kind(&self) -> AuthorityKind {
        self.kind
    }

    /// The canonical URL (trailing slash).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The host, lower-cased.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The tenant (id, domain, `common`, `organizations`...).
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The known cloud of an AAD authority.
    pub fn cloud(&self) -> Option<Cloud> {
        match self.kind {
            AuthorityKind::Aad => Cloud::from_host(&self.host),
            _ => None,
        }
    }

    /// Whether the tenant names one tenant (not `common` or `organizations`).
    pub fn is_tenanted(&self) -> bool {
        !(self.tenant.eq_ignore_ascii_case("common")
            || self.tenant.eq_ignore_ascii_case("organizations"))
    }

    /// The same authority with another tenant (AAD, CIAM, dSTS).
    pub fn with_tenant(&self, tenant: &str) -> Result<Self, Error> {
        match self.kind {
            AuthorityKind::Aad | AuthorityKind::Ciam => Self::parse(&format!(
                "https://{}{}/{tenant}/",
                self.host,
                port_suffix(&self.url)
            )),
            AuthorityKind::Dsts => Self::parse(&format!(
                "https://{}{}/dstsv2/{tenant}/",
                self.host,
                port_suffix(&self.url)
            )),
            _ => Err(invalid(format!(
                "the tenant of a {:?} authority cannot be changed",
                self.kind
            ))),
        }
    }

    /// The FIC token-exchange audience of this authority's cloud (AAD authorities of known
    /// clouds; `api://AzureADTokenExchange` for other AAD hosts).
    pub fn token_exchange_audience(&self) -> Option<&'static str> {
        match (self.kind, self.cloud()) {
            (AuthorityKind::Aad, Some(cloud)) => cloud.token_exchange_audience(),
            (AuthorityKind::Aad, None) => Cloud::Public.token_exchange_audience(),
            _ => None,
        }
    }

    /// The token endpoint to call, with the region and mTLS host rules of PROTOCOL §1.
    pub fn token_endpoint(&self, options: &EndpointOptions) -> Result<TokenEndpoint, Error> {
        let make = |url: Url| TokenEndpoint {
            url,
            kind: self.kind,
            tenant: self.tenant.clone(),
            environment: self.host.clone(),
            mtls: options.mtls,
        };
        match self.kind {
            AuthorityKind::Generic => {
                let url = self
                    .token_endpoint
                    .clone()
                    .ok_or_else(|| invalid("a generic authority needs a token endpoint"))?;
                Ok(make(url))
            }
            AuthorityKind::Adfs => Ok(make(self.join("oauth2/token")?)),
            AuthorityKind::Dsts | AuthorityKind::B2c | AuthorityKind::Ciam => {
                Ok(make(self.join("oauth2/v2.0/token")?))
            }
            AuthorityKind::Aad => {
                let host = aad_host(&self.host, options)?;
                let url = Url::parse(&format!(
                    "https://{host}{}/{}/oauth2/v2.0/token",
                    port_suffix(&self.url),
                    self.tenant
                ))
                .map_err(|e| invalid(e.to_string()))?;
                Ok(make(url))
            }
        }
    }

    fn join(&self, path: &str) -> Result<Url, Error> {
        self.url.join(path).map_err(|e| invalid(e.to_string()))
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url.as_str())
    }
}

fn port_suffix(url: &Url) -> String {
    url.port().map(|p| format!(":{p}")).unwrap_or_default()
}

/// The AAD host to call: PROTOCOL §1's table.
fn aad_host(host: &str, options: &EndpointOptions) -> Result<String, Error> {
    let public = Cloud::Public.hosts().contains(&host);
    if options.mtls {
        match host {
            "login.usgovcloudapi.net" => {
                return Err(mtls_unsupported(
                    "mTLS PoP is not supported on login.usgovcloudapi.net; use login.microsoftonline.us",
                ))
            }
            "login.chinacloudapi.cn" => {
                return Err(mtls_unsupported(
                    "mTLS PoP is not supported on login.chinacloudapi.cn; use login.partner.microsoftonline.cn",
                ))
            }
            _ => {}
        }
        let Some(rest) = host.strip_prefix("login.") else {
            return Err(mtls_unsupported(format!(
                "mTLS PoP is not supported for {host}: only login.* hosts have an mtlsauth endpoint"
            )));
        };
        let global = if public {
            "mtlsauth.microsoft.com".to_string()
        } else {
            format!("mtlsauth.{rest}")
        };
        return Ok(match &options.region {
            Some(region) => format!("{}.{global}", region.as_str().to_ascii_lowercase()),
            None => global,
        });
    }
    Ok(match &options.region {
        None => host.to_string(),
        Some(region) => {
            let region = region.as_str().to_ascii_lowercase();
            if public {
                format!("{region}.login.microsoft.com")
            } else {
                let preferred = Cloud::from_host(host).map_or(host, |c| c.login_host());
                format!("{region}.{preferred}")
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(authority: &str, region: Option<&str>, mtls: bool) -> Result<String, Error> {
        let options = EndpointOptions {
            region: region.map(|r| Region::parse(r).unwrap()),
            mtls,
        };
        Authority::parse(authority)?
            .token_endpoint(&options)
            .map(|e| e.url().to_string())
    }

    #[test]
    fn mtls_host_table_global_and_regional() {
        let rows = [
            ("login.microsoftonline.com", "mtlsauth.microsoft.com"),
            ("login.windows.net", "mtlsauth.microsoft.com"),
            ("login.microsoft.com", "mtlsauth.microsoft.com"),
            ("login.microsoftonline.us", "mtlsauth.microsoftonline.us"),
            (
                "login.partner.microsoftonline.cn",
                "mtlsauth.partner.microsoftonline.cn",
            ),
            (
                "login.sovcloud-identity.fr",
                "mtlsauth.sovcloud-identity.fr",
            ),
            (
                "login.sovcloud-identity.de",
                "mtlsauth.sovcloud-identity.de",
            ),
            (
                "login.sovcloud-identity.sg",
                "mtlsauth.sovcloud-identity.sg",
            ),
            ("login.myLocalAAD.com", "mtlsauth.mylocalaad.com"),
        ];
        for (authority_host, mtls_host) in rows {
            let authority = format!("https://{authority_host}/tid/");
            assert_eq!(
                endpoint(&authority, None, true).unwrap(),
                format!("https://{mtls_host}/tid/oauth2/v2.0/token"),
                "{authority_host} global"
            );
            assert_eq!(
                endpoint(&authority, Some("eastus"), true).unwrap(),
                format!("https://eastus.{mtls_host}/tid/oauth2/v2.0/token"),
                "{authority_host} regional"
            );
        }
    }

    #[test]
    fn mtls_host_table_error_rows() {
        for host in [
            "login.usgovcloudapi.net",
            "login.chinacloudapi.cn",
            "sts.windows.net",
            "login-us.microsoftonline.com",
            "eastus.login.microsoft.com",
            "mtlsauth.microsoft.com",
        ] {
            for region in [None, Some("westus3")] {
                let err = endpoint(&format!("https://{host}/tid/"), region, true).unwrap_err();
                assert_eq!(
                    err.code(),
                    &ErrorCode::MTLS_POP_NOT_SUPPORTED_FOR_ENVIRONMENT,
                    "{host}"
                );
            }
        }
        let err = endpoint("https://login.usgovcloudapi.net/t/", None, true).unwrap_err();
        assert!(err.message().contains("login.microsoftonline.us"));
        let err = endpoint("https://login.chinacloudapi.cn/t/", None, true).unwrap_err();
        assert!(err.message().contains("login.partner.microsoftonline.cn"));
    }

    #[test]
    fn bearer_hosts_global_and_regional() {
        assert_eq!(
            endpoint("https://login.microsoftonline.com/tid", None, false).unwrap(),
            "https://login.microsoftonline.com/tid/oauth2/v2.0/token"
        );
        assert_eq!(
            endpoint(
                "https://login.microsoftonline.com/tid",
                Some("westus3"),
                false
            )
            .unwrap(),
            "https://westus3.login.microsoft.com/tid/oauth2/v2.0/token"
        );
        assert_eq!(
            endpoint(
                "https://login.microsoftonline.us/tid",
                Some("usgovvirginia"),
                false
            )
            .unwrap(),
            "https://usgovvirginia.login.microsoftonline.us/tid/oauth2/v2.0/token"
        );
        assert_eq!(
            endpoint("https://login.usgovcloudapi.net/tid", Some("r1"), false).unwrap(),
            "https://r1.login.microsoftonline.us/tid/oauth2/v2.0/token"
        );
    }

    #[test]
    fn other_authority_kinds() {
        assert_eq!(
            endpoint("https://dsts.example.com/dstsv2/tenant1", None, true).unwrap(),
            "https://dsts.example.com/dstsv2/tenant1/oauth2/v2.0/token"
        );
        assert_eq!(
            endpoint(
                "https://dsts.example.com/dstsv2/tenant1",
                Some("eastus"),
                true
            )
            .unwrap(),
            "https://dsts.example.com/dstsv2/tenant1/oauth2/v2.0/token"
        );
        assert_eq!(
            endpoint("https://adfs.contoso.com/adfs/", None, true).unwrap(),
            "https://adfs.contoso.com/adfs/oauth2/token"
        );
        assert_eq!(
            endpoint("https://contoso.b2clogin.com/tfp/contoso.onmicrosoft.com/B2C_1_signin/", None, false).unwrap(),
            "https://contoso.b2clogin.com/tfp/contoso.onmicrosoft.com/B2C_1_signin/oauth2/v2.0/token"
        );
        assert_eq!(
            endpoint("https://contoso.ciamlogin.com/", None, false).unwrap(),
            "https://contoso.ciamlogin.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        let kinds = [
            ("https://adfs.contoso.com/adfs", AuthorityKind::Adfs),
            (
                "https://x.b2clogin.com/x.onmicrosoft.com/B2C_1_a",
                AuthorityKind::B2c,
            ),
            (
                "https://x.ciamlogin.com/x.onmicrosoft.com",
                AuthorityKind::Ciam,
            ),
            ("https://d.example/dstsv2/t", AuthorityKind::Dsts),
            ("https://login.microsoftonline.com/t", AuthorityKind::Aad),
        ];
        for (url, kind) in kinds {
            assert_eq!(Authority::parse(url).unwrap().kind(), kind, "{url}");
        }
        let generic =
            Authority::generic("https://idp.example.com", "https://idp.example.com/token").unwrap();
        assert_eq!(
            generic
                .token_endpoint(&EndpointOptions::mtls())
                .unwrap()
                .url()
                .as_str(),
            "https://idp.example.com/token"
        );
        assert!(!generic.kind().uses_sha2_assertions());
    }

    #[test]
    fn malformed_authorities_are_errors() {
        for bad in [
            "not a url",
            "http://login.microsoftonline.com/t/",
            "https://login.microsoftonline.com/",
            "https://login.microsoftonline.com/t/?x=1",
            "https://d.example/dstsv2/",
            "https://x.b2clogin.com/tfp/only-tenant/",
        ] {
            assert_eq!(
                Authority::parse(bad).unwrap_err().code(),
                &ErrorCode::INVALID_AUTHORITY,
                "{bad}"
            );
        }
    }

    #[test]
    fn tenanted_rule_and_environment() {
        for (tenant, tenanted) in [
            ("common", false),
            ("Organizations", false),
            ("consumers", true),
            ("contoso.onmicrosoft.com", true),
            ("9188040d-6c67-4c5b-b112-36a304b66dad", true),
        ] {
            let authority =
                Authority::parse(&format!("https://login.microsoftonline.com/{tenant}/")).unwrap();
            assert_eq!(authority.is_tenanted(), tenanted, "{tenant}");
        }
        let endpoint = Authority::parse("https://LOGIN.microsoftonline.com/t/")
            .unwrap()
            .token_endpoint(&EndpointOptions::mtls())
            .unwrap();
        assert_eq!(endpoint.environment(), "login.microsoftonline.com");
        assert_eq!(endpoint.host(), "mtlsauth.microsoft.com");
        assert!(endpoint.is_mtls());
        let other = Authority::parse("https://login.microsoftonline.com/common/")
            .unwrap()
            .with_tenant("t2")
            .unwrap();
        assert_eq!(other.tenant(), "t2");
    }

    #[test]
    fn clouds_and_exchange_audiences() {
        let rows = [
            (
                "login.microsoftonline.com",
                Some("api://AzureADTokenExchange"),
            ),
            ("login.windows.net", Some("api://AzureADTokenExchange")),
            (
                "login.microsoftonline.us",
                Some("api://AzureADTokenExchangeUSGov"),
            ),
            (
                "login.usgovcloudapi.net",
                Some("api://AzureADTokenExchangeUSGov"),
            ),
            (
                "login.partner.microsoftonline.cn",
                Some("api://AzureADTokenExchangeChina"),
            ),
            (
                "login.sovcloud-identity.fr",
                Some("api://AzureADTokenExchangeFrance"),
            ),
            (
                "login.sovcloud-identity.de",
                Some("api://AzureADTokenExchangeGermany"),
            ),
            ("login.sovcloud-identity.sg", None),
        ];
        for (host, audience) in rows {
            let authority = Authority::parse(&format!("https://{host}/t/")).unwrap();
            assert_eq!(authority.token_exchange_audience(), audience, "{host}");
        }
        assert_eq!(Cloud::from_host("LOGIN.WINDOWS.NET"), Some(Cloud::Public));
        assert_eq!(Cloud::from_host("login.example.com"), None);
    }

    #[test]
    fn region_validation() {
        for good in ["westus3", "EastUS", "centraluseuap", "1"] {
            assert!(Region::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "west us", "west-us", "westus3.", "wéstus", "a/b"] {
            assert_eq!(
                Region::parse(bad).unwrap_err().code(),
                &ErrorCode::INVALID_ARGUMENT,
                "{bad:?}"
            );
        }
        assert_eq!(
            Region::from_region_name_variable("West US 3")
                .unwrap()
                .as_str(),
            "westus3"
        );
        assert!(Region::from_region_name_variable("west-us").is_err());
    }

    #[test]
    fn region_environment_overrides() {
        let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect()
        };
        let force = env(&[("MSAL_FORCE_REGION", "eastus")]);
        let disable = env(&[
            ("MSAL_DISABLE_REGION", "1"),
            ("MSAL_FORCE_REGION", "eastus"),
        ]);
        let empty_disable = env(&[
            ("MSAL_DISABLE_REGION", " "),
            ("MSAL_FORCE_REGION", "eastus"),
        ]);
        let explicit = RegionConfig::Explicit("westus3".into());

        assert_eq!(
            RegionConfig::None.with_environment(&force),
            RegionConfig::Explicit("eastus".into())
        );
        assert_eq!(explicit.clone().with_environment(&force), explicit);
        assert_eq!(
            RegionConfig::AutoDetect.with_environment(&force),
            RegionConfig::AutoDetect
        );
        assert_eq!(
            explicit.clone().with_environment(&disable),
            RegionConfig::None
        );
        assert_eq!(
            RegionConfig::AutoDetect.with_environment(&disable),
            RegionConfig::None
        );
        assert_eq!(
            RegionConfig::None.with_environment(&empty_disable),
            RegionConfig::Explicit("eastus".into())
        );
        assert_eq!(
            RegionConfig::Explicit(RegionConfig::DISABLE_FORCE_REGION.into())
                .with_environment(&force),
            RegionConfig::None
        );
        assert_eq!(
            RegionConfig::None.with_environment(&HashMap::new()),
            RegionConfig::None
        );
    }
}
