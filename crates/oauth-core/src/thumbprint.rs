//! Certificate thumbprints and the cache extension-component hash (PROTOCOL §6).
//!
//! ```
//! use std::collections::BTreeMap;
//! use fic_oauth_core::thumbprint::{ext_hash, x5t_s256};
//!
//! let mut components = BTreeMap::new();
//! components.insert("fmi_path".to_string(), "agent-app-id".to_string());
//! assert_eq!(ext_hash(&components), "A0ry_zL4gCcSdp7gNW927X8S0MrmNodV6tyILt0u07M");
//! assert_eq!(x5t_s256(b"").len(), 43);
//! ```

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// `x5t#S256` of a DER certificate: base64url, no padding, of its SHA-256.
pub fn x5t_s256(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

/// `x5t` of a DER certificate: base64url, no padding, of its SHA-1.
pub fn x5t(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha1::digest(der))
}

/// The SHA-1 thumbprint as upper-case hex (how Windows and Service Fabric print it).
pub fn sha1_hex(der: &[u8]) -> String {
    hex_upper(&Sha1::digest(der))
}

/// The SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn hex_upper(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The hash of cache extension components (FMI path and friends).
///
/// Components sorted by key (UTF-8 bytes); for each, `<len(key)>:<key><len(value)>:<value>` with
/// lengths in UTF-8 bytes (a netstring-like framing, so `{"ab":"c"}` and `{"a":"bc"}` differ);
/// SHA-256; base64url without padding. Cache keys use it lower-cased. An empty map hashes the
/// empty string, but callers put no `atext` segment in a key without components.
pub fn ext_hash(components: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in components {
        hasher.update(key.len().to_string());
        hasher.update(b":");
        hasher.update(key.as_bytes());
        hasher.update(value.len().to_string());
        hasher.update(b":");
        hasher.update(value.as_bytes());
    }
    URL_SAFE_NO_PAD.encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;
    use std::collections::HashSet;

    #[derive(Deserialize)]
    struct ExtVectors {
        cases: Vec<ExtCase>,
    }
    #[derive(Deserialize)]
    struct ExtCase {
        components: BTreeMap<String, String>,
        hash: String,
        lowercase: String,
    }

    #[test]
    fn ext_hash_vectors() {
        let vectors: ExtVectors =
            serde_json::from_str(include_str!("../tests/data/ext_cache_key.json")).unwrap();
        assert!(vectors.cases.len() >= 8);
        for case in vectors.cases {
            let hash = ext_hash(&case.components);
            assert_eq!(hash, case.hash, "{:?}", case.components);
            assert_eq!(hash.to_lowercase(), case.lowercase);
        }
    }

    #[derive(Deserialize)]
    struct ThumbprintVector {
        certificate_der_base64: String,
        #[serde(rename = "x5t#S256")]
        x5t_s256: String,
        x5t: String,
        sha1_thumbprint_hex: String,
    }

    #[test]
    fn certificate_thumbprint_vector() {
        use base64::engine::general_purpose::STANDARD;
        let v: ThumbprintVector =
            serde_json::from_str(include_str!("../tests/data/certificate_thumbprints.json"))
                .unwrap();
        let der = STANDARD.decode(v.certificate_der_base64).unwrap();
        assert_eq!(x5t_s256(&der), v.x5t_s256);
        assert_eq!(x5t(&der), v.x5t);
        assert_eq!(sha1_hex(&der), v.sha1_thumbprint_hex);
    }

    #[test]
    fn framing_separates_shifted_boundaries() {
        let a: BTreeMap<_, _> = [("ab".to_string(), "c".to_string())].into();
        let b: BTreeMap<_, _> = [("a".to_string(), "bc".to_string())].into();
        assert_ne!(ext_hash(&a), ext_hash(&b));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn ext_hash_never_collides_for_distinct_maps(
            maps in proptest::collection::vec(
                proptest::collection::btree_map("[a-z_é]{0,6}", "[a-zA-Z0-9/:é]{0,8}", 0..4),
                200..400,
            )
        ) {
            let distinct: HashSet<BTreeMap<String, String>> = maps.into_iter().collect();
            let hashes: HashSet<String> = distinct.iter().map(ext_hash).collect();
            prop_assert_eq!(hashes.len(), distinct.len());
        }
    }
}
