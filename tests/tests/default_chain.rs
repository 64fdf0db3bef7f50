//! Configuration from the environment and the default chain (environment → workload identity →
//! managed identity), including the aggregated error that says why each step was skipped or
//! failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use fic_emulator::{App, Emulator, FederatedCredential};
use fic_flows::environment::CREDENTIAL_UNAVAILABLE;
use fic_flows::DefaultCredential;
use fic_mtls_transport::MtlsTransport;
use fic_oauth_core::{TokenCredential, TokenRequestOptions};
use fic_tests::{jwt_payload, new_identity, World, TENANT};

const APP: &str = "6d5c4b3a-2918-4f7e-8d6c-5b4a39281706";
const SOURCE_APP: &str = "7e6d5c4b-3a29-4180-9f7e-6d5c4b3a2918";
const GRAPH: &str = "https://graph.microsoft.com/.default";

/// A transport to the emulator whose IMDS address is a closed port (no managed identity here).
fn transport_without_imds(world: &World) -> Arc<MtlsTransport> {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut builder = MtlsTransport::builder()
        .built_in_roots(false)
        .add_root_certificate_pem(world.emulator.ca_certificate_pem().as_bytes())
        .unwrap();
    for (pattern, addr) in world.emulator.resolver_map() {
        let addr: SocketAddr = if pattern.starts_with("169.254.169.254") {
            closed
        } else {
            addr
        };
        builder = builder.resolve(&pattern, addr);
    }
    Arc::new(builder.build().unwrap())
}

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

async fn world() -> World {
    let cert = new_identity("env-app");
    let source = App::new(SOURCE_APP, TENANT).secret("source-secret");
    let source_object_id = source.object_id.clone();
    World::start(
        Emulator::builder().app(source).app(
            App::new(APP, TENANT)
                .secret("env-secret")
                .certificate(cert.leaf_der().to_vec())
                .federated_credential(FederatedCredential::new(
                    format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
                    source_object_id,
                    "api://AzureADTokenExchange",
                )),
        ),
    )
    .await
}

#[tokio::test]
async fn nothing_configured_lists_why_each_step_did_not_work() {
    let world = world().await;
    let chain = DefaultCredential::builder()
        .environment(HashMap::new())
        .transport(transport_without_imds(&world))
        .build();
    let steps = chain.steps();
    assert_eq!(steps[0].0, "environment");
    assert!(steps[0].1.as_deref().unwrap().contains("AZURE_TENANT_ID"));
    assert!(steps[1]
        .1
        .as_deref()
        .unwrap()
        .contains("AZURE_FEDERATED_TOKEN_FILE"));
    assert_eq!(
        steps[2],
        ("managed identity", None),
        "IMDS is always a candidate"
    );

    let err = chain
        .get_token(&[GRAPH], &TokenRequestOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), &CREDENTIAL_UNAVAILABLE);
    let message = err.message();
    assert!(
        message
            .contains("environment: skipped: AZURE_TENANT_ID and AZURE_CLIENT_ID are not both set"),
        "{message}"
    );
    assert!(
        message.contains("workload identity: skipped: AZURE_FEDERATED_TOKEN_FILE is not set"),
        "{message}"
    );
    assert!(
        message.contains("managed identity: failed: managed_identity_unreachable_network"),
        "{message}"
    );
    assert!(chain.chosen().is_none());
}

