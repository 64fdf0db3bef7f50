//! [`SoftwareKey`]: a private key held in memory, signing with ring or aws-lc-rs.

use std::fmt;
use std::path::Path;

use fic_oauth_core::{Error, ErrorCode, KeyKind, SignatureAlgorithm, SigningKey};
use rustls_pki_types::pem::{PemObject, SectionKind};
use zeroize::Zeroizing;

#[cfg(all(feature = "aws-lc-rs", not(feature = "ring")))]
use aws_lc_rs as backend;
#[cfg(feature = "ring")]
use ring as backend;

use backend::rand::SystemRandom;
use backend::signature::{self as sig, EcdsaKeyPair, KeyPair as _, RsaKeyPair};

use crate::codes;
use crate::der::{self, Reader};
use crate::public_key::{oid, Curve, PublicKey};

/// The name of the crypto library behind [`SoftwareKey`]: `"ring"` or `"aws-lc-rs"`.
#[cfg(feature = "ring")]
pub const BACKEND: &str = "ring";
/// The name of the crypto library behind [`SoftwareKey`]: `"ring"` or `"aws-lc-rs"`.
#[cfg(all(feature = "aws-lc-rs", not(feature = "ring")))]
pub const BACKEND: &str = "aws-lc-rs";

const RSA_ALGORITHMS: &[SignatureAlgorithm] = &[
    SignatureAlgorithm::RsaPssSha256,
    SignatureAlgorithm::RsaPssSha384,
    SignatureAlgorithm::RsaPssSha512,
    SignatureAlgorithm::RsaPkcs1Sha256,
    SignatureAlgorithm::RsaPkcs1Sha384,
    SignatureAlgorithm::RsaPkcs1Sha512,
];
const P256_ALGORITHMS: &[SignatureAlgorithm] = &[SignatureAlgorithm::EcdsaP256Sha256];
const P384_ALGORITHMS: &[SignatureAlgorithm] = &[SignatureAlgorithm::EcdsaP384Sha384];

/// The encoding of a private key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyFormat {
    /// PKCS#8 `PrivateKeyInfo` (`PRIVATE KEY`).
    Pkcs8,
    /// PKCS#1 `RSAPrivateKey` (`RSA PRIVATE KEY`).
    Pkcs1,
    /// SEC1 `ECPrivateKey` (`EC PRIVATE KEY`).
    Sec1,
}

impl KeyFormat {
    /// The format of a PEM section, if it is a private key.
    pub(crate) fn from_section(kind: SectionKind) -> Option<Self> {
        match kind {
            SectionKind::PrivateKey => Some(Self::Pkcs8),
            SectionKind::RsaPrivateKey => Some(Self::Pkcs1),
            SectionKind::EcPrivateKey => Some(Self::Sec1),
            _ => None,
        }
    }

    /// Recognises the format of a DER private key by its structure: the second element of the
    /// outer SEQUENCE is a SEQUENCE (PKCS#8 algorithm), an INTEGER (PKCS#1 modulus) or an OCTET
    /// STRING (SEC1 private scalar).
    fn detect(der_bytes: &[u8]) -> Option<Self> {
        let mut reader = Reader::new(der::single(der_bytes, der::SEQUENCE)?);
        reader.expect(der::INTEGER)?;
        match reader.peek_tag()? {
            der::SEQUENCE => Some(Self::Pkcs8),
            der::INTEGER => Some(Self::Pkcs1),
            der::OCTET_STRING => Some(Self::Sec1),
            _ => None,
        }
    }
}

fn malformed(what: &str) -> Error {
    Error::new(
        codes::INVALID_CERTIFICATE,
        format!("the private key is not valid {what}"),
    )
}

fn unsupported(what: &str) -> Error {
    Error::new(
        codes::UNSUPPORTED_KEY_TYPE,
        format!(
            "{what} keys are not supported; use RSA (2048 to 8192 bits) or ECDSA P-256 / P-384"
        ),
    )
}

