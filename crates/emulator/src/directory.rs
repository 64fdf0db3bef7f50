//! The directory: tenants, applications and their credentials, FMI blueprints and agents,
//! users, managed identities, trusted external issuers and resources.
//!
//! Configure it on the builder before start, or change it at any time through
//! [`EmulatorHandle::directory`](crate::EmulatorHandle::directory); requests see changes at once.
//! Adding an app, user or managed identity registers its tenant when it is not known yet.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::Value;

use crate::hosts::Cloud;
use crate::jwt::public_key_from_jwk;
use crate::util::{derived_uuid, host_matches};
use crate::x509::{thumbprint_s256, PublicKey};
use crate::Error;

/// A tenant: its id (usually a GUID) and verified domain names that may replace it in URLs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tenant {
    /// The tenant id, as it appears in `tid` and issuers.
    pub id: String,
    /// Domain names (`contoso.onmicrosoft.com`) accepted in place of the id in URLs.
    pub domains: Vec<String>,
}

impl Tenant {
    /// A tenant with `id` and no domains.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            domains: Vec::new(),
        }
    }

    /// Adds a domain name.
    #[must_use]
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domains.push(domain.into());
        self
    }
}

/// A certificate registered on an application.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertificateCredential {
    /// The certificate itself (matched by its `x5t#S256` / `x5t`, or by DER when sent in `x5c`).
    Thumbprint {
        /// The DER certificate.
        der: Vec<u8>,
    },
    /// Subject name + issuer (SN+I): any certificate with this subject that chains to `issuer_der`.
    /// Assertions must then carry the chain in the `x5c` header; over TLS the presented chain is used.
    SubjectIssuer {
        /// The subject: a common name (`client.contoso.com`) or a whole distinguished name.
        subject: String,
        /// The trusted issuing CA certificate (DER).
        issuer_der: Vec<u8>,
    },
}

/// A federated identity credential on an application: tokens from `issuer` about `subject`
/// for one of `audiences` may be used as the application's client assertion.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FederatedCredential {
    /// Exact issuer (`iss`) of accepted tokens.
    pub issuer: String,
    /// Exact subject (`sub`) of accepted tokens.
    pub subject: String,
    /// Accepted audiences; Entra allows one, normally the cloud's token-exchange audience.
    pub audiences: Vec<String>,
}

impl FederatedCredential {
    /// A credential with one audience.
    pub fn new(
        issuer: impl Into<String>,
        subject: impl Into<String>,
        audience: impl Into<String>,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            subject: subject.into(),
            audiences: vec![audience.into()],
        }
    }
}

/// An application (and its service principal in its home tenant).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct App {
    /// The application (client) id.
    pub client_id: String,
    /// The home tenant id.
    pub tenant_id: String,
    /// The service principal object id: `oid` and `sub` of app tokens. Defaults to a UUID derived
    /// from the client id (stable across runs).
    pub object_id: String,
    /// A display name (used in error messages).
    pub display_name: String,
    /// Client secrets.
    pub secrets: Vec<String>,
    /// Registered certificates.
    pub certificates: Vec<CertificateCredential>,
    /// Federated identity credentials.
    pub federated_credentials: Vec<FederatedCredential>,
    /// Application roles put in app-only tokens (`roles`); empty means no `roles` claim.
    pub roles: Vec<String>,
    /// Delegated scopes put in user tokens requested with `/.default`.
    pub delegated_scopes: Vec<String>,
    /// FMI agents of this application (non-empty makes it a blueprint). This list is the one
    /// source of the blueprint → agent relation.
    pub agents: Vec<String>,
    /// The blueprint this application is an agent of. The directory derives it whenever it
    /// hands an app out (from [`Directory::app`], [`Directory::apps`]): the client id of the
    /// registered app whose [`agents`](Self::agents) list this app (the smallest such client id
    /// if several do), `None` when none does. A value set by hand is not used.
    pub blueprint: Option<String>,
    /// Application ID URIs (resources) this application exposes, besides `api://{client_id}`.
    pub identifier_uris: Vec<String>,
}

