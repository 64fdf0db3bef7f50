//! The confidential client against a scripted transport: hosts, bodies, identities, cache,
//! retries, region, hooks. (End-to-end runs against the emulator live in the workspace's
//! `tests/`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use fic_assertion::{AssertionProvider, AssertionRequest, ClientAssertion};
use fic_flows::{ConfidentialClient, OutgoingTokenRequest, RegionDetector, ResourceClient};
use fic_oauth_core::authority::RegionConfig;
use fic_oauth_core::{
    ClientIdentity, Error, ErrorCode, HttpTransport, ManualClock, TokenSource, TokenType,
    TransportRequest,
};

const CLIENT: &str = "11111111-2222-3333-4444-555555555555";
const VAULT: &str = "https://vault.azure.net/.default";

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    headers: http::HeaderMap,
    form: Vec<(String, String)>,
    identity: Option<String>,
}

impl Seen {
    fn param(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

type Reply = Result<(u16, Vec<(&'static str, String)>, String), Error>;

/// Answers from a queue (or a default), records every request.
#[derive(Debug, Default)]
struct Scripted {
    seen: Mutex<Vec<Seen>>,
    replies: Mutex<VecDeque<Reply>>,
    default_token_type: Mutex<String>,
}

impl Scripted {
    fn new() -> Arc<Self> {
        let s = Arc::new(Self::default());
        *s.default_token_type.lock().unwrap() = "Bearer".into();
        s
    }
    fn push(&self, reply: Reply) {
        self.replies.lock().unwrap().push_back(reply);
    }
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    fn token_body(token_type: &str, n: usize) -> String {
        format!(
            r#"{{"token_type":"{token_type}","access_token":"at-{n}","expires_in":3599,"ext_expires_in":3599}}"#
        )
    }
}

#[async_trait]
impl HttpTransport for Scripted {
    async fn send(&self, request: TransportRequest) -> Result<http::Response<Bytes>, Error> {
        let form = url::form_urlencoded::parse(request.request.body())
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect();
        let n = {
            let mut seen = self.seen.lock().unwrap();
            seen.push(Seen {
                method: request.request.method().to_string(),
                uri: request.request.uri().to_string(),
                headers: request.request.headers().clone(),
                form,
                identity: request
                    .identity
                    .as_ref()
                    .map(|i| i.thumbprint_s256().to_string()),
            });
            seen.len()
        };
        let reply = self.replies.lock().unwrap().pop_front().unwrap_or_else(|| {
            let token_type = self.default_token_type.lock().unwrap().clone();
            Ok((200, vec![], Self::token_body(&token_type, n)))
        });
        let (status, headers, body) = reply?;
        let mut response = http::Response::builder().status(status);
        for (name, value) in headers {
            response = response.header(name, value);
        }
        Ok(response.body(Bytes::from(body)).unwrap())
    }
}

fn identity() -> ClientIdentity {
    let generated = rcgen::generate_simple_self_signed(vec!["client.example".to_owned()]).unwrap();
    let pem = format!(
        "{}{}",
        generated.cert.pem(),
        generated.signing_key.serialize_pem()
    );
    fic_assertion::load::from_pem(pem.as_bytes()).unwrap()
}

fn builder(transport: &Arc<Scripted>, clock: &ManualClock) -> fic_flows::ConfidentialClientBuilder {
    ConfidentialClient::builder(CLIENT)
        .authority("https://login.microsoftonline.com/tenant-1/")
        .transport(transport.clone())
        .clock(Arc::new(clock.clone()))
        .sleeper(Arc::new(clock.clone()))
        .environment(HashMap::new())
        .region_detector(Arc::new(RegionDetector::new()))
}

fn jwt_part(jwt: &str, index: usize) -> serde_json::Value {
    let part = jwt.split('.').nth(index).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn secret_global_then_cached() {
    let transport = Scripted::new();
    let clock = ManualClock::default();
    let client = builder(&transport, &clock)
        .client_secret("s3cr3t")
        .build()
        .unwrap();
    let token = client.acquire_token_for_client([VAULT]).await.unwrap();
    assert_eq!(token.token_type, TokenType::Bearer);
    assert_eq!(token.source, TokenSource::IdentityProvider);
    let again = client.acquire_token_for_client([VAULT]).await.unwrap();
    assert_eq!(again.source, TokenSource::Cache);
    let seen = transport.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(
        seen[0].uri,
        "https://login.microsoftonline.com/tenant-1/oauth2/v2.0/token"
    );
    assert_eq!(
        seen[0].form,
        vec![
            ("client_id".to_string(), CLIENT.to_string()),
            ("client_secret".to_string(), "s3cr3t".to_string()),
            ("scope".to_string(), VAULT.to_string()),
            ("grant_type".to_string(), "client_credentials".to_string()),
        ]
    );
    assert!(seen[0].identity.is_none());
    assert_eq!(seen[0].headers["x-client-sku"], "fic-rs");
}

#[tokio::test]
async fn certificate_mtls_pop_goes_to_mtlsauth_with_the_certificate() {
    let transport = Scripted::new();
    *transport.default_token_type.lock().unwrap() = "mtls_pop".into();
    let clock = ManualClock::default();
    let cert = identity();
    let client = builder(&transport, &clock)
        .certificate(cert.clone())
        .region("westus3")
        .build()
        .unwrap();
    let token = client
        .acquire_token_for_client([VAULT])
        .with_mtls_pop()
        .await
        .unwrap();
    assert_eq!(token.token_type, TokenType::MtlsPop);
    assert_eq!(token.binding_thumbprint(), Some(cert.thumbprint_s256()));
    assert_eq!(token.authorization_header().expose(), "mtls_pop at-1");
    let seen = transport.seen();
    assert_eq!(
        seen[0].uri,
        "https://westus3.mtlsauth.microsoft.com/tenant-1/oauth2/v2.0/token"
    );
    assert_eq!(seen[0].identity.as_deref(), Some(cert.thumbprint_s256()));
    assert_eq!(seen[0].param("token_type"), Some("mtls_pop"));
    assert_eq!(seen[0].param("client_assertion"), None);
    assert_eq!(seen[0].param("client_assertion_type"), None);
    // Cached with its kid: a second call sends nothing.
    let cached = client
        .acquire_token_for_client([VAULT])
        .with_mtls_pop()
        .await
        .unwrap();
    assert_eq!(cached.source, TokenSource::Cache);
    assert_eq!(cached.binding_thumbprint(), Some(cert.thumbprint_s256()));
    assert_eq!(transport.seen().len(), 1);
    // A Bearer request for the same scope is another entry.
    *transport.default_token_type.lock().unwrap() = "Bearer".into();
    let bearer = client.acquire_token_for_client([VAULT]).await.unwrap();
    assert_eq!(bearer.token_type, TokenType::Bearer);
    assert!(bearer.binding.is_none());
    assert_eq!(transport.seen().len(), 2);
}

#[tokio::test]
async fn bearer_downgrade_is_a_mismatch_and_is_not_cached() {
    let transport = Scripted::new();
    let clock = ManualClock::default();
    let client = builder(&transport, &clock)
        .certificate(identity())
        .build()
        .unwrap();
    let err = client
        .acquire_token_for_client([VAULT])
        .with_mtls_pop()
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::TOKEN_TYPE_MISMATCH);
    let err = client
        .acquire_token_for_client([VAULT])
        .with_mtls_pop()
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::TOKEN_TYPE_MISMATCH);
    assert_eq!(transport.seen().len(), 2, "nothing was cached");
}

#[tokio::test]
async fn certificate_bearer_signs_an_assertion_for_the_endpoint_used() {
    let transport = Scripted::new();
    let clock = ManualClock::default();
    let cert = identity();
    let client = builder(&transport, &clock)
        .certificate(cert.clone())
        .region("eastus")
        .build()
        .unwrap();
    client.acquire_token_for_client([VAULT]).await.unwrap();
    let seen = &transport.seen()[0];
    assert_eq!(
        seen.uri,
        "https://eastus.login.microsoft.com/tenant-1/oauth2/v2.0/token"
    );
    assert!(seen.identity.is_none());
    assert_eq!(
        seen.param("client_assertion_type"),
        Some(fic_oauth_core::request::JWT_BEARER)
    );
    let jwt = seen.param("client_assertion").unwrap();
    let header = jwt_part(jwt, 0);
    let payload = jwt_part(jwt, 1);
    assert_eq!(header["x5t#S256"], cert.thumbprint_s256());
    assert_eq!(
        payload["aud"],
        "https://eastus.login.microsoft.com/tenant-1/oauth2/v2.0/token"
    );
    assert_eq!(payload["iss"], CLIENT);
    assert_eq!(payload["sub"], CLIENT);
}

#[derive(Debug)]
struct Bound {
    binding: Option<ClientIdentity>,
    seen: Mutex<Vec<AssertionRequest>>,
}

#[async_trait]
impl AssertionProvider for Bound {
    async fn assertion(&self, request: &AssertionRequest) -> Result<ClientAssertion, Error> {
        self.seen.lock().unwrap().push(request.clone());
        let assertion = ClientAssertion::new(format!("leg1-for-{}", request.token_endpoint))?;
        Ok(match &self.binding {
            Some(b) => assertion.with_binding(b.clone()),
            None => assertion,
        })
    }
}

#[tokio::test]
async fn assertion_with_binding_is_jwt_pop_over_mtls() {
    let transport = Scripted::new();
    *transport.default_token_type.lock().unwrap() = "mtls_pop".into();
    let clock = ManualClock::default();
    let cert = identity();
    let provider = Arc::new(Bound {
        binding: Some(cert.clone()),
        seen: Mutex::new(vec![]),
    });
    let client = builder(&transport, &clock)
        .credential(fic_flows::ClientCredential::Assertion(provider.clone()))
        .build()
        .unwrap();
    let token = client
        .acquire_token_for_client([VAULT])
        .with_mtls_pop()
        .with_assertion_fmi_path("agent-1")
        .await
        .unwrap();
    assert_eq!(token.binding_thumbprint(), Some(cert.thumbprint_s256()));
    let seen = &transport.seen()[0];
    assert_eq!(
        seen.uri,
        "https://mtlsauth.microsoft.com/tenant-1/oauth2/v2.0/token"
    );
    assert_eq!(
        seen.param("client_assertion_type"),
        Some(fic_oauth_core::request::JWT_POP)
    );
    assert_eq!(
        seen.param("client_assertion"),
        Some("leg1-for-https://mtlsauth.microsoft.com/tenant-1/oauth2/v2.0/token")
    );
    assert_eq!(seen.param("token_type"), Some("mtls_pop"));
    assert_eq!(seen.identity.as_deref(), Some(cert.thumbprint_s256()));
    let asked = provider.seen.lock().unwrap().clone();
    assert_eq!(
        asked.len(),
        1,
        "the pre-flight assertion was used for the request"
    );
    assert_eq!(asked[0].fmi_path.as_deref(), Some("agent-1"));
    assert_eq!(asked[0].tenant_id.as_deref(), Some("tenant-1"));
}

#[tokio::test]
async fn pop_without_a_binding_is_refused_before_any_request() {
    let transport = Scripted::new();
    let clock = ManualClock::default();
    let provider = Bound {
        binding: None,
        seen: Mutex::new(vec![]),
    };
    let client = builder(&transport, &clock)
        .assertion_provider(provider)
        .build()
        .unwrap();
    let err = client
        .acquire_token_for_client([VAULT])
        .with_mtls_pop()
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::MTLS_CERTIFICATE_NOT_PROVIDED);
    let secret = builder(&transport, &clock)
        .client_secret("s")
        .build()
        .unwrap();
    let err = secret
        .acquire_token_for_client([VAULT])
        .with_mtls_pop()
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::MTLS_CERTIFICATE_NOT_PROVIDED);
    assert!(transport.seen().is_empty());
}

#[tokio::test]
async fn a_5xx_is_retried_once_after_a_second() {
    let transport = Scripted::new();
    transport.push(Ok((500, vec![], "oops".into())));
    let clock = ManualClock::default();
    let client = builder(&transport, &clock)
        .client_secret("s")
        .build()
        .unwrap();
    client.acquire_token_for_client([VAULT]).await.unwrap();
    assert_eq!(transport.seen().len(), 2);
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(1)]);

    transport.push(Ok((503, vec![], "a".into())));
    transport.push(Ok((503, vec![], "b".into())));
    let err = client
        .acquire_token_for_client(["other/.default"])
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::HTTP_STATUS);
    assert_eq!(err.status(), Some(503));
    assert_eq!(transport.seen().len(), 4);
}