#[tokio::test]
async fn a_client_secret_in_the_environment_is_used_first() {
    let world = world().await;
    let chain = DefaultCredential::builder()
        .environment(env(&[
            ("AZURE_TENANT_ID", TENANT),
            ("AZURE_CLIENT_ID", APP),
            ("AZURE_CLIENT_SECRET", "env-secret"),
            ("AZURE_REGIONAL_AUTHORITY_NAME", "westus3"),
        ]))
        .transport(transport_without_imds(&world))
        .build();
    let token = chain
        .get_token(&[GRAPH], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(chain.chosen(), Some("environment"));
    assert_eq!(jwt_payload(token.token.expose())["appid"], APP);
    let request = world.emulator.log().last_token_request().unwrap();
    assert_eq!(request.host, "westus3.login.microsoft.com");
    assert_eq!(request.form_value("client_secret"), Some("env-secret"));
    // Sticky: the next call goes straight to the chosen step (and its cache).
    chain
        .get_token(&[GRAPH], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(world.token_requests(), 1);
}

#[tokio::test]
async fn a_certificate_file_in_the_environment() {
    let world = world().await;
    let dir = tempfile::tempdir().unwrap();
    // A registered certificate, written as PEM (chain and key).
    let generated = rcgen::generate_simple_self_signed(vec!["env-app".to_string()]).unwrap();
    let pem = format!(
        "{}{}",
        generated.cert.pem(),
        generated.signing_key.serialize_pem()
    );
    world.emulator.directory().update_app(APP, |app| {
        *app = app.clone().certificate(generated.cert.der().to_vec());
    });
    let path = dir.path().join("app.pem");
    std::fs::write(&path, pem).unwrap();
    let chain = DefaultCredential::builder()
        .environment(env(&[
            ("AZURE_TENANT_ID", TENANT),
            ("AZURE_CLIENT_ID", APP),
            ("AZURE_CLIENT_CERTIFICATE_PATH", path.to_str().unwrap()),
        ]))
        .transport(transport_without_imds(&world))
        .build();
    chain
        .get_token(&[GRAPH], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(chain.chosen(), Some("environment"));
    let request = world.emulator.log().last_token_request().unwrap();
    assert_eq!(
        request.form_value("client_assertion_type"),
        Some(fic_oauth_core::request::JWT_BEARER)
    );
}

#[tokio::test]
async fn a_federated_token_file_is_workload_identity() {
    let world = world().await;
    // The "Kubernetes" token: an emulator token of the source app for the exchange audience.
    let source = world
        .client(SOURCE_APP)
        .client_secret("source-secret")
        .build()
        .unwrap();
    let federated = source
        .acquire_token_for_client(["api://AzureADTokenExchange/.default"])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, federated.token.expose()).unwrap();

    let chain = DefaultCredential::builder()
        .environment(env(&[
            ("AZURE_TENANT_ID", TENANT),
            ("AZURE_CLIENT_ID", APP),
            ("AZURE_FEDERATED_TOKEN_FILE", file.to_str().unwrap()),
        ]))
        .transport(transport_without_imds(&world))
        .build();
    assert!(chain.steps()[0]
        .1
        .as_deref()
        .unwrap()
        .contains("AZURE_CLIENT_SECRET"));
    let token = chain
        .get_token(&[GRAPH], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(chain.chosen(), Some("workload identity"));
    assert_eq!(jwt_payload(token.token.expose())["appid"], APP);
    let request = world.emulator.log().last_token_request().unwrap();
    assert_eq!(
        request.form_value("client_assertion"),
        Some(federated.token.expose())
    );
}

#[tokio::test]
async fn a_failing_step_is_reported_and_the_chain_goes_on() {
    let world = world().await;
    let chain = DefaultCredential::builder()
        .environment(env(&[
            ("AZURE_TENANT_ID", TENANT),
            ("AZURE_CLIENT_ID", APP),
            ("AZURE_CLIENT_SECRET", "wrong"),
        ]))
        .transport(transport_without_imds(&world))
        .build();
    let err = chain
        .get_token(&[GRAPH], &TokenRequestOptions::default())
        .await
        .unwrap_err();
    let message = err.message();
    assert!(
        message.contains("environment: failed: invalid_client: AADSTS7000215"),
        "{message}"
    );
    assert!(message.contains("workload identity: skipped"), "{message}");
    assert!(message.contains("managed identity: failed"), "{message}");
    assert!(
        !message.contains("wrong"),
        "the secret never appears: {message}"
    );
}
