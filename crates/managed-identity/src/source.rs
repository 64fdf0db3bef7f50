//! The managed identity sources: detection from the environment (PROTOCOL §5), and the token
//! request each one takes.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use bytes::Bytes;
use fic_oauth_core::request::{CLIENT_SKU, CLIENT_VERSION};
use fic_oauth_core::{Error, ErrorCode, Secret};
use http::header::{HeaderValue, CONTENT_TYPE};
use url::Url;
use uuid::Uuid;

use crate::codes;
use crate::id::ManagedIdentityId;

/// The environment variables managed identity reads.
pub mod env {
    /// App Service, Service Fabric and Azure Arc: the token endpoint.
    pub const IDENTITY_ENDPOINT: &str = "IDENTITY_ENDPOINT";
    /// App Service and Service Fabric: the secret sent with each request.
    pub const IDENTITY_HEADER: &str = "IDENTITY_HEADER";
    /// Service Fabric: the SHA-1 thumbprint of the local endpoint's certificate.
    pub const IDENTITY_SERVER_THUMBPRINT: &str = "IDENTITY_SERVER_THUMBPRINT";
    /// Azure Arc (detection only).
    pub const IMDS_ENDPOINT: &str = "IMDS_ENDPOINT";
    /// Cloud Shell and Machine Learning: the token endpoint.
    pub const MSI_ENDPOINT: &str = "MSI_ENDPOINT";
    /// Machine Learning: the secret sent with each request.
    pub const MSI_SECRET: &str = "MSI_SECRET";
    /// Machine Learning: the client id of the compute's system-assigned identity.
    pub const DEFAULT_IDENTITY_CLIENT_ID: &str = "DEFAULT_IDENTITY_CLIENT_ID";

    /// Every variable above.
    pub const ALL: [&str; 7] = [
        IDENTITY_ENDPOINT,
        IDENTITY_HEADER,
        IDENTITY_SERVER_THUMBPRINT,
        IMDS_ENDPOINT,
        MSI_ENDPOINT,
        MSI_SECRET,
        DEFAULT_IDENTITY_CLIENT_ID,
    ];
}

/// The Azure Arc agent binary whose presence means "Azure Arc" on Linux.
pub const AZURE_ARC_AGENT_PATH: &str = "/opt/azcmagent/bin/himds";
/// The directory Azure Arc's challenge files must be in (Linux).
pub const AZURE_ARC_TOKEN_DIRECTORY: &str = "/var/opt/azcmagent/tokens/";
/// Azure Arc's token endpoint when `IDENTITY_ENDPOINT` is not set.
pub const AZURE_ARC_DEFAULT_ENDPOINT: &str =
    "http://127.0.0.1:40342/metadata/identity/oauth2/token";
/// The IMDS host.
pub const IMDS_BASE: &str = "http://169.254.169.254";
/// The IMDS v1 token path.
pub const IMDS_TOKEN_PATH: &str = "/metadata/identity/oauth2/token";

/// The managed identity variables of the current process (only those, and only UTF-8 values).
pub fn process_environment() -> HashMap<String, String> {
    env::ALL
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|v| ((*name).to_owned(), v)))
        .collect()
}

/// Where the host serves managed identity tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ManagedIdentitySource {
    /// The Azure Instance Metadata Service of VMs and scale sets (the default).
    Imds,
    /// App Service and Azure Functions.
    AppService,
    /// Azure Arc-enabled servers.
    AzureArc,
    /// Azure Cloud Shell.
    CloudShell,
    /// Service Fabric clusters.
    ServiceFabric,
    /// Azure Machine Learning compute.
    MachineLearning,
}

