//! [`RedisCache`]: entries in Redis, shared by a fleet; [`RedisFleetLock`]: fleet-wide single
//! flight on the same server.
//!
//! - One Redis key per entry: `<prefix><cache key>` (default prefix `fic:`), the value the entry's
//!   JSON in the file's per-entry shape ([`format`](crate::format)), or with an encryption key
//!   an AES-256-GCM envelope bound to the Redis key.
//! - `SET key value PX <ms>`: the TTL is the entry's remaining lifetime on the injected clock
//!   (access tokens: up to the later of `expires_on` and `extended_expires_on`); entries that do
//!   not expire on their own get [`RedisCacheBuilder::default_ttl`]. An entry already expired is
//!   deleted instead.
//! - The connection is the `redis` crate's `ConnectionManager`: multiplexed, reconnecting on its
//!   own after Redis comes back. Every call is bounded by [`RedisCacheBuilder::timeout`]
//!   (default 250 ms) and fails with `cache_timeout` or `cache_unavailable`; put a
//!   [`TieredCache`](crate::TieredCache) in front so those become L1 service and misses.
//! - A value that cannot be decrypted is `cache_decryption_failed`, one that is not an entry
//!   `cache_format_error`: both are misses for the engine, and are overwritten by its next write.
//!
//! ```no_run
//! use std::sync::Arc;
//! use fic_token_cache::{AcquisitionEngine, RedisCache, RedisFleetLock, TieredCache};
//!
//! # async fn demo() -> Result<(), fic_oauth_core::Error> {
//! let redis = RedisCache::builder("redis://cache.internal:6379/")
//!     .prefix("myapp:tokens:")
//!     .connect()
//!     .await?;
//! let fleet_lock = Arc::new(RedisFleetLock::new(&redis));
//! let cache = TieredCache::new(Arc::new(redis));
//! let engine = AcquisitionEngine::builder(Arc::new(cache))
//!     .fleet_lock(fleet_lock)
//!     .build();
//! # let _ = engine;
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisResult};
use async_trait::async_trait;
use fic_oauth_core::time::{SleepFuture, TokioSleeper};
use fic_oauth_core::{Clock, Error, ErrorCode, Sleeper, SystemClock};
use zeroize::Zeroizing;

use crate::cache::TokenCache;
use crate::codes;
use crate::entry::CacheEntry;
use crate::fleet::{FleetLease, FleetLock};
use crate::format::{parse_entry, write_entry};
use crate::key::CacheKey;

#[cfg(feature = "encryption")]
use crate::crypto::EncryptionKey;

/// The default key prefix.
const DEFAULT_PREFIX: &str = "fic:";
/// The default bound on one Redis call.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);
/// The default TTL of entries that do not expire on their own (refresh and id tokens,
/// accounts): 14 days, Microsoft.Identity.Web's default.
const DEFAULT_TTL: Duration = Duration::from_secs(14 * 24 * 3600);

/// Releases a lock only if it still holds the caller's token.
const UNLOCK_SCRIPT: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// Builds a [`RedisCache`].
pub struct RedisCacheBuilder {
    url: String,
    prefix: String,
    timeout: Duration,
    default_ttl: Duration,
    clock: Arc<dyn Clock>,
    #[cfg(feature = "encryption")]
    key: Option<EncryptionKey>,
}

impl fmt::Debug for RedisCacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCacheBuilder")
            .field("url", &redact(&self.url))
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("default_ttl", &self.default_ttl)
            .finish_non_exhaustive()
    }
}

impl RedisCacheBuilder {
    /// The prefix of every key (default `fic:`); give each application (or tenant of a shared
    /// Redis) its own.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The bound on each call (default 250 ms).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The TTL of entries without an expiry (default 14 days).
    #[must_use]
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// The clock TTLs are computed on (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Encrypts every value with `key` (AES-256-GCM, bound to its Redis key).
    #[cfg(feature = "encryption")]
    #[must_use]
    pub fn encryption_key(mut self, key: EncryptionKey) -> Self {
        self.key = Some(key);
        self
    }

