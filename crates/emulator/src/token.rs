//! The token endpoint, `POST /{tenant}/oauth2/v2.0/token`: the `client_credentials` (with
//! `fmi_path`, `token_type=mtls_pop`), `user_fic` and `refresh_token` grants.
//!
//! User tokens describe the user as the request tenant sees it: for a guest, `tid` is the
//! resource tenant and `oid` the guest's object id there, while `client_info` names the home
//! account (home object id, home tenant). A refresh token stays with the user in that tenant.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use crate::aadsts::AadError;
use crate::client_auth::{
    authenticate, check_times, verify_issued_token, AuthContext, Grant, Signer,
};
use crate::codes;
use crate::directory::{App, ManagedIdentity, Tenant, User};
use crate::hosts::Cloud;
use crate::issue::{
    app_access_token, client_info, id_token, managed_identity_access_token, new_refresh_token,
    token_response, user_access_token, AppToken, ManagedIdentityToken, UserToken,
};
use crate::jwt;
use crate::state::{RefreshGrant, State};
use crate::tls::PeerCertificate;

const GRAPH: &str = "https://graph.microsoft.com";
const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "offline_access", "email"];

/// The form parameters of a token request, with Entra's rules: a parameter may appear once, and
/// an empty value counts as absent.
pub(crate) struct Form<'a> {
    pairs: &'a [(String, String)],
}

impl<'a> Form<'a> {
    pub(crate) fn new(pairs: &'a [(String, String)]) -> Result<Self, AadError> {
        let mut seen = HashSet::new();
        for (name, _) in pairs {
            if !seen.insert(name.as_str()) {
                return Err(AadError::request(
                    codes::DUPLICATE_PARAMETER,
                    format!("The request is not properly formatted. The parameter '{name}' is duplicated."),
                ));
            }
        }
        Ok(Self { pairs })
    }

    pub(crate) fn get(&self, name: &str) -> Option<&'a str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.trim().is_empty())
    }

    pub(crate) fn required(&self, name: &str) -> Result<&'a str, AadError> {
        self.get(name).ok_or_else(|| AadError::missing(name))
    }
}

/// One token request as the router saw it.
pub(crate) struct TokenRequest<'a> {
    pub(crate) method: &'a str,
    pub(crate) host: &'a str,
    pub(crate) path: &'a str,
    pub(crate) tenant: &'a str,
    pub(crate) cloud: Cloud,
    pub(crate) mtls_host: bool,
    pub(crate) form: &'a [(String, String)],
    pub(crate) peer: Option<&'a PeerCertificate>,
    /// A fault asked for a Bearer answer to an `mtls_pop` request.
    pub(crate) downgrade: bool,
}

fn resolve_tenant(state: &State, segment: &str) -> Result<Tenant, AadError> {
    if ["common", "organizations", "consumers"]
        .iter()
        .any(|t| t.eq_ignore_ascii_case(segment))
    {
        return Err(AadError::request(
            codes::TENANT_REQUIRED,
            "No tenant-identifying information found in either the request or implied by any provided credentials.",
        ));
    }
    state
        .directory
        .tenant(segment)
        .ok_or_else(|| AadError::tenant_not_found(segment))
}

