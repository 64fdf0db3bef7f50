//! Retry policies as pure decisions (PROTOCOL §4).
//!
//! A policy is a small state machine: after each attempt, tell it what happened
//! ([`Attempt`]); it answers [`RetryDecision::RetryAfter`] with the delay to sleep (through the
//! injected [`Sleeper`](crate::Sleeper)) or [`RetryDecision::Stop`]. It never sleeps, reads a
//! clock or sends anything itself.
//!
//! ```
//! use std::time::Duration;
//! use fic_oauth_core::retry::{Attempt, ImdsRetry, RetryDecision, RetryPolicy};
//!
//! let mut policy = ImdsRetry::default();
//! assert_eq!(policy.decide(&Attempt::status(500)), RetryDecision::RetryAfter(Duration::from_secs(1)));
//! assert_eq!(policy.decide(&Attempt::status(503)), RetryDecision::RetryAfter(Duration::from_secs(2)));
//! assert_eq!(policy.decide(&Attempt::ConnectionRefused), RetryDecision::Stop);
//! ```

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::HeaderMap;

use crate::error::{Error, ErrorCode};
use crate::response::parse_retry_after;
use crate::time::{Clock, Sleeper};
use crate::transport::{HttpTransport, TransportRequest};

/// What one attempt ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Attempt {
    /// A response with this status (success statuses never retry).
    Status {
        /// The HTTP status.
        status: u16,
        /// The response's `Retry-After`, parsed (see [`Attempt::response`]).
        retry_after: Option<Duration>,
    },
    /// The request timed out.
    Timeout,
    /// The connection was refused or the host unreachable.
    ConnectionRefused,
    /// Any other transport failure.
    OtherFailure,
}

impl Attempt {
    /// An attempt that got a response: `Retry-After` (seconds or HTTP date) read at `now`.
    pub fn response(status: u16, headers: &HeaderMap, now: SystemTime) -> Self {
        Self::Status {
            status,
            retry_after: parse_retry_after(headers, now),
        }
    }

    /// What a transport call ended with: the response (its `Retry-After` read at `now`), or
    /// the transport error's class (`timeout`, `connection_failed`, anything else).
    pub fn of(result: &Result<http::Response<Bytes>, Error>, now: SystemTime) -> Self {
        match result {
            Ok(response) => Self::response(response.status().as_u16(), response.headers(), now),
            Err(error) if error.code() == &ErrorCode::TIMEOUT => Self::Timeout,
            Err(error) if error.code() == &ErrorCode::CONNECTION_FAILED => Self::ConnectionRefused,
            Err(_) => Self::OtherFailure,
        }
    }

