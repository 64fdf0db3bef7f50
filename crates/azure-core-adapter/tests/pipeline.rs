//! An `azure_core` pipeline, built as an Azure SDK client builds one (the bearer policy per try,
//! our HTTP client as transport), driven against the emulator with fic-rs credentials: Bearer,
//! mTLS PoP, FIC two-leg (Bearer, and PoP on Leg 2), and a failed token request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;

use azure_core::credentials::TokenCredential as _;
use azure_core::error::ErrorKind;
use azure_core::http::policies::{auth::BearerTokenAuthorizationPolicy, Policy};
use azure_core::http::{
    ClientOptions, Context, HttpClient, Method, Pipeline, RawResponse, Request, RetryOptions,
    StatusCode, Transport, Url,
};
use fic_azure_core::{AuthorizationScheme, AzureCoreCredential, FicHttpClient};
use fic_emulator::{App, Emulator, EmulatorBuilder, EmulatorHandle, FederatedCredential};
use fic_flows::{ConfidentialClient, ConfidentialClientBuilder, RegionDetector, TwoLeg};
use fic_mtls_transport::MtlsTransport;
use fic_oauth_core::request::{JWT_BEARER, JWT_POP};
use fic_oauth_core::{
    ClientIdentity, Error, ErrorCode, HttpTransport, TokenCredential, TokenRequestOptions,
    TokenSource,
};

const TENANT: &str = "3c1f0a9e-5d2b-4e7f-8a6c-0b9d8e7f6a5b";
const APP: &str = "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d";
const SECRET: &str = "right-secret";
const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
const GRAPH_URL: &str = "https://graph.microsoft.com/v1.0/applications";
const VAULT_SCOPE: &str = "https://vault.azure.net/.default";
const VAULT_URL: &str = "https://x.vault.azure.net/secrets/db?api-version=7.4";
const LEG1_APP: &str = "1e1e1e1e-0000-4000-8000-0000000000a1";
const LEG2_APP: &str = "2f2f2f2f-0000-4000-8000-0000000000b2";
const EXCHANGE_SCOPE: &str = "api://AzureADTokenExchange/.default";

/// A transport that sends production host names to `emulator` and trusts only its CA (as
/// `fic_tests::transport_for`).
fn transport_for(emulator: &EmulatorHandle) -> Result<MtlsTransport, Error> {
    let mut builder = MtlsTransport::builder()
        .built_in_roots(false)
        .add_root_certificate_pem(emulator.ca_certificate_pem().as_bytes())?;
    for (pattern, addr) in emulator.resolver_map() {
        builder = builder.resolve(&pattern, addr);
    }
    builder.build()
}

/// A fresh self-signed EC P-256 certificate with its key (as `fic_tests::new_identity`).
fn new_identity(name: &str) -> ClientIdentity {
    let generated = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let pem = format!(
        "{}{}",
        generated.cert.pem(),
        generated.signing_key.serialize_pem()
    );
    fic_assertion::load::from_pem(pem.as_bytes()).unwrap()
}

struct World {
    emulator: EmulatorHandle,
    transport: Arc<dyn HttpTransport>,
}

impl World {
    async fn start(certificate: Option<&ClientIdentity>) -> Self {
        let mut app = App::new(APP, TENANT).secret(SECRET);
        if let Some(certificate) = certificate {
            app = app.certificate(certificate.leaf_der().to_vec());
        }
        Self::with(Emulator::builder().app(app)).await
    }

    async fn with(builder: EmulatorBuilder) -> Self {
        let emulator = builder.start().await.unwrap();
        let transport = Arc::new(transport_for(&emulator).unwrap());
        Self {
            emulator,
            transport,
        }
    }

    /// A confidential client on this world's transport, with no region settings.
    fn client(&self) -> ConfidentialClientBuilder {
        self.client_for(APP)
    }

    /// A confidential client of `client_id`, as [`World::client`].
    fn client_for(&self, client_id: &str) -> ConfidentialClientBuilder {
        ConfidentialClient::builder(client_id)
            .authority(&format!("https://login.microsoftonline.com/{TENANT}"))
            .transport(self.transport.clone())
            .environment(HashMap::new())
            .region_detector(Arc::new(RegionDetector::new()))
    }
}

