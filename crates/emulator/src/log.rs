//! The request log: every request the emulator received, faulted or not, with its response status.
//!
//! The log keeps request bodies verbatim (secrets and assertions included): it is a local test
//! tool, and tests need to see exactly what a client sent. Its `Debug` output, which ends up in
//! test failures and logs, shows the names but not the values of secret headers and form fields,
//! and only the length of the body.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;

/// Which listener received a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Listener {
    /// The HTTPS listener (login, regional, mtlsauth and resource hosts).
    Https,
    /// The plain-HTTP IMDS listener (`169.254.169.254:80`), which also serves the loopback
    /// managed identity endpoints of App Service, Azure Arc, Cloud Shell and Machine Learning.
    Imds,
    /// The Service Fabric managed identity listener (HTTPS, self-signed certificate).
    ServiceFabric,
}

/// What a request was routed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Route {
    /// `/{tenant}/oauth2/v2.0/token` on an identity host.
    Token,
    /// OIDC discovery, JWKS and instance discovery on an identity host.
    Metadata,
    /// The protected resource (any path on a resource host).
    Resource,
    /// IMDS (`169.254.169.254`): instance metadata, the IMDS v1 token endpoint, IMDSv2
    /// `getplatformmetadata` and `issuecredential`, and unknown paths of the IMDS listener.
    Imds,
    /// The App Service managed identity endpoint (`IDENTITY_ENDPOINT`, on the IMDS listener).
    AppService,
    /// The Azure Machine Learning managed identity endpoint (`MSI_ENDPOINT`, on the IMDS listener).
    MachineLearning,
    /// The Cloud Shell managed identity endpoint (`MSI_ENDPOINT`, on the IMDS listener).
    CloudShell,
    /// The Azure Arc managed identity endpoint (`IDENTITY_ENDPOINT`, on the IMDS listener).
    AzureArc,
    /// The Service Fabric managed identity endpoint (its own HTTPS listener).
    ServiceFabric,
    /// Nothing answers there (404).
    NotFound,
}

impl Route {
    /// True for the managed identity endpoints of the hosting environments other than IMDS
    /// (App Service, Machine Learning, Cloud Shell, Azure Arc, Service Fabric).
    pub fn is_hosted_managed_identity(self) -> bool {
        matches!(
            self,
            Route::AppService
                | Route::MachineLearning
                | Route::CloudShell
                | Route::AzureArc
                | Route::ServiceFabric
        )
    }
}

/// One request and the status it got.
#[derive(Clone)]
#[non_exhaustive]
pub struct LoggedRequest {
    /// Sequence number, from 1, in arrival order.
    pub id: u64,
    /// When it arrived (emulator clock).
    pub at: SystemTime,
    /// The listener that received it.
    pub listener: Listener,
    /// Where it was routed.
    pub route: Route,
    /// HTTP method.
    pub method: String,
    /// Host (from the `Host` header, lower-cased, without port).
    pub host: String,
    /// The TLS SNI name, when the client sent one.
    pub sni: Option<String>,
    /// Path.
    pub path: String,
    /// Query string, without `?`.
    pub query: Option<String>,
    /// Headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The `application/x-www-form-urlencoded` body as ordered pairs (empty for other bodies).
    pub form: Vec<(String, String)>,
    /// The raw body.
    pub body: Bytes,
    /// `x5t#S256` of the TLS client certificate, when one was presented.
    pub client_cert_thumbprint: Option<String>,
    /// Response status; `None` while a fault predicate looks at the request, and for dropped
    /// connections.
    pub status: Option<u16>,
    /// The fault applied, described (`status 503`, `delay 10ms`, `drop connection`, …).
    pub fault: Option<String>,
}

/// Form fields whose values `Debug` leaves out.
const SECRET_FORM_FIELDS: [&str; 7] = [
    "client_secret",
    "client_assertion",
    "assertion",
    "refresh_token",
    "user_federated_identity_credential",
    "password",
    "code",
];

/// Headers whose values `Debug` leaves out.
const SECRET_HEADERS: [&str; 4] = ["authorization", "secret", "x-identity-header", "cookie"];

/// `(name, value)` pairs with the values of `secret` names replaced.
fn redacted<'a>(pairs: &'a [(String, String)], secret: &[&str]) -> Vec<(&'a str, &'a str)> {
    pairs
        .iter()
        .map(|(name, value)| {
            if secret.iter().any(|s| s.eq_ignore_ascii_case(name)) {
                (name.as_str(), "<redacted>")
            } else {
                (name.as_str(), value.as_str())
            }
        })
        .collect()
}

impl std::fmt::Debug for LoggedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggedRequest")
            .field("id", &self.id)
            .field("listener", &self.listener)
            .field("route", &self.route)
            .field("method", &self.method)
            .field("host", &self.host)
            .field("sni", &self.sni)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("headers", &redacted(&self.headers, &SECRET_HEADERS))
            .field("form", &redacted(&self.form, &SECRET_FORM_FIELDS))
            .field("body_len", &self.body.len())
            .field("client_cert_thumbprint", &self.client_cert_thumbprint)
            .field("status", &self.status)
            .field("fault", &self.fault)
            .finish_non_exhaustive()
    }
}

