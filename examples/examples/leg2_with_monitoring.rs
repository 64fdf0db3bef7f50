//! FIC two-leg the way seed 001 writes it out: Leg 1 with SNI (mTLS PoP, regional, for the
//! token-exchange scope), then Leg 2 "with monitoring": an assertion callback that returns the
//! Leg-1 token bound to the certificate (jwt-pop) and records that it was called and for which
//! token endpoint, and a request hook that reads `client_assertion_type` and the mtlsauth URI
//! of the request about to be sent.
//!
//! Run from the repository root:
//!
//! ```text
//! cargo run -p fic-examples --example leg2_with_monitoring
//! ```
//!
//! Mirrors seed 001 (MSAL.NET mTLS PoP - FIC Two-Leg Flow):
//! - "Leg 1 with SNI": `WithCertificate(cert, sendX5C: true)`, `WithAzureRegion("westus3")`,
//!   `AcquireTokenForClient(api://AzureADTokenExchange/.default).WithMtlsProofOfPossession()`.
//! - "Assertion Provider Helper" / `CreateAssertionProviderWithMonitoring`: here a
//!   [`CallbackAssertion`] returning [`ClientAssertion::bound`] (`Assertion` +
//!   `TokenBindingCertificate`), told the token endpoint through [`AssertionRequest`].
//! - "Leg 2 with SNI" and the test `Sni_AssertionFlow_Uses_JwtPop_And_Succeeds_TestAsync`:
//!   `.OnBeforeTokenRequest(data => data.BodyParameters["client_assertion_type"])` is a
//!   [`RequestHook`](fic_flows::RequestHook) on the client; the `JwtPopMetadata` it fills is
//!   `Monitor` below.
//! - The "jwt-pop Validation" checklist is checked at the end.
//!
//! As in the seed, both legs are the same application (its federated credential trusts its own
//! tokens).
//!
//! Real tenant: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_CERTIFICATE_PATH`
//! (+ `_PASSWORD`), optionally `FIC_LEG2_CLIENT_ID` (default: the same app),
//! `AZURE_REGIONAL_AUTHORITY_NAME` (default westus3), `AZURE_AUTHORITY_HOST`, `FIC_SCOPE`
//! (default Key Vault), `FIC_RESOURCE_URL`.

use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};

use fic_assertion::{AssertionRequest, CallbackAssertion, ClientAssertion};
use fic_emulator::{App, Emulator, FederatedCredential};
use fic_examples::{
    describe_token, ensure, say, step, var, Env, ExampleResult, RealTenant, DEFAULT_REGION,
    EXCHANGE_AUDIENCE, EXCHANGE_SCOPE, TENANT, VAULT_SCOPE, VAULT_URL,
};
use fic_flows::{ClientCredential, OutgoingTokenRequest};
use fic_oauth_core::request::JWT_POP;
use fic_oauth_core::{Error, TokenType};

const APP: &str = "163ffef9-a313-45b4-ab2f-c7e2f5e0e23e";

/// What the monitoring saw (the seed's `JwtPopMetadata`, plus the provider's calls).
#[derive(Debug, Default, Clone)]
struct Monitor {
    /// How many times the assertion provider was called.
    provider_calls: usize,
    /// The token endpoint the provider was told (`AssertionRequestOptions.TokenEndpoint`).
    token_endpoint: Option<String>,
    /// The URI of the request the hook saw.
    request_uri: Option<String>,
    /// Whether the body had `client_assertion`.
    has_client_assertion: bool,
    /// `client_assertion_type` of the body.
    client_assertion_type: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    fic_examples::exit(run().await)
}

