//! The MSAL unified-schema JSON of one cache entry (PROTOCOL §6), shared by the file and Redis
//! backends, and usable by any other backend that stores entries as text.
//!
//! An access token is written with the fields and in the order of MSAL .NET
//! (`MsalAccessTokenCacheItem.ToJObject`): `home_account_id` (omitted when empty, as for app
//! tokens), `environment`, `client_id`, `secret`, `credential_type` (`AccessToken`,
//! `AccessToken_With_AuthScheme` or `ATExt`), `realm`, `target`, `cached_at`, `expires_on`,
//! `extended_expires_on` (the expiry when there is no extended one, as MSAL does), `kid`
//! (mtls_pop), `token_type` (omitted for Bearer), `refresh_on`, `ext` (the raw extension
//! components, which MSAL .NET reads) and `ext_cache_key` (their lower-case hash, which MSAL Go and
//! Python read). Timestamps are decimal strings of Unix seconds.
//!
//! Reading is lenient where the MSAL libraries differ: timestamps may be strings or numbers, the
//! key id may be `kid` (.NET) or `keyid` (Go), the extended expiry `extended_expires_on` or the
//! legacy `ext_expires_on`. Shapes this library does not model (SSH certificates, SHR PoP, Go's
//! extended entries that carry only the hash) read as `Ok(None)`; whoever stores the entry keeps
//! it as it is.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use fic_oauth_core::{AccessToken, Secret, TokenType};
//! use fic_token_cache::format::{entry_from_json, entry_to_json};
//! use fic_token_cache::{AccessTokenKey, CacheEntry, CachedAccessToken};
//!
//! let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let parts = AccessTokenKey::app("login.microsoftonline.com", "cid", "tid", ["https://vault.azure.net/.default"]);
//! let token = AccessToken::new(Secret::new("eyJ0..."), TokenType::Bearer, now + Duration::from_secs(3600));
//! let entry = CacheEntry::AccessToken(CachedAccessToken::from_token(parts, &token, now));
//!
//! let json = entry_to_json(&entry);
//! assert!(json.expose().starts_with(r#"{"environment":"login.microsoftonline.com","client_id":"cid","secret":"eyJ0...","credential_type":"AccessToken""#));
//! assert!(json.expose().contains(r#""expires_on":"1700003600""#));
//! assert!(!json.expose().contains("token_type"), "omitted for Bearer");
//! assert_eq!(entry_from_json(json.expose())?, Some(entry));
//! # Ok::<(), fic_oauth_core::Error>(())
//! ```

use std::collections::BTreeMap;
use std::time::SystemTime;

use fic_oauth_core::time::{checked_from_unix_seconds, unix_seconds};
use fic_oauth_core::{Account, Error, Secret, TokenType};
use serde_json::{Map, Value};

use crate::codes;
use crate::entry::{
    CacheEntry, CachedAccessToken, CachedAccount, CachedIdToken, CachedRefreshToken,
};
use crate::key::{AccessTokenKey, CredentialType};

/// The top-level nodes of the unified schema, in the order they are written.
#[cfg(feature = "file")]
pub(crate) const NODES: [&str; 5] = [
    "AccessToken",
    "RefreshToken",
    "IdToken",
    "Account",
    "AppMetadata",
];

const ACCESS_TOKEN: usize = 0;
const REFRESH_TOKEN: usize = 1;
const ID_TOKEN: usize = 2;
const ACCOUNT: usize = 3;

/// The `authority_type` MSAL writes on AAD accounts.
const AUTHORITY_TYPE: &str = "MSSTS";

/// The JSON of `entry`, as one compact object (it holds the token, hence the [`Secret`]).
pub fn entry_to_json(entry: &CacheEntry) -> Secret {
    let mut out = Vec::with_capacity(512);
    write_entry(&mut out, entry);
    // The writer emits only UTF-8 (escaped strings and ASCII punctuation).
    Secret::new(String::from_utf8_lossy(&out).into_owned())
}

