//! Token acquisition over a warm connection against the in-process emulator: the client-side
//! cost of a miss (build, sign, send over a pooled TLS connection, parse, cache) plus the
//! emulator's own work, per token; and the cache hit through the whole client.
//!
//! Prints a table and writes `target/bench/acquisition.json`.
#![allow(
    clippy::print_stdout,
    clippy::cast_precision_loss,
    clippy::expect_used,
    missing_docs
)]

use std::path::PathBuf;
use std::time::Instant;

use fic_emulator::{App, Emulator};
use fic_tests::{new_identity, World, TENANT};

const APP: &str = "9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a";
const SCOPE: &str = "https://vault.azure.net/.default";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let rows = runtime.block_on(async {
        let cert = new_identity("bench-app");
        let world = World::start(
            Emulator::builder().app(
                App::new(APP, TENANT)
                    .secret("bench-secret")
                    .certificate(cert.leaf_der().to_vec()),
            ),
        )
        .await;
        let mut rows = Vec::new();

        let cases: [(&str, bool, bool); 3] = [
            ("miss: client secret, Bearer", false, false),
            ("miss: certificate, mTLS PoP", true, true),
            ("miss: certificate, jwt-bearer", true, false),
        ];
        for (name, use_cert, pop) in cases {
            let builder = world.client(APP);
            let client = if use_cert {
                builder.certificate(cert.clone()).build()
            } else {
                builder.client_secret("bench-secret").build()
            }
            .expect("client");
            let acquire = || {
                let request = client
                    .acquire_token_for_client([SCOPE])
                    .with_force_refresh(true);
                if pop {
                    request.with_mtls_pop()
                } else {
                    request
                }
            };
            acquire().await.expect("warm-up");
            let n = 200u32;
            let started = Instant::now();
            for _ in 0..n {
                acquire().await.expect("token");
            }
            rows.push((
                name.to_string(),
                started.elapsed().as_micros() as f64 / f64::from(n),
                "µs",
            ));
        }

        let client = world
            .client(APP)
            .certificate(cert.clone())
            .build()
            .expect("client");
        client
            .acquire_token_for_client([SCOPE])
            .with_mtls_pop()
            .await
            .expect("warm-up");
        let n = 200_000u32;
        let started = Instant::now();
        for _ in 0..n {
            client
                .acquire_token_for_client([SCOPE])
                .with_mtls_pop()
                .await
                .expect("hit");
        }
        rows.push((
            "hit: ConfidentialClient, mTLS PoP".to_string(),
            started.elapsed().as_nanos() as f64 / f64::from(n),
            "ns",
        ));
        rows
    });

    println!(
        "\n{:<40} {:>14}",
        "acquisition (in-process emulator)", "per token"
    );
    for (name, value, unit) in &rows {
        println!("{name:<40} {value:>11.1} {unit}");
    }
    let json: Vec<String> = rows
        .iter()
        .map(|(name, value, unit)| {
            format!("  {{\"name\": \"{name}\", \"value\": {value:.1}, \"unit\": \"{unit}\"}}")
        })
        .collect();
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
            PathBuf::from,
        )
        .join("bench");
    if std::fs::create_dir_all(&dir).is_ok() {
        let path = dir.join("acquisition.json");
        let _ = std::fs::write(&path, format!("[\n{}\n]\n", json.join(",\n")));
        println!("written to {}", path.display());
    }
}