impl LoggedRequest {
    /// The first value of a form parameter.
    pub fn form_value(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first value of a query parameter.
    pub fn query_value(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// True for token-endpoint requests.
    pub fn is_token_request(&self) -> bool {
        self.route == Route::Token
    }

    /// The query parameters, decoded, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.query.as_deref().unwrap_or_default().as_bytes())
            .into_owned()
            .collect()
    }
}

/// The shared request log. Cloning gives another handle to the same log.
#[derive(Clone, Debug, Default)]
pub struct RequestLog {
    inner: Arc<Mutex<LogData>>,
}

#[derive(Debug, Default)]
struct LogData {
    next_id: u64,
    entries: Vec<LoggedRequest>,
}

impl RequestLog {
    fn lock(&self) -> MutexGuard<'_, LogData> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn next_id(&self) -> u64 {
        let mut data = self.lock();
        data.next_id += 1;
        data.next_id
    }

    pub(crate) fn push(&self, entry: LoggedRequest) {
        self.lock().entries.push(entry);
    }

    /// Every request so far, in arrival order of completion.
    pub fn entries(&self) -> Vec<LoggedRequest> {
        self.lock().entries.clone()
    }

    /// How many requests were logged.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when nothing was logged.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every entry.
    pub fn clear(&self) {
        self.lock().entries.clear();
    }

    /// The requests matching `predicate`.
    pub fn filter(&self, predicate: impl Fn(&LoggedRequest) -> bool) -> Vec<LoggedRequest> {
        self.lock()
            .entries
            .iter()
            .filter(|e| predicate(e))
            .cloned()
            .collect()
    }

    /// How many requests match `predicate`.
    pub fn count(&self, predicate: impl Fn(&LoggedRequest) -> bool) -> usize {
        self.lock().entries.iter().filter(|e| predicate(e)).count()
    }

    /// Token-endpoint requests.
    pub fn token_requests(&self) -> Vec<LoggedRequest> {
        self.filter(|e| e.route == Route::Token)
    }

    /// Protected-resource requests.
    pub fn resource_requests(&self) -> Vec<LoggedRequest> {
        self.filter(|e| e.route == Route::Resource)
    }

    /// Requests to the IMDS listener.
    pub fn imds_requests(&self) -> Vec<LoggedRequest> {
        self.filter(|e| e.listener == Listener::Imds)
    }

    /// Requests routed to `route`.
    pub fn route_requests(&self, route: Route) -> Vec<LoggedRequest> {
        self.filter(|e| e.route == route)
    }

    /// Requests to IMDS whose path is `path` (`/metadata/identity/issuecredential`, …).
    pub fn imds_path_requests(&self, path: &str) -> Vec<LoggedRequest> {
        self.filter(|e| e.route == Route::Imds && e.path == path)
    }

    /// Discovery / JWKS requests.
    pub fn metadata_requests(&self) -> Vec<LoggedRequest> {
        self.filter(|e| e.route == Route::Metadata)
    }

    /// The most recent entry.
    pub fn last(&self) -> Option<LoggedRequest> {
        self.lock().entries.last().cloned()
    }

    /// The most recent token-endpoint request.
    pub fn last_token_request(&self) -> Option<LoggedRequest> {
        self.lock()
            .entries
            .iter()
            .rev()
            .find(|e| e.route == Route::Token)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_leaves_out_secret_values_and_the_body() {
        let request = LoggedRequest {
            id: 1,
            at: SystemTime::UNIX_EPOCH,
            listener: Listener::Https,
            route: Route::Token,
            method: "POST".into(),
            host: "login.microsoftonline.com".into(),
            sni: None,
            path: "/t/oauth2/v2.0/token".into(),
            query: None,
            headers: vec![
                ("authorization".into(), "Bearer header-secret".into()),
                ("x-client-sku".into(), "fic-rs".into()),
            ],
            form: vec![
                ("client_id".into(), "the-client".into()),
                ("client_secret".into(), "form-secret".into()),
                ("client_assertion".into(), "assertion-secret".into()),
            ],
            body: Bytes::from_static(b"client_secret=form-secret"),
            client_cert_thumbprint: None,
            status: Some(200),
            fault: None,
        };
        let text = format!("{request:?}");
        for secret in ["header-secret", "form-secret", "assertion-secret"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        for shown in ["the-client", "fic-rs", "client_secret", "body_len: 25"] {
            assert!(text.contains(shown), "{shown} missing: {text}");
        }
        // The fields themselves keep everything, for assertions.
        assert_eq!(request.form_value("client_secret"), Some("form-secret"));
    }
}
