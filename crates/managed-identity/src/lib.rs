//! # fic-managed-identity
//!
//! Tokens for the managed identity of the Azure host the process runs on, acquired the way the
//! MSAL libraries do (PROTOCOL §4–§5), cached through `fic-token-cache`'s
//! [`AcquisitionEngine`](fic_token_cache::AcquisitionEngine).
//!
//! | source | detected by (non-empty variables) | request |
//! |---|---|---|
//! | Service Fabric | `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` + `IDENTITY_SERVER_THUMBPRINT` | `GET $IDENTITY_ENDPOINT?api-version=2020-05-01`, `secret` header, HTTPS pinned by thumbprint |
//! | App Service | `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` | `GET $IDENTITY_ENDPOINT?api-version=2019-08-01`, `X-IDENTITY-HEADER` |
//! | Machine Learning | `MSI_ENDPOINT` + `MSI_SECRET` | `GET $MSI_ENDPOINT?api-version=2017-09-01`, `Metadata: true`, `secret` |
//! | Cloud Shell | `MSI_ENDPOINT` | `POST $MSI_ENDPOINT`, form `resource=…`, `Metadata: true` |
//! | Azure Arc | `IDENTITY_ENDPOINT` + `IMDS_ENDPOINT`, or `/opt/azcmagent/bin/himds` exists | `GET …?api-version=2020-06-01`, `Metadata: true`, then the `Basic` challenge |
//! | IMDS | otherwise | `GET http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01`, `Metadata: true` |
//!
//! Every request carries `resource` (the scope without one trailing `/.default`) and, for a
//! user-assigned identity, the source's own parameter (see [`ManagedIdentityId`]).
//!
//! ## Place in the workspace
//!
//! `oauth-core ← {mtls-transport, assertion, token-cache} ← managed-identity ← fic-flows ← cli`:
//! this crate builds on `fic-oauth-core`'s wire types, `fic-mtls-transport` (the default
//! transport, with which IMDSv2 tokens are requested over mTLS), `fic-assertion` (the software
//! key and certificate of the IMDSv2 binding) and `fic-token-cache` (the acquisition engine);
//! `fic-flows` uses a [`ManagedIdentity`] as Leg 1 of the FIC flows, and the CLI uses both.
//!
//! ## mTLS PoP (IMDSv2)
//!
//! IMDS also serves **mTLS PoP** tokens through IMDSv2 ([`ManagedIdentityBuilder::mtls_pop`]):
//! a certificate is minted for a fresh RSA-2048 key and the token is requested from Entra ID
//! over mTLS with it. MSAL.NET does this only on Windows with a KeyGuard key; fic-rs does it
//! on **every OS with a software key held in memory only** (never written to disk; PROTOCOL §5,
//! Decision). The key is generated with the `rsa` crate (its key and PKCS#8 document are
//! zeroized on drop) and used through `fic-assertion`'s `SoftwareKey`, which keeps its PKCS#8
//! copy in a zeroizing buffer. The signatures are made by the crypto backend, which keeps a
//! copy of its own: **with aws-lc-rs that copy is cleared when freed; with ring it is not**
//! (ring's `RsaKeyPair` does not zeroize its private key on drop). The certificate and key
//! are shared by every credential of the process for the same identity (see
//! [`ManagedIdentityBuilder::mtls_pop`]) and dropped with the last of them.
//!
//! ## Features
//!
//! | feature | what it does |
//! |---|---|
//! | `ring` (default) | rustls, the default transports and the IMDSv2 binding key use ring |
//! | `aws-lc-rs` | the same with aws-lc-rs (ring wins when both are on) |
//!
//! With neither, everything but mTLS PoP works: the sources need no local cryptography (the
//! Service Fabric pin is a SHA-1 over the server's certificate, computed by the `sha1` crate),
//! and TLS uses the process-default rustls `CryptoProvider` (install one, or pass transports
//! built with one, e.g. `MtlsTransport::builder().crypto_provider(…)` and
//! [`ServiceFabricTransport::builder`](service_fabric::ServiceFabricTransport::builder)`(…).crypto_provider(…)`;
//! otherwise building the default transport fails with `invalid_argument`). A credential
//! built with [`mtls_pop(true)`](ManagedIdentityBuilder::mtls_pop) then fails each token
//! request with [`codes::CRYPTO_PROVIDER_NOT_ENABLED`], before anything is sent: the binding
//! key can only be made and used by ring or aws-lc-rs.
//!
//! Retries follow PROTOCOL §4 with the injected [`Sleeper`](fic_oauth_core::Sleeper): IMDS
//! 1, 2, 4 s (10 s × 7 after a first 410); the other sources 3 × max(1 s, `Retry-After`);
//! a refused connection is not retried (`managed_identity_unreachable_network`).
//! Errors carry the codes of [`codes`], the endpoint's status and what it said.
//!
//! ## Example
//!
//! In production, `ManagedIdentity::builder().build()?` detects the source and uses
//! `MtlsTransport::new()`. Here a canned transport plays IMDS:
//!
//! ```
//! use std::collections::HashMap;
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use bytes::Bytes;
//! use fic_managed_identity::{ManagedIdentity, ManagedIdentityId, ManagedIdentitySource};
//! use fic_oauth_core::{
//!     Error, HttpTransport, ManualClock, TokenCredential, TokenRequestOptions, TokenSource,
//!     TransportRequest,
//! };
//!
//! #[derive(Debug)]
//! struct FakeImds;
//!
//! #[async_trait]
//! impl HttpTransport for FakeImds {
//!     async fn send(&self, request: TransportRequest) -> Result<http::Response<Bytes>, Error> {
//!         let uri = request.request.uri().to_string();
//!         assert!(uri.starts_with("http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01"));
//!         assert!(uri.ends_with("&client_id=11111111-2222-3333-4444-555555555555"));
//!         assert_eq!(request.request.headers()["Metadata"], "true");
//!         Ok(http::Response::new(Bytes::from_static(
//!             br#"{"access_token":"eyJ0eXAi...","expires_on":"1700003600","resource":"https://management.azure.com","token_type":"Bearer"}"#,
//!         )))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! let clock = Arc::new(ManualClock::at_unix(1_700_000_000));
//! let credential = ManagedIdentity::builder()
//!     .id(ManagedIdentityId::ClientId("11111111-2222-3333-4444-555555555555".into()))
//!     .environment(HashMap::new()) // no variables: IMDS
//!     .arc_agent_path("/nonexistent/himds")
//!     .transport(Arc::new(FakeImds))
//!     .clock(clock.clone())
//!     .sleeper(clock)
//!     .build()?;
//! assert_eq!(credential.source(), ManagedIdentitySource::Imds);
//!
//! let scopes = ["https://management.azure.com/.default"];
//! let token = credential.get_token(&scopes, &TokenRequestOptions::default()).await?;
//! assert_eq!(token.authorization_header().expose(), "Bearer eyJ0eXAi...");
//! assert_eq!(token.source, TokenSource::IdentityProvider);
//! let again = credential.get_token(&scopes, &TokenRequestOptions::default()).await?;
//! assert_eq!(again.source, TokenSource::Cache);
//! # Ok(())
//! # }
//! ```
//!
//! ## Testing against a local endpoint
//!
//! Nothing here takes a test branch: the URLs are the production ones
//! (`http://169.254.169.254/…`, `http://127.0.0.1:40342/…`, the endpoint variables), and a
//! test maps them to a local server with `fic-mtls-transport`'s resolver overrides
//! (`MtlsTransport::builder().resolve("169.254.169.254:80", addr)`), or with
//! [`ServiceFabricTransport::builder`](service_fabric::ServiceFabricTransport::builder)`(…).resolve(…)`
//! for Service Fabric. The environment snapshot, the Arc agent path and the Arc token directory
//! are builder settings.
//!
//! ## Secrets
//!
//! Tokens are [`Secret`](fic_oauth_core::Secret)s; the endpoint secrets (`IDENTITY_HEADER`,
//! `MSI_SECRET`, the Arc challenge file) are sent as sensitive header values and never logged;
//! `tracing` events carry sources, hosts, paths, statuses, delays and certificate thumbprints
//! only.
#![deny(missing_docs)]

mod arc;
pub mod codes;
mod credential;
mod id;
mod imds_v2;
mod response;
mod send;
pub mod service_fabric;
mod source;

pub use arc::MAX_KEY_FILE_BYTES;
pub use credential::{ManagedIdentity, ManagedIdentityBuilder};
pub use id::ManagedIdentityId;
pub use imds_v2::{
    CRED_API_VERSION, ISSUE_CREDENTIAL_PATH, MIN_REMAINING_LIFETIME, PLATFORM_METADATA_PATH,
    RSA_KEY_BITS,
};
pub use response::{ABSOLUTE_TIMESTAMP_THRESHOLD, HALF_LIFE_THRESHOLD};
pub use source::{
    env, process_environment, scope_to_resource, ManagedIdentitySource, AZURE_ARC_AGENT_PATH,
    AZURE_ARC_DEFAULT_ENDPOINT, AZURE_ARC_TOKEN_DIRECTORY, IMDS_BASE, IMDS_TOKEN_PATH,
};
