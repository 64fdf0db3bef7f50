//! Authorities, clouds, regions and token endpoints (PROTOCOL §1).

/// The kind of an authority; decides the token endpoint shape, whether mTLS hosts are rewritten,
/// and how client assertions are signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthorityKind {
    /// Microsoft Entra ID (`https://login.microsoftonline.com/{tenant}/`).
    Aad,
    /// dSTS (`https://{host}/dstsv2/{tenant}/`).
    Dsts,
    /// AD FS (`https://{host}/adfs/`).
    Adfs,
    /// Azure AD B2C.
    B2c,
    /// Microsoft Entra External ID (CIAM, `*.ciamlogin.com`).
    Ciam,
    /// Any other OpenID Connect provider.
    Generic,
}

impl AuthorityKind {
    /// Whether client assertions use SHA-2: `PS256` with `x5t#S256` (AAD, B2C, CIAM), rather
    /// than `RS256` with `x5t` (ADFS, dSTS, generic).
    pub fn uses_sha2_assertions(self) -> bool {
        matches!(self, Self::Aad | Self::B2c | Self::Ciam)
    }
}
