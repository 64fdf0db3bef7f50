//! Calling a protected resource with an mTLS PoP token: the token in `Authorization` and its
//! binding certificate as the TLS client certificate (RFC 8705). Without the certificate
//! `ResourceClient` refuses to send it (`mtls_certificate_not_provided`), and the same token
//! replayed as a Bearer token, or presented with another certificate, is refused by the
//! resource with 401.
//!
//! Run from the repository root:
//!
//! ```text
//! cargo run -p fic-examples --example call_resource
//! ```
//!
//! Mirrors seed 002 "Calling the Resource" (`handler.ClientCertificates.Add(result.BindingCertificate)`
//! and the token in `Authorization`; "despite mTLS, header still uses Bearer") and its
//! troubleshooting row "TLS handshake fails / wrong certificate used: use
//! `result.BindingCertificate`"; seed 000/001 `ResourceCaller` / `FicResourceCaller`.
//! [`ResourceClient`](fic_flows::ResourceClient) sends through the same transport that
//! acquired the token, presenting [`AccessToken::binding`](fic_oauth_core::AccessToken::binding).
//!
//! Real tenant: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_CERTIFICATE_PATH`
//! (+ `_PASSWORD`), `FIC_RESOURCE_URL` (required: a URL of the resource of `FIC_SCOPE`, default
//! Key Vault, that accepts mTLS PoP tokens).

use std::process::ExitCode;

use fic_emulator::{App, Emulator};
use fic_examples::{
    describe_token, ensure, required_var, say, step, Env, ExampleResult, RealTenant, TENANT,
    VAULT_SCOPE, VAULT_URL,
};
use fic_flows::{AuthorizationScheme, ResourceResponse};
use fic_oauth_core::{ErrorCode, TokenType};

const APP: &str = "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d";

#[tokio::main]
async fn main() -> ExitCode {
    fic_examples::exit(run().await)
}

fn show(what: &str, answer: &ResourceResponse) {
    say(format!(
        "{what}: {} {}",
        answer.status,
        answer
            .www_authenticate()
            .map(|w| format!("(WWW-Authenticate: {w})"))
            .unwrap_or_default()
    ));
}

async fn run() -> ExampleResult {
    step("setup");
    let other = fic_examples::new_identity("not-the-binding-certificate")?;
    let (env, client_id, certificate, scope, url) = if let Some(real) = RealTenant::from_env()? {
        (
            Env::real(&real.tenant_id)?,
            real.client_id,
            real.certificate,
            real.scope,
            required_var("FIC_RESOURCE_URL")?,
        )
    } else {
        let certificate = fic_examples::new_identity("resource-caller")?;
        let env = Env::emulator(
            Emulator::builder()
                .app(App::new(APP, TENANT).certificate(certificate.leaf_der().to_vec())),
        )
        .await?;
        (
            env,
            APP.to_string(),
            certificate,
            VAULT_SCOPE.to_string(),
            VAULT_URL.to_string(),
        )
    };

    step("acquire an mTLS PoP token");
    let client = env
        .client(&client_id)
        .certificate(certificate.clone())
        .build()?;
    let token = client
        .acquire_token_for_client([scope.as_str()])
        .with_mtls_pop()
        .await?;
    describe_token("token", &token);

    step("with the binding certificate: accepted");
    let resource = env.resource();
    let answer = resource.get(&url, &token).await?;
    show(
        "Authorization: mtls_pop <token>, TLS cert = binding",
        &answer,
    );
    ensure(
        answer.status.is_success(),
        "the resource refused the bound call",
    )?;
    if let Ok(body) = answer.json() {
        say(format!(
            "the resource saw: scheme={} bound={} client cert={}",
            body["scheme"], body["bound"], body["client_cert_thumbprint"]
        ));
    }
    // seed 002: "Add Bearer token (despite mTLS, header still uses Bearer)".
    let answer = resource
        .clone()
        .with_scheme(AuthorizationScheme::Bearer)
        .get(&url, &token)
        .await?;
    show("Authorization: Bearer <token>, TLS cert = binding", &answer);
    ensure(
        answer.status.is_success(),
        "the resource refused the Bearer-scheme call",
    )?;

    step("without the binding certificate: refused here, and 401 from the resource");
    let mut unbound = token.clone();
    unbound.binding = None;
    match resource.get(&url, &unbound).await {
        Err(error) if error.code() == &ErrorCode::MTLS_CERTIFICATE_NOT_PROVIDED => {
            say(format!(
                "ResourceClient refuses to send it: {}",
                error.code()
            ));
        }
        other => {
            return Err(format!(
                "a bound token without its certificate was not refused: {:?}",
                other.map(|a| a.status)
            )
            .into())
        }
    }
    // The same token replayed as a Bearer token (as a thief would): the resource refuses it.
    let mut stolen = unbound;
    stolen.token_type = TokenType::Bearer;
    let answer = resource.get(&url, &stolen).await?;
    show("as Bearer, no TLS client certificate", &answer);
    ensure(
        answer.status.as_u16() == 401,
        format!("expected 401, got {}", answer.status),
    )?;

    step("with another certificate: 401");
    let mut wrong = token.clone();
    wrong.binding = Some(other);
    let answer = resource.get(&url, &wrong).await?;
    show("TLS cert ≠ the token's cnf", &answer);
    ensure(
        answer.status.as_u16() == 401,
        format!("expected 401, got {}", answer.status),
    )?;

    step("a Bearer token goes over plain TLS");
    let bearer = client.acquire_token_for_client([scope.as_str()]).await?;
    describe_token("token", &bearer);
    let answer = resource.get(&url, &bearer).await?;
    show(
        "Authorization: Bearer <token>, no TLS client certificate",
        &answer,
    );
    ensure(
        answer.status.is_success(),
        "the resource refused the Bearer token",
    )?;
    Ok(())
}