/// Reads one entry: `Ok(None)` for a well-formed entry of a shape this library does not model,
/// `Err` (`cache_format_error`) for anything that is not an entry.
pub fn entry_from_json(json: &str) -> Result<Option<CacheEntry>, Error> {
    parse_entry(json, None).map_err(|reason| {
        Error::new(
            codes::CACHE_FORMAT,
            format!("not a token cache entry: {reason}"),
        )
    })
}

/// The node (index into [`NODES`]) an entry is stored under.
#[cfg(feature = "file")]
pub(crate) fn node_of(entry: &CacheEntry) -> usize {
    match entry {
        CacheEntry::AccessToken(_) => ACCESS_TOKEN,
        CacheEntry::RefreshToken(_) => REFRESH_TOKEN,
        CacheEntry::IdToken(_) => ID_TOKEN,
        CacheEntry::Account(_) => ACCOUNT,
    }
}

// ---------------------------------------------------------------------------------------------
// Writing

/// Appends `value` as a JSON string.
pub(crate) fn write_json_string(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    for c in value.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if u32::from(c) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", u32::from(c)).as_bytes());
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> ObjectWriter<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    fn name(&mut self, name: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write_json_string(self.out, name);
        self.out.push(b':');
    }

    fn string(&mut self, name: &str, value: &str) {
        self.name(name);
        write_json_string(self.out, value);
    }

    /// Written only when non-empty (MSAL never writes empty strings).
    fn non_empty(&mut self, name: &str, value: Option<&str>) {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            self.string(name, value);
        }
    }

    fn time(&mut self, name: &str, value: SystemTime) {
        self.string(name, &unix_seconds(value).to_string());
    }

    fn object(&mut self, name: &str, values: &BTreeMap<String, String>) {
        self.name(name);
        let mut inner = ObjectWriter::new(self.out);
        for (k, v) in values {
            inner.string(k, v);
        }
        inner.finish();
    }

    fn finish(self) {
        self.out.push(b'}');
    }
}

/// Appends the JSON object of `entry`.
pub(crate) fn write_entry(out: &mut Vec<u8>, entry: &CacheEntry) {
    let mut w = ObjectWriter::new(out);
    match entry {
        CacheEntry::AccessToken(at) => {
            let key = at.key();
            w.non_empty("home_account_id", Some(&key.home_account_id));
            w.string("environment", &key.environment);
            w.string("client_id", &key.client_id);
            w.string("secret", at.secret().expose());
            w.string("credential_type", at.credential_type().as_str());
            w.string("realm", &key.realm);
            w.string("target", &key.target);
            w.time("cached_at", at.cached_at());
            w.time("expires_on", at.expires_on());
            w.time(
                "extended_expires_on",
                at.extended_expires_on().unwrap_or(at.expires_on()),
            );
            w.non_empty("kid", at.kid());
            if at.token_type() != TokenType::Bearer {
                w.string("token_type", at.token_type().as_str());
            }
            if let Some(refresh_on) = at.refresh_on() {
                w.time("refresh_on", refresh_on);
            }
            if !key.components.is_empty() {
                w.object("ext", &key.components);
            }
            w.non_empty("ext_cache_key", key.ext_cache_key().as_deref());
        }
        CacheEntry::RefreshToken(rt) => {
            w.non_empty("home_account_id", Some(&rt.home_account_id));
            w.string("environment", &rt.environment);
            w.string("client_id", &rt.client_id);
            w.string("secret", rt.secret.expose());
            w.string("credential_type", CredentialType::RefreshToken.as_str());
        }
        CacheEntry::IdToken(id) => {
            w.non_empty("home_account_id", Some(&id.home_account_id));
            w.string("environment", &id.environment);
            w.string("client_id", &id.client_id);
            w.string("secret", id.secret.expose());
            w.string("credential_type", CredentialType::IdToken.as_str());
            w.string("realm", &id.realm);
        }
        CacheEntry::Account(account) => {
            let account = &account.account;
            w.non_empty("home_account_id", Some(&account.home_account_id));
            w.string("environment", &account.environment);
            w.non_empty("username", account.username.as_deref());
            w.non_empty("local_account_id", account.object_id.as_deref());
            w.string("authority_type", AUTHORITY_TYPE);
            w.string("realm", &account.realm);
        }
    }
    w.finish();
}

