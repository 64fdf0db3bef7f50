//! RedisCache, TieredCache and RedisFleetLock against a real `redis-server`.
//!
//! The server comes from `FIC_TEST_REDIS_URL` (`cargo xtask test` starts one on a free loopback
//! port when `redis-server` is installed); without it every test here prints a skip notice and
//! passes. The outage test starts and kills its own private server (same binary, another port).
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{access_token, lookup, Source, TempDir};
use fic_oauth_core::{ManualClock, Secret, TokenSource};
use fic_token_cache::{
    codes, AcquisitionEngine, CacheEntry, CachedRefreshToken, RedisCache, RedisFleetLock,
    TieredCache, TokenCache,
};

const URL_VARIABLE: &str = "FIC_TEST_REDIS_URL";

fn redis_url(test: &str) -> Option<String> {
    match std::env::var(URL_VARIABLE) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!(
                "SKIPPED {test}: {URL_VARIABLE} is not set (`cargo xtask test` starts a redis-server when one is installed)"
            );
            None
        }
    }
}

fn prefix() -> String {
    format!("fic-test-{}:", uuid::Uuid::new_v4().simple())
}

/// A plain (blocking) connection for looking at what the cache stored.
fn inspect(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

fn cleanup(url: &str, prefix: &str) {
    let mut conn = inspect(url);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut conn)
        .unwrap();
    if !keys.is_empty() {
        redis::cmd("DEL").arg(keys).exec(&mut conn).unwrap();
    }
}

fn build(url: &str, prefix: &str, clock: &ManualClock) -> RedisCache {
    RedisCache::builder(url)
        .prefix(prefix)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap()
}

