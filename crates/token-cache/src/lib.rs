//! # fic-token-cache
//!
//! Where tokens are kept between acquisitions, and the engine every flow acquires through.
//!
//! - [`CacheKey`] / [`AccessTokenKey`]: keys in the MSAL unified schema (PROTOCOL §6): the token
//!   type in the key for non-Bearer tokens, extension components (`fmi_path`...) hashed into an
//!   `atext` key, and the binding certificate's `kid` stored with mtls_pop entries and checked
//!   on lookup.
//! - [`TokenCache`]: the seam (async get / put / remove); [`MemoryCache`] is the in-memory
//!   implementation: a sharded map, one probe per hit, no global lock.
//! - [`AcquisitionEngine`]: cache, then network — single flight per key, proactive refresh in
//!   the background, throttling, force refresh and claims bypass, with time only from the
//!   injected clock.
//!
//! It sits on `fic-oauth-core` only; the flow crates (`fic-flows`, `fic-managed-identity`)
//! build [`Lookup`]s and fetch functions, and file and Redis backends implement [`TokenCache`].
#![deny(missing_docs)]

mod cache;
mod engine;
mod entry;
mod key;

pub use cache::{MemoryCache, TokenCache};
pub use engine::{
    AcquisitionEngine, EngineBuilder, FetchFuture, Lookup, DEFAULT_REFRESH_JITTER, EXPIRY_MARGIN,
    REFRESH_RETRY_DELAY,
};
pub use entry::{CacheEntry, CachedAccessToken, CachedAccount, CachedIdToken, CachedRefreshToken};
pub use key::{target, AccessTokenKey, CacheKey, CredentialType, KeyHasher, PassThrough};
