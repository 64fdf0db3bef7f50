//! The stable error codes this crate raises (on [`fic_oauth_core::Error::code`]).
//!
//! Two come from `fic-oauth-core` and are re-exported here so callers find them in one place:
//! [`INVALID_CERTIFICATE`] (malformed certificate or key input) and [`INVALID_CLIENT_ASSERTION`]
//! (an empty assertion).
//!
//! ```
//! use fic_assertion::codes;
//!
//! assert_eq!(codes::NO_PRIVATE_KEY.as_str(), "no_private_key");
//! assert_eq!(codes::INVALID_CLIENT_ASSERTION.as_str(), "invalid_client_assertion");
//! ```

use fic_oauth_core::ErrorCode;

/// A certificate was given without the private key of its leaf (cert-only PEM, DER or
/// PKCS#12).
pub const NO_PRIVATE_KEY: ErrorCode = ErrorCode::from_static("no_private_key");

/// The private key does not belong to the certificate: its public key differs from the leaf's
/// SubjectPublicKeyInfo (or, for a custom [`SigningKey`](fic_oauth_core::SigningKey), its kind
/// differs from the leaf's key type or size).
pub const KEY_CERTIFICATE_MISMATCH: ErrorCode = ErrorCode::from_static("key_certificate_mismatch");

/// The key is of a type or size this crate cannot use: supported are RSA 2048–8192 bits and
/// ECDSA P-256 / P-384 (and only RSA or P-256 for signing client assertions).
pub const UNSUPPORTED_KEY_TYPE: ErrorCode = ErrorCode::from_static("unsupported_key_type");

/// The PKCS#12 password is wrong (the MAC or the decryption failed).
pub const INVALID_PKCS12_PASSWORD: ErrorCode = ErrorCode::from_static("invalid_pkcs12_password");

/// Malformed certificate or key input (not PEM / DER / PKCS#12 of a certificate, unreadable
/// file, encrypted PEM key...).
pub const INVALID_CERTIFICATE: ErrorCode = ErrorCode::INVALID_CERTIFICATE;

/// An assertion provider produced an empty (or blank) assertion.
pub const INVALID_CLIENT_ASSERTION: ErrorCode = ErrorCode::INVALID_CLIENT_ASSERTION;

/// The assertion file (e.g. `AZURE_FEDERATED_TOKEN_FILE`) does not exist, or no file was
/// configured.
pub const ASSERTION_FILE_MISSING: ErrorCode = ErrorCode::from_static("assertion_file_missing");

/// The assertion file exists but holds nothing but white space.
pub const ASSERTION_FILE_EMPTY: ErrorCode = ErrorCode::from_static("assertion_file_empty");

/// The assertion file is larger than
/// [`MAX_ASSERTION_FILE_BYTES`](crate::MAX_ASSERTION_FILE_BYTES) (64 KiB).
pub const ASSERTION_FILE_TOO_LARGE: ErrorCode = ErrorCode::from_static("assertion_file_too_large");

/// The assertion file could not be read (permissions, not a regular file, not UTF-8...).
pub const ASSERTION_FILE_UNREADABLE: ErrorCode =
    ErrorCode::from_static("assertion_file_unreadable");

/// A [`BoundAssertion`](crate::BoundAssertion) wraps a provider that returned a *different*
/// binding certificate of its own.
pub const CONFLICTING_BINDING: ErrorCode = ErrorCode::from_static("conflicting_binding");
