//! The confidential client: client credentials with a secret, a certificate (Bearer or mTLS
//! PoP) or an assertion provider (jwt-bearer, or jwt-pop with a binding certificate).

use std::collections::HashMap;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use fic_assertion::{AssertionProvider, AssertionRequest, CertificateAssertion, ClientAssertion};
use fic_mtls_transport::MtlsTransport;
use fic_oauth_core::authority::{Authority, EndpointOptions, Region, RegionConfig, TokenEndpoint};
use fic_oauth_core::request::{ClientAuth, TokenRequest};
use fic_oauth_core::time::TokioSleeper;
use fic_oauth_core::{
    AccessToken, ClientIdentity, Clock, Error, ErrorCode, HttpTransport, Secret, Sleeper,
    SystemClock, TokenCredential, TokenRequestOptions, TokenType,
};
use fic_token_cache::{
    AccessTokenKey, AcquisitionEngine, FetchFuture, Lookup, MemoryCache, TokenCache,
};
use tokio::sync::OnceCell;
use tracing::Instrument;
use uuid::Uuid;

use crate::region::{self, RegionDetector};
use crate::send::{RequestHook, Sender};

/// How a confidential client proves who it is.
#[derive(Clone)]
#[non_exhaustive]
pub enum ClientCredential {
    /// A client secret.
    Secret(Secret),
    /// A certificate: signs jwt-bearer assertions for Bearer tokens, and is itself the TLS
    /// client certificate (no assertion) for mTLS PoP tokens.
    Certificate {
        /// The certificate chain and key.
        identity: ClientIdentity,
        /// Send the chain in `x5c` (subject name + issuer authentication; FMI blueprints).
        send_x5c: bool,
    },
    /// Any assertion provider: a federated token (FIC Leg 2), a Kubernetes token file, a
    /// callback. When it returns a binding certificate the request goes over mTLS as jwt-pop.
    Assertion(Arc<dyn AssertionProvider>),
}

impl ClientCredential {
    /// A client secret.
    pub fn secret(secret: impl Into<Secret>) -> Self {
        Self::Secret(secret.into())
    }

    /// A certificate (without `x5c`).
    pub fn certificate(identity: ClientIdentity) -> Self {
        Self::Certificate {
            identity,
            send_x5c: false,
        }
    }

    /// A certificate whose assertions carry the `x5c` chain (SN+I).
    pub fn certificate_with_x5c(identity: ClientIdentity) -> Self {
        Self::Certificate {
            identity,
            send_x5c: true,
        }
    }

    /// An assertion provider.
    pub fn assertion(provider: impl AssertionProvider + 'static) -> Self {
        Self::Assertion(Arc::new(provider))
    }
}

impl fmt::Debug for ClientCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secret(_) => f.write_str("Secret(***)"),
            Self::Certificate { identity, send_x5c } => f
                .debug_struct("Certificate")
                .field("x5t#S256", &identity.thumbprint_s256())
                .field("send_x5c", send_x5c)
                .finish(),
            Self::Assertion(provider) => f.debug_tuple("Assertion").field(provider).finish(),
        }
    }
}

/// Builds a [`ConfidentialClient`].
pub struct ConfidentialClientBuilder {
    client_id: String,
    authority: Result<Authority, Error>,
    credential: Option<ClientCredential>,
    region: RegionConfig,
    environment: Option<HashMap<String, String>>,
    transport: Option<Arc<dyn HttpTransport>>,
    cache: Option<Arc<dyn TokenCache>>,
    engine: Option<Arc<AcquisitionEngine>>,
    pub(crate) clock: Arc<dyn Clock>,
    sleeper: Arc<dyn Sleeper>,
    client_capabilities: Vec<String>,
    hook: Option<Arc<dyn RequestHook>>,
    region_detector: Option<Arc<RegionDetector>>,
    mtls_pop: bool,
}

