//! [`CertificateAssertion`]: jwt-bearer client assertions signed with a certificate's key.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use fic_oauth_core::time::unix_seconds;
use fic_oauth_core::{
    ClientIdentity, Clock, Error, ErrorCode, KeyKind, Secret, SignatureAlgorithm, SystemClock,
};
use serde::Serialize;
use uuid::Uuid;

use crate::assertion::{AssertionProvider, AssertionRequest, ClientAssertion};
use crate::{codes, der};

/// The default assertion lifetime (`exp - iat`), as MSAL uses.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);

/// Cached assertions kept at most (distinct endpoint × client id × algorithm); the cache is
/// emptied when it would grow past this.
const REUSE_CAPACITY: usize = 64;

/// The JWS algorithm of an assertion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum JwtAlgorithm {
    /// RSASSA-PSS, SHA-256, MGF1-SHA-256, salt 32.
    Ps256,
    /// RSASSA-PKCS1-v1_5, SHA-256.
    Rs256,
    /// ECDSA P-256, SHA-256, fixed `r‖s`.
    Es256,
}

impl JwtAlgorithm {
    fn name(self) -> &'static str {
        match self {
            Self::Ps256 => "PS256",
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
        }
    }

    fn signature_algorithm(self) -> SignatureAlgorithm {
        match self {
            Self::Ps256 => SignatureAlgorithm::RsaPssSha256,
            Self::Rs256 => SignatureAlgorithm::RsaPkcs1Sha256,
            Self::Es256 => SignatureAlgorithm::EcdsaP256Sha256,
        }
    }
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'static str,
    #[serde(rename = "x5t#S256", skip_serializing_if = "Option::is_none")]
    x5t_s256: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x5t: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x5c: Option<&'a [String]>,
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: u64,
    iat: u64,
    exp: u64,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct ReuseKey {
    token_endpoint: String,
    client_id: String,
    algorithm: JwtAlgorithm,
    sha2_thumbprint: bool,
}

struct Reused {
    value: Secret,
    not_before: u64,
    expires: u64,
}

/// Signs jwt-bearer client assertions with a certificate's private key (PROTOCOL §2).
///
/// The header follows the authority of the [`AssertionRequest`]:
///
/// | key | AAD, B2C, CIAM ([`uses_sha2_assertions`]) | ADFS, dSTS, generic |
/// |---|---|---|
/// | RSA | `{"alg":"PS256","typ":"JWT","x5t#S256":…}` | `{"alg":"RS256","typ":"JWT","x5t":…}` |
/// | EC P-256 | `{"alg":"ES256","typ":"JWT","x5t#S256":…}` | `{"alg":"ES256","typ":"JWT","x5t":…}` |
///
/// An RSA key that cannot sign PSS (some HSMs) gets the RS256 header everywhere. With
/// [`with_x5c`](Self::with_x5c) (subject name + issuer authentication, required for FMI
/// blueprints) the header also has `"x5c":[…]`: the whole chain, leaf first, standard base64.
///
/// The payload is `{"aud","iss","sub","jti","nbf","iat","exp"}`: `aud` the token endpoint
/// actually used, `iss` = `sub` the client id, `jti` a random UUID, `nbf` = `iat` = now and
/// `exp` = now + lifetime (600 s unless [`with_lifetime`](Self::with_lifetime)), as numeric
/// dates. Time comes from the injected [`Clock`].
///
/// A fresh assertion is signed for every call, unless [`with_reuse`](Self::with_reuse) is set.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use fic_assertion::{load, AssertionProvider, AssertionRequest, CertificateAssertion, JWT_BEARER};
///
/// let generated = rcgen::generate_simple_self_signed(vec!["client.example".to_owned()])?;
/// let pem = format!("{}{}", generated.cert.pem(), generated.signing_key.serialize_pem());
/// let provider = CertificateAssertion::new(load::from_pem(pem.as_bytes())?)?;
///
/// let request = AssertionRequest::new(
///     "11111111-2222-3333-4444-555555555555",
///     "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
/// );
/// let assertion = provider.assertion(&request).await?;
/// assert_eq!(assertion.assertion_type(), JWT_BEARER);
/// assert_eq!(assertion.value().expose().split('.').count(), 3);
/// # Ok(())
/// # }
/// ```
///
/// [`uses_sha2_assertions`]: fic_oauth_core::AuthorityKind::uses_sha2_assertions
pub struct CertificateAssertion {
    identity: ClientIdentity,
    x5c: Option<Vec<String>>,
    lifetime: Duration,
    clock: Arc<dyn Clock>,
    reuse_margin: Option<Duration>,
    reused: Mutex<HashMap<ReuseKey, Reused>>,
}

