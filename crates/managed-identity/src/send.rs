//! Sending with retries (PROTOCOL §4), every delay through the injected [`Sleeper`].

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use fic_oauth_core::retry::{
    send_with_retries, ImdsRetry, ManagedIdentityRetry, RetryPolicy, TokenEndpointRetry,
};
use fic_oauth_core::transport::describe_uri;
use fic_oauth_core::{Clock, Error, ErrorCode, HttpTransport, Sleeper, TransportRequest};

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

impl Sender {
    /// Sends `request` until the policy stops: the last response (whatever its status), or
    /// the last transport error as the transport gave it.
    pub(crate) async fn send(
        &self,
        request: &TransportRequest,
        policy: Policy,
    ) -> Result<http::Response<Bytes>, Error> {
        let target = describe_uri(request.request.uri());
        tracing::debug!(method = %request.request.method(), target = %target, mtls = request.identity.is_some(), "sending managed identity request");
        send_with_retries(
            self.transport.as_ref(),
            self.clock.as_ref(),
            self.sleeper.as_ref(),
            request,
            policy.start().as_mut(),
            &mut |attempt, delay| {
                tracing::debug!(target = %target, outcome = ?attempt, delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "retrying managed identity request");
            },
        )
        .await
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
