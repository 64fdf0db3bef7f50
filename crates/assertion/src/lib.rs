//! # fic-assertion
//!
//! Certificates and keys, and the client assertions of confidential clients.
//!
//! * **Loading** a [`ClientIdentity`] (certificate chain + private key) from PEM, DER or PKCS#12,
//!   from bytes or files: [`load`]. The key is a [`SoftwareKey`], which implements
//!   [`SigningKey`]: the same key signs the mTLS handshake (in the transport) and the client
//!   assertions (here). The certificate half alone is a [`CertificateChain`] (thumbprints,
//!   `x5c`).
//! * **Assertion providers** ([`AssertionProvider`]) supply the `client_assertion` of a token
//!   request, given an [`AssertionRequest`] (client id, tenant, authority, the token endpoint
//!   actually used, claims, capabilities, FMI path, correlation id), as a [`ClientAssertion`]:
//!   the value, and optionally a binding certificate that makes it `jwt-pop` and sends the request
//!   over mTLS.
//!
//! | provider | assertion |
//! |---|---|
//! | [`CertificateAssertion`] | a JWT signed with a certificate's key (PS256 / RS256 / ES256) |
//! | [`StaticAssertion`] | a fixed string |
//! | [`CallbackAssertion`] | whatever an async closure returns |
//! | [`FileAssertion`] | a file re-read when it changes (`AZURE_FEDERATED_TOKEN_FILE`) |
//! | [`BoundAssertion`] | any provider's assertion, bound to a certificate (jwt-pop) |
//!
//! ## Signing an assertion with a certificate
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use fic_assertion::{load, AssertionProvider, AssertionRequest, CertificateAssertion};
//! use fic_oauth_core::{AuthorityKind, ManualClock};
//!
//! // A PEM with a certificate and its key (here made by rcgen; usually read from a file
//! // with `load::from_pem_file`, or `load::from_pkcs12_file(path, password)`).
//! let generated = rcgen::generate_simple_self_signed(vec!["client.example".to_owned()])?;
//! let pem = format!("{}{}", generated.cert.pem(), generated.signing_key.serialize_pem());
//! let identity = load::from_pem(pem.as_bytes())?;
//!
//! let provider = CertificateAssertion::new(identity.clone())?
//!     .with_x5c(true) // subject name + issuer authentication
//!     .with_clock(Arc::new(ManualClock::at_unix(1_700_000_000)));
//! let request = AssertionRequest::new(
//!     "11111111-2222-3333-4444-555555555555",
//!     "https://westus3.login.microsoft.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
//! )
//! .with_authority("https://login.microsoftonline.com/contoso.onmicrosoft.com/", AuthorityKind::Aad);
//!
//! let assertion = provider.assertion(&request).await?;
//! let segments: Vec<&str> = assertion.value().expose().split('.').collect();
//! use base64::Engine as _;
//! let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
//! let header: serde_json::Value = serde_json::from_slice(&b64.decode(segments[0])?)?;
//! let payload: serde_json::Value = serde_json::from_slice(&b64.decode(segments[1])?)?;
//! assert_eq!(header["alg"], "ES256"); // rcgen makes P-256 keys; RSA keys give PS256
//! assert_eq!(header["x5t#S256"], identity.thumbprint_s256());
//! assert_eq!(payload["aud"], request.token_endpoint);
//! assert_eq!(payload["exp"], 1_700_000_600);
//! # Ok(())
//! # }
//! ```
//!
//! ## Keys held elsewhere (HSM, TPM, OS key store)
//!
//! Implement [`SigningKey`] (key kind, algorithms, `sign`) and pair the key with its
//! certificate through [`CertificateChain::with_signing_key`]; the result serves mTLS and
//! assertion signing exactly like a loaded one. ECDSA signatures are returned in ASN.1 DER (as
//! TLS wants them); [`CertificateAssertion`] converts them for JWS. `sign` is called on the
//! async executor's thread, so a key that takes long should be fast to answer or be wrapped
//! by the caller (e.g. sign ahead of time with a [`CallbackAssertion`]).
//!
//! ```
//! use std::sync::Arc;
//! use fic_assertion::{CertificateAssertion, CertificateChain, SoftwareKey};
//! use fic_oauth_core::{Error, KeyKind, SignatureAlgorithm, SigningKey};
//!
//! /// Stands in for a key in an HSM: here it forwards to a software key.
//! #[derive(Debug)]
//! struct HsmKey {
//!     handle: SoftwareKey,
//! }
//!
//! impl SigningKey for HsmKey {
//!     fn kind(&self) -> KeyKind {
//!         self.handle.kind()
//!     }
//!     fn algorithms(&self) -> &[SignatureAlgorithm] {
//!         &[SignatureAlgorithm::EcdsaP256Sha256]
//!     }
//!     fn sign(&self, algorithm: SignatureAlgorithm, message: &[u8]) -> Result<Vec<u8>, Error> {
//!         self.handle.sign(algorithm, message) // the HSM call
//!     }
//! }
//!
//! let generated = rcgen::generate_simple_self_signed(vec!["client.example".to_owned()])?;
//! let handle = SoftwareKey::from_pem(generated.signing_key.serialize_pem().as_bytes())?;
//! let identity = CertificateChain::from_pem(generated.cert.pem().as_bytes())?
//!     .with_signing_key(Arc::new(HsmKey { handle }))?;
//! let provider = CertificateAssertion::new(identity)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Place in the workspace
//!
//! The crates layer as `oauth-core ← {mtls-transport, assertion, token-cache} ←
//! managed-identity ← fic-flows ← cli`. This crate depends on only one crate of ours,
//! `fic-oauth-core` (the [`ClientIdentity`] / [`SigningKey`] seam, [`Secret`](fic_oauth_core::Secret),
//! the error type and codes, the clock); the crates at its own level (`fic-mtls-transport`,
//! `fic-token-cache`) do not depend on it: the transport receives the identities loaded here
//! as oauth-core's [`ClientIdentity`]. `fic-managed-identity`, `fic-flows`, the `fic` CLI (and the
//! `fic-azure-core` adapter) use it to load certificates and to supply client assertions.
//!
//! ## Features
//!
//! * `ring` (default): [`SoftwareKey`] and the key loaders of [`load`], signing with ring.
//! * `aws-lc-rs`: the same with aws-lc-rs (for SDKs that forbid ring). When both are on, ring
//!   is used. The one behavioural difference: ring refuses EC private keys that do not embed
//!   their public key, aws-lc-rs accepts them (see [`SoftwareKey`]).
//! * neither (`default-features = false`): no crypto backend; [`SoftwareKey`] and the key
//!   loaders are absent, everything else remains (certificates as [`CertificateChain`], keys
//!   of your own behind [`SigningKey`], all the providers).
//! * `generate`: the `generate` module makes fresh certificates and keys for development,
//!   tests and demos (rcgen; needs `ring` or `aws-lc-rs`).
//!
//! ## Secrets
//!
//! Assertions are [`Secret`](fic_oauth_core::Secret)s; keys never appear in `Debug` output,
//! error messages or tracing fields. The copies of private key bytes this crate makes live in
//! buffers zeroized on drop and sized once (so no reallocation leaves a copy behind): files
//! read by the loaders and by [`FileAssertion`], decoded PEM sections, the PKCS#8 a
//! [`SoftwareKey`] keeps, the keys taken out of a PKCS#12 archive. Bytes the caller passes in
//! are the caller's to clear.
//!
//! Some copies made inside dependencies cannot be cleared from here, and are freed without
//! zeroizing:
//!
//! * **p12-keystore** (PKCS#12) decrypts the archive's bags into plain `Vec`s and keeps each
//!   decrypted PKCS#8 key in a `PrivateKey` whose bytes are private to that crate (no mutable
//!   access); the loaders copy the key out and drop the archive at once, which frees those
//!   buffers unzeroized. The same holds for the keys it derives from the password.
//! * **rustls-pki-types** (PEM) gathers the base64 text of each section in an internal
//!   buffer, which starts at 1 KiB and is reallocated for larger sections (an RSA key), and
//!   frees it without zeroizing; the decoded DER it returns is ours and is zeroized.
//! * **the crypto backend**: ring does not zeroize its RSA and ECDSA key structures;
//!   aws-lc-rs clears key memory when it frees it (see [`SoftwareKey`]).
//!
//! Where freed memory matters, prefer a key that never enters the process (an HSM or OS key
//! store behind [`SigningKey`]).
#![deny(missing_docs)]
// Without a crypto backend the key-format helpers have no user.
#![cfg_attr(not(any(feature = "ring", feature = "aws-lc-rs")), allow(dead_code))]

mod assertion;
mod certificate;
mod certificate_assertion;
pub mod codes;
mod der;
mod file;
#[cfg(all(feature = "generate", any(feature = "ring", feature = "aws-lc-rs")))]
pub mod generate;
#[cfg(any(feature = "ring", feature = "aws-lc-rs"))]
mod key;
pub mod load;
mod providers;
mod public_key;

pub use assertion::{
    AssertionProvider, AssertionRequest, ClientAssertion, IntoClientAssertion, JWT_BEARER, JWT_POP,
};
pub use certificate::CertificateChain;
pub use certificate_assertion::{CertificateAssertion, DEFAULT_LIFETIME};
pub use file::{
    FileAssertion, AZURE_FEDERATED_TOKEN_FILE, DEFAULT_MAX_AGE, MAX_ASSERTION_FILE_BYTES,
};
#[cfg(any(feature = "ring", feature = "aws-lc-rs"))]
pub use key::{SoftwareKey, BACKEND};
pub use providers::{BoundAssertion, CallbackAssertion, StaticAssertion};

pub use fic_oauth_core::{ClientIdentity, SigningKey};
