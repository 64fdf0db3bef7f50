//! Token requests as typed values, turned into `http::Request<Bytes>` (PROTOCOL §2).
//!
//! A [`TokenRequest`] is a grant, a client authentication and parameters, for one
//! [`TokenEndpoint`]. [`TokenRequest::into_transport_request`] validates the combination and
//! produces the exact HTTP request (form body in a deterministic order, PROTOCOL §2's headers)
//! together with the TLS client identity to present.
//!
//! ```
//! use fic_oauth_core::authority::{Authority, EndpointOptions};
//! use fic_oauth_core::request::{ClientAuth, TokenRequest};
//! use fic_oauth_core::Secret;
//!
//! let authority = Authority::parse("https://login.microsoftonline.com/contoso.onmicrosoft.com/")?;
//! let endpoint = authority.token_endpoint(&EndpointOptions::default())?;
//! let request = TokenRequest::client_credentials(
//!     endpoint,
//!     "11111111-1111-1111-1111-111111111111",
//!     ["https://graph.microsoft.com/.default"],
//! )
//! .with_auth(ClientAuth::Secret(Secret::new("s3cret")))
//! .with_correlation_id(uuid::Uuid::nil())
//! .into_transport_request()?;
//!
//! let http = &request.request;
//! assert_eq!(http.method(), http::Method::POST);
//! assert_eq!(
//!     http.uri().to_string(),
//!     "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
//! );
//! assert_eq!(
//!     std::str::from_utf8(http.body())?,
//!     "client_id=11111111-1111-1111-1111-111111111111&client_secret=s3cret\
//!      &scope=https%3A%2F%2Fgraph.microsoft.com%2F.default&grant_type=client_credentials"
//! );
//! assert!(request.identity.is_none());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::authority::{AuthorityKind, TokenEndpoint};
use crate::credential::TokenType;
use crate::error::{Error, ErrorCode};
use crate::identity::ClientIdentity;
use crate::secret::Secret;
use crate::transport::TransportRequest;

/// `client_assertion_type` of an assertion signed by (or for) the client.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// `client_assertion_type` of an assertion bound to the TLS client certificate.
pub const JWT_POP: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-pop";
/// The scopes a user flow adds itself; callers may not pass them.
pub const RESERVED_SCOPES: [&str; 3] = ["openid", "profile", "offline_access"];
/// The `x-client-SKU` header value.
pub const CLIENT_SKU: &str = "fic-rs";
/// The `x-client-Ver` header value.
pub const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// How the client authenticates to the token endpoint.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum ClientAuth {
    /// `client_secret`.
    Secret(Secret),
    /// `client_assertion`: jwt-bearer without a binding, jwt-pop with one (the binding
    /// certificate is then presented in TLS).
    Assertion {
        /// The assertion (a JWT).
        assertion: Secret,
        /// The certificate the assertion is bound to, if any.
        binding: Option<ClientIdentity>,
    },
    /// No body credential: the TLS client certificate authenticates the client (mTLS PoP with a
    /// certificate, the "vanilla" flow).
    Certificate(ClientIdentity),
    /// No credential (public clients, or a refresh grant the server accepts without one).
    #[default]
    None,
}

impl ClientAuth {
    /// A jwt-bearer assertion.
    pub fn assertion(assertion: impl Into<Secret>) -> Self {
        Self::Assertion {
            assertion: assertion.into(),
            binding: None,
        }
    }

    /// The TLS client identity this authentication presents.
    pub fn identity(&self) -> Option<&ClientIdentity> {
        match self {
            Self::Assertion { binding, .. } => binding.as_ref(),
            Self::Certificate(identity) => Some(identity),
            Self::Secret(_) | Self::None => None,
        }
    }
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secret(_) => f.write_str("Secret(***)"),
            Self::Assertion { binding, .. } => f
                .debug_struct("Assertion")
                .field("assertion", &"***")
                .field(
                    "binding",
                    &binding.as_ref().map(ClientIdentity::thumbprint_s256),
                )
                .finish(),
            Self::Certificate(identity) => f
                .debug_tuple("Certificate")
                .field(&identity.thumbprint_s256())
                .finish(),
            Self::None => f.write_str("None"),
        }
    }
}

/// The user of a `user_fic` request: by UPN or by object id, never both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserIdentifier {
    /// The user principal name (`username=`).
    Username(String),
    /// The user's object id (`user_id=`, lower-case hyphenated).
    ObjectId(Uuid),
}

impl UserIdentifier {
    /// Exactly one of `username` and `user_id` must be given (blank counts as absent); the
    /// object id must be a GUID.
    pub fn from_parts(username: Option<&str>, user_id: Option<&str>) -> Result<Self, Error> {
        let username = username.map(str::trim).filter(|s| !s.is_empty());
        let user_id = user_id.map(str::trim).filter(|s| !s.is_empty());
        match (username, user_id) {
            (Some(upn), None) => Ok(Self::Username(upn.to_string())),
            (None, Some(oid)) => Uuid::parse_str(oid).map(Self::ObjectId).map_err(|_| {
                Error::new(
                    ErrorCode::INVALID_ARGUMENT,
                    format!("user id {oid:?} is not an object id (GUID)"),
                )
            }),
            (Some(_), Some(_)) => Err(Error::new(
                ErrorCode::USER_IDENTIFIER_REQUIRED,
                "give either a username or a user object id, not both",
            )),
            (None, None) => Err(Error::new(
                ErrorCode::USER_IDENTIFIER_REQUIRED,
                "a user_fic request needs a username or a user object id",
            )),
        }
    }

    /// Checks the identifier as a `user_fic` request does: a user name must not be blank.
    pub fn check(&self) -> Result<(), Error> {
        match self {
            Self::Username(upn) if Self::normalized_upn(upn).is_empty() => Err(Error::new(
                ErrorCode::USER_IDENTIFIER_REQUIRED,
                "the username is empty",
            )),
            _ => Ok(()),
        }
    }

