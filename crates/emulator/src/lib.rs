//! # fic-emulator
//!
//! A strict local stand-in for Microsoft Entra ID, IMDS and a protected resource. It runs
//! in-process on `127.0.0.1`, so token flows (client credentials with secrets, certificates and
//! mTLS Proof-of-Possession, FIC two-leg, FMI / agent identity, `user_fic`, refresh tokens) can be
//! exercised end to end with no network — by this workspace's own tests and by anyone testing a
//! service offline.
//!
//! Clients keep using the real production URLs (`https://login.microsoftonline.com/…`,
//! `https://westus3.mtlsauth.microsoft.com/…`, `http://169.254.169.254/…`): their transport maps
//! those `host:port`s to the emulator with [`EmulatorHandle::resolver_map`] and trusts the
//! emulator's CA ([`EmulatorHandle::ca_certificate_pem`]).
//!
//! ## Starting it and registering apps
//!
//! ```
//! use fic_emulator::{App, Emulator, FederatedCredential, User};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), fic_emulator::Error> {
//! let tenant = "10c419d4-4a50-45b2-aa4e-919fb84df24f";
//! let emulator = Emulator::builder()
//!     .app(App::new("11111111-1111-1111-1111-111111111111", tenant).secret("s3cret"))
//!     .user(User::new("alice@contoso.com", "00000000-0000-0000-0000-000000000abc", tenant))
//!     .start()
//!     .await?;
//!
//! // The directory can change while the emulator runs.
//! let blueprint = "aab5089d-e764-47e3-9f28-cc11c2513821";
//! emulator.directory().add_app(
//!     App::new(blueprint, tenant)
//!         .agents(["ab18ca07-d139-4840-8b3b-4be9610c6ed5"])
//!         .federated_credential(FederatedCredential::new(
//!             format!("https://login.microsoftonline.com/{tenant}/v2.0"),
//!             "some-managed-identity-object-id",
//!             "api://AzureADTokenExchange",
//!         )),
//! );
//!
//! // Where a client's transport should send production host names, and what it should trust.
//! let https = emulator.https_addr();
//! assert_eq!(emulator.resolve("login.microsoftonline.com", 443), Some(https));
//! assert_eq!(emulator.resolve("westus3.mtlsauth.microsoft.com", 443), Some(https));
//! assert_eq!(emulator.resolve("169.254.169.254", 80), Some(emulator.imds_addr()));
//! assert!(emulator.ca_certificate_pem().starts_with("-----BEGIN CERTIFICATE-----"));
//! # Ok(())
//! # }
//! ```
//!
//! ## Reading the log and injecting faults
//!
//! Every request is logged (method, host, path, query, headers, form body, client-certificate
//! thumbprint, status, listener), faulted or not. Faults apply per route and optionally per
//! host, to the next N requests or to requests a predicate picks.
//!
//! ```
//! use std::time::Duration;
//! use fic_emulator::{Emulator, Fault, FaultTarget, Listener};
//! use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let emulator = Emulator::builder().imds_location("eastus").start().await?;
//!
//! // The next token request to the regional host gets a 503 with Retry-After; two IMDS
//! // requests are slowed down; the token requests a predicate picks lose their connection.
//! emulator.faults().inject(
//!     Fault::status(503).retry_after("7").on(FaultTarget::Token)
//!         .host("*.login.microsoft.com").times(1),
//! );
//! emulator.faults().inject(Fault::delay(Duration::from_millis(5)).on(FaultTarget::Imds).times(2));
//! emulator.faults().inject(
//!     Fault::drop_connection().on(FaultTarget::Token)
//!         .when(|r| r.form_value("client_id") == Some("doomed")),
//! );
//!
//! // A plain-HTTP request to the IMDS region endpoint.
//! let mut tcp = tokio::net::TcpStream::connect(emulator.imds_addr()).await?;
//! tcp.write_all(b"GET /metadata/instance/compute?api-version=2021-02-01 HTTP/1.1\r\n\
//!     Host: 169.254.169.254\r\nMetadata: true\r\nConnection: close\r\n\r\n").await?;
//! let mut answer = String::new();
//! tcp.read_to_string(&mut answer).await?;
//! assert!(answer.starts_with("HTTP/1.1 200"));
//! assert!(answer.contains("\"location\":\"eastus\""));
//!
//! let log = emulator.log();
//! assert_eq!(log.imds_requests().len(), 1);
//! let entry = log.last().unwrap();
//! assert_eq!(entry.listener, Listener::Imds);
//! assert_eq!(entry.status, Some(200));
//! assert_eq!(entry.fault.as_deref(), Some("delay 5ms"));
//! assert_eq!(log.count(|r| r.is_token_request()), 0);
//! log.clear();
//! # Ok(())
//! # }
//! ```
//!
//! ## What the token endpoint enforces
//!
//! `POST /{tenant}/oauth2/v2.0/token` answers on every login, regional and mtlsauth host of
//! every cloud of [`Cloud`]:
//!
//! * `client_credentials` with `client_secret`; with a certificate-signed `client_assertion`
//!   (RS256, PS256, ES256; the certificate found by `x5t#S256` or `x5t`, or for SN+I apps from the
//!   `x5c` chain, which must lead to the registered issuer); with a federated `client_assertion`
//!   (a token of this emulator or of a [`TrustedIssuer`], matched against the app's
//!   [`FederatedCredential`]s by issuer, subject and audience, the audience being the cloud's
//!   token-exchange audience); with an FMI token as the credential of an agent; with
//!   `fmi_path` (blueprints only, for one of their agents); with `token_type=mtls_pop`
//!   (mtlsauth hosts only, TLS client certificate required; with no assertion the certificate
//!   itself must be registered for the app, with a jwt-pop assertion the certificate must be the
//!   assertion's `cnf` or registered).
//! * `user_fic`: the agent authenticates (normally with T1), `user_federated_identity_credential`
//!   is T2 (an app token of this emulator issued to the agent for the token-exchange audience),
//!   the user by `username` (UPN) or `user_id` (OID), scopes including `openid profile
//!   offline_access`. The answer has `id_token`, `client_info` (when `client_info=1`),
//!   `refresh_token` and `scope`.
//! * `refresh_token`, with rotation: each refresh token is accepted once.
//!
//! Certificate assertions must have `aud` equal to the endpoint called (`https://` + `Host` +
//! path), `iss` = `sub` = client id (an assertion whose `iss` is not the client id is taken for
//! a federated one), `exp` (and `nbf` when present) within 5 minutes of skew, `exp` at most
//! [`Settings::max_assertion_lifetime`] (a day) ahead, and a fresh `jti`. The mtlsauth hosts
//! serve only mutual-TLS requests and refuse secrets.
//!
//! Each cloud's token endpoint knows its own token-exchange audience only
//! (`api://AzureADTokenExchange` on the public cloud's hosts, `…USGov` on `.us`, `…China`,
//! `…France`, `…Germany`; Singapore publishes none, so none is built in there): another
//! cloud's is an unknown resource (500011). What the request asks of the directory (the
//! resource, `fmi_path`) is checked only once the client has authenticated, so a caller without
//! valid credentials learns nothing about it.
//!
//! ## Issued tokens
//!
//! Access tokens are RS256 JWTs signed by the emulator's key (published at
//! `/{tenant}/discovery/v2.0/keys`, with `kid`), with `iss` =
//! `https://{cloud login host}/{tid}/v2.0`, `aud` (the scope's resource, `/.default` stripped),
//! `sub`, `oid`, `tid`, `appid`, `azp`, `appidacr`, `idtyp` (`app`/`user`), `iat`/`nbf`/`exp`,
//! `uti`, `ver`, `scp` (user) or `roles` (app, when the app has roles), `cnf: {"x5t#S256": …}`
//! for `mtls_pop`, `xms_cc` from `claims`, and for FMI tokens `sub` =
//! `/eid1/c/{cloud}/t/{tenant}/a/{blueprint}/{fmi_path}` plus the claim `fmi_path`. Responses
//! carry `token_type` (`Bearer` or `mtls_pop`), `expires_in`, `ext_expires_in` and `refresh_in`
//! per [`Settings`].
//!
//! ## The protected resource and IMDS
//!
//! Any path on a resource host ([`Resource`]: Graph, `*.vault.azure.net`, ARM and any registered
//! one) checks the token (signature, issuer, audience, expiry) and, when it has `cnf`, that the
//! TLS client certificate matches (RFC 8705); it answers JSON describing the caller or 401 with
//! `WWW-Authenticate`. The IMDS listener answers `GET /metadata/instance/compute` (needs
//! `Metadata: true` and an `api-version`) with the configured `location`.
//!
//! ## Managed identity
//!
//! Register the host's identities with [`EmulatorBuilder::managed_identity`]: the first
//! system-assigned one is the host's own, user-assigned ones are named by client id, object id
//! or resource id. Every hosting environment's endpoint is served ([`ManagedIdentitySource`]):
//!
//! | source | endpoint | log route |
//! |---|---|---|
//! | IMDS v1 | `http://169.254.169.254/metadata/identity/oauth2/token` | [`Route::Imds`] |
//! | IMDSv2 | `…/metadata/identity/getplatformmetadata`, `…/issuecredential`, then the token endpoint over mTLS | [`Route::Imds`], [`Route::Token`] |
//! | App Service | `http://127.0.0.1:<IMDS port>/msi/token` | [`Route::AppService`] |
//! | Machine Learning | `http://127.0.0.1:<IMDS port>/machine-learning/msi/token` | [`Route::MachineLearning`] |
//! | Cloud Shell | `http://127.0.0.1:<IMDS port>/cloud-shell/oauth2/token` | [`Route::CloudShell`] |
//! | Azure Arc | `http://127.0.0.1:<IMDS port>/azure-arc/metadata/identity/oauth2/token`, or the agent's default `http://127.0.0.1:40342/…` mapped to the IMDS listener | [`Route::AzureArc`] |
//! | Service Fabric | `https://10.0.0.4:2377/metadata/identity/oauth2/token` through the resolver map (own listener, self-signed certificate) | [`Route::ServiceFabric`] |
//!
//! [`EmulatorHandle::managed_identity_environment`] gives the variables each host sets
//! (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`, `IDENTITY_SERVER_THUMBPRINT`, `MSI_ENDPOINT`,
//! `MSI_SECRET`, …). Each endpoint checks what the real one does (`Metadata: true`, the secret
//! header, the api-version, the identity parameters the source takes, the resource) and answers
//! errors in that source's shape. Azure Arc first answers 401 with
//! `WWW-Authenticate: Basic realm=<file>` after writing a fresh secret to a `.key` file in its
//! token directory ([`EmulatorBuilder::azure_arc_token_directory`]); the secret is accepted once.
//! Tokens are the emulator's JWTs for the identity (`sub` = `oid` = its object id, `appid` = its
//! client id, issuer `https://login.microsoftonline.com/{tid}/v2.0`), so they work at the
//! protected resource and as Leg 1 of FIC for an app whose federated credential names the
//! identity's object id.
//!
//! IMDSv2 verifies the CSR (PKCS#10, RSASSA-PSS/SHA-256 by the request's own key, subject
//! `CN=<clientId>, DC=<tenantId>`, the `cuId` attribute `1.3.6.1.4.1.311.90.2.10` with this VM's
//! `vmId`), issues a certificate for its key from the emulator CA (7 days) and registers it on
//! the identity ([`ManagedIdentity::certificates`]); the token endpoint on an mtlsauth host then
//! accepts the identity's client id with that TLS certificate and `token_type=mtls_pop`, and
//! nothing else (`invalid_client` for an unknown certificate). [`EmulatorBuilder::imds_v1_only`]
//! makes a host without IMDSv2. Faults: [`FaultTarget::Imds`] for IMDS, [`FaultTarget::ManagedIdentity`]
//! for the other hosts' endpoints, [`FaultTarget::Token`] for the IMDSv2 token leg.
//!
//! ## Errors
//!
//! Errors use Entra's body (`error`, `error_description` starting `AADSTS<code>:`,
//! `error_codes`, `timestamp`, `trace_id`, `correlation_id` = the request's
//! `client-request-id`, `error_uri`); the codes are listed in [`codes`].
//!
//! ## Its place in the workspace
//!
//! The emulator judges the workspace's clients, so it shares none of their code: by design it
//! depends only on `fic-oauth-core`'s plain types (the [`Clock`] it is driven by), and re-derives
//! everything else itself: certificate thumbprints (`x5t`, `x5t#S256`), JWS parsing and signature
//! verification, X.509 chain checks, CSR verification. A bug in a client's thumbprint or JWT
//! code therefore shows up as a refusal here rather than being mirrored.
//!
//! It is used by this workspace's tests (each crate's integration tests and the end-to-end
//! suite), by the demo, and by users: `fic emulator` runs one from the command line, and the
//! crate can be embedded in any service's own tests. Its tests build their requests by hand
//! (raw HTTP over `tokio-rustls`, JWTs signed with `ring`), never with a client crate.
#![deny(missing_docs)]

