//! The cached-acquisition engine every flow uses: cache, then network.
//!
//! - **Hit path**: one probe of the cache on the full key; an mtls_pop entry serves only the
//!   same binding certificate; a token with under 5 minutes left is a miss.
//! - **Single flight**: concurrent misses on one key make one request; every waiter gets its
//!   result or its error. Misses on different keys never wait on each other. A waiter that is
//!   cancelled does not strand the others (the next waiter takes over the fetch). A forced
//!   refresh never joins a flight that may answer from the cache; a miss joins a forced refresh
//!   of its key already in flight.
//! - **Proactive refresh**: past `refresh_on` (minus a random jitter of at most 5 minutes, and
//!   at most a quarter of the time between storing the token and its `refresh_on`), one
//!   background task per key refreshes the token while callers keep getting the cached one; a
//!   failed background refresh keeps the old token while it is valid and is not retried for 30 s.
//! - **Throttling**: an error carrying `Retry-After` (429/503) blocks the same key until the
//!   delay has passed; callers get the throttled error without a request being sent.
//! - `force_refresh` skips the lookup; a claims challenge (`bypass_cache`) skips the lookup and
//!   the single flight. Time comes only from the injected [`Clock`].
//! - **Fleet-wide single flight** (optional, [`EngineBuilder::fleet_lock`]): on a miss, after
//!   winning the local single flight, the engine takes a [`FleetLock`] shared by every process
//!   of a fleet, so that processes sharing an L2 make one request per key; see
//!   [`crate::FleetLock`].
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::time::Duration;
//! use fic_oauth_core::{AccessToken, Clock, ManualClock, Secret, TokenSource, TokenType};
//! use fic_token_cache::{AccessTokenKey, AcquisitionEngine, Lookup, MemoryCache};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), fic_oauth_core::Error> {
//! let clock = ManualClock::default();
//! let engine = AcquisitionEngine::builder(Arc::new(MemoryCache::new()))
//!     .clock(Arc::new(clock.clone()))
//!     .build();
//! let calls = Arc::new(AtomicUsize::new(0));
//! let fetch = {
//!     let (calls, clock) = (calls.clone(), clock.clone());
//!     move || {
//!         calls.fetch_add(1, Ordering::SeqCst);
//!         let expires = clock.now() + Duration::from_secs(3600);
//!         Box::pin(async move { Ok(AccessToken::new(Secret::new("t"), TokenType::Bearer, expires)) })
//!             as fic_token_cache::FetchFuture
//!     }
//! };
//! let lookup = Lookup::new(AccessTokenKey::app("login.microsoftonline.com", "cid", "tid", ["s/.default"]));
//! let first = engine.acquire(&lookup, fetch.clone()).await?;
//! let second = engine.acquire(&lookup, fetch).await?;
//! assert_eq!((first.source, second.source), (TokenSource::IdentityProvider, TokenSource::Cache));
//! assert_eq!(calls.load(Ordering::SeqCst), 1);
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use fic_oauth_core::{AccessToken, ClientIdentity, Clock, Error, ErrorCode, SystemClock};
use tokio::sync::OnceCell;

use crate::cache::TokenCache;
use crate::entry::{CacheEntry, CachedAccessToken};
use crate::fleet::FleetLock;
use crate::key::{AccessTokenKey, CacheKey, KeyHasher};

/// Tokens with less than this left are treated as expired.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(300);
/// The largest random jitter subtracted from `refresh_on`.
pub const DEFAULT_REFRESH_JITTER: Duration = Duration::from_secs(300);
/// The jitter of a token is at most this fraction (1/4) of the interval between when it was
/// stored and its `refresh_on`, so a token with a short `refresh_in` is not due the moment it is
/// stored (e.g. `refresh_in` = 120 s: at most 30 s early).
pub const MAX_REFRESH_JITTER_FRACTION: u32 = 4;
/// How long a failed background refresh waits before the next attempt.
pub const REFRESH_RETRY_DELAY: Duration = Duration::from_secs(30);

/// The future a fetch returns.
pub type FetchFuture = Pin<Box<dyn Future<Output = Result<AccessToken, Error>> + Send>>;

/// What one acquisition asks for.
#[derive(Clone, Debug)]
pub struct Lookup {
    parts: Arc<AccessTokenKey>,
    key: CacheKey,
    binding: Option<ClientIdentity>,
    force_refresh: bool,
    bypass_cache: bool,
}

