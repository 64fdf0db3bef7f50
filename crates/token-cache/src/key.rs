//! Cache keys in the MSAL unified schema (PROTOCOL §6).
//!
//! A [`CacheKey`] is the lower-cased MSAL key string plus a hash computed once when the key is
//! built, so a lookup costs one probe with no re-hashing of the ~150-byte string.
//!
//! ```
//! use fic_oauth_core::TokenType;
//! use fic_token_cache::AccessTokenKey;
//!
//! let key = AccessTokenKey::app("login.microsoftonline.com", "client-id", "tenant-1", ["https://vault.azure.net/.default"])
//!     .with_token_type(TokenType::MtlsPop)
//!     .build();
//! assert_eq!(
//!     key.as_str(),
//!     "-login.microsoftonline.com-accesstoken_with_authscheme-client-id-tenant-1-https://vault.azure.net/.default-mtls_pop"
//! );
//!
//! let fmi = AccessTokenKey::app("login.microsoftonline.com", "client-id", "tenant-1", ["api://AzureADTokenExchange/.default"])
//!     .with_component("fmi_path", "agent-app-id")
//!     .build();
//! assert!(fmi.as_str().ends_with("-a0ry_zl4gccsdp7gnw927x8s0mrmnodv6tyilt0u07m"));
//! assert!(fmi.as_str().contains("-atext-"));
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, OnceLock};

use fic_oauth_core::thumbprint::ext_hash;
use fic_oauth_core::TokenType;

/// The credential types of the unified schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CredentialType {
    /// A Bearer access token without extension components.
    AccessToken,
    /// An access token of another type (`mtls_pop`) without components.
    AccessTokenWithAuthScheme,
    /// An access token with extension components (FMI path...).
    AccessTokenExtended,
    /// A refresh token.
    RefreshToken,
    /// An id token.
    IdToken,
}

impl CredentialType {
    /// The JSON `credential_type` value (`AccessToken`, `AccessToken_With_AuthScheme`, `ATExt`,
    /// `RefreshToken`, `IdToken`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccessToken => "AccessToken",
            Self::AccessTokenWithAuthScheme => "AccessToken_With_AuthScheme",
            Self::AccessTokenExtended => "ATExt",
            Self::RefreshToken => "RefreshToken",
            Self::IdToken => "IdToken",
        }
    }

    /// Parses a JSON `credential_type` value (case-insensitive).
    pub fn parse(value: &str) -> Option<Self> {
        [
            Self::AccessToken,
            Self::AccessTokenWithAuthScheme,
            Self::AccessTokenExtended,
            Self::RefreshToken,
            Self::IdToken,
        ]
        .into_iter()
        .find(|t| t.as_str().eq_ignore_ascii_case(value))
    }
}

fn hasher() -> &'static std::collections::hash_map::RandomState {
    static STATE: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    STATE.get_or_init(std::collections::hash_map::RandomState::new)
}

/// A cache key: the lower-cased MSAL key string, hashed once.
///
/// Clones share the string. Equality compares the strings; `Hash` feeds only the precomputed
/// hash, so maps keyed by `CacheKey` should use [`KeyHasher`] to avoid hashing twice.
#[derive(Clone)]
pub struct CacheKey {
    text: Arc<str>,
    hash: u64,
}

impl CacheKey {
    /// A key from its string (lower-cased here).
    pub fn new(text: &str) -> Self {
        let text: Arc<str> = Arc::from(text.to_lowercase());
        let hash = hasher().hash_one(&*text);
        Self { text, hash }
    }

    /// The key string.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The precomputed hash.
    pub fn precomputed_hash(&self) -> u64 {
        self.hash
    }

    /// A refresh token key: `{hid}-{env}-refreshtoken-{client_id}--`.
    pub fn refresh_token(home_account_id: &str, environment: &str, client_id: &str) -> Self {
        Self::new(&format!(
            "{home_account_id}-{environment}-refreshtoken-{client_id}--"
        ))
    }

    /// An id token key: `{hid}-{env}-idtoken-{client_id}-{realm}-`.
    pub fn id_token(
        home_account_id: &str,
        environment: &str,
        client_id: &str,
        realm: &str,
    ) -> Self {
        Self::new(&format!(
            "{home_account_id}-{environment}-idtoken-{client_id}-{realm}-"
        ))
    }

