//! The error codes this crate raises (besides oauth-core's own).
//!
//! The codes are MSAL's where MSAL has one. The Azure Arc challenge gets codes of its own so
//! that each way a challenge can be refused is told apart (MSAL reports them all as
//! `managed_identity_request_failed`).

use fic_oauth_core::ErrorCode;

/// The endpoint answered with an error status, or a 2xx without the expected fields.
/// [`Error::status`](fic_oauth_core::Error::status) and
/// [`Error::server_error`](fic_oauth_core::Error::server_error) keep what it said.
pub const MANAGED_IDENTITY_REQUEST_FAILED: ErrorCode =
    ErrorCode::from_static("managed_identity_request_failed");
/// The endpoint answered 2xx with a body that is not a JSON object.
pub const MANAGED_IDENTITY_RESPONSE_PARSE_FAILURE: ErrorCode =
    ErrorCode::from_static("managed_identity_response_parse_failure");
/// The endpoint could not be reached (connection refused, no route); never retried.
pub const MANAGED_IDENTITY_UNREACHABLE_NETWORK: ErrorCode =
    ErrorCode::from_static("managed_identity_unreachable_network");
/// Every attempt timed out.
pub const REQUEST_TIMEOUT: ErrorCode = ErrorCode::from_static("request_timeout");
/// An endpoint variable (`IDENTITY_ENDPOINT`, `MSI_ENDPOINT`) is not a usable absolute URL.
pub const INVALID_MANAGED_IDENTITY_ENDPOINT: ErrorCode =
    ErrorCode::from_static("invalid_managed_identity_endpoint");
/// A forced source lacks the environment variables it needs.
pub const MISSING_MANAGED_IDENTITY_ENV_VAR: ErrorCode =
    ErrorCode::from_static("missing_managed_identity_env_var");
/// Cloud Shell and Azure Arc have no user-assigned identities.
pub const USER_ASSIGNED_MANAGED_IDENTITY_NOT_SUPPORTED: ErrorCode =
    ErrorCode::from_static("user_assigned_managed_identity_not_supported");
/// Service Fabric takes a user-assigned identity only by object id (`principalId`).
pub const USER_ASSIGNED_MANAGED_IDENTITY_NOT_CONFIGURABLE_AT_RUNTIME: ErrorCode =
    ErrorCode::from_static("user_assigned_managed_identity_not_configurable_at_runtime");
/// Machine Learning takes only client ids, and the system-assigned identity needs
/// `DEFAULT_IDENTITY_CLIENT_ID`.
pub const INVALID_MANAGED_IDENTITY_ID_TYPE: ErrorCode =
    ErrorCode::from_static("invalid_managed_identity_id_type");
/// The token's expiry is zero, in the past, or implausibly far away.
pub const INVALID_TOKEN_PROVIDER_RESPONSE_VALUE: ErrorCode =
    ErrorCode::from_static("invalid_token_provider_response_value");
/// `expires_on` is neither epoch seconds nor an ISO-8601 date and time.
pub const INVALID_TIMESTAMP_FORMAT: ErrorCode = ErrorCode::from_static("invalid_timestamp_format");
/// A managed identity token is for exactly one resource: pass one scope.
pub const EXACTLY_ONE_SCOPE_EXPECTED: ErrorCode =
    ErrorCode::from_static("exactly_one_scope_expected");
/// IMDS answered 404 to `getplatformmetadata`: this VM has no IMDSv2, so no mTLS PoP.
pub const MTLS_POP_TOKEN_NOT_SUPPORTED_IN_IMDS_V1: ErrorCode =
    ErrorCode::from_static("mtls_pop_token_not_supported_in_imds_v1");
/// mTLS PoP (IMDSv2) was asked of a build without a crypto backend: the binding key is made
/// and used by ring or aws-lc-rs, so enable the `ring` or `aws-lc-rs` feature. Returned by the
/// token request, before anything is sent.
pub const CRYPTO_PROVIDER_NOT_ENABLED: ErrorCode =
    ErrorCode::from_static("crypto_provider_not_enabled");

/// Azure Arc answered 401 without a `WWW-Authenticate` header.
pub const AZURE_ARC_CHALLENGE_MISSING: ErrorCode =
    ErrorCode::from_static("azure_arc_challenge_missing");
/// The `WWW-Authenticate` header is not `Basic realm=<path>`.
pub const AZURE_ARC_CHALLENGE_MALFORMED: ErrorCode =
    ErrorCode::from_static("azure_arc_challenge_malformed");
/// The challenge names a file that is not a `.key` file directly in the agent's token
/// directory (wrong extension, another directory, `..`, a symbolic link, a hard link, not a
/// regular file).
pub const AZURE_ARC_KEY_PATH_REJECTED: ErrorCode =
    ErrorCode::from_static("azure_arc_key_path_rejected");
/// The challenge file is larger than 4096 bytes.
pub const AZURE_ARC_KEY_FILE_TOO_LARGE: ErrorCode =
    ErrorCode::from_static("azure_arc_key_file_too_large");
/// The challenge file could not be opened or read (missing, permissions, not UTF-8).
pub const AZURE_ARC_KEY_FILE_UNREADABLE: ErrorCode =
    ErrorCode::from_static("azure_arc_key_file_unreadable");
/// Azure Arc's challenge files are read on Unix only in this version.
pub const AZURE_ARC_UNSUPPORTED_PLATFORM: ErrorCode =
    ErrorCode::from_static("azure_arc_unsupported_platform");
