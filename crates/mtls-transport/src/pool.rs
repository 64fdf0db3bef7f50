//! Connection pools: one hyper-util client, with its own rustls configuration, per client
//! identity (LRU-bounded), and one for requests without an identity.
//!
//! hyper-util keys its pool by scheme and authority only, so a client shared across
//! identities would hand one identity's authenticated connection to another's request. One
//! `ClientConfig` per identity also keeps TLS session resumption from crossing identities.
//!
//! The map is keyed by the leaf's `x5t#S256` *and* the key object (the same
//! `Arc<dyn SigningKey>` allocation, which the entry keeps alive so its address cannot be
//! reused) *and* the chain bytes, so a pool is only ever used by the identity it was made
//! for. The certificate is public: keying on it alone would let code that holds only the
//! certificate, with any key, ride on connections another caller authenticated, and would
//! keep using an old key object (a closed HSM handle, say) after the caller moved to a new
//! one. Two key objects for one certificate (two clients that each loaded the same
//! certificate file) get two pools side by side, each keeping its connections warm; both
//! count against the bound, and an unused one ages out like any other. An evicted pool's
//! idle connections close when its last handle is dropped.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use fic_oauth_core::{ClientIdentity, Error, ErrorCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use lru::LruCache;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};

use crate::connector::{Connector, ConnectorShared};
use crate::tls::IdentityCertResolver;

/// A pooled HTTP/1.1 client.
pub(crate) type PooledClient = Client<Connector, Full<Bytes>>;

/// Builds clients that differ only in their client identity.
#[derive(Debug)]
pub(crate) struct ClientFactory {
    pub(crate) provider: Arc<CryptoProvider>,
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) shared: Arc<ConnectorShared>,
    pub(crate) pool_idle_timeout: Option<Duration>,
    pub(crate) pool_max_idle_per_host: usize,
}

impl ClientFactory {
    /// TLS 1.2 minimum (TLS 1.2 only when `tls13` is false), the configured roots, and the
    /// identity's resolver (if any).
    fn tls_config(
        &self,
        resolver: Option<Arc<dyn ResolvesClientCert>>,
        tls13: bool,
    ) -> Result<Arc<ClientConfig>, Error> {
        let versions: &[&'static rustls::SupportedProtocolVersion] = if tls13 {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS12]
        };
        let builder = ClientConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(versions)
            .map_err(|err| {
                Error::new(
                    ErrorCode::INVALID_ARGUMENT,
                    format!("the crypto provider cannot do TLS 1.2 or 1.3: {err}"),
                )
            })?
            .with_root_certificates(Arc::clone(&self.roots));
        let config = match resolver {
            Some(resolver) => builder.with_client_cert_resolver(resolver),
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }

    /// A client presenting `identity`, or none.
    ///
    /// An identity whose key cannot sign a TLS 1.3 `CertificateVerify` (an RSA key that signs
    /// PKCS#1 v1.5 only: TLS 1.3 allows RSA-PSS only) gets a TLS 1.2-only configuration, so
    /// it can still present its certificate instead of the handshake falling back to none.
    pub(crate) fn client(&self, identity: Option<&ClientIdentity>) -> Result<PooledClient, Error> {
        let (resolver, thumbprint, tls13) = match identity {
            Some(identity) => {
                let resolver = IdentityCertResolver::new(identity)?;
                let tls13 = resolver.tls13_capable();
                if !tls13 {
                    tracing::debug!(
                        thumbprint = identity.thumbprint_s256(),
                        "client key signs no TLS 1.3 scheme; its pool speaks TLS 1.2 only"
                    );
                }
                (
                    Some(Arc::new(resolver) as Arc<dyn ResolvesClientCert>),
                    Some(Arc::from(identity.thumbprint_s256())),
                    tls13,
                )
            }
            None => (None, None, true),
        };
        let tls = self.tls_config(resolver, tls13)?;
        let connector = Connector::new(tls, Arc::clone(&self.shared), thumbprint);
        Ok(Client::builder(TokioExecutor::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .build(connector))
    }
}

/// What tells one identity's pool from another's: the leaf's `x5t#S256`, the key *object*
/// (the `Arc<dyn SigningKey>` allocation, compared by address) and the chain bytes.
///
/// It holds the identity it was made from, and so a clone of its key `Arc`: while the entry
/// exists, the allocation it compares by address stays alive and its address cannot be given
/// to another key object. A lookup clones the request's identity (a reference count) rather
/// than copying its chain.
struct PoolKey(ClientIdentity);

impl PoolKey {
    fn thumbprint(&self) -> &str {
        self.0.thumbprint_s256()
    }

    /// The key object's address, without the vtable part of the fat pointer (which may
    /// differ between codegen units for one type).
    fn key_address(&self) -> *const () {
        Arc::as_ptr(self.0.key()).cast::<()>()
    }
}

impl PartialEq for PoolKey {
    /// The same certificate, the same key object (not merely the same key material) and a
    /// byte-equal chain.
    fn eq(&self, other: &Self) -> bool {
        self.thumbprint() == other.thumbprint()
            && std::ptr::eq(self.key_address(), other.key_address())
            && self.0.chain_der() == other.0.chain_der()
    }
}

impl Eq for PoolKey {}

impl Hash for PoolKey {
    // The chain is left out: keys that are equal have equal thumbprints and key addresses,
    // so they still hash alike, and a lookup does not hash a few kilobytes of DER.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.thumbprint().hash(state);
        self.key_address().hash(state);
    }
}

/// All pools of one transport.
pub(crate) struct Pools {
    factory: ClientFactory,
    anonymous: PooledClient,
    identities: Mutex<LruCache<PoolKey, PooledClient>>,
}

impl fmt::Debug for Pools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let identities = self.lock();
        f.debug_struct("Pools")
            .field("identities", &identities.len())
            .field("max_identities", &identities.cap())
            .finish_non_exhaustive()
    }
}

