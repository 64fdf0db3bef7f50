//! The emulator's token-signing key (RSA 2048, RS256) and its JWKS entry.
//!
//! ring cannot generate RSA keys, so the key is generated once per process with the `rsa` crate
//! (a few hundred milliseconds) and shared by every emulator of the process unless the builder
//! is given one. Each emulator still gets its own self-signed certificate and therefore its own
//! `kid`, and a token is only accepted by the emulator whose `kid` it carries.

use std::sync::OnceLock;

use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use rsa::traits::PublicKeyParts as _;
use rustls_pki_types::PrivatePkcs8KeyDer;
use serde_json::{json, Map, Value};

use crate::util::{b64std, b64url};
use crate::x509::{thumbprint_s256, thumbprint_sha1, PublicKey};
use crate::Error;

static PROCESS_KEY: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();

fn process_key() -> Result<Vec<u8>, Error> {
    PROCESS_KEY
        .get_or_init(|| {
            let mut rng = rand_core::OsRng;
            let key = rsa::RsaPrivateKey::new(&mut rng, 2048).map_err(|e| e.to_string())?;
            let der = key.to_pkcs8_der().map_err(|e| e.to_string())?;
            Ok(der.as_bytes().to_vec())
        })
        .clone()
        .map_err(Error::Key)
}

/// The signing key with everything derived from it.
pub(crate) struct SigningKey {
    pair: RsaKeyPair,
    rng: SystemRandom,
    pub(crate) kid: String,
    pub(crate) x5t: String,
    n: Vec<u8>,
    e: Vec<u8>,
    cert_der: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads `pkcs8` (an RSA private key, PKCS#8 DER), or the process key when `None`.
    pub(crate) fn new(pkcs8: Option<&[u8]>) -> Result<Self, Error> {
        let der = match pkcs8 {
            Some(der) => der.to_vec(),
            None => process_key()?,
        };
        let parsed = rsa::RsaPrivateKey::from_pkcs8_der(&der)
            .map_err(|e| Error::Key(format!("not an RSA PKCS#8 key: {e}")))?;
        let pair = RsaKeyPair::from_pkcs8(&der)
            .map_err(|e| Error::Key(format!("ring rejected the RSA key: {e}")))?;
        let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(der.as_slice()),
            &rcgen::PKCS_RSA_SHA256,
        )
        .map_err(|e| Error::Key(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|e| Error::Key(e.to_string()))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fic-emulator token signing");
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&rand_serial()));
        let cert = params
            .self_signed(&key_pair)
            .map_err(|e| Error::Key(e.to_string()))?;
        let cert_der = cert.der().to_vec();
        let x5t = thumbprint_sha1(&cert_der);
        Ok(Self {
            pair,
            rng: SystemRandom::new(),
            kid: x5t.clone(),
            x5t,
            n: parsed.n().to_bytes_be(),
            e: parsed.e().to_bytes_be(),
            cert_der,
        })
    }

    /// The public key, for verifying tokens this emulator issued.
    pub(crate) fn public_key(&self) -> PublicKey {
        PublicKey::RsaComponents {
            n: self.n.clone(),
            e: self.e.clone(),
        }
    }

    /// Signs `claims` as an RS256 JWT with this key's `kid`.
    pub(crate) fn sign(&self, typ: &str, claims: &Map<String, Value>) -> String {
        let header = json!({ "typ": typ, "alg": "RS256", "x5t": self.x5t, "kid": self.kid });
        let input = format!(
            "{}.{}",
            b64url(header.to_string()),
            b64url(Value::Object(claims.clone()).to_string())
        );
        let mut signature = vec![0; self.pair.public().modulus_len()];
        // Signing with a valid key into a buffer of the modulus length cannot fail; keep the
        // token unsigned-looking (empty signature) rather than panic if ring ever disagrees.
        if self
            .pair
            .sign(
                &RSA_PKCS1_SHA256,
                &self.rng,
                input.as_bytes(),
                &mut signature,
            )
            .is_err()
        {
            signature.clear();
        }
        format!("{input}.{}", b64url(signature))
    }

    /// The JWKS entry, shaped like Entra's (`kty`, `use`, `kid`, `x5t`, `n`, `e`, `x5c`).
    pub(crate) fn jwk(&self, issuer: Option<&str>) -> Value {
        let mut jwk = json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "x5t": self.x5t,
            "x5t#S256": thumbprint_s256(&self.cert_der),
            "n": b64url(&self.n),
            "e": b64url(&self.e),
            "x5c": [b64std(&self.cert_der)],
        });
        if let (Some(issuer), Some(map)) = (issuer, jwk.as_object_mut()) {
            map.insert("issuer".to_owned(), Value::String(issuer.to_owned()));
        }
        jwk
    }
}

pub(crate) fn rand_serial() -> [u8; 16] {
    let mut bytes = *uuid::Uuid::new_v4().as_bytes();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    bytes
}
