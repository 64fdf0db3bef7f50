//! [`FileCache`]: the MSAL unified JSON file (PROTOCOL §6), shared safely between processes.
//!
//! - **Format**: the file other MSAL libraries write — top-level `AccessToken`, `RefreshToken`,
//!   `IdToken`, `Account`, `AppMetadata`, keys in the unified schema, entries as described in
//!   [`format`](crate::format). Unknown top-level nodes, entries this library does not model and
//!   unknown fields of entries it does not touch are written back byte for byte.
//! - **Many processes**: every write takes an advisory lock on `<path>.lockfile` (waiting at most
//!   [`FileCacheBuilder::lock_timeout`]), re-reads the file, applies its one change and replaces
//!   the file atomically (temporary file in the same directory, fsync, rename, fsync of the
//!   directory), so concurrent writers lose nothing. Readers take no lock: a rename is atomic,
//!   they see the old file or the new one. The lock file's name is the one the MSAL extension
//!   libraries (.NET, Python) lock beside their cache file, so a process of theirs writing the
//!   same file waits for ours and ours for theirs (both use an exclusive `flock` on it).
//! - **The lock file** (`<path>.lockfile`): the lock is an exclusive `flock` on it (`LockFileEx`
//!   on Windows), taken without blocking and retried with a short backoff until the lock
//!   timeout. The MSAL libraries delete the lock file when they release it (.NET opens it
//!   delete-on-close; Python removes it after unlocking), so a waiter holding the old file open
//!   can obtain a lock on a file that no longer has the name, while a newcomer creates and locks
//!   a new file under it. This cache therefore, once its `flock` is granted, checks (Unix) that
//!   the path still names the file it locked (same device and inode); if the path is gone or
//!   names another file it lets go and starts over, within the same timeout. It never deletes
//!   the lock file itself: releasing only unlocks (and closes) it, so every process that agrees
//!   on the name agrees on the file. A holder that unlocks *before* deleting (Python, older .NET
//!   runtimes; current .NET deletes first) still leaves a short window no check can close, the
//!   same one those libraries have among themselves. On Windows the identity is not checked
//!   (std has no stable file index there); an open refused with a sharing violation (MSAL .NET
//!   holds the file open unshared) counts as a busy lock and is retried until the timeout.
//! - **Reads are memory reads**: the file is parsed into an index when it changed (its length,
//!   modification time or inode differ); within [`FileCacheBuilder::reload_interval`] of the last
//!   look even that check is skipped and lookups are answered without IO
//!   ([`TokenCache::visit_now`]). File IO runs on tokio's blocking pool.
//! - **Failures never block acquisition**: a corrupt or truncated file is logged, set aside as
//!   `<path>.corrupt-<unix-seconds>` and treated as empty; a lock that cannot be had in time, or
//!   a file that cannot be written, leaves the change in this process's memory (served from
//!   there, and written with the next write that succeeds, by [`FileCache::flush`], or when the
//!   last handle is dropped) and returns an error the engine logs.
//! - **Encryption at rest** (feature `encryption`): the whole file is one AES-256-GCM envelope
//!   (see `EncryptionKey`). A well-formed envelope that cannot be decrypted — wrong key (the
//!   authentication tag does not match), encrypted while this process has no key, or a newer
//!   envelope version — is **never overwritten**: reads and writes return
//!   `cache_decryption_failed` (writes still reach this process's memory), so a misconfigured
//!   process cannot destroy the cache of the correctly configured ones. An envelope that is
//!   structurally damaged (shorter than its header and tag, or of version 0) is corrupt, key or
//!   not, and set aside like a corrupt plain file; so is a plain-text file found where a key is
//!   configured: content that is not authenticated is not trusted. (A file truncated past its
//!   header cannot be told from a wrong key: GCM only says the tag does not match.)
//! - Unix: the file, its lock and the temporary files are created with mode `0600`, missing
//!   directories with `0700`.
//! - Access tokens (this library can read) that expired over an hour ago are dropped when the
//!   file is next written, so one-off keys do not make it grow without bound; nothing else is
//!   ever dropped.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use fic_oauth_core::{AccessToken, Clock, ManualClock, Secret, TokenSource, TokenType};
//! use fic_token_cache::{AccessTokenKey, AcquisitionEngine, FetchFuture, FileCache, Lookup, TokenCache};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), fic_oauth_core::Error> {
//! let dir = std::env::temp_dir().join(format!("fic-file-cache-doc-{}", uuid::Uuid::new_v4()));
//! let path = dir.join("msal_cache.json");
//! let clock = ManualClock::default();
//! let engine = AcquisitionEngine::builder(Arc::new(FileCache::new(&path)))
//!     .clock(Arc::new(clock.clone()))
//!     .build();
//! let lookup = Lookup::new(AccessTokenKey::app("login.microsoftonline.com", "cid", "tid", ["s/.default"]));
//! let expires = clock.now() + Duration::from_secs(3600);
//! let fetch = move || {
//!     Box::pin(async move { Ok(AccessToken::new(Secret::new("t"), TokenType::Bearer, expires)) }) as FetchFuture
//! };
//! engine.acquire(&lookup, fetch).await?;
//!
//! // The file is MSAL's, and another cache on it (another process) sees the token.
//! let text = std::fs::read_to_string(&path).unwrap();
//! assert!(text.contains(r#""-login.microsoftonline.com-accesstoken-cid-tid-s/.default": {"#));
//! assert!(FileCache::new(&path).get(lookup.key()).await?.is_some());
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use fic_oauth_core::time::unix_seconds;
use fic_oauth_core::{Clock, Error, SystemClock};
use zeroize::Zeroizing;

