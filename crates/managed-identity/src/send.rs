//! Sending with retries (PROTOCOL §4), every delay through the injected [`Sleeper`].

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use fic_oauth_core::retry::{
    Attempt, ImdsRetry, ManagedIdentityRetry, RetryDecision, RetryPolicy, TokenEndpointRetry,
};
use fic_oauth_core::{
    ClientIdentity, Clock, Error, ErrorCode, HttpTransport, Sleeper, TransportRequest,
};

use crate::codes;
use crate::source::ManagedIdentitySource;

/// Which retry policy a request uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Policy {
    /// IMDS v1 token, `getplatformmetadata`, `issuecredential`: [`ImdsRetry`].
    Imds,
    /// App Service, Service Fabric, Machine Learning, Cloud Shell, Azure Arc:
    /// [`ManagedIdentityRetry`].
    ManagedIdentity,
    /// The IMDSv2 token leg to Entra ID: [`TokenEndpointRetry`].
    TokenEndpoint,
}

impl Policy {
    fn start(self) -> Box<dyn RetryPolicy> {
        match self {
            Self::Imds => Box::new(ImdsRetry::default()),
            Self::ManagedIdentity => Box::new(ManagedIdentityRetry::default()),
            Self::TokenEndpoint => Box::new(TokenEndpointRetry::default()),
        }
    }
}

/// A transport with the clock and sleeper retries use.
#[derive(Clone)]
pub(crate) struct Sender {
    pub(crate) transport: Arc<dyn HttpTransport>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) sleeper: Arc<dyn Sleeper>,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

/// A copy of a request (the body is shared, not copied).
pub(crate) fn copy_request(request: &http::Request<Bytes>) -> http::Request<Bytes> {
    let mut copy = http::Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// `scheme://host[:port]/path`, without the query, for logs and messages.
pub(crate) fn describe_uri(uri: &http::Uri) -> String {
    format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("?"),
        uri.authority().map_or("?", http::uri::Authority::as_str),
        uri.path()
    )
}

fn attempt_of_error(error: &Error) -> Attempt {
    let code = error.code();
    if code == &ErrorCode::TIMEOUT {
        Attempt::Timeout
    } else if code == &ErrorCode::CONNECTION_FAILED {
        Attempt::ConnectionRefused
    } else {
        Attempt::OtherFailure
    }
}

impl Sender {
    /// Sends `request` until the policy stops: the last response (whatever its status), or
    /// the last transport error as the transport gave it.
    pub(crate) async fn send(
        &self,
        request: &http::Request<Bytes>,
        identity: Option<&ClientIdentity>,
        policy: Policy,
    ) -> Result<http::Response<Bytes>, Error> {
        let mut policy = policy.start();
        let target = describe_uri(request.uri());
        let mut attempt_number = 1u32;
        loop {
            tracing::debug!(method = %request.method(), target = %target, attempt = attempt_number, mtls = identity.is_some(), "sending managed identity request");
            let outgoing =
                TransportRequest::new(copy_request(request)).with_identity(identity.cloned());
            let result = self.transport.send(outgoing).await;
            let attempt = match &result {
                Ok(response) if response.status().is_success() => return result,
                Ok(response) => Attempt::response(
                    response.status().as_u16(),
                    response.headers(),
                    self.clock.now(),
                ),
                Err(error) => attempt_of_error(error),
            };
            match policy.decide(&attempt) {
                RetryDecision::RetryAfter(delay) => {
                    tracing::debug!(target = %target, attempt = attempt_number, outcome = ?attempt, delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "retrying managed identity request");
                    self.sleeper.sleep(delay).await;
                    attempt_number += 1;
                }
                RetryDecision::Stop => return result,
            }
        }
    }
}

/// The error for a transport failure that ended a managed identity request.
pub(crate) fn transport_failure(source: ManagedIdentitySource, error: Error) -> Error {
    let (code, what) = if error.code() == &ErrorCode::CONNECTION_FAILED {
        (
            codes::MANAGED_IDENTITY_UNREACHABLE_NETWORK,
            "could not be reached",
        )
    } else if error.code() == &ErrorCode::TIMEOUT {
        (
            codes::REQUEST_TIMEOUT,
            "did not answer in time, after retries",
        )
    } else {
        (
            codes::MANAGED_IDENTITY_REQUEST_FAILED,
            "could not be called",
        )
    };
    let message = format!(
        "[Managed Identity] the {source} endpoint {what}: {} ({})",
        error.message(),
        error.code()
    );
    let retryable = error.code() == &ErrorCode::TIMEOUT;
    Error::new(code, message)
        .with_retryable(retryable)
        .with_source(error)
}
