//! Connection pools: one hyper-util client, with its own rustls configuration, per client
//! identity (LRU-bounded), and one for requests without an identity.
//!
//! hyper-util keys its pool by scheme and authority only, so a client shared across
//! identities would hand one identity's authenticated connection to another's request. One
//! `ClientConfig` per identity also keeps TLS session resumption from crossing identities.
//!
//! The map is keyed by the leaf's `x5t#S256`, but a pool is only reused by a request whose
//! identity has the same key *object* (the same `Arc<dyn SigningKey>` allocation, which the
//! pool keeps alive so its address cannot be reused) and a byte-equal chain. The certificate
//! is public: matching on it alone would let code that holds only the certificate, with any
//! key, ride on connections another caller authenticated, and would keep using an old key
//! object (a closed HSM handle, say) after the caller moved to a new one. A request whose
//! identity differs in key or chain gets a fresh pool that replaces the old one for that
//! thumbprint; the old pool's idle connections close when its last handle is dropped.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use fic_oauth_core::{ClientIdentity, Error, ErrorCode, SigningKey};
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

/// The pool of one identity and what it was made for.
struct IdentityPool {
    /// The key object the pool's TLS configuration signs with. Holding it keeps the
    /// allocation (and so the address compared in [`IdentityPool::serves`]) alive.
    key: Arc<dyn SigningKey>,
    /// The chain the pool presents, leaf first.
    chain: Vec<Vec<u8>>,
    client: PooledClient,
}

impl IdentityPool {
    /// Whether `identity` is the identity this pool was made for: the same key object (not
    /// merely the same certificate) and the same chain.
    fn serves(&self, identity: &ClientIdentity) -> bool {
        same_key_object(&self.key, identity.key()) && self.chain.as_slice() == identity.chain_der()
    }
}

/// Whether both handles point to the same key allocation (the vtable part of the fat
/// pointers is ignored: it may differ between codegen units for one type).
fn same_key_object(a: &Arc<dyn SigningKey>, b: &Arc<dyn SigningKey>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// All pools of one transport.
pub(crate) struct Pools {
    factory: ClientFactory,
    anonymous: PooledClient,
    identities: Mutex<LruCache<String, IdentityPool>>,
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

    fn lock(&self) -> MutexGuard<'_, LruCache<String, IdentityPool>> {
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
    /// The pool of the same certificate is reused only when it was made for the same key
    /// object and chain; otherwise a new pool replaces it (see the module docs).
    pub(crate) fn for_identity(&self, identity: &ClientIdentity) -> Result<PooledClient, Error> {
        let thumbprint = identity.thumbprint_s256();
        let (client, dropped) = {
            let mut identities = self.lock();
            let replacing = match identities.get(thumbprint) {
                Some(pool) if pool.serves(identity) => return Ok(pool.client.clone()),
                Some(_) => true,
                None => false,
            };
            let client = self.factory.client(Some(identity))?;
            let pool = IdentityPool {
                key: Arc::clone(identity.key()),
                chain: identity.chain_der().to_vec(),
                client: client.clone(),
            };
            if replacing {
                tracing::debug!(
                    thumbprint,
                    "client identity has another key object or chain than its pool; replaced the pool"
                );
            } else {
                tracing::debug!(thumbprint, "created connection pool for client identity");
            }
            // `push` hands back the replaced entry of the same thumbprint, or the least
            // recently used one when the map is full.
            let dropped = identities.push(thumbprint.to_owned(), pool);
            (client, dropped)
        };
        if let Some((old, pool)) = dropped {
            if old != thumbprint {
                tracing::debug!(thumbprint = %old, "evicted least recently used client identity pool");
            }
            // Dropping the last handle closes its idle connections; requests in flight keep
            // their own handle until they finish. Outside the lock: the drop may do work.
            drop(pool);
        }
        Ok(client)
    }

    pub(crate) fn identity_count(&self) -> usize {
        self.lock().len()
    }

    /// Thumbprints of the identity pools, most recently used first (one per certificate).
    pub(crate) fn thumbprints(&self) -> Vec<String> {
        self.lock().iter().map(|(k, _)| k.clone()).collect()
    }
}
