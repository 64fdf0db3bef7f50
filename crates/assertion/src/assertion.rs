//! The assertion-provider seam: [`AssertionProvider`], [`AssertionRequest`], [`ClientAssertion`].

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use fic_oauth_core::{AuthorityKind, ClientIdentity, Error, Secret};
use uuid::Uuid;

use crate::codes;

/// `client_assertion_type` of an assertion sent without a TLS client certificate (the one
/// constant of `fic-oauth-core`, re-exported).
pub use fic_oauth_core::request::JWT_BEARER;

/// `client_assertion_type` of an assertion sent over mTLS with its binding certificate (the one
/// constant of `fic-oauth-core`, re-exported).
pub use fic_oauth_core::request::JWT_POP;

/// What the token request an assertion is made for looks like (PROTOCOL §7): everything a
/// provider may need to build or choose the assertion.
///
/// Build it with [`AssertionRequest::new`] and the `with_*` methods; read the public fields.
///
/// ```
/// use fic_assertion::AssertionRequest;
/// use fic_oauth_core::AuthorityKind;
///
/// let request = AssertionRequest::new(
///     "11111111-2222-3333-4444-555555555555",
///     "https://westus3.mtlsauth.microsoft.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
/// )
/// .with_tenant_id("contoso.onmicrosoft.com")
/// .with_authority("https://login.microsoftonline.com/contoso.onmicrosoft.com/", AuthorityKind::Aad)
/// .with_fmi_path("agent-app-id");
/// assert_eq!(request.fmi_path.as_deref(), Some("agent-app-id"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AssertionRequest {
    /// The client (application) id the assertion authenticates: `iss` and `sub`.
    pub client_id: String,
    /// The tenant of the request, when known.
    pub tenant_id: Option<String>,
    /// The authority URL (e.g. `https://login.microsoftonline.com/{tenant}/`), when known.
    pub authority: Option<String>,
    /// The kind of the authority; decides how certificate-signed assertions look (PS256 +
    /// `x5t#S256` for AAD, B2C, CIAM; RS256 + `x5t` for ADFS, dSTS and generic authorities).
    pub authority_kind: AuthorityKind,
    /// The token endpoint actually used, regional or mtlsauth host included: the `aud`.
    pub token_endpoint: String,
    /// The claims (challenge merged with client capabilities) of the request, as JSON.
    pub claims: Option<String>,
    /// The client capabilities (`cp1`...) of the application.
    pub client_capabilities: Vec<String>,
    /// The FMI path meant for the assertion (FMI / agent identity flows).
    pub fmi_path: Option<String>,
    /// The correlation id (`client-request-id`) of the token request.
    pub correlation_id: Uuid,
}

impl AssertionRequest {
    /// A request for `client_id` at `token_endpoint`, for an AAD authority, with a new random
    /// correlation id and nothing else.
    pub fn new(client_id: impl Into<String>, token_endpoint: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            tenant_id: None,
            authority: None,
            authority_kind: AuthorityKind::Aad,
            token_endpoint: token_endpoint.into(),
            claims: None,
            client_capabilities: Vec::new(),
            fmi_path: None,
            correlation_id: Uuid::new_v4(),
        }
    }

    /// Sets the tenant id.
    #[must_use]
    pub fn with_tenant_id(mut self, tenant_id: impl Into<String>) -> Self {
        self.tenant_id = Some(tenant_id.into());
        self
    }

    /// Sets the authority URL and its kind.
    #[must_use]
    pub fn with_authority(mut self, authority: impl Into<String>, kind: AuthorityKind) -> Self {
        self.authority = Some(authority.into());
        self.authority_kind = kind;
        self
    }

    /// Sets only the authority kind.
    #[must_use]
    pub fn with_authority_kind(mut self, kind: AuthorityKind) -> Self {
        self.authority_kind = kind;
        self
    }

    /// Sets the claims JSON.
    #[must_use]
    pub fn with_claims(mut self, claims: impl Into<String>) -> Self {
        self.claims = Some(claims.into());
        self
    }

    /// Sets the client capabilities.
    #[must_use]
    pub fn with_client_capabilities<I, S>(mut self, capabilities: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.client_capabilities = capabilities.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the FMI path meant for the assertion.
    #[must_use]
    pub fn with_fmi_path(mut self, fmi_path: impl Into<String>) -> Self {
        self.fmi_path = Some(fmi_path.into());
        self
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, correlation_id: Uuid) -> Self {
        self.correlation_id = correlation_id;
        self
    }
}

/// A client assertion and, optionally, the certificate it is bound to.
///
/// With a binding the token request is sent over mTLS with that certificate, to the mtlsauth
/// host, with `client_assertion_type` [`JWT_POP`]; without one it is [`JWT_BEARER`]. The value
/// is never empty (the constructors refuse blank values with `invalid_client_assertion`) and
/// never printed by `Debug`.
///
/// ```
/// use fic_assertion::{ClientAssertion, JWT_BEARER};
///
/// let assertion = ClientAssertion::new("eyJhbGciOi...")?;
/// assert_eq!(assertion.assertion_type(), JWT_BEARER);
/// assert!(!format!("{assertion:?}").contains("eyJ"));
/// assert_eq!(ClientAssertion::new("  ").unwrap_err().code(), &fic_assertion::codes::INVALID_CLIENT_ASSERTION);
/// # Ok::<(), fic_oauth_core::Error>(())
/// ```
#[derive(Clone)]
pub struct ClientAssertion {
    value: Secret,
    binding: Option<ClientIdentity>,
}

