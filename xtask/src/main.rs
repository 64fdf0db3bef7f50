//! Developer tasks of fic-rs.
//!
//! - `cargo xtask test`: formatting, clippy with warnings denied, every test (unit, integration,
//!   doctests), every example (against the emulator, with no `AZURE_*` / `FIC_*` variable), the
//!   feature sets that matter (no crypto provider, aws-lc-rs) with `cargo tree` checks that
//!   they are what they claim, then a one-screen summary; exits non-zero when anything fails.
//!   When `redis-server` is on `PATH` it is started on a free loopback port for the Redis
//!   suites (`FIC_TEST_REDIS_URL`) and stopped afterwards; otherwise the summary says loudly
//!   that they were skipped.
//! - `cargo xtask bench`: every benchmark (the Redis ones against the same private server);
//!   results as tables and JSON under `target/bench/`.
//! - `cargo xtask demo`: `cargo run --release -p fic-cli -- demo`.
#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// The variable fic-assertion's tests read the crypto library they must be signing with from.
const EXPECTED_BACKEND_VARIABLE: &str = "FIC_EXPECT_CRYPTO_BACKEND";

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
    // The workspace build unifies fic-assertion's features: ring (its default) signs.
    tests.env(EXPECTED_BACKEND_VARIABLE, "ring");
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

/// Whether an environment variable can switch an example away from the emulator, or change what
/// it does there: every `AZURE_*` variable (`AZURE_TENANT_ID` selects real-tenant mode; the
/// client, certificate, secret, authority host and region variables feed it) and every `FIC_*`
/// one (`FIC_MANAGED_IDENTITY` sends `managed_identity_mtls_pop` to the real IMDS; `FIC_SCOPE`,
/// `FIC_RESOURCE_URL`, `FIC_LEG2_*`, `FIC_AGENT_ID`, `FIC_USER_*`). The examples must run against
/// the emulator here, whatever the developer's shell exports.
fn is_example_setting(name: &str) -> bool {
    name.starts_with("AZURE_") || name.starts_with("FIC_")
}

/// Runs every example of the `examples` package (each starts the emulator in-process and exits
/// non-zero when its flow fails), with none of the variables that select real-tenant mode.
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
            command.args(["run", "--quiet", "-p", "fic-examples", "--example", name]);
            for (variable, _) in std::env::vars_os() {
                if variable.to_str().is_some_and(is_example_setting) {
                    command.env_remove(&variable);
                }
            }
            run(&format!("example {name}"), command)
        })
        .collect()
}

