//! What the cache stores: the entities of the MSAL unified schema.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use fic_oauth_core::{AccessToken, Account, ClientIdentity, Secret, TokenSource, TokenType};

use crate::key::{AccessTokenKey, CacheKey, CredentialType};

/// A cached access token (the `AccessToken` node of the unified schema).
#[non_exhaustive]
pub struct CachedAccessToken {
    key: AccessTokenKey,
    secret: Secret,
    cached_at: SystemTime,
    expires_on: SystemTime,
    extended_expires_on: Option<SystemTime>,
    refresh_on: Option<SystemTime>,
    kid: Option<String>,
    /// The result served on a hit, prepared once (cloning it copies no string). Its `scopes`
    /// are the entry's own, so their reference count tells whether a served copy is alive.
    served: AccessToken,
    /// Copies of `served` with their own reference counts, one per stripe, made only for an
    /// entry that is hit while a token it served is still alive (see [`MAX_SERVED_STRIPES`]).
    stripes: OnceLock<Box<[OnceLock<AccessToken>]>>,
}

/// The most copies of the served token a hot entry keeps. A hit clones the served token's shared
/// parts (token, scopes, tenant); threads cloning one set of reference counts at once contend on
/// their cache lines, which costs more than the rest of the hit, so threads hitting a hot entry
/// clone the copy of their stripe. There is one stripe per CPU, at most this many; an entry that
/// is never hit while a token it served is still alive makes no copy.
pub(crate) const MAX_SERVED_STRIPES: usize = 8;

/// How many stripes threads are spread over: one per CPU, at most [`MAX_SERVED_STRIPES`].
fn stripe_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .clamp(1, MAX_SERVED_STRIPES)
    })
}

/// This thread's stripe: threads take stripes round-robin as they first hit the cache.
fn thread_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % stripe_count();
    }
    STRIPE.with(|stripe| *stripe)
}

/// A copy of `token` that shares no reference count with it.
fn unshared_copy(token: &AccessToken) -> AccessToken {
    let mut copy = token.clone();
    copy.token = Secret::new(token.token.expose());
    copy.scopes = token.scopes.iter().cloned().collect();
    copy.tenant_id = token.tenant_id.as_deref().map(Arc::from);
    copy
}

impl CachedAccessToken {
    /// A cache entry for `token` under `key`, stored at `now`. The `kid` is the binding
    /// certificate's thumbprint for mtls_pop tokens.
    pub fn from_token(key: AccessTokenKey, token: &AccessToken, now: SystemTime) -> Self {
        let mut entry = Self::new(
            key.with_token_type(token.token_type),
            token.token.clone(),
            now,
            token.expires_on,
            token.refresh_on,
            token.binding_thumbprint().map(str::to_string),
        );
        // Hits return the scopes as the token was acquired for, not the normalised key target
        // (copied: the entry's reference count must be its own).
        if !token.scopes.is_empty() {
            entry.served.scopes = token.scopes.iter().cloned().collect();
        }
        entry
    }

    /// An entry from its stored fields (file and Redis backends load entries this way).
    pub fn new(
        key: AccessTokenKey,
        secret: Secret,
        cached_at: SystemTime,
        expires_on: SystemTime,
        refresh_on: Option<SystemTime>,
        kid: Option<String>,
    ) -> Self {
        let mut served = AccessToken::new(secret.clone(), key.token_type, expires_on);
        served.refresh_on = refresh_on;
        served.scopes = key
            .target
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        served.tenant_id = Some(key.realm.as_str())
            .filter(|r| !r.is_empty())
            .map(Into::into);
        served.source = TokenSource::Cache;
        Self {
            key,
            secret,
            cached_at,
            expires_on,
            extended_expires_on: None,
            refresh_on,
            kid,
            served,
            stripes: OnceLock::new(),
        }
    }

    /// Sets the extended expiry (`ext_expires_in` applied).
    #[must_use]
    pub fn with_extended_expires_on(mut self, extended_expires_on: Option<SystemTime>) -> Self {
        self.extended_expires_on = extended_expires_on;
        self
    }

    /// The key parts (home account id, environment, client id, realm, target, type, components).
    pub fn key(&self) -> &AccessTokenKey {
        &self.key
    }

    /// The token.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// When it was stored.
    pub fn cached_at(&self) -> SystemTime {
        self.cached_at
    }

    /// When it expires.
    pub fn expires_on(&self) -> SystemTime {
        self.expires_on
    }

    /// The extended expiry, if any.
    pub fn extended_expires_on(&self) -> Option<SystemTime> {
        self.extended_expires_on
    }

    /// When to refresh it proactively.
    pub fn refresh_on(&self) -> Option<SystemTime> {
        self.refresh_on
    }

    /// For mtls_pop: the `x5t#S256` of the binding certificate (`kid`).
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The cache key.
    pub fn cache_key(&self) -> CacheKey {
        self.key.build()
    }

    /// The credential type.
    pub fn credential_type(&self) -> CredentialType {
        self.key.credential_type()
    }

