//! Tunable behaviour: token lifetimes, `refresh_in`, clock skew, the IMDS region, the VM the
//! managed identity endpoints describe.

use std::time::Duration;

/// When token responses carry `refresh_in`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefreshIn {
    /// `expires_in / 2` when the lifetime is at least two hours, otherwise absent (Entra's habit).
    HalfLifeWhenLong,
    /// Never sent.
    Never,
    /// Always this many seconds.
    Fixed(u64),
}

impl RefreshIn {
    /// The `refresh_in` value for a token of `lifetime` seconds.
    pub fn value(self, lifetime: u64) -> Option<u64> {
        match self {
            RefreshIn::HalfLifeWhenLong => (lifetime >= 7200).then_some(lifetime / 2),
            RefreshIn::Never => None,
            RefreshIn::Fixed(seconds) => Some(seconds),
        }
    }
}

/// Emulator settings; change them with [`EmulatorHandle::update_settings`](crate::EmulatorHandle::update_settings).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// Lifetime of access tokens (`expires_in`). Default 3599 s.
    pub access_token_lifetime: Duration,
    /// `ext_expires_in`; `None` means the same as `expires_in`.
    pub ext_expires_lifetime: Option<Duration>,
    /// When `refresh_in` is sent. Default [`RefreshIn::HalfLifeWhenLong`].
    pub refresh_in: RefreshIn,
    /// Lifetime of refresh tokens. Default 90 days.
    pub refresh_token_lifetime: Duration,
    /// Lifetime of ID tokens. Default 3600 s.
    pub id_token_lifetime: Duration,
    /// Clock skew allowed on `exp`/`nbf` of client assertions and at the resource. Default 5 min.
    pub clock_skew: Duration,
    /// Whether client assertions signed with a certificate must carry a `jti` (replays of a
    /// `jti` are always refused). Default true.
    pub require_assertion_jti: bool,
    /// The longest a certificate-signed client assertion may still be valid for when it
    /// arrives: `exp` later than now + this + [`clock_skew`](Self::clock_skew) is refused
    /// (700024). Entra documents no such limit; the emulator has one so it can remember every
    /// `jti` until its assertion expires (replays stay refused) without keeping it forever.
    /// Default 24 hours (MSAL signs assertions valid for 10 minutes).
    pub max_assertion_lifetime: Duration,
    /// The `location` the IMDS region endpoint answers (also the region of the IMDSv2
    /// `mtls_authentication_endpoint`). Default `westus3`.
    pub imds_location: String,
    /// The VM id (`vmId`) of the emulated host: compute metadata, IMDSv2 platform metadata, and
    /// what an IMDSv2 CSR's `cuId` must carry. Default `00000000-0000-0000-0000-0000000000f1`.
    pub vm_id: String,
    /// The scale set id (`vmssId`) of the emulated host, when it is in one. Default none.
    pub vmss_id: Option<String>,
    /// Whether IMDS serves IMDSv2 (`getplatformmetadata`, `issuecredential`); false makes the
    /// host "IMDS v1 only" (both answer 404). Default true.
    pub imds_v2: bool,
    /// Lifetime of the tokens the managed identity endpoints (IMDS v1, App Service, Azure Arc,
    /// Cloud Shell, Service Fabric, Machine Learning) issue. Default 86 399 s (a day, as IMDS).
    /// IMDSv2 tokens come from the token endpoint and use `access_token_lifetime`.
    pub managed_identity_token_lifetime: Duration,
    /// Validity of the certificates IMDSv2 issues, from the emulator clock. Default 7 days.
    pub imds_v2_certificate_lifetime: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            access_token_lifetime: Duration::from_secs(3599),
            ext_expires_lifetime: None,
            refresh_in: RefreshIn::HalfLifeWhenLong,
            refresh_token_lifetime: Duration::from_secs(90 * 24 * 3600),
            id_token_lifetime: Duration::from_secs(3600),
            clock_skew: Duration::from_secs(300),
            require_assertion_jti: true,
            max_assertion_lifetime: Duration::from_secs(24 * 3600),
            imds_location: "westus3".to_owned(),
            vm_id: "00000000-0000-0000-0000-0000000000f1".to_owned(),
            vmss_id: None,
            imds_v2: true,
            managed_identity_token_lifetime: Duration::from_secs(86_399),
            imds_v2_certificate_lifetime: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_in_policy() {
        assert_eq!(RefreshIn::HalfLifeWhenLong.value(3599), None);
        assert_eq!(RefreshIn::HalfLifeWhenLong.value(7200), Some(3600));
        assert_eq!(RefreshIn::Never.value(86_400), None);
        assert_eq!(RefreshIn::Fixed(60).value(100), Some(60));
    }
}
