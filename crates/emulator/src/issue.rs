//! Minting tokens: access tokens (app and user), ID tokens, client info, refresh tokens.
//!
//! Claims of app-only access tokens: `aud` (the resource), `iss`, `iat`, `nbf`, `exp`, `appid`,
//! `appidacr`, `azp`, `azpacr`, `idp`, `idtyp` = `app`, `oid`, `sub` (the service principal
//! object id, or the FMI subject), `tid`, `uti`, `ver` = `2.0`, and when they apply `roles`,
//! `cnf` = `{"x5t#S256": …}` (mtls_pop), `fmi_path` (FMI tokens) and `xms_cc` (client
//! capabilities from `claims`). User tokens have `idtyp` = `user`, `scp`, `name`,
//! `preferred_username`, the user's `oid` and a pairwise `sub`. Managed identity tokens are app
//! tokens of the identity: `appid` = `azp` = its client id, `sub` = `oid` = its object id,
//! `idtyp` = `app`, `xms_mirid` = its resource id (the VM's for the system-assigned identity),
//! issued by the public cloud's v2.0 issuer of its tenant.

use serde_json::{json, Map, Value};

use crate::directory::{App, ManagedIdentity, User};
use crate::hosts::Cloud;
use crate::settings::Settings;
use crate::state::State;
use crate::util::{b64url, sha256};

/// The FMI subject of a token issued to `blueprint_id` for `path`:
/// `/eid1/c/{cloud}/t/{tenant}/a/{blueprint}/{path}`, where tenant and blueprint ids are the
/// base64url of their GUID bytes (little-endian field order, as .NET writes GUIDs).
pub(crate) fn fmi_subject(cloud: Cloud, tenant_id: &str, blueprint_id: &str, path: &str) -> String {
    let compact = |id: &str| match uuid::Uuid::parse_str(id) {
        Ok(u) => b64url(u.to_bytes_le()),
        Err(_) => b64url(id.as_bytes()),
    };
    format!(
        "/eid1/c/{}/t/{}/a/{}/{path}",
        cloud.fmi_segment(),
        compact(tenant_id),
        compact(blueprint_id)
    )
}

/// A pairwise subject for a user and an application.
pub(crate) fn pairwise_sub(client_id: &str, user_oid: &str) -> String {
    b64url(sha256(format!(
        "{}|{}",
        client_id.to_ascii_lowercase(),
        user_oid.to_ascii_lowercase()
    )))
}

fn uti() -> String {
    b64url(&uuid::Uuid::new_v4().as_bytes()[..])
}

/// Common claims of every access token.
fn base_claims(
    state: &State,
    cloud: Cloud,
    tenant_id: &str,
    resource: &str,
    lifetime: u64,
) -> Map<String, Value> {
    let now = state.now_unix();
    let issuer = cloud.issuer(tenant_id);
    let mut claims = Map::new();
    claims.insert("aud".into(), json!(resource));
    claims.insert("iss".into(), json!(issuer));
    claims.insert("iat".into(), json!(now));
    claims.insert("nbf".into(), json!(now));
    claims.insert("exp".into(), json!(now + lifetime));
    claims.insert("idp".into(), json!(issuer));
    claims.insert("tid".into(), json!(tenant_id));
    claims.insert("uti".into(), json!(uti()));
    claims.insert("ver".into(), json!("2.0"));
    claims
}

/// What an app-only access token is for.
pub(crate) struct AppToken<'a> {
    pub(crate) cloud: Cloud,
    pub(crate) app: &'a App,
    pub(crate) resource: &'a str,
    pub(crate) appidacr: &'a str,
    pub(crate) cnf: Option<&'a str>,
    pub(crate) fmi_path: Option<&'a str>,
    pub(crate) client_capabilities: Option<&'a Value>,
}

