//! Token responses: success and error bodies (PROTOCOL §3), and `Retry-After`.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use fic_oauth_core::response::TokenResponse;
//! use fic_oauth_core::TokenType;
//!
//! let body = br#"{"token_type":"mtls_pop","access_token":"eyJ...","expires_in":"3599","refresh_in":1800}"#;
//! let response = TokenResponse::parse(200, &http::HeaderMap::new(), body, TokenType::MtlsPop)?;
//! assert_eq!(response.expires_in, 3599);
//!
//! let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let token = response.into_access_token(now, vec!["https://vault.azure.net/.default".into()], None);
//! assert_eq!(token.token_type, TokenType::MtlsPop);
//! assert_eq!(token.expires_on, now + Duration::from_secs(3599));
//! assert_eq!(token.refresh_on, Some(now + Duration::from_secs(1800)));
//!
//! // An Entra ID error keeps everything the server said.
//! let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215],"trace_id":"t","correlation_id":"c"}"#;
//! let err = TokenResponse::parse(401, &http::HeaderMap::new(), body, TokenType::Bearer).unwrap_err();
//! assert_eq!(err.code(), &"invalid_client");
//! assert_eq!(err.aadsts(), Some(7000215));
//! # Ok::<(), fic_oauth_core::Error>(())
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::HeaderMap;
use serde_json::{Map, Value};

use crate::credential::{AccessToken, Account, TokenType};
use crate::error::{Error, ErrorCode, ServerError};
use crate::identity::ClientIdentity;
use crate::secret::Secret;

/// The largest response body parsed (1 MiB); larger ones are `response_too_large`.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// The longest token lifetime accepted (one year); longer ones are `invalid_response`.
pub const MAX_LIFETIME_SECONDS: u64 = 365 * 24 * 3600;
/// The longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Tokens whose lifetime is over this are refreshed at half-life when the server gives no
/// `refresh_in`.
pub const HALF_LIFE_REFRESH_THRESHOLD: Duration = Duration::from_secs(2 * 3600);

/// `client_info`: the user's home object id and tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// `uid`.
    pub uid: String,
    /// `utid`.
    pub utid: String,
}

impl ClientInfo {
    /// Decodes base64url JSON `{"uid":…,"utid":…}`.
    pub fn decode(encoded: &str) -> Result<Self, Error> {
        let bytes = decode_b64url(encoded)
            .ok_or_else(|| invalid_response("client_info is not base64url"))?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|_| invalid_response("client_info is not JSON"))?;
        let field = |name: &str| {
            value
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or_else(|| invalid_response(format!("client_info has no {name}")))
        };
        Ok(Self {
            uid: field("uid")?,
            utid: field("utid")?,
        })
    }

    /// The home account id `uid.utid`.
    pub fn home_account_id(&self) -> String {
        format!("{}.{}", self.uid, self.utid)
    }
}

/// The claims of an id token that user flows use (the token is not validated: it came from the
/// identity provider over TLS, as in every MSAL library).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdTokenClaims {
    /// `oid`.
    pub object_id: Option<String>,
    /// `tid`.
    pub tenant_id: Option<String>,
    /// `preferred_username` (or `upn`).
    pub username: Option<String>,
    /// `sub`.
    pub subject: Option<String>,
    /// `name`.
    pub name: Option<String>,
}

impl IdTokenClaims {
    /// Decodes the payload of a JWT without checking its signature.
    pub fn decode(id_token: &str) -> Result<Self, Error> {
        let payload = decode_jwt_payload(id_token)?;
        let get = |name: &str| {
            payload
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Ok(Self {
            object_id: get("oid"),
            tenant_id: get("tid"),
            username: get("preferred_username").or_else(|| get("upn")),
            subject: get("sub"),
            name: get("name"),
        })
    }
}

/// The payload of a JWT as a JSON object, without checking its signature.
pub fn decode_jwt_payload(jwt: &str) -> Result<Map<String, Value>, Error> {
    let mut parts = jwt.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid_response(
            "not a JWT (three dot-separated parts expected)",
        ));
    };
    let bytes = decode_b64url(payload)
        .ok_or_else(|| invalid_response("the JWT payload is not base64url"))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(invalid_response("the JWT payload is not a JSON object")),
    }
}

fn decode_b64url(input: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(input.trim_end_matches('=')).ok()
}

