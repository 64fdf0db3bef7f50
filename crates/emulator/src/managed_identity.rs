//! The managed identity endpoints of every hosting environment, except IMDSv2 (in
//! [`imds_v2`](crate::imds_v2)):
//!
//! | source | where | request | identity parameters | secret |
//! |---|---|---|---|---|
//! | IMDS v1 | IMDS listener, `/metadata/identity/oauth2/token` | `GET ?api-version=2018-02-01&resource=…` (or a later IMDS version), `Metadata: true` | `client_id`, `msi_res_id` (or `mi_res_id`), `object_id` | — |
//! | App Service | IMDS listener, `/msi/token` | `GET ?api-version=2019-08-01&resource=…` | `client_id`, `mi_res_id`, `object_id` (or `principal_id`) | `X-IDENTITY-HEADER` |
//! | Machine Learning | IMDS listener, `/machine-learning/msi/token` | `GET ?api-version=2017-09-01&resource=…`, `Metadata: true` | `clientid` | `secret` |
//! | Cloud Shell | IMDS listener, `/cloud-shell/oauth2/token` | `POST`, form `resource=…`, `Metadata: true` | none | — |
//! | Azure Arc | IMDS listener, `/azure-arc/metadata/identity/oauth2/token` (and `/metadata/identity/oauth2/token` for `Host: 127.0.0.1:40342` or `localhost:40342`) | `GET ?api-version=2020-06-01&resource=…` (or `2019-11-01`), `Metadata: true`, then `Authorization: Basic <challenge file contents>` | none | the challenge file |
//! | Service Fabric | its own HTTPS listener, `/metadata/identity/oauth2/token` | `GET ?api-version=2020-05-01&resource=…` (or `2019-07-01-preview`) | `principalId` (object id) | `secret` |
//!
//! Without identity parameters the host's system-assigned identity answers (Machine Learning
//! names it by `clientid` = `DEFAULT_IDENTITY_CLIENT_ID`). Query values are percent-decoded; a
//! parameter given twice, or two identity parameters, are refused. Tokens are the emulator's
//! JWTs for the identity (see [`issue`](crate::issue)); the resource must be one tokens can be
//! issued for. Each source answers its errors in its own shape: IMDS, Azure Arc and Machine
//! Learning `{"error","error_description"}`, App Service `{"statusCode","message","correlationId"}`,
//! Cloud Shell `{"error":{"code","message"}}`, Service Fabric
//! `{"error":{"correlationId","code","message"}}`.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use serde_json::{json, Map, Value};

use crate::directory::{ManagedIdentity, ManagedIdentityKind};
use crate::hosts::Cloud;
use crate::issue::{managed_identity_access_token, ManagedIdentityToken};
use crate::log::{LoggedRequest, Route};
use crate::reply::Reply;
use crate::state::State;
use crate::util::new_uuid;

