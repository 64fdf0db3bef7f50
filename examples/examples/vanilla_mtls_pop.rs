//! Vanilla mTLS Proof-of-Possession with a confidential client, then a call to the resource
//! with the binding certificate.
//!
//! Run from the repository root:
//!
//! ```text
//! cargo run -p fic-examples --example vanilla_mtls_pop
//! ```
//!
//! Mirrors the seeds:
//! - seed 002 (msal-mtls-pop-vanilla), "Confidential Client (Certificate-Based)":
//!   `AcquireTokenForClient(vault).WithMtlsProofOfPossession()`, global and with
//!   `WithAzureRegion("westus3")`; the validation checklist (token type `mtls_pop`,
//!   `BindingCertificate` = the certificate, cached on the second call); "Calling the Resource"
//!   with `BindingCertificate` in the TLS handshake.
//! - seed 001 (FIC two-leg), "Leg 1 with SNI": the same request for
//!   `api://AzureADTokenExchange/.default` with `WithCertificate(cert, sendX5C: true)` and
//!   `westus3`, validated by scope and binding thumbprint.
//!
//! In fic-rs the certificate is the TLS client certificate of the request to the `mtlsauth`
//! host and no client assertion is sent (`sendX5C` matters only for Bearer requests, whose
//! jwt-bearer assertion then carries the chain).
//!
//! Real tenant: set `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_CERTIFICATE_PATH`
//! (+ `AZURE_CLIENT_CERTIFICATE_PASSWORD` for a .pfx), optionally
//! `AZURE_REGIONAL_AUTHORITY_NAME` (default westus3), `AZURE_AUTHORITY_HOST`, `FIC_SCOPE`
//! (default Key Vault) and `FIC_RESOURCE_URL` (a URL to call).

use std::process::ExitCode;

use fic_emulator::{App, Emulator};
use fic_examples::{
    describe_token, ensure, jwt_claims, say, step, Env, ExampleResult, RealTenant, DEFAULT_REGION,
    EXCHANGE_SCOPE, TENANT, VAULT_SCOPE, VAULT_URL,
};
use fic_flows::ClientCredential;
use fic_oauth_core::{ClientIdentity, TokenSource, TokenType};

const APP: &str = "163ffef9-a313-45b4-ab2f-c7e2f5e0e23e";

#[tokio::main]
async fn main() -> ExitCode {
    fic_examples::exit(run().await)
}

