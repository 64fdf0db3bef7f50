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

    /// The bytes the components would hash to without the length framing: equal for two maps
    /// whose entries differ only in where one string is cut.
    fn unframed(components: &BTreeMap<String, String>) -> String {
        components
            .iter()
            .flat_map(|(k, v)| [k.as_str(), v.as_str()])
            .collect()
    }

    /// `s` cut at char positions `cuts` (ascending), into owned pieces.
    fn cut(s: &str, cuts: &[usize]) -> Vec<String> {
        let chars: Vec<char> = s.chars().collect();
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(chars.len());
        bounds
            .windows(2)
            .map(|w| chars[w[0]..w[1]].iter().collect())
            .collect()
    }

    /// Three cut points for a two-entry map over `n` chars (n >= 3): the first key keeps its
    /// leading `!`, the second key is not empty.
    fn two_entry_cuts(n: usize, raw: (usize, usize, usize)) -> [usize; 3] {
        let c1 = 1 + raw.0 % (n - 1);
        let c2 = c1 + raw.1 % (n - c1);
        let c3 = c2 + 1 + raw.2 % (n - c2);
        [c1, c2, c3]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// One string cut into key and value at two different places: the same bytes without
        /// framing, different hashes with it. Digits and `:` make the framing's own characters
        /// part of the content.
        #[test]
        fn ext_hash_separates_a_key_value_boundary_shift(
            s in "[0-9:a-zé_/.]{1,16}",
            i in 0usize..=16,
            j in 0usize..=16,
        ) {
            let n = s.chars().count();
            let (i, j) = (i % (n + 1), j % (n + 1));
            prop_assume!(i != j);
            let map = |at: usize| -> BTreeMap<String, String> {
                let pieces = cut(&s, &[at]);
                [(pieces[0].clone(), pieces[1].clone())].into()
            };
            let (a, b) = (map(i), map(j));
            prop_assert_ne!(&a, &b);
            prop_assert_eq!(unframed(&a), unframed(&b));
            prop_assert_ne!(ext_hash(&a), ext_hash(&b), "{:?} vs {:?}", a, b);
        }

        /// Two entries over one string, cut differently: characters moved between a key and its
        /// value, between the first value and the second key, or both. The first key starts
        /// with `!` (below every other character used), so the entries keep their order and the
        /// unframed bytes stay the same: only the framing tells the maps apart.
        #[test]
        fn ext_hash_separates_shifts_between_adjacent_entries(
            rest in "[0-9:a-zé_/.]{2,20}",
            raw_a in (0usize..64, 0usize..64, 0usize..64),
            raw_b in (0usize..64, 0usize..64, 0usize..64),
            moved in 0usize..4,
            by in 1usize..4,
            up in proptest::bool::ANY,
        ) {
            let s = format!("!{rest}");
            let n = s.chars().count();
            let a_cuts = two_entry_cuts(n, raw_a);
            // The second map: either independent cuts, or one cut of the first moved.
            let b_cuts = if moved == 0 {
                two_entry_cuts(n, raw_b)
            } else {
                // Move one boundary by `by` chars within its neighbours: key 1 | value 1 in
                // [1, c2], value 1 | key 2 in [c1, c3 - 1], key 2 | value 2 in [c2 + 1, n].
                let mut c = a_cuts;
                let index = moved - 1;
                let (low, high) = match index {
                    0 => (1, c[1]),
                    1 => (c[0], c[2] - 1),
                    _ => (c[1] + 1, n),
                };
                let target = if up { c[index] + by } else { c[index].saturating_sub(by) };
                c[index] = target.clamp(low, high);
                c
            };
            prop_assume!(a_cuts != b_cuts);
            let map = |cuts: &[usize; 3]| -> BTreeMap<String, String> {
                let p = cut(&s, cuts);
                [(p[0].clone(), p[1].clone()), (p[2].clone(), p[3].clone())].into()
            };
            let (a, b) = (map(&a_cuts), map(&b_cuts));
            prop_assert_eq!(a.len(), 2);
            prop_assert_eq!(b.len(), 2);
            prop_assert_ne!(&a, &b);
            prop_assert_eq!(unframed(&a), s.clone());
            prop_assert_eq!(unframed(&b), s);
            prop_assert_ne!(ext_hash(&a), ext_hash(&b), "{:?} vs {:?}", a, b);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// One value swallowing the next entry spelled in the framing's own syntax (full
        /// framing, key lengths only, value lengths only): a framing that dropped either length
        /// would collide here.
        #[test]
        fn ext_hash_separates_an_entry_absorbed_into_the_previous_value(
            k1 in "![0-9:a-zé]{0,5}",
            v1 in "[0-9:a-zé]{0,6}",
            k2 in "[0-9:a-zé]{1,6}",
            v2 in "[0-9:a-zé]{0,6}",
        ) {
            let two: BTreeMap<String, String> =
                [(k1.clone(), v1.clone()), (k2.clone(), v2.clone())].into();
            prop_assert_eq!(two.len(), 2);
            for swallowed in [
                format!("{}:{k2}{}:{v2}", k2.len(), v2.len()),
                format!("{}:{k2}{v2}", k2.len()),
                format!("{k2}{}:{v2}", v2.len()),
                format!("{k2}{v2}"),
            ] {
                let one: BTreeMap<String, String> = [(k1.clone(), format!("{v1}{swallowed}"))].into();
                prop_assert_ne!(ext_hash(&two), ext_hash(&one), "{:?} vs {:?}", two, one);
            }
        }
    }

    /// The properties above can fail: a hash without the framing collides on their inputs.
    #[test]
    fn the_shift_properties_would_catch_a_hash_without_framing() {
        let a: BTreeMap<_, _> = [
            ("!a1:".to_string(), "b".to_string()),
            ("c".to_string(), "d".to_string()),
        ]
        .into();
        let b: BTreeMap<_, _> = [
            ("!a".to_string(), "1:b".to_string()),
            ("c".to_string(), "d".to_string()),
        ]
        .into();
        assert_eq!(unframed(&a), unframed(&b));
        assert_ne!(ext_hash(&a), ext_hash(&b));
        let c: BTreeMap<_, _> = [
            ("!a".to_string(), "1:bc".to_string()),
            ("d".to_string(), String::new()),
        ]
        .into();
        assert_eq!(unframed(&a), unframed(&c));
        assert_ne!(ext_hash(&a), ext_hash(&c));
    }
}
