//! The `TokenCache` seam and the in-memory cache.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use fic_oauth_core::{Clock, Error, SystemClock};

use crate::entry::CacheEntry;
use crate::key::{CacheKey, KeyHasher};

/// A token cache: entries by key. Memory, file and Redis caches implement it; a tiered cache
/// composes two.
///
/// Implementations must be safe to share between tasks. Errors are for backends that can fail
/// (a file, Redis); the acquisition engine treats a failing cache as a miss and carries on.
#[async_trait]
pub trait TokenCache: Send + Sync + fmt::Debug {
    /// The entry under `key`.
    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<CacheEntry>>, Error>;

    /// Stores `entry` under `key`, replacing what was there.
    async fn put(&self, key: CacheKey, entry: Arc<CacheEntry>) -> Result<(), Error>;

    /// Removes the entry under `key`.
    async fn remove(&self, key: &CacheKey) -> Result<(), Error>;

    /// Looks `key` up without awaiting, for backends that can (memory): calls `visit` with the
    /// entry (or `None`) and returns `true`, or returns `false` at once when the backend must be
    /// awaited. The engine's hit path uses it to skip the boxed future and the entry's clone.
    fn visit_now(&self, key: &CacheKey, visit: &mut dyn FnMut(Option<&CacheEntry>)) -> bool {
        let _ = (key, visit);
        false
    }
}

#[async_trait]
impl<T: TokenCache + ?Sized> TokenCache for Arc<T> {
    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<CacheEntry>>, Error> {
        (**self).get(key).await
    }
    async fn put(&self, key: CacheKey, entry: Arc<CacheEntry>) -> Result<(), Error> {
        (**self).put(key, entry).await
    }
    async fn remove(&self, key: &CacheKey) -> Result<(), Error> {
        (**self).remove(key).await
    }
    fn visit_now(&self, key: &CacheKey, visit: &mut dyn FnMut(Option<&CacheEntry>)) -> bool {
        (**self).visit_now(key, visit)
    }
}

const SHARDS: usize = 64;
/// Every this many writes to a shard, its expired entries are dropped.
const PURGE_EVERY: u64 = 1024;

/// A lock-free map (readers never write to memory another reader touches, so threads hitting
/// one key do not slow each other down, as they do on a read-write lock's counter).
type Shard = papaya::HashMap<CacheKey, Arc<CacheEntry>, KeyHasher>;

/// An in-memory cache: 64 shards, each a lock-free hash map, keyed by the precomputed hash of the
/// full key. A hit is one probe of one shard; there is no lock and no scan, and threads hitting
/// the same key do not contend.
///
/// ```
/// use std::sync::Arc;
/// use std::time::{Duration, UNIX_EPOCH};
/// use fic_oauth_core::{AccessToken, Secret, TokenType};
/// use fic_token_cache::{AccessTokenKey, CacheEntry, CachedAccessToken, MemoryCache, TokenCache};
///
/// # async fn demo() -> Result<(), fic_oauth_core::Error> {
/// let cache = MemoryCache::new();
/// let parts = AccessTokenKey::app("login.microsoftonline.com", "cid", "tid", ["https://vault.azure.net/.default"]);
/// let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let token = AccessToken::new(Secret::new("t"), TokenType::Bearer, now + Duration::from_secs(3600));
/// let entry = CachedAccessToken::from_token(parts.clone(), &token, now);
/// cache.put(parts.build(), Arc::new(CacheEntry::AccessToken(entry))).await?;
/// assert!(cache.get(&parts.build()).await?.is_some());
/// assert_eq!(cache.len(), 1);
/// # Ok(()) }
/// ```
pub struct MemoryCache {
    shards: Box<[Shard]>,
    writes: Box<[AtomicU64]>,
    clock: Arc<dyn Clock>,
}

impl MemoryCache {
    /// An empty cache on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty cache whose purge of expired entries uses `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        // Replaced and removed entries are freed (and their secrets zeroized) once no reader
        // can still see them; a batch of one frees them at the first chance rather than after
        // dozens more retirements, which in a cache that rarely changes could be never.
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    papaya::HashMap::builder()
                        .hasher(KeyHasher)
                        .collector(seize::Collector::new().batch_size(1))
                        .build()
                })
                .collect(),
            writes: (0..SHARDS).map(|_| AtomicU64::new(0)).collect(),
            clock,
        }
    }

    #[allow(clippy::cast_possible_truncation)]
    fn shard_index(key: &CacheKey) -> usize {
        // Inside a shard the low bits pick the bucket and the top 7 bits are the probe's tag;
        // the shard comes from bits in between, which both leave alone.
        (key.precomputed_hash() >> 32) as usize % SHARDS
    }

    fn shard(&self, key: &CacheKey) -> &Shard {
        &self.shards[Self::shard_index(key)]
    }

    /// The entry under `key`, synchronously.
    pub fn get_entry(&self, key: &CacheKey) -> Option<Arc<CacheEntry>> {
        self.shard(key).pin().get(key).cloned()
    }

    /// Runs `f` on the entry under `key` (or `None`) without cloning it.
    pub(crate) fn with_entry<R>(
        &self,
        key: &CacheKey,
        f: impl FnOnce(Option<&CacheEntry>) -> R,
    ) -> R {
        let shard = self.shard(key).pin();
        f(shard.get(key).map(|entry| &**entry))
    }

    /// Stores an entry synchronously.
    pub fn put_entry(&self, key: CacheKey, entry: Arc<CacheEntry>) {
        let index = Self::shard_index(&key);
        let shard = self.shards[index].pin();
        shard.insert(key, entry);
        if self.writes[index].fetch_add(1, Ordering::Relaxed) % PURGE_EVERY == PURGE_EVERY - 1 {
            let now = self.clock.now();
            shard.retain(|_, e| e.expires_on().is_none_or(|at| at > now));
        }
    }

    /// Removes an entry synchronously.
    pub fn remove_entry(&self, key: &CacheKey) -> Option<Arc<CacheEntry>> {
        self.shard(key).pin().remove(key).cloned()
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.shards.iter().map(papaya::HashMap::len).sum()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry (for serialisation and diagnostics; not for lookups).
    pub fn entries(&self) -> Vec<(CacheKey, Arc<CacheEntry>)> {
        let mut all = Vec::new();
        for shard in &*self.shards {
            all.extend(shard.pin().iter().map(|(k, v)| (k.clone(), Arc::clone(v))));
        }
        all
    }

    /// Removes every entry.
    pub fn clear(&self) {
        for shard in &*self.shards {
            shard.pin().clear();
        }
    }
}

