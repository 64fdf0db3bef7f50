//! IMDSv2: managed identity tokens bound to a certificate (mTLS PoP), PROTOCOL §5.
//!
//! 1. `GET /metadata/identity/getplatformmetadata?cred-api-version=2.0` (a 404 means IMDS v1
//!    only; the `server` header must name IMDS): client id, tenant id, compute unit id.
//! 2. A fresh RSA-2048 key and a CSR for `CN=<clientId>, DC=<tenantId>`, signed RSASSA-PSS.
//! 3. `POST /metadata/identity/issuecredential?cred-api-version=2.0` with `{"csr":…}`: the
//!    certificate and the regional mTLS token endpoint.
//! 4. `client_credentials` with `token_type=mtls_pop` over mTLS with that certificate to
//!    `{mtls_authentication_endpoint}/{tenant_id}/oauth2/v2.0/token`.
//!
//! The certificate and its key are reused until 24 h before the certificate expires, by every
//! credential of the process for the same identity, attestation flag and IMDS ([`store`]).
//! When the token endpoint answers `invalid_client`, the TLS handshake fails or the connection
//! is reset during the token request, a new certificate is minted and the token request is
//! tried once more.
//!
//! The key is a software key held in memory on every OS (MSAL.NET uses a Windows KeyGuard key
//! and runs this only on Windows; PROTOCOL §5's Decision). It is generated with the `rsa`
//! crate (whose key and PKCS#8 document are zeroized on drop), handed as PKCS#8 to
//! `fic-assertion`'s [`SoftwareKey`] (which keeps its PKCS#8 copy in a zeroizing buffer), and
//! every signature (the CSR, the TLS handshakes) is made by ring or aws-lc-rs; as
//! `SoftwareKey` documents, aws-lc-rs clears its own key object when freed and ring does not.
//! Each new certificate gets a new key; nothing is written to disk.

pub(crate) mod csr;
pub(crate) mod der;
pub(crate) mod store;

use std::fmt;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use fic_assertion::CertificateChain;
use fic_oauth_core::authority::{Authority, EndpointOptions, TokenEndpoint};
use fic_oauth_core::request::{ClientAuth, TokenRequest};
use fic_oauth_core::response::TokenResponse;
use fic_oauth_core::time::from_unix_seconds;
use fic_oauth_core::{AccessToken, ClientIdentity, Error, ErrorCode, TokenType};
use serde_json::Value;
use url::Url;
use uuid::Uuid;

use crate::codes;
use crate::id::ManagedIdentityId;
use crate::response::request_failed;
use crate::send::{transport_failure, Policy, Sender};
use crate::source::{ManagedIdentitySource, IMDS_BASE};

/// The `cred-api-version` of IMDSv2.
pub const CRED_API_VERSION: &str = "2.0";
/// The platform metadata path.
pub const PLATFORM_METADATA_PATH: &str = "/metadata/identity/getplatformmetadata";
/// The certificate issuance path.
pub const ISSUE_CREDENTIAL_PATH: &str = "/metadata/identity/issuecredential";
/// A binding certificate is replaced this long before it expires.
pub const MIN_REMAINING_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The RSA key size.
pub const RSA_KEY_BITS: usize = 2048;

const SOURCE: ManagedIdentitySource = ManagedIdentitySource::Imds;

/// A minted binding: the certificate with its key, and where and as whom to use it.
#[derive(Clone)]
pub(crate) struct Binding {
    pub(crate) identity: ClientIdentity,
    client_id: String,
    endpoint: TokenEndpoint,
    not_after: SystemTime,
}

impl Binding {
    fn usable_at(&self, now: SystemTime) -> bool {
        now + MIN_REMAINING_LIFETIME < self.not_after
    }
}

impl fmt::Debug for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Binding")
            .field("x5t#S256", &self.identity.thumbprint_s256())
            .field("client_id", &self.client_id)
            .field("endpoint", &self.endpoint.url().as_str())
            .field(
                "not_after",
                &fic_oauth_core::time::unix_seconds(self.not_after),
            )
            .finish()
    }
}

/// The IMDSv2 client of one managed identity.
pub(crate) struct ImdsV2 {
    sender: Sender,
    id: ManagedIdentityId,
    attestation: bool,
    /// The binding, shared with every credential of the process for the same IMDS, transport
    /// and identity ([`store`]).
    slot: Arc<store::BindingSlot>,
}

impl fmt::Debug for ImdsV2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImdsV2")
            .field("id", &self.id)
            .field("attestation", &self.attestation)
            .finish_non_exhaustive()
    }
}

