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

/// A user's object in a tenant where the user is a guest (B2B): Entra gives a guest another
/// object id in each resource tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
struct GuestMembership {
    /// The resource tenant id.
    tenant_id: String,
    /// The user's object id in that tenant, lower-case hyphenated.
    object_id: String,
}

/// A user: a member of its home tenant, and possibly a guest in other tenants
/// ([`User::guest_in`]).
///
/// A guest is found in its resource tenant by its UPN or by its object id *there* (not its home
/// object id). Tokens issued for the resource tenant carry `tid` = that tenant and `oid` = the
/// object id there, while `client_info` names the home account (`uid` = the home object id,
/// `utid` = the home tenant).
///
/// ```
/// use fic_emulator::{Directory, User};
///
/// let directory = Directory::new();
/// directory.add_user(
///     User::new("gina@fabrikam.com", "00000000-0000-0000-0000-00000000071a", "fabrikam-tenant")
///         .guest_in("contoso-tenant", "00000000-0000-0000-0000-0000000007e5"),
/// );
/// let guest = directory
///     .user_by_oid("contoso-tenant", "00000000-0000-0000-0000-0000000007e5")
///     .unwrap();
/// // The home identity, and the object id in the resource tenant.
/// assert_eq!(guest.object_id, "00000000-0000-0000-0000-00000000071a");
/// assert_eq!(guest.tenant_id, "fabrikam-tenant");
/// assert_eq!(
///     guest.object_id_in("contoso-tenant"),
///     Some("00000000-0000-0000-0000-0000000007e5")
/// );
/// assert!(guest.is_guest_in("contoso-tenant"));
/// assert_eq!(
///     guest.guest_memberships().collect::<Vec<_>>(),
///     [("contoso-tenant", "00000000-0000-0000-0000-0000000007e5")]
/// );
/// // The home object id names nobody in the resource tenant.
/// assert!(directory
///     .user_by_oid("contoso-tenant", "00000000-0000-0000-0000-00000000071a")
///     .is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct User {
    /// The user principal name (`alice@contoso.com`), matched case-insensitively (in the home
    /// tenant and in every tenant where the user is a guest).
    pub upn: String,
    /// The object id (OID) in the home tenant, lower-case hyphenated.
    pub object_id: String,
    /// The home tenant id.
    pub tenant_id: String,
    /// The display name (`name` claim).
    pub display_name: String,
    /// The tenants where this user is a guest, each with the user's object id there
    /// ([`User::guest_in`], [`User::guest_memberships`]).
    guest_memberships: Vec<GuestMembership>,
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
            guest_memberships: Vec::new(),
        }
    }

    /// Sets the display name.
    #[must_use]
    pub fn display_name(mut self, name: impl Into<String>) -> Self {
        self.display_name = name.into();
        self
    }

    /// Makes this user a guest in `tenant_id`, where its object id is `object_id_there`
    /// (replacing an earlier membership in that tenant). Adding the user to the directory
    /// registers the tenant when it is not known yet. Membership of the home tenant is implied:
    /// a guest entry for it is ignored.
    #[must_use]
    pub fn guest_in(
        mut self,
        tenant_id: impl Into<String>,
        object_id_there: impl Into<String>,
    ) -> Self {
        let tenant_id = tenant_id.into();
        self.guest_memberships
            .retain(|g| !g.tenant_id.eq_ignore_ascii_case(&tenant_id));
        self.guest_memberships.push(GuestMembership {
            tenant_id,
            object_id: object_id_there.into().to_ascii_lowercase(),
        });
        self
    }

    /// True when `tenant_id` is this user's home tenant.
    pub fn is_member_of(&self, tenant_id: &str) -> bool {
        self.tenant_id.eq_ignore_ascii_case(tenant_id)
    }

    /// True when this user is a guest (not a member) in `tenant_id`.
    pub fn is_guest_in(&self, tenant_id: &str) -> bool {
        !self.is_member_of(tenant_id) && self.guest_membership(tenant_id).is_some()
    }

    /// The tenants where this user is a guest, each as `(tenant id, object id there)`.
    pub fn guest_memberships(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.guest_memberships
            .iter()
            .filter(|g| !self.is_member_of(&g.tenant_id))
            .map(|g| (g.tenant_id.as_str(), g.object_id.as_str()))
    }

    fn guest_membership(&self, tenant_id: &str) -> Option<&GuestMembership> {
        self.guest_memberships
            .iter()
            .find(|g| g.tenant_id.eq_ignore_ascii_case(tenant_id))
    }

    /// The user's object id in `tenant_id`: the home object id in the home tenant, the guest
    /// object id in a tenant where it is a guest, `None` elsewhere.
    pub fn object_id_in(&self, tenant_id: &str) -> Option<&str> {
        if self.is_member_of(tenant_id) {
            Some(&self.object_id)
        } else {
            self.guest_membership(tenant_id)
                .map(|g| g.object_id.as_str())
        }
    }

    /// The user as tokens for `tenant_id` describe it: `tenant_id` (the `tid`) and the object id
    /// there (the `oid`); `None` when the user is not in that tenant. The home identity (for
    /// `client_info`) is `self`.
    pub(crate) fn as_seen_in(&self, tenant_id: &str) -> Option<User> {
        if self.is_member_of(tenant_id) {
            return Some(self.clone());
        }
        let membership = self.guest_membership(tenant_id)?;
        Some(User {
            object_id: membership.object_id.clone(),
            tenant_id: membership.tenant_id.clone(),
            guest_memberships: Vec::new(),
            ..self.clone()
        })
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

    /// Adds (or replaces, by home object id) a user. Its home tenant and the tenants where it is
    /// a guest are registered when not known yet.
    pub fn add_user(&self, user: User) {
        let mut data = self.write();
        Self::ensure_tenant(&mut data, &user.tenant_id);
        for membership in &user.guest_memberships {
            Self::ensure_tenant(&mut data, &membership.tenant_id);
        }
        data.users
            .retain(|u| !u.object_id.eq_ignore_ascii_case(&user.object_id));
        data.users.push(user);
    }

    /// The first user found in `tenant_id` by `matches`: members of the tenant first, then
    /// guests in it.
    fn find_user(&self, tenant_id: &str, matches: impl Fn(&User) -> bool) -> Option<User> {
        let data = self.read();
        data.users
            .iter()
            .find(|u| u.is_member_of(tenant_id) && matches(u))
            .or_else(|| {
                data.users
                    .iter()
                    .find(|u| u.is_guest_in(tenant_id) && matches(u))
            })
            .cloned()
    }

    /// The user in `tenant_id` with this UPN (case-insensitive): a member of the tenant, else a
    /// guest in it. The user is returned as registered (its home identity); its object id in
    /// `tenant_id` is [`User::object_id_in`].
    pub fn user_by_upn(&self, tenant_id: &str, upn: &str) -> Option<User> {
        self.find_user(tenant_id, |u| u.upn.eq_ignore_ascii_case(upn))
    }

    /// The user whose object id in `tenant_id` is `object_id` (case-insensitive): a member with
    /// that object id, or a guest with that object id in the tenant (a guest's home object id
    /// does not name it there). The user is returned as registered (its home identity).
    pub fn user_by_oid(&self, tenant_id: &str, object_id: &str) -> Option<User> {
        self.find_user(tenant_id, |u| {
            u.object_id_in(tenant_id)
                .is_some_and(|oid| oid.eq_ignore_ascii_case(object_id))
        })
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
    fn guests_are_found_in_their_resource_tenants_by_upn_and_object_id_there() {
        const HOME: &str = "00000000-0000-0000-0000-0000000a0e51";
        const THERE: &str = "00000000-0000-0000-0000-0000000b0e51";
        let dir = Directory::new();
        dir.add_user(User::new(
            "Alice@contoso.com",
            "00000000-0000-0000-0000-000000000abc",
            "t1",
        ));
        dir.add_user(
            User::new("gina@fabrikam.com", HOME, "home")
                .guest_in("t1", THERE.to_ascii_uppercase())
                .guest_in("t2", "00000000-0000-0000-0000-0000000c0e51")
                .guest_in("t2", "00000000-0000-0000-0000-0000000d0e51"),
        );
        // Every tenant the guest is in is registered.
        for tenant in ["t1", "t2", "home"] {
            assert!(dir.tenant(tenant).is_some(), "{tenant}");
        }
        // In the resource tenant: by UPN and by the object id there, as the home record.
        let by_upn = dir.user_by_upn("T1", "GINA@fabrikam.com").unwrap();
        let by_oid = dir.user_by_oid("t1", &THERE.to_ascii_uppercase()).unwrap();
        assert_eq!(by_upn, by_oid);
        assert_eq!(by_oid.object_id, HOME);
        assert_eq!(by_oid.tenant_id, "home");
        assert_eq!(by_oid.object_id_in("t1"), Some(THERE));
        assert_eq!(by_oid.object_id_in("home"), Some(HOME));
        assert_eq!(by_oid.object_id_in("elsewhere"), None);
        assert!(by_oid.is_guest_in("t1") && !by_oid.is_member_of("t1"));
        assert!(by_oid.is_member_of("home") && !by_oid.is_guest_in("home"));
        // A second membership of one tenant replaces the first.
        assert_eq!(
            by_oid.guest_memberships().collect::<Vec<_>>(),
            [
                ("t1", THERE),
                ("t2", "00000000-0000-0000-0000-0000000d0e51")
            ]
        );
        assert!(dir
            .user_by_oid("t2", "00000000-0000-0000-0000-0000000c0e51")
            .is_none());
        // The home object id names nobody in the resource tenant; the object id there names
        // nobody in the home tenant; a tenant the user is not in does not find it.
        assert!(dir.user_by_oid("t1", HOME).is_none());
        assert!(dir.user_by_oid("home", THERE).is_none());
        assert!(dir.user_by_oid("home", HOME).is_some());
        assert!(dir.user_by_upn("elsewhere", "gina@fabrikam.com").is_none());
        // As tokens for each tenant describe it.
        let seen = by_oid.as_seen_in("t1").unwrap();
        assert_eq!(
            (seen.object_id.as_str(), seen.tenant_id.as_str()),
            (THERE, "t1")
        );
        assert_eq!(seen.upn, "gina@fabrikam.com");
        assert_eq!(by_oid.as_seen_in("home").unwrap(), by_oid);
        assert!(by_oid.as_seen_in("elsewhere").is_none());
        // Members are unchanged.
        let alice = dir.user_by_upn("t1", "alice@contoso.com").unwrap();
        assert_eq!(alice.object_id_in("t1"), Some(alice.object_id.as_str()));
        assert_eq!(alice.as_seen_in("t1").unwrap(), alice);
        assert!(alice.guest_memberships().next().is_none());
    }

    #[test]
    fn a_member_is_found_before_a_guest_with_the_same_upn() {
        let dir = Directory::new();
        dir.add_user(
            User::new(
                "sam@contoso.com",
                "00000000-0000-0000-0000-00000000000a",
                "home",
            )
            .guest_in("t1", "00000000-0000-0000-0000-00000000000b"),
        );
        dir.add_user(User::new(
            "SAM@contoso.com",
            "00000000-0000-0000-0000-00000000000c",
            "t1",
        ));
        let found = dir.user_by_upn("t1", "sam@contoso.com").unwrap();
        assert_eq!(found.object_id, "00000000-0000-0000-0000-00000000000c");
        // The guest is still found by its object id there.
        let guest = dir
            .user_by_oid("t1", "00000000-0000-0000-0000-00000000000b")
            .unwrap();
        assert_eq!(guest.object_id, "00000000-0000-0000-0000-00000000000a");
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
