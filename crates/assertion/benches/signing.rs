//! Client-assertion signing throughput: a whole jwt-bearer assertion (header, claims, signature,
//! base64url) for RSA-2048 PS256 and ECDSA P-256 ES256.
//!
//! Runs a fixed number of iterations, prints a table and writes
//! `$CARGO_TARGET_DIR/bench/assertion_signing.json` (default: the workspace's `target/`).
//! `cargo bench -p fic-assertion --bench signing`
#![allow(clippy::print_stdout)] // printing the table is the point of a benchmark

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fic_assertion::{load, AssertionRequest, CertificateAssertion, BACKEND};
use fic_oauth_core::{AuthorityKind, Error};

struct Case {
    name: &'static str,
    certificate: &'static [u8],
    key: &'static [u8],
    kind: AuthorityKind,
    iterations: u32,
}

struct Outcome {
    name: &'static str,
    iterations: u32,
    elapsed: Duration,
}

impl Outcome {
    fn ops_per_second(&self) -> f64 {
        f64::from(self.iterations) / self.elapsed.as_secs_f64()
    }

    fn micros_per_op(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1e6 / f64::from(self.iterations)
    }
}

const CASES: [Case; 2] = [
    Case {
        name: "rsa2048_ps256",
        certificate: include_bytes!("../tests/data/rsa.crt.pem"),
        key: include_bytes!("../tests/data/rsa.key.pem"),
        kind: AuthorityKind::Aad,
        iterations: 1_000,
    },
    Case {
        name: "p256_es256",
        certificate: include_bytes!("../tests/data/ec-p256.crt.pem"),
        key: include_bytes!("../tests/data/ec-p256.sec1.pem"),
        kind: AuthorityKind::Aad,
        iterations: 10_000,
    },
];

fn run(case: &Case) -> Result<Outcome, Error> {
    let identity = load::from_pem_parts(case.certificate, case.key)?;
    let provider = CertificateAssertion::new(identity)?;
    let request = AssertionRequest::new(
        "163ffef9-a313-45b4-ab2f-c7e2f5e0e23e",
        "https://westus3.mtlsauth.microsoft.com/bea21ebe-8b64-4d06-9f6d-6a889b120a7c/oauth2/v2.0/token",
    )
    .with_authority_kind(case.kind);
    // Warm up (caches, lazy CPU feature detection).
    for _ in 0..case.iterations / 20 {
        std::hint::black_box(provider.sign(&request)?);
    }
    let start = Instant::now();
    for _ in 0..case.iterations {
        std::hint::black_box(provider.sign(std::hint::black_box(&request))?);
    }
    Ok(Outcome {
        name: case.name,
        iterations: case.iterations,
        elapsed: start.elapsed(),
    })
}

/// `$CARGO_TARGET_DIR` (relative to the workspace root when relative), else `<workspace>/target`.
fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let workspace = std::fs::canonicalize(&workspace).unwrap_or(workspace);
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace.join(dir),
        _ => workspace.join("target"),
    }
}

fn json(outcomes: &[Outcome]) -> String {
    let results: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|o| {
            serde_json::json!({
                "name": o.name,
                "iterations": o.iterations,
                "total_seconds": o.elapsed.as_secs_f64(),
                "ops_per_sec": o.ops_per_second(),
                "us_per_op": o.micros_per_op(),
            })
        })
        .collect();
    let document = serde_json::json!({
        "benchmark": "assertion_signing",
        "crate": "fic-assertion",
        "backend": BACKEND,
        "results": results,
    });
    serde_json::to_string_pretty(&document).unwrap_or_default()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench` (and maybe a filter); this fixed run ignores arguments.
    let mut outcomes = Vec::new();
    for case in &CASES {
        outcomes.push(run(case)?);
    }

    println!("assertion signing ({BACKEND})");
    println!(
        "{:<16} {:>10} {:>12} {:>10}",
        "case", "iterations", "ops/s", "µs/op"
    );
    for o in &outcomes {
        println!(
            "{:<16} {:>10} {:>12.0} {:>10.1}",
            o.name,
            o.iterations,
            o.ops_per_second(),
            o.micros_per_op()
        );
    }

    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("assertion_signing.json");
    std::fs::write(&path, json(&outcomes))?;
    println!("wrote {}", path.display());
    Ok(())
}