/// The platform metadata IMDSv2 answers.
#[derive(Debug)]
#[allow(clippy::struct_field_names)]
struct PlatformMetadata {
    client_id: String,
    tenant_id: String,
    vm_id: Option<String>,
    vmss_id: Option<String>,
}

fn failed(message: impl Into<String>) -> Error {
    Error::new(codes::MANAGED_IDENTITY_REQUEST_FAILED, message)
}

fn string_field(map: &serde_json::Map<String, Value>, name: &str) -> Option<String> {
    map.get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl ImdsV2 {
    /// The client of `id`. `transport` is the address of the transport instance given to the
    /// builder (`None` for the default transport): credentials share minted certificates only
    /// when they reach IMDS the same way.
    pub(crate) fn new(sender: Sender, id: ManagedIdentityId, transport: Option<usize>) -> Self {
        let attestation = false;
        let slot = store::slot(store::StoreKey {
            imds_base: IMDS_BASE.to_owned(),
            transport,
            id: id.clone(),
            attestation,
        });
        Self {
            sender,
            id,
            attestation,
            slot,
        }
    }

    fn cached(&self, now: SystemTime) -> Option<Binding> {
        self.slot
            .binding
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|b| b.usable_at(now))
            .cloned()
    }

    /// The certificate tokens are currently bound to, if one is usable at `now`.
    pub(crate) fn current_identity(&self, now: SystemTime) -> Option<ClientIdentity> {
        self.cached(now).map(|b| b.identity)
    }

    /// A usable binding: the cached one, or a new one. `replace` names a certificate that just
    /// failed: if it is still the cached one, a new one is minted.
    async fn binding(&self, replace: Option<&str>, correlation: Uuid) -> Result<Binding, Error> {
        if replace.is_none() {
            if let Some(binding) = self.cached(self.sender.clock.now()) {
                return Ok(binding);
            }
        }
        let _gate = self.slot.mint_gate.lock().await;
        if let Some(binding) = self.cached(self.sender.clock.now()) {
            if replace != Some(binding.identity.thumbprint_s256()) {
                return Ok(binding);
            }
        }
        let binding = self.mint(correlation).await?;
        let keep = binding.usable_at(self.sender.clock.now());
        // Too close to expiry to keep: used for this request only.
        *self
            .slot
            .binding
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = keep.then(|| binding.clone());
        Ok(binding)
    }

    /// An mtls_pop token for `resource`, bound to the (possibly new) certificate.
    pub(crate) async fn token(
        &self,
        resource: &str,
        claims: Option<&str>,
        correlation: Uuid,
    ) -> Result<AccessToken, Error> {
        // Without a crypto backend no key can be made: say so before calling IMDS.
        keys_supported()?;
        let binding = self.binding(None, correlation).await?;
        match self
            .request_token(&binding, resource, claims, correlation)
            .await
        {
            Err(error) if certificate_refused(&error) => {
                tracing::debug!(code = %error.code(), x5t_s256 = binding.identity.thumbprint_s256(), "the binding certificate was refused; minting a new one and retrying once");
                let renewed = self
                    .binding(Some(binding.identity.thumbprint_s256()), correlation)
                    .await?;
                self.request_token(&renewed, resource, claims, correlation)
                    .await
            }
            result => result,
        }
    }

    async fn request_token(
        &self,
        binding: &Binding,
        resource: &str,
        claims: Option<&str>,
        correlation: Uuid,
    ) -> Result<AccessToken, Error> {
        let scope = format!("{}/.default", resource.trim_end_matches('/'));
        let outgoing = TokenRequest::client_credentials(
            binding.endpoint.clone(),
            binding.client_id.clone(),
            [scope],
        )
        .with_auth(ClientAuth::Certificate(binding.identity.clone()))
        .with_token_type(TokenType::MtlsPop)
        .with_claims(claims.map(str::to_owned))
        .with_correlation_id(correlation)
        .into_transport_request()?;
        let response = self.sender.send(&outgoing, Policy::TokenEndpoint).await?;
        let now = self.sender.clock.now();
        let parsed = TokenResponse::parse_at(
            response.status().as_u16(),
            response.headers(),
            response.body(),
            TokenType::MtlsPop,
            now,
        )?;
        tracing::debug!(
            x5t_s256 = binding.identity.thumbprint_s256(),
            expires_in = parsed.expires_in,
            "received an IMDSv2 mtls_pop token"
        );
        Ok(parsed.into_access_token(
            now,
            vec![resource.to_owned()],
            Some(binding.identity.clone()),
        ))
    }

    fn url(&self, path: &str) -> Result<Url, Error> {
        let mut url = Url::parse(IMDS_BASE)
            .and_then(|u| u.join(path))
            .map_err(|e| Error::new(ErrorCode::INTERNAL, e.to_string()))?;
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("cred-api-version", CRED_API_VERSION);
            match &self.id {
                ManagedIdentityId::SystemAssigned => {}
                ManagedIdentityId::ClientId(v) => {
                    pairs.append_pair("client_id", v);
                }
                ManagedIdentityId::ResourceId(v) => {
                    pairs.append_pair("mi_res_id", v);
                }
                ManagedIdentityId::ObjectId(v) => {
                    pairs.append_pair("object_id", v);
                }
            }
        }
        Ok(url)
    }

    async fn mint(&self, correlation: Uuid) -> Result<Binding, Error> {
        let metadata = self.platform_metadata(correlation).await?;
        let key = generate_key().await?;
        let cuid = csr::cuid_json(metadata.vm_id.as_deref(), metadata.vmss_id.as_deref());
        let csr = csr::build(
            key.signing_key(),
            key.public_key_bytes(),
            &metadata.client_id,
            &metadata.tenant_id,
            &cuid,
        )?;
        let issued = self.issue_credential(&csr, correlation).await?;
        let identity = CertificateChain::from_der(&issued.certificate)
            .and_then(|chain| key.pair_with(chain))
            .map_err(|e| {
                Error::new(
                    ErrorCode::INVALID_CERTIFICATE,
                    format!(
                        "[ImdsV2] the issued certificate cannot be used with the generated key: {}",
                        e.message()
                    ),
                )
                .with_source(e)
            })?;
        let not_after = not_after(&issued.certificate)?;
        let token_url = format!(
            "{}/{}/oauth2/v2.0/token",
            issued.mtls_endpoint.trim_end_matches('/'),
            issued.tenant_id.trim_matches('/')
        );
        let endpoint = Authority::generic(&issued.mtls_endpoint, &token_url)
            .and_then(|authority| authority.token_endpoint(&EndpointOptions::mtls()))
            .map_err(|e| {
                failed(format!(
                    "[ImdsV2] the mtls_authentication_endpoint {:?} is not a usable https URL: {}",
                    issued.mtls_endpoint,
                    e.message()
                ))
            })?;
        tracing::debug!(
            x5t_s256 = identity.thumbprint_s256(),
            identity_type = %issued.identity_type,
            not_after = fic_oauth_core::time::unix_seconds(not_after),
            endpoint = %endpoint,
            "minted an IMDSv2 binding certificate"
        );
        Ok(Binding {
            identity,
            client_id: issued.client_id,
            endpoint,
            not_after,
        })
    }

    async fn platform_metadata(&self, correlation: Uuid) -> Result<PlatformMetadata, Error> {
        let request = http::Request::get(self.url(PLATFORM_METADATA_PATH)?.as_str())
            .header("Metadata", "true")
            .header(
                "x-ms-client-request-id",
                correlation.hyphenated().to_string(),
            )
            .body(Bytes::new())
            .map_err(|e| Error::new(ErrorCode::INTERNAL, e.to_string()))?;
        let response = self
            .sender
            .send(
                &fic_oauth_core::TransportRequest::new(request),
                Policy::Imds,
            )
            .await
            .map_err(|e| transport_failure(SOURCE, e))?;
        let status = response.status().as_u16();
        if status == 404 {
            return Err(Error::new(
                codes::MTLS_POP_TOKEN_NOT_SUPPORTED_IN_IMDS_V1,
                "[ImdsV2] mTLS proof of possession with managed identity is not supported on this VM: IMDS answered 404 to getplatformmetadata (IMDS v1 only)",
            ));
        }
        if !response.status().is_success() {
            return Err(request_failed(
                SOURCE,
                status,
                response.headers(),
                response.body(),
                self.sender.clock.now(),
            ));
        }
        let server = response
            .headers()
            .get(http::header::SERVER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !server.to_ascii_lowercase().contains("imds") {
            return Err(failed(format!(
                "[ImdsV2] the getplatformmetadata response does not come from IMDS (server header {server:?})"
            )));
        }
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(response.body()) else {
            return Err(Error::new(
                codes::MANAGED_IDENTITY_RESPONSE_PARSE_FAILURE,
                "[ImdsV2] the getplatformmetadata response is not a JSON object",
            ));
        };
        let cu_id = map.get("cuId").and_then(Value::as_object);
        let vm_id = cu_id.and_then(|c| string_field(c, "vmId"));
        let vmss_id = cu_id.and_then(|c| string_field(c, "vmssId"));
        let client_id = string_field(&map, "clientId");
        let tenant_id = string_field(&map, "tenantId");
        match (client_id, tenant_id) {
            (Some(client_id), Some(tenant_id)) if vm_id.is_some() || vmss_id.is_some() => {
                Ok(PlatformMetadata {
                    client_id,
                    tenant_id,
                    vm_id,
                    vmss_id,
                })
            }
            _ => Err(failed(
                "[ImdsV2] the getplatformmetadata response lacks clientId, tenantId or cuId.vmId/vmssId",
            )),
        }
    }

    async fn issue_credential(&self, csr: &[u8], correlation: Uuid) -> Result<Issued, Error> {
        let body = serde_json::json!({ "csr": STANDARD.encode(csr) }).to_string();
        let request = http::Request::post(self.url(ISSUE_CREDENTIAL_PATH)?.as_str())
            .header("Metadata", "true")
            .header(
                "x-ms-client-request-id",
                correlation.hyphenated().to_string(),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Bytes::from(body))
            .map_err(|e| Error::new(ErrorCode::INTERNAL, e.to_string()))?;
        let response = self
            .sender
            .send(
                &fic_oauth_core::TransportRequest::new(request),
                Policy::Imds,
            )
            .await
            .map_err(|e| transport_failure(SOURCE, e))?;
        if !response.status().is_success() {
            return Err(request_failed(
                SOURCE,
                response.status().as_u16(),
                response.headers(),
                response.body(),
                self.sender.clock.now(),
            ));
        }
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(response.body()) else {
            return Err(Error::new(
                codes::MANAGED_IDENTITY_RESPONSE_PARSE_FAILURE,
                "[ImdsV2] the issuecredential response is not a JSON object",
            ));
        };
        let field = |name: &str| string_field(&map, name);
        let (
            Some(client_id),
            Some(tenant_id),
            Some(certificate),
            Some(identity_type),
            Some(mtls_endpoint),
        ) = (
            field("client_id"),
            field("tenant_id"),
            field("certificate"),
            field("identity_type"),
            field("mtls_authentication_endpoint"),
        )
        else {
            return Err(failed(
                "[ImdsV2] the issuecredential response is malformed: client_id, tenant_id, certificate, identity_type and mtls_authentication_endpoint are all required",
            ));
        };
        let certificate = STANDARD.decode(certificate.as_bytes()).map_err(|_| {
            Error::new(
                ErrorCode::INVALID_CERTIFICATE,
                "[ImdsV2] the issued certificate is not base64 DER",
            )
        })?;
        Ok(Issued {
            client_id,
            tenant_id,
            certificate,
            identity_type,
            mtls_endpoint,
        })
    }
}

