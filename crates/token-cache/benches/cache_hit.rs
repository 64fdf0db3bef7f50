//! Cache-hit cost: the engine's hit path and a raw memory-cache probe, with 1, 10,000 and
//! 1,000,000 other tokens cached, and with 2 threads hammering one key.
//!
//! Prints a table and writes `target/bench/token_cache_hit.json`. Run with `cargo xtask bench`.
#![allow(
    clippy::print_stdout,
    clippy::cast_precision_loss,
    clippy::expect_used,
    missing_docs
)]

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fic_oauth_core::{AccessToken, Secret, TokenType};
use fic_token_cache::{
    AccessTokenKey, AcquisitionEngine, CacheEntry, CachedAccessToken, FetchFuture, Lookup,
    MemoryCache,
};

const HITS: u32 = 2_000_000;

fn parts(i: usize) -> AccessTokenKey {
    AccessTokenKey::app(
        "login.microsoftonline.com",
        "6f1a2b3c-0000-4000-8000-00000000c11e",
        &format!("tenant-{i}"),
        ["https://vault.azure.net/.default"],
    )
}

fn fill(cache: &MemoryCache, others: usize) {
    let now = SystemTime::now();
    let secret = Secret::new("x".repeat(1800));
    for i in 0..=others {
        let p = parts(i);
        let token = AccessToken::new(
            secret.clone(),
            TokenType::Bearer,
            now + Duration::from_secs(86_400),
        );
        cache.put_entry(
            p.build(),
            Arc::new(CacheEntry::AccessToken(CachedAccessToken::from_token(
                p, &token, now,
            ))),
        );
    }
}

fn unreachable_fetch() -> FetchFuture {
    Box::pin(async {
        Err(fic_oauth_core::Error::new(
            fic_oauth_core::ErrorCode::INTERNAL,
            "miss in a hit benchmark",
        ))
    })
}

fn engine_hits(engine: &Arc<AcquisitionEngine>, lookup: &Lookup, n: u32) -> Duration {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let start = Instant::now();
        for _ in 0..n {
            let token = engine
                .acquire(lookup, unreachable_fetch)
                .await
                .expect("hit");
            black_box(token);
        }
        start.elapsed()
    })
}

struct Row {
    name: String,
    ns_per_op: f64,
}

fn main() {
    let mut rows = Vec::new();
    for others in [1usize, 10_000, 1_000_000] {
        let cache = Arc::new(MemoryCache::new());
        fill(&cache, others);
        let engine = AcquisitionEngine::builder(cache.clone()).build();
        let lookup = Lookup::new(parts(others / 2));
        engine_hits(&engine, &lookup, HITS / 10); // warm up
        let took = engine_hits(&engine, &lookup, HITS);
        rows.push(Row {
            name: format!("engine hit, {others} other tokens"),
            ns_per_op: took.as_nanos() as f64 / f64::from(HITS),
        });

        let key = lookup.key().clone();
        let start = Instant::now();
        for _ in 0..HITS {
            black_box(cache.get_entry(black_box(&key)));
        }
        rows.push(Row {
            name: format!("memory probe, {others} other tokens"),
            ns_per_op: start.elapsed().as_nanos() as f64 / f64::from(HITS),
        });

        if others == 10_000 {
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let (engine, lookup) = (engine.clone(), lookup.clone());
                    std::thread::spawn(move || engine_hits(&engine, &lookup, HITS))
                })
                .collect();
            let worst = threads
                .into_iter()
                .map(|t| t.join().expect("thread"))
                .max()
                .unwrap_or_default();
            rows.push(Row {
                name: "engine hit, 2 threads on one key".into(),
                ns_per_op: worst.as_nanos() as f64 / f64::from(HITS),
            });
        }
    }

    println!("\n{:<44} {:>12}", "token cache", "ns per hit");
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
        let path = dir.join("token_cache_hit.json");
        let _ = std::fs::write(&path, format!("[\n{}\n]\n", json.join(",\n")));
        println!("written to {}", path.display());
    }
}