/// Handles a token request; the success body or the error.
pub(crate) fn handle(
    state: &State,
    req: &TokenRequest<'_>,
) -> Result<Map<String, Value>, AadError> {
    if !req.method.eq_ignore_ascii_case("POST") {
        return Err(AadError::request(
            codes::POST_REQUIRED,
            format!(
                "The endpoint only accepts POST requests. Received a {} request.",
                req.method
            ),
        ));
    }
    let form = Form::new(req.form)?;
    let tenant = resolve_tenant(state, req.tenant)?;
    let grant_type = form.required("grant_type")?;
    let grant = match grant_type {
        "client_credentials" => Grant::ClientCredentials,
        "user_fic" => Grant::UserFic,
        "refresh_token" => Grant::RefreshToken,
        other => {
            return Err(AadError::new(
                codes::UNSUPPORTED_GRANT_TYPE,
                "unsupported_grant_type",
                format!(
                    "The app requested an unsupported grant type '{other}'. The emulator supports client_credentials, user_fic and refresh_token."
                ),
            ))
        }
    };
    let client_id = form.required("client_id")?;
    // Not an application: maybe a managed identity, whose service principal authenticates with
    // the certificates IMDSv2 issued for it.
    let registered = state.directory.app(client_id);
    let managed_identity = if registered.is_none() {
        state
            .directory
            .managed_identity(client_id)
            .filter(|m| m.tenant_id.eq_ignore_ascii_case(&tenant.id))
    } else {
        None
    };
    let app = registered
        .or_else(|| managed_identity.as_ref().map(ManagedIdentity::service_principal))
        .filter(|a| a.tenant_id.eq_ignore_ascii_case(&tenant.id))
        .ok_or_else(|| {
            AadError::new(
                codes::APP_NOT_FOUND,
                "unauthorized_client",
                format!(
                    "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                    tenant.id
                ),
            )
        })?;
    let pop_requested = match form.get("token_type") {
        None => false,
        Some("mtls_pop") => true,
        Some(other) => {
            return Err(AadError::request(
                codes::EMU_UNSUPPORTED_TOKEN_TYPE,
                format!("The token_type '{other}' is not supported; the only token_type accepted is 'mtls_pop'."),
            ))
        }
    };
    if pop_requested && !req.mtls_host {
        return Err(AadError::request(
            codes::EMU_MTLS_HOST_REQUIRED,
            format!(
                "token_type=mtls_pop is only served on mtlsauth hosts ('{}' or '{{region}}.{}'); this request went to '{}'.",
                req.cloud.mtls_host(),
                req.cloud.mtls_host(),
                req.host
            ),
        ));
    }
    if req.mtls_host && req.peer.is_none() {
        return Err(AadError::client_certificate_required(&format!(
            "the mtlsauth host '{}' only serves mutual-TLS requests, and no client certificate was presented",
            req.host
        )));
    }
    if managed_identity.is_some() && grant != Grant::ClientCredentials {
        return Err(AadError::new(
            codes::EMU_MANAGED_IDENTITY_CREDENTIAL,
            "unauthorized_client",
            format!(
                "The managed identity '{client_id}' can only use grant_type=client_credentials."
            ),
        ));
    }
    if grant != Grant::ClientCredentials && form.get("fmi_path").is_some() {
        return Err(AadError::new(
            codes::EMU_FMI_PATH_NOT_ALLOWED,
            "unauthorized_client",
            "fmi_path is only accepted with grant_type=client_credentials.",
        ));
    }
    let endpoint = format!("https://{}{}", req.host, req.path);
    let ctx = AuthContext {
        state,
        app: &app,
        cloud: req.cloud,
        mtls_host: req.mtls_host,
        endpoint: &endpoint,
        peer: req.peer,
        pop_requested,
        grant,
        managed_identity: managed_identity.as_ref(),
    };
    let cnf = if pop_requested && !req.downgrade {
        req.peer.map(|p| p.thumbprint.clone())
    } else {
        None
    };
    let issued = Issued {
        token_type: if cnf.is_some() { "mtls_pop" } else { "Bearer" },
        cnf: cnf.as_deref(),
    };
    match grant {
        Grant::ClientCredentials => client_credentials(state, &ctx, &form, &tenant, &issued),
        Grant::UserFic => user_fic(state, &ctx, &form, &tenant, &issued, req.peer),
        Grant::RefreshToken => refresh_token(state, &ctx, &form, &tenant, &issued),
    }
}

/// How the issued access token is bound.
struct Issued<'a> {
    token_type: &'static str,
    cnf: Option<&'a str>,
}

fn invalid_resource(resource: &str, tenant: &Tenant) -> AadError {
    AadError::new(
        codes::RESOURCE_NOT_FOUND,
        "invalid_resource",
        format!(
            "The resource principal named {resource} was not found in the tenant named {}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
            tenant.id
        ),
    )
}

