//! The Azure Arc challenge: the file named by the 401 is read only when it is a `.key` file
//! directly in the token directory, not a link, at most 4096 bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use fic_managed_identity::{codes, ManagedIdentitySource};
use fic_oauth_core::{Error, ErrorCode, ManualClock, TokenCredential, TokenRequestOptions};
use support::*;

const ARC_ENDPOINT: &str = "http://127.0.0.1:40342/metadata/identity/oauth2/token";
const SECRET: &str = "c2VjcmV0LWNoYWxsZW5nZS12YWx1ZQ";

struct Setup {
    tokens: tempfile::TempDir,
    outside: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        Self {
            tokens: tempfile::tempdir().unwrap(),
            outside: tempfile::tempdir().unwrap(),
        }
    }

    fn token_file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.tokens.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

fn challenge(header: Option<&str>) -> http::Response<Bytes> {
    let mut builder = http::Response::builder().status(401);
    if let Some(value) = header {
        builder = builder.header("www-authenticate", value);
    }
    builder
        .body(Bytes::from_static(br#"{"error":"unauthorized"}"#))
        .unwrap()
}

/// Runs a request whose first answer is a challenge naming `realm` (or no header).
async fn run(
    setup: &Setup,
    header: Option<String>,
) -> (Result<fic_oauth_core::AccessToken, Error>, FakeTransport) {
    let transport = FakeTransport::new();
    transport.reply_with(challenge(header.as_deref()));
    transport.reply(200, &token_body("arc-token"));
    let clock = ManualClock::at_unix(NOW);
    let credential = builder(
        &transport,
        &clock,
        env(&[
            ("IDENTITY_ENDPOINT", ARC_ENDPOINT),
            ("IMDS_ENDPOINT", "http://127.0.0.1:40342"),
        ]),
    )
    .arc_token_directory(setup.tokens.path())
    .build()
    .unwrap();
    assert_eq!(credential.source(), ManagedIdentitySource::AzureArc);
    let result = credential
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await;
    (result, transport)
}

#[allow(clippy::unnecessary_wraps)]
fn realm(path: &Path) -> Option<String> {
    Some(format!("Basic realm={}", path.display()))
}

/// The challenge was refused with `code`, and the file never reached the wire.
fn assert_refused(
    result: Result<fic_oauth_core::AccessToken, Error>,
    transport: &FakeTransport,
    code: &ErrorCode,
) -> Error {
    let err = result.unwrap_err();
    assert_eq!(err.code(), code, "{err}");
    let requests = transport.requests();
    assert_eq!(
        requests.len(),
        1,
        "no second request after a refused challenge"
    );
    assert!(requests[0].header("authorization").is_none());
    assert!(!format!("{err:?}").contains(SECRET));
    err
}

#[tokio::test]
async fn challenge_is_answered_with_the_file_contents() {
    let setup = Setup::new();
    let path = setup.token_file("0f1e2d3c.key", SECRET.as_bytes());
    let (result, transport) = run(&setup, realm(&path)).await;
    let token = result.unwrap();
    assert_eq!(token.token.expose(), "arc-token");
    let requests = transport.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].uri, requests[0].uri);
    assert_eq!(requests[1].header("metadata").as_deref(), Some("true"));
    assert_eq!(
        requests[1].header("authorization"),
        Some(format!("Basic {SECRET}"))
    );
    assert!(requests[1].headers["authorization"].is_sensitive());
}

#[tokio::test]
async fn exactly_4096_bytes_is_allowed() {
    let setup = Setup::new();
    let path = setup.token_file("max.key", &[b'a'; 4096]);
    let (result, transport) = run(&setup, realm(&path)).await;
    result.unwrap();
    assert_eq!(
        transport.requests()[1]
            .header("authorization")
            .unwrap()
            .len(),
        6 + 4096
    );
}

#[tokio::test]
async fn missing_or_malformed_header() {
    let setup = Setup::new();
    let (result, transport) = run(&setup, None).await;
    assert_refused(result, &transport, &codes::AZURE_ARC_CHALLENGE_MISSING);
    let (result, transport) = run(&setup, Some("Bearer realm=/x.key".into())).await;
    assert_refused(result, &transport, &codes::AZURE_ARC_CHALLENGE_MALFORMED);
}

