//! Fault injection: make chosen requests fail in chosen ways.
//!
//! A [`Fault`] says *what* happens (a status with body and `Retry-After`, a delay, a malformed
//! body, a Bearer downgrade of an `mtls_pop` request, a dropped connection), *where* (a route and
//! optionally a host pattern) and *how often* (the next N matching requests, requests a predicate
//! accepts, or every matching request until removed). The first active fault that matches a
//! request applies; faulted requests are logged with [`LoggedRequest::fault`] set.

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
        /// HTTP status.
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

impl Fault {
    /// A fault doing `action` on any request, every time.
    pub fn new(action: FaultAction) -> Self {
        Self {
            action,
            target: FaultTarget::Any,
            host: None,
            times: None,
            predicate: None,
        }
    }

    /// Answer `status` (default body for the route).
    pub fn status(status: u16) -> Self {
        Self::new(FaultAction::Status {
            status,
            body: None,
            retry_after: None,
        })
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

    /// Applies to the next `n` matching requests only.
    #[must_use]
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    /// Applies only to requests `predicate` accepts (combined with the other limits).
    #[must_use]
    pub fn when(
        mut self,
        predicate: impl Fn(&LoggedRequest) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    fn matches(&self, request: &LoggedRequest) -> bool {
        if self.times == Some(0) || !self.target.covers(request.route) {
            return false;
        }
        if let Some(pattern) = &self.host {
            if !host_matches(pattern, &request.host) {
                return false;
            }
        }
        if self.action == FaultAction::BearerDowngrade
            && (request.route != Route::Token
                || request.form_value("token_type") != Some("mtls_pop"))
        {
            return false;
        }
        self.predicate.as_ref().is_none_or(|p| p(request))
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

    /// Adds a fault; it applies after the faults added before it.
    pub fn inject(&self, fault: Fault) -> FaultId {
        let mut data = self.lock();
        data.next += 1;
        let id = FaultId(data.next);
        data.rules.push((id, fault));
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

    /// Picks the fault for `request` and uses up one of its counts.
    pub(crate) fn take(&self, request: &LoggedRequest) -> Option<FaultAction> {
        let mut data = self.lock();
        let index = data.rules.iter().position(|(_, f)| f.matches(request))?;
        let fault = &mut data.rules[index].1;
        let action = fault.action.clone();
        if let Some(n) = fault.times.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                data.rules.remove(index);
            }
        }
        Some(action)
    }
}