impl App {
    /// An application with no credentials.
    pub fn new(client_id: impl Into<String>, tenant_id: impl Into<String>) -> Self {
        let client_id = client_id.into();
        Self {
            object_id: derived_uuid("service-principal", &client_id.to_ascii_lowercase()),
            display_name: format!("app {client_id}"),
            client_id,
            tenant_id: tenant_id.into(),
            secrets: Vec::new(),
            certificates: Vec::new(),
            federated_credentials: Vec::new(),
            roles: Vec::new(),
            delegated_scopes: vec!["User.Read".to_owned()],
            agents: Vec::new(),
            blueprint: None,
            identifier_uris: Vec::new(),
        }
    }

    /// Adds a client secret.
    #[must_use]
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secrets.push(secret.into());
        self
    }

    /// Registers a certificate (DER) by thumbprint.
    #[must_use]
    pub fn certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.certificates
            .push(CertificateCredential::Thumbprint { der: der.into() });
        self
    }

    /// Registers subject name + issuer (SN+I) trust.
    #[must_use]
    pub fn subject_issuer(
        mut self,
        subject: impl Into<String>,
        issuer_der: impl Into<Vec<u8>>,
    ) -> Self {
        self.certificates
            .push(CertificateCredential::SubjectIssuer {
                subject: subject.into(),
                issuer_der: issuer_der.into(),
            });
        self
    }

    /// Adds a federated identity credential.
    #[must_use]
    pub fn federated_credential(mut self, credential: FederatedCredential) -> Self {
        self.federated_credentials.push(credential);
        self
    }

    /// Sets the application roles of app-only tokens.
    #[must_use]
    pub fn roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the delegated scopes of user tokens requested with `/.default`.
    #[must_use]
    pub fn delegated_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.delegated_scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Makes this application an FMI blueprint with these agents. Agents not in the directory are
    /// created (as apps without credentials in the blueprint's tenant) when the app is added or
    /// updated; an agent registered before or after its blueprint is linked to it either way.
    #[must_use]
    pub fn agents<I, S>(mut self, agents: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.agents = agents.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the service principal object id.
    #[must_use]
    pub fn object_id(mut self, object_id: impl Into<String>) -> Self {
        self.object_id = object_id.into();
        self
    }

    /// Sets the display name.
    #[must_use]
    pub fn display_name(mut self, name: impl Into<String>) -> Self {
        self.display_name = name.into();
        self
    }

    /// Adds an application ID URI this app exposes as a resource.
    #[must_use]
    pub fn identifier_uri(mut self, uri: impl Into<String>) -> Self {
        self.identifier_uris.push(uri.into());
        self
    }

    /// True when this app is an FMI blueprint.
    pub fn is_blueprint(&self) -> bool {
        !self.agents.is_empty()
    }

    /// The `x5t#S256` of every certificate registered by thumbprint.
    pub fn certificate_thumbprints(&self) -> Vec<String> {
        self.certificates
            .iter()
            .filter_map(|c| match c {
                CertificateCredential::Thumbprint { der } => Some(thumbprint_s256(der)),
                CertificateCredential::SubjectIssuer { .. } => None,
            })
            .collect()
    }
}

/// A user.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct User {
    /// The user principal name (`alice@contoso.com`), matched case-insensitively.
    pub upn: String,
    /// The object id (OID), lower-case hyphenated.
    pub object_id: String,
    /// The home tenant id.
    pub tenant_id: String,
    /// The display name (`name` claim).
    pub display_name: String,
}

impl User {
    /// A user.
    pub fn new(
        upn: impl Into<String>,
        object_id: impl Into<String>,
        tenant_id: impl Into<String>,
    ) -> Self {
        let upn = upn.into();
        Self {
            display_name: upn.split('@').next().unwrap_or_default().to_owned(),
            upn,
            object_id: object_id.into().to_ascii_lowercase(),
            tenant_id: tenant_id.into(),
        }
    }

    /// Sets the display name.
    #[must_use]
    pub fn display_name(mut self, name: impl Into<String>) -> Self {
        self.display_name = name.into();
        self
    }
}