mod aadsts;
mod client_auth;
mod csr;
mod der;
mod directory;
mod faults;
mod hosts;
mod imds;
mod imds_v2;
mod issue;
mod jwt;
mod keys;
mod log;
mod managed_identity;
mod metadata;
mod reply;
mod resource;
mod server;
mod settings;
mod state;
mod tls;
mod token;
mod util;
mod x509;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};

use fic_oauth_core::time::{Clock, SystemClock};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;

pub use directory::{
    App, CertificateCredential, Directory, FederatedCredential, ManagedIdentity,
    ManagedIdentityKind, Resource, Tenant, TrustedIssuer, User,
};
pub use faults::{Fault, FaultAction, FaultId, FaultPredicate, FaultTarget, Faults};
pub use hosts::Cloud;
pub use log::{Listener, LoggedRequest, RequestLog, Route};
pub use managed_identity::{ManagedIdentitySource, AZURE_ARC_HOST_PORT, SERVICE_FABRIC_HOST_PORT};
pub use settings::{RefreshIn, Settings};
pub use tls::{CertificateAuthority, IssuedCertificate};
pub use x509::{thumbprint_s256, thumbprint_sha1};

use state::State;

/// The AADSTS codes the token endpoint answers with, and when.
///
/// | code | `error` | HTTP | when |
/// |---|---|---|---|
/// | 900144 | `invalid_request` | 400 | a required parameter is missing (`grant_type`, `client_id`, `scope`, `client_assertion_type`, `refresh_token`, `user_federated_identity_credential`, `username`) |
/// | 9000411 | `invalid_request` | 400 | a parameter is repeated |
/// | 900561 | `invalid_request` | 400 | the token endpoint was not called with POST |
/// | 90002 | `invalid_tenant` | 400 | unknown tenant |
/// | 50059 | `invalid_request` | 400 | `common` / `organizations` / `consumers` on the token endpoint |
/// | 70003 | `unsupported_grant_type` | 400 | a grant other than `client_credentials`, `user_fic`, `refresh_token` |
/// | 700016 | `unauthorized_client` | 400 | unknown client id in the tenant |
/// | 7000216 | `invalid_client` | 401 | `client_credentials` without any credential |
/// | 7000218 | `invalid_client` | 401 | other grants without any credential |
/// | 7000215 | `invalid_client` | 401 | wrong client secret |
/// | 50027 | `invalid_client` | 401 | malformed client assertion (not a JWS, no thumbprint header, no `exp`/`jti`, unsupported `client_assertion_type`) |
/// | 5002738 | `invalid_client` | 401 | unsupported signature algorithm |
/// | 700027 | `invalid_client` | 401 | certificate not registered, SN+I chain not trusted, signature invalid, TLS certificate not registered |
/// | 700023 | `invalid_client` | 401 | assertion `aud` is not the endpoint called |
/// | 700021 | `invalid_client` | 401 | assertion `iss`/`sub` is not the client id |
/// | 700024 | `invalid_client` | 401 | assertion outside its validity (`exp`/`nbf`, 5 min skew; `exp` more than [`Settings::max_assertion_lifetime`] ahead) |
/// | 50013 | `invalid_client` / `invalid_grant` | 401 / 400 | replayed `jti`; user FIC credential with an invalid signature |
/// | 700211 | `invalid_client` | 401 | no federated credential with the assertion's issuer |
/// | 700213 | `invalid_client` | 401 | no federated credential with the assertion's subject (also: FMI token not for this agent) |
/// | 700212 | `invalid_client` | 401 | no federated credential with the assertion's audience |
/// | 7002206 | `invalid_client` / `invalid_grant` | 401 / 400 | the matched audience is not the cloud's token-exchange audience |
/// | 70011 | `invalid_scope` | 400 | bad scope set (several for client credentials, OIDC scopes in client credentials, user_fic without `openid profile offline_access`) |
/// | 1002012 | `invalid_scope` | 400 | client-credentials scope without `/.default` |
/// | 28000 | `invalid_scope` | 400 | user scopes of more than one resource |
/// | 500011 | `invalid_resource` | 400 | unknown resource (another cloud's token-exchange audience included), told only to an authenticated client |
/// | 50034 | `invalid_grant` | 400 | unknown user |
/// | 70000 | `invalid_grant` | 400 | unknown, reused (rotation) or foreign refresh token |
/// | 700082 | `invalid_grant` | 400 | expired refresh token |
///
/// Where no public code was found, the emulator uses its own codes, 999001 to 999012 (below).
pub mod codes {
    /// A required parameter is missing.
    pub const MISSING_PARAMETER: u32 = 900_144;
    /// A parameter is repeated.
    pub const DUPLICATE_PARAMETER: u32 = 9_000_411;
    /// The token endpoint only accepts POST.
    pub const POST_REQUIRED: u32 = 900_561;
    /// Unknown tenant.
    pub const TENANT_NOT_FOUND: u32 = 90_002;
    /// A multi-tenant alias where a tenant is needed.
    pub const TENANT_REQUIRED: u32 = 50_059;
    /// Unsupported grant type.
    pub const UNSUPPORTED_GRANT_TYPE: u32 = 70_003;
    /// Unknown application.
    pub const APP_NOT_FOUND: u32 = 700_016;
    /// No credential on a client-credentials request.
    pub const CREDENTIAL_REQUIRED_CLIENT_CREDENTIALS: u32 = 7_000_216;
    /// No credential on another grant.
    pub const CREDENTIAL_REQUIRED: u32 = 7_000_218;
    /// Wrong client secret.
    pub const BAD_SECRET: u32 = 7_000_215;
    /// Malformed client assertion.
    pub const MALFORMED_ASSERTION: u32 = 50_027;
    /// Unsupported signature algorithm.
    pub const UNSUPPORTED_ALGORITHM: u32 = 5_002_738;
    /// Key not found, chain not trusted or signature invalid.
    pub const BAD_ASSERTION_SIGNATURE: u32 = 700_027;
    /// Assertion audience is not the endpoint called.
    pub const ASSERTION_AUDIENCE_MISMATCH: u32 = 700_023;
    /// Assertion issuer/subject is not the client id.
    pub const ASSERTION_CLIENT_MISMATCH: u32 = 700_021;
    /// Assertion outside its validity period.
    pub const ASSERTION_EXPIRED: u32 = 700_024;
    /// Replayed assertion (`jti` seen before) or invalid user FIC credential signature.
    pub const ASSERTION_REPLAYED: u32 = 50_013;
    /// No federated credential with that issuer.
    pub const FIC_ISSUER_NO_MATCH: u32 = 700_211;
    /// No federated credential with that audience.
    pub const FIC_AUDIENCE_NO_MATCH: u32 = 700_212;
    /// No federated credential with that subject.
    pub const FIC_SUBJECT_NO_MATCH: u32 = 700_213;
    /// Audience is not the cloud's token-exchange audience.
    pub const NOT_TOKEN_EXCHANGE_AUDIENCE: u32 = 7_002_206;
    /// Invalid scope.
    pub const INVALID_SCOPE: u32 = 70_011;
    /// Client-credentials scope without `/.default`.
    pub const SCOPE_NOT_DEFAULT: u32 = 1_002_012;
    /// Scopes of more than one resource.
    pub const MULTIPLE_RESOURCES: u32 = 28_000;
    /// Unknown resource.
    pub const RESOURCE_NOT_FOUND: u32 = 500_011;
    /// Unknown user.
    pub const USER_NOT_FOUND: u32 = 50_034;
    /// Invalid grant (refresh token unknown, reused or foreign).
    pub const INVALID_GRANT: u32 = 70_000;
    /// Expired refresh token.
    pub const REFRESH_TOKEN_EXPIRED: u32 = 700_082;
    /// Emulator: `token_type=mtls_pop` or a jwt-pop assertion sent to a non-mtlsauth host (`invalid_request`).
    pub const EMU_MTLS_HOST_REQUIRED: u32 = 999_001;
    /// Emulator: no TLS client certificate where one is needed (mtlsauth host, jwt-pop) (`invalid_client`).
    pub const EMU_CLIENT_CERTIFICATE_REQUIRED: u32 = 999_002;
    /// Emulator: the TLS certificate is not the one the assertion is bound to, or a bound assertion
    /// was sent as jwt-bearer (`invalid_client`; `invalid_grant` for the user FIC credential).
    pub const EMU_CERTIFICATE_BINDING_MISMATCH: u32 = 999_003;
    /// Emulator: a client secret over mTLS, or a jwt-bearer assertion with `token_type=mtls_pop` (`invalid_request`).
    pub const EMU_CREDENTIAL_NOT_ALLOWED_OVER_MTLS: u32 = 999_004;
    /// Emulator: a `token_type` other than `mtls_pop` (`invalid_request`).
    pub const EMU_UNSUPPORTED_TOKEN_TYPE: u32 = 999_005;
    /// Emulator: `fmi_path` not allowed (not a blueprint, not its agent, not client credentials) (`unauthorized_client`).
    pub const EMU_FMI_PATH_NOT_ALLOWED: u32 = 999_006;
    /// Emulator: both `username` and `user_id`, or a `user_id` that is not a lower-case GUID (`invalid_request`).
    pub const EMU_INVALID_USER_IDENTIFIER: u32 = 999_007;
    /// Emulator: the user FIC credential is not an app token of this cloud issued to the client (`invalid_grant`).
    pub const EMU_USER_CREDENTIAL_NOT_FOR_CLIENT: u32 = 999_008;
    /// Emulator: both `client_secret` and `client_assertion` (`invalid_request`).
    pub const EMU_MULTIPLE_CREDENTIALS: u32 = 999_009;
    /// Emulator: `claims` is not a JSON object (`invalid_request`).
    pub const EMU_INVALID_CLAIMS: u32 = 999_010;
    /// Emulator: the request body is too large (`invalid_request`).
    pub const EMU_MALFORMED_REQUEST: u32 = 999_011;
    /// Emulator: a managed identity at the token endpoint without its IMDSv2 certificate over
    /// mutual TLS (a secret, an assertion, no `token_type=mtls_pop`; `invalid_client`), or with
    /// a grant other than `client_credentials` (`unauthorized_client`).
    pub const EMU_MANAGED_IDENTITY_CREDENTIAL: u32 = 999_012;
}