use crate::cache::TokenCache;
use crate::codes;
use crate::entry::CacheEntry;
use crate::format::Document;
use crate::key::{CacheKey, KeyHasher};

#[cfg(feature = "encryption")]
use crate::crypto::EncryptionKey;

/// The default longest wait for the file's lock.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(2);
/// The default time during which lookups trust the index without looking at the file.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// How long after its expiry an access token is dropped from the file on the next write.
const EXPIRED_ACCESS_TOKEN_GRACE: Duration = Duration::from_secs(3600);

/// The associated data of the file's envelope.
#[cfg(feature = "encryption")]
const FILE_CONTEXT: &[u8] = b"fic-token-cache/file";

/// Builds a [`FileCache`].
#[derive(Debug)]
pub struct FileCacheBuilder {
    path: PathBuf,
    clock: Arc<dyn Clock>,
    lock_timeout: Duration,
    reload_interval: Duration,
    durable: bool,
    #[cfg(feature = "encryption")]
    key: Option<EncryptionKey>,
}

impl FileCacheBuilder {
    /// The clock (default: the system clock): the reload interval is measured on it, and set-aside
    /// files are named with it.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The longest wait for the lock before a write gives up on the file (default 2 s).
    #[must_use]
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// How long lookups trust the in-memory index without checking whether the file changed
    /// (default 1 s; zero checks on every lookup). Writes of other processes are seen at most this
    /// late.
    #[must_use]
    pub fn reload_interval(mut self, interval: Duration) -> Self {
        self.reload_interval = interval;
        self
    }

    /// Whether writes are synced to disk before and after the rename (default true). Turning it
    /// off trades crash safety for speed.
    #[must_use]
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Encrypts the file with `key` (AES-256-GCM).
    #[cfg(feature = "encryption")]
    #[must_use]
    pub fn encryption_key(mut self, key: EncryptionKey) -> Self {
        self.key = Some(key);
        self
    }

    /// The cache. Nothing is read until the first lookup.
    pub fn build(self) -> FileCache {
        let mut lock_path = OsString::from(self.path.as_os_str());
        lock_path.push(".lockfile");
        FileCache {
            inner: Arc::new(Inner {
                path: self.path,
                lock_path: PathBuf::from(lock_path),
                clock: self.clock,
                lock_timeout: self.lock_timeout,
                reload_interval: self.reload_interval,
                durable: self.durable,
                #[cfg(feature = "encryption")]
                key: self.key,
                state: RwLock::new(State::default()),
                checked_ms: AtomicU64::new(0),
                reloading: tokio::sync::Mutex::new(()),
            }),
        }
    }
}

/// A token cache in an MSAL unified-schema JSON file; see the [module docs](self).
#[derive(Clone)]
pub struct FileCache {
    inner: Arc<Inner>,
}