/// Whether a managed identity is system- or user-assigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ManagedIdentityKind {
    /// The identity of the host itself.
    SystemAssigned,
    /// An identity resource assigned to the host.
    UserAssigned,
}

/// A managed identity available on the emulated host: the managed identity endpoints (IMDS,
/// App Service, Azure Arc, Cloud Shell, Service Fabric, Machine Learning) issue tokens for it,
/// with `sub` = `oid` = its object id (so it can be the subject of a federated credential),
/// `appid` = its client id. The first system-assigned identity is the host's; user-assigned
/// ones are picked by client id, object id or resource id.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ManagedIdentity {
    /// System- or user-assigned.
    pub kind: ManagedIdentityKind,
    /// The client (application) id.
    pub client_id: String,
    /// The object (principal) id.
    pub object_id: String,
    /// The Azure resource id (`/subscriptions/…/userAssignedIdentities/…`), user-assigned only.
    pub resource_id: Option<String>,
    /// The tenant id.
    pub tenant_id: String,
    /// Certificates (DER) IMDSv2 issued for this identity: the token endpoint accepts them as
    /// its credential over mutual TLS. Clear them to make the token endpoint refuse a
    /// certificate a client still holds (`invalid_client`).
    pub certificates: Vec<Vec<u8>>,
}

impl ManagedIdentity {
    /// A system-assigned identity.
    pub fn system_assigned(
        client_id: impl Into<String>,
        object_id: impl Into<String>,
        tenant_id: impl Into<String>,
    ) -> Self {
        Self {
            kind: ManagedIdentityKind::SystemAssigned,
            client_id: client_id.into(),
            object_id: object_id.into(),
            resource_id: None,
            tenant_id: tenant_id.into(),
            certificates: Vec::new(),
        }
    }

    /// A user-assigned identity.
    pub fn user_assigned(
        client_id: impl Into<String>,
        object_id: impl Into<String>,
        resource_id: impl Into<String>,
        tenant_id: impl Into<String>,
    ) -> Self {
        Self {
            kind: ManagedIdentityKind::UserAssigned,
            client_id: client_id.into(),
            object_id: object_id.into(),
            resource_id: Some(resource_id.into()),
            tenant_id: tenant_id.into(),
            certificates: Vec::new(),
        }
    }

    /// The service principal the token endpoint authenticates: the client id, object id and
    /// tenant, with the IMDSv2-issued certificates as its only credentials.
    pub(crate) fn service_principal(&self) -> App {
        let mut app = App::new(self.client_id.clone(), self.tenant_id.clone())
            .object_id(self.object_id.clone())
            .display_name(format!("managed identity {}", self.client_id))
            .delegated_scopes(Vec::<String>::new());
        for der in &self.certificates {
            app = app.certificate(der.clone());
        }
        app
    }
}

/// An external token issuer trusted for federated credentials, with its signing keys (JWKS).
/// The emulator's own issuers are always trusted.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct TrustedIssuer {
    /// The issuer (`iss`) exactly as in its tokens.
    pub issuer: String,
    /// Its public JWKs (`RSA` or `EC` P-256).
    pub keys: Vec<Value>,
}

impl TrustedIssuer {
    /// Trusts `issuer` with the keys of a JWKS document (`{"keys":[…]}`) or a single JWK.
    pub fn from_jwks(issuer: impl Into<String>, jwks: &Value) -> Result<Self, Error> {
        let keys: Vec<Value> = match jwks.get("keys").and_then(Value::as_array) {
            Some(keys) => keys.clone(),
            None => vec![jwks.clone()],
        };
        let usable: Vec<Value> = keys
            .into_iter()
            .filter(|k| public_key_from_jwk(k).is_some())
            .collect();
        if usable.is_empty() {
            return Err(Error::Config(
                "the JWKS has no usable RSA or EC P-256 key".to_owned(),
            ));
        }
        Ok(Self {
            issuer: issuer.into(),
            keys: usable,
        })
    }

