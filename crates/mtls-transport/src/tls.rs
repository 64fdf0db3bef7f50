//! oauth-core's key seam adapted to rustls.
//!
//! A [`ClientIdentity`] keeps its private key behind
//! [`fic_oauth_core::SigningKey`]; rustls signs through [`rustls::sign::SigningKey`]. The
//! adapters here connect the two, so the TLS handshake signs with the same key object that
//! signs client assertions and the key never leaves it (no export, no DER round trip). They are
//! what [`MtlsTransport`](crate::MtlsTransport) uses; they are public for embedders that build
//! their own rustls `ClientConfig` (for another HTTP client, say).
//!
//! A binding certificate is never silently left out. When the server asks for a client
//! certificate and the key can sign none of the signature schemes the server accepts, rustls
//! on its own would answer with an empty `Certificate` message and carry on without the
//! identity; the [`CertifiedKey`] built by [`certified_key`] (and so [`IdentityCertResolver`])
//! fails the handshake instead, before anything is sent on the connection. An RSA key that
//! signs PKCS#1 v1.5 only can never sign in TLS 1.3 (which allows RSA-PSS only): restrict
//! such an identity's configuration to TLS 1.2 ([`IdentityCertResolver::tls13_capable`] tells;
//! the transport does this itself).
//!
//!
//! ```
//! # use std::sync::Arc;
//! # use fic_oauth_core::{ClientIdentity, Error};
//! use fic_mtls_transport::tls::IdentityCertResolver;
//!
//! fn client_config(
//!     identity: &ClientIdentity,
//!     roots: rustls::RootCertStore,
//! ) -> Result<rustls::ClientConfig, Error> {
//!     let resolver = IdentityCertResolver::new(identity)?;
//!     let builder = if resolver.tls13_capable() {
//!         rustls::ClientConfig::builder()
//!     } else {
//!         rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
//!     };
//!     Ok(builder
//!         .with_root_certificates(roots)
//!         .with_client_cert_resolver(Arc::new(resolver)))
//! }
//! ```

use std::fmt;
use std::sync::Arc;

use fic_oauth_core::{ClientIdentity, Error, ErrorCode, SignatureAlgorithm};
use rustls::client::ResolvesClientCert;
use rustls::sign::{CertifiedKey, Signer};
use rustls::SignatureScheme;
use rustls_pki_types::CertificateDer;

/// The TLS signature scheme of a key algorithm.
///
/// ECDSA algorithms map to the curve-bound TLS 1.3 schemes (`ecdsa_secp256r1_sha256`, ...),
/// whose signatures are ASN.1 DER, as [`SignatureAlgorithm`] produces them.
pub fn signature_scheme(algorithm: SignatureAlgorithm) -> Option<SignatureScheme> {
    match algorithm {
        SignatureAlgorithm::RsaPssSha256 => Some(SignatureScheme::RSA_PSS_SHA256),
        SignatureAlgorithm::RsaPssSha384 => Some(SignatureScheme::RSA_PSS_SHA384),
        SignatureAlgorithm::RsaPssSha512 => Some(SignatureScheme::RSA_PSS_SHA512),
        SignatureAlgorithm::RsaPkcs1Sha256 => Some(SignatureScheme::RSA_PKCS1_SHA256),
        SignatureAlgorithm::RsaPkcs1Sha384 => Some(SignatureScheme::RSA_PKCS1_SHA384),
        SignatureAlgorithm::RsaPkcs1Sha512 => Some(SignatureScheme::RSA_PKCS1_SHA512),
        SignatureAlgorithm::EcdsaP256Sha256 => Some(SignatureScheme::ECDSA_NISTP256_SHA256),
        SignatureAlgorithm::EcdsaP384Sha384 => Some(SignatureScheme::ECDSA_NISTP384_SHA384),
        _ => None,
    }
}

