//! The `user_fic` grant (an agent acting for a user) and silent renewal with refresh tokens.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;

use fic_oauth_core::request::{check_scopes, TokenRequest, UserIdentifier};
use fic_oauth_core::{AccessToken, Error, ErrorCode, Secret, TokenType};
use fic_token_cache::{
    AccessTokenKey, CacheEntry, CacheKey, CachedAccessToken, CachedAccount, CachedIdToken,
    CachedRefreshToken, FetchFuture, Lookup,
};
use tracing::Instrument;
use uuid::Uuid;

use crate::confidential::{ConfidentialClient, Plan};

/// How many user names and object ids a client remembers the home account id of.
const MAX_KNOWN_USERS: usize = 10_000;

/// Yields the user federated identity credential (T2) when a request needs one.
pub type UserCredentialSource =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Secret, Error>> + Send>> + Send + Sync>;

/// A `user_fic` acquisition being configured; `.await` it.
///
/// Cache first (by the user's object id or UPN, case-insensitive, once the client has seen the
/// user), then the refresh token when the access token has expired, then the `user_fic` grant.
#[must_use = "an acquisition does nothing until awaited"]
pub struct AcquireTokenByUserFic {
    client: ConfidentialClient,
    scopes: Vec<String>,
    user: UserIdentifier,
    user_credential: UserCredentialSource,
    force_refresh: bool,
    claims: Option<String>,
    correlation_id: Option<Uuid>,
    assertion_fmi_path: Option<String>,
}

impl fmt::Debug for AcquireTokenByUserFic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcquireTokenByUserFic")
            .field("client_id", &self.client.client_id())
            .field("scopes", &self.scopes)
            .field("user", &self.user)
            .field("force_refresh", &self.force_refresh)
            .finish_non_exhaustive()
    }
}

fn user_keys(user: &UserIdentifier) -> String {
    match user {
        UserIdentifier::Username(upn) => format!("upn:{}", upn.trim().to_lowercase()),
        UserIdentifier::ObjectId(oid) => format!("oid:{}", oid.hyphenated()),
    }
}

impl ConfidentialClient {
    /// Starts a `user_fic` acquisition: this client (an agent) acts for `user`, with
    /// `user_credential` (T2) as the user federated identity credential. The client's own
    /// credential (normally T1) authenticates the request.
    pub fn acquire_token_by_user_fic(
        &self,
        scopes: impl IntoIterator<Item = impl Into<String>>,
        user: UserIdentifier,
        user_credential: Secret,
    ) -> AcquireTokenByUserFic {
        let source: UserCredentialSource = Arc::new(move || {
            let secret = user_credential.clone();
            Box::pin(async move { Ok(secret) })
        });
        self.acquire_token_by_user_fic_from(scopes, user, source)
    }

    /// As [`ConfidentialClient::acquire_token_by_user_fic`], with T2 fetched only when a
    /// request is actually sent.
    pub fn acquire_token_by_user_fic_from(
        &self,
        scopes: impl IntoIterator<Item = impl Into<String>>,
        user: UserIdentifier,
        user_credential: UserCredentialSource,
    ) -> AcquireTokenByUserFic {
        AcquireTokenByUserFic {
            client: self.clone(),
            scopes: scopes.into_iter().map(Into::into).collect(),
            user,
            user_credential,
            force_refresh: false,
            claims: None,
            correlation_id: None,
            assertion_fmi_path: None,
        }
    }

    /// The home account id of a user this client has acquired a token for.
    pub fn known_home_account_id(&self, user: &UserIdentifier) -> Option<String> {
        self.inner
            .known_users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&user_keys(user))
            .cloned()
    }

    /// The shared first-contact request for `key`: callers asking at once for a user this client
    /// has not seen yet join one request.
    fn first_contact_flight(&self, key: &FirstContactKey) -> Arc<FirstContact> {
        let mut flights = self
            .inner
            .first_contacts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(flights.entry(key.clone()).or_default())
    }

    /// Forgets a first-contact request that finished, or that nobody waits for any more (every
    /// caller was cancelled): later callers find the user known, or, after an error, try again.
    fn end_first_contact(&self, key: &FirstContactKey, flight: &Arc<FirstContact>) {
        let mut flights = self
            .inner
            .first_contacts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Callers get their handle under this lock: the count cannot grow while it is held.
        let unused = Arc::strong_count(flight) <= 2;
        if flights.get(key).is_some_and(|f| Arc::ptr_eq(f, flight))
            && (flight.initialized() || unused)
        {
            flights.remove(key);
        }
    }
}

