//! # fic-oauth-core
//!
//! The sans-IO core of fic-rs. It knows the wire (authorities, token endpoints, token requests
//! and responses, error bodies, retry decisions) and defines the seams every other crate plugs
//! into, but it never opens a socket, never reads the process environment and never looks at
//! the system clock by itself.
#![deny(missing_docs)]

pub mod authority;
pub mod credential;
pub mod error;
pub mod identity;
pub mod secret;
pub mod thumbprint;
pub mod time;
pub mod transport;

pub use authority::AuthorityKind;
pub use credential::{
    AccessToken, Account, TokenCredential, TokenRequestOptions, TokenSource, TokenType,
};
pub use error::{Error, ErrorCode, Result, ServerError};
pub use identity::{ClientIdentity, KeyKind, SignatureAlgorithm, SigningKey};
pub use secret::Secret;
pub use time::{Clock, ManualClock, Sleeper, SystemClock};
pub use transport::{HttpTransport, TransportRequest};