/// Whether TLS 1.3 allows `algorithm` in a `CertificateVerify`: RSA-PSS and ECDSA yes,
/// RSASSA-PKCS1-v1_5 no (RFC 8446 §4.2.3).
pub fn allowed_in_tls13(algorithm: SignatureAlgorithm) -> bool {
    matches!(
        algorithm,
        SignatureAlgorithm::RsaPssSha256
            | SignatureAlgorithm::RsaPssSha384
            | SignatureAlgorithm::RsaPssSha512
            | SignatureAlgorithm::EcdsaP256Sha256
            | SignatureAlgorithm::EcdsaP384Sha384
    )
}

/// The key algorithm of a TLS signature scheme, if oauth-core has one for it.
pub fn signature_algorithm(scheme: SignatureScheme) -> Option<SignatureAlgorithm> {
    match scheme {
        SignatureScheme::RSA_PSS_SHA256 => Some(SignatureAlgorithm::RsaPssSha256),
        SignatureScheme::RSA_PSS_SHA384 => Some(SignatureAlgorithm::RsaPssSha384),
        SignatureScheme::RSA_PSS_SHA512 => Some(SignatureAlgorithm::RsaPssSha512),
        SignatureScheme::RSA_PKCS1_SHA256 => Some(SignatureAlgorithm::RsaPkcs1Sha256),
        SignatureScheme::RSA_PKCS1_SHA384 => Some(SignatureAlgorithm::RsaPkcs1Sha384),
        SignatureScheme::RSA_PKCS1_SHA512 => Some(SignatureAlgorithm::RsaPkcs1Sha512),
        SignatureScheme::ECDSA_NISTP256_SHA256 => Some(SignatureAlgorithm::EcdsaP256Sha256),
        SignatureScheme::ECDSA_NISTP384_SHA384 => Some(SignatureAlgorithm::EcdsaP384Sha384),
        _ => None,
    }
}

/// An oauth-core [`SigningKey`](fic_oauth_core::SigningKey) as a rustls
/// [`SigningKey`](rustls::sign::SigningKey).
///
/// [`choose_scheme`](rustls::sign::SigningKey::choose_scheme) picks the first scheme the peer
/// offers that the key supports, and returns `None` when there is none (for a client, rustls
/// then sends no certificate: use [`certified_key`], which fails the handshake instead).
pub struct IdentitySigningKey {
    key: Arc<dyn fic_oauth_core::SigningKey>,
}

impl IdentitySigningKey {
    /// Wraps `key`.
    pub fn new(key: Arc<dyn fic_oauth_core::SigningKey>) -> Self {
        Self { key }
    }

    /// Whether the key signs with at least one TLS signature scheme.
    pub fn has_tls_scheme(&self) -> bool {
        self.key
            .algorithms()
            .iter()
            .any(|a| signature_scheme(*a).is_some())
    }

    /// Whether the key signs with at least one scheme TLS 1.3 allows (see
    /// [`allowed_in_tls13`]). A key without one can authenticate over TLS 1.2 only.
    pub fn has_tls13_scheme(&self) -> bool {
        self.key
            .algorithms()
            .iter()
            .any(|a| allowed_in_tls13(*a) && signature_scheme(*a).is_some())
    }
}

impl fmt::Debug for IdentitySigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentitySigningKey")
            .field("kind", &self.key.kind())
            .field("algorithms", &self.key.algorithms())
            .finish()
    }
}

impl rustls::sign::SigningKey for IdentitySigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered.iter().find_map(|&scheme| {
            let algorithm = signature_algorithm(scheme)?;
            self.key.supports(algorithm).then(|| {
                Box::new(IdentitySigner {
                    key: Arc::clone(&self.key),
                    algorithm,
                    scheme,
                }) as Box<dyn Signer>
            })
        })
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        let family = self.key.algorithms().iter().find_map(|a| match a {
            SignatureAlgorithm::RsaPssSha256
            | SignatureAlgorithm::RsaPssSha384
            | SignatureAlgorithm::RsaPssSha512
            | SignatureAlgorithm::RsaPkcs1Sha256
            | SignatureAlgorithm::RsaPkcs1Sha384
            | SignatureAlgorithm::RsaPkcs1Sha512 => Some(rustls::SignatureAlgorithm::RSA),
            SignatureAlgorithm::EcdsaP256Sha256 | SignatureAlgorithm::EcdsaP384Sha384 => {
                Some(rustls::SignatureAlgorithm::ECDSA)
            }
            _ => None,
        });
        family.unwrap_or(rustls::SignatureAlgorithm::Anonymous)
    }
}