fn invalid_response(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::INVALID_RESPONSE, message)
}

/// A successful token response.
#[derive(Clone)]
#[non_exhaustive]
pub struct TokenResponse {
    /// `access_token`.
    pub access_token: Secret,
    /// `token_type`, validated against the requested type.
    pub token_type: TokenType,
    /// `expires_in`, seconds (> 0).
    pub expires_in: u64,
    /// `ext_expires_in`, seconds (`None` when absent, or not a positive, plausible number).
    pub ext_expires_in: Option<u64>,
    /// `refresh_in`, seconds (only when below `expires_in`; `None` when absent, or not a
    /// positive, plausible number).
    pub refresh_in: Option<u64>,
    /// `scope`, as granted.
    pub scope: Option<String>,
    /// `refresh_token`.
    pub refresh_token: Option<Secret>,
    /// `id_token`.
    pub id_token: Option<Secret>,
    /// The decoded id token claims.
    pub id_token_claims: Option<IdTokenClaims>,
    /// The decoded `client_info`.
    pub client_info: Option<ClientInfo>,
    /// The tenant the token was requested from, used when the response names none (see
    /// [`TokenResponse::with_tenant_fallback`]).
    tenant_fallback: Option<Arc<str>>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &self.access_token)
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("ext_expires_in", &self.ext_expires_in)
            .field("refresh_in", &self.refresh_in)
            .field("scope", &self.scope)
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "***"))
            .field("id_token_claims", &self.id_token_claims)
            .field("client_info", &self.client_info)
            .field("tenant_fallback", &self.tenant_fallback)
            .finish_non_exhaustive()
    }
}

/// Reads a number of seconds given as a JSON number or a numeric string.
fn seconds(map: &Map<String, Value>, name: &str) -> Result<Option<i128>, Error> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .or_else(|| whole_seconds(n.as_f64()?))
            .map(Some)
            .ok_or_else(|| invalid_response(format!("{name} is not a whole number of seconds"))),
        Some(Value::String(s)) => s
            .trim()
            .parse::<i128>()
            .map(Some)
            .map_err(|_| invalid_response(format!("{name} is not a number"))),
        Some(_) => Err(invalid_response(format!("{name} has the wrong type"))),
    }
}

/// A float that is a whole number within ±10^15 (beyond any plausible lifetime, so the cast is
/// exact); other floats are not seconds.
#[allow(clippy::cast_possible_truncation)]
fn whole_seconds(value: f64) -> Option<i128> {
    (value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15).then_some(value as i128)
}

fn lifetime(map: &Map<String, Value>, name: &str) -> Result<Option<u64>, Error> {
    match seconds(map, name)? {
        None => Ok(None),
        Some(v) if v <= 0 => Err(invalid_response(format!(
            "{name} must be positive, got {v}"
        ))),
        Some(v) if v > i128::from(MAX_LIFETIME_SECONDS) => Err(invalid_response(format!(
            "{name} of {v} s is not plausible"
        ))),
        Some(v) => Ok(u64::try_from(v).ok()),
    }
}

fn optional_string(map: &Map<String, Value>, name: &str) -> Result<Option<String>, Error> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid_response(format!("{name} is not a string"))),
    }
}

impl TokenResponse {
    /// Parses a token endpoint answer. An HTTP-date `Retry-After` is read as if now were the
    /// epoch (so it is capped at an hour): callers with a clock use [`TokenResponse::parse_at`].
    ///
    /// Non-2xx statuses become errors: the OAuth error body kept whole ([`ServerError`]), or
    /// `http_status` when the body is not an OAuth error (an HTML page...). 429 and 503 with
    /// `Retry-After` become `throttled` with the delay. A success must have a non-empty
    /// `access_token`, a `token_type` equal to `expected` (`token_type_missing`,
    /// `token_type_mismatch`), and a positive, plausible `expires_in`; an `ext_expires_in` or
    /// `refresh_in` that is not one is dropped (they are advisory).
    ///
    /// A body over [`MAX_RESPONSE_BYTES`] is `response_too_large` and is not parsed, except
    /// that a 429 or 503 with `Retry-After` is still `throttled` with the delay.
    pub fn parse(
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        expected: TokenType,
    ) -> Result<Self, Error> {
        Self::parse_at(status, headers, body, expected, SystemTime::UNIX_EPOCH)
    }