#[tokio::test]
async fn throttling_is_not_retried_and_blocks_the_request() {
    let transport = Scripted::new();
    transport.push(Ok((
        429,
        vec![("retry-after", "30".into())],
        r#"{"error":"temporarily_unavailable","error_codes":[50196]}"#.into(),
    )));
    let clock = ManualClock::default();
    let client = builder(&transport, &clock)
        .client_secret("s")
        .build()
        .unwrap();
    let err = client.acquire_token_for_client([VAULT]).await.unwrap_err();
    assert_eq!(err.code(), &ErrorCode::THROTTLED);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
    let err = client.acquire_token_for_client([VAULT]).await.unwrap_err();
    assert_eq!(err.code(), &ErrorCode::THROTTLED);
    assert_eq!(transport.seen().len(), 1);
    assert!(clock.sleeps().is_empty());
    clock.advance(Duration::from_secs(31));
    client.acquire_token_for_client([VAULT]).await.unwrap();
    assert_eq!(transport.seen().len(), 2);
}

#[tokio::test]
async fn server_errors_keep_the_aadsts_code() {
    let transport = Scripted::new();
    transport.push(Ok((
        401,
        vec![],
        r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215],"trace_id":"t","correlation_id":"c"}"#.into(),
    )));
    let clock = ManualClock::default();
    let client = builder(&transport, &clock)
        .client_secret("wrong")
        .build()
        .unwrap();
    let err = client.acquire_token_for_client([VAULT]).await.unwrap_err();
    assert_eq!(err.code(), &"invalid_client");
    assert_eq!(err.aadsts(), Some(7_000_215));
    assert!(!format!("{err:?} {err}").contains("wrong"));
}