    /// The UPN as sent (`username=` and `x-anchormailbox`): trimmed.
    fn normalized_upn(upn: &str) -> &str {
        upn.trim()
    }

    /// The `x-anchormailbox` header value: `oid:{oid}@{tenant}` or `upn:{upn}` (the UPN trimmed,
    /// as in the `username` parameter).
    pub fn anchor_mailbox(&self, tenant: &str) -> String {
        match self {
            Self::Username(upn) => format!("upn:{}", Self::normalized_upn(upn)),
            Self::ObjectId(oid) => format!("oid:{}@{tenant}", oid.hyphenated()),
        }
    }
}

/// The grant of a token request.
#[derive(Clone)]
#[non_exhaustive]
pub enum Grant {
    /// `client_credentials` (app-only).
    ClientCredentials,
    /// `user_fic`: an agent acting for a user with a user federated identity credential.
    UserFic {
        /// `user_federated_identity_credential` (T2 of the agent flow).
        user_credential: Secret,
        /// The user.
        user: UserIdentifier,
    },
    /// `refresh_token`: silent renewal of a user token.
    RefreshToken {
        /// The refresh token.
        refresh_token: Secret,
    },
}

impl Grant {
    fn name(&self) -> &'static str {
        match self {
            Self::ClientCredentials => "client_credentials",
            Self::UserFic { .. } => "user_fic",
            Self::RefreshToken { .. } => "refresh_token",
        }
    }

    fn is_user_grant(&self) -> bool {
        !matches!(self, Self::ClientCredentials)
    }
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientCredentials => f.write_str("ClientCredentials"),
            Self::UserFic { user, .. } => f
                .debug_struct("UserFic")
                .field("user_credential", &"***")
                .field("user", user)
                .finish(),
            Self::RefreshToken { .. } => f.write_str("RefreshToken(***)"),
        }
    }
}

/// A token request: grant, client authentication and parameters for one endpoint.
///
/// `Debug` redacts the credentials and shows only the names of extra parameters and headers.
#[derive(Clone)]
pub struct TokenRequest {
    endpoint: TokenEndpoint,
    client_id: String,
    grant: Grant,
    auth: ClientAuth,
    scopes: Vec<String>,
    claims: Option<String>,
    client_capabilities: Vec<String>,
    token_type: TokenType,
    fmi_path: Option<String>,
    extra_body: Vec<(String, String)>,
    extra_query: Vec<(String, String)>,
    extra_headers: Vec<(String, String)>,
    correlation_id: Option<Uuid>,
}

fn names(pairs: &[(String, String)]) -> Vec<&str> {
    pairs.iter().map(|(name, _)| name.as_str()).collect()
}

impl fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRequest")
            .field("endpoint", &self.endpoint.url().as_str())
            .field("client_id", &self.client_id)
            .field("grant", &self.grant)
            .field("auth", &self.auth)
            .field("scopes", &self.scopes)
            .field("claims", &self.claims.is_some())
            .field("client_capabilities", &self.client_capabilities)
            .field("token_type", &self.token_type)
            .field("fmi_path", &self.fmi_path)
            .field("extra_body", &names(&self.extra_body))
            .field("extra_query", &names(&self.extra_query))
            .field("extra_headers", &names(&self.extra_headers))
            .field("correlation_id", &self.correlation_id)
            .finish()
    }
}

