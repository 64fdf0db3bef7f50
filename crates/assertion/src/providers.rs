//! Simple providers: a fixed string, an async closure, and a binding certificate added to any
//! provider.

use std::fmt;
use std::future::Future;

use async_trait::async_trait;
use fic_oauth_core::{ClientIdentity, Error, Secret};

use crate::assertion::{AssertionProvider, AssertionRequest, ClientAssertion, IntoClientAssertion};
use crate::codes;

/// A fixed assertion string, sent as jwt-bearer (e.g. a token obtained elsewhere).
///
/// It is sent as it is, for every request: it is the caller's job to replace the provider
/// before the assertion expires.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), fic_oauth_core::Error> {
/// use fic_assertion::{AssertionProvider, AssertionRequest, StaticAssertion, JWT_BEARER};
///
/// let provider = StaticAssertion::new("eyJhbGciOi...")?;
/// let assertion = provider.assertion(&AssertionRequest::new("client", "https://login.microsoftonline.com/t/oauth2/v2.0/token")).await?;
/// assert_eq!(assertion.assertion_type(), JWT_BEARER);
/// assert_eq!(format!("{provider:?}"), "StaticAssertion { value: Secret(***) }");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct StaticAssertion {
    assertion: ClientAssertion,
}

impl StaticAssertion {
    /// A provider always returning `value`. Errors with `invalid_client_assertion` when blank.
    pub fn new(value: impl Into<Secret>) -> Result<Self, Error> {
        Ok(Self {
            assertion: ClientAssertion::new(value)?,
        })
    }
}

#[async_trait]
impl AssertionProvider for StaticAssertion {
    async fn assertion(&self, _request: &AssertionRequest) -> Result<ClientAssertion, Error> {
        Ok(self.assertion.clone())
    }
}

impl fmt::Debug for StaticAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticAssertion")
            .field("value", self.assertion.value())
            .finish()
    }
}

/// An async closure as assertion provider.
///
/// The closure receives the [`AssertionRequest`] and returns a [`ClientAssertion`] (possibly
/// bound to a certificate: jwt-pop), or a `String` / [`Secret`] (jwt-bearer). A blank result is
/// `invalid_client_assertion`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), fic_oauth_core::Error> {
/// use fic_assertion::{AssertionProvider, AssertionRequest, CallbackAssertion};
///
/// let provider = CallbackAssertion::new(|request: AssertionRequest| async move {
///     // e.g. ask another credential for a token meant for `request.token_endpoint`
///     Ok::<_, fic_oauth_core::Error>(format!("assertion-for-{}", request.client_id))
/// });
/// let assertion = provider.assertion(&AssertionRequest::new("app", "https://login.microsoftonline.com/t/oauth2/v2.0/token")).await?;
/// assert_eq!(assertion.value().expose(), "assertion-for-app");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct CallbackAssertion<F> {
    callback: F,
}

impl<F> CallbackAssertion<F> {
    /// A provider calling `callback` for every assertion.
    pub fn new<Fut, T>(callback: F) -> Self
    where
        F: Fn(AssertionRequest) -> Fut + Send + Sync,
        Fut: Future<Output = Result<T, Error>> + Send,
        T: IntoClientAssertion,
    {
        Self { callback }
    }
}

#[async_trait]
impl<F, Fut, T> AssertionProvider for CallbackAssertion<F>
where
    F: Fn(AssertionRequest) -> Fut + Send + Sync,
    Fut: Future<Output = Result<T, Error>> + Send,
    T: IntoClientAssertion,
{
    async fn assertion(&self, request: &AssertionRequest) -> Result<ClientAssertion, Error> {
        (self.callback)(request.clone())
            .await?
            .into_client_assertion()
    }
}

impl<F> fmt::Debug for CallbackAssertion<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackAssertion").finish_non_exhaustive()
    }
}

/// Any provider's assertion bound to a certificate: the result is jwt-pop, and the token
/// request is sent over mTLS with `binding` (FIC Leg 2 with mTLS, PROTOCOL §2 and §7).
///
/// If the inner provider returns a binding of its own, it must be the same certificate
/// (otherwise `conflicting_binding`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use fic_assertion::{load, AssertionProvider, AssertionRequest, BoundAssertion, StaticAssertion, JWT_POP};
///
/// let generated = rcgen::generate_simple_self_signed(vec!["client.example".to_owned()])?;
/// let pem = format!("{}{}", generated.cert.pem(), generated.signing_key.serialize_pem());
/// let binding = load::from_pem(pem.as_bytes())?;
///
/// let provider = BoundAssertion::new(StaticAssertion::new("leg-1-token")?, binding.clone());
/// let assertion = provider.assertion(&AssertionRequest::new("app", "https://mtlsauth.microsoft.com/t/oauth2/v2.0/token")).await?;
/// assert_eq!(assertion.assertion_type(), JWT_POP);
/// assert!(assertion.binding().is_some_and(|b| b.same_certificate(&binding)));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct BoundAssertion<P> {
    inner: P,
    binding: ClientIdentity,
}

impl<P: AssertionProvider> BoundAssertion<P> {
    /// Binds the assertions of `inner` to `binding`.
    pub fn new(inner: P, binding: ClientIdentity) -> Self {
        Self { inner, binding }
    }

    /// The binding certificate.
    pub fn binding(&self) -> &ClientIdentity {
        &self.binding
    }

    /// The wrapped provider.
    pub fn inner(&self) -> &P {
        &self.inner
    }
}

#[async_trait]
impl<P: AssertionProvider> AssertionProvider for BoundAssertion<P> {
    async fn assertion(&self, request: &AssertionRequest) -> Result<ClientAssertion, Error> {
        let (value, inner_binding) = self.inner.assertion(request).await?.into_parts();
        if let Some(inner_binding) = inner_binding {
            if !inner_binding.same_certificate(&self.binding) {
                return Err(Error::new(
                    codes::CONFLICTING_BINDING,
                    format!(
                        "the wrapped assertion provider returned its own binding certificate (x5t#S256 {}), not {}",
                        inner_binding.thumbprint_s256(),
                        self.binding.thumbprint_s256()
                    ),
                ));
            }
        }
        ClientAssertion::bound(value, self.binding.clone())
    }
}