    /// A response without `Retry-After`.
    pub fn status(status: u16) -> Self {
        Self::Status {
            status,
            retry_after: None,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Attempt::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The answer of a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryDecision {
    /// Send the same request again after this delay.
    RetryAfter(Duration),
    /// Give up: return the last result to the caller.
    Stop,
}

/// A retry policy; one value per logical request.
pub trait RetryPolicy: Send {
    /// What to do after an attempt.
    fn decide(&mut self, attempt: &Attempt) -> RetryDecision;
}

/// Sends `request` through `transport` until `policy` stops, sleeping on `sleeper` as it says;
/// returns the last outcome (a response of any status, or the last transport error).
/// `on_retry` is told each retried attempt and the delay before the next (for logs).
///
/// ```
/// # async fn demo(transport: &dyn fic_oauth_core::HttpTransport, request: fic_oauth_core::TransportRequest) {
/// use fic_oauth_core::retry::{send_with_retries, TokenEndpointRetry};
/// use fic_oauth_core::ManualClock;
///
/// let clock = ManualClock::default(); // production: SystemClock and TokioSleeper
/// let response = send_with_retries(
///     transport, &clock, &clock, &request,
///     &mut TokenEndpointRetry::default(), &mut |_attempt, _delay| {},
/// ).await;
/// # }
/// ```
pub async fn send_with_retries(
    transport: &dyn HttpTransport,
    clock: &dyn Clock,
    sleeper: &dyn Sleeper,
    request: &TransportRequest,
    policy: &mut dyn RetryPolicy,
    on_retry: &mut (dyn FnMut(&Attempt, Duration) + Send),
) -> Result<http::Response<Bytes>, Error> {
    loop {
        let result = transport.send(request.clone()).await;
        let attempt = Attempt::of(&result, clock.now());
        match policy.decide(&attempt) {
            RetryDecision::RetryAfter(delay) => {
                on_retry(&attempt, delay);
                sleeper.sleep(delay).await;
            }
            RetryDecision::Stop => return result,
        }
    }
}

/// The token endpoint: one retry after 1 s on 5xx or a timeout, none when `Retry-After` is
/// present (429/503 with `Retry-After` are throttling: the caller gets the error and its delay).
#[derive(Clone, Debug, Default)]
pub struct TokenEndpointRetry {
    retried: bool,
}

impl RetryPolicy for TokenEndpointRetry {
    fn decide(&mut self, attempt: &Attempt) -> RetryDecision {
        if self.retried {
            return RetryDecision::Stop;
        }
        let retry = match attempt {
            Attempt::Status {
                status,
                retry_after,
            } => *status >= 500 && retry_after.is_none(),
            Attempt::Timeout => true,
            Attempt::ConnectionRefused | Attempt::OtherFailure => false,
        };
        if retry {
            self.retried = true;
            RetryDecision::RetryAfter(Duration::from_secs(1))
        } else {
            RetryDecision::Stop
        }
    }
}

/// Managed identity sources other than IMDS: 404, 408, 429, 500, 503, 504 and timeouts;
/// 3 retries, each after max(1 s, `Retry-After`).
#[derive(Clone, Debug, Default)]
pub struct ManagedIdentityRetry {
    retries: u32,
}

impl ManagedIdentityRetry {
    /// The number of retries.
    pub const MAX_RETRIES: u32 = 3;
}

impl RetryPolicy for ManagedIdentityRetry {
    fn decide(&mut self, attempt: &Attempt) -> RetryDecision {
        let retryable = match attempt {
            Attempt::Status { status, .. } => matches!(status, 404 | 408 | 429 | 500 | 503 | 504),
            Attempt::Timeout => true,
            Attempt::ConnectionRefused | Attempt::OtherFailure => false,
        };
        if !retryable || self.retries >= Self::MAX_RETRIES {
            return RetryDecision::Stop;
        }
        self.retries += 1;
        let delay = attempt
            .retry_after()
            .unwrap_or_default()
            .max(Duration::from_secs(1));
        RetryDecision::RetryAfter(delay)
    }
}

/// IMDS: 404, 408, 410, 429, 5xx and timeouts; 3 retries at 1, 2, 4 s; when the first answer is
/// 410 (IMDS is being updated), up to 7 retries 10 s apart. Connection refused is never retried.
#[derive(Clone, Debug, Default)]
pub struct ImdsRetry {
    retries: u32,
    gone_mode: bool,
}

impl ImdsRetry {
    /// Retries with exponential backoff.
    pub const MAX_RETRIES: u32 = 3;
    /// Retries when the first answer was 410.
    pub const MAX_GONE_RETRIES: u32 = 7;
    /// The delay between retries after a first 410.
    pub const GONE_DELAY: Duration = Duration::from_secs(10);
}

impl RetryPolicy for ImdsRetry {
    fn decide(&mut self, attempt: &Attempt) -> RetryDecision {
        let status = match attempt {
            Attempt::Status { status, .. } => Some(*status),
            _ => None,
        };
        if self.retries == 0 && status == Some(410) {
            self.gone_mode = true;
        }
        let retryable = match attempt {
            Attempt::Status { status, .. } => {
                matches!(status, 404 | 408 | 410 | 429) || (500..600).contains(status)
            }
            Attempt::Timeout => true,
            Attempt::ConnectionRefused | Attempt::OtherFailure => false,
        };
        let limit = if self.gone_mode {
            Self::MAX_GONE_RETRIES
        } else {
            Self::MAX_RETRIES
        };
        if !retryable || self.retries >= limit {
            return RetryDecision::Stop;
        }
        let delay = if self.gone_mode {
            Self::GONE_DELAY
        } else {
            Duration::from_secs(1 << self.retries)
        };
        self.retries += 1;
        RetryDecision::RetryAfter(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn status(policy: &mut dyn RetryPolicy, code: u16) -> RetryDecision {
        policy.decide(&Attempt::status(code))
    }

    fn status_after(policy: &mut dyn RetryPolicy, code: u16, seconds: u64) -> RetryDecision {
        policy.decide(&Attempt::Status {
            status: code,
            retry_after: Some(Duration::from_secs(seconds)),
        })
    }

    const fn secs(s: u64) -> RetryDecision {
        RetryDecision::RetryAfter(Duration::from_secs(s))
    }

    /// Answers 500 once, then 200; counts sends.
    #[derive(Debug, Default)]
    struct FlakyOnce(std::sync::atomic::AtomicUsize);

    #[async_trait::async_trait]
    impl HttpTransport for FlakyOnce {
        async fn send(&self, _: TransportRequest) -> Result<http::Response<Bytes>, Error> {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let status = if n == 0 { 500 } else { 200 };
            Ok(http::Response::builder()
                .status(status)
                .body(Bytes::new())
                .unwrap())
        }
    }

    #[tokio::test]
    async fn send_with_retries_sleeps_as_the_policy_says() {
        let clock = crate::ManualClock::default();
        let transport = FlakyOnce::default();
        let request = TransportRequest::new(http::Request::new(Bytes::from_static(b"x")));
        let mut retried = Vec::new();
        let response = send_with_retries(
            &transport,
            &clock,
            &clock,
            &request,
            &mut TokenEndpointRetry::default(),
            &mut |attempt, delay| retried.push((*attempt, delay)),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(transport.0.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(clock.sleeps(), vec![Duration::from_secs(1)]);
        assert_eq!(
            retried,
            vec![(Attempt::status(500), Duration::from_secs(1))]
        );
    }

    #[test]
    fn transport_errors_are_classified() {
        let now = SystemTime::UNIX_EPOCH;
        let err = |code| Err(Error::new(code, "x"));
        assert_eq!(Attempt::of(&err(ErrorCode::TIMEOUT), now), Attempt::Timeout);
        assert_eq!(
            Attempt::of(&err(ErrorCode::CONNECTION_FAILED), now),
            Attempt::ConnectionRefused
        );
        assert_eq!(
            Attempt::of(&err(ErrorCode::TLS_HANDSHAKE_FAILED), now),
            Attempt::OtherFailure
        );
    }

    #[test]
    fn attempts_read_retry_after_at_now() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut headers = HeaderMap::new();
        let date = httpdate::fmt_http_date(now + Duration::from_secs(42));
        headers.insert("retry-after", HeaderValue::from_str(&date).unwrap());
        assert_eq!(
            Attempt::response(429, &headers, now),
            Attempt::Status {
                status: 429,
                retry_after: Some(Duration::from_secs(42))
            }
        );
        assert_eq!(
            Attempt::response(500, &HeaderMap::new(), now),
            Attempt::status(500)
        );
    }

    #[test]
    fn token_endpoint_retries_once_on_5xx_and_timeout() {
        let mut p = TokenEndpointRetry::default();
        assert_eq!(status(&mut p, 500), secs(1));
        assert_eq!(status(&mut p, 500), RetryDecision::Stop);
        let mut p = TokenEndpointRetry::default();
        assert_eq!(p.decide(&Attempt::Timeout), secs(1));
        assert_eq!(p.decide(&Attempt::Timeout), RetryDecision::Stop);
        for code in [200, 400, 401, 404, 429] {
            assert_eq!(
                status(&mut TokenEndpointRetry::default(), code),
                RetryDecision::Stop,
                "{code}"
            );
        }
        assert_eq!(
            status_after(&mut TokenEndpointRetry::default(), 503, 5),
            RetryDecision::Stop
        );
        assert_eq!(
            status_after(&mut TokenEndpointRetry::default(), 500, 0),
            RetryDecision::Stop
        );
        assert_eq!(
            TokenEndpointRetry::default().decide(&Attempt::ConnectionRefused),
            RetryDecision::Stop
        );
    }

    #[test]
    fn managed_identity_retries_three_times_with_retry_after_floor() {
        for code in [404, 408, 429, 500, 503, 504] {
            let mut p = ManagedIdentityRetry::default();
            for _ in 0..3 {
                assert_eq!(status(&mut p, code), secs(1), "{code}");
            }
            assert_eq!(status(&mut p, code), RetryDecision::Stop, "{code}");
        }
        for code in [200, 400, 401, 403, 410, 501, 502] {
            assert_eq!(
                status(&mut ManagedIdentityRetry::default(), code),
                RetryDecision::Stop,
                "{code}"
            );
        }
        assert_eq!(
            status_after(&mut ManagedIdentityRetry::default(), 429, 7),
            secs(7)
        );
        assert_eq!(
            status_after(&mut ManagedIdentityRetry::default(), 429, 0),
            secs(1)
        );
        assert_eq!(
            ManagedIdentityRetry::default().decide(&Attempt::Timeout),
            secs(1)
        );
        assert_eq!(
            ManagedIdentityRetry::default().decide(&Attempt::ConnectionRefused),
            RetryDecision::Stop
        );
    }

    #[test]
    fn imds_backoff_and_gone_mode() {
        let mut p = ImdsRetry::default();
        assert_eq!(status(&mut p, 500), secs(1));
        assert_eq!(status(&mut p, 502), secs(2));
        assert_eq!(p.decide(&Attempt::Timeout), secs(4));
        assert_eq!(status(&mut p, 500), RetryDecision::Stop);

        let mut p = ImdsRetry::default();
        for _ in 0..7 {
            assert_eq!(status(&mut p, 410), secs(10));
        }
        assert_eq!(status(&mut p, 410), RetryDecision::Stop);

        // A 410 after the first answer does not switch to the long schedule.
        let mut p = ImdsRetry::default();
        assert_eq!(status(&mut p, 500), secs(1));
        assert_eq!(status(&mut p, 410), secs(2));

        for code in [404, 408, 429, 599] {
            assert_eq!(status(&mut ImdsRetry::default(), code), secs(1), "{code}");
        }
        for code in [200, 400, 401, 403] {
            assert_eq!(
                status(&mut ImdsRetry::default(), code),
                RetryDecision::Stop,
                "{code}"
            );
        }
        assert_eq!(
            ImdsRetry::default().decide(&Attempt::ConnectionRefused),
            RetryDecision::Stop
        );
        assert_eq!(
            ImdsRetry::default().decide(&Attempt::OtherFailure),
            RetryDecision::Stop
        );
    }
}
