//! Configuration from the environment variables Azure users know, and the default chain
//! (environment → workload identity → managed identity).
//!
//! | variable | meaning |
//! |---|---|
//! | `AZURE_TENANT_ID` | the tenant |
//! | `AZURE_CLIENT_ID` | the app (or the user-assigned managed identity's client id) |
//! | `AZURE_CLIENT_SECRET` | a client secret |
//! | `AZURE_CLIENT_CERTIFICATE_PATH` | a PEM (chain + key) or PKCS#12 (`.pfx`/`.p12`) file |
//! | `AZURE_CLIENT_CERTIFICATE_PASSWORD` | the PKCS#12 password |
//! | `AZURE_FEDERATED_TOKEN_FILE` | a federated token file (Kubernetes workload identity) |
//! | `AZURE_AUTHORITY_HOST` | the cloud's login host (default `https://login.microsoftonline.com`) |
//! | `AZURE_REGIONAL_AUTHORITY_NAME` | a region, or `TryAutoDetect` / `AutoDiscoverRegion` |
//!
//! ```
//! use std::collections::HashMap;
//! use fic_flows::environment::{DefaultCredential, EnvironmentConfig};
//!
//! let env = HashMap::from([
//!     ("AZURE_TENANT_ID".to_string(), "contoso.onmicrosoft.com".to_string()),
//!     ("AZURE_CLIENT_ID".to_string(), "11111111-1111-1111-1111-111111111111".to_string()),
//!     ("AZURE_CLIENT_SECRET".to_string(), "s3cret".to_string()),
//! ]);
//! let config = EnvironmentConfig::from_map(&env);
//! assert_eq!(config.authority(), "https://login.microsoftonline.com/contoso.onmicrosoft.com");
//! let chain = DefaultCredential::builder().environment(env).build();
//! assert_eq!(chain.steps()[0].0, "environment");
//! // Built without a crypto provider (no `ring` or `aws-lc-rs` feature) the default transport
//! // cannot be made, and the step says why instead.
//! if cfg!(any(feature = "ring", feature = "aws-lc-rs")) {
//!     assert!(chain.steps()[0].1.is_none());
//! }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use fic_assertion::FileAssertion;
use fic_managed_identity::{ManagedIdentity, ManagedIdentityId};
use fic_oauth_core::authority::RegionConfig;
use fic_oauth_core::{
    AccessToken, Clock, Error, ErrorCode, HttpTransport, Secret, Sleeper, TokenCredential,
    TokenRequestOptions,
};
use fic_token_cache::AcquisitionEngine;

use crate::confidential::{ConfidentialClient, ConfidentialClientBuilder};

/// No credential of a chain could get a token; the message says why for each.
pub const CREDENTIAL_UNAVAILABLE: ErrorCode = ErrorCode::from_static("credential_unavailable");

/// The variable names.
pub mod vars {
    /// The tenant.
    pub const AZURE_TENANT_ID: &str = "AZURE_TENANT_ID";
    /// The client id.
    pub const AZURE_CLIENT_ID: &str = "AZURE_CLIENT_ID";
    /// A client secret.
    pub const AZURE_CLIENT_SECRET: &str = "AZURE_CLIENT_SECRET";
    /// A certificate file.
    pub const AZURE_CLIENT_CERTIFICATE_PATH: &str = "AZURE_CLIENT_CERTIFICATE_PATH";
    /// The certificate file's password.
    pub const AZURE_CLIENT_CERTIFICATE_PASSWORD: &str = "AZURE_CLIENT_CERTIFICATE_PASSWORD";
    /// A federated token file.
    pub const AZURE_FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";
    /// The login host.
    pub const AZURE_AUTHORITY_HOST: &str = "AZURE_AUTHORITY_HOST";
    /// The region.
    pub const AZURE_REGIONAL_AUTHORITY_NAME: &str = "AZURE_REGIONAL_AUTHORITY_NAME";
    /// Every variable read here.
    pub const ALL: [&str; 8] = [
        AZURE_TENANT_ID,
        AZURE_CLIENT_ID,
        AZURE_CLIENT_SECRET,
        AZURE_CLIENT_CERTIFICATE_PATH,
        AZURE_CLIENT_CERTIFICATE_PASSWORD,
        AZURE_FEDERATED_TOKEN_FILE,
        AZURE_AUTHORITY_HOST,
        AZURE_REGIONAL_AUTHORITY_NAME,
    ];
}

