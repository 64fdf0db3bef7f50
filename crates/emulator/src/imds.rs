//! The plain-HTTP listener standing in for IMDS (`169.254.169.254:80` through the resolver map).
//!
//! Routing is a table of [`ImdsRoute`]s: instance metadata (the region endpoint), the IMDS v1
//! token endpoint ([`managed_identity`](crate::managed_identity)) and IMDSv2
//! ([`imds_v2`](crate::imds_v2)). The other hosts' loopback endpoints (App Service, Azure Arc,
//! Cloud Shell, Machine Learning) share the listener under their own paths and are routed
//! before this. Every IMDS answer carries `Server: IMDS/…`, as IMDS does.

use serde_json::json;

use crate::log::LoggedRequest;
use crate::managed_identity::{IMDS_SERVER as SERVER, IMDS_TOKEN_PATH};
use crate::reply::Reply;
use crate::state::State;

/// A route of the IMDS listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ImdsRoute {
    /// `GET /metadata/instance/compute`: the VM's compute metadata (region in `location`).
    InstanceCompute,
    /// `GET /metadata/instance`: compute and network metadata.
    Instance,
    /// `GET /metadata/identity/oauth2/token`: IMDS v1 managed identity tokens.
    IdentityToken,
    /// `GET /metadata/identity/getplatformmetadata`: IMDSv2 platform metadata.
    PlatformMetadata,
    /// `POST /metadata/identity/issuecredential`: IMDSv2 certificates.
    IssueCredential,
    /// Anything else.
    NotFound,
}

/// Routes a path.
pub(crate) fn route(path: &str) -> ImdsRoute {
    match path.trim_end_matches('/') {
        "/metadata/instance/compute" => ImdsRoute::InstanceCompute,
        "/metadata/instance" => ImdsRoute::Instance,
        IMDS_TOKEN_PATH => ImdsRoute::IdentityToken,
        "/metadata/identity/getplatformmetadata" => ImdsRoute::PlatformMetadata,
        "/metadata/identity/issuecredential" => ImdsRoute::IssueCredential,
        _ => ImdsRoute::NotFound,
    }
}

fn imds_reply(status: u16, body: &serde_json::Value) -> Reply {
    Reply::json(status, body).header("server", SERVER)
}

/// The versions IMDS lists in `newest-versions`.
const NEWEST_VERSIONS: [&str; 3] = ["2023-07-01", "2021-12-13", "2021-11-15"];

fn valid_api_version(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// Checks what every instance-metadata request needs: GET, `Metadata: true`, a valid api-version.
fn preflight(req: &LoggedRequest) -> Result<(), Reply> {
    if !req.method.eq_ignore_ascii_case("GET") {
        return Err(imds_reply(405, &json!({ "error": "Method not allowed" })));
    }
    if !req
        .header("metadata")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        return Err(imds_reply(
            400,
            &json!({ "error": "Bad request: . Required metadata header not specified" }),
        ));
    }
    match req.query_value("api-version") {
        None => Err(imds_reply(
            400,
            &json!({
                "error": "Bad request. api-version was not specified in the request. For more information refer to aka.ms/azureimds",
                "newest-versions": NEWEST_VERSIONS,
            }),
        )),
        Some(v) if !valid_api_version(&v) => Err(imds_reply(
            400,
            &json!({
                "error": "Bad request. api-version is invalid or was not specified in the request. For more information refer to aka.ms/azureimds",
                "newest-versions": NEWEST_VERSIONS,
            }),
        )),
        Some(_) => Ok(()),
    }
}

fn compute(state: &State) -> serde_json::Value {
    json!({
        "azEnvironment": "AzurePublicCloud",
        "location": state.settings().imds_location,
        "name": "fic-emulator-vm",
        "osType": "Linux",
        "provider": "Microsoft.Compute",
        "resourceGroupName": "fic-emulator",
        "subscriptionId": "00000000-0000-0000-0000-000000000000",
        "vmId": state.settings().vm_id,
        "vmSize": "Standard_D2s_v5",
        "zone": "",
    })
}

/// Answers a request to the IMDS listener.
pub(crate) fn respond(state: &State, req: &LoggedRequest) -> Reply {
    match route(&req.path) {
        ImdsRoute::InstanceCompute => match preflight(req) {
            Err(reply) => reply,
            Ok(()) => imds_reply(200, &compute(state)),
        },
        ImdsRoute::Instance => match preflight(req) {
            Err(reply) => reply,
            Ok(()) => imds_reply(
                200,
                &json!({
                    "compute": compute(state),
                    "network": { "interface": [] },
                }),
            ),
        },
        ImdsRoute::IdentityToken => crate::managed_identity::imds_token(state, req),
        ImdsRoute::PlatformMetadata => crate::imds_v2::platform_metadata(state, req),
        ImdsRoute::IssueCredential => crate::imds_v2::issue_credential(state, req),
        ImdsRoute::NotFound => imds_reply(404, &json!({ "error": "Not found" })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_versions() {
        assert_eq!(
            route("/metadata/instance/compute/"),
            ImdsRoute::InstanceCompute
        );
        assert_eq!(
            route("/metadata/identity/oauth2/token"),
            ImdsRoute::IdentityToken
        );
        assert_eq!(route("/metadata/identity/other"), ImdsRoute::NotFound);
        assert!(valid_api_version("2021-02-01"));
        assert!(!valid_api_version("2021-2-01"));
        assert!(!valid_api_version("latest"));
    }
}
