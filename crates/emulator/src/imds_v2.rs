//! IMDSv2: managed identity certificates for mTLS PoP.
//!
//! * `GET /metadata/identity/getplatformmetadata?cred-api-version=2.0[&client_id|mi_res_id|object_id]`
//!   with `Metadata: true`: `{"cuId":{"vmId","vmssId"?},"clientId","tenantId","attestationEndpoint"}`
//!   of the identity (system-assigned by default).
//! * `POST /metadata/identity/issuecredential?cred-api-version=2.0[&…]` with `Metadata: true`,
//!   `Content-Type: application/json` and `{"csr":"<standard base64 DER>"}`: the CSR is checked
//!   ([`csr`](crate::csr)), and a certificate for its key is issued by the emulator's CA, with
//!   `CN=<client id>`, valid [`Settings::imds_v2_certificate_lifetime`](crate::Settings) from the
//!   emulator clock, and registered on the identity so that the token endpoint accepts it over
//!   mutual TLS (`client_credentials`, `token_type=mtls_pop`, no assertion). The answer:
//!   `{"client_id","tenant_id","certificate","identity_type","mtls_authentication_endpoint"}`
//!   with `https://{imds_location}.mtlsauth.microsoft.com`.
//!
//! A host made "IMDS v1 only" ([`Settings::imds_v2`](crate::Settings)) answers 404 to both.

use serde_json::{json, Value};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer as _;

use crate::csr;
use crate::directory::{ManagedIdentity, ManagedIdentityKind};
use crate::log::LoggedRequest;
use crate::managed_identity::{self, IdKind, Params, Refusal, IMDS_SERVER};
use crate::reply::Reply;
use crate::state::State;
use crate::util::{b64std, b64std_decode};

/// The only `cred-api-version`.
const CRED_API_VERSION: &str = "2.0";

/// The identity parameters IMDSv2 takes.
const IDENTITY_PARAMETERS: [(&str, IdKind); 4] = [
    ("client_id", IdKind::Client),
    ("mi_res_id", IdKind::Resource),
    ("msi_res_id", IdKind::Resource),
    ("object_id", IdKind::Object),
];

fn not_found() -> Refusal {
    Refusal::new(404, "not_found", "Not found")
}

/// The checks both endpoints share; returns the identity.
fn preflight(
    state: &State,
    request: &LoggedRequest,
    method: &str,
) -> Result<ManagedIdentity, Refusal> {
    if !state.settings().imds_v2 {
        return Err(not_found());
    }
    if !request.method.eq_ignore_ascii_case(method) {
        return Err(Refusal::new(
            405,
            "invalid_request",
            format!(
                "The method {} is not allowed; use {method}.",
                request.method
            ),
        ));
    }
    if !request
        .header("metadata")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        return Err(Refusal::bad_request(
            "Required metadata header not specified",
        ));
    }
    let params = Params::new(request.query_pairs())?;
    match params.get("cred-api-version") {
        Some(CRED_API_VERSION) => {}
        Some(other) => {
            return Err(Refusal::bad_request(format!(
                "The cred-api-version '{other}' is not supported; use {CRED_API_VERSION}."
            )))
        }
        None => {
            return Err(Refusal::bad_request(
                "Required query variable 'cred-api-version' is missing.",
            ))
        }
    }
    let selector = managed_identity::selector(&params, &IDENTITY_PARAMETERS, "IMDSv2")?;
    managed_identity::identity(state, &selector)
}

fn attestation_endpoint(state: &State) -> String {
    format!(
        "https://fic-emulator.{}.attest.azure.net",
        state.settings().imds_location.to_ascii_lowercase()
    )
}

/// `GET /metadata/identity/getplatformmetadata`.
pub(crate) fn platform_metadata(state: &State, request: &LoggedRequest) -> Reply {
    let result = preflight(state, request, "GET").map(|identity| {
        let settings = state.settings();
        let mut cu_id = json!({ "vmId": settings.vm_id });
        if let Some(vmss_id) = &settings.vmss_id {
            cu_id["vmssId"] = json!(vmss_id);
        }
        Reply::json(
            200,
            &json!({
                "cuId": cu_id,
                "clientId": identity.client_id,
                "tenantId": identity.tenant_id,
                "attestationEndpoint": attestation_endpoint(state),
            }),
        )
        .header("server", IMDS_SERVER)
    });
    result.unwrap_or_else(|refusal| refusal.imds_reply())
}

/// `POST /metadata/identity/issuecredential`.
pub(crate) fn issue_credential(state: &State, request: &LoggedRequest) -> Reply {
    issue(state, request).map_or_else(
        |refusal| refusal.imds_reply(),
        |body| Reply::json(200, &body).header("server", IMDS_SERVER),
    )
}

fn issue(state: &State, request: &LoggedRequest) -> Result<Value, Refusal> {
    let identity = preflight(state, request, "POST")?;
    let json_body = request.header("content-type").is_some_and(|v| {
        v.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    if !json_body {
        return Err(Refusal::bad_request(
            "The request body must be application/json.",
        ));
    }
    let body: Value = serde_json::from_slice(&request.body)
        .map_err(|_| Refusal::bad_request("The request body is not JSON."))?;
    let csr_text = body
        .get("csr")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| Refusal::bad_request("The request body has no 'csr'."))?;
    let csr_der = b64std_decode(csr_text)
        .ok_or_else(|| Refusal::bad_request("The 'csr' is not standard base64."))?;
    let settings = state.settings();
    let key = csr::verify(
        &csr_der,
        &csr::Expected {
            client_id: &identity.client_id,
            tenant_id: &identity.tenant_id,
            vm_id: &settings.vm_id,
            vmss_id: settings.vmss_id.as_deref(),
        },
    )
    .map_err(|why| Refusal::bad_request(format!("The CSR was refused: {why}.")))?;
    let not_before = state.now_unix();
    let not_after = not_before + settings.imds_v2_certificate_lifetime.as_secs();
    let certificate = state
        .ca
        .issue_for_rsa_key(
            &identity.client_id,
            &key.rsa_public_key,
            not_before,
            not_after,
        )
        .map_err(|e| Refusal::new(500, "server_error", e.to_string()))?;
    let same_key = X509Certificate::from_der(&certificate)
        .is_ok_and(|(_, cert)| cert.public_key().raw == key.spki.as_slice());
    if !same_key {
        return Err(Refusal::bad_request(
            "The CSR's SubjectPublicKeyInfo is not encoded as rsaEncryption with NULL parameters.",
        ));
    }
    state
        .directory
        .update_managed_identity(&identity.client_id, |mi| {
            mi.certificates.retain(|der| {
                crate::x509::facts(der).is_some_and(|facts| facts.not_after >= not_before)
            });
            mi.certificates.push(certificate.clone());
        });
    let identity_type = match identity.kind {
        ManagedIdentityKind::SystemAssigned => "SystemAssigned",
        ManagedIdentityKind::UserAssigned => "UserAssigned",
    };
    Ok(json!({
        "client_id": identity.client_id,
        "tenant_id": identity.tenant_id,
        "certificate": b64std(&certificate),
        "identity_type": identity_type,
        "mtls_authentication_endpoint": format!(
            "https://{}.mtlsauth.microsoft.com",
            settings.imds_location.to_ascii_lowercase()
        ),
    }))
}