/// What identifies one version of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
    device: u64,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Self {
        #[cfg(unix)]
        let (inode, device) = {
            use std::os::unix::fs::MetadataExt;
            (meta.ino(), meta.dev())
        };
        #[cfg(not(unix))]
        let (inode, device) = (0, 0);
        Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
            device,
        }
    }
}

type Entries = HashMap<CacheKey, Arc<CacheEntry>, KeyHasher>;

#[derive(Default)]
struct State {
    /// The file's entries.
    entries: Entries,
    /// Changes that did not reach the file (lock timeout, IO error, undecryptable file):
    /// served from here (`None`: removed), and written with the next write that succeeds.
    pending: HashMap<CacheKey, Option<Arc<CacheEntry>>, KeyHasher>,
    /// The file the entries reflect (`None`: there was no file).
    stamp: Option<Stamp>,
    loaded: bool,
    /// Bumped on every change, so a slow reload does not replace a newer state.
    generation: u64,
    /// Why the file cannot be used (`cache_decryption_failed`).
    problem: Option<Error>,
    /// The last file version a warning was logged for.
    warned: Option<Stamp>,
}

impl State {
    /// The entry under `key`: a pending change first, then the file's.
    fn lookup(&self, key: &CacheKey) -> Option<&Arc<CacheEntry>> {
        match self.pending.get(key) {
            Some(pending) => pending.as_ref(),
            None => self.entries.get(key),
        }
    }

    fn len(&self) -> usize {
        let added = self
            .pending
            .iter()
            .filter(|(k, v)| v.is_some() && !self.entries.contains_key(*k))
            .count();
        let removed = self
            .pending
            .iter()
            .filter(|(k, v)| v.is_none() && self.entries.contains_key(*k))
            .count();
        self.entries.len() + added - removed
    }
}

struct Inner {
    path: PathBuf,
    lock_path: PathBuf,
    clock: Arc<dyn Clock>,
    lock_timeout: Duration,
    reload_interval: Duration,
    durable: bool,
    #[cfg(feature = "encryption")]
    key: Option<EncryptionKey>,
    state: RwLock<State>,
    /// Clock time (ms since the epoch) of the last look at the file; 0: never.
    checked_ms: AtomicU64,
    reloading: tokio::sync::Mutex<()>,
}

type Bytes = Zeroizing<Vec<u8>>;

/// The file's content, decoded.
enum Content {
    Json(Zeroizing<Vec<u8>>),
    Corrupt(String),
    Undecryptable(Error),
}

/// One change: an entry to store, or `None` to remove the key.
type Change = (CacheKey, Option<Arc<CacheEntry>>);

fn io_error(what: &str, path: &Path, error: &io::Error) -> Error {
    Error::new(
        codes::CACHE_IO,
        format!(
            "token cache file {what} failed for {}: {error}",
            path.display()
        ),
    )
}

#[cfg(unix)]
fn private(options: &mut OpenOptions) -> &mut OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    options.mode(0o600)
}

#[cfg(not(unix))]
fn private(options: &mut OpenOptions) -> &mut OpenOptions {
    options
}

impl Inner {
    fn state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn state_mut(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        let ms = self
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        u64::try_from(ms).unwrap_or(u64::MAX).max(1)
    }

    /// Whether the index may be trusted without looking at the file.
    fn is_fresh(&self) -> bool {
        let checked = self.checked_ms.load(Ordering::Acquire);
        let window = u64::try_from(self.reload_interval.as_millis()).unwrap_or(u64::MAX);
        checked != 0 && self.now_ms().saturating_sub(checked) < window
    }

    fn mark_checked(&self) {
        self.checked_ms.store(self.now_ms(), Ordering::Release);
    }

    fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// The current file and its stamp (`None` when there is none).
    fn read_current(&self) -> Result<Option<(Bytes, Stamp)>, Error> {
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("open", &self.path, &e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| io_error("stat", &self.path, &e))?;
        let capacity = usize::try_from(meta.len()).unwrap_or(0).saturating_add(1);
        let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
        file.read_to_end(&mut bytes)
            .map_err(|e| io_error("read", &self.path, &e))?;
        Ok(Some((bytes, Stamp::of(&meta))))
    }