impl fmt::Debug for ConfidentialClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfidentialClientBuilder")
            .field("client_id", &self.client_id)
            .field("credential", &self.credential)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl ConfidentialClientBuilder {
    /// The authority (default `https://login.microsoftonline.com/common/`; mTLS PoP needs a
    /// tenant).
    #[must_use]
    pub fn authority(mut self, authority: &str) -> Self {
        self.authority = Authority::parse(authority);
        self
    }

    /// The authority as a parsed value.
    #[must_use]
    pub fn authority_value(mut self, authority: Authority) -> Self {
        self.authority = Ok(authority);
        self
    }

    /// The credential.
    #[must_use]
    pub fn credential(mut self, credential: ClientCredential) -> Self {
        self.credential = Some(credential);
        self
    }

    /// A client secret.
    #[must_use]
    pub fn client_secret(self, secret: impl Into<Secret>) -> Self {
        self.credential(ClientCredential::secret(secret))
    }

    /// A certificate.
    #[must_use]
    pub fn certificate(self, identity: ClientIdentity) -> Self {
        self.credential(ClientCredential::certificate(identity))
    }

    /// An assertion provider.
    #[must_use]
    pub fn assertion_provider(self, provider: impl AssertionProvider + 'static) -> Self {
        self.credential(ClientCredential::assertion(provider))
    }

    /// An explicit region (e.g. `westus3`); invalid names are logged and ignored.
    #[must_use]
    pub fn region(mut self, region: &str) -> Self {
        self.region = RegionConfig::Explicit(region.to_string());
        self
    }

    /// The region configuration (none, explicit, auto-detect).
    #[must_use]
    pub fn region_config(mut self, region: RegionConfig) -> Self {
        self.region = region;
        self
    }

    /// The environment read for `MSAL_FORCE_REGION`, `MSAL_DISABLE_REGION` and `REGION_NAME`
    /// (default: a snapshot of the process environment taken by `build`).
    #[must_use]
    pub fn environment(mut self, environment: HashMap<String, String>) -> Self {
        self.environment = Some(environment);
        self
    }

    /// The HTTP transport (default: [`MtlsTransport::new`]).
    #[must_use]
    pub fn transport(mut self, transport: Arc<dyn HttpTransport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// The token cache (default: a [`MemoryCache`] of this client).
    #[must_use]
    pub fn cache(mut self, cache: Arc<dyn TokenCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// A shared acquisition engine (its cache and clock are used; `cache` is ignored).
    #[must_use]
    pub fn engine(mut self, engine: Arc<AcquisitionEngine>) -> Self {
        self.engine = Some(engine);
        self
    }

    /// The clock (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The sleeper for retry delays (default: the tokio timer).
    #[must_use]
    pub fn sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.sleeper = sleeper;
        self
    }

    /// Client capabilities (`cp1`...), sent as `xms_cc` in `claims`.
    #[must_use]
    pub fn client_capabilities(
        mut self,
        capabilities: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.client_capabilities = capabilities.into_iter().map(Into::into).collect();
        self
    }

    /// A hook that sees every token request before it is sent.
    #[must_use]
    pub fn request_hook(mut self, hook: impl RequestHook + 'static) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// The region detector (default: the process-wide one).
    #[must_use]
    pub fn region_detector(mut self, detector: Arc<RegionDetector>) -> Self {
        self.region_detector = Some(detector);
        self
    }

    /// Whether [`TokenCredential::get_token`] asks for mTLS PoP tokens (default: Bearer).
    #[must_use]
    pub fn mtls_pop(mut self, mtls_pop: bool) -> Self {
        self.mtls_pop = mtls_pop;
        self
    }

    /// The client.
    pub fn build(self) -> Result<ConfidentialClient, Error> {
        let authority = self.authority?;
        if self.client_id.trim().is_empty() {
            return Err(Error::new(
                ErrorCode::INVALID_ARGUMENT,
                "the client id is empty",
            ));
        }
        let credential = self.credential.ok_or_else(|| {
            Error::new(
                ErrorCode::INVALID_ARGUMENT,
                "a confidential client needs a credential: a secret, a certificate or an assertion provider",
            )
        })?;
        let signer = match &credential {
            ClientCredential::Certificate { identity, send_x5c } => Some(
                CertificateAssertion::new(identity.clone())?
                    .with_x5c(*send_x5c)
                    .with_clock(Arc::clone(&self.clock)),
            ),
            _ => None,
        };
        let transport: Arc<dyn HttpTransport> = match self.transport {
            Some(transport) => transport,
            None => Arc::new(MtlsTransport::new()?),
        };
        let engine = match self.engine {
            Some(engine) => engine,
            None => AcquisitionEngine::builder(
                self.cache
                    .unwrap_or_else(|| Arc::new(MemoryCache::with_clock(Arc::clone(&self.clock)))),
            )
            .clock(Arc::clone(&self.clock))
            .build(),
        };
        let environment = self.environment.unwrap_or_else(region_environment);
        Ok(ConfidentialClient {
            inner: Arc::new(Inner {
                client_id: self.client_id,
                authority,
                credential,
                signer,
                region: self.region,
                resolved_region: OnceCell::new(),
                environment,
                detector: self
                    .region_detector
                    .unwrap_or_else(RegionDetector::process_wide),
                engine,
                sender: Sender {
                    transport,
                    clock: Arc::clone(&self.clock),
                    sleeper: self.sleeper,
                    hook: self.hook,
                },
                clock: self.clock,
                client_capabilities: self.client_capabilities,
                mtls_pop: self.mtls_pop,
                known_users: std::sync::Mutex::new(HashMap::new()),
                first_contacts: std::sync::Mutex::new(HashMap::new()),
                lookups: papaya::HashMap::with_hasher(hashbrown::DefaultHashBuilder::default()),
            }),
        })
    }
}

/// The variables region selection reads, from the process environment.
fn region_environment() -> HashMap<String, String> {
    ["MSAL_FORCE_REGION", "MSAL_DISABLE_REGION", "REGION_NAME"]
        .into_iter()
        .filter_map(|name| std::env::var(name).ok().map(|v| (name.to_string(), v)))
        .collect()
}

pub(crate) struct Inner {
    pub(crate) client_id: String,
    pub(crate) authority: Authority,
    pub(crate) credential: ClientCredential,
    pub(crate) signer: Option<CertificateAssertion>,
    pub(crate) region: RegionConfig,
    pub(crate) resolved_region: OnceCell<Option<Region>>,
    pub(crate) environment: HashMap<String, String>,
    pub(crate) detector: Arc<RegionDetector>,
    pub(crate) engine: Arc<AcquisitionEngine>,
    pub(crate) sender: Sender,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) client_capabilities: Vec<String>,
    pub(crate) mtls_pop: bool,
    /// `upn:<lower-case upn>` / `oid:<object id>` → home account id, learned from user-flow
    /// answers, so a user asked for by either is found in the cache.
    pub(crate) known_users: std::sync::Mutex<HashMap<String, String>>,
    /// First-contact `user_fic` requests in flight, by user, scopes and assertion path.
    pub(crate) first_contacts:
        std::sync::Mutex<HashMap<crate::user::FirstContactKey, Arc<crate::user::FirstContact>>>,
    /// Memoized cache lookups by request shape (the hit path builds no key). Lock-free, so
    /// threads hitting at once do not contend on a lock's counter.
    pub(crate) lookups: papaya::HashMap<MemoKey, Lookup, hashbrown::DefaultHashBuilder>,
}

/// A confidential client application: client credentials for one client id, with a cache, a
/// transport and a credential. Clones share everything.
///
/// ```no_run
/// use fic_flows::ConfidentialClient;
///
/// # async fn demo(identity: fic_oauth_core::ClientIdentity) -> Result<(), fic_oauth_core::Error> {
/// let client = ConfidentialClient::builder("11111111-1111-1111-1111-111111111111")
///     .authority("https://login.microsoftonline.com/contoso.onmicrosoft.com")
///     .certificate(identity)
///     .region("westus3")
///     .build()?;
/// // A token bound to the certificate, from https://westus3.mtlsauth.microsoft.com/...
/// let token = client
///     .acquire_token_for_client(["https://vault.azure.net/.default"])
///     .with_mtls_pop()
///     .await?;
/// assert!(token.binding.is_some());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ConfidentialClient {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for ConfidentialClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfidentialClient")
            .field("client_id", &self.inner.client_id)
            .field("authority", &self.inner.authority.url().as_str())
            .field("credential", &self.inner.credential)
            .field("region", &self.inner.region)
            .finish_non_exhaustive()
    }
}

