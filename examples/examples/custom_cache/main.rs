//! Swapping the cache: the flows with a user-written `TokenCache`
//! (`cache.rs` next to this file: a `Mutex<HashMap>` that counts what it is asked).
//! `examples/tests/swap.rs` runs the flow assertions of the default cache against it.
//!
//! Run from the repository root:
//!
//! ```text
//! cargo run -p fic-examples --example custom_cache
//! ```
//!
//! What it shows:
//! - `ConfidentialClient::builder(..).cache(cache)`: the first mTLS PoP call misses and stores,
//!   the second is a hit (seed 002 "Caching Behavior": `TokenSource.Cache`), and a second client
//!   of the same app sharing the cache hits too;
//! - FIC two-leg CC → CC with both legs on the same cache;
//! - the counters prove the library used this cache (puts > 0, hits observed).
//!
//! Real tenant: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_CERTIFICATE_PATH`
//! (+ `_PASSWORD`), optionally `FIC_SCOPE`. The FIC step runs in emulator mode only.

mod cache;

use std::process::ExitCode;
use std::sync::Arc;

use cache::CountingCache;
use fic_emulator::{App, Emulator, FederatedCredential};
use fic_examples::{
    describe_token, ensure, say, step, Env, ExampleResult, RealTenant, EXCHANGE_AUDIENCE,
    GRAPH_SCOPE, TENANT, VAULT_SCOPE,
};
use fic_flows::TwoLeg;
use fic_oauth_core::{TokenCredential, TokenSource};
use fic_token_cache::TokenCache;

const APP: &str = "3c4d5e6f-7081-4c9d-8e0f-a1b2c3d4e5f6";
const LEG2_APP: &str = "4d5e6f70-8192-4dae-9f10-b2c3d4e5f607";

#[tokio::main]
async fn main() -> ExitCode {
    fic_examples::exit(run().await)
}

fn show(cache: &CountingCache) {
    let stats = cache.stats();
    say(format!(
        "cache: gets={} hits={} puts={} removes={} entries={}",
        stats.gets, stats.hits, stats.puts, stats.removes, stats.entries
    ));
}

async fn run() -> ExampleResult {
    step("setup");
    let (env, client_id, certificate, scope) = if let Some(real) = RealTenant::from_env()? {
        (
            Env::real(&real.tenant_id)?,
            real.client_id,
            real.certificate,
            real.scope,
        )
    } else {
        let certificate = fic_examples::new_identity("custom-cache-app")?;
        let app = App::new(APP, TENANT).certificate(certificate.leaf_der().to_vec());
        let leg2 = App::new(LEG2_APP, TENANT).federated_credential(FederatedCredential::new(
            format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
            app.object_id.clone(),
            EXCHANGE_AUDIENCE,
        ));
        let env = Env::emulator(Emulator::builder().app(app).app(leg2)).await?;
        (env, APP.to_string(), certificate, VAULT_SCOPE.to_string())
    };
    let cache = Arc::new(CountingCache::new());
    let shared: Arc<dyn TokenCache> = cache.clone();

    step("mTLS PoP: miss, then hit");
    let client = env
        .client(&client_id)
        .certificate(certificate.clone())
        .cache(shared.clone())
        .build()?;
    let first = client
        .acquire_token_for_client([scope.as_str()])
        .with_mtls_pop()
        .await?;
    describe_token("first", &first);
    show(&cache);
    ensure(
        cache.stats().puts > 0,
        "the token was not stored in the cache",
    )?;
    let second = client
        .acquire_token_for_client([scope.as_str()])
        .with_mtls_pop()
        .await?;
    describe_token("second", &second);
    show(&cache);
    ensure(
        second.source == TokenSource::Cache,
        "the second call missed",
    )?;
    ensure(cache.stats().hits > 0, "no hit was served by the cache")?;

    step("another client of the same app, on the same cache: a hit, no request");
    let before = env.token_requests();
    let other = env
        .client(&client_id)
        .certificate(certificate.clone())
        .cache(shared.clone())
        .build()?;
    let third = other
        .acquire_token_for_client([scope.as_str()])
        .with_mtls_pop()
        .await?;
    describe_token("third", &third);
    show(&cache);
    ensure(
        third.source == TokenSource::Cache,
        "the shared cache missed",
    )?;
    ensure(env.token_requests() == before, "a request was sent")?;

    if env.is_emulated() {
        step("FIC two-leg CC → CC, both legs on the same cache");
        let leg1: Arc<dyn TokenCredential> = Arc::new(
            env.client(&client_id)
                .certificate(certificate.clone())
                .cache(shared.clone())
                .build()?,
        );
        let leg2 = env.client(LEG2_APP).cache(shared.clone());
        let two_leg = TwoLeg::builder(leg1, leg2).build()?;
        let token = two_leg.acquire_token([GRAPH_SCOPE]).await?;
        describe_token("Leg 2 token", &token);
        show(&cache);
        let again = two_leg.acquire_token([GRAPH_SCOPE]).await?;
        describe_token("again", &again);
        show(&cache);
        ensure(again.source == TokenSource::Cache, "Leg 2 missed the cache")?;
    }
    Ok(())
}
