//! The key material seam: a certificate chain plus a private key, used both for the TLS
//! handshake (mTLS, by the transport) and for signing client assertions (by the assertion crate).
//!
//! The private key is behind the [`SigningKey`] trait, so a key held in an HSM, a TPM or an OS
//! store plugs in once and serves both uses. The software implementation (PEM, DER, PKCS#12)
//! lives in `fic-assertion`.
//!
//! ```
//! use std::sync::Arc;
//! use fic_oauth_core::identity::{ClientIdentity, KeyKind, SignatureAlgorithm, SigningKey};
//! use fic_oauth_core::{Error, ErrorCode};
//!
//! /// A key held somewhere else (here: a fake that only says what it is).
//! #[derive(Debug)]
//! struct RemoteKey;
//!
//! impl SigningKey for RemoteKey {
//!     fn kind(&self) -> KeyKind { KeyKind::Rsa { bits: 2048 } }
//!     fn algorithms(&self) -> &[SignatureAlgorithm] {
//!         &[SignatureAlgorithm::RsaPssSha256, SignatureAlgorithm::RsaPkcs1Sha256]
//!     }
//!     fn sign(&self, _algorithm: SignatureAlgorithm, _message: &[u8]) -> Result<Vec<u8>, Error> {
//!         Err(Error::new(ErrorCode::SIGNING_FAILED, "the HSM is offline"))
//!     }
//! }
//!
//! let leaf_der = vec![0x30, 0x03, 0x02, 0x01, 0x01]; // a certificate's DER bytes
//! let identity = ClientIdentity::new(vec![leaf_der], Arc::new(RemoteKey)).unwrap();
//! assert_eq!(identity.thumbprint_s256().len(), 43);
//! assert!(identity.key().supports(SignatureAlgorithm::RsaPssSha256));
//! ```

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, ErrorCode};
use crate::thumbprint;

/// The kind of a private key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyKind {
    /// An RSA key of the given modulus size.
    Rsa {
        /// Modulus size in bits.
        bits: u32,
    },
    /// An ECDSA key on NIST P-256.
    EcP256,
    /// An ECDSA key on NIST P-384.
    EcP384,
}

/// A signature algorithm a [`SigningKey`] can produce.
///
/// The names follow TLS 1.3's signature schemes; the JWT `alg` each maps to is given by
/// [`SignatureAlgorithm::jwt_alg`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignatureAlgorithm {
    /// RSASSA-PSS, SHA-256, MGF1-SHA-256, 32-byte salt (JWT `PS256`).
    RsaPssSha256,
    /// RSASSA-PSS, SHA-384, 48-byte salt (TLS only).
    RsaPssSha384,
    /// RSASSA-PSS, SHA-512, 64-byte salt (TLS only).
    RsaPssSha512,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (JWT `RS256`).
    RsaPkcs1Sha256,
    /// RSASSA-PKCS1-v1_5 with SHA-384 (TLS only).
    RsaPkcs1Sha384,
    /// RSASSA-PKCS1-v1_5 with SHA-512 (TLS only).
    RsaPkcs1Sha512,
    /// ECDSA P-256 with SHA-256, signature as ASN.1 DER (as TLS wants it). For JWT `ES256`,
    /// convert to the fixed `r‖s` form.
    EcdsaP256Sha256,
    /// ECDSA P-384 with SHA-384, ASN.1 DER signature (TLS only).
    EcdsaP384Sha384,
}

impl SignatureAlgorithm {
    /// The JWS `alg` this algorithm produces, if JWTs use it here.
    pub fn jwt_alg(self) -> Option<&'static str> {
        match self {
            Self::RsaPssSha256 => Some("PS256"),
            Self::RsaPkcs1Sha256 => Some("RS256"),
            Self::EcdsaP256Sha256 => Some("ES256"),
            _ => None,
        }
    }
}

/// A private key that signs; its bytes may live anywhere (memory, HSM, OS store).
///
/// Implementations must be cheap to call concurrently; they never expose the key itself.
pub trait SigningKey: Send + Sync + fmt::Debug {
    /// What kind of key this is.
    fn kind(&self) -> KeyKind;

    /// The algorithms this key signs with, most preferred first.
    fn algorithms(&self) -> &[SignatureAlgorithm];

    /// Signs `message` (the key hashes it as the algorithm says).
    fn sign(&self, algorithm: SignatureAlgorithm, message: &[u8]) -> Result<Vec<u8>, Error>;

    /// Whether this key signs with `algorithm`.
    fn supports(&self, algorithm: SignatureAlgorithm) -> bool {
        self.algorithms().contains(&algorithm)
    }
}