impl Lookup {
    /// A lookup for the key `parts` (the key string is built once, here).
    pub fn new(parts: AccessTokenKey) -> Self {
        let key = parts.build();
        Self {
            parts: Arc::new(parts),
            key,
            binding: None,
            force_refresh: false,
            bypass_cache: false,
        }
    }

    /// The certificate the token must be bound to (mtls_pop): only an entry with the same `kid`
    /// is a hit, and hits are returned bound to it.
    #[must_use]
    pub fn with_binding(mut self, binding: Option<ClientIdentity>) -> Self {
        self.binding = binding;
        self
    }

    /// Skips the cache lookup (the result is still stored).
    #[must_use]
    pub fn with_force_refresh(mut self, force_refresh: bool) -> Self {
        self.force_refresh = force_refresh;
        self
    }

    /// Skips the cache lookup and the single flight (a claims challenge); the result is stored.
    #[must_use]
    pub fn with_bypass_cache(mut self, bypass_cache: bool) -> Self {
        self.bypass_cache = bypass_cache;
        self
    }

    /// The cache key.
    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// The key parts.
    pub fn parts(&self) -> &AccessTokenKey {
        &self.parts
    }

    fn kid(&self) -> Option<&str> {
        self.binding.as_ref().map(ClientIdentity::thumbprint_s256)
    }
}

type Flight = OnceCell<Result<AccessToken, Error>>;

/// What makes two misses one flight: the key, the binding (`kid`), and whether it is a forced
/// refresh.
type FlightKey = (CacheKey, Option<String>, bool);

#[derive(Default)]
struct State {
    /// In-flight fetches by key, binding (`kid`) and forced-or-not: callers bound to different
    /// certificates never share a fetch. A forced refresh (and a background refresh) joins only
    /// a forced flight, never a normal one (whose re-probe may answer from the cache); a normal
    /// miss joins the forced flight of its key and binding when one is in progress (its new
    /// token serves a normal caller too), and the normal flight otherwise.
    flights: HashMap<FlightKey, Arc<Flight>>,
    refreshing: HashSet<CacheKey, KeyHasher>,
    /// Key → the time before which no request is sent, and the error to give meanwhile.
    throttled: HashMap<CacheKey, (SystemTime, Error), KeyHasher>,
    /// Key → the time before which no background refresh is tried again.
    refresh_backoff: HashMap<CacheKey, SystemTime, KeyHasher>,
}

/// Builds an [`AcquisitionEngine`].
#[derive(Debug)]
pub struct EngineBuilder {
    cache: Arc<dyn TokenCache>,
    clock: Arc<dyn Clock>,
    refresh_jitter: Duration,
    background_refresh: bool,
    fleet_lock: Option<Arc<dyn FleetLock>>,
}

impl EngineBuilder {
    /// The clock (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The largest random jitter subtracted from `refresh_on` (default 5 minutes; 0 makes
    /// refresh times exact, for tests). Whatever this is, a token's jitter is at most
    /// 1/[`MAX_REFRESH_JITTER_FRACTION`] of the time between its `cached_at` and `refresh_on`.
    #[must_use]
    pub fn refresh_jitter(mut self, jitter: Duration) -> Self {
        self.refresh_jitter = jitter;
        self
    }

    /// Whether tokens past `refresh_on` are refreshed in the background (default true; needs a
    /// tokio runtime, otherwise they are served until they expire).
    #[must_use]
    pub fn background_refresh(mut self, enabled: bool) -> Self {
        self.background_refresh = enabled;
        self
    }

    /// A fleet-wide lock taken on misses, so that many processes sharing an L2 make one request
    /// per key (see [`FleetLock`]; default none).
    #[must_use]
    pub fn fleet_lock(mut self, lock: Arc<dyn FleetLock>) -> Self {
        self.fleet_lock = Some(lock);
        self
    }

    /// The engine.
    pub fn build(self) -> Arc<AcquisitionEngine> {
        Arc::new(AcquisitionEngine {
            cache: self.cache,
            clock: self.clock,
            refresh_jitter: self.refresh_jitter,
            background_refresh: self.background_refresh,
            fleet_lock: self.fleet_lock,
            state: Mutex::new(State::default()),
        })
    }
}

/// Clears a key's "refresh running" mark when the refresh ends, however it ends (success,
/// error, panic, runtime shutdown).
struct RefreshGuard {
    engine: Arc<AcquisitionEngine>,
    key: CacheKey,
}

impl Drop for RefreshGuard {
    fn drop(&mut self) {
        self.engine.state().refreshing.remove(&self.key);
    }
}

