//! `fic token`: acquire a token against any authority and print it as JSON.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use fic_flows::ConfidentialClient;
use fic_mtls_transport::MtlsTransport;
use fic_oauth_core::authority::RegionConfig;
use fic_oauth_core::time::unix_seconds;
use fic_oauth_core::{Error, ErrorCode, TokenSource};

/// Options of `fic token`.
#[derive(Args)]
pub(crate) struct TokenArgs {
    /// The application (client) id.
    #[arg(long, env = "AZURE_CLIENT_ID")]
    client_id: String,
    /// The tenant (id or domain); used with the public cloud when no --authority is given.
    #[arg(long, env = "AZURE_TENANT_ID")]
    tenant: Option<String>,
    /// The authority URL, e.g. https://login.microsoftonline.us/<tenant>.
    #[arg(long)]
    authority: Option<String>,
    /// A certificate with its private key: PEM, or PKCS#12 (.pfx/.p12) with --password.
    #[arg(long, env = "AZURE_CLIENT_CERTIFICATE_PATH")]
    certificate: Option<PathBuf>,
    /// The PKCS#12 password.
    #[arg(
        long,
        env = "AZURE_CLIENT_CERTIFICATE_PASSWORD",
        hide_env_values = true
    )]
    password: Option<String>,
    /// A client secret (prefer the environment variable to the command line).
    #[arg(long, env = "AZURE_CLIENT_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Ask for an mTLS PoP token bound to the certificate.
    #[arg(long)]
    mtls_pop: bool,
    /// The region (e.g. westus3), or `auto` to detect it.
    #[arg(long)]
    region: Option<String>,
    /// The scope, e.g. https://vault.azure.net/.default.
    #[arg(long)]
    scope: String,
    /// Print the token itself too.
    #[arg(long)]
    show_token: bool,
    /// An extra CA certificate (PEM) to trust, e.g. the one `fic emulator` wrote.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Send a host to another address: HOST[:PORT]=IP:PORT (wildcards `*.suffix` allowed).
    #[arg(long = "resolve", value_name = "HOST=ADDR")]
    resolve: Vec<String>,
}

impl std::fmt::Debug for TokenArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenArgs")
            .field("client_id", &self.client_id)
            .field("tenant", &self.tenant)
            .field("authority", &self.authority)
            .field("certificate", &self.certificate)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("mtls_pop", &self.mtls_pop)
            .field("region", &self.region)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::INVALID_ARGUMENT, message)
}

fn load_certificate(
    path: &PathBuf,
    password: Option<&str>,
) -> Result<fic_oauth_core::ClientIdentity, Error> {
    let is_pkcs12 = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("pfx") || e.eq_ignore_ascii_case("p12"));
    if is_pkcs12 {
        fic_assertion::load::from_pkcs12_file(path, password.unwrap_or_default())
    } else {
        fic_assertion::load::from_pem_file(path)
    }
}

pub(crate) async fn run(args: TokenArgs) -> Result<ExitCode, Error> {
    let authority = match (&args.authority, &args.tenant) {
        (Some(authority), _) => authority.clone(),
        (None, Some(tenant)) => format!("https://login.microsoftonline.com/{tenant}"),
        (None, None) => return Err(invalid("give --tenant or --authority")),
    };
    let mut transport = MtlsTransport::builder();
    if let Some(ca) = &args.ca {
        let pem =
            std::fs::read(ca).map_err(|e| invalid(format!("cannot read {}: {e}", ca.display())))?;
        transport = transport.add_root_certificate_pem(&pem)?;
    }
    for entry in &args.resolve {
        let (host, addr) = entry
            .split_once('=')
            .ok_or_else(|| invalid(format!("--resolve {entry:?}: expected HOST=IP:PORT")))?;
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| invalid(format!("--resolve {entry:?}: {addr:?} is not IP:PORT")))?;
        transport = transport.resolve(host, addr);
    }
    let mut builder = ConfidentialClient::builder(args.client_id.clone())
        .authority(&authority)
        .transport(Arc::new(transport.build()?));
    builder = match (&args.certificate, &args.secret) {
        (Some(path), _) => builder.certificate(load_certificate(path, args.password.as_deref())?),
        (None, Some(secret)) => builder.client_secret(secret.clone()),
        (None, None) => {
            return Err(invalid(
                "give --certificate or --secret (or AZURE_CLIENT_SECRET)",
            ))
        }
    };
    builder = match args.region.as_deref() {
        None => builder,
        Some("auto") => builder.region_config(RegionConfig::AutoDetect),
        Some(region) => builder.region(region),
    };
    let client = builder.build()?;
    let mut request = client.acquire_token_for_client([args.scope.clone()]);
    if args.mtls_pop {
        request = request.with_mtls_pop();
    }
    let token = request.await?;
    let mut json = serde_json::json!({
        "tokenType": token.token_type.as_str(),
        "expires_on": unix_seconds(token.expires_on),
        "refresh_on": token.refresh_on.map(unix_seconds),
        "tenant": token.tenant_id.as_deref().unwrap_or(client.authority().tenant()),
        "scopes": &*token.scopes,
        "bindingThumbprint": token.binding_thumbprint(),
        "source": if token.source == TokenSource::Cache { "cache" } else { "identity_provider" },
    });
    if args.show_token {
        json["accessToken"] = serde_json::Value::String(token.token.expose().to_string());
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&json).unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}