/// The feature combinations that matter, plus dependency-tree and feature checks proving that
/// those builds really are what their names say.
///
/// - Wire-only and memory-only: `fic-oauth-core` and `fic-token-cache` without default features
///   (every test).
/// - No crypto provider (every crate must build, and pass its tests, without `ring` or
///   `aws-lc-rs`): `fic-assertion`'s unit tests (its integration tests sign, so need a key
///   backend); `fic-mtls-transport` linted with its tests (they need a process-default rustls
///   provider to run); every test of `fic-managed-identity`; `fic-flows`'s library linted
///   without its dev-dependencies (they switch `fic-assertion/ring` on, and it has no unit
///   tests; its integration tests sign and talk TLS); `fic-azure-core`'s unit tests (its
///   integration tests talk TLS to the emulator).
/// - aws-lc-rs (SDKs that forbid ring embed us that way). Each package whose dev-dependencies
///   would switch ring on elsewhere gets its own run: features unify within one cargo call, and
///   every crate picks ring when both are on. `fic-assertion` first, alone; then
///   `fic-mtls-transport` with `fic-managed-identity`; then `fic-flows` (its tests sign with ring
///   through a dev-dependency, and run TLS on aws-lc-rs); then `fic-azure-core` (aws-lc-rs by
///   default).
fn feature_sets() -> Vec<Step> {
    let mut steps = Vec::new();
    let cargo_steps: [(&str, &[&str], Option<&str>); 11] = [
        (
            "test fic-oauth-core --no-default-features",
            &["test", "-p", "fic-oauth-core", "--no-default-features"],
            None,
        ),
        (
            "test fic-token-cache --no-default-features",
            &["test", "-p", "fic-token-cache", "--no-default-features"],
            None,
        ),
        (
            "test fic-assertion, no crypto provider (lib)",
            &[
                "test",
                "-p",
                "fic-assertion",
                "--no-default-features",
                "--lib",
            ],
            None,
        ),
        (
            "clippy fic-mtls-transport, no crypto provider",
            &[
                "clippy",
                "-p",
                "fic-mtls-transport",
                "--no-default-features",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
            None,
        ),
        (
            "test fic-managed-identity, no crypto provider",
            &[
                "test",
                "-p",
                "fic-managed-identity",
                "--no-default-features",
                "--no-fail-fast",
            ],
            None,
        ),
        (
            "clippy fic-flows, no crypto provider (lib)",
            &[
                "clippy",
                "-p",
                "fic-flows",
                "--no-default-features",
                "--",
                "-D",
                "warnings",
            ],
            None,
        ),
        (
            "test fic-azure-core, no crypto provider (lib)",
            &[
                "test",
                "-p",
                "fic-azure-core",
                "--no-default-features",
                "--lib",
            ],
            None,
        ),
        (
            "test fic-assertion on aws-lc-rs",
            &[
                "test",
                "-p",
                "fic-assertion",
                "--no-default-features",
                "--features",
                "aws-lc-rs",
                "--no-fail-fast",
            ],
            Some("aws-lc-rs"),
        ),
        (
            "test mtls-transport, managed-identity on aws-lc-rs",
            &[
                "test",
                "-p",
                "fic-mtls-transport",
                "-p",
                "fic-managed-identity",
                "--no-default-features",
                "--features",
                "aws-lc-rs",
                "--no-fail-fast",
            ],
            None,
        ),
        (
            "test fic-flows on aws-lc-rs (TLS)",
            &[
                "test",
                "-p",
                "fic-flows",
                "--no-default-features",
                "--features",
                "aws-lc-rs",
                "--no-fail-fast",
            ],
            None,
        ),
        (
            "test fic-azure-core (aws-lc-rs only)",
            &["test", "-p", "fic-azure-core", "--no-fail-fast"],
            None,
        ),
    ];
    for (name, args, signs_with) in cargo_steps {
        let mut command = cargo();
        command.args(args);
        if let Some(backend) = signs_with {
            // fic-assertion's tests check that this is the library that signs.
            command.env(EXPECTED_BACKEND_VARIABLE, backend);
        }
        steps.push(run(name, command));
    }
    steps.push(feature_check(
        "fic-assertion's aws-lc-rs test build signs with aws-lc-rs",
        &[
            "-p",
            "fic-assertion",
            "--no-default-features",
            "--features",
            "aws-lc-rs",
        ],
        &[
            ("fic-assertion", "aws-lc-rs", true),
            ("fic-assertion", "ring", false),
        ],
    ));
    steps.push(feature_check(
        "mtls-transport, managed-identity aws-lc-rs build has no ring",
        &[
            "-p",
            "fic-mtls-transport",
            "-p",
            "fic-managed-identity",
            "--no-default-features",
            "--features",
            "aws-lc-rs",
        ],
        &[
            ("fic-assertion", "ring", false),
            ("fic-mtls-transport", "ring", false),
            ("fic-managed-identity", "ring", false),
        ],
    ));
    steps.push(feature_check(
        "the no-provider test builds have no provider",
        &[
            "-p",
            "fic-assertion",
            "-p",
            "fic-mtls-transport",
            "-p",
            "fic-managed-identity",
            "-p",
            "fic-azure-core",
            "--no-default-features",
        ],
        &[
            ("fic-assertion", "ring", false),
            ("fic-assertion", "aws-lc-rs", false),
            ("fic-mtls-transport", "ring", false),
            ("fic-mtls-transport", "aws-lc-rs", false),
            ("fic-managed-identity", "ring", false),
            ("fic-managed-identity", "aws-lc-rs", false),
            ("fic-flows", "ring", false),
            ("fic-flows", "aws-lc-rs", false),
            ("fic-azure-core", "ring", false),
            ("fic-azure-core", "aws-lc-rs", false),
        ],
    ));
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
        "the crates without a provider have no crypto library",
        &[
            "-p",
            "fic-assertion",
            "-p",
            "fic-mtls-transport",
            "-p",
            "fic-managed-identity",
            "-p",
            "fic-flows",
            "-p",
            "fic-azure-core",
            "--no-default-features",
        ],
        &["ring", "aws-lc-rs", "aws-lc-sys"],
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
    steps.push(tree_check(
        "fic-azure-core has no ring, no reqwest",
        &["-p", "fic-azure-core"],
        &["ring", "reqwest"],
    ));
    steps
}

/// Checks the features cargo resolves for a test build of `args` (dev-dependencies included,
/// as `cargo test` unifies them): each `(package, feature, wanted)` must be on when `wanted`
/// and off otherwise. A feature another package's dev-dependency switches on shows up here,
/// where a test run would silently exercise the other code path.
fn feature_check(name: &str, args: &[&str], expected: &[(&str, &str, bool)]) -> Step {
    println!("\n==> features: {name}");
    let started = Instant::now();
    let output = cargo()
        .args([
            "tree",
            "-e",
            "normal,build,dev",
            "--prefix",
            "none",
            "--format",
            "{p}|{f}",
        ])
        .args(args)
        .output();
    let (ok, detail) = match output {
        Ok(output) if output.status.success() => {
            let wrong = wrong_features(&String::from_utf8_lossy(&output.stdout), expected);
            if wrong.is_empty() {
                let summary: Vec<String> = expected
                    .iter()
                    .map(|(package, feature, wanted)| {
                        format!("{package}/{feature} {}", if *wanted { "on" } else { "off" })
                    })
                    .collect();
                (true, summary.join(", "))
            } else {
                (false, wrong.join(", "))
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
        name: format!("features: {name}"),
        ok,
        took: started.elapsed(),
        detail,
        stderr_tail: Vec::new(),
    }
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

/// What in `tree` (`cargo tree --prefix none --format "{p}|{f}"` output) differs from
/// `expected`: a package missing from the build, or a feature on that must be off (or off that
/// must be on).
fn wrong_features(tree: &str, expected: &[(&str, &str, bool)]) -> Vec<String> {
    let mut wrong = Vec::new();
    for &(package, feature, wanted) in expected {
        let mut seen = false;
        let mut on = false;
        for line in tree.lines() {
            let Some((id, features)) = line.split_once('|') else {
                continue;
            };
            if id.split_whitespace().next() != Some(package) {
                continue;
            }
            seen = true;
            on |= features
                .trim_end_matches("(*)")
                .trim()
                .split(',')
                .any(|f| f == feature);
        }
        if !seen {
            wrong.push(format!("{package} is not in the build"));
        } else if on != wanted {
            let state = if on { "on" } else { "off" };
            wrong.push(format!("{package}/{feature} is {state}"));
        }
    }
    wrong
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

#[cfg(test)]
mod tests {
    use super::*;

    const TREE: &str = "\
fic-assertion v0.1.0 (/w/crates/assertion)|aws-lc-rs,ring
fic-oauth-core v0.1.0 (/w/crates/oauth-core)|tokio
fic-assertion v0.1.0 (/w/crates/assertion)|aws-lc-rs,ring (*)
ring v0.17.14|alloc,default,dev_urandom_fallback
fic-mtls-transport v0.1.0 (/w/crates/mtls-transport)|
";

    #[test]
    fn a_feature_switched_on_by_a_dev_dependency_is_reported() {
        assert_eq!(
            wrong_features(
                TREE,
                &[
                    ("fic-assertion", "aws-lc-rs", true),
                    ("fic-assertion", "ring", false)
                ]
            ),
            vec!["fic-assertion/ring is on".to_string()]
        );
    }

    #[test]
    fn features_match_whole_names_and_missing_packages_fail() {
        assert!(wrong_features(TREE, &[("fic-mtls-transport", "ring", false)]).is_empty());
        assert!(wrong_features(TREE, &[("fic-oauth-core", "tokio", true)]).is_empty());
        // Whole feature names only: "tok" is not "tokio".
        assert_eq!(
            wrong_features(TREE, &[("fic-oauth-core", "tok", true)]),
            vec!["fic-oauth-core/tok is off".to_string()]
        );
        assert_eq!(
            wrong_features(TREE, &[("fic-flows", "ring", false)]),
            vec!["fic-flows is not in the build".to_string()]
        );
    }

    #[test]
    fn example_settings_are_the_azure_and_fic_variables() {
        for name in [
            "AZURE_TENANT_ID",
            "AZURE_REGIONAL_AUTHORITY_NAME",
            "AZURE_CLIENT_SECRET",
            "FIC_MANAGED_IDENTITY",
            "FIC_LEG2_CLIENT_ID",
        ] {
            assert!(is_example_setting(name), "{name}");
        }
        for name in ["PATH", "CARGO_TARGET_DIR", "RUSTFLAGS", "MY_AZURE_THING"] {
            assert!(!is_example_setting(name), "{name}");
        }
    }
}