impl CertificateAssertion {
    /// A provider signing with `identity`'s key.
    ///
    /// The key must be RSA (able to sign PS256 or RS256) or EC P-256 (ES256); other keys are
    /// `unsupported_key_type` (they can still serve for mTLS, which needs no assertion).
    pub fn new(identity: ClientIdentity) -> Result<Self, Error> {
        let key = identity.key();
        let usable = match key.kind() {
            KeyKind::Rsa { .. } => {
                key.supports(SignatureAlgorithm::RsaPssSha256)
                    || key.supports(SignatureAlgorithm::RsaPkcs1Sha256)
            }
            KeyKind::EcP256 => key.supports(SignatureAlgorithm::EcdsaP256Sha256),
            _ => false,
        };
        if !usable {
            return Err(Error::new(
                codes::UNSUPPORTED_KEY_TYPE,
                format!(
                    "this {} cannot sign client assertions (it offers none of PS256, RS256 or ES256); use an RSA key or an EC P-256 key that can",
                    crate::public_key::describe_kind(key.kind())
                ),
            ));
        }
        Ok(Self {
            identity,
            x5c: None,
            lifetime: DEFAULT_LIFETIME,
            clock: Arc::new(SystemClock),
            reuse_margin: None,
            reused: Mutex::new(HashMap::new()),
        })
    }

    /// Whether to send the certificate chain in the `x5c` header (subject name + issuer
    /// authentication). Off by default.
    #[must_use]
    pub fn with_x5c(mut self, send_x5c: bool) -> Self {
        self.x5c = send_x5c.then(|| {
            self.identity
                .chain_der()
                .iter()
                .map(|certificate| STANDARD.encode(certificate))
                .collect()
        });
        self
    }