#[tokio::test]
async fn wrong_extension() {
    let setup = Setup::new();
    let path = setup.token_file("secret.txt", SECRET.as_bytes());
    let (result, transport) = run(&setup, realm(&path)).await;
    let err = assert_refused(result, &transport, &codes::AZURE_ARC_KEY_PATH_REJECTED);
    assert!(err.message().contains(".key"), "{err}");
}

#[tokio::test]
async fn file_outside_the_token_directory() {
    let setup = Setup::new();
    let path = setup.outside.path().join("stolen.key");
    std::fs::write(&path, SECRET).unwrap();
    let (result, transport) = run(&setup, realm(&path)).await;
    let err = assert_refused(result, &transport, &codes::AZURE_ARC_KEY_PATH_REJECTED);
    assert!(err.message().contains("token directory"), "{err}");
    // A subdirectory of the token directory is outside too.
    std::fs::create_dir(setup.tokens.path().join("sub")).unwrap();
    let nested = setup.tokens.path().join("sub").join("nested.key");
    std::fs::write(&nested, SECRET).unwrap();
    let (result, transport) = run(&setup, realm(&nested)).await;
    assert_refused(result, &transport, &codes::AZURE_ARC_KEY_PATH_REJECTED);
}

#[tokio::test]
async fn dot_dot_traversal() {
    let setup = Setup::new();
    std::fs::write(setup.outside.path().join("stolen.key"), SECRET).unwrap();
    let outside_name = setup
        .outside
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    // <tokens>/../<outside>/stolen.key, and <tokens>/../<tokens-name>/x.key (which resolves
    // back inside, but is refused all the same).
    let traversal = setup
        .tokens
        .path()
        .join("..")
        .join(&outside_name)
        .join("stolen.key");
    let (result, transport) = run(&setup, realm(&traversal)).await;
    assert_refused(result, &transport, &codes::AZURE_ARC_KEY_PATH_REJECTED);
    setup.token_file("inside.key", SECRET.as_bytes());
    let tokens_name = setup
        .tokens
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let roundabout = setup
        .tokens
        .path()
        .join("..")
        .join(tokens_name)
        .join("inside.key");
    let (result, transport) = run(&setup, realm(&roundabout)).await;
    let err = assert_refused(result, &transport, &codes::AZURE_ARC_KEY_PATH_REJECTED);
    assert!(err.message().contains("'.' or '..' segment"), "{err}");
}

#[cfg(unix)]
#[tokio::test]
async fn symlink_escape() {
    let setup = Setup::new();
    let target = setup.outside.path().join("target.key");
    std::fs::write(&target, SECRET).unwrap();
    let link = setup.tokens.path().join("link.key");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let (result, transport) = run(&setup, realm(&link)).await;
    let err = assert_refused(result, &transport, &codes::AZURE_ARC_KEY_PATH_REJECTED);
    assert!(err.message().contains("symbolic link"), "{err}");
    // A link to a file inside the directory is refused as well.
    let inner = setup.token_file("real.key", SECRET.as_bytes());
    let inner_link = setup.tokens.path().join("alias.key");
    std::os::unix::fs::symlink(&inner, &inner_link).unwrap();
    let (result, transport) = run(&setup, realm(&inner_link)).await;
    assert_refused(result, &transport, &codes::AZURE_ARC_KEY_PATH_REJECTED);
}

