//! One-call loaders of a [`ClientIdentity`](crate::ClientIdentity) (certificate chain + private
//! key) from PEM, DER and PKCS#12, from bytes or files.
//!
//! Every loader finds the certificate whose public key is the private key's, puts it first
//! (the leaf), follows with its issuers as far as they are present, then any other certificates
//! in their original order; so a PEM with the CA before the leaf, or a PKCS#12 in any order,
//! gives the same chain.
//!
//! | input | function |
//! |---|---|
//! | one PEM with the chain and the key (any order) | [`from_pem`], [`from_pem_file`] |
//! | a PEM chain and a PEM key, separately | [`from_pem_parts`], [`from_pem_files`] |
//! | a DER certificate (or several concatenated) and a DER key | [`from_der`], [`from_der_files`] |
//! | PKCS#12 (`.pfx`, `.p12`) with its password | [`from_pkcs12`], [`from_pkcs12_file`] |
//!
//! Keys may be PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`),
//! unencrypted: RSA 2048–8192 bits or ECDSA P-256 / P-384.
//!
//! Errors (codes in [`codes`]): `no_private_key` (certificates but no key),
//! `key_certificate_mismatch`, `unsupported_key_type`, `invalid_pkcs12_password`,
//! `invalid_certificate` (malformed input, unreadable file, encrypted PEM key).
//!
//! ```
//! use fic_assertion::load;
//!
//! let generated = rcgen::generate_simple_self_signed(vec!["client.example".to_owned()])?;
//! let pem = format!("{}{}", generated.cert.pem(), generated.signing_key.serialize_pem());
//! let identity = load::from_pem(pem.as_bytes())?;
//! assert_eq!(identity.leaf_der(), generated.cert.der().as_ref());
//!
//! // The certificate alone is not an identity.
//! let err = load::from_pem(generated.cert.pem().as_bytes()).unwrap_err();
//! assert_eq!(err.code(), &fic_assertion::codes::NO_PRIVATE_KEY);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::Path;

use fic_oauth_core::Error;
use zeroize::Zeroizing;

use crate::codes;

/// Reads a (public) file, e.g. a certificate.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|err| read_error(path, err))
}

/// Reads a file that may hold a private key into a buffer zeroized on drop.
pub(crate) fn read_key_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, Error> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|err| read_error(path, err))
}

fn read_error(path: &Path, err: std::io::Error) -> Error {
    Error::new(
        codes::INVALID_CERTIFICATE,
        format!("could not read {}: {err}", path.display()),
    )
    .with_source(err)
}

#[cfg(any(feature = "ring", feature = "aws-lc-rs"))]
pub use with_keys::*;

#[cfg(any(feature = "ring", feature = "aws-lc-rs"))]
mod with_keys {
    use std::path::Path;

    use fic_oauth_core::{ClientIdentity, Error};
    use p12_keystore::Pkcs12Archive;
    use rustls_pki_types::pem::{PemObject, SectionKind};
    use zeroize::Zeroizing;

    use super::{read_file, read_key_file};
    use crate::codes;
    use crate::key::{check_not_encrypted, KeyFormat};
    use crate::{CertificateChain, SoftwareKey};

    /// Pairs a chain with its key: the certificate holding the key's public key becomes the
    /// leaf.
    fn pair(chain: CertificateChain, key: SoftwareKey) -> Result<ClientIdentity, Error> {
        match position_of_key(&chain, &key) {
            Some(leaf) => chain.ordered_from(leaf).with_key(key),
            // Reports the mismatch against the first certificate.
            None => chain.with_key(key),
        }
    }

    fn position_of_key(chain: &CertificateChain, key: &SoftwareKey) -> Option<usize> {
        chain.position_of(key.public())
    }

    /// Loads an identity from one PEM input holding the certificate chain and the private key,
    /// in any order.
    pub fn from_pem(pem: &[u8]) -> Result<ClientIdentity, Error> {
        check_not_encrypted(pem)?;
        let mut certificates = Vec::new();
        let mut key: Option<(KeyFormat, Zeroizing<Vec<u8>>)> = None;
        for section in <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(pem) {
            let (kind, der_bytes) = section.map_err(|_| {
                Error::new(codes::INVALID_CERTIFICATE, "the input is not valid PEM")
            })?;
            let der_bytes = Zeroizing::new(der_bytes);
            if kind == SectionKind::Certificate {
                certificates.push(der_bytes.to_vec());
            } else if let Some(format) = KeyFormat::from_section(kind) {
                if key.is_some() {
                    return Err(Error::new(
                        codes::INVALID_CERTIFICATE,
                        "the PEM input has more than one private key",
                    ));
                }
                key = Some((format, der_bytes));
            }
        }
        if certificates.is_empty() {
            return Err(Error::new(
                codes::INVALID_CERTIFICATE,
                "the PEM input has no CERTIFICATE section",
            ));
        }
        let chain = CertificateChain::from_der_chain(certificates)?;
        let Some((format, key_der)) = key else {
            return Err(Error::new(
                codes::NO_PRIVATE_KEY,
                format!(
                    "the PEM input has a certificate (x5t#S256 {}) but no private key",
                    chain.thumbprint_s256()
                ),
            ));
        };
        pair(chain, SoftwareKey::from_der_format(&key_der, format)?)
    }