    pub(crate) fn public_keys(&self) -> Vec<(Option<String>, PublicKey)> {
        self.keys.iter().filter_map(public_key_from_jwk).collect()
    }
}

/// A protected resource: its application ID URI (the `aud` of its tokens) and the host names it
/// is served on by the emulator's protected-resource endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Resource {
    /// The resource URI (`https://graph.microsoft.com`).
    pub uri: String,
    /// Host patterns (`graph.microsoft.com`, `*.vault.azure.net`) served as this resource.
    pub hosts: Vec<String>,
}

impl Resource {
    /// A resource with no hosts (tokens can be issued for it, nothing serves it).
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            hosts: Vec::new(),
        }
    }

    /// Adds a host pattern (`*.` prefix = any name ending in the rest).
    #[must_use]
    pub fn host(mut self, pattern: impl Into<String>) -> Self {
        self.hosts.push(pattern.into());
        self
    }

    /// The resources every emulator knows: Microsoft Graph, Key Vault and Azure Resource Manager.
    pub fn defaults() -> Vec<Resource> {
        vec![
            Resource::new("https://graph.microsoft.com").host("graph.microsoft.com"),
            Resource::new("https://vault.azure.net").host("*.vault.azure.net"),
            Resource::new("https://management.azure.com").host("management.azure.com"),
        ]
    }
}

#[derive(Debug, Default)]
pub(crate) struct DirectoryData {
    tenants: Vec<Tenant>,
    apps: HashMap<String, App>,
    users: Vec<User>,
    managed_identities: Vec<ManagedIdentity>,
    trusted_issuers: Vec<TrustedIssuer>,
    resources: Vec<Resource>,
}

/// The emulator's directory. Cloning gives another handle to the same data.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    inner: Arc<RwLock<DirectoryData>>,
}

fn trim_slash(uri: &str) -> &str {
    uri.trim_end_matches('/')
}

impl Directory {
    /// An empty directory (no tenants, no resources).
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, DirectoryData> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, DirectoryData> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn ensure_tenant(data: &mut DirectoryData, tenant_id: &str) {
        if !data
            .tenants
            .iter()
            .any(|t| t.id.eq_ignore_ascii_case(tenant_id))
        {
            data.tenants.push(Tenant::new(tenant_id));
        }
    }

    /// Adds (or replaces, by id) a tenant.
    pub fn add_tenant(&self, tenant: Tenant) {
        let mut data = self.write();
        data.tenants
            .retain(|t| !t.id.eq_ignore_ascii_case(&tenant.id));
        data.tenants.push(tenant);
    }

    /// The tenant named by `id_or_domain` (its id or one of its domains, case-insensitive).
    pub fn tenant(&self, id_or_domain: &str) -> Option<Tenant> {
        self.read()
            .tenants
            .iter()
            .find(|t| {
                t.id.eq_ignore_ascii_case(id_or_domain)
                    || t.domains
                        .iter()
                        .any(|d| d.eq_ignore_ascii_case(id_or_domain))
            })
            .cloned()
    }

    /// Every tenant.
    pub fn tenants(&self) -> Vec<Tenant> {
        self.read().tenants.clone()
    }

    /// Creates the agents of the app stored under `key` that are not in the directory yet (apps
    /// without credentials in the blueprint's tenant).
    fn create_missing_agents(data: &mut DirectoryData, key: &str) {
        let Some(blueprint) = data.apps.get(key) else {
            return;
        };
        let tenant_id = blueprint.tenant_id.clone();
        let agents = blueprint.agents.clone();
        for agent in agents {
            data.apps
                .entry(agent.to_ascii_lowercase())
                .or_insert_with(|| App::new(agent, tenant_id.clone()));
        }
    }

