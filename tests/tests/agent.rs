//! FMI and agent identity (blueprint → agent → user), the user_fic grant, the user cache and
//! silent renewal with refresh tokens, asserted from the emulator's log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fic_emulator::{App, Emulator, Fault, FaultTarget, Tenant, User};
use fic_flows::{AgentIdentity, ClientCredential, UserIdentifier};
use fic_oauth_core::{ManualClock, Secret, TokenSource};
use fic_tests::{jwt_payload, new_issued_identity, World, TENANT};
use fic_token_cache::{AccessTokenKey, CacheEntry, MemoryCache, TokenCache};
use uuid::Uuid;

const BLUEPRINT: &str = "aab5089d-e764-47e3-9f28-cc11c2513821";
const AGENT: &str = "ab18ca07-d139-4840-8b3b-4be9610c6ed5";
const OTHER_AGENT: &str = "cd29db18-e24a-4951-9c3c-5cf07d1e8f9a";
const ALICE: &str = "alice@contoso.com";
const ALICE_OID: &str = "00000000-0000-0000-0000-00000000a11c";
const BOB_OID: &str = "00000000-0000-0000-0000-000000000b0b";
/// Gina, of another tenant, is a guest in TENANT: her home object id, her home tenant and her
/// object id in TENANT.
const GUEST: &str = "gina@fabrikam.com";
const GUEST_HOME_OID: &str = "00000000-0000-0000-0000-0000000a0e51";
const GUEST_HOME_TENANT: &str = "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const GUEST_OID: &str = "00000000-0000-0000-0000-0000000b0e51";
const USER_SCOPE: &str = "https://graph.microsoft.com/User.Read";
const GRAPH: &str = "https://graph.microsoft.com/.default";
const EXCHANGE: &str = "api://AzureADTokenExchange/.default";

struct Setup {
    world: World,
    agent: AgentIdentity,
}

async fn setup(clock: Option<ManualClock>) -> Setup {
    setup_with(clock, None).await
}

/// The setup, with the blueprint (and so the agent) on `cache` when given.
async fn setup_with(clock: Option<ManualClock>, cache: Option<Arc<dyn TokenCache>>) -> Setup {
    let (identity, ca) = new_issued_identity("blueprint.contoso.com");
    let mut builder = Emulator::builder()
        .app(
            App::new(BLUEPRINT, TENANT)
                .subject_issuer("blueprint.contoso.com", ca)
                .agents([AGENT, OTHER_AGENT]),
        )
        .user(User::new(ALICE, ALICE_OID, TENANT))
        .user(User::new("bob@contoso.com", BOB_OID, TENANT))
        .user(User::new(GUEST, GUEST_HOME_OID, GUEST_HOME_TENANT).guest_in(TENANT, GUEST_OID));
    if let Some(clock) = &clock {
        builder = builder.clock(Arc::new(clock.clone()));
    }
    let world = World::start(builder).await;
    let mut blueprint = world
        .client(BLUEPRINT)
        .credential(ClientCredential::certificate_with_x5c(identity));
    if let Some(clock) = &clock {
        blueprint = blueprint
            .clock(Arc::new(clock.clone()))
            .sleeper(Arc::new(clock.clone()));
    }
    if let Some(cache) = cache {
        blueprint = blueprint.cache(cache);
    }
    let agent = AgentIdentity::new(blueprint.build().unwrap(), AGENT).unwrap();
    Setup { world, agent }
}

fn alice() -> UserIdentifier {
    UserIdentifier::Username(ALICE.into())
}

fn oid(value: &str) -> UserIdentifier {
    UserIdentifier::ObjectId(Uuid::parse_str(value).unwrap())
}

