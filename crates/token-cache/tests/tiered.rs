//! TieredCache over a scripted L2: read-through, write-both, L2 failures and hangs that never
//! reach the caller, the circuit breaker on the injected clock, tokens refreshed elsewhere.
//! (The same against a real Redis is in `redis_cache.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{access_token, lookup, Source};
use fic_oauth_core::{AccessToken, Clock, Error, ManualClock, Secret, TokenSource, TokenType};
use fic_token_cache::{
    codes, AcquisitionEngine, CacheEntry, CacheKey, CachedAccessToken, MemoryCache, TieredCache,
    TokenCache,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Up,
    Failing,
    Hanging,
    Undecryptable,
}

/// An L2 that can be up, failing, hanging, or answering with undecryptable values.
#[derive(Debug)]
struct ScriptedL2 {
    store: MemoryCache,
    mode: Mutex<Mode>,
    calls: AtomicUsize,
}

impl ScriptedL2 {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            store: MemoryCache::new(),
            mode: Mutex::new(Mode::Up),
            calls: AtomicUsize::new(0),
        })
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn gate(&self) -> Result<(), Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::Up => Ok(()),
            Mode::Failing => Err(Error::new(codes::CACHE_UNAVAILABLE, "connection refused")),
            Mode::Hanging => std::future::pending().await,
            Mode::Undecryptable => Err(Error::new(codes::CACHE_DECRYPTION_FAILED, "wrong key")),
        }
    }
}

#[async_trait]
impl TokenCache for ScriptedL2 {
    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<CacheEntry>>, Error> {
        self.gate().await?;
        Ok(self.store.get_entry(key))
    }
    async fn put(&self, key: CacheKey, entry: Arc<CacheEntry>) -> Result<(), Error> {
        self.gate().await?;
        self.store.put_entry(key, entry);
        Ok(())
    }
    async fn remove(&self, key: &CacheKey) -> Result<(), Error> {
        self.gate().await?;
        self.store.remove_entry(key);
        Ok(())
    }
}

const TIMEOUT: Duration = Duration::from_millis(250);
const COOLDOWN: Duration = Duration::from_secs(5);

fn tiered(l2: &Arc<ScriptedL2>, clock: &ManualClock) -> Arc<TieredCache> {
    Arc::new(
        TieredCache::builder(l2.clone())
            .clock(Arc::new(clock.clone()))
            .l2_timeout(TIMEOUT)
            .l2_cooldown(COOLDOWN)
            .build(),
    )
}

fn engine(cache: &Arc<TieredCache>, clock: &ManualClock) -> Arc<AcquisitionEngine> {
    AcquisitionEngine::builder(cache.clone())
        .clock(Arc::new(clock.clone()))
        .refresh_jitter(Duration::ZERO)
        .build()
}

