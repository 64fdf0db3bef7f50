//! The static, callback, file and bound providers, and `ClientAssertion`.
// clippy.toml allows unwrap only inside #[test] functions; the helpers here are test code too.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{data, TempDir};
use fic_assertion::{
    codes, load, AssertionProvider, AssertionRequest, BoundAssertion, CallbackAssertion,
    ClientAssertion, ClientIdentity, FileAssertion, StaticAssertion, JWT_BEARER, JWT_POP,
    MAX_ASSERTION_FILE_BYTES,
};
use fic_oauth_core::{AuthorityKind, Error, ErrorCode, ManualClock, Secret};
use uuid::Uuid;

const ENDPOINT: &str =
    "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token";

fn request() -> AssertionRequest {
    AssertionRequest::new("app-id", ENDPOINT)
}

fn rsa_identity() -> ClientIdentity {
    load::from_pem(&data("rsa.chain-and-key.pem")).unwrap()
}

fn ec_identity() -> ClientIdentity {
    load::from_pem_parts(&data("ec-p256.crt.pem"), &data("ec-p256.sec1.pem")).unwrap()
}

#[test]
fn client_assertion_type_follows_the_binding() {
    let bearer = ClientAssertion::new("header.payload.signature").unwrap();
    assert_eq!(bearer.assertion_type(), JWT_BEARER);
    assert_eq!(
        JWT_BEARER,
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert!(bearer.binding().is_none());

    let identity = rsa_identity();
    let pop = bearer.clone().with_binding(identity.clone());
    assert_eq!(pop.assertion_type(), JWT_POP);
    assert_eq!(
        JWT_POP,
        "urn:ietf:params:oauth:client-assertion-type:jwt-pop"
    );
    let (value, binding) = pop.into_parts();
    assert_eq!(value.expose(), "header.payload.signature");
    assert!(binding.unwrap().same_certificate(&identity));

    let bound = ClientAssertion::bound("x.y.z", identity).unwrap();
    assert_eq!(bound.assertion_type(), JWT_POP);
    for blank in ["", " ", "\n\t"] {
        assert_eq!(
            ClientAssertion::new(blank).unwrap_err().code(),
            &codes::INVALID_CLIENT_ASSERTION
        );
        assert_eq!(
            ClientAssertion::bound(blank, ec_identity())
                .unwrap_err()
                .code(),
            &ErrorCode::INVALID_CLIENT_ASSERTION
        );
    }
    let debug = format!("{bound:?}");
    assert!(!debug.contains("x.y.z"), "{debug}");
    assert!(debug.contains(JWT_POP));
}

#[tokio::test]
async fn static_assertion() {
    let provider = StaticAssertion::new("eyJ.static.assertion").unwrap();
    let assertion = provider.assertion(&request()).await.unwrap();
    assert_eq!(assertion.value().expose(), "eyJ.static.assertion");
    assert_eq!(assertion.assertion_type(), JWT_BEARER);
    assert!(!format!("{provider:?}").contains("eyJ"));
    assert_eq!(
        StaticAssertion::new("  ").unwrap_err().code(),
        &codes::INVALID_CLIENT_ASSERTION
    );
    assert_eq!(
        StaticAssertion::new(Secret::default()).unwrap_err().code(),
        &codes::INVALID_CLIENT_ASSERTION
    );
}

#[tokio::test]
async fn callback_receives_the_request_context() {
    let seen: Arc<Mutex<Option<AssertionRequest>>> = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let provider = {
        let seen = Arc::clone(&seen);
        let calls = Arc::clone(&calls);
        CallbackAssertion::new(move |request: AssertionRequest| {
            let seen = Arc::clone(&seen);
            let calls = Arc::clone(&calls);
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let value = format!("assertion-for-{}", request.client_id);
                *seen.lock().unwrap() = Some(request);
                Ok::<_, Error>(value)
            }
        })
    };
    let correlation_id = Uuid::new_v4();
    let request = AssertionRequest::new(
        "agent-app",
        "https://westus3.mtlsauth.microsoft.com/tenant-id/oauth2/v2.0/token",
    )
    .with_tenant_id("tenant-id")
    .with_authority(
        "https://login.microsoftonline.com/tenant-id/",
        AuthorityKind::Aad,
    )
    .with_claims(r#"{"access_token":{"xms_cc":{"values":["cp1"]}}}"#)
    .with_client_capabilities(["cp1"])
    .with_fmi_path("agent-id")
    .with_correlation_id(correlation_id);

    let assertion = provider.assertion(&request).await.unwrap();
    assert_eq!(assertion.value().expose(), "assertion-for-agent-app");
    assert_eq!(assertion.assertion_type(), JWT_BEARER);
    assert_eq!(seen.lock().unwrap().as_ref(), Some(&request));
    provider.assertion(&request).await.unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "called for every assertion"
    );
    assert_eq!(format!("{provider:?}"), "CallbackAssertion { .. }");
}