/// The Azure variables of an environment snapshot (empty values count as absent).
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct EnvironmentConfig {
    /// `AZURE_TENANT_ID`.
    pub tenant_id: Option<String>,
    /// `AZURE_CLIENT_ID`.
    pub client_id: Option<String>,
    /// `AZURE_CLIENT_SECRET`.
    pub client_secret: Option<Secret>,
    /// `AZURE_CLIENT_CERTIFICATE_PATH`.
    pub certificate_path: Option<PathBuf>,
    /// `AZURE_CLIENT_CERTIFICATE_PASSWORD`.
    pub certificate_password: Option<Secret>,
    /// `AZURE_FEDERATED_TOKEN_FILE`.
    pub federated_token_file: Option<PathBuf>,
    /// `AZURE_AUTHORITY_HOST`.
    pub authority_host: Option<String>,
    /// `AZURE_REGIONAL_AUTHORITY_NAME`.
    pub regional_authority_name: Option<String>,
}

impl fmt::Debug for EnvironmentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvironmentConfig")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "***"))
            .field("certificate_path", &self.certificate_path)
            .field("federated_token_file", &self.federated_token_file)
            .field("authority_host", &self.authority_host)
            .field("regional_authority_name", &self.regional_authority_name)
            .finish_non_exhaustive()
    }
}

impl EnvironmentConfig {
    /// Reads the variables from a snapshot.
    pub fn from_map(env: &HashMap<String, String>) -> Self {
        let get = |name: &str| {
            env.get(name)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        Self {
            tenant_id: get(vars::AZURE_TENANT_ID),
            client_id: get(vars::AZURE_CLIENT_ID),
            client_secret: get(vars::AZURE_CLIENT_SECRET).map(Secret::new),
            certificate_path: get(vars::AZURE_CLIENT_CERTIFICATE_PATH).map(PathBuf::from),
            certificate_password: get(vars::AZURE_CLIENT_CERTIFICATE_PASSWORD).map(Secret::new),
            federated_token_file: get(vars::AZURE_FEDERATED_TOKEN_FILE).map(PathBuf::from),
            authority_host: get(vars::AZURE_AUTHORITY_HOST),
            regional_authority_name: get(vars::AZURE_REGIONAL_AUTHORITY_NAME),
        }
    }

    /// A snapshot of the process environment: the Azure variables, the region overrides and the
    /// managed identity variables.
    pub fn process_environment() -> HashMap<String, String> {
        let mut env = fic_managed_identity::process_environment();
        for name in
            vars::ALL
                .into_iter()
                .chain(["MSAL_FORCE_REGION", "MSAL_DISABLE_REGION", "REGION_NAME"])
        {
            if let Ok(value) = std::env::var(name) {
                env.insert(name.to_string(), value);
            }
        }
        env
    }

    /// The authority: `AZURE_AUTHORITY_HOST` (default the public cloud) and the tenant
    /// (default `organizations`).
    pub fn authority(&self) -> String {
        let host = self
            .authority_host
            .as_deref()
            .unwrap_or("https://login.microsoftonline.com");
        let host = if host.contains("://") {
            host.to_string()
        } else {
            format!("https://{host}")
        };
        format!(
            "{}/{}",
            host.trim_end_matches('/'),
            self.tenant_id.as_deref().unwrap_or("organizations")
        )
    }

    /// The region configuration from `AZURE_REGIONAL_AUTHORITY_NAME`.
    pub fn region(&self) -> RegionConfig {
        match self.regional_authority_name.as_deref() {
            None => RegionConfig::None,
            Some(name)
                if name.eq_ignore_ascii_case("TryAutoDetect")
                    || name.eq_ignore_ascii_case("AutoDiscoverRegion") =>
            {
                RegionConfig::AutoDetect
            }
            Some(name) => RegionConfig::Explicit(name.to_string()),
        }
    }
}

/// What the chain's credentials share.
#[derive(Clone, Default)]
struct Shared {
    env: HashMap<String, String>,
    transport: Option<Arc<dyn HttpTransport>>,
    engine: Option<Arc<AcquisitionEngine>>,
    clock: Option<Arc<dyn Clock>>,
    sleeper: Option<Arc<dyn Sleeper>>,
}

impl Shared {
    fn client(&self, config: &EnvironmentConfig, client_id: &str) -> ConfidentialClientBuilder {
        let mut builder = ConfidentialClient::builder(client_id)
            .authority(&config.authority())
            .region_config(config.region())
            .environment(self.env.clone());
        if let Some(transport) = &self.transport {
            builder = builder.transport(transport.clone());
        }
        if let Some(engine) = &self.engine {
            builder = builder.engine(engine.clone());
        }
        if let Some(clock) = &self.clock {
            builder = builder.clock(clock.clone());
        }
        if let Some(sleeper) = &self.sleeper {
            builder = builder.sleeper(sleeper.clone());
        }
        builder
    }
}

/// A confidential client from `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and either
/// `AZURE_CLIENT_SECRET` or `AZURE_CLIENT_CERTIFICATE_PATH` (+ password); `Err` says what is
/// missing.
fn environment_credential(
    shared: &Shared,
    config: &EnvironmentConfig,
) -> Result<ConfidentialClient, String> {
    let (Some(_), Some(client_id)) = (&config.tenant_id, &config.client_id) else {
        return Err("AZURE_TENANT_ID and AZURE_CLIENT_ID are not both set".into());
    };
    let builder = shared.client(config, client_id);
    let builder = if let Some(secret) = &config.client_secret {
        builder.client_secret(secret.clone())
    } else if let Some(path) = &config.certificate_path {
        builder.certificate(load_certificate(path, config)?)
    } else {
        return Err("neither AZURE_CLIENT_SECRET nor AZURE_CLIENT_CERTIFICATE_PATH is set".into());
    };
    builder.build().map_err(|e| e.to_string())
}

/// The certificate of `AZURE_CLIENT_CERTIFICATE_PATH` (PEM, or PKCS#12 with
/// `AZURE_CLIENT_CERTIFICATE_PASSWORD`) as a software key.
#[cfg(any(feature = "ring", feature = "aws-lc-rs"))]
fn load_certificate(
    path: &std::path::Path,
    config: &EnvironmentConfig,
) -> Result<fic_oauth_core::ClientIdentity, String> {
    {
        let is_pkcs12 = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("pfx") || e.eq_ignore_ascii_case("p12"));
        let identity = if is_pkcs12 {
            let password = config
                .certificate_password
                .as_ref()
                .map_or("", Secret::expose);
            fic_assertion::load::from_pkcs12_file(path, password)
        } else {
            fic_assertion::load::from_pem_file(path)
        }
        .map_err(|e| format!("AZURE_CLIENT_CERTIFICATE_PATH could not be loaded: {e}"))?;
        Ok(identity)
    }
}

