//! FMI and agent identity: blueprint → agent → user (PROTOCOL §7).
//!
//! - Leg 1: the blueprint app, with `fmi_path=<agent id>`, gets T1 for the token-exchange
//!   audience (its certificate assertion carries `x5c`).
//! - Leg 2: the agent app, with `client_assertion=T1`, gets T2 for the exchange audience
//!   (cached under `credential_fmi_path=<agent id>`), or an app token for any resource.
//! - Leg 3: `user_fic` as the agent with `client_assertion=T1` and
//!   `user_federated_identity_credential=T2`, for a user by UPN or object id.
//!
//! Every leg is cached: a user's token costs 3 requests the first time, 1 for each new user,
//! none on a repeat.

use std::sync::Arc;

use async_trait::async_trait;
use fic_assertion::{AssertionProvider, AssertionRequest, ClientAssertion};
use fic_oauth_core::request::UserIdentifier;
use fic_oauth_core::{AccessToken, Error};

use crate::confidential::{AcquireTokenForClient, ClientCredential, ConfidentialClient};
use crate::two_leg::{exchange_audience_of, exchange_scope};
use crate::user::{AcquireTokenByUserFic, UserCredentialSource};

/// The exchange scope of `authority`'s cloud (the same rule as [`crate::TwoLeg`]'s: a cloud
/// with no published exchange audience is an error, not the public cloud's audience).
fn exchange_scope_of(authority: &fic_oauth_core::authority::Authority) -> Result<String, Error> {
    exchange_audience_of(authority).map(exchange_scope)
}

/// T1 as a client assertion: the blueprint's FMI token for the agent.
#[derive(Clone, Debug)]
pub struct BlueprintAssertion {
    blueprint: ConfidentialClient,
    agent_id: String,
}

impl BlueprintAssertion {
    /// Assertions for `agent_id` from `blueprint`.
    pub fn new(blueprint: ConfidentialClient, agent_id: impl Into<String>) -> Self {
        Self {
            blueprint,
            agent_id: agent_id.into(),
        }
    }
}

#[async_trait]
impl AssertionProvider for BlueprintAssertion {
    async fn assertion(&self, request: &AssertionRequest) -> Result<ClientAssertion, Error> {
        let path = request
            .fmi_path
            .clone()
            .unwrap_or_else(|| self.agent_id.clone());
        let scope = exchange_scope_of(self.blueprint.authority())?;
        let t1 = self
            .blueprint
            .acquire_token_for_client([scope])
            .with_fmi_path(path)
            .with_correlation_id(request.correlation_id)
            .await?;
        ClientAssertion::new(t1.token)
    }
}

/// An agent identity: acts as itself (app-only) or for a user, through its blueprint.
///
/// ```no_run
/// # async fn demo(blueprint: fic_flows::ConfidentialClient) -> Result<(), fic_oauth_core::Error> {
/// use fic_flows::{AgentIdentity, UserIdentifier};
///
/// let agent = AgentIdentity::new(blueprint, "ab18ca07-d139-4840-8b3b-4be9610c6ed5")?;
/// let for_alice = agent
///     .user_token(["https://graph.microsoft.com/User.Read"], UserIdentifier::Username("alice@contoso.com".into()))
///     .await?;
/// let app_only = agent.app_token(["https://graph.microsoft.com/.default"]).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct AgentIdentity {
    blueprint: ConfidentialClient,
    agent: ConfidentialClient,
    agent_id: String,
}

impl AgentIdentity {
    /// The agent `agent_id` of `blueprint` (whose credential should send `x5c`); the agent
    /// client shares the blueprint's transport, cache, authority and region.
    pub fn new(blueprint: ConfidentialClient, agent_id: impl Into<String>) -> Result<Self, Error> {
        let agent_id = agent_id.into();
        let agent = blueprint.for_client(
            agent_id.clone(),
            ClientCredential::assertion(BlueprintAssertion::new(
                blueprint.clone(),
                agent_id.clone(),
            )),
        )?;
        Ok(Self {
            blueprint,
            agent,
            agent_id,
        })
    }

    /// The agent's id.
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// The blueprint's client.
    pub fn blueprint(&self) -> &ConfidentialClient {
        &self.blueprint
    }

    /// The agent's client (its credential is T1).
    pub fn agent(&self) -> &ConfidentialClient {
        &self.agent
    }

    fn exchange_scope(&self) -> Result<String, Error> {
        exchange_scope_of(self.blueprint.authority())
    }

    /// T1: the blueprint's token for the agent (Leg 1).
    pub async fn t1(&self) -> Result<AccessToken, Error> {
        self.blueprint
            .acquire_token_for_client([self.exchange_scope()?])
            .with_fmi_path(self.agent_id.clone())
            .await
    }

    /// T2: the agent's token for the exchange audience (Leg 2).
    pub async fn t2(&self) -> Result<AccessToken, Error> {
        self.agent
            .acquire_token_for_client([self.exchange_scope()?])
            .with_assertion_fmi_path(self.agent_id.clone())
            .await
    }

    /// An app-only token of the agent for `scopes`.
    pub fn app_token(
        &self,
        scopes: impl IntoIterator<Item = impl Into<String>>,
    ) -> AcquireTokenForClient {
        self.agent
            .acquire_token_for_client(scopes)
            .with_assertion_fmi_path(self.agent_id.clone())
    }

    /// A token of the agent acting for `user` (Leg 3, `user_fic`).
    pub fn user_token(
        &self,
        scopes: impl IntoIterator<Item = impl Into<String>>,
        user: UserIdentifier,
    ) -> AcquireTokenByUserFic {
        let agent = self.clone();
        let t2: UserCredentialSource = Arc::new(move || {
            let agent = agent.clone();
            Box::pin(async move { agent.t2().await.map(|token| token.token) })
        });
        self.agent
            .acquire_token_by_user_fic_from(scopes, user, t2)
            .with_assertion_fmi_path(self.agent_id.clone())
    }
}