#[cfg(unix)]
#[tokio::test]
async fn hard_link_to_a_file_elsewhere_is_refused() {
    let setup = Setup::new();
    let outside = setup.outside.path().join("victim.key");
    std::fs::write(&outside, SECRET).unwrap();
    let link = setup.tokens.path().join("linked.key");
    std::fs::hard_link(&outside, &link).unwrap();
    let (result, transport) = run(&setup, realm(&link)).await;
    let err = assert_refused(result, &transport, &codes::AZURE_ARC_KEY_PATH_REJECTED);
    assert!(err.message().contains("2 hard links"), "{err}");
    // Once the outside name is gone, the same file is the agent's own again.
    std::fs::remove_file(&outside).unwrap();
    let (result, transport) = run(&setup, realm(&link)).await;
    assert_eq!(result.unwrap().token.expose(), "arc-token");
    assert_eq!(
        transport.requests()[1].header("authorization"),
        Some(format!("Basic {SECRET}"))
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_token_directory_reached_through_a_symbolic_link() {
    // The configured directory is a link to the real one: the file is opened (and checked) in
    // the real directory, whichever of the two names the challenge uses.
    let setup = Setup::new();
    let path = setup.token_file("via-link.key", SECRET.as_bytes());
    let link = setup.outside.path().join("tokens-link");
    std::os::unix::fs::symlink(setup.tokens.path(), &link).unwrap();
    for named in [link.join("via-link.key"), path] {
        let transport = FakeTransport::new();
        transport.reply_with(challenge(realm(&named).as_deref()));
        transport.reply(200, &token_body("arc-token"));
        let credential = builder(
            &transport,
            &ManualClock::at_unix(NOW),
            env(&[("IDENTITY_ENDPOINT", ARC_ENDPOINT), ("IMDS_ENDPOINT", "x")]),
        )
        .arc_token_directory(&link)
        .build()
        .unwrap();
        let token = credential
            .get_token(&[ARM], &TokenRequestOptions::default())
            .await;
        assert_eq!(token.unwrap().token.expose(), "arc-token", "{named:?}");
        assert_eq!(
            transport.requests()[1].header("authorization"),
            Some(format!("Basic {SECRET}"))
        );
    }
    // A directory link inside the token directory does not make a file elsewhere "directly in"
    // it.
    std::fs::write(setup.outside.path().join("far.key"), SECRET).unwrap();
    let inner = setup.tokens.path().join("inner");
    std::os::unix::fs::symlink(setup.outside.path(), &inner).unwrap();
    let (result, transport) = run(&setup, realm(&inner.join("far.key"))).await;
    assert_refused(result, &transport, &codes::AZURE_ARC_KEY_PATH_REJECTED);
}

#[tokio::test]
async fn oversized_file() {
    let setup = Setup::new();
    let path = setup.token_file("big.key", &[b'a'; 4097]);
    let (result, transport) = run(&setup, realm(&path)).await;
    let err = assert_refused(result, &transport, &codes::AZURE_ARC_KEY_FILE_TOO_LARGE);
    assert!(err.message().contains("4097"), "{err}");
}

#[tokio::test]
async fn not_a_regular_file_or_missing() {
    let setup = Setup::new();
    let dir = setup.tokens.path().join("dir.key");
    std::fs::create_dir(&dir).unwrap();
    let (result, transport) = run(&setup, realm(&dir)).await;
    assert_refused(result, &transport, &codes::AZURE_ARC_KEY_PATH_REJECTED);
    let missing = setup.tokens.path().join("missing.key");
    let (result, transport) = run(&setup, realm(&missing)).await;
    assert_refused(result, &transport, &codes::AZURE_ARC_KEY_FILE_UNREADABLE);
    // Contents that cannot go into a header.
    let path = setup.token_file("newline.key", b"abc\r\nInjected: yes");
    let (result, transport) = run(&setup, realm(&path)).await;
    assert_refused(result, &transport, &codes::AZURE_ARC_KEY_FILE_UNREADABLE);
}

#[tokio::test]
async fn a_second_401_is_an_error_with_its_status() {
    let setup = Setup::new();
    let path = setup.token_file("k.key", SECRET.as_bytes());
    let transport = FakeTransport::new();
    transport.reply_with(challenge(realm(&path).as_deref()));
    transport.reply_with(challenge(realm(&path).as_deref()));
    let clock = ManualClock::at_unix(NOW);
    let credential = builder(
        &transport,
        &clock,
        env(&[("IDENTITY_ENDPOINT", ARC_ENDPOINT), ("IMDS_ENDPOINT", "x")]),
    )
    .arc_token_directory(setup.tokens.path())
    .build()
    .unwrap();
    let err = credential
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), &codes::MANAGED_IDENTITY_REQUEST_FAILED);
    assert_eq!(err.status(), Some(401));
    assert_eq!(
        transport.request_count(),
        2,
        "the challenge is answered once"
    );
}