/// Without a crypto provider there is no software key to load a certificate file into.
#[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
fn load_certificate(
    _path: &std::path::Path,
    _config: &EnvironmentConfig,
) -> Result<fic_oauth_core::ClientIdentity, String> {
    Err(
        "AZURE_CLIENT_CERTIFICATE_PATH is set, but fic-flows was built without a crypto \
         provider (enable the `ring` or `aws-lc-rs` feature) to load it"
            .into(),
    )
}

/// A confidential client whose assertion is the federated token file.
fn workload_identity_credential(
    shared: &Shared,
    config: &EnvironmentConfig,
) -> Result<ConfidentialClient, String> {
    let Some(file) = &config.federated_token_file else {
        return Err("AZURE_FEDERATED_TOKEN_FILE is not set".into());
    };
    let (Some(_), Some(client_id)) = (&config.tenant_id, &config.client_id) else {
        return Err("AZURE_TENANT_ID and AZURE_CLIENT_ID are not both set".into());
    };
    let mut provider = FileAssertion::new(file.clone());
    if let Some(clock) = &shared.clock {
        provider = provider.with_clock(clock.clone());
    }
    shared
        .client(config, client_id)
        .assertion_provider(provider)
        .build()
        .map_err(|e| e.to_string())
}

/// The managed identity of the environment: user-assigned by `AZURE_CLIENT_ID` when set,
/// system-assigned otherwise.
fn managed_identity(
    shared: &Shared,
    config: &EnvironmentConfig,
) -> Result<ManagedIdentity, String> {
    let id = config.client_id.clone().map_or(
        ManagedIdentityId::SystemAssigned,
        ManagedIdentityId::ClientId,
    );
    let mut builder = ManagedIdentity::builder()
        .id(id)
        .environment(shared.env.clone());
    if let Some(transport) = &shared.transport {
        builder = builder.transport(transport.clone());
    }
    if let Some(engine) = &shared.engine {
        builder = builder.engine(engine.clone());
    }
    if let Some(clock) = &shared.clock {
        builder = builder.clock(clock.clone());
    }
    if let Some(sleeper) = &shared.sleeper {
        builder = builder.sleeper(sleeper.clone());
    }
    builder.build().map_err(|e| e.to_string())
}

struct Step {
    name: &'static str,
    credential: Result<Arc<dyn TokenCredential>, String>,
}

