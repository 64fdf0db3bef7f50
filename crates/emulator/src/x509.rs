//! Certificate facts the emulator derives itself: thumbprints, names, public keys and chain
//! checks for subject name + issuer (SN+I) registrations.
//!
//! Thumbprints are computed here, independently of any client crate: `x5t#S256` is the
//! base64url (no padding) SHA-256 of the certificate DER, `x5t` the base64url SHA-1.

use std::time::SystemTime;

use sha1::{Digest as _, Sha1};
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION};
use x509_parser::prelude::FromDer as _;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::util::{b64url, sha256, unix};

/// The `x5t#S256` thumbprint of a DER certificate: base64url(SHA-256(DER)), no padding.
pub fn thumbprint_s256(der: &[u8]) -> String {
    b64url(sha256(der))
}

/// The `x5t` thumbprint of a DER certificate: base64url(SHA-1(DER)), no padding.
pub fn thumbprint_sha1(der: &[u8]) -> String {
    b64url(Sha1::digest(der))
}

/// The hexadecimal SHA-1 thumbprint (upper case), as Entra prints it in error messages.
pub(crate) fn thumbprint_sha1_hex(der: &[u8]) -> String {
    use std::fmt::Write as _;
    Sha1::digest(der).iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02X}");
        out
    })
}

/// A public key in the forms ring verifies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PublicKey {
    /// An RSA key as a DER `RSAPublicKey`.
    Rsa(Vec<u8>),
    /// An RSA key as big-endian modulus and exponent.
    RsaComponents { n: Vec<u8>, e: Vec<u8> },
    /// A P-256 key as an uncompressed point.
    EcP256(Vec<u8>),
}

/// What the emulator needs from one certificate.
#[derive(Clone, Debug)]
pub(crate) struct CertFacts {
    pub(crate) subject: String,
    pub(crate) subject_cn: Option<String>,
    pub(crate) not_before: u64,
    pub(crate) not_after: u64,
    pub(crate) public_key: Option<PublicKey>,
}

fn public_key_of(spki: &SubjectPublicKeyInfo<'_>) -> Option<PublicKey> {
    let oid = &spki.algorithm.algorithm;
    if *oid == OID_PKCS1_RSAENCRYPTION {
        return Some(PublicKey::Rsa(spki.subject_public_key.data.to_vec()));
    }
    if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
        if curve == OID_EC_P256 {
            return Some(PublicKey::EcP256(spki.subject_public_key.data.to_vec()));
        }
    }
    None
}

fn facts_of(cert: &X509Certificate<'_>) -> CertFacts {
    let subject_cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    CertFacts {
        subject: cert.subject().to_string(),
        subject_cn,
        not_before: u64::try_from(cert.validity().not_before.timestamp()).unwrap_or(0),
        not_after: u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0),
        public_key: public_key_of(cert.public_key()),
    }
}

/// Parses a DER certificate; `None` when it is not one.
pub(crate) fn facts(der: &[u8]) -> Option<CertFacts> {
    let (rest, cert) = X509Certificate::from_der(der).ok()?;
    if !rest.is_empty() {
        return None;
    }
    Some(facts_of(&cert))
}

/// True when `subject` names the certificate: equal (ASCII case-insensitive) to its common name
/// or to its whole subject distinguished name (`CN=…, O=…` as x509-parser prints it), with or
/// without a leading `CN=`.
pub(crate) fn subject_matches(facts: &CertFacts, subject: &str) -> bool {
    let wanted = subject.trim();
    let bare = wanted
        .strip_prefix("CN=")
        .or_else(|| wanted.strip_prefix("cn="))
        .unwrap_or(wanted);
    facts.subject.eq_ignore_ascii_case(wanted)
        || facts
            .subject_cn
            .as_deref()
            .is_some_and(|cn| cn.eq_ignore_ascii_case(bare))
}

/// Checks that `chain` (leaf first, then intermediates as sent) leads, by issuer names and
/// signatures, to `anchor` (a trusted issuing CA certificate), every certificate being valid at
/// `now` and every intermediate being a CA.
pub(crate) fn verify_chain(
    chain: &[Vec<u8>],
    anchor_der: &[u8],
    now: SystemTime,
) -> Result<(), String> {
    let now = unix(now);
    let parsed: Vec<X509Certificate<'_>> = chain
        .iter()
        .map(|der| {
            X509Certificate::from_der(der)
                .map(|(_, c)| c)
                .map_err(|_| "a certificate in the chain is not valid DER".to_owned())
        })
        .collect::<Result<_, _>>()?;
    let Some(leaf) = parsed.first() else {
        return Err("the certificate chain is empty".to_owned());
    };
    let (_, anchor) = X509Certificate::from_der(anchor_der)
        .map_err(|_| "the trusted issuer certificate is not valid DER".to_owned())?;
    let in_validity = |cert: &X509Certificate<'_>| {
        let nb = cert.validity().not_before.timestamp();
        let na = cert.validity().not_after.timestamp();
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        nb <= now && now <= na
    };
    let mut current = leaf;
    for _ in 0..8 {
        if !in_validity(current) {
            return Err(format!(
                "certificate '{}' is outside its validity period",
                current.subject()
            ));
        }
        if current.issuer().as_raw() == anchor.subject().as_raw()
            && current.verify_signature(Some(anchor.public_key())).is_ok()
        {
            return if in_validity(&anchor) {
                Ok(())
            } else {
                Err("the trusted issuer certificate is outside its validity period".to_owned())
            };
        }
        if current.subject().as_raw() == anchor.subject().as_raw()
            && current.public_key().raw == anchor.public_key().raw
        {
            return Ok(());
        }
        let next = parsed.iter().skip(1).find(|candidate| {
            candidate.subject().as_raw() == current.issuer().as_raw()
                && current
                    .verify_signature(Some(candidate.public_key()))
                    .is_ok()
        });
        match next {
            Some(next) => {
                let is_ca = next
                    .basic_constraints()
                    .ok()
                    .flatten()
                    .is_some_and(|bc| bc.value.ca);
                if !is_ca {
                    return Err(format!("certificate '{}' is not a CA", next.subject()));
                }
                current = next;
            }
            None => {
                return Err(format!(
                    "no certificate in the chain issued '{}' and its issuer '{}' is not the trusted issuer '{}'",
                    current.subject(),
                    current.issuer(),
                    anchor.subject()
                ))
            }
        }
    }
    Err("the certificate chain is too long".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_of_known_bytes() {
        // SHA-256("abc") and SHA-1("abc"), base64url.
        assert_eq!(
            thumbprint_s256(b"abc"),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
        assert_eq!(thumbprint_sha1(b"abc"), "qZk-NkcGgWq6PiVxeFDCbJzQ2J0");
        assert_eq!(
            thumbprint_sha1_hex(b"abc"),
            "A9993E364706816ABA3E25717850C26C9CD0D89D"
        );
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(facts(b"nope").is_none());
    }
}