/// Signs one handshake with the chosen scheme.
struct IdentitySigner {
    key: Arc<dyn fic_oauth_core::SigningKey>,
    algorithm: SignatureAlgorithm,
    scheme: SignatureScheme,
}

impl fmt::Debug for IdentitySigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentitySigner")
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

impl Signer for IdentitySigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.key.sign(self.algorithm, message).map_err(|err| {
            tracing::debug!(code = %err.code(), scheme = ?self.scheme, "client key failed to sign the TLS handshake");
            rustls::Error::General(format!(
                "the client identity's key failed to sign ({})",
                err.code()
            ))
        })
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// An [`IdentitySigningKey`] that never lets rustls fall back to sending no certificate.
///
/// When the server accepts none of the key's schemes, it hands rustls a signer that fails,
/// so the handshake aborts (with a message naming both sides' schemes) before the client's
/// `Certificate` flight, and any request, goes out.
struct PresentOrFail {
    inner: IdentitySigningKey,
    thumbprint_s256: String,
}

impl fmt::Debug for PresentOrFail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentOrFail")
            .field("x5t#S256", &self.thumbprint_s256)
            .field("key", &self.inner)
            .finish()
    }
}

impl rustls::sign::SigningKey for PresentOrFail {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        if let Some(signer) = self.inner.choose_scheme(offered) {
            return Some(signer);
        }
        let key_schemes: Vec<SignatureScheme> = self
            .inner
            .key
            .algorithms()
            .iter()
            .filter_map(|a| signature_scheme(*a))
            .collect();
        tracing::warn!(
            thumbprint = %self.thumbprint_s256,
            server = ?offered,
            key = ?key_schemes,
            "the server accepts none of the client key's signature schemes; failing the handshake"
        );
        let message = format!(
            "client identity {} cannot present its certificate: its key signs with none of the \
             signature schemes the server accepts (server: {offered:?}; key: {key_schemes:?}); \
             refusing to continue without the certificate",
            self.thumbprint_s256
        );
        // The scheme is never sent: `sign` fails before the CertificateVerify is built.
        let scheme = offered
            .first()
            .or(key_schemes.first())
            .copied()
            .unwrap_or(SignatureScheme::RSA_PSS_SHA256);
        Some(Box::new(RefusingSigner { scheme, message }))
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        self.inner.algorithm()
    }
}

/// The signer of a handshake the key cannot sign: it fails with the reason.
#[derive(Debug)]
struct RefusingSigner {
    scheme: SignatureScheme,
    message: String,
}