impl TokenRequest {
    fn new(
        endpoint: TokenEndpoint,
        client_id: impl Into<String>,
        grant: Grant,
        scopes: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            endpoint,
            client_id: client_id.into(),
            grant,
            auth: ClientAuth::None,
            scopes: scopes.into_iter().map(Into::into).collect(),
            claims: None,
            client_capabilities: Vec::new(),
            token_type: TokenType::Bearer,
            fmi_path: None,
            extra_body: Vec::new(),
            extra_query: Vec::new(),
            extra_headers: Vec::new(),
            correlation_id: None,
        }
    }

    /// A `client_credentials` request.
    pub fn client_credentials(
        endpoint: TokenEndpoint,
        client_id: impl Into<String>,
        scopes: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self::new(endpoint, client_id, Grant::ClientCredentials, scopes)
    }

    /// A `user_fic` request; `openid profile offline_access` are added to `scopes`.
    pub fn user_fic(
        endpoint: TokenEndpoint,
        client_id: impl Into<String>,
        user_credential: Secret,
        user: UserIdentifier,
        scopes: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self::new(
            endpoint,
            client_id,
            Grant::UserFic {
                user_credential,
                user,
            },
            scopes,
        )
    }

    /// A `refresh_token` request; `openid profile offline_access` are added to `scopes`.
    pub fn refresh_token(
        endpoint: TokenEndpoint,
        client_id: impl Into<String>,
        refresh_token: Secret,
        scopes: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self::new(
            endpoint,
            client_id,
            Grant::RefreshToken { refresh_token },
            scopes,
        )
    }

    /// Sets the client authentication.
    #[must_use]
    pub fn with_auth(mut self, auth: ClientAuth) -> Self {
        self.auth = auth;
        self
    }

    /// Asks for a token type (`mtls_pop` needs a certificate).
    #[must_use]
    pub fn with_token_type(mut self, token_type: TokenType) -> Self {
        self.token_type = token_type;
        self
    }

    /// Sets a claims challenge (a JSON object).
    #[must_use]
    pub fn with_claims(mut self, claims: Option<String>) -> Self {
        self.claims = claims;
        self
    }

    /// Declares client capabilities (e.g. `cp1`), sent as `xms_cc` in `claims`.
    #[must_use]
    pub fn with_client_capabilities(
        mut self,
        capabilities: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.client_capabilities = capabilities.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the FMI path (client credentials only).
    #[must_use]
    pub fn with_fmi_path(mut self, fmi_path: Option<String>) -> Self {
        self.fmi_path = fmi_path;
        self
    }

    /// Adds a body parameter, sent after all others.
    #[must_use]
    pub fn with_extra_body_parameter(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.extra_body.push((name.into(), value.into()));
        self
    }

    /// Adds a query parameter to the token endpoint URL.
    #[must_use]
    pub fn with_extra_query_parameter(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.extra_query.push((name.into(), value.into()));
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn with_extra_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_headers.push((name.into(), value.into()));
        self
    }

    /// Sets the correlation id (`client-request-id`); a random one otherwise.
    #[must_use]
    pub fn with_correlation_id(mut self, correlation_id: Uuid) -> Self {
        self.correlation_id = Some(correlation_id);
        self
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &TokenEndpoint {
        &self.endpoint
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The requested token type.
    pub fn token_type(&self) -> TokenType {
        self.token_type
    }

    /// The scopes as the caller gave them.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// The FMI path.
    pub fn fmi_path(&self) -> Option<&str> {
        self.fmi_path.as_deref()
    }

    /// The client authentication.
    pub fn auth(&self) -> &ClientAuth {
        &self.auth
    }

    /// The `scope` value sent: the scopes space-joined, plus `openid offline_access profile`
    /// for user grants.
    pub fn scope_parameter(&self) -> String {
        let mut scopes: Vec<&str> = self.scopes.iter().map(String::as_str).collect();
        if self.grant.is_user_grant() {
            scopes.extend(["openid", "offline_access", "profile"]);
        }
        scopes.join(" ")
    }

    /// The `claims` value sent: the challenge merged with the client capabilities, or `None`.
    pub fn claims_parameter(&self) -> Result<Option<String>, Error> {
        merge_claims(self.claims.as_deref(), &self.client_capabilities)
    }

    fn validate(&self) -> Result<(), Error> {
        let arg = |m: &str| Err(Error::new(ErrorCode::INVALID_ARGUMENT, m));
        if self.client_id.trim().is_empty() {
            return arg("the client id is empty");
        }
        check_scopes(&self.scopes)?;
        match &self.auth {
            ClientAuth::Secret(secret) if secret.is_blank() => {
                return arg("the client secret is empty")
            }
            ClientAuth::Assertion { assertion, .. } if assertion.is_blank() => {
                return Err(Error::new(
                    ErrorCode::INVALID_CLIENT_ASSERTION,
                    "the client assertion is empty",
                ))
            }
            _ => {}
        }
        let identity = self.auth.identity();
        if self.token_type == TokenType::MtlsPop {
            if identity.is_none() {
                return Err(Error::new(
                    ErrorCode::MTLS_CERTIFICATE_NOT_PROVIDED,
                    "mTLS PoP needs a certificate: use a certificate credential, or an assertion \
                     provider that returns a binding certificate",
                ));
            }
            if self.endpoint.kind() == AuthorityKind::Aad
                && matches!(
                    self.endpoint.tenant().to_ascii_lowercase().as_str(),
                    "common" | "organizations"
                )
            {
                return Err(Error::new(
                    ErrorCode::MISSING_TENANTED_AUTHORITY,
                    "mTLS PoP needs a tenanted authority, not /common or /organizations",
                ));
            }
        }
        if matches!(self.auth, ClientAuth::Certificate(_)) && self.token_type != TokenType::MtlsPop
        {
            return arg(
                "a certificate without an assertion authenticates only mtls_pop requests; \
                 sign a jwt-bearer assertion for Bearer tokens",
            );
        }
        if identity.is_some() != self.endpoint.is_mtls() {
            return arg(if identity.is_some() {
                "a client certificate is presented only to an mTLS endpoint: resolve the \
                 endpoint with EndpointOptions::mtls()"
            } else {
                "the endpoint was resolved for mTLS but no client certificate is presented"
            });
        }
        if let Some(path) = &self.fmi_path {
            if path.trim().is_empty() {
                return arg("the FMI path is empty");
            }
            if !matches!(self.grant, Grant::ClientCredentials) {
                return arg("an FMI path is only sent with client credentials");
            }
        }
        match &self.grant {
            Grant::UserFic {
                user_credential,
                user,
            } => {
                if user_credential.is_blank() {
                    return Err(Error::new(
                        ErrorCode::INVALID_CLIENT_ASSERTION,
                        "the user federated identity credential is empty",
                    ));
                }
                user.check()?;
            }
            Grant::RefreshToken { refresh_token } if refresh_token.is_blank() => {
                return arg("the refresh token is empty");
            }
            _ => {}
        }
        Ok(())
    }

    /// The form parameters in the order they are sent. Secrets appear in values: do not log.
    pub fn form_parameters(&self) -> Result<Vec<(String, Secret)>, Error> {
        self.validate()?;
        let mut form = Form(Vec::with_capacity(12));
        let mut add = |name: &str, value: Secret| form.add(name, value);
        add("client_id", Secret::new(self.client_id.clone()));
        match &self.auth {
            ClientAuth::Secret(secret) => add("client_secret", secret.clone()),
            ClientAuth::Assertion { assertion, binding } => {
                let kind = if binding.is_some() {
                    JWT_POP
                } else {
                    JWT_BEARER
                };
                add("client_assertion_type", Secret::new(kind));
                add("client_assertion", assertion.clone());
            }
            ClientAuth::Certificate(_) | ClientAuth::None => {}
        }
        add("scope", Secret::new(self.scope_parameter()));
        if let Some(claims) = self.claims_parameter()? {
            add("claims", Secret::new(claims));
        }
        add("grant_type", Secret::new(self.grant.name()));
        match &self.grant {
            Grant::ClientCredentials => {}
            Grant::UserFic {
                user_credential,
                user,
            } => {
                add(
                    "user_federated_identity_credential",
                    user_credential.clone(),
                );
                match user {
                    UserIdentifier::Username(upn) => {
                        add("username", Secret::new(UserIdentifier::normalized_upn(upn)));
                    }
                    UserIdentifier::ObjectId(oid) => {
                        add("user_id", Secret::new(oid.hyphenated().to_string()));
                    }
                }
                add("client_info", Secret::new("1"));
            }
            Grant::RefreshToken { refresh_token } => {
                add("refresh_token", refresh_token.clone());
                add("client_info", Secret::new("1"));
            }
        }
        if self.token_type == TokenType::MtlsPop {
            add("token_type", Secret::new("mtls_pop"));
        }
        if let Some(path) = &self.fmi_path {
            add("fmi_path", Secret::new(path.trim()));
        }
        for (name, value) in &self.extra_body {
            if form.0.iter().any(|(n, _)| n == name) {
                return Err(Error::new(
                    ErrorCode::INVALID_ARGUMENT,
                    format!(
                        "the extra body parameter {name:?} would override one the library sets"
                    ),
                ));
            }
            form.add(name, Secret::new(value.clone()));
        }
        Ok(form.0)
    }

    /// Validates the request and builds the HTTP request and the identity to present.
    pub fn into_transport_request(self) -> Result<TransportRequest, Error> {
        let form = self.form_parameters()?;
        let mut body = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in &form {
            body.append_pair(name, value.expose());
        }
        let body = body.finish();

        let mut url = self.endpoint.url().clone();
        if !self.extra_query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in &self.extra_query {
                pairs.append_pair(name, value);
            }
        }

        let correlation_id = self.correlation_id.unwrap_or_else(Uuid::new_v4);
        let mut builder = http::Request::post(url.as_str())
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("client-request-id", correlation_id.hyphenated().to_string())
            .header("return-client-request-id", "true")
            .header("x-ms-lib-capability", "retry-after, h429")
            .header("x-client-SKU", CLIENT_SKU)
            .header("x-client-Ver", CLIENT_VERSION);
        if let Grant::UserFic { user, .. } = &self.grant {
            builder = builder.header(
                "x-anchormailbox",
                user.anchor_mailbox(self.endpoint.tenant()),
            );
        }
        for (name, value) in &self.extra_headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                Error::new(
                    ErrorCode::INVALID_ARGUMENT,
                    format!("invalid header name {name:?}"),
                )
            })?;
            let value = HeaderValue::from_str(value).map_err(|_| {
                Error::new(
                    ErrorCode::INVALID_ARGUMENT,
                    format!("invalid value for header {name}"),
                )
            })?;
            builder = builder.header(name, value);
        }
        let request = builder
            .body(Bytes::from(body))
            .map_err(|e| Error::new(ErrorCode::INVALID_ARGUMENT, e.to_string()))?;
        Ok(TransportRequest::new(request).with_identity(self.auth.identity().cloned()))
    }
}