async fn run() -> ExampleResult {
    step("setup");
    let (env, leg1_id, leg2_id, certificate, region, scope, resource_url) =
        if let Some(real) = RealTenant::from_env()? {
            (
                Env::real(&real.tenant_id)?,
                real.client_id.clone(),
                var("FIC_LEG2_CLIENT_ID").unwrap_or(real.client_id),
                real.certificate,
                real.region,
                real.scope,
                real.resource_url,
            )
        } else {
            let certificate = fic_examples::new_identity("sni-app")?;
            let app = App::new(APP, TENANT).certificate(certificate.leaf_der().to_vec());
            // The app trusts its own tokens for the exchange audience.
            let app = app.clone().federated_credential(FederatedCredential::new(
                format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
                app.object_id.clone(),
                EXCHANGE_AUDIENCE,
            ));
            (
                Env::emulator(Emulator::builder().app(app)).await?,
                APP.to_string(),
                APP.to_string(),
                certificate,
                DEFAULT_REGION.to_string(),
                VAULT_SCOPE.to_string(),
                Some(VAULT_URL.to_string()),
            )
        };

    // ===== LEG 1: acquire the assertion token (seed 001, FicTwoLegFlow_Leg1_Sni) =====
    step("Leg 1 with SNI: exchange scope, regional, mTLS PoP");
    let leg1 = env
        .client(&leg1_id)
        .credential(ClientCredential::certificate_with_x5c(certificate.clone()))
        .region(&region)
        .build()?;
    let first = leg1
        .acquire_token_for_client([EXCHANGE_SCOPE])
        .with_mtls_pop()
        .await?;
    describe_token("Leg 1", &first);
    env.show_last_token_request();
    ensure(
        first.scopes.iter().any(|s| s == EXCHANGE_SCOPE),
        "the assertion token does not have the exchange scope",
    )?;
    ensure(
        first.binding_thumbprint() == Some(certificate.thumbprint_s256()),
        "BindingCertificate is not the certificate",
    )?;
    let assertion_jwt = first.token.clone();
    say(format!(
        "assertion length: {} characters",
        assertion_jwt.expose().len()
    ));

    // ===== LEG 2: exchange it, with monitoring (seed 001, Sni_AssertionFlow_... test) =====
    step("Leg 2 with monitoring: assertion callback + request hook");
    let monitor = Arc::new(Mutex::new(Monitor::default()));

    // .WithClientAssertion((options, ct) => { assertionProviderCalled = true;
    //     return new ClientSignedAssertion { Assertion = assertionJwt, TokenBindingCertificate = cert }; })
    let provider = {
        let monitor = Arc::clone(&monitor);
        let certificate = certificate.clone();
        CallbackAssertion::new(move |options: AssertionRequest| {
            {
                let mut seen = monitor.lock().unwrap_or_else(PoisonError::into_inner);
                seen.provider_calls += 1;
                seen.token_endpoint = Some(options.token_endpoint.clone());
            }
            let assertion = ClientAssertion::bound(assertion_jwt.clone(), certificate.clone());
            async move { assertion }
        })
    };

    // .OnBeforeTokenRequest(data => data.BodyParameters.TryGetValue("client_assertion_type", ...))
    let hook = {
        let monitor = Arc::clone(&monitor);
        move |request: &mut OutgoingTokenRequest| -> Result<(), Error> {
            let mut seen = monitor.lock().unwrap_or_else(PoisonError::into_inner);
            seen.request_uri = Some(request.uri().to_string());
            seen.has_client_assertion = request.form_parameter("client_assertion").is_some();
            seen.client_assertion_type = request
                .form_parameter("client_assertion_type")
                .map(|v| v.expose().to_string());
            Ok(())
        }
    };

    // NO certificate credential on Leg 2: the certificate comes with the assertion.
    let assertion_app = env
        .client(&leg2_id)
        .assertion_provider(provider)
        .region(&region)
        .request_hook(hook)
        .build()?;
    let second = assertion_app
        .acquire_token_for_client([scope.as_str()])
        .with_mtls_pop()
        .await?;
    describe_token("Leg 2", &second);
    env.show_last_token_request();

    let seen = monitor
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    say(format!(
        "assertion provider called {} time(s), for token endpoint {}",
        seen.provider_calls,
        seen.token_endpoint.as_deref().unwrap_or("-")
    ));
    say(format!(
        "hook saw: {} client_assertion={} client_assertion_type={}",
        seen.request_uri.as_deref().unwrap_or("-"),
        seen.has_client_assertion,
        seen.client_assertion_type.as_deref().unwrap_or("-")
    ));

    // The seed's "jwt-pop Validation" and "Token Quality" checklists.
    step("checklist");
    ensure(
        seen.provider_calls > 0,
        "the assertion provider was not called",
    )?;
    ensure(
        seen.token_endpoint.is_some(),
        "no token endpoint was given to the provider",
    )?;
    ensure(seen.has_client_assertion, "no client_assertion was sent")?;
    ensure(
        seen.client_assertion_type.as_deref() == Some(JWT_POP),
        "client_assertion_type is not jwt-pop",
    )?;
    let uri = seen.request_uri.unwrap_or_default();
    ensure(
        uri.starts_with(&format!("https://{region}.mtlsauth.microsoft.com/")),
        format!("Leg 2 did not use the regional mtlsauth endpoint ({uri})"),
    )?;
    ensure(
        second.token_type == TokenType::MtlsPop,
        "the result is not mtls_pop",
    )?;
    ensure(
        second.scopes.contains(&scope),
        "the result does not contain the target scope",
    )?;
    ensure(
        second.binding_thumbprint() == Some(certificate.thumbprint_s256()),
        "the certificate binding was not kept through the flow",
    )?;
    say("provider invoked, jwt-pop, regional mtlsauth, mtls_pop result, binding kept");

    step("call the resource with the binding certificate");
    if let Some(url) = resource_url {
        let answer = env.resource().get(&url, &second).await?;
        say(format!("GET {url} → {}", answer.status));
        ensure(answer.status.is_success(), "the resource refused the token")?;
    } else {
        say("FIC_RESOURCE_URL is not set: skipped");
    }
    Ok(())
}