/// The IMDS `Server` header value.
pub(crate) const IMDS_SERVER: &str = "IMDS/150.870.65.1854";
/// The IMDS v1 token path (also Azure Arc's path on its own port).
pub(crate) const IMDS_TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
/// The App Service path.
pub(crate) const APP_SERVICE_PATH: &str = "/msi/token";
/// The Machine Learning path.
pub(crate) const MACHINE_LEARNING_PATH: &str = "/machine-learning/msi/token";
/// The Cloud Shell path.
pub(crate) const CLOUD_SHELL_PATH: &str = "/cloud-shell/oauth2/token";
/// The Azure Arc path on the IMDS listener.
pub(crate) const AZURE_ARC_PATH: &str = "/azure-arc/metadata/identity/oauth2/token";
/// The Service Fabric path.
pub(crate) const SERVICE_FABRIC_PATH: &str = "/metadata/identity/oauth2/token";
/// Azure Arc's production endpoint (`host:port`): the IMDS listener serves Azure Arc for
/// requests with this `Host` (map it to [`imds_addr`](crate::EmulatorHandle::imds_addr) in the
/// client's transport; it is not in the resolver map).
pub const AZURE_ARC_HOST_PORT: &str = "127.0.0.1:40342";
/// The Service Fabric endpoint's `host:port` in [`managed_identity_environment`](crate::EmulatorHandle::managed_identity_environment),
/// mapped to the Service Fabric listener by the resolver map (a node address and the port
/// Service Fabric's token service uses).
pub const SERVICE_FABRIC_HOST_PORT: &str = "10.0.0.4:2377";
/// The api-version App Service answers.
const APP_SERVICE_API_VERSION: &str = "2019-08-01";
/// The api-version Machine Learning answers.
const MACHINE_LEARNING_API_VERSION: &str = "2017-09-01";
/// The api-versions Service Fabric answers.
const SERVICE_FABRIC_API_VERSIONS: [&str; 2] = ["2020-05-01", "2019-07-01-preview"];
/// The api-versions the IMDS v1 token endpoint answers: IMDS's versions from 2018-02-01 on
/// (Microsoft's documentation: "use 2018-02-01 or greater"; MSAL and the Azure SDKs send
/// 2018-02-01).
const IMDS_TOKEN_API_VERSIONS: [&str; 26] = [
    "2018-02-01",
    "2018-04-02",
    "2018-10-01",
    "2019-02-01",
    "2019-03-11",
    "2019-04-30",
    "2019-06-01",
    "2019-06-04",
    "2019-08-01",
    "2019-08-15",
    "2019-11-01",
    "2020-06-01",
    "2020-07-15",
    "2020-09-01",
    "2020-10-01",
    "2020-12-01",
    "2021-01-01",
    "2021-02-01",
    "2021-03-01",
    "2021-05-01",
    "2021-08-01",
    "2021-10-01",
    "2021-11-01",
    "2021-11-15",
    "2021-12-13",
    "2023-07-01",
];
/// The api-versions the Azure Arc agent's token endpoint answers: 2019-11-01 (its
/// documentation's examples) and 2020-06-01 (what MSAL sends).
const AZURE_ARC_API_VERSIONS: [&str; 2] = ["2019-11-01", "2020-06-01"];
/// The resource id of the emulated VM (`xms_mirid` of its system-assigned identity's tokens).
pub(crate) const VM_RESOURCE_ID: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/fic-emulator/providers/Microsoft.Compute/virtualMachines/fic-emulator-vm";

/// The hosting environments whose managed identity endpoints the emulator serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ManagedIdentitySource {
    /// Azure VMs and scale sets: IMDS at `169.254.169.254` (v1, and v2 for mTLS PoP).
    Imds,
    /// App Service and Azure Functions.
    AppService,
    /// Azure Machine Learning compute.
    MachineLearning,
    /// Azure Cloud Shell.
    CloudShell,
    /// Azure Arc-enabled servers.
    AzureArc,
    /// Service Fabric clusters.
    ServiceFabric,
}

impl ManagedIdentitySource {
    /// Every source.
    pub const ALL: [ManagedIdentitySource; 6] = [
        ManagedIdentitySource::Imds,
        ManagedIdentitySource::AppService,
        ManagedIdentitySource::MachineLearning,
        ManagedIdentitySource::CloudShell,
        ManagedIdentitySource::AzureArc,
        ManagedIdentitySource::ServiceFabric,
    ];

    /// The route its requests are logged under.
    pub fn route(self) -> Route {
        match self {
            Self::Imds => Route::Imds,
            Self::AppService => Route::AppService,
            Self::MachineLearning => Route::MachineLearning,
            Self::CloudShell => Route::CloudShell,
            Self::AzureArc => Route::AzureArc,
            Self::ServiceFabric => Route::ServiceFabric,
        }
    }
}

impl fmt::Display for ManagedIdentitySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Imds => "IMDS",
            Self::AppService => "App Service",
            Self::MachineLearning => "Machine Learning",
            Self::CloudShell => "Cloud Shell",
            Self::AzureArc => "Azure Arc",
            Self::ServiceFabric => "Service Fabric",
        })
    }
}

/// The route of a request to the IMDS listener, from its path and its `Host` header (with port).
pub(crate) fn plain_route(path: &str, host_header: Option<&str>) -> Route {
    match path {
        APP_SERVICE_PATH => Route::AppService,
        MACHINE_LEARNING_PATH => Route::MachineLearning,
        CLOUD_SHELL_PATH => Route::CloudShell,
        AZURE_ARC_PATH => Route::AzureArc,
        IMDS_TOKEN_PATH
            if host_header.is_some_and(|h| {
                let h = h.trim().to_ascii_lowercase();
                h == AZURE_ARC_HOST_PORT || h == "localhost:40342"
            }) =>
        {
            Route::AzureArc
        }
        _ => Route::Imds,
    }
}