/// The cached-acquisition engine. Share it (it is returned in an `Arc`) between every caller of
/// one cache.
pub struct AcquisitionEngine {
    cache: Arc<dyn TokenCache>,
    clock: Arc<dyn Clock>,
    refresh_jitter: Duration,
    background_refresh: bool,
    fleet_lock: Option<Arc<dyn FleetLock>>,
    state: Mutex<State>,
}

impl fmt::Debug for AcquisitionEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcquisitionEngine")
            .field("cache", &self.cache)
            .field("refresh_jitter", &self.refresh_jitter)
            .field("background_refresh", &self.background_refresh)
            .field("fleet_lock", &self.fleet_lock)
            .finish_non_exhaustive()
    }
}

/// A hit: the token to serve, and whether it is due for a proactive refresh.
type Probe = Option<(AccessToken, bool)>;

impl AcquisitionEngine {
    /// A builder over `cache`.
    pub fn builder(cache: Arc<dyn TokenCache>) -> EngineBuilder {
        EngineBuilder {
            cache,
            clock: Arc::new(SystemClock),
            refresh_jitter: DEFAULT_REFRESH_JITTER,
            background_refresh: true,
            fleet_lock: None,
        }
    }

    /// The cache.
    pub fn cache(&self) -> &Arc<dyn TokenCache> {
        &self.cache
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The jitter of `key`: fixed per key and process (the key's hash is seeded per process),
    /// so keys — and processes — spread their refreshes, with no random draw on the hit path.
    fn jitter(&self, key: &CacheKey) -> Duration {
        if self.refresh_jitter.is_zero() {
            return Duration::ZERO;
        }
        let millis = u64::try_from(self.refresh_jitter.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(key.precomputed_hash().rotate_left(17) % millis.max(1))
    }

    fn evaluate(&self, lookup: &Lookup, entry: Option<&CacheEntry>, now: SystemTime) -> Probe {
        self.evaluate_bound(&lookup.key, lookup.binding.as_ref(), entry, now)
    }

    fn evaluate_bound(
        &self,
        key: &CacheKey,
        binding: Option<&ClientIdentity>,
        entry: Option<&CacheEntry>,
        now: SystemTime,
    ) -> Probe {
        let cached = entry.and_then(CacheEntry::as_access_token)?;
        let kid = binding.map(ClientIdentity::thumbprint_s256);
        if !cached.matches_kid(kid) || !cached.is_fresh(now, EXPIRY_MARGIN) {
            return None;
        }
        let needs_refresh = cached.refresh_on().is_some_and(|at| {
            // Capped, so a short refresh interval is not used up by the jitter. The times come
            // from storage: checked arithmetic only.
            let interval = at.duration_since(cached.cached_at()).unwrap_or_default();
            let jitter = self.jitter(key).min(interval / MAX_REFRESH_JITTER_FRACTION);
            now.checked_add(jitter).is_none_or(|shifted| shifted >= at)
        });
        Some((cached.to_access_token(binding), needs_refresh))
    }

    async fn probe(&self, lookup: &Lookup) -> Probe {
        let now = self.clock.now();
        let mut found = None;
        if self.cache.visit_now(&lookup.key, &mut |entry| {
            found = self.evaluate(lookup, entry, now);
        }) {
            return found;
        }
        match self.cache.get(&lookup.key).await {
            Ok(entry) => self.evaluate(lookup, entry.as_deref(), now),
            Err(error) => {
                tracing::warn!(code = %error.code(), "token cache read failed; treating it as a miss");
                None
            }
        }
    }

    /// The cached token for `lookup` when the cache can answer without awaiting (memory, a
    /// tiered L1) and the token is usable and not yet due for refresh; `None` otherwise (then
    /// call [`AcquisitionEngine::acquire`]). Ignores `force_refresh` and `bypass_cache`: callers
    /// check those first.
    pub fn try_hit(&self, lookup: &Lookup) -> Option<AccessToken> {
        self.try_hit_with_binding(lookup, lookup.binding.as_ref())
    }

    /// [`AcquisitionEngine::try_hit`] with `binding` in place of the lookup's own (as
    /// [`Lookup::with_binding`] would give, without copying the lookup): callers that memoize
    /// lookups and know the binding per call use it on their hit path.
    pub fn try_hit_with_binding(
        &self,
        lookup: &Lookup,
        binding: Option<&ClientIdentity>,
    ) -> Option<AccessToken> {
        let now = self.clock.now();
        let mut found = None;
        let answered = self.cache.visit_now(&lookup.key, &mut |entry| {
            found = self.evaluate_bound(&lookup.key, binding, entry, now);
        });
        match found {
            Some((token, false)) if answered => Some(token),
            _ => None,
        }
    }

    /// A token for `lookup`: from the cache when it holds a usable one, otherwise from `fetch`
    /// (once per key, however many callers miss at once), which is then cached.
    pub async fn acquire<F>(
        self: &Arc<Self>,
        lookup: &Lookup,
        fetch: F,
    ) -> Result<AccessToken, Error>
    where
        F: Fn() -> FetchFuture + Send + Sync + 'static,
    {
        if !lookup.force_refresh && !lookup.bypass_cache {
            // The hit path of a backend that answers at once (memory, a tiered L1) runs without
            // entering the async machinery below.
            let now = self.clock.now();
            let mut found = None;
            let answered = self.cache.visit_now(&lookup.key, &mut |entry| {
                found = self.evaluate(lookup, entry, now);
            });
            let probe = if answered {
                found
            } else {
                self.probe(lookup).await
            };
            if let Some((token, needs_refresh)) = probe {
                if needs_refresh {
                    self.spawn_refresh(lookup, Arc::new(fetch));
                }
                return Ok(token);
            }
        }
        Box::pin(self.acquire_from_network(lookup, fetch)).await
    }

    async fn acquire_from_network<F>(
        self: &Arc<Self>,
        lookup: &Lookup,
        fetch: F,
    ) -> Result<AccessToken, Error>
    where
        F: Fn() -> FetchFuture + Send + Sync + 'static,
    {
        if let Some(error) = self.throttled(&lookup.key) {
            return Err(error);
        }
        if lookup.bypass_cache {
            return self.fetch_and_store(lookup, &fetch).await;
        }
        self.single_flight(lookup, &fetch, !lookup.force_refresh)
            .await
    }

    /// Drops the cached access token of `lookup` (e.g. after the resource rejected it).
    pub async fn invalidate(&self, lookup: &Lookup) -> Result<(), Error> {
        self.cache.remove(&lookup.key).await
    }

    fn throttled(&self, key: &CacheKey) -> Option<Error> {
        let now = self.clock.now();
        let mut state = self.state();
        match state.throttled.get(key) {
            Some((until, error)) if *until > now => {
                let left = until.duration_since(now).unwrap_or_default();
                Some(
                    Error::new(
                        ErrorCode::THROTTLED,
                        format!(
                            "the identity provider asked to wait; no request is sent for another {} s ({})",
                            left.as_secs(),
                            error.message()
                        ),
                    )
                    .with_retry_after(left)
                    .with_server_error(error.server_error().cloned().unwrap_or_default()),
                )
            }
            Some(_) => {
                state.throttled.remove(key);
                None
            }
            None => None,
        }
    }

    async fn single_flight<F>(
        &self,
        lookup: &Lookup,
        fetch: &F,
        recheck: bool,
    ) -> Result<AccessToken, Error>
    where
        F: Fn() -> FetchFuture + Send + Sync,
    {
        // A forced refresh never joins a flight that may answer from the cache: its callers
        // asked for a new token. A normal miss joins a forced flight in progress when there is
        // one (its new token satisfies it too) rather than sending a second request.
        let (flight_key, flight) = {
            let mut state = self.state();
            let mut flight_key = (lookup.key.clone(), lookup.kid().map(str::to_string), true);
            if recheck && !state.flights.contains_key(&flight_key) {
                flight_key.2 = false;
            }
            let flight = Arc::clone(
                state
                    .flights
                    .entry(flight_key.clone())
                    .or_insert_with(|| Arc::new(OnceCell::new())),
            );
            (flight_key, flight)
        };
        // What the flight does is set by the flight, not by the caller that happens to run it: a
        // normal caller that takes over a forced flight (its leader was cancelled) still fetches,
        // so that the forced callers waiting on it never get a token from the cache.
        let forced = flight_key.2;
        let result = flight
            .get_or_init(|| async {
                // Another flight may have stored a token between our probe and now.
                if !forced {
                    if let Some((token, _)) = self.probe(lookup).await {
                        return Ok(token);
                    }
                    if let Some(fleet) = &self.fleet_lock {
                        return self.fetch_under_fleet_lock(&**fleet, lookup, fetch).await;
                    }
                }
                self.fetch_and_store(lookup, fetch).await
            })
            .await
            .clone();
        {
            let mut state = self.state();
            if state
                .flights
                .get(&flight_key)
                .is_some_and(|current| Arc::ptr_eq(current, &flight))
            {
                state.flights.remove(&flight_key);
            }
        }
        result
    }

    /// The miss path with a fleet lock: one process fetches, the others wait for its token to
    /// appear in the cache (see [`FleetLock`]).
    async fn fetch_under_fleet_lock<F>(
        &self,
        fleet: &dyn FleetLock,
        lookup: &Lookup,
        fetch: &F,
    ) -> Result<AccessToken, Error>
    where
        F: Fn() -> FetchFuture + Send + Sync + ?Sized,
    {
        let mut waits = 0;
        loop {
            match fleet.try_lock(&lookup.key).await {
                Ok(Some(lease)) => {
                    // The previous holder may have stored its token just before releasing.
                    let result = match self.probe(lookup).await {
                        Some((token, _)) => Ok(token),
                        None => self.fetch_and_store(lookup, fetch).await,
                    };
                    if let Err(error) = fleet.unlock(lease).await {
                        tracing::warn!(code = %error.code(), "fleet lock release failed; it expires on its own");
                    }
                    return result;
                }
                Ok(None) if waits < fleet.max_waits() => {
                    fleet.pause().await;
                    waits += 1;
                    if let Some((token, _)) = self.probe(lookup).await {
                        return Ok(token);
                    }
                }
                Ok(None) => {
                    tracing::warn!(
                        waits,
                        "fleet lock still held by another process; fetching without it"
                    );
                    return self.fetch_and_store(lookup, fetch).await;
                }
                Err(error) => {
                    tracing::warn!(code = %error.code(), "fleet lock unavailable; fetching without it");
                    return self.fetch_and_store(lookup, fetch).await;
                }
            }
        }
    }

    async fn fetch_and_store<F>(&self, lookup: &Lookup, fetch: &F) -> Result<AccessToken, Error>
    where
        F: Fn() -> FetchFuture + Send + Sync + ?Sized,
    {
        match fetch().await {
            Ok(token) => {
                let entry = CachedAccessToken::from_token(
                    (*lookup.parts).clone(),
                    &token,
                    self.clock.now(),
                );
                let key = entry.cache_key();
                if let Err(error) = self
                    .cache
                    .put(key, Arc::new(CacheEntry::AccessToken(entry)))
                    .await
                {
                    tracing::warn!(code = %error.code(), "token cache write failed; the token is returned uncached");
                }
                Ok(token)
            }
            Err(error) => {
                if let Some(delay) = error
                    .retry_after()
                    .filter(|_| error.code() == &ErrorCode::THROTTLED)
                {
                    let now = self.clock.now();
                    let mut state = self.state();
                    state.throttled.retain(|_, (until, _)| *until > now);
                    state
                        .throttled
                        .insert(lookup.key.clone(), (now + delay, error.clone()));
                }
                Err(error)
            }
        }
    }

    fn spawn_refresh<F>(self: &Arc<Self>, lookup: &Lookup, fetch: Arc<F>)
    where
        F: Fn() -> FetchFuture + Send + Sync + 'static,
    {
        if !self.background_refresh {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let now = self.clock.now();
        {
            let mut state = self.state();
            let throttled = state
                .throttled
                .get(&lookup.key)
                .is_some_and(|(until, _)| *until > now);
            if throttled
                || state.refreshing.contains(&lookup.key)
                || state
                    .refresh_backoff
                    .get(&lookup.key)
                    .is_some_and(|until| *until > now)
            {
                return;
            }
            state.refreshing.insert(lookup.key.clone());
        }
        let guard = RefreshGuard {
            engine: Arc::clone(self),
            key: lookup.key.clone(),
        };
        let lookup = lookup.clone();
        runtime.spawn(async move {
            let engine = Arc::clone(&guard.engine);
            let result = engine.single_flight(&lookup, &*fetch, false).await;
            let now = engine.clock.now();
            let mut state = engine.state();
            match result {
                Ok(_) => {
                    state.refresh_backoff.remove(&lookup.key);
                    tracing::debug!(key = %lookup.key, "background refresh stored a new token");
                }
                Err(error) => {
                    // Not before the server's Retry-After, and not more often than every 30 s.
                    let wait = error.retry_after().unwrap_or_default().max(REFRESH_RETRY_DELAY);
                    state.refresh_backoff.retain(|_, until| *until > now);
                    state.refresh_backoff.insert(lookup.key.clone(), now + wait);
                    tracing::warn!(code = %error.code(), "background refresh failed; the cached token is kept while valid");
                }
            }
            drop(state);
            drop(guard);
        });
    }

    /// Whether a background refresh of `lookup` is running (for tests and diagnostics).
    pub fn is_refreshing(&self, lookup: &Lookup) -> bool {
        self.state().refreshing.contains(&lookup.key)
    }
}
