//! FIC two-leg: Leg 1 gets a token for the token-exchange audience from any
//! [`TokenCredential`] (a managed identity, a confidential client); Leg 2 is a confidential
//! client whose client assertion is that token (jwt-bearer, or jwt-pop when a certificate is
//! bound).

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use fic_assertion::{
    AssertionProvider, AssertionRequest, BoundAssertion, ClientAssertion, StaticAssertion,
};
use fic_oauth_core::authority::{Authority, Cloud};
use fic_oauth_core::{
    AccessToken, ClientIdentity, Clock, Error, ErrorCode, SystemClock, TokenCredential,
    TokenRequestOptions,
};

use fic_token_cache::EXPIRY_MARGIN;

use crate::confidential::{AcquireTokenForClient, ConfidentialClient, ConfidentialClientBuilder};

/// The scope asking for a token with `audience` (`api://AzureADTokenExchange/.default`).
pub fn exchange_scope(audience: &str) -> String {
    format!("{}/.default", audience.trim_end_matches('/'))
}

/// The token-exchange audience of `authority`'s cloud; an error for a cloud that has none
/// published (Singapore): the caller must name one.
pub(crate) fn exchange_audience_of(authority: &Authority) -> Result<&'static str, Error> {
    authority.token_exchange_audience().ok_or_else(|| {
        Error::new(
            ErrorCode::INVALID_ARGUMENT,
            format!(
                "no token-exchange audience is known for {}: configure one explicitly",
                authority.host()
            ),
        )
    })
}

/// The token-exchange audience for a request to `authority`: its cloud's
/// (`api://AzureADTokenExchange`, `...USGov`, `...China`, ...).
fn audience_for(authority: Option<&str>) -> Result<&'static str, Error> {
    let parsed = authority.map(Authority::parse).transpose()?;
    match parsed {
        Some(authority) => exchange_audience_of(&authority),
        None => Cloud::Public.token_exchange_audience().ok_or_else(|| {
            Error::new(
                ErrorCode::INTERNAL,
                "the public cloud has no exchange audience",
            )
        }),
    }
}

/// An assertion provider whose assertions are Leg-1 tokens: each request gets a token for the
/// token-exchange audience from the Leg-1 credential (which caches it and renews it before it
/// expires). An expired Leg-1 token is never used: should the credential hand back one with
/// under 5 minutes left (the cache's expiry margin), it is asked once more with a forced
/// refresh, and an error is returned if that one has expired.
///
/// The assertion is bound (jwt-pop) to the Leg-1 token's own certificate when Leg 1 was mTLS
/// PoP (the identity provider requires the TLS certificate of Leg 2 to be the one in the token's
/// `cnf`), otherwise to the configured binding certificate, if any.
#[derive(Clone)]
pub struct FederatedAssertion {
    leg1: Arc<dyn TokenCredential>,
    audience: Option<String>,
    binding: Option<ClientIdentity>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for FederatedAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FederatedAssertion")
            .field("leg1", &self.leg1)
            .field("audience", &self.audience)
            .field(
                "binding",
                &self.binding.as_ref().map(ClientIdentity::thumbprint_s256),
            )
            .finish_non_exhaustive()
    }
}