/// The secrets and files of the hosted endpoints.
pub(crate) struct Hosted {
    pub(crate) app_service_secret: String,
    pub(crate) machine_learning_secret: String,
    pub(crate) service_fabric_secret: String,
    pub(crate) arc_directory: PathBuf,
    /// Whether the emulator chose (and so removes) the Arc directory.
    pub(crate) arc_directory_owned: bool,
    /// Challenge secrets handed out and not used yet, with their files.
    arc_secrets: Mutex<HashMap<String, PathBuf>>,
}

impl fmt::Debug for Hosted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hosted")
            .field("arc_directory", &self.arc_directory)
            .finish_non_exhaustive()
    }
}

/// A random secret: 64 hexadecimal digits.
fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Hosted {
    /// New random secrets; the Arc challenge files go to `arc_directory`, or to a directory of
    /// the emulator's own under the system temporary directory.
    pub(crate) fn new(arc_directory: Option<PathBuf>) -> Self {
        let (arc_directory, arc_directory_owned) = match arc_directory {
            Some(directory) => (directory, false),
            None => (
                std::env::temp_dir().join(format!("fic-emulator-arc-{}", uuid::Uuid::new_v4())),
                true,
            ),
        };
        Self {
            app_service_secret: random_secret(),
            machine_learning_secret: random_secret(),
            service_fabric_secret: random_secret(),
            arc_directory,
            arc_directory_owned,
            arc_secrets: Mutex::new(HashMap::new()),
        }
    }

    /// Writes a new challenge file; returns its path.
    fn new_arc_challenge(&self) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.arc_directory)?;
        let secret = random_secret();
        let path = self
            .arc_directory
            .join(format!("{}.key", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, secret.as_bytes())?;
        self.arc_secrets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(secret, path.clone());
        Ok(path)
    }

    /// Accepts a challenge secret once (its file is removed).
    fn take_arc_secret(&self, secret: &str) -> bool {
        let taken = self
            .arc_secrets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(secret);
        match taken {
            Some(path) => {
                let _ = std::fs::remove_file(path);
                true
            }
            None => false,
        }
    }

    /// Removes the Arc directory when the emulator made it.
    pub(crate) fn clean_up(&self) {
        if self.arc_directory_owned {
            let _ = std::fs::remove_dir_all(&self.arc_directory);
        }
    }
}

/// How a source shapes its error bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// `{"error","error_description"}` (IMDS, Azure Arc, Machine Learning).
    Aad,
    /// `{"statusCode","message","correlationId"}`.
    AppService,
    /// `{"error":{"code","message"}}`.
    CloudShell,
    /// `{"error":{"correlationId","code","message"}}`.
    ServiceFabric,
}

/// A refusal: status, error code and message, shaped per source when answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: u16,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl Refusal {
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request", message)
    }

    fn reply(&self, shape: Shape) -> Reply {
        let body = match shape {
            Shape::Aad => json!({ "error": self.code, "error_description": self.message }),
            Shape::AppService => json!({
                "statusCode": self.status,
                "message": self.message,
                "correlationId": new_uuid(),
            }),
            Shape::CloudShell => json!({ "error": { "code": self.code, "message": self.message } }),
            Shape::ServiceFabric => json!({
                "error": { "correlationId": new_uuid(), "code": self.code, "message": self.message }
            }),
        };
        Reply::json(self.status, &body)
    }

    /// The IMDS-shaped answer (with the IMDS `Server` header).
    pub(crate) fn imds_reply(&self) -> Reply {
        self.reply(Shape::Aad).header("server", IMDS_SERVER)
    }
}

/// The query (or form) parameters of a request, each at most once.
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub(crate) fn new(pairs: Vec<(String, String)>) -> Result<Self, Refusal> {
        for (i, (name, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(Refusal::bad_request(format!(
                    "The query parameter '{name}' is repeated."
                )));
            }
        }
        Ok(Self { pairs })
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.trim().is_empty())
    }

    fn required(&self, name: &str) -> Result<&str, Refusal> {
        self.get(name).ok_or_else(|| {
            Refusal::bad_request(format!("Required query variable '{name}' is missing."))
        })
    }
}

