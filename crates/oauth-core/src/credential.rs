//! The result of every flow ([`AccessToken`]) and the seam for anything that yields tokens
//! ([`TokenCredential`]).
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use fic_oauth_core::{AccessToken, Secret, TokenType};
//!
//! let token = AccessToken::new(
//!     Secret::new("eyJ0eXAi..."),
//!     TokenType::Bearer,
//!     UNIX_EPOCH + Duration::from_secs(1_700_003_600),
//! );
//! assert_eq!(token.authorization_header().expose(), "Bearer eyJ0eXAi...");
//! assert!(token.binding.is_none());
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::Error;
use crate::identity::ClientIdentity;
use crate::secret::Secret;

/// The type of an access token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenType {
    /// A bearer token (RFC 6750).
    #[default]
    Bearer,
    /// A token bound to an X.509 certificate (RFC 8705), `token_type=mtls_pop`.
    MtlsPop,
}

impl TokenType {
    /// The wire name: `Bearer` or `mtls_pop`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bearer => "Bearer",
            Self::MtlsPop => "mtls_pop",
        }
    }

    /// The `Authorization` scheme: `Bearer` or `mtls_pop`.
    pub fn authorization_scheme(self) -> &'static str {
        self.as_str()
    }

    /// Parses a server's `token_type` (case-insensitive); `None` for other types.
    pub fn parse(value: &str) -> Option<Self> {
        if value.eq_ignore_ascii_case("bearer") {
            Some(Self::Bearer)
        } else if value.eq_ignore_ascii_case("mtls_pop") {
            Some(Self::MtlsPop)
        } else {
            None
        }
    }
}

impl fmt::Display for TokenType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a token came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenSource {
    /// Freshly issued by the identity provider (or managed identity endpoint).
    IdentityProvider,
    /// Served from the token cache.
    Cache,
}

/// The signed-in user of a user flow (`user_fic`, refresh).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Account {
    /// `uid.utid` from `client_info`.
    pub home_account_id: String,
    /// The cloud host the account belongs to.
    pub environment: String,
    /// The tenant of the token.
    pub realm: String,
    /// The user principal name (`preferred_username`), when known.
    pub username: Option<String>,
    /// The user's object id (`oid`), when known.
    pub object_id: Option<String>,
}

impl Account {
    /// An account with the required fields.
    pub fn new(
        home_account_id: impl Into<String>,
        environment: impl Into<String>,
        realm: impl Into<String>,
    ) -> Self {
        Self {
            home_account_id: home_account_id.into(),
            environment: environment.into(),
            realm: realm.into(),
            username: None,
            object_id: None,
        }
    }
}

/// An access token and what is known about it.
#[derive(Clone)]
#[non_exhaustive]
pub struct AccessToken {
    /// The token itself.
    pub token: Secret,
    /// Bearer or mtls_pop.
    pub token_type: TokenType,
    /// When it expires.
    pub expires_on: SystemTime,
    /// When to refresh it proactively (from `refresh_in`, or half-life for long tokens).
    pub refresh_on: Option<SystemTime>,
    /// The scopes it was granted for (shared: cloning a token does not copy them).
    pub scopes: Arc<[String]>,
    /// The tenant that issued it.
    pub tenant_id: Option<Arc<str>>,
    /// Identity provider or cache.
    pub source: TokenSource,
    /// For mtls_pop: the certificate the token is bound to (present it when calling the resource).
    pub binding: Option<ClientIdentity>,
    /// For user flows: the account (shared: cloning a token does not copy it, and the token stays
    /// small to move, which the cache-hit path does several times).
    pub account: Option<Arc<Account>>,
    /// For user flows: the refresh token, on tokens from the identity provider (the cache keeps
    /// it and uses it to renew; cache hits do not hand it out).
    pub refresh_token: Option<Secret>,
    /// For user flows: the raw id token (from the identity provider, or the cache on a hit: the
    /// user's latest, which, as in MSAL, may have expired before the access token).
    pub id_token: Option<Secret>,
}

impl AccessToken {
    /// A token with the given value, type and expiry, from the identity provider.
    pub fn new(token: Secret, token_type: TokenType, expires_on: SystemTime) -> Self {
        Self {
            token,
            token_type,
            expires_on,
            refresh_on: None,
            scopes: Arc::from(Vec::new()),
            tenant_id: None,
            source: TokenSource::IdentityProvider,
            binding: None,
            account: None,
            refresh_token: None,
            id_token: None,
        }
    }