/// The FIC setup: the Leg-1 app (certificate 1) and the Leg-2 app (certificate 2, registered
/// for its mTLS requests) whose federated credential trusts the Leg-1 app's tokens for the
/// public cloud's exchange audience. Returns the world, both certificates and the Leg-1
/// credential.
async fn fic_world() -> (
    World,
    ClientIdentity,
    ClientIdentity,
    Arc<dyn TokenCredential>,
) {
    let cert1 = new_identity("leg1");
    let cert2 = new_identity("leg2");
    let leg1_app = App::new(LEG1_APP, TENANT).certificate(cert1.leaf_der().to_vec());
    let leg2_app = App::new(LEG2_APP, TENANT)
        .certificate(cert2.leaf_der().to_vec())
        .federated_credential(FederatedCredential::new(
            format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
            leg1_app.object_id.clone(),
            "api://AzureADTokenExchange",
        ));
    let world = World::with(Emulator::builder().app(leg1_app).app(leg2_app)).await;
    let leg1: Arc<dyn TokenCredential> = Arc::new(
        world
            .client_for(LEG1_APP)
            .certificate(cert1.clone())
            .build()
            .unwrap(),
    );
    (world, cert1, cert2, leg1)
}

/// The Leg-1 token `leg1` holds (from its cache: no request).
async fn cached_leg1_token(leg1: &Arc<dyn TokenCredential>) -> String {
    let token = leg1
        .get_token(&[EXCHANGE_SCOPE], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(token.source, TokenSource::Cache);
    token.token.expose().to_string()
}

/// A pipeline as an Azure SDK client builds it: the bearer policy for `scope` per try,
/// `http_client` as transport, no retries (a failure shows at once).
fn sdk_pipeline(
    credential: AzureCoreCredential,
    scope: &str,
    http_client: Arc<dyn HttpClient>,
) -> Pipeline {
    let auth: Arc<dyn Policy> = Arc::new(BearerTokenAuthorizationPolicy::new(
        Arc::new(credential),
        [scope],
    ));
    let options = ClientOptions {
        transport: Some(Transport::new(http_client)),
        retry: RetryOptions::none(),
        ..ClientOptions::default()
    };
    Pipeline::new(
        Some("fic-azure-core-tests"),
        Some(env!("CARGO_PKG_VERSION")),
        options,
        Vec::new(),
        vec![auth],
        None,
    )
}

async fn get(pipeline: &Pipeline, url: &str) -> azure_core::Result<RawResponse> {
    let mut request = Request::new(Url::parse(url)?, Method::Get);
    pipeline.send(&Context::new(), &mut request, None).await
}

#[tokio::test]
async fn bearer_token_from_a_secret_reaches_graph() {
    let world = World::start(None).await;
    let client = world.client().client_secret(SECRET).build().unwrap();
    let credential = AzureCoreCredential::new(client.clone());
    let http_client = Arc::new(credential.http_client(world.transport.clone()));
    let pipeline = sdk_pipeline(credential, GRAPH_SCOPE, http_client);

    let response = get(&pipeline, GRAPH_URL).await.unwrap();
    assert_eq!(response.status(), StatusCode::Ok);
    let body: serde_json::Value = response.body().json().unwrap();
    assert_eq!(body["scheme"], "Bearer");
    assert_eq!(body["bound"], false);
    assert_eq!(body["appid"], APP);
    assert_eq!(body["client_cert_thumbprint"], serde_json::Value::Null);

    // The token the resource saw is the one the credential holds (served from its cache now).
    let token = client
        .get_token(
            &[GRAPH_SCOPE],
            &fic_oauth_core::TokenRequestOptions::default(),
        )
        .await
        .unwrap();
    let log = world.emulator.log();
    assert_eq!(log.token_requests().len(), 1);
    let resource = log.resource_requests();
    assert_eq!(resource.len(), 1);
    assert_eq!(resource[0].host, "graph.microsoft.com");
    assert_eq!(resource[0].status, Some(200));
    assert_eq!(
        resource[0].header("authorization"),
        Some(format!("Bearer {}", token.token.expose()).as_str())
    );
    assert_eq!(resource[0].client_cert_thumbprint, None);

    // A second call reuses the policy's token: no new token request.
    get(&pipeline, GRAPH_URL).await.unwrap();
    assert_eq!(log.token_requests().len(), 1);
    assert_eq!(log.resource_requests().len(), 2);
}

#[tokio::test]
async fn mtls_pop_token_reaches_key_vault_with_its_binding_certificate() {
    let certificate = new_identity("app-cert");
    let world = World::start(Some(&certificate)).await;
    let client = world
        .client()
        .certificate(certificate.clone())
        .mtls_pop(true)
        .build()
        .unwrap();
    let credential = AzureCoreCredential::new(client.clone());
    let http_client = Arc::new(credential.http_client(world.transport.clone()));
    let pipeline = sdk_pipeline(credential, VAULT_SCOPE, http_client);

    let response = get(&pipeline, VAULT_URL).await.unwrap();
    assert_eq!(response.status(), StatusCode::Ok);
    let body: serde_json::Value = response.body().json().unwrap();
    assert_eq!(body["bound"], true);
    assert_eq!(body["scheme"], "mtls_pop");
    assert_eq!(body["token_type"], "mtls_pop");
    assert_eq!(body["cnf_x5t#S256"], certificate.thumbprint_s256());
    assert_eq!(
        body["client_cert_thumbprint"],
        certificate.thumbprint_s256()
    );

    let log = world.emulator.log();
    let token_requests = log.token_requests();
    assert_eq!(token_requests.len(), 1);
    assert_eq!(token_requests[0].host, "mtlsauth.microsoft.com");
    assert_eq!(token_requests[0].form_value("token_type"), Some("mtls_pop"));
    let resource = log.resource_requests();
    assert_eq!(resource.len(), 1);
    assert_eq!(resource[0].host, "x.vault.azure.net");
    assert_eq!(resource[0].status, Some(200));
    assert_eq!(
        resource[0].client_cert_thumbprint.as_deref(),
        Some(certificate.thumbprint_s256())
    );
    let token = client
        .get_token(
            &[VAULT_SCOPE],
            &fic_oauth_core::TokenRequestOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        resource[0].header("authorization"),
        Some(format!("mtls_pop {}", token.token.expose()).as_str())
    );

    // Resources that take bound tokens with the Bearer scheme: the certificate still goes.
    let credential = AzureCoreCredential::new(client.clone());
    let http_client = Arc::new(
        credential
            .http_client(world.transport.clone())
            .with_scheme(AuthorizationScheme::Bearer),
    );
    let bearer_scheme = sdk_pipeline(credential, VAULT_SCOPE, http_client);
    let response = get(&bearer_scheme, VAULT_URL).await.unwrap();
    let body: serde_json::Value = response.body().json().unwrap();
    assert_eq!(
        (body["scheme"].as_str(), body["bound"].as_bool()),
        (Some("Bearer"), Some(true))
    );
    assert_eq!(
        body["client_cert_thumbprint"],
        certificate.thumbprint_s256()
    );
}

#[tokio::test]
async fn mtls_pop_token_without_the_linked_client_is_refused() {
    let certificate = new_identity("app-cert");
    let world = World::start(Some(&certificate)).await;
    let client = world
        .client()
        .certificate(certificate.clone())
        .mtls_pop(true)
        .build()
        .unwrap();
    // The same transport, but an HTTP client that does not know the credential's tokens: the
    // bound token goes without its certificate, as with any other azure_core HTTP client.
    let credential = AzureCoreCredential::new(client);
    let unlinked = Arc::new(FicHttpClient::new(world.transport.clone()));
    let pipeline = sdk_pipeline(credential, VAULT_SCOPE, unlinked);

    let err = get(&pipeline, VAULT_URL).await.unwrap_err();
    assert_eq!(err.http_status(), Some(StatusCode::Unauthorized), "{err}");
    let resource = world.emulator.log().resource_requests();
    assert_eq!(resource.len(), 1);
    assert_eq!(resource[0].status, Some(401));
    assert_eq!(resource[0].client_cert_thumbprint, None);
    assert!(resource[0]
        .header("authorization")
        .is_some_and(|v| v.starts_with("Bearer ")));
}

#[tokio::test]
async fn a_wrong_secret_is_an_azure_core_credential_error_with_the_aadsts_code() {
    let world = World::start(None).await;
    let client = world
        .client()
        .client_secret("wrong-secret")
        .build()
        .unwrap();
    let credential = AzureCoreCredential::new(client);

    // Directly...
    let err = credential
        .get_token(&[GRAPH_SCOPE], None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Credential);
    let text = err.to_string();
    assert!(text.contains("invalid_client"), "{text}");
    assert!(text.contains("7000215"), "{text}");
    let original = err
        .downcast_ref::<Error>()
        .expect("the fic-rs error is the source");
    assert_eq!(original.code(), &ErrorCode::server("invalid_client"));
    assert_eq!(original.aadsts(), Some(7_000_215));
    assert!(!text.contains("wrong-secret"), "{text}");

    // ...and through a pipeline, which never reaches the resource.
    let http_client = Arc::new(credential.http_client(world.transport.clone()));
    let pipeline = sdk_pipeline(credential, GRAPH_SCOPE, http_client);
    let err = get(&pipeline, GRAPH_URL).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Credential);
    assert!(err.to_string().contains("invalid_client"), "{err}");
    assert!(err.to_string().contains("7000215"), "{err}");
    assert!(world.emulator.log().resource_requests().is_empty());
}

