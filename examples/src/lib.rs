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
//! application and its certificate from the environment, with the names (and parsing) of
//! [`fic_flows::EnvironmentConfig`], and [`Env::real`] uses the production defaults
//! (`MtlsTransport::new()`, the cloud of `AZURE_AUTHORITY_HOST`, no emulator).
//!
//! | variable | meaning |
//! |---|---|
//! | `AZURE_TENANT_ID` | the tenant; setting it switches every example to real-tenant mode |
//! | `AZURE_CLIENT_ID` | the application (client) id (the blueprint in the agent examples) |
//! | `AZURE_CLIENT_CERTIFICATE_PATH` | its certificate and private key: PEM, or PKCS#12 (`.pfx`/`.p12`) |
//! | `AZURE_CLIENT_CERTIFICATE_PASSWORD` | the PKCS#12 password, if any |
//! | `AZURE_CLIENT_SECRET` | not used: the examples show certificate and mTLS PoP flows, which a secret cannot do; set a certificate |
//! | `AZURE_AUTHORITY_HOST` | the cloud's login host (default `https://login.microsoftonline.com`) |
//! | `AZURE_REGIONAL_AUTHORITY_NAME` | the region of the regional calls (default `westus3`, as in the seeds); they check the host they reach, so it must name a region, not `TryAutoDetect` |
//! | `FIC_SCOPE` | the resource scope (default `https://vault.azure.net/.default`) |
//! | `FIC_RESOURCE_URL` | a URL of that resource to `GET` with the token (skipped when unset) |
//!
//! Some examples read more (`FIC_LEG2_*`, `FIC_MANAGED_IDENTITY`, `FIC_AGENT_ID`, `FIC_USER_*`);
//! their headers say which.
#![deny(missing_docs)]

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt::{self, Write as _};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use base64::Engine as _;
use fic_emulator::{EmulatorBuilder, EmulatorHandle, LoggedRequest};
use fic_flows::environment::vars;
use fic_flows::{
    ConfidentialClient, ConfidentialClientBuilder, EnvironmentConfig, RegionDetector,
    ResourceClient,
};
use fic_mtls_transport::MtlsTransport;
use fic_oauth_core::authority::RegionConfig;
use fic_oauth_core::{AccessToken, ClientIdentity, Error, ErrorCode, HttpTransport, Secret};

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
    var(name).ok_or_else(|| missing(name))
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
    /// `AZURE_AUTHORITY_HOST` (default the public cloud) and the tenant, as
    /// [`EnvironmentConfig::authority`] builds it.
    pub authority: String,
    /// The certificate of `AZURE_CLIENT_CERTIFICATE_PATH` (+ `_PASSWORD`).
    pub certificate: ClientIdentity,
    /// `AZURE_REGIONAL_AUTHORITY_NAME`, or `westus3`.
    pub region: String,
    /// `FIC_SCOPE`, or Key Vault's.
    pub scope: String,
    /// `FIC_RESOURCE_URL`, if set.
    pub resource_url: Option<String>,
}

impl RealTenant {
    /// `None` unless `AZURE_TENANT_ID` is set; then the other variables are required.
    pub fn from_env() -> Result<Option<Self>, Error> {
        Self::from_config(
            &EnvironmentConfig::from_map(&EnvironmentConfig::process_environment()),
            var("AZURE_REGION").is_some(),
        )
        .map(|real| {
            real.map(|mut real| {
                real.scope = var("FIC_SCOPE").unwrap_or(real.scope);
                real.resource_url = var("FIC_RESOURCE_URL");
                real
            })
        })
    }