/// One first-contact `user_fic` request, shared by the callers that ask for it at once.
pub(crate) type FirstContact = tokio::sync::OnceCell<Result<AccessToken, Error>>;

/// What makes two first-contact requests the same: the user, the cache target of the scopes,
/// and the assertion's FMI path.
pub(crate) type FirstContactKey = (String, String, Option<String>);

/// Ends a caller's part in a first-contact request however it ends (result or cancellation).
struct FirstContactTurn<'a> {
    client: &'a ConfidentialClient,
    key: FirstContactKey,
    flight: Arc<FirstContact>,
}

impl Drop for FirstContactTurn<'_> {
    fn drop(&mut self) {
        self.client.end_first_contact(&self.key, &self.flight);
    }
}

impl AcquireTokenByUserFic {
    /// Skips the cache (one `user_fic` request).
    pub fn with_force_refresh(mut self, force_refresh: bool) -> Self {
        self.force_refresh = force_refresh;
        self
    }

    /// A claims challenge (bypasses the cache).
    pub fn with_claims(mut self, claims: impl Into<String>) -> Self {
        self.claims = Some(claims.into());
        self
    }

    /// The correlation id.
    pub fn with_correlation_id(mut self, correlation_id: Uuid) -> Self {
        self.correlation_id = Some(correlation_id);
        self
    }

    /// The FMI path meant for the client assertion (the agent's id in agent flows).
    pub fn with_assertion_fmi_path(mut self, fmi_path: impl Into<String>) -> Self {
        self.assertion_fmi_path = Some(fmi_path.into());
        self
    }

    /// Refuses, before anything is fetched (T1 and T2 included), a request the identity
    /// provider would refuse for its scopes or user: the checks the request itself makes.
    fn check(&self) -> Result<(), Error> {
        check_scopes(&self.scopes)?;
        self.user.check()
    }

    /// Acquires the token.
    pub async fn send(self) -> Result<AccessToken, Error> {
        self.check()?;
        let client = self.client.clone();
        let inner = &client.inner;
        let authority = inner.authority.clone();
        let mut template = client
            .acquire_token_for_client(self.scopes.clone())
            .with_force_refresh(self.force_refresh);
        if let Some(claims) = &self.claims {
            template = template.with_claims(claims.clone());
        }
        if let Some(id) = self.correlation_id {
            template = template.with_correlation_id(id);
        }
        if let Some(path) = &self.assertion_fmi_path {
            template = template.with_assertion_fmi_path(path.clone());
        }
        let plan = Arc::new(Plan {
            client: client.clone(),
            authority,
            token_type: TokenType::Bearer,
            request: template,
        });
        let flow = Arc::new(UserFlow {
            plan,
            scopes: self.scopes,
            user: self.user,
            user_credential: self.user_credential,
            force_refresh: self.force_refresh,
        });

        // The home account id: remembered from an earlier answer, or — for a user given by
        // object id in a tenanted authority — `{oid}.{tenant}`, the home account of a member
        // user, so a cache shared between processes is found without a request.
        let known = client
            .known_home_account_id(&flow.user)
            .or_else(|| match &flow.user {
                UserIdentifier::ObjectId(oid)
                    if Uuid::parse_str(flow.plan.authority.tenant()).is_ok() =>
                {
                    Some(format!(
                        "{}.{}",
                        oid.hyphenated(),
                        flow.plan.authority.tenant().to_lowercase()
                    ))
                }
                _ => None,
            });
        match known {
            Some(home_account_id) if self.claims.is_none() => {
                let lookup =
                    Lookup::new(flow.key(&home_account_id)).with_force_refresh(self.force_refresh);
                // The account is stored under the tenant id the answer named: the authority's
                // tenant when it is an id, the home tenant (`utid`) of a member user when the
                // authority names its tenant by domain.
                let mut account_keys = vec![CacheKey::account(
                    &home_account_id,
                    flow.environment(),
                    flow.plan.authority.tenant(),
                )];
                if let Some((_, home_tenant)) = home_account_id.split_once('.') {
                    let by_home_tenant =
                        CacheKey::account(&home_account_id, flow.environment(), home_tenant);
                    if by_home_tenant != account_keys[0] {
                        account_keys.push(by_home_tenant);
                    }
                }
                let fetch = {
                    let flow = Arc::clone(&flow);
                    move || {
                        let flow = Arc::clone(&flow);
                        let home_account_id = home_account_id.clone();
                        Box::pin(async move { flow.fetch_as(&home_account_id).await })
                            as FetchFuture
                    }
                };
                let mut token = inner.engine.acquire(&lookup, fetch).await?;
                if token.account.is_none() {
                    // A cache hit: the account and the id token come from their own entries.
                    let cache = inner.engine.cache();
                    let mut account = None;
                    for key in &account_keys {
                        if let Ok(Some(entry)) = cache.get(key).await {
                            account = Some(entry);
                            break;
                        }
                    }
                    if let Some(entry) = account {
                        if let CacheEntry::Account(cached) = &*entry {
                            let id_token_key = CacheKey::id_token(
                                &cached.account.home_account_id,
                                flow.environment(),
                                &inner.client_id,
                                &cached.account.realm,
                            );
                            if let Ok(Some(id_token)) = cache.get(&id_token_key).await {
                                if let CacheEntry::IdToken(id_token) = &*id_token {
                                    token.id_token = Some(id_token.secret.clone());
                                }
                            }
                            token.account = Some(Arc::new(cached.account.clone()));
                        }
                    }
                }
                Ok(token)
            }
            Some(_) => flow.first_contact().await,
            None if self.claims.is_some() => flow.first_contact().await,
            None => {
                // A user this client has not seen: callers asking at once (same user, scopes and
                // assertion path) share one request, as the engine's single flight does for
                // known keys, and every one of them gets its result or its error.
                let key = (
                    user_keys(&flow.user),
                    fic_token_cache::target(&flow.scopes),
                    self.assertion_fmi_path.clone(),
                );
                let turn = FirstContactTurn {
                    flight: client.first_contact_flight(&key),
                    client: &client,
                    key,
                };
                turn.flight
                    .get_or_init(|| flow.first_contact())
                    .await
                    .clone()
            }
        }
    }
}

