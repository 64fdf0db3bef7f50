//! Swapping the transport: the same flows over reqwest instead of the default `MtlsTransport`.
//! The transport is in `transport.rs` next to this file (an `HttpTransport` in ~400 lines);
//! `examples/tests/swap.rs` runs the flow assertions of the default transport against it.
//!
//! Run from the repository root:
//!
//! ```text
//! cargo run -p fic-examples --example reqwest_transport
//! ```
//!
//! What it shows (seed 002's vanilla flow, seed 000's CC → CC):
//! - `ConfidentialClient::builder(..).transport(Arc::new(ReqwestTransport))`: mTLS PoP with the
//!   certificate presented by a reqwest client built for that identity (its key signs the TLS
//!   handshake through `fic_mtls_transport::tls::IdentityCertResolver`);
//! - `ResourceClient::new(transport)`: the resource accepts the token with the binding
//!   certificate and refuses it (401) without;
//! - FIC two-leg CC → CC over the same transport;
//! - a request that asks for an identity the transport cannot present fails, unsent.
//!
//! Real tenant: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_CERTIFICATE_PATH`
//! (+ `_PASSWORD`), optionally `FIC_SCOPE` and `FIC_RESOURCE_URL`; the transport is then
//! `ReqwestTransport::new()` (Mozilla roots, system DNS). The FIC step runs in emulator mode only.

mod transport;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use fic_emulator::{App, Emulator, EmulatorHandle, FederatedCredential};
use fic_examples::{
    describe_token, ensure, say, step, Env, ExampleResult, RealTenant, EXCHANGE_AUDIENCE,
    GRAPH_SCOPE, GRAPH_URL, TENANT, VAULT_SCOPE, VAULT_URL,
};
use fic_flows::{ResourceClient, TwoLeg};
use fic_oauth_core::{
    ErrorCode, HttpTransport, TokenCredential, TokenSource, TokenType, TransportRequest,
};
use transport::ReqwestTransport;

const APP: &str = "0a1b2c3d-4e5f-4a6b-8c7d-8e9fa0b1c2d3";
const LEG2_APP: &str = "1b2c3d4e-5f60-4b7c-9d8e-9fa0b1c2d3e4";

/// A reqwest transport that sends production host names to `emulator` and trusts only its CA.
fn reqwest_for(emulator: &EmulatorHandle) -> Result<ReqwestTransport, fic_oauth_core::Error> {
    let mut builder = ReqwestTransport::builder()
        .built_in_roots(false)
        .add_root_certificate_pem(emulator.ca_certificate_pem().as_bytes())?
        .timeout(Duration::from_secs(20))
        .connect_timeout(Duration::from_secs(5))
        .max_response_bytes(256 * 1024)
        .max_identities(8);
    for (pattern, addr) in emulator.resolver_map() {
        builder = builder.resolve(&pattern, addr);
    }
    builder.build()
}

#[tokio::main]
async fn main() -> ExitCode {
    fic_examples::exit(run().await)
}

async fn run() -> ExampleResult {
    step("setup");
    let certificate;
    let (env, transport, client_id, scope, url) = if let Some(real) = RealTenant::from_env()? {
        certificate = real.certificate;
        (
            Env::real(&real.tenant_id)?,
            ReqwestTransport::new()?,
            real.client_id,
            real.scope,
            real.resource_url,
        )
    } else {
        certificate = fic_examples::new_identity("reqwest-app")?;
        let app = App::new(APP, TENANT).certificate(certificate.leaf_der().to_vec());
        let leg2 = App::new(LEG2_APP, TENANT).federated_credential(FederatedCredential::new(
            format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
            app.object_id.clone(),
            EXCHANGE_AUDIENCE,
        ));
        let env = Env::emulator(Emulator::builder().app(app).app(leg2)).await?;
        let transport = match env.emulator_handle() {
            Some(emulator) => reqwest_for(emulator)?,
            None => ReqwestTransport::new()?,
        };
        (
            env,
            transport,
            APP.to_string(),
            VAULT_SCOPE.to_string(),
            Some(VAULT_URL.to_string()),
        )
    };
    let transport = Arc::new(transport);
    say(format!("{transport:?}"));

    step("mTLS PoP over reqwest");
    let client = env
        .client(&client_id)
        .transport(transport.clone())
        .certificate(certificate.clone())
        .build()?;
    let token = client
        .acquire_token_for_client([scope.as_str()])
        .with_mtls_pop()
        .await?;
    describe_token("token", &token);
    env.show_last_token_request();
    ensure(token.token_type == TokenType::MtlsPop, "not mtls_pop")?;
    ensure(
        token.binding_thumbprint() == Some(certificate.thumbprint_s256()),
        "not bound to the certificate",
    )?;
    if let Some(request) = env.last_token_request() {
        ensure(
            request.client_cert_thumbprint.as_deref() == Some(certificate.thumbprint_s256()),
            "the TLS client certificate was not the binding certificate",
        )?;
    }
    say(format!(
        "reqwest clients per identity: {:?}",
        transport.identity_clients()
    ));
    let again = client
        .acquire_token_for_client([scope.as_str()])
        .with_mtls_pop()
        .await?;
    ensure(
        again.source == TokenSource::Cache,
        "the second call missed the cache",
    )?;
    say("second call: from the cache");

    if let Some(url) = &url {
        step("the resource, over reqwest");
        let resource = ResourceClient::new(transport.clone());
        let answer = resource.get(url, &token).await?;
        say(format!("with the binding certificate: {}", answer.status));
        ensure(
            answer.status.is_success(),
            "refused with the binding certificate",
        )?;
        // Without it: the same token replayed as Bearer (ResourceClient refuses to send an
        // mtls_pop token without its certificate), which the resource must refuse.
        let mut stolen = token.clone();
        stolen.binding = None;
        stolen.token_type = TokenType::Bearer;
        let answer = resource.get(url, &stolen).await?;
        say(format!("without it: {}", answer.status));
        ensure(
            answer.status.as_u16() == 401,
            "accepted without the binding certificate",
        )?;
    }

    if env.is_emulated() {
        step("FIC two-leg CC → CC over reqwest");
        let leg1: Arc<dyn TokenCredential> = Arc::new(
            env.client(&client_id)
                .transport(transport.clone())
                .certificate(certificate.clone())
                .build()?,
        );
        let leg2 = env.client(LEG2_APP).transport(transport.clone());
        let two_leg = TwoLeg::builder(leg1, leg2).build()?;
        let token = two_leg.acquire_token([GRAPH_SCOPE]).await?;
        describe_token("Leg 2 token", &token);
        let answer = ResourceClient::new(transport.clone())
            .get(GRAPH_URL, &token)
            .await?;
        say(format!("GET {GRAPH_URL} → {}", answer.status));
        ensure(answer.status.is_success(), "the resource refused the token")?;
    }

    step("an identity the transport cannot present: refused, not sent");
    let request =
        http::Request::post("http://localhost:9/oauth2/v2.0/token").body(bytes::Bytes::new())?;
    let outcome = transport
        .send(TransportRequest::new(request).with_identity(Some(certificate.clone())))
        .await;
    match outcome {
        Err(error) if error.code() == &ErrorCode::INSECURE_TRANSPORT => {
            say(format!("{}: {}", error.code(), error.message()));
        }
        other => ensure(false, format!("expected insecure_transport, got {other:?}"))?,
    }
    Ok(())
}