/// Whether the token endpoint's answer means "not with this certificate": `invalid_client`,
/// a refused TLS handshake, or the connection reset during the exchange (a server dropping a
/// client certificate it does not accept; MSAL re-mints on a socket reset too).
fn certificate_refused(error: &Error) -> bool {
    error.code().as_str() == "invalid_client"
        || error.code() == &ErrorCode::TLS_HANDSHAKE_FAILED
        || (error.code() == &ErrorCode::TRANSPORT && connection_reset(error))
}

/// Whether `error`'s chain holds an I/O error of kind `ConnectionReset`: the transports give
/// such a failure the generic `transport_error` code, with the I/O error as its source.
fn connection_reset(error: &Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = next {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionReset {
                return true;
            }
            // An io::Error's source skips the error it wraps.
            if let Some(inner) = io.get_ref() {
                next = Some(inner);
                continue;
            }
        }
        next = current.source();
    }
    false
}

struct Issued {
    client_id: String,
    tenant_id: String,
    certificate: Vec<u8>,
    identity_type: String,
    mtls_endpoint: String,
}

fn not_after(der: &[u8]) -> Result<SystemTime, Error> {
    use x509_parser::prelude::FromDer as _;
    let (_, certificate) =
        x509_parser::certificate::X509Certificate::from_der(der).map_err(|_| {
            Error::new(
                ErrorCode::INVALID_CERTIFICATE,
                "[ImdsV2] the issued certificate is not an X.509 certificate",
            )
        })?;
    let seconds = certificate.validity().not_after.timestamp();
    Ok(from_unix_seconds(
        u64::try_from(seconds).unwrap_or_default(),
    ))
}

