//! Managed identity responses (PROTOCOL §5): success bodies with their many expiry shapes, and
//! the error bodies of each source.

use std::time::{Duration, SystemTime};

use fic_oauth_core::response::{parse_retry_after, refresh_on, MAX_LIFETIME_SECONDS};
use fic_oauth_core::time::{from_unix_seconds, unix_seconds};
use fic_oauth_core::{AccessToken, Error, ErrorCode, Secret, ServerError, TokenType};
use http::HeaderMap;
use serde_json::{Map, Value};

use crate::codes;
use crate::source::ManagedIdentitySource;

/// `expires_on` values below this (2001-01-01T00:00:00Z) are relative seconds, not epochs.
pub const ABSOLUTE_TIMESTAMP_THRESHOLD: i64 = 978_307_200;
/// Managed identity tokens are refreshed at half-life only when they live longer than this
/// (strictly, as MSAL does): oauth-core's rule, re-exported.
pub use fic_oauth_core::response::HALF_LIFE_REFRESH_THRESHOLD as HALF_LIFE_THRESHOLD;
/// The largest body read.
const MAX_BODY: usize = fic_oauth_core::response::MAX_RESPONSE_BYTES;

/// A token from a managed identity endpoint, valid at `now`: its expiry, and its refresh time
/// when it lives longer than 2 h (half-life; the endpoint's `refresh_in` is not used).
pub(crate) fn parse_token(
    source: ManagedIdentitySource,
    body: &[u8],
    now: SystemTime,
) -> Result<AccessToken, Error> {
    if body.len() > MAX_BODY {
        return Err(Error::new(
            ErrorCode::RESPONSE_TOO_LARGE,
            format!("[Managed Identity] the {source} response has {} bytes; at most {MAX_BODY} are read", body.len()),
        ));
    }
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return Err(Error::new(
            codes::MANAGED_IDENTITY_RESPONSE_PARSE_FAILURE,
            format!(
                "[Managed Identity] the {source} endpoint returned a success status, but its response ({} bytes) is not a JSON object",
                body.len()
            ),
        ));
    };
    let missing = || {
        Error::new(
            codes::MANAGED_IDENTITY_REQUEST_FAILED,
            format!("[Managed Identity] invalid response from the {source} endpoint: it does not contain a non-empty access_token and expires_on or expires_in"),
        )
    };
    let access_token = match map.get("access_token") {
        Some(Value::String(token)) if !token.trim().is_empty() => Secret::new(token.clone()),
        _ => return Err(missing()),
    };
    let token_type = match map.get("token_type") {
        None | Some(Value::Null) => TokenType::Bearer,
        Some(Value::String(t)) if t.is_empty() => TokenType::Bearer,
        Some(Value::String(t)) if TokenType::parse(t) == Some(TokenType::Bearer) => {
            TokenType::Bearer
        }
        Some(other) => {
            return Err(Error::new(
                ErrorCode::TOKEN_TYPE_MISMATCH,
                format!(
                "[Managed Identity] asked for Bearer, received {other} from the {source} endpoint"
            ),
            ))
        }
    };
    let expires_on = match (present(&map, "expires_on"), present(&map, "expires_in")) {
        (Some(value), _) => expires_on(value, now)?,
        (None, Some(value)) => expires_in(value, now)?,
        (None, None) => return Err(missing()),
    };
    let lifetime = expires_on.duration_since(now).unwrap_or_default();
    let mut token = AccessToken::new(access_token, token_type, expires_on);
    token.refresh_on = refresh_on(now, lifetime.as_secs(), None);
    Ok(token)
}

fn present<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    match map.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(value) => Some(value),
    }
}

/// A whole number of seconds from a JSON number or a numeric string.
fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            let f = n.as_f64()?;
            // Whole floats within ±2^53 convert exactly.
            #[allow(clippy::cast_possible_truncation)]
            (f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
        }),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
}

fn bad_timestamp(value: &Value) -> Error {
    let shown: String = match value {
        Value::String(s) => s.chars().take(64).collect(),
        other => other.to_string().chars().take(64).collect(),
    };
    Error::new(
        codes::INVALID_TIMESTAMP_FORMAT,
        format!("[Managed Identity] failed to parse the expiry from the identity provider: {shown:?} is neither epoch seconds nor an ISO-8601 date and time"),
    )
}