impl Pools {
    pub(crate) fn new(factory: ClientFactory, max_identities: NonZeroUsize) -> Result<Self, Error> {
        let anonymous = factory.client(None)?;
        Ok(Self {
            factory,
            anonymous,
            identities: Mutex::new(LruCache::new(max_identities)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, LruCache<PoolKey, PooledClient>> {
        // The map stays consistent whatever panicked while holding the lock.
        self.identities
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The client for requests without an identity.
    pub(crate) fn anonymous(&self) -> PooledClient {
        self.anonymous.clone()
    }

    /// The client of `identity`, created on first use; marks it most recently used and, when
    /// the map is full, drops the least recently used identity's pool.
    ///
    /// Each distinct identity (certificate, key object and chain; see [`PoolKey`]) has a pool
    /// of its own: a pool is never used by an identity it was not made for.
    pub(crate) fn for_identity(&self, identity: &ClientIdentity) -> Result<PooledClient, Error> {
        let key = PoolKey(identity.clone());
        let (client, evicted) = {
            let mut identities = self.lock();
            if let Some(client) = identities.get(&key) {
                return Ok(client.clone());
            }
            let client = self.factory.client(Some(identity))?;
            tracing::debug!(
                thumbprint = key.thumbprint(),
                "created connection pool for client identity"
            );
            // Not in the map (checked under this lock), so `push` hands back nothing or the
            // least recently used entry when the map is full.
            let evicted = identities.push(key, client.clone());
            (client, evicted)
        };
        if let Some((old, pool)) = evicted {
            tracing::debug!(
                thumbprint = old.thumbprint(),
                "evicted least recently used client identity pool"
            );
            // Dropping the last handle closes its idle connections; requests in flight keep
            // their own handle until they finish. Outside the lock: the drop may do work.
            drop(pool);
            drop(old);
        }
        Ok(client)
    }

    pub(crate) fn identity_count(&self) -> usize {
        self.lock().len()
    }

    /// The thumbprint of each identity pool, most recently used first: a certificate used
    /// with two key objects (or two chains) has two pools, so it appears twice.
    pub(crate) fn thumbprints(&self) -> Vec<String> {
        self.lock()
            .iter()
            .map(|(key, _)| key.thumbprint().to_owned())
            .collect()
    }
}
