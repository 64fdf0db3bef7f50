//! # fic-token-cache
//!
//! Where tokens are kept between acquisitions, and the engine every flow acquires through.
//!
//! - [`CacheKey`] / [`AccessTokenKey`]: keys in the MSAL unified schema (PROTOCOL §6): the token
//!   type in the key for non-Bearer tokens, extension components (`fmi_path`...) hashed into an
//!   `atext` key, and the binding certificate's `kid` stored with mtls_pop entries and checked
//!   on lookup.
//! - [`TokenCache`]: the seam (async get / put / remove); [`MemoryCache`] is the in-memory
//!   implementation: a sharded map, one probe per hit, no global lock.
//! - [`AcquisitionEngine`]: cache, then network — single flight per key, proactive refresh in
//!   the background, throttling, force refresh and claims bypass, with time only from the
//!   injected clock; optionally fleet-wide single flight through a [`FleetLock`].
//! - Backends, each behind a feature so a memory-only user pulls nothing more:
//!   - `FileCache` (feature `file`, on by default): the MSAL unified JSON file, safe across
//!     processes (advisory lock, read-merge-write, atomic replace), unknown content preserved.
//!   - `RedisCache` and `RedisFleetLock` (feature `redis`): entries as JSON values with a TTL
//!     from their expiry, on an auto-reconnecting connection, every call bounded in time.
//!   - `EncryptionKey` (feature `encryption`): AES-256-GCM at rest for both.
//!   - [`TieredCache`]: an in-memory L1 in front of any L2 (Redis), with a circuit breaker so a
//!     dead L2 costs nothing but misses.
//!
//! It sits on `fic-oauth-core` only; the flow crates (`fic-flows`, `fic-managed-identity`)
//! build [`Lookup`]s and fetch functions.
#![deny(missing_docs)]

mod cache;
pub mod codes;
#[cfg(any(feature = "file", feature = "redis", feature = "encryption"))]
mod crypto;
mod engine;
mod entry;
#[cfg(feature = "file")]
mod file;
mod fleet;
#[cfg(any(feature = "file", feature = "redis"))]
pub mod format;
mod key;
#[cfg(feature = "redis")]
mod redis;
mod tiered;

#[cfg(feature = "redis")]
pub use self::redis::{RedisCache, RedisCacheBuilder, RedisFleetLock};
pub use cache::{MemoryCache, TokenCache};
#[cfg(feature = "encryption")]
pub use crypto::EncryptionKey;
pub use engine::{
    AcquisitionEngine, EngineBuilder, FetchFuture, Lookup, DEFAULT_REFRESH_JITTER, EXPIRY_MARGIN,
    MAX_REFRESH_JITTER_FRACTION, REFRESH_RETRY_DELAY,
};
pub use entry::{CacheEntry, CachedAccessToken, CachedAccount, CachedIdToken, CachedRefreshToken};
#[cfg(feature = "file")]
pub use file::{FileCache, FileCacheBuilder, DEFAULT_LOCK_TIMEOUT, DEFAULT_RELOAD_INTERVAL};
pub use fleet::{FleetLease, FleetLock};
pub use key::{target, AccessTokenKey, CacheKey, CredentialType, KeyHasher, PassThrough};
pub use tiered::{
    TieredCache, TieredCacheBuilder, DEFAULT_L2_COOLDOWN, DEFAULT_L2_RECHECK_INTERVAL,
    DEFAULT_L2_TIMEOUT,
};
