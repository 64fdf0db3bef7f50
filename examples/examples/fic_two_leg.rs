//! FIC two-leg: Leg 1 gets a token for `api://AzureADTokenExchange` from one app, Leg 2 uses it
//! as the client assertion of another app (Bearer, or mTLS PoP with jwt-pop), each scenario once
//! with [`TwoLeg`] (one credential) and once by hand with [`FicLeg1`] / [`FicLeg2`].
//!
//! Run from the repository root:
//!
//! ```text
//! cargo run -p fic-examples --example fic_two_leg
//! ```
//!
//! Mirrors seed 000 (msal-mtls-pop-fic-two-leg), "All Four Scenarios":
//! - Scenario 1 (SAMI → CC): `FicLeg1Acquirer.CreateForManagedIdentity(SystemAssigned)` is a
//!   [`ManagedIdentity`] (vanilla, Bearer, from IMDS) given to `TwoLeg::builder` /
//!   `FicLeg1::new`; Leg 2 with PoP on `cert2` and `region: "westus3"`.
//! - Scenario 2 (UAMI → CC): the same with `ManagedIdentityId::ClientId`, `ResourceId` and
//!   `ObjectId` (the seed's `WithUserAssignedClientId` / `ResourceId` / `ObjectId`).
//! - Scenario 3 (Confidential Client → Confidential Client): Leg 1 vanilla (Bearer), Leg 2 with
//!   `usePoP: true` and its certificate `cert2`; also shown with a Bearer Leg 2.
//! - Scenario 4 (CC with PoP → CC with PoP): Leg 1 is mTLS PoP too; Leg 2 then presents the
//!   Leg-1 certificate (the identity provider requires the TLS certificate of Leg 2 to be the
//!   `cnf` of its jwt-pop assertion).
//! - The helper classes `FicLeg1Acquirer` / `FicLeg2Exchanger` are [`FicLeg1`] / [`FicLeg2`].
//!
//! Real tenant: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` + `AZURE_CLIENT_CERTIFICATE_PATH` (Leg 1,
//! "identity-app-id"), `FIC_LEG2_CLIENT_ID` (Leg 2, "resource-app-id", with a federated
//! credential trusting Leg 1's tokens), optionally `FIC_LEG2_TENANT_ID` (default: the same
//! tenant), `FIC_LEG2_CERTIFICATE_PATH` (+ `_PASSWORD`; needed for the PoP scenario 3),
//! `FIC_SCOPE` (default Microsoft Graph) and `FIC_RESOURCE_URL`; on an Azure host,
//! `FIC_MANAGED_IDENTITY` (`system` or a user-assigned client id) runs Scenarios 1 / 2 too.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;

use fic_emulator::{App, Emulator, FederatedCredential, ManagedIdentity as EmulatedIdentity};
use fic_examples::{
    certificate_from_env, describe_token, ensure, jwt_claims, required_var, say, step, var, Env,
    ExampleResult, RealTenant, DEFAULT_REGION, EXCHANGE_AUDIENCE, EXCHANGE_SCOPE, GRAPH_SCOPE,
    GRAPH_URL, TENANT,
};
use fic_flows::{ConfidentialClientBuilder, FicLeg1, FicLeg2, TwoLeg};
use fic_managed_identity::{ManagedIdentity, ManagedIdentityId};
use fic_oauth_core::request::{JWT_BEARER, JWT_POP};
use fic_oauth_core::{AccessToken, ClientIdentity, TokenCredential, TokenType};

const LEG1_APP: &str = "1d1e1f10-0000-4000-8000-00000000000a";
const LEG2_APP: &str = "2e2f2021-0000-4000-8000-00000000000b";
// The managed identities of seed 000's Scenario 2 (client id, object id, resource id).
const SAMI_CLIENT_ID: &str = "5d0a7c1e-0000-4000-8000-0000000000a1";
const SAMI_OBJECT_ID: &str = "5d0a7c1e-0000-4000-8000-0000000000a2";
const UAMI_CLIENT_ID: &str = "6325cd32-9911-41f3-819c-416cdf9104e7";
const UAMI_OBJECT_ID: &str = "ecb2ad92-3e30-4505-b79f-ac640d069f24";
const UAMI_RESOURCE_ID: &str = "/subscriptions/c1686c51-b717-4fe0-9af3-24a20a41fb0c/resourcegroups/MSIV2-Testing-MSALNET/providers/Microsoft.ManagedIdentity/userAssignedIdentities/msiv2uami";

