//! `fic demo`: every flow end to end against an embedded emulator, checked, as a table.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use fic_emulator::{
    App, Emulator, EmulatorHandle, FederatedCredential, LoggedRequest,
    ManagedIdentity as EmulatedMi, Resource, Route, User,
};
use fic_flows::{
    AgentIdentity, ClientCredential, ConfidentialClient, FicLeg1, FicLeg2, RegionDetector,
    ResourceClient, TwoLeg, UserIdentifier,
};
use fic_managed_identity::{ManagedIdentity, ManagedIdentityId};
use fic_mtls_transport::MtlsTransport;
use fic_oauth_core::authority::RegionConfig;
use fic_oauth_core::{
    AccessToken, ClientIdentity, Clock, Error, ErrorCode, SystemClock, TokenCredential,
    TokenRequestOptions, TokenSource, TokenType,
};

/// Options of `fic demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Also print each step's request as the emulator saw it.
    #[arg(long)]
    verbose: bool,
}

pub(crate) const TENANT: &str = "7f3c9d2e-1b4a-4c8e-9f00-5a6b7c8d9e0f";
const APP: &str = "0b1f6a2c-3d4e-4f50-8a61-72b3c4d5e6f7";
const VAULT_SCOPE: &str = "https://vault.azure.net/.default";
const VAULT_URL: &str = "https://fic-demo.vault.azure.net/secrets/database-password";
const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
const GRAPH_URL: &str = "https://graph.microsoft.com/v1.0/applications";
const LEG2_APP: &str = "4c3b2a19-0817-4f6e-9d5c-4b3a29180706";
const BLUEPRINT: &str = "aab5089d-e764-47e3-9f28-cc11c2513821";
const AGENT: &str = "ab18ca07-d139-4840-8b3b-4be9610c6ed5";
const OTHER_AGENT: &str = "cd29db18-e24a-4951-9c3c-5cf07d1e8f9a";
/// An app no federated credential of the Leg-2 app names.
const OUTSIDER_APP: &str = "9e8d7c6b-5a49-4f38-8e27-d1c0b9a89786";
const ALICE: &str = "alice@fic-demo.example";
const ALICE_OID: &str = "00000000-0000-4000-8000-00000000a11c";
const BOB_OID: &str = "00000000-0000-4000-8000-000000000b0b";
const CAROL: &str = "carol@fic-demo.example";
const CAROL_OID: &str = "00000000-0000-4000-8000-0000000ca201";
const USER_SCOPE: &str = "https://graph.microsoft.com/User.Read";
const ME_URL: &str = "https://graph.microsoft.com/v1.0/me";
const SAMI_CLIENT: &str = "5d4c3b2a-1908-4f7e-8d6c-00000000c11e";
const SAMI_OBJECT: &str = "5d4c3b2a-1908-4f7e-8d6c-00000000b0b1";
const UAMI_CLIENT: &str = "6e5d4c3b-2a19-4f8e-9d7c-00000000c11e";
const UAMI_OBJECT: &str = "6e5d4c3b-2a19-4f8e-9d7c-00000000b0b1";
const UAMI_RESOURCE: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/fic-demo/providers/Microsoft.ManagedIdentity/userAssignedIdentities/fic-demo-uami";
const EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
const EXCHANGE_SCOPE: &str = "api://AzureADTokenExchange/.default";
/// An audience the Leg-2 app trusts Leg 1 for, which is not the token-exchange audience.
const OTHER_AUDIENCE: &str = "api://fic-demo-other";

/// One line of the summary.
struct Row {
    flow: String,
    token_type: String,
    source: String,
    binding: String,
    resource: String,
    took: Duration,
    outcome: Result<String, String>,
}

/// A transport that sends production host names to `emulator` and trusts only its CA.
pub(crate) fn transport_for(emulator: &EmulatorHandle) -> Result<MtlsTransport, Error> {
    MtlsTransport::builder()
        .built_in_roots(false)
        .add_root_certificate_pem(emulator.ca_certificate_pem().as_bytes())?
        .resolve_all(emulator.resolver_map())
        .build()
}

fn short(thumbprint: Option<&str>) -> String {
    thumbprint.map_or_else(|| "-".into(), |t| format!("{}…", &t[..t.len().min(12)]))
}

fn check(condition: bool, what: impl Into<String>) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(what.into())
    }
}

/// An expected refusal, shown as a passing row: `result` must be an error `expected` accepts
/// (`what` names what must not have been accepted).
fn refusal(
    result: Result<AccessToken, Error>,
    what: &str,
    expected: impl FnOnce(&Error) -> bool,
) -> StepResult {
    match result {
        Ok(_) => Err(format!("{what} was accepted")),
        Err(error) if expected(&error) => {
            let code = error.aadsts().map_or_else(
                || error.code().to_string(),
                |n| format!("{} AADSTS{n}", error.code()),
            );
            Ok((None, "-".into(), format!("refused: {code}")))
        }
        Err(error) => Err(format!("unexpected error {error}")),
    }
}

/// The emulator's clock: the system clock, moved ahead while a step needs the identity provider
/// to see a token as expired.
#[derive(Clone, Debug, Default)]
struct ShiftedClock {
    ahead_secs: Arc<AtomicU64>,
}

impl ShiftedClock {
    fn set_ahead(&self, by: Duration) {
        self.ahead_secs.store(by.as_secs(), Ordering::Relaxed);
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> SystemTime {
        let now = SystemClock.now();
        now.checked_add(Duration::from_secs(self.ahead_secs.load(Ordering::Relaxed)))
            .unwrap_or(now)
    }
}

struct Demo {
    emulator: EmulatorHandle,
    /// The emulator's clock.
    clock: ShiftedClock,
    transport: Arc<MtlsTransport>,
    certificate: ClientIdentity,
    other_certificate: ClientIdentity,
    rows: Vec<Row>,
    verbose: bool,
}

impl Demo {
    fn client(&self) -> fic_flows::ConfidentialClientBuilder {
        self.client_for(APP)
    }

    fn client_for(&self, client_id: &str) -> fic_flows::ConfidentialClientBuilder {
        ConfidentialClient::builder(client_id)
            .authority(&format!("https://login.microsoftonline.com/{TENANT}"))
            .transport(self.transport.clone())
            .environment(HashMap::new())
            .region_detector(Arc::new(RegionDetector::new()))
    }

    /// Leg 1 of the two-leg rows: the demo app with its certificate (Bearer).
    fn leg1_client(&self) -> Result<Arc<ConfidentialClient>, String> {
        self.client()
            .certificate(self.certificate.clone())
            .build()
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }

