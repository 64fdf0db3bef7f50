//! [`FileAssertion`]: an assertion read from a file that is rotated in place (Kubernetes
//! workload identity's `AZURE_FEDERATED_TOKEN_FILE`).

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use fic_oauth_core::{Clock, Error, Secret, SystemClock};
use zeroize::Zeroizing;

use crate::assertion::{AssertionProvider, AssertionRequest, ClientAssertion};
use crate::codes;

/// The environment variable naming the federated token file of Azure workload identity.
pub const AZURE_FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";

/// The default longest time a read is trusted while the file looks unchanged.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(5 * 60);

/// The largest assertion file [`FileAssertion`] reads: 64 KiB. Federated tokens are a few
/// KiB at most (a Kubernetes service account token is about 1 KiB); a larger file is refused
/// with `assertion_file_too_large` instead of being read into memory.
pub const MAX_ASSERTION_FILE_BYTES: usize = 64 * 1024;

struct Cached {
    value: Secret,
    modified: Option<SystemTime>,
    len: u64,
    read_at: SystemTime,
}

/// An assertion (jwt-bearer) read from a file, re-read when the file changes.
///
/// Every call looks at the file's metadata (one `stat`) and reads the file again when its
/// modification time or length changed since the last read, or when the last read is older
/// than the maximum age ([`DEFAULT_MAX_AGE`], 5 minutes; this catches rewrites that keep both).
/// The contents are trimmed of surrounding white space. File IO runs on tokio's blocking pool,
/// so a tokio runtime is needed.
///
/// Errors: `assertion_file_missing` (no such file, or no file configured),
/// `assertion_file_empty`, `assertion_file_too_large` (more than
/// [`MAX_ASSERTION_FILE_BYTES`], 64 KiB), `assertion_file_unreadable`. A failed read never
/// falls back to an older value.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use fic_assertion::{AssertionProvider, AssertionRequest, FileAssertion};
///
/// let path = std::env::temp_dir().join(format!("fic-doc-{}.jwt", std::process::id()));
/// std::fs::write(&path, "eyJ0eXAi.first.token\n")?;
/// let provider = FileAssertion::new(&path);
/// let request = AssertionRequest::new("app", "https://login.microsoftonline.com/t/oauth2/v2.0/token");
/// assert_eq!(provider.assertion(&request).await?.value().expose(), "eyJ0eXAi.first.token");
/// std::fs::remove_file(&path)?;
/// # Ok(())
/// # }
/// ```
pub struct FileAssertion {
    path: PathBuf,
    max_age: Duration,
    clock: Arc<dyn Clock>,
    cached: Mutex<Option<Cached>>,
}

