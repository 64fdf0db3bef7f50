//! IMDSv2 against the emulator: credentials built separately for one identity share the
//! minted certificate (one CSR in the emulator's log), and with a shared engine their tokens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use fic_emulator::{Emulator, EmulatorHandle, ManagedIdentity as EmulatedIdentity};
use fic_managed_identity::{ManagedIdentity, ManagedIdentityBuilder, ManagedIdentityId};
use fic_mtls_transport::MtlsTransport;
use fic_oauth_core::{
    HttpTransport, ManualClock, TokenCredential, TokenRequestOptions, TokenSource,
};

const TENANT: &str = "3c1f0a9e-5d2b-4e7f-8a6c-0b9d8e7f6a5b";
const CLIENT: &str = "0c1d2e3f-4a5b-4c6d-8e7f-000000005a01";
const OBJECT: &str = "0c1d2e3f-4a5b-4c6d-8e7f-000000005a02";
const VAULT: &str = "https://vault.azure.net/.default";
const ISSUE_CREDENTIAL: &str = "/metadata/identity/issuecredential";

fn clock() -> ManualClock {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    ManualClock::at_unix(now)
}

async fn start_emulator(clock: &ManualClock) -> EmulatorHandle {
    Emulator::builder()
        .clock(Arc::new(clock.clone()))
        .managed_identity(EmulatedIdentity::system_assigned(CLIENT, OBJECT, TENANT))
        .start()
        .await
        .unwrap()
}

/// A transport reaching the emulator under the production names (ring given explicitly, so
/// the suite also runs with this crate's crypto features off).
fn transport_for(emulator: &EmulatorHandle) -> Arc<dyn HttpTransport> {
    Arc::new(
        MtlsTransport::builder()
            .crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .built_in_roots(false)
            .add_root_certificate_pem(emulator.ca_certificate_pem().as_bytes())
            .unwrap()
            .resolve_all(emulator.resolver_map())
            .build()
            .unwrap(),
    )
}

fn credential(transport: &Arc<dyn HttpTransport>, clock: &ManualClock) -> ManagedIdentityBuilder {
    ManagedIdentity::builder()
        .id(ManagedIdentityId::SystemAssigned)
        .environment(HashMap::new())
        .arc_agent_path("/nonexistent/azcmagent/bin/himds")
        .transport(Arc::clone(transport))
        .clock(Arc::new(clock.clone()))
        .sleeper(Arc::new(clock.clone()))
        .mtls_pop(true)
}

fn csrs(emulator: &EmulatorHandle) -> usize {
    emulator.log().imds_path_requests(ISSUE_CREDENTIAL).len()
}

#[cfg(any(feature = "ring", feature = "aws-lc-rs"))]
#[tokio::test]
async fn two_credentials_for_one_identity_mint_one_certificate() {
    let clock = clock();
    let emulator = start_emulator(&clock).await;
    let transport = transport_for(&emulator);
    let first = credential(&transport, &clock).build().unwrap();
    let token = first
        .get_token(&[VAULT], &TokenRequestOptions::default())
        .await
        .unwrap();
    let thumbprint = token.binding_thumbprint().unwrap().to_owned();

    // Built separately, on the same engine: the first one's token, no request at all.
    let second = credential(&transport, &clock)
        .engine(Arc::clone(first.engine()))
        .build()
        .unwrap();
    let hit = second
        .get_token(&[VAULT], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(hit.source, TokenSource::Cache);
    assert_eq!(hit.token.expose(), token.token.expose());
    assert_eq!(emulator.log().len(), 3, "metadata, CSR, one token request");

    // With an engine of its own: its own token, over mTLS with the same certificate.
    let third = credential(&transport, &clock).build().unwrap();
    let own = third
        .get_token(&[VAULT], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(own.source, TokenSource::IdentityProvider);
    assert_eq!(own.binding_thumbprint(), Some(thumbprint.as_str()));
    assert_eq!(csrs(&emulator), 1, "one certificate for the identity");
    let requests = emulator.log().token_requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.status, Some(200));
        assert_eq!(
            request.client_cert_thumbprint.as_deref(),
            Some(thumbprint.as_str())
        );
    }
    let registered = emulator
        .directory()
        .managed_identity(CLIENT)
        .unwrap()
        .certificates;
    assert_eq!(registered.len(), 1);

    // Another emulator (its own transport) in the same process gets its own certificate.
    let other = start_emulator(&clock).await;
    let elsewhere = credential(&transport_for(&other), &clock).build().unwrap();
    let token = elsewhere
        .get_token(&[VAULT], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_ne!(token.binding_thumbprint(), Some(thumbprint.as_str()));
    assert_eq!(csrs(&other), 1);
    assert_eq!(csrs(&emulator), 1);
}

/// The emulator's dropped connection is an orderly close (the client sees an unexpected end of
/// the TLS stream), not a reset: the caller gets the transport error, and the certificate is
/// kept (only `invalid_client`, a refused handshake or a reset re-mint).
#[cfg(any(feature = "ring", feature = "aws-lc-rs"))]
#[tokio::test]
async fn a_dropped_connection_is_not_a_refused_certificate() {
    use fic_emulator::{Fault, FaultTarget};
    let clock = clock();
    let emulator = start_emulator(&clock).await;
    let transport = transport_for(&emulator);
    let pop = credential(&transport, &clock).build().unwrap();
    emulator
        .faults()
        .inject(Fault::drop_connection().on(FaultTarget::Token).times(1));
    let err = pop
        .get_token(&[VAULT], &TokenRequestOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), &fic_oauth_core::ErrorCode::TRANSPORT, "{err}");
    assert_eq!(csrs(&emulator), 1);
    let kept = pop.binding_certificate().unwrap();
    // The next request goes through with the same certificate.
    let token = pop
        .get_token(&[VAULT], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(token.binding_thumbprint(), Some(kept.thumbprint_s256()));
    let requests = emulator.log().token_requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].status, Some(200));
    assert_eq!(csrs(&emulator), 1);
}

/// Without a crypto backend, mTLS PoP is refused at request time with its own code, before
/// anything reaches IMDS; Bearer tokens from the same IMDS still work.
#[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
#[tokio::test]
async fn mtls_pop_without_a_crypto_backend_is_a_coded_error() {
    let clock = clock();
    let emulator = start_emulator(&clock).await;
    let transport = transport_for(&emulator);
    let pop = credential(&transport, &clock).build().unwrap();
    let err = pop
        .get_token(&[VAULT], &TokenRequestOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        &fic_managed_identity::codes::CRYPTO_PROVIDER_NOT_ENABLED
    );
    assert!(err.message().contains("`ring` or `aws-lc-rs`"), "{err}");
    assert!(emulator.log().is_empty(), "nothing was sent");
    assert_eq!(csrs(&emulator), 0);
    assert!(pop.binding_certificate().is_none());

    let bearer = credential(&transport, &clock)
        .mtls_pop(false)
        .build()
        .unwrap();
    let token = bearer
        .get_token(&[VAULT], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(token.source, TokenSource::IdentityProvider);
    assert_eq!(token.token_type, fic_oauth_core::TokenType::Bearer);
    let imds = emulator.log().imds_requests();
    assert_eq!(imds.len(), 1);
    assert_eq!(imds[0].path, "/metadata/identity/oauth2/token");
    assert_eq!(
        imds[0].query_value("resource").as_deref(),
        Some("https://vault.azure.net")
    );
}