#[tokio::test]
async fn callback_results_errors_and_bindings() {
    let blank = CallbackAssertion::new(|_| async { Ok::<_, Error>(String::from(" ")) });
    assert_eq!(
        blank.assertion(&request()).await.unwrap_err().code(),
        &codes::INVALID_CLIENT_ASSERTION
    );
    let secret = CallbackAssertion::new(|_| async { Ok::<_, Error>(Secret::new("s.e.c")) });
    assert_eq!(
        secret.assertion(&request()).await.unwrap().value().expose(),
        "s.e.c"
    );
    let failing = CallbackAssertion::new(|_| async {
        Err::<String, _>(Error::new(ErrorCode::TIMEOUT, "the vault did not answer"))
    });
    assert_eq!(
        failing.assertion(&request()).await.unwrap_err().code(),
        &ErrorCode::TIMEOUT
    );

    let identity = ec_identity();
    let binding = identity.clone();
    let pop = CallbackAssertion::new(move |_| {
        let binding = binding.clone();
        async move { ClientAssertion::bound("leg.one.token", binding) }
    });
    let assertion = pop.assertion(&request()).await.unwrap();
    assert_eq!(assertion.assertion_type(), JWT_POP);
    assert!(assertion.binding().unwrap().same_certificate(&identity));
}

#[tokio::test]
async fn bound_assertion_is_jwt_pop_and_carries_the_identity() {
    let identity = rsa_identity();
    let provider = BoundAssertion::new(
        StaticAssertion::new("leg.one.token").unwrap(),
        identity.clone(),
    );
    let assertion = provider.assertion(&request()).await.unwrap();
    assert_eq!(assertion.assertion_type(), JWT_POP);
    assert_eq!(assertion.value().expose(), "leg.one.token");
    let binding = assertion.binding().unwrap();
    assert!(binding.same_certificate(&identity));
    assert_eq!(binding.thumbprint_s256(), identity.thumbprint_s256());
    assert_eq!(binding.chain_der(), identity.chain_der());
    assert!(provider.binding().same_certificate(&identity));
    assert!(!format!("{provider:?}").contains("leg.one.token"));

    // An inner binding must be the same certificate.
    let same = identity.clone();
    let agreeing = BoundAssertion::new(
        CallbackAssertion::new(move |_| {
            let same = same.clone();
            async move { ClientAssertion::bound("a.b.c", same) }
        }),
        identity.clone(),
    );
    assert_eq!(
        agreeing
            .assertion(&request())
            .await
            .unwrap()
            .assertion_type(),
        JWT_POP
    );
    let conflicting = BoundAssertion::new(
        CallbackAssertion::new(|_| async { ClientAssertion::bound("a.b.c", ec_identity()) }),
        identity,
    );
    assert_eq!(
        conflicting.assertion(&request()).await.unwrap_err().code(),
        &codes::CONFLICTING_BINDING
    );
}

#[tokio::test]
async fn providers_compose_as_trait_objects() {
    let providers: Vec<Arc<dyn AssertionProvider>> = vec![
        Arc::new(StaticAssertion::new("a.b.c").unwrap()),
        Arc::new(BoundAssertion::new(
            Arc::new(StaticAssertion::new("a.b.c").unwrap()) as Arc<dyn AssertionProvider>,
            ec_identity(),
        )),
        Arc::new(BoundAssertion::new(
            Box::new(StaticAssertion::new("a.b.c").unwrap()) as Box<dyn AssertionProvider>,
            ec_identity(),
        )),
    ];
    let types: Vec<&str> = {
        let mut types = Vec::new();
        for provider in &providers {
            types.push(
                provider
                    .assertion(&request())
                    .await
                    .unwrap()
                    .assertion_type(),
            );
        }
        types
    };
    assert_eq!(types, [JWT_BEARER, JWT_POP, JWT_POP]);
}

fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

/// Writes `contents` and sets the modification time explicitly (no sleeping for the clock).
fn write(path: &std::path::Path, contents: &str, modified: SystemTime) {
    std::fs::write(path, contents).unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(modified)
        .unwrap();
}

async fn current(provider: &FileAssertion) -> String {
    let assertion = provider.assertion(&request()).await.unwrap();
    assert_eq!(assertion.assertion_type(), JWT_BEARER);
    assertion.value().expose().to_owned()
}

