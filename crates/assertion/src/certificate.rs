//! [`CertificateChain`]: parsed X.509 certificates, leaf first, and their pairing with a key.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use fic_oauth_core::thumbprint;
use fic_oauth_core::{ClientIdentity, Error, SigningKey};
use rustls_pki_types::pem::{PemObject, SectionKind};

use crate::codes;
use crate::public_key::{describe_kind, PublicKey};

/// One or more X.509 certificates (DER), leaf first, each checked to parse as a certificate.
///
/// This is the certificate half of a [`ClientIdentity`]; pair it with a private key through
/// [`CertificateChain::with_key`] (a [`SoftwareKey`](crate::SoftwareKey), checked against the
/// leaf) or [`CertificateChain::with_signing_key`] (any [`SigningKey`], e.g. one held by an HSM).
/// It also gives the thumbprints and the `x5c` header value of a certificate without a key.
///
/// ```
/// use fic_assertion::CertificateChain;
///
/// let generated = rcgen::generate_simple_self_signed(vec!["client.example".to_owned()])?;
/// let chain = CertificateChain::from_pem(generated.cert.pem().as_bytes())?;
/// assert_eq!(chain.len(), 1);
/// assert_eq!(chain.thumbprint_s256().len(), 43);
/// assert_eq!(chain.leaf_der(), generated.cert.der().as_ref());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct CertificateChain {
    certificates: Vec<Vec<u8>>,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(codes::INVALID_CERTIFICATE, message)
}

/// Checks that `der_bytes` starts with one X.509 certificate and returns its length.
fn certificate_len(der_bytes: &[u8], index: usize) -> Result<usize, Error> {
    match x509_parser::parse_x509_certificate(der_bytes) {
        Ok((rest, _)) => Ok(der_bytes.len() - rest.len()),
        Err(err) => Err(invalid(format!(
            "certificate {} is not a valid DER X.509 certificate ({err})",
            index + 1
        ))),
    }
}

impl CertificateChain {
    /// A chain from DER certificates, leaf first. Each must be exactly one valid certificate.
    pub fn from_der_chain<I>(certificates: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = Vec<u8>>,
    {
        let certificates: Vec<Vec<u8>> = certificates.into_iter().collect();
        if certificates.is_empty() {
            return Err(invalid("no certificate was given"));
        }
        for (index, der_bytes) in certificates.iter().enumerate() {
            if certificate_len(der_bytes, index)? != der_bytes.len() {
                return Err(invalid(format!(
                    "certificate {} has trailing data after the certificate",
                    index + 1
                )));
            }
        }
        Ok(Self { certificates })
    }

    /// A chain from DER bytes: one certificate, or several concatenated (leaf first).
    pub fn from_der(der_bytes: &[u8]) -> Result<Self, Error> {
        if der_bytes.is_empty() {
            return Err(invalid("the certificate input is empty"));
        }
        let mut certificates = Vec::new();
        let mut rest = der_bytes;
        while !rest.is_empty() {
            let len = certificate_len(rest, certificates.len())?;
            certificates.push(rest[..len].to_vec());
            rest = &rest[len..];
        }
        Ok(Self { certificates })
    }

    /// A chain from the `CERTIFICATE` sections of a PEM input, in their order (leaf first);
    /// other sections (keys) are ignored.
    pub fn from_pem(pem: &[u8]) -> Result<Self, Error> {
        let mut certificates = Vec::new();
        for section in <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(pem) {
            match section {
                Ok((SectionKind::Certificate, der_bytes)) => certificates.push(der_bytes),
                Ok(_) => {}
                Err(_) => return Err(invalid("the certificate input is not valid PEM")),
            }
        }
        if certificates.is_empty() {
            return Err(invalid("the input has no PEM CERTIFICATE section"));
        }
        Self::from_der_chain(certificates)
    }

    /// [`CertificateChain::from_pem`] on the contents of a file.
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::from_pem(&crate::load::read_file(path.as_ref())?)
    }