/// Mints an app-only access token; returns it and its lifetime in seconds.
pub(crate) fn app_access_token(state: &State, spec: &AppToken<'_>) -> (String, u64) {
    let lifetime = state.settings().access_token_lifetime.as_secs();
    let app = spec.app;
    let mut claims = base_claims(state, spec.cloud, &app.tenant_id, spec.resource, lifetime);
    claims.insert("appid".into(), json!(app.client_id));
    claims.insert("appidacr".into(), json!(spec.appidacr));
    claims.insert("azp".into(), json!(app.client_id));
    claims.insert("azpacr".into(), json!(spec.appidacr));
    claims.insert("idtyp".into(), json!("app"));
    claims.insert("oid".into(), json!(app.object_id));
    let sub = match spec.fmi_path {
        Some(path) => {
            claims.insert("fmi_path".into(), json!(path));
            fmi_subject(spec.cloud, &app.tenant_id, &app.client_id, path)
        }
        None => app.object_id.clone(),
    };
    claims.insert("sub".into(), json!(sub));
    if !app.roles.is_empty() {
        claims.insert("roles".into(), json!(app.roles));
    }
    if let Some(thumbprint) = spec.cnf {
        claims.insert("cnf".into(), json!({ "x5t#S256": thumbprint }));
    }
    if let Some(cc) = spec.client_capabilities {
        claims.insert("xms_cc".into(), cc.clone());
    }
    (state.key.sign("JWT", &claims), lifetime)
}

/// What a managed identity access token is for.
pub(crate) struct ManagedIdentityToken<'a> {
    pub(crate) identity: &'a ManagedIdentity,
    pub(crate) resource: &'a str,
    /// `x5t#S256` of the binding certificate (IMDSv2 mtls_pop tokens).
    pub(crate) cnf: Option<&'a str>,
    pub(crate) lifetime: u64,
    /// `xms_cc` from the `claims` of an IMDSv2 token request.
    pub(crate) client_capabilities: Option<&'a Value>,
}

/// Mints a managed identity's access token.
pub(crate) fn managed_identity_access_token(
    state: &State,
    spec: &ManagedIdentityToken<'_>,
) -> String {
    let mi = spec.identity;
    let mut claims = base_claims(
        state,
        Cloud::Public,
        &mi.tenant_id,
        spec.resource,
        spec.lifetime,
    );
    claims.insert("appid".into(), json!(mi.client_id));
    claims.insert("appidacr".into(), json!("2"));
    claims.insert("azp".into(), json!(mi.client_id));
    claims.insert("azpacr".into(), json!("2"));
    claims.insert("idtyp".into(), json!("app"));
    claims.insert("oid".into(), json!(mi.object_id));
    claims.insert("sub".into(), json!(mi.object_id));
    claims.insert(
        "xms_mirid".into(),
        json!(mi
            .resource_id
            .as_deref()
            .unwrap_or(crate::managed_identity::VM_RESOURCE_ID)),
    );
    if let Some(thumbprint) = spec.cnf {
        claims.insert("cnf".into(), json!({ "x5t#S256": thumbprint }));
    }
    if let Some(cc) = spec.client_capabilities {
        claims.insert("xms_cc".into(), cc.clone());
    }
    state.key.sign("JWT", &claims)
}

/// What a user access token is for.
pub(crate) struct UserToken<'a> {
    pub(crate) cloud: Cloud,
    pub(crate) app: &'a App,
    pub(crate) user: &'a User,
    pub(crate) resource: &'a str,
    pub(crate) scp: &'a [String],
    pub(crate) appidacr: &'a str,
    pub(crate) cnf: Option<&'a str>,
    pub(crate) client_capabilities: Option<&'a Value>,
}

