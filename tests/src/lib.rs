//! Support for the end-to-end suites: an emulator with a tenant, a transport wired to it, and
//! fresh certificates. The suites themselves are in `tests/tests/`.
#![deny(missing_docs)]
// Test support: a setup that cannot be made should stop the test at once.
#![allow(clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use fic_emulator::{EmulatorBuilder, EmulatorHandle};
use fic_flows::{ConfidentialClient, ConfidentialClientBuilder, RegionDetector};
use fic_mtls_transport::MtlsTransport;
use fic_oauth_core::{ClientIdentity, Error};

/// The tenant every suite registers its apps in.
pub const TENANT: &str = "3c1f0a9e-5d2b-4e7f-8a6c-0b9d8e7f6a5b";

/// A running emulator and a transport that reaches it under the production host names.
#[derive(Debug)]
pub struct World {
    /// The emulator.
    pub emulator: EmulatorHandle,
    /// The transport: production host names resolved to the emulator, its CA trusted.
    pub transport: Arc<MtlsTransport>,
}

impl World {
    /// Starts the emulator `builder` describes.
    pub async fn start(builder: EmulatorBuilder) -> Self {
        let emulator = builder.start().await.expect("the emulator starts");
        let transport = Arc::new(transport_for(&emulator).expect("a transport for the emulator"));
        Self {
            emulator,
            transport,
        }
    }

    /// A confidential client for `client_id` in [`TENANT`], on this world's transport, with no
    /// region settings from the process environment and its own region detector.
    pub fn client(&self, client_id: &str) -> ConfidentialClientBuilder {
        ConfidentialClient::builder(client_id)
            .authority(&format!("https://login.microsoftonline.com/{TENANT}"))
            .transport(self.transport.clone())
            .environment(HashMap::new())
            .region_detector(Arc::new(RegionDetector::new()))
    }

    /// How many token requests the emulator has seen.
    pub fn token_requests(&self) -> usize {
        self.emulator.log().token_requests().len()
    }
}

/// A transport that sends production host names to `emulator` and trusts only its CA.
pub fn transport_for(emulator: &EmulatorHandle) -> Result<MtlsTransport, Error> {
    MtlsTransport::builder()
        .built_in_roots(false)
        .add_root_certificate_pem(emulator.ca_certificate_pem().as_bytes())?
        .resolve_all(emulator.resolver_map())
        .build()
}

/// A fresh self-signed EC P-256 certificate with its key.
pub fn new_identity(name: &str) -> ClientIdentity {
    fic_assertion::generate::self_signed(name).expect("a certificate is generated")
}

/// A certificate issued by a fresh CA (subject `CN=<subject>`), for subject name + issuer
/// (SN+I) registrations: the identity's chain is `[leaf, CA]`; the CA's DER is returned too.
pub fn new_issued_identity(subject: &str) -> (ClientIdentity, Vec<u8>) {
    fic_assertion::generate::issued(subject).expect("a certificate is issued")
}

/// The payload of a JWT (not verified; the emulator's tests verify signatures).
pub fn jwt_payload(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON payload")
}