    /// The assertion lifetime, `exp - iat` (whole seconds, at least 1). Default 600 s.
    #[must_use]
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime.max(Duration::from_secs(1));
        self
    }

    /// The clock giving "now" (default: the system clock).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Reuses a signed assertion for the same token endpoint and client id while more than
    /// `margin` of its lifetime is left, instead of signing one per request. Off by default:
    /// an identity provider that rejects replayed `jti`s needs a fresh assertion each time.
    #[must_use]
    pub fn with_reuse(mut self, margin: Duration) -> Self {
        self.reuse_margin = Some(margin);
        self
    }

    /// The identity that signs.
    pub fn identity(&self) -> &ClientIdentity {
        &self.identity
    }

    fn choose(&self, sha2_authority: bool) -> Result<(JwtAlgorithm, bool), Error> {
        let key = self.identity.key();
        match key.kind() {
            KeyKind::Rsa { .. } => {
                if sha2_authority && key.supports(SignatureAlgorithm::RsaPssSha256) {
                    Ok((JwtAlgorithm::Ps256, true))
                } else if key.supports(SignatureAlgorithm::RsaPkcs1Sha256) {
                    Ok((JwtAlgorithm::Rs256, false))
                } else {
                    Err(Error::new(
                        codes::UNSUPPORTED_KEY_TYPE,
                        "this authority needs RS256 assertions but the key cannot sign RSASSA-PKCS1-v1_5",
                    ))
                }
            }
            KeyKind::EcP256 => Ok((JwtAlgorithm::Es256, sha2_authority)),
            other => Err(Error::new(
                codes::UNSUPPORTED_KEY_TYPE,
                format!(
                    "a {} cannot sign client assertions",
                    crate::public_key::describe_kind(other)
                ),
            )),
        }
    }

    /// Signs a fresh assertion for `request` (never reused), synchronously.
    pub fn sign(&self, request: &AssertionRequest) -> Result<Secret, Error> {
        let (algorithm, sha2_thumbprint) =
            self.choose(request.authority_kind.uses_sha2_assertions())?;
        let now = unix_seconds(self.clock.now());
        Ok(self
            .sign_with(request, algorithm, sha2_thumbprint, now)?
            .value)
    }

    fn sign_with(
        &self,
        request: &AssertionRequest,
        algorithm: JwtAlgorithm,
        sha2_thumbprint: bool,
        now: u64,
    ) -> Result<Reused, Error> {
        if request.client_id.trim().is_empty() {
            return Err(Error::new(
                ErrorCode::INVALID_ARGUMENT,
                "a client assertion needs a client id (iss and sub)",
            ));
        }
        if request.token_endpoint.trim().is_empty() {
            return Err(Error::new(
                ErrorCode::INVALID_ARGUMENT,
                "a client assertion needs the token endpoint (aud)",
            ));
        }
        let header = Header {
            alg: algorithm.name(),
            typ: "JWT",
            x5t_s256: sha2_thumbprint.then(|| self.identity.thumbprint_s256()),
            x5t: (!sha2_thumbprint).then(|| self.identity.thumbprint_sha1()),
            x5c: self.x5c.as_deref(),
        };
        let expires = now.saturating_add(self.lifetime.as_secs());
        let claims = Claims {
            aud: &request.token_endpoint,
            iss: &request.client_id,
            sub: &request.client_id,
            jti: Uuid::new_v4().to_string(),
            nbf: now,
            iat: now,
            exp: expires,
        };
        let header = serde_json::to_vec(&header).map_err(internal)?;
        let claims = serde_json::to_vec(&claims).map_err(internal)?;

        let mut signing_input =
            String::with_capacity(base64_len(header.len()) + 1 + base64_len(claims.len()));
        URL_SAFE_NO_PAD.encode_string(&header, &mut signing_input);
        signing_input.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut signing_input);

        let signature = self
            .identity
            .key()
            .sign(algorithm.signature_algorithm(), signing_input.as_bytes())?;
        let signature = match algorithm {
            JwtAlgorithm::Es256 => der::ecdsa_der_to_fixed(&signature, 32).ok_or_else(|| {
                Error::new(
                    ErrorCode::SIGNING_FAILED,
                    "the key returned a malformed ECDSA signature",
                )
            })?,
            JwtAlgorithm::Ps256 | JwtAlgorithm::Rs256 => signature,
        };

        let mut jwt = String::with_capacity(signing_input.len() + 1 + base64_len(signature.len()));
        jwt.push_str(&signing_input);
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut jwt);
        tracing::trace!(
            alg = algorithm.name(),
            client_id = %request.client_id,
            aud = %request.token_endpoint,
            "signed a client assertion"
        );
        Ok(Reused {
            value: Secret::new(jwt),
            not_before: now,
            expires,
        })
    }

    fn reuse_or_sign(&self, request: &AssertionRequest) -> Result<Secret, Error> {
        let (algorithm, sha2_thumbprint) =
            self.choose(request.authority_kind.uses_sha2_assertions())?;
        let now = unix_seconds(self.clock.now());
        let Some(margin) = self.reuse_margin else {
            return Ok(self
                .sign_with(request, algorithm, sha2_thumbprint, now)?
                .value);
        };
        let key = ReuseKey {
            token_endpoint: request.token_endpoint.clone(),
            client_id: request.client_id.clone(),
            algorithm,
            sha2_thumbprint,
        };
        let fresh_enough = |entry: &Reused| {
            entry.not_before <= now && now.saturating_add(margin.as_secs()) < entry.expires
        };
        {
            let reused = self.reused.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = reused.get(&key).filter(|entry| fresh_enough(entry)) {
                return Ok(entry.value.clone());
            }
        }
        let signed = self.sign_with(request, algorithm, sha2_thumbprint, now)?;
        let value = signed.value.clone();
        let mut reused = self.reused.lock().unwrap_or_else(PoisonError::into_inner);
        if reused.len() >= REUSE_CAPACITY && !reused.contains_key(&key) {
            reused.clear();
        }
        reused.insert(key, signed);
        Ok(value)
    }
}

fn base64_len(len: usize) -> usize {
    len.div_ceil(3) * 4
}

fn internal(err: serde_json::Error) -> Error {
    Error::new(ErrorCode::INTERNAL, "could not serialize the assertion").with_source(err)
}

#[async_trait]
impl AssertionProvider for CertificateAssertion {
    async fn assertion(&self, request: &AssertionRequest) -> Result<ClientAssertion, Error> {
        ClientAssertion::new(self.reuse_or_sign(request)?)
    }
}

impl fmt::Debug for CertificateAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAssertion")
            .field("identity", &self.identity)
            .field("x5c", &self.x5c.is_some())
            .field("lifetime", &self.lifetime)
            .field("reuse_margin", &self.reuse_margin)
            .finish_non_exhaustive()
    }
}
