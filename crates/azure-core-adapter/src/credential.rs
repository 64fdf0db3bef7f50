//! [`AzureCoreCredential`]: a fic-rs credential as an `azure_core` `TokenCredential`.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use azure_core::credentials::{AccessToken as AzureAccessToken, TokenRequestOptions};
use azure_core::error::ErrorKind;
use azure_core::time::OffsetDateTime;
use fic_oauth_core::{HttpTransport, TokenCredential};

use crate::bindings::TokenBindings;
use crate::error::to_azure_error;
use crate::http_client::FicHttpClient;

/// Any fic-rs [`TokenCredential`] as an [`azure_core::credentials::TokenCredential`].
///
/// - **Scopes** are passed through as they are.
/// - **Options.** `azure_core`'s `TokenRequestOptions` only carries the call's `Context`. When
///   that context holds a [`fic_oauth_core::TokenRequestOptions`] (claims challenge, tenant,
///   force refresh, correlation id), it is used; otherwise the defaults (the credential's own
///   cache and tenant).
/// - **Token.** The value and its expiry (as an `OffsetDateTime`, whole seconds). `azure_core`'s
///   token has no type: an mtls_pop token reaches it as a plain string, and its binding
///   certificate is recorded in this credential's [`TokenBindings`] for a linked
///   [`FicHttpClient`] to present (see the [crate] documentation).
/// - **Errors** become `azure_core` errors of kind `Credential` carrying our code, the AADSTS
///   number and the original error as source ([`to_azure_error`](crate::to_azure_error)).
///
/// Caching is the wrapped credential's: `azure_core`'s bearer policy also keeps its last token
/// until 5 minutes before expiry, then asks again and gets the fic-rs cache's answer.
///
/// ```
/// use std::sync::Arc;
/// use fic_azure_core::AzureCoreCredential;
/// use fic_flows::ConfidentialClient;
///
/// let client = ConfidentialClient::builder("11111111-1111-1111-1111-111111111111")
///     .authority("https://login.microsoftonline.com/contoso.onmicrosoft.com")
///     .client_secret("secret")
///     .build()?;
/// let credential: Arc<dyn azure_core::credentials::TokenCredential> =
///     Arc::new(AzureCoreCredential::new(client));
/// # Ok::<(), fic_oauth_core::Error>(())
/// ```
#[derive(Clone)]
pub struct AzureCoreCredential {
    credential: Arc<dyn TokenCredential>,
    bindings: TokenBindings,
}

impl AzureCoreCredential {
    /// Adapts `credential`, with a registry of its own for the tokens it binds.
    pub fn new(credential: impl TokenCredential + 'static) -> Self {
        Self::from_arc(Arc::new(credential))
    }

    /// Adapts a shared credential.
    pub fn from_arc(credential: Arc<dyn TokenCredential>) -> Self {
        Self {
            credential,
            bindings: TokenBindings::new(),
        }
    }

    /// Records bound tokens in `bindings` instead (to share one registry, and one
    /// [`FicHttpClient`], between several credentials).
    #[must_use]
    pub fn with_bindings(mut self, bindings: TokenBindings) -> Self {
        self.bindings = bindings;
        self
    }

    /// The registry this credential records its bound tokens in.
    pub fn bindings(&self) -> &TokenBindings {
        &self.bindings
    }

    /// The wrapped fic-rs credential.
    pub fn inner(&self) -> &Arc<dyn TokenCredential> {
        &self.credential
    }

    /// An `azure_core` HTTP client over `transport` that presents the binding certificate of the
    /// tokens this credential hands out (it shares this credential's [`TokenBindings`]).
    pub fn http_client(&self, transport: Arc<dyn HttpTransport>) -> FicHttpClient {
        FicHttpClient::new(transport).with_bindings(self.bindings.clone())
    }
}

impl fmt::Debug for AzureCoreCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureCoreCredential")
            .field("credential", &self.credential)
            .field("bindings", &self.bindings)
            .finish()
    }
}

#[async_trait]
impl azure_core::credentials::TokenCredential for AzureCoreCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AzureAccessToken> {
        let ours = options
            .as_ref()
            .and_then(|o| {
                o.method_options
                    .context
                    .value::<fic_oauth_core::TokenRequestOptions>()
            })
            .cloned()
            .unwrap_or_default();
        let token = self
            .credential
            .get_token(scopes, &ours)
            .await
            .map_err(to_azure_error)?;
        let expires_on = offset_date_time(token.expires_on)?;
        self.bindings.record(&token);
        Ok(AzureAccessToken::new(
            azure_core::credentials::Secret::new(token.token.expose().to_owned()),
            expires_on,
        ))
    }
}

