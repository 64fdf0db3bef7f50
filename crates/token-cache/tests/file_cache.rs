//! FileCache: the MSAL file format with unknown content preserved, many processes writing at
//! once, corrupt files, permissions, lock timeouts, encryption at rest.
#![cfg(feature = "file")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{access_token, lookup, Source, TempDir};
use fic_oauth_core::time::from_unix_seconds;
use fic_oauth_core::{Account, Clock, ManualClock, Secret, TokenSource, TokenType};
use fic_token_cache::codes;
use fic_token_cache::{
    AccessTokenKey, AcquisitionEngine, CacheEntry, CacheKey, CachedAccount, CachedIdToken,
    CachedRefreshToken, FileCache, TokenCache,
};
use serde_json::Value;

const GOLDEN: &str = include_str!("data/msal_dotnet_cache.json");
const CLIENT: &str = "aab5089d-e764-47e3-9f28-cc11c2513821";
const TENANT: &str = "10c419d4-4a50-45b2-aa4e-919fb84df24f";
const HOME: &str = "00000000-0000-0000-0000-000000000abc.10c419d4-4a50-45b2-aa4e-919fb84df24f";

fn cache(path: &std::path::Path, clock: &ManualClock) -> FileCache {
    FileCache::builder(path)
        .clock(Arc::new(clock.clone()))
        .reload_interval(Duration::ZERO)
        .build()
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The text of the entry `key` in `text` (from its key to the closing brace of its object).
fn entry_text<'a>(text: &'a str, key: &str) -> &'a str {
    let start = text.find(&format!("\"{key}\"")).unwrap();
    let end = start + text[start..].find("\n    }").unwrap() + 6;
    &text[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_msal_dotnet_file_loads_and_rewrites_keep_unknown_content() {
    let dir = TempDir::new("golden");
    let path = dir.join("msal.json");
    std::fs::write(&path, GOLDEN).unwrap();
    let clock = ManualClock::at_unix(1_760_000_100);
    let file = cache(&path, &clock);

    // Every modelled entry is found under the key our own key builder makes.
    let graph = AccessTokenKey::app(
        "login.windows.net",
        CLIENT,
        TENANT,
        ["https://graph.microsoft.com/.default"],
    );
    let found = file.get(&graph.build()).await.unwrap().unwrap();
    let at = found.as_access_token().unwrap();
    assert_eq!(at.secret().expose(), "graph-app-token");
    assert_eq!(at.expires_on(), from_unix_seconds(1_760_003_599));
    assert_eq!(at.cached_at(), from_unix_seconds(1_760_000_000));
    assert_eq!(at.extended_expires_on(), None, "equal to expires_on");
    assert_eq!(at.token_type(), TokenType::Bearer);

    let fmi = AccessTokenKey::app(
        "login.windows.net",
        CLIENT,
        TENANT,
        ["api://AzureADTokenExchange/.default"],
    )
    .with_component("fmi_path", "ab18ca07-d139-4840-8b3b-4be9610c6ed5");
    let found = file.get(&fmi.build()).await.unwrap().unwrap();
    assert_eq!(
        found.as_access_token().unwrap().secret().expose(),
        "fmi-leg1-token"
    );
    assert_eq!(found.as_access_token().unwrap().key(), &fmi);

    let pop = AccessTokenKey::app(
        "login.windows.net",
        CLIENT,
        TENANT,
        ["https://vault.azure.net/.default"],
    )
    .with_token_type(TokenType::MtlsPop);
    let found = file.get(&pop.build()).await.unwrap().unwrap();
    let at = found.as_access_token().unwrap();
    assert_eq!(
        at.kid(),
        Some("Fw0Vt1y0yM4N3vBvCNb7vUO8Nls2vXpGk7jz3VhD3Kk")
    );
    assert_eq!(at.refresh_on(), Some(from_unix_seconds(1_760_001_799)));
    assert_eq!(
        at.extended_expires_on(),
        Some(from_unix_seconds(1_760_007_199))
    );

    let rt = CacheKey::refresh_token(HOME, "login.windows.net", CLIENT);
    let Some(CacheEntry::RefreshToken(rt)) = file.get(&rt).await.unwrap().as_deref().cloned()
    else {
        panic!("no refresh token")
    };
    assert_eq!(rt.secret.expose(), "user-refresh-token");
    let id = CacheKey::id_token(HOME, "login.windows.net", CLIENT, TENANT);
    assert!(file.get(&id).await.unwrap().is_some());
    // .NET does not lower-case account keys; lookups do.
    let account = CacheKey::account(HOME, "login.windows.net", TENANT);
    let Some(CacheEntry::Account(account)) = file.get(&account).await.unwrap().as_deref().cloned()
    else {
        panic!("no account")
    };
    assert_eq!(
        account.account.username.as_deref(),
        Some("agentuser1@contoso.com")
    );
    assert_eq!(file.len(), 6, "the ssh-cert token is kept but not modelled");

    // The engine serves the file's token without a request.
    let engine = AcquisitionEngine::builder(Arc::new(file.clone()))
        .clock(Arc::new(clock.clone()))
        .build();
    let source = Source::new(&clock);
    let token = engine
        .acquire(&fic_token_cache::Lookup::new(graph), source.fetch())
        .await
        .unwrap();
    assert_eq!(
        (token.token.expose(), token.source),
        ("graph-app-token", TokenSource::Cache)
    );
    assert_eq!(source.calls(), 0);

    // A write rewrites the file: everything not touched survives, byte for byte.
    let (new_key, new_entry) = access_token(&clock, "https://storage.azure.com/.default", 3600);
    file.put(new_key.clone(), new_entry).await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    for key in [
        "-login.windows.net-accesstoken-aab5089d-e764-47e3-9f28-cc11c2513821-10c419d4-4a50-45b2-aa4e-919fb84df24f-https://graph.microsoft.com/.default",
        "00000000-0000-0000-0000-000000000abc.10c419d4-4a50-45b2-aa4e-919fb84df24f-login.windows.net-accesstoken-aab5089d-e764-47e3-9f28-cc11c2513821-10c419d4-4a50-45b2-aa4e-919fb84df24f-ssh",
        "00000000-0000-0000-0000-000000000ABC.10C419D4-4A50-45B2-AA4E-919FB84DF24F-login.windows.net-10C419D4-4A50-45B2-AA4E-919FB84DF24F",
    ] {
        assert!(
            text.contains(entry_text(GOLDEN, key)),
            "entry {key} not preserved verbatim"
        );
    }
    let before: Value = serde_json::from_str(GOLDEN).unwrap();
    let after: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(after["ThirdPartyNode"], before["ThirdPartyNode"]);
    assert_eq!(after["AppMetadata"], before["AppMetadata"]);
    assert_eq!(after["RefreshToken"], before["RefreshToken"]);
    for node in ["AccessToken", "IdToken", "Account"] {
        for (key, value) in before[node].as_object().unwrap() {
            assert_eq!(&after[node][key], value, "{node} {key}");
        }
    }
    // The new entry is written in MSAL's shape.
    let written = &after["AccessToken"][new_key.as_str()];
    assert_eq!(written["credential_type"], "AccessToken");
    assert_eq!(written["expires_on"], "1760003700");
    assert_eq!(written["extended_expires_on"], "1760003700");
    assert_eq!(written["cached_at"], "1760000100");
    assert_eq!(
        written["secret"],
        "secret-for-https://storage.azure.com/.default"
    );
    assert!(written.get("token_type").is_none());
    assert!(written.get("home_account_id").is_none());
    let nodes: Vec<&String> = after.as_object().unwrap().keys().collect();
    assert_eq!(nodes.len(), 6);

    // Removing one entry keeps the rest.
    file.remove(&CacheKey::refresh_token(HOME, "login.windows.net", CLIENT))
        .await
        .unwrap();
    let after = read_json(&path);
    assert_eq!(after["RefreshToken"], serde_json::json!({}));
    assert_eq!(after["ThirdPartyNode"], before["ThirdPartyNode"]);
    assert_eq!(
        after["AccessToken"].as_object().unwrap().len(),
        before["AccessToken"].as_object().unwrap().len() + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_entry_round_trips_through_another_instance() {
    let dir = TempDir::new("round-trip");
    let path = dir.join("nested/dirs/cache.json");
    let clock = ManualClock::at_unix(1_700_000_000);
    let writer = cache(&path, &clock);
    let mut account = Account::new("uid.utid", "login.microsoftonline.com", "tid");
    account.username = Some("user@contoso.com".into());
    let pop = AccessTokenKey::user(
        "uid.utid",
        "login.microsoftonline.com",
        "cid",
        "tid",
        ["User.Read"],
    )
    .with_token_type(TokenType::MtlsPop)
    .with_component("credential_fmi_path", "agent");
    let now = clock.now();
    let entries = [
        CacheEntry::AccessToken(
            fic_token_cache::CachedAccessToken::new(
                pop,
                Secret::new("pop\"token"),
                now,
                now + Duration::from_secs(3600),
                Some(now + Duration::from_secs(1800)),
                Some("kid".into()),
            )
            .with_extended_expires_on(Some(now + Duration::from_secs(7200))),
        ),
        CacheEntry::RefreshToken(CachedRefreshToken::new(
            "uid.utid",
            "login.microsoftonline.com",
            "cid",
            Secret::new("rt"),
        )),
        CacheEntry::IdToken(CachedIdToken::new(
            "uid.utid",
            "login.microsoftonline.com",
            "cid",
            "tid",
            Secret::new("idt"),
        )),
        CacheEntry::Account(CachedAccount::new(account)),
    ];
    for entry in &entries {
        writer
            .put(entry.cache_key(), Arc::new(entry.clone()))
            .await
            .unwrap();
    }
    let reader = cache(&path, &clock);
    for entry in &entries {
        assert_eq!(
            reader.get(&entry.cache_key()).await.unwrap().as_deref(),
            Some(entry)
        );
    }
    assert_eq!(reader.reload().await.unwrap(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_use_the_index_and_see_other_writers_after_the_reload_interval() {
    let dir = TempDir::new("index");
    let path = dir.join("cache.json");
    let clock = ManualClock::at_unix(1_700_000_000);
    let reader = FileCache::builder(&path)
        .clock(Arc::new(clock.clone()))
        .reload_interval(Duration::from_secs(1))
        .build();
    let writer = cache(&path, &clock);
    let (key, entry) = access_token(&clock, "a", 3600);

    // Nothing looked at yet: the lookup must be awaited.
    assert!(!reader.visit_now(&key, &mut |_| {}));
    assert!(reader.get(&key).await.unwrap().is_none());
    writer.put(key.clone(), entry.clone()).await.unwrap();

    // Within the interval: answered from memory, without IO, so not seen yet.
    let mut seen = Some(None);
    assert!(reader.visit_now(&key, &mut |e| seen = Some(e.cloned())));
    assert_eq!(seen, Some(None));
    assert!(reader.get(&key).await.unwrap().is_none());

    // After it: the file changed, the index is reloaded.
    clock.advance(Duration::from_secs(1));
    assert!(!reader.visit_now(&key, &mut |_| {}));
    assert_eq!(reader.get(&key).await.unwrap().as_deref(), Some(&*entry));
    assert!(reader.visit_now(&key, &mut |e| assert_eq!(e, Some(&*entry))));

    // A removal elsewhere is seen the same way.
    writer.remove(&key).await.unwrap();
    clock.advance(Duration::from_secs(1));
    assert!(reader.get(&key).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_long_expired_are_dropped_on_the_next_write() {
    let dir = TempDir::new("prune");
    let path = dir.join("cache.json");
    std::fs::write(&path, GOLDEN).unwrap();
    let clock = ManualClock::at_unix(1_760_000_100);
    let file = cache(&path, &clock);
    let (short, short_entry) = access_token(&clock, "short", 600);
    file.put(short.clone(), short_entry).await.unwrap();
    // The golden tokens expire at 1760003599 (the PoP one's extended expiry is 1760007199):
    // an hour and a bit after that every one is stale.
    clock.advance(Duration::from_secs(10_800));
    let (fresh, fresh_entry) = access_token(&clock, "fresh", 3600);
    file.put(fresh.clone(), fresh_entry.clone()).await.unwrap();
    let json = read_json(&path);
    let kept: Vec<&String> = json["AccessToken"].as_object().unwrap().keys().collect();
    // The fresh token, and the ssh-cert token this library does not model, stay.
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(json["AccessToken"][fresh.as_str()].is_object());
    assert!(kept.iter().any(|k| k.ends_with("-ssh")));
    // Nothing but access tokens is dropped.
    let before: Value = serde_json::from_str(GOLDEN).unwrap();
    for node in [
        "RefreshToken",
        "IdToken",
        "Account",
        "AppMetadata",
        "ThirdPartyNode",
    ] {
        assert_eq!(json[node], before[node], "{node}");
    }
    assert!(file.get(&short).await.unwrap().is_none());
    assert_eq!(
        file.get(&fresh).await.unwrap().as_deref(),
        Some(&*fresh_entry)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_with_out_of_range_timestamps_are_skipped_and_the_rest_loads() {
    let dir = TempDir::new("huge-time");
    let path = dir.join("cache.json");
    let clock = ManualClock::at_unix(1_700_000_000);
    let (good, good_entry) = access_token(&clock, "good", 3600);
    let writer = cache(&path, &clock);
    writer.put(good.clone(), good_entry.clone()).await.unwrap();
    drop(writer);
    // Another writer (or damage) leaves entries whose timestamps no SystemTime can hold.
    let mut json = read_json(&path);
    let good_value = json["AccessToken"][good.as_str()].clone();
    let mut bad_entries = Vec::new();
    for (i, field) in [
        "expires_on",
        "cached_at",
        "refresh_on",
        "extended_expires_on",
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("-login.microsoftonline.com-accesstoken-cid-tid-bad{i}");
        let mut value = good_value.as_object().unwrap().clone();
        value.insert(field.into(), Value::from("18446744073709551615"));
        value.insert("target".into(), Value::from(format!("bad{i}")));
        bad_entries.push((key, Value::Object(value)));
    }
    for (key, value) in &bad_entries {
        json["AccessToken"][key] = value.clone();
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&json).unwrap()).unwrap();

    let file = cache(&path, &clock);
    // The good entry still loads; the file is not treated as corrupt.
    assert_eq!(file.reload().await.unwrap(), 1);
    assert_eq!(
        file.get(&good).await.unwrap().as_deref(),
        Some(&*good_entry)
    );
    for (key, _) in &bad_entries {
        assert!(file.get(&CacheKey::new(key)).await.unwrap().is_none());
    }
    assert!(!dir.join("cache.json.corrupt-1700000000").exists());

    // An entry put with an expiry near the end of SystemTime does not break pruning on the
    // next writes either.
    let (far, far_entry) = {
        let parts = common::parts("far");
        let token = fic_oauth_core::AccessToken::new(
            Secret::new("far"),
            TokenType::Bearer,
            UNIX_EPOCH + Duration::from_secs(i64::MAX.unsigned_abs()),
        );
        (
            parts.build(),
            Arc::new(CacheEntry::AccessToken(
                fic_token_cache::CachedAccessToken::from_token(parts, &token, clock.now()),
            )),
        )
    };
    file.put(far.clone(), far_entry).await.unwrap();
    clock.advance(Duration::from_secs(60));
    let (later, later_entry) = access_token(&clock, "later", 3600);
    file.put(later.clone(), later_entry.clone()).await.unwrap();
    // Whatever cannot be read is kept in the file as it was.
    let json = read_json(&path);
    for (key, value) in &bad_entries {
        assert_eq!(&json["AccessToken"][key], value, "{key}");
    }
    let fresh = cache(&path, &clock);
    assert_eq!(
        fresh.get(&good).await.unwrap().as_deref(),
        Some(&*good_entry)
    );
    assert_eq!(
        fresh.get(&later).await.unwrap().as_deref(),
        Some(&*later_entry)
    );
    assert!(
        fresh.get(&far).await.unwrap().is_none(),
        "stored past year 9999: unreadable, skipped"
    );
}

/// The child half of `two_processes_writing_at_once_lose_nothing`: does nothing unless started
/// by it.
#[test]
fn child_writer() {
    let Ok(path) = std::env::var("FIC_FILE_CACHE_CHILD_PATH") else {
        return;
    };
    let name = std::env::var("FIC_FILE_CACHE_CHILD_NAME").unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let clock = ManualClock::at_unix(1_700_000_000);
        let file = FileCache::builder(&path)
            .clock(Arc::new(clock.clone()))
            .lock_timeout(Duration::from_secs(60))
            .build();
        let started = SystemTime::now();
        for i in 0..200 {
            let (key, entry) = access_token(&clock, &format!("{name}-{i}"), 3600);
            file.put(key, entry).await.unwrap();
        }
        let ended = SystemTime::now();
        let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_millis();
        println!("WINDOW {} {}", ms(started), ms(ended));
    });
}

#[test]
fn two_processes_writing_at_once_lose_nothing() {
    if std::env::var_os("FIC_FILE_CACHE_CHILD_PATH").is_some() {
        return;
    }
    let dir = TempDir::new("processes");
    let path = dir.join("cache.json");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = ["alpha", "beta"]
        .into_iter()
        .map(|name| {
            std::process::Command::new(&exe)
                .args(["child_writer", "--exact", "--nocapture", "--test-threads=1"])
                .env("FIC_FILE_CACHE_CHILD_PATH", &path)
                .env("FIC_FILE_CACHE_CHILD_NAME", name)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut windows = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "child failed: {stdout}");
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("WINDOW ").map(|(_, w)| w))
            .unwrap_or_else(|| panic!("the child did not run the writes: {stdout}"));
        let (start, end) = line.split_once(' ').unwrap();
        windows.push((start.parse::<u128>().unwrap(), end.parse::<u128>().unwrap()));
    }
    assert!(
        windows[0].0 < windows[1].1 && windows[1].0 < windows[0].1,
        "the two writers overlapped in time: {windows:?}"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let clock = ManualClock::at_unix(1_700_000_000);
    let file = cache(&path, &clock);
    assert_eq!(runtime.block_on(file.reload()).unwrap(), 400);
    for name in ["alpha", "beta"] {
        for i in 0..200 {
            let (key, entry) = access_token(&clock, &format!("{name}-{i}"), 3600);
            assert_eq!(
                runtime.block_on(file.get(&key)).unwrap().as_deref(),
                Some(&*entry),
                "{name}-{i}"
            );
        }
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            std::path::Path::new(n)
                .extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("tmp"))
        })
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_file_is_set_aside_and_replaced() {
    let clock = ManualClock::at_unix(1_700_000_000);
    for garbage in [
        &br#"{"AccessToken": {"-login-accesstoken-cid-tid-s": {"secret": "trunc"#[..],
        &b"\x00\x01\x02 not json at all"[..],
        &br#"{"AccessToken": ["not", "an", "object"]}"#[..],
        &br#""just a string""#[..],
    ] {
        let dir = TempDir::new("corrupt");
        let path = dir.join("cache.json");
        std::fs::write(&path, garbage).unwrap();
        let file = cache(&path, &clock);
        let (key, entry) = access_token(&clock, "s", 3600);
        assert!(file.get(&key).await.unwrap().is_none(), "treated as empty");
        // The reader set it aside (its lock was free).
        let aside = dir.join("cache.json.corrupt-1700000000");
        assert_eq!(std::fs::read(&aside).unwrap(), garbage);
        file.put(key.clone(), entry.clone()).await.unwrap();
        let json = read_json(&path);
        assert_eq!(
            json["AccessToken"][key.as_str()]["credential_type"],
            "AccessToken"
        );
        assert_eq!(
            cache(&path, &clock).get(&key).await.unwrap().as_deref(),
            Some(&*entry)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_sets_aside_a_corrupt_file_it_finds() {
    let dir = TempDir::new("corrupt-writer");
    let path = dir.join("cache.json");
    let clock = ManualClock::at_unix(1_700_000_000);
    let file = cache(&path, &clock);
    let (a, entry_a) = access_token(&clock, "a", 3600);
    file.put(a.clone(), entry_a).await.unwrap();
    // Another process truncates the file behind this one's back.
    std::fs::write(&path, b"{\"AccessToken\": {").unwrap();
    let (b, entry_b) = access_token(&clock, "b", 3600);
    file.put(b.clone(), entry_b.clone()).await.unwrap();
    assert!(dir.join("cache.json.corrupt-1700000000").exists());
    let fresh = cache(&path, &clock);
    assert_eq!(fresh.get(&b).await.unwrap().as_deref(), Some(&*entry_b));
    assert!(
        fresh.get(&a).await.unwrap().is_none(),
        "lost with the corrupt file"
    );
}

/// An envelope cut below its header and tag (or of version 0) is damage, not a wrong key: set
/// aside and replaced, even by a process with no key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_structurally_damaged_envelope_is_set_aside_without_a_key() {
    let clock = ManualClock::at_unix(1_700_000_000);
    for damaged in [
        &b"FICC"[..],
        &b"FICC\x01"[..],
        &b"FICC\x01\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b tag?"[..],
        &b"FICC\x00 a version no fic-rs ever wrote, and enough bytes for a header and a tag"[..],
    ] {
        let dir = TempDir::new("damaged-envelope");
        let path = dir.join("cache.json");
        std::fs::write(&path, damaged).unwrap();
        let file = cache(&path, &clock);
        let (key, entry) = access_token(&clock, "s", 3600);
        assert!(file.get(&key).await.unwrap().is_none(), "treated as empty");
        assert_eq!(file.reload().await.unwrap(), 0);
        let aside = dir.join("cache.json.corrupt-1700000000");
        assert_eq!(std::fs::read(&aside).unwrap(), damaged);
        file.put(key.clone(), entry.clone()).await.unwrap();
        assert_eq!(
            read_json(&path)["AccessToken"][key.as_str()]["credential_type"],
            "AccessToken"
        );
    }
}

/// A newer envelope version is not this library's to judge: left untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_envelope_version_is_never_overwritten() {
    let dir = TempDir::new("newer-envelope");
    let path = dir.join("cache.json");
    let clock = ManualClock::at_unix(1_700_000_000);
    let newer = b"FICC\x02 written by a future fic-rs with a longer header than this one knows";
    std::fs::write(&path, newer).unwrap();
    let file = cache(&path, &clock);
    let (key, entry) = access_token(&clock, "s", 3600);
    let err = file.get(&key).await.unwrap_err();
    assert_eq!(err.code(), &codes::CACHE_DECRYPTION_FAILED);
    assert!(err.message().contains("version 2"), "{}", err.message());
    assert_eq!(
        file.put(key.clone(), entry).await.unwrap_err().code(),
        &codes::CACHE_DECRYPTION_FAILED
    );
    assert_eq!(std::fs::read(&path).unwrap(), newer);
    assert!(!dir.join("cache.json.corrupt-1700000000").exists());
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("mode");
    let path = dir.join("cache.json");
    std::fs::write(&path, b"{}").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let clock = ManualClock::at_unix(1_700_000_000);
    let file = cache(&path, &clock);
    let (key, entry) = access_token(&clock, "s", 3600);
    file.put(key, entry).await.unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(file.lock_path()), 0o600);

    let nested = dir.join("new/dir/cache.json");
    let file = cache(&nested, &clock);
    let (key, entry) = access_token(&clock, "s", 3600);
    file.put(key, entry).await.unwrap();
    assert_eq!(mode(&nested), 0o600);
    assert_eq!(mode(&dir.join("new/dir")), 0o700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_delays_a_write_boundedly_and_never_fails_acquisition() {
    let dir = TempDir::new("lock");
    let path = dir.join("cache.json");
    let clock = ManualClock::at_unix(1_700_000_000);
    let file = FileCache::builder(&path)
        .clock(Arc::new(clock.clone()))
        .lock_timeout(Duration::from_millis(100))
        .build();
    // Another process holds the lock and does not let go.
    let holder = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(file.lock_path())
        .unwrap();
    fs4::FileExt::lock(&holder).unwrap();

    let (key, entry) = access_token(&clock, "s", 3600);
    let started = Instant::now();
    let error = file.put(key.clone(), entry.clone()).await.unwrap_err();
    assert_eq!(error.code(), &codes::CACHE_LOCK_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(2), "bounded wait");
    // The token is still served from this process's memory, and the file was not touched.
    assert_eq!(file.get(&key).await.unwrap().as_deref(), Some(&*entry));
    assert!(!path.exists());

    let engine = AcquisitionEngine::builder(Arc::new(file.clone()))
        .clock(Arc::new(clock.clone()))
        .build();
    let source = Source::new(&clock);
    let token = engine
        .acquire(&lookup("other"), source.fetch())
        .await
        .unwrap();
    assert_eq!(token.source, TokenSource::IdentityProvider);

    fs4::FileExt::unlock(&holder).unwrap();
    let (key2, entry2) = access_token(&clock, "t", 3600);
    file.put(key2.clone(), entry2).await.unwrap();
    assert!(read_json(&path)["AccessToken"][key2.as_str()].is_object());
}

fn hold_lock(file: &FileCache) -> std::fs::File {
    let holder = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(file.lock_path())
        .unwrap();
    fs4::FileExt::lock(&holder).unwrap();
    holder
}

/// How many of this process's descriptors are open on the file at `path`, and on a file deleted
/// from `path` (Linux: `/proc/self/fd`).
#[cfg(target_os = "linux")]
fn descriptors_on(path: &std::path::Path) -> (usize, usize) {
    let deleted = format!("{} (deleted)", path.display());
    let (mut live, mut gone) = (0, 0);
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if target == path {
            live += 1;
        } else if target.as_os_str() == deleted.as_str() {
            gone += 1;
        }
    }
    (live, gone)
}

/// Spins until `done` holds, failing the test after `limit` (a bound, not a timing assertion).
#[cfg(target_os = "linux")]
fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "gave up waiting: {what}");
        std::thread::yield_now();
    }
}

/// MSAL's libraries delete the lock file when they release it. A writer that waited on the old
/// file and is then granted its lock must notice that the name now belongs to a new, locked
/// file, and wait for that one instead of writing alongside its holder.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_file_deleted_and_recreated_by_its_holder_is_not_a_lock() {
    use std::os::unix::fs::MetadataExt;

    let dir = TempDir::new("lock-replaced");
    let dir_path = std::fs::canonicalize(dir.path()).unwrap();
    let path = dir_path.join("cache.json");
    let clock = ManualClock::at_unix(1_700_000_000);
    let file = FileCache::builder(&path)
        .clock(Arc::new(clock.clone()))
        .lock_timeout(Duration::from_secs(60))
        .build();
    let lock_path = file.lock_path().to_path_buf();
    // An MSAL process (A) holds the lock.
    let first = hold_lock(&file);
    let first_inode = first.metadata().unwrap().ino();
    let (key, entry) = access_token(&clock, "s", 3600);
    let writer = {
        let (file, key, entry) = (file.clone(), key.clone(), entry.clone());
        tokio::spawn(async move { file.put(key, entry).await })
    };
    // The writer has the lock file open and is waiting on it.
    wait_for(
        "the writer opens the lock file",
        Duration::from_secs(30),
        || descriptors_on(&lock_path) == (2, 0),
    );
    // A releases MSAL's way: the file is deleted, and another MSAL process (B) creates and
    // locks a new one under the same name before A's descriptor is closed.
    std::fs::remove_file(&lock_path).unwrap();
    let second = hold_lock(&file);
    let second_inode = second.metadata().unwrap().ino();
    assert_ne!(first_inode, second_inode);
    drop(first);
    // The writer gets the old file's lock, finds the name taken by B's file, and waits on that.
    wait_for(
        "the writer waits on the new lock file (or writes)",
        Duration::from_secs(30),
        || writer.is_finished() || descriptors_on(&lock_path) == (2, 0),
    );
    assert!(
        !writer.is_finished(),
        "the writer went ahead while another process held the lock file now at the path"
    );
    assert!(!path.exists(), "nothing was written under B's lock");
    // B releases MSAL's way too: the file is deleted before it is unlocked.
    std::fs::remove_file(&lock_path).unwrap();
    fs4::FileExt::unlock(&second).unwrap();
    drop(second);
    writer.await.unwrap().unwrap();
    assert!(read_json(&path)["AccessToken"][key.as_str()].is_object());
    assert_eq!(file.pending_len(), 0);
    // This cache made its own lock file and, releasing it, left it in place (and closed it).
    let third_inode = std::fs::metadata(&lock_path).unwrap().ino();
    assert_eq!(descriptors_on(&lock_path), (0, 0));
    // A writer after it uses the same file: two writers in a row, each finds the other's work.
    let (key2, entry2) = access_token(&clock, "t", 3600);
    cache(&path, &clock)
        .put(key2.clone(), entry2)
        .await
        .unwrap();
    assert_eq!(std::fs::metadata(&lock_path).unwrap().ino(), third_inode);
    let json = read_json(&path);
    assert!(json["AccessToken"][key.as_str()].is_object());
    assert!(json["AccessToken"][key2.as_str()].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_that_missed_the_lock_are_written_by_flush() {
    let dir = TempDir::new("flush");
    let path = dir.join("cache.json");
    let clock = ManualClock::at_unix(1_700_000_000);
    let file = FileCache::builder(&path)
        .clock(Arc::new(clock.clone()))
        .lock_timeout(Duration::from_millis(50))
        .build();
    assert_eq!(file.flush().await.unwrap(), 0, "nothing to write");
    assert!(!path.exists(), "an empty flush does not create the file");

    let holder = hold_lock(&file);
    let (key, entry) = access_token(&clock, "s", 3600);
    let (gone, gone_entry) = access_token(&clock, "gone", 3600);
    assert!(file.put(key.clone(), entry).await.is_err());
    assert!(file.put(gone.clone(), gone_entry).await.is_err());
    assert!(file.remove(&gone).await.is_err());
    assert_eq!(file.pending_len(), 2);
    let error = file.flush().await.unwrap_err();
    assert_eq!(error.code(), &codes::CACHE_LOCK_TIMEOUT);
    assert_eq!(file.pending_len(), 2, "still held after a failed flush");

    fs4::FileExt::unlock(&holder).unwrap();
    assert_eq!(file.flush().await.unwrap(), 2);
    assert_eq!(file.pending_len(), 0);
    let json = read_json(&path);
    assert!(json["AccessToken"][key.as_str()].is_object());
    assert!(
        json["AccessToken"].get(gone.as_str()).is_none(),
        "the removal was written too"
    );
}

#[test]
fn the_last_handle_dropped_writes_what_missed_the_lock() {
    let dir = TempDir::new("drop-flush");
    let path = dir.join("cache.json");
    let clock = ManualClock::at_unix(1_700_000_000);
    let file = FileCache::builder(&path)
        .clock(Arc::new(clock.clone()))
        .lock_timeout(Duration::from_millis(50))
        .build();
    let second_handle = file.clone();
    let holder = hold_lock(&file);
    let (key, entry) = access_token(&clock, "s", 3600);
    // The write misses the lock inside a runtime; the drops below run outside any.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert!(runtime.block_on(file.put(key.clone(), entry)).is_err());
    fs4::FileExt::unlock(&holder).unwrap();

    drop(file);
    assert!(
        !path.exists(),
        "another handle is alive: nothing written yet"
    );
    drop(second_handle);
    assert!(read_json(&path)["AccessToken"][key.as_str()].is_object());
}

#[cfg(feature = "encryption")]
mod encryption {
    use super::*;
    use fic_token_cache::EncryptionKey;

    fn encrypted(path: &std::path::Path, clock: &ManualClock, key: [u8; 32]) -> FileCache {
        FileCache::builder(path)
            .clock(Arc::new(clock.clone()))
            .reload_interval(Duration::ZERO)
            .encryption_key(EncryptionKey::from_bytes(key))
            .build()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_encrypted_file_is_unreadable_without_its_key_and_never_overwritten() {
        let dir = TempDir::new("encrypted");
        let path = dir.join("cache.json");
        let clock = ManualClock::at_unix(1_700_000_000);
        let file = encrypted(&path, &clock, [7; 32]);
        let (key, entry) = access_token(&clock, "s", 3600);
        file.put(key.clone(), entry.clone()).await.unwrap();

        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(b"FICC\x01"));
        assert!(
            serde_json::from_slice::<Value>(&bytes).is_err(),
            "not JSON on disk"
        );
        let needle = b"secret-for-s";
        assert!(!bytes.windows(needle.len()).any(|w| w == needle));
        assert!(!bytes.windows(9).any(|w| w == b"AccessTok"));

        // The right key reads it.
        assert_eq!(
            encrypted(&path, &clock, [7; 32])
                .get(&key)
                .await
                .unwrap()
                .as_deref(),
            Some(&*entry)
        );

        // A wrong key, or none: a clear error, and the file is left as it is.
        for other in [encrypted(&path, &clock, [8; 32]), cache(&path, &clock)] {
            assert_eq!(
                other.get(&key).await.unwrap_err().code(),
                &codes::CACHE_DECRYPTION_FAILED
            );
            assert_eq!(
                other.reload().await.unwrap_err().code(),
                &codes::CACHE_DECRYPTION_FAILED
            );
            let (key2, entry2) = access_token(&clock, "t", 3600);
            assert_eq!(
                other
                    .put(key2.clone(), entry2.clone())
                    .await
                    .unwrap_err()
                    .code(),
                &codes::CACHE_DECRYPTION_FAILED
            );
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "not overwritten");
            // The misconfigured process still works from memory.
            assert_eq!(other.get(&key2).await.unwrap().as_deref(), Some(&*entry2));
            let engine = AcquisitionEngine::builder(Arc::new(other))
                .clock(Arc::new(clock.clone()))
                .build();
            let source = Source::new(&clock);
            assert!(engine.acquire(&lookup("u"), source.fetch()).await.is_ok());
            assert!(engine.acquire(&lookup("u"), source.fetch()).await.is_ok());
            assert_eq!(source.calls(), 1, "served from memory the second time");
        }
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_truncated_envelope_is_corrupt_but_a_bad_tag_is_a_wrong_key() {
        let clock = ManualClock::at_unix(1_700_000_000);
        let sealed = {
            let dir = TempDir::new("sealed");
            let path = dir.join("cache.json");
            let file = encrypted(&path, &clock, [7; 32]);
            let (key, entry) = access_token(&clock, "old", 3600);
            file.put(key, entry).await.unwrap();
            std::fs::read(&path).unwrap()
        };
        assert!(sealed.len() > 33);

        // Cut below the header and tag (5 + 12 + 16 bytes): corrupt, set aside, replaced.
        for cut in [4, 5, 17, 32] {
            let dir = TempDir::new("truncated");
            let path = dir.join("cache.json");
            std::fs::write(&path, &sealed[..cut]).unwrap();
            let file = encrypted(&path, &clock, [7; 32]);
            let (key, entry) = access_token(&clock, "s", 3600);
            assert!(file.get(&key).await.unwrap().is_none(), "cut at {cut}");
            assert_eq!(
                std::fs::read(dir.join("cache.json.corrupt-1700000000")).unwrap(),
                &sealed[..cut]
            );
            file.put(key.clone(), entry.clone()).await.unwrap();
            assert_eq!(
                encrypted(&path, &clock, [7; 32])
                    .get(&key)
                    .await
                    .unwrap()
                    .as_deref(),
                Some(&*entry),
                "cut at {cut}"
            );
        }

        // Well-formed but the tag does not match (altered, cut past its header, or another
        // key): the clear wrong-key error, and the file is never overwritten.
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        for bad in [
            altered,
            sealed[..sealed.len() - 1].to_vec(),
            sealed[..33].to_vec(),
        ] {
            let dir = TempDir::new("bad-tag");
            let path = dir.join("cache.json");
            std::fs::write(&path, &bad).unwrap();
            let file = encrypted(&path, &clock, [7; 32]);
            let (key, entry) = access_token(&clock, "s", 3600);
            assert_eq!(
                file.get(&key).await.unwrap_err().code(),
                &codes::CACHE_DECRYPTION_FAILED
            );
            assert_eq!(
                file.put(key, entry).await.unwrap_err().code(),
                &codes::CACHE_DECRYPTION_FAILED
            );
            assert_eq!(std::fs::read(&path).unwrap(), bad, "not overwritten");
            assert!(!dir.join("cache.json.corrupt-1700000000").exists());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_plain_file_where_a_key_is_configured_is_not_trusted() {
        let dir = TempDir::new("plain");
        let path = dir.join("cache.json");
        let clock = ManualClock::at_unix(1_700_000_000);
        let plain = cache(&path, &clock);
        let (key, entry) = access_token(&clock, "s", 3600);
        plain.put(key.clone(), entry).await.unwrap();
        let file = encrypted(&path, &clock, [7; 32]);
        assert!(file.get(&key).await.unwrap().is_none());
        assert!(dir.join("cache.json.corrupt-1700000000").exists());
        let (key2, entry2) = access_token(&clock, "t", 3600);
        file.put(key2.clone(), entry2.clone()).await.unwrap();
        assert!(std::fs::read(&path).unwrap().starts_with(b"FICC"));
        assert_eq!(
            encrypted(&path, &clock, [7; 32])
                .get(&key2)
                .await
                .unwrap()
                .as_deref(),
            Some(&*entry2)
        );
    }
}
