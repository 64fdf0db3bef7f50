//! Which identity of the host to get tokens for.

use fic_oauth_core::{Error, ErrorCode};

/// The managed identity to use: the host's system-assigned identity, or a user-assigned one
/// named by its client id, its ARM resource id or its object (principal) id.
///
/// ```
/// use fic_managed_identity::ManagedIdentityId;
///
/// let id = ManagedIdentityId::ClientId("11111111-2222-3333-4444-555555555555".into());
/// assert!(id.is_user_assigned());
/// assert_eq!(id.cache_id(), "11111111-2222-3333-4444-555555555555");
/// assert_eq!(ManagedIdentityId::SystemAssigned.cache_id(), "system_assigned_managed_identity");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ManagedIdentityId {
    /// The system-assigned identity of the host.
    #[default]
    SystemAssigned,
    /// A user-assigned identity by its client (application) id.
    ClientId(String),
    /// A user-assigned identity by its ARM resource id
    /// (`/subscriptions/…/resourceGroups/…/providers/Microsoft.ManagedIdentity/userAssignedIdentities/…`).
    ResourceId(String),
    /// A user-assigned identity by its object (principal) id.
    ObjectId(String),
}

impl ManagedIdentityId {
    /// The client id the cache files system-assigned tokens under (MSAL's constant).
    pub const SYSTEM_ASSIGNED_CACHE_ID: &'static str = "system_assigned_managed_identity";

    /// Whether this names a user-assigned identity.
    pub fn is_user_assigned(&self) -> bool {
        !matches!(self, Self::SystemAssigned)
    }

    /// The id as given, for user-assigned identities.
    pub fn value(&self) -> Option<&str> {
        match self {
            Self::SystemAssigned => None,
            Self::ClientId(v) | Self::ResourceId(v) | Self::ObjectId(v) => Some(v),
        }
    }

    /// The client id component of cache keys: the id as given, or
    /// [`SYSTEM_ASSIGNED_CACHE_ID`](Self::SYSTEM_ASSIGNED_CACHE_ID).
    pub fn cache_id(&self) -> &str {
        self.value().unwrap_or(Self::SYSTEM_ASSIGNED_CACHE_ID)
    }

    /// What kind of id this is, for messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::SystemAssigned => "system-assigned",
            Self::ClientId(_) => "client id",
            Self::ResourceId(_) => "resource id",
            Self::ObjectId(_) => "object id",
        }
    }

    /// Refuses an empty or blank user-assigned id.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        match self.value() {
            Some(v) if v.trim().is_empty() => Err(Error::new(
                ErrorCode::INVALID_ARGUMENT,
                format!(
                    "the user-assigned managed identity {} is empty",
                    self.kind_name()
                ),
            )),
            _ => Ok(()),
        }
    }
}