#[tokio::test]
async fn reads_fill_l1_from_l2_and_writes_reach_both() {
    let clock = ManualClock::default();
    let l2 = ScriptedL2::new();
    let cache = tiered(&l2, &clock);
    let (key, entry) = access_token(&clock, "a", 3600);
    l2.store.put_entry(key.clone(), entry.clone());

    assert!(!cache.visit_now(&key, &mut |_| {}), "an L1 miss is awaited");
    assert_eq!(cache.get(&key).await.unwrap().as_deref(), Some(&*entry));
    assert_eq!(l2.calls(), 1);
    // Now in L1: answered at once, L2 not asked again.
    let mut seen = None;
    assert!(cache.visit_now(&key, &mut |e| seen = e.cloned()));
    assert_eq!(seen.as_ref(), Some(&*entry));
    assert_eq!(cache.get(&key).await.unwrap().as_deref(), Some(&*entry));
    assert_eq!(l2.calls(), 1);

    let (key2, entry2) = access_token(&clock, "b", 3600);
    cache.put(key2.clone(), entry2.clone()).await.unwrap();
    assert_eq!(cache.l1().get_entry(&key2).as_deref(), Some(&*entry2));
    assert_eq!(l2.store.get_entry(&key2).as_deref(), Some(&*entry2));
    cache.remove(&key2).await.unwrap();
    assert!(cache.l1().get_entry(&key2).is_none());
    assert!(l2.store.get_entry(&key2).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_failing_l2_never_fails_acquisition_and_is_skipped_for_the_cooldown() {
    let clock = ManualClock::default();
    let l2 = ScriptedL2::new();
    let cache = tiered(&l2, &clock);
    let engine = engine(&cache, &clock);
    let source = Source::new(&clock);

    engine.acquire(&lookup("a"), source.fetch()).await.unwrap();
    assert!(l2.store.get_entry(lookup("a").key()).is_some());

    for mode in [Mode::Failing, Mode::Hanging] {
        let calls = l2.calls();
        l2.set(mode);
        // A hit is served by L1 without asking L2.
        let hit = engine.acquire(&lookup("a"), source.fetch()).await.unwrap();
        assert_eq!(hit.source, TokenSource::Cache);
        assert_eq!(l2.calls(), calls);

        // A miss: one L2 call (failed or timed out), then the network; no error.
        let scope = format!("miss-{mode:?}");
        let started = tokio::time::Instant::now();
        let token = engine
            .acquire(&lookup(&scope), source.fetch())
            .await
            .unwrap();
        assert_eq!(token.source, TokenSource::IdentityProvider);
        assert!(started.elapsed() <= TIMEOUT, "bounded by the L2 timeout");
        assert_eq!(
            l2.calls(),
            calls + 1,
            "the breaker opened after one failure"
        );
        assert!(!cache.l2_available());
        assert!(cache.l1().get_entry(lookup(&scope).key()).is_some());

        // While open, misses do not wait for L2 at all.
        let started = tokio::time::Instant::now();
        engine
            .acquire(&lookup(&format!("{scope}-2")), source.fetch())
            .await
            .unwrap();
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(l2.calls(), calls + 1);

        // After the cooldown one call probes L2 again (and fails again).
        clock.advance(COOLDOWN);
        assert!(cache.l2_available());
        engine
            .acquire(&lookup(&format!("{scope}-3")), source.fetch())
            .await
            .unwrap();
        assert_eq!(l2.calls(), calls + 2);
        assert!(!cache.l2_available());
        clock.advance(COOLDOWN);
        l2.set(Mode::Up);
        let calls_before = l2.calls();
        engine.acquire(&lookup("b"), source.fetch()).await.unwrap();
        assert!(l2.calls() > calls_before);
        assert!(cache.l2_available(), "L2 is used again");
        assert!(l2.store.get_entry(lookup("b").key()).is_some());
        cache.remove(lookup("b").key()).await.unwrap();
        l2.store.clear();
        l2.store.put_entry(
            lookup("a").key().clone(),
            cache.l1().get_entry(lookup("a").key()).unwrap(),
        );
    }
}

#[tokio::test]
async fn an_undecryptable_l2_value_is_a_miss_and_does_not_trip_the_breaker() {
    let clock = ManualClock::default();
    let l2 = ScriptedL2::new();
    let cache = tiered(&l2, &clock);
    let engine = engine(&cache, &clock);
    let source = Source::new(&clock);
    l2.set(Mode::Undecryptable);
    let token = engine.acquire(&lookup("a"), source.fetch()).await.unwrap();
    assert_eq!(token.source, TokenSource::IdentityProvider);
    assert!(cache.l2_available());
}

#[tokio::test]
async fn a_token_refreshed_by_another_process_is_picked_up_from_l2() {
    let clock = ManualClock::default();
    let l2 = ScriptedL2::new();
    let cache = tiered(&l2, &clock);
    let engine = engine(&cache, &clock);

    // This process cached a token due for refresh in an hour.
    let key = lookup("a").key().clone();
    let ours = {
        let mut token = AccessToken::new(
            Secret::new("ours"),
            TokenType::Bearer,
            clock.now() + Duration::from_secs(7200),
        );
        token.refresh_on = Some(clock.now() + Duration::from_secs(3600));
        CachedAccessToken::from_token(common::parts("a"), &token, clock.now())
    };
    cache
        .put(key.clone(), Arc::new(CacheEntry::AccessToken(ours)))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(3601));

    // Another process refreshed it already and wrote L2.
    let theirs = {
        let mut token = AccessToken::new(
            Secret::new("theirs"),
            TokenType::Bearer,
            clock.now() + Duration::from_secs(7200),
        );
        token.refresh_on = Some(clock.now() + Duration::from_secs(3600));
        CachedAccessToken::from_token(common::parts("a"), &token, clock.now())
    };
    l2.store
        .put_entry(key.clone(), Arc::new(CacheEntry::AccessToken(theirs)));

    let source = Source::new(&clock);
    let token = engine.acquire(&lookup("a"), source.fetch()).await.unwrap();
    assert_eq!(
        (token.token.expose(), token.source),
        ("theirs", TokenSource::Cache)
    );
    tokio::task::yield_now().await;
    assert!(!engine.is_refreshing(&lookup("a")));
    assert_eq!(source.calls(), 0, "no refresh of our own");
    // L1 holds theirs now: plain memory hits again.
    assert!(cache.visit_now(&key, &mut |_| {}));
}

#[tokio::test]
async fn a_due_token_asks_l2_at_most_once_per_recheck_interval() {
    let clock = ManualClock::default();
    let l2 = ScriptedL2::new();
    let cache = Arc::new(
        TieredCache::builder(l2.clone())
            .clock(Arc::new(clock.clone()))
            .l2_recheck_interval(Duration::from_secs(10))
            .build(),
    );
    let key = lookup("a").key().clone();
    let mut token = AccessToken::new(
        Secret::new("ours"),
        TokenType::Bearer,
        clock.now() + Duration::from_secs(7200),
    );
    token.refresh_on = Some(clock.now() + Duration::from_secs(3600));
    let entry = Arc::new(CacheEntry::AccessToken(CachedAccessToken::from_token(
        common::parts("a"),
        &token,
        clock.now(),
    )));
    cache.put(key.clone(), entry.clone()).await.unwrap();
    let calls = l2.calls();
    // Well before refresh_on: memory only.
    assert!(cache.visit_now(&key, &mut |_| {}));
    clock.advance(Duration::from_secs(3601));
    assert!(!cache.visit_now(&key, &mut |_| {}), "due: L2 is asked");
    assert_eq!(cache.get(&key).await.unwrap().as_deref(), Some(&*entry));
    assert_eq!(l2.calls(), calls + 1);
    // Nothing newer there: memory only again for the interval.
    assert!(cache.visit_now(&key, &mut |_| {}));
    assert_eq!(cache.get(&key).await.unwrap().as_deref(), Some(&*entry));
    assert_eq!(l2.calls(), calls + 1);
    clock.advance(Duration::from_secs(10));
    assert!(!cache.visit_now(&key, &mut |_| {}));
    cache.get(&key).await.unwrap();
    assert_eq!(l2.calls(), calls + 2);
}

#[tokio::test(start_paused = true)]
async fn one_probe_at_a_time_after_the_cooldown() {
    let clock = ManualClock::default();
    let l2 = ScriptedL2::new();
    let cache = tiered(&l2, &clock);
    l2.set(Mode::Failing);
    let (key, _) = access_token(&clock, "a", 3600);
    cache.get(&key).await.unwrap();
    assert_eq!(l2.calls(), 1);
    clock.advance(COOLDOWN);
    l2.set(Mode::Hanging);
    // Many callers at once after the cooldown: one probes (and hangs), the others skip L2.
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (cache, key) = (cache.clone(), key.clone());
            tokio::spawn(async move { cache.get(&key).await })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().unwrap().is_none());
    }
    assert_eq!(l2.calls(), 2);
    // A probe that was cancelled does not keep the breaker half-open forever.
    clock.advance(COOLDOWN);
    let probe = {
        let (cache, key) = (cache.clone(), key.clone());
        tokio::spawn(async move { cache.get(&key).await })
    };
    tokio::task::yield_now().await;
    probe.abort();
    let _ = probe.await;
    l2.set(Mode::Up);
    assert!(cache.get(&key).await.unwrap().is_none());
    assert_eq!(l2.calls(), 4);
    assert!(cache.l2_available());
}
