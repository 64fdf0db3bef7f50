//! The registry that links a certificate-bound token, as it appears in an `Authorization`
//! header, to the certificate it is bound to.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use fic_oauth_core::{AccessToken, ClientIdentity, TokenType};
use sha2::{Digest, Sha256};

/// How many bound tokens a [`TokenBindings`] keeps by default: 64.
pub const DEFAULT_BINDINGS_CAPACITY: usize = 64;

/// What is known about a recorded token: its binding certificate and its type.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TokenBinding {
    /// The certificate the token is bound to; present it when sending the token.
    pub identity: ClientIdentity,
    /// The token's type (`mtls_pop` for mTLS PoP tokens).
    pub token_type: TokenType,
    /// When the token expires (the entry is dropped after that).
    pub expires_on: SystemTime,
}

/// A bounded registry of the certificate-bound tokens a credential handed out, keyed by the
/// SHA-256 of the token value (the tokens themselves are not kept).
///
/// [`AzureCoreCredential`](crate::AzureCoreCredential) records into it; [`FicHttpClient`]
/// looks up the token of each request's `Authorization` header in it. Clones share one
/// registry. Tokens without a binding certificate are never recorded.
///
/// It keeps at most `capacity` tokens (default [`DEFAULT_BINDINGS_CAPACITY`]): recording one
/// more first drops expired entries, then the oldest one. A pipeline whose token was dropped
/// sends it without the certificate and gets a 401; `azure_core`'s bearer policy then forgets
/// the token and asks the credential again, which records it again. Size the capacity above the
/// number of distinct bound tokens in use at once (one per credential and scope set).
///
/// [`FicHttpClient`]: crate::FicHttpClient
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use fic_azure_core::TokenBindings;
/// use fic_oauth_core::{AccessToken, Secret, TokenType};
///
/// let bindings = TokenBindings::with_capacity(8);
/// let expires_on = SystemTime::now() + Duration::from_secs(3600);
/// let bearer = AccessToken::new(Secret::new("a.b.c"), TokenType::Bearer, expires_on);
/// bindings.record(&bearer); // no binding certificate: not recorded
/// assert!(bindings.is_empty());
/// assert!(bindings.lookup("a.b.c").is_none());
/// ```
#[derive(Clone)]
pub struct TokenBindings {
    inner: Arc<Mutex<Registry>>,
    clock: Arc<dyn fic_oauth_core::Clock>,
}

struct Registry {
    capacity: usize,
    next_seq: u64,
    entries: HashMap<[u8; 32], Entry>,
}

struct Entry {
    binding: TokenBinding,
    seq: u64,
}

impl Default for TokenBindings {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_BINDINGS_CAPACITY)
    }
}

impl TokenBindings {
    /// An empty registry keeping up to [`DEFAULT_BINDINGS_CAPACITY`] tokens.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty registry keeping up to `capacity` tokens (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Registry {
                capacity: capacity.max(1),
                next_seq: 0,
                entries: HashMap::new(),
            })),
            clock: Arc::new(fic_oauth_core::SystemClock),
        }
    }

    /// The clock expiry is judged by: give it the credential's clock when that is not the
    /// system clock (default: the system clock).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn fic_oauth_core::Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Records `token` when it has a binding certificate; does nothing otherwise.
    pub fn record(&self, token: &AccessToken) {
        let Some(identity) = &token.binding else {
            return;
        };
        let key = key_of(token.token.expose());
        let binding = TokenBinding {
            identity: identity.clone(),
            token_type: token.token_type,
            expires_on: token.expires_on,
        };
        let now = self.clock.now();
        let mut registry = self.lock();
        let seq = registry.next_seq;
        registry.next_seq = registry.next_seq.wrapping_add(1);
        if !registry.entries.contains_key(&key) && registry.entries.len() >= registry.capacity {
            registry.entries.retain(|_, e| e.binding.expires_on > now);
            while registry.entries.len() >= registry.capacity {
                let oldest = registry
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.seq)
                    .map(|(k, _)| *k);
                match oldest {
                    Some(oldest) => {
                        registry.entries.remove(&oldest);
                    }
                    None => break,
                }
            }
        }
        registry.entries.insert(key, Entry { binding, seq });
    }

    /// The binding of the token whose value is `token` (the part after the scheme in an
    /// `Authorization` header), if it was recorded and has not expired.
    pub fn lookup(&self, token: &str) -> Option<TokenBinding> {
        let key = key_of(token);
        let now = self.clock.now();
        let registry = self.lock();
        registry
            .entries
            .get(&key)
            .filter(|e| e.binding.expires_on > now)
            .map(|e| e.binding.clone())
    }

    /// How many tokens are recorded (expired ones included until they are pruned).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no token is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every token.
    pub fn clear(&self) {
        self.lock().entries.clear();
    }

    /// The most tokens kept at once.
    pub fn capacity(&self) -> usize {
        self.lock().capacity
    }

    /// Whether `self` and `other` are the same registry (clones of one another).
    pub fn same_registry(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // The registry holds no invariant a panic elsewhere could break.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for TokenBindings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let registry = self.lock();
        f.debug_struct("TokenBindings")
            .field("capacity", &registry.capacity)
            .field("len", &registry.entries.len())
            .finish()
    }
}

