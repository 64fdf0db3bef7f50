//! Agent identity (FMI): a blueprint application gets T1 for one of its agents (`fmi_path`), the
//! agent exchanges T1 for T2, and with T1 + T2 acts for a user (`user_fic`) or as itself
//! (app-only). [`AgentIdentity`] does the three legs and caches each.
//!
//! Run from the repository root:
//!
//! ```text
//! cargo run -p fic-examples --example agent_identity
//! ```
//!
//! Mirrors:
//! - seed 004 (MSAL Java, Federated Managed Identity): `ClientCredentialParameters.fmiPath(agent)`
//!   on the blueprint's request for `api://AzureADTokenExchange/.default` (Leg 1), the agent's
//!   assertion callback that knows the FMI path (Leg 2), and cache isolation between FMI paths
//!   (`FmiIT` "multi-FMI-path cache isolation").
//! - seed 003 (MSAL Java, `user_fic`): `acquireToken(UserFederatedIdentityCredentialParameters
//!   .builder(scopes, username | userObjectId, assertion))` (Leg 3), the cache hit for the same
//!   user (found by UPN or OID), multi-user isolation, app and user tokens never crossing
//!   (`AgenticIT`), and `forceRefresh`.
//!
//! The three legs written out by hand are in `user_fic_by_hand`.
//!
//! Real tenant: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` (the blueprint) and
//! `AZURE_CLIENT_CERTIFICATE_PATH` (+ `_PASSWORD`; sent with `x5c`), `FIC_AGENT_ID`,
//! `FIC_USER_UPN`, optionally `FIC_USER_OID` (the same user, to show the lookup by object id),
//! `FIC_USER_SCOPE` (default `https://graph.microsoft.com/User.Read`), `FIC_SCOPE` (app-only,
//! default Microsoft Graph).

use std::process::ExitCode;

use fic_emulator::{App, Emulator, User};
use fic_examples::{
    describe_token, ensure, jwt_claims, required_var, say, step, var, Env, ExampleResult,
    RealTenant, EXCHANGE_SCOPE, GRAPH_SCOPE, GRAPH_URL, ME_URL, TENANT, USER_SCOPE,
};
use fic_flows::{AgentIdentity, ClientCredential, UserIdentifier};
use fic_oauth_core::TokenSource;

// The ids of seed 004's examples.
const BLUEPRINT: &str = "aab5089d-e764-47e3-9f28-cc11c2513821";
const AGENT: &str = "ab18ca07-d139-4840-8b3b-4be9610c6ed5";
const OTHER_AGENT: &str = "cd29db18-e24a-4951-9c3c-5cf07d1e8f9a";
const ALICE: &str = "alice@contoso.com";
const ALICE_OID: &str = "00000000-0000-4000-8000-00000000a11c";
const BOB_OID: &str = "00000000-0000-4000-8000-000000000b0b";

struct Setup {
    env: Env,
    blueprint_id: String,
    certificate: fic_oauth_core::ClientIdentity,
    agent_id: String,
    other_agent: Option<String>,
    user_upn: String,
    user_oid: Option<String>,
    second_user_oid: Option<String>,
    user_scope: String,
    app_scope: String,
    app_url: Option<String>,
}