async fn run() -> ExampleResult {
    step("setup");
    let (env, client_id, certificate, region, scope, resource_url) =
        if let Some(real) = RealTenant::from_env()? {
            (
                Env::real(&real.tenant_id)?,
                real.client_id,
                real.certificate,
                real.region,
                real.scope,
                real.resource_url,
            )
        } else {
            let certificate = fic_examples::new_identity("vanilla-app")?;
            // The app, with its certificate registered (by thumbprint).
            let env = Env::emulator(
                Emulator::builder()
                    .app(App::new(APP, TENANT).certificate(certificate.leaf_der().to_vec())),
            )
            .await?;
            (
                env,
                APP.to_string(),
                certificate,
                DEFAULT_REGION.to_string(),
                VAULT_SCOPE.to_string(),
                Some(VAULT_URL.to_string()),
            )
        };
    say(format!(
        "app {client_id}, certificate x5t#S256 {}",
        certificate.thumbprint_s256()
    ));

    // seed 002: ConfidentialClientApplicationBuilder.Create(clientId).WithAuthority(...)
    //   .WithCertificate(cert, sendX5C: true).Build()
    step("global: acquire_token_for_client(scope).with_mtls_pop()");
    let client = env
        .client(&client_id)
        .credential(ClientCredential::certificate_with_x5c(certificate.clone()))
        .build()?;
    let token = client
        .acquire_token_for_client([scope.as_str()])
        .with_mtls_pop()
        .await?;
    describe_token("token", &token);
    env.show_last_token_request();
    validate(&token, &certificate)?;
    if let Some(request) = env.last_token_request() {
        ensure(
            request.host == "mtlsauth.microsoft.com",
            format!("the token request went to {}", request.host),
        )?;
        ensure(
            request.form_value("client_assertion").is_none(),
            "a client assertion was sent",
        )?;
    }

    // seed 002 "Caching Behavior": the second call is served from the cache.
    step("the same request again: from the cache");
    let before = env.token_requests();
    let again = client
        .acquire_token_for_client([scope.as_str()])
        .with_mtls_pop()
        .await?;
    describe_token("token", &again);
    ensure(
        again.source == TokenSource::Cache,
        "not served from the cache",
    )?;
    ensure(env.token_requests() == before, "a request was sent")?;

    // seed 002: .WithAzureRegion("westus3") → https://westus3.mtlsauth.microsoft.com/...
    step(&format!("regional ({region}): with_mtls_pop()"));
    let regional = env
        .client(&client_id)
        .credential(ClientCredential::certificate_with_x5c(certificate.clone()))
        .region(&region)
        .build()?;
    let token = regional
        .acquire_token_for_client([scope.as_str()])
        .with_mtls_pop()
        .await?;
    describe_token("token", &token);
    env.show_last_token_request();
    validate(&token, &certificate)?;
    if let Some(request) = env.last_token_request() {
        let host = format!("{region}.mtlsauth.microsoft.com");
        ensure(
            request.host == host,
            format!("the token request went to {}, not {host}", request.host),
        )?;
    }

    // seed 001 "Leg 1 with SNI": the token-exchange scope, regional, validated like
    // ValidateAssertionToken (scope present, BindingCertificate thumbprint = the certificate).
    step("seed 001 Leg 1 with SNI: api://AzureADTokenExchange/.default, regional, PoP");
    let assertion = regional
        .acquire_token_for_client([EXCHANGE_SCOPE])
        .with_mtls_pop()
        .await?;
    describe_token("assertion token", &assertion);
    ensure(
        assertion.scopes.iter().any(|s| s == EXCHANGE_SCOPE),
        format!("the token does not contain the scope {EXCHANGE_SCOPE}"),
    )?;
    validate(&assertion, &certificate)?;
    if env.is_emulated() {
        say(format!(
            "aud = {}",
            jwt_claims(assertion.token.expose())?["aud"]
        ));
    }

    // seed 002 "Calling the Resource": the token in Authorization, BindingCertificate in TLS.
    step("call the resource with the binding certificate");
    match resource_url {
        Some(url) => {
            let answer = env.resource().get(&url, &token).await?;
            say(format!("GET {url} → {}", answer.status));
            ensure(
                answer.status.is_success(),
                format!(
                    "the resource answered {} ({})",
                    answer.status,
                    answer.www_authenticate().unwrap_or("-")
                ),
            )?;
            if let Ok(body) = answer.json() {
                say(format!("the resource saw: {body}"));
            }
        }
        None => say("FIC_RESOURCE_URL is not set: skipped"),
    }
    Ok(())
}

/// seed 002's checklist: `mtls_pop`, bound to the certificate (and, on the emulator's tokens,
/// `cnf` = the certificate's `x5t#S256`).
fn validate(
    token: &fic_oauth_core::AccessToken,
    certificate: &ClientIdentity,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    ensure(
        token.token_type == TokenType::MtlsPop,
        format!("token type {}, expected mtls_pop", token.token_type),
    )?;
    ensure(
        token.binding_thumbprint() == Some(certificate.thumbprint_s256()),
        "the binding certificate is not the client's certificate",
    )?;
    if let Ok(claims) = jwt_claims(token.token.expose()) {
        if let Some(cnf) = claims["cnf"]["x5t#S256"].as_str() {
            ensure(
                cnf == certificate.thumbprint_s256(),
                "the token's cnf is not the certificate",
            )?;
            say(format!("cnf x5t#S256 = {cnf} (the certificate)"));
        }
    }
    Ok(())
}