/// The algorithm of a key and its PKCS#8 v1 form, as the backends want it.
struct Normalized {
    algorithm: Algorithm,
    pkcs8: Zeroizing<Vec<u8>>,
    /// An EC key whose SEC1 `ECPrivateKey` has no `[1] publicKey` (ring needs it).
    ec_public_key_missing: bool,
}

/// Whether a SEC1 `ECPrivateKey` lacks its optional `[1] publicKey` (as written by
/// `openssl ec -no_public`, and by some HSM and OS-store exports).
fn sec1_lacks_public_key(sec1: &[u8]) -> bool {
    const CONTEXT_1: u8 = 0xA1;
    let Some(body) = der::single(sec1, der::SEQUENCE) else {
        return false;
    };
    let mut reader = Reader::new(body);
    if reader.expect(der::INTEGER).is_none() || reader.expect(der::OCTET_STRING).is_none() {
        return false;
    }
    let _parameters = reader.optional(der::CONTEXT_0);
    reader.optional(CONTEXT_1).is_none()
}

/// ring reads the public key of an EC private key from the key itself and refuses keys
/// without it; aws-lc-rs computes it from the private scalar.
fn ec_public_key_missing_error() -> Error {
    Error::new(
        codes::INVALID_CERTIFICATE,
        "the EC private key does not include its public key, which the ring backend needs; \
         re-export the key with its public key (for example `openssl ec -in key.pem -out \
         key-with-public.pem`, which recomputes it), or build fic-assertion with the \
         `aws-lc-rs` feature instead of `ring`",
    )
}

#[derive(Clone, Copy)]
enum Algorithm {
    Rsa,
    Ec(Curve),
}

/// `AlgorithmIdentifier` of rsaEncryption with NULL parameters.
fn rsa_algorithm_identifier() -> Vec<u8> {
    let mut body = Vec::with_capacity(13);
    der::write(&mut body, der::OID, oid::RSA_ENCRYPTION);
    der::write(&mut body, der::NULL, &[]);
    let mut out = Vec::with_capacity(15);
    der::write(&mut out, der::SEQUENCE, &body);
    out
}

/// `AlgorithmIdentifier` of id-ecPublicKey with a named curve.
fn ec_algorithm_identifier(curve: Curve) -> Vec<u8> {
    let mut body = Vec::new();
    der::write(&mut body, der::OID, oid::EC_PUBLIC_KEY);
    der::write(&mut body, der::OID, curve.oid());
    let mut out = Vec::new();
    der::write(&mut out, der::SEQUENCE, &body);
    out
}

/// The curve named in a SEC1 `ECPrivateKey`'s `[0]` parameters, and whether it has its `[1]`
/// public key.
fn sec1_curve(sec1: &[u8]) -> Result<Option<&[u8]>, Error> {
    let body = der::single(sec1, der::SEQUENCE).ok_or_else(|| malformed("SEC1"))?;
    let mut reader = Reader::new(body);
    let version = reader
        .expect(der::INTEGER)
        .and_then(der::small_integer)
        .ok_or_else(|| malformed("SEC1"))?;
    if version != 1 {
        return Err(malformed("SEC1 (version must be 1)"));
    }
    reader
        .expect(der::OCTET_STRING)
        .ok_or_else(|| malformed("SEC1"))?;
    match reader.optional(der::CONTEXT_0) {
        Some(parameters) => der::single(parameters, der::OID)
            .map(Some)
            .ok_or_else(|| malformed("SEC1 (only named curves are supported)")),
        None => Ok(None),
    }
}