impl Default for MemoryCache {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryCache")
            .field("entries", &self.len())
            .finish()
    }
}

#[async_trait]
impl TokenCache for MemoryCache {
    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<CacheEntry>>, Error> {
        Ok(self.get_entry(key))
    }

    async fn put(&self, key: CacheKey, entry: Arc<CacheEntry>) -> Result<(), Error> {
        self.put_entry(key, entry);
        Ok(())
    }

    async fn remove(&self, key: &CacheKey) -> Result<(), Error> {
        self.remove_entry(key);
        Ok(())
    }

    fn visit_now(&self, key: &CacheKey, visit: &mut dyn FnMut(Option<&CacheEntry>)) -> bool {
        self.with_entry(key, visit);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::CachedAccessToken;
    use crate::key::AccessTokenKey;
    use fic_oauth_core::{AccessToken, ManualClock, Secret, TokenType};
    use std::time::Duration;

    fn entry(clock: &ManualClock, scope: &str, lifetime: u64) -> (CacheKey, Arc<CacheEntry>) {
        let parts = AccessTokenKey::app("env", "cid", "tid", [scope]);
        let token = AccessToken::new(
            Secret::new(scope),
            TokenType::Bearer,
            clock.now() + Duration::from_secs(lifetime),
        );
        (
            parts.build(),
            Arc::new(CacheEntry::AccessToken(CachedAccessToken::from_token(
                parts,
                &token,
                clock.now(),
            ))),
        )
    }

    #[tokio::test]
    async fn put_get_remove() {
        let clock = ManualClock::default();
        let cache = MemoryCache::with_clock(Arc::new(clock.clone()));
        let (key, value) = entry(&clock, "a", 60);
        cache.put(key.clone(), value.clone()).await.unwrap();
        assert_eq!(cache.get(&key).await.unwrap().as_deref(), Some(&*value));
        let mut seen = None;
        assert!(cache.visit_now(&key, &mut |entry| seen = entry.cloned()));
        assert_eq!(seen.as_ref(), Some(&*value));
        cache.remove(&key).await.unwrap();
        assert!(cache.get(&key).await.unwrap().is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn replaced_and_removed_entries_are_freed_at_once() {
        let clock = ManualClock::default();
        let cache = MemoryCache::with_clock(Arc::new(clock.clone()));
        let (key, first) = entry(&clock, "a", 60);
        let first_weak = Arc::downgrade(&first);
        cache.put_entry(key.clone(), first);
        let (_, second) = entry(&clock, "a", 120);
        let second_weak = Arc::downgrade(&second);
        cache.put_entry(key.clone(), second);
        assert!(
            first_weak.upgrade().is_none(),
            "the replaced entry is freed"
        );
        assert!(second_weak.upgrade().is_some());
        drop(cache.remove_entry(&key));
        assert!(
            second_weak.upgrade().is_none(),
            "the removed entry is freed"
        );
    }

    #[test]
    fn expired_entries_are_purged_on_writes() {
        let clock = ManualClock::default();
        let cache = MemoryCache::with_clock(Arc::new(clock.clone()));
        for i in 0..200 {
            let (key, value) = entry(&clock, &format!("short{i}"), 10);
            cache.put_entry(key, value);
        }
        let (kept_key, kept) = entry(&clock, "long", 100_000);
        cache.put_entry(kept_key.clone(), kept);
        clock.advance(Duration::from_secs(60));
        // One long-lived key per shard, each written PURGE_EVERY times: every shard purges.
        let mut per_shard: Vec<Option<(CacheKey, Arc<CacheEntry>)>> = vec![None; SHARDS];
        let mut i = 0;
        while per_shard.iter().any(Option::is_none) {
            let (key, value) = entry(&clock, &format!("fresh{i}"), 100_000);
            let index = MemoryCache::shard_index(&key);
            if per_shard[index].is_none() {
                per_shard[index] = Some((key, value));
            }
            i += 1;
        }
        for _ in 0..PURGE_EVERY {
            for (key, value) in per_shard.iter().flatten() {
                cache.put_entry(key.clone(), value.clone());
            }
        }
        assert_eq!(
            cache.len(),
            SHARDS + 1,
            "only the fresh and the long-lived entries remain"
        );
        assert!(cache.get_entry(&kept_key).is_some());
    }
}