/// What the scenarios need.
struct Setup {
    env: Env,
    leg1_id: String,
    cert1: ClientIdentity,
    leg2_id: String,
    leg2_authority: String,
    cert2: Option<ClientIdentity>,
    scope: String,
    resource_url: Option<String>,
    region: String,
    /// The managed identities to use as Leg 1 (Scenarios 1 and 2).
    managed_identities: Vec<(&'static str, ManagedIdentityId)>,
}

impl Setup {
    /// The Leg-2 app's client builder (its authority, the shared transport).
    fn leg2_builder(&self) -> ConfidentialClientBuilder {
        self.env
            .client(&self.leg2_id)
            .authority(&self.leg2_authority)
    }

    /// Leg 1 as a `TokenCredential`: the first app with its certificate, Bearer or mTLS PoP.
    fn leg1(&self, pop: bool) -> Result<Arc<dyn TokenCredential>, fic_oauth_core::Error> {
        Ok(Arc::new(
            self.env
                .client(&self.leg1_id)
                .certificate(self.cert1.clone())
                .mtls_pop(pop)
                .build()?,
        ))
    }

    /// Leg 1 as a managed identity. In emulator mode the host has no managed-identity
    /// variables (so IMDS, at `169.254.169.254` through the transport's resolver override).
    fn managed_identity(
        &self,
        id: ManagedIdentityId,
    ) -> Result<Arc<dyn TokenCredential>, fic_oauth_core::Error> {
        let mut builder = ManagedIdentity::builder().id(id);
        if self.env.is_emulated() {
            builder = builder
                .environment(HashMap::new())
                .arc_agent_path("/nonexistent/azcmagent/bin/himds")
                .transport(self.env.transport());
        }
        Ok(Arc::new(builder.build()?))
    }

    /// The token requests the emulator saw from index `from` on.
    fn requests_since(&self, from: usize) -> Vec<fic_emulator::LoggedRequest> {
        self.env
            .emulator_handle()
            .map(|e| e.log().token_requests().into_iter().skip(from).collect())
            .unwrap_or_default()
    }