impl ConfidentialClient {
    /// A builder for `client_id`.
    pub fn builder(client_id: impl Into<String>) -> ConfidentialClientBuilder {
        ConfidentialClientBuilder {
            client_id: client_id.into(),
            authority: Authority::parse("https://login.microsoftonline.com/common/"),
            credential: None,
            region: RegionConfig::None,
            environment: None,
            transport: None,
            cache: None,
            engine: None,
            clock: Arc::new(SystemClock),
            sleeper: Arc::new(TokioSleeper),
            client_capabilities: Vec::new(),
            hook: None,
            region_detector: None,
            mtls_pop: false,
        }
    }

    /// The same client (transport, cache, authority, region, hooks) with another credential.
    pub fn with_credential(&self, credential: ClientCredential) -> Result<Self, Error> {
        self.for_client(self.inner.client_id.clone(), credential)
    }

    /// Another application (`client_id`, `credential`) sharing this client's transport, cache,
    /// authority, region and hooks.
    pub fn for_client(
        &self,
        client_id: impl Into<String>,
        credential: ClientCredential,
    ) -> Result<Self, Error> {
        let client_id = client_id.into();
        if client_id.trim().is_empty() {
            return Err(Error::new(
                ErrorCode::INVALID_ARGUMENT,
                "the client id is empty",
            ));
        }
        let inner = &self.inner;
        let signer = match &credential {
            ClientCredential::Certificate { identity, send_x5c } => Some(
                CertificateAssertion::new(identity.clone())?
                    .with_x5c(*send_x5c)
                    .with_clock(Arc::clone(&inner.clock)),
            ),
            _ => None,
        };
        let resolved_region = OnceCell::new();
        if let Some(region) = inner.resolved_region.get() {
            let _ = resolved_region.set(region.clone());
        }
        Ok(Self {
            inner: Arc::new(Inner {
                client_id,
                authority: inner.authority.clone(),
                credential,
                signer,
                region: inner.region.clone(),
                resolved_region,
                environment: inner.environment.clone(),
                detector: Arc::clone(&inner.detector),
                engine: Arc::clone(&inner.engine),
                sender: inner.sender.clone(),
                clock: Arc::clone(&inner.clock),
                client_capabilities: inner.client_capabilities.clone(),
                mtls_pop: inner.mtls_pop,
                known_users: std::sync::Mutex::new(HashMap::new()),
                first_contacts: std::sync::Mutex::new(HashMap::new()),
                lookups: papaya::HashMap::with_hasher(hashbrown::DefaultHashBuilder::default()),
            }),
        })
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// The authority.
    pub fn authority(&self) -> &Authority {
        &self.inner.authority
    }

    /// The acquisition engine (and through it, the cache).
    pub fn engine(&self) -> &Arc<AcquisitionEngine> {
        &self.inner.engine
    }

    /// The transport.
    pub fn transport(&self) -> &Arc<dyn HttpTransport> {
        &self.inner.sender.transport
    }

    /// The region used, resolved (and, for auto-detection, detected) on first use.
    pub async fn region(&self) -> Option<Region> {
        let inner = &self.inner;
        inner
            .resolved_region
            .get_or_init(|| {
                region::resolve(
                    &inner.region,
                    &inner.environment,
                    &inner.detector,
                    inner.sender.transport.as_ref(),
                )
            })
            .await
            .clone()
    }

    /// Starts a client-credentials acquisition for `scopes`; configure it, then `.await` it.
    pub fn acquire_token_for_client(
        &self,
        scopes: impl IntoIterator<Item = impl Into<String>>,
    ) -> AcquireTokenForClient {
        AcquireTokenForClient {
            client: self.clone(),
            scopes: scopes.into_iter().map(Into::into).collect(),
            mtls_pop: false,
            fmi_path: None,
            assertion_fmi_path: None,
            claims: None,
            force_refresh: false,
            correlation_id: None,
            tenant: None,
            extra_body: Vec::new(),
            extra_body_digest: None,
            extra_query: Vec::new(),
            extra_headers: Vec::new(),
        }
    }

    /// The token endpoint this client calls for a request with or without a client
    /// certificate (region applied).
    pub async fn token_endpoint(&self, mtls: bool) -> Result<TokenEndpoint, Error> {
        let region = self.region().await;
        self.inner.authority.token_endpoint(
            &EndpointOptions::default()
                .with_region(region)
                .with_mtls(mtls),
        )
    }
}

/// A client-credentials acquisition being configured; `.await` it (or call
/// [`AcquireTokenForClient::send`]).
#[must_use = "an acquisition does nothing until awaited"]
pub struct AcquireTokenForClient {
    client: ConfidentialClient,
    scopes: Vec<String>,
    mtls_pop: bool,
    fmi_path: Option<String>,
    assertion_fmi_path: Option<String>,
    claims: Option<String>,
    force_refresh: bool,
    correlation_id: Option<Uuid>,
    tenant: Option<String>,
    extra_body: Vec<(String, String)>,
    /// The cache component standing for `extra_body` (a digest: values may be secrets).
    extra_body_digest: Option<String>,
    extra_query: Vec<(String, String)>,
    extra_headers: Vec<(String, String)>,
}

impl fmt::Debug for AcquireTokenForClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names =
            |pairs: &[(String, String)]| pairs.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        f.debug_struct("AcquireTokenForClient")
            .field("client_id", &self.client.client_id())
            .field("scopes", &self.scopes)
            .field("mtls_pop", &self.mtls_pop)
            .field("fmi_path", &self.fmi_path)
            .field("assertion_fmi_path", &self.assertion_fmi_path)
            .field("claims", &self.claims.is_some())
            .field("force_refresh", &self.force_refresh)
            .field("tenant", &self.tenant)
            .field("extra_body", &names(&self.extra_body))
            .field("extra_query", &names(&self.extra_query))
            .field("extra_headers", &names(&self.extra_headers))
            .finish_non_exhaustive()
    }
}