#[tokio::test]
async fn region_from_environment_and_detection() {
    let transport = Scripted::new();
    let clock = ManualClock::default();
    let env = HashMap::from([("MSAL_FORCE_REGION".to_string(), "centralus".to_string())]);
    let client = builder(&transport, &clock)
        .client_secret("s")
        .environment(env)
        .build()
        .unwrap();
    client.acquire_token_for_client([VAULT]).await.unwrap();
    assert_eq!(
        transport.seen()[0].uri,
        "https://centralus.login.microsoft.com/tenant-1/oauth2/v2.0/token"
    );

    // Auto-detect through IMDS, once per detector.
    let transport = Scripted::new();
    transport.push(Ok((200, vec![], r#"{"location":"WestUS3"}"#.into())));
    let detector = Arc::new(RegionDetector::new());
    let client = builder(&transport, &clock)
        .client_secret("s")
        .region_config(RegionConfig::AutoDetect)
        .region_detector(detector.clone())
        .build()
        .unwrap();
    client.acquire_token_for_client([VAULT]).await.unwrap();
    client
        .acquire_token_for_client(["other/.default"])
        .await
        .unwrap();
    let seen = transport.seen();
    assert_eq!(seen[0].method, "GET");
    assert_eq!(
        seen[0].uri,
        "http://169.254.169.254/metadata/instance/compute?api-version=2021-02-01"
    );
    assert_eq!(seen[0].headers["metadata"], "true");
    assert_eq!(
        seen[1].uri,
        "https://westus3.login.microsoft.com/tenant-1/oauth2/v2.0/token"
    );
    assert_eq!(seen.len(), 3, "IMDS asked once");

    // A failed detection is remembered; the global host is used.
    let transport = Scripted::new();
    transport.push(Ok((404, vec![], "{}".into())));
    let client = builder(&transport, &clock)
        .client_secret("s")
        .region_config(RegionConfig::AutoDetect)
        .build()
        .unwrap();
    client.acquire_token_for_client([VAULT]).await.unwrap();
    client
        .acquire_token_for_client(["x/.default"])
        .await
        .unwrap();
    let seen = transport.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen[1].uri,
        "https://login.microsoftonline.com/tenant-1/oauth2/v2.0/token"
    );

    // An invalid explicit region falls back to the global host.
    let transport = Scripted::new();
    let client = builder(&transport, &clock)
        .client_secret("s")
        .region("west us")
        .build()
        .unwrap();
    client.acquire_token_for_client([VAULT]).await.unwrap();
    assert_eq!(
        transport.seen()[0].uri,
        "https://login.microsoftonline.com/tenant-1/oauth2/v2.0/token"
    );
}

#[tokio::test]
async fn the_request_hook_sees_and_extends_the_request() {
    let transport = Scripted::new();
    *transport.default_token_type.lock().unwrap() = "mtls_pop".into();
    let clock = ManualClock::default();
    let observed = Arc::new(Mutex::new(Vec::new()));
    let sink = observed.clone();
    let cert = identity();
    let provider = Bound {
        binding: Some(cert.clone()),
        seen: Mutex::new(vec![]),
    };
    let client = builder(&transport, &clock)
        .assertion_provider(provider)
        .request_hook(move |request: &mut OutgoingTokenRequest| {
            sink.lock().unwrap().push((
                request.uri().to_string(),
                request
                    .form_parameter("client_assertion_type")
                    .map(|v| v.expose().to_string()),
                request.client_certificate_thumbprint().map(str::to_string),
            ));
            request.add_form_parameter("dc", "ESTSR-PUB-WUS3")?;
            request
                .headers_mut()
                .insert("x-monitor", http::HeaderValue::from_static("1"));
            Ok(())
        })
        .build()
        .unwrap();
    client
        .acquire_token_for_client([VAULT])
        .with_mtls_pop()
        .await
        .unwrap();
    let observed = observed.lock().unwrap().clone();
    assert_eq!(
        observed,
        vec![(
            "https://mtlsauth.microsoft.com/tenant-1/oauth2/v2.0/token".to_string(),
            Some(fic_oauth_core::request::JWT_POP.to_string()),
            Some(cert.thumbprint_s256().to_string()),
        )]
    );
    let seen = &transport.seen()[0];
    assert_eq!(seen.param("dc"), Some("ESTSR-PUB-WUS3"));
    assert_eq!(seen.headers["x-monitor"], "1");
    assert_eq!(seen.form.last().unwrap().0, "dc");
}

#[tokio::test]
async fn resource_calls_present_the_binding_for_pop_tokens() {
    let transport = Scripted::new();
    *transport.default_token_type.lock().unwrap() = "mtls_pop".into();
    let clock = ManualClock::default();
    let cert = identity();
    let client = builder(&transport, &clock)
        .certificate(cert.clone())
        .build()
        .unwrap();
    let token = client
        .acquire_token_for_client([VAULT])
        .with_mtls_pop()
        .await
        .unwrap();
    transport.push(Ok((200, vec![], r#"{"ok":true}"#.into())));
    let resource = ResourceClient::new(transport.clone());
    let answer = resource
        .get("https://myvault.vault.azure.net/secrets/a", &token)
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json().unwrap()["ok"], true);
    let seen = transport.seen();
    let call = seen.last().unwrap();
    assert_eq!(call.method, "GET");
    assert_eq!(call.identity.as_deref(), Some(cert.thumbprint_s256()));
    assert_eq!(call.headers["authorization"], "mtls_pop at-1");
}

#[tokio::test]
async fn token_credential_uses_the_client_defaults() {
    use fic_oauth_core::{TokenCredential, TokenRequestOptions};
    let transport = Scripted::new();
    *transport.default_token_type.lock().unwrap() = "mtls_pop".into();
    let clock = ManualClock::default();
    let cert = identity();
    let client = builder(&transport, &clock)
        .certificate(cert.clone())
        .mtls_pop(true)
        .build()
        .unwrap();
    let credential: Arc<dyn TokenCredential> = Arc::new(client);
    let token = credential
        .get_token(&[VAULT], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(token.binding_thumbprint(), Some(cert.thumbprint_s256()));
    let forced = credential
        .get_token(
            &[VAULT],
            &TokenRequestOptions::default().with_force_refresh(true),
        )
        .await
        .unwrap();
    assert_eq!(forced.source, TokenSource::IdentityProvider);
    assert_eq!(transport.seen().len(), 2);
}

#[tokio::test]
async fn extra_body_parameters_are_part_of_the_cache_key() {
    let transport = Scripted::new();
    let clock = ManualClock::default();
    let cache = Arc::new(fic_token_cache::MemoryCache::with_clock(Arc::new(
        clock.clone(),
    )));
    let client = builder(&transport, &clock)
        .client_secret("s")
        .cache(cache.clone())
        .build()
        .unwrap();
    // A token asked for with an extra body parameter...
    let with_extra = client
        .acquire_token_for_client([VAULT])
        .with_extra_body_parameter("slice", "secret-looking-value")
        .await
        .unwrap();
    assert_eq!(
        transport.seen()[0].param("slice"),
        Some("secret-looking-value")
    );
    // ...is never served to a request without it, nor to one with another value.
    let plain = client.acquire_token_for_client([VAULT]).await.unwrap();
    assert_eq!(plain.source, TokenSource::IdentityProvider);
    assert_ne!(plain.token.expose(), with_extra.token.expose());
    let other = client
        .acquire_token_for_client([VAULT])
        .with_extra_body_parameter("slice", "another")
        .await
        .unwrap();
    assert_eq!(other.source, TokenSource::IdentityProvider);
    assert_eq!(transport.seen().len(), 3);
    // The same parameter again is a hit.
    let again = client
        .acquire_token_for_client([VAULT])
        .with_extra_body_parameter("slice", "secret-looking-value")
        .await
        .unwrap();
    assert_eq!(again.source, TokenSource::Cache);
    assert_eq!(again.token.expose(), with_extra.token.expose());
    assert_eq!(transport.seen().len(), 3);
    // The key holds a digest, never the value.
    let keys: Vec<_> = cache.entries().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(keys.iter().all(|k| !k.as_str().contains("secret-looking")));
    assert_eq!(
        keys.iter()
            .filter(|k| k.as_str().contains("-atext-"))
            .count(),
        2
    );
    // Parameters with a method and cache component of their own are refused as extras.
    for name in ["fmi_path", "credential_fmi_path"] {
        let refused = client
            .acquire_token_for_client([VAULT])
            .with_extra_body_parameter(name, "agent-a")
            .await
            .unwrap_err();
        assert_eq!(refused.code(), &ErrorCode::INVALID_ARGUMENT);
    }
    assert_eq!(transport.seen().len(), 3);
}

#[tokio::test]
async fn fmi_paths_are_keyed_as_they_are_sent() {
    let transport = Scripted::new();
    let clock = ManualClock::default();
    let client = builder(&transport, &clock)
        .client_secret("s")
        .build()
        .unwrap();
    let first = client
        .acquire_token_for_client([VAULT])
        .with_fmi_path(" agent ")
        .await
        .unwrap();
    assert_eq!(transport.seen()[0].param("fmi_path"), Some("agent"));
    let second = client
        .acquire_token_for_client([VAULT])
        .with_fmi_path("agent")
        .await
        .unwrap();
    assert_eq!(second.source, TokenSource::Cache);
    assert_eq!(second.token.expose(), first.token.expose());
    // A blank path is no path: the plain entry, not a third one.
    let plain = client.acquire_token_for_client([VAULT]).await.unwrap();
    let blank = client
        .acquire_token_for_client([VAULT])
        .with_fmi_path("  ")
        .await
        .unwrap();
    assert_eq!(blank.token.expose(), plain.token.expose());
    assert_eq!(transport.seen().len(), 2);
    assert_eq!(transport.seen()[1].param("fmi_path"), None);
}

#[tokio::test]
async fn an_unbound_pop_token_is_not_sent_to_the_resource() {
    let transport = Scripted::new();
    let mut token = fic_oauth_core::AccessToken::new(
        fic_oauth_core::Secret::new("bound-elsewhere"),
        TokenType::MtlsPop,
        std::time::UNIX_EPOCH + Duration::from_secs(10_000),
    );
    let resource = ResourceClient::new(transport.clone());
    let refused = resource
        .get("https://myvault.vault.azure.net/secrets/a", &token)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), &ErrorCode::MTLS_CERTIFICATE_NOT_PROVIDED);
    assert!(transport.seen().is_empty(), "nothing was sent");
    // With its certificate it goes, over TLS with that certificate.
    let cert = identity();
    token.binding = Some(cert.clone());
    transport.push(Ok((200, vec![], "{}".into())));
    resource
        .get("https://myvault.vault.azure.net/secrets/a", &token)
        .await
        .unwrap();
    assert_eq!(
        transport.seen()[0].identity.as_deref(),
        Some(cert.thumbprint_s256())
    );
}

/// A Leg-1 credential that hands out what it is told to, and counts its calls.
#[derive(Debug)]
struct ScriptedLeg1 {
    tokens: Mutex<VecDeque<fic_oauth_core::AccessToken>>,
    forced: Mutex<Vec<bool>>,
}

#[async_trait]
impl fic_oauth_core::TokenCredential for ScriptedLeg1 {
    async fn get_token(
        &self,
        _scopes: &[&str],
        options: &fic_oauth_core::TokenRequestOptions,
    ) -> Result<fic_oauth_core::AccessToken, Error> {
        self.forced.lock().unwrap().push(options.force_refresh);
        self.tokens
            .lock()
            .unwrap()
            .pop_front()
            .ok_or_else(|| Error::new(ErrorCode::INTERNAL, "no more tokens"))
    }
}

fn leg1_token(value: &str, expires_on: std::time::SystemTime) -> fic_oauth_core::AccessToken {
    fic_oauth_core::AccessToken::new(
        fic_oauth_core::Secret::new(value),
        TokenType::Bearer,
        expires_on,
    )
}

#[tokio::test]
async fn an_expired_leg1_token_is_never_sent_as_the_assertion() {
    use fic_flows::{FicLeg2, TwoLeg};
    use fic_oauth_core::Clock as _;
    let transport = Scripted::new();
    let clock = ManualClock::default();
    clock.advance(Duration::from_secs(1_000_000));
    let now = clock.now();
    let expired = now - Duration::from_secs(1);
    let fresh = now + Duration::from_secs(3600);

    // The credential hands back an expired token: asked again with a forced refresh, and the
    // fresh one is what goes out.
    let leg1 = Arc::new(ScriptedLeg1 {
        tokens: Mutex::new(VecDeque::from([
            leg1_token("leg1-expired", expired),
            leg1_token("leg1-fresh", fresh),
        ])),
        forced: Mutex::new(Vec::new()),
    });
    let two_leg = TwoLeg::builder(leg1.clone(), builder(&transport, &clock))
        .build()
        .unwrap();
    two_leg.acquire_token([VAULT]).await.unwrap();
    assert_eq!(*leg1.forced.lock().unwrap(), vec![false, true]);
    let seen = transport.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].param("client_assertion"), Some("leg1-fresh"));

    // Expired twice: an error, and nothing sent.
    let leg1 = Arc::new(ScriptedLeg1 {
        tokens: Mutex::new(VecDeque::from([
            leg1_token("leg1-expired", expired),
            leg1_token("leg1-still-expired", expired),
        ])),
        forced: Mutex::new(Vec::new()),
    });
    let transport = Scripted::new();
    let two_leg = TwoLeg::builder(leg1, builder(&transport, &clock))
        .build()
        .unwrap();
    let error = two_leg.acquire_token([VAULT]).await.unwrap_err();
    assert_eq!(error.code(), &ErrorCode::INVALID_CLIENT_ASSERTION);
    assert!(transport.seen().is_empty());

    // Leg 2 by hand refuses an expired Leg-1 token before any request.
    let leg2 = FicLeg2::new(builder(&transport, &clock)).unwrap();
    let error = leg2
        .exchange(&leg1_token("leg1-expired", expired), [VAULT])
        .unwrap_err();
    assert_eq!(error.code(), &ErrorCode::INVALID_CLIENT_ASSERTION);
    leg2.exchange(&leg1_token("leg1-fresh", fresh), [VAULT])
        .unwrap()
        .await
        .unwrap();
    assert_eq!(
        transport.seen()[0].param("client_assertion"),
        Some("leg1-fresh")
    );
}

#[tokio::test]
async fn a_token_in_a_shared_cache_is_served_before_region_detection() {
    let clock = ManualClock::default();
    let cache: Arc<dyn fic_token_cache::TokenCache> = Arc::new(
        fic_token_cache::MemoryCache::with_clock(Arc::new(clock.clone())),
    );
    // One process acquired the token (no region)...
    let first = Scripted::new();
    builder(&first, &clock)
        .client_secret("s")
        .cache(Arc::clone(&cache))
        .build()
        .unwrap()
        .acquire_token_for_client([VAULT])
        .await
        .unwrap();
    // ...another, configured to detect its region, finds it without asking IMDS.
    let second = Scripted::new();
    let client = builder(&second, &clock)
        .client_secret("s")
        .region_config(RegionConfig::AutoDetect)
        .cache(Arc::clone(&cache))
        .build()
        .unwrap();
    let token = client.acquire_token_for_client([VAULT]).await.unwrap();
    assert_eq!(token.source, TokenSource::Cache);
    assert!(second.seen().is_empty(), "no IMDS request on a cache hit");
    // A miss detects the region (once) and uses it.
    second.push(Ok((200, vec![], r#"{"location":"westus3"}"#.into())));
    client
        .acquire_token_for_client(["other/.default"])
        .await
        .unwrap();
    let seen = second.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen[0]
        .uri
        .starts_with("http://169.254.169.254/metadata/instance/compute"));
    assert_eq!(
        seen[1].uri,
        "https://westus3.login.microsoft.com/tenant-1/oauth2/v2.0/token"
    );
}

#[tokio::test]
async fn a_guest_user_asked_for_by_object_id_is_found_again_without_a_request() {
    use fic_flows::UserIdentifier;
    const TENANT: &str = "72f988bf-0000-4000-8000-000000000001";
    const HOME_TENANT: &str = "99999999-0000-4000-8000-000000000002";
    const OID: &str = "00000000-0000-4000-8000-00000000a11c";
    const HOME_OID: &str = "00000000-0000-4000-8000-0000000bee01";
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    // The guest's home account is in another tenant: client_info names it, not the oid asked for.
    let client_info = b64(&serde_json::json!({"uid": HOME_OID, "utid": HOME_TENANT}));
    let id_token = format!(
        "{}.{}.sig",
        b64(&serde_json::json!({"alg": "none"})),
        b64(
            &serde_json::json!({"oid": OID, "tid": TENANT, "preferred_username": "guest@fabrikam.com"})
        )
    );
    let answer = format!(
        r#"{{"token_type":"Bearer","access_token":"user-at","expires_in":3599,"refresh_token":"rt-1","id_token":"{id_token}","client_info":"{client_info}","scope":"https://graph.microsoft.com/User.Read openid profile offline_access"}}"#
    );
    let transport = Scripted::new();
    transport.push(Ok((200, vec![], answer)));
    let clock = ManualClock::default();
    let cache = Arc::new(fic_token_cache::MemoryCache::with_clock(Arc::new(
        clock.clone(),
    )));
    let client = builder(&transport, &clock)
        .authority(&format!("https://login.microsoftonline.com/{TENANT}/"))
        .client_secret("s")
        .cache(cache.clone())
        .build()
        .unwrap();
    let user = UserIdentifier::ObjectId(uuid::Uuid::parse_str(OID).unwrap());
    let scopes = ["https://graph.microsoft.com/User.Read"];
    let first = client
        .acquire_token_by_user_fic(scopes, user.clone(), fic_oauth_core::Secret::new("t2"))
        .await
        .unwrap();
    assert_eq!(first.source, TokenSource::IdentityProvider);
    assert_eq!(
        first.account.as_ref().unwrap().home_account_id,
        format!("{HOME_OID}.{HOME_TENANT}")
    );
    assert_eq!(transport.seen()[0].param("user_id"), Some(OID));
    let again = client
        .acquire_token_by_user_fic(scopes, user, fic_oauth_core::Secret::new("t2"))
        .await
        .unwrap();
    assert_eq!(again.source, TokenSource::Cache);
    assert_eq!(again.token.expose(), "user-at");
    assert_eq!(transport.seen().len(), 1, "a repeat costs no request");
    // The access token is under the home account the answer named, and under the guess, which
    // another client (another process sharing the cache) makes too: it finds it at once.
    let access_tokens: Vec<String> = cache
        .entries()
        .into_iter()
        .map(|(k, _)| k.as_str().to_string())
        .filter(|k| k.contains("-accesstoken-"))
        .collect();
    assert_eq!(access_tokens.len(), 2, "{access_tokens:?}");
    assert!(access_tokens
        .iter()
        .any(|k| k.starts_with(&format!("{HOME_OID}.{HOME_TENANT}-"))));
    assert!(access_tokens
        .iter()
        .any(|k| k.starts_with(&format!("{OID}.{TENANT}-"))));
    let other_process = builder(&transport, &clock)
        .authority(&format!("https://login.microsoftonline.com/{TENANT}/"))
        .client_secret("s")
        .cache(cache.clone())
        .build()
        .unwrap();
    let shared = other_process
        .acquire_token_by_user_fic(
            scopes,
            UserIdentifier::ObjectId(uuid::Uuid::parse_str(OID).unwrap()),
            fic_oauth_core::Secret::new("t2"),
        )
        .await
        .unwrap();
    assert_eq!(shared.source, TokenSource::Cache);
    assert_eq!(transport.seen().len(), 1);
}

#[tokio::test]
async fn user_fic_refuses_reserved_scopes_before_fetching_the_user_credential() {
    use fic_flows::UserIdentifier;
    let transport = Scripted::new();
    let clock = ManualClock::default();
    let client = builder(&transport, &clock)
        .client_secret("s")
        .build()
        .unwrap();
    let asked = Arc::new(Mutex::new(0));
    let source: fic_flows::UserCredentialSource = {
        let asked = Arc::clone(&asked);
        Arc::new(move || {
            *asked.lock().unwrap() += 1;
            Box::pin(async { Ok(fic_oauth_core::Secret::new("t2")) })
        })
    };
    let error = client
        .acquire_token_by_user_fic_from(
            ["https://graph.microsoft.com/User.Read", "offline_access"],
            UserIdentifier::Username("alice@contoso.com".into()),
            source,
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), &ErrorCode::RESERVED_SCOPE);
    assert_eq!(*asked.lock().unwrap(), 0, "T2 was never fetched");
    assert!(transport.seen().is_empty());
}
