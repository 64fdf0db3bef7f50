//! [`TieredCache`]: an in-memory L1 in front of a shared L2 (Redis), as Microsoft.Identity.Web's
//! distributed token cache does, but one entry at a time.
//!
//! - **Reads**: L1, then L2 (an L2 hit fills L1). Hits answered by L1 go through
//!   [`TokenCache::visit_now`], so the engine's hit path stays a memory probe.
//! - **Writes**: L1, then L2. **Removes**: both.
//! - **Tokens refreshed elsewhere**: an L1 access token that is past (or within
//!   [`refresh_window`](TieredCacheBuilder::refresh_window) of) its `refresh_on`, or about to
//!   expire, is looked up in L2 too (at most once per
//!   [`recheck_interval`](TieredCacheBuilder::l2_recheck_interval) per key while it is only due),
//!   and a later token found there replaces it — so when one process of a fleet refreshes a
//!   token, the others pick it up instead of refreshing it again.
//! - **L2 failures never reach the caller**: every L2 call is bounded by
//!   [`l2_timeout`](TieredCacheBuilder::l2_timeout); an error or a timeout is logged, reads
//!   become L1 misses (the engine goes to the network), writes reach L1 only. After a failure a
//!   circuit breaker skips L2 for [`l2_cooldown`](TieredCacheBuilder::l2_cooldown) (on the
//!   injected clock); then one call probes it, and success closes the breaker. So a dead L2 costs
//!   one timeout per cooldown, not one per call, and L2 is used again as soon as it answers.
//!   Errors that say L2 answered (`cache_decryption_failed`, `cache_format_error`) do not trip
//!   the breaker.
//!
//! Needs a tokio runtime with the timer enabled (the L2 timeout).
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use fic_oauth_core::{AccessToken, Clock, ManualClock, Secret, TokenType};
//! use fic_token_cache::{AccessTokenKey, AcquisitionEngine, FetchFuture, Lookup, MemoryCache, TieredCache, TokenCache};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), fic_oauth_core::Error> {
//! let clock = ManualClock::default();
//! // In production the L2 is a RedisCache shared by the fleet; any TokenCache works.
//! let shared_l2 = Arc::new(MemoryCache::new());
//! let process = |l2: Arc<MemoryCache>| {
//!     let tiered = TieredCache::builder(l2).clock(Arc::new(clock.clone())).build();
//!     AcquisitionEngine::builder(Arc::new(tiered)).clock(Arc::new(clock.clone())).build()
//! };
//! let (a, b) = (process(shared_l2.clone()), process(shared_l2.clone()));
//! let lookup = Lookup::new(AccessTokenKey::app("login.microsoftonline.com", "cid", "tid", ["s/.default"]));
//! let expires = clock.now() + Duration::from_secs(3600);
//! let fetch = move || {
//!     Box::pin(async move { Ok(AccessToken::new(Secret::new("t"), TokenType::Bearer, expires)) }) as FetchFuture
//! };
//! a.acquire(&lookup, fetch).await?;
//! // The other process finds it in L2, without a request.
//! let unreachable = || -> FetchFuture { unreachable!() };
//! assert_eq!(b.acquire(&lookup, unreachable).await?.token.expose(), "t");
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use fic_oauth_core::{Clock, Error, SystemClock};

use crate::cache::{MemoryCache, TokenCache};
use crate::codes;
use crate::engine::{DEFAULT_REFRESH_JITTER, EXPIRY_MARGIN};
use crate::entry::CacheEntry;
use crate::key::{CacheKey, KeyHasher};

/// The default bound on one L2 call.
pub const DEFAULT_L2_TIMEOUT: Duration = Duration::from_millis(250);
/// The default time L2 is skipped after a failure.
pub const DEFAULT_L2_COOLDOWN: Duration = Duration::from_secs(5);
/// The default least time between two L2 look-ups of a key whose L1 token is due for refresh.
pub const DEFAULT_L2_RECHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Above this many keys, the recheck bookkeeping drops its old entries.
const RECHECK_PRUNE_AT: usize = 4096;

/// Builds a [`TieredCache`].
#[derive(Debug)]
pub struct TieredCacheBuilder {
    l1: Option<Arc<MemoryCache>>,
    l2: Arc<dyn TokenCache>,
    clock: Arc<dyn Clock>,
    l2_timeout: Duration,
    l2_cooldown: Duration,
    recheck_interval: Duration,
    refresh_window: Duration,
}

impl TieredCacheBuilder {
    /// The L1 (default: a new [`MemoryCache`] on the builder's clock).
    #[must_use]
    pub fn l1(mut self, l1: Arc<MemoryCache>) -> Self {
        self.l1 = Some(l1);
        self
    }

    /// The clock (default: the system clock): expiry checks and the breaker's cooldown.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The bound on each L2 call (default 250 ms).
    #[must_use]
    pub fn l2_timeout(mut self, timeout: Duration) -> Self {
        self.l2_timeout = timeout;
        self
    }