impl AcquireTokenForClient {
    /// Asks for an mTLS PoP token bound to the certificate (the client's certificate, or the
    /// binding certificate its assertion provider returns).
    pub fn with_mtls_pop(mut self) -> Self {
        self.mtls_pop = true;
        self
    }

    /// Asks for an mTLS PoP token when `mtls_pop` is true.
    pub fn with_token_type(mut self, token_type: TokenType) -> Self {
        self.mtls_pop = token_type == TokenType::MtlsPop;
        self
    }

    /// Sends `fmi_path` (FMI: a token for an agent); cached under that component.
    ///
    /// The path is trimmed, as it is on the wire; a blank path is no path.
    pub fn with_fmi_path(mut self, fmi_path: impl Into<String>) -> Self {
        self.fmi_path = normalized_path(fmi_path.into());
        self
    }

    /// The FMI path meant for the client assertion (given to the assertion provider); the
    /// token is cached under the component `credential_fmi_path`.
    ///
    /// The path is trimmed; a blank path is no path.
    pub fn with_assertion_fmi_path(mut self, fmi_path: impl Into<String>) -> Self {
        self.assertion_fmi_path = normalized_path(fmi_path.into());
        self
    }

    /// A claims challenge from a resource (bypasses the cache).
    pub fn with_claims(mut self, claims: impl Into<String>) -> Self {
        self.claims = Some(claims.into());
        self
    }