impl FederatedAssertion {
    /// Assertions from `leg1`, for the exchange audience of the Leg-2 authority's cloud.
    pub fn new(leg1: Arc<dyn TokenCredential>) -> Self {
        Self {
            leg1,
            audience: None,
            binding: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// The clock that tells whether a Leg-1 token has expired (default: the system clock;
    /// [`TwoLeg`] uses the Leg-2 client's).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Another exchange audience than the cloud's.
    #[must_use]
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Binds the assertions to `certificate` (jwt-pop, Leg 2 over mTLS).
    #[must_use]
    pub fn with_binding(mut self, certificate: ClientIdentity) -> Self {
        self.binding = Some(certificate);
        self
    }
}

#[async_trait]
impl AssertionProvider for FederatedAssertion {
    async fn assertion(&self, request: &AssertionRequest) -> Result<ClientAssertion, Error> {
        let audience = match &self.audience {
            Some(audience) => audience.clone(),
            None => audience_for(request.authority.as_deref())?.to_string(),
        };
        let scope = exchange_scope(&audience);
        let mut options =
            TokenRequestOptions::default().with_correlation_id(request.correlation_id);
        if let Some(claims) = &request.claims {
            options = options.with_claims(claims.clone());
        }
        let mut token = self.leg1.get_token(&[scope.as_str()], &options).await?;
        if token.expires_within(self.clock.now(), EXPIRY_MARGIN) {
            // A credential that caches renews its tokens this close to expiry; one that did not
            // is asked once more for a new one.
            tracing::debug!(
                "the Leg-1 credential returned a token about to expire; forcing a refresh"
            );
            token = self
                .leg1
                .get_token(&[scope.as_str()], &options.clone().with_force_refresh(true))
                .await?;
            if has_expired(&token, self.clock.now()) {
                return Err(expired_leg1());
            }
        }
        let binding = token.binding.clone().or_else(|| self.binding.clone());
        let assertion = ClientAssertion::new(token.token)?;
        Ok(match binding {
            Some(binding) => assertion.with_binding(binding),
            None => assertion,
        })
    }
}

/// FIC two-leg as one credential: Leg 1 from any [`TokenCredential`], Leg 2 a confidential
/// client of another app whose assertion is the Leg-1 token.
///
/// ```no_run
/// # async fn demo(managed_identity: std::sync::Arc<dyn fic_oauth_core::TokenCredential>, cert: fic_oauth_core::ClientIdentity) -> Result<(), fic_oauth_core::Error> {
/// use fic_flows::TwoLeg;
///
/// use fic_flows::ConfidentialClient;
///
/// // Leg 1: the VM's managed identity (Bearer). Leg 2: app 2222... with PoP on `cert`.
/// let leg2 = ConfidentialClient::builder("22222222-2222-2222-2222-222222222222")
///     .authority("https://login.microsoftonline.com/contoso.onmicrosoft.com");
/// let two_leg = TwoLeg::builder(managed_identity, leg2).binding_certificate(cert).build()?;
/// let token = two_leg.acquire_token(["https://graph.microsoft.com/.default"]).with_mtls_pop().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct TwoLeg {
    leg2: ConfidentialClient,
}

/// Builds a [`TwoLeg`].
pub struct TwoLegBuilder {
    assertion: FederatedAssertion,
    leg2: ConfidentialClientBuilder,
}

impl fmt::Debug for TwoLegBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwoLegBuilder")
            .field("assertion", &self.assertion)
            .field("leg2", &self.leg2)
            .finish()
    }
}

impl TwoLeg {
    /// Leg 1 is `leg1`; Leg 2 is the app `leg2` describes (client id, authority, region,
    /// transport, cache...); its credential is set here: the Leg-1 token.
    pub fn builder(
        leg1: Arc<dyn TokenCredential>,
        leg2: ConfidentialClientBuilder,
    ) -> TwoLegBuilder {
        TwoLegBuilder {
            assertion: FederatedAssertion::new(leg1),
            leg2,
        }
    }

    /// A Leg-2 acquisition for `scopes` (add `.with_mtls_pop()` for a bound token).
    pub fn acquire_token(
        &self,
        scopes: impl IntoIterator<Item = impl Into<String>>,
    ) -> AcquireTokenForClient {
        self.leg2.acquire_token_for_client(scopes)
    }

    /// The Leg-2 client.
    pub fn leg2(&self) -> &ConfidentialClient {
        &self.leg2
    }
}

impl TwoLegBuilder {
    /// Leg 2 presents `certificate` over mTLS (jwt-pop) and may ask for mTLS PoP tokens.
    #[must_use]
    pub fn binding_certificate(mut self, certificate: ClientIdentity) -> Self {
        self.assertion = self.assertion.with_binding(certificate);
        self
    }

    /// Another exchange audience than the Leg-2 cloud's.
    #[must_use]
    pub fn exchange_audience(mut self, audience: impl Into<String>) -> Self {
        self.assertion = self.assertion.with_audience(audience);
        self
    }

    /// The two-leg credential.
    pub fn build(self) -> Result<TwoLeg, Error> {
        let assertion = self.assertion.with_clock(Arc::clone(&self.leg2.clock));
        let leg2 = self.leg2.assertion_provider(assertion).build()?;
        Ok(TwoLeg { leg2 })
    }
}

#[async_trait]
impl TokenCredential for TwoLeg {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: &TokenRequestOptions,
    ) -> Result<AccessToken, Error> {
        self.leg2.get_token(scopes, options).await
    }
}