fn normalize(der_bytes: &[u8], format: KeyFormat) -> Result<Normalized, Error> {
    match format {
        KeyFormat::Pkcs8 => normalize_pkcs8(der_bytes),
        KeyFormat::Pkcs1 => {
            // RSAPrivateKey ::= SEQUENCE { version INTEGER, modulus INTEGER, ... }
            let mut reader = Reader::new(
                der::single(der_bytes, der::SEQUENCE).ok_or_else(|| malformed("PKCS#1"))?,
            );
            let (Some(_version), Some(_modulus)) =
                (reader.expect(der::INTEGER), reader.expect(der::INTEGER))
            else {
                return Err(malformed("PKCS#1"));
            };
            Ok(Normalized {
                algorithm: Algorithm::Rsa,
                pkcs8: der::pkcs8_v1(&rsa_algorithm_identifier(), der_bytes),
                ec_public_key_missing: false,
            })
        }
        KeyFormat::Sec1 => {
            let curve_oid = sec1_curve(der_bytes)?.ok_or_else(|| {
                malformed("SEC1 for this crate (the EC private key does not name its curve)")
            })?;
            let curve = Curve::from_oid(curve_oid)
                .ok_or_else(|| unsupported(&format!("EC {}", oid::name(curve_oid))))?;
            Ok(Normalized {
                algorithm: Algorithm::Ec(curve),
                pkcs8: der::pkcs8_v1(&ec_algorithm_identifier(curve), der_bytes),
                ec_public_key_missing: sec1_lacks_public_key(der_bytes),
            })
        }
    }
}

/// Checks a PKCS#8 key's algorithm and rewrites it as PKCS#8 v1 with the exact algorithm
/// identifier the backends expect (v2 public keys and attributes are dropped).
fn normalize_pkcs8(der_bytes: &[u8]) -> Result<Normalized, Error> {
    let body = der::single(der_bytes, der::SEQUENCE).ok_or_else(|| malformed("PKCS#8"))?;
    let mut reader = Reader::new(body);
    let version = reader
        .expect(der::INTEGER)
        .and_then(der::small_integer)
        .ok_or_else(|| malformed("PKCS#8"))?;
    if version > 1 {
        return Err(malformed("PKCS#8 (unknown version)"));
    }
    let mut algorithm = Reader::new(
        reader
            .expect(der::SEQUENCE)
            .ok_or_else(|| malformed("PKCS#8"))?,
    );
    let private_key = reader
        .expect(der::OCTET_STRING)
        .ok_or_else(|| malformed("PKCS#8"))?;
    let algorithm_oid = algorithm
        .expect(der::OID)
        .ok_or_else(|| malformed("PKCS#8"))?;
    match algorithm_oid {
        oid::RSA_ENCRYPTION => Ok(Normalized {
            algorithm: Algorithm::Rsa,
            pkcs8: der::pkcs8_v1(&rsa_algorithm_identifier(), private_key),
            ec_public_key_missing: false,
        }),
        oid::EC_PUBLIC_KEY => {
            let curve_oid = algorithm
                .optional(der::OID)
                .ok_or_else(|| malformed("PKCS#8 (only named curves are supported)"))?;
            let curve = Curve::from_oid(curve_oid)
                .ok_or_else(|| unsupported(&format!("EC {}", oid::name(curve_oid))))?;
            if let Some(inner) = sec1_curve(private_key)? {
                if inner != curve_oid {
                    return Err(malformed("PKCS#8 (the two curve names differ)"));
                }
            }
            Ok(Normalized {
                algorithm: Algorithm::Ec(curve),
                pkcs8: der::pkcs8_v1(&ec_algorithm_identifier(curve), private_key),
                ec_public_key_missing: sec1_lacks_public_key(private_key),
            })
        }
        other => Err(unsupported(oid::name(other))),
    }
}

enum Pair {
    Rsa(RsaKeyPair),
    Ecdsa(EcdsaKeyPair),
}

