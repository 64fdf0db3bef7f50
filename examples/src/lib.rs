//! # fic-examples
//!
//! The setup every example shares: where tokens come from (an emulator started in-process, or a
//! real tenant named by environment variables), the transport that reaches it, certificates,
//! and small printing and checking helpers. The examples themselves are in `examples/`; see
//! `README.md` for the list and the commands.
//!
//! **Emulator mode** (the default): [`Env::emulator`] starts [`fic_emulator`] on 127.0.0.1 and
//! builds an [`MtlsTransport`] that sends the production host names
//! (`login.microsoftonline.com`, `*.mtlsauth.microsoft.com`, `graph.microsoft.com`, …) to it and
//! trusts only its CA. The clients call the real production URLs; nothing takes a test branch.
//!
//! **Real-tenant mode**: when `AZURE_TENANT_ID` is set, [`RealTenant::from_env`] reads the
//! application and its certificate from the environment and [`Env::real`] uses the production
//! defaults (`MtlsTransport::new()`, the public cloud, no emulator).
//!
//! | variable | meaning |
//! |---|---|
//! | `AZURE_TENANT_ID` | the tenant; setting it switches every example to real-tenant mode |
//! | `AZURE_CLIENT_ID` | the application (client) id (the blueprint in the agent examples) |
//! | `AZURE_CLIENT_CERTIFICATE_PATH` | its certificate and private key: PEM, or PKCS#12 (`.pfx`/`.p12`) |
//! | `AZURE_CLIENT_CERTIFICATE_PASSWORD` | the PKCS#12 password, if any |
//! | `AZURE_REGION` | the region for the regional calls (default `westus3`, as in the seeds) |
//! | `FIC_SCOPE` | the resource scope (default `https://vault.azure.net/.default`) |
//! | `FIC_RESOURCE_URL` | a URL of that resource to `GET` with the token (skipped when unset) |
//!
//! Some examples read more (`FIC_LEG2_*`, `FIC_AGENT_ID`, `FIC_USER_*`); their headers say which.
#![deny(missing_docs)]

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt::{self, Write as _};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use base64::Engine as _;
use fic_emulator::{EmulatorBuilder, EmulatorHandle, LoggedRequest};
use fic_flows::{ConfidentialClient, ConfidentialClientBuilder, RegionDetector, ResourceClient};
use fic_mtls_transport::MtlsTransport;
use fic_oauth_core::{AccessToken, ClientIdentity, Error, ErrorCode, HttpTransport};

/// The tenant the examples register their apps in, in emulator mode.
pub const TENANT: &str = "72f988bf-0000-4000-8000-00000000e0a1";
/// Key Vault's scope (the seeds' usual target).
pub const VAULT_SCOPE: &str = "https://vault.azure.net/.default";
/// A Key Vault secret URL (any path of a `*.vault.azure.net` host is the emulator's resource).
pub const VAULT_URL: &str = "https://fic-examples.vault.azure.net/secrets/db-password";
/// Microsoft Graph's scope.
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
/// A Graph URL for app-only tokens.
pub const GRAPH_URL: &str = "https://graph.microsoft.com/v1.0/applications";
/// A delegated Graph scope (user tokens).
pub const USER_SCOPE: &str = "https://graph.microsoft.com/User.Read";
/// Graph's `/me` (user tokens).
pub const ME_URL: &str = "https://graph.microsoft.com/v1.0/me";
/// The token-exchange scope Leg 1 asks for (public cloud).
pub const EXCHANGE_SCOPE: &str = "api://AzureADTokenExchange/.default";
/// The token-exchange audience (the `aud` of Leg-1 tokens, the audience of federated
/// credentials).
pub const EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
/// The region of the regional calls in emulator mode (the seeds use `westus3`).
pub const DEFAULT_REGION: &str = "westus3";

/// What an example's `run` returns.
pub type ExampleResult = Result<(), Box<dyn StdError + Send + Sync>>;

/// A check of an example that did not hold.
#[derive(Debug)]
pub struct CheckFailed(String);

impl fmt::Display for CheckFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "check failed: {}", self.0)
    }
}

impl StdError for CheckFailed {}

/// Fails with `what` unless `condition` holds.
pub fn ensure(condition: bool, what: impl Into<String>) -> Result<(), CheckFailed> {
    if condition {
        Ok(())
    } else {
        Err(CheckFailed(what.into()))
    }
}