    /// An account key: `{hid}-{env}-{realm}`.
    pub fn account(home_account_id: &str, environment: &str, realm: &str) -> Self {
        Self::new(&format!("{home_account_id}-{environment}-{realm}"))
    }

    /// An app metadata key: `appmetadata-{env}-{client_id}`.
    pub fn app_metadata(environment: &str, client_id: &str) -> Self {
        Self::new(&format!("appmetadata-{environment}-{client_id}"))
    }
}

impl PartialEq for CacheKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.text == other.text
    }
}

impl Eq for CacheKey {}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.text)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A `BuildHasher` for maps keyed by [`CacheKey`]: passes the precomputed hash through.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyHasher;

impl BuildHasher for KeyHasher {
    type Hasher = PassThrough;
    fn build_hasher(&self) -> PassThrough {
        PassThrough(0)
    }
}

/// The hasher of [`KeyHasher`].
#[derive(Debug)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached if something other than CacheKey is hashed: fold the bytes in.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// Normalises scopes into a cache target: trimmed, lower-cased, de-duplicated, sorted,
/// space-joined (so `["B", "a"]` and `["a", "b"]` share a key).
pub fn target(scopes: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let mut scopes: Vec<String> = scopes
        .into_iter()
        .flat_map(|s| {
            s.as_ref()
                .split_whitespace()
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        })
        .collect();
    scopes.sort();
    scopes.dedup();
    scopes.join(" ")
}

/// The parts of an access-token key; [`AccessTokenKey::build`] makes the [`CacheKey`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessTokenKey {
    /// `uid.utid` for user tokens; empty for app tokens.
    pub home_account_id: String,
    /// The authority host (the original, not the regional or mtlsauth host).
    pub environment: String,
    /// The client id.
    pub client_id: String,
    /// The tenant.
    pub realm: String,
    /// The normalised scopes ([`target`]).
    pub target: String,
    /// The token type (Bearer is not written into the key).
    pub token_type: TokenType,
    /// Extension components (`fmi_path`, `credential_fmi_path`...).
    pub components: BTreeMap<String, String>,
}

