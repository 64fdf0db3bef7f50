//! Fault injection: make chosen requests fail in chosen ways.
//!
//! A [`Fault`] says *what* happens (a status with body and `Retry-After`, a delay, a malformed
//! body, a Bearer downgrade of an `mtls_pop` request, a dropped connection), *where* (a route and
//! optionally a host pattern) and *how often* (the next N matching requests, requests a predicate
//! accepts, or every matching request until removed). The first active fault that matches a
//! request applies; faulted requests are logged with [`LoggedRequest::fault`] set.
//!
//! Predicates ([`Fault::when`]) run without any lock of the emulator held: they may use the
//! emulator handle, including [`Faults`] itself.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::log::{LoggedRequest, Route};
use crate::util::host_matches;

/// Which requests a fault may apply to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultTarget {
    /// Token-endpoint requests.
    Token,
    /// Protected-resource requests.
    Resource,
    /// IMDS requests ([`Route::Imds`]: region, IMDS v1 token, IMDSv2).
    Imds,
    /// The managed identity endpoints of the other hosting environments: App Service, Machine
    /// Learning, Cloud Shell, Azure Arc and Service Fabric (narrow with [`Fault::when`] and
    /// [`LoggedRequest::route`]).
    ManagedIdentity,
    /// OIDC discovery / JWKS / instance discovery.
    Metadata,
    /// Any request.
    Any,
}

impl FaultTarget {
    fn covers(self, route: Route) -> bool {
        match self {
            FaultTarget::Any => true,
            FaultTarget::Token => route == Route::Token,
            FaultTarget::Resource => route == Route::Resource,
            FaultTarget::Imds => route == Route::Imds,
            FaultTarget::ManagedIdentity => route.is_hosted_managed_identity(),
            FaultTarget::Metadata => route == Route::Metadata,
        }
    }
}

/// What a fault does.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultAction {
    /// Answer with this status and body (and `Retry-After` when set) instead of handling the request.
    Status {
        /// HTTP status, 100 to 999 ([`Fault::new`] replaces any other value with 500, so what
        /// is logged is what is sent; [`Fault::try_status`] refuses it).
        status: u16,
        /// Body; `None` gives a default body shaped for the route (Entra error JSON for identity routes).
        body: Option<String>,
        /// `Retry-After` header value (seconds or an HTTP date).
        retry_after: Option<String>,
    },
    /// Wait (real time, tokio timer) and then handle the request normally.
    Delay(Duration),
    /// Answer 200 with a body that is not valid JSON.
    MalformedBody,
    /// Handle an `mtls_pop` token request but answer a Bearer token (`token_type: Bearer`, no `cnf`).
    /// Only `token_type=mtls_pop` token requests match it.
    BearerDowngrade,
    /// Close the connection without answering.
    DropConnection,
}

impl fmt::Display for FaultAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultAction::Status { status, .. } => write!(f, "status {status}"),
            FaultAction::Delay(d) => write!(f, "delay {}ms", d.as_millis()),
            FaultAction::MalformedBody => f.write_str("malformed body"),
            FaultAction::BearerDowngrade => f.write_str("bearer downgrade"),
            FaultAction::DropConnection => f.write_str("drop connection"),
        }
    }
}

/// A predicate over the incoming request (its `status` is `None` at that point).
pub type FaultPredicate = Arc<dyn Fn(&LoggedRequest) -> bool + Send + Sync>;

/// A fault to inject; build it, then pass it to [`Faults::inject`].
#[derive(Clone)]
pub struct Fault {
    action: FaultAction,
    target: FaultTarget,
    host: Option<String>,
    times: Option<u32>,
    predicate: Option<FaultPredicate>,
}

impl fmt::Debug for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fault")
            .field("action", &self.action)
            .field("target", &self.target)
            .field("host", &self.host)
            .field("times", &self.times)
            .field("predicate", &self.predicate.is_some())
            .finish()
    }
}

/// The statuses an HTTP response can carry.
const VALID_STATUS: std::ops::RangeInclusive<u16> = 100..=999;

impl Fault {
    /// A fault doing `action` on any request, every time. A [`FaultAction::Status`] outside
    /// 100–999 (no HTTP response can carry it) becomes 500, and a warning is logged.
    pub fn new(action: FaultAction) -> Self {
        let action = match action {
            FaultAction::Status {
                status,
                body,
                retry_after,
            } if !VALID_STATUS.contains(&status) => {
                tracing::warn!(
                    status,
                    "fic-emulator: a status fault outside 100-999 answers 500 instead"
                );
                FaultAction::Status {
                    status: 500,
                    body,
                    retry_after,
                }
            }
            other => other,
        };
        Self {
            action,
            target: FaultTarget::Any,
            host: None,
            times: None,
            predicate: None,
        }
    }

