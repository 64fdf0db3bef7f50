//! The [`ManagedIdentity`] credential.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use fic_mtls_transport::MtlsTransport;
use fic_oauth_core::time::TokioSleeper;
use fic_oauth_core::{
    AccessToken, Clock, Error, ErrorCode, HttpTransport, Sleeper, SystemClock, TokenCredential,
    TokenRequestOptions, TokenType,
};
use fic_token_cache::{AccessTokenKey, AcquisitionEngine, Lookup, MemoryCache, TokenCache};
use uuid::Uuid;

use crate::arc;
use crate::id::ManagedIdentityId;
use crate::imds_v2::ImdsV2;
use crate::response::{parse_token, request_failed};
use crate::send::{transport_failure, Policy, Sender};
use crate::service_fabric::ServiceFabricTransport;
use crate::source::{
    process_environment, scope_to_resource, ManagedIdentitySource, SourceConfig,
    AZURE_ARC_AGENT_PATH, AZURE_ARC_TOKEN_DIRECTORY,
};

/// Builds a [`ManagedIdentity`]. Every setting has a production default.
pub struct ManagedIdentityBuilder {
    id: ManagedIdentityId,
    source: Option<ManagedIdentitySource>,
    transport: Option<Arc<dyn HttpTransport>>,
    service_fabric_transport: Option<Arc<dyn HttpTransport>>,
    engine: Option<Arc<AcquisitionEngine>>,
    cache: Option<Arc<dyn TokenCache>>,
    clock: Option<Arc<dyn Clock>>,
    sleeper: Option<Arc<dyn Sleeper>>,
    environment: Option<HashMap<String, String>>,
    arc_agent_path: PathBuf,
    arc_token_directory: PathBuf,
    mtls_pop: bool,
}

impl fmt::Debug for ManagedIdentityBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedIdentityBuilder")
            .field("id", &self.id)
            .field("source", &self.source)
            .field("mtls_pop", &self.mtls_pop)
            .field("arc_agent_path", &self.arc_agent_path)
            .field("arc_token_directory", &self.arc_token_directory)
            .finish_non_exhaustive()
    }
}

impl ManagedIdentityBuilder {
    /// The identity (default: system-assigned).
    #[must_use]
    pub fn id(mut self, id: ManagedIdentityId) -> Self {
        self.id = id;
        self
    }

    /// Uses this source instead of detecting one from the environment. Its variables are still
    /// read from the environment snapshot.
    #[must_use]
    pub fn source(mut self, source: ManagedIdentitySource) -> Self {
        self.source = Some(source);
        self
    }

