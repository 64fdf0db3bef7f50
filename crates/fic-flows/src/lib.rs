//! # fic-flows
//!
//! The flows of fic-rs, composed from the lower crates: `fic-oauth-core` builds requests and
//! parses answers, `fic-assertion` signs client assertions, `fic-mtls-transport` sends them
//! (over mTLS when a certificate is bound), `fic-token-cache` caches the results.
//!
//! - [`ConfidentialClient`]: client credentials with a secret, a certificate (Bearer, or mTLS
//!   PoP from the `mtlsauth` hosts with the certificate as TLS client certificate and no
//!   assertion) or any assertion provider (jwt-bearer, or jwt-pop when it returns a binding
//!   certificate); region none / explicit / auto-detected; a request hook; it is a
//!   [`TokenCredential`](fic_oauth_core::TokenCredential).
//! - [`ResourceClient`]: calls the resource with the token, presenting the binding certificate
//!   for mtls_pop tokens.
//!
//! | request | TLS client cert | host | credential | `token_type` |
//! |---|---|---|---|---|
//! | secret | no | login / regional | `client_secret` | — |
//! | certificate, Bearer | no | login / regional | jwt-bearer assertion | — |
//! | certificate, mTLS PoP | the certificate | mtlsauth | none | `mtls_pop` |
//! | assertion provider | no | login / regional | jwt-bearer assertion | — |
//! | assertion with binding | the binding | mtlsauth | jwt-pop assertion | `mtls_pop` if asked |
//!
//! ## Tracing
//!
//! Every request to the identity provider runs in an `info` span `token_request` with the
//! fields `flow` (`client_credentials`, `user_fic`, `refresh_token`), `source`
//! (`identity_provider`), `client_id`, `host`, `duration_ms` and `outcome` (`ok` or the error
//! code), and for client credentials `token_type` and `mtls`; the span covers the client authentication too (an
//! assertion provider, Leg 1 of a two-leg flow). No field holds a secret. Cache hits emit nothing:
//! they are the hot path, and a hit is told by the returned token's `source`.
#![deny(missing_docs)]

mod agent;
mod confidential;
pub mod environment;
pub mod region;
mod resource;
mod send;
mod two_leg;
mod user;

pub use agent::{AgentIdentity, BlueprintAssertion};
pub use confidential::{
    AcquireTokenForClient, AcquireTokenFuture, ClientCredential, ConfidentialClient,
    ConfidentialClientBuilder,
};
pub use environment::{DefaultCredential, EnvironmentConfig};
pub use region::RegionDetector;
pub use resource::{AuthorizationScheme, ResourceClient, ResourceResponse};
pub use send::{OutgoingTokenRequest, RequestHook};
pub use two_leg::{exchange_scope, FederatedAssertion, FicLeg1, FicLeg2, TwoLeg, TwoLegBuilder};
pub use user::{AcquireTokenByUserFic, UserCredentialSource};

pub use fic_oauth_core::request::UserIdentifier;
