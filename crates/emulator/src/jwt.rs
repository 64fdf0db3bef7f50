//! Compact JWS parsing and verification, written for the emulator (no client code shared).
//!
//! Accepted signature algorithms: `RS256` (RSASSA-PKCS1-v1_5 / SHA-256), `PS256` (RSASSA-PSS /
//! SHA-256, salt of 32 bytes) and `ES256` (ECDSA P-256 / SHA-256, raw `r‖s`).

use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};

use crate::util::b64url_decode;
use crate::x509::PublicKey;

/// A parsed (not yet verified) compact JWS.
#[derive(Clone, Debug)]
pub(crate) struct Jws {
    pub(crate) header: Map<String, Value>,
    pub(crate) payload: Map<String, Value>,
    signing_input: String,
    signature: Vec<u8>,
}

/// Why a signature did not verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum VerifyError {
    /// `alg` is missing or not one the emulator accepts.
    UnsupportedAlg(String),
    /// The key type does not fit `alg` (an EC key with `RS256`, …).
    KeyMismatch,
    /// The signature is wrong.
    BadSignature,
}

/// Signature algorithms the emulator accepts in client assertions.
pub(crate) const SUPPORTED_ALGS: &[&str] = &["RS256", "PS256", "ES256"];

/// Parses `token`; the error says what is malformed.
pub(crate) fn parse(token: &str) -> Result<Jws, String> {
    let token = token.trim();
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the token is not a compact JWS with three parts".to_owned());
    };
    let header = decode_object(h).ok_or("the JWT header is not base64url JSON")?;
    let payload = decode_object(p).ok_or("the JWT payload is not base64url JSON")?;
    let signature = b64url_decode(s).ok_or("the JWT signature is not base64url")?;
    if signature.is_empty() {
        return Err("the JWT is not signed".to_owned());
    }
    Ok(Jws {
        header,
        payload,
        signing_input: format!("{h}.{p}"),
        signature,
    })
}

fn decode_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = b64url_decode(part)?;
    match serde_json::from_slice::<Value>(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

impl Jws {
    /// The header `alg`.
    pub(crate) fn alg(&self) -> Option<&str> {
        self.header.get("alg").and_then(Value::as_str)
    }

    /// A string header parameter.
    pub(crate) fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    /// A string claim.
    pub(crate) fn claim_str(&self, name: &str) -> Option<&str> {
        self.payload.get(name).and_then(Value::as_str)
    }

    /// A NumericDate claim: a JSON number, or (as MSAL.NET sends them) a string of digits.
    /// `None` when absent, `Some(Err(()))` when present but not a date.
    pub(crate) fn claim_time(&self, name: &str) -> Option<Result<u64, ()>> {
        let value = self.payload.get(name)?;
        Some(match value {
            Value::Number(n) => n
                .as_u64()
                .or_else(|| {
                    n.as_f64().filter(|f| f.is_finite() && *f >= 0.0).map(|f| {
                        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                        let secs = f as u64;
                        secs
                    })
                })
                .ok_or(()),
            Value::String(s) => s.trim().parse::<u64>().map_err(|_| ()),
            _ => Err(()),
        })
    }

    /// The audiences: `aud` as a string or an array of strings.
    pub(crate) fn audiences(&self) -> Vec<String> {
        match self.payload.get("aud") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Verifies the signature with `key` according to the header `alg`.
    pub(crate) fn verify(&self, key: &PublicKey) -> Result<(), VerifyError> {
        let alg = self.alg().unwrap_or_default();
        let message = self.signing_input.as_bytes();
        let sig = self.signature.as_slice();
        let rsa_params: &signature::RsaParameters = match alg {
            "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
            "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
            "ES256" => {
                let PublicKey::EcP256(point) = key else {
                    return Err(VerifyError::KeyMismatch);
                };
                return UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, sig)
                    .map_err(|_| VerifyError::BadSignature);
            }
            other => return Err(VerifyError::UnsupportedAlg(other.to_owned())),
        };
        let result = match key {
            PublicKey::Rsa(der) => UnparsedPublicKey::new(rsa_params, der).verify(message, sig),
            PublicKey::RsaComponents { n, e } => {
                RsaPublicKeyComponents { n, e }.verify(rsa_params, message, sig)
            }
            PublicKey::EcP256(_) => return Err(VerifyError::KeyMismatch),
        };
        result.map_err(|_| VerifyError::BadSignature)
    }
}

/// Reads one public JWK (`kty` `RSA` with `n`/`e`, or `EC` `P-256` with `x`/`y`).
pub(crate) fn public_key_from_jwk(jwk: &Value) -> Option<(Option<String>, PublicKey)> {
    let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned);
    let field = |name: &str| {
        jwk.get(name)
            .and_then(Value::as_str)
            .and_then(b64url_decode)
    };
    match jwk.get("kty").and_then(Value::as_str)? {
        "RSA" => Some((
            kid,
            PublicKey::RsaComponents {
                n: field("n")?,
                e: field("e")?,
            },
        )),
        "EC" => {
            if jwk.get("crv").and_then(Value::as_str) != Some("P-256") {
                return None;
            }
            let (x, y) = (field("x")?, field("y")?);
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            let mut point = Vec::with_capacity(65);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Some((kid, PublicKey::EcP256(point)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::b64url;

    #[test]
    fn rejects_malformed_tokens() {
        assert!(parse("a.b").is_err());
        assert!(parse("a.b.c.d").is_err());
        assert!(parse("!!.e30.c2ln").is_err());
        let h = b64url(br#"{"alg":"RS256"}"#);
        let p = b64url(b"[1]");
        assert!(parse(&format!("{h}.{p}.c2ln")).is_err());
        let p = b64url(br#"{"exp":"123","nbf":5,"iat":true}"#);
        let jws = parse(&format!("{h}.{p}.c2ln")).unwrap();
        assert_eq!(jws.claim_time("exp"), Some(Ok(123)));
        assert_eq!(jws.claim_time("nbf"), Some(Ok(5)));
        assert_eq!(jws.claim_time("iat"), Some(Err(())));
        assert_eq!(jws.claim_time("jti"), None);
    }

    #[test]
    fn ecdsa_round_trip_and_key_mismatch() {
        use ring::rand::SystemRandom;
        use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let h = b64url(br#"{"alg":"ES256"}"#);
        let p = b64url(br#"{"a":1}"#);
        let input = format!("{h}.{p}");
        let sig = key.sign(&rng, input.as_bytes()).unwrap();
        let jws = parse(&format!("{input}.{}", b64url(sig.as_ref()))).unwrap();
        let public = PublicKey::EcP256(key.public_key().as_ref().to_vec());
        assert_eq!(jws.verify(&public), Ok(()));
        assert_eq!(
            jws.verify(&PublicKey::Rsa(vec![1, 2])),
            Err(VerifyError::KeyMismatch)
        );
        let tampered = parse(&format!(
            "{h}.{}.{}",
            b64url(br#"{"a":2}"#),
            b64url(sig.as_ref())
        ))
        .unwrap();
        assert_eq!(tampered.verify(&public), Err(VerifyError::BadSignature));
    }
}