impl FileAssertion {
    /// A provider reading `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_age: DEFAULT_MAX_AGE,
            clock: Arc::new(SystemClock),
            cached: Mutex::new(None),
        }
    }

    /// A provider reading the file named by `AZURE_FEDERATED_TOKEN_FILE`.
    ///
    /// Errors with `assertion_file_missing` when the variable is unset or empty.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_env_value(std::env::var_os(AZURE_FEDERATED_TOKEN_FILE))
    }

    fn from_env_value(value: Option<OsString>) -> Result<Self, Error> {
        match value {
            Some(path) if !path.is_empty() => Ok(Self::new(path)),
            _ => Err(Error::new(
                codes::ASSERTION_FILE_MISSING,
                format!("{AZURE_FEDERATED_TOKEN_FILE} is not set"),
            )),
        }
    }

    /// Re-reads the file at least this often even when it looks unchanged.
    #[must_use]
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// The clock deciding the age of the last read (default: the system clock).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current contents of the file (trimmed), read again only when needed.
    pub async fn read(&self) -> Result<Secret, Error> {
        // The metadata is taken before reading: a change during the read shows as a change at
        // the next call.
        let metadata = tokio::fs::metadata(&self.path)
            .await
            .map_err(|err| self.io_error(err))?;
        if !metadata.is_file() {
            return Err(Error::new(
                codes::ASSERTION_FILE_UNREADABLE,
                format!("{} is not a regular file", self.path.display()),
            ));
        }
        let modified = metadata.modified().ok();
        let len = metadata.len();
        if usize::try_from(len).map_or(true, |len| len > MAX_ASSERTION_FILE_BYTES) {
            return Err(self.too_large(Some(len)));
        }
        let now = self.clock.now();
        {
            let cached = self.lock();
            if let Some(cached) = cached.as_ref() {
                let young = now
                    .duration_since(cached.read_at)
                    .is_ok_and(|age| age < self.max_age);
                if young && cached.modified == modified && cached.len == len {
                    return Ok(cached.value.clone());
                }
            }
        }

        let path = self.path.clone();
        let bytes = tokio::task::spawn_blocking(move || read_capped(&path))
            .await
            .map_err(|err| {
                Error::new(
                    codes::ASSERTION_FILE_UNREADABLE,
                    format!("reading {} did not complete", self.path.display()),
                )
                .with_source(err)
            })?
            .map_err(|err| self.io_error(err))?
            // The file grew past the limit after the `stat`.
            .ok_or_else(|| self.too_large(None))?;
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            Error::new(
                codes::ASSERTION_FILE_UNREADABLE,
                format!("{} is not UTF-8 text", self.path.display()),
            )
        })?;
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(Error::new(
                codes::ASSERTION_FILE_EMPTY,
                format!("{} is empty", self.path.display()),
            ));
        }
        let value = Secret::new(trimmed);
        tracing::debug!(path = %self.path.display(), len, "read the assertion file");
        *self.lock() = Some(Cached {
            value: value.clone(),
            modified,
            len,
            read_at: now,
        });
        Ok(value)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Cached>> {
        self.cached.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn too_large(&self, len: Option<u64>) -> Error {
        let size = len.map_or_else(String::new, |len| format!(" ({len} bytes)"));
        Error::new(
            codes::ASSERTION_FILE_TOO_LARGE,
            format!(
                "{} is larger than the {MAX_ASSERTION_FILE_BYTES}-byte limit of an assertion file{size}",
                self.path.display()
            ),
        )
    }

    fn io_error(&self, err: io::Error) -> Error {
        let code = if err.kind() == io::ErrorKind::NotFound {
            codes::ASSERTION_FILE_MISSING
        } else {
            codes::ASSERTION_FILE_UNREADABLE
        };
        Error::new(
            code,
            format!("could not read {}: {err}", self.path.display()),
        )
        .with_source(err)
    }
}

/// Reads at most [`MAX_ASSERTION_FILE_BYTES`] of `path` into a zeroizing buffer sized once
/// (so no reallocation leaves a copy behind); `None` when the file holds more.
fn read_capped(path: &Path) -> io::Result<Option<Zeroizing<Vec<u8>>>> {
    const LIMIT: usize = MAX_ASSERTION_FILE_BYTES + 1;
    let file = std::fs::File::open(path)?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(LIMIT));
    file.take(LIMIT as u64).read_to_end(&mut bytes)?;
    Ok((bytes.len() <= MAX_ASSERTION_FILE_BYTES).then_some(bytes))
}

#[async_trait]
impl AssertionProvider for FileAssertion {
    async fn assertion(&self, _request: &AssertionRequest) -> Result<ClientAssertion, Error> {
        ClientAssertion::new(self.read().await?)
    }
}

impl fmt::Debug for FileAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileAssertion")
            .field("path", &self.path)
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_value_must_be_set_and_non_empty() {
        for value in [None, Some(OsString::new())] {
            let err = FileAssertion::from_env_value(value).unwrap_err();
            assert_eq!(err.code(), &codes::ASSERTION_FILE_MISSING);
            assert!(err.message().contains(AZURE_FEDERATED_TOKEN_FILE));
        }
        let provider = FileAssertion::from_env_value(Some("/var/run/token".into())).unwrap();
        assert_eq!(provider.path(), Path::new("/var/run/token"));
    }

    #[test]
    fn capped_reads_stop_one_byte_past_the_limit() {
        let path =
            std::env::temp_dir().join(format!("fic-assertion-capped-{}.jwt", std::process::id()));
        std::fs::write(&path, vec![b'x'; MAX_ASSERTION_FILE_BYTES]).unwrap();
        let bytes = read_capped(&path).unwrap().unwrap();
        assert_eq!(bytes.len(), MAX_ASSERTION_FILE_BYTES);
        // The buffer was sized once: no reallocation left a copy behind.
        assert_eq!(bytes.capacity(), MAX_ASSERTION_FILE_BYTES + 1);
        // A file that grew past the limit after the size check is refused.
        std::fs::write(&path, vec![b'x'; 3 * MAX_ASSERTION_FILE_BYTES]).unwrap();
        assert!(read_capped(&path).unwrap().is_none());
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            read_capped(&path).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