/// Why the emulator could not start or a configuration was refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Binding a listener failed.
    Io(std::io::Error),
    /// Building a certificate or the TLS configuration failed.
    Certificate(String),
    /// The token-signing key could not be generated or loaded.
    Key(String),
    /// A configuration value was refused.
    Config(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "emulator I/O error: {e}"),
            Error::Certificate(e) => write!(f, "emulator certificate error: {e}"),
            Error::Key(e) => write!(f, "emulator signing key error: {e}"),
            Error::Config(e) => write!(f, "emulator configuration error: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

/// Reads every certificate of a PEM text (DER each), for [`App::certificate`] and friends.
pub fn certificates_from_pem(pem: &str) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .map(|c| c.to_vec())
        .collect()
}

/// The emulator. Start one with [`Emulator::builder`].
#[derive(Debug)]
pub struct Emulator;

impl Emulator {
    /// A builder with the default resources (Graph, Key Vault, ARM), the system clock and
    /// default [`Settings`].
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }
}

/// Configures and starts an emulator.
pub struct EmulatorBuilder {
    clock: Arc<dyn Clock>,
    directory: Directory,
    settings: Settings,
    signing_key: Option<Vec<u8>>,
    default_resources: bool,
    arc_token_directory: Option<PathBuf>,
}