    /// The token type.
    pub fn token_type(&self) -> TokenType {
        self.key.token_type
    }

    /// The extension components.
    pub fn components(&self) -> &BTreeMap<String, String> {
        &self.key.components
    }

    /// Whether this entry may serve a request bound to `kid` (`None` for Bearer): mtls_pop
    /// entries serve only the same certificate; Bearer entries only unbound requests.
    pub fn matches_kid(&self, kid: Option<&str>) -> bool {
        self.kid.as_deref() == kid
    }

    /// Whether it has at least `margin` left at `now`.
    pub fn is_fresh(&self, now: SystemTime, margin: Duration) -> bool {
        self.expires_on
            .duration_since(now)
            .is_ok_and(|left| left >= margin)
    }

    /// The result value, served from the cache, bound to `binding` for mtls_pop tokens.
    pub fn to_access_token(&self, binding: Option<&ClientIdentity>) -> AccessToken {
        self.to_access_token_on(thread_stripe(), binding)
    }

    fn to_access_token_on(&self, stripe: usize, binding: Option<&ClientIdentity>) -> AccessToken {
        let mut token = self.served_on(stripe).clone();
        if self.token_type() == TokenType::MtlsPop {
            token.binding = binding.cloned();
        }
        token
    }
}

impl CachedAccessToken {
    /// The served token to clone on `stripe`: the entry's own, or — when the entry is hot — the
    /// stripe's copy.
    fn served_on(&self, stripe: usize) -> &AccessToken {
        let stripes = match self.stripes.get() {
            Some(stripes) => stripes,
            // No token this entry served is alive: nobody is cloning it at this moment.
            None if Arc::strong_count(&self.served.scopes) <= 1 => return &self.served,
            None => self
                .stripes
                .get_or_init(|| (0..stripe_count()).map(|_| OnceLock::new()).collect()),
        };
        stripes.get(stripe).map_or(&self.served, |copy| {
            copy.get_or_init(|| unshared_copy(&self.served))
        })
    }
}

impl Clone for CachedAccessToken {
    /// A clone shares the served token but not its per-stripe copies.
    fn clone(&self) -> Self {
        Self {
            key: self.key.clone(),
            secret: self.secret.clone(),
            cached_at: self.cached_at,
            expires_on: self.expires_on,
            extended_expires_on: self.extended_expires_on,
            refresh_on: self.refresh_on,
            kid: self.kid.clone(),
            served: unshared_copy_of_scopes(&self.served),
            stripes: OnceLock::new(),
        }
    }
}

/// `token` with its own `scopes` (the clone's hotness is its own).
fn unshared_copy_of_scopes(token: &AccessToken) -> AccessToken {
    let mut copy = token.clone();
    copy.scopes = token.scopes.iter().cloned().collect();
    copy
}

impl PartialEq for CachedAccessToken {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
            && self.secret == other.secret
            && self.cached_at == other.cached_at
            && self.expires_on == other.expires_on
            && self.extended_expires_on == other.extended_expires_on
            && self.refresh_on == other.refresh_on
            && self.kid == other.kid
    }
}

impl Eq for CachedAccessToken {}

impl fmt::Debug for CachedAccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedAccessToken")
            .field("key", &self.cache_key().as_str())
            .field("secret", &self.secret)
            .field(
                "expires_on",
                &fic_oauth_core::time::unix_seconds(self.expires_on),
            )
            .field(
                "refresh_on",
                &self.refresh_on.map(fic_oauth_core::time::unix_seconds),
            )
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// A cached refresh token.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CachedRefreshToken {
    /// `uid.utid`.
    pub home_account_id: String,
    /// The authority host.
    pub environment: String,
    /// The client id.
    pub client_id: String,
    /// The refresh token.
    pub secret: Secret,
}

impl CachedRefreshToken {
    /// A refresh-token entry.
    pub fn new(home_account_id: &str, environment: &str, client_id: &str, secret: Secret) -> Self {
        Self {
            home_account_id: home_account_id.to_string(),
            environment: environment.to_string(),
            client_id: client_id.to_string(),
            secret,
        }
    }

    /// The cache key.
    pub fn cache_key(&self) -> CacheKey {
        CacheKey::refresh_token(&self.home_account_id, &self.environment, &self.client_id)
    }
}

/// A cached id token.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CachedIdToken {
    /// `uid.utid`.
    pub home_account_id: String,
    /// The authority host.
    pub environment: String,
    /// The client id.
    pub client_id: String,
    /// The tenant.
    pub realm: String,
    /// The id token.
    pub secret: Secret,
}

impl CachedIdToken {
    /// An id-token entry.
    pub fn new(
        home_account_id: &str,
        environment: &str,
        client_id: &str,
        realm: &str,
        secret: Secret,
    ) -> Self {
        Self {
            home_account_id: home_account_id.to_string(),
            environment: environment.to_string(),
            client_id: client_id.to_string(),
            realm: realm.to_string(),
            secret,
        }
    }