impl ManagedIdentitySource {
    /// A stable snake_case name (`imds`, `app_service`, `azure_arc`, `cloud_shell`,
    /// `service_fabric`, `machine_learning`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Imds => "imds",
            Self::AppService => "app_service",
            Self::AzureArc => "azure_arc",
            Self::CloudShell => "cloud_shell",
            Self::ServiceFabric => "service_fabric",
            Self::MachineLearning => "machine_learning",
        }
    }

    /// The `environment` component of this source's cache keys: `managed_identity.<name>`.
    pub fn cache_environment(self) -> &'static str {
        match self {
            Self::Imds => "managed_identity.imds",
            Self::AppService => "managed_identity.app_service",
            Self::AzureArc => "managed_identity.azure_arc",
            Self::CloudShell => "managed_identity.cloud_shell",
            Self::ServiceFabric => "managed_identity.service_fabric",
            Self::MachineLearning => "managed_identity.machine_learning",
        }
    }

    /// Detects the source from an environment snapshot, in PROTOCOL §5's order; a variable
    /// counts only when non-empty. `arc_agent_present` is asked only when no variable decides
    /// (it checks for the Azure Arc agent binary, [`AZURE_ARC_AGENT_PATH`]).
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use fic_managed_identity::ManagedIdentitySource;
    ///
    /// let mut env = HashMap::new();
    /// assert_eq!(ManagedIdentitySource::detect(&env, || false), ManagedIdentitySource::Imds);
    /// assert_eq!(ManagedIdentitySource::detect(&env, || true), ManagedIdentitySource::AzureArc);
    /// env.insert("IDENTITY_ENDPOINT".to_string(), "http://127.0.0.1:41234/msi/token".to_string());
    /// env.insert("IDENTITY_HEADER".to_string(), "secret".to_string());
    /// assert_eq!(ManagedIdentitySource::detect(&env, || false), ManagedIdentitySource::AppService);
    /// ```
    pub fn detect(env: &HashMap<String, String>, arc_agent_present: impl FnOnce() -> bool) -> Self {
        let set = |name: &str| env.get(name).is_some_and(|v| !v.is_empty());
        let (source, reason) = if set(env::IDENTITY_ENDPOINT)
            && set(env::IDENTITY_HEADER)
            && set(env::IDENTITY_SERVER_THUMBPRINT)
        {
            (
                Self::ServiceFabric,
                "IDENTITY_ENDPOINT, IDENTITY_HEADER and IDENTITY_SERVER_THUMBPRINT are set",
            )
        } else if set(env::IDENTITY_ENDPOINT) && set(env::IDENTITY_HEADER) {
            (
                Self::AppService,
                "IDENTITY_ENDPOINT and IDENTITY_HEADER are set",
            )
        } else if set(env::MSI_ENDPOINT) && set(env::MSI_SECRET) {
            (Self::MachineLearning, "MSI_ENDPOINT and MSI_SECRET are set")
        } else if set(env::MSI_ENDPOINT) {
            (Self::CloudShell, "MSI_ENDPOINT is set without MSI_SECRET")
        } else if set(env::IDENTITY_ENDPOINT) && set(env::IMDS_ENDPOINT) {
            (
                Self::AzureArc,
                "IDENTITY_ENDPOINT and IMDS_ENDPOINT are set",
            )
        } else if arc_agent_present() {
            (Self::AzureArc, "the Azure Arc agent binary exists")
        } else {
            (
                Self::Imds,
                "no managed identity variable is set and no Azure Arc agent was found",
            )
        };
        tracing::debug!(
            source = source.as_str(),
            reason,
            "detected managed identity source"
        );
        source
    }

    /// [`detect`](Self::detect) with the Azure Arc agent looked for at `arc_agent_path`.
    pub fn detect_with_agent_path(env: &HashMap<String, String>, arc_agent_path: &Path) -> Self {
        Self::detect(env, || arc_agent_path.is_file())
    }
}

impl fmt::Display for ManagedIdentitySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A source with what it needs from the environment, validated.
#[derive(Clone)]
pub(crate) enum SourceConfig {
    Imds,
    AppService {
        endpoint: Url,
        secret: Secret,
    },
    ServiceFabric {
        endpoint: Url,
        secret: Secret,
        thumbprint: String,
    },
    MachineLearning {
        endpoint: Url,
        secret: Secret,
        default_client_id: Option<String>,
    },
    CloudShell {
        endpoint: Url,
    },
    AzureArc {
        endpoint: Url,
    },
}

impl fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("SourceConfig");
        d.field("source", &self.source().as_str());
        if let Some(endpoint) = self.endpoint() {
            d.field("endpoint", &endpoint.as_str());
        }
        d.finish_non_exhaustive()
    }
}

/// The api-version of each source.
pub(crate) mod api_version {
    pub(crate) const IMDS: &str = "2018-02-01";
    pub(crate) const APP_SERVICE: &str = "2019-08-01";
    pub(crate) const SERVICE_FABRIC: &str = "2020-05-01";
    pub(crate) const MACHINE_LEARNING: &str = "2017-09-01";
    pub(crate) const AZURE_ARC: &str = "2020-06-01";
}