fn engine_on(cache: Arc<dyn TokenCache>, clock: &ManualClock) -> Arc<AcquisitionEngine> {
    AcquisitionEngine::builder(cache)
        .clock(Arc::new(clock.clone()))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_written_by_one_instance_is_a_hit_in_another() {
    let Some(url) = redis_url("a_token_written_by_one_instance_is_a_hit_in_another") else {
        return;
    };
    let prefix = prefix();
    let clock = ManualClock::default();
    let source = Source::new(&clock);

    // Plain Redis caches, two connections.
    let first = engine_on(Arc::new(build(&url, &prefix, &clock)), &clock);
    let second = engine_on(Arc::new(build(&url, &prefix, &clock)), &clock);
    let token = first.acquire(&lookup("a"), source.fetch()).await.unwrap();
    assert_eq!(token.source, TokenSource::IdentityProvider);
    let hit = second.acquire(&lookup("a"), source.fetch()).await.unwrap();
    assert_eq!(
        (hit.token.expose(), hit.source),
        ("token-1", TokenSource::Cache)
    );
    assert_eq!(source.calls(), 1);

    // Tiered caches, each with its own L1.
    let tiered = |clock: &ManualClock| {
        Arc::new(
            TieredCache::builder(Arc::new(build(&url, &prefix, clock)))
                .clock(Arc::new(clock.clone()))
                .build(),
        )
    };
    let (l1_a, l1_b) = (tiered(&clock), tiered(&clock));
    let a = engine_on(l1_a.clone(), &clock);
    let b = engine_on(l1_b.clone(), &clock);
    a.acquire(&lookup("b"), source.fetch()).await.unwrap();
    let hit = b.acquire(&lookup("b"), source.fetch()).await.unwrap();
    assert_eq!(hit.source, TokenSource::Cache);
    assert_eq!(source.calls(), 2);
    assert!(
        l1_b.l1().get_entry(lookup("b").key()).is_some(),
        "L1 filled"
    );

    // A removal reaches Redis.
    b.invalidate(&lookup("b")).await.unwrap();
    let c = engine_on(tiered(&clock), &clock);
    c.acquire(&lookup("b"), source.fetch()).await.unwrap();
    assert_eq!(source.calls(), 3);
    cleanup(&url, &prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_msal_json_with_a_ttl_from_the_expiry() {
    let Some(url) = redis_url("values_are_msal_json_with_a_ttl_from_the_expiry") else {
        return;
    };
    let prefix = prefix();
    let clock = ManualClock::default();
    let cache = RedisCache::builder(&url)
        .prefix(&prefix)
        .clock(Arc::new(clock.clone()))
        .default_ttl(Duration::from_secs(60))
        .build()
        .unwrap();
    cache.ping().await.unwrap();
    let mut conn = inspect(&url);

    let (key, entry) = access_token(&clock, "a", 3600);
    cache.put(key.clone(), entry.clone()).await.unwrap();
    let redis_key = cache.redis_key(&key);
    assert_eq!(redis_key, format!("{prefix}{}", key.as_str()));
    let ttl: i64 = redis::cmd("PTTL").arg(&redis_key).query(&mut conn).unwrap();
    assert!((3_590_000..=3_600_000).contains(&ttl), "PTTL {ttl}");
    let value: String = redis::cmd("GET").arg(&redis_key).query(&mut conn).unwrap();
    let json: serde_json::Value = serde_json::from_str(&value).unwrap();
    assert_eq!(json["credential_type"], "AccessToken");
    assert_eq!(json["expires_on"], "1700003600");
    assert_eq!(json["secret"], "secret-for-a");
    assert!(json.get("token_type").is_none());
    assert_eq!(cache.get(&key).await.unwrap().as_deref(), Some(&*entry));

    // Entries without an expiry get the default TTL.
    let rt = CacheEntry::RefreshToken(CachedRefreshToken::new(
        "uid.utid",
        "login.microsoftonline.com",
        "cid",
        Secret::new("rt"),
    ));
    cache
        .put(rt.cache_key(), Arc::new(rt.clone()))
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(cache.redis_key(&rt.cache_key()))
        .query(&mut conn)
        .unwrap();
    assert!((59_000..=60_000).contains(&ttl), "PTTL {ttl}");
    assert_eq!(
        cache.get(&rt.cache_key()).await.unwrap().as_deref(),
        Some(&rt)
    );

    // An expired entry is not stored (what was there is deleted).
    clock.advance(Duration::from_secs(3601));
    cache.put(key.clone(), entry).await.unwrap();
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&redis_key)
        .query(&mut conn)
        .unwrap();
    assert_eq!(exists, 0);

    // A value that is not an entry is a format error (a miss for the engine).
    redis::cmd("SET")
        .arg(&redis_key)
        .arg("{not json")
        .exec(&mut conn)
        .unwrap();
    assert_eq!(
        cache.get(&key).await.unwrap_err().code(),
        &codes::CACHE_FORMAT
    );
    cleanup(&url, &prefix);
}

#[cfg(feature = "encryption")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_values_are_opaque_and_bound_to_their_key() {
    use fic_token_cache::EncryptionKey;
    let Some(url) = redis_url("encrypted_values_are_opaque_and_bound_to_their_key") else {
        return;
    };
    let prefix = prefix();
    let clock = ManualClock::default();
    let with = |key: Option<[u8; 32]>| {
        let builder = RedisCache::builder(&url)
            .prefix(&prefix)
            .clock(Arc::new(clock.clone()));
        match key {
            Some(k) => builder.encryption_key(EncryptionKey::from_bytes(k)),
            None => builder,
        }
        .build()
        .unwrap()
    };
    let cache = with(Some([3; 32]));
    let (key, entry) = access_token(&clock, "a", 3600);
    cache.put(key.clone(), entry.clone()).await.unwrap();
    let mut conn = inspect(&url);
    let raw: Vec<u8> = redis::cmd("GET")
        .arg(cache.redis_key(&key))
        .query(&mut conn)
        .unwrap();
    assert!(raw.starts_with(b"FICC\x01"));
    assert!(serde_json::from_slice::<serde_json::Value>(&raw).is_err());
    assert!(!raw.windows(12).any(|w| w == b"secret-for-a"));
    assert_eq!(
        with(Some([3; 32])).get(&key).await.unwrap().as_deref(),
        Some(&*entry)
    );
    for other in [with(Some([4; 32])), with(None)] {
        assert_eq!(
            other.get(&key).await.unwrap_err().code(),
            &codes::CACHE_DECRYPTION_FAILED
        );
    }
    // Copied under another key, the value does not decrypt.
    let (other_key, _) = access_token(&clock, "b", 3600);
    redis::cmd("SET")
        .arg(cache.redis_key(&other_key))
        .arg(&raw[..])
        .exec(&mut conn)
        .unwrap();
    assert_eq!(
        cache.get(&other_key).await.unwrap_err().code(),
        &codes::CACHE_DECRYPTION_FAILED
    );
    // A plain value where a key is configured is refused too.
    with(None).put(key.clone(), entry).await.unwrap();
    assert_eq!(
        cache.get(&key).await.unwrap_err().code(),
        &codes::CACHE_DECRYPTION_FAILED
    );
    cleanup(&url, &prefix);
}

// ---------------------------------------------------------------------------------------------
// A private redis-server, for the outage test.

struct PrivateRedis {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

fn answers_ping(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// Bounded polling (up to 5 s) for the server to come up or go down.
fn wait_until(port: u16, up: bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while answers_ping(port) != up {
        assert!(
            Instant::now() < deadline,
            "redis-server on port {port} did not go {}",
            if up { "up" } else { "down" }
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl PrivateRedis {
    fn start(test: &str) -> Option<Self> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            eprintln!("SKIPPED {test}: redis-server is not on PATH");
            return None;
        }
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self {
            child: None,
            port,
            dir: TempDir::new("redis"),
        };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("redis.log")).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_until(self.port, true);
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        wait_until(self.port, false);
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_and_coming_back() {
    const TEST: &str = "redis_going_away_and_coming_back";
    const TIMEOUT: Duration = Duration::from_millis(200);
    const COOLDOWN: Duration = Duration::from_secs(5);
    // The timeout plus slack for a loaded machine; far below anything unbounded.
    const BOUND: Duration = Duration::from_millis(200 + 400);
    if redis_url(TEST).is_none() {
        return;
    }
    let Some(mut server) = PrivateRedis::start(TEST) else {
        return;
    };
    let clock = ManualClock::default();
    let url = server.url();
    let tiered_on = |clock: &ManualClock| {
        let redis = RedisCache::builder(&url)
            .prefix("outage:")
            .clock(Arc::new(clock.clone()))
            .timeout(TIMEOUT)
            .build()
            .unwrap();
        Arc::new(
            TieredCache::builder(Arc::new(redis))
                .clock(Arc::new(clock.clone()))
                .l2_timeout(TIMEOUT)
                .l2_cooldown(COOLDOWN)
                .build(),
        )
    };
    let cache = tiered_on(&clock);
    let engine = engine_on(cache.clone(), &clock);
    let source = Source::new(&clock);
    // A new connection each time: this one does not reconnect.
    let stored = |scope: &str| -> bool {
        redis::cmd("EXISTS")
            .arg(format!("outage:{}", lookup(scope).key().as_str()))
            .query::<i64>(&mut inspect(&url))
            .unwrap()
            == 1
    };

    engine
        .acquire(&lookup("before"), source.fetch())
        .await
        .unwrap();
    assert!(stored("before"));

    server.stop();
    let timed = |scope: String| {
        let (engine, fetch) = (engine.clone(), source.fetch());
        async move {
            let started = Instant::now();
            let result = engine.acquire(&lookup(&scope), fetch).await;
            (result, started.elapsed())
        }
    };
    // Hits keep coming from L1.
    let (hit, took) = timed("before".into()).await;
    assert_eq!(hit.unwrap().source, TokenSource::Cache);
    assert!(took < BOUND, "{took:?}");
    // Misses go to the network, bounded by the timeout, without an error.
    for i in 0..5 {
        let (token, took) = timed(format!("during-{i}")).await;
        assert_eq!(token.unwrap().source, TokenSource::IdentityProvider);
        assert!(took < BOUND, "miss {i} took {took:?}");
    }
    // After the cooldown L2 is tried again: still bounded, still no error.
    clock.advance(COOLDOWN);
    let (token, took) = timed("during-probe".into()).await;
    assert!(token.is_ok());
    assert!(took < BOUND, "{took:?}");

    // Redis comes back on the same port: L2 is used again once the connection is re-made.
    server.spawn();
    let mut back = None;
    for i in 0..50 {
        clock.advance(COOLDOWN);
        let scope = format!("after-{i}");
        let (token, took) = timed(scope.clone()).await;
        assert!(token.is_ok());
        assert!(took < BOUND, "{took:?}");
        if stored(&scope) {
            back = Some(scope);
            break;
        }
    }
    let back = back.expect("L2 used again after Redis came back");
    assert!(!stored("during-0"), "written while Redis was away: L1 only");
    assert!(cache.l2_available());
    // Another process (its own L1) finds it in L2.
    let calls = source.calls();
    let other = engine_on(tiered_on(&clock), &clock);
    let hit = other.acquire(&lookup(&back), source.fetch()).await.unwrap();
    assert_eq!(hit.source, TokenSource::Cache);
    assert_eq!(source.calls(), calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_engines_missing_one_key_make_one_request() {
    let Some(url) = redis_url("twenty_engines_missing_one_key_make_one_request") else {
        return;
    };
    let prefix = prefix();
    let clock = ManualClock::default();
    let source = Source::new(&clock);
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let redis = build(&url, &prefix, &clock);
            let lock = RedisFleetLock::new(&redis)
                .poll_interval(Duration::from_millis(5))
                .max_waits(1000);
            let cache = TieredCache::builder(Arc::new(redis))
                .clock(Arc::new(clock.clone()))
                .build();
            let engine = AcquisitionEngine::builder(Arc::new(cache))
                .clock(Arc::new(clock.clone()))
                .fleet_lock(Arc::new(lock))
                .build();
            let (barrier, fetch) = (barrier.clone(), source.fetch());
            tokio::spawn(async move {
                barrier.wait().await;
                engine.acquire(&lookup("shared"), fetch).await
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.push(task.await.unwrap().unwrap().token.expose().to_string());
    }
    assert_eq!(source.calls(), 1, "one request for the whole fleet");
    assert!(tokens.iter().all(|t| t == "token-1"));
    let mut conn = inspect(&url);
    let locks: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}lock:*"))
        .query(&mut conn)
        .unwrap();
    assert!(locks.is_empty(), "the lock was released");
    cleanup(&url, &prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lock_holder_delays_the_fleet_only_until_its_lock_expires() {
    let Some(url) = redis_url("a_dead_lock_holder_delays_the_fleet_only_until_its_lock_expires")
    else {
        return;
    };
    let prefix = prefix();
    let clock = ManualClock::default();
    let redis = build(&url, &prefix, &clock);
    let lock = RedisFleetLock::new(&redis)
        .poll_interval(Duration::from_millis(10))
        .max_waits(1000);
    // A process took the lock and died.
    let mut conn = inspect(&url);
    redis::cmd("SET")
        .arg(lock.lock_key(lookup("k").key()))
        .arg("dead-process")
        .arg("PX")
        .arg(300)
        .exec(&mut conn)
        .unwrap();
    let engine = AcquisitionEngine::builder(Arc::new(redis))
        .clock(Arc::new(clock.clone()))
        .fleet_lock(Arc::new(lock))
        .build();
    let source = Source::new(&clock);
    let started = Instant::now();
    let token = engine.acquire(&lookup("k"), source.fetch()).await.unwrap();
    let took = started.elapsed();
    assert_eq!(token.source, TokenSource::IdentityProvider);
    assert_eq!(source.calls(), 1);
    assert!(
        took >= Duration::from_millis(200),
        "waited for the holder: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "not beyond its lock: {took:?}"
    );
    cleanup(&url, &prefix);
}