/// A private key held in memory (RSA 2048–8192 bits, ECDSA P-256 or P-384), implementing
/// [`SigningKey`] with ring (feature `ring`, the default) or aws-lc-rs (feature `aws-lc-rs`).
///
/// The same key signs the TLS handshake (mTLS) and client assertions. Load it from PEM or DER
/// (PKCS#8, PKCS#1 `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY`), or let the loaders of
/// [`load`](crate::load) pair it with its certificate. Wrap it in an `Arc` and hand it to
/// [`ClientIdentity::new`](fic_oauth_core::ClientIdentity::new) or
/// [`CertificateChain::with_key`](crate::CertificateChain::with_key).
///
/// With ring, an EC private key must include its public key (the optional `[1] publicKey`
/// of SEC1, which OpenSSL writes unless told `-no_public`): ring refuses keys without it, and
/// the error says to re-export the key with it (`openssl ec -in key.pem -out
/// key-with-public.pem`). aws-lc-rs computes the public key and accepts them.
///
/// The key's PKCS#8 bytes are kept in a buffer zeroized on drop. The backend's own key object
/// is freed by the backend: aws-lc-rs clears freed key memory, ring does not zeroize its RSA and
/// ECDSA key structures. `Debug` shows only the key kind.
///
/// ```
/// use fic_assertion::SoftwareKey;
/// use fic_oauth_core::{KeyKind, SignatureAlgorithm, SigningKey};
///
/// let generated = rcgen::KeyPair::generate()?; // ECDSA P-256
/// let key = SoftwareKey::from_pem(generated.serialize_pem().as_bytes())?;
/// assert_eq!(key.kind(), KeyKind::EcP256);
/// let signature = key.sign(SignatureAlgorithm::EcdsaP256Sha256, b"message")?;
/// assert!(!signature.is_empty());
/// assert_eq!(format!("{key:?}"), format!("SoftwareKey {{ kind: EcP256, backend: {:?}, .. }}", fic_assertion::BACKEND));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SoftwareKey {
    pair: Pair,
    kind: KeyKind,
    algorithms: &'static [SignatureAlgorithm],
    public_key: PublicKey,
    signature_len: usize,
    pkcs8: Zeroizing<Vec<u8>>,
    rng: SystemRandom,
}

impl SoftwareKey {
    /// Loads the first private key of a PEM input (`PRIVATE KEY`, `RSA PRIVATE KEY` or
    /// `EC PRIVATE KEY`); other sections (certificates) are skipped.
    ///
    /// Errors: `no_private_key` when there is none, `invalid_certificate` for malformed or
    /// encrypted keys, `unsupported_key_type` for other key types.
    pub fn from_pem(pem: &[u8]) -> Result<Self, Error> {
        check_not_encrypted(pem)?;
        for section in <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(pem) {
            let (kind, der_bytes) = section.map_err(|_| {
                Error::new(codes::INVALID_CERTIFICATE, "the key input is not valid PEM")
            })?;
            let der_bytes = Zeroizing::new(der_bytes);
            if let Some(format) = KeyFormat::from_section(kind) {
                return Self::from_der_format(&der_bytes, format);
            }
        }
        Err(Error::new(
            codes::NO_PRIVATE_KEY,
            "the PEM input has no private key section",
        ))
    }

    /// Loads a DER private key: PKCS#8, PKCS#1 or SEC1, recognised by its structure.
    pub fn from_der(der_bytes: &[u8]) -> Result<Self, Error> {
        if der_bytes.is_empty() {
            return Err(Error::new(
                codes::NO_PRIVATE_KEY,
                "the private key is empty",
            ));
        }
        let format = KeyFormat::detect(der_bytes).ok_or_else(|| {
            Error::new(
                codes::INVALID_CERTIFICATE,
                "the private key is not DER PKCS#8, PKCS#1 or SEC1",
            )
        })?;
        Self::from_der_format(der_bytes, format)
    }

    /// Loads a DER PKCS#8 (`PrivateKeyInfo`, unencrypted) private key.
    pub fn from_pkcs8_der(der_bytes: &[u8]) -> Result<Self, Error> {
        Self::from_der_format(der_bytes, KeyFormat::Pkcs8)
    }

