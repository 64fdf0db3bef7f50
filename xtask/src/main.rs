//! Developer tasks of fic-rs.
//!
//! - `cargo xtask test`: formatting, clippy with warnings denied, every test (unit, integration,
//!   doctests), then a one-screen summary; exits non-zero when anything fails. When
//!   `redis-server` is on `PATH` it is started on a free loopback port for the Redis suites
//!   (`FIC_TEST_REDIS_URL`) and stopped afterwards; otherwise the summary says loudly that they
//!   were skipped.
//! - `cargo xtask bench`: every benchmark (the Redis ones against the same private server);
//!   results as tables and JSON under `target/bench/`.
//! - `cargo xtask demo`: `cargo run --release -p fic-cli -- demo`.
#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// The variable the Redis suites and benchmarks read the server's URL from.
const REDIS_URL_VARIABLE: &str = "FIC_TEST_REDIS_URL";

struct Step {
    name: String,
    ok: bool,
    took: Duration,
    detail: String,
    /// The last lines the step wrote to stderr, shown again in the summary when it failed (a CI
    /// log is often cut to its end, and the reason must survive the cut).
    stderr_tail: Vec<String>,
}

/// How many stderr lines of a failed step the summary repeats.
const STDERR_TAIL_LINES: usize = 25;

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
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut stderr_tail = Vec::new();
    let mut passed = 0u64;
    let mut failed = 0u64;
    let mut ignored = 0u64;
    let mut suites = 0u64;
    let ok = match command.spawn() {
        Ok(mut child) => {
            // stderr is passed through as it comes and its tail kept, on its own thread so
            // neither pipe can fill up and stall the child.
            let stderr_reader = child.stderr.take().map(|stderr| {
                std::thread::spawn(move || {
                    let mut tail = std::collections::VecDeque::with_capacity(STDERR_TAIL_LINES);
                    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                        eprintln!("{line}");
                        if tail.len() == STDERR_TAIL_LINES {
                            tail.pop_front();
                        }
                        tail.push_back(line);
                    }
                    Vec::from(tail)
                })
            });
            if let Some(stdout) = child.stdout.take() {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    println!("{line}");
                    if let Some(rest) = line.trim().strip_prefix("test result: ") {
                        suites += 1;
                        // "ok. 8 passed; 0 failed; ..." / "FAILED. 7 passed; 1 failed; ..."
                        let rest = rest.split_once(". ").map_or(rest, |(_, counts)| counts);
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
            if let Some(reader) = stderr_reader {
                stderr_tail = reader.join().unwrap_or_default();
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
        stderr_tail,
    }
}

/// A `redis-server` started for the Redis suites, stopped when dropped.
struct RedisServer {
    child: Child,
    url: String,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Only the process this task started.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn redis_answers(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// Starts `redis-server` on a free loopback port, or says why not.
fn start_redis() -> Result<RedisServer, String> {
    let Some(binary) = find_on_path("redis-server") else {
        return Err("redis-server not installed".into());
    };
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map_err(|e| format!("no free loopback port: {e}"))?
        .port();
    let target = workspace_root().join("target");
    let _ = std::fs::create_dir_all(&target);
    let log_path = target.join(format!("redis-server-{port}.log"));
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let err_log = log
        .try_clone()
        .map_err(|e| format!("cannot use {}: {e}", log_path.display()))?;
    let child = Command::new(&binary)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&target)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log)
        .spawn()
        .map_err(|e| format!("{} did not start: {e}", binary.display()))?;
    let server = RedisServer {
        child,
        url: format!("redis://127.0.0.1:{port}/"),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !redis_answers(port) {
        if Instant::now() >= deadline {
            return Err(format!(
                "redis-server did not answer PING on port {port} within 5 s (log: {})",
                log_path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(server)
}

/// Starts the Redis server for a task and says so (or, loudly, why not).
fn redis_for(task: &str) -> Result<RedisServer, String> {
    let redis = start_redis();
    match &redis {
        Ok(server) => println!("\n==> redis-server for the Redis {task}: {}", server.url),
        Err(reason) => println!("\n!!! SKIPPING REDIS {}: {reason}", task.to_uppercase()),
    }
    redis
}

fn redis_note(task: &str, redis: &Result<RedisServer, String>) -> String {
    match redis {
        Ok(server) => format!("Redis {task}: ran against {}", server.url),
        Err(reason) => format!("!!! SKIPPING REDIS {}: {reason} !!!", task.to_uppercase()),
    }
}

fn with_redis_url(mut command: Command, redis: &Result<RedisServer, String>) -> Command {
    match redis {
        Ok(server) => command.env(REDIS_URL_VARIABLE, &server.url),
        Err(_) => command.env_remove(REDIS_URL_VARIABLE),
    };
    command
}

fn summary(title: &str, steps: &[Step], notes: &[String]) -> ExitCode {
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
    for step in steps.iter().filter(|s| !s.ok && !s.stderr_tail.is_empty()) {
        println!("why {} failed (its stderr, in short):", step.name);
        for line in failure_lines(&step.stderr_tail) {
            println!("  | {line}");
        }
    }
    for note in notes {
        println!("{note}");
    }
    if let Some(free) = disk_free_note() {
        println!("{free}");
    }
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

/// The lines of a failed step's stderr tail that say why: compiler errors, panics, signals and
/// a full disk; the last few lines when none of those is there.
fn failure_lines(tail: &[String]) -> Vec<&str> {
    const MARKERS: [&str; 7] = [
        "error",
        "panicked",
        "No space left",
        "signal",
        "Killed",
        "FAILED",
        "failed",
    ];
    let telling: Vec<&str> = tail
        .iter()
        .map(String::as_str)
        .filter(|line| MARKERS.iter().any(|marker| line.contains(marker)))
        .take(12)
        .collect();
    if telling.is_empty() {
        tail.iter()
            .rev()
            .take(8)
            .rev()
            .map(String::as_str)
            .collect()
    } else {
        telling
    }
}

/// Free space on the disk that holds `target/`, as `df` reports it (a build that runs out of
/// disk fails with errors that do not always say so).
fn disk_free_note() -> Option<String> {
    let target = workspace_root().join("target");
    let output = Command::new("df").arg("-Pk").arg(&target).output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let available_kib: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    #[allow(clippy::cast_precision_loss)]
    let gib = available_kib as f64 / (1024.0 * 1024.0);
    Some(format!("disk: {gib:.1} GiB free where target/ is"))
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

    // The cache backends behind features (file is on by default; Redis and encryption are not).
    let mut clippy_cache = cargo();
    clippy_cache.args([
        "clippy",
        "-p",
        "fic-token-cache",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]);
    steps.push(run("clippy fic-token-cache --all-features", clippy_cache));

    let redis = redis_for("suites");

    let mut tests = cargo();
    tests.args(["test", "--workspace", "--no-fail-fast"]);
    steps.push(run(
        "cargo test --workspace (with doctests)",
        with_redis_url(tests, &redis),
    ));

    let mut cache_tests = cargo();
    cache_tests.args([
        "test",
        "-p",
        "fic-token-cache",
        "--all-features",
        "--no-fail-fast",
    ]);
    let name = if redis.is_ok() {
        "test fic-token-cache --all-features (Redis)"
    } else {
        "test fic-token-cache --all-features (NO REDIS)"
    };
    steps.push(run(name, with_redis_url(cache_tests, &redis)));

    steps.extend(run_examples());
    steps.extend(feature_sets());

    let notes = [redis_note("suites", &redis)];
    drop(redis);
    summary("cargo xtask test", &steps, &notes)
}

/// Runs every example of the `examples` package (each starts the emulator in-process and exits
/// non-zero when its flow fails).
fn run_examples() -> Vec<Step> {
    let dir = workspace_root().join("examples").join("examples");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| {
                    let path = entry.path();
                    if path.is_dir() && path.join("main.rs").exists() {
                        path.file_name().map(|n| n.to_string_lossy().into_owned())
                    } else if path.extension().is_some_and(|e| e == "rs") {
                        path.file_stem().map(|n| n.to_string_lossy().into_owned())
                    } else {
                        None
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .iter()
        .map(|name| {
            let mut command = cargo();
            command
                .args(["run", "--quiet", "-p", "fic-examples", "--example", name])
                .env_remove("AZURE_TENANT_ID");
            run(&format!("example {name}"), command)
        })
        .collect()
}

/// The feature combinations that matter: the wire-only core, the memory-only cache, and the
/// aws-lc-rs builds (SDKs that forbid ring embed us that way); plus dependency-tree checks that
/// those builds really leave out what they promise to.
fn feature_sets() -> Vec<Step> {
    let mut steps = Vec::new();
    for (name, args) in [
        (
            "test fic-oauth-core --no-default-features",
            &["test", "-p", "fic-oauth-core", "--no-default-features"][..],
        ),
        (
            "test fic-token-cache --no-default-features",
            &["test", "-p", "fic-token-cache", "--no-default-features"][..],
        ),
        (
            "test crypto crates on aws-lc-rs",
            &[
                "test",
                "--no-default-features",
                "--features",
                "aws-lc-rs",
                "-p",
                "fic-assertion",
                "-p",
                "fic-mtls-transport",
                "-p",
                "fic-managed-identity",
                "-p",
                "fic-flows",
                "--no-fail-fast",
            ][..],
        ),
    ] {
        let mut command = cargo();
        command.args(args);
        steps.push(run(name, command));
    }
    steps.push(tree_check(
        "fic-oauth-core (wire only) has no runtime, TLS or crypto library",
        &["-p", "fic-oauth-core", "--no-default-features"],
        &["tokio", "hyper", "rustls", "ring", "aws-lc-rs"],
    ));
    steps.push(tree_check(
        "fic-token-cache (memory only) has no TLS or crypto library",
        &["-p", "fic-token-cache", "--no-default-features"],
        &["hyper", "rustls", "ring", "aws-lc-rs", "redis"],
    ));
    steps.push(tree_check(
        "fic-flows on aws-lc-rs has no ring",
        &[
            "-p",
            "fic-flows",
            "--no-default-features",
            "--features",
            "aws-lc-rs",
        ],
        &["ring"],
    ));
    if workspace_root().join("crates/azure-core-adapter").exists() {
        // Its own run: in the workspace run other members switch ring on, and ring wins.
        let mut azure = cargo();
        azure.args(["test", "-p", "fic-azure-core", "--no-fail-fast"]);
        steps.push(run("test fic-azure-core (aws-lc-rs only)", azure));
        steps.push(tree_check(
            "fic-azure-core has no ring",
            &["-p", "fic-azure-core"],
            &["ring"],
        ));
    }
    steps
}

/// Checks that the normal dependency tree of `args` has none of `forbidden`.
fn tree_check(name: &str, args: &[&str], forbidden: &[&str]) -> Step {
    println!("\n==> tree: {name}");
    let started = Instant::now();
    let output = cargo()
        .args([
            "tree", "-e", "normal", "--prefix", "none", "--format", "{p}",
        ])
        .args(args)
        .output();
    let (ok, detail) = match output {
        Ok(output) if output.status.success() => {
            let text = String::from_utf8_lossy(&output.stdout);
            let found: Vec<&str> = forbidden
                .iter()
                .copied()
                .filter(|crate_name| {
                    text.lines()
                        .any(|line| line.split_whitespace().next() == Some(*crate_name))
                })
                .collect();
            if found.is_empty() {
                (true, format!("none of {}", forbidden.join(", ")))
            } else {
                (false, format!("pulls {}", found.join(", ")))
            }
        }
        Ok(output) => (
            false,
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ),
        Err(error) => (false, error.to_string()),
    };
    println!("{detail}");
    Step {
        name: format!("tree: {name}"),
        ok,
        took: started.elapsed(),
        detail,
        stderr_tail: Vec::new(),
    }
}

fn bench() -> ExitCode {
    let mut steps = Vec::new();
    let redis = redis_for("benchmarks");
    let mut bench = cargo();
    bench.args(["bench", "--workspace"]);
    steps.push(run(
        "cargo bench --workspace",
        with_redis_url(bench, &redis),
    ));
    // The cache backends behind features: tiered/Redis rows and the encrypted file rows.
    let mut cache_bench = cargo();
    cache_bench.args([
        "bench",
        "-p",
        "fic-token-cache",
        "--all-features",
        "--bench",
        "tiered_hit",
        "--bench",
        "file_load",
    ]);
    steps.push(run(
        "bench fic-token-cache backends",
        with_redis_url(cache_bench, &redis),
    ));
    let notes = [redis_note("benchmarks", &redis)];
    drop(redis);
    let dir = workspace_root().join("target").join("bench");
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x.eq_ignore_ascii_case("json"))
            })
            .map(|p| p.display().to_string())
            .collect();
        names.sort();
        println!("\nresults written:");
        for name in names {
            println!("  {name}");
        }
    }
    summary("cargo xtask bench", &steps, &notes)
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