impl Signer for RefusingSigner {
    fn sign(&self, _message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        Err(rustls::Error::General(self.message.clone()))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// The rustls [`CertifiedKey`] of an identity: its chain and its key behind
/// [`IdentitySigningKey`].
///
/// When a server asks for a client certificate and accepts none of the key's signature
/// schemes, the handshake fails (rustls error "client identity ... cannot present its
/// certificate"; the transport reports `tls_handshake_failed`) instead of continuing without
/// the certificate.
///
/// Fails with `invalid_certificate` when the key signs with no TLS signature scheme.
pub fn certified_key(identity: &ClientIdentity) -> Result<CertifiedKey, Error> {
    let key = IdentitySigningKey::new(Arc::clone(identity.key()));
    if !key.has_tls_scheme() {
        return Err(Error::new(
            ErrorCode::INVALID_CERTIFICATE,
            format!(
                "the key of client identity {} supports no TLS signature scheme",
                identity.thumbprint_s256()
            ),
        ));
    }
    let chain = identity
        .chain_der()
        .iter()
        .map(|der| CertificateDer::from(der.clone()))
        .collect();
    let key = PresentOrFail {
        inner: key,
        thumbprint_s256: identity.thumbprint_s256().to_owned(),
    };
    Ok(CertifiedKey::new(chain, Arc::new(key)))
}

/// A client-certificate resolver that always presents one identity.
///
/// Whenever the server asks for a client certificate, the identity's chain is sent and the
/// handshake is signed with its key through [`IdentitySigningKey`].
pub struct IdentityCertResolver {
    certified: Arc<CertifiedKey>,
    thumbprint_s256: String,
    tls13_capable: bool,
}

impl IdentityCertResolver {
    /// A resolver for `identity`; see [`certified_key`] for the errors.
    pub fn new(identity: &ClientIdentity) -> Result<Self, Error> {
        Ok(Self {
            certified: Arc::new(certified_key(identity)?),
            thumbprint_s256: identity.thumbprint_s256().to_owned(),
            tls13_capable: IdentitySigningKey::new(Arc::clone(identity.key())).has_tls13_scheme(),
        })
    }

    /// The `x5t#S256` of the identity this resolver presents.
    pub fn thumbprint_s256(&self) -> &str {
        &self.thumbprint_s256
    }

    /// Whether the identity's key can sign in TLS 1.3. When it cannot (an RSA key that signs
    /// PKCS#1 v1.5 only), a configuration using this resolver must be limited to TLS 1.2, or
    /// a TLS 1.3 server asking for the certificate makes the handshake fail.
    pub fn tls13_capable(&self) -> bool {
        self.tls13_capable
    }
}

impl fmt::Debug for IdentityCertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityCertResolver")
            .field("x5t#S256", &self.thumbprint_s256)
            .finish_non_exhaustive()
    }
}

