//! `fic emulator`: run the Entra ID emulator as a local server.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use fic_emulator::{App, Emulator};
use fic_oauth_core::{Error, ErrorCode};

/// Options of `fic emulator`.
#[derive(Debug, Args)]
pub(crate) struct EmulatorArgs {
    /// The tenant id apps are registered in.
    #[arg(long, default_value = crate::demo::TENANT)]
    tenant: String,
    /// Register an app: CLIENT_ID or CLIENT_ID:SECRET (repeatable).
    #[arg(long = "app", value_name = "CLIENT_ID[:SECRET]")]
    apps: Vec<String>,
    /// Register a certificate (PEM) for an app: CLIENT_ID=PATH (repeatable).
    #[arg(long = "app-certificate", value_name = "CLIENT_ID=PATH")]
    certificates: Vec<String>,
    /// What the IMDS region endpoint answers.
    #[arg(long, default_value = "westus3")]
    imds_location: String,
    /// Where to write the emulator's CA certificate (PEM).
    #[arg(long, default_value = "fic-emulator-ca.pem")]
    ca_out: PathBuf,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::INVALID_ARGUMENT, message)
}

pub(crate) async fn run(args: EmulatorArgs) -> Result<ExitCode, Error> {
    let mut builder = Emulator::builder().imds_location(args.imds_location.clone());
    let mut apps: Vec<App> = Vec::new();
    for spec in &args.apps {
        let (id, secret) = spec
            .split_once(':')
            .map_or((spec.as_str(), None), |(i, s)| (i, Some(s)));
        let mut app = App::new(id, args.tenant.clone());
        if let Some(secret) = secret {
            app = app.secret(secret);
        }
        apps.push(app);
    }
    for spec in &args.certificates {
        let (id, path) = spec.split_once('=').ok_or_else(|| {
            invalid(format!(
                "--app-certificate {spec:?}: expected CLIENT_ID=PATH"
            ))
        })?;
        let pem = std::fs::read_to_string(path)
            .map_err(|e| invalid(format!("cannot read {path}: {e}")))?;
        let der = fic_emulator::certificates_from_pem(&pem)
            .into_iter()
            .next()
            .ok_or_else(|| invalid(format!("{path} holds no certificate")))?;
        match apps.iter_mut().find(|a| a.client_id == id) {
            Some(app) => *app = app.clone().certificate(der),
            None => apps.push(App::new(id, args.tenant.clone()).certificate(der)),
        }
    }
    for app in apps {
        builder = builder.app(app);
    }
    let emulator = builder.start().await.map_err(|e| {
        Error::new(
            ErrorCode::INTERNAL,
            format!("the emulator did not start: {e}"),
        )
    })?;
    std::fs::write(&args.ca_out, emulator.ca_certificate_pem())
        .map_err(|e| invalid(format!("cannot write {}: {e}", args.ca_out.display())))?;
    println!("fic emulator running");
    println!("  https  {}", emulator.https_addr());
    println!("  imds   http://{}", emulator.imds_addr());
    println!("  CA     {}", args.ca_out.display());
    println!("  tenant {}", args.tenant);
    println!("\nPoint a client at it, e.g.:");
    let mut resolve = String::new();
    for (pattern, addr) in emulator.resolver_map() {
        let _ = write!(resolve, " --resolve '{pattern}={addr}'");
    }
    println!(
        "  fic token --tenant {} --client-id <id> --secret <secret> --scope https://graph.microsoft.com/.default --ca {}{resolve}",
        args.tenant,
        args.ca_out.display()
    );
    println!("\nCtrl-C stops it.");
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| Error::new(ErrorCode::INTERNAL, e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}
