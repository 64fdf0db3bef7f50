//! The credential through the acquisition engine: single flight, cache, refresh, bypass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use fic_managed_identity::ManagedIdentityId;
use fic_oauth_core::{
    Clock, ManualClock, TokenCredential, TokenRequestOptions, TokenSource, TokenType,
};
use fic_token_cache::{AcquisitionEngine, MemoryCache};
use support::*;

#[tokio::test]
async fn concurrent_calls_make_one_request() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let transport = FakeTransport::gated(Arc::clone(&gate));
    transport.reply(200, &token_body("shared"));
    let clock = ManualClock::at_unix(NOW);
    let credential = builder(&transport, &clock, env(&[])).build().unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let credential = credential.clone();
        tasks.push(tokio::spawn(async move {
            credential
                .get_token(&[ARM], &TokenRequestOptions::default())
                .await
        }));
    }
    // Let every caller reach the engine while the one request is held at the gate.
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
    assert_eq!(transport.request_count(), 1);
    gate.add_permits(16);
    for task in tasks {
        let token = task.await.unwrap().unwrap();
        assert_eq!(token.token.expose(), "shared");
    }
    assert_eq!(transport.request_count(), 1);
}

#[tokio::test]
async fn bearer_tokens_from_the_provider_then_the_cache() {
    let transport = FakeTransport::new();
    transport.reply(200, &token_body("first"));
    let clock = ManualClock::at_unix(NOW);
    let credential = builder(&transport, &clock, env(&[])).build().unwrap();
    let options = TokenRequestOptions::default();
    let first = credential.get_token(&[ARM], &options).await.unwrap();
    assert_eq!(
        (first.source, first.token_type),
        (TokenSource::IdentityProvider, TokenType::Bearer)
    );
    assert!(first.binding.is_none());
    assert_eq!(first.authorization_header().expose(), "Bearer first");
    let second = credential.get_token(&[ARM], &options).await.unwrap();
    assert_eq!(second.source, TokenSource::Cache);
    assert_eq!(second.token.expose(), "first");
    assert_eq!(second.expires_on, first.expires_on);
    assert_eq!(transport.request_count(), 1);
    // The same resource without /.default shares the entry.
    let third = credential
        .get_token(&["https://management.azure.com"], &options)
        .await
        .unwrap();
    assert_eq!(third.source, TokenSource::Cache);

    // force_refresh and a claims challenge go to the endpoint.
    transport
        .reply(200, &token_body("forced"))
        .reply(200, &token_body("claimed"));
    let forced = credential
        .get_token(&[ARM], &options.clone().with_force_refresh(true))
        .await
        .unwrap();
    assert_eq!(
        (forced.source, forced.token.expose()),
        (TokenSource::IdentityProvider, "forced")
    );
    let claimed = credential
        .get_token(
            &[ARM],
            &TokenRequestOptions::default()
                .with_claims(r#"{"access_token":{"nbf":{"essential":true}}}"#),
        )
        .await
        .unwrap();
    assert_eq!(claimed.token.expose(), "claimed");
    let cached = credential.get_token(&[ARM], &options).await.unwrap();
    assert_eq!(
        (cached.source, cached.token.expose()),
        (TokenSource::Cache, "claimed")
    );
    assert_eq!(transport.request_count(), 3);

    // Near expiry (under 5 minutes left) the cache misses.
    clock.advance(Duration::from_secs(3600 - 299));
    transport.reply(200, r#"{"access_token":"renewed","expires_in":3600}"#);
    let renewed = credential.get_token(&[ARM], &options).await.unwrap();
    assert_eq!(renewed.token.expose(), "renewed");
}

#[tokio::test]
async fn identities_and_sources_do_not_share_entries() {
    let transport = FakeTransport::new();
    let clock = ManualClock::at_unix(NOW);
    let engine = AcquisitionEngine::builder(Arc::new(MemoryCache::new()))
        .clock(Arc::new(clock.clone()))
        .build();
    let system = builder(&transport, &clock, env(&[]))
        .engine(Arc::clone(&engine))
        .build()
        .unwrap();
    let user = builder(&transport, &clock, env(&[]))
        .id(ManagedIdentityId::ClientId(CLIENT_ID.into()))
        .engine(Arc::clone(&engine))
        .build()
        .unwrap();
    let app_service = builder(
        &transport,
        &clock,
        env(&[
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:41234/msi/token"),
            ("IDENTITY_HEADER", "h"),
        ]),
    )
    .engine(Arc::clone(&engine))
    .build()
    .unwrap();
    transport
        .reply(200, &token_body("sys"))
        .reply(200, &token_body("uami"))
        .reply(200, &token_body("app"));
    let options = TokenRequestOptions::default();
    assert_eq!(
        system
            .get_token(&[ARM], &options)
            .await
            .unwrap()
            .token
            .expose(),
        "sys"
    );
    assert_eq!(
        user.get_token(&[ARM], &options)
            .await
            .unwrap()
            .token
            .expose(),
        "uami"
    );
    assert_eq!(
        app_service
            .get_token(&[ARM], &options)
            .await
            .unwrap()
            .token
            .expose(),
        "app"
    );
    assert_eq!(
        system
            .get_token(&[ARM], &options)
            .await
            .unwrap()
            .token
            .expose(),
        "sys"
    );
    assert_eq!(
        user.get_token(&[ARM], &options)
            .await
            .unwrap()
            .token
            .expose(),
        "uami"
    );
    assert_eq!(transport.request_count(), 3);
    assert_eq!(
        user.cache_key("https://management.azure.com")
            .build()
            .as_str(),
        format!("-managed_identity.imds-accesstoken-{CLIENT_ID}--https://management.azure.com")
    );
}

#[tokio::test]
async fn long_tokens_refresh_in_the_background_at_half_life() {
    let transport = FakeTransport::new();
    let clock = ManualClock::at_unix(NOW);
    let engine = AcquisitionEngine::builder(Arc::new(MemoryCache::new()))
        .clock(Arc::new(clock.clone()))
        .refresh_jitter(Duration::ZERO)
        .build();
    let credential = builder(&transport, &clock, env(&[]))
        .engine(engine)
        .build()
        .unwrap();
    transport.reply(200, r#"{"access_token":"long-1","expires_in":"10800"}"#);
    let first = credential
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(
        first.refresh_on,
        Some(clock.now() + Duration::from_secs(5400))
    );
    clock.advance(Duration::from_secs(5400));
    transport.reply(200, r#"{"access_token":"long-2","expires_in":"10800"}"#);
    // Past half-life the cached token is still served while a refresh runs.
    let served = credential
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (served.source, served.token.expose()),
        (TokenSource::Cache, "long-1")
    );
    for _ in 0..100 {
        tokio::task::yield_now().await;
        if transport.request_count() == 2
            && !credential
                .engine()
                .is_refreshing(&fic_token_cache::Lookup::new(
                    credential.cache_key("https://management.azure.com"),
                ))
        {
            break;
        }
    }
    assert_eq!(transport.request_count(), 2);
    let refreshed = credential
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (refreshed.source, refreshed.token.expose()),
        (TokenSource::Cache, "long-2")
    );
}