#[tokio::test]
async fn three_legs_for_the_first_user_each_body_checked() {
    let s = setup(None).await;
    let token = s.agent.user_token([USER_SCOPE], alice()).await.unwrap();
    let requests = s.world.emulator.log().token_requests();
    assert_eq!(requests.len(), 3);
    let (leg1, leg2, leg3) = (&requests[0], &requests[1], &requests[2]);

    assert_eq!(leg1.form_value("client_id"), Some(BLUEPRINT));
    assert_eq!(leg1.form_value("grant_type"), Some("client_credentials"));
    assert_eq!(leg1.form_value("fmi_path"), Some(AGENT));
    assert_eq!(leg1.form_value("scope"), Some(EXCHANGE));
    assert_eq!(
        leg1.form_value("client_assertion_type"),
        Some(fic_oauth_core::request::JWT_BEARER)
    );
    let blueprint_assertion = leg1.form_value("client_assertion").unwrap();
    let header = blueprint_assertion.split('.').next().unwrap();
    let header: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).unwrap(),
    )
    .unwrap();
    assert_eq!(
        header["x5c"].as_array().unwrap().len(),
        2,
        "the blueprint sends its chain (SN+I)"
    );

    let t1 = s.agent.t1().await.unwrap();
    assert_eq!(t1.source, TokenSource::Cache);
    assert_eq!(leg2.host, "login.microsoftonline.com");
    assert_eq!(leg2.form_value("client_id"), Some(AGENT));
    assert_eq!(leg2.form_value("grant_type"), Some("client_credentials"));
    assert_eq!(
        leg2.form_value("client_assertion_type"),
        Some(fic_oauth_core::request::JWT_BEARER)
    );
    assert_eq!(leg2.form_value("client_assertion"), Some(t1.token.expose()));
    assert_eq!(leg2.form_value("scope"), Some(EXCHANGE));
    assert_eq!(leg2.form_value("fmi_path"), None);
    assert_eq!(leg2.form_value("client_secret"), None);

    let t2 = s.agent.t2().await.unwrap();
    assert_eq!(t2.source, TokenSource::Cache);
    assert_eq!(leg3.host, "login.microsoftonline.com");
    assert_eq!(leg3.form_value("grant_type"), Some("user_fic"));
    assert_eq!(leg3.form_value("client_id"), Some(AGENT));
    assert_eq!(
        leg3.form_value("client_assertion_type"),
        Some(fic_oauth_core::request::JWT_BEARER)
    );
    assert_eq!(leg3.form_value("client_assertion"), Some(t1.token.expose()));
    assert_eq!(leg3.form_value("fmi_path"), None);
    assert_eq!(
        leg3.form_value("user_federated_identity_credential"),
        Some(t2.token.expose())
    );
    assert_eq!(leg3.form_value("username"), Some(ALICE));
    assert_eq!(leg3.form_value("user_id"), None);
    assert_eq!(
        leg3.form_value("scope"),
        Some("https://graph.microsoft.com/User.Read openid offline_access profile")
    );
    assert_eq!(leg3.form_value("client_info"), Some("1"));
    assert_eq!(
        leg3.header("x-anchormailbox"),
        Some("upn:alice@contoso.com")
    );

    let claims = jwt_payload(token.token.expose());
    assert_eq!(claims["oid"], ALICE_OID);
    assert_eq!(claims["idtyp"], "user");
    let account = token.account.unwrap();
    assert_eq!(account.username.as_deref(), Some(ALICE));
    assert_eq!(account.home_account_id, format!("{ALICE_OID}.{TENANT}"));
    assert_eq!(jwt_payload(t1.token.expose())["fmi_path"], AGENT);
}

#[tokio::test]
async fn network_calls_three_then_one_per_new_user_then_none() {
    let s = setup(None).await;
    let count = || s.world.token_requests();
    let first = s.agent.user_token([USER_SCOPE], alice()).await.unwrap();
    assert_eq!(count(), 3);
    let again = s.agent.user_token([USER_SCOPE], alice()).await.unwrap();
    assert_eq!((count(), again.source), (3, TokenSource::Cache));
    // A hit carries the account and the id token from their own cache entries, not the
    // refresh token.
    let first_id_token = first
        .id_token
        .as_ref()
        .expect("an id token from the answer");
    assert_eq!(
        again.id_token.as_ref().map(Secret::expose),
        Some(first_id_token.expose())
    );
    assert_eq!(jwt_payload(first_id_token.expose())["oid"], ALICE_OID);
    assert_eq!(
        again.account.as_ref().map(|a| a.home_account_id.as_str()),
        first.account.as_ref().map(|a| a.home_account_id.as_str())
    );
    assert!(first.refresh_token.is_some() && again.refresh_token.is_none());
    // Fetched by UPN, found again by object id.
    let by_oid = s
        .agent
        .user_token([USER_SCOPE], oid(ALICE_OID))
        .await
        .unwrap();
    assert_eq!((count(), by_oid.source), (3, TokenSource::Cache));
    assert_eq!(by_oid.token.expose(), first.token.expose());
    // UPNs are case-insensitive.
    s.agent
        .user_token(
            [USER_SCOPE],
            UserIdentifier::Username("ALICE@Contoso.com".into()),
        )
        .await
        .unwrap();
    assert_eq!(count(), 3);
    // A new user: one user_fic request.
    let bob = s
        .agent
        .user_token([USER_SCOPE], oid(BOB_OID))
        .await
        .unwrap();
    assert_eq!(count(), 4);
    assert_eq!(
        s.world
            .emulator
            .log()
            .last_token_request()
            .unwrap()
            .form_value("user_id"),
        Some(BOB_OID)
    );
    assert_ne!(bob.token.expose(), first.token.expose());
    assert_eq!(jwt_payload(bob.token.expose())["oid"], BOB_OID);
    // Force refresh: one request.
    let forced = s
        .agent
        .user_token([USER_SCOPE], alice())
        .with_force_refresh(true)
        .await
        .unwrap();
    assert_eq!((count(), forced.source), (5, TokenSource::IdentityProvider));
    assert_eq!(
        s.world
            .emulator
            .log()
            .last_token_request()
            .unwrap()
            .form_value("grant_type"),
        Some("user_fic")
    );
}

