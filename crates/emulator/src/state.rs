//! The state every request handler shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::SystemTime;

use fic_oauth_core::Clock;

use crate::directory::Directory;
use crate::faults::Faults;
use crate::hosts::Cloud;
use crate::keys::SigningKey;
use crate::log::RequestLog;
use crate::managed_identity::Hosted;
use crate::settings::Settings;
use crate::tls::CertificateAuthority;
use crate::util::unix;

/// A refresh token the emulator issued.
#[derive(Clone, Debug)]
pub(crate) struct RefreshGrant {
    pub(crate) client_id: String,
    pub(crate) tenant_id: String,
    pub(crate) user_oid: String,
    pub(crate) resource: String,
    pub(crate) scp: Vec<String>,
    pub(crate) cloud: Cloud,
    pub(crate) expires_at: u64,
    pub(crate) used: bool,
}

pub(crate) struct State {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) directory: Directory,
    pub(crate) settings: Arc<RwLock<Settings>>,
    pub(crate) log: RequestLog,
    pub(crate) faults: Faults,
    pub(crate) key: SigningKey,
    pub(crate) ca: Arc<CertificateAuthority>,
    /// Secrets and challenge files of the hosted managed identity endpoints.
    pub(crate) hosted: Hosted,
    jtis: Mutex<HashMap<(String, String), u64>>,
    refresh_tokens: Mutex<HashMap<String, RefreshGrant>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    pub(crate) fn new(
        clock: Arc<dyn Clock>,
        directory: Directory,
        settings: Settings,
        key: SigningKey,
        ca: Arc<CertificateAuthority>,
        hosted: Hosted,
    ) -> Self {
        Self {
            clock,
            directory,
            settings: Arc::new(RwLock::new(settings)),
            log: RequestLog::default(),
            faults: Faults::default(),
            key,
            ca,
            hosted,
            jtis: Mutex::new(HashMap::new()),
            refresh_tokens: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.clock.now()
    }

    pub(crate) fn now_unix(&self) -> u64 {
        unix(self.clock.now())
    }

    pub(crate) fn settings(&self) -> Settings {
        self.settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records `jti` of `client_id` until `keep_until`; false when it was seen before.
    pub(crate) fn remember_jti(&self, client_id: &str, jti: &str, keep_until: u64) -> bool {
        let now = self.now_unix();
        let mut jtis = lock(&self.jtis);
        jtis.retain(|_, until| *until >= now);
        let key = (client_id.to_ascii_lowercase(), jti.to_owned());
        if jtis.contains_key(&key) {
            return false;
        }
        jtis.insert(key, keep_until);
        true
    }

    pub(crate) fn store_refresh_token(&self, token: String, grant: RefreshGrant) {
        let now = self.now_unix();
        let mut tokens = lock(&self.refresh_tokens);
        // Keep expired grants a day so their use is reported as expired, not unknown.
        tokens.retain(|_, g| g.expires_at.saturating_add(86_400) >= now);
        tokens.insert(token, grant);
    }

    /// The grant of a refresh token.
    pub(crate) fn refresh_token(&self, token: &str) -> Option<RefreshGrant> {
        lock(&self.refresh_tokens).get(token).cloned()
    }

    /// Marks `token` used; false when it was already used (or is unknown).
    pub(crate) fn consume_refresh_token(&self, token: &str) -> bool {
        let mut tokens = lock(&self.refresh_tokens);
        match tokens.get_mut(token) {
            Some(grant) if !grant.used => {
                grant.used = true;
                true
            }
            _ => false,
        }
    }
}