// ---------------------------------------------------------------------------------------------
// Reading

/// A parse error without the content it was found in (serde_json's messages may quote values,
/// and values here are tokens).
pub(crate) fn describe(error: &serde_json::Error) -> String {
    let what = match error.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected value",
        serde_json::error::Category::Eof => "truncated",
    };
    format!("{what} at line {} column {}", error.line(), error.column())
}

fn text<'m>(map: &'m Map<String, Value>, name: &str) -> Result<Option<&'m str>, String> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("`{name}` is not a string")),
    }
}

fn required<'m>(map: &'m Map<String, Value>, name: &str) -> Result<&'m str, String> {
    text(map, name)?.ok_or_else(|| format!("`{name}` is missing"))
}

fn optional(map: &Map<String, Value>, name: &str) -> Result<String, String> {
    Ok(text(map, name)?.unwrap_or_default().to_string())
}

fn time(map: &Map<String, Value>, name: &str) -> Result<Option<SystemTime>, String> {
    let seconds = match map.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(Value::Number(n)) => n.as_u64(),
        Some(_) => None,
    };
    let seconds = seconds.ok_or_else(|| format!("`{name}` is not a Unix time"))?;
    // A time past year 9999 is damage, not a token: it would overflow `SystemTime` arithmetic.
    checked_from_unix_seconds(seconds)
        .map(Some)
        .ok_or_else(|| format!("`{name}` is out of range"))
}

fn secret(map: &mut Map<String, Value>) -> Result<Secret, String> {
    match map.remove("secret") {
        Some(Value::String(s)) => Ok(Secret::new(s)),
        Some(_) => Err("`secret` is not a string".into()),
        None => Err("`secret` is missing".into()),
    }
}

/// Parses one entry. `node` is the top-level node it was found in (file), or `None` to tell the
/// kind from `credential_type` (Redis values).
pub(crate) fn parse_entry(json: &str, node: Option<usize>) -> Result<Option<CacheEntry>, String> {
    let mut map: Map<String, Value> =
        serde_json::from_str(json).map_err(|e| format!("not a JSON object: {}", describe(&e)))?;
    let credential = text(&map, "credential_type")?
        .map(|c| CredentialType::parse(c).ok_or_else(|| format!("unknown credential_type `{c}`")));
    let credential = match credential {
        Some(Ok(c)) => Some(c),
        Some(Err(reason)) => {
            // Another library's credential type (e.g. Java's `AText`): kept, not modelled.
            return if node.is_some() {
                Ok(None)
            } else {
                Err(reason)
            };
        }
        None => None,
    };
    let kind = match (node, credential) {
        (Some(ACCOUNT), _) => ACCOUNT,
        (Some(n), _) if n > ACCOUNT => return Ok(None),
        (Some(n), None) => n,
        (
            _,
            Some(
                CredentialType::AccessToken
                | CredentialType::AccessTokenWithAuthScheme
                | CredentialType::AccessTokenExtended,
            ),
        ) => ACCESS_TOKEN,
        (_, Some(CredentialType::RefreshToken)) => REFRESH_TOKEN,
        (_, Some(CredentialType::IdToken)) => ID_TOKEN,
        (None, None) if map.contains_key("authority_type") => ACCOUNT,
        (None, None) => return Err("no `credential_type`".into()),
    };
    if node.is_some_and(|n| n != kind) {
        // e.g. a refresh token under "AccessToken": not ours to interpret.
        return Ok(None);
    }
    match kind {
        ACCESS_TOKEN => parse_access_token(&mut map),
        REFRESH_TOKEN => {
            let secret = secret(&mut map)?;
            Ok(Some(CacheEntry::RefreshToken(CachedRefreshToken::new(
                &optional(&map, "home_account_id")?,
                required(&map, "environment")?,
                required(&map, "client_id")?,
                secret,
            ))))
        }
        ID_TOKEN => {
            let secret = secret(&mut map)?;
            Ok(Some(CacheEntry::IdToken(CachedIdToken::new(
                &optional(&map, "home_account_id")?,
                required(&map, "environment")?,
                required(&map, "client_id")?,
                &optional(&map, "realm")?,
                secret,
            ))))
        }
        _ => {
            let mut account = Account::new(
                optional(&map, "home_account_id")?,
                required(&map, "environment")?,
                optional(&map, "realm")?,
            );
            account.username = text(&map, "username")?
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            account.object_id = text(&map, "local_account_id")?
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            Ok(Some(CacheEntry::Account(CachedAccount::new(account))))
        }
    }
}