    /// How long L2 is skipped after it failed (default 5 s).
    #[must_use]
    pub fn l2_cooldown(mut self, cooldown: Duration) -> Self {
        self.l2_cooldown = cooldown;
        self
    }

    /// The least time between two L2 look-ups of a key whose L1 token is due for refresh
    /// (default 10 s).
    #[must_use]
    pub fn l2_recheck_interval(mut self, interval: Duration) -> Self {
        self.recheck_interval = interval;
        self
    }

    /// How long before `refresh_on` an L1 token counts as due, so that L2 is consulted for a
    /// token another process refreshed (default [`DEFAULT_REFRESH_JITTER`], the engine's largest
    /// refresh jitter; match it if you change the engine's).
    #[must_use]
    pub fn refresh_window(mut self, window: Duration) -> Self {
        self.refresh_window = window;
        self
    }

    /// The cache.
    pub fn build(self) -> TieredCache {
        let l1 = self
            .l1
            .unwrap_or_else(|| Arc::new(MemoryCache::with_clock(Arc::clone(&self.clock))));
        TieredCache {
            l1,
            l2: self.l2,
            clock: self.clock,
            l2_timeout: self.l2_timeout,
            l2_cooldown: self.l2_cooldown,
            recheck_interval: self.recheck_interval,
            refresh_window: self.refresh_window,
            breaker: Mutex::new(Breaker::default()),
            rechecked: Mutex::new(HashMap::with_hasher(KeyHasher)),
        }
    }
}

#[derive(Default)]
struct Breaker {
    /// Set while L2 is considered down: skipped until then.
    open_until: Option<SystemTime>,
    /// Whether one call is probing L2 after the cooldown.
    probing: bool,
}

/// An in-memory L1 in front of any L2; see the [module docs](self).
pub struct TieredCache {
    l1: Arc<MemoryCache>,
    l2: Arc<dyn TokenCache>,
    clock: Arc<dyn Clock>,
    l2_timeout: Duration,
    l2_cooldown: Duration,
    recheck_interval: Duration,
    refresh_window: Duration,
    breaker: Mutex<Breaker>,
    /// Key → when L2 was last consulted for its due L1 token.
    rechecked: Mutex<HashMap<CacheKey, SystemTime, KeyHasher>>,
}

/// One admitted L2 call; settles the breaker, also when dropped unfinished.
struct Attempt<'a> {
    cache: &'a TieredCache,
    probe: bool,
    settled: bool,
}

impl Attempt<'_> {
    fn succeeded(mut self) {
        self.settled = true;
        let mut breaker = self.cache.breaker();
        if breaker.open_until.take().is_some() {
            tracing::info!("L2 token cache answers again; using it");
        }
        if self.probe {
            breaker.probing = false;
        }
    }

    fn failed(mut self, op: &str, error: &Error) {
        self.settled = true;
        let until = self.cache.clock.now() + self.cache.l2_cooldown;
        let mut breaker = self.cache.breaker();
        let was_open = breaker.open_until.replace(until).is_some();
        if self.probe {
            breaker.probing = false;
        }
        drop(breaker);
        if was_open {
            tracing::debug!(op, code = %error.code(), "L2 token cache still failing");
        } else {
            tracing::warn!(
                op,
                code = %error.code(),
                cooldown_ms = u64::try_from(self.cache.l2_cooldown.as_millis()).unwrap_or(u64::MAX),
                "L2 token cache failed; serving from L1 and the network, L2 skipped for the cooldown"
            );
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.settled && self.probe {
            self.cache.breaker().probing = false;
        }
    }
}

impl TieredCache {
    /// A tiered cache over `l2` with the defaults.
    pub fn new(l2: Arc<dyn TokenCache>) -> Self {
        Self::builder(l2).build()
    }

    /// A builder over `l2`.
    pub fn builder(l2: Arc<dyn TokenCache>) -> TieredCacheBuilder {
        TieredCacheBuilder {
            l1: None,
            l2,
            clock: Arc::new(SystemClock),
            l2_timeout: DEFAULT_L2_TIMEOUT,
            l2_cooldown: DEFAULT_L2_COOLDOWN,
            recheck_interval: DEFAULT_L2_RECHECK_INTERVAL,
            refresh_window: DEFAULT_REFRESH_JITTER,
        }
    }

    /// The L1.
    pub fn l1(&self) -> &Arc<MemoryCache> {
        &self.l1
    }

    /// The L2.
    pub fn l2(&self) -> &Arc<dyn TokenCache> {
        &self.l2
    }

    /// Whether L2 would be called now (the breaker is closed, or its cooldown has passed).
    pub fn l2_available(&self) -> bool {
        let now = self.clock.now();
        self.breaker().open_until.is_none_or(|until| now >= until)
    }