    /// Skips the cache lookup.
    pub fn with_force_refresh(mut self, force_refresh: bool) -> Self {
        self.force_refresh = force_refresh;
        self
    }

    /// The correlation id (`client-request-id`).
    pub fn with_correlation_id(mut self, correlation_id: Uuid) -> Self {
        self.correlation_id = Some(correlation_id);
        self
    }

    /// Another tenant than the authority's.
    pub fn with_tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// An extra body parameter.
    ///
    /// Extra body parameters are part of the cache key: a token acquired with them is only
    /// served to requests with the same ones, and a request without them never gets it. The key
    /// holds a SHA-256 digest of the names and values (the component
    /// `extra_body_parameters`), never the values, which may be secrets. Extra query parameters
    /// and headers are not part of the key. A parameter with a blank value is not sent and not
    /// keyed. `fmi_path` and `credential_fmi_path` are refused here: use
    /// [`AcquireTokenForClient::with_fmi_path`] and
    /// [`AcquireTokenForClient::with_assertion_fmi_path`], whose cache components other MSAL
    /// libraries share.
    pub fn with_extra_body_parameter(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.extra_body.push((name.into(), value.into()));
        self.extra_body_digest = extra_body_digest(&self.extra_body);
        self
    }

    /// An extra query parameter on the token endpoint.
    pub fn with_extra_query_parameter(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.extra_query.push((name.into(), value.into()));
        self
    }

