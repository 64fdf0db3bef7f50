//! Helpers shared by the integration tests: fixtures, JWT decoding, signature checks.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

/// The path of a committed fixture.
pub(crate) fn data_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("data")
        .join(name)
}

/// The bytes of a committed fixture.
pub(crate) fn data(name: &str) -> Vec<u8> {
    std::fs::read(data_path(name)).unwrap_or_else(|err| panic!("fixture {name}: {err}"))
}

/// The password of the committed PKCS#12 files.
pub(crate) const PFX_PASSWORD: &str = "fic-rs test password";

/// A decoded compact JWS.
pub(crate) struct Jwt {
    pub(crate) header_json: String,
    pub(crate) header: Value,
    pub(crate) payload: Value,
    pub(crate) signing_input: String,
    pub(crate) signature: Vec<u8>,
}

/// Splits and decodes a JWT, checking each segment is base64url without padding.
pub(crate) fn decode(jwt: &str) -> Jwt {
    let segments: Vec<&str> = jwt.split('.').collect();
    assert_eq!(segments.len(), 3, "a JWS has three segments: {jwt}");
    for segment in &segments {
        assert!(
            segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "segment is not unpadded base64url: {segment}"
        );
    }
    let header_bytes = URL_SAFE_NO_PAD.decode(segments[0]).unwrap();
    let payload_bytes = URL_SAFE_NO_PAD.decode(segments[1]).unwrap();
    Jwt {
        header_json: String::from_utf8(header_bytes.clone()).unwrap(),
        header: serde_json::from_slice(&header_bytes).unwrap(),
        payload: serde_json::from_slice(&payload_bytes).unwrap(),
        signing_input: format!("{}.{}", segments[0], segments[1]),
        signature: URL_SAFE_NO_PAD.decode(segments[2]).unwrap(),
    }
}

/// The subjectPublicKey bits of a certificate: a DER `RSAPublicKey` for RSA, the uncompressed
/// point for EC; what ring's `UnparsedPublicKey` wants.
pub(crate) fn certificate_public_key(certificate_der: &[u8]) -> Vec<u8> {
    let (_, certificate) = x509_parser::parse_x509_certificate(certificate_der).unwrap();
    certificate.public_key().subject_public_key.data.to_vec()
}

/// Verifies a signature with ring (independent of the crate's signing backend).
pub(crate) fn verify(
    algorithm: &'static dyn ring::signature::VerificationAlgorithm,
    public_key: &[u8],
    message: &[u8],
    signature: &[u8],
) -> bool {
    ring::signature::UnparsedPublicKey::new(algorithm, public_key)
        .verify(message, signature)
        .is_ok()
}

/// A directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(label: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "fic-assertion-{label}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