    fn decode(&self, bytes: Zeroizing<Vec<u8>>) -> Content {
        if crate::crypto::is_envelope(&bytes) {
            match crate::crypto::shape(&bytes) {
                crate::crypto::Shape::Sound => {}
                // Truncated or impossible: damage, whatever the key (a wrong key cannot make an
                // envelope shorter than its header).
                crate::crypto::Shape::Damaged(reason) => {
                    return Content::Corrupt(format!("damaged encrypted file: {reason}"));
                }
                crate::crypto::Shape::Newer(version) => {
                    return Content::Undecryptable(Error::new(
                        codes::CACHE_DECRYPTION_FAILED,
                        format!(
                            "the token cache file {} is encrypted in envelope version {version}, written by a newer fic-rs; it is left untouched",
                            self.path.display()
                        ),
                    ));
                }
            }
            #[cfg(feature = "encryption")]
            if let Some(key) = &self.key {
                return match crate::crypto::open(key, FILE_CONTEXT, &bytes) {
                    Ok(plain) => Content::Json(plain),
                    Err(error) => Content::Undecryptable(error),
                };
            }
            return Content::Undecryptable(Error::new(
                codes::CACHE_DECRYPTION_FAILED,
                format!(
                    "the token cache file {} is encrypted and no key is configured; it is left untouched",
                    self.path.display()
                ),
            ));
        }
        #[cfg(feature = "encryption")]
        if self.key.is_some() && !bytes.iter().all(u8::is_ascii_whitespace) {
            return Content::Corrupt(
                "the file is not encrypted but an encryption key is configured".into(),
            );
        }
        Content::Json(bytes)
    }

