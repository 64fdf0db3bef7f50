//! A scripted, recording `HttpTransport` and helpers shared by the test files.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use fic_managed_identity::{ManagedIdentity, ManagedIdentityBuilder, ManagedIdentityId};
use fic_oauth_core::{
    ClientIdentity, Error, ErrorCode, HttpTransport, ManualClock, TransportRequest,
};

/// One request as the transport saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub uri: String,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    pub identity: Option<ClientIdentity>,
}

impl Recorded {
    /// The query parameters, decoded, in order.
    pub fn query(&self) -> Vec<(String, String)> {
        let uri: http::Uri = self.uri.parse().unwrap();
        url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    /// `scheme://host[:port]/path`.
    pub fn base(&self) -> String {
        self.uri.split('?').next().unwrap().to_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }

    pub fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&self.body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

type Handler = Box<dyn FnOnce(&Recorded) -> Result<http::Response<Bytes>, Error> + Send>;

enum Scripted {
    Reply(Result<http::Response<Bytes>, Error>),
    Handler(Handler),
}

#[derive(Default)]
struct State {
    script: VecDeque<Scripted>,
    requests: Vec<Recorded>,
}

/// Answers from a queue and records every request.
#[derive(Clone, Default)]
pub struct FakeTransport {
    state: Arc<Mutex<State>>,
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl std::fmt::Debug for FakeTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeTransport")
    }
}

pub fn response(status: u16, body: &str) -> http::Response<Bytes> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Bytes::from(body.to_owned()))
        .unwrap()
}

impl FakeTransport {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every request waits for a permit of `gate`.
    pub fn gated(gate: Arc<tokio::sync::Semaphore>) -> Self {
        Self {
            gate: Some(gate),
            ..Self::default()
        }
    }

    fn push(&self, item: Scripted) -> &Self {
        self.state.lock().unwrap().script.push_back(item);
        self
    }

    /// Queues a JSON answer.
    pub fn reply(&self, status: u16, body: &str) -> &Self {
        self.push(Scripted::Reply(Ok(response(status, body))))
    }

    /// Queues a whole response.
    pub fn reply_with(&self, response: http::Response<Bytes>) -> &Self {
        self.push(Scripted::Reply(Ok(response)))
    }

    /// Queues a transport error.
    pub fn fail(&self, code: ErrorCode) -> &Self {
        self.push(Scripted::Reply(Err(Error::new(
            code,
            "scripted transport failure",
        ))))
    }

    /// Queues this transport error.
    pub fn fail_with(&self, error: Error) -> &Self {
        self.push(Scripted::Reply(Err(error)))
    }

    /// Queues an answer computed from the request.
    pub fn handle(
        &self,
        handler: impl FnOnce(&Recorded) -> Result<http::Response<Bytes>, Error> + Send + 'static,
    ) -> &Self {
        self.push(Scripted::Handler(Box::new(handler)))
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn request_count(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }

    pub fn pending(&self) -> usize {
        self.state.lock().unwrap().script.len()
    }
}

#[async_trait]
impl HttpTransport for FakeTransport {
    async fn send(&self, request: TransportRequest) -> Result<http::Response<Bytes>, Error> {
        let recorded = Recorded {
            method: request.request.method().to_string(),
            uri: request.request.uri().to_string(),
            headers: request.request.headers().clone(),
            body: request.request.body().to_vec(),
            identity: request.identity.clone(),
        };
        let scripted = {
            let mut state = self.state.lock().unwrap();
            state.requests.push(recorded.clone());
            state.script.pop_front()
        };
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        match scripted {
            Some(Scripted::Reply(reply)) => reply,
            Some(Scripted::Handler(handler)) => handler(&recorded),
            None => Err(Error::new(
                ErrorCode::INTERNAL,
                format!("fake transport: no reply scripted for {}", recorded.uri),
            )),
        }
    }
}

pub const NOW: u64 = 1_700_000_000;
pub const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
pub const RESOURCE_ID: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mi";
pub const OBJECT_ID: &str = "99999999-8888-7777-6666-555555555555";
pub const ARM: &str = "https://management.azure.com/.default";

pub fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A builder with the fake transport, a manual clock as clock and sleeper, no Arc agent, and
/// `environment`.
pub fn builder(
    transport: &FakeTransport,
    clock: &ManualClock,
    environment: HashMap<String, String>,
) -> ManagedIdentityBuilder {
    ManagedIdentity::builder()
        .environment(environment)
        .arc_agent_path(PathBuf::from("/nonexistent/azcmagent/himds"))
        .transport(Arc::new(transport.clone()))
        .service_fabric_transport(Arc::new(transport.clone()))
        .clock(Arc::new(clock.clone()))
        .sleeper(Arc::new(clock.clone()))
}

/// A success body expiring in an hour.
pub fn token_body(token: &str) -> String {
    format!(
        r#"{{"access_token":"{token}","expires_on":"{}","resource":"https://management.azure.com","token_type":"Bearer"}}"#,
        NOW + 3600
    )
}

pub fn all_ids() -> Vec<ManagedIdentityId> {
    vec![
        ManagedIdentityId::SystemAssigned,
        ManagedIdentityId::ClientId(CLIENT_ID.into()),
        ManagedIdentityId::ResourceId(RESOURCE_ID.into()),
        ManagedIdentityId::ObjectId(OBJECT_ID.into()),
    ]
}

/// Without this crate's crypto features, the default transports (`MtlsTransport::new`,
/// `ServiceFabricTransport::new`) use the process-default rustls provider: install ring's (the
/// features, when on, pick their provider themselves).
pub fn process_crypto_provider() {
    #[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
    let _ = rustls::crypto::ring::default_provider().install_default();
}
