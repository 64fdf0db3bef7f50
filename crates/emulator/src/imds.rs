//! The plain-HTTP listener standing in for IMDS (`169.254.169.254:80` through the resolver map).
//!
//! Routing is a table of [`ImdsRoute`]s so the managed-identity endpoints (IMDS v1 token,
//! `getplatformmetadata`, `issuecredential`) and the other hosts' endpoints (App Service, Arc,
//! Cloud Shell, Service Fabric, Machine Learning, on their own listeners) slot in beside the
//! region endpoint. Every answer carries `Server: IMDS/…`, as IMDS does.

use serde_json::json;

use crate::reply::Reply;
use crate::state::State;

/// The IMDS `Server` header value.
const SERVER: &str = "IMDS/150.870.65.1854";

/// A route of the IMDS listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ImdsRoute {
    /// `GET /metadata/instance/compute`: the VM's compute metadata (region in `location`).
    InstanceCompute,
    /// `GET /metadata/instance`: compute and network metadata.
    Instance,
    /// Anything else.
    NotFound,
}

/// Routes a path.
pub(crate) fn route(path: &str) -> ImdsRoute {
    match path.trim_end_matches('/') {
        "/metadata/instance/compute" => ImdsRoute::InstanceCompute,
        "/metadata/instance" => ImdsRoute::Instance,
        _ => ImdsRoute::NotFound,
    }
}

/// What an IMDS handler needs of a request.
pub(crate) struct ImdsRequest<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    pub(crate) metadata_header: Option<&'a str>,
}

impl ImdsRequest<'_> {
    fn query_value(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.unwrap_or_default().as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
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
fn preflight(req: &ImdsRequest<'_>) -> Result<(), Reply> {
    if !req.method.eq_ignore_ascii_case("GET") {
        return Err(imds_reply(405, &json!({ "error": "Method not allowed" })));
    }
    if !req
        .metadata_header
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
        "vmId": "00000000-0000-0000-0000-0000000000f1",
        "vmSize": "Standard_D2s_v5",
        "zone": "",
    })
}

/// Answers a request to the IMDS listener.
pub(crate) fn respond(state: &State, req: &ImdsRequest<'_>) -> Reply {
    match route(req.path) {
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
            ImdsRoute::NotFound
        );
        assert!(valid_api_version("2021-02-01"));
        assert!(!valid_api_version("2021-2-01"));
        assert!(!valid_api_version("latest"));
    }
}