    /// Real-tenant mode from the Azure variables of `config` (`legacy_region_set`: whether the
    /// old `AZURE_REGION` is set, which is refused rather than silently ignored).
    fn from_config(
        config: &EnvironmentConfig,
        legacy_region_set: bool,
    ) -> Result<Option<Self>, Error> {
        let Some(tenant_id) = config.tenant_id.clone() else {
            return Ok(None);
        };
        let client_id = config
            .client_id
            .clone()
            .ok_or_else(|| missing(vars::AZURE_CLIENT_ID))?;
        let certificate =
            match &config.certificate_path {
                Some(path) => load_certificate(
                    path,
                    config.certificate_password.as_ref().map(Secret::expose),
                )?,
                None if config.client_secret.is_some() => return Err(Error::new(
                    ErrorCode::INVALID_ARGUMENT,
                    "AZURE_CLIENT_SECRET is set, but these examples show certificate and mTLS PoP \
                     flows, which a secret cannot do: set AZURE_CLIENT_CERTIFICATE_PATH (for \
                     Bearer tokens with a secret, use fic_flows::DefaultCredential or \
                     `fic token --secret`)",
                )),
                None => return Err(missing(vars::AZURE_CLIENT_CERTIFICATE_PATH)),
            };
        let region =
            match config.region() {
                RegionConfig::Explicit(region) => region,
                RegionConfig::None if legacy_region_set => return Err(Error::new(
                    ErrorCode::INVALID_ARGUMENT,
                    "AZURE_REGION is not read: name the region with AZURE_REGIONAL_AUTHORITY_NAME",
                )),
                RegionConfig::None => DEFAULT_REGION.to_string(),
                RegionConfig::AutoDetect => {
                    return Err(Error::new(
                        ErrorCode::INVALID_ARGUMENT,
                        "the examples check the regional host they reach, so \
                     AZURE_REGIONAL_AUTHORITY_NAME must name a region (e.g. westus3), not ask \
                     for detection",
                    ))
                }
            };
        Ok(Some(Self {
            authority: config.authority(),
            tenant_id,
            client_id,
            certificate,
            region,
            scope: VAULT_SCOPE.to_string(),
            resource_url: None,
        }))
    }
}

/// The authority of `tenant` in the cloud of `AZURE_AUTHORITY_HOST` (default the public cloud),
/// as [`EnvironmentConfig::authority`] builds it.
pub fn authority_for(tenant: &str) -> String {
    let mut config = EnvironmentConfig::from_map(&EnvironmentConfig::process_environment());
    config.tenant_id = Some(tenant.to_string());
    config.authority()
}

/// The error of a variable real-tenant mode needs but does not have.
fn missing(name: &str) -> Error {
    Error::new(
        ErrorCode::INVALID_ARGUMENT,
        format!("AZURE_TENANT_ID is set (real-tenant mode), so {name} is needed too"),
    )
}