    async fn call_resource(&self, token: &AccessToken) -> ExampleResult {
        let Some(url) = &self.resource_url else {
            say("FIC_RESOURCE_URL is not set: resource call skipped");
            return Ok(());
        };
        let answer = self.env.resource().get(url, token).await?;
        say(format!("GET {url} → {}", answer.status));
        ensure(
            answer.status.is_success(),
            format!(
                "the resource refused the token: {}",
                answer.www_authenticate().unwrap_or("-")
            ),
        )?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    fic_examples::exit(run().await)
}

async fn setup() -> Result<Setup, Box<dyn std::error::Error + Send + Sync>> {
    if let Some(real) = RealTenant::from_env()? {
        let leg2_tenant = var("FIC_LEG2_TENANT_ID").unwrap_or_else(|| real.tenant_id.clone());
        return Ok(Setup {
            env: Env::real(&real.tenant_id)?,
            leg1_id: real.client_id,
            cert1: real.certificate,
            leg2_id: required_var("FIC_LEG2_CLIENT_ID")?,
            leg2_authority: fic_examples::authority_for(&leg2_tenant),
            cert2: certificate_from_env("FIC_LEG2_CERTIFICATE")?,
            scope: var("FIC_SCOPE").unwrap_or_else(|| GRAPH_SCOPE.to_string()),
            resource_url: real.resource_url,
            region: real.region,
            managed_identities: match var("FIC_MANAGED_IDENTITY").as_deref() {
                None => Vec::new(),
                Some("system") => vec![("SAMI", ManagedIdentityId::SystemAssigned)],
                Some(client_id) => vec![(
                    "UAMI by client id",
                    ManagedIdentityId::ClientId(client_id.to_string()),
                )],
            },
        });
    }
    let cert1 = fic_examples::new_identity("leg1-identity-app")?;
    let cert2 = fic_examples::new_identity("leg2-resource-app")?;
    let leg1 = App::new(LEG1_APP, TENANT).certificate(cert1.leaf_der().to_vec());
    // Leg 2 trusts tokens the tenant issued to Leg 1's service principal, for the exchange
    // audience (the Federated Identity Credential of the seed's troubleshooting section).
    let issuer = format!("https://login.microsoftonline.com/{TENANT}/v2.0");
    let trust = |subject: &str| FederatedCredential::new(&issuer, subject, EXCHANGE_AUDIENCE);
    let leg2 = App::new(LEG2_APP, TENANT)
        .certificate(cert2.leaf_der().to_vec())
        .federated_credential(trust(&leg1.object_id))
        // Scenarios 1 and 2: the host's managed identities are trusted too (their tokens'
        // subject is their object id).
        .federated_credential(trust(SAMI_OBJECT_ID))
        .federated_credential(trust(UAMI_OBJECT_ID));
    let env = Env::emulator(
        Emulator::builder()
            .app(leg1)
            .app(leg2)
            .managed_identity(EmulatedIdentity::system_assigned(
                SAMI_CLIENT_ID,
                SAMI_OBJECT_ID,
                TENANT,
            ))
            .managed_identity(EmulatedIdentity::user_assigned(
                UAMI_CLIENT_ID,
                UAMI_OBJECT_ID,
                UAMI_RESOURCE_ID,
                TENANT,
            )),
    )
    .await?;
    let leg2_authority = env.authority();
    Ok(Setup {
        env,
        leg1_id: LEG1_APP.into(),
        cert1,
        leg2_id: LEG2_APP.into(),
        leg2_authority,
        cert2: Some(cert2),
        scope: GRAPH_SCOPE.into(),
        resource_url: Some(GRAPH_URL.into()),
        region: DEFAULT_REGION.into(),
        managed_identities: vec![
            ("SAMI", ManagedIdentityId::SystemAssigned),
            (
                "UAMI by client id",
                ManagedIdentityId::ClientId(UAMI_CLIENT_ID.into()),
            ),
            (
                "UAMI by resource id",
                ManagedIdentityId::ResourceId(UAMI_RESOURCE_ID.into()),
            ),
            (
                "UAMI by object id",
                ManagedIdentityId::ObjectId(UAMI_OBJECT_ID.into()),
            ),
        ],
    })
}

async fn run() -> ExampleResult {
    step("setup");
    let s = setup().await?;
    say(format!(
        "Leg 1: app {} (certificate {}); Leg 2: app {}",
        s.leg1_id,
        fic_examples::short(Some(s.cert1.thumbprint_s256())),
        s.leg2_id
    ));

    scenarios_1_and_2(&s).await?;

    scenario_3_bearer(&s).await?;
    if let Some(cert2) = &s.cert2 {
        scenario_3_pop(&s, cert2).await?;
    } else {
        step("Scenario 3 with PoP on Leg 2");
        say("FIC_LEG2_CERTIFICATE_PATH is not set: skipped");
    }
    scenario_4(&s).await?;
    by_hand(&s).await?;
    Ok(())
}

/// Scenarios 1 and 2: a managed identity (vanilla, Bearer) as Leg 1, Leg 2 with PoP on cert2
/// in `westus3` (Scenario 1's `region: "westus3"`).
async fn scenarios_1_and_2(s: &Setup) -> ExampleResult {
    if s.managed_identities.is_empty() {
        step("Scenarios 1 and 2 (SAMI / UAMI → CC)");
        say("FIC_MANAGED_IDENTITY is not set (\"system\" or a UAMI client id): skipped");
        return Ok(());
    }
    for (label, id) in &s.managed_identities {
        let scenario = if *id == ManagedIdentityId::SystemAssigned {
            "Scenario 1"
        } else {
            "Scenario 2"
        };
        step(&format!("{scenario}: {label} → CC (TwoLeg)"));
        let before = s.env.token_requests().unwrap_or(0);
        let leg1 = s.managed_identity(id.clone())?;
        let leg2_builder = s.leg2_builder().region(&s.region);
        let mut builder = TwoLeg::builder(leg1.clone(), leg2_builder);
        if let Some(cert2) = &s.cert2 {
            builder = builder.binding_certificate(cert2.clone());
        }
        let two_leg = builder.build()?;
        let mut request = two_leg.acquire_token([s.scope.as_str()]);
        if s.cert2.is_some() {
            request = request.with_mtls_pop();
        }
        let token = request.await?;
        describe_token("Leg 2 token", &token);
        // seed 000: "Binding cert thumbprint: accessResult.BindingCertificate?.Thumbprint"
        say(format!(
            "binding certificate: {}",
            fic_examples::short(token.binding_thumbprint())
        ));
        if let Some(emulator) = s.env.emulator_handle() {
            let imds = emulator
                .log()
                .imds_requests()
                .into_iter()
                .filter(|r| r.path.contains("/identity/oauth2/token"))
                .last();
            if let Some(imds) = imds {
                say(format!(
                    "Leg 1: GET http://{}{}?{}",
                    imds.host,
                    imds.path,
                    imds.query.as_deref().unwrap_or_default()
                ));
            }
            let requests = s.requests_since(before);
            ensure(requests.len() == 1, "expected one token request (Leg 2)")?;
            let leg2 = &requests[0];
            say(format!(
                "Leg 2: POST https://{} client_assertion_type={}",
                leg2.host,
                leg2.form_value("client_assertion_type").unwrap_or("-")
            ));
            ensure(
                leg2.host == format!("{}.mtlsauth.microsoft.com", s.region),
                format!("Leg 2 went to {}", leg2.host),
            )?;
            ensure(
                leg2.form_value("client_assertion_type") == Some(JWT_POP),
                "Leg 2 did not send jwt-pop",
            )?;
        }
        s.call_resource(&token).await?;
    }

    // FicLeg1Acquirer.CreateForManagedIdentity(ManagedIdentityId.SystemAssigned)
    if let Some((label, id)) = s.managed_identities.first() {
        step(&format!(
            "By hand: FicLeg1::new({label}), then FicLeg2::exchange"
        ));
        let assertion = FicLeg1::new(s.managed_identity(id.clone())?)
            .acquire_assertion()
            .await?;
        describe_token("Leg 1 (assertion)", &assertion);
        let leg2 = FicLeg2::new(s.leg2_builder())?;
        let token = match &s.cert2 {
            Some(cert2) => {
                leg2.with_certificate(cert2.clone())
                    .exchange(&assertion, [s.scope.as_str()])?
                    .with_mtls_pop()
                    .await?
            }
            None => leg2.exchange(&assertion, [s.scope.as_str()])?.await?,
        };
        describe_token("Leg 2", &token);
        s.call_resource(&token).await?;
    }
    Ok(())
}

/// Scenario 3 with a Bearer Leg 2 (the plain FIC exchange).
async fn scenario_3_bearer(s: &Setup) -> ExampleResult {
    step("Scenario 3: CC → CC, Bearer (TwoLeg)");
    let before = s.env.token_requests().unwrap_or(0);
    let leg2_builder = s.leg2_builder();
    let two_leg = TwoLeg::builder(s.leg1(false)?, leg2_builder).build()?;
    let token = two_leg.acquire_token([s.scope.as_str()]).await?;
    describe_token("Leg 2 token", &token);
    ensure(token.token_type == TokenType::Bearer, "not a Bearer token")?;
    if let [leg1, leg2] = s.requests_since(before).as_slice() {
        say(format!(
            "Leg 1: POST https://{} scope={}",
            leg1.host,
            leg1.form_value("scope").unwrap_or("-")
        ));
        say(format!(
            "Leg 2: POST https://{} client_assertion_type={}",
            leg2.host,
            leg2.form_value("client_assertion_type").unwrap_or("-")
        ));
        ensure(
            leg1.form_value("scope") == Some(EXCHANGE_SCOPE),
            "Leg 1 did not ask for the exchange scope",
        )?;
        ensure(
            leg2.form_value("client_assertion_type") == Some(JWT_BEARER),
            "Leg 2 did not send jwt-bearer",
        )?;
    } else if s.env.is_emulated() {
        ensure(false, "expected exactly a Leg-1 and a Leg-2 request")?;
    }
    s.call_resource(&token).await?;

    // Both legs are cached: the same call again sends nothing.
    let before = s.env.token_requests();
    let again = two_leg.acquire_token([s.scope.as_str()]).await?;
    describe_token("again", &again);
    ensure(
        s.env.token_requests() == before,
        "a request was sent for a cached token",
    )?;
    Ok(())
}

/// Scenario 3 as in the seed: Leg 1 vanilla, Leg 2 `usePoP: true` with `cert2`.
async fn scenario_3_pop(s: &Setup, cert2: &ClientIdentity) -> ExampleResult {
    step("Scenario 3: CC → CC with PoP on Leg 2 (TwoLeg + binding_certificate(cert2))");
    let leg2_builder = s.leg2_builder();
    let two_leg = TwoLeg::builder(s.leg1(false)?, leg2_builder)
        .binding_certificate(cert2.clone())
        .build()?;
    let token = two_leg
        .acquire_token([s.scope.as_str()])
        .with_mtls_pop()
        .await?;
    describe_token("Leg 2 token", &token);
    ensure(
        token.token_type == TokenType::MtlsPop,
        "not an mtls_pop token",
    )?;
    // seed 000: "Binding cert thumbprint: accessResult.BindingCertificate?.Thumbprint"
    ensure(
        token.binding_thumbprint() == Some(cert2.thumbprint_s256()),
        "Leg 2 is not bound to cert2",
    )?;
    s.env.show_last_token_request();
    if let Some(leg2) = s.env.last_token_request() {
        ensure(
            leg2.host == "mtlsauth.microsoft.com",
            format!("Leg 2 went to {}", leg2.host),
        )?;
        ensure(
            leg2.form_value("client_assertion_type") == Some(JWT_POP),
            "Leg 2 did not send jwt-pop",
        )?;
        ensure(
            leg2.client_cert_thumbprint.as_deref() == Some(cert2.thumbprint_s256()),
            "Leg 2's TLS certificate is not cert2",
        )?;
    }
    s.call_resource(&token).await
}

/// Scenario 4: PoP on both legs.
async fn scenario_4(s: &Setup) -> ExampleResult {
    step("Scenario 4: CC (PoP) → CC (PoP) (TwoLeg, Leg 1 .mtls_pop(true))");
    let leg2_builder = s.leg2_builder();
    let two_leg = TwoLeg::builder(s.leg1(true)?, leg2_builder).build()?;
    let token = two_leg
        .acquire_token([s.scope.as_str()])
        .with_mtls_pop()
        .await?;
    describe_token("Leg 2 token", &token);
    ensure(
        token.binding_thumbprint() == Some(s.cert1.thumbprint_s256()),
        "Leg 2 is not bound to the Leg-1 certificate",
    )?;
    s.env.show_last_token_request();
    if let Some(leg2) = s.env.last_token_request() {
        let assertion = leg2.form_value("client_assertion").unwrap_or_default();
        let cnf = jwt_claims(assertion)?["cnf"]["x5t#S256"].clone();
        say(format!(
            "Leg 2's assertion (the Leg-1 token) has cnf {cnf}; TLS certificate {}",
            fic_examples::short(leg2.client_cert_thumbprint.as_deref())
        ));
        ensure(
            cnf.as_str() == Some(s.cert1.thumbprint_s256()),
            "the Leg-1 token is not bound to cert1",
        )?;
    }
    s.call_resource(&token).await
}

/// The seed's helper classes: FicLeg1Acquirer.AcquireAssertionAsync, then
/// FicLeg2Exchanger.ExchangeAssertionForAccessTokenAsync(assertion, scope, usePoP).
async fn by_hand(s: &Setup) -> ExampleResult {
    step("By hand: FicLeg1::acquire_assertion, then FicLeg2::exchange (Scenario 3, usePoP)");
    // FicLeg1Acquirer.CreateForConfidentialClient(clientId, tenantId, cert1)
    let leg1 = FicLeg1::new(s.leg1(false)?);
    let assertion = leg1.acquire_assertion().await?;
    describe_token("Leg 1 (assertion)", &assertion);
    if let Ok(claims) = jwt_claims(assertion.token.expose()) {
        say(format!("assertion aud = {}", claims["aud"]));
    }

    // FicLeg2Exchanger.Create(clientId, tenantId, cert2): the Leg-1 token is the credential,
    // cert2 the binding certificate.
    let leg2 = FicLeg2::new(s.leg2_builder())?;
    if let Some(cert2) = &s.cert2 {
        let token = leg2
            .clone()
            .with_certificate(cert2.clone())
            .exchange(&assertion, [s.scope.as_str()])?
            .with_mtls_pop()
            .await?;
        describe_token("Leg 2 (usePoP: true)", &token);
        ensure(
            token.binding_thumbprint() == Some(cert2.thumbprint_s256()),
            "not bound to cert2",
        )?;
        s.call_resource(&token).await?;
    }
    let token = leg2.exchange(&assertion, [s.scope.as_str()])?.await?;
    describe_token("Leg 2 (usePoP: false)", &token);
    ensure(token.token_type == TokenType::Bearer, "not a Bearer token")?;
    s.call_resource(&token).await?;

    step("By hand: Scenario 4 (Leg 1 usePoP: true, Leg 2 usePoP: true)");
    let leg1 = FicLeg1::new(s.leg1(true)?);
    let assertion = leg1.acquire_assertion().await?;
    describe_token("Leg 1 (assertion, PoP)", &assertion);
    let token = FicLeg2::new(s.leg2_builder())?
        .exchange(&assertion, [s.scope.as_str()])?
        .with_mtls_pop()
        .await?;
    describe_token("Leg 2 (PoP)", &token);
    ensure(
        token.binding_thumbprint() == Some(s.cert1.thumbprint_s256()),
        "Leg 2 is not bound to the Leg-1 certificate",
    )?;
    s.call_resource(&token).await
}