fn key_of(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use fic_oauth_core::{Error, ErrorCode, KeyKind, Secret, SignatureAlgorithm, SigningKey};

    use super::*;

    #[derive(Debug)]
    struct NoKey;

    impl SigningKey for NoKey {
        fn kind(&self) -> KeyKind {
            KeyKind::EcP256
        }
        fn algorithms(&self) -> &[SignatureAlgorithm] {
            &[SignatureAlgorithm::EcdsaP256Sha256]
        }
        fn sign(&self, _: SignatureAlgorithm, _: &[u8]) -> Result<Vec<u8>, Error> {
            Err(Error::new(ErrorCode::SIGNING_FAILED, "test key"))
        }
    }

    pub(crate) fn identity(seed: u8) -> ClientIdentity {
        ClientIdentity::new(vec![vec![0x30, 0x03, 0x02, 0x01, seed]], Arc::new(NoKey))
            .unwrap_or_else(|e| panic!("identity: {e}"))
    }

    pub(crate) fn bound(value: &str, seed: u8, expires_in: Duration) -> AccessToken {
        let mut token = AccessToken::new(
            Secret::new(value),
            TokenType::MtlsPop,
            SystemTime::now() + expires_in,
        );
        token.binding = Some(identity(seed));
        token
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn records_bound_tokens_only() {
        let bindings = TokenBindings::new();
        bindings.record(&AccessToken::new(
            Secret::new("bearer"),
            TokenType::Bearer,
            SystemTime::now() + HOUR,
        ));
        assert!(bindings.is_empty());
        bindings.record(&bound("pop", 1, HOUR));
        let found = bindings.lookup("pop");
        let found = found
            .as_ref()
            .map(|b| (b.identity.thumbprint_s256(), b.token_type));
        assert_eq!(
            found,
            Some((identity(1).thumbprint_s256(), TokenType::MtlsPop))
        );
        assert!(bindings.lookup("bearer").is_none());
        assert!(bindings.lookup("po").is_none());
        // Recording the same token again (a cache hit) keeps one entry.
        bindings.record(&bound("pop", 1, HOUR));
        assert_eq!(bindings.len(), 1);
    }

    #[test]
    fn is_bounded_and_drops_expired_then_oldest_first() {
        let bindings = TokenBindings::with_capacity(2);
        bindings.record(&bound("old", 1, HOUR));
        bindings.record(&bound("expired", 2, Duration::ZERO));
        assert!(bindings.lookup("expired").is_none());
        bindings.record(&bound("new", 3, HOUR));
        assert_eq!(bindings.len(), 2);
        assert!(bindings.lookup("old").is_some());
        assert!(bindings.lookup("new").is_some());
        bindings.record(&bound("newest", 4, HOUR));
        assert_eq!(bindings.len(), 2);
        assert!(bindings.lookup("old").is_none());
        assert!(bindings.lookup("new").is_some());
        assert!(bindings.lookup("newest").is_some());
        assert_eq!(TokenBindings::with_capacity(0).capacity(), 1);
    }

    #[test]
    fn clones_share_one_registry_and_debug_shows_no_token() {
        let bindings = TokenBindings::new();
        let clone = bindings.clone();
        clone.record(&bound("secret-token", 1, HOUR));
        assert!(bindings.same_registry(&clone));
        assert!(!bindings.same_registry(&TokenBindings::new()));
        assert_eq!(bindings.len(), 1);
        let debug = format!("{bindings:?}");
        assert!(!debug.contains("secret-token"), "{debug}");
        bindings.clear();
        assert!(clone.is_empty());
    }
}
