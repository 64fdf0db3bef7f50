//! [`FileAssertion`]: an assertion read from a file that is rotated in place (Kubernetes
//! workload identity's `AZURE_FEDERATED_TOKEN_FILE`).

use std::ffi::OsString;
use std::fmt;
use std::io;
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
/// `assertion_file_empty`, `assertion_file_unreadable`. A failed read never falls back to an
/// older value.
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

        let bytes = Zeroizing::new(
            tokio::fs::read(&self.path)
                .await
                .map_err(|err| self.io_error(err))?,
        );
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
}