/// Form parameters in order; empty values are never sent.
struct Form(Vec<(String, Secret)>);

impl Form {
    fn add(&mut self, name: &str, value: Secret) {
        if !value.is_blank() {
            self.0.push((name.to_string(), value));
        }
    }
}

/// Merges a claims challenge with client capabilities:
/// `{"access_token":{"xms_cc":{"values":["cp1"]}}}` added into the challenge's `access_token`.
pub fn merge_claims(
    claims: Option<&str>,
    capabilities: &[String],
) -> Result<Option<String>, Error> {
    let invalid = |m: String| Error::new(ErrorCode::INVALID_CLAIMS, m);
    let claims = claims.map(str::trim).filter(|c| !c.is_empty());
    let capabilities: Vec<&str> = capabilities
        .iter()
        .map(|c| c.trim())
        .filter(|c| !c.is_empty())
        .collect();
    if claims.is_none() && capabilities.is_empty() {
        return Ok(None);
    }
    let mut root: Map<String, Value> = match claims {
        Some(json) => match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(invalid("the claims challenge is not a JSON object".into())),
            Err(e) => return Err(invalid(format!("the claims challenge is not JSON: {e}"))),
        },
        None => Map::new(),
    };
    if !capabilities.is_empty() {
        let access_token = root
            .entry("access_token")
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(access_token) = access_token else {
            return Err(invalid("claims.access_token is not a JSON object".into()));
        };
        access_token.insert(
            "xms_cc".into(),
            serde_json::json!({ "values": capabilities }),
        );
    }
    serde_json::to_string(&Value::Object(root))
        .map(Some)
        .map_err(|e| invalid(e.to_string()))
}