    /// As [`TokenResponse::parse`], with `now` for HTTP-date `Retry-After` values.
    pub fn parse_at(
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        expected: TokenType,
        now: SystemTime,
    ) -> Result<Self, Error> {
        let too_large = body.len() > MAX_RESPONSE_BYTES;
        if !(200..300).contains(&status) {
            // Throttling is told by the status and Retry-After, not the body: a huge 429/503
            // body must not hide the delay (it is not parsed).
            if !too_large || is_throttling(status, headers, now) {
                return Err(error_from_response(status, headers, body, now));
            }
        }
        if too_large {
            return Err(Error::new(
                ErrorCode::RESPONSE_TOO_LARGE,
                format!(
                    "the token response has {} bytes; at most {MAX_RESPONSE_BYTES} are accepted",
                    body.len()
                ),
            ));
        }
        let map = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(invalid_response("the token response is not a JSON object")),
            Err(_) => {
                return Err(invalid_response(format!(
                    "the token response ({} bytes) is not JSON",
                    body.len()
                )))
            }
        };
        if map.contains_key("error") {
            return Err(error_from_body(status, headers, &map));
        }
        let access_token = optional_string(&map, "access_token")?
            .ok_or_else(|| invalid_response("the token response has no access_token"))?;
        let token_type = match optional_string(&map, "token_type")? {
            None => {
                return Err(Error::new(
                    ErrorCode::TOKEN_TYPE_MISSING,
                    "the token response has no token_type",
                ))
            }
            Some(received) => match TokenType::parse(&received) {
                Some(t) if t == expected => t,
                _ => {
                    return Err(Error::new(
                        ErrorCode::TOKEN_TYPE_MISMATCH,
                        format!(
                            "asked for {expected}, received {received}: the identity provider does not support the requested token type here"
                        ),
                    ))
                }
            },
        };
        let expires_in = lifetime(&map, "expires_in")?
            .ok_or_else(|| invalid_response("the token response has no expires_in"))?;
        // Advisory: an implausible value drops the field, not the token.
        let ext_expires_in = lifetime(&map, "ext_expires_in").ok().flatten();
        let refresh_in = lifetime(&map, "refresh_in")
            .ok()
            .flatten()
            .filter(|r| *r < expires_in);
        let id_token = optional_string(&map, "id_token")?;
        let id_token_claims = id_token.as_deref().map(IdTokenClaims::decode).transpose()?;
        let client_info = optional_string(&map, "client_info")?
            .as_deref()
            .map(ClientInfo::decode)
            .transpose()?;
        Ok(Self {
            access_token: Secret::new(access_token),
            token_type,
            expires_in,
            ext_expires_in,
            refresh_in,
            scope: optional_string(&map, "scope")?,
            refresh_token: optional_string(&map, "refresh_token")?.map(Secret::new),
            id_token: id_token.map(Secret::new),
            id_token_claims,
            client_info,
            tenant_fallback: None,
        })
    }

    /// The tenant of the request (the realm its token is cached under), for the result's
    /// `tenant_id` when the response names none: an app token (client credentials) has no id
    /// token or `client_info`, and would otherwise have no tenant when fresh but the realm's
    /// tenant when served from the cache. The id token's `tid` and `client_info`'s `utid` still
    /// come first; a blank value sets no fallback.
    ///
    /// ```
    /// use std::time::UNIX_EPOCH;
    /// use fic_oauth_core::response::TokenResponse;
    /// use fic_oauth_core::TokenType;
    ///
    /// let body = br#"{"token_type":"Bearer","access_token":"a","expires_in":3599}"#;
    /// let response = TokenResponse::parse(200, &http::HeaderMap::new(), body, TokenType::Bearer)?;
    /// let token = response
    ///     .with_tenant_fallback("10c419d4-4a50-45b2-aa4e-919fb84df24f")
    ///     .into_access_token(UNIX_EPOCH, vec![], None);
    /// assert_eq!(token.tenant_id.as_deref(), Some("10c419d4-4a50-45b2-aa4e-919fb84df24f"));
    /// # Ok::<(), fic_oauth_core::Error>(())
    /// ```
    #[must_use]
    pub fn with_tenant_fallback(mut self, tenant: &str) -> Self {
        let tenant = tenant.trim();
        self.tenant_fallback = (!tenant.is_empty()).then(|| Arc::from(tenant));
        self
    }

    /// When to refresh a token issued at `now`: `refresh_in` when given, half-life when the
    /// lifetime is over 2 h, none otherwise.
    pub fn refresh_on(&self, now: SystemTime) -> Option<SystemTime> {
        refresh_on(now, self.expires_in, self.refresh_in)
    }

    /// The result value: expiry and refresh time from `now`, the requested `scopes` (or the
    /// granted `scope` when given), the binding certificate for mtls_pop tokens, the tenant
    /// (id token `tid`, `client_info` `utid`, else [`TokenResponse::with_tenant_fallback`]), and
    /// for user flows the account, refresh token and id token.
    pub fn into_access_token(
        self,
        now: SystemTime,
        scopes: Vec<String>,
        binding: Option<ClientIdentity>,
    ) -> AccessToken {
        let refresh_on = self.refresh_on(now);
        let mut token = AccessToken::new(
            self.access_token,
            self.token_type,
            now + Duration::from_secs(self.expires_in),
        );
        token.refresh_on = refresh_on;
        token.scopes = scopes.into();
        token.binding = if self.token_type == TokenType::MtlsPop {
            binding
        } else {
            None
        };
        token.tenant_id = self
            .id_token_claims
            .as_ref()
            .and_then(|c| c.tenant_id.as_deref())
            .or_else(|| self.client_info.as_ref().map(|c| c.utid.as_str()))
            .map(Arc::from)
            .or(self.tenant_fallback);
        if let Some(info) = &self.client_info {
            let claims = self.id_token_claims.clone().unwrap_or_default();
            let mut account = Account::new(
                info.home_account_id(),
                "",
                claims.tenant_id.unwrap_or_else(|| info.utid.clone()),
            );
            account.username = claims.username;
            account.object_id = claims.object_id.or_else(|| Some(info.uid.clone()));
            token.account = Some(Arc::new(account));
        }
        token.refresh_token = self.refresh_token;
        token.id_token = self.id_token;
        token
    }
}

