//! Tiered cache cost: an L1 hit through the engine, an L2 hit over loopback Redis (L1 miss,
//! Redis GET, parse, L1 fill), and the raw RedisCache GET and SET.
//!
//! The Redis rows need `FIC_TEST_REDIS_URL` (`cargo xtask bench` starts a redis-server when one
//! is installed) and are skipped with a notice otherwise. Prints a table and writes
//! `target/bench/token_cache_tiered.json`.
#![allow(
    clippy::print_stdout,
    clippy::cast_precision_loss,
    clippy::expect_used,
    clippy::unwrap_used,
    missing_docs
)]

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fic_oauth_core::{AccessToken, Secret, TokenType};
use fic_token_cache::{
    AccessTokenKey, AcquisitionEngine, CacheEntry, CachedAccessToken, FetchFuture, Lookup,
    MemoryCache, RedisCache, TieredCache, TokenCache,
};

const L1_HITS: u32 = 1_000_000;
const ROUND_TRIPS: usize = 5_000;

fn parts(i: usize) -> AccessTokenKey {
    AccessTokenKey::app(
        "login.microsoftonline.com",
        "6f1a2b3c-0000-4000-8000-00000000c11e",
        &format!("tenant-{i}"),
        ["https://vault.azure.net/.default"],
    )
}

fn entry(i: usize) -> Arc<CacheEntry> {
    let now = SystemTime::now();
    let token = AccessToken::new(
        Secret::new("x".repeat(1800)),
        TokenType::Bearer,
        now + Duration::from_secs(86_400),
    );
    Arc::new(CacheEntry::AccessToken(CachedAccessToken::from_token(
        parts(i),
        &token,
        now,
    )))
}

fn unreachable_fetch() -> FetchFuture {
    Box::pin(async {
        Err(fic_oauth_core::Error::new(
            fic_oauth_core::ErrorCode::INTERNAL,
            "miss in a hit benchmark",
        ))
    })
}

struct Row {
    name: String,
    ns_per_op: f64,
}

/// The `per_mille`-th sample of `sorted` (500: median, 990: p99).
fn percentile(sorted: &[Duration], per_mille: usize) -> f64 {
    let index = (sorted.len() - 1) * per_mille / 1000;
    sorted[index].as_nanos() as f64
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = std::env::var("FIC_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty());
    let mut rows = Vec::new();

    runtime.block_on(async {
        let prefix = format!("fic-bench-{}:", uuid::Uuid::new_v4().simple());
        let redis = if let Some(url) = &url {
            Some(
                RedisCache::builder(url)
                    .prefix(&prefix)
                    .timeout(Duration::from_secs(2))
                    .connect()
                    .await
                    .expect("FIC_TEST_REDIS_URL answers"),
            )
        } else {
            println!("SKIPPING the Redis rows: FIC_TEST_REDIS_URL is not set");
            None
        };
        let l2: Arc<dyn TokenCache> = match &redis {
            Some(redis) => Arc::new(redis.clone()),
            None => Arc::new(MemoryCache::new()),
        };
        let tiered = Arc::new(TieredCache::new(l2));
        let engine = AcquisitionEngine::builder(tiered.clone()).build();
        for i in 0..1000 {
            let e = entry(i);
            tiered.put(e.cache_key(), e).await.unwrap();
        }
        let lookup = Lookup::new(parts(500));

        // L1 hits.
        for _ in 0..L1_HITS / 10 {
            black_box(engine.acquire(&lookup, unreachable_fetch).await.unwrap());
        }
        let start = Instant::now();
        for _ in 0..L1_HITS {
            black_box(engine.acquire(&lookup, unreachable_fetch).await.unwrap());
        }
        rows.push(Row {
            name: "L1 hit (engine over TieredCache)".into(),
            ns_per_op: start.elapsed().as_nanos() as f64 / f64::from(L1_HITS),
        });

        let Some(redis) = redis else { return };
        // L2 hits: the L1 entry dropped before each acquisition.
        let mut samples = Vec::with_capacity(ROUND_TRIPS);
        for _ in 0..ROUND_TRIPS {
            tiered.l1().remove_entry(lookup.key());
            let start = Instant::now();
            black_box(engine.acquire(&lookup, unreachable_fetch).await.unwrap());
            samples.push(start.elapsed());
        }
        samples.sort();
        let mean = samples.iter().sum::<Duration>().as_nanos() as f64 / samples.len() as f64;
        rows.push(Row {
            name: "L2 hit over loopback (engine, mean)".into(),
            ns_per_op: mean,
        });
        rows.push(Row {
            name: "L2 hit over loopback (engine, p50)".into(),
            ns_per_op: percentile(&samples, 500),
        });
        rows.push(Row {
            name: "L2 hit over loopback (engine, p99)".into(),
            ns_per_op: percentile(&samples, 990),
        });

        let key = lookup.key().clone();
        let start = Instant::now();
        for _ in 0..ROUND_TRIPS {
            black_box(redis.get(&key).await.unwrap());
        }
        rows.push(Row {
            name: "RedisCache GET + parse".into(),
            ns_per_op: start.elapsed().as_nanos() as f64 / ROUND_TRIPS as f64,
        });
        let value = entry(500);
        let start = Instant::now();
        for _ in 0..ROUND_TRIPS {
            redis.put(key.clone(), value.clone()).await.unwrap();
        }
        rows.push(Row {
            name: "RedisCache SET PX".into(),
            ns_per_op: start.elapsed().as_nanos() as f64 / ROUND_TRIPS as f64,
        });
        for i in 0..1000 {
            redis.remove(&parts(i).build()).await.unwrap();
        }
    });

    println!("\n{:<44} {:>12}", "tiered cache", "ns per op");
    for row in &rows {
        println!("{:<44} {:>12.1}", row.name, row.ns_per_op);
    }
    let json: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "  {{\"name\": \"{}\", \"ns_per_op\": {:.1}}}",
                r.name, r.ns_per_op
            )
        })
        .collect();
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
            PathBuf::from,
        )
        .join("bench");
    if std::fs::create_dir_all(&dir).is_ok() {
        let path = dir.join("token_cache_tiered.json");
        let _ = std::fs::write(&path, format!("[\n{}\n]\n", json.join(",\n")));
        println!("written to {}", path.display());
    }
}