    fn breaker(&self) -> MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn rechecked(&self) -> MutexGuard<'_, HashMap<CacheKey, SystemTime, KeyHasher>> {
        self.rechecked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits an L2 call, or `None` while the breaker is open (or another call probes).
    fn admit(&self) -> Option<Attempt<'_>> {
        let now = self.clock.now();
        let mut breaker = self.breaker();
        let probe = match breaker.open_until {
            None => false,
            Some(until) if now < until || breaker.probing => return None,
            Some(_) => {
                breaker.probing = true;
                true
            }
        };
        Some(Attempt {
            cache: self,
            probe,
            settled: false,
        })
    }

    /// One bounded L2 call; `None` when skipped or failed (logged).
    async fn l2_call<T, Fut>(&self, op: &'static str, call: impl FnOnce() -> Fut) -> Option<T>
    where
        Fut: Future<Output = Result<T, Error>>,
    {
        let Some(attempt) = self.admit() else {
            tracing::trace!(op, "L2 token cache skipped (breaker open)");
            return None;
        };
        match tokio::time::timeout(self.l2_timeout, call()).await {
            Ok(Ok(value)) => {
                attempt.succeeded();
                Some(value)
            }
            Ok(Err(error))
                if error.code() == &codes::CACHE_DECRYPTION_FAILED
                    || error.code() == &codes::CACHE_FORMAT =>
            {
                attempt.succeeded();
                tracing::warn!(op, code = %error.code(), "L2 token cache entry unusable: {}", error.message());
                None
            }
            Ok(Err(error)) => {
                attempt.failed(op, &error);
                None
            }
            Err(_) => {
                let error = Error::new(
                    codes::CACHE_TIMEOUT,
                    format!("no answer within {} ms", self.l2_timeout.as_millis()),
                );
                attempt.failed(op, &error);
                None
            }
        }
    }

    /// Whether L2 should be consulted although L1 holds `entry`.
    fn wants_l2(&self, key: &CacheKey, entry: &CacheEntry, now: SystemTime) -> bool {
        let Some(token) = entry.as_access_token() else {
            return false;
        };
        if !token.is_fresh(now, EXPIRY_MARGIN) {
            return true;
        }
        let due = token
            .refresh_on()
            .is_some_and(|at| now + self.refresh_window >= at);
        due && self
            .rechecked()
            .get(key)
            .is_none_or(|at| now >= *at + self.recheck_interval)
    }

    fn mark_rechecked(&self, key: &CacheKey, now: SystemTime) {
        let mut rechecked = self.rechecked();
        if rechecked.len() >= RECHECK_PRUNE_AT {
            let interval = self.recheck_interval;
            rechecked.retain(|_, at| now < *at + interval);
        }
        rechecked.insert(key.clone(), now);
    }

    fn forget_recheck(&self, key: &CacheKey) {
        let mut rechecked = self.rechecked();
        if !rechecked.is_empty() {
            rechecked.remove(key);
        }
    }
}

/// Whether `candidate` (from L2) should replace `current` (in L1).
fn is_newer(candidate: &CacheEntry, current: &CacheEntry) -> bool {
    match (candidate.as_access_token(), current.as_access_token()) {
        (Some(candidate), Some(current)) => {
            (candidate.expires_on(), candidate.cached_at())
                > (current.expires_on(), current.cached_at())
        }
        _ => false,
    }
}

impl fmt::Debug for TieredCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TieredCache")
            .field("l1", &self.l1)
            .field("l2", &self.l2)
            .field("l2_timeout", &self.l2_timeout)
            .field("l2_available", &self.l2_available())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl TokenCache for TieredCache {
    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<CacheEntry>>, Error> {
        let now = self.clock.now();
        let local = self.l1.get_entry(key);
        if let Some(entry) = &local {
            if !self.wants_l2(key, entry, now) {
                return Ok(local);
            }
        }
        match self.l2_call("get", || self.l2.get(key)).await {
            Some(Some(remote))
                if local
                    .as_deref()
                    .is_none_or(|current| is_newer(&remote, current)) =>
            {
                self.l1.put_entry(key.clone(), Arc::clone(&remote));
                self.forget_recheck(key);
                Ok(Some(remote))
            }
            _ => {
                if local.is_some() {
                    self.mark_rechecked(key, now);
                }
                Ok(local)
            }
        }
    }

    async fn put(&self, key: CacheKey, entry: Arc<CacheEntry>) -> Result<(), Error> {
        self.l1.put_entry(key.clone(), Arc::clone(&entry));
        self.forget_recheck(&key);
        self.l2_call("put", || self.l2.put(key, entry)).await;
        Ok(())
    }

    async fn remove(&self, key: &CacheKey) -> Result<(), Error> {
        self.l1.remove_entry(key);
        self.forget_recheck(key);
        self.l2_call("remove", || self.l2.remove(key)).await;
        Ok(())
    }

    fn visit_now(&self, key: &CacheKey, visit: &mut dyn FnMut(Option<&CacheEntry>)) -> bool {
        let now = self.clock.now();
        self.l1.with_entry(key, |entry| match entry {
            Some(entry) if !self.wants_l2(key, entry, now) => {
                visit(Some(entry));
                true
            }
            // A miss or a stale / due token: the engine awaits `get`, which asks L2.
            _ => false,
        })
    }
}