/// The refresh time rule of PROTOCOL §3.
pub fn refresh_on(now: SystemTime, expires_in: u64, refresh_in: Option<u64>) -> Option<SystemTime> {
    match refresh_in {
        Some(r) if r < expires_in => Some(now + Duration::from_secs(r)),
        _ if Duration::from_secs(expires_in) > HALF_LIFE_REFRESH_THRESHOLD => {
            Some(now + Duration::from_secs(expires_in / 2))
        }
        _ => None,
    }
}

/// Parses `Retry-After` (seconds or an HTTP date), capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let delay = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let date = httpdate::parse_http_date(value).ok()?;
        date.duration_since(now).unwrap_or_default()
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn error_from_body(status: u16, headers: &HeaderMap, map: &Map<String, Value>) -> Error {
    let text = |name: &str| match map.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let error_codes = match map.get("error_codes") {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_u64).collect(),
        _ => Vec::new(),
    };
    let server = ServerError {
        status,
        error: text("error").unwrap_or_default(),
        error_description: text("error_description"),
        error_codes,
        suberror: text("suberror"),
        claims: text("claims"),
        timestamp: text("timestamp"),
        trace_id: text("trace_id"),
        correlation_id: text("correlation_id")
            .or_else(|| header_string(headers, "client-request-id")),
    };
    Error::from_server(server)
}

/// Whether a status and its headers make a `throttled` error: 429 or 503 with `Retry-After`.
fn is_throttling(status: u16, headers: &HeaderMap, now: SystemTime) -> bool {
    (status == 429 || status == 503) && parse_retry_after(headers, now).is_some()
}

