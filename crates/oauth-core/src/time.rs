//! Time seams: every "now" and every delay in fic-rs goes through [`Clock`] and [`Sleeper`].
//!
//! Production code uses [`SystemClock`] and [`TokioSleeper`]; tests use [`ManualClock`], which is
//! both: sleeping on it advances its time at once and records the delay, so expiry, refresh and
//! retry tests take no wall time.
//!
//! ```
//! use std::time::Duration;
//! use fic_oauth_core::time::{Clock, ManualClock, Sleeper, unix_seconds};
//!
//! # async fn demo() {
//! let clock = ManualClock::at_unix(1_700_000_000);
//! clock.sleep(Duration::from_secs(10)).await;
//! assert_eq!(unix_seconds(clock.now()), 1_700_000_010);
//! assert_eq!(clock.sleeps(), vec![Duration::from_secs(10)]);
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// A boxed future returned by [`Sleeper::sleep`].
pub type SleepFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Waits for a duration.
pub trait Sleeper: Send + Sync + fmt::Debug {
    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> SleepFuture;
}

impl<T: Clock + ?Sized> Clock for Arc<T> {
    fn now(&self) -> SystemTime {
        (**self).now()
    }
}

impl<T: Sleeper + ?Sized> Sleeper for Arc<T> {
    fn sleep(&self, duration: Duration) -> SleepFuture {
        (**self).sleep(duration)
    }
}

/// Seconds since the Unix epoch (0 for times before it).
pub fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The latest Unix time fic-rs accepts from stored or received data: 9999-12-31T23:59:59Z.
///
/// Far enough for any token, and far enough from the limits of [`SystemTime`] on every platform
/// that adding hours or days to such a time cannot overflow.
pub const MAX_UNIX_SECONDS: u64 = 253_402_300_799;

/// The time `seconds` after the Unix epoch, or `None` when it is after [`MAX_UNIX_SECONDS`]
/// (data carrying such a time is malformed). Use it for every time read from storage or the
/// network.
///
/// ```
/// use fic_oauth_core::time::{checked_from_unix_seconds, unix_seconds, MAX_UNIX_SECONDS};
///
/// assert_eq!(checked_from_unix_seconds(1_700_000_000).map(unix_seconds), Some(1_700_000_000));
/// assert!(checked_from_unix_seconds(MAX_UNIX_SECONDS).is_some());
/// assert_eq!(checked_from_unix_seconds(u64::MAX), None);
/// ```
pub fn checked_from_unix_seconds(seconds: u64) -> Option<SystemTime> {
    if seconds > MAX_UNIX_SECONDS {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

/// The time `seconds` after the Unix epoch, saturating at [`MAX_UNIX_SECONDS`] (it never
/// panics; use [`checked_from_unix_seconds`] to reject such values instead).
pub fn from_unix_seconds(seconds: u64) -> SystemTime {
    checked_from_unix_seconds(seconds.min(MAX_UNIX_SECONDS)).unwrap_or(UNIX_EPOCH)
}

/// The operating system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Sleeps on the tokio timer (needs a tokio runtime with time enabled).
#[cfg(feature = "tokio")]
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioSleeper;

#[cfg(feature = "tokio")]
impl Sleeper for TokioSleeper {
    fn sleep(&self, duration: Duration) -> SleepFuture {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock for tests: time moves only when told to (or when something sleeps on it).
///
/// Clones share the same time.
#[derive(Clone)]
pub struct ManualClock {
    state: Arc<Mutex<ManualState>>,
}

struct ManualState {
    now: SystemTime,
    sleeps: Vec<Duration>,
}

impl ManualClock {
    /// A clock showing `now`.
    pub fn new(now: SystemTime) -> Self {
        Self {
            state: Arc::new(Mutex::new(ManualState {
                now,
                sleeps: Vec::new(),
            })),
        }
    }

    /// A clock showing `seconds` after the Unix epoch.
    pub fn at_unix(seconds: u64) -> Self {
        Self::new(from_unix_seconds(seconds))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ManualState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        let mut state = self.lock();
        state.now += by;
    }

    /// Sets the time.
    pub fn set(&self, now: SystemTime) {
        self.lock().now = now;
    }

    /// Every delay slept on this clock so far, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.lock().sleeps.clone()
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::at_unix(1_700_000_000)
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("ManualClock")
            .field("now", &unix_seconds(state.now))
            .field("sleeps", &state.sleeps.len())
            .finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.lock().now
    }
}

impl Sleeper for ManualClock {
    /// Advances the clock by `duration` at once, records it, and yields once.
    fn sleep(&self, duration: Duration) -> SleepFuture {
        {
            let mut state = self.lock();
            state.now += duration;
            state.sleeps.push(duration);
        }
        Box::pin(YieldOnce(false))
    }
}

/// Returns `Pending` once so other tasks can run, then `Ready`.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        if self.0 {
            std::task::Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_advances_on_sleep_and_shares_time() {
        let clock = ManualClock::at_unix(100);
        let other = clock.clone();
        clock.sleep(Duration::from_secs(2)).await;
        other.advance(Duration::from_secs(3));
        assert_eq!(unix_seconds(clock.now()), 105);
        assert_eq!(other.sleeps(), vec![Duration::from_secs(2)]);
        clock.set(from_unix_seconds(7));
        assert_eq!(unix_seconds(other.now()), 7);
    }

    #[test]
    fn huge_unix_times_are_rejected_or_saturated_never_a_panic() {
        for seconds in [MAX_UNIX_SECONDS + 1, u64::MAX / 2, u64::MAX] {
            assert_eq!(checked_from_unix_seconds(seconds), None, "{seconds}");
            assert_eq!(unix_seconds(from_unix_seconds(seconds)), MAX_UNIX_SECONDS);
        }
        let max = checked_from_unix_seconds(MAX_UNIX_SECONDS).unwrap();
        assert_eq!(unix_seconds(max), MAX_UNIX_SECONDS);
        // Adding a year to the latest accepted time is still fine.
        assert!(max.checked_add(Duration::from_secs(365 * 86_400)).is_some());
        assert_eq!(unix_seconds(from_unix_seconds(0)), 0);
    }

    #[test]
    fn unix_seconds_before_epoch_is_zero() {
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(5)), 0);
    }
}
