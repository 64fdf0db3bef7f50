//! Small helpers shared by the modules: base64url, timestamps, hashing.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// base64url without padding on output; tolerant of padding on input.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Standard base64 tolerant of missing padding on input.
const B64STD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub(crate) fn b64url(data: impl AsRef<[u8]>) -> String {
    B64URL.encode(data)
}

pub(crate) fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    B64URL.decode(text.as_bytes()).ok()
}

pub(crate) fn b64std(data: impl AsRef<[u8]>) -> String {
    STANDARD.encode(data)
}

pub(crate) fn b64std_decode(text: &str) -> Option<Vec<u8>> {
    B64STD_LENIENT.decode(text.trim().as_bytes()).ok()
}

pub(crate) fn sha256(data: impl AsRef<[u8]>) -> [u8; 32] {
    Sha256::digest(data.as_ref()).into()
}

/// Seconds since the Unix epoch (0 before it).
pub(crate) fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A time `seconds` after the epoch.
#[cfg(test)]
pub(crate) fn from_unix(seconds: u64) -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_secs(seconds)
}

/// (year, month, day, hour, minute, second) of a Unix time, UTC.
fn civil(seconds: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = i64::try_from(seconds / 86_400).unwrap_or(0);
    let rem = seconds % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if m <= 2 { y + 1 } else { y };
    let to_u32 = |v: i64| u32::try_from(v).unwrap_or(0);
    let rem = u32::try_from(rem).unwrap_or(0);
    (
        year,
        to_u32(m),
        to_u32(d),
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
    )
}

/// `2024-03-01 07:41:07Z`, the form of Entra's `timestamp` field.
pub(crate) fn entra_timestamp(time: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(unix(time));
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}Z")
}

/// `2024-10-02T22:05:03.0000000Z`, the form used inside Entra error descriptions.
pub(crate) fn iso_timestamp(seconds: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(seconds);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.0000000Z")
}

/// Case-insensitive host pattern match: `*.rest` matches any name ending in `.rest` (one or more
/// labels), anything else matches exactly.
pub(crate) fn host_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let pattern = pattern.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(rest) => host.len() > rest.len() + 1 && host.ends_with(&format!(".{rest}")),
        None => host == pattern,
    }
}

/// A UUID derived from a name (stable across runs), in the lower-case hyphenated form.
pub(crate) fn derived_uuid(namespace: &str, name: &str) -> String {
    let digest = sha256(format!("{namespace}\u{0}{name}"));
    let mut bytes = [0_u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // Mark it as a version 8 (custom) RFC 4122 UUID.
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(bytes).hyphenated().to_string()
}

pub(crate) fn new_uuid() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(entra_timestamp(from_unix(0)), "1970-01-01 00:00:00Z");
        assert_eq!(
            entra_timestamp(from_unix(1_709_278_867)),
            "2024-03-01 07:41:07Z"
        );
        assert_eq!(iso_timestamp(951_782_400), "2000-02-29T00:00:00.0000000Z");
    }

    #[test]
    fn host_patterns() {
        assert!(host_matches(
            "*.login.microsoft.com",
            "westus3.login.microsoft.com"
        ));
        assert!(host_matches("*.vault.azure.net", "My.Vault.Azure.Net"));
        assert!(!host_matches("*.vault.azure.net", "vault.azure.net"));
        assert!(host_matches("graph.microsoft.com", "GRAPH.microsoft.com"));
        assert!(!host_matches("graph.microsoft.com", "xgraph.microsoft.com"));
    }

    #[test]
    fn base64_forms() {
        assert_eq!(b64url([0xfb, 0xff]), "-_8");
        assert_eq!(b64url_decode("-_8=").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(b64std_decode("+/8").unwrap(), vec![0xfb, 0xff]);
    }
}