    /// Loads a PEM private key from a file (see [`SoftwareKey::from_pem`]).
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::from_pem(&crate::load::read_key_file(path.as_ref())?)
    }

    /// Loads a DER private key from a file (see [`SoftwareKey::from_der`]).
    pub fn from_der_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::from_der(&crate::load::read_key_file(path.as_ref())?)
    }

    pub(crate) fn from_der_format(der_bytes: &[u8], format: KeyFormat) -> Result<Self, Error> {
        let Normalized {
            algorithm,
            pkcs8,
            ec_public_key_missing,
        } = normalize(der_bytes, format)?;
        let rng = SystemRandom::new();
        match algorithm {
            Algorithm::Rsa => {
                let pair =
                    RsaKeyPair::from_pkcs8(&pkcs8).map_err(|rejected| rejection(&rejected))?;
                let public_key = PublicKey::from_rsa_public_key(pair.public_key().as_ref())
                    .ok_or_else(|| {
                        Error::new(ErrorCode::INTERNAL, "the RSA public key is malformed")
                    })?;
                let (kind, signature_len) = match &public_key {
                    PublicKey::Rsa { modulus, .. } => (
                        KeyKind::Rsa {
                            bits: crate::public_key::modulus_bits(modulus),
                        },
                        modulus.len(),
                    ),
                    _ => return Err(Error::new(ErrorCode::INTERNAL, "unexpected key type")),
                };
                Ok(Self {
                    pair: Pair::Rsa(pair),
                    kind,
                    algorithms: RSA_ALGORITHMS,
                    public_key,
                    signature_len,
                    pkcs8,
                    rng,
                })
            }
            Algorithm::Ec(curve) => {
                let (signing, algorithms) = match curve {
                    Curve::P256 => (&sig::ECDSA_P256_SHA256_ASN1_SIGNING, P256_ALGORITHMS),
                    Curve::P384 => (&sig::ECDSA_P384_SHA384_ASN1_SIGNING, P384_ALGORITHMS),
                };
                #[cfg(feature = "ring")]
                let pair = EcdsaKeyPair::from_pkcs8(signing, &pkcs8, &rng);
                #[cfg(not(feature = "ring"))]
                let pair = EcdsaKeyPair::from_pkcs8(signing, &pkcs8);
                let pair = pair.map_err(|rejected| {
                    if ec_public_key_missing && cfg!(feature = "ring") {
                        ec_public_key_missing_error()
                    } else {
                        rejection(&rejected)
                    }
                })?;
                let public_key = PublicKey::Ec {
                    curve,
                    point: pair.public_key().as_ref().to_vec(),
                };
                Ok(Self {
                    pair: Pair::Ecdsa(pair),
                    kind: curve.kind(),
                    algorithms,
                    public_key,
                    signature_len: 0,
                    pkcs8,
                    rng,
                })
            }
        }
    }

    /// The public key, for comparing with a certificate.
    pub(crate) fn public(&self) -> &PublicKey {
        &self.public_key
    }

    /// The public key: the DER `RSAPublicKey` (PKCS#1) of an RSA key, the uncompressed SEC1
    /// point of an EC key (as in a certificate's SubjectPublicKeyInfo).
    pub fn public_key_bytes(&self) -> &[u8] {
        match &self.pair {
            Pair::Rsa(pair) => pair.public_key().as_ref(),
            Pair::Ecdsa(pair) => pair.public_key().as_ref(),
        }
    }

    /// The key as unencrypted PKCS#8 v1 DER, for a TLS stack that wants the key bytes (e.g.
    /// rustls `PrivateKeyDer::Pkcs8`). This is the private key: never log or persist it
    /// unencrypted. Prefer using the key through [`SigningKey`].
    pub fn expose_pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }
}

/// Maps a backend's key rejection to our codes. The rejection reasons are fixed strings
/// (`"TooSmall"`, `"InvalidEncoding"`...), never key material.
fn rejection(rejected: &impl fmt::Display) -> Error {
    let reason = rejected.to_string();
    match reason.as_str() {
        "TooSmall" | "TooLarge" | "PrivateModulusLenNotMultipleOf512Bits" => Error::new(
            codes::UNSUPPORTED_KEY_TYPE,
            format!(
                "the {BACKEND} backend refuses this RSA key size ({reason}); use 2048 to 8192 bits"
            ),
        ),
        _ => Error::new(
            codes::INVALID_CERTIFICATE,
            format!("the {BACKEND} backend rejected the private key ({reason})"),
        ),
    }
}