/// Builds a [`DefaultCredential`].
#[derive(Default)]
pub struct DefaultCredentialBuilder {
    shared: Shared,
    env_given: bool,
}

impl fmt::Debug for DefaultCredentialBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultCredentialBuilder")
            .finish_non_exhaustive()
    }
}

impl DefaultCredentialBuilder {
    /// The environment snapshot (default: [`EnvironmentConfig::process_environment`]).
    #[must_use]
    pub fn environment(mut self, env: HashMap<String, String>) -> Self {
        self.shared.env = env;
        self.env_given = true;
        self
    }

    /// The transport every credential uses.
    #[must_use]
    pub fn transport(mut self, transport: Arc<dyn HttpTransport>) -> Self {
        self.shared.transport = Some(transport);
        self
    }

    /// The acquisition engine (and cache) every credential uses.
    #[must_use]
    pub fn engine(mut self, engine: Arc<AcquisitionEngine>) -> Self {
        self.shared.engine = Some(engine);
        self
    }

    /// The clock.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.shared.clock = Some(clock);
        self
    }

    /// The sleeper for retries.
    #[must_use]
    pub fn sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.shared.sleeper = Some(sleeper);
        self
    }

    /// The chain. Steps that the environment does not configure are skipped, with the reason.
    pub fn build(mut self) -> DefaultCredential {
        if !self.env_given {
            self.shared.env = EnvironmentConfig::process_environment();
        }
        let config = EnvironmentConfig::from_map(&self.shared.env);
        let shared = &self.shared;
        let steps = vec![
            Step {
                name: "environment",
                credential: environment_credential(shared, &config)
                    .map(|c| Arc::new(c) as Arc<dyn TokenCredential>),
            },
            Step {
                name: "workload identity",
                credential: workload_identity_credential(shared, &config)
                    .map(|c| Arc::new(c) as Arc<dyn TokenCredential>),
            },
            Step {
                name: "managed identity",
                credential: managed_identity(shared, &config)
                    .map(|c| Arc::new(c) as Arc<dyn TokenCredential>),
            },
        ];
        for step in &steps {
            if let Err(reason) = &step.credential {
                tracing::debug!(step = step.name, %reason, "default credential: step skipped");
            }
        }
        DefaultCredential {
            steps,
            chosen: AtomicUsize::new(usize::MAX),
        }
    }
}

/// The default chain: environment (secret or certificate) → workload identity (federated token
/// file) → managed identity. The first step that gets a token is used from then on; when none
/// does, the error (`credential_unavailable`) lists why each step was skipped or failed.
pub struct DefaultCredential {
    steps: Vec<Step>,
    chosen: AtomicUsize,
}

impl fmt::Debug for DefaultCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultCredential")
            .field("steps", &self.steps())
            .finish()
    }
}

impl DefaultCredential {
    /// A builder.
    pub fn builder() -> DefaultCredentialBuilder {
        DefaultCredentialBuilder::default()
    }

    /// The steps: name, and why it is skipped (`None` when configured).
    pub fn steps(&self) -> Vec<(&'static str, Option<String>)> {
        self.steps
            .iter()
            .map(|s| (s.name, s.credential.as_ref().err().cloned()))
            .collect()
    }

    /// The step that got the last token, once one has.
    pub fn chosen(&self) -> Option<&'static str> {
        self.steps
            .get(self.chosen.load(Ordering::Relaxed))
            .map(|s| s.name)
    }
}

#[async_trait]
impl TokenCredential for DefaultCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: &TokenRequestOptions,
    ) -> Result<AccessToken, Error> {
        if let Some(Step {
            credential: Ok(credential),
            ..
        }) = self.steps.get(self.chosen.load(Ordering::Relaxed))
        {
            return credential.get_token(scopes, options).await;
        }
        let mut why = Vec::new();
        for (index, step) in self.steps.iter().enumerate() {
            match &step.credential {
                Err(reason) => why.push(format!("{}: skipped: {reason}", step.name)),
                Ok(credential) => match credential.get_token(scopes, options).await {
                    Ok(token) => {
                        self.chosen.store(index, Ordering::Relaxed);
                        tracing::info!(step = step.name, "default credential: using this step");
                        return Ok(token);
                    }
                    Err(error) => why.push(format!("{}: failed: {error}", step.name)),
                },
            }
        }
        Err(Error::new(
            CREDENTIAL_UNAVAILABLE,
            format!(
                "no credential of the default chain got a token:\n - {}",
                why.join("\n - ")
            ),
        ))
    }
}
