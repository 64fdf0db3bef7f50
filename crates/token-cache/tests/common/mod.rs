//! Helpers shared by the integration suites.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fic_oauth_core::{AccessToken, Clock, ManualClock, Secret, TokenType};
use fic_token_cache::{
    AccessTokenKey, CacheEntry, CacheKey, CachedAccessToken, FetchFuture, Lookup,
};

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "fic-token-cache-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn parts(scope: &str) -> AccessTokenKey {
    AccessTokenKey::app(
        "login.microsoftonline.com",
        "6f1a2b3c-0000-4000-8000-00000000c11e",
        "tenant-1",
        [scope],
    )
}

pub fn lookup(scope: &str) -> Lookup {
    Lookup::new(parts(scope))
}

/// An access-token entry for `scope`, valid `lifetime` from the clock's now.
pub fn access_token(
    clock: &ManualClock,
    scope: &str,
    lifetime: u64,
) -> (CacheKey, Arc<CacheEntry>) {
    let parts = parts(scope);
    let token = AccessToken::new(
        Secret::new(format!("secret-for-{scope}")),
        TokenType::Bearer,
        clock.now() + Duration::from_secs(lifetime),
    );
    (
        parts.build(),
        Arc::new(CacheEntry::AccessToken(CachedAccessToken::from_token(
            parts,
            &token,
            clock.now(),
        ))),
    )
}

/// A token source that counts its calls.
#[derive(Clone)]
pub struct Source {
    pub calls: Arc<AtomicUsize>,
    pub clock: ManualClock,
    pub lifetime: u64,
}

impl Source {
    pub fn new(clock: &ManualClock) -> Self {
        Self {
            calls: Arc::new(AtomicUsize::new(0)),
            clock: clock.clone(),
            lifetime: 3600,
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn fetch(&self) -> impl Fn() -> FetchFuture + Send + Sync + 'static {
        let this = self.clone();
        move || {
            let this = this.clone();
            Box::pin(async move {
                let n = this.calls.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::task::yield_now().await;
                Ok(AccessToken::new(
                    Secret::new(format!("token-{n}")),
                    TokenType::Bearer,
                    this.clock.now() + Duration::from_secs(this.lifetime),
                ))
            }) as FetchFuture
        }
    }
}