/// Refuses encrypted PEM keys with a clear message instead of "no private key".
pub(crate) fn check_not_encrypted(pem: &[u8]) -> Result<(), Error> {
    let contains = |needle: &[u8]| pem.windows(needle.len()).any(|window| window == needle);
    if contains(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || contains(b"Proc-Type: 4,ENCRYPTED") {
        return Err(Error::new(
            codes::INVALID_CERTIFICATE,
            "encrypted PEM private keys are not supported; decrypt the key (openssl pkcs8 -nocrypt) or use PKCS#12",
        ));
    }
    Ok(())
}

impl SigningKey for SoftwareKey {
    fn kind(&self) -> KeyKind {
        self.kind
    }

    fn algorithms(&self) -> &[SignatureAlgorithm] {
        self.algorithms
    }

    fn sign(&self, algorithm: SignatureAlgorithm, message: &[u8]) -> Result<Vec<u8>, Error> {
        let failed = || {
            Error::new(
                ErrorCode::SIGNING_FAILED,
                format!("the {BACKEND} backend could not sign with {algorithm:?}"),
            )
        };
        match &self.pair {
            Pair::Rsa(pair) => {
                let encoding: &'static dyn sig::RsaEncoding = match algorithm {
                    SignatureAlgorithm::RsaPssSha256 => &sig::RSA_PSS_SHA256,
                    SignatureAlgorithm::RsaPssSha384 => &sig::RSA_PSS_SHA384,
                    SignatureAlgorithm::RsaPssSha512 => &sig::RSA_PSS_SHA512,
                    SignatureAlgorithm::RsaPkcs1Sha256 => &sig::RSA_PKCS1_SHA256,
                    SignatureAlgorithm::RsaPkcs1Sha384 => &sig::RSA_PKCS1_SHA384,
                    SignatureAlgorithm::RsaPkcs1Sha512 => &sig::RSA_PKCS1_SHA512,
                    _ => return Err(not_supported(self.kind, algorithm)),
                };
                let mut signature = vec![0u8; self.signature_len];
                pair.sign(encoding, &self.rng, message, &mut signature)
                    .map_err(|_| failed())?;
                Ok(signature)
            }
            Pair::Ecdsa(pair) => {
                if !self.algorithms.contains(&algorithm) {
                    return Err(not_supported(self.kind, algorithm));
                }
                let signature = pair.sign(&self.rng, message).map_err(|_| failed())?;
                Ok(signature.as_ref().to_vec())
            }
        }
    }
}

fn not_supported(kind: KeyKind, algorithm: SignatureAlgorithm) -> Error {
    Error::new(
        ErrorCode::SIGNING_FAILED,
        format!(
            "a {} cannot sign with {algorithm:?}",
            crate::public_key::describe_kind(kind)
        ),
    )
}

