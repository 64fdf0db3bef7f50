//! Connection pools: one hyper-util client, with its own rustls configuration, per client
//! identity (LRU-bounded), and one for requests without an identity.
//!
//! hyper-util keys its pool by scheme and authority only, so a client shared across
//! identities would hand one identity's authenticated connection to another's request. One
//! `ClientConfig` per identity also keeps TLS session resumption from crossing identities.

use std::fmt;
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
    /// TLS 1.2 minimum, the configured roots, and the identity's resolver (if any).
    fn tls_config(
        &self,
        resolver: Option<Arc<dyn ResolvesClientCert>>,
    ) -> Result<Arc<ClientConfig>, Error> {
        let builder = ClientConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
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
    pub(crate) fn client(&self, identity: Option<&ClientIdentity>) -> Result<PooledClient, Error> {
        let (resolver, thumbprint) = match identity {
            Some(identity) => (
                Some(Arc::new(IdentityCertResolver::new(identity)?) as Arc<dyn ResolvesClientCert>),
                Some(Arc::from(identity.thumbprint_s256())),
            ),
            None => (None, None),
        };
        let tls = self.tls_config(resolver)?;
        let connector = Connector::new(tls, Arc::clone(&self.shared), thumbprint);
        Ok(Client::builder(TokioExecutor::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .build(connector))
    }
}

/// All pools of one transport.
pub(crate) struct Pools {
    factory: ClientFactory,
    anonymous: PooledClient,
    identities: Mutex<LruCache<String, PooledClient>>,
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

    fn lock(&self) -> MutexGuard<'_, LruCache<String, PooledClient>> {
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
    pub(crate) fn for_identity(&self, identity: &ClientIdentity) -> Result<PooledClient, Error> {
        let thumbprint = identity.thumbprint_s256();
        let (client, evicted) = {
            let mut identities = self.lock();
            if let Some(client) = identities.get(thumbprint) {
                return Ok(client.clone());
            }
            let client = self.factory.client(Some(identity))?;
            tracing::debug!(thumbprint, "created connection pool for client identity");
            let evicted = identities.push(thumbprint.to_owned(), client.clone());
            (client, evicted)
        };
        if let Some((old, pool)) = evicted {
            tracing::debug!(thumbprint = %old, "evicted least recently used client identity pool");
            // Dropping the last handle closes its idle connections; requests in flight keep
            // their own handle until they finish.
            drop(pool);
        }
        Ok(client)
    }

    pub(crate) fn identity_count(&self) -> usize {
        self.lock().len()
    }

    /// Thumbprints of the identity pools, most recently used first.
    pub(crate) fn thumbprints(&self) -> Vec<String> {
        self.lock().iter().map(|(k, _)| k.clone()).collect()
    }
}
