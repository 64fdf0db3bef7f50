//! Fresh certificates with their keys, for development, tests and demos (feature `generate`;
//! rcgen makes EC P-256 keys). Production certificates come from your PKI and are loaded with
//! [`load`](crate::load).
//!
//! ```
//! let identity = fic_assertion::generate::self_signed("app.example")?;
//! assert_eq!(identity.chain_der().len(), 1);
//!
//! let (issued, ca_der) = fic_assertion::generate::issued("blueprint.example")?;
//! assert_eq!(issued.chain_der()[1], ca_der);
//! # Ok::<(), fic_oauth_core::Error>(())
//! ```

use fic_oauth_core::{ClientIdentity, Error, ErrorCode};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

fn failed(error: rcgen::Error) -> Error {
    Error::new(
        ErrorCode::INVALID_CERTIFICATE,
        format!("certificate generation failed: {error}"),
    )
    .with_source(error)
}

/// A self-signed certificate for `name` (subject alternative name) with a fresh key.
pub fn self_signed(name: &str) -> Result<ClientIdentity, Error> {
    let generated = rcgen::generate_simple_self_signed(vec![name.to_string()]).map_err(failed)?;
    let pem = zeroize::Zeroizing::new(format!(
        "{}{}",
        generated.cert.pem(),
        generated.signing_key.serialize_pem()
    ));
    crate::load::from_pem(pem.as_bytes())
}

/// A certificate with subject `CN=<subject>` issued by a fresh CA, for subject name + issuer
/// (SN+I) registrations: the identity's chain is `[leaf, CA]`, and the CA's DER is returned to
/// register as the trusted issuer.
pub fn issued(subject: &str) -> Result<(ClientIdentity, Vec<u8>), Error> {
    let ca_key = KeyPair::generate().map_err(failed)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{subject} issuing CA"));
    let ca = ca_params.self_signed(&ca_key).map_err(failed)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().map_err(failed)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    params.distinguished_name.push(DnType::CommonName, subject);
    let leaf = params.signed_by(&key, &issuer).map_err(failed)?;
    let pem = zeroize::Zeroizing::new(format!("{}{}{}", leaf.pem(), ca.pem(), key.serialize_pem()));
    Ok((crate::load::from_pem(pem.as_bytes())?, ca.der().to_vec()))
}