/// Mints a delegated (user) access token; returns it and its lifetime in seconds.
pub(crate) fn user_access_token(state: &State, spec: &UserToken<'_>) -> (String, u64) {
    let lifetime = state.settings().access_token_lifetime.as_secs();
    let user = spec.user;
    let mut claims = base_claims(state, spec.cloud, &user.tenant_id, spec.resource, lifetime);
    claims.insert("appid".into(), json!(spec.app.client_id));
    claims.insert("appidacr".into(), json!(spec.appidacr));
    claims.insert("azp".into(), json!(spec.app.client_id));
    claims.insert("azpacr".into(), json!(spec.appidacr));
    claims.insert("idtyp".into(), json!("user"));
    claims.insert("name".into(), json!(user.display_name));
    claims.insert("oid".into(), json!(user.object_id));
    claims.insert("preferred_username".into(), json!(user.upn));
    claims.insert("scp".into(), json!(spec.scp.join(" ")));
    claims.insert(
        "sub".into(),
        json!(pairwise_sub(&spec.app.client_id, &user.object_id)),
    );
    if let Some(thumbprint) = spec.cnf {
        claims.insert("cnf".into(), json!({ "x5t#S256": thumbprint }));
    }
    if let Some(cc) = spec.client_capabilities {
        claims.insert("xms_cc".into(), cc.clone());
    }
    (state.key.sign("JWT", &claims), lifetime)
}

/// Mints an ID token for `user` and the client `app`.
pub(crate) fn id_token(state: &State, cloud: Cloud, app: &App, user: &User) -> String {
    let now = state.now_unix();
    let lifetime = state.settings().id_token_lifetime.as_secs();
    let mut claims = Map::new();
    claims.insert("aud".into(), json!(app.client_id));
    claims.insert("iss".into(), json!(cloud.issuer(&user.tenant_id)));
    claims.insert("iat".into(), json!(now));
    claims.insert("nbf".into(), json!(now));
    claims.insert("exp".into(), json!(now + lifetime));
    claims.insert("name".into(), json!(user.display_name));
    claims.insert("oid".into(), json!(user.object_id));
    claims.insert("preferred_username".into(), json!(user.upn));
    claims.insert(
        "sub".into(),
        json!(pairwise_sub(&app.client_id, &user.object_id)),
    );
    claims.insert("tid".into(), json!(user.tenant_id));
    claims.insert("uti".into(), json!(uti()));
    claims.insert("ver".into(), json!("2.0"));
    state.key.sign("JWT", &claims)
}

/// `client_info`: base64url of `{"uid": oid, "utid": tid}`.
pub(crate) fn client_info(user: &User) -> String {
    b64url(json!({ "uid": user.object_id, "utid": user.tenant_id }).to_string())
}

/// A new opaque refresh token.
pub(crate) fn new_refresh_token() -> String {
    let mut bytes = Vec::with_capacity(48);
    for _ in 0..3 {
        bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    format!("1.emu.{}", b64url(bytes))
}

/// The common fields of a successful token response.
pub(crate) fn token_response(
    settings: &Settings,
    token_type: &str,
    access_token: &str,
    lifetime: u64,
) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("token_type".into(), json!(token_type));
    body.insert("expires_in".into(), json!(lifetime));
    let ext = settings
        .ext_expires_lifetime
        .map_or(lifetime, |d| d.as_secs());
    body.insert("ext_expires_in".into(), json!(ext));
    if let Some(refresh_in) = settings.refresh_in.value(lifetime) {
        body.insert("refresh_in".into(), json!(refresh_in));
    }
    body.insert("access_token".into(), json!(access_token));
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fmi_subject_shape() {
        let sub = fmi_subject(
            Cloud::Public,
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "aab5089d-e764-47e3-9f28-cc11c2513821",
            "agent-1",
        );
        assert!(sub.starts_with("/eid1/c/pub/t/"));
        assert!(sub.ends_with("/agent-1"));
        // 16 GUID bytes are 22 base64url characters.
        let parts: Vec<&str> = sub.split('/').collect();
        assert_eq!(parts[5].len(), 22);
        assert_eq!(parts[7].len(), 22);
    }
}
