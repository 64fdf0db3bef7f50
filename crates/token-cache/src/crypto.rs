//! Encryption at rest for the file and Redis caches: AES-256-GCM with a caller-supplied key.
//!
//! The envelope is versioned: `FICC` (4 bytes), a version byte (1), a 12-byte random nonce, then
//! the ciphertext with its 16-byte tag. The associated data binds the envelope to its header and
//! to where it is stored (the file cache's constant context, or the Redis key), so a value copied
//! under another key does not decrypt.
//!
//! The cipher is RustCrypto's `aes-gcm` (pure Rust), not ring: fic-rs keeps ring optional (some
//! SDKs that embed it allow only aws-lc-rs), and the cache must not be what pulls ring in.
// With `encryption` alone (no backend to use it) only the key type is reachable.
#![cfg_attr(
    not(any(feature = "file", feature = "redis")),
    allow(dead_code, unused_imports)
)]

/// The first bytes of an encrypted file or value.
pub(crate) const MAGIC: &[u8; 4] = b"FICC";

/// The envelope version this library writes and reads.
const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = MAGIC.len() + 1 + NONCE_LEN;

/// Whether `bytes` is an encryption envelope (of any version).
pub(crate) fn is_envelope(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// What the structure of an envelope (bytes starting with [`MAGIC`]) says, before any key is
/// tried. The file cache uses it to tell a damaged file (set aside) from one it cannot decrypt
/// (left untouched).
#[cfg_attr(not(feature = "file"), allow(dead_code))]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A version-1 envelope long enough to hold its header and tag: only the key can tell more.
    Sound,
    /// A version written by a newer fic-rs: not this library's to judge, left untouched.
    Newer(u8),
    /// Damaged: truncated below its header and tag, or a version no fic-rs ever wrote (0).
    Damaged(String),
}

/// Checks the structure of an envelope: magic, version, length.
#[cfg_attr(not(feature = "file"), allow(dead_code))]
pub(crate) fn shape(envelope: &[u8]) -> Shape {
    if !envelope.starts_with(MAGIC) {
        return Shape::Damaged("no FICC header".into());
    }
    match envelope.get(MAGIC.len()) {
        None => return Shape::Damaged("truncated before its version byte".into()),
        Some(&version) if version > VERSION => return Shape::Newer(version),
        Some(&version) if version != VERSION => {
            return Shape::Damaged(format!("unknown envelope version {version}"));
        }
        Some(_) => {}
    }
    if envelope.len() < HEADER_LEN + TAG_LEN {
        return Shape::Damaged(format!(
            "truncated: {} bytes, an envelope has at least {}",
            envelope.len(),
            HEADER_LEN + TAG_LEN
        ));
    }
    Shape::Sound
}

#[cfg(feature = "encryption")]
pub use key::EncryptionKey;
#[cfg(feature = "encryption")]
pub(crate) use key::{open, seal};

#[cfg(feature = "encryption")]
mod key {
    use std::fmt;

    use aes_gcm::aead::{Aead, Generate, KeyInit, Nonce, Payload};
    use aes_gcm::{Aes256Gcm, Key};
    use fic_oauth_core::{Error, ErrorCode};
    use zeroize::Zeroizing;

    use super::{HEADER_LEN, MAGIC, TAG_LEN, VERSION};
    use crate::codes;

    /// A 32-byte AES-256-GCM key for the file and Redis caches. Zeroized on drop; `Debug`
    /// never shows it.
    ///
    /// ```
    /// use fic_token_cache::EncryptionKey;
    ///
    /// let key = EncryptionKey::from_bytes([7u8; 32]);
    /// assert_eq!(format!("{key:?}"), "EncryptionKey(***)");
    /// assert!(EncryptionKey::from_slice(&[0u8; 16]).is_err());
    /// ```
    #[derive(Clone)]
    pub struct EncryptionKey(Aes256Gcm);

    type GcmNonce = Nonce<Aes256Gcm>;

    impl EncryptionKey {
        /// A key from its 32 bytes (the expanded cipher state is zeroized on drop; zeroize the
        /// bytes you pass in yourself).
        pub fn from_bytes(bytes: [u8; 32]) -> Self {
            let mut key = Key::<Aes256Gcm>::from(bytes);
            let cipher = Aes256Gcm::new(&key);
            zeroize::Zeroize::zeroize(&mut key[..]);
            Self(cipher)
        }