    fn token_requests(&self) -> usize {
        self.emulator.log().token_requests().len()
    }

    fn last_token_request(&self) -> Result<LoggedRequest, String> {
        self.emulator
            .log()
            .last_token_request()
            .ok_or_else(|| "the emulator saw no token request".to_string())
    }

    /// Calls the resource with a bound token: it must answer 200 and have seen the binding.
    async fn bound_resource_call(&self, url: &str, token: &AccessToken) -> Result<u16, String> {
        let (status, body) = self.resource(url, token).await?;
        check(status == 200, format!("the resource answered {status}"))?;
        check(
            body["bound"] == true,
            "the resource did not see a bound token",
        )?;
        Ok(status)
    }

    async fn resource(
        &self,
        url: &str,
        token: &AccessToken,
    ) -> Result<(u16, serde_json::Value), String> {
        let answer = ResourceClient::new(self.transport.clone())
            .get(url, token)
            .await
            .map_err(|e| e.to_string())?;
        let body = answer.json().unwrap_or(serde_json::Value::Null);
        Ok((answer.status.as_u16(), body))
    }

    /// Records a step's row: the token (if any), the resource status text and a note, or why
    /// the step failed.
    fn record(&mut self, flow: &str, took: Duration, result: StepResult) {
        let (token, resource, outcome) = match result {
            Ok((token, resource, note)) => (token, resource, Ok(note)),
            Err(why) => (None, "-".into(), Err(why)),
        };
        if self.verbose {
            if let Some(request) = self.emulator.log().last_token_request() {
                println!(
                    "  {flow}: POST https://{}{} {:?} cert={}",
                    request.host,
                    request.path,
                    request
                        .form
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>(),
                    short(request.client_cert_thumbprint.as_deref())
                );
            }
        }
        self.rows.push(Row {
            flow: flow.to_string(),
            token_type: token
                .as_ref()
                .map_or_else(|| "-".into(), |t| t.token_type.to_string()),
            source: token.as_ref().map_or_else(
                || "-".into(),
                |t| match t.source {
                    TokenSource::Cache => "cache".into(),
                    _ => "identity provider".into(),
                },
            ),
            binding: short(token.as_ref().and_then(AccessToken::binding_thumbprint)),
            resource,
            took,
            outcome,
        });
    }
}

/// What a step gives: the token (if any), the resource status text and a note, or why it
/// failed.
type StepResult = Result<(Option<AccessToken>, String, String), String>;

/// Runs a step (`|d| async move { ... }`) against `demo`, timed, and records its row.
macro_rules! step {
    ($demo:ident, $flow:expr, |$d:ident| $body:expr) => {{
        let started = Instant::now();
        let result: StepResult = {
            let $d = &$demo;
            $body.await
        };
        $demo.record($flow, started.elapsed(), result);
    }};
}

/// A PoP token presented to the resource over `binding` (none, or another certificate than
/// its own) must be refused.
async fn refused_with(d: &Demo, binding: Option<ClientIdentity>, note: &str) -> StepResult {
    let client = d
        .client()
        .certificate(d.certificate.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let mut token = client
        .acquire_token_for_client([VAULT_SCOPE])
        .with_mtls_pop()
        .await
        .map_err(|e| e.to_string())?;
    let Some(binding) = binding else {
        refused_without_binding(d, VAULT_URL, &token).await?;
        return Ok((Some(token), "401 (refused, as it must)".into(), note.into()));
    };
    token.binding = Some(binding);
    let (status, _) = d.resource(VAULT_URL, &token).await?;
    check(
        status == 401,
        format!("the resource answered {status}, expected 401"),
    )?;
    Ok((Some(token), "401 (refused, as it must)".into(), note.into()))
}

/// A bound token without its certificate: the library will not present it
/// (`mtls_certificate_not_provided`), and sent anyway (as Bearer, no TLS client certificate)
/// the resource refuses it.
async fn refused_without_binding(d: &Demo, url: &str, token: &AccessToken) -> Result<(), String> {
    let mut unbound = token.clone();
    unbound.binding = None;
    match ResourceClient::new(d.transport.clone())
        .get(url, &unbound)
        .await
    {
        Err(e) if e.code() == &ErrorCode::MTLS_CERTIFICATE_NOT_PROVIDED => {}
        Err(e) => return Err(format!("unexpected error {e}")),
        Ok(answer) => {
            return Err(format!(
                "a bound token was presented without its certificate (the resource answered {})",
                answer.status
            ))
        }
    }
    unbound.token_type = TokenType::Bearer;
    let (status, _) = d.resource(url, &unbound).await?;
    check(
        status == 401,
        format!("without the certificate the resource answered {status}, expected 401"),
    )
}

async fn vanilla_pop(demo: &Demo, region: Option<&str>) -> StepResult {
    let mut builder = demo.client().certificate(demo.certificate.clone());
    if let Some(region) = region {
        builder = builder.region(region);
    }
    let client = builder.build().map_err(|e| e.to_string())?;
    let token = client
        .acquire_token_for_client([VAULT_SCOPE])
        .with_mtls_pop()
        .await
        .map_err(|e| e.to_string())?;
    let request = demo.last_token_request()?;
    let host = region.map_or_else(
        || "mtlsauth.microsoft.com".to_string(),
        |r| format!("{r}.mtlsauth.microsoft.com"),
    );
    check(
        request.host == host,
        format!("token request went to {}", request.host),
    )?;
    check(
        request.form_value("token_type") == Some("mtls_pop"),
        "no token_type=mtls_pop",
    )?;
    check(
        request.form_value("client_assertion").is_none(),
        "a client_assertion was sent",
    )?;
    check(
        request.client_cert_thumbprint.as_deref() == Some(demo.certificate.thumbprint_s256()),
        "the TLS client certificate was not the binding certificate",
    )?;
    check(
        token.binding_thumbprint() == Some(demo.certificate.thumbprint_s256()),
        "the token is not bound",
    )?;
    let status = demo.bound_resource_call(VAULT_URL, &token).await?;
    Ok((
        Some(token),
        format!("{status} (bound)"),
        format!("POST https://{host}, no client_assertion"),
    ))
}

/// Runs the demo.
pub(crate) async fn run(args: DemoArgs) -> Result<ExitCode, Error> {
    let certificate = fic_assertion::generate::self_signed("fic-demo-app")?;
    let other_certificate = fic_assertion::generate::self_signed("fic-demo-other")?;
    let leg2_certificate = fic_assertion::generate::self_signed("fic-demo-leg2")?;
    let (blueprint_certificate, blueprint_ca) =
        fic_assertion::generate::issued("blueprint.fic-demo.example")?;
    let app = App::new(APP, TENANT)
        .secret("demo-secret-value")
        .certificate(certificate.leaf_der().to_vec())
        .roles(["Secrets.Read"]);
    let leg1_subject = app.object_id.clone();
    let issuer = format!("https://login.microsoftonline.com/{TENANT}/v2.0");
    let clock = ShiftedClock::default();
    let emulator = Emulator::builder()
        .clock(Arc::new(clock.clone()))
        .app(app)
        .app(App::new(OUTSIDER_APP, TENANT).secret("outsider-secret-value"))
        .app(
            App::new(LEG2_APP, TENANT)
                .certificate(leg2_certificate.leaf_der().to_vec())
                .federated_credential(FederatedCredential::new(
                    issuer.clone(),
                    leg1_subject.clone(),
                    EXCHANGE_AUDIENCE,
                ))
                // Trust for another audience than the token-exchange one: refused (7002206).
                .federated_credential(FederatedCredential::new(
                    issuer.clone(),
                    leg1_subject,
                    OTHER_AUDIENCE,
                ))
                // The host's managed identities may be Leg 1 too.
                .federated_credential(FederatedCredential::new(
                    issuer.clone(),
                    SAMI_OBJECT,
                    EXCHANGE_AUDIENCE,
                ))
                .federated_credential(FederatedCredential::new(
                    issuer,
                    UAMI_OBJECT,
                    EXCHANGE_AUDIENCE,
                )),
        )
        .managed_identity(EmulatedMi::system_assigned(
            SAMI_CLIENT,
            SAMI_OBJECT,
            TENANT,
        ))
        .managed_identity(EmulatedMi::user_assigned(
            UAMI_CLIENT,
            UAMI_OBJECT,
            UAMI_RESOURCE,
            TENANT,
        ))
        .app(
            App::new(BLUEPRINT, TENANT)
                .subject_issuer("blueprint.fic-demo.example", blueprint_ca)
                .agents([AGENT, OTHER_AGENT]),
        )
        .resource(Resource::new(OTHER_AUDIENCE))
        .user(User::new(ALICE, ALICE_OID, TENANT))
        .user(User::new("bob@fic-demo.example", BOB_OID, TENANT))
        .user(User::new(CAROL, CAROL_OID, TENANT))
        .imds_location("westus3")
        .start()
        .await
        .map_err(|e| {
            Error::new(
                ErrorCode::INTERNAL,
                format!("the emulator did not start: {e}"),
            )
        })?;
    let transport = Arc::new(transport_for(&emulator)?);
    println!(
        "fic demo: emulator on https://{} (IMDS on http://{})",
        emulator.https_addr(),
        emulator.imds_addr()
    );
    println!(
        "tenant {TENANT}, app {APP}, certificate x5t#S256 {}\n",
        certificate.thumbprint_s256()
    );

    let mut demo = Demo {
        emulator,
        clock,
        transport,
        certificate,
        other_certificate,
        rows: Vec::new(),
        verbose: args.verbose,
    };

    step!(demo, "vanilla mTLS PoP, global", |d| vanilla_pop(d, None));
    step!(demo, "vanilla mTLS PoP, regional (westus3)", |d| {
        vanilla_pop(d, Some("westus3"))
    });

    step!(demo, "same request again: cache hit", |d| async move {
        let client = d
            .client()
            .certificate(d.certificate.clone())
            .build()
            .map_err(|e| e.to_string())?;
        client
            .acquire_token_for_client([VAULT_SCOPE])
            .with_mtls_pop()
            .await
            .map_err(|e| e.to_string())?;
        let before = d.token_requests();
        let token = client
            .acquire_token_for_client([VAULT_SCOPE])
            .with_mtls_pop()
            .await
            .map_err(|e| e.to_string())?;
        check(
            token.source == TokenSource::Cache,
            "not served from the cache",
        )?;
        check(d.token_requests() == before, "a token request was sent")?;
        let (status, _) = d.resource(VAULT_URL, &token).await?;
        check(status == 200, format!("the resource answered {status}"))?;
        Ok((Some(token), status.to_string(), "no request sent".into()))
    });

    step!(demo, "resource without the binding certificate", |d| {
        refused_with(d, None, "RFC 8705 cnf check")
    });
    step!(demo, "resource with another certificate", |d| {
        refused_with(d, Some(d.other_certificate.clone()), "certificate ≠ cnf")
    });

    step!(demo, "certificate, Bearer (jwt-bearer)", |d| async move {
        let client = d
            .client()
            .certificate(d.certificate.clone())
            .build()
            .map_err(|e| e.to_string())?;
        let token = client
            .acquire_token_for_client([GRAPH_SCOPE])
            .await
            .map_err(|e| e.to_string())?;
        let request = d.last_token_request()?;
        check(
            request.host == "login.microsoftonline.com",
            format!("token request went to {}", request.host),
        )?;
        check(
            request.form_value("client_assertion_type")
                == Some(fic_oauth_core::request::JWT_BEARER),
            "no jwt-bearer assertion",
        )?;
        check(token.token_type == TokenType::Bearer, "not a Bearer token")?;
        let (status, _) = d.resource(GRAPH_URL, &token).await?;
        check(status == 200, format!("the resource answered {status}"))?;
        Ok((
            Some(token),
            status.to_string(),
            "signed assertion, aud = endpoint".into(),
        ))
    });

    step!(demo, "client secret, Bearer", |d| async move {
        let client = d
            .client()
            .client_secret("demo-secret-value")
            .build()
            .map_err(|e| e.to_string())?;
        let token = client
            .acquire_token_for_client([GRAPH_SCOPE])
            .await
            .map_err(|e| e.to_string())?;
        let request = d.last_token_request()?;
        check(
            request.form_value("client_secret").is_some(),
            "no client_secret sent",
        )?;
        let (status, _) = d.resource(GRAPH_URL, &token).await?;
        check(status == 200, format!("the resource answered {status}"))?;
        Ok((
            Some(token),
            status.to_string(),
            "POST https://login.microsoftonline.com".into(),
        ))
    });

    step!(
        demo,
        "client secret, region auto-detected",
        |d| async move {
            let client = d
                .client()
                .client_secret("demo-secret-value")
                .region_config(RegionConfig::AutoDetect)
                .build()
                .map_err(|e| e.to_string())?;
            let token = client
                .acquire_token_for_client([VAULT_SCOPE])
                .await
                .map_err(|e| e.to_string())?;
            let request = d.last_token_request()?;
            check(
                request.host == "westus3.login.microsoft.com",
                format!("token request went to {}", request.host),
            )?;
            Ok((Some(token), "-".into(), "IMDS said westus3".into()))
        }
    );

    step!(
        demo,
        "wrong secret: AADSTS error surfaces",
        |d| async move {
            let client = d
                .client()
                .client_secret("not-the-secret")
                .build()
                .map_err(|e| e.to_string())?;
            refusal(
                client.acquire_token_for_client([GRAPH_SCOPE]).await,
                "a wrong secret",
                |e| e.aadsts() == Some(7_000_215),
            )
        }
    );

    fic_steps(&mut demo, &leg2_certificate).await;
    fic_refusal_steps(&mut demo).await;
    managed_identity_steps(&mut demo, &leg2_certificate).await;
    agent_steps(&mut demo, blueprint_certificate).await;

    cache_steps(&mut demo).await;

    Ok(print_summary(&demo.rows))
}

fn print_summary(rows: &[Row]) -> ExitCode {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<42} {:<9} {:<18} {:<14} {:<26} {:>8}  result",
        "flow", "token", "source", "binding", "resource", "time"
    );
    let _ = writeln!(out, "{}", "-".repeat(140));
    for row in rows {
        let (mark, note) = match &row.outcome {
            Ok(note) => ("ok", note.clone()),
            Err(why) => ("FAILED", why.clone()),
        };
        let _ = writeln!(
            out,
            "{:<42} {:<9} {:<18} {:<14} {:<26} {:>6}ms  {mark}: {note}",
            row.flow,
            row.token_type,
            row.source,
            row.binding,
            row.resource,
            row.took.as_millis()
        );
    }
    let failed = rows.iter().filter(|r| r.outcome.is_err()).count();
    let _ = writeln!(out, "{}", "-".repeat(140));
    let _ = writeln!(out, "{} passed, {failed} failed", rows.len() - failed);
    print!("{out}");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// FIC two-leg with confidential clients on both legs (managed identity as Leg 1 is shown in
/// the managed-identity rows).
async fn fic_steps(demo: &mut Demo, leg2_certificate: &ClientIdentity) {
    step!(demo, "FIC two-leg: CC → CC (Bearer)", |d| async move {
        let leg1 = d.leg1_client()?;
        let two_leg = TwoLeg::builder(leg1, d.client_for(LEG2_APP))
            .build()
            .map_err(|e| e.to_string())?;
        let before = d.token_requests();
        let token = two_leg
            .acquire_token([GRAPH_SCOPE])
            .await
            .map_err(|e| e.to_string())?;
        let leg2 = d.last_token_request()?;
        check(
            d.token_requests() == before + 2,
            "expected a Leg-1 and a Leg-2 request",
        )?;
        check(
            leg2.form_value("client_assertion_type") == Some(fic_oauth_core::request::JWT_BEARER),
            "Leg 2 did not send jwt-bearer",
        )?;
        let (status, _) = d.resource(GRAPH_URL, &token).await?;
        check(status == 200, format!("the resource answered {status}"))?;
        Ok((
            Some(token),
            status.to_string(),
            "Leg 1 token as client_assertion".into(),
        ))
    });

    let leg2_cert = leg2_certificate.clone();
    step!(
        demo,
        "FIC two-leg: CC → CC (PoP on Leg 2)",
        |d| async move {
            let leg1 = d.leg1_client()?;
            let two_leg = TwoLeg::builder(leg1, d.client_for(LEG2_APP))
                .binding_certificate(leg2_cert.clone())
                .build()
                .map_err(|e| e.to_string())?;
            let token = two_leg
                .acquire_token([VAULT_SCOPE])
                .with_mtls_pop()
                .await
                .map_err(|e| e.to_string())?;
            let leg2 = d.last_token_request()?;
            check(
                leg2.host == "mtlsauth.microsoft.com",
                format!("Leg 2 went to {}", leg2.host),
            )?;
            check(
                leg2.form_value("client_assertion_type") == Some(fic_oauth_core::request::JWT_POP),
                "Leg 2 did not send jwt-pop",
            )?;
            check(
                token.binding_thumbprint() == Some(leg2_cert.thumbprint_s256()),
                "not bound to the Leg-2 certificate",
            )?;
            let (status, _) = d.resource(VAULT_URL, &token).await?;
            check(status == 200, format!("the resource answered {status}"))?;
            Ok((
                Some(token),
                format!("{status} (bound)"),
                "jwt-pop over mTLS".into(),
            ))
        }
    );

    step!(demo, "FIC two-leg: CC (PoP) → CC (PoP)", |d| async move {
        let leg1 = Arc::new(
            d.client()
                .certificate(d.certificate.clone())
                .mtls_pop(true)
                .build()
                .map_err(|e| e.to_string())?,
        );
        let two_leg = TwoLeg::builder(leg1, d.client_for(LEG2_APP))
            .build()
            .map_err(|e| e.to_string())?;
        let token = two_leg
            .acquire_token([GRAPH_SCOPE])
            .with_mtls_pop()
            .await
            .map_err(|e| e.to_string())?;
        check(
            token.binding_thumbprint() == Some(d.certificate.thumbprint_s256()),
            "Leg 2 is not bound to the Leg-1 certificate",
        )?;
        let (status, _) = d.resource(GRAPH_URL, &token).await?;
        check(status == 200, format!("the resource answered {status}"))?;
        Ok((
            Some(token),
            format!("{status} (bound)"),
            "Leg 2 presents the Leg-1 cnf".into(),
        ))
    });
}

/// The expected refusals of FIC two-leg.
async fn fic_refusal_steps(demo: &mut Demo) {
    step!(demo, "FIC refused: wrong audience", |d| async move {
        let leg1 = d.leg1_client()?;
        let two_leg = TwoLeg::builder(leg1, d.client_for(LEG2_APP))
            .exchange_audience(OTHER_AUDIENCE)
            .build()
            .map_err(|e| e.to_string())?;
        let row = refusal(
            two_leg.acquire_token([GRAPH_SCOPE]).await,
            "an assertion for another audience",
            |e| e.aadsts() == Some(7_002_206),
        )?;
        let leg2 = d.last_token_request()?;
        check(
            leg2.form_value("client_id") == Some(LEG2_APP) && leg2.status == Some(401),
            "Leg 2 was not sent and refused",
        )?;
        Ok((row.0, row.1, format!("{} (aud {OTHER_AUDIENCE})", row.2)))
    });

    step!(
        demo,
        "FIC refused: no matching federated cred.",
        |d| async move {
            // Leg 1 is an app the Leg-2 app has no federated credential for.
            let leg1 = Arc::new(
                d.client_for(OUTSIDER_APP)
                    .client_secret("outsider-secret-value")
                    .build()
                    .map_err(|e| e.to_string())?,
            );
            let two_leg = TwoLeg::builder(leg1, d.client_for(LEG2_APP))
                .build()
                .map_err(|e| e.to_string())?;
            refusal(
                two_leg.acquire_token([GRAPH_SCOPE]).await,
                "an untrusted subject",
                |e| e.aadsts() == Some(700_213),
            )
        }
    );

    step!(demo, "FIC refused: expired assertion", |d| async move {
        let leg1 = d.leg1_client()?;
        let assertion = FicLeg1::new(leg1)
            .acquire_assertion()
            .await
            .map_err(|e| e.to_string())?;
        let leg2 = FicLeg2::new(d.client_for(LEG2_APP)).map_err(|e| e.to_string())?;
        let exchange = leg2
            .exchange(&assertion, [GRAPH_SCOPE])
            .map_err(|e| e.to_string())?;
        // Two hours later at the identity provider: the Leg-1 token (1 h) has expired.
        d.clock.set_ahead(Duration::from_secs(2 * 3600));
        let result = exchange.await;
        d.clock.set_ahead(Duration::ZERO);
        refusal(result, "an expired assertion", |e| {
            e.aadsts() == Some(700_024)
        })
    });

    step!(
        demo,
        "FIC refused: Leg-2 PoP, no certificate",
        |d| async move {
            let leg1 = d.leg1_client()?;
            let two_leg = TwoLeg::builder(leg1, d.client_for(LEG2_APP))
                .build()
                .map_err(|e| e.to_string())?;
            let before = d
                .emulator
                .log()
                .count(|r| r.form_value("client_id") == Some(LEG2_APP));
            let row = refusal(
                two_leg.acquire_token([GRAPH_SCOPE]).with_mtls_pop().await,
                "PoP without a certificate",
                |e| e.code() == &ErrorCode::MTLS_CERTIFICATE_NOT_PROVIDED,
            )?;
            check(
                d.emulator
                    .log()
                    .count(|r| r.form_value("client_id") == Some(LEG2_APP))
                    == before,
                "Leg 2 was sent",
            )?;
            Ok((row.0, row.1, format!("{} (nothing sent)", row.2)))
        }
    );
}

/// A managed identity credential of this (emulated) VM: IMDS at 169.254.169.254 through the
/// demo transport, no environment variables, no Azure Arc agent.
fn managed_identity(
    demo: &Demo,
    id: ManagedIdentityId,
    mtls_pop: bool,
) -> Result<ManagedIdentity, String> {
    ManagedIdentity::builder()
        .id(id)
        .environment(HashMap::new())
        .arc_agent_path("/nonexistent/azcmagent/bin/himds")
        .transport(demo.transport.clone())
        .mtls_pop(mtls_pop)
        .build()
        .map_err(|e| e.to_string())
}

/// Managed identity: IMDS (Bearer), IMDSv2 (mTLS PoP), and as Leg 1 of FIC.
async fn managed_identity_steps(demo: &mut Demo, leg2_certificate: &ClientIdentity) {
    step!(demo, "managed identity (IMDS), Bearer", |d| async move {
        d.emulator.log().clear();
        let mi = managed_identity(d, ManagedIdentityId::SystemAssigned, false)?;
        let token = mi
            .get_token(&[VAULT_SCOPE], &TokenRequestOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        let imds = d.emulator.log().route_requests(Route::Imds);
        check(imds.len() == 1, format!("{} IMDS requests", imds.len()))?;
        check(
            imds[0].path == "/metadata/identity/oauth2/token"
                && imds[0].query_value("api-version").as_deref() == Some("2018-02-01")
                && imds[0].header("metadata") == Some("true"),
            "not an IMDS v1 token request",
        )?;
        check(token.token_type == TokenType::Bearer, "not a Bearer token")?;
        let (status, body) = d.resource(VAULT_URL, &token).await?;
        check(status == 200, format!("the resource answered {status}"))?;
        check(
            body["oid"] == SAMI_OBJECT,
            "the resource saw another identity",
        )?;
        Ok((
            Some(token),
            status.to_string(),
            "GET http://169.254.169.254 (v1)".into(),
        ))
    });

    step!(
        demo,
        "managed identity (IMDSv2), mTLS PoP",
        |d| async move {
            d.emulator.log().clear();
            let mi = managed_identity(d, ManagedIdentityId::SystemAssigned, true)?;
            let token = mi
                .get_token(&[VAULT_SCOPE], &TokenRequestOptions::default())
                .await
                .map_err(|e| e.to_string())?;
            let log = d.emulator.log();
            check(
                log.imds_path_requests("/metadata/identity/issuecredential")
                    .len()
                    == 1,
                "expected one CSR",
            )?;
            let minted = token
                .binding_thumbprint()
                .ok_or("the token is not bound")?
                .to_owned();
            let request = d.last_token_request()?;
            check(
                request.host == "westus3.mtlsauth.microsoft.com",
                format!("token request went to {}", request.host),
            )?;
            check(
                request.client_cert_thumbprint.as_deref() == Some(minted.as_str()),
                "the token request did not present the minted certificate",
            )?;
            check(
                token.token_type == TokenType::MtlsPop,
                "not an mtls_pop token",
            )?;
            let status = d.bound_resource_call(VAULT_URL, &token).await?;
            refused_without_binding(d, VAULT_URL, &token).await?;
            Ok((
                Some(token),
                format!("{status} (bound)"),
                "CSR → certificate → token over mTLS".into(),
            ))
        }
    );

    // FIC with the VM's identities as Leg 1 (Bearer): Leg 2 Bearer for each kind of id, and
    // with mTLS PoP on Leg 2 (the seed's `usePoP: true`).
    let cases = [
        (
            "FIC two-leg: SAMI → CC",
            ManagedIdentityId::SystemAssigned,
            SAMI_OBJECT,
            false,
        ),
        (
            "FIC two-leg: UAMI (client id) → CC",
            ManagedIdentityId::ClientId(UAMI_CLIENT.into()),
            UAMI_OBJECT,
            false,
        ),
        (
            "FIC two-leg: UAMI (resource id) → CC",
            ManagedIdentityId::ResourceId(UAMI_RESOURCE.into()),
            UAMI_OBJECT,
            false,
        ),
        (
            "FIC two-leg: UAMI (object id) → CC",
            ManagedIdentityId::ObjectId(UAMI_OBJECT.into()),
            UAMI_OBJECT,
            false,
        ),
        (
            "FIC two-leg: SAMI → CC (PoP on Leg 2)",
            ManagedIdentityId::SystemAssigned,
            SAMI_OBJECT,
            true,
        ),
        (
            "FIC two-leg: UAMI → CC (PoP on Leg 2)",
            ManagedIdentityId::ClientId(UAMI_CLIENT.into()),
            UAMI_OBJECT,
            true,
        ),
    ];
    for (flow, id, object_id, pop) in cases {
        let binding = pop.then(|| leg2_certificate.clone());
        step!(demo, flow, |d| mi_two_leg(d, id, object_id, binding));
    }
}

/// FIC two-leg with the managed identity `id` (object id `object_id`) as Leg 1, Bearer; Leg 2
/// Bearer, or mTLS PoP with `binding` (jwt-pop to mtlsauth, bound to that certificate).
async fn mi_two_leg(
    d: &Demo,
    id: ManagedIdentityId,
    object_id: &str,
    binding: Option<ClientIdentity>,
) -> StepResult {
    d.emulator.log().clear();
    let mi = Arc::new(managed_identity(d, id, false)?);
    let mut builder = TwoLeg::builder(mi.clone(), d.client_for(LEG2_APP));
    if let Some(binding) = &binding {
        builder = builder.binding_certificate(binding.clone());
    }
    let two_leg = builder.build().map_err(|e| e.to_string())?;
    let request = two_leg.acquire_token([GRAPH_SCOPE]);
    let token = if binding.is_some() {
        request.with_mtls_pop().await
    } else {
        request.await
    }
    .map_err(|e| e.to_string())?;
    let imds = d.emulator.log().route_requests(Route::Imds);
    check(
        imds.len() == 1 && imds[0].query_value("resource").as_deref() == Some(EXCHANGE_AUDIENCE),
        "Leg 1 did not ask IMDS for the token-exchange audience",
    )?;
    let leg1 = mi
        .get_token(&[EXCHANGE_SCOPE], &TokenRequestOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    check(leg1.token_type == TokenType::Bearer, "Leg 1 was not Bearer")?;
    let leg2 = d.last_token_request()?;
    check(
        leg2.form_value("client_assertion") == Some(leg1.token.expose()),
        "Leg 2's client_assertion is not the managed identity's token",
    )?;
    check(
        leg2.form_value("client_id") == Some(LEG2_APP),
        "Leg 2 is not the app",
    )?;
    let note = format!("MI {}… token as client_assertion", &object_id[..8]);
    let Some(binding) = binding else {
        check(
            leg2.form_value("client_assertion_type") == Some(fic_oauth_core::request::JWT_BEARER),
            "Leg 2 did not send jwt-bearer",
        )?;
        check(token.token_type == TokenType::Bearer, "not a Bearer token")?;
        let (status, _) = d.resource(GRAPH_URL, &token).await?;
        check(status == 200, format!("the resource answered {status}"))?;
        return Ok((Some(token), status.to_string(), note));
    };
    let thumbprint = binding.thumbprint_s256();
    check(
        leg2.host == "mtlsauth.microsoft.com",
        format!("Leg 2 went to {}", leg2.host),
    )?;
    check(
        leg2.form_value("client_assertion_type") == Some(fic_oauth_core::request::JWT_POP),
        "Leg 2 did not send jwt-pop",
    )?;
    check(
        leg2.form_value("token_type") == Some("mtls_pop"),
        "no token_type=mtls_pop",
    )?;
    check(
        leg2.client_cert_thumbprint.as_deref() == Some(thumbprint),
        "Leg 2's TLS certificate was not the binding certificate",
    )?;
    check(
        token.token_type == TokenType::MtlsPop && token.binding_thumbprint() == Some(thumbprint),
        "not an mtls_pop token bound to the Leg-2 certificate",
    )?;
    let status = d.bound_resource_call(GRAPH_URL, &token).await?;
    Ok((
        Some(token),
        format!("{status} (bound)"),
        format!("{note}, jwt-pop"),
    ))
}

/// FMI / agent identity and user_fic.
async fn agent_steps(demo: &mut Demo, blueprint_certificate: ClientIdentity) {
    let agent = blueprint(demo, &blueprint_certificate)
        .and_then(|blueprint| AgentIdentity::new(blueprint, AGENT));
    let agent = match agent {
        Ok(agent) => agent,
        Err(error) => {
            demo.record("agent identity", Duration::ZERO, Err(error.to_string()));
            return;
        }
    };
    let a = &agent;
    let alice = || UserIdentifier::Username(ALICE.into());
    step!(
        demo,
        "agent for a user: first user (3 requests)",
        |d| async move {
            let before = d.token_requests();
            let token = a
                .user_token([USER_SCOPE], alice())
                .await
                .map_err(|e| e.to_string())?;
            check(
                d.token_requests() == before + 3,
                format!("{} requests", d.token_requests() - before),
            )?;
            let requests = d.emulator.log().token_requests();
            let legs = &requests[before..];
            let t1 = a.t1().await.map_err(|e| e.to_string())?;
            let t2 = a.t2().await.map_err(|e| e.to_string())?;
            check(
                legs[0].form_value("client_id") == Some(BLUEPRINT)
                    && legs[0].form_value("fmi_path") == Some(AGENT),
                "Leg 1 was not the blueprint with fmi_path",
            )?;
            check(
                legs[1].form_value("client_id") == Some(AGENT)
                    && legs[1].form_value("client_assertion") == Some(t1.token.expose()),
                "Leg 2 was not the agent with T1",
            )?;
            check(
                legs[2].form_value("grant_type") == Some("user_fic")
                    && legs[2].form_value("client_assertion") == Some(t1.token.expose())
                    && legs[2].form_value("user_federated_identity_credential")
                        == Some(t2.token.expose())
                    && legs[2].form_value("username") == Some(ALICE),
                "Leg 3 was not user_fic with T1 and T2",
            )?;
            let (status, body) = d.resource(ME_URL, &token).await?;
            check(status == 200, format!("the resource answered {status}"))?;
            check(body["oid"] == ALICE_OID, "the resource saw another user")?;
            Ok((
                Some(token),
                status.to_string(),
                format!(
                    "T1, T2, user_fic; oid {}",
                    body["oid"].as_str().unwrap_or("?")
                ),
            ))
        }
    );
    step!(demo, "agent for a user: same user again", |d| async move {
        let before = d.token_requests();
        let token = a
            .user_token([USER_SCOPE], alice())
            .await
            .map_err(|e| e.to_string())?;
        check(d.token_requests() == before, "a request was sent")?;
        check(token.source == TokenSource::Cache, "not from the cache")?;
        Ok((Some(token), "-".into(), "0 requests".into()))
    });
    step!(
        demo,
        "agent for a user: same user by object id",
        |d| async move {
            let before = d.token_requests();
            let oid =
                UserIdentifier::from_parts(None, Some(ALICE_OID)).map_err(|e| e.to_string())?;
            let token = a
                .user_token([USER_SCOPE], oid)
                .await
                .map_err(|e| e.to_string())?;
            check(d.token_requests() == before, "a request was sent")?;
            Ok((Some(token), "-".into(), "0 requests: found by OID".into()))
        }
    );
    step!(
        demo,
        "agent for a user: a new user (1 request)",
        |d| async move {
            let before = d.token_requests();
            let oid = UserIdentifier::from_parts(None, Some(BOB_OID)).map_err(|e| e.to_string())?;
            let token = a
                .user_token([USER_SCOPE], oid)
                .await
                .map_err(|e| e.to_string())?;
            check(
                d.token_requests() == before + 1,
                "expected exactly one request",
            )?;
            let (status, body) = d.resource(ME_URL, &token).await?;
            check(status == 200, format!("the resource answered {status}"))?;
            check(body["oid"] == BOB_OID, "the resource saw another user")?;
            Ok((
                Some(token),
                status.to_string(),
                "user_fic only; T1 and T2 cached".into(),
            ))
        }
    );
    step!(demo, "agent for a user: force refresh", |d| async move {
        let before = d.token_requests();
        let token = a
            .user_token([USER_SCOPE], alice())
            .with_force_refresh(true)
            .await
            .map_err(|e| e.to_string())?;
        check(
            d.token_requests() == before + 1,
            "expected exactly one request",
        )?;
        check(
            d.last_token_request()?.form_value("grant_type") == Some("user_fic"),
            "not a user_fic request",
        )?;
        Ok((
            Some(token),
            "-".into(),
            "1 request: user_fic; T1, T2 cached".into(),
        ))
    });
    step!(
        demo,
        "agent for a user: expired → refresh_token",
        |d| async move {
            // Short-lived user tokens for this step: one is stale (under 5 minutes left) as soon
            // as it arrives, so the next call renews it with the refresh token.
            let previous = d.emulator.settings().access_token_lifetime;
            d.emulator
                .update_settings(|s| s.access_token_lifetime = Duration::from_secs(120));
            let result = renew_with_refresh_token(d, a).await;
            d.emulator
                .update_settings(|s| s.access_token_lifetime = previous);
            result
        }
    );
    step!(demo, "agent, app-only", |d| async move {
        let token = a
            .app_token([GRAPH_SCOPE])
            .await
            .map_err(|e| e.to_string())?;
        let (status, body) = d.resource(GRAPH_URL, &token).await?;
        check(status == 200, format!("the resource answered {status}"))?;
        check(
            body["idtyp"] == "app" && body["appid"] == AGENT,
            "the resource did not see the agent's app-only token",
        )?;
        Ok((
            Some(token),
            status.to_string(),
            "client_assertion = T1".into(),
        ))
    });
    step!(demo, "agent: two FMI paths, two T1s", |d| async move {
        let other =
            AgentIdentity::new(a.blueprint().clone(), OTHER_AGENT).map_err(|e| e.to_string())?;
        let before = d.token_requests();
        let other_t1 = other.t1().await.map_err(|e| e.to_string())?;
        check(
            d.token_requests() == before + 1
                && d.last_token_request()?.form_value("fmi_path") == Some(OTHER_AGENT),
            "the other agent's T1 was not one request with its fmi_path",
        )?;
        let t1 = a.t1().await.map_err(|e| e.to_string())?;
        check(
            t1.source == TokenSource::Cache && d.token_requests() == before + 1,
            "the first agent's T1 was not served from the cache",
        )?;
        check(
            t1.token.expose() != other_t1.token.expose(),
            "the two agents got the same T1",
        )?;
        Ok((
            Some(other_t1),
            "-".into(),
            "1 request; the first agent's T1 cached".into(),
        ))
    });
    let certificate = blueprint_certificate.clone();
    step!(demo, "agent: the three legs by hand", |d| {
        legs_by_hand(d, certificate)
    });
    step!(
        demo,
        "agent for a user: reserved scope refused",
        |d| async move {
            // A fresh agent (nothing cached): the scope is refused before T1 or T2 is fetched.
            let fresh = blueprint(d, &blueprint_certificate)
                .and_then(|blueprint| AgentIdentity::new(blueprint, AGENT))
                .map_err(|e| e.to_string())?;
            let before = d.token_requests();
            let row = refusal(
                fresh.user_token(["openid", USER_SCOPE], alice()).await,
                "a reserved scope",
                |e| e.code() == &ErrorCode::RESERVED_SCOPE,
            )?;
            check(d.token_requests() == before, "a request was sent")?;
            Ok((row.0, row.1, format!("{} (nothing sent)", row.2)))
        }
    );
}

/// The blueprint's client: its certificate sends `x5c` (SN+I), a cache of its own.
fn blueprint(demo: &Demo, certificate: &ClientIdentity) -> Result<ConfidentialClient, Error> {
    demo.client_for(BLUEPRINT)
        .credential(ClientCredential::certificate_with_x5c(certificate.clone()))
        .build()
}

/// A new user (one `user_fic` request) whose token is stale at once, then asked for again: one
/// `refresh_token` request, authenticated with the current T1.
async fn renew_with_refresh_token(d: &Demo, a: &AgentIdentity) -> StepResult {
    let carol = || UserIdentifier::Username(CAROL.into());
    let before = d.token_requests();
    a.user_token([USER_SCOPE], carol())
        .await
        .map_err(|e| e.to_string())?;
    check(
        d.token_requests() == before + 1,
        "the new user was not one user_fic request",
    )?;
    let token = a
        .user_token([USER_SCOPE], carol())
        .await
        .map_err(|e| e.to_string())?;
    check(
        d.token_requests() == before + 2,
        "the renewal was not exactly one request",
    )?;
    let last = d.last_token_request()?;
    let t1 = a.t1().await.map_err(|e| e.to_string())?;
    check(
        last.form_value("grant_type") == Some("refresh_token")
            && last.form_value("refresh_token").is_some(),
        "not a refresh_token request",
    )?;
    check(
        last.form_value("client_assertion") == Some(t1.token.expose()),
        "the renewal was not authenticated with T1",
    )?;
    check(
        last.form_value("scope")
            == Some("https://graph.microsoft.com/User.Read openid offline_access profile"),
        "the scope was not augmented",
    )?;
    check(
        token.source == TokenSource::IdentityProvider,
        "not a new token",
    )?;
    Ok((
        Some(token),
        "-".into(),
        "1 refresh_token request, no user_fic".into(),
    ))
}

/// The three legs by hand, on a fresh blueprint client: T1 (blueprint, `fmi_path`), T2 (the
/// agent with T1 as its assertion), then `user_fic` with T1 and T2.
async fn legs_by_hand(d: &Demo, certificate: ClientIdentity) -> StepResult {
    let blueprint = blueprint(d, &certificate).map_err(|e| e.to_string())?;
    let before = d.token_requests();
    let t1 = blueprint
        .acquire_token_for_client([EXCHANGE_SCOPE])
        .with_fmi_path(AGENT)
        .await
        .map_err(|e| e.to_string())?;
    let assertion =
        fic_assertion::StaticAssertion::new(t1.token.clone()).map_err(|e| e.to_string())?;
    let agent = blueprint
        .for_client(AGENT, ClientCredential::assertion(assertion))
        .map_err(|e| e.to_string())?;
    let t2 = agent
        .acquire_token_for_client([EXCHANGE_SCOPE])
        .await
        .map_err(|e| e.to_string())?;
    let user = UserIdentifier::from_parts(None, Some(ALICE_OID)).map_err(|e| e.to_string())?;
    let token = agent
        .acquire_token_by_user_fic([USER_SCOPE], user, t2.token.clone())
        .await
        .map_err(|e| e.to_string())?;
    let requests = d.emulator.log().token_requests();
    check(requests.len() == before + 3, "expected three requests")?;
    let legs = &requests[before..];
    check(
        legs[0].form_value("fmi_path") == Some(AGENT),
        "T1 was not asked with fmi_path",
    )?;
    check(
        legs[1].form_value("client_id") == Some(AGENT)
            && legs[1].form_value("client_assertion") == Some(t1.token.expose()),
        "T2 was not asked with T1",
    )?;
    check(
        legs[2].form_value("grant_type") == Some("user_fic")
            && legs[2].form_value("client_assertion") == Some(t1.token.expose())
            && legs[2].form_value("user_federated_identity_credential") == Some(t2.token.expose())
            && legs[2].form_value("user_id") == Some(ALICE_OID),
        "user_fic was not sent with T1, T2 and the user's object id",
    )?;
    let (status, body) = d.resource(ME_URL, &token).await?;
    check(status == 200, format!("the resource answered {status}"))?;
    check(body["oid"] == ALICE_OID, "the resource saw another user")?;
    Ok((
        Some(token),
        status.to_string(),
        "T1 → T2 → user_fic, by hand".into(),
    ))
}

/// A redis-server for the demo: `REDIS_URL` when set, else one started on a free loopback port
/// when the binary is installed (stopped on drop), else `None` with the reason.
struct DemoRedis {
    url: String,
    child: Option<std::process::Child>,
}

impl Drop for DemoRedis {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn demo_redis() -> Result<DemoRedis, String> {
    if let Ok(url) = std::env::var("REDIS_URL") {
        return Ok(DemoRedis { url, child: None });
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|_| "no redis-server installed and REDIS_URL not set".to_string())?;
    let server = DemoRedis {
        url: format!("redis://127.0.0.1:{port}/"),
        child: Some(child),
    };
    // Wait (bounded) for it to accept connections.
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(server);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("redis-server did not start".into())
}

/// The cache backends: a token written by one client is a hit for another.
async fn cache_steps(demo: &mut Demo) {
    let dir = std::env::temp_dir().join(format!("fic-demo-{}", std::process::id()));
    let path = dir.join("msal_cache.json");
    step!(demo, "file cache: a second client's hit", |d| async move {
        let first = Arc::new(fic_token_cache::FileCache::new(&path));
        let client = d
            .client()
            .client_secret("demo-secret-value")
            .cache(first)
            .build()
            .map_err(|e| e.to_string())?;
        client
            .acquire_token_for_client([GRAPH_SCOPE])
            .await
            .map_err(|e| e.to_string())?;
        let before = d.token_requests();
        // Another client, another FileCache instance: only the file is shared.
        let second = Arc::new(fic_token_cache::FileCache::new(&path));
        let other = d
            .client()
            .client_secret("demo-secret-value")
            .cache(second)
            .build()
            .map_err(|e| e.to_string())?;
        let token = other
            .acquire_token_for_client([GRAPH_SCOPE])
            .await
            .map_err(|e| e.to_string())?;
        check(
            token.source == TokenSource::Cache,
            "not served from the file",
        )?;
        check(d.token_requests() == before, "a token request was sent")?;
        let json = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        check(
            json.contains("\"AccessToken\""),
            "the file is not in the MSAL layout",
        )?;
        Ok((
            Some(token),
            "-".into(),
            format!("MSAL JSON at {}", path.display()),
        ))
    });
    let _ = std::fs::remove_dir_all(&dir);

    match demo_redis().await {
        Ok(redis) => {
            let url = redis.url.clone();
            step!(demo, "Redis L2: another instance's hit", |d| async move {
                let connect = || async {
                    fic_token_cache::RedisCache::builder(url.clone())
                        .prefix(format!("fic-demo-{}:", std::process::id()))
                        .connect()
                        .await
                        .map_err(|e| e.to_string())
                };
                let first = Arc::new(fic_token_cache::TieredCache::new(Arc::new(
                    connect().await?,
                )));
                let client = d
                    .client()
                    .client_secret("demo-secret-value")
                    .cache(first)
                    .build()
                    .map_err(|e| e.to_string())?;
                client
                    .acquire_token_for_client([VAULT_SCOPE])
                    .await
                    .map_err(|e| e.to_string())?;
                let before = d.token_requests();
                let second = Arc::new(fic_token_cache::TieredCache::new(Arc::new(
                    connect().await?,
                )));
                let other = d
                    .client()
                    .client_secret("demo-secret-value")
                    .cache(second)
                    .build()
                    .map_err(|e| e.to_string())?;
                let token = other
                    .acquire_token_for_client([VAULT_SCOPE])
                    .await
                    .map_err(|e| e.to_string())?;
                check(token.source == TokenSource::Cache, "not served from Redis")?;
                check(d.token_requests() == before, "a token request was sent")?;
                Ok((Some(token), "-".into(), format!("L1 miss, L2 hit at {url}")))
            });
            drop(redis);
        }
        Err(reason) => {
            demo.record(
                "Redis L2: another instance's hit",
                Duration::ZERO,
                Ok((None, "-".into(), format!("skipped: {reason}"))),
            );
        }
    }
}