impl fmt::Debug for EmulatorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatorBuilder")
            .field("clock", &self.clock)
            .field("directory", &self.directory)
            .field("settings", &self.settings)
            .field("default_resources", &self.default_resources)
            .field("arc_token_directory", &self.arc_token_directory)
            .finish_non_exhaustive()
    }
}

impl Default for EmulatorBuilder {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            directory: Directory::new(),
            settings: Settings::default(),
            signing_key: None,
            default_resources: true,
            arc_token_directory: None,
        }
    }
}

impl EmulatorBuilder {
    /// The clock for every time check and every issued `iat`/`nbf`/`exp` (default: system clock).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Adds a tenant.
    #[must_use]
    pub fn tenant(self, tenant: Tenant) -> Self {
        self.directory.add_tenant(tenant);
        self
    }

    /// Adds an application (and its tenant when new; a blueprint's agents).
    #[must_use]
    pub fn app(self, app: App) -> Self {
        self.directory.add_app(app);
        self
    }

    /// Adds a user.
    #[must_use]
    pub fn user(self, user: User) -> Self {
        self.directory.add_user(user);
        self
    }

    /// Adds a managed identity.
    #[must_use]
    pub fn managed_identity(self, identity: ManagedIdentity) -> Self {
        self.directory.add_managed_identity(identity);
        self
    }