async fn setup() -> Result<Setup, Box<dyn std::error::Error + Send + Sync>> {
    if let Some(real) = RealTenant::from_env()? {
        return Ok(Setup {
            env: Env::real(&real.tenant_id)?,
            blueprint_id: real.client_id,
            certificate: real.certificate,
            agent_id: required_var("FIC_AGENT_ID")?,
            other_agent: None,
            user_upn: required_var("FIC_USER_UPN")?,
            user_oid: var("FIC_USER_OID"),
            second_user_oid: None,
            user_scope: var("FIC_USER_SCOPE").unwrap_or_else(|| USER_SCOPE.to_string()),
            app_scope: var("FIC_SCOPE").unwrap_or_else(|| GRAPH_SCOPE.to_string()),
            app_url: real.resource_url,
        });
    }
    // The blueprint authenticates with subject name + issuer: its chain goes in `x5c`.
    let (certificate, ca) = fic_examples::new_issued_identity("blueprint.contoso.com")?;
    let env = Env::emulator(
        Emulator::builder()
            .app(
                App::new(BLUEPRINT, TENANT)
                    .subject_issuer("blueprint.contoso.com", ca)
                    .agents([AGENT, OTHER_AGENT]),
            )
            .user(User::new(ALICE, ALICE_OID, TENANT))
            .user(User::new("bob@contoso.com", BOB_OID, TENANT)),
    )
    .await?;
    Ok(Setup {
        env,
        blueprint_id: BLUEPRINT.into(),
        certificate,
        agent_id: AGENT.into(),
        other_agent: Some(OTHER_AGENT.into()),
        user_upn: ALICE.into(),
        user_oid: Some(ALICE_OID.into()),
        second_user_oid: Some(BOB_OID.into()),
        user_scope: USER_SCOPE.into(),
        app_scope: GRAPH_SCOPE.into(),
        app_url: Some(GRAPH_URL.into()),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    fic_examples::exit(run().await)
}

/// The number of token requests sent since `before` (0 against a real tenant).
fn sent(env: &Env, before: Option<usize>) -> usize {
    env.token_requests()
        .zip(before)
        .map_or(0, |(now, before)| now - before)
}

async fn run() -> ExampleResult {
    step("setup");
    let s = setup().await?;
    let env = &s.env;
    let blueprint = env
        .client(&s.blueprint_id)
        .credential(ClientCredential::certificate_with_x5c(
            s.certificate.clone(),
        ))
        .build()?;
    let agent = AgentIdentity::new(blueprint.clone(), s.agent_id.clone())?;
    say(format!(
        "blueprint {} → agent {}",
        s.blueprint_id, s.agent_id
    ));

    // Leg 3 for a user: T1 (blueprint, fmi_path), T2 (agent), user_fic — 3 requests.
    step("agent for a user by UPN: blueprint → agent → user");
    let before = env.token_requests();
    let alice = UserIdentifier::Username(s.user_upn.clone());
    let token = agent.user_token([s.user_scope.as_str()], alice).await?;
    describe_token("user token", &token);
    say(format!(
        "{} token request(s): T1, T2, user_fic",
        sent(env, before)
    ));
    if env.is_emulated() {
        ensure(sent(env, before) == 3, "expected three requests")?;
        let requests = env.emulator_handle().map(|e| e.log().token_requests());
        if let Some([.., leg1, leg2, leg3]) = requests.as_deref() {
            say(format!(
                "Leg 1: client_id={} fmi_path={} scope={}",
                leg1.form_value("client_id").unwrap_or("-"),
                leg1.form_value("fmi_path").unwrap_or("-"),
                leg1.form_value("scope").unwrap_or("-")
            ));
            say(format!(
                "Leg 2: client_id={} (client_assertion = T1) scope={}",
                leg2.form_value("client_id").unwrap_or("-"),
                leg2.form_value("scope").unwrap_or("-")
            ));
            say(format!(
                "Leg 3: grant_type={} username={} scope={}",
                leg3.form_value("grant_type").unwrap_or("-"),
                leg3.form_value("username").unwrap_or("-"),
                leg3.form_value("scope").unwrap_or("-")
            ));
            ensure(
                leg1.form_value("fmi_path") == Some(s.agent_id.as_str()),
                "no fmi_path",
            )?;
            ensure(
                leg2.form_value("scope") == Some(EXCHANGE_SCOPE),
                "T2 is not for the exchange scope",
            )?;
            ensure(
                leg3.form_value("grant_type") == Some("user_fic"),
                "Leg 3 is not user_fic",
            )?;
        }
    }
    if let Some(account) = &token.account {
        say(format!(
            "account: {} ({})",
            account.username.as_deref().unwrap_or("-"),
            account.home_account_id
        ));
    }
    if s.user_scope.starts_with("https://graph.microsoft.com/") {
        let answer = env.resource().get(ME_URL, &token).await?;
        say(format!("GET {ME_URL} → {}", answer.status));
        ensure(answer.status.is_success(), "/me refused the user token")?;
        if let Ok(body) = answer.json() {
            say(format!("/me: oid={} idtyp={}", body["oid"], body["idtyp"]));
        }
    }

    step("T1 and T2 are cached");
    let t1 = agent.t1().await?;
    let t2 = agent.t2().await?;
    describe_token("T1", &t1);
    describe_token("T2", &t2);
    ensure(
        t1.source == TokenSource::Cache && t2.source == TokenSource::Cache,
        "T1/T2 not cached",
    )?;
    if let Ok(claims) = jwt_claims(t1.token.expose()) {
        say(format!(
            "T1 sub={} fmi_path={}",
            claims["sub"], claims["fmi_path"]
        ));
    }

    if let Some(oid) = &s.user_oid {
        step("the same user by object id: from the cache (0 requests)");
        let before = env.token_requests();
        let by_oid = UserIdentifier::from_parts(None, Some(oid))?;
        let token = agent.user_token([s.user_scope.as_str()], by_oid).await?;
        describe_token("user token", &token);
        ensure(
            token.source == TokenSource::Cache,
            "not served from the cache",
        )?;
        ensure(sent(env, before) == 0, "a request was sent")?;
    }

    if let Some(oid) = &s.second_user_oid {
        step("another user: user_fic only (T1, T2 cached: 1 request)");
        let before = env.token_requests();
        let bob = UserIdentifier::from_parts(None, Some(oid))?;
        let token = agent.user_token([s.user_scope.as_str()], bob).await?;
        describe_token("user token", &token);
        if let Ok(claims) = jwt_claims(token.token.expose()) {
            say(format!("oid={} (not Alice's)", claims["oid"]));
            ensure(
                claims["oid"].as_str() == Some(oid.as_str()),
                "another user's token",
            )?;
        }
        ensure(sent(env, before) == 1, "expected one request")?;
    }

    step("force refresh: a new user_fic request");
    let before = env.token_requests();
    let token = agent
        .user_token(
            [s.user_scope.as_str()],
            UserIdentifier::Username(s.user_upn.clone()),
        )
        .with_force_refresh(true)
        .await?;
    describe_token("user token", &token);
    ensure(
        token.source == TokenSource::IdentityProvider,
        "served from the cache",
    )?;
    if env.is_emulated() {
        ensure(sent(env, before) == 1, "expected one request")?;
    }

    step("agent, app-only (client_assertion = T1)");
    let token = agent.app_token([s.app_scope.as_str()]).await?;
    describe_token("app token", &token);
    ensure(token.account.is_none(), "an app-only token with an account")?;
    if let Ok(claims) = jwt_claims(token.token.expose()) {
        say(format!(
            "idtyp={} appid={}",
            claims["idtyp"], claims["appid"]
        ));
        ensure(claims["idtyp"] == "app", "not an app token")?;
    }
    if let Some(url) = &s.app_url {
        let answer = env.resource().get(url, &token).await?;
        say(format!("GET {url} → {}", answer.status));
        ensure(
            answer.status.is_success(),
            "the resource refused the app token",
        )?;
    }

    if let Some(other) = &s.other_agent {
        step("seed 004: two FMI paths are two cache entries");
        let before = env.token_requests();
        let for_other = blueprint
            .acquire_token_for_client([EXCHANGE_SCOPE])
            .with_fmi_path(other.clone())
            .await?;
        describe_token("T1 for the other agent", &for_other);
        ensure(
            sent(env, before) == 1,
            "the other FMI path did not miss the cache",
        )?;
        let again = blueprint
            .acquire_token_for_client([EXCHANGE_SCOPE])
            .with_fmi_path(other.clone())
            .await?;
        ensure(
            again.source == TokenSource::Cache,
            "not cached under its FMI path",
        )?;
        let first = agent.t1().await?;
        ensure(
            first.token.expose() != for_other.token.expose(),
            "the two FMI paths share a token",
        )?;
        say("each FMI path has its own token");
    }
    Ok(())
}