fn parse_access_token(map: &mut Map<String, Value>) -> Result<Option<CacheEntry>, String> {
    let token_type = match text(map, "token_type")? {
        None | Some("") => TokenType::Bearer,
        Some(t) => match TokenType::parse(t) {
            Some(t) => t,
            // SHR PoP, SSH certificates...: not modelled here.
            None => return Ok(None),
        },
    };
    let mut components = BTreeMap::new();
    match map.get("ext") {
        None | Some(Value::Null) => {
            if text(map, "ext_cache_key")?.is_some_and(|h| !h.is_empty()) {
                // Only the hash (MSAL Go / Python): the components cannot be rebuilt.
                return Ok(None);
            }
        }
        Some(Value::Object(ext)) => {
            for (k, v) in ext {
                let Value::String(v) = v else {
                    return Err(format!("`ext.{k}` is not a string"));
                };
                components.insert(k.clone(), v.clone());
            }
        }
        Some(_) => return Err("`ext` is not an object".into()),
    }
    let mut parts = AccessTokenKey::user(
        &optional(map, "home_account_id")?,
        required(map, "environment")?,
        required(map, "client_id")?,
        &optional(map, "realm")?,
        [optional(map, "target")?],
    )
    .with_token_type(token_type);
    parts.components = components;
    let expires_on = time(map, "expires_on")?.ok_or("`expires_on` is missing")?;
    let cached_at = time(map, "cached_at")?.unwrap_or(expires_on);
    let extended = match time(map, "extended_expires_on")? {
        Some(t) => Some(t),
        None => time(map, "ext_expires_on")?,
    }
    // MSAL writes the expiry when there is no extended one; that is "none".
    .filter(|t| *t != expires_on);
    let refresh_on = time(map, "refresh_on")?;
    let kid = match text(map, "kid")? {
        Some(k) => Some(k),
        None => text(map, "keyid")?,
    }
    .filter(|k| !k.is_empty())
    .map(str::to_string);
    let secret = secret(map)?;
    Ok(Some(CacheEntry::AccessToken(
        CachedAccessToken::new(parts, secret, cached_at, expires_on, refresh_on, kid)
            .with_extended_expires_on(extended),
    )))
}

// ---------------------------------------------------------------------------------------------
// The whole document (file)

#[cfg(feature = "file")]
pub(crate) use document::Document;

#[cfg(feature = "file")]
mod document {
    use std::collections::BTreeMap;

    use serde_json::value::RawValue;
    use zeroize::Zeroizing;

    use super::{describe, node_of, parse_entry, write_entry, write_json_string, NODES};
    use crate::entry::CacheEntry;
    use crate::key::CacheKey;

    enum Value<'a> {
        /// As read: written back byte for byte, unknown fields and their order included.
        Raw(&'a RawValue),
        /// Written by this process.
        Written(Zeroizing<Vec<u8>>),
    }

