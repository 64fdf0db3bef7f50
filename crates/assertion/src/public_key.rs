//! Public keys as found in a certificate's SubjectPublicKeyInfo, and the comparison of a key
//! with a certificate.

use fic_oauth_core::KeyKind;

use crate::der::{self, Reader};

/// Object identifier contents (without tag and length).
pub(crate) mod oid {
    /// rsaEncryption, 1.2.840.113549.1.1.1
    pub(crate) const RSA_ENCRYPTION: &[u8] =
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    /// id-RSASSA-PSS, 1.2.840.113549.1.1.10
    pub(crate) const RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
    /// id-ecPublicKey, 1.2.840.10045.2.1
    pub(crate) const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    /// prime256v1 / secp256r1, 1.2.840.10045.3.1.7
    pub(crate) const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    /// secp384r1, 1.3.132.0.34
    pub(crate) const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
    /// secp521r1, 1.3.132.0.35
    pub(crate) const P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];
    /// secp256k1, 1.3.132.0.10
    pub(crate) const SECP256K1: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x0a];
    /// id-Ed25519, 1.3.101.112
    pub(crate) const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
    /// id-Ed448, 1.3.101.113
    pub(crate) const ED448: &[u8] = &[0x2b, 0x65, 0x71];
    /// id-dsa, 1.2.840.10040.4.1
    pub(crate) const DSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01];

    /// A readable name of a key algorithm or curve, for error messages.
    pub(crate) fn name(oid: &[u8]) -> &'static str {
        match oid {
            RSA_ENCRYPTION => "RSA",
            RSASSA_PSS => "RSASSA-PSS-only RSA",
            EC_PUBLIC_KEY => "EC",
            P256 => "P-256",
            P384 => "P-384",
            P521 => "P-521",
            SECP256K1 => "secp256k1",
            ED25519 => "Ed25519",
            ED448 => "Ed448",
            DSA => "DSA",
            _ => "unknown",
        }
    }
}

/// The NIST curves this crate signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Curve {
    P256,
    P384,
}

impl Curve {
    pub(crate) fn from_oid(oid: &[u8]) -> Option<Self> {
        match oid {
            oid::P256 => Some(Self::P256),
            oid::P384 => Some(Self::P384),
            _ => None,
        }
    }

    #[cfg(any(feature = "ring", feature = "aws-lc-rs"))]
    pub(crate) fn oid(self) -> &'static [u8] {
        match self {
            Self::P256 => oid::P256,
            Self::P384 => oid::P384,
        }
    }

    pub(crate) fn kind(self) -> KeyKind {
        match self {
            Self::P256 => KeyKind::EcP256,
            Self::P384 => KeyKind::EcP384,
        }
    }
}

/// A public key, normalised for comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PublicKey {
    /// RSA: modulus and public exponent as unsigned big-endian bytes without leading zeros.
    Rsa { modulus: Vec<u8>, exponent: Vec<u8> },
    /// ECDSA on a supported curve: the SEC1 encoded point (as in the certificate).
    Ec { curve: Curve, point: Vec<u8> },
    /// Anything else (another curve, another algorithm): the algorithm and curve names.
    Other { description: String },
}

impl PublicKey {
    /// Parses a DER `RSAPublicKey` (PKCS#1): `SEQUENCE { modulus INTEGER, exponent INTEGER }`.
    pub(crate) fn from_rsa_public_key(der_bytes: &[u8]) -> Option<Self> {
        let mut reader = Reader::new(der::single(der_bytes, der::SEQUENCE)?);
        let modulus = der::unsigned(reader.expect(der::INTEGER)?)?;
        let exponent = der::unsigned(reader.expect(der::INTEGER)?)?;
        if !reader.is_empty() || modulus.is_empty() || exponent.is_empty() {
            return None;
        }
        Some(Self::Rsa {
            modulus: modulus.to_vec(),
            exponent: exponent.to_vec(),
        })
    }

    /// Parses a DER `SubjectPublicKeyInfo`.
    pub(crate) fn from_spki(spki: &[u8]) -> Option<Self> {
        let mut reader = Reader::new(der::single(spki, der::SEQUENCE)?);
        let mut algorithm = Reader::new(reader.expect(der::SEQUENCE)?);
        let bits = reader.expect(der::BIT_STRING)?;
        if !reader.is_empty() {
            return None;
        }
        let algorithm_oid = algorithm.expect(der::OID)?;
        // A BIT STRING starts with its count of unused bits, which must be 0 for keys.
        let (&unused, key) = bits.split_first()?;
        if unused != 0 {
            return None;
        }
        match algorithm_oid {
            oid::RSA_ENCRYPTION => Self::from_rsa_public_key(key),
            oid::EC_PUBLIC_KEY => {
                let curve_oid = algorithm.optional(der::OID);
                match curve_oid.and_then(Curve::from_oid) {
                    Some(curve) => Some(Self::Ec {
                        curve,
                        point: key.to_vec(),
                    }),
                    None => Some(Self::Other {
                        description: format!(
                            "EC key on curve {}",
                            curve_oid.map_or("(not named)", oid::name)
                        ),
                    }),
                }
            }
            other => Some(Self::Other {
                description: format!("{} key", oid::name(other)),
            }),
        }
    }

    /// The key kind this public key belongs to, when it is one we sign with.
    pub(crate) fn kind(&self) -> Option<KeyKind> {
        match self {
            Self::Rsa { modulus, .. } => Some(KeyKind::Rsa {
                bits: modulus_bits(modulus),
            }),
            Self::Ec { curve, .. } => Some(curve.kind()),
            Self::Other { .. } => None,
        }
    }

    /// A short description for error messages (algorithm and size, never key bytes).
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Rsa { modulus, .. } => format!("RSA-{} key", modulus_bits(modulus)),
            Self::Ec { curve, .. } => match curve {
                Curve::P256 => "EC P-256 key".to_owned(),
                Curve::P384 => "EC P-384 key".to_owned(),
            },
            Self::Other { description } => description.clone(),
        }
    }
}

/// The size in bits of an RSA modulus given without leading zero bytes.
pub(crate) fn modulus_bits(modulus: &[u8]) -> u32 {
    let Some(first) = modulus.first() else {
        return 0;
    };
    let bytes = u32::try_from(modulus.len()).unwrap_or(u32::MAX / 8);
    bytes.saturating_mul(8) - first.leading_zeros()
}

/// Describes a [`KeyKind`] for error messages.
pub(crate) fn describe_kind(kind: KeyKind) -> String {
    match kind {
        KeyKind::Rsa { bits } => format!("RSA-{bits} key"),
        KeyKind::EcP256 => "EC P-256 key".to_owned(),
        KeyKind::EcP384 => "EC P-384 key".to_owned(),
        other => format!("{other:?} key"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modulus_bits_counts_significant_bits() {
        assert_eq!(modulus_bits(&[]), 0);
        assert_eq!(modulus_bits(&[0x01]), 1);
        assert_eq!(modulus_bits(&[0x80, 0x00]), 16);
        assert_eq!(modulus_bits(&[0x7f; 256]), 2047);
    }

    #[test]
    fn malformed_spki_is_none() {
        assert_eq!(PublicKey::from_spki(&[]), None);
        assert_eq!(PublicKey::from_spki(&[0x30, 0x00]), None);
        assert_eq!(
            PublicKey::from_rsa_public_key(&[0x30, 0x03, 0x02, 0x01, 0x01]),
            None
        );
    }
}