    /// Trusts an external issuer for federated credentials.
    #[must_use]
    pub fn trusted_issuer(self, issuer: TrustedIssuer) -> Self {
        self.directory.add_trusted_issuer(issuer);
        self
    }

    /// Adds a resource (its hosts go in the server certificate and the resolver map).
    #[must_use]
    pub fn resource(self, resource: Resource) -> Self {
        self.directory.add_resource(resource);
        self
    }

    /// Leaves out the default resources (Graph, Key Vault, ARM).
    #[must_use]
    pub fn without_default_resources(mut self) -> Self {
        self.default_resources = false;
        self
    }

    /// Replaces the settings.
    #[must_use]
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// Sets the access-token lifetime (`expires_in`).
    #[must_use]
    pub fn token_lifetime(mut self, lifetime: std::time::Duration) -> Self {
        self.settings.access_token_lifetime = lifetime;
        self
    }

    /// Sets when `refresh_in` is sent.
    #[must_use]
    pub fn refresh_in(mut self, refresh_in: RefreshIn) -> Self {
        self.settings.refresh_in = refresh_in;
        self
    }

    /// Sets the region (`location`) IMDS answers.
    #[must_use]
    pub fn imds_location(mut self, location: impl Into<String>) -> Self {
        self.settings.imds_location = location.into();
        self
    }

