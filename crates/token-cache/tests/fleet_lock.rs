//! The engine's fleet-lock hook, with an in-memory lock standing for another process: the
//! holder fetches, waiters take the holder's token from the cache, a dead holder is replaced, a
//! holder that never finishes costs a bounded number of waits, a failing lock costs nothing.
//! (The Redis lock with 20 engines is in `redis_cache.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{access_token, lookup, Source};
use fic_oauth_core::time::SleepFuture;
use fic_oauth_core::{Error, ManualClock, Sleeper, TokenSource};
use fic_token_cache::{
    codes, AcquisitionEngine, CacheKey, FleetLease, FleetLock, MemoryCache, TokenCache,
};

const PAUSE: Duration = Duration::from_millis(50);

/// What the other process does on the n-th pause of the waiter.
type OnPause = Box<dyn Fn(u32, &FakeLock) + Send + Sync>;

/// A fleet lock in memory; pauses sleep on a ManualClock.
struct FakeLock {
    held: Mutex<HashMap<String, String>>,
    clock: ManualClock,
    max_waits: u32,
    failing: bool,
    tries: AtomicUsize,
    pauses: AtomicUsize,
    on_pause: Option<OnPause>,
}

impl std::fmt::Debug for FakeLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeLock")
    }
}

impl FakeLock {
    fn new(clock: &ManualClock) -> Self {
        Self {
            held: Mutex::new(HashMap::new()),
            clock: clock.clone(),
            max_waits: 10,
            failing: false,
            tries: AtomicUsize::new(0),
            pauses: AtomicUsize::new(0),
            on_pause: None,
        }
    }

    fn hold_elsewhere(&self, key: &CacheKey) {
        self.held
            .lock()
            .unwrap()
            .insert(key.as_str().to_string(), "other-process".into());
    }

    fn release_elsewhere(&self, key: &CacheKey) {
        self.held.lock().unwrap().remove(key.as_str());
    }

    fn is_held(&self, key: &CacheKey) -> bool {
        self.held.lock().unwrap().contains_key(key.as_str())
    }
}

#[async_trait]
impl FleetLock for FakeLock {
    async fn try_lock(&self, key: &CacheKey) -> Result<Option<FleetLease>, Error> {
        self.tries.fetch_add(1, Ordering::SeqCst);
        if self.failing {
            return Err(Error::new(codes::CACHE_UNAVAILABLE, "lock server down"));
        }
        let mut held = self.held.lock().unwrap();
        if held.contains_key(key.as_str()) {
            return Ok(None);
        }
        let token = uuid::Uuid::new_v4().to_string();
        held.insert(key.as_str().to_string(), token.clone());
        Ok(Some(FleetLease::new(key.clone(), token)))
    }

    async fn unlock(&self, lease: FleetLease) -> Result<(), Error> {
        let mut held = self.held.lock().unwrap();
        if held.get(lease.key().as_str()).map(String::as_str) == Some(lease.token()) {
            held.remove(lease.key().as_str());
        }
        Ok(())
    }

    fn pause(&self) -> SleepFuture {
        let n = u32::try_from(self.pauses.fetch_add(1, Ordering::SeqCst)).unwrap() + 1;
        if let Some(on_pause) = &self.on_pause {
            on_pause(n, self);
        }
        self.clock.sleep(PAUSE)
    }

    fn max_waits(&self) -> u32 {
        self.max_waits
    }
}

fn engine(
    cache: &Arc<MemoryCache>,
    clock: &ManualClock,
    lock: &Arc<FakeLock>,
) -> Arc<AcquisitionEngine> {
    AcquisitionEngine::builder(cache.clone())
        .clock(Arc::new(clock.clone()))
        .fleet_lock(lock.clone())
        .build()
}

#[tokio::test]
async fn the_holder_fetches_stores_and_releases() {
    let clock = ManualClock::default();
    let cache = Arc::new(MemoryCache::new());
    let lock = Arc::new(FakeLock::new(&clock));
    let engine = engine(&cache, &clock, &lock);
    let source = Source::new(&clock);
    let token = engine.acquire(&lookup("a"), source.fetch()).await.unwrap();
    assert_eq!(token.source, TokenSource::IdentityProvider);
    assert_eq!(source.calls(), 1);
    assert_eq!(lock.tries.load(Ordering::SeqCst), 1);
    assert!(!lock.is_held(lookup("a").key()), "released");
    assert!(cache.get_entry(lookup("a").key()).is_some());
    // Hits do not touch the lock.
    engine.acquire(&lookup("a"), source.fetch()).await.unwrap();
    assert_eq!(lock.tries.load(Ordering::SeqCst), 1);
    assert!(clock.sleeps().is_empty());
}

