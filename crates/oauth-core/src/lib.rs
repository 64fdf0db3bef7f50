//! # fic-oauth-core
//!
//! The sans-IO core of fic-rs. It knows the wire (authorities, token endpoints, token requests
//! and responses, error bodies, retry decisions) and defines the seams every other crate plugs
//! into, but it never opens a socket, never reads the process environment and never looks at
//! the system clock by itself.
//!
//! ## Layers above
//! - `fic-mtls-transport` implements [`HttpTransport`] (hyper + rustls, a pool per
//!   [`ClientIdentity`]).
//! - `fic-assertion` loads certificates and keys into [`ClientIdentity`] and signs client
//!   assertions through the same [`SigningKey`].
//! - The token cache, managed identity and flow crates compose these into
//!   [`TokenCredential`]s.
//!
//! ## A request built and a response parsed
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use fic_oauth_core::authority::{Authority, EndpointOptions, Region};
//! use fic_oauth_core::request::{ClientAuth, TokenRequest};
//! use fic_oauth_core::response::TokenResponse;
//! use fic_oauth_core::{Secret, TokenType};
//!
//! // Resolve the regional endpoint and build a client-credentials request with a secret.
//! let authority = Authority::parse("https://login.microsoftonline.com/contoso.onmicrosoft.com")?;
//! let endpoint = authority.token_endpoint(
//!     &EndpointOptions::default().with_region(Some(Region::parse("westus3")?)),
//! )?;
//! let outgoing = TokenRequest::client_credentials(endpoint, "my-client-id", ["https://graph.microsoft.com/.default"])
//!     .with_auth(ClientAuth::Secret(Secret::new("my-secret")))
//!     .into_transport_request()?;
//! assert_eq!(outgoing.request.uri().host(), Some("westus3.login.microsoft.com"));
//! assert!(outgoing.request.headers().contains_key("client-request-id"));
//!
//! // ...send it with any HttpTransport, then parse what came back.
//! let body = br#"{"token_type":"Bearer","access_token":"eyJ0eXAi...","expires_in":3599}"#;
//! let response = TokenResponse::parse(200, &http::HeaderMap::new(), body, TokenType::Bearer)?;
//! let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let token = response.into_access_token(now, vec!["https://graph.microsoft.com/.default".into()], None);
//! assert_eq!(token.authorization_header().expose(), "Bearer eyJ0eXAi...");
//! assert_eq!(token.expires_on, now + Duration::from_secs(3599));
//! # Ok::<(), fic_oauth_core::Error>(())
//! ```
#![deny(missing_docs)]

pub mod authority;
pub mod credential;
pub mod error;
pub mod identity;
pub mod request;
pub mod response;
pub mod retry;
pub mod secret;
pub mod thumbprint;
pub mod time;
pub mod transport;

pub use authority::{
    Authority, AuthorityKind, Cloud, EndpointOptions, Region, RegionConfig, TokenEndpoint,
};
pub use credential::{
    AccessToken, Account, TokenCredential, TokenRequestOptions, TokenSource, TokenType,
};
pub use error::{Error, ErrorCode, Result, ServerError};
pub use identity::{ClientIdentity, KeyKind, SignatureAlgorithm, SigningKey};
pub use secret::Secret;
pub use time::{Clock, ManualClock, Sleeper, SystemClock};
pub use transport::{HttpTransport, TransportRequest};