    struct Slot<'a> {
        /// The key as spelled in the file (MSAL .NET does not lower-case account keys).
        spelling: String,
        value: Value<'a>,
    }

    impl Slot<'_> {
        fn json(&self) -> &str {
            match &self.value {
                Value::Raw(raw) => raw.get(),
                // Only this module writes these bytes, and it writes UTF-8.
                Value::Written(bytes) => std::str::from_utf8(bytes).unwrap_or("{}"),
            }
        }
    }

    /// A cache file: the five known nodes keyed by lower-cased key, and every other top-level
    /// node kept verbatim. Values read from the file borrow from its (zeroized) buffer.
    pub(crate) struct Document<'a> {
        nodes: [BTreeMap<String, Slot<'a>>; 5],
        unknown: BTreeMap<String, &'a RawValue>,
    }

    impl<'a> Document<'a> {
        pub(crate) fn empty() -> Self {
            Self {
                nodes: Default::default(),
                unknown: BTreeMap::new(),
            }
        }

        /// Parses a file. An empty (or blank) file is an empty cache; anything that is not a
        /// JSON object whose known nodes are objects is an error.
        pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self, String> {
            let mut doc = Self::empty();
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(doc);
            }
            let top: BTreeMap<String, &'a RawValue> = serde_json::from_slice(bytes)
                .map_err(|e| format!("not a JSON object: {}", describe(&e)))?;
            for (name, raw) in top {
                let Some(index) = NODES.iter().position(|n| *n == name) else {
                    doc.unknown.insert(name, raw);
                    continue;
                };
                if raw.get().trim() == "null" {
                    continue;
                }
                let node: BTreeMap<String, &'a RawValue> = serde_json::from_str(raw.get())
                    .map_err(|e| format!("`{name}` is not an object: {}", describe(&e)))?;
                for (spelling, value) in node {
                    doc.nodes[index].insert(
                        spelling.to_lowercase(),
                        Slot {
                            spelling,
                            value: Value::Raw(value),
                        },
                    );
                }
            }
            Ok(doc)
        }

        /// The entries this library can read, by key; the others stay in the document only.
        pub(crate) fn entries(&self) -> impl Iterator<Item = (CacheKey, CacheEntry)> + '_ {
            self.nodes
                .iter()
                .enumerate()
                .take(NODES.len() - 1) // AppMetadata is kept, not modelled
                .flat_map(|(index, node)| node.iter().map(move |(k, slot)| (index, k, slot)))
                .filter_map(|(index, key, slot)| match parse_entry(slot.json(), Some(index)) {
                    Ok(Some(entry)) => Some((CacheKey::new(key), entry)),
                    Ok(None) => None,
                    Err(reason) => {
                        tracing::debug!(node = NODES[index], %reason, "cache file entry skipped");
                        None
                    }
                })
        }

        /// Stores `entry` under `key` (replacing the entry and its unknown fields).
        pub(crate) fn put(&mut self, key: &CacheKey, entry: &CacheEntry) {
            let index = node_of(entry);
            let mut spelling = key.as_str().to_string();
            for (i, node) in self.nodes.iter_mut().enumerate() {
                if let Some(old) = node.remove(key.as_str()) {
                    if i == index {
                        spelling = old.spelling;
                    }
                }
            }
            let mut bytes = Zeroizing::new(Vec::with_capacity(512));
            write_entry(&mut bytes, entry);
            self.nodes[index].insert(
                key.as_str().to_string(),
                Slot {
                    spelling,
                    value: Value::Written(bytes),
                },
            );
        }

        /// Removes whatever is stored under `key`; whether there was something.
        pub(crate) fn remove(&mut self, key: &CacheKey) -> bool {
            let mut removed = false;
            for node in &mut self.nodes {
                removed |= node.remove(key.as_str()).is_some();
            }
            removed
        }

        /// The file's bytes: the known nodes in MSAL's order (all five, as MSAL .NET writes
        /// them), one entry per line, then the other nodes as they were read.
        pub(crate) fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
            let size: usize = self
                .nodes
                .iter()
                .flat_map(BTreeMap::values)
                .map(|s| s.spelling.len() + s.json().len() + 8)
                .sum::<usize>()
                + self
                    .unknown
                    .values()
                    .map(|r| r.get().len() + 64)
                    .sum::<usize>()
                + 128;
            let mut out = Zeroizing::new(Vec::with_capacity(size));
            out.extend_from_slice(b"{");
            let mut first_node = true;
            let unknown = self
                .unknown
                .iter()
                .map(|(n, r)| (n.as_str(), NodeOut::Raw(r)));
            let known = NODES
                .iter()
                .zip(&self.nodes)
                .map(|(n, node)| (*n, NodeOut::Known(node)));
            for (name, node) in known.chain(unknown) {
                if !first_node {
                    out.push(b',');
                }
                first_node = false;
                out.extend_from_slice(b"\n  ");
                write_json_string(&mut out, name);
                out.extend_from_slice(b": ");
                match node {
                    NodeOut::Raw(raw) => out.extend_from_slice(raw.get().as_bytes()),
                    NodeOut::Known(entries) if entries.is_empty() => {
                        out.extend_from_slice(b"{}");
                    }
                    NodeOut::Known(entries) => {
                        out.push(b'{');
                        for (i, slot) in entries.values().enumerate() {
                            if i > 0 {
                                out.push(b',');
                            }
                            out.extend_from_slice(b"\n    ");
                            write_json_string(&mut out, &slot.spelling);
                            out.extend_from_slice(b": ");
                            out.extend_from_slice(slot.json().as_bytes());
                        }
                        out.extend_from_slice(b"\n  }");
                    }
                }
            }
            out.extend_from_slice(b"\n}\n");
            out
        }
    }

    enum NodeOut<'d, 'a> {
        Known(&'d BTreeMap<String, Slot<'a>>),
        Raw(&'d RawValue),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fic_oauth_core::time::{from_unix_seconds, MAX_UNIX_SECONDS};
    use std::time::Duration;

    fn at(components: &[(&str, &str)], token_type: TokenType, kid: Option<&str>) -> CacheEntry {
        let now = from_unix_seconds(1_700_000_000);
        let mut parts = AccessTokenKey::user(
            "uid.utid",
            "login.microsoftonline.com",
            "cid",
            "tid",
            ["User.Read", "openid"],
        )
        .with_token_type(token_type);
        for (k, v) in components {
            parts = parts.with_component(*k, *v);
        }
        CacheEntry::AccessToken(
            CachedAccessToken::new(
                parts,
                Secret::new("tok\"en\n"),
                now,
                now + Duration::from_secs(3600),
                Some(now + Duration::from_secs(1800)),
                kid.map(str::to_string),
            )
            .with_extended_expires_on(Some(now + Duration::from_secs(7200))),
        )
    }

    #[test]
    fn access_tokens_round_trip_in_msal_field_order() {
        let entry = at(
            &[("fmi_path", "agent")],
            TokenType::MtlsPop,
            Some("thumbprint"),
        );
        let json = entry_to_json(&entry);
        let names: Vec<String> = {
            let map: Map<String, Value> = serde_json::from_str(json.expose()).unwrap();
            map.keys().cloned().collect()
        };
        assert_eq!(names.len(), 15);
        let order = [
            "home_account_id",
            "environment",
            "client_id",
            "secret",
            "credential_type",
            "realm",
            "target",
            "cached_at",
            "expires_on",
            "extended_expires_on",
            "kid",
            "token_type",
            "refresh_on",
            "ext",
            "ext_cache_key",
        ];
        let positions: Vec<usize> = order
            .iter()
            .map(|n| json.expose().find(&format!("\"{n}\":")).unwrap())
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "{}",
            json.expose()
        );
        assert!(json.expose().contains(r#""credential_type":"ATExt""#));
        assert!(json.expose().contains(r#""token_type":"mtls_pop""#));
        assert!(json.expose().contains(r#""secret":"tok\"en\n""#));
        assert!(json.expose().contains(r#""ext":{"fmi_path":"agent"}"#));
        assert_eq!(entry_from_json(json.expose()).unwrap(), Some(entry.clone()));
        assert_eq!(
            entry.cache_key(),
            entry_from_json(json.expose()).unwrap().unwrap().cache_key()
        );
    }

    #[test]
    fn other_entries_round_trip() {
        let mut account = Account::new("uid.utid", "login.microsoftonline.com", "tid");
        account.username = Some("user@contoso.com".into());
        account.object_id = Some("oid".into());
        for entry in [
            CacheEntry::RefreshToken(CachedRefreshToken::new(
                "uid.utid",
                "login.microsoftonline.com",
                "cid",
                Secret::new("rt"),
            )),
            CacheEntry::IdToken(CachedIdToken::new(
                "uid.utid",
                "login.microsoftonline.com",
                "cid",
                "tid",
                Secret::new("idt"),
            )),
            CacheEntry::Account(CachedAccount::new(account)),
            at(&[], TokenType::Bearer, None),
        ] {
            let json = entry_to_json(&entry);
            assert_eq!(
                entry_from_json(json.expose()).unwrap(),
                Some(entry),
                "{}",
                json.expose()
            );
        }
    }

    #[test]
    fn timestamps_out_of_range_are_format_errors_not_panics() {
        let base = r#"{"environment":"e","client_id":"c","secret":"s","credential_type":"AccessToken",
            "realm":"r","target":"t","cached_at":"1700000000","expires_on":"1700003600"}"#;
        let field = |name: &str, value: &str| {
            let json = if base.contains(&format!("\"{name}\"")) {
                let start = base.find(&format!("\"{name}\":")).unwrap();
                let end = start + base[start..].find(['}', ',']).unwrap();
                format!("{}\"{name}\":{value}{}", &base[..start], &base[end..])
            } else {
                base.replace('}', &format!(",\"{name}\":{value}}}"))
            };
            assert!(json.contains(&format!("\"{name}\":{value}")), "{json}");
            json
        };
        let max = MAX_UNIX_SECONDS.to_string();
        let over = (MAX_UNIX_SECONDS + 1).to_string();
        for name in [
            "expires_on",
            "cached_at",
            "refresh_on",
            "extended_expires_on",
            "ext_expires_on",
        ] {
            for value in [
                "\"18446744073709551615\"".to_string(),
                "18446744073709551615".to_string(),
                "\"9223372036854775808\"".to_string(),
                format!("\"{over}\""),
                over.clone(),
            ] {
                let json = field(name, &value);
                // Redis values: an error, never a panic.
                let err = entry_from_json(&json).unwrap_err();
                assert_eq!(err.code(), &codes::CACHE_FORMAT, "{json}");
                assert!(err.message().contains("out of range"), "{}", err.message());
                assert!(parse_entry(&json, None).is_err(), "{json}");
                // File entries: skipped (the document lists no entry for it).
                assert!(parse_entry(&json, Some(ACCESS_TOKEN)).is_err(), "{json}");
            }
            // The latest accepted time reads, and survives arithmetic.
            let json = field(name, &format!("\"{max}\""));
            let Some(CacheEntry::AccessToken(at)) = entry_from_json(&json).unwrap() else {
                panic!("not read: {json}")
            };
            let read = match name {
                "expires_on" => Some(at.expires_on()),
                "cached_at" => Some(at.cached_at()),
                "refresh_on" => at.refresh_on(),
                _ => at.extended_expires_on(),
            };
            assert_eq!(read.map(unix_seconds), Some(MAX_UNIX_SECONDS), "{name}");
        }
    }

    #[test]
    fn lenient_reading_and_unmodelled_shapes() {
        let go = r#"{"environment":"e","client_id":"c","secret":"s","credential_type":"AccessToken",
            "realm":"r","target":"a b","cached_at":1700000000,"expires_on":"1700003600","keyid":"k",
            "token_type":"mtls_pop"}"#;
        let Some(CacheEntry::AccessToken(entry)) = entry_from_json(go).unwrap() else {
            panic!("not read")
        };
        assert_eq!(entry.kid(), Some("k"));
        assert_eq!(entry.extended_expires_on(), None);
        assert_eq!(entry.key().target, "a b");
        let pop = go.replace("mtls_pop", "pop");
        assert_eq!(entry_from_json(&pop).unwrap(), None);
        let go_ext = go.replace(r#""keyid":"k""#, r#""ext_cache_key":"abc""#);
        assert_eq!(entry_from_json(&go_ext).unwrap(), None);
        for bad in [
            "[]",
            "{",
            r#"{"credential_type":"AccessToken"}"#,
            r#"{"credential_type":"Nope"}"#,
            r#"{"secret":"s"}"#,
            &go.replace(r#""expires_on":"1700003600""#, r#""expires_on":"soon""#),
        ] {
            assert_eq!(
                entry_from_json(bad).unwrap_err().code(),
                &codes::CACHE_FORMAT,
                "{bad}"
            );
        }
    }
}