fn non_empty<'a>(env: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    env.get(name).map(String::as_str).filter(|v| !v.is_empty())
}

fn required<'a>(
    env: &'a HashMap<String, String>,
    name: &str,
    source: ManagedIdentitySource,
) -> Result<&'a str, Error> {
    non_empty(env, name).ok_or_else(|| {
        Error::new(
            codes::MISSING_MANAGED_IDENTITY_ENV_VAR,
            format!("[Managed Identity] the {source} source needs the environment variable {name}, which is not set"),
        )
    })
}

/// Parses an endpoint variable: an absolute http(s) URL with a host, without a fragment.
pub(crate) fn parse_endpoint(
    name: &str,
    value: &str,
    source: ManagedIdentitySource,
) -> Result<Url, Error> {
    // The value itself is never echoed: it may carry credentials or a query with a secret.
    let invalid = |why: &str| {
        Error::new(
            codes::INVALID_MANAGED_IDENTITY_ENDPOINT,
            format!(
                "[Managed Identity] the environment variable {name} ({} characters) is not a usable URI in the {source} managed identity source: {why}",
                value.chars().count()
            ),
        )
    };
    let url = Url::parse(value.trim()).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("there is no host"));
    }
    if url.fragment().is_some() {
        return Err(invalid("a fragment is not allowed"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials in the URL are not allowed"));
    }
    Ok(url)
}

impl SourceConfig {
    /// The configuration of `source` from `env`.
    pub(crate) fn resolve(
        source: ManagedIdentitySource,
        env: &HashMap<String, String>,
    ) -> Result<Self, Error> {
        let endpoint = |name: &str| -> Result<Url, Error> {
            parse_endpoint(name, required(env, name, source)?, source)
        };
        let secret =
            |name: &str| -> Result<Secret, Error> { Ok(Secret::new(required(env, name, source)?)) };
        Ok(match source {
            ManagedIdentitySource::Imds => Self::Imds,
            ManagedIdentitySource::AppService => Self::AppService {
                endpoint: endpoint(env::IDENTITY_ENDPOINT)?,
                secret: secret(env::IDENTITY_HEADER)?,
            },
            ManagedIdentitySource::ServiceFabric => {
                let endpoint = endpoint(env::IDENTITY_ENDPOINT)?;
                if endpoint.scheme() != "https" {
                    return Err(Error::new(
                        codes::INVALID_MANAGED_IDENTITY_ENDPOINT,
                        format!(
                            "[Managed Identity] the Service Fabric endpoint {} must use https: its certificate is pinned by IDENTITY_SERVER_THUMBPRINT",
                            endpoint.as_str()
                        ),
                    ));
                }
                Self::ServiceFabric {
                    endpoint,
                    secret: secret(env::IDENTITY_HEADER)?,
                    thumbprint: required(env, env::IDENTITY_SERVER_THUMBPRINT, source)?.to_owned(),
                }
            }
            ManagedIdentitySource::MachineLearning => Self::MachineLearning {
                endpoint: endpoint(env::MSI_ENDPOINT)?,
                secret: secret(env::MSI_SECRET)?,
                default_client_id: non_empty(env, env::DEFAULT_IDENTITY_CLIENT_ID)
                    .map(str::to_owned),
            },
            ManagedIdentitySource::CloudShell => Self::CloudShell {
                endpoint: endpoint(env::MSI_ENDPOINT)?,
            },
            ManagedIdentitySource::AzureArc => Self::AzureArc {
                endpoint: match non_empty(env, env::IDENTITY_ENDPOINT) {
                    Some(value) => parse_endpoint(env::IDENTITY_ENDPOINT, value, source)?,
                    None => Url::parse(AZURE_ARC_DEFAULT_ENDPOINT).map_err(|e| {
                        Error::new(
                            ErrorCode::INTERNAL,
                            format!("the Arc default endpoint: {e}"),
                        )
                    })?,
                },
            },
        })
    }

    pub(crate) fn source(&self) -> ManagedIdentitySource {
        match self {
            Self::Imds => ManagedIdentitySource::Imds,
            Self::AppService { .. } => ManagedIdentitySource::AppService,
            Self::ServiceFabric { .. } => ManagedIdentitySource::ServiceFabric,
            Self::MachineLearning { .. } => ManagedIdentitySource::MachineLearning,
            Self::CloudShell { .. } => ManagedIdentitySource::CloudShell,
            Self::AzureArc { .. } => ManagedIdentitySource::AzureArc,
        }
    }

    pub(crate) fn endpoint(&self) -> Option<&Url> {
        match self {
            Self::Imds => None,
            Self::AppService { endpoint, .. }
            | Self::ServiceFabric { endpoint, .. }
            | Self::MachineLearning { endpoint, .. }
            | Self::CloudShell { endpoint }
            | Self::AzureArc { endpoint } => Some(endpoint),
        }
    }

    /// The query parameter naming a user-assigned identity, or the error for a kind this
    /// source does not take. `None` for the system-assigned identity (except Machine Learning,
    /// which always names one).
    pub(crate) fn identity_parameter(
        &self,
        id: &ManagedIdentityId,
    ) -> Result<Option<(&'static str, String)>, Error> {
        id.validate()?;
        let source = self.source();
        let value = || id.value().unwrap_or_default().to_owned();
        match (self, id) {
            (Self::MachineLearning { default_client_id, .. }, ManagedIdentityId::SystemAssigned) => {
                match default_client_id {
                    Some(client_id) => Ok(Some(("clientid", client_id.clone()))),
                    None => Err(Error::new(
                        codes::INVALID_MANAGED_IDENTITY_ID_TYPE,
                        "[Managed Identity] the Machine Learning source needs DEFAULT_IDENTITY_CLIENT_ID for the system-assigned identity, and it is not set",
                    )),
                }
            }
            (_, ManagedIdentityId::SystemAssigned) => Ok(None),
            (Self::Imds | Self::AppService { .. }, ManagedIdentityId::ClientId(_)) => {
                Ok(Some(("client_id", value())))
            }
            (Self::Imds, ManagedIdentityId::ResourceId(_)) => Ok(Some(("msi_res_id", value()))),
            (Self::AppService { .. }, ManagedIdentityId::ResourceId(_)) => {
                Ok(Some(("mi_res_id", value())))
            }
            (Self::Imds | Self::AppService { .. }, ManagedIdentityId::ObjectId(_)) => {
                Ok(Some(("object_id", value())))
            }
            (Self::ServiceFabric { .. }, ManagedIdentityId::ObjectId(_)) => {
                Ok(Some(("principalId", value())))
            }
            (Self::ServiceFabric { .. }, _) => Err(Error::new(
                codes::USER_ASSIGNED_MANAGED_IDENTITY_NOT_CONFIGURABLE_AT_RUNTIME,
                format!(
                    "[Managed Identity] Service Fabric takes a user-assigned identity only by object id (sent as 'principalId'); a {} is not supported: use ManagedIdentityId::ObjectId",
                    id.kind_name()
                ),
            )),
            (Self::MachineLearning { .. }, ManagedIdentityId::ClientId(_)) => {
                Ok(Some(("clientid", value())))
            }
            (Self::MachineLearning { .. }, _) => Err(Error::new(
                codes::INVALID_MANAGED_IDENTITY_ID_TYPE,
                format!(
                    "[Managed Identity] Machine Learning takes a user-assigned identity only by client id; a {} is not supported",
                    id.kind_name()
                ),
            )),
            (Self::CloudShell { .. } | Self::AzureArc { .. }, _) => Err(Error::new(
                codes::USER_ASSIGNED_MANAGED_IDENTITY_NOT_SUPPORTED,
                format!(
                    "[Managed Identity] the {source} source has no user-assigned identities; to use the system-assigned identity, use ManagedIdentityId::SystemAssigned"
                ),
            )),
        }
    }

    /// The token request for `resource` (without the Azure Arc `Authorization` header).
    pub(crate) fn token_request(
        &self,
        id: &ManagedIdentityId,
        resource: &str,
        correlation_id: Uuid,
    ) -> Result<http::Request<Bytes>, Error> {
        let identity = self.identity_parameter(id)?;
        let with_query = |base: &Url, api_version: Option<&str>| {
            let mut url = base.clone();
            {
                let mut pairs = url.query_pairs_mut();
                if let Some(version) = api_version {
                    pairs.append_pair("api-version", version);
                }
                pairs.append_pair("resource", resource);
                if let Some((name, value)) = &identity {
                    pairs.append_pair(name, value);
                }
            }
            url
        };
        let get = |url: Url| http::Request::get(url.as_str());
        let builder = match self {
            Self::Imds => {
                let base = Url::parse(IMDS_BASE)
                    .and_then(|u| u.join(IMDS_TOKEN_PATH))
                    .map_err(|e| Error::new(ErrorCode::INTERNAL, e.to_string()))?;
                get(with_query(&base, Some(api_version::IMDS)))
                    .header("Metadata", "true")
                    .header("x-client-SKU", CLIENT_SKU)
                    .header("x-client-Ver", CLIENT_VERSION)
                    .header(
                        "x-ms-client-request-id",
                        correlation_id.hyphenated().to_string(),
                    )
            }
            Self::AppService { endpoint, secret } => {
                get(with_query(endpoint, Some(api_version::APP_SERVICE)))
                    .header("X-IDENTITY-HEADER", sensitive(secret)?)
            }
            Self::ServiceFabric {
                endpoint, secret, ..
            } => get(with_query(endpoint, Some(api_version::SERVICE_FABRIC)))
                .header("secret", sensitive(secret)?),
            Self::MachineLearning {
                endpoint, secret, ..
            } => get(with_query(endpoint, Some(api_version::MACHINE_LEARNING)))
                .header("Metadata", "true")
                .header("secret", sensitive(secret)?),
            Self::AzureArc { endpoint } => {
                get(with_query(endpoint, Some(api_version::AZURE_ARC))).header("Metadata", "true")
            }
            Self::CloudShell { endpoint } => {
                let body = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("resource", resource)
                    .finish();
                return http::Request::post(endpoint.as_str())
                    .header("Metadata", "true")
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Bytes::from(body))
                    .map_err(|e| Error::new(ErrorCode::INVALID_ARGUMENT, e.to_string()));
            }
        };
        builder
            .body(Bytes::new())
            .map_err(|e| Error::new(ErrorCode::INVALID_ARGUMENT, e.to_string()))
    }
}