impl IntoFuture for AcquireTokenByUserFic {
    type Output = Result<AccessToken, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

struct UserFlow {
    plan: Arc<Plan>,
    scopes: Vec<String>,
    user: UserIdentifier,
    user_credential: UserCredentialSource,
    force_refresh: bool,
}

impl UserFlow {
    fn environment(&self) -> &str {
        self.plan.authority.host()
    }

    /// The first request for a user this client has not seen (or a claims challenge): the home
    /// account id comes with the answer, and the access token is cached under it.
    async fn first_contact(&self) -> Result<AccessToken, Error> {
        let token = self.fetch(None).await?;
        if let Some(account) = &token.account {
            let entry = CachedAccessToken::from_token(
                self.key(&account.home_account_id),
                &token,
                self.plan.client.inner.clock.now(),
            );
            self.store(entry.cache_key(), CacheEntry::AccessToken(entry))
                .await;
        }
        Ok(token)
    }

    /// [`UserFlow::fetch`] for a user looked up as `home_account_id` (the engine stores the
    /// answer under that key). When the answer names another home account — a guest asked for by
    /// object id, whose home account is in its own tenant, not `{oid}.{authority tenant}` — the
    /// token is stored under that one too, where this client's later lookups look (the answer's
    /// id is remembered); the entry under the guess stays for other processes, which guess the
    /// same way.
    async fn fetch_as(&self, home_account_id: &str) -> Result<AccessToken, Error> {
        let token = self.fetch(Some(home_account_id)).await?;
        if let Some(account) = &token.account {
            if !account
                .home_account_id
                .eq_ignore_ascii_case(home_account_id)
            {
                let entry = CachedAccessToken::from_token(
                    self.key(&account.home_account_id),
                    &token,
                    self.plan.client.inner.clock.now(),
                );
                self.store(entry.cache_key(), CacheEntry::AccessToken(entry))
                    .await;
            }
        }
        Ok(token)
    }

    fn key(&self, home_account_id: &str) -> AccessTokenKey {
        let inner = &self.plan.client.inner;
        AccessTokenKey::user(
            home_account_id,
            self.environment(),
            &inner.client_id,
            self.plan.authority.tenant(),
            &self.scopes,
        )
    }

    async fn store(&self, key: CacheKey, entry: CacheEntry) {
        if let Err(error) = self
            .plan
            .client
            .inner
            .engine
            .cache()
            .put(key, Arc::new(entry))
            .await
        {
            tracing::warn!(code = %error.code(), "token cache write failed");
        }
    }

