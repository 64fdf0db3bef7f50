//! The acquisition engine: hits, single flight, refresh, throttling, isolation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fic_oauth_core::identity::{KeyKind, SignatureAlgorithm, SigningKey};
use fic_oauth_core::{
    AccessToken, ClientIdentity, Clock, Error, ErrorCode, ManualClock, Secret, TokenSource,
    TokenType,
};
use fic_token_cache::{
    AccessTokenKey, AcquisitionEngine, CacheEntry, CacheKey, CachedAccessToken, FetchFuture,
    Lookup, MemoryCache, TokenCache,
};
use tokio::sync::Semaphore;

#[derive(Debug)]
struct NoKey;
impl SigningKey for NoKey {
    fn kind(&self) -> KeyKind {
        KeyKind::EcP256
    }
    fn algorithms(&self) -> &[SignatureAlgorithm] {
        &[SignatureAlgorithm::EcdsaP256Sha256]
    }
    fn sign(&self, _: SignatureAlgorithm, _: &[u8]) -> Result<Vec<u8>, Error> {
        Ok(vec![])
    }
}

fn identity(name: &str) -> ClientIdentity {
    ClientIdentity::new(vec![name.as_bytes().to_vec()], Arc::new(NoKey)).unwrap()
}

/// A scripted token source: counts calls, can be gated, answers from a queue or a default.
#[derive(Clone)]
struct Source {
    calls: Arc<AtomicUsize>,
    clock: ManualClock,
    gate: Option<Arc<Semaphore>>,
    script: Arc<Mutex<Vec<Result<Reply, Error>>>>,
    token_type: TokenType,
    binding: Option<ClientIdentity>,
}

#[derive(Clone, Copy)]
struct Reply {
    lifetime: u64,
    refresh_in: Option<u64>,
}

impl Source {
    fn new(clock: &ManualClock) -> Self {
        Self {
            calls: Arc::new(AtomicUsize::new(0)),
            clock: clock.clone(),
            gate: None,
            script: Arc::new(Mutex::new(Vec::new())),
            token_type: TokenType::Bearer,
            binding: None,
        }
    }

    fn then(self, reply: Result<Reply, Error>) -> Self {
        self.script.lock().unwrap().insert(0, reply);
        self
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn fetch(&self) -> impl Fn() -> FetchFuture + Send + Sync + 'static {
        let this = self.clone();
        move || {
            let this = this.clone();
            Box::pin(async move {
                let n = this.calls.fetch_add(1, Ordering::SeqCst) + 1;
                if let Some(gate) = &this.gate {
                    let _permit = gate.acquire().await.unwrap();
                }
                let reply = this.script.lock().unwrap().pop().unwrap_or(Ok(Reply {
                    lifetime: 3600,
                    refresh_in: None,
                }))?;
                let now = this.clock.now();
                let mut token = AccessToken::new(
                    Secret::new(format!("token-{n}")),
                    this.token_type,
                    now + Duration::from_secs(reply.lifetime),
                );
                token.refresh_on = reply.refresh_in.map(|r| now + Duration::from_secs(r));
                token.binding.clone_from(&this.binding);
                Ok(token)
            }) as FetchFuture
        }
    }
}

fn engine(clock: &ManualClock) -> (Arc<AcquisitionEngine>, Arc<MemoryCache>) {
    let cache = Arc::new(MemoryCache::new());
    let engine = AcquisitionEngine::builder(cache.clone())
        .clock(Arc::new(clock.clone()))
        .refresh_jitter(Duration::ZERO)
        .build();
    (engine, cache)
}

fn lookup() -> Lookup {
    Lookup::new(AccessTokenKey::app(
        "login.microsoftonline.com",
        "cid",
        "tid",
        ["https://vault.azure.net/.default"],
    ))
}