#[tokio::test]
async fn app_only_agent_tokens_and_user_tokens_never_cross() {
    let s = setup(None).await;
    let app = s.agent.app_token([GRAPH]).await.unwrap();
    assert_eq!(
        s.world.token_requests(),
        2,
        "T1, then the agent's app token"
    );
    let request = s.world.emulator.log().last_token_request().unwrap();
    assert_eq!(request.form_value("client_id"), Some(AGENT));
    assert_eq!(request.form_value("scope"), Some(GRAPH));
    assert_eq!(jwt_payload(app.token.expose())["idtyp"], "app");

    let user = s.agent.user_token([GRAPH], alice()).await.unwrap();
    assert_ne!(user.token.expose(), app.token.expose());
    assert_eq!(jwt_payload(user.token.expose())["idtyp"], "user");
    let app_again = s.agent.app_token([GRAPH]).await.unwrap();
    assert_eq!(app_again.token.expose(), app.token.expose());
    assert_eq!(app_again.source, TokenSource::Cache);
}

#[tokio::test]
async fn two_fmi_paths_are_two_cache_entries() {
    let s = setup(None).await;
    // The same blueprint client (and cache), for another agent.
    let other = AgentIdentity::new(s.agent.blueprint().clone(), OTHER_AGENT).unwrap();
    let t1_a = s.agent.t1().await.unwrap();
    let t1_b = other.t1().await.unwrap();
    assert_ne!(t1_a.token.expose(), t1_b.token.expose());
    assert_eq!(jwt_payload(t1_b.token.expose())["fmi_path"], OTHER_AGENT);
    assert_eq!(s.world.token_requests(), 2);
    assert_eq!(s.agent.t1().await.unwrap().source, TokenSource::Cache);
    assert_eq!(other.t1().await.unwrap().source, TokenSource::Cache);
}

#[tokio::test]
async fn an_expired_user_token_is_renewed_with_the_refresh_token() {
    let clock = ManualClock::new(std::time::SystemTime::now());
    let s = setup(Some(clock.clone())).await;
    s.agent.user_token([USER_SCOPE], alice()).await.unwrap();
    let first_t1 = s.agent.t1().await.unwrap();
    assert_eq!(first_t1.source, TokenSource::Cache);
    clock.advance(Duration::from_secs(3600));
    let renewed = s.agent.user_token([USER_SCOPE], alice()).await.unwrap();
    assert_eq!(renewed.source, TokenSource::IdentityProvider);
    assert_eq!(jwt_payload(renewed.token.expose())["oid"], ALICE_OID);
    let last = s.world.emulator.log().last_token_request().unwrap();
    assert_eq!(last.form_value("grant_type"), Some("refresh_token"));
    assert_eq!(last.form_value("client_id"), Some(AGENT));
    assert!(last.form_value("refresh_token").is_some());
    assert_eq!(last.form_value("client_info"), Some("1"));
    // The scope is augmented as for user_fic.
    assert_eq!(
        last.form_value("scope"),
        Some("https://graph.microsoft.com/User.Read openid offline_access profile")
    );
    // The agent authenticates with the current T1: T1 had expired too, and was renewed first.
    assert_eq!(
        last.form_value("client_assertion_type"),
        Some(fic_oauth_core::request::JWT_BEARER)
    );
    let current_t1 = s.agent.t1().await.unwrap();
    assert_eq!(current_t1.source, TokenSource::Cache);
    assert_ne!(current_t1.token.expose(), first_t1.token.expose());
    assert_eq!(
        last.form_value("client_assertion"),
        Some(current_t1.token.expose())
    );
    assert_eq!(last.form_value("user_federated_identity_credential"), None);
    assert_eq!(
        s.world
            .emulator
            .log()
            .count(|r| r.form_value("grant_type") == Some("user_fic")),
        1,
        "no second user_fic"
    );
    // The rotated refresh token works the next time too.
    clock.advance(Duration::from_secs(3600));
    s.agent.user_token([USER_SCOPE], alice()).await.unwrap();
    assert_eq!(
        s.world
            .emulator
            .log()
            .count(|r| r.form_value("grant_type") == Some("refresh_token")),
        2
    );
}