#[tokio::test]
async fn fic_two_leg_pop_token_reaches_key_vault_with_the_leg2_certificate() {
    let (world, cert1, cert2, leg1) = fic_world().await;
    // Leg 2 asks for mTLS PoP (its `get_token` does, as the pipeline calls it) and presents
    // certificate 2; Leg 1 stays Bearer.
    let two_leg = TwoLeg::builder(leg1.clone(), world.client_for(LEG2_APP).mtls_pop(true))
        .binding_certificate(cert2.clone())
        .build()
        .unwrap();
    let credential = AzureCoreCredential::new(two_leg.clone());
    let http_client = Arc::new(credential.http_client(world.transport.clone()));
    let pipeline = sdk_pipeline(credential, VAULT_SCOPE, http_client);

    let response = get(&pipeline, VAULT_URL).await.unwrap();
    assert_eq!(response.status(), StatusCode::Ok);
    let body: serde_json::Value = response.body().json().unwrap();
    assert_eq!(body["appid"], LEG2_APP);
    assert_eq!(body["bound"], true);
    assert_eq!(body["scheme"], "mtls_pop");
    assert_eq!(body["cnf_x5t#S256"], cert2.thumbprint_s256());
    assert_eq!(body["client_cert_thumbprint"], cert2.thumbprint_s256());

    // Both legs, as the emulator saw them.
    let log = world.emulator.log();
    let token_requests = log.token_requests();
    assert_eq!(token_requests.len(), 2);
    let (leg1_request, leg2_request) = (&token_requests[0], &token_requests[1]);
    assert_eq!(leg1_request.host, "login.microsoftonline.com");
    assert_eq!(leg1_request.form_value("client_id"), Some(LEG1_APP));
    assert_eq!(leg1_request.form_value("scope"), Some(EXCHANGE_SCOPE));
    assert_eq!(
        leg1_request.form_value("client_assertion_type"),
        Some(JWT_BEARER)
    );
    assert_eq!(leg1_request.client_cert_thumbprint, None);
    assert_eq!(leg2_request.host, "mtlsauth.microsoft.com");
    assert_eq!(leg2_request.form_value("client_id"), Some(LEG2_APP));
    assert_eq!(leg2_request.form_value("scope"), Some(VAULT_SCOPE));
    assert_eq!(leg2_request.form_value("token_type"), Some("mtls_pop"));
    assert_eq!(
        leg2_request.form_value("client_assertion_type"),
        Some(JWT_POP)
    );
    assert_eq!(
        leg2_request.client_cert_thumbprint.as_deref(),
        Some(cert2.thumbprint_s256())
    );
    assert_ne!(cert1.thumbprint_s256(), cert2.thumbprint_s256());
    // Leg 2's assertion is exactly the Leg-1 token.
    assert_eq!(
        leg2_request.form_value("client_assertion"),
        Some(cached_leg1_token(&leg1).await.as_str())
    );

    // The Authorization header the resource saw carries the Leg-2 token, with the mtls_pop
    // scheme, over a TLS connection with certificate 2.
    let token = two_leg
        .get_token(&[VAULT_SCOPE], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(token.source, TokenSource::Cache);
    let resource = log.resource_requests();
    assert_eq!(resource.len(), 1);
    assert_eq!(resource[0].host, "x.vault.azure.net");
    assert_eq!(resource[0].status, Some(200));
    assert_eq!(
        resource[0].header("authorization"),
        Some(format!("mtls_pop {}", token.token.expose()).as_str())
    );
    assert_eq!(
        resource[0].client_cert_thumbprint.as_deref(),
        Some(cert2.thumbprint_s256())
    );

    // A second call reuses the policy's token: no request on either leg.
    get(&pipeline, VAULT_URL).await.unwrap();
    assert_eq!(log.token_requests().len(), 2);
    assert_eq!(log.resource_requests().len(), 2);
}

#[tokio::test]
async fn fic_two_leg_bearer_token_reaches_graph_without_a_certificate() {
    let (world, _, _, leg1) = fic_world().await;
    let two_leg = TwoLeg::builder(leg1.clone(), world.client_for(LEG2_APP))
        .build()
        .unwrap();
    let credential = AzureCoreCredential::new(two_leg.clone());
    let http_client = Arc::new(credential.http_client(world.transport.clone()));
    let pipeline = sdk_pipeline(credential, GRAPH_SCOPE, http_client);

    let response = get(&pipeline, GRAPH_URL).await.unwrap();
    assert_eq!(response.status(), StatusCode::Ok);
    let body: serde_json::Value = response.body().json().unwrap();
    assert_eq!(body["appid"], LEG2_APP);
    assert_eq!(body["scheme"], "Bearer");
    assert_eq!(body["bound"], false);

    let log = world.emulator.log();
    let token_requests = log.token_requests();
    assert_eq!(token_requests.len(), 2);
    let (leg1_request, leg2_request) = (&token_requests[0], &token_requests[1]);
    assert_eq!(leg1_request.form_value("client_id"), Some(LEG1_APP));
    assert_eq!(leg1_request.form_value("scope"), Some(EXCHANGE_SCOPE));
    assert_eq!(leg2_request.host, "login.microsoftonline.com");
    assert_eq!(leg2_request.form_value("client_id"), Some(LEG2_APP));
    assert_eq!(leg2_request.form_value("scope"), Some(GRAPH_SCOPE));
    assert_eq!(
        leg2_request.form_value("client_assertion_type"),
        Some(JWT_BEARER)
    );
    assert_eq!(leg2_request.form_value("token_type"), None);
    assert_eq!(leg2_request.client_cert_thumbprint, None);
    assert_eq!(
        leg2_request.form_value("client_assertion"),
        Some(cached_leg1_token(&leg1).await.as_str())
    );

    let token = two_leg
        .get_token(&[GRAPH_SCOPE], &TokenRequestOptions::default())
        .await
        .unwrap();
    let resource = log.resource_requests();
    assert_eq!(resource.len(), 1);
    assert_eq!(resource[0].host, "graph.microsoft.com");
    assert_eq!(
        resource[0].header("authorization"),
        Some(format!("Bearer {}", token.token.expose()).as_str())
    );
    assert_eq!(resource[0].client_cert_thumbprint, None);
}