    /// Refresh token when one is cached (and no force refresh), else `user_fic`; then the
    /// refresh token, id token and account are cached and the user remembered.
    async fn fetch(&self, home_account_id: Option<&str>) -> Result<AccessToken, Error> {
        let inner = &self.plan.client.inner;
        let environment = self.environment().to_string();
        if let (Some(hid), false) = (home_account_id, self.force_refresh) {
            let key = CacheKey::refresh_token(hid, &environment, &inner.client_id);
            let cached = inner
                .engine
                .cache()
                .get(&key)
                .await
                .unwrap_or_else(|error| {
                    tracing::warn!(code = %error.code(), "token cache read failed");
                    None
                });
            if let Some(CacheEntry::RefreshToken(rt)) = cached.as_deref() {
                match self.send(Grant::Refresh(rt.secret.clone())).await {
                    Ok(token) => return Ok(token),
                    Err(error) if error.code() == "invalid_grant" => {
                        tracing::debug!("the refresh token was refused; using user_fic");
                        if let Err(error) = inner.engine.cache().remove(&key).await {
                            tracing::warn!(code = %error.code(), "token cache write failed");
                        }
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        let user_credential = (self.user_credential)().await?;
        self.send(Grant::UserFic(user_credential)).await
    }

    async fn send(&self, grant: Grant) -> Result<AccessToken, Error> {
        let inner = &self.plan.client.inner;
        let started = std::time::Instant::now();
        let span = tracing::info_span!(
            "token_request",
            flow = grant.flow(),
            source = "identity_provider",
            client_id = %inner.client_id,
            host = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let result = self.send_grant(grant).instrument(span.clone()).await;
        span.record(
            "duration_ms",
            u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        );
        match &result {
            Ok(_) => span.record("outcome", "ok"),
            Err(error) => span.record("outcome", error.code().as_str()),
        };
        result
    }

    async fn send_grant(&self, grant: Grant) -> Result<AccessToken, Error> {
        let inner = &self.plan.client.inner;
        let (endpoint, auth) = self.plan.authenticate(None).await?;
        tracing::Span::current().record("host", endpoint.host());
        let mut request = match grant {
            Grant::UserFic(user_credential) => TokenRequest::user_fic(
                endpoint,
                inner.client_id.clone(),
                user_credential,
                self.user.clone(),
                self.scopes.clone(),
            ),
            Grant::Refresh(refresh_token) => TokenRequest::refresh_token(
                endpoint,
                inner.client_id.clone(),
                refresh_token,
                self.scopes.clone(),
            ),
        }
        .with_auth(auth)
        .with_claims(self.plan.request.claims().map(str::to_string))
        .with_client_capabilities(inner.client_capabilities.clone());
        if let Some(id) = self.plan.request.correlation_id() {
            request = request.with_correlation_id(id);
        }
        let response = inner.sender.send(request, TokenType::Bearer).await?;
        let now = inner.clock.now();
        let mut token = response.into_access_token(now, self.scopes.clone(), None);
        let Some(account) = token.account.as_mut().map(Arc::make_mut) else {
            return Err(Error::new(
                ErrorCode::INVALID_RESPONSE,
                "the user token response has no client_info: the account cannot be cached",
            ));
        };
        account
            .environment
            .clone_from(&self.environment().to_string());
        let account = account.clone();
        let environment = self.environment();
        if let Some(refresh_token) = &token.refresh_token {
            let entry = CachedRefreshToken::new(
                &account.home_account_id,
                environment,
                &inner.client_id,
                refresh_token.clone(),
            );
            self.store(entry.cache_key(), CacheEntry::RefreshToken(entry))
                .await;
        }
        if let Some(id_token) = &token.id_token {
            let entry = CachedIdToken::new(
                &account.home_account_id,
                environment,
                &inner.client_id,
                &account.realm,
                id_token.clone(),
            );
            self.store(entry.cache_key(), CacheEntry::IdToken(entry))
                .await;
        }
        let entry = CachedAccount::new(account.clone());
        self.store(entry.cache_key(), CacheEntry::Account(entry))
            .await;
        {
            let mut users = inner
                .known_users
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if users.len() >= MAX_KNOWN_USERS {
                // Forgetting only costs a request for a user not given by object id.
                users.clear();
            }
            users.insert(user_keys(&self.user), account.home_account_id.clone());
            if let Some(upn) = &account.username {
                users.insert(
                    format!("upn:{}", upn.to_lowercase()),
                    account.home_account_id.clone(),
                );
            }
            if let Some(oid) = account
                .object_id
                .as_deref()
                .and_then(|o| Uuid::parse_str(o).ok())
            {
                users.insert(
                    format!("oid:{}", oid.hyphenated()),
                    account.home_account_id.clone(),
                );
            }
        }
        Ok(token)
    }
}

enum Grant {
    UserFic(Secret),
    Refresh(Secret),
}

impl Grant {
    /// The flow name in tracing spans.
    fn flow(&self) -> &'static str {
        match self {
            Self::UserFic(_) => "user_fic",
            Self::Refresh(_) => "refresh_token",
        }
    }
}