/// Leg 1 by hand (the seeds' `FicLeg1Acquirer`): a token for the token-exchange audience from
/// any credential.
#[derive(Clone, Debug)]
pub struct FicLeg1 {
    credential: Arc<dyn TokenCredential>,
    audience: String,
}

impl FicLeg1 {
    /// Leg 1 with `credential`, for the public cloud's exchange audience.
    pub fn new(credential: Arc<dyn TokenCredential>) -> Self {
        Self {
            credential,
            audience: audience_for(None)
                .unwrap_or("api://AzureADTokenExchange")
                .to_string(),
        }
    }

    /// For `cloud`'s exchange audience.
    pub fn for_cloud(credential: Arc<dyn TokenCredential>, cloud: Cloud) -> Result<Self, Error> {
        let audience = cloud.token_exchange_audience().ok_or_else(|| {
            Error::new(
                ErrorCode::INVALID_ARGUMENT,
                format!("no token-exchange audience is known for {cloud:?}: use with_audience"),
            )
        })?;
        Ok(Self {
            credential,
            audience: audience.to_string(),
        })
    }

    /// Another audience.
    #[must_use]
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = audience.into();
        self
    }

    /// The Leg-1 token (the assertion for Leg 2).
    pub async fn acquire_assertion(&self) -> Result<AccessToken, Error> {
        self.acquire_assertion_with(&TokenRequestOptions::default())
            .await
    }

    /// The Leg-1 token, with options (force refresh, claims, correlation id).
    pub async fn acquire_assertion_with(
        &self,
        options: &TokenRequestOptions,
    ) -> Result<AccessToken, Error> {
        let scope = exchange_scope(&self.audience);
        self.credential.get_token(&[scope.as_str()], options).await
    }
}

/// Leg 2 by hand (the seeds' `FicLeg2Exchanger`): exchanges a Leg-1 token for a token of this
/// app.
#[derive(Clone, Debug)]
pub struct FicLeg2 {
    template: ConfidentialClient,
    certificate: Option<ClientIdentity>,
}

impl FicLeg2 {
    /// Leg 2 as the app `leg2` describes (client id, authority, region, transport, cache...);
    /// any credential set on it is replaced by the Leg-1 token of each exchange.
    pub fn new(leg2: ConfidentialClientBuilder) -> Result<Self, Error> {
        let unset = StaticAssertion::new("the Leg-1 token is given to FicLeg2::exchange")?;
        Ok(Self {
            template: leg2.assertion_provider(unset).build()?,
            certificate: None,
        })
    }

    /// Present `certificate` (jwt-pop) when the Leg-1 token is not itself bound.
    #[must_use]
    pub fn with_certificate(mut self, certificate: ClientIdentity) -> Self {
        self.certificate = Some(certificate);
        self
    }

    /// Exchanges `leg1` for a token for `scopes` (add `.with_mtls_pop()` for a bound one).
    ///
    /// An expired Leg-1 token is refused here (`invalid_client_assertion`), before any
    /// request: acquire a new one with [`FicLeg1::acquire_assertion`].
    pub fn exchange(
        &self,
        leg1: &AccessToken,
        scopes: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<AcquireTokenForClient, Error> {
        if has_expired(leg1, self.template.inner.clock.now()) {
            return Err(expired_leg1());
        }
        let binding = leg1.binding.clone().or_else(|| self.certificate.clone());
        let assertion = StaticAssertion::new(leg1.token.clone())?;
        let provider: Arc<dyn AssertionProvider> = match binding {
            Some(binding) => Arc::new(BoundAssertion::new(assertion, binding)),
            None => Arc::new(assertion),
        };
        let client = self
            .template
            .with_credential(crate::ClientCredential::Assertion(provider))?;
        Ok(client.acquire_token_for_client(scopes))
    }
}

/// Whether a Leg-1 token can no longer serve as an assertion at `now`.
fn has_expired(token: &AccessToken, now: SystemTime) -> bool {
    token.remaining(now).is_zero()
}

fn expired_leg1() -> Error {
    Error::new(
        ErrorCode::INVALID_CLIENT_ASSERTION,
        "the Leg-1 token has expired: it cannot be exchanged (acquire a new one)",
    )
}
