//! `fic demo`: every flow end to end against an embedded emulator, checked, as a table.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use fic_emulator::{App, Emulator, EmulatorHandle, LoggedRequest};
use fic_flows::{ConfidentialClient, RegionDetector, ResourceClient};
use fic_mtls_transport::MtlsTransport;
use fic_oauth_core::authority::RegionConfig;
use fic_oauth_core::{AccessToken, ClientIdentity, Error, ErrorCode, TokenSource, TokenType};

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
    let mut builder = MtlsTransport::builder()
        .built_in_roots(false)
        .add_root_certificate_pem(emulator.ca_certificate_pem().as_bytes())?;
    for (pattern, addr) in emulator.resolver_map() {
        builder = builder.resolve(&pattern, addr);
    }
    builder.build()
}

/// A fresh EC P-256 certificate and key.
pub(crate) fn new_identity(name: &str) -> Result<ClientIdentity, Error> {
    let generated = rcgen::generate_simple_self_signed(vec![name.to_string()])
        .map_err(|e| Error::new(ErrorCode::INVALID_CERTIFICATE, e.to_string()))?;
    let pem = format!(
        "{}{}",
        generated.cert.pem(),
        generated.signing_key.serialize_pem()
    );
    fic_assertion::load::from_pem(pem.as_bytes())
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

struct Demo {
    emulator: EmulatorHandle,
    transport: Arc<MtlsTransport>,
    certificate: ClientIdentity,
    other_certificate: ClientIdentity,
    rows: Vec<Row>,
    verbose: bool,
}

impl Demo {
    fn client(&self) -> fic_flows::ConfidentialClientBuilder {
        ConfidentialClient::builder(APP)
            .authority(&format!("https://login.microsoftonline.com/{TENANT}"))
            .transport(self.transport.clone())
            .environment(HashMap::new())
            .region_detector(Arc::new(RegionDetector::new()))
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
    let (status, body) = demo.resource(VAULT_URL, &token).await?;
    check(status == 200, format!("the resource answered {status}"))?;
    check(
        body["bound"] == true,
        "the resource did not see a bound token",
    )?;
    Ok((
        Some(token),
        format!("{status} (bound)"),
        format!("POST https://{host}, no client_assertion"),
    ))
}

/// Runs the demo.
pub(crate) async fn run(args: DemoArgs) -> Result<ExitCode, Error> {
    let certificate = new_identity("fic-demo-app")?;
    let other_certificate = new_identity("fic-demo-other")?;
    let emulator = Emulator::builder()
        .app(
            App::new(APP, TENANT)
                .secret("demo-secret-value")
                .certificate(certificate.leaf_der().to_vec())
                .roles(["Secrets.Read"]),
        )
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

    step!(
        demo,
        "resource without the binding certificate",
        |d| async move {
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
            token.binding = None;
            let (status, _) = d.resource(VAULT_URL, &token).await?;
            check(
                status == 401,
                format!("the resource answered {status}, expected 401"),
            )?;
            Ok((
                Some(token),
                "401 (refused, as it must)".into(),
                "RFC 8705 cnf check".into(),
            ))
        }
    );

    step!(demo, "resource with another certificate", |d| async move {
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
        token.binding = Some(d.other_certificate.clone());
        let (status, _) = d.resource(VAULT_URL, &token).await?;
        check(
            status == 401,
            format!("the resource answered {status}, expected 401"),
        )?;
        Ok((
            Some(token),
            "401 (refused, as it must)".into(),
            "certificate ≠ cnf".into(),
        ))
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
            match client.acquire_token_for_client([GRAPH_SCOPE]).await {
                Ok(_) => Err("a wrong secret was accepted".into()),
                Err(error) => {
                    check(
                        error.aadsts() == Some(7_000_215),
                        format!("unexpected error {error}"),
                    )?;
                    Ok((
                        None,
                        "-".into(),
                        format!("{} AADSTS{}", error.code(), 7_000_215),
                    ))
                }
            }
        }
    );

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