impl fmt::Debug for SoftwareKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftwareKey")
            .field("kind", &self.kind)
            .field("backend", &BACKEND)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_formats_by_structure() {
        let pkcs8 = rcgen::KeyPair::generate().unwrap().serialize_der();
        assert_eq!(KeyFormat::detect(&pkcs8), Some(KeyFormat::Pkcs8));
        assert_eq!(KeyFormat::detect(&[0x30, 0x00]), None);
        assert_eq!(KeyFormat::detect(b"not der"), None);
    }

    #[test]
    fn pkcs8_with_explicit_curve_parameters_is_refused() {
        // SEQUENCE { INTEGER 0, SEQUENCE { OID ecPublicKey, SEQUENCE {} }, OCTET STRING {} }
        let mut algorithm = Vec::new();
        der::write(&mut algorithm, der::OID, oid::EC_PUBLIC_KEY);
        der::write(&mut algorithm, der::SEQUENCE, &[]);
        let mut identifier = Vec::new();
        der::write(&mut identifier, der::SEQUENCE, &algorithm);
        let key = der::pkcs8_v1(&identifier, &[]);
        let err = SoftwareKey::from_der(&key).unwrap_err();
        assert_eq!(err.code(), &codes::INVALID_CERTIFICATE);
    }

    /// A P-256 key as SEC1 without `[1] publicKey` (like `openssl ec -no_public`), and the
    /// public point of the original.
    fn p256_sec1_without_public_key() -> (Vec<u8>, Vec<u8>) {
        let generated = rcgen::KeyPair::generate().unwrap();
        let pkcs8 = generated.serialize_der();
        let mut outer = Reader::new(der::single(&pkcs8, der::SEQUENCE).unwrap());
        outer.expect(der::INTEGER).unwrap();
        outer.expect(der::SEQUENCE).unwrap();
        let sec1 = outer.expect(der::OCTET_STRING).unwrap();
        assert!(!sec1_lacks_public_key(sec1));
        let mut inner = Reader::new(der::single(sec1, der::SEQUENCE).unwrap());
        inner.expect(der::INTEGER).unwrap();
        let scalar = inner.expect(der::OCTET_STRING).unwrap();
        let mut body = Vec::new();
        der::write(&mut body, der::INTEGER, &[1]);
        der::write(&mut body, der::OCTET_STRING, scalar);
        let mut curve = Vec::new();
        der::write(&mut curve, der::OID, Curve::P256.oid());
        der::write(&mut body, der::CONTEXT_0, &curve);
        let mut stripped = Vec::new();
        der::write(&mut stripped, der::SEQUENCE, &body);
        assert!(sec1_lacks_public_key(&stripped));
        (stripped, generated.public_key_raw().to_vec())
    }

    #[cfg(feature = "ring")]
    #[test]
    fn ring_refuses_ec_keys_without_their_public_key_with_a_clear_message() {
        let (sec1, _) = p256_sec1_without_public_key();
        let pkcs8 = der::pkcs8_v1(&ec_algorithm_identifier(Curve::P256), &sec1);
        for err in [
            SoftwareKey::from_der(&sec1).unwrap_err(),
            SoftwareKey::from_der(&pkcs8).unwrap_err(),
        ] {
            assert_eq!(err.code(), &codes::INVALID_CERTIFICATE);
            assert!(
                err.message().contains("does not include its public key"),
                "{err}"
            );
            assert!(err.message().contains("openssl ec -in"), "{err}");
            assert!(err.message().contains("aws-lc-rs"), "{err}");
        }
        // Other EC rejections keep the backend's reason: here a zero private scalar (with
        // a public key present, so the message above does not apply).
        let generated = rcgen::KeyPair::generate().unwrap();
        let mut broken = generated.serialize_der();
        let at = broken
            .windows(5)
            .position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20])
            .unwrap()
            + 5;
        broken[at..at + 32].fill(0);
        let err = SoftwareKey::from_der(&broken).unwrap_err();
        assert!(err.message().contains("backend rejected"), "{err}");
    }

    #[cfg(not(feature = "ring"))]
    #[test]
    fn aws_lc_rs_accepts_ec_keys_without_their_public_key() {
        let (sec1, public) = p256_sec1_without_public_key();
        let key = SoftwareKey::from_der(&sec1).unwrap();
        assert_eq!(key.kind(), KeyKind::EcP256);
        assert_eq!(key.public_key_bytes(), public.as_slice());
    }

    #[test]
    fn rsa_pss_only_keys_are_unsupported() {
        let mut algorithm = Vec::new();
        der::write(&mut algorithm, der::OID, oid::RSASSA_PSS);
        let mut identifier = Vec::new();
        der::write(&mut identifier, der::SEQUENCE, &algorithm);
        let key = der::pkcs8_v1(&identifier, &[0x30, 0x00]);
        let err = SoftwareKey::from_der(&key).unwrap_err();
        assert_eq!(err.code(), &codes::UNSUPPORTED_KEY_TYPE);
        assert!(err.message().contains("RSASSA-PSS"), "{err}");
    }
}