/// Checks the scopes a caller asks for, as every token request does before it is sent: at least
/// one, none blank, none of the [`RESERVED_SCOPES`] (the library adds those where a grant needs
/// them). Flows that fetch credentials before building their request (a user flow's T1 and T2)
/// call it first, so a request that would be refused costs nothing.
///
/// ```
/// use fic_oauth_core::request::check_scopes;
/// use fic_oauth_core::ErrorCode;
///
/// assert!(check_scopes(&["https://graph.microsoft.com/.default".to_string()]).is_ok());
/// let refused = check_scopes(&["User.Read".to_string(), "openid".to_string()]).unwrap_err();
/// assert_eq!(refused.code(), &ErrorCode::RESERVED_SCOPE);
/// ```
pub fn check_scopes(scopes: &[String]) -> Result<(), Error> {
    if scopes.iter().all(|s| s.trim().is_empty()) {
        return Err(Error::new(
            ErrorCode::INVALID_ARGUMENT,
            "at least one scope is required",
        ));
    }
    if let Some(index) = scopes.iter().position(|s| s.trim().is_empty()) {
        return Err(Error::new(
            ErrorCode::INVALID_ARGUMENT,
            format!("scope #{} of {} is blank", index + 1, scopes.len()),
        ));
    }
    if let Some(reserved) = scopes.iter().find(|s| {
        RESERVED_SCOPES
            .iter()
            .any(|r| r.eq_ignore_ascii_case(s.trim()))
    }) {
        return Err(Error::new(
            ErrorCode::RESERVED_SCOPE,
            format!("the scope {reserved:?} is reserved: the library adds it where needed"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::{Authority, EndpointOptions, Region};
    use crate::identity::{KeyKind, SignatureAlgorithm, SigningKey};
    use std::sync::Arc;

    #[derive(Debug)]
    struct FakeKey;
    impl SigningKey for FakeKey {
        fn kind(&self) -> KeyKind {
            KeyKind::Rsa { bits: 2048 }
        }
        fn algorithms(&self) -> &[SignatureAlgorithm] {
            &[SignatureAlgorithm::RsaPssSha256]
        }
        fn sign(&self, _: SignatureAlgorithm, _: &[u8]) -> Result<Vec<u8>, Error> {
            Ok(vec![0])
        }
    }

    const CLIENT: &str = "11111111-1111-1111-1111-111111111111";
    const SCOPE: &str = "https://vault.azure.net/.default";
    const CID: &str = "00000000-0000-0000-0000-000000000001";

    fn identity() -> ClientIdentity {
        ClientIdentity::new(vec![b"cert".to_vec()], Arc::new(FakeKey)).unwrap()
    }

    fn endpoint(mtls: bool, region: Option<&str>) -> TokenEndpoint {
        Authority::parse("https://login.microsoftonline.com/tenant1/")
            .unwrap()
            .token_endpoint(&EndpointOptions {
                region: region.map(|r| Region::parse(r).unwrap()),
                mtls,
            })
            .unwrap()
    }

    /// A built request, with the TLS identity it presents (its `x5t#S256`).
    struct Built {
        uri: String,
        body: String,
        headers: http::HeaderMap,
        identity: Option<String>,
    }

    fn build_full(request: TokenRequest) -> Built {
        let t = request
            .with_correlation_id(Uuid::parse_str(CID).unwrap())
            .into_transport_request()
            .unwrap();
        assert_eq!(t.request.method(), http::Method::POST);
        Built {
            uri: t.request.uri().to_string(),
            body: String::from_utf8(t.request.body().to_vec()).unwrap(),
            headers: t.request.headers().clone(),
            identity: t.identity.as_ref().map(|i| i.thumbprint_s256().to_string()),
        }
    }

    /// Exactly PROTOCOL §2's headers (each once), plus `extra`.
    fn assert_headers(headers: &http::HeaderMap, extra: &[(&str, &str)]) {
        let mut expected: Vec<(&str, &str)> = vec![
            ("accept", "application/json"),
            ("content-type", "application/x-www-form-urlencoded"),
            ("client-request-id", CID),
            ("return-client-request-id", "true"),
            ("x-ms-lib-capability", "retry-after, h429"),
            ("x-client-sku", "fic-rs"),
            ("x-client-ver", CLIENT_VERSION),
        ];
        expected.extend_from_slice(extra);
        expected.sort_unstable();
        let mut actual: Vec<(&str, &str)> = headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.to_str().unwrap()))
            .collect();
        actual.sort_unstable();
        assert_eq!(actual, expected);
    }

    fn cc(mtls: bool, region: Option<&str>) -> TokenRequest {
        TokenRequest::client_credentials(endpoint(mtls, region), CLIENT, [SCOPE])
    }

    const SCOPE_ENC: &str = "https%3A%2F%2Fvault.azure.net%2F.default";
    const BEARER_TYPE: &str = "urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer";
    const POP_TYPE: &str = "urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-pop";

    /// PROTOCOL §2, row "secret": `client_secret`, login or regional host, no TLS certificate.
    #[test]
    fn golden_secret() {
        for (region, uri) in [
            (
                None,
                "https://login.microsoftonline.com/tenant1/oauth2/v2.0/token",
            ),
            (
                Some("westus3"),
                "https://westus3.login.microsoft.com/tenant1/oauth2/v2.0/token",
            ),
        ] {
            let built =
                build_full(cc(false, region).with_auth(ClientAuth::Secret("p@ss w".into())));
            assert_eq!(built.uri, uri);
            assert_eq!(
                built.body,
                format!("client_id={CLIENT}&client_secret=p%40ss+w&scope={SCOPE_ENC}&grant_type=client_credentials")
            );
            assert_headers(&built.headers, &[]);
            assert_eq!(built.identity, None);
        }
    }

    /// PROTOCOL §2, row "certificate, bearer": the jwt-bearer assertion signed with the
    /// certificate (signed by the flow; here its value), login or regional host, no TLS
    /// certificate.
    #[test]
    fn golden_certificate_bearer() {
        for (region, uri) in [
            (
                None,
                "https://login.microsoftonline.com/tenant1/oauth2/v2.0/token",
            ),
            (
                Some("westus3"),
                "https://westus3.login.microsoft.com/tenant1/oauth2/v2.0/token",
            ),
        ] {
            let built = build_full(cc(false, region).with_auth(ClientAuth::assertion("eyJ.a.b")));
            assert_eq!(built.uri, uri);
            assert_eq!(
                built.body,
                format!("client_id={CLIENT}&client_assertion_type={BEARER_TYPE}&client_assertion=eyJ.a.b&scope={SCOPE_ENC}&grant_type=client_credentials")
            );
            assert_headers(&built.headers, &[]);
            assert_eq!(built.identity, None);
        }
    }

    /// PROTOCOL §2, row "certificate + mTLS PoP": no body credential, `token_type=mtls_pop`,
    /// mtlsauth host, the certificate in TLS.
    #[test]
    fn golden_vanilla_mtls_pop() {
        for (region, uri) in [
            (
                None,
                "https://mtlsauth.microsoft.com/tenant1/oauth2/v2.0/token",
            ),
            (
                Some("westus3"),
                "https://westus3.mtlsauth.microsoft.com/tenant1/oauth2/v2.0/token",
            ),
        ] {
            let built = build_full(
                cc(true, region)
                    .with_auth(ClientAuth::Certificate(identity()))
                    .with_token_type(TokenType::MtlsPop),
            );
            assert_eq!(built.uri, uri);
            assert_eq!(
                built.body,
                format!("client_id={CLIENT}&scope={SCOPE_ENC}&grant_type=client_credentials&token_type=mtls_pop")
            );
            assert_headers(&built.headers, &[]);
            assert_eq!(
                built.identity.as_deref(),
                Some(identity().thumbprint_s256())
            );
        }
    }

    /// PROTOCOL §2, row "assertion provider returning a binding cert": jwt-pop, mtlsauth host,
    /// that certificate in TLS; `token_type=mtls_pop` only when PoP is asked (else Bearer).
    #[test]
    fn golden_assertion_with_binding_pop_and_bearer() {
        let auth = ClientAuth::Assertion {
            assertion: "eyJ.t1.s".into(),
            binding: Some(identity()),
        };
        let built = build_full(
            cc(true, Some("westus3"))
                .with_auth(auth.clone())
                .with_token_type(TokenType::MtlsPop),
        );
        assert_eq!(
            built.uri,
            "https://westus3.mtlsauth.microsoft.com/tenant1/oauth2/v2.0/token"
        );
        assert_eq!(built.body, format!("client_id={CLIENT}&client_assertion_type={POP_TYPE}&client_assertion=eyJ.t1.s&scope={SCOPE_ENC}&grant_type=client_credentials&token_type=mtls_pop"));
        assert_headers(&built.headers, &[]);
        assert_eq!(
            built.identity.as_deref(),
            Some(identity().thumbprint_s256())
        );
        // Bound assertion without PoP: jwt-pop over mTLS, Bearer result (no token_type).
        let built = build_full(cc(true, None).with_auth(auth));
        assert_eq!(
            built.uri,
            "https://mtlsauth.microsoft.com/tenant1/oauth2/v2.0/token"
        );
        assert_eq!(built.body, format!("client_id={CLIENT}&client_assertion_type={POP_TYPE}&client_assertion=eyJ.t1.s&scope={SCOPE_ENC}&grant_type=client_credentials"));
        assert_headers(&built.headers, &[]);
        assert_eq!(
            built.identity.as_deref(),
            Some(identity().thumbprint_s256())
        );
    }

    /// PROTOCOL §2, row "assertion provider, no binding cert": jwt-bearer, login or regional
    /// host, no TLS certificate.
    #[test]
    fn golden_assertion_no_binding() {
        for (region, uri) in [
            (
                None,
                "https://login.microsoftonline.com/tenant1/oauth2/v2.0/token",
            ),
            (
                Some("eastus"),
                "https://eastus.login.microsoft.com/tenant1/oauth2/v2.0/token",
            ),
        ] {
            let built = build_full(cc(false, region).with_auth(ClientAuth::Assertion {
                assertion: "eyJ.x.y".into(),
                binding: None,
            }));
            assert_eq!(built.uri, uri);
            assert_eq!(
                built.body,
                format!("client_id={CLIENT}&client_assertion_type={BEARER_TYPE}&client_assertion=eyJ.x.y&scope={SCOPE_ENC}&grant_type=client_credentials")
            );
            assert_headers(&built.headers, &[]);
            assert_eq!(built.identity, None);
        }
    }

    /// PROTOCOL §2, row "secret / plain assertion + PoP asked": `mtls_certificate_not_provided`,
    /// whatever endpoint the request was resolved for.
    #[test]
    fn pop_without_certificate_is_refused() {
        for mtls in [false, true] {
            for auth in [
                ClientAuth::Secret("s".into()),
                ClientAuth::assertion("eyJ.a.b"),
                ClientAuth::None,
            ] {
                let err = cc(mtls, None)
                    .with_auth(auth)
                    .with_token_type(TokenType::MtlsPop)
                    .into_transport_request()
                    .unwrap_err();
                assert_eq!(err.code(), &ErrorCode::MTLS_CERTIFICATE_NOT_PROVIDED);
            }
        }
    }

    #[test]
    fn pop_needs_tenanted_authority() {
        for tenant in ["common", "organizations"] {
            let endpoint =
                Authority::parse(&format!("https://login.microsoftonline.com/{tenant}/"))
                    .unwrap()
                    .token_endpoint(&EndpointOptions::mtls())
                    .unwrap();
            let err = TokenRequest::client_credentials(endpoint, CLIENT, [SCOPE])
                .with_auth(ClientAuth::Certificate(identity()))
                .with_token_type(TokenType::MtlsPop)
                .into_transport_request()
                .unwrap_err();
            assert_eq!(err.code(), &ErrorCode::MISSING_TENANTED_AUTHORITY);
        }
    }

    #[test]
    fn certificate_only_to_mtls_endpoints() {
        let err = cc(false, None)
            .with_auth(ClientAuth::Certificate(identity()))
            .with_token_type(TokenType::MtlsPop)
            .into_transport_request()
            .unwrap_err();
        assert_eq!(err.code(), &ErrorCode::INVALID_ARGUMENT);
        let err = cc(true, None)
            .with_auth(ClientAuth::Secret("s".into()))
            .into_transport_request()
            .unwrap_err();
        assert_eq!(err.code(), &ErrorCode::INVALID_ARGUMENT);
        let err = cc(true, None)
            .with_auth(ClientAuth::Certificate(identity()))
            .into_transport_request()
            .unwrap_err();
        assert_eq!(err.code(), &ErrorCode::INVALID_ARGUMENT);
    }

    #[test]
    fn golden_fmi_claims_and_extras() {
        let Built {
            uri,
            body,
            headers,
            identity: tls,
        } = build_full(
            cc(false, None)
                .with_auth(ClientAuth::assertion("a.b.c"))
                .with_claims(Some(
                    r#"{"access_token":{"nbf":{"essential":true,"value":"1"}}}"#.into(),
                ))
                .with_client_capabilities(["cp1"])
                .with_fmi_path(Some("agent-app-id".into()))
                .with_extra_body_parameter("dc", "ESTSR-PUB-WUS3")
                .with_extra_query_parameter("slice", "TestSlice")
                .with_extra_header("x-custom", "1"),
        );
        assert_eq!(
            uri,
            "https://login.microsoftonline.com/tenant1/oauth2/v2.0/token?slice=TestSlice"
        );
        let expected_claims = r#"{"access_token":{"nbf":{"essential":true,"value":"1"},"xms_cc":{"values":["cp1"]}}}"#;
        let claims_enc: String =
            url::form_urlencoded::byte_serialize(expected_claims.as_bytes()).collect();
        assert_eq!(body, format!("client_id={CLIENT}&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=a.b.c&scope=https%3A%2F%2Fvault.azure.net%2F.default&claims={claims_enc}&grant_type=client_credentials&fmi_path=agent-app-id&dc=ESTSR-PUB-WUS3"));
        assert_headers(&headers, &[("x-custom", "1")]);
        assert_eq!(tls, None);
    }

    #[test]
    fn golden_user_fic_by_upn_and_oid() {
        let oid = "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE";
        let request = |user| {
            TokenRequest::user_fic(
                endpoint(false, None),
                CLIENT,
                Secret::new("t2.jwt.sig"),
                user,
                ["https://graph.microsoft.com/User.Read"],
            )
            .with_auth(ClientAuth::assertion("t1.jwt.sig"))
        };
        let prefix = format!("client_id={CLIENT}&client_assertion_type={BEARER_TYPE}&client_assertion=t1.jwt.sig&scope=https%3A%2F%2Fgraph.microsoft.com%2FUser.Read+openid+offline_access+profile&grant_type=user_fic&user_federated_identity_credential=t2.jwt.sig");
        let built = build_full(request(UserIdentifier::Username(
            "alice@contoso.com".into(),
        )));
        assert_eq!(
            built.uri,
            "https://login.microsoftonline.com/tenant1/oauth2/v2.0/token"
        );
        assert_eq!(
            built.body,
            format!("{prefix}&username=alice%40contoso.com&client_info=1")
        );
        assert_headers(
            &built.headers,
            &[("x-anchormailbox", "upn:alice@contoso.com")],
        );
        assert_eq!(built.identity, None);

        let user = UserIdentifier::from_parts(None, Some(oid)).unwrap();
        let built = build_full(request(user));
        assert_eq!(
            built.body,
            format!("{prefix}&user_id=aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee&client_info=1")
        );
        assert_headers(
            &built.headers,
            &[(
                "x-anchormailbox",
                "oid:aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee@tenant1",
            )],
        );
        assert_eq!(built.identity, None);
    }

    /// The UPN is normalised once: the body and `x-anchormailbox` carry the same value.
    #[test]
    fn user_fic_username_is_trimmed_in_body_and_anchor_alike() {
        let built = build_full(
            TokenRequest::user_fic(
                endpoint(false, None),
                CLIENT,
                Secret::new("t2"),
                UserIdentifier::Username(" \talice@contoso.com  ".into()),
                ["s"],
            )
            .with_auth(ClientAuth::assertion("t1")),
        );
        assert!(
            built.body.contains("&username=alice%40contoso.com&"),
            "{}",
            built.body
        );
        assert_eq!(built.headers["x-anchormailbox"], "upn:alice@contoso.com");
        assert_eq!(
            UserIdentifier::Username(" bob@x ".into()).anchor_mailbox("t"),
            "upn:bob@x"
        );
    }

    #[test]
    fn golden_refresh_token() {
        let built = build_full(
            TokenRequest::refresh_token(
                endpoint(false, None),
                CLIENT,
                Secret::new("rt-1"),
                ["https://graph.microsoft.com/.default"],
            )
            .with_auth(ClientAuth::assertion("t1")),
        );
        assert_eq!(
            built.uri,
            "https://login.microsoftonline.com/tenant1/oauth2/v2.0/token"
        );
        assert_eq!(built.body, format!("client_id={CLIENT}&client_assertion_type={BEARER_TYPE}&client_assertion=t1&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default+openid+offline_access+profile&grant_type=refresh_token&refresh_token=rt-1&client_info=1"));
        assert_headers(&built.headers, &[]);
        assert_eq!(built.identity, None);
    }

    #[test]
    fn invalid_combinations_have_codes() {
        let user_fic = |user| {
            TokenRequest::user_fic(
                endpoint(false, None),
                CLIENT,
                Secret::new("t2"),
                user,
                ["s"],
            )
            .with_auth(ClientAuth::assertion("t1"))
        };
        let cases: Vec<(TokenRequest, ErrorCode)> = vec![
            (
                cc(false, None).with_auth(ClientAuth::assertion("  ")),
                ErrorCode::INVALID_CLIENT_ASSERTION,
            ),
            (
                cc(false, None).with_auth(ClientAuth::Secret("".into())),
                ErrorCode::INVALID_ARGUMENT,
            ),
            (
                TokenRequest::client_credentials(endpoint(false, None), "", [SCOPE]),
                ErrorCode::INVALID_ARGUMENT,
            ),
            (
                TokenRequest::client_credentials(
                    endpoint(false, None),
                    CLIENT,
                    Vec::<String>::new(),
                ),
                ErrorCode::INVALID_ARGUMENT,
            ),
            (
                TokenRequest::client_credentials(endpoint(false, None), CLIENT, [SCOPE, "openid"]),
                ErrorCode::RESERVED_SCOPE,
            ),
            (
                TokenRequest::client_credentials(endpoint(false, None), CLIENT, [SCOPE, ""]),
                ErrorCode::INVALID_ARGUMENT,
            ),
            (
                TokenRequest::client_credentials(endpoint(false, None), CLIENT, [" ", SCOPE]),
                ErrorCode::INVALID_ARGUMENT,
            ),
            (
                TokenRequest::user_fic(
                    endpoint(false, None),
                    CLIENT,
                    Secret::new("t2"),
                    UserIdentifier::Username("a@b".into()),
                    ["s", "\t"],
                )
                .with_auth(ClientAuth::assertion("t1")),
                ErrorCode::INVALID_ARGUMENT,
            ),
            (
                user_fic(UserIdentifier::Username("a@b".into())).with_fmi_path(Some("x".into())),
                ErrorCode::INVALID_ARGUMENT,
            ),
            (
                cc(false, None).with_fmi_path(Some(" ".into())),
                ErrorCode::INVALID_ARGUMENT,
            ),
            (
                user_fic(UserIdentifier::Username(" ".into())),
                ErrorCode::USER_IDENTIFIER_REQUIRED,
            ),
            (
                TokenRequest::user_fic(
                    endpoint(false, None),
                    CLIENT,
                    Secret::new(""),
                    UserIdentifier::Username("a@b".into()),
                    ["s"],
                ),
                ErrorCode::INVALID_CLIENT_ASSERTION,
            ),
            (
                TokenRequest::user_fic(
                    endpoint(false, None),
                    CLIENT,
                    Secret::new("t2"),
                    UserIdentifier::Username("a@b".into()),
                    ["offline_access"],
                ),
                ErrorCode::RESERVED_SCOPE,
            ),
            (
                cc(false, None).with_claims(Some("[1]".into())),
                ErrorCode::INVALID_CLAIMS,
            ),
            (
                cc(false, None).with_claims(Some("{oops".into())),
                ErrorCode::INVALID_CLAIMS,
            ),
            (
                cc(false, None).with_extra_body_parameter("client_id", "other"),
                ErrorCode::INVALID_ARGUMENT,
            ),
            (
                cc(false, None).with_extra_header("bad header", "1"),
                ErrorCode::INVALID_ARGUMENT,
            ),
        ];
        for (request, code) in cases {
            let debug = format!("{request:?}");
            let err = request.into_transport_request().unwrap_err();
            assert_eq!(err.code(), &code, "{debug}");
        }
        assert_eq!(
            UserIdentifier::from_parts(Some("a@b"), Some(CID))
                .unwrap_err()
                .code(),
            &ErrorCode::USER_IDENTIFIER_REQUIRED
        );
        assert_eq!(
            UserIdentifier::from_parts(None, Some("  "))
                .unwrap_err()
                .code(),
            &ErrorCode::USER_IDENTIFIER_REQUIRED
        );
        assert_eq!(
            UserIdentifier::from_parts(None, Some("not-a-guid"))
                .unwrap_err()
                .code(),
            &ErrorCode::INVALID_ARGUMENT
        );
    }

    #[test]
    fn the_built_request_debug_shows_no_secret() {
        let built = cc(false, None)
            .with_auth(ClientAuth::Secret("TOPSECRET".into()))
            .with_extra_query_parameter("q", "QUERYVALUE")
            .into_transport_request()
            .unwrap();
        let debug = format!("{built:?}");
        assert!(
            !debug.contains("TOPSECRET") && !debug.contains("QUERYVALUE"),
            "{debug}"
        );
        assert!(
            debug.contains("login.microsoftonline.com/tenant1/oauth2/v2.0/token"),
            "{debug}"
        );
        assert!(debug.contains("body_len"), "{debug}");
    }

    #[test]
    fn debug_redacts_secrets() {
        let request = TokenRequest::user_fic(
            endpoint(false, None),
            CLIENT,
            Secret::new("T2SECRET"),
            UserIdentifier::Username("u@x".into()),
            ["s"],
        )
        .with_auth(ClientAuth::Assertion {
            assertion: "T1SECRET".into(),
            binding: Some(identity()),
        });
        let debug = format!("{request:?}");
        assert!(
            !debug.contains("T1SECRET") && !debug.contains("T2SECRET"),
            "{debug}"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Whatever the values, the body decodes back to exactly the parameters sent, in order.
        #[test]
        fn form_encoding_round_trips(
            client_id in "[^\\s]{1,40}",
            secret in "\\PC{1,60}",
            scope in "[a-zA-Z0-9:/._~%+&=?#-]{1,60}",
            fmi in "\\PC{1,30}",
            extra in proptest::collection::vec(("x_[a-z]{1,8}", "\\PC{0,20}"), 0..4),
        ) {
            proptest::prop_assume!(!secret.trim().is_empty() && !fmi.trim().is_empty() && !scope.trim().is_empty());
            let mut request = TokenRequest::client_credentials(endpoint(false, None), client_id.clone(), [scope.clone()])
                .with_auth(ClientAuth::Secret(Secret::new(secret.clone())))
                .with_fmi_path(Some(fmi.clone()));
            let mut seen = std::collections::HashSet::new();
            for (name, value) in &extra {
                if seen.insert(name.clone()) {
                    request = request.with_extra_body_parameter(name.clone(), value.clone());
                }
            }
            let expected: Vec<(String, String)> = request
                .form_parameters()
                .unwrap()
                .into_iter()
                .map(|(n, v)| (n, v.expose().to_string()))
                .collect();
            let sent = request.into_transport_request().unwrap();
            let decoded: Vec<(String, String)> = url::form_urlencoded::parse(sent.request.body())
                .map(|(n, v)| (n.into_owned(), v.into_owned()))
                .collect();
            proptest::prop_assert_eq!(&decoded, &expected);
            proptest::prop_assert_eq!(&decoded[0], &("client_id".to_string(), client_id));
            proptest::prop_assert!(decoded.contains(&("client_secret".to_string(), secret)));
            proptest::prop_assert!(decoded.contains(&("fmi_path".to_string(), fmi.trim().to_string())));
        }
    }

    #[test]
    fn claims_merge() {
        assert_eq!(merge_claims(None, &[]).unwrap(), None);
        assert_eq!(merge_claims(Some("  "), &[]).unwrap(), None);
        assert_eq!(
            merge_claims(None, &["cp1".into(), "cp2".into()])
                .unwrap()
                .unwrap(),
            r#"{"access_token":{"xms_cc":{"values":["cp1","cp2"]}}}"#
        );
        assert_eq!(
            merge_claims(Some(r#"{"id_token":{"a":1}}"#), &[])
                .unwrap()
                .unwrap(),
            r#"{"id_token":{"a":1}}"#
        );
        assert_eq!(
            merge_claims(Some(r#"{"access_token":"x"}"#), &["cp1".into()])
                .unwrap_err()
                .code(),
            &ErrorCode::INVALID_CLAIMS
        );
    }
}