    /// Answer `status` (default body for the route). A status outside 100–999 becomes 500
    /// (see [`Fault::new`]); use [`Fault::try_status`] to have it refused instead.
    pub fn status(status: u16) -> Self {
        Self::new(FaultAction::Status {
            status,
            body: None,
            retry_after: None,
        })
    }

    /// Answer `status` (default body for the route); an error for a status outside 100–999.
    pub fn try_status(status: u16) -> Result<Self, crate::Error> {
        if VALID_STATUS.contains(&status) {
            Ok(Self::status(status))
        } else {
            Err(crate::Error::Config(format!(
                "a status fault needs an HTTP status from 100 to 999, not {status}"
            )))
        }
    }

    /// What the fault does.
    pub fn action(&self) -> &FaultAction {
        &self.action
    }

    /// Wait `delay`, then answer normally.
    pub fn delay(delay: Duration) -> Self {
        Self::new(FaultAction::Delay(delay))
    }

    /// Answer 200 with a body that is not JSON.
    pub fn malformed_body() -> Self {
        Self::new(FaultAction::MalformedBody)
    }

    /// Answer an `mtls_pop` token request with a Bearer token.
    pub fn bearer_downgrade() -> Self {
        Self::new(FaultAction::BearerDowngrade).on(FaultTarget::Token)
    }

    /// Close the connection without answering.
    pub fn drop_connection() -> Self {
        Self::new(FaultAction::DropConnection)
    }

    /// Sets the body of a status fault (ignored by other faults).
    #[must_use]
    pub fn body(mut self, body: impl Into<String>) -> Self {
        if let FaultAction::Status { body: b, .. } = &mut self.action {
            *b = Some(body.into());
        }
        self
    }

    /// Sets the `Retry-After` header of a status fault (ignored by other faults).
    #[must_use]
    pub fn retry_after(mut self, value: impl Into<String>) -> Self {
        if let FaultAction::Status { retry_after, .. } = &mut self.action {
            *retry_after = Some(value.into());
        }
        self
    }

    /// Limits the fault to requests of `target`.
    #[must_use]
    pub fn on(mut self, target: FaultTarget) -> Self {
        self.target = target;
        self
    }

    /// Limits the fault to requests whose host matches `pattern` (`*.` prefix allowed).
    #[must_use]
    pub fn host(mut self, pattern: impl Into<String>) -> Self {
        self.host = Some(pattern.into());
        self
    }

    /// Applies to the next `n` matching requests only. With `n` = 0 the fault never applies:
    /// [`Faults::inject`] does not keep it.
    #[must_use]
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    /// Applies only to requests `predicate` accepts (combined with the other limits). It runs
    /// with no lock of the emulator held (it may use the handle, [`Faults`] included), after
    /// the other limits matched; with several requests at once, a count-limited fault may see
    /// more requests than it has counts left (only that many get it).
    #[must_use]
    pub fn when(
        mut self,
        predicate: impl Fn(&LoggedRequest) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// Whether the fault applies to `request`, predicate aside.
    fn matches_without_predicate(&self, request: &LoggedRequest) -> bool {
        if self.times == Some(0) || !self.target.covers(request.route) {
            return false;
        }
        if let Some(pattern) = &self.host {
            if !host_matches(pattern, &request.host) {
                return false;
            }
        }
        !(self.action == FaultAction::BearerDowngrade
            && (request.route != Route::Token
                || request.form_value("token_type") != Some("mtls_pop")))
    }
}

/// Identifies an injected fault, to remove it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FaultId(u64);

#[derive(Default)]
struct FaultData {
    next: u64,
    rules: Vec<(FaultId, Fault)>,
}

/// The active faults of an emulator. Cloning gives another handle to the same set.
#[derive(Clone, Default)]
pub struct Faults {
    inner: Arc<Mutex<FaultData>>,
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faults")
            .field("active", &self.active())
            .finish()
    }
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, FaultData> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a fault; it applies after the faults added before it. A fault limited to 0
    /// requests ([`Fault::times`]) is not kept (it could never apply); its id is still new.
    pub fn inject(&self, fault: Fault) -> FaultId {
        let mut data = self.lock();
        data.next += 1;
        let id = FaultId(data.next);
        if fault.times != Some(0) {
            data.rules.push((id, fault));
        }
        id
    }

    /// Removes a fault; true when it was still active.
    pub fn remove(&self, id: FaultId) -> bool {
        let mut data = self.lock();
        let before = data.rules.len();
        data.rules.retain(|(i, _)| *i != id);
        before != data.rules.len()
    }