/// The error of an IMDSv2 request in a build without a crypto backend.
#[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
fn crypto_provider_not_enabled() -> Error {
    Error::new(
        codes::CRYPTO_PROVIDER_NOT_ENABLED,
        "[ImdsV2] mTLS PoP needs a key made and used by ring or aws-lc-rs: enable the `ring` or `aws-lc-rs` feature of fic-managed-identity",
    )
}

/// Whether binding keys can be made in this build.
#[cfg(any(feature = "ring", feature = "aws-lc-rs"))]
#[allow(clippy::unnecessary_wraps)] // The signature is shared with the feature-less variant.
fn keys_supported() -> Result<(), Error> {
    Ok(())
}

/// Whether binding keys can be made in this build: not without a crypto backend.
#[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
fn keys_supported() -> Result<(), Error> {
    Err(crypto_provider_not_enabled())
}

/// A freshly generated binding key: signs the CSR, then pairs with the issued certificate.
#[cfg(any(feature = "ring", feature = "aws-lc-rs"))]
struct FreshKey(fic_assertion::SoftwareKey);

/// Without a crypto backend there is no key (the type has no values).
#[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
enum FreshKey {}

#[cfg(any(feature = "ring", feature = "aws-lc-rs"))]
impl FreshKey {
    fn signing_key(&self) -> &dyn fic_oauth_core::SigningKey {
        &self.0
    }