    /// The transport of every request except Service Fabric's (default:
    /// `MtlsTransport::new()`). Map the production hosts to a local endpoint with its
    /// resolver overrides rather than changing URLs.
    #[must_use]
    pub fn transport(mut self, transport: Arc<dyn HttpTransport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// The transport of the Service Fabric source (default: a [`ServiceFabricTransport`]
    /// pinning `IDENTITY_SERVER_THUMBPRINT`). Whatever is given must check the endpoint's
    /// certificate itself.
    #[must_use]
    pub fn service_fabric_transport(mut self, transport: Arc<dyn HttpTransport>) -> Self {
        self.service_fabric_transport = Some(transport);
        self
    }

    /// The acquisition engine (and with it the cache) to share with other credentials.
    /// Default: a new engine over a new [`MemoryCache`] with this builder's clock. The engine's
    /// own clock decides cache expiry.
    #[must_use]
    pub fn engine(mut self, engine: Arc<AcquisitionEngine>) -> Self {
        self.engine = Some(engine);
        self
    }

    /// The cache of the default engine (ignored when an engine is given).
    #[must_use]
    pub fn cache(mut self, cache: Arc<dyn TokenCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The clock (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// What retries sleep on (default: the tokio timer).
    #[must_use]
    pub fn sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.sleeper = Some(sleeper);
        self
    }

    /// The environment to detect the source from and read its variables from (default: a
    /// snapshot of the process environment taken by [`build`](Self::build)).
    #[must_use]
    pub fn environment(mut self, environment: HashMap<String, String>) -> Self {
        self.environment = Some(environment);
        self
    }

    /// Where the Azure Arc agent binary is looked for during detection (default
    /// `/opt/azcmagent/bin/himds`).
    #[must_use]
    pub fn arc_agent_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.arc_agent_path = path.into();
        self
    }

    /// The only directory Azure Arc challenge files are read from (default
    /// `/var/opt/azcmagent/tokens/`).
    #[must_use]
    pub fn arc_token_directory(mut self, directory: impl Into<PathBuf>) -> Self {
        self.arc_token_directory = directory.into();
        self
    }

    /// Asks for mTLS PoP tokens through IMDSv2 (IMDS only; default false).
    ///
    /// The first token request (and one a day before the certificate expires) calls
    /// `getplatformmetadata`, generates a fresh RSA-2048 key, sends a CSR for
    /// `CN=<clientId>, DC=<tenantId>` (RSASSA-PSS, SHA-256, salt 32) to `issuecredential`,
    /// and asks `{mtls_authentication_endpoint}/{tenant}/oauth2/v2.0/token` for
    /// `token_type=mtls_pop` over mTLS with the issued certificate. The certificate and key are
    /// reused until 24 h before the certificate expires; `invalid_client`, a failed TLS
    /// handshake or a connection reset during the token request mints a new one and retries
    /// once. A host without IMDSv2 answers 404:
    /// `mtls_pop_token_not_supported_in_imds_v1`.
    ///
    /// The certificate is held in a process-wide store keyed by the identity (kind and value),
    /// the attestation flag and how IMDS is reached (the default transport, or the instance
    /// given to [`transport`](Self::transport)): every credential of the process with the same
    /// key uses, and re-mints, the same certificate. The store holds it only while a credential
    /// using it is alive.
    ///
    /// The key is a software key held only in memory, on every OS (MSAL.NET requires a
    /// Windows KeyGuard key): generated with the `rsa` crate, then used through
    /// `fic-assertion`'s `SoftwareKey` (ring or aws-lc-rs). Our copies of the key are zeroized
    /// on drop; ring's internal key structure is not (aws-lc-rs clears its own). Attestation
    /// (`attestation_token`) is not supported. In a build without the `ring` and `aws-lc-rs`
    /// features every token request fails with `crypto_provider_not_enabled` before anything
    /// is sent.
    #[must_use]
    pub fn mtls_pop(mut self, enabled: bool) -> Self {
        self.mtls_pop = enabled;
        self
    }

    /// The credential. Fails when the source's variables are missing or invalid
    /// (`missing_managed_identity_env_var`, `invalid_managed_identity_endpoint`), when the
    /// source does not take this kind of identity (`user_assigned_managed_identity_not_supported`,
    /// `user_assigned_managed_identity_not_configurable_at_runtime`,
    /// `invalid_managed_identity_id_type`), when mTLS PoP is asked of a source other than IMDS
    /// (`mtls_pop_not_supported_for_environment`), or when a default transport cannot be built.
    pub fn build(self) -> Result<ManagedIdentity, Error> {
        self.id.validate()?;
        let environment = self.environment.unwrap_or_else(process_environment);
        let source = match self.source {
            Some(source) => {
                tracing::debug!(
                    source = source.as_str(),
                    "using the configured managed identity source"
                );
                source
            }
            None => {
                ManagedIdentitySource::detect_with_agent_path(&environment, &self.arc_agent_path)
            }
        };
        let config = SourceConfig::resolve(source, &environment)?;
        if self.mtls_pop {
            if source != ManagedIdentitySource::Imds {
                return Err(Error::new(
                    ErrorCode::MTLS_POP_NOT_SUPPORTED_FOR_ENVIRONMENT,
                    format!("[Managed Identity] mTLS PoP tokens come from IMDSv2 only; this host's source is {source}"),
                ));
            }
        } else {
            // Unsupported identity kinds fail here rather than on the first token request.
            config.identity_parameter(&self.id)?;
        }
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let sleeper = self.sleeper.unwrap_or_else(|| Arc::new(TokioSleeper));
        // Which network IMDSv2 is reached through, for sharing minted certificates: the given
        // transport instance, or none (the default transport reaches the real IMDS).
        let transport_scope = self
            .transport
            .as_ref()
            .map(|transport| Arc::as_ptr(transport).cast::<()>().addr());
        let transport: Arc<dyn HttpTransport> = match self.transport {
            Some(transport) => transport,
            None => Arc::new(MtlsTransport::new()?),
        };
        let source_transport = match (&config, self.service_fabric_transport) {
            (SourceConfig::ServiceFabric { .. }, Some(transport)) => transport,
            (SourceConfig::ServiceFabric { thumbprint, .. }, None) => {
                Arc::new(ServiceFabricTransport::new(thumbprint)?)
            }
            _ => Arc::clone(&transport),
        };
        let engine = self.engine.unwrap_or_else(|| {
            AcquisitionEngine::builder(self.cache.unwrap_or_else(|| Arc::new(MemoryCache::new())))
                .clock(Arc::clone(&clock))
                .build()
        });
        let sender = Sender {
            transport,
            clock: Arc::clone(&clock),
            sleeper: Arc::clone(&sleeper),
        };
        let imds_v2 = self
            .mtls_pop
            .then(|| ImdsV2::new(sender.clone(), self.id.clone(), transport_scope));
        Ok(ManagedIdentity {
            inner: Arc::new(Inner {
                config,
                id: self.id,
                source_sender: Sender {
                    transport: source_transport,
                    clock,
                    sleeper,
                },
                arc_token_directory: self.arc_token_directory,
                imds_v2,
            }),
            engine,
        })
    }
}

/// A managed identity credential: tokens for the identity of the Azure host this runs on,
/// cached through an [`AcquisitionEngine`] (one request for concurrent misses, refresh ahead
/// of expiry). It is a [`TokenCredential`], so it can be Leg 1 of the FIC flows.
///
/// Tokens are cached under
/// `AccessTokenKey::app("managed_identity.<source>", <id as given | "system_assigned_managed_identity">, "", [<resource>])`
/// with the token type (see [`cache_key`](Self::cache_key)); mtls_pop entries also carry the
/// binding certificate's `kid`, so PoP and Bearer tokens never serve each other.
///
/// Clones share the cache state and the IMDSv2 binding certificate. Separately built
/// credentials for the same identity share the binding certificate too (one is minted per
/// process, as MSAL does) when they use the default transport or the same transport instance;
/// with the same engine they then also share their mtls_pop tokens.
#[derive(Clone)]
pub struct ManagedIdentity {
    inner: Arc<Inner>,
    engine: Arc<AcquisitionEngine>,
}

struct Inner {
    config: SourceConfig,
    id: ManagedIdentityId,
    /// The transport of the source's own endpoint (pinned for Service Fabric).
    source_sender: Sender,
    arc_token_directory: PathBuf,
    imds_v2: Option<ImdsV2>,
}

impl fmt::Debug for ManagedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedIdentity")
            .field("source", &self.inner.config.source())
            .field("id", &self.inner.id)
            .field("mtls_pop", &self.inner.imds_v2.is_some())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl ManagedIdentity {
    /// A builder with the production defaults.
    pub fn builder() -> ManagedIdentityBuilder {
        ManagedIdentityBuilder {
            id: ManagedIdentityId::SystemAssigned,
            source: None,
            transport: None,
            service_fabric_transport: None,
            engine: None,
            cache: None,
            clock: None,
            sleeper: None,
            environment: None,
            arc_agent_path: PathBuf::from(AZURE_ARC_AGENT_PATH),
            arc_token_directory: PathBuf::from(AZURE_ARC_TOKEN_DIRECTORY),
            mtls_pop: false,
        }
    }

    /// The source tokens come from.
    pub fn source(&self) -> ManagedIdentitySource {
        self.inner.config.source()
    }

    /// The identity.
    pub fn id(&self) -> &ManagedIdentityId {
        &self.inner.id
    }

    /// The token type this credential returns (`mtls_pop` with IMDSv2, `Bearer` otherwise).
    pub fn token_type(&self) -> TokenType {
        if self.inner.imds_v2.is_some() {
            TokenType::MtlsPop
        } else {
            TokenType::Bearer
        }
    }

    /// The engine (and cache) tokens go through.
    pub fn engine(&self) -> &Arc<AcquisitionEngine> {
        &self.engine
    }

    /// The cache key parts of `resource`'s token:
    /// `AccessTokenKey::app("managed_identity.<source>", <cache id>, "", [resource])` with
    /// the token type.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use fic_managed_identity::ManagedIdentity;
    ///
    /// # // Without the crypto features the default transport uses the process-default provider.
    /// # #[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
    /// # let _ = rustls::crypto::ring::default_provider().install_default();
    /// let credential = ManagedIdentity::builder()
    ///     .environment(HashMap::new())
    ///     .arc_agent_path("/nonexistent")
    ///     .build()?;
    /// assert_eq!(
    ///     credential.cache_key("https://management.azure.com").build().as_str(),
    ///     "-managed_identity.imds-accesstoken-system_assigned_managed_identity--https://management.azure.com"
    /// );
    /// # Ok::<(), fic_oauth_core::Error>(())
    /// ```
    pub fn cache_key(&self, resource: &str) -> AccessTokenKey {
        AccessTokenKey::app(
            self.source().cache_environment(),
            self.inner.id.cache_id(),
            "",
            [resource],
        )
        .with_token_type(self.token_type())
    }

    /// The certificate mtls_pop tokens are currently bound to (IMDSv2), if one is held and more
    /// than 24 h from expiry.
    pub fn binding_certificate(&self) -> Option<fic_oauth_core::ClientIdentity> {
        let v2 = self.inner.imds_v2.as_ref()?;
        v2.current_identity(self.inner.source_sender.clock.now())
    }
}

impl Inner {
    async fn fetch(
        &self,
        resource: &str,
        claims: Option<&str>,
        correlation: Uuid,
    ) -> Result<AccessToken, Error> {
        if let Some(v2) = &self.imds_v2 {
            return v2.token(resource, claims, correlation).await;
        }
        let source = self.config.source();
        let sender = &self.source_sender;
        let request = fic_oauth_core::TransportRequest::new(self.config.token_request(
            &self.id,
            resource,
            correlation,
        )?);
        let policy = if source == ManagedIdentitySource::Imds {
            Policy::Imds
        } else {
            Policy::ManagedIdentity
        };
        let mut response = sender
            .send(&request, policy)
            .await
            .map_err(|e| transport_failure(source, e))?;
        if source == ManagedIdentitySource::AzureArc && response.status().as_u16() == 401 {
            let path = arc::challenge_path(response.headers().get(http::header::WWW_AUTHENTICATE))?;
            tracing::debug!(path = %path.display(), "Azure Arc answered with a challenge");
            let authorization = arc::authorization(&path, &self.arc_token_directory)?;
            let mut second = request.clone();
            second
                .request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, authorization);
            response = sender
                .send(&second, Policy::ManagedIdentity)
                .await
                .map_err(|e| transport_failure(source, e))?;
        }
        let now = sender.clock.now();
        let status = response.status().as_u16();
        if !response.status().is_success() {
            return Err(request_failed(
                source,
                status,
                response.headers(),
                response.body(),
                now,
            ));
        }
        let mut token = parse_token(source, response.body(), now)?;
        token.scopes = Arc::from(vec![resource.to_owned()]);
        tracing::debug!(
            source = source.as_str(),
            expires_on = fic_oauth_core::time::unix_seconds(token.expires_on),
            refresh_on = token.refresh_on.map(fic_oauth_core::time::unix_seconds),
            "received a managed identity token"
        );
        Ok(token)
    }
}

#[async_trait]
impl TokenCredential for ManagedIdentity {
    /// A token for the one resource named by `scopes` (a trailing `/.default` is removed).
    /// `force_refresh` skips the cache; a claims challenge bypasses it (and, with IMDSv2, is
    /// sent to Entra ID); the tenant option does not apply to managed identities.
    async fn get_token(
        &self,
        scopes: &[&str],
        options: &TokenRequestOptions,
    ) -> Result<AccessToken, Error> {
        let resource = scope_to_resource(scopes)?;
        let binding = self.binding_certificate();
        let lookup = Lookup::new(self.cache_key(&resource))
            .with_binding(binding)
            .with_force_refresh(options.force_refresh)
            .with_bypass_cache(options.claims.is_some());
        let inner = Arc::clone(&self.inner);
        let claims = options.claims.clone();
        let correlation = options.correlation_id;
        self.engine
            .acquire(&lookup, move || {
                let inner = Arc::clone(&inner);
                let resource = resource.clone();
                let claims = claims.clone();
                Box::pin(async move {
                    inner
                        .fetch(
                            &resource,
                            claims.as_deref(),
                            correlation.unwrap_or_else(Uuid::new_v4),
                        )
                        .await
                })
            })
            .await
    }
}