    /// Removes every fault.
    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// How many faults are still active (count-limited faults leave once used up).
    pub fn active(&self) -> usize {
        self.lock().rules.len()
    }

    /// Picks the fault for `request` and uses up one of its counts. Predicates run on a
    /// snapshot of the faults, with the lock released; a fault removed or used up meanwhile is
    /// passed over.
    pub(crate) fn take(&self, request: &LoggedRequest) -> Option<FaultAction> {
        let candidates: Vec<(FaultId, Option<FaultPredicate>)> = self
            .lock()
            .rules
            .iter()
            .filter(|(_, f)| f.matches_without_predicate(request))
            .map(|(id, f)| (*id, f.predicate.clone()))
            .collect();
        for (id, predicate) in candidates {
            if !predicate.is_none_or(|p| p(request)) {
                continue;
            }
            let mut data = self.lock();
            let Some(index) = data.rules.iter().position(|(i, _)| *i == id) else {
                continue;
            };
            let fault = &mut data.rules[index].1;
            let action = fault.action.clone();
            match fault.times.as_mut() {
                Some(0) => {
                    data.rules.remove(index);
                    continue;
                }
                Some(n) => {
                    *n -= 1;
                    if *n == 0 {
                        data.rules.remove(index);
                    }
                }
                None => {}
            }
            return Some(action);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn token_request(client_id: &str) -> LoggedRequest {
        LoggedRequest {
            id: 1,
            at: SystemTime::UNIX_EPOCH,
            listener: crate::log::Listener::Https,
            route: Route::Token,
            method: "POST".into(),
            host: "login.microsoftonline.com".into(),
            sni: None,
            path: "/t/oauth2/v2.0/token".into(),
            query: None,
            headers: Vec::new(),
            form: vec![("client_id".into(), client_id.into())],
            body: bytes::Bytes::new(),
            client_cert_thumbprint: None,
            status: None,
            fault: None,
        }
    }

    #[test]
    fn a_predicate_may_use_the_faults() {
        let faults = Faults::default();
        let inner = faults.clone();
        faults.inject(Fault::status(503).when(move |r| {
            // Reading (and changing) the faults from a predicate: no deadlock.
            inner.active() == 1 && r.form_value("client_id") == Some("a")
        }));
        let (sender, receiver) = std::sync::mpsc::channel();
        let worker = faults.clone();
        std::thread::spawn(move || {
            let _ = sender.send((
                worker.take(&token_request("a")),
                worker.take(&token_request("b")),
            ));
        });
        // A guard against a deadlock, not a wait: the answer comes at once.
        let (a, b) = receiver
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("take() deadlocked on a predicate that reads the faults");
        assert_eq!(a.map(|f| f.to_string()).as_deref(), Some("status 503"));
        assert_eq!(b, None);
    }

    #[test]
    fn count_limited_faults_are_used_up_in_order() {
        let faults = Faults::default();
        let zero = faults.inject(Fault::status(500).times(0));
        assert_eq!(faults.active(), 0, "times(0) is not kept");
        assert!(!faults.remove(zero));
        let first = faults.inject(Fault::status(503).times(2));
        faults.inject(Fault::status(429));
        assert_ne!(first, zero);
        let request = token_request("a");
        let seen: Vec<String> = (0..4)
            .filter_map(|_| faults.take(&request).map(|f| f.to_string()))
            .collect();
        assert_eq!(
            seen,
            ["status 503", "status 503", "status 429", "status 429"]
        );
        assert_eq!(faults.active(), 1);
        assert!(!faults.remove(first), "used up and gone");
    }

    #[test]
    fn status_faults_carry_a_sendable_status() {
        for (given, kept) in [
            (0, 500),
            (99, 500),
            (1000, 500),
            (u16::MAX, 500),
            (100, 100),
            (999, 999),
            (503, 503),
        ] {
            let fault = Fault::status(given);
            assert!(
                matches!(fault.action(), FaultAction::Status { status, .. } if *status == kept),
                "{given}"
            );
            assert_eq!(fault.action().to_string(), format!("status {kept}"));
            let direct = Fault::new(FaultAction::Status {
                status: given,
                body: Some("x".into()),
                retry_after: Some("1".into()),
            });
            assert_eq!(
                direct.action(),
                &FaultAction::Status {
                    status: kept,
                    body: Some("x".into()),
                    retry_after: Some("1".into()),
                }
            );
            assert_eq!(Fault::try_status(given).is_ok(), given == kept, "{given}");
        }
    }
}