/// `expires_on`: epoch seconds (number or string), relative seconds when below
/// [`ABSOLUTE_TIMESTAMP_THRESHOLD`], or an ISO-8601 date and time.
pub(crate) fn expires_on(value: &Value, now: SystemTime) -> Result<SystemTime, Error> {
    let epoch = match integer(value) {
        Some(v) if v < ABSOLUTE_TIMESTAMP_THRESHOLD => return relative(v, now),
        Some(v) => v,
        None => match value {
            Value::String(s) => parse_iso8601(s.trim()).ok_or_else(|| bad_timestamp(value))?,
            _ => return Err(bad_timestamp(value)),
        },
    };
    let now_secs = i64::try_from(unix_seconds(now)).unwrap_or(i64::MAX);
    let lifetime = epoch.saturating_sub(now_secs);
    check_lifetime(lifetime)?;
    Ok(from_unix_seconds(u64::try_from(epoch).unwrap_or_default()))
}

/// `expires_in`: relative seconds.
fn expires_in(value: &Value, now: SystemTime) -> Result<SystemTime, Error> {
    relative(integer(value).ok_or_else(|| bad_timestamp(value))?, now)
}

fn relative(seconds: i64, now: SystemTime) -> Result<SystemTime, Error> {
    check_lifetime(seconds)?;
    Ok(now + Duration::from_secs(u64::try_from(seconds).unwrap_or_default()))
}

fn check_lifetime(seconds: i64) -> Result<(), Error> {
    if seconds <= 0 {
        return Err(Error::new(
            codes::INVALID_TOKEN_PROVIDER_RESPONSE_VALUE,
            format!("[Managed Identity] the token expires at or before the time it was received ({seconds} s of lifetime)"),
        ));
    }
    if u64::try_from(seconds).unwrap_or(u64::MAX) > MAX_LIFETIME_SECONDS {
        return Err(Error::new(
            codes::INVALID_TOKEN_PROVIDER_RESPONSE_VALUE,
            format!("[Managed Identity] a token lifetime of {seconds} s is not plausible"),
        ));
    }
    Ok(())
}

/// Parses `YYYY-MM-DD(T| )hh:mm:ss[.fraction][Z|±hh:mm|±hhmm]` into epoch seconds; no offset
/// means UTC. The fraction is dropped. Anything else is `None`.
///
/// Written here rather than taken from a date crate: the grammar is small, strictness is the
/// point (no locale-dependent forms), and it keeps a date library out of the dependency tree.
pub(crate) fn parse_iso8601(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let slice = b.get(range)?;
        if slice.is_empty() || !slice.iter().all(u8::is_ascii_digit) {
            return None;
        }
        slice
            .iter()
            .try_fold(0i64, |acc, d| Some(acc * 10 + i64::from(d - b'0')))
    };
    let expect = |at: usize, chars: &[u8]| b.get(at).is_some_and(|c| chars.contains(c));
    let year = digits(0..4)?;
    let ok = expect(4, b"-") && expect(7, b"-") && expect(10, b"Tt ") && expect(13, b":");
    if !ok || !expect(16, b":") {
        return None;
    }
    let month = digits(5..7)?;
    let day = digits(8..10)?;
    let hour = digits(11..13)?;
    let minute = digits(14..16)?;
    let mut second = digits(17..19)?;
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // A leap second is read as the last second of its minute.
    second = second.min(59);
    let mut at = 19;
    if expect(at, b".,") {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        if at == start {
            return None;
        }
    }
    let offset = match b.get(at) {
        None => 0,
        Some(b'Z' | b'z') if at + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) => {
            let hours = digits(at + 1..at + 3)?;
            let minutes = if expect(at + 3, b":") {
                if at + 6 != b.len() {
                    return None;
                }
                digits(at + 4..at + 6)?
            } else {
                if at + 5 != b.len() {
                    return None;
                }
                digits(at + 3..at + 5)?
            };
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 3600 + minutes * 60;
            if *sign == b'+' {
                offset
            } else {
                -offset
            }
        }
        Some(_) => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The error for a non-success answer of a managed identity endpoint: code