/// How a request names its identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Selector {
    SystemAssigned,
    ClientId(String),
    ResourceId(String),
    ObjectId(String),
}

/// What an identity parameter name means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IdKind {
    Client,
    Resource,
    Object,
}

/// Every parameter name some source uses to name a user-assigned identity.
const ID_PARAMETERS: [&str; 7] = [
    "client_id",
    "clientid",
    "msi_res_id",
    "mi_res_id",
    "object_id",
    "principal_id",
    "principalId",
];

/// The identity `params` name, among the parameter names `allowed` for this source.
pub(crate) fn selector(
    params: &Params,
    allowed: &[(&str, IdKind)],
    source: &str,
) -> Result<Selector, Refusal> {
    let mut found = Vec::new();
    for name in ID_PARAMETERS {
        let Some(value) = params.get(name) else {
            continue;
        };
        let Some((_, kind)) = allowed.iter().find(|(n, _)| *n == name) else {
            return Err(Refusal::bad_request(format!(
                "The {source} endpoint does not take the identity parameter '{name}'."
            )));
        };
        found.push((name, *kind, value.to_owned()));
    }
    match found.as_slice() {
        [] => Ok(Selector::SystemAssigned),
        [(_, kind, value)] => Ok(match kind {
            IdKind::Client => Selector::ClientId(value.clone()),
            IdKind::Resource => Selector::ResourceId(value.clone()),
            IdKind::Object => Selector::ObjectId(value.clone()),
        }),
        several => Err(Refusal::bad_request(format!(
            "Only one identity parameter may be given; got {}.",
            several
                .iter()
                .map(|(n, _, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The managed identity `selector` names on this host.
pub(crate) fn find(state: &State, selector: &Selector) -> Option<ManagedIdentity> {
    let identities = state.directory.managed_identities();
    identities.into_iter().find(|mi| match selector {
        Selector::SystemAssigned => mi.kind == ManagedIdentityKind::SystemAssigned,
        Selector::ClientId(id) => mi.client_id.eq_ignore_ascii_case(id),
        Selector::ObjectId(id) => mi.object_id.eq_ignore_ascii_case(id),
        Selector::ResourceId(id) => mi
            .resource_id
            .as_deref()
            .is_some_and(|r| r.eq_ignore_ascii_case(id)),
    })
}

/// The identity, or the refusal IMDS gives for an unknown one.
pub(crate) fn identity(state: &State, selector: &Selector) -> Result<ManagedIdentity, Refusal> {
    find(state, selector).ok_or_else(|| Refusal::bad_request("Identity not found"))
}

/// Checks the resource tokens are asked for.
fn check_resource(state: &State, resource: &str, tenant_id: &str) -> Result<(), Refusal> {
    // The managed identity endpoints issue public-cloud tokens (issuer
    // login.microsoftonline.com), so the public cloud's exchange audience is the known one.
    if state.directory.is_known_resource(resource, Cloud::Public) {
        Ok(())
    } else {
        Err(Refusal::new(
            400,
            "invalid_resource",
            format!(
                "AADSTS{}: The resource principal named {resource} was not found in the tenant named {tenant_id}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
                crate::codes::RESOURCE_NOT_FOUND
            ),
        ))
    }
}

fn metadata_header(request: &LoggedRequest) -> Result<(), Refusal> {
    if request
        .header("metadata")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        Ok(())
    } else {
        Err(Refusal::bad_request(
            "Required metadata header not specified",
        ))
    }
}

fn method(request: &LoggedRequest, wanted: &str) -> Result<(), Refusal> {
    if request.method.eq_ignore_ascii_case(wanted) {
        Ok(())
    } else {
        Err(Refusal::new(
            405,
            "invalid_request",
            format!(
                "The method {} is not allowed; use {wanted}.",
                request.method
            ),
        ))
    }
}

/// The request's `api-version`, one of `accepted` (the first is the oldest or preferred).
fn api_version<'p>(params: &'p Params, accepted: &[&str]) -> Result<&'p str, Refusal> {
    let version = params.required("api-version")?;
    if accepted.contains(&version) {
        return Ok(version);
    }
    let advice = match accepted {
        [] => "none".to_owned(),
        [one] => (*one).to_owned(),
        few if few.len() <= 3 => few.join(" or "),
        [first, ..] => format!("{first} or a later version"),
    };
    Err(Refusal::bad_request(format!(
        "The api-version '{version}' is not supported; use {advice}."
    )))
}

/// A minted token for `identity` and `resource`.
struct Minted {
    token: String,
    lifetime: u64,
    now: u64,
}

fn mint(state: &State, identity: &ManagedIdentity, resource: &str) -> Minted {
    let lifetime = state.settings().managed_identity_token_lifetime.as_secs();
    let token = managed_identity_access_token(
        state,
        &ManagedIdentityToken {
            identity,
            resource,
            cnf: None,
            lifetime,
            client_capabilities: None,
        },
    );
    Minted {
        token,
        lifetime,
        now: state.now_unix(),
    }
}

/// IMDS's (and Azure Arc's) success body: every number a string.
fn imds_body(minted: &Minted, identity: &ManagedIdentity, resource: &str) -> Value {
    json!({
        "access_token": minted.token,
        "client_id": identity.client_id,
        "expires_in": minted.lifetime.to_string(),
        "expires_on": (minted.now + minted.lifetime).to_string(),
        "ext_expires_in": minted.lifetime.to_string(),
        "not_before": minted.now.to_string(),
        "resource": resource,
        "token_type": "Bearer",
    })
}

/// Answers a request to a hosted managed identity endpoint (`route` other than IMDS).
pub(crate) fn respond(state: &State, route: Route, request: &LoggedRequest) -> Reply {
    let (shape, result) = match route {
        Route::AppService => (Shape::AppService, app_service(state, request)),
        Route::MachineLearning => (Shape::Aad, machine_learning(state, request)),
        Route::CloudShell => (Shape::CloudShell, cloud_shell(state, request)),
        Route::AzureArc => (Shape::Aad, azure_arc(state, request)),
        Route::ServiceFabric => (Shape::ServiceFabric, service_fabric(state, request)),
        _ => (Shape::Aad, Err(Refusal::new(404, "not_found", "Not found"))),
    };
    result.unwrap_or_else(|refusal| refusal.reply(shape))
}

/// The IMDS v1 token endpoint.
pub(crate) fn imds_token(state: &State, request: &LoggedRequest) -> Reply {
    let result =
        (|| {
            method(request, "GET")?;
            metadata_header(request)?;
            let params = Params::new(request.query_pairs())?;
            api_version(&params, &IMDS_TOKEN_API_VERSIONS)?;
            let resource = params.required("resource")?;
            let selector = selector(
                &params,
                &[
                    ("client_id", IdKind::Client),
                    ("msi_res_id", IdKind::Resource),
                    ("mi_res_id", IdKind::Resource),
                    ("object_id", IdKind::Object),
                ],
                "IMDS",
            )?;
            let identity = identity(state, &selector)?;
            check_resource(state, resource, &identity.tenant_id)?;
            let minted = mint(state, &identity, resource);
            Ok(Reply::json(200, &imds_body(&minted, &identity, resource))
                .header("server", IMDS_SERVER))
        })();
    result.unwrap_or_else(|refusal: Refusal| refusal.imds_reply())
}

fn app_service(state: &State, request: &LoggedRequest) -> Result<Reply, Refusal> {
    method(request, "GET")?;
    match request.header("x-identity-header") {
        None => {
            return Err(Refusal::bad_request(
                "The X-IDENTITY-HEADER header is required.",
            ))
        }
        Some(secret) if secret != state.hosted.app_service_secret => {
            return Err(Refusal::new(
                401,
                "unauthorized",
                "The X-IDENTITY-HEADER header does not carry this host's secret.",
            ))
        }
        Some(_) => {}
    }
    let params = Params::new(request.query_pairs())?;
    api_version(&params, &[APP_SERVICE_API_VERSION])?;
    let resource = params.required("resource")?;
    let selector = selector(
        &params,
        &[
            ("client_id", IdKind::Client),
            ("mi_res_id", IdKind::Resource),
            ("object_id", IdKind::Object),
            ("principal_id", IdKind::Object),
        ],
        "App Service",
    )?;
    let identity = identity(state, &selector)?;
    check_resource(state, resource, &identity.tenant_id)?;
    let minted = mint(state, &identity, resource);
    Ok(Reply::json(
        200,
        &json!({
            "access_token": minted.token,
            "expires_on": (minted.now + minted.lifetime).to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": identity.client_id,
        }),
    ))
}

fn machine_learning(state: &State, request: &LoggedRequest) -> Result<Reply, Refusal> {
    method(request, "GET")?;
    metadata_header(request)?;
    match request.header("secret") {
        Some(secret) if secret == state.hosted.machine_learning_secret => {}
        Some(_) => {
            return Err(Refusal::new(
                401,
                "unauthorized_client",
                "The secret header does not carry this compute's MSI_SECRET.",
            ))
        }
        None => return Err(Refusal::bad_request("The secret header is required.")),
    }
    let params = Params::new(request.query_pairs())?;
    api_version(&params, &[MACHINE_LEARNING_API_VERSION])?;
    let resource = params.required("resource")?;
    let selector = selector(&params, &[("clientid", IdKind::Client)], "Machine Learning")?;
    let identity = identity(state, &selector)?;
    check_resource(state, resource, &identity.tenant_id)?;
    let minted = mint(state, &identity, resource);
    // Machine Learning writes expires_on as a number.
    Ok(Reply::json(
        200,
        &json!({
            "access_token": minted.token,
            "expires_on": minted.now + minted.lifetime,
            "resource": resource,
            "token_type": "Bearer",
            "client_id": identity.client_id,
        }),
    ))
}

fn cloud_shell(state: &State, request: &LoggedRequest) -> Result<Reply, Refusal> {
    method(request, "POST")?;
    metadata_header(request)?;
    let is_form = request.header("content-type").is_some_and(|v| {
        v.split(';').next().is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    });
    if !is_form {
        return Err(Refusal::bad_request(
            "The body must be application/x-www-form-urlencoded.",
        ));
    }
    let form = Params::new(request.form.clone())?;
    let query = Params::new(request.query_pairs())?;
    selector(&form, &[], "Cloud Shell")?;
    selector(&query, &[], "Cloud Shell")?;
    let resource = form
        .get("resource")
        .ok_or_else(|| Refusal::bad_request("The form parameter 'resource' is required."))?;
    let identity = identity(state, &Selector::SystemAssigned)?;
    check_resource(state, resource, &identity.tenant_id)?;
    let minted = mint(state, &identity, resource);
    Ok(Reply::json(
        200,
        &json!({
            "access_token": minted.token,
            "expires_in": minted.lifetime.to_string(),
            "expires_on": (minted.now + minted.lifetime).to_string(),
            "not_before": minted.now.to_string(),
            "resource": resource,
            "token_type": "Bearer",
        }),
    ))
}

fn azure_arc(state: &State, request: &LoggedRequest) -> Result<Reply, Refusal> {
    method(request, "GET")?;
    metadata_header(request)?;
    let Some(authorization) = request.header("authorization") else {
        let path = state.hosted.new_arc_challenge().map_err(|e| {
            Refusal::new(
                500,
                "server_error",
                format!("The challenge file could not be written: {e}"),
            )
        })?;
        return Ok(Refusal::new(
            401,
            "unauthorized_client",
            "Read the file named in WWW-Authenticate and send its contents as 'Authorization: Basic <contents>'.",
        )
        .reply(Shape::Aad)
        .header("www-authenticate", format!("Basic realm={}", path.display())));
    };
    let secret = authorization
        .trim()
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, secret)| secret.trim());
    if !secret.is_some_and(|s| state.hosted.take_arc_secret(s)) {
        return Err(Refusal::new(
            401,
            "unauthorized_client",
            "The Authorization header does not carry the contents of a challenge file this agent wrote (each is accepted once).",
        ));
    }
    let params = Params::new(request.query_pairs())?;
    api_version(&params, &AZURE_ARC_API_VERSIONS)?;
    let resource = params.required("resource")?;
    selector(&params, &[], "Azure Arc")?;
    let identity = identity(state, &Selector::SystemAssigned)?;
    check_resource(state, resource, &identity.tenant_id)?;
    let minted = mint(state, &identity, resource);
    Ok(Reply::json(200, &imds_body(&minted, &identity, resource)))
}

fn service_fabric(state: &State, request: &LoggedRequest) -> Result<Reply, Refusal> {
    if request.path != SERVICE_FABRIC_PATH {
        return Err(Refusal::new(404, "NotFound", "Not found"));
    }
    method(request, "GET")?;
    match request.header("secret") {
        Some(secret) if secret == state.hosted.service_fabric_secret => {}
        Some(_) => {
            return Err(Refusal::new(
                401,
                "SecretHeaderMismatch",
                "The secret header does not match the application's IDENTITY_HEADER.",
            ))
        }
        None => {
            return Err(Refusal::new(
                401,
                "SecretHeaderNotFound",
                "Secret is not found in the request headers.",
            ))
        }
    }
    let params = Params::new(request.query_pairs())?;
    api_version(&params, &SERVICE_FABRIC_API_VERSIONS)?;
    let resource = params.required("resource")?;
    let selector = selector(
        &params,
        &[("principalId", IdKind::Object)],
        "Service Fabric",
    )?;
    let identity = identity(state, &selector)?;
    check_resource(state, resource, &identity.tenant_id)?;
    let minted = mint(state, &identity, resource);
    // Service Fabric writes expires_on as a number.
    let mut body = Map::new();
    body.insert("token_type".into(), json!("Bearer"));
    body.insert("access_token".into(), json!(minted.token));
    body.insert("expires_on".into(), json!(minted.now + minted.lifetime));
    body.insert("resource".into(), json!(resource));
    Ok(Reply::json(200, &Value::Object(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_of_the_plain_listener() {
        assert_eq!(plain_route("/msi/token", None), Route::AppService);
        assert_eq!(
            plain_route(IMDS_TOKEN_PATH, Some("169.254.169.254")),
            Route::Imds
        );
        assert_eq!(
            plain_route(IMDS_TOKEN_PATH, Some("127.0.0.1:40342")),
            Route::AzureArc
        );
        assert_eq!(plain_route(AZURE_ARC_PATH, None), Route::AzureArc);
        assert_eq!(plain_route("/metadata/instance", None), Route::Imds);
    }

    #[test]
    fn identity_parameters() {
        let params = |pairs: &[(&str, &str)]| {
            Params::new(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
            .unwrap()
        };
        let allowed = [("client_id", IdKind::Client)];
        assert_eq!(
            selector(&params(&[]), &allowed, "x").unwrap(),
            Selector::SystemAssigned
        );
        assert_eq!(
            selector(&params(&[("client_id", "c")]), &allowed, "x").unwrap(),
            Selector::ClientId("c".into())
        );
        assert_eq!(
            selector(&params(&[("object_id", "o")]), &allowed, "x")
                .unwrap_err()
                .status,
            400
        );
        assert!(Params::new(vec![("a".into(), "1".into()), ("a".into(), "2".into())]).is_err());
    }

    #[test]
    fn api_versions_are_allow_listed() {
        let params = |v: &str| Params::new(vec![("api-version".into(), v.into())]).unwrap();
        let imds = &IMDS_TOKEN_API_VERSIONS[..];
        assert_eq!(api_version(&params("2018-02-01"), imds), Ok("2018-02-01"));
        assert_eq!(api_version(&params("2021-02-01"), imds), Ok("2021-02-01"));
        // Well-formed but not a version the service knows.
        for refused in ["2017-09-01", "2018-02-02", "2099-01-01", "latest"] {
            let refusal = api_version(&params(refused), imds).unwrap_err();
            assert_eq!(refusal.status, 400);
            assert_eq!(
                refusal.message,
                format!("The api-version '{refused}' is not supported; use 2018-02-01 or a later version.")
            );
        }
        let arc = &AZURE_ARC_API_VERSIONS[..];
        assert_eq!(api_version(&params("2020-06-01"), arc), Ok("2020-06-01"));
        assert_eq!(
            api_version(&params("2018-02-01"), arc).unwrap_err().message,
            "The api-version '2018-02-01' is not supported; use 2019-11-01 or 2020-06-01."
        );
    }
}