    /// An extra header.
    pub fn with_extra_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_headers.push((name.into(), value.into()));
        self
    }

    /// The binding a cached token must match, when it is known without asking the assertion
    /// provider.
    fn known_binding(&self) -> KnownBinding<'_> {
        match (&self.client.inner.credential, self.mtls_pop) {
            (_, false) => KnownBinding::Unbound,
            (ClientCredential::Certificate { identity, .. }, true) => KnownBinding::Bound(identity),
            _ => KnownBinding::AskTheProvider,
        }
    }

    fn memo_key(&self) -> MemoKey {
        MemoKey {
            scopes: self.scopes.clone(),
            mtls_pop: self.mtls_pop,
            fmi_path: self.fmi_path.clone(),
            assertion_fmi_path: self.assertion_fmi_path.clone(),
            tenant: self.tenant.clone(),
            extra_body_digest: self.extra_body_digest.clone(),
        }
    }

    /// The cache lookup of this request, built once per request shape and memoized.
    fn lookup_parts(&self, authority: &Authority) -> AccessTokenKey {
        let inner = &self.client.inner;
        let mut parts = AccessTokenKey::app(
            authority.host(),
            &inner.client_id,
            authority.tenant(),
            &self.scopes,
        )
        .with_token_type(if self.mtls_pop {
            TokenType::MtlsPop
        } else {
            TokenType::Bearer
        });
        if let Some(path) = &self.fmi_path {
            parts = parts.with_component("fmi_path", path.clone());
        }
        if let Some(path) = &self.assertion_fmi_path {
            parts = parts.with_component(CREDENTIAL_FMI_PATH, path.clone());
        }
        // What is sent is keyed: extra body parameters can change the token the server issues.
        if let Some(digest) = &self.extra_body_digest {
            parts = parts.with_component(EXTRA_BODY_COMPONENT, digest.clone());
        }
        parts
    }

    /// Refuses an extra body parameter that has a method (and a cache component) of its own.
    fn check_extra_body(&self) -> Result<(), Error> {
        let own_method = |name: &str| match name {
            "fmi_path" => Some("with_fmi_path"),
            CREDENTIAL_FMI_PATH => Some("with_assertion_fmi_path"),
            _ => None,
        };
        match self
            .extra_body
            .iter()
            .find_map(|(name, _)| own_method(name).map(|method| (name, method)))
        {
            Some((name, method)) => Err(Error::new(
                ErrorCode::INVALID_ARGUMENT,
                format!("{name:?} is not an extra body parameter: use {method}"),
            )),
            None => Ok(()),
        }
    }

    fn try_cached(&self) -> Option<AccessToken> {
        if self.force_refresh || self.claims.is_some() {
            return None;
        }
        let inner = &self.client.inner;
        let memo = inner.lookups.pin();
        let remembered = memo.get(&MemoShape(self))?;
        match self.known_binding() {
            KnownBinding::Unbound => inner.engine.try_hit_with_binding(remembered, None),
            KnownBinding::Bound(identity) => inner
                .engine
                .try_hit_with_binding(remembered, Some(identity)),
            // The binding the provider returned last time: a token cached for it is served
            // without asking the provider again (a rotated binding is a miss, below).
            KnownBinding::AskTheProvider => inner.engine.try_hit(remembered),
        }
    }

    fn remember_lookup(&self, lookup: &Lookup) {
        let inner = &self.client.inner;
        let memo = inner.lookups.pin();
        if memo.len() >= MAX_MEMOIZED_LOOKUPS {
            memo.clear();
        }
        memo.insert(self.memo_key(), lookup.clone());
    }

    pub(crate) fn claims(&self) -> Option<&str> {
        self.claims.as_deref()
    }

    pub(crate) fn correlation_id(&self) -> Option<Uuid> {
        self.correlation_id
    }

    /// Acquires the token: from the cache when it holds a usable one, otherwise from the
    /// identity provider.
    pub async fn send(self) -> Result<AccessToken, Error> {
        // The hit path: a memoized key, one probe, no allocation but the returned token.
        if let Some(token) = self.try_cached() {
            return Ok(token);
        }
        self.check_extra_body()?;
        let client = self.client.clone();
        let inner = &client.inner;
        let authority = match &self.tenant {
            Some(tenant) => inner.authority.with_tenant(tenant)?,
            None => inner.authority.clone(),
        };
        let token_type = if self.mtls_pop {
            TokenType::MtlsPop
        } else {
            TokenType::Bearer
        };
        let plan = Arc::new(Plan {
            client: client.clone(),
            authority,
            token_type,
            request: self,
        });

        // The binding a cached PoP token must match: the certificate, or (for an assertion
        // provider) the binding its assertion comes with — asked for now, and reused if the
        // cache misses.
        let mut preflight: Option<(TokenEndpoint, ClientAssertion)> = None;
        let binding = match (&inner.credential, token_type) {
            (ClientCredential::Certificate { identity, .. }, TokenType::MtlsPop) => {
                Some(identity.clone())
            }
            (ClientCredential::Assertion(provider), TokenType::MtlsPop) => {
                let endpoint = plan.endpoint(true).await?;
                let assertion = provider
                    .assertion(&plan.assertion_request(&endpoint))
                    .await?;
                let Some(binding) = assertion.binding().cloned() else {
                    return Err(Error::new(
                        ErrorCode::MTLS_CERTIFICATE_NOT_PROVIDED,
                        "mTLS PoP was asked for, but the assertion provider returned no binding certificate",
                    ));
                };
                preflight = Some((endpoint, assertion));
                Some(binding)
            }
            _ => None,
        };

        let lookup = Lookup::new(plan.request.lookup_parts(&plan.authority))
            .with_binding(binding)
            .with_force_refresh(plan.request.force_refresh)
            .with_bypass_cache(plan.request.claims.is_some());
        plan.request.remember_lookup(&lookup);

        let preflight = Arc::new(std::sync::Mutex::new(preflight));
        let fetch = {
            let plan = Arc::clone(&plan);
            move || {
                let plan = Arc::clone(&plan);
                let preflight = preflight
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                Box::pin(async move { plan.fetch(preflight).await }) as FetchFuture
            }
        };
        inner.engine.acquire(&lookup, fetch).await
    }
}

impl IntoFuture for AcquireTokenForClient {
    type Output = Result<AccessToken, Error>;
    type IntoFuture = AcquireTokenFuture;

    /// Looks in the cache at once: a hit is a future that is ready when first polled, with
    /// nothing allocated for it; a miss is the boxed request.
    fn into_future(self) -> Self::IntoFuture {
        match self.try_cached() {
            Some(token) => AcquireTokenFuture(AcquireState::Ready(Some(token))),
            None => AcquireTokenFuture(AcquireState::Sending(Box::pin(self.send()))),
        }
    }
}

/// The future of an awaited [`AcquireTokenForClient`]: ready at once on a cache hit, otherwise
/// the request to the identity provider.
#[must_use = "futures do nothing unless awaited"]
pub struct AcquireTokenFuture(AcquireState);

enum AcquireState {
    /// A cache hit (taken when polled).
    Ready(Option<AccessToken>),
    /// The request.
    Sending(Pin<Box<dyn Future<Output = Result<AccessToken, Error>> + Send>>),
}

impl fmt::Debug for AcquireTokenFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            AcquireState::Ready(_) => "AcquireTokenFuture(cache hit)",
            AcquireState::Sending(_) => "AcquireTokenFuture(request)",
        })
    }
}

impl Future for AcquireTokenFuture {
    type Output = Result<AccessToken, Error>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match &mut self.get_mut().0 {
            AcquireState::Ready(token) => std::task::Poll::Ready(token.take().ok_or_else(|| {
                Error::new(
                    ErrorCode::INTERNAL,
                    "an acquisition future was polled after it completed",
                )
            })),
            AcquireState::Sending(request) => request.as_mut().poll(cx),
        }
    }
}

