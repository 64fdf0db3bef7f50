//! Developer tasks of fic-rs.
//!
//! - `cargo xtask test`: formatting, clippy with warnings denied, every test (unit, integration,
//!   doctests), then a one-screen summary; exits non-zero when anything fails.
//! - `cargo xtask bench`: every benchmark; results as tables and JSON under `target/bench/`.
//! - `cargo xtask demo`: `cargo run --release -p fic-cli -- demo`.
#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

struct Step {
    name: String,
    ok: bool,
    took: Duration,
    detail: String,
}

fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map_or_else(|| manifest.clone(), Path::to_path_buf)
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

/// Runs a command, streaming its output, and counts test results from `test result:` lines.
fn run(name: &str, mut command: Command) -> Step {
    println!("\n==> {name}");
    let started = Instant::now();
    command.stdout(Stdio::piped());
    let mut passed = 0u64;
    let mut failed = 0u64;
    let mut ignored = 0u64;
    let mut suites = 0u64;
    let ok = match command.spawn() {
        Ok(mut child) => {
            if let Some(stdout) = child.stdout.take() {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    println!("{line}");
                    if let Some(rest) = line.trim().strip_prefix("test result: ") {
                        suites += 1;
                        for part in rest.split(';') {
                            let mut words = part.split_whitespace();
                            let number = words.next().and_then(|n| n.parse::<u64>().ok());
                            let label = words.next().unwrap_or_default();
                            match (number, label) {
                                (Some(n), "passed") => passed += n,
                                (Some(n), "failed") => failed += n,
                                (Some(n), "ignored") => ignored += n,
                                _ => {}
                            }
                        }
                    }
                }
            }
            child.wait().is_ok_and(|s| s.success())
        }
        Err(e) => {
            println!("could not start {name}: {e}");
            false
        }
    };
    let detail = if suites > 0 {
        format!("{passed} passed, {failed} failed, {ignored} ignored in {suites} suites")
    } else {
        String::new()
    };
    Step {
        name: name.to_string(),
        ok,
        took: started.elapsed(),
        detail,
    }
}

fn summary(title: &str, steps: &[Step]) -> ExitCode {
    println!("\n{title}");
    println!("{}", "-".repeat(78));
    for step in steps {
        println!(
            "{:<6} {:<44} {:>7.1}s  {}",
            if step.ok { "ok" } else { "FAILED" },
            step.name,
            step.took.as_secs_f64(),
            step.detail
        );
    }
    println!("{}", "-".repeat(78));
    let failed = steps.iter().filter(|s| !s.ok).count();
    let (passed, failed_tests) = steps.iter().fold((0u64, 0u64), |acc, s| {
        let mut words = s.detail.split_whitespace();
        let p = words
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        words.next();
        let f = words
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        (acc.0 + p, acc.1 + f)
    });
    if passed + failed_tests > 0 {
        println!("{passed} passed, {failed_tests} failed");
    }
    if failed == 0 {
        println!("all {} steps passed", steps.len());
        ExitCode::SUCCESS
    } else {
        println!("{failed} of {} steps FAILED", steps.len());
        ExitCode::FAILURE
    }
}

fn test() -> ExitCode {
    let mut steps = Vec::new();

    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    steps.push(run("cargo fmt --check", fmt));

    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    steps.push(run("cargo clippy -D warnings", clippy));

    let mut tests = cargo();
    tests.args(["test", "--workspace", "--no-fail-fast"]);
    steps.push(run("cargo test --workspace (with doctests)", tests));

    summary("cargo xtask test", &steps)
}

fn bench() -> ExitCode {
    let mut steps = Vec::new();
    let mut bench = cargo();
    bench.args(["bench", "--workspace"]);
    steps.push(run("cargo bench --workspace", bench));
    let dir = workspace_root().join("target").join("bench");
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("json")))
            .map(|p| p.display().to_string())
            .collect();
        names.sort();
        println!("\nresults written:");
        for name in names {
            println!("  {name}");
        }
    }
    summary("cargo xtask bench", &steps)
}

fn demo() -> ExitCode {
    let mut command = cargo();
    command.args(["run", "--release", "-p", "fic-cli", "--", "demo"]);
    match command.status() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "test" => test(),
        "bench" => bench(),
        "demo" => demo(),
        _ => {
            println!("usage: cargo xtask <test|bench|demo>");
            println!("  test   fmt check, clippy -D warnings, every test; summary at the end");
            println!("  bench  every benchmark; JSON under target/bench/");
            println!("  demo   every flow against the embedded emulator");
            ExitCode::FAILURE
        }
    }
}