impl AccessTokenKey {
    /// The key of an app token (empty home account id).
    pub fn app(
        environment: &str,
        client_id: &str,
        realm: &str,
        scopes: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Self {
        Self {
            home_account_id: String::new(),
            environment: environment.to_string(),
            client_id: client_id.to_string(),
            realm: realm.to_string(),
            target: target(scopes),
            token_type: TokenType::Bearer,
            components: BTreeMap::new(),
        }
    }

    /// The key of a user token.
    pub fn user(
        home_account_id: &str,
        environment: &str,
        client_id: &str,
        realm: &str,
        scopes: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Self {
        Self {
            home_account_id: home_account_id.to_string(),
            ..Self::app(environment, client_id, realm, scopes)
        }
    }

    /// Sets the token type.
    #[must_use]
    pub fn with_token_type(mut self, token_type: TokenType) -> Self {
        self.token_type = token_type;
        self
    }

    /// Adds an extension component.
    #[must_use]
    pub fn with_component(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.components.insert(name.into(), value.into());
        self
    }

    /// The credential type these parts give.
    pub fn credential_type(&self) -> CredentialType {
        if !self.components.is_empty() {
            CredentialType::AccessTokenExtended
        } else if self.token_type == TokenType::Bearer {
            CredentialType::AccessToken
        } else {
            CredentialType::AccessTokenWithAuthScheme
        }
    }

    /// The lower-case extension hash, when there are components.
    pub fn ext_cache_key(&self) -> Option<String> {
        (!self.components.is_empty()).then(|| ext_hash(&self.components).to_lowercase())
    }

    /// Builds the key string.
    pub fn build(&self) -> CacheKey {
        let mut key = format!(
            "{}-{}-{}-{}-{}-{}",
            self.home_account_id,
            self.environment,
            self.credential_type().as_str(),
            self.client_id,
            self.realm,
            self.target
        );
        if self.token_type != TokenType::Bearer {
            key.push('-');
            key.push_str(self.token_type.as_str());
        }
        if let Some(hash) = self.ext_cache_key() {
            key.push('-');
            key.push_str(&hash);
        }
        CacheKey::new(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn msal_key_shapes() {
        let user = AccessTokenKey::user(
            "uid.utid",
            "login.microsoftonline.com",
            "clientid",
            "contoso.com",
            ["user.read", "user.write"],
        );
        assert_eq!(
            user.build().as_str(),
            "uid.utid-login.microsoftonline.com-accesstoken-clientid-contoso.com-user.read user.write"
        );
        assert_eq!(user.credential_type(), CredentialType::AccessToken);
        let pop = user.clone().with_token_type(TokenType::MtlsPop);
        assert_eq!(
            pop.build().as_str(),
            "uid.utid-login.microsoftonline.com-accesstoken_with_authscheme-clientid-contoso.com-user.read user.write-mtls_pop"
        );
        let ext = pop.with_component("fmi_path", "SomeFmiPath/Path");
        assert_eq!(
            ext.build().as_str(),
            "uid.utid-login.microsoftonline.com-atext-clientid-contoso.com-user.read user.write-mtls_pop-hai-va57u1u3bj1elra_dz5bpghftdmyv5vuyfopbqo"
        );
        assert_eq!(ext.credential_type(), CredentialType::AccessTokenExtended);
        assert_eq!(
            CacheKey::refresh_token("uid.utid", "login.microsoftonline.com", "clientid").as_str(),
            "uid.utid-login.microsoftonline.com-refreshtoken-clientid--"
        );
        assert_eq!(
            CacheKey::id_token(
                "uid.utid",
                "login.microsoftonline.com",
                "clientid",
                "contoso.com"
            )
            .as_str(),
            "uid.utid-login.microsoftonline.com-idtoken-clientid-contoso.com-"
        );
        assert_eq!(
            CacheKey::account("uid.utid", "login.microsoftonline.com", "contoso.com").as_str(),
            "uid.utid-login.microsoftonline.com-contoso.com"
        );
        assert_eq!(
            CacheKey::app_metadata("login.microsoftonline.com", "clientid").as_str(),
            "appmetadata-login.microsoftonline.com-clientid"
        );
    }

    #[test]
    fn keys_are_lower_cased_and_targets_normalised() {
        let a =
            AccessTokenKey::app("Login.MicrosoftOnline.com", "CID", "T", ["B", "a", "b"]).build();
        let b = AccessTokenKey::app("login.microsoftonline.com", "cid", "t", ["a b"]).build();
        assert_eq!(a, b);
        assert_eq!(
            a.as_str(),
            "-login.microsoftonline.com-accesstoken-cid-t-a b"
        );
    }

    #[test]
    fn isolation_by_type_components_and_tenant() {
        let base = AccessTokenKey::app("env", "cid", "t", ["s"]);
        let keys = [
            base.clone().build(),
            base.clone().with_token_type(TokenType::MtlsPop).build(),
            base.clone().with_component("fmi_path", "a").build(),
            base.clone().with_component("fmi_path", "b").build(),
            base.clone()
                .with_component("credential_fmi_path", "a")
                .build(),
            AccessTokenKey::app("env", "cid", "t2", ["s"]).build(),
            AccessTokenKey::user("u.t", "env", "cid", "t", ["s"]).build(),
        ];
        let distinct: std::collections::HashSet<_> = keys.iter().map(CacheKey::as_str).collect();
        assert_eq!(distinct.len(), keys.len());
    }

    #[test]
    fn maps_with_the_pass_through_hasher() {
        let mut map: HashMap<CacheKey, u32, KeyHasher> = HashMap::with_hasher(KeyHasher);
        for i in 0..1000 {
            map.insert(CacheKey::new(&format!("k{i}")), i);
        }
        assert_eq!(map.get(&CacheKey::new("K500")), Some(&500));
        assert_eq!(map.get(&CacheKey::new("k1000")), None);
        assert_eq!(
            CredentialType::parse("atext"),
            Some(CredentialType::AccessTokenExtended)
        );
        assert_eq!(CredentialType::parse("nope"), None);
    }
}