/// A header value for a secret, marked sensitive (hidden from `Debug`, kept out of HPACK
/// tables).
pub(crate) fn sensitive(secret: &Secret) -> Result<HeaderValue, Error> {
    let mut value = HeaderValue::from_str(secret.expose()).map_err(|_| {
        Error::new(
            ErrorCode::INVALID_ARGUMENT,
            "[Managed Identity] a secret contains characters that cannot be sent in an HTTP header",
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// The resource of a managed identity request: exactly one scope, one trailing `/.default`
/// removed.
///
/// ```
/// use fic_managed_identity::scope_to_resource;
///
/// assert_eq!(scope_to_resource(&["https://management.azure.com/.default"])?, "https://management.azure.com");
/// assert_eq!(scope_to_resource(&["https://management.azure.com//.default"])?, "https://management.azure.com/");
/// assert_eq!(scope_to_resource(&["api://AzureADTokenExchange"])?, "api://AzureADTokenExchange");
/// assert!(scope_to_resource(&["a", "b"]).is_err());
/// # Ok::<(), fic_oauth_core::Error>(())
/// ```
pub fn scope_to_resource(scopes: &[&str]) -> Result<String, Error> {
    let [scope] = scopes else {
        return Err(Error::new(
            codes::EXACTLY_ONE_SCOPE_EXPECTED,
            format!(
                "[Managed Identity] a managed identity token is for exactly one resource; {} scopes were passed",
                scopes.len()
            ),
        ));
    };
    let scope = scope.trim();
    let resource = scope.strip_suffix("/.default").unwrap_or(scope);
    if resource.is_empty() {
        return Err(Error::new(
            ErrorCode::INVALID_ARGUMENT,
            "[Managed Identity] the scope names no resource",
        ));
    }
    Ok(resource.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_endpoint_is_never_echoed() {
        for value in [
            "https://user:hunter2@10.0.0.4:2377/token",
            "ftp://10.0.0.4/?secret=hunter2",
            "not a url hunter2",
        ] {
            let err = parse_endpoint(
                "IDENTITY_ENDPOINT",
                value,
                ManagedIdentitySource::AppService,
            )
            .unwrap_err();
            assert_eq!(err.code(), &codes::INVALID_MANAGED_IDENTITY_ENDPOINT);
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }
}