impl ResolvesClientCert for IdentityCertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        tracing::debug!(thumbprint = %self.thumbprint_s256, "presenting TLS client certificate");
        Some(Arc::clone(&self.certified))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fic_oauth_core::KeyKind;
    use rustls::sign::SigningKey as _;
    use std::sync::Mutex;

    #[derive(Debug)]
    struct FakeKey {
        kind: KeyKind,
        algorithms: Vec<SignatureAlgorithm>,
        calls: Mutex<Vec<(SignatureAlgorithm, Vec<u8>)>>,
        fail: bool,
    }

    impl FakeKey {
        fn new(kind: KeyKind, algorithms: &[SignatureAlgorithm]) -> Arc<Self> {
            Arc::new(Self {
                kind,
                algorithms: algorithms.to_vec(),
                calls: Mutex::new(Vec::new()),
                fail: false,
            })
        }
    }

    impl fic_oauth_core::SigningKey for FakeKey {
        fn kind(&self) -> KeyKind {
            self.kind
        }
        fn algorithms(&self) -> &[SignatureAlgorithm] {
            &self.algorithms
        }
        fn sign(&self, algorithm: SignatureAlgorithm, message: &[u8]) -> Result<Vec<u8>, Error> {
            if self.fail {
                return Err(Error::new(ErrorCode::SIGNING_FAILED, "hsm offline"));
            }
            self.calls
                .lock()
                .unwrap()
                .push((algorithm, message.to_vec()));
            Ok(b"signature".to_vec())
        }
    }

    const ALL: [SignatureAlgorithm; 8] = [
        SignatureAlgorithm::RsaPssSha256,
        SignatureAlgorithm::RsaPssSha384,
        SignatureAlgorithm::RsaPssSha512,
        SignatureAlgorithm::RsaPkcs1Sha256,
        SignatureAlgorithm::RsaPkcs1Sha384,
        SignatureAlgorithm::RsaPkcs1Sha512,
        SignatureAlgorithm::EcdsaP256Sha256,
        SignatureAlgorithm::EcdsaP384Sha384,
    ];

    #[test]
    fn schemes_round_trip() {
        for algorithm in ALL {
            let scheme = signature_scheme(algorithm).unwrap();
            assert_eq!(signature_algorithm(scheme), Some(algorithm));
        }
        assert_eq!(
            signature_scheme(SignatureAlgorithm::EcdsaP256Sha256),
            Some(SignatureScheme::ECDSA_NISTP256_SHA256)
        );
        assert_eq!(signature_algorithm(SignatureScheme::ED25519), None);
        assert_eq!(signature_algorithm(SignatureScheme::RSA_PKCS1_SHA1), None);
    }

    #[test]
    fn chooses_the_first_offered_scheme_the_key_supports() {
        let fake = FakeKey::new(
            KeyKind::Rsa { bits: 2048 },
            &[
                SignatureAlgorithm::RsaPkcs1Sha256,
                SignatureAlgorithm::RsaPssSha256,
            ],
        );
        let key = IdentitySigningKey::new(fake.clone());
        assert_eq!(key.algorithm(), rustls::SignatureAlgorithm::RSA);
        let offered = [
            SignatureScheme::ED25519,
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PKCS1_SHA256,
        ];
        let signer = key.choose_scheme(&offered).unwrap();
        assert_eq!(signer.scheme(), SignatureScheme::RSA_PSS_SHA256);
        assert_eq!(signer.sign(b"transcript").unwrap(), b"signature");
        assert_eq!(
            fake.calls.lock().unwrap().as_slice(),
            &[(SignatureAlgorithm::RsaPssSha256, b"transcript".to_vec())]
        );
        assert!(key
            .choose_scheme(&[
                SignatureScheme::ECDSA_NISTP256_SHA256,
                SignatureScheme::ED25519
            ])
            .is_none());
    }

    #[test]
    fn ecdsa_keys_only_take_their_curve() {
        let key = IdentitySigningKey::new(FakeKey::new(
            KeyKind::EcP256,
            &[SignatureAlgorithm::EcdsaP256Sha256],
        ));
        assert_eq!(key.algorithm(), rustls::SignatureAlgorithm::ECDSA);
        assert!(key
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP384_SHA384])
            .is_none());
        let signer = key
            .choose_scheme(&[
                SignatureScheme::ECDSA_NISTP384_SHA384,
                SignatureScheme::ECDSA_NISTP256_SHA256,
            ])
            .unwrap();
        assert_eq!(signer.scheme(), SignatureScheme::ECDSA_NISTP256_SHA256);
    }

    #[test]
    fn signing_failures_do_not_carry_the_key_message() {
        let fake = Arc::new(FakeKey {
            kind: KeyKind::EcP256,
            algorithms: vec![SignatureAlgorithm::EcdsaP256Sha256],
            calls: Mutex::new(Vec::new()),
            fail: true,
        });
        let key = IdentitySigningKey::new(fake);
        let signer = key
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
            .unwrap();
        let err = signer.sign(b"m").unwrap_err().to_string();
        assert!(err.contains("signing_failed"), "{err}");
        assert!(!err.contains("hsm offline"), "{err}");
    }

    #[test]
    fn certified_key_carries_the_chain_and_refuses_keys_without_tls_schemes() {
        let identity = ClientIdentity::new(
            vec![b"leaf".to_vec(), b"intermediate".to_vec()],
            FakeKey::new(KeyKind::EcP256, &[SignatureAlgorithm::EcdsaP256Sha256]),
        )
        .unwrap();
        let certified = certified_key(&identity).unwrap();
        assert_eq!(certified.cert.len(), 2);
        assert_eq!(certified.cert[0].as_ref(), b"leaf");
        assert_eq!(certified.cert[1].as_ref(), b"intermediate");
        let resolver = IdentityCertResolver::new(&identity).unwrap();
        assert!(resolver.has_certs());
        assert_eq!(resolver.thumbprint_s256(), identity.thumbprint_s256());
        let resolved = resolver
            .resolve(&[], &[SignatureScheme::ECDSA_NISTP256_SHA256])
            .unwrap();
        assert_eq!(resolved.cert[0].as_ref(), b"leaf");

        let keyless =
            ClientIdentity::new(vec![b"leaf".to_vec()], FakeKey::new(KeyKind::EcP256, &[]))
                .unwrap();
        let err = certified_key(&keyless).unwrap_err();
        assert_eq!(err.code(), &ErrorCode::INVALID_CERTIFICATE);
    }

    #[test]
    fn a_key_the_server_cannot_verify_fails_the_handshake_instead_of_sending_no_certificate() {
        let fake = FakeKey::new(KeyKind::EcP256, &[SignatureAlgorithm::EcdsaP256Sha256]);
        let identity = ClientIdentity::new(vec![b"leaf".to_vec()], fake.clone()).unwrap();
        let certified = certified_key(&identity).unwrap();

        // A scheme in common: the key signs.
        let signer = certified
            .key
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
            .unwrap();
        assert_eq!(signer.scheme(), SignatureScheme::ECDSA_NISTP256_SHA256);
        assert_eq!(signer.sign(b"t").unwrap(), b"signature");

        // None in common: rustls would send an empty Certificate on `None`; the signer
        // handed back instead fails, naming the identity and both sides' schemes.
        let offered = [
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::ECDSA_NISTP384_SHA384,
        ];
        let signer = certified.key.choose_scheme(&offered).unwrap();
        let err = signer.sign(b"transcript").unwrap_err().to_string();
        assert!(err.contains("cannot present its certificate"), "{err}");
        assert!(err.contains(identity.thumbprint_s256()), "{err}");
        assert!(err.contains("ECDSA_NISTP384_SHA384"), "{err}");
        assert!(err.contains("ECDSA_NISTP256_SHA256"), "{err}");
        // The key itself was only asked once, for the scheme in common.
        assert_eq!(fake.calls.lock().unwrap().len(), 1);
        // An empty offer fails too.
        assert!(certified
            .key
            .choose_scheme(&[])
            .unwrap()
            .sign(b"m")
            .is_err());
    }

    #[test]
    fn pkcs1_only_rsa_keys_are_not_tls13_capable() {
        let pkcs1 = FakeKey::new(
            KeyKind::Rsa { bits: 2048 },
            &[
                SignatureAlgorithm::RsaPkcs1Sha256,
                SignatureAlgorithm::RsaPkcs1Sha384,
            ],
        );
        let key = IdentitySigningKey::new(pkcs1.clone());
        assert!(key.has_tls_scheme());
        assert!(!key.has_tls13_scheme());
        let identity = ClientIdentity::new(vec![b"leaf".to_vec()], pkcs1).unwrap();
        assert!(!IdentityCertResolver::new(&identity)
            .unwrap()
            .tls13_capable());

        for algorithms in [
            &[
                SignatureAlgorithm::RsaPkcs1Sha256,
                SignatureAlgorithm::RsaPssSha256,
            ][..],
            &[SignatureAlgorithm::EcdsaP256Sha256][..],
            &[SignatureAlgorithm::EcdsaP384Sha384][..],
        ] {
            let fake = FakeKey::new(KeyKind::Rsa { bits: 2048 }, algorithms);
            let identity = ClientIdentity::new(vec![b"leaf".to_vec()], fake).unwrap();
            let resolver = IdentityCertResolver::new(&identity).unwrap();
            assert!(resolver.tls13_capable(), "{algorithms:?}");
        }
        assert!(!allowed_in_tls13(SignatureAlgorithm::RsaPkcs1Sha512));
        assert!(allowed_in_tls13(SignatureAlgorithm::RsaPssSha512));
    }
}