    /// [`CertificateChain::from_der`] on the contents of a file.
    pub fn from_der_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::from_der(&crate::load::read_file(path.as_ref())?)
    }

    /// The leaf certificate (DER).
    pub fn leaf_der(&self) -> &[u8] {
        self.certificates.first().map_or(&[], Vec::as_slice)
    }

    /// All certificates, leaf first (DER).
    pub fn chain_der(&self) -> &[Vec<u8>] {
        &self.certificates
    }

    /// The number of certificates (at least 1).
    pub fn len(&self) -> usize {
        self.certificates.len()
    }

    /// Always `false`: a chain has at least its leaf.
    pub fn is_empty(&self) -> bool {
        self.certificates.is_empty()
    }

    /// `x5t#S256` of the leaf: base64url (no padding) of its SHA-256.
    pub fn thumbprint_s256(&self) -> String {
        thumbprint::x5t_s256(self.leaf_der())
    }

    /// `x5t` of the leaf: base64url (no padding) of its SHA-1.
    pub fn thumbprint_sha1(&self) -> String {
        thumbprint::x5t(self.leaf_der())
    }

    /// The JWS `x5c` value: every certificate, leaf first, as standard base64 with padding
    /// (RFC 7515 §4.1.6; not base64url).
    pub fn x5c(&self) -> Vec<String> {
        self.certificates
            .iter()
            .map(|c| STANDARD.encode(c))
            .collect()
    }

    /// The leaf's public key.
    pub(crate) fn leaf_public_key(&self) -> Result<PublicKey, Error> {
        certificate_public_key(self.leaf_der())
    }

    /// Where the certificate with this public key is in the chain.
    #[cfg(any(feature = "ring", feature = "aws-lc-rs"))]
    pub(crate) fn position_of(&self, public_key: &PublicKey) -> Option<usize> {
        self.certificates
            .iter()
            .position(|c| certificate_public_key(c).is_ok_and(|p| &p == public_key))
    }

    /// Pairs the chain with a software key, checking that the key's public key is the leaf's.
    ///
    /// Errors with `key_certificate_mismatch` when it is not.
    #[cfg(any(feature = "ring", feature = "aws-lc-rs"))]
    pub fn with_key(self, key: crate::SoftwareKey) -> Result<ClientIdentity, Error> {
        let leaf = self.leaf_public_key()?;
        if &leaf != key.public() {
            return Err(mismatch(&leaf, &key.public().describe()));
        }
        self.into_identity(Arc::new(key))
    }

    /// Pairs the chain with any [`SigningKey`] (an HSM-, TPM- or OS-held key).
    ///
    /// A `SigningKey` does not reveal its public key, so this checks only that the key's kind
    /// (RSA and its size, or the curve) is the leaf's; make sure it is the leaf's key.
    pub fn with_signing_key(self, key: Arc<dyn SigningKey>) -> Result<ClientIdentity, Error> {
        let leaf = self.leaf_public_key()?;
        if leaf.kind() != Some(key.kind()) {
            return Err(mismatch(&leaf, &describe_kind(key.kind())));
        }
        self.into_identity(key)
    }

    fn into_identity(self, key: Arc<dyn SigningKey>) -> Result<ClientIdentity, Error> {
        let identity = ClientIdentity::new(self.certificates, key)?;
        tracing::debug!(
            x5t_s256 = identity.thumbprint_s256(),
            chain_len = identity.chain_der().len(),
            key = ?identity.key().kind(),
            "loaded client identity"
        );
        Ok(identity)
    }

    /// Orders the chain: the leaf (at `leaf`) first, then its issuers as far as they are
    /// present, then any other certificates in their original order.
    pub(crate) fn ordered_from(mut self, leaf: usize) -> Self {
        let mut rest: Vec<Vec<u8>> = Vec::with_capacity(self.certificates.len());
        let mut ordered = Vec::with_capacity(self.certificates.len());
        for (index, certificate) in self.certificates.drain(..).enumerate() {
            if index == leaf {
                ordered.push(certificate);
            } else {
                rest.push(certificate);
            }
        }
        while let Some(next) = ordered
            .last()
            .and_then(|current| issuer_position(current, &rest))
        {
            ordered.push(rest.remove(next));
        }
        ordered.append(&mut rest);
        Self {
            certificates: ordered,
        }
    }
}

/// The public key of a DER certificate.
fn certificate_public_key(certificate: &[u8]) -> Result<PublicKey, Error> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate)
        .map_err(|err| invalid(format!("the certificate is not valid ({err})")))?;
    PublicKey::from_spki(parsed.public_key().raw)
        .ok_or_else(|| invalid("the certificate's public key is malformed"))
}

/// Where the issuer of `certificate` is in `candidates` (not for self-signed certificates).
fn issuer_position(certificate: &[u8], candidates: &[Vec<u8>]) -> Option<usize> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate).ok()?;
    let issuer = parsed.issuer().as_raw();
    if issuer == parsed.subject().as_raw() {
        return None;
    }
    candidates.iter().position(|candidate| {
        x509_parser::parse_x509_certificate(candidate)
            .is_ok_and(|(_, c)| c.subject().as_raw() == issuer)
    })
}

fn mismatch(leaf: &PublicKey, key: &str) -> Error {
    Error::new(
        codes::KEY_CERTIFICATE_MISMATCH,
        format!(
            "the private key ({key}) does not belong to the certificate ({})",
            leaf.describe()
        ),
    )
}

impl fmt::Debug for CertificateChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateChain")
            .field("x5t#S256", &self.thumbprint_s256())
            .field("len", &self.certificates.len())
            .finish()
    }
}
