//! A user-written [`TokenCache`]: one `HashMap` behind a `Mutex`, counting what the library
//! asks of it. Anything with `get` / `put` / `remove` by [`CacheKey`] is a cache: a database
//! table, a cache service, a map shared with other parts of an application.
//!
//! It keeps the library's entries as they are ([`Arc<CacheEntry>`]); it does not need to know
//! what is inside (access tokens, refresh tokens, accounts, with their expiry and binding).
//! The acquisition engine treats an error from `get` as a miss and an error from `put` as a
//! warning, so a backend that can fail needs no special handling.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use fic_oauth_core::Error;
use fic_token_cache::{CacheEntry, CacheKey, TokenCache};

/// What the cache has been asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CacheStats {
    /// Lookups.
    pub(crate) gets: u64,
    /// Lookups that found an entry.
    pub(crate) hits: u64,
    /// Stores.
    pub(crate) puts: u64,
    /// Removals.
    pub(crate) removes: u64,
    /// Entries held now.
    pub(crate) entries: usize,
}

/// A `Mutex<HashMap<CacheKey, Arc<CacheEntry>>>` that counts gets, hits, puts and removes.
#[derive(Debug, Default)]
pub(crate) struct CountingCache {
    entries: Mutex<HashMap<CacheKey, Arc<CacheEntry>>>,
    gets: AtomicU64,
    hits: AtomicU64,
    puts: AtomicU64,
    removes: AtomicU64,
}

impl CountingCache {
    /// An empty cache.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The counters so far.
    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            gets: self.gets.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            puts: self.puts.load(Ordering::Relaxed),
            removes: self.removes.load(Ordering::Relaxed),
            entries: self
                .entries
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len(),
        }
    }
}

#[async_trait]
impl TokenCache for CountingCache {
    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<CacheEntry>>, Error> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        let found = self
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned();
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(found)
    }

    async fn put(&self, key: CacheKey, entry: Arc<CacheEntry>) -> Result<(), Error> {
        self.puts.fetch_add(1, Ordering::Relaxed);
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, entry);
        Ok(())
    }

    async fn remove(&self, key: &CacheKey) -> Result<(), Error> {
        self.removes.fetch_add(1, Ordering::Relaxed);
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
        Ok(())
    }
}
