//! The Azure Arc challenge: the agent answers the first request with
//! `401 WWW-Authenticate: Basic realm=<path>`; proving local access means reading that file
//! and repeating the request with `Authorization: Basic <contents>`.
//!
//! The path comes from the network, so it is checked before anything is opened: absolute, no
//! `.` or `..` segment, a `.key` file whose directory is the agent's token directory. The file
//! is then opened once, without following a symbolic link (`O_NOFOLLOW`) and without blocking
//! on a FIFO, and the *opened* file is checked (a regular file, at most 4096 bytes, the very
//! file that sits in the token directory under that name, with no other hard link) before it
//! is read from the same handle. There is no window between check and read for a swapped file
//! to slip through (CVE-2024-35255).
//!
//! On Linux the kernel's name for the opened file (`/proc/self/fd`) must also be in the token
//! directory, which catches a parent directory swapped for a symbolic link between resolving the
//! directory and opening the file. Other Unix systems lack that check: closing it there needs
//! `openat` relative to a directory handle, which this crate cannot call without `unsafe` (and
//! the Azure Connected Machine agent runs on Linux and Windows only).

use std::path::{Component, Path, PathBuf};

use fic_oauth_core::{Error, Secret};
use http::HeaderValue;

use crate::codes;

/// The largest challenge file accepted (MSAL's limit; 4096 itself is allowed).
pub const MAX_KEY_FILE_BYTES: u64 = 4096;

/// The path named by a `WWW-Authenticate: Basic realm=<path>` header.
pub(crate) fn challenge_path(header: Option<&HeaderValue>) -> Result<PathBuf, Error> {
    let Some(header) = header else {
        return Err(Error::new(
            codes::AZURE_ARC_CHALLENGE_MISSING,
            "[Managed Identity] the Azure Arc endpoint answered 401 without the expected WWW-Authenticate header",
        ));
    };
    let malformed = |why: &str| {
        Error::new(
            codes::AZURE_ARC_CHALLENGE_MALFORMED,
            format!("[Managed Identity] the WWW-Authenticate header from the Azure Arc endpoint is not 'Basic realm=<path>': {why}"),
        )
    };
    let value = header
        .to_str()
        .map_err(|_| malformed("it is not visible ASCII"))?
        .trim();
    let (scheme, rest) = value
        .split_once(char::is_whitespace)
        .ok_or_else(|| malformed("no realm"))?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(malformed("the scheme is not Basic"));
    }
    let (name, path) = rest
        .trim_start()
        .split_once('=')
        .ok_or_else(|| malformed("no realm"))?;
    if !name.trim().eq_ignore_ascii_case("realm") {
        return Err(malformed("the parameter is not realm"));
    }
    let path = path.trim();
    let path = path
        .strip_prefix('"')
        .and_then(|p| p.strip_suffix('"'))
        .unwrap_or(path);
    if path.is_empty() || path.contains('=') || path.contains(',') {
        return Err(malformed("the realm is not a single file path"));
    }
    Ok(PathBuf::from(path))
}

fn rejected(path: &Path, why: &str) -> Error {
    Error::new(
        codes::AZURE_ARC_KEY_PATH_REJECTED,
        format!(
            "[Managed Identity] the file named by the Azure Arc challenge ({}) is not secure: {why}",
            path.display()
        ),
    )
}

fn unreadable(path: &Path, why: &str) -> Error {
    Error::new(
        codes::AZURE_ARC_KEY_FILE_UNREADABLE,
        format!(
            "[Managed Identity] the file named by the Azure Arc challenge ({}) cannot be read: {why}",
            path.display()
        ),
    )
}

fn too_large(path: &Path, size: u64) -> Error {
    Error::new(
        codes::AZURE_ARC_KEY_FILE_TOO_LARGE,
        format!(
            "[Managed Identity] the file named by the Azure Arc challenge ({}) has {size} bytes; at most {MAX_KEY_FILE_BYTES} are accepted",
            path.display()
        ),
    )
}

