//! # fic-azure-core
//!
//! Any fic-rs credential — a [`ConfidentialClient`](fic_flows::ConfidentialClient) with a secret,
//! a certificate or mTLS Proof-of-Possession, a FIC [`TwoLeg`](fic_flows::TwoLeg), a managed
//! identity, or your own [`fic_oauth_core::TokenCredential`] — used by an Azure SDK for Rust
//! client, through `azure_core` 1.x:
//!
//! - [`AzureCoreCredential`] implements [`azure_core::credentials::TokenCredential`]: scopes are
//!   passed through, the token's expiry becomes an `OffsetDateTime`, errors become
//!   [`azure_core::Error`]s of kind `Credential` whose message carries our error code and the
//!   AADSTS number and whose source is the original [`fic_oauth_core::Error`] (get it back
//!   with [`azure_core::Error::downcast_ref`]).
//! - [`FicHttpClient`] implements [`azure_core::http::HttpClient`] over any fic-rs
//!   [`HttpTransport`](fic_oauth_core::HttpTransport) (normally
//!   [`MtlsTransport`](fic_mtls_transport::MtlsTransport): hyper + rustls, no reqwest, no
//!   OpenSSL). Linked to a credential, it is what makes mTLS PoP tokens usable from an Azure SDK
//!   pipeline (below).
//! - [`TokenBindings`] is the link: a small bounded registry from (a hash of) each
//!   certificate-bound token the credential handed out to its binding certificate.
//!
//! ## Where it sits
//!
//! This crate is at the top of the fic-rs layering, beside the `fic` command: it depends on
//! `fic-flows` (the credentials), `fic-mtls-transport` (the transport of [`FicHttpClient`]),
//! `fic-assertion` and `fic-oauth-core`, and nothing in fic-rs depends on it. `azure_core` is
//! its only Azure SDK dependency. With the default `aws-lc-rs` feature the whole stack below it
//! (rustls, the software keys) runs on aws-lc-rs and `ring` is not in its dependency tree (nor
//! is reqwest); `cargo xtask test` checks both with `cargo tree`, and runs this crate's tests
//! on their own so that no other package's features switch ring on.
//!
//! ## mTLS PoP through a Bearer pipeline
//!
//! `azure_core`'s access token has no token type and no certificate, its
//! `BearerTokenAuthorizationPolicy` always writes `Authorization: Bearer <token>`, and its HTTP
//! client knows nothing of client certificates. A resource accepts an mtls_pop token only over a
//! TLS connection authenticated with the certificate the token is bound to (RFC 8705). So:
//!
//! 1. [`AzureCoreCredential::get_token`](azure_core::credentials::TokenCredential::get_token)
//!    records every token that has a binding certificate in its [`TokenBindings`].
//! 2. [`FicHttpClient`] reads the `Authorization` header of each request it sends; when the
//!    token in it is one of the recorded ones, it presents that token's binding certificate in
//!    the TLS handshake and, for mtls_pop tokens, rewrites the scheme to `mtls_pop` (as MSAL.NET
//!    does; [`AuthorizationScheme::Bearer`] keeps `Bearer` for resources that take bound tokens
//!    with the Bearer scheme).
//!
//! A request whose token is not recorded (a Bearer token, or a token of another credential) is
//! sent as it is, without a client certificate. Link the two with
//! [`AzureCoreCredential::http_client`], or share one [`TokenBindings`] between several
//! credentials and one client. Tokens are never logged, and the registry keeps SHA-256 hashes of
//! them, not the tokens.
//!
//! With another HTTP client (reqwest) an mtls_pop token reaches the resource without its
//! certificate and is refused with 401; Bearer tokens work with any client.
//!
//! ## Crypto provider
//!
//! The default `aws-lc-rs` feature builds the whole stack (rustls, the software keys that sign
//! client assertions) on aws-lc-rs: with default features, `ring` is nowhere in this crate's
//! dependency tree, as the Azure SDK for Rust requires (its `deny.toml` bans ring). `azure_core`
//! is used without default features, so reqwest is not pulled either. The `ring` feature switches
//! the fic-rs crates to ring for users outside the Azure SDK tree.
//!
//! ## Example
//!
//! An Azure SDK-style pipeline (the credential policy per try, our client as transport) calling
//! Key Vault with an mTLS PoP token:
//!
//! ```
//! use std::sync::Arc;
//!
//! use azure_core::http::policies::{auth::BearerTokenAuthorizationPolicy, Policy};
//! use azure_core::http::{ClientOptions, Context, Method, Pipeline, Request, Transport, Url};
//! use fic_azure_core::{AzureCoreCredential, FicHttpClient};
//! use fic_flows::ConfidentialClient;
//! use fic_oauth_core::ClientIdentity;
//!
//! fn key_vault_pipeline(certificate: ClientIdentity) -> Result<Pipeline, fic_oauth_core::Error> {
//!     // Any fic-rs credential; here certificate + mTLS PoP (its `get_token` asks for mtls_pop).
//!     let client = ConfidentialClient::builder("11111111-1111-1111-1111-111111111111")
//!         .authority("https://login.microsoftonline.com/contoso.onmicrosoft.com")
//!         .certificate(certificate)
//!         .mtls_pop(true)
//!         .build()?;
//!     let credential = AzureCoreCredential::new(client.clone());
//!     // The HTTP client that presents the binding certificate of the tokens `credential` issues,
//!     // on the client's own transport (one connection pool per client identity).
//!     let http_client: Arc<FicHttpClient> =
//!         Arc::new(credential.http_client(client.transport().clone()));
//!
//!     let auth: Arc<dyn Policy> = Arc::new(BearerTokenAuthorizationPolicy::new(
//!         Arc::new(credential),
//!         ["https://vault.azure.net/.default"],
//!     ));
//!     let options = ClientOptions {
//!         transport: Some(Transport::new(http_client)),
//!         ..ClientOptions::default()
//!     };
//!     // Azure SDK clients put the credential policy per try.
//!     let (per_call, per_try) = (Vec::new(), vec![auth]);
//!     Ok(Pipeline::new(Some("my-vault-client"), Some("1.0.0"), options, per_call, per_try, None))
//! }
//!
//! async fn get_secret(pipeline: &Pipeline) -> azure_core::Result<String> {
//!     let url = Url::parse("https://myvault.vault.azure.net/secrets/db?api-version=7.4")?;
//!     let mut request = Request::new(url, Method::Get);
//!     let response = pipeline.send(&Context::new(), &mut request, None).await?;
//!     response.into_body().into_string()
//! }
//! # let key = rcgen::KeyPair::generate().unwrap();
//! # let params = rcgen::CertificateParams::new(vec!["app".to_string()]).unwrap();
//! # let cert = params.self_signed(&key).unwrap();
//! # let pem = format!("{}{}", cert.pem(), key.serialize_pem());
//! # let certificate = fic_assertion::load::from_pem(pem.as_bytes()).unwrap();
//! let pipeline = key_vault_pipeline(certificate)?;
//! # let _ = get_secret(&pipeline);
//! # Ok::<(), fic_oauth_core::Error>(())
//! ```
//!
//! Per-call token options (a claims challenge, a tenant, skipping the cache, a correlation id)
//! have no field in `azure_core`'s `TokenRequestOptions`; put a
//! [`fic_oauth_core::TokenRequestOptions`] in the pipeline call's [`Context`] and the credential
//! uses it (see [`AzureCoreCredential`]).
//!
//! [`Context`]: azure_core::http::Context
#![deny(missing_docs)]

mod bindings;
mod credential;
mod error;
mod http_client;

pub use bindings::{TokenBinding, TokenBindings, DEFAULT_BINDINGS_CAPACITY};
pub use credential::AzureCoreCredential;
pub use error::to_azure_error;
pub use fic_flows::AuthorizationScheme;
pub use http_client::FicHttpClient;
