//! `fic`: acquire Entra ID tokens (Bearer or mTLS PoP), run the emulator, run the demo.
//!
//! - `fic token` acquires one token for a confidential client (a certificate, PEM or PKCS#12,
//!   or a secret; Bearer, or mTLS PoP with `--mtls-pop`; a region or `auto`) and prints it as
//!   JSON, like `az account get-access-token` (the token itself only with `--show-token`).
//!   `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `AZURE_CLIENT_CERTIFICATE_PATH` / `_PASSWORD` and
//!   `AZURE_CLIENT_SECRET` stand in for their options; `--ca` and `--resolve` point it at a
//!   local emulator.
//! - `fic emulator` runs `fic-emulator` (Entra ID, IMDS and a protected resource) as a local
//!   server with the apps and certificates given on the command line, and writes its CA
//!   certificate for clients to trust.
//! - `fic demo` runs every flow end to end against an embedded emulator, checks each, and
//!   prints a table (`cargo xtask demo`).
//!
//! The binary is the top of the layering: it sits on `fic-flows` (and through it
//! `fic-managed-identity`, `fic-assertion`, `fic-mtls-transport`, `fic-token-cache` and
//! `fic-oauth-core`) and on `fic-emulator`, all on ring, with the file and Redis caches; no
//! library crate depends on it. `FIC_LOG` sets the `tracing` filter (default `warn`).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod demo;
mod emulator_cmd;
mod token_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Token acquisition for Microsoft Entra ID, with mTLS Proof-of-Possession.
#[derive(Debug, Parser)]
#[command(name = "fic", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every flow end to end against an embedded emulator and print what happened.
    Demo(demo::DemoArgs),
    /// Acquire a token and print it as JSON (like `az account get-access-token`).
    Token(token_cmd::TokenArgs),
    /// Run the Entra ID emulator as a local server.
    Emulator(emulator_cmd::EmulatorArgs),
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FIC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing("warn");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fic: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Token(args) => token_cmd::run(args).await,
            Command::Emulator(args) => emulator_cmd::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("fic: {error}");
            if let Some(server) = error.server_error() {
                if let Some(trace) = &server.trace_id {
                    eprintln!("     trace id {trace}");
                }
            }
            ExitCode::FAILURE
        }
    }
}