/// The lexical checks: returns the file name, to be opened inside the token directory.
pub(crate) fn check_path(path: &Path, token_directory: &Path) -> Result<std::ffi::OsString, Error> {
    if !path.is_absolute() {
        return Err(rejected(path, "the path is not absolute"));
    }
    let raw = path.to_string_lossy();
    if raw
        .split(['/', '\\'])
        .any(|segment| segment == ".." || segment == ".")
    {
        return Err(rejected(path, "the path has a '.' or '..' segment"));
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| rejected(path, "the path names no file"))?;
    if path.extension().and_then(|e| e.to_str()) != Some("key") {
        return Err(rejected(path, "the file does not have the .key extension"));
    }
    let parent = path
        .parent()
        .ok_or_else(|| rejected(path, "the path has no directory"))?;
    let same = |a: &Path, b: &Path| a.components().eq(b.components());
    let in_directory = same(parent, token_directory)
        || std::fs::canonicalize(token_directory).is_ok_and(|canonical| same(parent, &canonical));
    if !in_directory {
        return Err(rejected(
            path,
            &format!(
                "the file is not directly in the Azure Arc token directory {}",
                token_directory.display()
            ),
        ));
    }
    debug_assert!(!path.components().any(|c| matches!(c, Component::ParentDir)));
    Ok(file_name.to_owned())
}