    /// `x5t#S256` of the binding certificate, for mtls_pop tokens.
    pub fn binding_thumbprint(&self) -> Option<&str> {
        self.binding.as_ref().map(ClientIdentity::thumbprint_s256)
    }

    /// The `Authorization` header value: `mtls_pop <token>` for PoP tokens (as MSAL.NET),
    /// `Bearer <token>` otherwise.
    pub fn authorization_header(&self) -> Secret {
        Secret::new(format!(
            "{} {}",
            self.token_type.authorization_scheme(),
            self.token.expose()
        ))
    }

    /// `Bearer <token>`, for resources that take bound tokens with the Bearer scheme.
    pub fn bearer_authorization_header(&self) -> Secret {
        Secret::new(format!("Bearer {}", self.token.expose()))
    }

    /// Time left until expiry at `now` (zero when expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.expires_on.duration_since(now).unwrap_or_default()
    }

    /// Whether the token has under `margin` left at `now`.
    pub fn expires_within(&self, now: SystemTime, margin: Duration) -> bool {
        self.remaining(now) < margin
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &self.token)
            .field("token_type", &self.token_type)
            .field("expires_on", &crate::time::unix_seconds(self.expires_on))
            .field(
                "refresh_on",
                &self.refresh_on.map(crate::time::unix_seconds),
            )
            .field("scopes", &self.scopes)
            .field("tenant_id", &self.tenant_id)
            .field("source", &self.source)
            .field("binding", &self.binding_thumbprint())
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// Per-call options of [`TokenCredential::get_token`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct TokenRequestOptions {
    /// A claims challenge (JSON) from a resource; a request with claims bypasses the cache.
    pub claims: Option<String>,
    /// Skip the cache and ask the identity provider.
    pub force_refresh: bool,
    /// The correlation id to send (`client-request-id`); a new one when absent.
    pub correlation_id: Option<Uuid>,
    /// A tenant to use instead of the credential's own, where the credential allows it.
    pub tenant_id: Option<String>,
}

impl TokenRequestOptions {
    /// Sets the claims challenge.
    #[must_use]
    pub fn with_claims(mut self, claims: impl Into<String>) -> Self {
        self.claims = Some(claims.into());
        self
    }

    /// Skips the cache.
    #[must_use]
    pub fn with_force_refresh(mut self, force_refresh: bool) -> Self {
        self.force_refresh = force_refresh;
        self
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, correlation_id: Uuid) -> Self {
        self.correlation_id = Some(correlation_id);
        self
    }

    /// Sets the tenant.
    #[must_use]
    pub fn with_tenant_id(mut self, tenant_id: impl Into<String>) -> Self {
        self.tenant_id = Some(tenant_id.into());
        self
    }
}

/// Anything that yields access tokens: a managed identity, a confidential client, a two-leg
/// composition. Leg 1 of every FIC flow is "any `TokenCredential`".
#[async_trait]
pub trait TokenCredential: Send + Sync + fmt::Debug {
    /// A token for `scopes` (e.g. `["api://AzureADTokenExchange/.default"]`).
    async fn get_token(
        &self,
        scopes: &[&str],
        options: &TokenRequestOptions,
    ) -> Result<AccessToken, Error>;
}

#[async_trait]
impl<T: TokenCredential + ?Sized> TokenCredential for Arc<T> {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: &TokenRequestOptions,
    ) -> Result<AccessToken, Error> {
        (**self).get_token(scopes, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn headers_and_expiry() {
        let mut token = AccessToken::new(
            Secret::new("abc"),
            TokenType::MtlsPop,
            UNIX_EPOCH + Duration::from_secs(1000),
        );
        assert_eq!(token.authorization_header().expose(), "mtls_pop abc");
        assert_eq!(token.bearer_authorization_header().expose(), "Bearer abc");
        let now = UNIX_EPOCH + Duration::from_secs(800);
        assert_eq!(token.remaining(now), Duration::from_secs(200));
        assert!(token.expires_within(now, Duration::from_secs(300)));
        assert!(!token.expires_within(now, Duration::from_secs(100)));
        token.token_type = TokenType::Bearer;
        assert_eq!(token.authorization_header().expose(), "Bearer abc");
        assert!(!format!("{token:?}").contains("abc"));
    }

    #[test]
    fn token_type_parsing_is_case_insensitive() {
        assert_eq!(TokenType::parse("bearer"), Some(TokenType::Bearer));
        assert_eq!(TokenType::parse("MTLS_POP"), Some(TokenType::MtlsPop));
        assert_eq!(TokenType::parse("pop"), None);
    }
}