async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn second_call_is_a_cache_hit() {
    let clock = ManualClock::default();
    let (engine, _) = engine(&clock);
    let source = Source::new(&clock);
    let first = engine.acquire(&lookup(), source.fetch()).await.unwrap();
    let second = engine.acquire(&lookup(), source.fetch()).await.unwrap();
    assert_eq!(first.source, TokenSource::IdentityProvider);
    assert_eq!(second.source, TokenSource::Cache);
    assert_eq!(second.token.expose(), "token-1");
    assert_eq!(
        &*second.scopes,
        ["https://vault.azure.net/.default".to_string()]
    );
    assert_eq!(second.tenant_id.as_deref(), Some("tid"));
    assert_eq!(source.calls(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn tokens_with_under_five_minutes_left_are_misses() {
    let clock = ManualClock::default();
    let (engine, _) = engine(&clock);
    let source = Source::new(&clock);
    engine.acquire(&lookup(), source.fetch()).await.unwrap();
    clock.advance(Duration::from_secs(3600 - 301));
    assert_eq!(
        engine
            .acquire(&lookup(), source.fetch())
            .await
            .unwrap()
            .source,
        TokenSource::Cache
    );
    clock.advance(Duration::from_secs(2));
    let renewed = engine.acquire(&lookup(), source.fetch()).await.unwrap();
    assert_eq!(renewed.source, TokenSource::IdentityProvider);
    assert_eq!(renewed.token.expose(), "token-2");
}

#[tokio::test(flavor = "current_thread")]
async fn mtls_pop_entries_serve_only_their_certificate() {
    let clock = ManualClock::default();
    let (engine, cache) = engine(&clock);
    let cert1 = identity("cert-1");
    let cert2 = identity("cert-2");
    let parts = AccessTokenKey::app("login.microsoftonline.com", "cid", "tid", ["s/.default"])
        .with_token_type(TokenType::MtlsPop);
    let with = |cert: &ClientIdentity| Lookup::new(parts.clone()).with_binding(Some(cert.clone()));

    let mut source = Source::new(&clock);
    source.token_type = TokenType::MtlsPop;
    source.binding = Some(cert1.clone());
    engine.acquire(&with(&cert1), source.fetch()).await.unwrap();

    let stored = cache.get(&parts.build()).await.unwrap().unwrap();
    let CacheEntry::AccessToken(entry) = &*stored else {
        panic!("not an access token")
    };
    assert_eq!(entry.kid(), Some(cert1.thumbprint_s256()));
    assert!(parts.build().as_str().ends_with("-mtls_pop"));

    let hit = engine.acquire(&with(&cert1), source.fetch()).await.unwrap();
    assert_eq!(hit.source, TokenSource::Cache);
    assert_eq!(hit.binding_thumbprint(), Some(cert1.thumbprint_s256()));
    assert_eq!(source.calls(), 1);

    // Another certificate is a miss and a new request.
    source.binding = Some(cert2.clone());
    let other = engine.acquire(&with(&cert2), source.fetch()).await.unwrap();
    assert_eq!(other.source, TokenSource::IdentityProvider);
    assert_eq!(source.calls(), 2);

    // A Bearer lookup never sees the PoP entry.
    let bearer = Lookup::new(AccessTokenKey::app(
        "login.microsoftonline.com",
        "cid",
        "tid",
        ["s/.default"],
    ));
    let plain = Source::new(&clock);
    engine.acquire(&bearer, plain.fetch()).await.unwrap();
    assert_eq!(plain.calls(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_thousand_concurrent_misses_make_one_request() {
    let clock = ManualClock::default();
    let (engine, _) = engine(&clock);
    let gate = Arc::new(Semaphore::new(0));
    let mut source = Source::new(&clock);
    source.gate = Some(gate.clone());
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (engine, fetch) = (engine.clone(), source.fetch());
        tasks.push(tokio::spawn(async move {
            engine.acquire(&lookup(), fetch).await
        }));
    }
    settle().await;
    assert_eq!(source.calls(), 1, "every caller joined the one flight");
    gate.add_permits(1000);
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().token.expose(), "token-1");
    }
    assert_eq!(source.calls(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn every_waiter_gets_the_error_and_the_next_call_retries() {
    let clock = ManualClock::default();
    let (engine, _) = engine(&clock);
    let gate = Arc::new(Semaphore::new(0));
    let mut source = Source::new(&clock).then(Err(Error::new(
        ErrorCode::server("invalid_client"),
        "AADSTS7000215",
    )));
    source.gate = Some(gate.clone());
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (engine, fetch) = (engine.clone(), source.fetch());
        tasks.push(tokio::spawn(async move {
            engine.acquire(&lookup(), fetch).await
        }));
    }
    settle().await;
    gate.add_permits(100);
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap_err().code(), &"invalid_client");
    }
    assert_eq!(source.calls(), 1);
    assert!(engine.acquire(&lookup(), source.fetch()).await.is_ok());
    assert_eq!(source.calls(), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn misses_on_different_keys_do_not_wait_on_each_other() {
    let clock = ManualClock::default();
    let (engine, _) = engine(&clock);
    let gate = Arc::new(Semaphore::new(0));
    let mut blocked = Source::new(&clock);
    blocked.gate = Some(gate.clone());
    let stuck = {
        let (engine, fetch) = (engine.clone(), blocked.fetch());
        tokio::spawn(async move { engine.acquire(&lookup(), fetch).await })
    };
    settle().await;
    let other = Lookup::new(AccessTokenKey::app(
        "login.microsoftonline.com",
        "cid",
        "tid",
        ["other/.default"],
    ));
    let free = Source::new(&clock);
    let token = engine.acquire(&other, free.fetch()).await.unwrap();
    assert_eq!(token.source, TokenSource::IdentityProvider);
    assert!(!stuck.is_finished());
    gate.add_permits(1);
    stuck.await.unwrap().unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_cancelled_leader_does_not_strand_the_others() {
    let clock = ManualClock::default();
    let (engine, _) = engine(&clock);
    let gate = Arc::new(Semaphore::new(0));
    let mut source = Source::new(&clock);
    source.gate = Some(gate.clone());
    let leader = {
        let (engine, fetch) = (engine.clone(), source.fetch());
        tokio::spawn(async move { engine.acquire(&lookup(), fetch).await })
    };
    settle().await;
    let follower = {
        let (engine, fetch) = (engine.clone(), source.fetch());
        tokio::spawn(async move { engine.acquire(&lookup(), fetch).await })
    };
    settle().await;
    leader.abort();
    settle().await;
    gate.add_permits(10);
    let token = follower.await.unwrap().unwrap();
    assert_eq!(
        token.token.expose(),
        "token-2",
        "the follower ran the fetch itself"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn proactive_refresh_runs_in_the_background() {
    let clock = ManualClock::default();
    let (engine, _) = engine(&clock);
    let source = Source::new(&clock).then(Ok(Reply {
        lifetime: 7200,
        refresh_in: Some(3600),
    }));
    engine.acquire(&lookup(), source.fetch()).await.unwrap();
    clock.advance(Duration::from_secs(3000));
    assert_eq!(
        engine
            .acquire(&lookup(), source.fetch())
            .await
            .unwrap()
            .source,
        TokenSource::Cache
    );
    settle().await;
    assert_eq!(source.calls(), 1, "not yet past refresh_on");

    clock.advance(Duration::from_secs(700));
    let served = engine.acquire(&lookup(), source.fetch()).await.unwrap();
    assert_eq!(
        served.token.expose(),
        "token-1",
        "the caller keeps the cached token"
    );
    assert!(engine.is_refreshing(&lookup()));
    settle().await;
    assert!(!engine.is_refreshing(&lookup()));
    assert_eq!(source.calls(), 2);
    let after = engine.acquire(&lookup(), source.fetch()).await.unwrap();
    assert_eq!(
        (after.token.expose(), after.source),
        ("token-2", TokenSource::Cache)
    );
}

/// With the default 5-minute jitter, a token whose `refresh_in` is 120 s is not due as soon as
/// it is stored (the jitter is capped at a quarter of the interval: 30 s), and is due after
/// `refresh_on`.
#[tokio::test(flavor = "current_thread")]
async fn a_short_refresh_in_is_not_used_up_by_the_jitter() {
    let clock = ManualClock::default();
    let engine = AcquisitionEngine::builder(Arc::new(MemoryCache::new()))
        .clock(Arc::new(clock.clone()))
        .build();
    // Many keys: each has its own jitter, spread over the default 5 minutes; uncapped, most
    // would exceed 120 s.
    let lookups: Vec<Lookup> = (0..40)
        .map(|i| {
            Lookup::new(AccessTokenKey::app(
                "login.microsoftonline.com",
                "cid",
                "tid",
                [format!("https://r{i}.example/.default")],
            ))
        })
        .collect();
    let sources: Vec<Source> = lookups
        .iter()
        .map(|_| {
            Source::new(&clock).then(Ok(Reply {
                lifetime: 3600,
                refresh_in: Some(120),
            }))
        })
        .collect();
    let calls = |sources: &[Source]| sources.iter().map(Source::calls).collect::<Vec<_>>();
    for (lookup, source) in lookups.iter().zip(&sources) {
        engine.acquire(lookup, source.fetch()).await.unwrap();
    }
    // Hit right after being stored, and up to 90 s later (120 s minus at most 30 s): no refresh.
    for step in [0, 45, 44] {
        clock.advance(Duration::from_secs(step));
        for (lookup, source) in lookups.iter().zip(&sources) {
            let hit = engine.acquire(lookup, source.fetch()).await.unwrap();
            assert_eq!(hit.source, TokenSource::Cache);
            assert!(!engine.is_refreshing(lookup));
            assert!(engine.try_hit(lookup).is_some(), "not due yet");
        }
        settle().await;
        assert_eq!(calls(&sources), vec![1; 40], "refreshed too early");
    }
    // Past refresh_on: every key is refreshed once, in the background.
    clock.advance(Duration::from_secs(32));
    for (lookup, source) in lookups.iter().zip(&sources) {
        let hit = engine.acquire(lookup, source.fetch()).await.unwrap();
        assert_eq!(hit.token.expose(), "token-1", "the cached token is served");
    }
    settle().await;
    assert_eq!(calls(&sources), vec![2; 40]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_background_refresh_keeps_the_token_and_backs_off() {
    let clock = ManualClock::default();
    let (engine, _) = engine(&clock);
    let source = Source::new(&clock)
        .then(Ok(Reply {
            lifetime: 7200,
            refresh_in: Some(3600),
        }))
        .then(Err(Error::new(
            ErrorCode::server("temporarily_unavailable"),
            "down",
        )
        .with_retryable(true)));
    engine.acquire(&lookup(), source.fetch()).await.unwrap();
    clock.advance(Duration::from_secs(3700));
    assert_eq!(
        engine
            .acquire(&lookup(), source.fetch())
            .await
            .unwrap()
            .token
            .expose(),
        "token-1"
    );
    settle().await;
    assert_eq!(source.calls(), 2);
    // Within the back-off: served from the cache, no new attempt.
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        engine
            .acquire(&lookup(), source.fetch())
            .await
            .unwrap()
            .token
            .expose(),
        "token-1"
    );
    settle().await;
    assert_eq!(source.calls(), 2);
    // After it: one more background attempt, which succeeds.
    clock.advance(Duration::from_secs(30));
    assert_eq!(
        engine
            .acquire(&lookup(), source.fetch())
            .await
            .unwrap()
            .token
            .expose(),
        "token-1"
    );
    settle().await;
    assert_eq!(source.calls(), 3);
    assert_eq!(
        engine
            .acquire(&lookup(), source.fetch())
            .await
            .unwrap()
            .token
            .expose(),
        "token-3"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_throttled_background_refresh_waits_for_retry_after() {
    let clock = ManualClock::default();
    let (engine, _) = engine(&clock);
    let throttled =
        Error::new(ErrorCode::THROTTLED, "429").with_retry_after(Duration::from_secs(600));
    let source = Source::new(&clock)
        .then(Ok(Reply {
            lifetime: 7200,
            refresh_in: Some(3600),
        }))
        .then(Err(throttled));
    engine.acquire(&lookup(), source.fetch()).await.unwrap();
    clock.advance(Duration::from_secs(3700));
    engine.acquire(&lookup(), source.fetch()).await.unwrap();
    settle().await;
    assert_eq!(source.calls(), 2, "the background refresh was throttled");
    // Past the usual 30 s back-off but within Retry-After: no request.
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        engine
            .acquire(&lookup(), source.fetch())
            .await
            .unwrap()
            .token
            .expose(),
        "token-1"
    );
    settle().await;
    assert_eq!(source.calls(), 2);
    // After Retry-After: refreshed.
    clock.advance(Duration::from_secs(600));
    engine.acquire(&lookup(), source.fetch()).await.unwrap();
    settle().await;
    assert_eq!(source.calls(), 3);
}

#[tokio::test(flavor = "current_thread")]
async fn force_refresh_and_claims_skip_the_lookup() {
    let clock = ManualClock::default();
    let (engine, _) = engine(&clock);
    let source = Source::new(&clock);
    engine.acquire(&lookup(), source.fetch()).await.unwrap();
    let forced = engine
        .acquire(&lookup().with_force_refresh(true), source.fetch())
        .await
        .unwrap();
    assert_eq!(
        (forced.token.expose(), forced.source),
        ("token-2", TokenSource::IdentityProvider)
    );
    let claims = engine
        .acquire(&lookup().with_bypass_cache(true), source.fetch())
        .await
        .unwrap();
    assert_eq!(claims.token.expose(), "token-3");
    // The last token is what the cache serves now.
    let hit = engine.acquire(&lookup(), source.fetch()).await.unwrap();
    assert_eq!(
        (hit.token.expose(), hit.source),
        ("token-3", TokenSource::Cache)
    );
    assert_eq!(source.calls(), 3);
}

#[tokio::test(flavor = "current_thread")]
async fn throttling_blocks_the_key_until_retry_after() {
    let clock = ManualClock::default();
    let (engine, _) = engine(&clock);
    let throttled =
        Error::new(ErrorCode::THROTTLED, "429").with_retry_after(Duration::from_secs(60));
    let source = Source::new(&clock).then(Err(throttled));
    assert_eq!(
        engine
            .acquire(&lookup(), source.fetch())
            .await
            .unwrap_err()
            .code(),
        &ErrorCode::THROTTLED
    );
    clock.advance(Duration::from_secs(20));
    let again = engine.acquire(&lookup(), source.fetch()).await.unwrap_err();
    assert_eq!(again.code(), &ErrorCode::THROTTLED);
    assert_eq!(again.retry_after(), Some(Duration::from_secs(40)));
    assert_eq!(source.calls(), 1, "no request was sent while throttled");
    // Another key is not affected.
    let other = Lookup::new(AccessTokenKey::app(
        "login.microsoftonline.com",
        "cid",
        "tid",
        ["other/.default"],
    ));
    engine.acquire(&other, source.fetch()).await.unwrap();
    clock.advance(Duration::from_secs(41));
    engine.acquire(&lookup(), source.fetch()).await.unwrap();
    assert_eq!(source.calls(), 3);
}

/// A cache whose every operation fails.
#[derive(Debug)]
struct BrokenCache;

#[async_trait]
impl TokenCache for BrokenCache {
    async fn get(&self, _: &CacheKey) -> Result<Option<Arc<CacheEntry>>, Error> {
        Err(Error::new(ErrorCode::TRANSPORT, "cache down"))
    }
    async fn put(&self, _: CacheKey, _: Arc<CacheEntry>) -> Result<(), Error> {
        Err(Error::new(ErrorCode::TRANSPORT, "cache down"))
    }
    async fn remove(&self, _: &CacheKey) -> Result<(), Error> {
        Err(Error::new(ErrorCode::TRANSPORT, "cache down"))
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_failing_cache_never_fails_an_acquisition() {
    let clock = ManualClock::default();
    let engine = AcquisitionEngine::builder(Arc::new(BrokenCache))
        .clock(Arc::new(clock.clone()))
        .build();
    let source = Source::new(&clock);
    assert!(engine.acquire(&lookup(), source.fetch()).await.is_ok());
    assert!(engine.acquire(&lookup(), source.fetch()).await.is_ok());
    assert_eq!(source.calls(), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn fmi_components_are_isolated_symmetrically() {
    let clock = ManualClock::default();
    let (engine, _) = engine(&clock);
    let base = AccessTokenKey::app(
        "login.microsoftonline.com",
        "cid",
        "tid",
        ["api://AzureADTokenExchange/.default"],
    );
    let plain = Source::new(&clock);
    let with_a = Source::new(&clock);
    let with_b = Source::new(&clock);
    engine
        .acquire(
            &Lookup::new(base.clone().with_component("fmi_path", "a")),
            with_a.fetch(),
        )
        .await
        .unwrap();
    engine
        .acquire(&Lookup::new(base.clone()), plain.fetch())
        .await
        .unwrap();
    engine
        .acquire(
            &Lookup::new(base.clone().with_component("fmi_path", "b")),
            with_b.fetch(),
        )
        .await
        .unwrap();
    assert_eq!((plain.calls(), with_a.calls(), with_b.calls()), (1, 1, 1));
    let hit = engine
        .acquire(
            &Lookup::new(base.with_component("fmi_path", "a")),
            with_a.fetch(),
        )
        .await
        .unwrap();
    assert_eq!(hit.source, TokenSource::Cache);
}

#[tokio::test(flavor = "current_thread")]
async fn callers_bound_to_different_certificates_never_share_a_fetch() {
    let clock = ManualClock::default();
    let (engine, _) = engine(&clock);
    let (cert1, cert2) = (identity("cert-1"), identity("cert-2"));
    let parts = AccessTokenKey::app("login.microsoftonline.com", "cid", "tid", ["s/.default"])
        .with_token_type(TokenType::MtlsPop);
    let gate = Arc::new(Semaphore::new(0));
    let source_for = |cert: &ClientIdentity| {
        let mut source = Source::new(&clock);
        source.token_type = TokenType::MtlsPop;
        source.binding = Some(cert.clone());
        source.gate = Some(gate.clone());
        source
    };
    let (source1, source2) = (source_for(&cert1), source_for(&cert2));
    let spawn = |cert: &ClientIdentity, source: &Source| {
        let (engine, fetch) = (engine.clone(), source.fetch());
        let lookup = Lookup::new(parts.clone()).with_binding(Some(cert.clone()));
        tokio::spawn(async move { engine.acquire(&lookup, fetch).await })
    };
    let first = spawn(&cert1, &source1);
    let second = spawn(&cert2, &source2);
    settle().await;
    assert_eq!(
        (source1.calls(), source2.calls()),
        (1, 1),
        "one fetch per certificate"
    );
    gate.add_permits(10);
    let (first, second) = (
        first.await.unwrap().unwrap(),
        second.await.unwrap().unwrap(),
    );
    assert_eq!(first.binding_thumbprint(), Some(cert1.thumbprint_s256()));
    assert_eq!(second.binding_thumbprint(), Some(cert2.thumbprint_s256()));
}

#[tokio::test(flavor = "current_thread")]
async fn a_forced_refresh_never_joins_a_flight_that_may_answer_from_the_cache() {
    let clock = ManualClock::default();
    let (engine, _) = engine(&clock);
    let gate = Arc::new(Semaphore::new(0));
    let mut source = Source::new(&clock);
    source.gate = Some(gate.clone());
    // A normal miss is in flight...
    let normal = {
        let (engine, fetch) = (engine.clone(), source.fetch());
        tokio::spawn(async move { engine.acquire(&lookup(), fetch).await })
    };
    settle().await;
    assert_eq!(source.calls(), 1);
    // ...a forced refresh makes its own request, and forced callers share theirs.
    let forced: Vec<_> = (0..3)
        .map(|_| {
            let (engine, fetch) = (engine.clone(), source.fetch());
            tokio::spawn(async move {
                engine
                    .acquire(&lookup().with_force_refresh(true), fetch)
                    .await
            })
        })
        .collect();
    settle().await;
    assert_eq!(
        source.calls(),
        2,
        "one forced flight besides the normal one"
    );
    gate.add_permits(10);
    assert_eq!(normal.await.unwrap().unwrap().token.expose(), "token-1");
    for task in forced {
        let token = task.await.unwrap().unwrap();
        assert_eq!(
            (token.token.expose(), token.source),
            ("token-2", TokenSource::IdentityProvider)
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn misses_join_a_forced_refresh_in_flight_instead_of_sending_another_request() {
    let clock = ManualClock::default();
    let (engine, cache) = engine(&clock);
    let gate = Arc::new(Semaphore::new(0));
    let mut source = Source::new(&clock);
    source.gate = Some(gate.clone());
    // A forced refresh is in flight (the cache is empty: the callers below miss)...
    let forced = {
        let (engine, fetch) = (engine.clone(), source.fetch());
        tokio::spawn(async move {
            engine
                .acquire(&lookup().with_force_refresh(true), fetch)
                .await
        })
    };
    settle().await;
    assert_eq!(source.calls(), 1);
    // ...normal misses wait for its token rather than sending their own request...
    let normal: Vec<_> = (0..5)
        .map(|_| {
            let (engine, fetch) = (engine.clone(), source.fetch());
            tokio::spawn(async move { engine.acquire(&lookup(), fetch).await })
        })
        .collect();
    settle().await;
    assert_eq!(source.calls(), 1, "the misses joined the forced flight");
    assert!(normal.iter().all(|task| !task.is_finished()));
    // ...and a forced refresh arriving now joins the forced flight too, not a normal one.
    let forced_late = {
        let (engine, fetch) = (engine.clone(), source.fetch());
        tokio::spawn(async move {
            engine
                .acquire(&lookup().with_force_refresh(true), fetch)
                .await
        })
    };
    settle().await;
    assert_eq!(source.calls(), 1);
    gate.add_permits(10);
    for task in normal.into_iter().chain([forced, forced_late]) {
        let token = task.await.unwrap().unwrap();
        assert_eq!(
            (token.token.expose(), token.source),
            ("token-1", TokenSource::IdentityProvider)
        );
    }
    assert_eq!(source.calls(), 1);
    let stored = cache.get(lookup().key()).await.unwrap().unwrap();
    assert_eq!(
        stored.as_access_token().unwrap().secret().expose(),
        "token-1"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_miss_that_takes_over_a_forced_flight_still_fetches_for_the_forced_callers() {
    let clock = ManualClock::default();
    let (engine, cache) = engine(&clock);
    let gate = Arc::new(Semaphore::new(0));
    let mut source = Source::new(&clock);
    source.gate = Some(gate.clone());
    let leader = {
        let (engine, fetch) = (engine.clone(), source.fetch());
        tokio::spawn(async move {
            engine
                .acquire(&lookup().with_force_refresh(true), fetch)
                .await
        })
    };
    settle().await;
    // A normal miss joins the forced flight first, then another forced refresh does.
    let normal = {
        let (engine, fetch) = (engine.clone(), source.fetch());
        tokio::spawn(async move { engine.acquire(&lookup(), fetch).await })
    };
    settle().await;
    let forced = {
        let (engine, fetch) = (engine.clone(), source.fetch());
        tokio::spawn(async move {
            engine
                .acquire(&lookup().with_force_refresh(true), fetch)
                .await
        })
    };
    settle().await;
    assert_eq!(source.calls(), 1);
    // Meanwhile a usable token appears in the cache (another process stored it).
    let parts = lookup().parts().clone();
    let other = AccessToken::new(
        Secret::new("from-another-process"),
        TokenType::Bearer,
        clock.now() + Duration::from_secs(3600),
    );
    cache
        .put(
            lookup().key().clone(),
            Arc::new(CacheEntry::AccessToken(CachedAccessToken::from_token(
                parts,
                &other,
                clock.now(),
            ))),
        )
        .await
        .unwrap();
    // The leader is cancelled: the normal caller, first in line, runs the flight, and runs it
    // as the forced flight it is (a new request, not a cache read).
    leader.abort();
    settle().await;
    assert_eq!(
        source.calls(),
        2,
        "the flight was taken over with a request"
    );
    gate.add_permits(10);
    for task in [normal, forced] {
        let token = task.await.unwrap().unwrap();
        assert_eq!(
            (token.token.expose(), token.source),
            ("token-2", TokenSource::IdentityProvider)
        );
    }
}