    /// Makes the host "IMDS v1 only": IMDSv2 (`getplatformmetadata`, `issuecredential`)
    /// answers 404.
    #[must_use]
    pub fn imds_v1_only(mut self) -> Self {
        self.settings.imds_v2 = false;
        self
    }

    /// Sets the VM id (`vmId`) IMDS reports and IMDSv2 CSRs must carry.
    #[must_use]
    pub fn vm_id(mut self, vm_id: impl Into<String>) -> Self {
        self.settings.vm_id = vm_id.into();
        self
    }

    /// Puts the VM in a scale set with this id (`vmssId`).
    #[must_use]
    pub fn vmss_id(mut self, vmss_id: impl Into<String>) -> Self {
        self.settings.vmss_id = Some(vmss_id.into());
        self
    }

    /// Where the Azure Arc endpoint writes its challenge files (the agent's
    /// `/var/opt/azcmagent/tokens/`). Default: a directory of the emulator's own under the
    /// system temporary directory, removed when the emulator stops.
    #[must_use]
    pub fn azure_arc_token_directory(mut self, directory: impl Into<PathBuf>) -> Self {
        self.arc_token_directory = Some(directory.into());
        self
    }

    /// Sets the lifetime of the tokens the managed identity endpoints issue.
    #[must_use]
    pub fn managed_identity_token_lifetime(mut self, lifetime: std::time::Duration) -> Self {
        self.settings.managed_identity_token_lifetime = lifetime;
        self
    }

    /// Signs tokens with this RSA key (PKCS#8 DER) instead of the process-wide generated one.
    #[must_use]
    pub fn signing_key_pkcs8_der(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.signing_key = Some(der.into());
        self
    }

    /// Binds the HTTPS, IMDS and Service Fabric listeners on `127.0.0.1:0` and starts serving.
    pub async fn start(self) -> Result<EmulatorHandle, Error> {
        if self.default_resources {
            let known = self.directory.resources();
            for resource in Resource::defaults() {
                if !known.iter().any(|r| r.uri == resource.uri) {
                    self.directory.add_resource(resource);
                }
            }
        }
        let key = keys::SigningKey::new(self.signing_key.as_deref())?;
        let ca = Arc::new(tls::CertificateAuthority::generate()?);
        let mut names = hosts::identity_host_patterns();
        for resource in self.directory.resources() {
            names.extend(resource.hosts.iter().cloned());
        }
        let (config, server_certificate_der) =
            tls::server_config(ca.clone(), names, self.directory.clone())?;
        let (service_fabric_config, service_fabric_der) = tls::service_fabric_config()?;
        let https = TcpListener::bind(("127.0.0.1", 0)).await?;
        let imds = TcpListener::bind(("127.0.0.1", 0)).await?;
        let service_fabric = TcpListener::bind(("127.0.0.1", 0)).await?;
        let https_addr = https.local_addr()?;
        let imds_addr = imds.local_addr()?;
        let service_fabric_addr = service_fabric.local_addr()?;
        let state = Arc::new(State::new(
            self.clock,
            self.directory,
            self.settings,
            key,
            ca,
            managed_identity::Hosted::new(self.arc_token_directory),
        ));
        let tasks = vec![
            tokio::spawn(server::serve_https(
                https,
                TlsAcceptor::from(Arc::new(config)),
                state.clone(),
                Listener::Https,
            ))
            .abort_handle(),
            tokio::spawn(server::serve_imds(imds, state.clone())).abort_handle(),
            tokio::spawn(server::serve_https(
                service_fabric,
                TlsAcceptor::from(Arc::new(service_fabric_config)),
                state.clone(),
                Listener::ServiceFabric,
            ))
            .abort_handle(),
        ];
        Ok(EmulatorHandle {
            state,
            https_addr,
            imds_addr,
            service_fabric_addr,
            service_fabric_thumbprint: x509::thumbprint_sha1_hex(&service_fabric_der),
            server_certificate_der,
            tasks,
        })
    }
}