    /// `app` as handed out: with `blueprint` derived from the agent lists of `data`.
    fn linked(data: &DirectoryData, app: &App) -> App {
        let mut app = app.clone();
        app.blueprint = data
            .apps
            .values()
            .filter(|b| {
                b.agents
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(&app.client_id))
            })
            .map(|b| b.client_id.clone())
            .min_by_key(|id| id.to_ascii_lowercase());
        app
    }

    /// Adds (or replaces, by client id) an application. A blueprint's missing agents are
    /// created; the blueprint → agent relation does not depend on which is added first.
    pub fn add_app(&self, app: App) {
        let mut data = self.write();
        Self::ensure_tenant(&mut data, &app.tenant_id);
        let key = app.client_id.to_ascii_lowercase();
        data.apps.insert(key.clone(), app);
        Self::create_missing_agents(&mut data, &key);
    }

    /// The application with `client_id` (case-insensitive).
    pub fn app(&self, client_id: &str) -> Option<App> {
        let data = self.read();
        data.apps
            .get(&client_id.to_ascii_lowercase())
            .map(|app| Self::linked(&data, app))
    }

    /// Every application.
    pub fn apps(&self) -> Vec<App> {
        let data = self.read();
        data.apps
            .values()
            .map(|app| Self::linked(&data, app))
            .collect()
    }

    /// Changes an application in place; false when there is none with `client_id`. Agents added
    /// to a blueprint's list are created when missing and linked to it. Changing the client id
    /// is not supported (the app stays filed under its old one).
    pub fn update_app(&self, client_id: &str, change: impl FnOnce(&mut App)) -> bool {
        let mut data = self.write();
        let key = client_id.to_ascii_lowercase();
        let Some(app) = data.apps.get_mut(&key) else {
            return false;
        };
        change(app);
        let tenant_id = app.tenant_id.clone();
        Self::ensure_tenant(&mut data, &tenant_id);
        Self::create_missing_agents(&mut data, &key);
        true
    }

    /// Removes an application; true when it existed.
    pub fn remove_app(&self, client_id: &str) -> bool {
        self.write()
            .apps
            .remove(&client_id.to_ascii_lowercase())
            .is_some()
    }

    /// Adds (or replaces, by object id) a user.
    pub fn add_user(&self, user: User) {
        let mut data = self.write();
        Self::ensure_tenant(&mut data, &user.tenant_id);
        data.users
            .retain(|u| !u.object_id.eq_ignore_ascii_case(&user.object_id));
        data.users.push(user);
    }

    /// The user of `tenant_id` with this UPN (case-insensitive).
    pub fn user_by_upn(&self, tenant_id: &str, upn: &str) -> Option<User> {
        self.read()
            .users
            .iter()
            .find(|u| {
                u.tenant_id.eq_ignore_ascii_case(tenant_id) && u.upn.eq_ignore_ascii_case(upn)
            })
            .cloned()
    }

    /// The user of `tenant_id` with this object id.
    pub fn user_by_oid(&self, tenant_id: &str, object_id: &str) -> Option<User> {
        self.read()
            .users
            .iter()
            .find(|u| {
                u.tenant_id.eq_ignore_ascii_case(tenant_id)
                    && u.object_id.eq_ignore_ascii_case(object_id)
            })
            .cloned()
    }

    /// Every user.
    pub fn users(&self) -> Vec<User> {
        self.read().users.clone()
    }

    /// Adds (or replaces, by client id) a managed identity.
    pub fn add_managed_identity(&self, identity: ManagedIdentity) {
        let mut data = self.write();
        Self::ensure_tenant(&mut data, &identity.tenant_id);
        data.managed_identities
            .retain(|m| !m.client_id.eq_ignore_ascii_case(&identity.client_id));
        data.managed_identities.push(identity);
    }

    /// Every managed identity.
    pub fn managed_identities(&self) -> Vec<ManagedIdentity> {
        self.read().managed_identities.clone()
    }

    /// The managed identity with `client_id` (case-insensitive).
    pub fn managed_identity(&self, client_id: &str) -> Option<ManagedIdentity> {
        self.read()
            .managed_identities
            .iter()
            .find(|m| m.client_id.eq_ignore_ascii_case(client_id))
            .cloned()
    }

    /// Changes a managed identity in place; false when there is none with `client_id`.
    pub fn update_managed_identity(
        &self,
        client_id: &str,
        change: impl FnOnce(&mut ManagedIdentity),
    ) -> bool {
        let mut data = self.write();
        match data
            .managed_identities
            .iter_mut()
            .find(|m| m.client_id.eq_ignore_ascii_case(client_id))
        {
            Some(identity) => {
                change(identity);
                true
            }
            None => false,
        }
    }

    /// Trusts an external issuer for federated credentials (replaces one with the same issuer).
    pub fn add_trusted_issuer(&self, issuer: TrustedIssuer) {
        let mut data = self.write();
        data.trusted_issuers.retain(|t| t.issuer != issuer.issuer);
        data.trusted_issuers.push(issuer);
    }

    /// The trusted issuer with exactly this `iss`.
    pub fn trusted_issuer(&self, issuer: &str) -> Option<TrustedIssuer> {
        self.read()
            .trusted_issuers
            .iter()
            .find(|t| t.issuer == issuer)
            .cloned()
    }

    /// Adds (or replaces, by URI) a resource. Hosts added after start are served too, with a
    /// certificate minted for them on first use.
    pub fn add_resource(&self, resource: Resource) {
        let mut data = self.write();
        data.resources
            .retain(|r| trim_slash(&r.uri) != trim_slash(&resource.uri));
        data.resources.push(resource);
    }

    /// Every resource.
    pub fn resources(&self) -> Vec<Resource> {
        self.read().resources.clone()
    }

    /// The resource served on `host`.
    pub fn resource_for_host(&self, host: &str) -> Option<Resource> {
        self.read()
            .resources
            .iter()
            .find(|r| r.hosts.iter().any(|p| host_matches(p, host)))
            .cloned()
    }

    /// True when tokens can be issued for `resource` by `cloud`: a registered resource, the
    /// token-exchange audience published for that cloud (another cloud's is unknown there, and
    /// Singapore has none built in), or an application (`api://{client_id}`, the client id, an
    /// identifier URI).
    pub(crate) fn is_known_resource(&self, resource: &str, cloud: Cloud) -> bool {
        let wanted = trim_slash(resource);
        if cloud
            .published_token_exchange_audience()
            .is_some_and(|a| a.eq_ignore_ascii_case(wanted))
        {
            return true;
        }
        let data = self.read();
        data.resources
            .iter()
            .any(|r| trim_slash(&r.uri).eq_ignore_ascii_case(wanted))
            || data.apps.values().any(|app| {
                app.client_id.eq_ignore_ascii_case(wanted)
                    || format!("api://{}", app.client_id).eq_ignore_ascii_case(wanted)
                    || app
                        .identifier_uris
                        .iter()
                        .any(|u| trim_slash(u).eq_ignore_ascii_case(wanted))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blueprint_creates_agents_and_tenant() {
        let dir = Directory::new();
        dir.add_app(App::new("bp", "t1").agents(["agent-1"]));
        let agent = dir.app("AGENT-1").unwrap();
        assert_eq!(agent.blueprint.as_deref(), Some("bp"));
        assert_eq!(agent.tenant_id, "t1");
        assert!(dir.tenant("t1").is_some());
        assert!(dir.app("bp").unwrap().is_blueprint());
        assert_eq!(dir.app("bp").unwrap().blueprint, None);
    }

    #[test]
    fn agent_added_after_its_blueprint_stays_linked() {
        let dir = Directory::new();
        dir.add_app(App::new("bp", "t1").agents(["agent-1"]));
        // The agent's own registration (with a secret) replaces the placeholder.
        dir.add_app(App::new("Agent-1", "t1").secret("s"));
        let agent = dir.app("agent-1").unwrap();
        assert_eq!(agent.blueprint.as_deref(), Some("bp"));
        assert_eq!(agent.secrets, vec!["s".to_owned()]);
        let listed = dir.apps();
        let listed = listed.iter().find(|a| a.client_id == "Agent-1").unwrap();
        assert_eq!(listed.blueprint.as_deref(), Some("bp"));
    }

    #[test]
    fn agent_added_before_its_blueprint_is_linked() {
        let dir = Directory::new();
        dir.add_app(App::new("agent-1", "t1").secret("s"));
        assert_eq!(dir.app("agent-1").unwrap().blueprint, None);
        dir.add_app(App::new("bp", "t1").agents(["AGENT-1"]));
        let agent = dir.app("agent-1").unwrap();
        assert_eq!(agent.blueprint.as_deref(), Some("bp"));
        // Not replaced by a placeholder.
        assert_eq!(agent.secrets, vec!["s".to_owned()]);
        // A hand-set link is not what counts; removing the blueprint unlinks the agent.
        assert!(dir.update_app("agent-1", |a| a.blueprint = Some("someone".into())));
        assert_eq!(dir.app("agent-1").unwrap().blueprint.as_deref(), Some("bp"));
        assert!(dir.remove_app("bp"));
        assert_eq!(dir.app("agent-1").unwrap().blueprint, None);
    }

    #[test]
    fn update_app_creates_and_links_new_agents() {
        let dir = Directory::new();
        dir.add_app(App::new("bp", "t1").agents(["agent-1"]));
        dir.add_app(App::new("existing", "t1").secret("kept"));
        assert!(dir.update_app("BP", |a| {
            a.agents.push("agent-2".into());
            a.agents.push("existing".into());
        }));
        let created = dir.app("agent-2").unwrap();
        assert_eq!(created.blueprint.as_deref(), Some("bp"));
        assert_eq!(created.tenant_id, "t1");
        let existing = dir.app("existing").unwrap();
        assert_eq!(existing.blueprint.as_deref(), Some("bp"));
        assert_eq!(existing.secrets, vec!["kept".to_owned()]);
        // Dropping an agent from the list unlinks it.
        assert!(dir.update_app("bp", |a| a.agents.retain(|x| x != "agent-1")));
        assert_eq!(dir.app("agent-1").unwrap().blueprint, None);
        assert!(!dir.update_app("nobody", |a| a.agents.push("x".into())));
        assert!(dir.app("x").is_none());
    }

    #[test]
    fn known_resources() {
        let dir = Directory::new();
        for r in Resource::defaults() {
            dir.add_resource(r);
        }
        dir.add_app(App::new("11111111-1111-1111-1111-111111111111", "t"));
        let public = Cloud::Public;
        assert!(dir.is_known_resource("https://graph.microsoft.com/", public));
        assert!(dir.is_known_resource("api://AzureADTokenExchange", public));
        assert!(dir.is_known_resource("api://11111111-1111-1111-1111-111111111111", public));
        assert!(!dir.is_known_resource("https://unknown.example", public));
        // Each cloud knows its own exchange audience only.
        for (cloud, own) in [
            (Cloud::Public, Some("api://AzureADTokenExchange")),
            (Cloud::UsGov, Some("api://AzureADTokenExchangeUSGov")),
            (Cloud::China, Some("api://AzureADTokenExchangeChina")),
            (Cloud::France, Some("api://AzureADTokenExchangeFrance")),
            (Cloud::Germany, Some("api://AzureADTokenExchangeGermany")),
            (Cloud::Singapore, None),
        ] {
            for other in Cloud::ALL {
                let audience = other.token_exchange_audience();
                assert_eq!(
                    dir.is_known_resource(audience, cloud),
                    Some(audience) == own,
                    "{audience} in {cloud:?}"
                );
            }
        }
        // A registered resource is known everywhere, even with an exchange-like URI.
        dir.add_resource(Resource::new("api://AzureADTokenExchangeSingapore"));
        assert!(dir.is_known_resource("api://AzureADTokenExchangeSingapore", Cloud::Singapore));
        assert_eq!(
            dir.resource_for_host("myvault.vault.azure.net")
                .unwrap()
                .uri,
            "https://vault.azure.net"
        );
    }

    #[test]
    fn trusted_issuer_needs_a_usable_key() {
        assert!(TrustedIssuer::from_jwks("https://x", &serde_json::json!({"keys": []})).is_err());
        let jwk = serde_json::json!({"kty":"RSA","n":"AQAB","e":"AQAB"});
        assert!(TrustedIssuer::from_jwks("https://x", &jwk).is_ok());
    }
}