fn error_from_response(status: u16, headers: &HeaderMap, body: &[u8], now: SystemTime) -> Error {
    let retry_after = parse_retry_after(headers, now);
    // A body over the cap is never parsed.
    let parsed = if body.len() > MAX_RESPONSE_BYTES {
        None
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) if map.contains_key("error") => {
                Some(error_from_body(status, headers, &map))
            }
            _ => None,
        }
    };
    let err = parsed.unwrap_or_else(|| {
        let content_type = header_string(headers, "content-type").unwrap_or_else(|| "no content type".into());
        Error::new(
            ErrorCode::HTTP_STATUS,
            format!("the endpoint answered HTTP {status} without an OAuth error ({content_type}, {} bytes)", body.len()),
        )
        .with_retryable(status >= 500 || status == 429 || status == 408)
        .with_server_error(ServerError {
            status,
            correlation_id: header_string(headers, "client-request-id"),
            ..ServerError::default()
        })
    });
    match retry_after {
        Some(delay) if status == 429 || status == 503 => {
            let server = err.server_error().cloned().unwrap_or_default();
            let what = if server.error.is_empty() {
                format!("HTTP {status}")
            } else {
                server.error.clone()
            };
            Error::new(
                ErrorCode::THROTTLED,
                format!(
                    "the endpoint is throttling ({what}); retry after {} s",
                    delay.as_secs()
                ),
            )
            .with_server_error(server)
            .with_retry_after(delay)
        }
        Some(delay) => err.with_retry_after(delay),
        None => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::UNIX_EPOCH;

    fn ok(body: &str, expected: TokenType) -> Result<TokenResponse, Error> {
        TokenResponse::parse(200, &HeaderMap::new(), body.as_bytes(), expected)
    }

    fn code(result: Result<TokenResponse, Error>) -> String {
        result.unwrap_err().code().as_str().to_string()
    }

    #[test]
    fn success_numbers_and_strings() {
        let r = ok(r#"{"token_type":"Bearer","access_token":"a","expires_in":3600,"ext_expires_in":"7200"}"#, TokenType::Bearer).unwrap();
        assert_eq!(
            (r.expires_in, r.ext_expires_in, r.refresh_in),
            (3600, Some(7200), None)
        );
        let r = ok(r#"{"token_type":"bearer","access_token":"a","expires_in":"86399","refresh_in":"43199"}"#, TokenType::Bearer).unwrap();
        assert_eq!((r.expires_in, r.refresh_in), (86399, Some(43199)));
        let r = ok(
            r#"{"token_type":"MTLS_POP","access_token":"a","expires_in":3600.0}"#,
            TokenType::MtlsPop,
        )
        .unwrap();
        assert_eq!(r.token_type, TokenType::MtlsPop);
        // refresh_in not below expires_in is ignored
        let r = ok(
            r#"{"token_type":"Bearer","access_token":"a","expires_in":600,"refresh_in":900}"#,
            TokenType::Bearer,
        )
        .unwrap();
        assert_eq!(r.refresh_in, None);
    }

    #[test]
    fn token_type_rules() {
        assert_eq!(
            code(ok(
                r#"{"access_token":"a","expires_in":1}"#,
                TokenType::Bearer
            )),
            "token_type_missing"
        );
        assert_eq!(
            code(ok(
                r#"{"token_type":"","access_token":"a","expires_in":1}"#,
                TokenType::Bearer
            )),
            "token_type_missing"
        );
        let err = ok(
            r#"{"token_type":"Bearer","access_token":"a","expires_in":1}"#,
            TokenType::MtlsPop,
        )
        .unwrap_err();
        assert_eq!(err.code(), &ErrorCode::TOKEN_TYPE_MISMATCH);
        assert!(err
            .message()
            .contains("asked for mtls_pop, received Bearer"));
        assert_eq!(
            code(ok(
                r#"{"token_type":"pop","access_token":"a","expires_in":1}"#,
                TokenType::Bearer
            )),
            "token_type_mismatch"
        );
    }

    #[test]
    fn bad_input_is_an_error_with_a_code() {
        let cases = [
            ("", "invalid_response"),
            ("not json", "invalid_response"),
            (
                "<html><body>502 Bad Gateway</body></html>",
                "invalid_response",
            ),
            ("[]", "invalid_response"),
            ("null", "invalid_response"),
            (
                r#"{"token_type":"Bearer","expires_in":1}"#,
                "invalid_response",
            ),
            (
                r#"{"token_type":"Bearer","access_token":"","expires_in":1}"#,
                "invalid_response",
            ),
            (
                r#"{"token_type":"Bearer","access_token":5,"expires_in":1}"#,
                "invalid_response",
            ),
            (
                r#"{"token_type":7,"access_token":"a","expires_in":1}"#,
                "invalid_response",
            ),
            (
                r#"{"token_type":"Bearer","access_token":"a"}"#,
                "invalid_response",
            ),
            (
                r#"{"token_type":"Bearer","access_token":"a","expires_in":-5}"#,
                "invalid_response",
            ),
            (
                r#"{"token_type":"Bearer","access_token":"a","expires_in":0}"#,
                "invalid_response",
            ),
            (
                r#"{"token_type":"Bearer","access_token":"a","expires_in":"soon"}"#,
                "invalid_response",
            ),
            (
                r#"{"token_type":"Bearer","access_token":"a","expires_in":1e300}"#,
                "invalid_response",
            ),
            (
                r#"{"token_type":"Bearer","access_token":"a","expires_in":99999999999999999999999}"#,
                "invalid_response",
            ),
            (
                r#"{"token_type":"Bearer","access_token":"a","expires_in":"315360000000"}"#,
                "invalid_response",
            ),
            (
                r#"{"token_type":"Bearer","access_token":"a","expires_in":1.5}"#,
                "invalid_response",
            ),
            (
                r#"{"token_type":"Bearer","access_token":"a","expires_in":[1]}"#,
                "invalid_response",
            ),
            (
                r#"{"token_type":"Bearer","access_token":"a","expires_in":1,"client_info":"%%%"}"#,
                "invalid_response",
            ),
            (
                r#"{"token_type":"Bearer","access_token":"a","expires_in":1,"client_info":"e30"}"#,
                "invalid_response",
            ),
            (
                r#"{"token_type":"Bearer","access_token":"a","expires_in":1,"id_token":"x.y"}"#,
                "invalid_response",
            ),
            (
                r#"{"token_type":"Bearer","access_token":"a","expires_in":1,"scope":{}}"#,
                "invalid_response",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(code(ok(body, TokenType::Bearer)), expected, "{body}");
        }
        let huge = vec![b' '; 10 * 1024 * 1024];
        assert_eq!(
            code(TokenResponse::parse(
                200,
                &HeaderMap::new(),
                &huge,
                TokenType::Bearer
            )),
            "response_too_large"
        );
        let mut deep = "[".repeat(100_000);
        deep.push_str(&"]".repeat(100_000));
        assert_eq!(code(ok(&deep, TokenType::Bearer)), "invalid_response");
    }

    #[test]
    fn aadsts_errors_keep_every_field() {
        let body = r#"{"error":"invalid_grant","error_description":"AADSTS700024: Client assertion is not within its valid time range.","error_codes":[700024],"suberror":"bad_token","claims":"{\"access_token\":{}}","timestamp":"2026-11-21 10:00:00Z","trace_id":"trace-1","correlation_id":"corr-1"}"#;
        let err = TokenResponse::parse(400, &HeaderMap::new(), body.as_bytes(), TokenType::Bearer)
            .unwrap_err();
        assert_eq!(err.code(), &"invalid_grant");
        assert_eq!(err.aadsts(), Some(700_024));
        assert!(!err.is_retryable());
        let server = err.server_error().unwrap();
        assert_eq!(server.status, 400);
        assert_eq!(server.suberror.as_deref(), Some("bad_token"));
        assert_eq!(server.claims.as_deref(), Some("{\"access_token\":{}}"));
        assert_eq!(server.timestamp.as_deref(), Some("2026-11-21 10:00:00Z"));
        assert_eq!(server.trace_id.as_deref(), Some("trace-1"));
        assert_eq!(server.correlation_id.as_deref(), Some("corr-1"));
        // An error body with a 200 status is still an error.
        let err = ok(
            r#"{"error":"invalid_scope","error_codes":[70011]}"#,
            TokenType::Bearer,
        )
        .unwrap_err();
        assert_eq!(err.aadsts(), Some(70011));
    }

    #[test]
    fn html_error_pages_and_throttling() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/html"));
        headers.insert("client-request-id", HeaderValue::from_static("cid"));
        let err = TokenResponse::parse(
            502,
            &headers,
            b"<html>bad gateway</html>",
            TokenType::Bearer,
        )
        .unwrap_err();
        assert_eq!(err.code(), &ErrorCode::HTTP_STATUS);
        assert!(err.is_retryable());
        assert_eq!(err.status(), Some(502));
        assert_eq!(
            err.server_error().unwrap().correlation_id.as_deref(),
            Some("cid")
        );

        headers.insert("retry-after", HeaderValue::from_static("120"));
        let err = TokenResponse::parse(
            429,
            &headers,
            br#"{"error":"temporarily_unavailable"}"#,
            TokenType::Bearer,
        )
        .unwrap_err();
        assert_eq!(err.code(), &ErrorCode::THROTTLED);
        assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
        assert_eq!(err.server_error().unwrap().error, "temporarily_unavailable");

        headers.insert("retry-after", HeaderValue::from_static("99999"));
        let err = TokenResponse::parse(503, &headers, b"", TokenType::Bearer).unwrap_err();
        assert_eq!(err.code(), &ErrorCode::THROTTLED);
        assert_eq!(err.retry_after(), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut headers = HeaderMap::new();
        assert_eq!(parse_retry_after(&headers, now), None);
        headers.insert("retry-after", HeaderValue::from_static("30"));
        assert_eq!(
            parse_retry_after(&headers, now),
            Some(Duration::from_secs(30))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(90));
        headers.insert("retry-after", HeaderValue::from_str(&date).unwrap());
        assert_eq!(
            parse_retry_after(&headers, now),
            Some(Duration::from_secs(90))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(86_400));
        headers.insert("retry-after", HeaderValue::from_str(&date).unwrap());
        assert_eq!(parse_retry_after(&headers, now), Some(MAX_RETRY_AFTER));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(10));
        headers.insert("retry-after", HeaderValue::from_str(&past).unwrap());
        assert_eq!(parse_retry_after(&headers, now), Some(Duration::ZERO));
        headers.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&headers, now), None);
    }

    #[test]
    fn user_responses_give_account_and_refresh() {
        let client_info = URL_SAFE_NO_PAD.encode(br#"{"uid":"oid-1","utid":"tid-1"}"#);
        let id_payload = URL_SAFE_NO_PAD
            .encode(br#"{"oid":"oid-1","tid":"tid-1","preferred_username":"alice@contoso.com"}"#);
        let body = format!(
            r#"{{"token_type":"Bearer","access_token":"at","expires_in":7202,"scope":"User.Read openid","refresh_token":"rt","id_token":"e30.{id_payload}.sig","client_info":"{client_info}"}}"#
        );
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let token = ok(&body, TokenType::Bearer).unwrap().into_access_token(
            now,
            vec!["User.Read".into()],
            None,
        );
        let account = token.account.clone().unwrap();
        assert_eq!(account.home_account_id, "oid-1.tid-1");
        assert_eq!(account.username.as_deref(), Some("alice@contoso.com"));
        assert_eq!(account.object_id.as_deref(), Some("oid-1"));
        assert_eq!(token.tenant_id.as_deref(), Some("tid-1"));
        assert_eq!(token.refresh_token.as_ref().unwrap().expose(), "rt");
        // Over 2 h without refresh_in: half-life.
        assert_eq!(token.refresh_on, Some(now + Duration::from_secs(3601)));
        assert!(!format!("{token:?}").contains("\"rt\""));
    }

    #[test]
    fn refresh_rules() {
        let now = UNIX_EPOCH;
        assert_eq!(refresh_on(now, 3600, None), None);
        assert_eq!(
            refresh_on(now, 7200, None),
            None,
            "exactly 2 h is not over 2 h"
        );
        assert_eq!(
            refresh_on(now, 7202, None),
            Some(now + Duration::from_secs(3601))
        );
        assert_eq!(
            refresh_on(now, 3600, Some(600)),
            Some(now + Duration::from_secs(600))
        );
        assert_eq!(
            refresh_on(now, 86_400, Some(90_000)),
            Some(now + Duration::from_secs(43_200))
        );
    }

    #[test]
    fn app_tokens_take_the_tenant_fallback_and_user_tokens_their_own() {
        let app = || {
            ok(
                r#"{"token_type":"Bearer","access_token":"a","expires_in":3599}"#,
                TokenType::Bearer,
            )
            .unwrap()
        };
        assert_eq!(
            app().into_access_token(UNIX_EPOCH, vec![], None).tenant_id,
            None
        );
        let token =
            app()
                .with_tenant_fallback("tenant1")
                .into_access_token(UNIX_EPOCH, vec![], None);
        assert_eq!(token.tenant_id.as_deref(), Some("tenant1"));
        for blank in ["", "  "] {
            let token =
                app()
                    .with_tenant_fallback(blank)
                    .into_access_token(UNIX_EPOCH, vec![], None);
            assert_eq!(token.tenant_id, None, "{blank:?}");
        }
        // The response's own tenant wins: id token tid, then client_info utid.
        let client_info = URL_SAFE_NO_PAD.encode(br#"{"uid":"oid-1","utid":"utid-1"}"#);
        let id_payload = URL_SAFE_NO_PAD.encode(br#"{"tid":"tid-1"}"#);
        let with_info = format!(
            r#"{{"token_type":"Bearer","access_token":"a","expires_in":60,"client_info":"{client_info}"}}"#
        );
        let with_both = format!(
            r#"{{"token_type":"Bearer","access_token":"a","expires_in":60,"client_info":"{client_info}","id_token":"e30.{id_payload}.s"}}"#
        );
        for (body, tenant) in [(with_info, "utid-1"), (with_both, "tid-1")] {
            let token = ok(&body, TokenType::Bearer)
                .unwrap()
                .with_tenant_fallback("tenant1")
                .into_access_token(UNIX_EPOCH, vec![], None);
            assert_eq!(token.tenant_id.as_deref(), Some(tenant));
        }
    }

    #[test]
    fn a_huge_throttling_body_is_still_throttled() {
        let huge = vec![b'x'; MAX_RESPONSE_BYTES + 1];
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("42"));
        for status in [429, 503] {
            let err = TokenResponse::parse(status, &headers, &huge, TokenType::Bearer).unwrap_err();
            assert_eq!(err.code(), &ErrorCode::THROTTLED, "{status}");
            assert_eq!(err.retry_after(), Some(Duration::from_secs(42)));
            assert_eq!(err.status(), Some(status));
        }
        // A huge error body that looks like an OAuth error is still not parsed.
        let mut json = br#"{"error":"temporarily_unavailable","pad":""#.to_vec();
        json.resize(MAX_RESPONSE_BYTES + 10, b'x');
        json.extend_from_slice(br#""}"#);
        let err = TokenResponse::parse(429, &headers, &json, TokenType::Bearer).unwrap_err();
        assert_eq!(err.code(), &ErrorCode::THROTTLED);
        assert_eq!(err.server_error().unwrap().error, "");
        // Without Retry-After, or another status: the size cap answers.
        for (status, headers) in [
            (429, HeaderMap::new()),
            (500, headers.clone()),
            (200, headers.clone()),
        ] {
            assert_eq!(
                code(TokenResponse::parse(
                    status,
                    &headers,
                    &huge,
                    TokenType::Bearer
                )),
                "response_too_large",
                "{status}"
            );
        }
    }

    #[test]
    fn implausible_optional_lifetimes_are_dropped_not_fatal() {
        for bad in [
            "0",
            "-5",
            "\"-1\"",
            "315360000000",
            "\"315360000000\"",
            "1e300",
            "1.5",
            "\"soon\"",
            "[1]",
            "{}",
            "true",
        ] {
            for field in ["ext_expires_in", "refresh_in"] {
                let body = format!(
                    r#"{{"token_type":"Bearer","access_token":"a","expires_in":3600,"{field}":{bad}}}"#
                );
                let r = ok(&body, TokenType::Bearer).unwrap_or_else(|e| panic!("{body}: {e:?}"));
                assert_eq!(r.expires_in, 3600);
                assert_eq!((r.ext_expires_in, r.refresh_in), (None, None), "{body}");
            }
            // expires_in stays strict.
            let body =
                format!(r#"{{"token_type":"Bearer","access_token":"a","expires_in":{bad}}}"#);
            assert_eq!(
                code(ok(&body, TokenType::Bearer)),
                "invalid_response",
                "{body}"
            );
        }
        // A good value next to a bad one is kept.
        let r = ok(
            r#"{"token_type":"Bearer","access_token":"a","expires_in":3600,"ext_expires_in":0,"refresh_in":"1800"}"#,
            TokenType::Bearer,
        )
        .unwrap();
        assert_eq!((r.ext_expires_in, r.refresh_in), (None, Some(1800)));
    }

    #[test]
    fn bearer_results_drop_the_binding() {
        let r = ok(
            r#"{"token_type":"Bearer","access_token":"a","expires_in":60}"#,
            TokenType::Bearer,
        )
        .unwrap();
        let token = r.into_access_token(UNIX_EPOCH, vec![], None);
        assert!(token.binding.is_none());
    }
}