/// Where an example runs: against an in-process emulator, or a real tenant.
#[derive(Debug)]
pub struct Env {
    tenant: String,
    authority: String,
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
            authority: format!("https://login.microsoftonline.com/{TENANT}"),
            transport,
            emulator: Some(emulator),
        })
    }

    /// The production defaults for `tenant`: `MtlsTransport::new()`, the cloud of
    /// `AZURE_AUTHORITY_HOST` (default the public cloud).
    pub fn real(tenant: &str) -> Result<Self, Error> {
        let authority = authority_for(tenant);
        say(format!(
            "real tenant {tenant}: {authority}, production endpoints, MtlsTransport::new()"
        ));
        Ok(Self {
            tenant: tenant.to_string(),
            authority,
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

    /// The authority: `https://login.microsoftonline.com/{tenant}`, or the host of
    /// `AZURE_AUTHORITY_HOST` against a real tenant.
    pub fn authority(&self) -> String {
        self.authority.clone()
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

/// The code blocks of `README.md`, compiled (and `no_run` ones not run) by `cargo test`'s
/// doctests, so the README's first example cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// The code blocks of `docs/GUIDE.md`, compiled by `cargo test`'s doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/GUIDE.md")]
pub struct GuideDoctests;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> EnvironmentConfig {
        EnvironmentConfig::from_map(
            &pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
        )
    }

    /// A PEM file (certificate + key) in the temporary directory, removed when dropped.
    struct PemFile(std::path::PathBuf);

    impl Drop for PemFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn pem_file() -> (PemFile, String) {
        let generated = rcgen::generate_simple_self_signed(vec!["real".to_string()]).unwrap();
        let pem = format!(
            "{}{}",
            generated.cert.pem(),
            generated.signing_key.serialize_pem()
        );
        let path = std::env::temp_dir().join(format!("fic-examples-{}.pem", uuid::Uuid::new_v4()));
        std::fs::write(&path, pem).unwrap();
        let thumbprint = load_certificate(&path, None)
            .unwrap()
            .thumbprint_s256()
            .to_string();
        (PemFile(path), thumbprint)
    }

    #[test]
    fn no_tenant_is_emulator_mode() {
        let config = env(&[("AZURE_CLIENT_ID", "app"), ("AZURE_CLIENT_SECRET", "s")]);
        assert!(RealTenant::from_config(&config, false).unwrap().is_none());
    }

    #[test]
    fn the_standard_variables_set_the_cloud_region_and_certificate() {
        let (file, thumbprint) = pem_file();
        let path = file.0.to_string_lossy().into_owned();
        let config = env(&[
            ("AZURE_TENANT_ID", "contoso.onmicrosoft.us"),
            ("AZURE_CLIENT_ID", "11111111-1111-1111-1111-111111111111"),
            ("AZURE_CLIENT_CERTIFICATE_PATH", &path),
            ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us/"),
            ("AZURE_REGIONAL_AUTHORITY_NAME", "usgovvirginia"),
        ]);
        let real = RealTenant::from_config(&config, false).unwrap().unwrap();
        assert_eq!(
            real.authority,
            "https://login.microsoftonline.us/contoso.onmicrosoft.us"
        );
        assert_eq!(real.tenant_id, "contoso.onmicrosoft.us");
        assert_eq!(real.client_id, "11111111-1111-1111-1111-111111111111");
        assert_eq!(real.region, "usgovvirginia");
        assert_eq!(real.certificate.thumbprint_s256(), thumbprint);
        assert_eq!(real.scope, VAULT_SCOPE);

        // Without a region variable, the seeds' region.
        let config = env(&[
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "app"),
            ("AZURE_CLIENT_CERTIFICATE_PATH", &path),
        ]);
        let real = RealTenant::from_config(&config, false).unwrap().unwrap();
        assert_eq!(real.region, DEFAULT_REGION);
        assert_eq!(real.authority, "https://login.microsoftonline.com/t");
    }

    #[test]
    fn a_secret_without_a_certificate_is_refused_with_the_reason() {
        let config = env(&[
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "app"),
            ("AZURE_CLIENT_SECRET", "s3cret-value"),
        ]);
        let error = RealTenant::from_config(&config, false).unwrap_err();
        assert_eq!(error.code(), &ErrorCode::INVALID_ARGUMENT);
        let text = error.to_string();
        assert!(text.contains("AZURE_CLIENT_SECRET is set"), "{text}");
        assert!(text.contains("AZURE_CLIENT_CERTIFICATE_PATH"), "{text}");
        assert!(!text.contains("s3cret-value"), "{text}");

        let config = env(&[("AZURE_TENANT_ID", "t"), ("AZURE_CLIENT_ID", "app")]);
        let text = RealTenant::from_config(&config, false)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("so AZURE_CLIENT_CERTIFICATE_PATH is needed"),
            "{text}"
        );
        let config = env(&[("AZURE_TENANT_ID", "t")]);
        let text = RealTenant::from_config(&config, false)
            .unwrap_err()
            .to_string();
        assert!(text.contains("so AZURE_CLIENT_ID is needed"), "{text}");
    }

    #[test]
    fn region_detection_and_the_old_region_variable_are_refused() {
        let (file, _) = pem_file();
        let path = file.0.to_string_lossy().into_owned();
        let base = [
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "app"),
            ("AZURE_CLIENT_CERTIFICATE_PATH", path.as_str()),
        ];
        let mut detect = base.to_vec();
        detect.push(("AZURE_REGIONAL_AUTHORITY_NAME", "TryAutoDetect"));
        let text = RealTenant::from_config(&env(&detect), false)
            .unwrap_err()
            .to_string();
        assert!(text.contains("must name a region"), "{text}");

        let text = RealTenant::from_config(&env(&base), true)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("AZURE_REGION is not read")
                && text.contains("AZURE_REGIONAL_AUTHORITY_NAME"),
            "{text}"
        );
        // The standard name wins over the old one.
        let mut both = base.to_vec();
        both.push(("AZURE_REGIONAL_AUTHORITY_NAME", "eastus2"));
        let real = RealTenant::from_config(&env(&both), true).unwrap().unwrap();
        assert_eq!(real.region, "eastus2");
    }
}
