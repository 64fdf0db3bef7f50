//! The error codes the cache backends raise.
//!
//! The acquisition engine treats every cache error as a miss (and logs it), so these codes reach
//! callers only when they use a backend directly, and reach logs always.

use fic_oauth_core::ErrorCode;

/// A file could not be read, written, renamed or synced.
pub const CACHE_IO: ErrorCode = ErrorCode::from_static("cache_io_error");

/// The cache file's lock was not obtained within the configured wait.
pub const CACHE_LOCK_TIMEOUT: ErrorCode = ErrorCode::from_static("cache_lock_timeout");

/// Encrypted content could not be decrypted: wrong key (or content altered: the authentication
/// tag does not match), no key configured for an encrypted file or value, plain content where a
/// key is configured (Redis), or an envelope of a version this library does not read (Redis:
/// any; file: a newer one). A file in this state is never overwritten; a file whose envelope is
/// structurally damaged (truncated below its header) is corrupt instead, and set aside.
pub const CACHE_DECRYPTION_FAILED: ErrorCode = ErrorCode::from_static("cache_decryption_failed");

/// A stored value is not a cache entry this library can read.
pub const CACHE_FORMAT: ErrorCode = ErrorCode::from_static("cache_format_error");

/// The remote cache (Redis) answered with an error or could not be reached.
pub const CACHE_UNAVAILABLE: ErrorCode = ErrorCode::from_static("cache_unavailable");

/// The remote cache did not answer within the configured time.
pub const CACHE_TIMEOUT: ErrorCode = ErrorCode::from_static("cache_timeout");