/// `managed_identity_request_failed`, the status and what the server said kept in
/// [`ServerError`], retryable for 404, 408, 429, 500, 503 and 504.
pub(crate) fn request_failed(
    source: ManagedIdentitySource,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Error {
    let parsed = ErrorBody::parse(body);
    let mut server = ServerError::default();
    server.status = status;
    server.error = parsed.error.clone().unwrap_or_default();
    server.error_description.clone_from(&parsed.description);
    server.error_codes.clone_from(&parsed.error_codes);
    server.correlation_id = parsed.correlation_id.clone().or_else(|| {
        headers
            .get("x-ms-request-id")
            .or_else(|| headers.get("client-request-id"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    server.trace_id.clone_from(&parsed.trace_id);
    server.timestamp.clone_from(&parsed.timestamp);
    let lead = match (source, status) {
        (ManagedIdentitySource::Imds, 400) => "[Managed Identity] Authentication unavailable. Either the requested identity has not been assigned to this resource, or other errors could be present. Ensure the identity is correctly assigned.".to_owned(),
        (ManagedIdentitySource::Imds, 502 | 504) => "[Managed Identity] Authentication unavailable. The request failed due to a gateway error.".to_owned(),
        _ => format!("[Managed Identity] the {source} endpoint answered HTTP {status}."),
    };
    let message = format!("{lead} {}", parsed.describe(source, body.len()));
    let mut err = Error::new(codes::MANAGED_IDENTITY_REQUEST_FAILED, message)
        .with_server_error(server)
        .with_retryable(matches!(status, 404 | 408 | 429 | 500 | 503 | 504));
    if let Some(delay) = parse_retry_after(headers, now) {
        err = err.with_retry_after(delay);
    }
    err
}

/// What an error body said, in any of the sources' shapes.
#[derive(Debug, Default)]
struct ErrorBody {
    error: Option<String>,
    description: Option<String>,
    message: Option<String>,
    correlation_id: Option<String>,
    trace_id: Option<String>,
    timestamp: Option<String>,
    error_codes: Vec<u64>,
    parsed: bool,
}

fn text(map: &Map<String, Value>, name: &str) -> Option<String> {
    match map.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

impl ErrorBody {
    fn parse(body: &[u8]) -> Self {
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
            return Self::default();
        };
        let mut out = Self {
            parsed: true,
            description: text(&map, "error_description"),
            message: text(&map, "message").or_else(|| text(&map, "Message")),
            correlation_id: text(&map, "correlationId").or_else(|| text(&map, "correlation_id")),
            trace_id: text(&map, "trace_id"),
            timestamp: text(&map, "timestamp"),
            ..Self::default()
        };
        match map.get("error") {
            // Cloud Shell: {"error":{"code":"…","message":"…"}}
            Some(Value::Object(inner)) => {
                out.error = text(inner, "code");
                out.message = out.message.or_else(|| text(inner, "message"));
            }
            Some(_) => out.error = text(&map, "error"),
            None => {}
        }
        if let Some(Value::Array(codes)) = map.get("error_codes") {
            out.error_codes = codes.iter().filter_map(Value::as_u64).collect();
        }
        if out.description.is_none() {
            out.description.clone_from(&out.message);
        }
        out
    }

    fn describe(&self, source: ManagedIdentitySource, body_len: usize) -> String {
        if body_len == 0 {
            return "No response body was received from the managed identity endpoint.".into();
        }
        if !self.parsed {
            return format!("The error response ({body_len} bytes) is not JSON.");
        }
        let mut parts = Vec::new();
        if let Some(error) = &self.error {
            parts.push(format!("Error Code: {error}"));
        }
        if let Some(message) = &self.message {
            parts.push(format!("Error Message: {message}"));
        }
        if let Some(description) = &self.description {
            if Some(description) != self.message.as_ref() {
                parts.push(format!("Error Description: {description}"));
            }
        }
        if let Some(correlation) = &self.correlation_id {
            parts.push(format!(
                "Managed Identity Correlation ID: {correlation} (issued by the {source} source)"
            ));
        }
        if parts.is_empty() {
            "The error response has no error, message or description.".into()
        } else {
            parts.join(" ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn now() -> SystemTime {
        from_unix_seconds(NOW)
    }

    #[allow(clippy::needless_pass_by_value)]
    fn on(value: Value) -> Result<u64, Error> {
        expires_on(&value, now()).map(unix_seconds)
    }

    #[test]
    fn expires_on_shapes() {
        assert_eq!(on(Value::from(1_700_003_600)).unwrap(), 1_700_003_600);
        assert_eq!(on(Value::from("1700003600")).unwrap(), 1_700_003_600);
        assert_eq!(on(Value::from(" 1700003600 ")).unwrap(), 1_700_003_600);
        assert_eq!(
            on(serde_json::json!(1_700_003_600.0)).unwrap(),
            1_700_003_600
        );
        // Below 2001-01-01: relative seconds.
        assert_eq!(on(Value::from(3600)).unwrap(), NOW + 3600);
        assert_eq!(on(Value::from("3599")).unwrap(), NOW + 3599);
        assert_eq!(
            on(Value::from(978_307_199)).unwrap_err().code(),
            &codes::INVALID_TOKEN_PROVIDER_RESPONSE_VALUE
        );
        // 2023-11-14T22:13:20Z is 1_700_000_000.
        assert_eq!(on(Value::from("2023-11-14T23:13:20Z")).unwrap(), NOW + 3600);
        assert_eq!(
            on(Value::from("2023-11-14T23:13:20.0000000+00:00")).unwrap(),
            NOW + 3600
        );
        assert_eq!(
            on(Value::from("2023-11-15T00:13:20+01:00")).unwrap(),
            NOW + 3600
        );
        assert_eq!(
            on(Value::from("2023-11-14T22:13:20-0100")).unwrap(),
            NOW + 3600
        );
        assert_eq!(on(Value::from("2023-11-14 23:13:20")).unwrap(), NOW + 3600);
    }

    #[test]
    fn zero_past_and_garbage_are_refused() {
        for value in [
            Value::from(0),
            Value::from("0"),
            Value::from(-5),
            Value::from(NOW),
            Value::from(NOW - 1),
            Value::from("2023-11-14T22:13:19Z"),
        ] {
            assert_eq!(
                on(value.clone()).unwrap_err().code(),
                &codes::INVALID_TOKEN_PROVIDER_RESPONSE_VALUE,
                "{value}"
            );
        }
        for value in [
            Value::from("soon"),
            Value::from("2023-13-01T00:00:00Z"),
            Value::from("2023-02-29T00:00:00Z"),
            Value::from("2023-11-14T24:00:00Z"),
            Value::from("2023-11-14T23:13:20Zjunk"),
            Value::from("2023-11-14T23:13:20+1"),
            Value::from("2023-11-14T23:13:20."),
            Value::from("11/14/2023 23:13:20"),
            Value::from(true),
            serde_json::json!(1.5),
            serde_json::json!({"a": 1}),
        ] {
            assert_eq!(
                on(value.clone()).unwrap_err().code(),
                &codes::INVALID_TIMESTAMP_FORMAT,
                "{value}"
            );
        }
        // Further than a year away is not plausible.
        assert_eq!(
            on(Value::from(NOW + 400 * 86_400)).unwrap_err().code(),
            &codes::INVALID_TOKEN_PROVIDER_RESPONSE_VALUE
        );
    }

    #[test]
    fn iso_calendar_edges() {
        assert_eq!(parse_iso8601("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_iso8601("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(parse_iso8601("1900-02-29T00:00:00Z"), None);
        assert_eq!(parse_iso8601("2016-12-31T23:59:60Z"), Some(1_483_228_799));
        assert_eq!(parse_iso8601("2038-01-19T03:14:08Z"), Some(2_147_483_648));
    }

    #[test]
    fn token_fields_and_half_life() {
        let parse = |body: &str| parse_token(ManagedIdentitySource::Imds, body.as_bytes(), now());
        let token = parse(r#"{"access_token":"at","expires_on":"1700003600","resource":"r","token_type":"Bearer"}"#).unwrap();
        assert_eq!(token.token.expose(), "at");
        assert_eq!(token.refresh_on, None);
        // Exactly 2 h: no half-life refresh (strictly greater, as MSAL).
        let token = parse(r#"{"access_token":"at","expires_in":7200}"#).unwrap();
        assert_eq!(token.refresh_on, None);
        let token = parse(r#"{"access_token":"at","expires_in":"10800","refresh_in":60}"#).unwrap();
        assert_eq!(token.refresh_on.map(unix_seconds), Some(NOW + 5400));
        assert_eq!(unix_seconds(token.expires_on), NOW + 10800);
        // expires_on wins over expires_in.
        let token =
            parse(r#"{"access_token":"at","expires_in":60,"expires_on":1700086400}"#).unwrap();
        assert_eq!(unix_seconds(token.expires_on), 1_700_086_400);
        assert_eq!(token.refresh_on.map(unix_seconds), Some(NOW + 43_200));

        let code = |body: &str| parse(body).unwrap_err().code().as_str().to_owned();
        assert_eq!(code("not json"), "managed_identity_response_parse_failure");
        assert_eq!(code("[]"), "managed_identity_response_parse_failure");
        assert_eq!(
            code(r#"{"expires_in":60}"#),
            "managed_identity_request_failed"
        );
        assert_eq!(
            code(r#"{"access_token":"","expires_in":60}"#),
            "managed_identity_request_failed"
        );
        assert_eq!(
            code(r#"{"access_token":"at"}"#),
            "managed_identity_request_failed"
        );
        assert_eq!(
            code(r#"{"access_token":"at","expires_on":""}"#),
            "managed_identity_request_failed"
        );
        assert_eq!(
            code(r#"{"access_token":"at","expires_in":60,"token_type":"pop"}"#),
            "token_type_mismatch"
        );
    }

    #[test]
    fn error_bodies_of_each_source() {
        let headers = HeaderMap::new();
        let err = request_failed(
            ManagedIdentitySource::Imds,
            400,
            &headers,
            br#"{"error":"invalid_resource","error_description":"AADSTS500011: The resource principal named x was not found.","error_codes":[500011],"trace_id":"t","correlation_id":"c"}"#,
            now(),
        );
        assert_eq!(err.code(), &codes::MANAGED_IDENTITY_REQUEST_FAILED);
        assert_eq!(err.status(), Some(400));
        assert_eq!(err.aadsts(), Some(500_011));
        let server = err.server_error().unwrap();
        assert_eq!(server.error, "invalid_resource");
        assert_eq!(server.correlation_id.as_deref(), Some("c"));
        assert!(
            err.message().contains("Authentication unavailable"),
            "{err}"
        );
        assert!(err.message().contains("AADSTS500011"), "{err}");
        assert!(!err.is_retryable());

        let err = request_failed(
            ManagedIdentitySource::AppService,
            500,
            &headers,
            br#"{"statusCode":500,"message":"An unexpected error occured while fetching the AAD Token.","correlationId":"4ce26535"}"#,
            now(),
        );
        assert!(err.message().contains("HTTP 500"), "{err}");
        assert!(
            err.message().contains("An unexpected error occured"),
            "{err}"
        );
        assert_eq!(
            err.server_error().unwrap().correlation_id.as_deref(),
            Some("4ce26535")
        );
        assert!(err.is_retryable());

        let err = request_failed(
            ManagedIdentitySource::CloudShell,
            400,
            &headers,
            br#"{"error":{"code":"AudienceNotSupported","message":"Audience x is not supported."}}"#,
            now(),
        );
        assert_eq!(err.server_error().unwrap().error, "AudienceNotSupported");
        assert!(
            err.message().contains("Audience x is not supported."),
            "{err}"
        );

        let err = request_failed(
            ManagedIdentitySource::AzureArc,
            503,
            &headers,
            b"<html>",
            now(),
        );
        assert!(err.message().contains("not JSON"), "{err}");
        let err = request_failed(ManagedIdentitySource::AzureArc, 503, &headers, b"", now());
        assert!(err.message().contains("No response body"), "{err}");
    }
}