#[tokio::test]
async fn a_waiter_takes_the_token_the_holder_stores() {
    let clock = ManualClock::default();
    let cache = Arc::new(MemoryCache::new());
    let mut lock = FakeLock::new(&clock);
    let other = {
        let (cache, clock) = (cache.clone(), clock.clone());
        move |n: u32, _: &FakeLock| {
            if n == 3 {
                // The other process finishes: stores its token (then releases the lock).
                let (key, entry) = access_token(&clock, "a", 3600);
                cache.put_entry(key, entry);
            }
        }
    };
    lock.on_pause = Some(Box::new(other));
    let lock = Arc::new(lock);
    lock.hold_elsewhere(lookup("a").key());
    let engine = engine(&cache, &clock, &lock);
    let source = Source::new(&clock);
    let token = engine.acquire(&lookup("a"), source.fetch()).await.unwrap();
    assert_eq!(
        (token.token.expose(), token.source),
        ("secret-for-a", TokenSource::Cache)
    );
    assert_eq!(source.calls(), 0);
    assert_eq!(clock.sleeps(), vec![PAUSE; 3]);
}

#[tokio::test]
async fn a_dead_holder_loses_the_lock_and_a_waiter_fetches() {
    let clock = ManualClock::default();
    let cache = Arc::new(MemoryCache::new());
    let mut lock = FakeLock::new(&clock);
    lock.on_pause = Some(Box::new(|n, lock: &FakeLock| {
        if n == 2 {
            // The holder died: its lock expires without a token being stored.
            lock.release_elsewhere(lookup("a").key());
        }
    }));
    let lock = Arc::new(lock);
    lock.hold_elsewhere(lookup("a").key());
    let engine = engine(&cache, &clock, &lock);
    let source = Source::new(&clock);
    let token = engine.acquire(&lookup("a"), source.fetch()).await.unwrap();
    assert_eq!(token.source, TokenSource::IdentityProvider);
    assert_eq!(source.calls(), 1);
    assert_eq!(clock.sleeps().len(), 2);
    assert!(!lock.is_held(lookup("a").key()));
}

#[tokio::test]
async fn a_holder_that_never_finishes_costs_max_waits_then_the_waiter_fetches() {
    let clock = ManualClock::default();
    let cache = Arc::new(MemoryCache::new());
    let lock = Arc::new(FakeLock::new(&clock));
    lock.hold_elsewhere(lookup("a").key());
    let engine = engine(&cache, &clock, &lock);
    let source = Source::new(&clock);
    let token = engine.acquire(&lookup("a"), source.fetch()).await.unwrap();
    assert_eq!(token.source, TokenSource::IdentityProvider);
    assert_eq!(source.calls(), 1);
    assert_eq!(clock.sleeps(), vec![PAUSE; 10]);
    assert_eq!(lock.tries.load(Ordering::SeqCst), 11);
}

#[tokio::test]
async fn a_failing_lock_costs_nothing_but_a_log_line() {
    let clock = ManualClock::default();
    let cache = Arc::new(MemoryCache::new());
    let mut lock = FakeLock::new(&clock);
    lock.failing = true;
    let lock = Arc::new(lock);
    let engine = engine(&cache, &clock, &lock);
    let source = Source::new(&clock);
    assert!(engine.acquire(&lookup("a"), source.fetch()).await.is_ok());
    assert_eq!(source.calls(), 1);
    assert!(clock.sleeps().is_empty());
}

#[tokio::test]
async fn force_refresh_and_claims_do_not_take_the_lock() {
    let clock = ManualClock::default();
    let cache = Arc::new(MemoryCache::new());
    let lock = Arc::new(FakeLock::new(&clock));
    lock.hold_elsewhere(lookup("a").key());
    let engine = engine(&cache, &clock, &lock);
    let source = Source::new(&clock);
    engine
        .acquire(&lookup("a").with_force_refresh(true), source.fetch())
        .await
        .unwrap();
    engine
        .acquire(&lookup("a").with_bypass_cache(true), source.fetch())
        .await
        .unwrap();
    assert_eq!(source.calls(), 2);
    assert_eq!(lock.tries.load(Ordering::SeqCst), 0);
    assert!(cache.get(lookup("a").key()).await.unwrap().is_some());
}

#[tokio::test]
async fn many_local_callers_ask_the_fleet_lock_once() {
    let clock = ManualClock::default();
    let cache = Arc::new(MemoryCache::new());
    let lock = Arc::new(FakeLock::new(&clock));
    let engine = engine(&cache, &clock, &lock);
    let source = Source::new(&clock);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (engine, fetch) = (engine.clone(), source.fetch());
            tokio::spawn(async move { engine.acquire(&lookup("a"), fetch).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(source.calls(), 1);
    assert_eq!(lock.tries.load(Ordering::SeqCst), 1);
}