#[tokio::test]
async fn the_three_legs_by_hand() {
    let s = setup(None).await;
    let t1 = s.agent.t1().await.unwrap();
    let t2 = s.agent.t2().await.unwrap();
    let agent = s
        .agent
        .agent()
        .with_credential(ClientCredential::assertion(
            fic_assertion::StaticAssertion::new(t1.token.clone()).unwrap(),
        ))
        .unwrap();
    let token = agent
        .acquire_token_by_user_fic([USER_SCOPE], oid(ALICE_OID), Secret::new(t2.token.expose()))
        .await
        .unwrap();
    let last = s.world.emulator.log().last_token_request().unwrap();
    assert_eq!(last.form_value("user_id"), Some(ALICE_OID));
    assert_eq!(
        last.header("x-anchormailbox"),
        Some(format!("oid:{ALICE_OID}@{TENANT}").as_str())
    );
    assert_eq!(jwt_payload(token.token.expose())["oid"], ALICE_OID);
}

#[tokio::test]
async fn reserved_scopes_and_unknown_users_are_refused() {
    let s = setup(None).await;
    for reserved in ["openid", "profile", "offline_access"] {
        let err = s
            .agent
            .user_token([reserved, USER_SCOPE], alice())
            .await
            .unwrap_err();
        assert_eq!(err.code(), &fic_oauth_core::ErrorCode::RESERVED_SCOPE);
    }
    // Refused before anything is sent: neither T1 nor T2 nor user_fic.
    assert_eq!(
        s.world.token_requests(),
        0,
        "a reserved scope is refused locally"
    );
    let err = s
        .agent
        .user_token(
            [USER_SCOPE],
            UserIdentifier::Username("nobody@contoso.com".into()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.aadsts(), Some(50_034));
}

#[tokio::test]
async fn another_client_on_the_same_cache_finds_a_user_by_object_id() {
    let s = setup(None).await;
    s.agent.user_token([USER_SCOPE], alice()).await.unwrap();
    assert_eq!(s.world.token_requests(), 3);
    // A new agent client (nothing remembered in memory) sharing the cache, as another process
    // sharing a file or Redis cache would.
    let fresh = AgentIdentity::new(s.agent.blueprint().clone(), AGENT).unwrap();
    let token = fresh
        .user_token([USER_SCOPE], oid(ALICE_OID))
        .await
        .unwrap();
    assert_eq!(token.source, TokenSource::Cache);
    assert_eq!(s.world.token_requests(), 3, "no request");
    let account = token.account.expect("the account comes from the cache");
    assert_eq!(account.username.as_deref(), Some(ALICE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_asking_at_once_for_a_new_user_share_one_request_and_its_error() {
    let s = setup(None).await;
    s.agent.t1().await.unwrap();
    s.agent.t2().await.unwrap();
    assert_eq!(s.world.token_requests(), 2);
    // The user_fic request is held for a moment, so every caller asks while it is in flight.
    s.world.emulator.faults().inject(
        Fault::delay(Duration::from_millis(200))
            .on(FaultTarget::Token)
            .times(1),
    );
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let agent = s.agent.clone();
            tokio::spawn(async move { agent.user_token([USER_SCOPE], alice()).await })
        })
        .collect();
    let mut values = std::collections::HashSet::new();
    for task in tasks {
        values.insert(task.await.unwrap().unwrap().token.expose().to_string());
    }
    assert_eq!(values.len(), 1, "every caller got the one token");
    let user_fic = s
        .world
        .emulator
        .log()
        .count(|r| r.is_token_request() && r.form_value("grant_type") == Some("user_fic"));
    assert_eq!(user_fic, 1);
    assert_eq!(s.world.token_requests(), 3);
    let again = s.agent.user_token([USER_SCOPE], alice()).await.unwrap();
    assert_eq!(
        (again.source, s.world.token_requests()),
        (TokenSource::Cache, 3)
    );

    // An error is shared the same way: one request, every caller gets its code.
    s.world.emulator.faults().inject(
        Fault::delay(Duration::from_millis(200))
            .on(FaultTarget::Token)
            .times(1),
    );
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let agent = s.agent.clone();
            tokio::spawn(async move {
                agent
                    .user_token(
                        [USER_SCOPE],
                        UserIdentifier::Username("nobody@contoso.com".into()),
                    )
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap_err().aadsts(), Some(50_034));
    }
    assert_eq!(s.world.token_requests(), 4);
    // A finished request is forgotten: the next caller asks again.
    let err = s
        .agent
        .user_token(
            [USER_SCOPE],
            UserIdentifier::Username("nobody@contoso.com".into()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.aadsts(), Some(50_034));
    assert_eq!(s.world.token_requests(), 5);
}

#[tokio::test]
async fn hits_carry_the_account_when_the_authority_names_the_tenant_by_domain() {
    let (identity, ca) = new_issued_identity("blueprint.contoso.com");
    let world = World::start(
        Emulator::builder()
            .tenant(Tenant::new(TENANT).domain("contoso.onmicrosoft.com"))
            .app(
                App::new(BLUEPRINT, TENANT)
                    .subject_issuer("blueprint.contoso.com", ca)
                    .agents([AGENT]),
            )
            .user(User::new(ALICE, ALICE_OID, TENANT)),
    )
    .await;
    let blueprint = world
        .client(BLUEPRINT)
        .authority("https://login.microsoftonline.com/contoso.onmicrosoft.com")
        .credential(ClientCredential::certificate_with_x5c(identity))
        .build()
        .unwrap();
    let agent = AgentIdentity::new(blueprint, AGENT).unwrap();
    let first = agent.user_token([USER_SCOPE], alice()).await.unwrap();
    let account = first.account.clone().expect("the answer's account");
    assert_eq!(
        account.realm, TENANT,
        "stored under the tenant id, not the domain"
    );
    let again = agent.user_token([USER_SCOPE], alice()).await.unwrap();
    assert_eq!(
        (again.source, world.token_requests()),
        (TokenSource::Cache, 3)
    );
    assert_eq!(
        again.account.as_ref().map(|a| a.home_account_id.as_str()),
        Some(account.home_account_id.as_str())
    );
    assert_eq!(
        again.id_token.as_ref().map(Secret::expose),
        first.id_token.as_ref().map(Secret::expose)
    );
}

// ---------------------------------------------------------------------------------------------
// The cache: T2 under `credential_fmi_path`; app and user tokens, FMI paths and users never
// cross.

/// The lower-case extension hash of one component, as PROTOCOL §6 computes it.
fn ext_hash_of(name: &str, value: &str) -> String {
    fic_oauth_core::thumbprint::ext_hash(&BTreeMap::from([(name.to_owned(), value.to_owned())]))
        .to_lowercase()
}

#[tokio::test]
async fn t2_is_cached_under_the_credential_fmi_path_component() {
    let cache = Arc::new(MemoryCache::new());
    let s = setup_with(None, Some(cache.clone() as Arc<dyn TokenCache>)).await;
    let t2 = s.agent.t2().await.unwrap();
    assert_eq!(s.world.token_requests(), 2, "T1, then T2");
    let t1 = s.agent.t1().await.unwrap();
    assert_eq!(t1.source, TokenSource::Cache);

    // Both are `atext` entries: T1 under the blueprint with `fmi_path`, T2 under the agent with
    // `credential_fmi_path`, each with the hash of its one component.
    let t1_key = format!(
        "-login.microsoftonline.com-atext-{BLUEPRINT}-{TENANT}-{EXCHANGE}-{}",
        ext_hash_of("fmi_path", AGENT)
    )
    .to_lowercase();
    let t2_key = format!(
        "-login.microsoftonline.com-atext-{AGENT}-{TENANT}-{EXCHANGE}-{}",
        ext_hash_of("credential_fmi_path", AGENT)
    )
    .to_lowercase();
    let mut keys: Vec<String> = cache
        .entries()
        .iter()
        .map(|(key, _)| key.as_str().to_owned())
        .collect();
    keys.sort();
    let mut expected = vec![t1_key.clone(), t2_key.clone()];
    expected.sort();
    assert_eq!(keys, expected);

    let entry = cache
        .get_entry(&fic_token_cache::CacheKey::new(&t2_key))
        .expect("T2 is cached under its atext key");
    let CacheEntry::AccessToken(stored) = &*entry else {
        panic!("not an access token: {entry:?}");
    };
    assert_eq!(
        stored.credential_type(),
        fic_token_cache::CredentialType::AccessTokenExtended
    );
    assert_eq!(
        stored.components(),
        &BTreeMap::from([("credential_fmi_path".to_owned(), AGENT.to_owned())])
    );
    assert_eq!(stored.secret().expose(), t2.token.expose());
    let entry = cache
        .get_entry(&fic_token_cache::CacheKey::new(&t1_key))
        .expect("T1 is cached under its atext key");
    let CacheEntry::AccessToken(stored_t1) = &*entry else {
        panic!("not an access token: {entry:?}");
    };
    assert_eq!(stored_t1.secret().expose(), t1.token.expose());

    // A lookup without the component misses...
    let bare = AccessTokenKey::app("login.microsoftonline.com", AGENT, TENANT, [EXCHANGE]).build();
    assert!(cache.get_entry(&bare).is_none());
    // ...and so does the agent's request for the same scope without the assertion's FMI path:
    // it is sent, and cached under the plain key.
    let plain = s
        .agent
        .agent()
        .acquire_token_for_client([EXCHANGE])
        .await
        .unwrap();
    assert_eq!(plain.source, TokenSource::IdentityProvider);
    assert_ne!(plain.token.expose(), t2.token.expose());
    assert_eq!(s.world.token_requests(), 3);
    let entry = cache.get_entry(&bare).expect("cached without components");
    let CacheEntry::AccessToken(stored_plain) = &*entry else {
        panic!("not an access token: {entry:?}");
    };
    assert_eq!(stored_plain.secret().expose(), plain.token.expose());
    assert!(stored_plain.components().is_empty());
    // T2 is still served from its own entry.
    let again = s.agent.t2().await.unwrap();
    assert_eq!(again.source, TokenSource::Cache);
    assert_eq!(again.token.expose(), t2.token.expose());
    assert_eq!(s.world.token_requests(), 3);
}

#[tokio::test]
async fn app_and_user_tokens_for_the_same_scope_never_cross_in_either_order() {
    for app_first in [true, false] {
        let s = setup(None).await;
        let agent_oid = s.world.emulator.directory().app(AGENT).unwrap().object_id;
        let (app, user) = if app_first {
            let app = s.agent.app_token([GRAPH]).await.unwrap();
            assert_eq!(s.world.token_requests(), 2, "T1, then the app token");
            let user = s.agent.user_token([GRAPH], alice()).await.unwrap();
            assert_eq!(user.source, TokenSource::IdentityProvider);
            assert_eq!(
                s.world.token_requests(),
                4,
                "T2, then user_fic: not the app token"
            );
            let last = s.world.emulator.log().last_token_request().unwrap();
            assert_eq!(last.form_value("grant_type"), Some("user_fic"));
            (app, user)
        } else {
            let user = s.agent.user_token([GRAPH], alice()).await.unwrap();
            assert_eq!(s.world.token_requests(), 3, "T1, T2, user_fic");
            let app = s.agent.app_token([GRAPH]).await.unwrap();
            assert_eq!(app.source, TokenSource::IdentityProvider);
            assert_eq!(s.world.token_requests(), 4, "the app token: not the user's");
            let last = s.world.emulator.log().last_token_request().unwrap();
            assert_eq!(last.form_value("grant_type"), Some("client_credentials"));
            assert_eq!(last.form_value("client_id"), Some(AGENT));
            assert_eq!(last.form_value("scope"), Some(GRAPH));
            (app, user)
        };
        assert_ne!(app.token.expose(), user.token.expose());

        // Both cached: each is served its own token, with no request.
        let app_again = s.agent.app_token([GRAPH]).await.unwrap();
        let user_again = s.agent.user_token([GRAPH], alice()).await.unwrap();
        assert_eq!(s.world.token_requests(), 4, "app_first={app_first}");
        assert_eq!(app_again.source, TokenSource::Cache);
        assert_eq!(user_again.source, TokenSource::Cache);
        assert_eq!(app_again.token.expose(), app.token.expose());
        assert_eq!(user_again.token.expose(), user.token.expose());

        for token in [&app, &app_again] {
            let claims = jwt_payload(token.token.expose());
            assert_eq!(claims["idtyp"], "app");
            assert_eq!(claims["appid"], AGENT);
            assert_eq!(claims["oid"], agent_oid.as_str());
            assert_eq!(claims["sub"], agent_oid.as_str());
            assert!(claims["scp"].is_null());
            assert!(token.account.is_none());
        }
        for token in [&user, &user_again] {
            let claims = jwt_payload(token.token.expose());
            assert_eq!(claims["idtyp"], "user");
            assert_eq!(claims["appid"], AGENT);
            assert_eq!(claims["oid"], ALICE_OID);
            assert_ne!(claims["sub"], agent_oid.as_str());
            assert_eq!(claims["preferred_username"], ALICE);
            assert_eq!(
                token.account.as_ref().map(|a| a.home_account_id.as_str()),
                Some(format!("{ALICE_OID}.{TENANT}").as_str())
            );
        }
    }
}

#[tokio::test]
async fn two_fmi_paths_and_no_path_are_three_entries_for_one_scope() {
    let s = setup(None).await;
    let blueprint = s.agent.blueprint();
    let blueprint_oid = s
        .world
        .emulator
        .directory()
        .app(BLUEPRINT)
        .unwrap()
        .object_id;
    let acquire = |path: Option<&str>| {
        let request = blueprint.acquire_token_for_client([EXCHANGE]);
        match path {
            Some(path) => request.with_fmi_path(path),
            None => request,
        }
    };
    let paths = [Some(AGENT), Some(OTHER_AGENT), None];
    let mut tokens = Vec::new();
    for path in paths {
        let token = acquire(path).await.unwrap();
        assert_eq!(token.source, TokenSource::IdentityProvider, "{path:?}");
        tokens.push(token);
    }
    let requests = s.world.emulator.log().token_requests();
    assert_eq!(requests.len(), 3, "one request each");
    for (request, path) in requests.iter().zip(paths) {
        assert_eq!(request.form_value("client_id"), Some(BLUEPRINT));
        assert_eq!(request.form_value("scope"), Some(EXCHANGE));
        assert_eq!(request.form_value("fmi_path"), path);
    }
    for (token, path) in tokens.iter().zip(paths) {
        let claims = jwt_payload(token.token.expose());
        assert_eq!(claims["appid"], BLUEPRINT);
        if let Some(path) = path {
            assert_eq!(claims["fmi_path"], path);
            let sub = claims["sub"].as_str().unwrap();
            assert!(sub.starts_with("/eid1/c/pub/t/"), "{sub}");
            assert!(sub.ends_with(&format!("/{path}")), "{sub}");
        } else {
            assert!(claims["fmi_path"].is_null());
            assert_eq!(claims["sub"], blueprint_oid.as_str());
        }
    }
    let distinct: std::collections::HashSet<&str> =
        tokens.iter().map(|t| t.token.expose()).collect();
    assert_eq!(distinct.len(), 3);

    // Each repeat is served its own token from the cache.
    for (token, path) in tokens.iter().zip(paths) {
        let again = acquire(path).await.unwrap();
        assert_eq!(again.source, TokenSource::Cache, "{path:?}");
        assert_eq!(again.token.expose(), token.token.expose(), "{path:?}");
    }
    assert_eq!(s.world.token_requests(), 3, "repeats send nothing");
}

#[tokio::test]
async fn two_users_never_cross() {
    let s = setup(None).await;
    let bob = || UserIdentifier::Username("bob@contoso.com".into());
    let a = s.agent.user_token([USER_SCOPE], alice()).await.unwrap();
    assert_eq!(s.world.token_requests(), 3, "T1, T2, user_fic");
    let b = s.agent.user_token([USER_SCOPE], bob()).await.unwrap();
    assert_eq!(b.source, TokenSource::IdentityProvider);
    assert_eq!(
        s.world.token_requests(),
        4,
        "user_fic for the new user only"
    );
    let last = s.world.emulator.log().last_token_request().unwrap();
    assert_eq!(last.form_value("grant_type"), Some("user_fic"));
    assert_eq!(last.form_value("username"), Some("bob@contoso.com"));
    let a_again = s.agent.user_token([USER_SCOPE], alice()).await.unwrap();
    assert_eq!(a_again.source, TokenSource::Cache);
    assert_eq!(s.world.token_requests(), 4, "alice again: no request");
    let b_again = s
        .agent
        .user_token([USER_SCOPE], oid(BOB_OID))
        .await
        .unwrap();
    assert_eq!(b_again.source, TokenSource::Cache);
    assert_eq!(
        s.world.token_requests(),
        4,
        "bob again (by object id): no request"
    );

    assert_ne!(a.token.expose(), b.token.expose());
    assert_eq!(a_again.token.expose(), a.token.expose());
    assert_eq!(b_again.token.expose(), b.token.expose());
    for (token, user_oid) in [
        (&a, ALICE_OID),
        (&a_again, ALICE_OID),
        (&b, BOB_OID),
        (&b_again, BOB_OID),
    ] {
        assert_eq!(jwt_payload(token.token.expose())["oid"], user_oid);
        assert_eq!(
            token.account.as_ref().map(|a| a.home_account_id.as_str()),
            Some(format!("{user_oid}.{TENANT}").as_str())
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A guest: its token names its home account, while `oid` is its object id in TENANT.

/// The access tokens on `cache` for the user account `home_account_id`, as (key, secret).
fn user_access_tokens(cache: &MemoryCache, home_account_id: &str) -> Vec<(String, String)> {
    let prefix = format!("{home_account_id}-").to_lowercase();
    cache
        .entries()
        .iter()
        .filter(|(key, _)| key.as_str().starts_with(&prefix))
        .filter_map(|(key, entry)| match &**entry {
            CacheEntry::AccessToken(token) => {
                Some((key.as_str().to_owned(), token.secret().expose().to_owned()))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_guest_asked_for_by_object_id_is_fetched_once_then_served_from_the_cache() {
    let cache = Arc::new(MemoryCache::new());
    let s = setup_with(None, Some(cache.clone() as Arc<dyn TokenCache>)).await;
    let home_account_id = format!("{GUEST_HOME_OID}.{GUEST_HOME_TENANT}");
    let first = s
        .agent
        .user_token([USER_SCOPE], oid(GUEST_OID))
        .await
        .unwrap();
    assert_eq!(first.source, TokenSource::IdentityProvider);
    assert_eq!(s.world.token_requests(), 3, "T1, T2, user_fic");
    let last = s.world.emulator.log().last_token_request().unwrap();
    assert_eq!(last.form_value("grant_type"), Some("user_fic"));
    assert_eq!(last.form_value("user_id"), Some(GUEST_OID));
    assert_eq!(last.form_value("username"), None);
    assert_eq!(last.form_value("client_info"), Some("1"));

    // The token is the guest's in TENANT; the account is its home account.
    let claims = jwt_payload(first.token.expose());
    assert_eq!(claims["oid"], GUEST_OID);
    assert_eq!(claims["tid"], TENANT);
    assert_eq!(claims["preferred_username"], GUEST);
    let id_claims = jwt_payload(first.id_token.as_ref().unwrap().expose());
    assert_eq!(
        (&id_claims["oid"], &id_claims["tid"]),
        (&serde_json::json!(GUEST_OID), &serde_json::json!(TENANT))
    );
    let account = first.account.clone().expect("the answer's account");
    assert_eq!(account.home_account_id, home_account_id);
    assert_eq!(account.username.as_deref(), Some(GUEST));

    // Cached under the home account the answer names and under the guess for the object id.
    let guessed = format!("{GUEST_OID}.{TENANT}");
    for id in [&home_account_id, &guessed] {
        let stored = user_access_tokens(&cache, id);
        assert_eq!(stored.len(), 1, "{id}: {stored:?}");
        assert_eq!(stored[0].1, first.token.expose(), "{id}");
    }

    // Asked for again by the same object id: no request, the same token and account.
    let again = s
        .agent
        .user_token([USER_SCOPE], oid(GUEST_OID))
        .await
        .unwrap();
    assert_eq!(
        (again.source, s.world.token_requests()),
        (TokenSource::Cache, 3)
    );
    assert_eq!(again.token.expose(), first.token.expose());
    assert_eq!(
        again.account.as_ref().map(|a| a.home_account_id.as_str()),
        Some(home_account_id.as_str())
    );
    assert_eq!(jwt_payload(again.token.expose())["oid"], GUEST_OID);

    // Another client sharing the cache (another process) finds the token too, under the guess,
    // with no request.
    let fresh = AgentIdentity::new(s.agent.blueprint().clone(), AGENT).unwrap();
    let other = fresh
        .user_token([USER_SCOPE], oid(GUEST_OID))
        .await
        .unwrap();
    assert_eq!(
        (other.source, s.world.token_requests()),
        (TokenSource::Cache, 3)
    );
    assert_eq!(other.token.expose(), first.token.expose());
    // Not asserted here: that hit has no account or id token yet, since they are stored
    // under the home account only, not under the guess `{oid}.{tenant}`.
}

#[tokio::test]
async fn a_guest_after_a_member_costs_one_user_fic_and_its_home_oid_is_unknown_here() {
    let s = setup(None).await;
    let alice = s.agent.user_token([USER_SCOPE], alice()).await.unwrap();
    assert_eq!(s.world.token_requests(), 3, "T1, T2, user_fic");
    // T1 and T2 are cached: the guest costs its user_fic only.
    let guest = s
        .agent
        .user_token([USER_SCOPE], oid(GUEST_OID))
        .await
        .unwrap();
    assert_eq!(
        (guest.source, s.world.token_requests()),
        (TokenSource::IdentityProvider, 4)
    );
    let last = s.world.emulator.log().last_token_request().unwrap();
    assert_eq!(last.form_value("grant_type"), Some("user_fic"));
    assert_eq!(last.form_value("user_id"), Some(GUEST_OID));
    assert_eq!(jwt_payload(guest.token.expose())["oid"], GUEST_OID);
    assert_eq!(
        guest.account.as_ref().map(|a| a.home_account_id.as_str()),
        Some(format!("{GUEST_HOME_OID}.{GUEST_HOME_TENANT}").as_str())
    );
    let again = s
        .agent
        .user_token([USER_SCOPE], oid(GUEST_OID))
        .await
        .unwrap();
    assert_eq!(
        (again.source, s.world.token_requests()),
        (TokenSource::Cache, 4)
    );
    assert_eq!(again.token.expose(), guest.token.expose());
    // The member is unchanged, and never crosses with the guest.
    assert_ne!(alice.token.expose(), guest.token.expose());
    assert_eq!(
        alice.account.as_ref().map(|a| a.home_account_id.as_str()),
        Some(format!("{ALICE_OID}.{TENANT}").as_str())
    );
    // The guest's home object id names nobody in TENANT.
    let err = s
        .agent
        .user_token([USER_SCOPE], oid(GUEST_HOME_OID))
        .await
        .unwrap_err();
    assert_eq!(err.aadsts(), Some(50_034));
    assert_eq!(s.world.token_requests(), 5);
    assert_eq!(
        s.world
            .emulator
            .log()
            .last_token_request()
            .unwrap()
            .form_value("user_id"),
        Some(GUEST_HOME_OID)
    );
}