/// Reads the challenge file securely and returns the `Authorization` header value.
pub(crate) fn authorization(path: &Path, token_directory: &Path) -> Result<HeaderValue, Error> {
    let file_name = check_path(path, token_directory)?;
    let secret = read_key_file(path, token_directory, &file_name)?;
    let mut value = HeaderValue::from_str(&format!("Basic {}", secret.expose())).map_err(|_| {
        unreadable(
            path,
            "its contents cannot be sent in an HTTP header (control characters or line breaks)",
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(unix)]
fn read_key_file(
    path: &Path,
    token_directory: &Path,
    file_name: &std::ffi::OsStr,
) -> Result<Secret, Error> {
    use std::io::Read as _;
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};

    // The directory without symbolic links, so the file is opened where it was checked to be.
    let directory = std::fs::canonicalize(token_directory).map_err(|e| {
        unreadable(
            path,
            &format!("the token directory cannot be resolved ({e})"),
        )
    })?;
    let target = directory.join(file_name);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(&target)
        .map_err(|e| match e.raw_os_error() {
            Some(code) if code == libc::ELOOP || code == libc::EMLINK => {
                rejected(path, "the file is a symbolic link")
            }
            _ => unreadable(path, &e.to_string()),
        })?;
    // From here on, everything is checked on the opened file.
    let opened = file
        .metadata()
        .map_err(|e| unreadable(path, &e.to_string()))?;
    if !opened.file_type().is_file() {
        return Err(rejected(path, "the file is not a regular file"));
    }
    // A hard link in the token directory to a file elsewhere passes every check by name; the
    // agent's own files have exactly one link.
    if opened.nlink() != 1 {
        return Err(rejected(
            path,
            &format!(
                "the file has {} hard links (it may be a link to a file outside the token directory)",
                opened.nlink()
            ),
        ));
    }
    if opened.len() > MAX_KEY_FILE_BYTES {
        return Err(too_large(path, opened.len()));
    }
    // The opened file must be the one in the token directory under that name (not one that was
    // swapped in through a renamed directory or a hard link elsewhere resolved differently).
    let listed = std::fs::symlink_metadata(&target)
        .map_err(|e| unreadable(path, &format!("the file changed while it was opened ({e})")))?;
    if listed.file_type().is_symlink()
        || listed.dev() != opened.dev()
        || listed.ino() != opened.ino()
    {
        return Err(rejected(path, "the file changed while it was opened"));
    }
    check_opened_location(&file, &directory, path)?;
    let mut contents = zeroize::Zeroizing::new(Vec::with_capacity(256));
    (&file)
        .take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut contents)
        .map_err(|e| unreadable(path, &e.to_string()))?;
    let read = u64::try_from(contents.len()).unwrap_or(u64::MAX);
    if read > MAX_KEY_FILE_BYTES {
        return Err(too_large(path, read));
    }
    let text = std::str::from_utf8(&contents).map_err(|_| unreadable(path, "it is not UTF-8"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    tracing::debug!(path = %path.display(), bytes = read, "read the Azure Arc challenge file");
    Ok(Secret::new(text))
}

/// On Linux, the kernel's own name for the opened file must be inside the token directory.
#[cfg(target_os = "linux")]
fn check_opened_location(file: &std::fs::File, directory: &Path, path: &Path) -> Result<(), Error> {
    use std::os::fd::AsRawFd as _;
    let link = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    match std::fs::read_link(link) {
        Ok(real) if real.parent() == Some(directory) => Ok(()),
        Ok(_) => Err(rejected(
            path,
            "the opened file is not in the token directory",
        )),
        // No procfs (a restricted container): the device and inode check above stands.
        Err(_) => Ok(()),
    }
}

/// Elsewhere there is no safe way to name an opened file (macOS's `F_GETPATH` and `openat`
/// need `unsafe`); the device, inode and link-count checks stand alone.
#[cfg(all(unix, not(target_os = "linux")))]
#[allow(clippy::unnecessary_wraps)]
fn check_opened_location(_: &std::fs::File, _: &Path, _: &Path) -> Result<(), Error> {
    Ok(())
}

#[cfg(not(unix))]
fn read_key_file(_: &Path, _: &Path, _: &std::ffi::OsStr) -> Result<Secret, Error> {
    Err(Error::new(
        codes::AZURE_ARC_UNSUPPORTED_PLATFORM,
        "[Managed Identity] reading the Azure Arc challenge file is supported on Unix only in this version",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(value: &str) -> HeaderValue {
        HeaderValue::from_str(value).unwrap()
    }

    #[test]
    fn challenge_header_forms() {
        let p = |v: &str| challenge_path(Some(&header(v)));
        assert_eq!(
            p("Basic realm=/var/opt/azcmagent/tokens/a.key").unwrap(),
            PathBuf::from("/var/opt/azcmagent/tokens/a.key")
        );
        assert_eq!(
            p("basic  realm=\"/t/a.key\"").unwrap(),
            PathBuf::from("/t/a.key")
        );
        for bad in [
            "Bearer realm=/t/a.key",
            "Basic",
            "Basic foo=/t/a.key",
            "Basic realm=",
            "Basic realm=/t/a=b.key",
            "Basic realm=/t/a.key, x=y",
        ] {
            assert_eq!(
                p(bad).unwrap_err().code(),
                &codes::AZURE_ARC_CHALLENGE_MALFORMED,
                "{bad}"
            );
        }
        assert_eq!(
            challenge_path(None).unwrap_err().code(),
            &codes::AZURE_ARC_CHALLENGE_MISSING
        );
    }

    /// The kernel's name of the opened file decides: a file opened in another directory (as
    /// after a parent directory swapped for a link) is refused.
    #[cfg(target_os = "linux")]
    #[test]
    fn opened_file_must_be_in_the_token_directory() {
        let tokens = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let inside = tokens.path().join("a.key");
        let outside = elsewhere.path().join("a.key");
        std::fs::write(&inside, "x").unwrap();
        std::fs::write(&outside, "x").unwrap();
        let directory = std::fs::canonicalize(tokens.path()).unwrap();
        let file = std::fs::File::open(&inside).unwrap();
        assert!(check_opened_location(&file, &directory, &inside).is_ok());
        let file = std::fs::File::open(&outside).unwrap();
        let err = check_opened_location(&file, &directory, &inside).unwrap_err();
        assert_eq!(err.code(), &codes::AZURE_ARC_KEY_PATH_REJECTED);
        assert!(
            err.message().contains("not in the token directory"),
            "{err}"
        );
    }

    #[test]
    fn lexical_path_rules() {
        let dir = Path::new("/var/opt/azcmagent/tokens/");
        assert!(check_path(Path::new("/var/opt/azcmagent/tokens/abc.key"), dir).is_ok());
        for bad in [
            "relative/abc.key",
            "/var/opt/azcmagent/tokens/abc.txt",
            "/var/opt/azcmagent/tokens/abc.key.bak",
            "/var/opt/azcmagent/tokens/.key",
            "/var/opt/azcmagent/tokens/abc.KEY",
            "/var/opt/azcmagent/abc.key",
            "/var/opt/azcmagent/tokens/sub/abc.key",
            "/var/opt/azcmagent/tokens/../tokens/abc.key",
            "/var/opt/azcmagent/tokens/./abc.key",
            "/etc/abc.key",
        ] {
            assert_eq!(
                check_path(Path::new(bad), dir).unwrap_err().code(),
                &codes::AZURE_ARC_KEY_PATH_REJECTED,
                "{bad}"
            );
        }
    }
}