    /// The cache, connecting lazily (on the first call): a process starts even while Redis is
    /// down. Must be called inside a tokio runtime.
    pub fn build(self) -> Result<RedisCache, Error> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::new(
                ErrorCode::INVALID_ARGUMENT,
                "a RedisCache is built inside a tokio runtime",
            ));
        }
        let address = redact(&self.url);
        let client = Client::open(self.url.as_str()).map_err(|e| {
            Error::new(
                ErrorCode::INVALID_ARGUMENT,
                format!("invalid Redis URL {address}: {e}"),
            )
        })?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(self.timeout))
            .set_connection_timeout(Some((self.timeout * 4).max(Duration::from_secs(1))))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(|e| {
            Error::new(
                codes::CACHE_UNAVAILABLE,
                format!("Redis connection manager for {address}: {e}"),
            )
        })?;
        Ok(RedisCache {
            conn,
            address,
            prefix: self.prefix.into(),
            timeout: self.timeout,
            default_ttl: self.default_ttl,
            clock: self.clock,
            #[cfg(feature = "encryption")]
            key: self.key,
        })
    }

    /// The cache, after checking that Redis answers (`PING`).
    pub async fn connect(self) -> Result<RedisCache, Error> {
        let cache = self.build()?;
        cache.ping().await?;
        Ok(cache)
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// A [`TokenCache`] in Redis; see the [module docs](self).
#[derive(Clone)]
pub struct RedisCache {
    conn: ConnectionManager,
    address: String,
    prefix: Arc<str>,
    timeout: Duration,
    default_ttl: Duration,
    clock: Arc<dyn Clock>,
    #[cfg(feature = "encryption")]
    key: Option<EncryptionKey>,
}

/// Runs one Redis call within `timeout`.
async fn bounded<T>(
    timeout: Duration,
    op: &str,
    call: impl Future<Output = RedisResult<T>>,
) -> Result<T, Error> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(
            Error::new(codes::CACHE_UNAVAILABLE, format!("Redis {op} failed: {e}"))
                .with_retryable(true),
        ),
        Err(_) => Err(Error::new(
            codes::CACHE_TIMEOUT,
            format!("Redis {op}: no answer within {} ms", timeout.as_millis()),
        )
        .with_retryable(true)),
    }
}

impl RedisCache {
    /// A builder for the server at `url` (`redis://[user:password@]host:port/[db]`, or
    /// `rediss://` with the `redis` crate's TLS features).
    pub fn builder(url: impl Into<String>) -> RedisCacheBuilder {
        RedisCacheBuilder {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_string(),
            timeout: DEFAULT_TIMEOUT,
            default_ttl: DEFAULT_TTL,
            clock: Arc::new(SystemClock),
            #[cfg(feature = "encryption")]
            key: None,
        }
    }

    /// A cache on `url` with the defaults, after checking that Redis answers.
    pub async fn connect(url: impl Into<String>) -> Result<Self, Error> {
        Self::builder(url).connect().await
    }

    /// Whether Redis answers (`PING`), within the timeout.
    pub async fn ping(&self) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        bounded(self.timeout, "PING", async move {
            ::redis::cmd("PING").query_async::<()>(&mut conn).await
        })
        .await
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Redis key of `key`: the prefix, then the cache key.
    pub fn redis_key(&self, key: &CacheKey) -> String {
        format!("{}{}", self.prefix, key.as_str())
    }

    #[cfg_attr(
        not(feature = "encryption"),
        allow(clippy::unused_self, clippy::unnecessary_wraps)
    )]
    fn encode(
        &self,
        redis_key: &str,
        json: Zeroizing<Vec<u8>>,
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        #[cfg(feature = "encryption")]
        if let Some(key) = &self.key {
            return crate::crypto::seal(key, redis_key.as_bytes(), &json).map(Zeroizing::new);
        }
        let _ = redis_key;
        Ok(json)
    }

    #[cfg_attr(not(feature = "encryption"), allow(clippy::unused_self))]
    fn decode(
        &self,
        redis_key: &str,
        value: Zeroizing<Vec<u8>>,
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let encrypted = crate::crypto::is_envelope(&value);
        #[cfg(feature = "encryption")]
        if let Some(key) = &self.key {
            if !encrypted {
                return Err(Error::new(
                    codes::CACHE_DECRYPTION_FAILED,
                    format!("the value of {redis_key} is not encrypted but a key is configured"),
                ));
            }
            return crate::crypto::open(key, redis_key.as_bytes(), &value);
        }
        if encrypted {
            return Err(Error::new(
                codes::CACHE_DECRYPTION_FAILED,
                format!("the value of {redis_key} is encrypted and no key is configured"),
            ));
        }
        Ok(value)
    }

    async fn delete(&self, redis_key: String) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        bounded(self.timeout, "DEL", async move {
            ::redis::cmd("DEL")
                .arg(redis_key)
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }
}

impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("RedisCache");
        s.field("address", &self.address)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout);
        #[cfg(feature = "encryption")]
        s.field("encrypted", &self.key.is_some());
        s.finish_non_exhaustive()
    }
}

#[async_trait]
impl TokenCache for RedisCache {
    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<CacheEntry>>, Error> {
        let redis_key = self.redis_key(key);
        let mut conn = self.conn.clone();
        let value: Option<Vec<u8>> = bounded(self.timeout, "GET", {
            let redis_key = redis_key.clone();
            async move {
                ::redis::cmd("GET")
                    .arg(redis_key)
                    .query_async(&mut conn)
                    .await
            }
        })
        .await?;
        let Some(value) = value else {
            return Ok(None);
        };
        let json = self.decode(&redis_key, Zeroizing::new(value))?;
        let text = std::str::from_utf8(&json).map_err(|_| {
            Error::new(
                codes::CACHE_FORMAT,
                format!("the value of {redis_key} is not UTF-8"),
            )
        })?;
        match parse_entry(text, None) {
            Ok(entry) => Ok(entry.map(Arc::new)),
            Err(reason) => Err(Error::new(
                codes::CACHE_FORMAT,
                format!("the value of {redis_key} is not a token cache entry: {reason}"),
            )),
        }
    }