    fn public_key_bytes(&self) -> &[u8] {
        self.0.public_key_bytes()
    }

    fn pair_with(self, chain: CertificateChain) -> Result<ClientIdentity, Error> {
        chain.with_key(self.0)
    }
}

#[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
impl FreshKey {
    fn signing_key(&self) -> &dyn fic_oauth_core::SigningKey {
        match *self {}
    }

    fn public_key_bytes(&self) -> &[u8] {
        match *self {}
    }

    fn pair_with(self, _: CertificateChain) -> Result<ClientIdentity, Error> {
        match self {}
    }
}

/// Without a crypto backend: the error [`keys_supported`] gives first.
#[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
#[allow(clippy::unused_async)] // The signature is shared with the real generator.
async fn generate_key() -> Result<FreshKey, Error> {
    Err(crypto_provider_not_enabled())
}

/// A fresh RSA-2048 key, generated off the async executor (it takes a noticeable fraction of
/// a second).
#[cfg(any(feature = "ring", feature = "aws-lc-rs"))]
async fn generate_key() -> Result<FreshKey, Error> {
    fn generate() -> Result<FreshKey, Error> {
        use rsa::pkcs8::EncodePrivateKey as _;
        let failed = |what: &str| {
            Error::new(
                ErrorCode::INTERNAL,
                format!("[ImdsV2] generating the RSA key failed ({what})"),
            )
        };
        // Both zeroize on drop: the key's limbs and the PKCS#8 document.
        let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, RSA_KEY_BITS)
            .map_err(|_| failed("generation"))?;
        let pkcs8 = key.to_pkcs8_der().map_err(|_| failed("PKCS#8 encoding"))?;
        fic_assertion::SoftwareKey::from_pkcs8_der(pkcs8.as_bytes()).map(FreshKey)
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => runtime.spawn_blocking(generate).await.map_err(|_| {
            Error::new(
                ErrorCode::INTERNAL,
                "[ImdsV2] the key generation task failed",
            )
        })?,
        Err(_) => generate(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn binding_usable_until_a_day_before_expiry() {
        let not_after = from_unix_seconds(1_000_000);
        let identity = ClientIdentity::new(vec![vec![0x30, 0x00]], Arc::new(NoKey)).unwrap();
        let binding = Binding {
            identity,
            client_id: "c".into(),
            endpoint: Authority::generic(
                "https://mtlsauth.example",
                "https://mtlsauth.example/t/oauth2/v2.0/token",
            )
            .unwrap()
            .token_endpoint(&EndpointOptions::mtls())
            .unwrap(),
            not_after,
        };
        assert!(binding.usable_at(from_unix_seconds(1_000_000 - 86_401)));
        assert!(!binding.usable_at(from_unix_seconds(1_000_000 - 86_400)));
    }

    #[derive(Debug)]
    struct NoKey;
    impl fic_oauth_core::SigningKey for NoKey {
        fn kind(&self) -> fic_oauth_core::KeyKind {
            fic_oauth_core::KeyKind::Rsa { bits: 2048 }
        }
        fn algorithms(&self) -> &[fic_oauth_core::SignatureAlgorithm] {
            &[]
        }
        fn sign(&self, _: fic_oauth_core::SignatureAlgorithm, _: &[u8]) -> Result<Vec<u8>, Error> {
            Ok(vec![])
        }
    }
}
