//! Fleet-wide single flight: one request for a key across many processes sharing an L2.
//!
//! The engine's own single flight makes one request per key per process. With a shared L2
//! (Redis), a fleet of N processes missing the same key at once would still make N requests;
//! a [`FleetLock`] given to [`EngineBuilder::fleet_lock`](crate::EngineBuilder::fleet_lock)
//! reduces that to one:
//!
//! 1. after winning its local single flight and re-probing the cache, the engine asks
//!    [`FleetLock::try_lock`] for the key;
//! 2. the winner probes the cache once more (the previous holder may have stored a token just
//!    before releasing), fetches, stores, then [`unlock`s](FleetLock::unlock);
//! 3. the others [`pause`](FleetLock::pause) and probe the cache (which reads through to the
//!    L2), up to [`max_waits`](FleetLock::max_waits) times, trying the lock again each time: a
//!    holder that died or is slow loses the lock when it expires, and a waiter takes over. After
//!    the last wait a waiter fetches on its own.
//!
//! A lock that fails (L2 down) never fails an acquisition: the engine logs and fetches. The lock
//! is used on the plain miss path only: not for `force_refresh`, claims (`bypass_cache`) or
//! background refreshes. A caller cancelled while holding the lock leaves it to expire.
//!
//! `RedisFleetLock` (feature `redis`) implements it with `SET lock:<key> <uuid> NX PX <ms>`.

use std::fmt;

use async_trait::async_trait;
use fic_oauth_core::time::SleepFuture;
use fic_oauth_core::Error;

use crate::key::CacheKey;

/// A held fleet lock: the key and the holder's unique token (so only the holder releases it).
#[derive(Clone, PartialEq, Eq)]
pub struct FleetLease {
    key: CacheKey,
    token: String,
}

impl FleetLease {
    /// A lease on `key` identified by `token` (a fresh random value per acquisition).
    pub fn new(key: CacheKey, token: impl Into<String>) -> Self {
        Self {
            key,
            token: token.into(),
        }
    }

    /// The cache key the lock is for.
    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// The holder's token.
    pub fn token(&self) -> &str {
        &self.token
    }
}

impl fmt::Debug for FleetLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetLease")
            .field("key", &self.key.as_str())
            .finish_non_exhaustive()
    }
}

/// A lock shared by every process of a fleet, with the policy for waiting on it.
#[async_trait]
pub trait FleetLock: Send + Sync + fmt::Debug {
    /// Takes the lock on `key` for a bounded time: `Some` when taken, `None` when another
    /// process holds it.
    async fn try_lock(&self, key: &CacheKey) -> Result<Option<FleetLease>, Error>;

    /// Releases a lock taken by [`try_lock`](Self::try_lock) (only if still held by it).
    async fn unlock(&self, lease: FleetLease) -> Result<(), Error>;

    /// One wait between two probes of the cache while another process holds the lock
    /// (through an injected `Sleeper`).
    fn pause(&self) -> SleepFuture;

    /// How many pauses a waiter makes before fetching on its own.
    fn max_waits(&self) -> u32;
}