/// A running emulator. Dropping it stops the listeners and every open connection.
pub struct EmulatorHandle {
    state: Arc<State>,
    https_addr: SocketAddr,
    imds_addr: SocketAddr,
    service_fabric_addr: SocketAddr,
    service_fabric_thumbprint: String,
    server_certificate_der: Vec<u8>,
    tasks: Vec<AbortHandle>,
}

impl fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatorHandle")
            .field("https_addr", &self.https_addr)
            .field("imds_addr", &self.imds_addr)
            .field("service_fabric_addr", &self.service_fabric_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.state.hosted.clean_up();
    }
}

/// The IMDS `host:port` clients call.
pub const IMDS_HOST_PORT: &str = "169.254.169.254:80";

impl EmulatorHandle {
    /// The HTTPS listener (every login, regional, mtlsauth and resource host).
    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }

    /// The plain-HTTP IMDS listener.
    pub fn imds_addr(&self) -> SocketAddr {
        self.imds_addr
    }

    /// The CA certificate (PEM) clients must trust.
    pub fn ca_certificate_pem(&self) -> String {
        self.state.ca.certificate_pem().to_owned()
    }

    /// The CA certificate (DER).
    pub fn ca_certificate_der(&self) -> Vec<u8> {
        self.state.ca.certificate_der().to_vec()
    }

    /// The CA, to issue client certificates (e.g. for SN+I registrations).
    pub fn certificate_authority(&self) -> &CertificateAuthority {
        &self.state.ca
    }

    /// The HTTPS listener's main server certificate (DER), issued by the CA at start: its
    /// subject alternative names are every identity host pattern and the hosts of the
    /// resources registered before start. A resource host registered later is served with a
    /// certificate of its own, minted on first use.
    pub fn server_certificate_der(&self) -> &[u8] {
        &self.server_certificate_der
    }

    /// The resolver map for the client transport's override: `host:port` patterns (a host may
    /// start with `*.`, meaning any name ending in the rest) and where to connect instead. Every
    /// identity host of every cloud and every resource host at `:443` go to the HTTPS listener,
    /// `169.254.169.254:80` to the IMDS listener, [`SERVICE_FABRIC_HOST_PORT`] to the Service
    /// Fabric listener.
    ///
    /// Azure Arc's default endpoint [`AZURE_ARC_HOST_PORT`] (`127.0.0.1:40342`) is not in the
    /// map: an override of a loopback address would, in transports that override by host only,
    /// capture every other loopback endpoint too. To test a client that uses that default, add
    /// `(AZURE_ARC_HOST_PORT, imds_addr())` to its transport's overrides yourself (the IMDS
    /// listener serves Azure Arc for `Host: 127.0.0.1:40342`).
    pub fn resolver_map(&self) -> Vec<(String, SocketAddr)> {
        let mut map: Vec<(String, SocketAddr)> = hosts::identity_host_patterns()
            .into_iter()
            .map(|h| (format!("{h}:443"), self.https_addr))
            .collect();
        for resource in self.state.directory.resources() {
            for host in resource.hosts {
                let entry = (format!("{host}:443"), self.https_addr);
                if !map.contains(&entry) {
                    map.push(entry);
                }
            }
        }
        map.push((IMDS_HOST_PORT.to_owned(), self.imds_addr));
        map.push((
            SERVICE_FABRIC_HOST_PORT.to_owned(),
            self.service_fabric_addr,
        ));
        map
    }

    /// Where a client should connect for `host:port`, if the emulator serves it.
    pub fn resolve(&self, host: &str, port: u16) -> Option<SocketAddr> {
        self.resolver_map().into_iter().find_map(|(pattern, addr)| {
            let (p_host, p_port) = pattern.rsplit_once(':')?;
            (p_port.parse::<u16>().ok() == Some(port) && util::host_matches(p_host, host))
                .then_some(addr)
        })
    }

    /// The directory (changes apply at once).
    pub fn directory(&self) -> &Directory {
        &self.state.directory
    }

    /// The request log.
    pub fn log(&self) -> &RequestLog {
        &self.state.log
    }

    /// The fault injector.
    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    /// The current settings.
    pub fn settings(&self) -> Settings {
        self.state.settings()
    }

    /// Changes the settings.
    pub fn update_settings(&self, change: impl FnOnce(&mut Settings)) {
        let mut settings = self
            .state
            .settings
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        change(&mut settings);
    }

    /// The clock the emulator uses.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.state.clock.clone()
    }

    /// The JWKS document (`{"keys":[…]}`) of the token-signing key.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.state.key.jwk(None)] })
    }

    /// The `kid` of the token-signing key.
    pub fn signing_key_id(&self) -> String {
        self.state.key.kid.clone()
    }

    /// The Service Fabric listener (HTTPS with a self-signed certificate; reached as
    /// [`SERVICE_FABRIC_HOST_PORT`] through the resolver map).
    pub fn service_fabric_addr(&self) -> SocketAddr {
        self.service_fabric_addr
    }

    /// The upper-case hexadecimal SHA-1 of the Service Fabric endpoint's certificate
    /// (`IDENTITY_SERVER_THUMBPRINT`).
    pub fn service_fabric_thumbprint(&self) -> &str {
        &self.service_fabric_thumbprint
    }

    /// Where `source`'s managed identity endpoint is, as its environment variable holds it:
    /// `http://169.254.169.254/metadata/identity/oauth2/token` (IMDS, through the resolver
    /// map), `http://127.0.0.1:<IMDS listener port>/…` for App Service, Machine Learning, Cloud
    /// Shell and Azure Arc, `https://10.0.0.4:2377/metadata/identity/oauth2/token` for Service
    /// Fabric (through the resolver map).
    pub fn managed_identity_endpoint(&self, source: ManagedIdentitySource) -> String {
        let local = |path: &str| format!("http://127.0.0.1:{}{path}", self.imds_addr.port());
        match source {
            ManagedIdentitySource::Imds => {
                format!(
                    "http://169.254.169.254{}",
                    managed_identity::IMDS_TOKEN_PATH
                )
            }
            ManagedIdentitySource::AppService => local(managed_identity::APP_SERVICE_PATH),
            ManagedIdentitySource::MachineLearning => {
                local(managed_identity::MACHINE_LEARNING_PATH)
            }
            ManagedIdentitySource::CloudShell => local(managed_identity::CLOUD_SHELL_PATH),
            ManagedIdentitySource::AzureArc => local(managed_identity::AZURE_ARC_PATH),
            ManagedIdentitySource::ServiceFabric => format!(
                "https://{SERVICE_FABRIC_HOST_PORT}{}",
                managed_identity::SERVICE_FABRIC_PATH
            ),
        }
    }

    /// The secret `source`'s endpoint checks: `IDENTITY_HEADER` of App Service and Service
    /// Fabric, `MSI_SECRET` of Machine Learning; none for the others (Azure Arc's secrets are
    /// its challenge files).
    pub fn managed_identity_secret(&self, source: ManagedIdentitySource) -> Option<String> {
        let hosted = &self.state.hosted;
        match source {
            ManagedIdentitySource::AppService => Some(hosted.app_service_secret.clone()),
            ManagedIdentitySource::MachineLearning => Some(hosted.machine_learning_secret.clone()),
            ManagedIdentitySource::ServiceFabric => Some(hosted.service_fabric_secret.clone()),
            _ => None,
        }
    }

    /// The environment variables a process on a `source` host sees: none for IMDS;
    /// `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` (App Service); those and
    /// `IDENTITY_SERVER_THUMBPRINT` (Service Fabric); `MSI_ENDPOINT`, `MSI_SECRET` and
    /// `DEFAULT_IDENTITY_CLIENT_ID` (Machine Learning, the last when a system-assigned identity is
    /// registered); `MSI_ENDPOINT` (Cloud Shell); `IDENTITY_ENDPOINT` and `IMDS_ENDPOINT`
    /// (Azure Arc).
    ///
    /// ```
    /// use fic_emulator::{Emulator, ManagedIdentitySource};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), fic_emulator::Error> {
    /// let emulator = Emulator::builder().start().await?;
    /// let env = emulator.managed_identity_environment(ManagedIdentitySource::AppService);
    /// let port = emulator.imds_addr().port();
    /// assert_eq!(env["IDENTITY_ENDPOINT"], format!("http://127.0.0.1:{port}/msi/token"));
    /// assert_eq!(
    ///     Some(env["IDENTITY_HEADER"].clone()),
    ///     emulator.managed_identity_secret(ManagedIdentitySource::AppService)
    /// );
    /// # Ok(())
    /// # }
    /// ```
    pub fn managed_identity_environment(
        &self,
        source: ManagedIdentitySource,
    ) -> HashMap<String, String> {
        let mut env = HashMap::new();
        let endpoint = self.managed_identity_endpoint(source);
        let secret = self.managed_identity_secret(source).unwrap_or_default();
        let mut set = |name: &str, value: String| {
            env.insert(name.to_owned(), value);
        };
        match source {
            ManagedIdentitySource::Imds => {}
            ManagedIdentitySource::AppService => {
                set("IDENTITY_ENDPOINT", endpoint);
                set("IDENTITY_HEADER", secret);
            }
            ManagedIdentitySource::ServiceFabric => {
                set("IDENTITY_ENDPOINT", endpoint);
                set("IDENTITY_HEADER", secret);
                set(
                    "IDENTITY_SERVER_THUMBPRINT",
                    self.service_fabric_thumbprint.clone(),
                );
            }
            ManagedIdentitySource::MachineLearning => {
                set("MSI_ENDPOINT", endpoint);
                set("MSI_SECRET", secret);
                if let Some(system) = self
                    .state
                    .directory
                    .managed_identities()
                    .into_iter()
                    .find(|m| m.kind == ManagedIdentityKind::SystemAssigned)
                {
                    set("DEFAULT_IDENTITY_CLIENT_ID", system.client_id);
                }
            }
            ManagedIdentitySource::CloudShell => set("MSI_ENDPOINT", endpoint),
            ManagedIdentitySource::AzureArc => {
                set("IDENTITY_ENDPOINT", endpoint);
                set(
                    "IMDS_ENDPOINT",
                    format!("http://127.0.0.1:{}", self.imds_addr.port()),
                );
            }
        }
        env
    }

    /// The directory the Azure Arc endpoint writes its challenge files to (give it to the
    /// client as its Arc token directory).
    pub fn azure_arc_token_directory(&self) -> &Path {
        &self.state.hosted.arc_directory
    }

    /// Stops the emulator (same as dropping the handle).
    pub fn shutdown(self) {
        drop(self);
    }
}
