//! An `azure_core` pipeline, built as an Azure SDK client builds one (the bearer policy per try,
//! our HTTP client as transport), driven against the emulator with fic-rs credentials: Bearer,
//! mTLS PoP, and a failed token request.
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
use fic_emulator::{App, Emulator, EmulatorHandle};
use fic_flows::{ConfidentialClient, ConfidentialClientBuilder, RegionDetector};
use fic_mtls_transport::MtlsTransport;
use fic_oauth_core::{ClientIdentity, Error, ErrorCode, HttpTransport, TokenCredential};

const TENANT: &str = "3c1f0a9e-5d2b-4e7f-8a6c-0b9d8e7f6a5b";
const APP: &str = "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d";
const SECRET: &str = "right-secret";
const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
const GRAPH_URL: &str = "https://graph.microsoft.com/v1.0/applications";
const VAULT_SCOPE: &str = "https://vault.azure.net/.default";
const VAULT_URL: &str = "https://x.vault.azure.net/secrets/db?api-version=7.4";

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
        let emulator = Emulator::builder().app(app).start().await.unwrap();
        let transport = Arc::new(transport_for(&emulator).unwrap());
        Self {
            emulator,
            transport,
        }
    }

    /// A confidential client on this world's transport, with no region settings.
    fn client(&self) -> ConfidentialClientBuilder {
        ConfidentialClient::builder(APP)
            .authority(&format!("https://login.microsoftonline.com/{TENANT}"))
            .transport(self.transport.clone())
            .environment(HashMap::new())
            .region_detector(Arc::new(RegionDetector::new()))
    }
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