        /// A key from a slice, which must hold exactly 32 bytes (`invalid_argument` otherwise).
        pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
            let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
                Error::new(
                    ErrorCode::INVALID_ARGUMENT,
                    format!("a cache encryption key has 32 bytes, not {}", bytes.len()),
                )
            })?;
            Ok(Self::from_bytes(bytes))
        }

        /// A new random key from the operating system's generator (keep it: without it the
        /// cache cannot be read).
        pub fn generate() -> Result<Self, Error> {
            let mut key = Key::<Aes256Gcm>::try_generate()
                .map_err(|e| Error::new(ErrorCode::INTERNAL, format!("no random key: {e}")))?;
            let cipher = Aes256Gcm::new(&key);
            zeroize::Zeroize::zeroize(&mut key[..]);
            Ok(Self(cipher))
        }
    }

    impl fmt::Debug for EncryptionKey {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("EncryptionKey(***)")
        }
    }

    fn aad(header: &[u8], context: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(MAGIC.len() + 1 + context.len());
        aad.extend_from_slice(&header[..=MAGIC.len()]);
        aad.extend_from_slice(context);
        aad
    }

    /// Encrypts `plain` into an envelope bound to `context`.
    pub(crate) fn seal(
        key: &EncryptionKey,
        context: &[u8],
        plain: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let nonce = GcmNonce::try_generate()
            .map_err(|e| Error::new(ErrorCode::INTERNAL, format!("no random nonce: {e}")))?;
        let mut out = Vec::with_capacity(HEADER_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        let aad = aad(&out, context);
        let sealed = key
            .0
            .encrypt(
                &nonce,
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .map_err(|_| Error::new(ErrorCode::INTERNAL, "cache encryption failed"))?;
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Decrypts an envelope bound to `context`; `cache_decryption_failed` for a wrong key, a
    /// damaged or foreign envelope, or an unknown version.
    pub(crate) fn open(
        key: &EncryptionKey,
        context: &[u8],
        envelope: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        if envelope.len() < HEADER_LEN + TAG_LEN || !envelope.starts_with(MAGIC) {
            return Err(Error::new(
                codes::CACHE_DECRYPTION_FAILED,
                "not an encrypted cache envelope (too short or no FICC header)",
            ));
        }
        let version = envelope[MAGIC.len()];
        if version != VERSION {
            return Err(Error::new(
                codes::CACHE_DECRYPTION_FAILED,
                format!("cache envelope version {version} is not supported (this library reads version {VERSION})"),
            ));
        }
        let nonce = GcmNonce::try_from(&envelope[MAGIC.len() + 1..HEADER_LEN])
            .map_err(|_| Error::new(codes::CACHE_DECRYPTION_FAILED, "damaged cache envelope"))?;
        let aad = aad(envelope, context);
        key.0
            .decrypt(
                &nonce,
                Payload {
                    msg: &envelope[HEADER_LEN..],
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| {
                Error::new(
                    codes::CACHE_DECRYPTION_FAILED,
                    "the cache could not be decrypted: wrong key, or the content was altered",
                )
            })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn seal_and_open() {
            let key = EncryptionKey::generate().unwrap();
            let sealed = seal(&key, b"ctx", b"hello").unwrap();
            assert!(super::super::is_envelope(&sealed));
            assert_eq!(sealed[4], VERSION);
            assert_eq!(sealed.len(), HEADER_LEN + 5 + TAG_LEN);
            assert_eq!(super::super::shape(&sealed), super::super::Shape::Sound);
            assert_eq!(&open(&key, b"ctx", &sealed).unwrap()[..], b"hello");
            // Another nonce each time.
            assert_ne!(seal(&key, b"ctx", b"hello").unwrap(), sealed);
            let wrong = EncryptionKey::from_bytes([1; 32]);
            for (key, context, envelope) in [
                (&wrong, &b"ctx"[..], sealed.clone()),
                (&key, &b"other"[..], sealed.clone()),
                (&key, &b"ctx"[..], {
                    let mut v = sealed.clone();
                    v[4] = 2;
                    v
                }),
                (&key, &b"ctx"[..], {
                    let mut v = sealed.clone();
                    *v.last_mut().unwrap() ^= 1;
                    v
                }),
                (&key, &b"ctx"[..], b"FICC".to_vec()),
            ] {
                assert_eq!(
                    open(key, context, &envelope).unwrap_err().code(),
                    &codes::CACHE_DECRYPTION_FAILED
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_tells_damage_from_a_newer_version() {
        let mut sound = b"FICC\x01".to_vec();
        sound.extend_from_slice(&[0; NONCE_LEN + TAG_LEN]);
        assert_eq!(shape(&sound), Shape::Sound);
        for damaged in [
            &b"FICC"[..],
            &b"FICC\x01"[..],
            &sound[..sound.len() - 1],
            &b"FICC\x00 plenty of bytes after an impossible version"[..],
            &b"FICX\x01"[..],
        ] {
            assert!(
                matches!(shape(damaged), Shape::Damaged(_)),
                "{damaged:?}: {:?}",
                shape(damaged)
            );
        }
        assert_eq!(shape(b"FICC\x02"), Shape::Newer(2));
        assert_eq!(shape(b"FICC\xff and more"), Shape::Newer(255));
    }
}