/// What a cached token must be bound to, as far as the request alone tells.
enum KnownBinding<'a> {
    /// A Bearer request: an unbound token.
    Unbound,
    /// PoP with a certificate credential: that certificate.
    Bound(&'a ClientIdentity),
    /// PoP with an assertion provider: only its answer tells.
    AskTheProvider,
}

/// The cache component of the FMI path meant for the client assertion (PROTOCOL §7).
const CREDENTIAL_FMI_PATH: &str = "credential_fmi_path";

/// The cache component standing for a request's extra body parameters.
const EXTRA_BODY_COMPONENT: &str = "extra_body_parameters";

/// The digest of the extra body parameters that are sent (blank values are not), in order and
/// with repeated names kept apart; `None` when none is sent.
fn extra_body_digest(parameters: &[(String, String)]) -> Option<String> {
    let mut framed = std::collections::BTreeMap::new();
    for (index, (name, value)) in parameters.iter().enumerate() {
        if !value.trim().is_empty() {
            // The position keeps two parameters of one name apart (both are sent).
            framed.insert(format!("{index:04}:{name}"), value.clone());
        }
    }
    (!framed.is_empty()).then(|| fic_oauth_core::thumbprint::ext_hash(&framed))
}

/// An FMI path as it is sent (trimmed); a blank one is none.
fn normalized_path(path: String) -> Option<String> {
    let trimmed = path.trim();
    if trimmed.is_empty() {
        None
    } else if trimmed.len() == path.len() {
        Some(path)
    } else {
        Some(trimmed.to_string())
    }
}

/// How many request shapes a client memoizes the cache key of.
const MAX_MEMOIZED_LOOKUPS: usize = 256;

/// What decides the cache key of a client-credentials request.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct MemoKey {
    scopes: Vec<String>,
    mtls_pop: bool,
    fmi_path: Option<String>,
    assertion_fmi_path: Option<String>,
    tenant: Option<String>,
    extra_body_digest: Option<String>,
}

/// Borrows a request as a [`MemoKey`] for lookups, without cloning its strings.
struct MemoShape<'a>(&'a AcquireTokenForClient);

impl std::hash::Hash for MemoShape<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let r = self.0;
        r.scopes.hash(state);
        r.mtls_pop.hash(state);
        r.fmi_path.hash(state);
        r.assertion_fmi_path.hash(state);
        r.tenant.hash(state);
        r.extra_body_digest.hash(state);
    }
}

impl papaya::Equivalent<MemoKey> for MemoShape<'_> {
    fn equivalent(&self, key: &MemoKey) -> bool {
        let r = self.0;
        r.scopes == key.scopes
            && r.mtls_pop == key.mtls_pop
            && r.fmi_path == key.fmi_path
            && r.assertion_fmi_path == key.assertion_fmi_path
            && r.tenant == key.tenant
            && r.extra_body_digest == key.extra_body_digest
    }
}

/// Everything one acquisition needs to fetch (possibly again, for a background refresh).
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) client: ConfidentialClient,
    pub(crate) authority: Authority,
    pub(crate) token_type: TokenType,
    pub(crate) request: AcquireTokenForClient,
}

impl Plan {
    /// The token endpoint, with or without a client certificate. The region is resolved here,
    /// on the first request that needs an endpoint, not before the cache is consulted: a token
    /// found in a file or Redis cache never waits for region detection.
    async fn endpoint(&self, mtls: bool) -> Result<TokenEndpoint, Error> {
        let region = self.client.region().await;
        self.authority.token_endpoint(
            &EndpointOptions::default()
                .with_region(region)
                .with_mtls(mtls),
        )
    }

    fn assertion_request(&self, endpoint: &TokenEndpoint) -> AssertionRequest {
        let inner = &self.client.inner;
        let mut request = AssertionRequest::new(inner.client_id.clone(), endpoint.url().as_str())
            .with_tenant_id(self.authority.tenant())
            .with_authority(self.authority.url().as_str(), self.authority.kind())
            .with_client_capabilities(inner.client_capabilities.clone());
        if let Some(claims) = &self.request.claims {
            request = request.with_claims(claims.clone());
        }
        if let Some(path) = &self.request.assertion_fmi_path {
            request = request.with_fmi_path(path.clone());
        }
        if let Some(id) = self.request.correlation_id {
            request = request.with_correlation_id(id);
        }
        request
    }