    /// Loads an identity from a PEM certificate chain and a separate PEM private key.
    pub fn from_pem_parts(certificate_pem: &[u8], key_pem: &[u8]) -> Result<ClientIdentity, Error> {
        let chain = CertificateChain::from_pem(certificate_pem)?;
        pair(chain, SoftwareKey::from_pem(key_pem)?)
    }

    /// Loads an identity from DER: a certificate (or several concatenated, leaf first) and a
    /// private key (PKCS#8, PKCS#1 or SEC1). An empty key is `no_private_key`.
    pub fn from_der(certificate_der: &[u8], key_der: &[u8]) -> Result<ClientIdentity, Error> {
        let chain = CertificateChain::from_der(certificate_der)?;
        if key_der.is_empty() {
            return Err(Error::new(
                codes::NO_PRIVATE_KEY,
                format!(
                    "no private key was given for the certificate (x5t#S256 {})",
                    chain.thumbprint_s256()
                ),
            ));
        }
        pair(chain, SoftwareKey::from_der(key_der)?)
    }

    /// Loads an identity from PKCS#12 (`.pfx` / `.p12`) bytes.
    ///
    /// Supports the PBES2 (AES) and legacy PBES1 (3DES, RC2) encryptions with HMAC-SHA-1/SHA-2
    /// MACs. A wrong password is `invalid_pkcs12_password`; a file with certificates only is
    /// `no_private_key`. When the archive holds several keys, the first that matches one of its
    /// certificates is used.
    pub fn from_pkcs12(pfx: &[u8], password: &str) -> Result<ClientIdentity, Error> {
        let archive = Pkcs12Archive::from_pkcs12(pfx, password).map_err(pkcs12_error)?;
        let certificates: Vec<Vec<u8>> = archive
            .certs
            .iter()
            .map(|bag| bag.cert.as_der().to_vec())
            .collect();
        // The decrypted keys, copied into zeroizing buffers of exactly their size. p12-keystore
        // keeps its own copies in plain `Vec`s we cannot reach mutably (the field is private to
        // that crate), so the archive is dropped at once rather than kept while the keys are
        // parsed: those copies are freed, unzeroized (see "Secrets" in the crate docs).
        let keys: Vec<Zeroizing<Vec<u8>>> = archive
            .keys
            .iter()
            .map(|bag| Zeroizing::new(bag.key.as_der().to_vec()))
            .collect();
        drop(archive);
        if certificates.is_empty() {
            return Err(Error::new(
                codes::INVALID_CERTIFICATE,
                "the PKCS#12 archive has no certificate",
            ));
        }
        let chain = CertificateChain::from_der_chain(certificates)?;
        if keys.is_empty() {
            return Err(Error::new(
                codes::NO_PRIVATE_KEY,
                format!(
                    "the PKCS#12 archive has a certificate (x5t#S256 {}) but no private key",
                    chain.thumbprint_s256()
                ),
            ));
        }
        let mut first_error = None;
        for key_der in &keys {
            match SoftwareKey::from_der_format(key_der, KeyFormat::Pkcs8) {
                Ok(key) => match position_of_key(&chain, &key) {
                    Some(leaf) => return chain.ordered_from(leaf).with_key(key),
                    None => {
                        if first_error.is_none() {
                            first_error = chain.clone().with_key(key).err();
                        }
                    }
                },
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| {
            Error::new(
                codes::KEY_CERTIFICATE_MISMATCH,
                "no private key of the PKCS#12 archive belongs to one of its certificates",
            )
        }))
    }

    fn pkcs12_error(err: p12_keystore::error::Error) -> Error {
        use p12_keystore::error::Error as P12;
        match err {
            // The MAC is keyed with the password; without a MAC, a wrong password shows as a
            // padding or decryption failure.
            P12::MacError(_) | P12::UnpadError | P12::Pkcs5Error(_) => Error::new(
                codes::INVALID_PKCS12_PASSWORD,
                "the PKCS#12 password is wrong (integrity check or decryption failed)",
            ),
            P12::UnsupportedEncryptionScheme | P12::UnsupportedMacAlgorithm => Error::new(
                codes::INVALID_CERTIFICATE,
                "the PKCS#12 archive uses an unsupported encryption or MAC algorithm",
            ),
            P12::InvalidPrivateKey => Error::new(
                codes::INVALID_CERTIFICATE,
                "the PKCS#12 archive holds a malformed private key",
            ),
            other => Error::new(
                codes::INVALID_CERTIFICATE,
                format!("the input is not a valid PKCS#12 archive ({other})"),
            ),
        }
    }

    /// [`from_pem`] on the contents of a file.
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<ClientIdentity, Error> {
        from_pem(&read_key_file(path.as_ref())?)
    }

    /// [`from_pem_parts`] on the contents of a certificate file and a key file.
    pub fn from_pem_files(
        certificate_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<ClientIdentity, Error> {
        from_pem_parts(
            &read_file(certificate_path.as_ref())?,
            &read_key_file(key_path.as_ref())?,
        )
    }

    /// [`from_der`] on the contents of a certificate file and a key file.
    pub fn from_der_files(
        certificate_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<ClientIdentity, Error> {
        from_der(
            &read_file(certificate_path.as_ref())?,
            &read_key_file(key_path.as_ref())?,
        )
    }

    /// [`from_pkcs12`] on the contents of a file.
    pub fn from_pkcs12_file(
        path: impl AsRef<Path>,
        password: &str,
    ) -> Result<ClientIdentity, Error> {
        from_pkcs12(&read_key_file(path.as_ref())?, password)
    }
}
