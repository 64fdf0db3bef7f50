//! Vanilla mTLS PoP with a managed identity (IMDSv2): the host's identity gets a certificate
//! for a fresh in-memory key from IMDS, then a token bound to it from the regional mtlsauth
//! endpoint; the resource is called with that binding certificate. Then the certificate-bound
//! managed-identity token as Leg 1 of a FIC two-leg with PoP on both legs.
//!
//! Run from the repository root:
//!
//! ```text
//! cargo run -p fic-examples --example managed_identity_mtls_pop
//! ```
//!
//! Mirrors:
//! - seed 002 (msal-mtls-pop-vanilla), "MSI (Managed Identity)": system-assigned and
//!   user-assigned (by client id, resource id) `AcquireTokenForManagedIdentity(..)
//!   .WithMtlsProofOfPossession()`, `BindingCertificate` in the TLS handshake to the resource,
//!   the cache on the second call ("Complete Example (MSI)").
//! - seed 001, "Leg 1 with MSI": the managed identity's mTLS PoP token for
//!   `api://AzureADTokenExchange`, then Leg 2 with jwt-pop over mTLS presenting the same
//!   certificate (the `cnf` of the Leg-1 token).
//!
//! Real host: set `FIC_MANAGED_IDENTITY` (`system`, or a user-assigned identity's client id)
//! on an Azure VM with IMDSv2; optionally `FIC_SCOPE` (default Key Vault), `FIC_RESOURCE_URL`,
//! and for the two-leg step `AZURE_TENANT_ID` + `FIC_LEG2_CLIENT_ID` (an app whose federated
//! credential trusts the managed identity). The production defaults are used (source detected
//! from the environment, `MtlsTransport::new()`).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;

use fic_emulator::{App, Emulator, FederatedCredential, ManagedIdentity as EmulatedIdentity};
use fic_examples::{
    describe_token, ensure, jwt_claims, say, short, step, var, Env, ExampleResult,
    EXCHANGE_AUDIENCE, GRAPH_SCOPE, GRAPH_URL, TENANT, VAULT_SCOPE, VAULT_URL,
};
use fic_flows::TwoLeg;
use fic_managed_identity::{ManagedIdentity, ManagedIdentityId};
use fic_oauth_core::{TokenCredential, TokenSource, TokenType};

const SAMI_CLIENT_ID: &str = "5d0a7c1e-0000-4000-8000-0000000000a1";
const SAMI_OBJECT_ID: &str = "5d0a7c1e-0000-4000-8000-0000000000a2";
const UAMI_CLIENT_ID: &str = "6325cd32-9911-41f3-819c-416cdf9104e7";
const UAMI_OBJECT_ID: &str = "ecb2ad92-3e30-4505-b79f-ac640d069f24";
const UAMI_RESOURCE_ID: &str = "/subscriptions/c1686c51-b717-4fe0-9af3-24a20a41fb0c/resourcegroups/MSIV2-Testing-MSALNET/providers/Microsoft.ManagedIdentity/userAssignedIdentities/msiv2uami";
const LEG2_APP: &str = "7e8f9001-0000-4000-8000-00000000000c";