    async fn put(&self, key: CacheKey, entry: Arc<CacheEntry>) -> Result<(), Error> {
        let redis_key = self.redis_key(&key);
        let ttl = match entry.expires_on() {
            Some(at) => at.duration_since(self.clock.now()).unwrap_or_default(),
            None => self.default_ttl,
        };
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_ms == 0 {
            return self.delete(redis_key).await;
        }
        let mut json = Zeroizing::new(Vec::with_capacity(512));
        write_entry(&mut json, &entry);
        let value = self.encode(&redis_key, json)?;
        let mut conn = self.conn.clone();
        bounded(self.timeout, "SET", async move {
            ::redis::cmd("SET")
                .arg(redis_key)
                .arg(&value[..])
                .arg("PX")
                .arg(ttl_ms)
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    async fn remove(&self, key: &CacheKey) -> Result<(), Error> {
        self.delete(self.redis_key(key)).await
    }
}

/// The default time a fleet lock is held at most.
const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(5);
/// The default pause between two probes of a waiter.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A [`FleetLock`] in Redis: `SET <prefix>lock:<key> <uuid> NX PX <lock ttl>`, released by a
/// script that deletes it only if it still holds the caller's uuid.
///
/// Waiters pause [`poll_interval`](Self::poll_interval) between probes (on the injected
/// [`Sleeper`]), at most [`max_waits`](Self::max_waits) times (default: enough to outlast
/// [`lock_ttl`](Self::lock_ttl) once), then fetch on their own.
#[derive(Clone)]
pub struct RedisFleetLock {
    conn: ConnectionManager,
    prefix: Arc<str>,
    timeout: Duration,
    lock_ttl: Duration,
    poll_interval: Duration,
    max_waits: Option<u32>,
    sleeper: Arc<dyn Sleeper>,
}

impl RedisFleetLock {
    /// A lock on the server, prefix and timeout of `cache` (sharing its connection), with a 5 s
    /// lock TTL, 50 ms pauses, and tokio's timer.
    pub fn new(cache: &RedisCache) -> Self {
        Self {
            conn: cache.conn.clone(),
            prefix: Arc::clone(&cache.prefix),
            timeout: cache.timeout,
            lock_ttl: DEFAULT_LOCK_TTL,
            poll_interval: DEFAULT_POLL_INTERVAL,
            max_waits: None,
            sleeper: Arc::new(TokioSleeper),
        }
    }

    /// How long a lock is held at most: longer than a token request takes, short enough that
    /// the fleet does not wait long for a dead holder (default 5 s).
    #[must_use]
    pub fn lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl.max(Duration::from_millis(1));
        self
    }

    /// The pause between two probes of a waiter (default 50 ms).
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How many pauses a waiter makes before fetching on its own.
    #[must_use]
    pub fn max_waits(mut self, waits: u32) -> Self {
        self.max_waits = Some(waits);
        self
    }

    /// The sleeper pauses go through (default: tokio's timer).
    #[must_use]
    pub fn sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.sleeper = sleeper;
        self
    }

    /// The Redis key of the lock on `key`.
    pub fn lock_key(&self, key: &CacheKey) -> String {
        format!("{}lock:{}", self.prefix, key.as_str())
    }
}

impl fmt::Debug for RedisFleetLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisFleetLock")
            .field("prefix", &self.prefix)
            .field("lock_ttl", &self.lock_ttl)
            .field("poll_interval", &self.poll_interval)
            .field("max_waits", &FleetLock::max_waits(self))
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl FleetLock for RedisFleetLock {
    async fn try_lock(&self, key: &CacheKey) -> Result<Option<FleetLease>, Error> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let ttl_ms = u64::try_from(self.lock_ttl.as_millis()).unwrap_or(u64::MAX);
        let mut conn = self.conn.clone();
        let lock_key = self.lock_key(key);
        let taken: Option<String> = bounded(self.timeout, "SET NX", {
            let token = token.clone();
            async move {
                ::redis::cmd("SET")
                    .arg(lock_key)
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async(&mut conn)
                    .await
            }
        })
        .await?;
        Ok(taken.map(|_| FleetLease::new(key.clone(), token)))
    }

    async fn unlock(&self, lease: FleetLease) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        let lock_key = self.lock_key(lease.key());
        bounded(self.timeout, "unlock", async move {
            ::redis::cmd("EVAL")
                .arg(UNLOCK_SCRIPT)
                .arg(1)
                .arg(lock_key)
                .arg(lease.token())
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    fn pause(&self) -> SleepFuture {
        self.sleeper.sleep(self.poll_interval)
    }

    fn max_waits(&self) -> u32 {
        self.max_waits.unwrap_or_else(|| {
            let per_ttl = self.lock_ttl.as_millis() / self.poll_interval.as_millis().max(1);
            u32::try_from(per_ttl).unwrap_or(u32::MAX).saturating_add(2)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact("redis://:pw@host:6379/0"), "redis://***@host:6379/0");
        assert_eq!(redact("redis://host:6379/"), "redis://host:6379/");
        let builder = super::RedisCache::builder("redis://user:hunter2@host:6379/");
        assert!(!format!("{builder:?}").contains("hunter2"));
    }
}
