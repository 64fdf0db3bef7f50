//! Entra-shaped errors of the token endpoint.

use std::time::SystemTime;

use serde_json::{json, Value};

use crate::codes;
use crate::util::entra_timestamp;

/// One token-endpoint failure: AADSTS code, OAuth `error`, HTTP status and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AadError {
    pub(crate) code: u32,
    pub(crate) error: &'static str,
    pub(crate) status: u16,
    pub(crate) message: String,
}

const INVALID_REQUEST: &str = "invalid_request";
const INVALID_CLIENT: &str = "invalid_client";
const INVALID_GRANT: &str = "invalid_grant";
const INVALID_SCOPE: &str = "invalid_scope";

impl AadError {
    pub(crate) fn new(code: u32, error: &'static str, message: impl Into<String>) -> Self {
        let status = if error == INVALID_CLIENT { 401 } else { 400 };
        Self {
            code,
            error,
            status,
            message: message.into(),
        }
    }

    pub(crate) fn request(code: u32, message: impl Into<String>) -> Self {
        Self::new(code, INVALID_REQUEST, message)
    }

    pub(crate) fn client(code: u32, message: impl Into<String>) -> Self {
        Self::new(code, INVALID_CLIENT, message)
    }

    pub(crate) fn grant(code: u32, message: impl Into<String>) -> Self {
        Self::new(code, INVALID_GRANT, message)
    }

    pub(crate) fn scope(code: u32, message: impl Into<String>) -> Self {
        Self::new(code, INVALID_SCOPE, message)
    }

    pub(crate) fn missing(parameter: &str) -> Self {
        Self::request(
            codes::MISSING_PARAMETER,
            format!("The request body must contain the following parameter: '{parameter}'."),
        )
    }

    pub(crate) fn tenant_not_found(tenant: &str) -> Self {
        Self::new(
            codes::TENANT_NOT_FOUND,
            "invalid_tenant",
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        )
    }

    pub(crate) fn client_certificate_required(why: &str) -> Self {
        Self::client(
            codes::EMU_CLIENT_CERTIFICATE_REQUIRED,
            format!("A TLS client certificate is required: {why}"),
        )
    }

    /// The JSON body, with `correlation_id` and `trace_id` filled in.
    pub(crate) fn body(&self, now: SystemTime, correlation_id: &str, trace_id: &str) -> Value {
        let timestamp = entra_timestamp(now);
        json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{}: {} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}",
                self.code, self.message
            ),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::from_unix;

    #[test]
    fn shape_of_an_error() {
        let err = AadError::missing("grant_type");
        assert_eq!(err.status, 400);
        let body = err.body(from_unix(1_709_278_867), "corr", "trace");
        assert_eq!(body["error"], "invalid_request");
        assert_eq!(body["error_codes"][0], 900_144);
        assert_eq!(body["timestamp"], "2024-03-01 07:41:07Z");
        assert!(body["error_description"].as_str().unwrap().starts_with(
            "AADSTS900144: The request body must contain the following parameter: 'grant_type'."
        ));
        assert_eq!(AadError::client(1, "x").status, 401);
        assert_eq!(AadError::grant(1, "x").error, "invalid_grant");
        assert_eq!(AadError::scope(1, "x").error, "invalid_scope");
    }
}