/// The resource of a client-credentials `scope`: exactly one `{resource}/.default`.
fn app_scope(scope: &str) -> Result<String, AadError> {
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    if let Some(oidc) = scopes
        .iter()
        .find(|s| OIDC_SCOPES.contains(&s.to_ascii_lowercase().as_str()))
    {
        return Err(AadError::scope(
            codes::INVALID_SCOPE,
            format!(
                "The provided value for the input parameter 'scope' is not valid. The scope '{oidc}' is not valid for the client credentials flow."
            ),
        ));
    }
    if scopes.len() != 1 {
        return Err(AadError::scope(
            codes::INVALID_SCOPE,
            format!(
                "The provided value for the input parameter 'scope' is not valid. The scope '{scope}' is not valid: the client credentials flow takes exactly one '{{resource}}/.default' scope."
            ),
        ));
    }
    let single = scopes[0];
    match single.strip_suffix("/.default") {
        Some(resource) if !resource.is_empty() => Ok(resource.to_owned()),
        _ => Err(AadError::scope(
            codes::SCOPE_NOT_DEFAULT,
            format!(
                "The provided value for scope {single} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        )),
    }
}

/// Client capabilities (`xms_cc`) from the `claims` parameter.
fn client_capabilities(form: &Form<'_>) -> Result<Option<Value>, AadError> {
    let Some(claims) = form.get("claims") else {
        return Ok(None);
    };
    match serde_json::from_str::<Value>(claims) {
        Ok(value) if value.is_object() => Ok(value.pointer("/access_token/xms_cc/values").cloned()),
        _ => Err(AadError::request(
            codes::EMU_INVALID_CLAIMS,
            "The 'claims' parameter is not a JSON object.",
        )),
    }
}

fn client_credentials(
    state: &State,
    ctx: &AuthContext<'_>,
    form: &Form<'_>,
    tenant: &Tenant,
    issued: &Issued<'_>,
) -> Result<Map<String, Value>, AadError> {
    let scope = form.required("scope")?;
    let resource = app_scope(scope)?;
    let fmi_path = form.get("fmi_path");
    let capabilities = client_capabilities(form)?;
    // What the directory holds (known resources, a blueprint's agents) is told only to a client
    // that authenticated.
    let auth = authenticate(ctx, form)?;
    if !state.directory.is_known_resource(&resource, ctx.cloud) {
        return Err(invalid_resource(&resource, tenant));
    }
    if let Some(path) = fmi_path {
        if !ctx.app.agents.iter().any(|a| a.eq_ignore_ascii_case(path)) {
            let why = if ctx.app.is_blueprint() {
                format!(
                    "'{path}' is not an agent of the blueprint '{}'",
                    ctx.app.client_id
                )
            } else {
                format!(
                    "the application '{}' is not an agent identity blueprint",
                    ctx.app.client_id
                )
            };
            return Err(AadError::new(
                codes::EMU_FMI_PATH_NOT_ALLOWED,
                "unauthorized_client",
                format!("The fmi_path is not allowed: {why}."),
            ));
        }
    }
    if let Some(identity) = ctx.managed_identity {
        let lifetime = state.settings().access_token_lifetime.as_secs();
        let token = managed_identity_access_token(
            state,
            &ManagedIdentityToken {
                identity,
                resource: &resource,
                cnf: issued.cnf,
                lifetime,
                client_capabilities: capabilities.as_ref(),
            },
        );
        return Ok(token_response(
            &state.settings(),
            issued.token_type,
            &token,
            lifetime,
        ));
    }
    let (token, lifetime) = app_access_token(
        state,
        &AppToken {
            cloud: ctx.cloud,
            app: ctx.app,
            resource: &resource,
            appidacr: auth.appidacr,
            cnf: issued.cnf,
            fmi_path,
            client_capabilities: capabilities.as_ref(),
        },
    );
    Ok(token_response(
        &state.settings(),
        issued.token_type,
        &token,
        lifetime,
    ))
}

/// The scopes of a user request: one resource with scope names, plus OIDC scopes.
#[derive(Debug)]
struct UserScopes {
    resource: Option<String>,
    names: Vec<String>,
    oidc: Vec<String>,
}

fn user_scopes(scope: &str, require_oidc: bool) -> Result<UserScopes, AadError> {
    let mut resources: Vec<String> = Vec::new();
    let mut names = Vec::new();
    let mut oidc = Vec::new();
    for item in scope.split_whitespace() {
        let lower = item.to_ascii_lowercase();
        if OIDC_SCOPES.contains(&lower.as_str()) {
            if !oidc.contains(&lower) {
                oidc.push(lower);
            }
            continue;
        }
        let (resource, name) = match item.rfind('/') {
            Some(i) if item.contains("://") || uuid::Uuid::parse_str(&item[..i]).is_ok() => {
                (item[..i].to_owned(), item[i + 1..].to_owned())
            }
            Some(_) => {
                return Err(AadError::scope(
                    codes::INVALID_SCOPE,
                    format!(
                        "The provided value for the input parameter 'scope' is not valid. The scope {item} is not valid. The scope format is invalid. Scope must be in a valid URI form <https://example/scope> or a valid Guid <guid/scope>."
                    ),
                ))
            }
            None => (GRAPH.to_owned(), item.to_owned()),
        };
        if name.is_empty() || resource.is_empty() {
            return Err(AadError::scope(
                codes::INVALID_SCOPE,
                format!("The provided value for the input parameter 'scope' is not valid. The scope {item} is not valid."),
            ));
        }
        if !resources.iter().any(|r| {
            r.trim_end_matches('/')
                .eq_ignore_ascii_case(resource.trim_end_matches('/'))
        }) {
            resources.push(resource);
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if resources.len() > 1 {
        return Err(AadError::scope(
            codes::MULTIPLE_RESOURCES,
            format!(
                "Provided value for the input parameter scope is not valid because it contains more than one resource. Scope {scope} is not valid."
            ),
        ));
    }
    if require_oidc {
        let missing: Vec<&str> = ["openid", "profile", "offline_access"]
            .into_iter()
            .filter(|s| !oidc.iter().any(|o| o == s))
            .collect();
        if !missing.is_empty() {
            return Err(AadError::scope(
                codes::INVALID_SCOPE,
                format!(
                    "The provided value for the input parameter 'scope' is not valid. The user_fic grant needs the scopes openid, profile and offline_access; missing: {}.",
                    missing.join(", ")
                ),
            ));
        }
        if resources.is_empty() {
            return Err(AadError::scope(
                codes::INVALID_SCOPE,
                "The provided value for the input parameter 'scope' is not valid. Request at least one resource scope besides openid, profile and offline_access.",
            ));
        }
    }
    Ok(UserScopes {
        resource: resources.into_iter().next(),
        names,
        oidc,
    })
}

/// `scp` for `names`: the app's delegated scopes for `.default`.
fn delegated(app: &App, names: &[String]) -> Vec<String> {
    if names.iter().any(|n| n == ".default") || names.is_empty() {
        app.delegated_scopes.clone()
    } else {
        names.to_vec()
    }
}

fn response_scope(resource: &str, scp: &[String], oidc: &[String]) -> String {
    let graph = resource.trim_end_matches('/').eq_ignore_ascii_case(GRAPH);
    let mut out: Vec<String> = scp
        .iter()
        .map(|s| {
            if graph {
                s.clone()
            } else {
                format!("{}/{s}", resource.trim_end_matches('/'))
            }
        })
        .collect();
    out.extend(oidc.iter().cloned());
    out.join(" ")
}

fn is_lower_hyphenated_guid(s: &str) -> bool {
    s.len() == 36
        && uuid::Uuid::parse_str(s).is_ok()
        && s.bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks `user_federated_identity_credential` (T2): an unexpired token of this emulator, issued
/// to the client for the cloud's token-exchange audience.
fn check_user_credential(
    state: &State,
    ctx: &AuthContext<'_>,
    credential: &str,
    peer: Option<&PeerCertificate>,
) -> Result<(), AadError> {
    let malformed = |m: String| {
        AadError::grant(
            codes::MALFORMED_ASSERTION,
            format!("Invalid JWT token in 'user_federated_identity_credential'. {m}"),
        )
    };
    let jws = jwt::parse(credential).map_err(malformed)?;
    match verify_issued_token(state, &jws) {
        Ok(Some(Signer::Emulator)) => {}
        Ok(Some(Signer::External) | None) => {
            return Err(AadError::grant(
                codes::ASSERTION_REPLAYED,
                "Assertion failed signature validation: the user federated identity credential was not issued by this identity provider.",
            ))
        }
        Err(_) => {
            return Err(AadError::grant(
                codes::ASSERTION_REPLAYED,
                "Assertion failed signature validation. [Reason - Key was found, but use of the key to verify the signature failed.]",
            ))
        }
    }
    check_times(
        state,
        &jws,
        |m| {
            AadError::grant(
                codes::ASSERTION_EXPIRED,
                m.replace("Client assertion", "User federated identity credential"),
            )
        },
        malformed,
    )?;
    let app = ctx.app;
    let not_for_client =
        |why: String| AadError::grant(codes::EMU_USER_CREDENTIAL_NOT_FOR_CLIENT, why);
    if jws.claim_str("iss") != Some(ctx.cloud.issuer(&app.tenant_id).as_str()) {
        return Err(not_for_client(format!(
            "The user federated identity credential was issued by '{}', not by '{}'.",
            jws.claim_str("iss").unwrap_or_default(),
            ctx.cloud.issuer(&app.tenant_id)
        )));
    }
    if !jws
        .claim_str("appid")
        .is_some_and(|a| a.eq_ignore_ascii_case(&app.client_id))
        || jws.claim_str("idtyp") != Some("app")
    {
        return Err(not_for_client(format!(
            "The user federated identity credential must be an app token issued to the client '{}'; it was issued to '{}'.",
            app.client_id,
            jws.claim_str("appid").unwrap_or_default()
        )));
    }
    let exchange = ctx.cloud.token_exchange_audience();
    let audiences = jws.audiences();
    if !audiences.iter().any(|a| a == exchange) {
        return Err(AadError::grant(
            codes::NOT_TOKEN_EXCHANGE_AUDIENCE,
            format!(
                "Forbidden token audience '{}'. Token audience must match the cloud-specific AAD Token Exchange App Uri ('{exchange}').",
                audiences.join(", ")
            ),
        ));
    }
    if let Some(cnf) = jws
        .payload
        .get("cnf")
        .and_then(|c| c.get("x5t#S256"))
        .and_then(Value::as_str)
    {
        if peer.map(|p| p.thumbprint.as_str()) != Some(cnf) {
            return Err(AadError::grant(
                codes::EMU_CERTIFICATE_BINDING_MISMATCH,
                "The user federated identity credential is bound to a certificate (cnf) that is not the TLS client certificate of this request.",
            ));
        }
    }
    Ok(())
}

fn user_not_found(identifier: &str, tenant: &Tenant) -> AadError {
    AadError::grant(
        codes::USER_NOT_FOUND,
        format!(
            "The user account {identifier} does not exist in the {} directory. To sign into this application, the account must be added to the directory.",
            tenant.id
        ),
    )
}

/// The user found in `tenant` (its home identity) and the user as `tenant` sees it.
fn in_tenant(home: User, tenant: &Tenant) -> Result<(User, User), AadError> {
    // The directory found the user in this tenant, so it has an object there.
    let seen = home
        .as_seen_in(&tenant.id)
        .ok_or_else(|| user_not_found(&home.upn, tenant))?;
    Ok((home, seen))
}

struct UserIssue<'a> {
    /// The user as registered: its home identity, named by `client_info`.
    home: &'a User,
    /// The user as the request tenant sees it (`tid`, `oid`): for a guest, the resource tenant and
    /// the object id there; for a member, the same as `home`.
    user: &'a User,
    resource: &'a str,
    scp: Vec<String>,
    oidc: &'a [String],
    appidacr: &'a str,
    capabilities: Option<Value>,
    client_info: bool,
}

fn issue_user_tokens(
    state: &State,
    ctx: &AuthContext<'_>,
    issued: &Issued<'_>,
    spec: &UserIssue<'_>,
) -> Map<String, Value> {
    let settings = state.settings();
    let (access, lifetime) = user_access_token(
        state,
        &UserToken {
            cloud: ctx.cloud,
            app: ctx.app,
            user: spec.user,
            resource: spec.resource,
            scp: &spec.scp,
            appidacr: spec.appidacr,
            cnf: issued.cnf,
            client_capabilities: spec.capabilities.as_ref(),
        },
    );
    let mut body = token_response(&settings, issued.token_type, &access, lifetime);
    body.insert(
        "scope".into(),
        json!(response_scope(spec.resource, &spec.scp, spec.oidc)),
    );
    let refresh = new_refresh_token();
    state.store_refresh_token(
        refresh.clone(),
        RefreshGrant {
            client_id: ctx.app.client_id.clone(),
            tenant_id: spec.user.tenant_id.clone(),
            user_oid: spec.user.object_id.clone(),
            resource: spec.resource.to_owned(),
            scp: spec.scp.clone(),
            cloud: ctx.cloud,
            expires_at: state.now_unix() + settings.refresh_token_lifetime.as_secs(),
            used: false,
        },
    );
    body.insert("refresh_token".into(), json!(refresh));
    body.insert(
        "id_token".into(),
        json!(id_token(state, ctx.cloud, ctx.app, spec.user)),
    );
    if spec.client_info {
        body.insert("client_info".into(), json!(client_info(spec.home)));
    }
    body
}

fn user_fic(
    state: &State,
    ctx: &AuthContext<'_>,
    form: &Form<'_>,
    tenant: &Tenant,
    issued: &Issued<'_>,
    peer: Option<&PeerCertificate>,
) -> Result<Map<String, Value>, AadError> {
    let scope = form.required("scope")?;
    let scopes = user_scopes(scope, true)?;
    let resource = scopes.resource.clone().unwrap_or_else(|| GRAPH.to_owned());
    let credential = form.required("user_federated_identity_credential")?;
    let user = match (form.get("username"), form.get("user_id")) {
        (Some(_), Some(_)) => {
            return Err(AadError::request(
                codes::EMU_INVALID_USER_IDENTIFIER,
                "Send exactly one of 'username' and 'user_id', not both.",
            ))
        }
        (None, None) => return Err(AadError::missing("username")),
        (Some(upn), None) => state
            .directory
            .user_by_upn(&tenant.id, upn)
            .ok_or_else(|| user_not_found(upn, tenant)),
        (None, Some(oid)) => {
            if !is_lower_hyphenated_guid(oid) {
                return Err(AadError::request(
                    codes::EMU_INVALID_USER_IDENTIFIER,
                    format!("'user_id' must be a user object id as a lower-case hyphenated GUID; got '{oid}'."),
                ));
            }
            state
                .directory
                .user_by_oid(&tenant.id, oid)
                .ok_or_else(|| user_not_found(oid, tenant))
        }
    }
    .and_then(|home| in_tenant(home, tenant));
    let capabilities = client_capabilities(form)?;
    let auth = authenticate(ctx, form)?;
    if !state.directory.is_known_resource(&resource, ctx.cloud) {
        return Err(invalid_resource(&resource, tenant));
    }
    check_user_credential(state, ctx, credential, peer)?;
    let (home, user) = user?;
    Ok(issue_user_tokens(
        state,
        ctx,
        issued,
        &UserIssue {
            home: &home,
            user: &user,
            resource: &resource,
            scp: delegated(ctx.app, &scopes.names),
            oidc: &scopes.oidc,
            appidacr: auth.appidacr,
            capabilities,
            client_info: form.get("client_info") == Some("1"),
        },
    ))
}

fn refresh_token(
    state: &State,
    ctx: &AuthContext<'_>,
    form: &Form<'_>,
    tenant: &Tenant,
    issued: &Issued<'_>,
) -> Result<Map<String, Value>, AadError> {
    let token = form.required("refresh_token")?;
    let scope = form.required("scope")?;
    let scopes = user_scopes(scope, false)?;
    let capabilities = client_capabilities(form)?;
    let auth = authenticate(ctx, form)?;
    let invalid = |why: &str| {
        AadError::grant(
            codes::INVALID_GRANT,
            format!("Provided grant is invalid or malformed. {why}"),
        )
    };
    let grant = state
        .refresh_token(token)
        .ok_or_else(|| invalid("The refresh token is not one this identity provider issued."))?;
    if !grant.client_id.eq_ignore_ascii_case(&ctx.app.client_id)
        || !grant.tenant_id.eq_ignore_ascii_case(&tenant.id)
        || grant.cloud != ctx.cloud
    {
        return Err(invalid(
            "The refresh token was issued to a different client, tenant or cloud.",
        ));
    }
    if grant.used {
        return Err(invalid(
            "The refresh token was already redeemed: the emulator rotates refresh tokens and accepts each one once.",
        ));
    }
    if state.now_unix() > grant.expires_at {
        return Err(AadError::grant(
            codes::REFRESH_TOKEN_EXPIRED,
            "The refresh token has expired due to inactivity. The token was issued and was inactive for longer than its lifetime.",
        ));
    }
    if !state.consume_refresh_token(token) {
        return Err(invalid(
            "The refresh token was already redeemed: the emulator rotates refresh tokens and accepts each one once.",
        ));
    }
    let (home, user) = state
        .directory
        .user_by_oid(&grant.tenant_id, &grant.user_oid)
        .ok_or_else(|| user_not_found(&grant.user_oid, tenant))
        .and_then(|home| in_tenant(home, tenant))?;
    let resource = scopes
        .resource
        .clone()
        .unwrap_or_else(|| grant.resource.clone());
    if !state.directory.is_known_resource(&resource, ctx.cloud) {
        return Err(invalid_resource(&resource, tenant));
    }
    let scp = if scopes.resource.is_some() {
        delegated(ctx.app, &scopes.names)
    } else {
        grant.scp.clone()
    };
    Ok(issue_user_tokens(
        state,
        ctx,
        issued,
        &UserIssue {
            home: &home,
            user: &user,
            resource: &resource,
            scp,
            oidc: &scopes.oidc,
            appidacr: auth.appidacr,
            capabilities,
            client_info: form.get("client_info") == Some("1"),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_credentials_scopes() {
        assert_eq!(
            app_scope("https://graph.microsoft.com/.default").unwrap(),
            "https://graph.microsoft.com"
        );
        assert_eq!(
            app_scope("https://graph.microsoft.com/User.Read")
                .unwrap_err()
                .code,
            codes::SCOPE_NOT_DEFAULT
        );
        assert_eq!(
            app_scope("a/.default b/.default").unwrap_err().code,
            codes::INVALID_SCOPE
        );
        assert_eq!(
            app_scope("a/.default openid").unwrap_err().code,
            codes::INVALID_SCOPE
        );
    }

    #[test]
    fn user_scope_rules() {
        let s = user_scopes("User.Read openid profile offline_access", true).unwrap();
        assert_eq!(s.resource.as_deref(), Some(GRAPH));
        assert_eq!(s.names, vec!["User.Read"]);
        assert_eq!(
            user_scopes("User.Read openid", true).unwrap_err().code,
            codes::INVALID_SCOPE
        );
        assert_eq!(
            user_scopes(
                "User.Read https://vault.azure.net/.default openid profile offline_access",
                true
            )
            .unwrap_err()
            .code,
            codes::MULTIPLE_RESOURCES
        );
        assert!(user_scopes("openid profile offline_access", false)
            .unwrap()
            .resource
            .is_none());
    }

    #[test]
    fn duplicate_parameters_are_refused() {
        let pairs = vec![
            ("a".to_owned(), "1".to_owned()),
            ("a".to_owned(), "2".to_owned()),
        ];
        assert_eq!(
            Form::new(&pairs).err().unwrap().code,
            codes::DUPLICATE_PARAMETER
        );
    }

    #[test]
    fn guid_form() {
        assert!(is_lower_hyphenated_guid(
            "00000000-0000-0000-0000-000000000abc"
        ));
        assert!(!is_lower_hyphenated_guid(
            "00000000-0000-0000-0000-000000000ABC"
        ));
        assert!(!is_lower_hyphenated_guid("alice@contoso.com"));
    }
}