/// Turns an example's outcome into the process exit code, printing the failure (our errors
/// show their stable code, and the AADSTS code when the identity provider sent one).
pub fn exit(result: ExampleResult) -> ExitCode {
    match result {
        Ok(()) => {
            println_out("\nall steps succeeded");
            ExitCode::SUCCESS
        }
        Err(error) => {
            let mut message = format!("\nFAILED: {error}");
            if let Some(aadsts) = error.downcast_ref::<Error>().and_then(Error::aadsts) {
                let _ = write!(message, " (AADSTS{aadsts})");
            }
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stdout)]
fn println_out(line: &str) {
    println!("{line}");
}

/// Prints a step title.
pub fn step(title: &str) {
    println_out(&format!("\n== {title}"));
}

/// Prints one line of what happened.
pub fn say(line: impl AsRef<str>) {
    println_out(&format!("   {}", line.as_ref()));
}

/// The first 16 characters of a thumbprint, for printing.
pub fn short(thumbprint: Option<&str>) -> String {
    thumbprint.map_or_else(|| "-".into(), |t| format!("{}…", &t[..t.len().min(16)]))
}

/// Prints what is known about a token (never the token itself).
pub fn describe_token(label: &str, token: &AccessToken) {
    say(format!(
        "{label}: type={} source={:?} scopes={:?} binding={} expires in {}s",
        token.token_type,
        token.source,
        token.scopes,
        short(token.binding_thumbprint()),
        token
            .expires_on
            .duration_since(std::time::SystemTime::now())
            .map_or(0, |d| d.as_secs()),
    ));
}

/// The payload of a JWT, not verified (to show `aud`, `cnf`, `fmi_path`...).
pub fn jwt_claims(jwt: &str) -> Result<serde_json::Value, Error> {
    let invalid = |what: &str| Error::new(ErrorCode::INVALID_RESPONSE, what.to_string());
    let payload = jwt.split('.').nth(1).ok_or_else(|| invalid("not a JWT"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| invalid("the JWT payload is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|_| invalid("the JWT payload is not JSON"))
}

/// A transport that sends production host names to `emulator` and trusts only its CA.
pub fn transport_for(emulator: &EmulatorHandle) -> Result<MtlsTransport, Error> {
    MtlsTransport::builder()
        .built_in_roots(false)
        .add_root_certificate_pem(emulator.ca_certificate_pem().as_bytes())?
        .resolve_all(emulator.resolver_map())
        .build()
}

/// A fresh self-signed EC P-256 certificate with its key (emulator mode).
pub fn new_identity(name: &str) -> Result<ClientIdentity, Error> {
    fic_assertion::generate::self_signed(name)
}

/// A certificate issued by a fresh CA (subject `CN=<subject>`), for subject name + issuer
/// registrations (FMI blueprints): the chain is `[leaf, CA]`; the CA's DER is returned too.
pub fn new_issued_identity(subject: &str) -> Result<(ClientIdentity, Vec<u8>), Error> {
    fic_assertion::generate::issued(subject)
}

/// A certificate with its key from a file: PKCS#12 when the name ends in `.pfx` / `.p12`
/// (with `password`), PEM otherwise.
pub fn load_certificate(path: &Path, password: Option<&str>) -> Result<ClientIdentity, Error> {
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

/// An environment variable, `None` when unset or blank.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// An environment variable real-tenant mode needs.
pub fn required_var(name: &str) -> Result<String, Error> {
    var(name).ok_or_else(|| {
        Error::new(
            ErrorCode::INVALID_ARGUMENT,
            format!("AZURE_TENANT_ID is set (real-tenant mode), so {name} is needed too"),
        )
    })
}

/// The certificate named by `<prefix>_PATH` (and `<prefix>_PASSWORD`), when set.
pub fn certificate_from_env(prefix: &str) -> Result<Option<ClientIdentity>, Error> {
    let Some(path) = var(&format!("{prefix}_PATH")) else {
        return Ok(None);
    };
    let password = var(&format!("{prefix}_PASSWORD"));
    load_certificate(Path::new(&path), password.as_deref()).map(Some)
}

/// The application of real-tenant mode, read from the environment.
#[derive(Clone, Debug)]
pub struct RealTenant {
    /// `AZURE_TENANT_ID`.
    pub tenant_id: String,
    /// `AZURE_CLIENT_ID`.
    pub client_id: String,
    /// The certificate of `AZURE_CLIENT_CERTIFICATE_PATH` (+ `_PASSWORD`).
    pub certificate: ClientIdentity,
    /// `AZURE_REGION`, or `westus3`.
    pub region: String,
    /// `FIC_SCOPE`, or Key Vault's.
    pub scope: String,
    /// `FIC_RESOURCE_URL`, if set.
    pub resource_url: Option<String>,
}

impl RealTenant {
    /// `None` unless `AZURE_TENANT_ID` is set; then the other variables are required.
    pub fn from_env() -> Result<Option<Self>, Error> {
        let Some(tenant_id) = var("AZURE_TENANT_ID") else {
            return Ok(None);
        };
        let client_id = required_var("AZURE_CLIENT_ID")?;
        let certificate = certificate_from_env("AZURE_CLIENT_CERTIFICATE")?.ok_or_else(|| {
            Error::new(
                ErrorCode::INVALID_ARGUMENT,
                "AZURE_TENANT_ID is set (real-tenant mode), so AZURE_CLIENT_CERTIFICATE_PATH is needed too",
            )
        })?;
        Ok(Some(Self {
            tenant_id,
            client_id,
            certificate,
            region: var("AZURE_REGION").unwrap_or_else(|| DEFAULT_REGION.to_string()),
            scope: var("FIC_SCOPE").unwrap_or_else(|| VAULT_SCOPE.to_string()),
            resource_url: var("FIC_RESOURCE_URL"),
        }))
    }
}

/// Where an example runs: against an in-process emulator, or a real tenant.
#[derive(Debug)]
pub struct Env {
    tenant: String,
    transport: Arc<MtlsTransport>,
    emulator: Option<EmulatorHandle>,
}

impl Env {
    /// Starts the emulator `builder` describes, with a transport wired to it. The apps should be
    /// registered in [`TENANT`].
    pub async fn emulator(
        builder: EmulatorBuilder,
    ) -> Result<Self, Box<dyn StdError + Send + Sync>> {
        let emulator = builder.start().await?;
        let transport = Arc::new(transport_for(&emulator)?);
        say(format!(
            "emulator on {} (CA trusted, production host names resolved to it)",
            emulator.https_addr()
        ));
        Ok(Self {
            tenant: TENANT.to_string(),
            transport,
            emulator: Some(emulator),
        })
    }

    /// The production defaults for `tenant`: `MtlsTransport::new()`, the public cloud.
    pub fn real(tenant: &str) -> Result<Self, Error> {
        say(format!(
            "real tenant {tenant}: production endpoints, MtlsTransport::new()"
        ));
        Ok(Self {
            tenant: tenant.to_string(),
            transport: Arc::new(MtlsTransport::new()?),
            emulator: None,
        })
    }

    /// Whether this is emulator mode.
    pub fn is_emulated(&self) -> bool {
        self.emulator.is_some()
    }

    /// The emulator, in emulator mode.
    pub fn emulator_handle(&self) -> Option<&EmulatorHandle> {
        self.emulator.as_ref()
    }

    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// `https://login.microsoftonline.com/{tenant}`.
    pub fn authority(&self) -> String {
        format!("https://login.microsoftonline.com/{}", self.tenant)
    }

    /// The transport (the same one acquires tokens and calls resources).
    pub fn transport(&self) -> Arc<dyn HttpTransport> {
        self.transport.clone()
    }

    /// A confidential-client builder for `client_id` on this environment's authority and
    /// transport. In emulator mode the region variables of the process environment are ignored
    /// and the region detector is the client's own.
    pub fn client(&self, client_id: &str) -> ConfidentialClientBuilder {
        let builder = ConfidentialClient::builder(client_id)
            .authority(&self.authority())
            .transport(self.transport());
        if self.is_emulated() {
            builder
                .environment(HashMap::new())
                .region_detector(Arc::new(RegionDetector::new()))
        } else {
            builder
        }
    }

    /// A resource client on this environment's transport.
    pub fn resource(&self) -> ResourceClient {
        ResourceClient::new(self.transport())
    }

    /// How many token requests the emulator has seen (`None` against a real tenant).
    pub fn token_requests(&self) -> Option<usize> {
        self.emulator
            .as_ref()
            .map(|e| e.log().token_requests().len())
    }

    /// The last token request the emulator saw.
    pub fn last_token_request(&self) -> Option<LoggedRequest> {
        self.emulator.as_ref()?.log().last_token_request()
    }

    /// Prints the last token request as the emulator saw it (host, path, form parameter names,
    /// TLS client certificate); nothing against a real tenant.
    pub fn show_last_token_request(&self) {
        if let Some(request) = self.last_token_request() {
            let names: Vec<&str> = request.form.iter().map(|(n, _)| n.as_str()).collect();
            say(format!(
                "emulator saw: POST https://{}{} {names:?} TLS client cert={}",
                request.host,
                request.path,
                short(request.client_cert_thumbprint.as_deref())
            ));
        }
    }
}