    #[cfg_attr(
        not(feature = "encryption"),
        allow(clippy::unused_self, clippy::unnecessary_wraps)
    )]
    fn encode(&self, json: Zeroizing<Vec<u8>>) -> Result<Zeroizing<Vec<u8>>, Error> {
        #[cfg(feature = "encryption")]
        if let Some(key) = &self.key {
            return crate::crypto::seal(key, FILE_CONTEXT, &json).map(Zeroizing::new);
        }
        Ok(json)
    }

    fn warn_once(&self, stamp: Stamp, message: impl FnOnce()) {
        let mut state = self.state_mut();
        if state.warned != Some(stamp) {
            state.warned = Some(stamp);
            drop(state);
            message();
        }
    }

    /// Looks at the file and reloads the index when the file changed.
    fn refresh(&self) -> Result<(), Error> {
        let generation = {
            let state = self.state();
            if state.loaded {
                match fs::metadata(&self.path) {
                    Ok(meta) if state.stamp == Some(Stamp::of(&meta)) => {
                        self.mark_checked();
                        return Ok(());
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound && state.stamp.is_none() => {
                        self.mark_checked();
                        return Ok(());
                    }
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(io_error("stat", &self.path, &e));
                    }
                    _ => {}
                }
            }
            state.generation
        };
        let mut entries = HashMap::with_hasher(KeyHasher);
        let mut problem = None;
        let current = self.read_current()?;
        let stamp = current.as_ref().map(|(_, stamp)| *stamp);
        if let Some((bytes, stamp)) = current {
            let corrupt = match self.decode(bytes) {
                Content::Json(json) => match Document::parse(&json) {
                    Ok(doc) => {
                        entries.extend(doc.entries().map(|(k, e)| (k, Arc::new(e))));
                        None
                    }
                    Err(reason) => Some(reason),
                },
                Content::Corrupt(reason) => Some(reason),
                Content::Undecryptable(error) => {
                    self.warn_once(stamp, || {
                        tracing::warn!(path = %self.path.display(), code = %error.code(), "{}", error.message());
                    });
                    problem = Some(error);
                    None
                }
            };
            if let Some(reason) = corrupt {
                self.set_aside_if_unchanged(stamp, &reason);
            }
        }
        let mut state = self.state_mut();
        if state.generation == generation {
            state.entries = entries;
            state.stamp = stamp;
            state.loaded = true;
            state.problem = problem;
            state.generation += 1;
        }
        drop(state);
        self.mark_checked();
        Ok(())
    }

    /// From a reader: sets a corrupt file aside if its lock is free now and it is still the
    /// same file; otherwise the next writer does.
    fn set_aside_if_unchanged(&self, stamp: Stamp, reason: &str) {
        let Ok(lock) = self.lock_with(Duration::ZERO) else {
            self.warn_once(stamp, || {
                tracing::warn!(path = %self.path.display(), %reason, "token cache file is corrupt; treated as empty until the next write sets it aside");
            });
            return;
        };
        let same = fs::metadata(&self.path).is_ok_and(|meta| Stamp::of(&meta) == stamp);
        if same {
            if let Err(error) = self.set_aside(reason) {
                tracing::warn!(code = %error.code(), "{}", error.message());
            }
        }
        unlock(&lock);
    }

    /// Renames the current (corrupt) file to `<path>.corrupt-<unix-seconds>`; needs the lock.
    fn set_aside(&self, reason: &str) -> Result<(), Error> {
        let seconds = unix_seconds(self.clock.now());
        let mut aside = OsString::from(self.path.as_os_str());
        aside.push(format!(".corrupt-{seconds}"));
        let mut target = PathBuf::from(&aside);
        let mut n = 1;
        while target.exists() {
            let mut next = aside.clone();
            next.push(format!("-{n}"));
            target = PathBuf::from(next);
            n += 1;
        }
        match fs::rename(&self.path, &target) {
            Ok(()) => {
                tracing::warn!(
                    path = %self.path.display(),
                    aside = %target.display(),
                    %reason,
                    "token cache file is corrupt; set aside, starting empty"
                );
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("set-aside rename", &self.path, &e)),
        }
    }

    fn ensure_dir(&self) -> Result<(), Error> {
        let dir = self.dir();
        if dir.is_dir() {
            return Ok(());
        }
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(&dir)
            .map_err(|e| io_error("directory creation", &dir, &e))
    }

    /// Takes the lock on `<path>.lockfile`, waiting at most `timeout` (see "The lock file" in
    /// the [module docs](self)).
    fn lock_with(&self, timeout: Duration) -> Result<File, Error> {
        self.ensure_dir()?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        // Kept open while the lock is busy; reopened when the path names another file.
        let mut opened: Option<File> = None;
        loop {
            let file = match opened.take() {
                Some(file) => Some(file),
                None => self.open_lock_file()?,
            };
            let mut retry_now = false;
            if let Some(file) = file {
                match fs4::FileExt::try_lock(&file) {
                    Ok(()) => {
                        if is_still_at(&file, &self.lock_path)
                            .map_err(|e| io_error("lock file stat", &self.lock_path, &e))?
                        {
                            return Ok(file);
                        }
                        // The holder we waited for deleted the file on release (MSAL's
                        // libraries do) and the path now names another file, or none: a lock
                        // on this one excludes nobody. Open the path again.
                        unlock(&file);
                        drop(file);
                        retry_now = true;
                    }
                    Err(fs4::TryLockError::WouldBlock) => opened = Some(file),
                    Err(fs4::TryLockError::Error(e)) => {
                        return Err(io_error("lock", &self.lock_path, &e));
                    }
                }
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(Error::new(
                    codes::CACHE_LOCK_TIMEOUT,
                    format!(
                        "the token cache lock {} was not obtained within {} ms",
                        self.lock_path.display(),
                        timeout.as_millis()
                    ),
                )
                .with_retryable(true));
            }
            if !retry_now {
                // A blocking-pool thread, bounded by the deadline.
                std::thread::sleep(pause.min(timeout.saturating_sub(waited)));
                pause = (pause * 2).min(Duration::from_millis(20));
            }
        }
    }

    /// Opens (creating it if needed) the lock file; `None` when another process holds it open
    /// exclusively (Windows: MSAL .NET opens it without sharing), which is a busy lock.
    fn open_lock_file(&self) -> Result<Option<File>, Error> {
        match private(OpenOptions::new().read(true).write(true).create(true))
            .truncate(false)
            .open(&self.lock_path)
        {
            Ok(file) => Ok(Some(file)),
            Err(e) if is_sharing_violation(&e) => Ok(None),
            Err(e) => Err(io_error("lock file open", &self.lock_path, &e)),
        }
    }

    fn apply(entries: &mut Entries, key: &CacheKey, entry: Option<&Arc<CacheEntry>>) {
        match entry {
            Some(entry) => {
                entries.insert(key.clone(), Arc::clone(entry));
            }
            None => {
                entries.remove(key);
            }
        }
    }

    /// Keeps `changes` in this process's memory (the file could not be written).
    fn apply_in_memory(&self, changes: Vec<Change>) {
        self.state_mut().pending.extend(changes);
    }

    fn mutate(&self, changes: Vec<Change>) -> Result<(), Error> {
        self.mutate_within(changes, self.lock_timeout)
    }

    fn mutate_within(&self, changes: Vec<Change>, lock_timeout: Duration) -> Result<(), Error> {
        let lock = match self.lock_with(lock_timeout) {
            Ok(lock) => lock,
            Err(error) => {
                self.apply_in_memory(changes);
                return Err(error);
            }
        };
        let result = self.mutate_locked(&changes);
        unlock(&lock);
        if result.is_err() {
            self.apply_in_memory(changes);
        }
        result
    }

    fn mutate_locked(&self, new: &[Change]) -> Result<(), Error> {
        let current = self.read_current()?;
        let (stamp, bytes) = match current {
            Some((bytes, stamp)) => (Some(stamp), Some(bytes)),
            None => (None, None),
        };
        let reuse_index = {
            let state = self.state();
            state.loaded && state.problem.is_none() && state.stamp == stamp
        };
        let json;
        let mut doc = match bytes.map(|b| self.decode(b)) {
            None => Document::empty(),
            Some(Content::Json(decoded)) => {
                json = decoded;
                match Document::parse(&json) {
                    Ok(doc) => doc,
                    Err(reason) => {
                        self.set_aside(&reason)?;
                        Document::empty()
                    }
                }
            }
            Some(Content::Corrupt(reason)) => {
                self.set_aside(&reason)?;
                Document::empty()
            }
            Some(Content::Undecryptable(error)) => {
                let mut state = self.state_mut();
                if state.stamp != stamp {
                    state.entries.clear();
                }
                state.stamp = stamp;
                state.loaded = true;
                state.problem = Some(error.clone());
                state.generation += 1;
                return Err(error);
            }
        };
        let index: Option<Entries> =
            (!reuse_index).then(|| doc.entries().map(|(k, e)| (k, Arc::new(e))).collect());
        // Earlier changes that did not reach the file go in first, then these.
        let mut changes: Vec<Change> = self
            .state()
            .pending
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let pending = changes.len();
        changes.extend(new.iter().cloned());
        let mut changed = false;
        for (key, entry) in &changes {
            changed |= match entry {
                Some(entry) => {
                    doc.put(key, entry);
                    true
                }
                None => doc.remove(key),
            };
        }
        // Access tokens long expired go while the file is rewritten anyway (the file would grow
        // without bound with one-off keys otherwise).
        let mut expired = Vec::new();
        if changed {
            let now = self.clock.now();
            let state = self.state();
            let entries = index.as_ref().unwrap_or(&state.entries);
            expired.extend(
                entries
                    .iter()
                    .filter(|(key, entry)| {
                        entry.as_access_token().is_some()
                            && entry
                                .expires_on()
                                // Checked: an entry put with a far-future expiry must not
                                // overflow (it is simply not expired).
                                .and_then(|at| at.checked_add(EXPIRED_ACCESS_TOKEN_GRACE))
                                .is_some_and(|stale_after| stale_after < now)
                            && !changes.iter().any(|(changed, _)| changed == *key)
                    })
                    .map(|(key, _)| key.clone()),
            );
        }
        for key in &expired {
            doc.remove(key);
        }
        let mut new_stamp = stamp;
        if changed {
            let bytes = self.encode(doc.to_bytes())?;
            self.write_atomically(&bytes)
                .map_err(|e| io_error("write", &self.path, &e))?;
            new_stamp = fs::metadata(&self.path).ok().map(|m| Stamp::of(&m));
        }
        drop(doc);
        let mut state = self.state_mut();
        if let Some(index) = index {
            state.entries = index;
        }
        for (key, entry) in &changes {
            Self::apply(&mut state.entries, key, entry.as_ref());
        }
        for key in &expired {
            state.entries.remove(key);
        }
        // Forget the pending changes written now (not ones added meanwhile).
        for (key, entry) in &changes[..pending] {
            let same = state
                .pending
                .get(key)
                .is_some_and(|current| match (current, entry) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                });
            if same {
                state.pending.remove(key);
            }
        }
        state.stamp = new_stamp;
        state.loaded = true;
        state.problem = None;
        state.generation += 1;
        drop(state);
        self.mark_checked();
        Ok(())
    }

    fn write_atomically(&self, bytes: &[u8]) -> io::Result<()> {
        let dir = self.dir();
        let name = self
            .path
            .file_name()
            .map_or_else(|| "cache".into(), |n| n.to_string_lossy().into_owned());
        let temp = dir.join(format!(
            ".{name}.{}-{}.tmp",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let result = (|| {
            let mut file = private(OpenOptions::new().write(true).create_new(true)).open(&temp)?;
            file.write_all(bytes)?;
            if self.durable {
                file.sync_all()?;
            }
            drop(file);
            fs::rename(&temp, &self.path)?;
            if self.durable {
                sync_dir(&dir)?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }
}

/// The longest the last handle's drop waits for the lock (it may run on an async runtime's
/// thread); [`FileCache::flush`] before shutdown waits the full lock timeout.
const DROP_LOCK_WAIT: Duration = Duration::from_millis(100);

impl Drop for Inner {
    /// The last handle is going: changes still held in memory get one more try (a lock wait of
    /// at most [`DROP_LOCK_WAIT`]), so that a write that lost a race for the lock is not lost
    /// with the process.
    fn drop(&mut self) {
        let pending = self.state().pending.len();
        if pending == 0 {
            return;
        }
        let path = self.path.display().to_string();
        match self.mutate_within(Vec::new(), self.lock_timeout.min(DROP_LOCK_WAIT)) {
            Ok(()) => tracing::debug!(pending, path, "token cache changes written on close"),
            Err(error) => tracing::warn!(
                pending,
                path,
                code = %error.code(),
                "token cache changes could not be written on close and are lost"
            ),
        }
    }
}

/// Releases a lock taken by `lock_with`. The lock file is left in place, never deleted:
/// deleting it is what lets two processes lock two different files under the same name.
fn unlock(lock: &File) {
    // Closing the descriptor releases the lock too; this only makes it explicit.
    let _ = fs4::FileExt::unlock(lock);
}

/// Whether `path` still names the file `file` has open (same device and inode).
#[cfg(unix)]
fn is_still_at(file: &File, path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let held = file.metadata()?;
    match fs::metadata(path) {
        Ok(current) => Ok(held.dev() == current.dev() && held.ino() == current.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Not checked elsewhere: std has no stable file identity on Windows (see the module docs).
#[cfg(not(unix))]
#[allow(clippy::unnecessary_wraps)]
fn is_still_at(_: &File, _: &Path) -> io::Result<bool> {
    Ok(true)
}

/// Windows' `ERROR_SHARING_VIOLATION`: another process has the file open without sharing it.
const ERROR_SHARING_VIOLATION: i32 = 32;

/// Whether opening failed because another process holds the file open exclusively (Windows).
fn is_sharing_violation(error: &io::Error) -> bool {
    cfg!(windows) && error.raw_os_error() == Some(ERROR_SHARING_VIOLATION)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_: &Path) -> io::Result<()> {
    Ok(())
}

impl FileCache {
    /// A cache on `path` with the defaults (system clock, 2 s lock wait, 1 s reload interval,
    /// durable writes, no encryption).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::builder(path).build()
    }

    /// A builder for a cache on `path`.
    pub fn builder(path: impl Into<PathBuf>) -> FileCacheBuilder {
        FileCacheBuilder {
            path: path.into(),
            clock: Arc::new(SystemClock),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
            durable: true,
            #[cfg(feature = "encryption")]
            key: None,
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The lock file (`<path>.lockfile`).
    pub fn lock_path(&self) -> &Path {
        &self.inner.lock_path
    }

    /// Looks at the file now (whatever the reload interval) and returns how many entries this
    /// cache holds; `cache_decryption_failed` when the file cannot be decrypted. Call it at start
    /// to surface a misconfiguration early.
    pub async fn reload(&self) -> Result<usize, Error> {
        let _guard = self.inner.reloading.lock().await;
        self.blocking(Inner::refresh).await?;
        let state = self.inner.state();
        match &state.problem {
            Some(problem) => Err(problem.clone()),
            None => Ok(state.len()),
        }
    }

    /// Stores several entries with one write of the file (one lock, one re-read, one replace):
    /// e.g. the access, refresh and id tokens and the account of one user sign-in.
    pub async fn put_many(
        &self,
        entries: impl IntoIterator<Item = (CacheKey, Arc<CacheEntry>)>,
    ) -> Result<(), Error> {
        let changes: Vec<Change> = entries.into_iter().map(|(k, e)| (k, Some(e))).collect();
        if changes.is_empty() {
            return Ok(());
        }
        self.blocking(move |inner| inner.mutate(changes)).await
    }

    /// Writes the changes that have not reached the file yet (a write that timed out on the
    /// lock or failed on IO keeps its change in memory) and returns how many were written; `0`,
    /// without touching the file, when there are none. Call it before a planned shutdown: the
    /// last handle dropped also tries, but waits for the lock only briefly and can only log a
    /// failure.
    pub async fn flush(&self) -> Result<usize, Error> {
        if self.pending_len() == 0 {
            return Ok(0);
        }
        self.blocking(move |inner| {
            let before = inner.state().pending.len();
            inner.mutate(Vec::new())?;
            // Changes made meanwhile by other tasks may still be pending; count what went.
            Ok(before.saturating_sub(inner.state().pending.len()))
        })
        .await
    }

    /// How many changes are held in memory because they could not be written to the file yet.
    pub fn pending_len(&self) -> usize {
        self.inner.state().pending.len()
    }

    /// The number of entries in memory (as of the last look at the file).
    pub fn len(&self) -> usize {
        self.inner.state().len()
    }

    /// Whether there are no entries in memory.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs file IO on tokio's blocking pool (inline when there is no tokio runtime).
    async fn blocking<T, F>(&self, work: F) -> Result<T, Error>
    where
        F: FnOnce(&Inner) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime
                .spawn_blocking(move || work(&inner))
                .await
                .map_err(|e| {
                    Error::new(
                        codes::CACHE_IO,
                        format!("token cache file task failed: {e}"),
                    )
                })?,
            Err(_) => work(&inner),
        }
    }

    async fn ensure_fresh(&self) -> Result<(), Error> {
        if self.inner.is_fresh() {
            return Ok(());
        }
        let _guard = self.inner.reloading.lock().await;
        if self.inner.is_fresh() {
            return Ok(());
        }
        self.blocking(Inner::refresh).await
    }
}

impl fmt::Debug for FileCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state();
        let mut s = f.debug_struct("FileCache");
        s.field("path", &self.inner.path)
            .field("entries", &state.len())
            .field("pending", &state.pending.len())
            .field("problem", &state.problem.as_ref().map(Error::code));
        #[cfg(feature = "encryption")]
        s.field("encrypted", &self.inner.key.is_some());
        s.finish()
    }
}

#[async_trait]
impl TokenCache for FileCache {
    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<CacheEntry>>, Error> {
        self.ensure_fresh().await?;
        let state = self.inner.state();
        match (state.lookup(key), &state.problem) {
            (Some(entry), _) => Ok(Some(Arc::clone(entry))),
            (None, Some(problem)) => Err(problem.clone()),
            (None, None) => Ok(None),
        }
    }

    async fn put(&self, key: CacheKey, entry: Arc<CacheEntry>) -> Result<(), Error> {
        self.blocking(move |inner| inner.mutate(vec![(key, Some(entry))]))
            .await
    }

    async fn remove(&self, key: &CacheKey) -> Result<(), Error> {
        let key = key.clone();
        self.blocking(move |inner| inner.mutate(vec![(key, None)]))
            .await
    }

    fn visit_now(&self, key: &CacheKey, visit: &mut dyn FnMut(Option<&CacheEntry>)) -> bool {
        if !self.inner.is_fresh() {
            return false;
        }
        let state = self.inner.state();
        if state.problem.is_some() {
            // Let `get` report it.
            return false;
        }
        visit(state.lookup(key).map(|entry| &**entry));
        true
    }
}