#[tokio::test]
async fn file_assertion_picks_up_a_changed_file() {
    let dir = TempDir::new("file");
    let path = dir.path().join("azure-identity-token");
    let clock = ManualClock::at_unix(1_700_000_000);
    let provider = FileAssertion::new(&path).with_clock(Arc::new(clock.clone()));

    write(&path, "token.number.one\n", at(1_700_000_000));
    assert_eq!(current(&provider).await, "token.number.one");

    // Rotated: other length and a new modification time.
    write(&path, "  token.number.two.longer  ", at(1_700_000_100));
    assert_eq!(current(&provider).await, "token.number.two.longer");

    // Same length, new modification time.
    write(&path, "token.number.two.LONGER", at(1_700_000_200));
    assert_eq!(current(&provider).await, "token.number.two.LONGER");

    // Same length *and* the same modification time: the file looks unchanged and is not read
    // again (this proves the cache)...
    write(&path, "token.number.3hree.xxxx", at(1_700_000_200));
    assert_eq!(current(&provider).await, "token.number.two.LONGER");
    // ...until the last read is older than the maximum age (5 minutes).
    clock.advance(Duration::from_secs(299));
    assert_eq!(current(&provider).await, "token.number.two.LONGER");
    clock.advance(Duration::from_secs(1));
    assert_eq!(current(&provider).await, "token.number.3hree.xxxx");

    // A shorter maximum age.
    let eager = FileAssertion::new(&path)
        .with_clock(Arc::new(clock.clone()))
        .with_max_age(Duration::from_secs(10));
    assert_eq!(current(&eager).await, "token.number.3hree.xxxx");
    write(&path, "token.number.4four.xxxx", at(1_700_000_200));
    clock.advance(Duration::from_secs(10));
    assert_eq!(current(&eager).await, "token.number.4four.xxxx");
}

#[tokio::test]
async fn file_assertion_errors() {
    let dir = TempDir::new("file-errors");
    let path = dir.path().join("token");
    let provider = FileAssertion::new(&path);
    assert_eq!(provider.path(), path.as_path());

    let err = provider.assertion(&request()).await.unwrap_err();
    assert_eq!(err.code(), &codes::ASSERTION_FILE_MISSING);
    assert!(err.message().contains("token"), "{err}");

    write(&path, " \n", at(1_700_000_000));
    let err = provider.assertion(&request()).await.unwrap_err();
    assert_eq!(err.code(), &codes::ASSERTION_FILE_EMPTY);

    std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
    let err = provider.assertion(&request()).await.unwrap_err();
    assert_eq!(err.code(), &codes::ASSERTION_FILE_UNREADABLE);

    let err = FileAssertion::new(dir.path())
        .assertion(&request())
        .await
        .unwrap_err();
    assert_eq!(err.code(), &codes::ASSERTION_FILE_UNREADABLE);

    // A deleted file is an error, never the last value read.
    write(&path, "secret.token.value", at(1_700_000_000));
    assert_eq!(current(&provider).await, "secret.token.value");
    std::fs::remove_file(&path).unwrap();
    let err = provider.assertion(&request()).await.unwrap_err();
    assert_eq!(err.code(), &codes::ASSERTION_FILE_MISSING);
    assert!(!format!("{err} {err:?} {provider:?}").contains("secret.token.value"));
}

#[tokio::test]
async fn file_assertion_refuses_files_over_64_kib() {
    assert_eq!(MAX_ASSERTION_FILE_BYTES, 64 * 1024);
    let dir = TempDir::new("file-size");
    let path = dir.path().join("token");
    let provider = FileAssertion::new(&path);

    // Exactly the limit is read, white space trimmed as usual.
    let at_limit = format!("{}\n", "a".repeat(MAX_ASSERTION_FILE_BYTES - 1));
    write(&path, &at_limit, at(1_700_000_000));
    assert_eq!(
        current(&provider).await,
        "a".repeat(MAX_ASSERTION_FILE_BYTES - 1)
    );

    // One byte more is refused, and the earlier value is not served instead.
    let over = format!("{}\n", "b".repeat(MAX_ASSERTION_FILE_BYTES));
    write(&path, &over, at(1_700_000_100));
    let err = provider.assertion(&request()).await.unwrap_err();
    assert_eq!(err.code(), &codes::ASSERTION_FILE_TOO_LARGE, "{err}");
    assert_eq!(err.code().as_str(), "assertion_file_too_large");
    assert!(err.message().contains("65536-byte limit"), "{err}");
    assert!(err.message().contains("(65537 bytes)"), "{err}");
    assert!(!err.message().contains("bbbb"), "{err}");

    // Back under the limit, it is read again.
    write(&path, "small.token.again", at(1_700_000_200));
    assert_eq!(current(&provider).await, "small.token.again");
}