    /// The endpoint and client authentication of this request.
    pub(crate) async fn authenticate(
        &self,
        preflight: Option<(TokenEndpoint, ClientAssertion)>,
    ) -> Result<(TokenEndpoint, ClientAuth), Error> {
        let inner = &self.client.inner;
        let pop = self.token_type == TokenType::MtlsPop;
        match &inner.credential {
            ClientCredential::Secret(secret) => Ok((
                self.endpoint(false).await?,
                ClientAuth::Secret(secret.clone()),
            )),
            ClientCredential::Certificate { identity, .. } if pop => Ok((
                self.endpoint(true).await?,
                ClientAuth::Certificate(identity.clone()),
            )),
            ClientCredential::Certificate { .. } => {
                let endpoint = self.endpoint(false).await?;
                let signer = inner.signer.as_ref().ok_or_else(|| {
                    Error::new(
                        ErrorCode::INTERNAL,
                        "a certificate credential without its signer",
                    )
                })?;
                let assertion = signer.sign(&self.assertion_request(&endpoint))?;
                Ok((endpoint, ClientAuth::assertion(assertion)))
            }
            ClientCredential::Assertion(provider) => {
                let (mut endpoint, mut assertion) = if let Some(ready) = preflight {
                    ready
                } else {
                    let endpoint = self.endpoint(pop).await?;
                    let assertion = provider
                        .assertion(&self.assertion_request(&endpoint))
                        .await?;
                    (endpoint, assertion)
                };
                let bound = assertion.binding().is_some();
                if bound != endpoint.is_mtls() {
                    // The provider's answer decides mTLS (a bound assertion goes to mtlsauth as
                    // jwt-pop): ask again for the endpoint actually used, so `aud` matches.
                    endpoint = self.endpoint(bound).await?;
                    assertion = provider
                        .assertion(&self.assertion_request(&endpoint))
                        .await?;
                }
                let (value, binding) = assertion.into_parts();
                Ok((
                    endpoint,
                    ClientAuth::Assertion {
                        assertion: value,
                        binding,
                    },
                ))
            }
        }
    }

    async fn fetch(
        &self,
        preflight: Option<(TokenEndpoint, ClientAssertion)>,
    ) -> Result<AccessToken, Error> {
        let inner = &self.client.inner;
        let started = Instant::now();
        // The span covers the client authentication too: an assertion provider (Leg 1 of a
        // two-leg flow, a blueprint's T1) can take longer than the request itself.
        let span = tracing::info_span!(
            "token_request",
            flow = "client_credentials",
            source = "identity_provider",
            client_id = %inner.client_id,
            host = tracing::field::Empty,
            token_type = %self.token_type,
            mtls = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let authenticated = self.authenticate(preflight).instrument(span.clone()).await;
        let (endpoint, auth) = match authenticated {
            Ok(authenticated) => authenticated,
            Err(error) => {
                span.record("outcome", error.code().as_str());
                return Err(error);
            }
        };
        span.record("host", endpoint.host());
        span.record("mtls", endpoint.is_mtls());
        let binding = auth.identity().cloned();
        let mut request = TokenRequest::client_credentials(
            endpoint,
            inner.client_id.clone(),
            self.request.scopes.clone(),
        )
        .with_auth(auth)
        .with_token_type(self.token_type)
        .with_claims(self.request.claims.clone())
        .with_client_capabilities(inner.client_capabilities.clone())
        .with_fmi_path(self.request.fmi_path.clone());
        for (name, value) in &self.request.extra_body {
            request = request.with_extra_body_parameter(name.clone(), value.clone());
        }
        for (name, value) in &self.request.extra_query {
            request = request.with_extra_query_parameter(name.clone(), value.clone());
        }
        for (name, value) in &self.request.extra_headers {
            request = request.with_extra_header(name.clone(), value.clone());
        }
        if let Some(id) = self.request.correlation_id {
            request = request.with_correlation_id(id);
        }
        let result = inner
            .sender
            .send(request, self.token_type)
            .instrument(span.clone())
            .await;
        span.record(
            "duration_ms",
            u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        );
        match result {
            Ok(response) => {
                span.record("outcome", "ok");
                // An app token names no tenant of its own: it is the one asked for, as the
                // cache realm says (so a fresh token and its cache hits agree).
                Ok(response
                    .with_tenant_fallback(self.authority.tenant())
                    .into_access_token(inner.clock.now(), self.request.scopes.clone(), binding))
            }
            Err(error) => {
                span.record("outcome", error.code().as_str());
                Err(error)
            }
        }
    }
}

#[async_trait]
impl TokenCredential for ConfidentialClient {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: &TokenRequestOptions,
    ) -> Result<AccessToken, Error> {
        let mut request = self
            .acquire_token_for_client(scopes.iter().copied())
            .with_force_refresh(options.force_refresh);
        if self.inner.mtls_pop {
            request = request.with_mtls_pop();
        }
        if let Some(claims) = &options.claims {
            request = request.with_claims(claims.clone());
        }
        if let Some(id) = options.correlation_id {
            request = request.with_correlation_id(id);
        }
        if let Some(tenant) = &options.tenant_id {
            request = request.with_tenant(tenant.clone());
        }
        request.send().await
    }
}