struct Setup {
    env: Env,
    identities: Vec<(&'static str, ManagedIdentityId)>,
    scope: String,
    resource_url: Option<String>,
    /// The Leg-2 app of the two-leg step, if any.
    leg2: Option<String>,
}

async fn setup() -> Result<Setup, Box<dyn std::error::Error + Send + Sync>> {
    if let Some(chosen) = var("FIC_MANAGED_IDENTITY") {
        let id = if chosen == "system" {
            ManagedIdentityId::SystemAssigned
        } else {
            ManagedIdentityId::ClientId(chosen)
        };
        let tenant = var("AZURE_TENANT_ID");
        return Ok(Setup {
            env: Env::real(tenant.as_deref().unwrap_or("organizations"))?,
            identities: vec![("the managed identity", id)],
            scope: var("FIC_SCOPE").unwrap_or_else(|| VAULT_SCOPE.to_string()),
            resource_url: var("FIC_RESOURCE_URL"),
            leg2: tenant.and(var("FIC_LEG2_CLIENT_ID")),
        });
    }
    // Leg 2 of the last step trusts the system-assigned identity's tokens.
    let leg2 = App::new(LEG2_APP, TENANT).federated_credential(FederatedCredential::new(
        format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
        SAMI_OBJECT_ID,
        EXCHANGE_AUDIENCE,
    ));
    let env = Env::emulator(
        Emulator::builder()
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
    Ok(Setup {
        env,
        identities: vec![
            ("system-assigned", ManagedIdentityId::SystemAssigned),
            (
                "user-assigned by client id",
                ManagedIdentityId::ClientId(UAMI_CLIENT_ID.into()),
            ),
            (
                "user-assigned by resource id",
                ManagedIdentityId::ResourceId(UAMI_RESOURCE_ID.into()),
            ),
        ],
        scope: VAULT_SCOPE.into(),
        resource_url: Some(VAULT_URL.into()),
        leg2: Some(LEG2_APP.into()),
    })
}

impl Setup {
    /// `ManagedIdentityApplicationBuilder.Create(id)` with mTLS PoP. In emulator mode the host
    /// has no managed-identity variables (IMDS, through the transport's resolver override).
    fn managed_identity(
        &self,
        id: ManagedIdentityId,
    ) -> Result<ManagedIdentity, fic_oauth_core::Error> {
        let mut builder = ManagedIdentity::builder().id(id).mtls_pop(true);
        if self.env.is_emulated() {
            builder = builder
                .environment(HashMap::new())
                .arc_agent_path("/nonexistent/azcmagent/bin/himds")
                .transport(self.env.transport());
        }
        builder.build()
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    fic_examples::exit(run().await)
}

async fn run() -> ExampleResult {
    step("setup");
    let s = setup().await?;

    for (label, id) in &s.identities {
        step(&format!(
            "{label}: AcquireTokenForManagedIdentity(..).WithMtlsProofOfPossession()"
        ));
        let credential = s.managed_identity(id.clone())?;
        let scopes = [s.scope.as_str()];
        let options = fic_oauth_core::TokenRequestOptions::default();
        let token = credential.get_token(&scopes, &options).await?;
        describe_token("token", &token);
        // seed 002: "Validate token type and certificate".
        ensure(
            token.token_type == TokenType::MtlsPop,
            "expected an mTLS PoP token",
        )?;
        let binding = token
            .binding
            .clone()
            .ok_or("BindingCertificate is required")?;
        say(format!(
            "binding certificate (minted through IMDSv2): {}",
            short(Some(binding.thumbprint_s256()))
        ));
        if let Ok(claims) = jwt_claims(token.token.expose()) {
            ensure(
                claims["cnf"]["x5t#S256"].as_str() == Some(binding.thumbprint_s256()),
                "the token's cnf is not the binding certificate",
            )?;
        }
        if let Some(emulator) = s.env.emulator_handle() {
            let paths: Vec<String> = emulator
                .log()
                .imds_requests()
                .iter()
                .map(|r| r.path.clone())
                .collect();
            say(format!("IMDS saw: {paths:?}"));
            if let Some(request) = emulator.log().last_token_request() {
                say(format!(
                    "token request: POST https://{}{} TLS client cert={}",
                    request.host,
                    request.path,
                    short(request.client_cert_thumbprint.as_deref())
                ));
            }
            emulator.log().clear();
        }

        let again = credential.get_token(&scopes, &options).await?;
        ensure(
            again.source == TokenSource::Cache,
            "the second call missed the cache",
        )?;
        say("second call: from the cache");

        if let Some(url) = &s.resource_url {
            let answer = s.env.resource().get(url, &token).await?;
            say(format!(
                "GET {url} with BindingCertificate → {}",
                answer.status
            ));
            ensure(
                answer.status.is_success(),
                "the resource refused the bound call",
            )?;
        }
    }

    // seed 001 "Leg 1 with MSI" (mTLS PoP) → Leg 2 with PoP on the same certificate.
    if let Some(leg2_id) = &s.leg2 {
        let (label, id) = &s.identities[0];
        step(&format!(
            "FIC two-leg: {label} (PoP) → CC (PoP) with the managed identity's certificate"
        ));
        let leg1: Arc<dyn TokenCredential> = Arc::new(s.managed_identity(id.clone())?);
        let leg2_builder = s.env.client(leg2_id);
        let two_leg = TwoLeg::builder(leg1, leg2_builder).build()?;
        let token = two_leg.acquire_token([GRAPH_SCOPE]).with_mtls_pop().await?;
        describe_token("Leg 2 token", &token);
        s.env.show_last_token_request();
        if let Some(request) = s.env.last_token_request() {
            ensure(
                request.client_cert_thumbprint.as_deref() == token.binding_thumbprint(),
                "Leg 2 did not present the managed identity's certificate",
            )?;
        }
        if s.env.is_emulated() {
            let answer = s.env.resource().get(GRAPH_URL, &token).await?;
            say(format!("GET {GRAPH_URL} → {}", answer.status));
            ensure(answer.status.is_success(), "the resource refused the token")?;
        }
    }
    Ok(())
}
