//! A redacting, zeroizing wrapper for secrets.

use std::fmt;
use std::sync::Arc;
use zeroize::Zeroizing;

/// A secret string: access, refresh and id tokens, client secrets, client assertions.
///
/// `Debug` and `Display` never show the value; the memory is zeroized when the last clone is
/// dropped (clones share one allocation, so handing a cached token out costs no copy). Read it
/// deliberately with [`Secret::expose`].
///
/// ```
/// use fic_oauth_core::Secret;
///
/// let secret = Secret::new("s3cr3t");
/// assert_eq!(format!("{secret:?}"), "Secret(***)");
/// assert_eq!(secret.to_string(), "***");
/// assert_eq!(secret.expose(), "s3cr3t");
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Arc<Zeroizing<String>>);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Arc::new(Zeroizing::new(value.into())))
    }

    /// The secret value. Do not log it.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    /// Whether the value is empty or only white space.
    pub fn is_blank(&self) -> bool {
        self.0.trim().is_empty()
    }

    /// The length of the value in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let secret = Secret::new("eyJhbGciOi.payload.sig");
        let debug = format!("{secret:?} {secret} {:?}", Some(&secret));
        assert!(!debug.contains("eyJ"));
        assert!(!Secret::new(" x ").is_blank());
        assert!(Secret::new("  ").is_blank());
    }
}