/// `time` as an `OffsetDateTime` in UTC, truncated to whole seconds; an error (not a panic)
/// outside the years `OffsetDateTime` can hold.
fn offset_date_time(time: SystemTime) -> azure_core::Result<OffsetDateTime> {
    let seconds = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).ok(),
        Err(before) => i64::try_from(before.duration().as_secs()).ok().map(|s| -s),
    };
    seconds
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(|| {
            azure_core::Error::with_message(
                ErrorKind::DataConversion,
                "the token's expiry is out of the range of OffsetDateTime",
            )
        })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use azure_core::credentials::TokenCredential as _;
    use azure_core::http::{ClientMethodOptions, Context};
    use fic_oauth_core::{AccessToken, Error, ErrorCode, Secret, TokenType};

    use super::*;

    /// Answers with a fixed token or error; remembers what it was asked.
    #[derive(Debug)]
    struct Fixed {
        answer: Result<AccessToken, Error>,
        asked: Mutex<Vec<(Vec<String>, fic_oauth_core::TokenRequestOptions)>>,
    }

    #[async_trait]
    impl TokenCredential for Fixed {
        async fn get_token(
            &self,
            scopes: &[&str],
            options: &fic_oauth_core::TokenRequestOptions,
        ) -> Result<AccessToken, Error> {
            self.asked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((
                    scopes.iter().map(ToString::to_string).collect(),
                    options.clone(),
                ));
            self.answer.clone()
        }
    }

    fn fixed(answer: Result<AccessToken, Error>) -> Arc<Fixed> {
        Arc::new(Fixed {
            answer,
            asked: Mutex::new(Vec::new()),
        })
    }

    #[tokio::test]
    async fn passes_scopes_and_options_from_the_context_and_converts_the_expiry() {
        let expires = UNIX_EPOCH + Duration::from_millis(4_102_444_800_900);
        let inner = fixed(Ok(AccessToken::new(
            Secret::new("tok"),
            TokenType::Bearer,
            expires,
        )));
        let credential = AzureCoreCredential::from_arc(inner.clone());
        let token = credential
            .get_token(&["https://graph.microsoft.com/.default"], None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(token.token.secret(), "tok");
        assert_eq!(token.expires_on.unix_timestamp(), 4_102_444_800);
        assert!(credential.bindings().is_empty());

        let ours = fic_oauth_core::TokenRequestOptions::default()
            .with_claims(r#"{"access_token":{"nbf":{"essential":true}}}"#)
            .with_tenant_id("other-tenant")
            .with_force_refresh(true);
        let options = TokenRequestOptions {
            method_options: ClientMethodOptions {
                context: Context::new().with_value(ours),
            },
        };
        credential
            .get_token(&["a/.default", "b"], Some(options))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let asked = inner
            .asked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        assert_eq!(asked[0].0, ["https://graph.microsoft.com/.default"]);
        assert!(asked[0].1.claims.is_none() && !asked[0].1.force_refresh);
        assert_eq!(asked[1].0, ["a/.default", "b"]);
        assert_eq!(
            asked[1].1.claims.as_deref(),
            Some(r#"{"access_token":{"nbf":{"essential":true}}}"#)
        );
        assert_eq!(asked[1].1.tenant_id.as_deref(), Some("other-tenant"));
        assert!(asked[1].1.force_refresh);
    }

    #[tokio::test]
    async fn records_bound_tokens() {
        let token = crate::bindings::tests::bound("pop-token", 7, Duration::from_secs(600));
        let thumbprint = token.binding_thumbprint().map(ToOwned::to_owned);
        let credential = AzureCoreCredential::from_arc(fixed(Ok(token)));
        credential
            .get_token(&["https://vault.azure.net/.default"], None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let found = credential.bindings().lookup("pop-token");
        assert_eq!(
            found.map(|b| b.identity.thumbprint_s256().to_owned()),
            thumbprint
        );
        let client = credential.http_client(Arc::new(NoTransport));
        assert!(client.bindings().same_registry(credential.bindings()));
    }

    #[tokio::test]
    async fn maps_errors() {
        let credential = AzureCoreCredential::from_arc(fixed(Err(Error::new(
            ErrorCode::CONNECTION_FAILED,
            "could not reach https://login.microsoftonline.com:443",
        ))));
        let err = credential
            .get_token(&["x/.default"], None)
            .await
            .err()
            .unwrap_or_else(|| panic!("an error"));
        assert_eq!(err.kind(), &ErrorKind::Credential);
        assert!(err.to_string().contains("connection_failed"), "{err}");
    }

    #[test]
    fn expiry_conversion_never_panics() {
        assert_eq!(
            offset_date_time(UNIX_EPOCH - Duration::from_secs(10))
                .map(OffsetDateTime::unix_timestamp)
                .ok(),
            Some(-10)
        );
        assert!(offset_date_time(UNIX_EPOCH + Duration::from_secs(u64::MAX / 4)).is_err());
    }

    #[derive(Debug)]
    struct NoTransport;

    #[async_trait]
    impl HttpTransport for NoTransport {
        async fn send(
            &self,
            _: fic_oauth_core::TransportRequest,
        ) -> Result<http::Response<bytes::Bytes>, Error> {
            Err(Error::new(ErrorCode::TRANSPORT, "no transport"))
        }
    }
}
