//! The `user_fic` grant by hand: the three legs of the agent identity flow written out with
//! plain [`ConfidentialClient`](fic_flows::ConfidentialClient) calls, each token passed on
//! explicitly (what [`AgentIdentity`](fic_flows::AgentIdentity) does for you, see
//! `agent_identity`).
//!
//! Run from the repository root:
//!
//! ```text
//! cargo run -p fic-examples --example user_fic_by_hand
//! ```
//!
//! 1. Leg 1 — the blueprint, with its certificate (`x5c`), asks for
//!    `api://AzureADTokenExchange/.default` with `fmi_path=<agent id>`: T1 (seed 004,
//!    `ClientCredentialParameters.fmiPath`).
//! 2. Leg 2 — the agent, with T1 as its client assertion, asks for the same scope: T2 (seed
//!    004, `ClientCredentialFactory.createFromCallback`).
//! 3. Leg 3 — the agent, with T1 as its client assertion, sends `grant_type=user_fic` with
//!    `user_federated_identity_credential=T2` and the user by `username` (UPN) or `user_id`
//!    (object id): a user token with an account, id token and refresh token (seed 003,
//!    `acquireToken(UserFederatedIdentityCredentialParameters.builder(scopes, username,
//!    assertion))`).
//!
//! Real tenant: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` (the blueprint),
//! `AZURE_CLIENT_CERTIFICATE_PATH` (+ `_PASSWORD`), `FIC_AGENT_ID`, `FIC_USER_UPN` or
//! `FIC_USER_OID`, optionally `FIC_USER_SCOPE` (default `https://graph.microsoft.com/User.Read`).

use std::process::ExitCode;

use fic_assertion::StaticAssertion;
use fic_emulator::{App, Emulator, User};
use fic_examples::{
    describe_token, ensure, jwt_claims, required_var, say, step, var, Env, ExampleResult,
    RealTenant, EXCHANGE_SCOPE, ME_URL, TENANT, USER_SCOPE,
};
use fic_flows::{ClientCredential, UserIdentifier};

const BLUEPRINT: &str = "aab5089d-e764-47e3-9f28-cc11c2513821";
const AGENT: &str = "ab18ca07-d139-4840-8b3b-4be9610c6ed5";
const ALICE: &str = "alice@contoso.com";
const ALICE_OID: &str = "00000000-0000-4000-8000-00000000a11c";

#[tokio::main]
async fn main() -> ExitCode {
    fic_examples::exit(run().await)
}

async fn run() -> ExampleResult {
    step("setup");
    let (env, blueprint_id, certificate, agent_id, user, user_scope) =
        if let Some(real) = RealTenant::from_env()? {
            (
                Env::real(&real.tenant_id)?,
                real.client_id,
                real.certificate,
                required_var("FIC_AGENT_ID")?,
                UserIdentifier::from_parts(
                    var("FIC_USER_UPN").as_deref(),
                    var("FIC_USER_OID").as_deref(),
                )?,
                var("FIC_USER_SCOPE").unwrap_or_else(|| USER_SCOPE.to_string()),
            )
        } else {
            let (certificate, ca) = fic_examples::new_issued_identity("blueprint.contoso.com")?;
            let env = Env::emulator(
                Emulator::builder()
                    .app(
                        App::new(BLUEPRINT, TENANT)
                            .subject_issuer("blueprint.contoso.com", ca)
                            .agents([AGENT]),
                    )
                    .user(User::new(ALICE, ALICE_OID, TENANT)),
            )
            .await?;
            (
                env,
                BLUEPRINT.to_string(),
                certificate,
                AGENT.to_string(),
                UserIdentifier::from_parts(None, Some(ALICE_OID))?,
                USER_SCOPE.to_string(),
            )
        };

    step("Leg 1: the blueprint's token for the agent (fmi_path) = T1");
    let blueprint = env
        .client(&blueprint_id)
        .credential(ClientCredential::certificate_with_x5c(certificate))
        .build()?;
    let t1 = blueprint
        .acquire_token_for_client([EXCHANGE_SCOPE])
        .with_fmi_path(agent_id.clone())
        .await?;
    describe_token("T1", &t1);
    env.show_last_token_request();
    if let Ok(claims) = jwt_claims(t1.token.expose()) {
        say(format!(
            "T1 aud={} sub={} fmi_path={}",
            claims["aud"], claims["sub"], claims["fmi_path"]
        ));
    }

    step("Leg 2: the agent, authenticated by T1, gets T2 for the exchange scope");
    // The agent's client: same transport, cache, authority as the blueprint, T1 as credential.
    let agent = blueprint.for_client(
        agent_id.clone(),
        ClientCredential::assertion(StaticAssertion::new(t1.token.clone())?),
    )?;
    let t2 = agent.acquire_token_for_client([EXCHANGE_SCOPE]).await?;
    describe_token("T2", &t2);
    env.show_last_token_request();
    if let Some(request) = env.last_token_request() {
        ensure(
            request.form_value("client_assertion") == Some(t1.token.expose()),
            "Leg 2's client assertion is not T1",
        )?;
    }

    step(&format!("Leg 3: user_fic for {user:?} with T2"));
    let token = agent
        .acquire_token_by_user_fic([user_scope.as_str()], user.clone(), t2.token.clone())
        .await?;
    describe_token("user token", &token);
    env.show_last_token_request();
    if let Some(request) = env.last_token_request() {
        say(format!(
            "grant_type={} user_id={} username={} client_info={}",
            request.form_value("grant_type").unwrap_or("-"),
            request.form_value("user_id").unwrap_or("-"),
            request.form_value("username").unwrap_or("-"),
            request.form_value("client_info").unwrap_or("-"),
        ));
        ensure(
            request.form_value("grant_type") == Some("user_fic"),
            "not user_fic",
        )?;
        ensure(
            request.form_value("user_federated_identity_credential") == Some(t2.token.expose()),
            "the user federated identity credential is not T2",
        )?;
    }
    let account = token.account.clone();
    ensure(account.is_some(), "no account in the user token")?;
    if let Some(account) = account {
        say(format!(
            "account {} (home account id {})",
            account.username.as_deref().unwrap_or("-"),
            account.home_account_id
        ));
    }
    say(format!(
        "id token: {}, refresh token: {}",
        token.id_token.is_some(),
        token.refresh_token.is_some()
    ));

    step("the same user again: from the cache");
    let again = agent
        .acquire_token_by_user_fic([user_scope.as_str()], user, t2.token.clone())
        .await?;
    describe_token("user token", &again);
    ensure(
        again.source == fic_oauth_core::TokenSource::Cache,
        "not served from the cache",
    )?;

    if user_scope.starts_with("https://graph.microsoft.com/") {
        step("call Graph /me with the user token");
        let answer = env.resource().get(ME_URL, &token).await?;
        say(format!("GET {ME_URL} → {}", answer.status));
        ensure(answer.status.is_success(), "/me refused the user token")?;
        if let Ok(body) = answer.json() {
            say(format!(
                "/me: oid={} upn={}",
                body["oid"], body["preferred_username"]
            ));
        }
    }
    Ok(())
}