/// A certificate chain (leaf first, DER) with the private key of the leaf.
///
/// This is the binding certificate of mTLS PoP, the certificate that signs jwt-bearer
/// assertions, and the TLS client identity handed to an [`HttpTransport`](crate::HttpTransport).
/// Clones are cheap and share the key. Two identities are the same identity when their leaf
/// certificates are byte-equal (compare [`ClientIdentity::thumbprint_s256`]).
#[derive(Clone)]
pub struct ClientIdentity {
    inner: Arc<IdentityInner>,
}

struct IdentityInner {
    chain: Vec<Vec<u8>>,
    key: Arc<dyn SigningKey>,
    thumbprint_s256: String,
    thumbprint_sha1: String,
}

impl ClientIdentity {
    /// An identity from a chain (leaf first, DER bytes) and the leaf's private key.
    ///
    /// The caller is responsible for the key matching the leaf (the loaders of `fic-assertion`
    /// check it); this only rejects an empty chain.
    pub fn new(chain: Vec<Vec<u8>>, key: Arc<dyn SigningKey>) -> Result<Self, Error> {
        let leaf = chain.first().ok_or_else(|| {
            Error::new(
                ErrorCode::INVALID_CERTIFICATE,
                "a client identity needs at least one certificate",
            )
        })?;
        let thumbprint_s256 = thumbprint::x5t_s256(leaf);
        let thumbprint_sha1 = thumbprint::x5t(leaf);
        Ok(Self {
            inner: Arc::new(IdentityInner {
                chain,
                key,
                thumbprint_s256,
                thumbprint_sha1,
            }),
        })
    }

    /// The leaf certificate (DER).
    pub fn leaf_der(&self) -> &[u8] {
        // `new` guarantees a non-empty chain.
        self.inner.chain.first().map_or(&[], Vec::as_slice)
    }

    /// The whole chain, leaf first (DER).
    pub fn chain_der(&self) -> &[Vec<u8>] {
        &self.inner.chain
    }

    /// The private key.
    pub fn key(&self) -> &Arc<dyn SigningKey> {
        &self.inner.key
    }

    /// `x5t#S256`: base64url (no padding) of the SHA-256 of the leaf's DER. This is the mtls_pop
    /// cache `kid` and the token's `cnf` value.
    pub fn thumbprint_s256(&self) -> &str {
        &self.inner.thumbprint_s256
    }

    /// `x5t`: base64url (no padding) of the SHA-1 of the leaf's DER (legacy authorities).
    pub fn thumbprint_sha1(&self) -> &str {
        &self.inner.thumbprint_sha1
    }

    /// Whether both are the same certificate.
    pub fn same_certificate(&self, other: &Self) -> bool {
        self.inner.thumbprint_s256 == other.inner.thumbprint_s256
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("x5t#S256", &self.inner.thumbprint_s256)
            .field("chain_len", &self.inner.chain.len())
            .field("key", &self.inner.key.kind())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct NoKey;
    impl SigningKey for NoKey {
        fn kind(&self) -> KeyKind {
            KeyKind::EcP256
        }
        fn algorithms(&self) -> &[SignatureAlgorithm] {
            &[SignatureAlgorithm::EcdsaP256Sha256]
        }
        fn sign(&self, _: SignatureAlgorithm, _: &[u8]) -> Result<Vec<u8>, Error> {
            Ok(vec![1])
        }
    }

    #[test]
    fn empty_chain_is_refused() {
        let err = ClientIdentity::new(vec![], Arc::new(NoKey)).unwrap_err();
        assert_eq!(err.code(), &ErrorCode::INVALID_CERTIFICATE);
    }

    #[test]
    fn identity_uses_leaf_thumbprints() {
        let a =
            ClientIdentity::new(vec![b"leaf".to_vec(), b"ca".to_vec()], Arc::new(NoKey)).unwrap();
        let b = ClientIdentity::new(vec![b"leaf".to_vec()], Arc::new(NoKey)).unwrap();
        assert!(a.same_certificate(&b));
        assert_eq!(a.thumbprint_s256(), thumbprint::x5t_s256(b"leaf"));
        assert_eq!(a.thumbprint_sha1(), thumbprint::x5t(b"leaf"));
        assert_eq!(a.leaf_der(), b"leaf");
        assert!(!format!("{a:?}").contains("leaf"));
        assert_eq!(SignatureAlgorithm::RsaPssSha256.jwt_alg(), Some("PS256"));
        assert_eq!(SignatureAlgorithm::RsaPssSha384.jwt_alg(), None);
    }
}
