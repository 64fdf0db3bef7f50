//! File cache cost: loading a file of 10,000 access tokens (cold: read, parse, index), a lookup
//! after it, and one write into that file (lock, re-read, merge, atomic replace), plain and
//! encrypted.
//!
//! Prints a table and writes `target/bench/token_cache_file.json`. Run with `cargo xtask bench`.
#![allow(
    clippy::print_stdout,
    clippy::cast_precision_loss,
    clippy::expect_used,
    clippy::unwrap_used,
    missing_docs
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fic_oauth_core::{AccessToken, Secret, TokenType};
use fic_token_cache::format::entry_to_json;
use fic_token_cache::{AccessTokenKey, CacheEntry, CachedAccessToken, FileCache, TokenCache};

const ENTRIES: usize = 10_000;
const LOADS: u32 = 10;
const WRITES: u32 = 20;

fn parts(i: usize) -> AccessTokenKey {
    AccessTokenKey::app(
        "login.microsoftonline.com",
        "6f1a2b3c-0000-4000-8000-00000000c11e",
        &format!("tenant-{i}"),
        ["https://vault.azure.net/.default"],
    )
}

fn entry(i: usize, now: SystemTime) -> CacheEntry {
    let token = AccessToken::new(
        Secret::new("x".repeat(1800)),
        TokenType::Bearer,
        now + Duration::from_secs(86_400),
    );
    CacheEntry::AccessToken(CachedAccessToken::from_token(parts(i), &token, now))
}

/// An MSAL file with `ENTRIES` access tokens, written directly (not through `put`).
fn write_file(path: &Path) -> usize {
    let now = SystemTime::now();
    let mut text = String::from("{\n  \"AccessToken\": {");
    for i in 0..ENTRIES {
        if i > 0 {
            text.push(',');
        }
        let e = entry(i, now);
        text.push_str("\n    \"");
        text.push_str(e.cache_key().as_str());
        text.push_str("\": ");
        text.push_str(entry_to_json(&e).expose());
    }
    text.push_str(
        "\n  },\n  \"RefreshToken\": {},\n  \"IdToken\": {},\n  \"Account\": {},\n  \"AppMetadata\": {}\n}\n",
    );
    std::fs::write(path, &text).unwrap();
    text.len()
}

struct Row {
    name: String,
    value: f64,
    unit: &'static str,
}

fn measure(
    rows: &mut Vec<Row>,
    runtime: &tokio::runtime::Runtime,
    label: &str,
    make: &dyn Fn() -> FileCache,
) {
    // Cold loads: a new cache each time, as a new process would.
    let mut loads = Vec::new();
    for _ in 0..LOADS {
        let cache = make();
        let start = Instant::now();
        let n = runtime.block_on(cache.reload()).unwrap();
        loads.push(start.elapsed());
        assert_eq!(n, ENTRIES);
    }
    loads.sort();
    rows.push(Row {
        name: format!("{label}: load 10,000 entries (median)"),
        value: loads[loads.len() / 2].as_secs_f64() * 1e3,
        unit: "ms",
    });

    let cache = make();
    runtime.block_on(cache.reload()).unwrap();
    let key = parts(ENTRIES / 2).build();
    let start = Instant::now();
    let lookups = 100_000u32;
    for _ in 0..lookups {
        std::hint::black_box(runtime.block_on(cache.get(&key)).unwrap());
    }
    rows.push(Row {
        name: format!("{label}: lookup after load"),
        value: start.elapsed().as_nanos() as f64 / f64::from(lookups),
        unit: "ns",
    });

    let now = SystemTime::now();
    let start = Instant::now();
    for i in 0..WRITES {
        let e = entry(ENTRIES + i as usize, now);
        runtime
            .block_on(cache.put(e.cache_key(), Arc::new(e)))
            .unwrap();
    }
    rows.push(Row {
        name: format!("{label}: one write into the file (durable)"),
        value: start.elapsed().as_secs_f64() * 1e3 / f64::from(WRITES),
        unit: "ms",
    });
}

fn main() {
    let dir =
        std::env::temp_dir().join(format!("fic-bench-file-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cache.json");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();

    let size = write_file(&path);
    println!("file of {ENTRIES} entries: {:.1} MB", size as f64 / 1e6);
    {
        let path = path.clone();
        measure(&mut rows, &runtime, "plain", &move || FileCache::new(&path));
    }

    #[cfg(feature = "encryption")]
    {
        use fic_token_cache::EncryptionKey;
        let key = [9u8; 32];
        let encrypted = dir.join("encrypted.json");
        let writer = FileCache::builder(&encrypted)
            .encryption_key(EncryptionKey::from_bytes(key))
            .build();
        let now = SystemTime::now();
        let entries: Vec<_> = (0..ENTRIES)
            .map(|i| {
                let e = entry(i, now);
                (e.cache_key(), Arc::new(e))
            })
            .collect();
        runtime.block_on(writer.put_many(entries)).unwrap();
        measure(&mut rows, &runtime, "encrypted", &move || {
            FileCache::builder(&encrypted)
                .encryption_key(EncryptionKey::from_bytes(key))
                .build()
        });
    }

    println!("\n{:<52} {:>12}", "file cache", "value");
    for row in &rows {
        println!("{:<52} {:>9.2} {}", row.name, row.value, row.unit);
    }
    write_json("token_cache_file.json", &rows);
    let _ = std::fs::remove_dir_all(&dir);
}

fn write_json(name: &str, rows: &[Row]) {
    let json: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "  {{\"name\": \"{}\", \"value\": {:.3}, \"unit\": \"{}\"}}",
                r.name, r.value, r.unit
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
        let path = dir.join(name);
        let _ = std::fs::write(&path, format!("[\n{}\n]\n", json.join(",\n")));
        println!("written to {}", path.display());
    }
}