    /// The cache key.
    pub fn cache_key(&self) -> CacheKey {
        CacheKey::id_token(
            &self.home_account_id,
            &self.environment,
            &self.client_id,
            &self.realm,
        )
    }
}

/// A cached account.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CachedAccount {
    /// The account.
    pub account: Account,
}

impl CachedAccount {
    /// An account entry.
    pub fn new(account: Account) -> Self {
        Self { account }
    }

    /// The cache key.
    pub fn cache_key(&self) -> CacheKey {
        CacheKey::account(
            &self.account.home_account_id,
            &self.account.environment,
            &self.account.realm,
        )
    }
}

/// One cache entry.
///
/// Entries live behind an `Arc` in every cache, so the size of the access-token variant costs
/// nothing per lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
#[non_exhaustive]
pub enum CacheEntry {
    /// An access token.
    AccessToken(CachedAccessToken),
    /// A refresh token.
    RefreshToken(CachedRefreshToken),
    /// An id token.
    IdToken(CachedIdToken),
    /// An account.
    Account(CachedAccount),
}

impl CacheEntry {
    /// The key this entry is stored under.
    pub fn cache_key(&self) -> CacheKey {
        match self {
            Self::AccessToken(e) => e.cache_key(),
            Self::RefreshToken(e) => e.cache_key(),
            Self::IdToken(e) => e.cache_key(),
            Self::Account(e) => e.cache_key(),
        }
    }

    /// When the entry stops being useful (access tokens); `None` for entries that do not expire
    /// on their own.
    pub fn expires_on(&self) -> Option<SystemTime> {
        match self {
            Self::AccessToken(e) => Some(
                e.extended_expires_on
                    .map_or(e.expires_on, |x| x.max(e.expires_on)),
            ),
            _ => None,
        }
    }

    /// The access token, if this is one.
    pub fn as_access_token(&self) -> Option<&CachedAccessToken> {
        match self {
            Self::AccessToken(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn entry() -> CachedAccessToken {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut token = AccessToken::new(
            Secret::new("token-value"),
            TokenType::Bearer,
            now + Duration::from_secs(3600),
        );
        token.scopes = Arc::from(vec!["https://vault.azure.net/.default".to_string()]);
        let key = AccessTokenKey::app("env", "cid", "tid", ["https://vault.azure.net/.default"]);
        CachedAccessToken::from_token(key, &token, now)
    }

    fn same(a: &AccessToken, b: &AccessToken) -> bool {
        a.token == b.token
            && a.scopes == b.scopes
            && a.tenant_id == b.tenant_id
            && a.expires_on == b.expires_on
            && a.source == b.source
    }

    #[test]
    fn a_hot_entry_serves_other_stripes_from_their_own_copy() {
        let entry = entry();
        let first = entry.to_access_token_on(1, None);
        assert!(
            Arc::ptr_eq(&first.scopes, &entry.served.scopes),
            "not hot yet: no served token was alive"
        );
        assert!(entry.stripes.get().is_none(), "no copy for a cold entry");
        assert_eq!(first.source, TokenSource::Cache);
        assert_eq!(first.token.expose(), "token-value");
        assert_eq!(first.tenant_id.as_deref(), Some("tid"));
        assert_eq!(&*first.scopes, ["https://vault.azure.net/.default"]);

        // `first` is alive: the entry is hot now, and every stripe clones its own copy.
        for stripe in 0..stripe_count() {
            let a = entry.to_access_token_on(stripe, None);
            let b = entry.to_access_token_on(stripe, None);
            assert!(same(&a, &first), "stripe {stripe} serves the same token");
            assert!(Arc::ptr_eq(&a.scopes, &b.scopes), "one copy per stripe");
            assert!(!Arc::ptr_eq(&a.scopes, &first.scopes), "not the shared one");
            let (ta, tf) = (a.tenant_id.unwrap(), first.tenant_id.clone().unwrap());
            assert!(!Arc::ptr_eq(&ta, &tf));
        }
        assert_eq!(entry.stripes.get().map(|s| s.len()), Some(stripe_count()));
        // A stripe past the last falls back to the shared token rather than failing.
        let beyond = entry.to_access_token_on(MAX_SERVED_STRIPES, None);
        assert!(Arc::ptr_eq(&beyond.scopes, &entry.served.scopes));
        // A clone starts cold, with its own count.
        let clone = entry.clone();
        assert!(clone.stripes.get().is_none());
        assert_eq!(Arc::strong_count(&clone.served.scopes), 1);
        assert!(same(&clone.to_access_token_on(1, None), &first));
    }

    #[test]
    fn threads_take_stripes_round_robin() {
        let stripes: std::collections::HashSet<usize> = (0..MAX_SERVED_STRIPES * 2)
            .map(|_| std::thread::spawn(thread_stripe).join().unwrap())
            .collect();
        // Other tests take stripes meanwhile, but sixteen threads in a row cannot all land on one.
        assert_eq!(stripes.len() > 1, stripe_count() > 1);
        assert!(stripes.iter().all(|s| *s < stripe_count()));
    }
}