impl ClientAssertion {
    /// A jwt-bearer assertion. Errors with `invalid_client_assertion` when blank.
    pub fn new(value: impl Into<Secret>) -> Result<Self, Error> {
        let value = value.into();
        if value.is_blank() {
            return Err(Error::new(
                codes::INVALID_CLIENT_ASSERTION,
                "the client assertion is empty; the assertion provider must return a signed JWT",
            ));
        }
        Ok(Self {
            value,
            binding: None,
        })
    }

    /// A jwt-pop assertion bound to `binding`. Errors with `invalid_client_assertion` when
    /// blank.
    pub fn bound(value: impl Into<Secret>, binding: ClientIdentity) -> Result<Self, Error> {
        Ok(Self::new(value)?.with_binding(binding))
    }

    /// Binds the assertion to a certificate (making it jwt-pop).
    #[must_use]
    pub fn with_binding(mut self, binding: ClientIdentity) -> Self {
        self.binding = Some(binding);
        self
    }

    /// The assertion (a JWT). Do not log it.
    pub fn value(&self) -> &Secret {
        &self.value
    }

    /// The binding certificate, if any: present it as the TLS client certificate.
    pub fn binding(&self) -> Option<&ClientIdentity> {
        self.binding.as_ref()
    }

    /// [`JWT_POP`] when bound to a certificate, [`JWT_BEARER`] otherwise.
    pub fn assertion_type(&self) -> &'static str {
        if self.binding.is_some() {
            JWT_POP
        } else {
            JWT_BEARER
        }
    }

    /// The value and the binding.
    pub fn into_parts(self) -> (Secret, Option<ClientIdentity>) {
        (self.value, self.binding)
    }
}

impl fmt::Debug for ClientAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAssertion")
            .field("value", &self.value)
            .field("assertion_type", &self.assertion_type())
            .field("binding", &self.binding)
            .finish()
    }
}

/// What an assertion callback may return: a [`ClientAssertion`], or a bare `String` / `Secret`
/// (a jwt-bearer assertion).
pub trait IntoClientAssertion {
    /// Converts into a (validated) assertion.
    fn into_client_assertion(self) -> Result<ClientAssertion, Error>;
}

impl IntoClientAssertion for ClientAssertion {
    fn into_client_assertion(self) -> Result<ClientAssertion, Error> {
        Ok(self)
    }
}

impl IntoClientAssertion for String {
    fn into_client_assertion(self) -> Result<ClientAssertion, Error> {
        ClientAssertion::new(self)
    }
}

impl IntoClientAssertion for Secret {
    fn into_client_assertion(self) -> Result<ClientAssertion, Error> {
        ClientAssertion::new(self)
    }
}

/// Supplies the `client_assertion` of token requests, and optionally the certificate the
/// request is bound to (jwt-pop).
///
/// Called for every token request that reaches the network (never on a cache hit of the
/// token). Implementations: [`CertificateAssertion`](crate::CertificateAssertion) (signs a
/// jwt-bearer JWT with a certificate), [`StaticAssertion`](crate::StaticAssertion),
/// [`CallbackAssertion`](crate::CallbackAssertion) (an async closure),
/// [`FileAssertion`](crate::FileAssertion) (a federated token file) and
/// [`BoundAssertion`](crate::BoundAssertion) (adds a binding certificate to any of them). Leg 2 of
/// a FIC two-leg flow is a provider returning the Leg-1 token.
///
/// ```
/// use async_trait::async_trait;
/// use fic_assertion::{AssertionProvider, AssertionRequest, ClientAssertion};
/// use fic_oauth_core::Error;
///
/// #[derive(Debug)]
/// struct FromVault;
///
/// #[async_trait]
/// impl AssertionProvider for FromVault {
///     async fn assertion(&self, request: &AssertionRequest) -> Result<ClientAssertion, Error> {
///         // Fetch a token meant for `request.token_endpoint`...
///         ClientAssertion::new(format!("token-for-{}", request.client_id))
///     }
/// }
/// ```
#[async_trait]
pub trait AssertionProvider: Send + Sync + fmt::Debug {
    /// The assertion for this token request.
    async fn assertion(&self, request: &AssertionRequest) -> Result<ClientAssertion, Error>;
}

#[async_trait]
impl<T: AssertionProvider + ?Sized> AssertionProvider for Arc<T> {
    async fn assertion(&self, request: &AssertionRequest) -> Result<ClientAssertion, Error> {
        (**self).assertion(request).await
    }
}

#[async_trait]
impl<T: AssertionProvider + ?Sized> AssertionProvider for Box<T> {
    async fn assertion(&self, request: &AssertionRequest) -> Result<ClientAssertion, Error> {
        (**self).assertion(request).await
    }
}
