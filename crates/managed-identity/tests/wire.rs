//! Responses (expiry shapes, error bodies) and retries (PROTOCOL §4) in virtual time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use fic_managed_identity::codes;
use fic_oauth_core::time::unix_seconds;
use fic_oauth_core::{ErrorCode, ManualClock, TokenCredential, TokenRequestOptions, TokenType};
use support::*;

const APP_SERVICE: [(&str, &str); 2] = [
    ("IDENTITY_ENDPOINT", "http://127.0.0.1:41234/msi/token"),
    ("IDENTITY_HEADER", "app-secret"),
];

fn secs(list: &[u64]) -> Vec<Duration> {
    list.iter().map(|s| Duration::from_secs(*s)).collect()
}

async fn get(
    transport: &FakeTransport,
    clock: &ManualClock,
    pairs: &[(&str, &str)],
) -> Result<fic_oauth_core::AccessToken, fic_oauth_core::Error> {
    builder(transport, clock, env(pairs))
        .build()
        .unwrap()
        .get_token(&[ARM], &TokenRequestOptions::default())
        .await
}

#[tokio::test]
async fn every_expires_on_shape() {
    let iso_in_an_hour = "2023-11-14T23:13:20.0000000+00:00"; // NOW + 3600
    let cases = [
        (format!(r#""expires_on":{}"#, NOW + 3600), NOW + 3600),
        (format!(r#""expires_on":"{}""#, NOW + 3600), NOW + 3600),
        (format!(r#""expires_on":"{iso_in_an_hour}""#), NOW + 3600),
        (
            r#""expires_on":"2023-11-14T23:13:20Z""#.to_owned(),
            NOW + 3600,
        ),
        (r#""expires_on":3599"#.to_owned(), NOW + 3599),
        (r#""expires_on":"3599""#.to_owned(), NOW + 3599),
        (r#""expires_in":3599"#.to_owned(), NOW + 3599),
        (r#""expires_in":"86399""#.to_owned(), NOW + 86399),
    ];
    for (field, expected) in cases {
        let transport = FakeTransport::new();
        transport.reply(
            200,
            &format!(r#"{{"access_token":"t",{field},"token_type":"Bearer"}}"#),
        );
        let clock = ManualClock::at_unix(NOW);
        let token = get(&transport, &clock, &[]).await.unwrap();
        assert_eq!(unix_seconds(token.expires_on), expected, "{field}");
        assert_eq!(token.token_type, TokenType::Bearer);
    }
}

#[tokio::test]
async fn zero_or_past_expiry_is_refused() {
    for field in [
        r#""expires_on":0"#.to_owned(),
        r#""expires_on":"0""#.to_owned(),
        format!(r#""expires_on":{NOW}"#),
        format!(r#""expires_on":"{}""#, NOW - 60),
        r#""expires_on":"2023-11-14T22:00:00Z""#.to_owned(),
        r#""expires_in":0"#.to_owned(),
        r#""expires_in":-1"#.to_owned(),
    ] {
        let transport = FakeTransport::new();
        transport.reply(200, &format!(r#"{{"access_token":"t",{field}}}"#));
        let clock = ManualClock::at_unix(NOW);
        let err = get(&transport, &clock, &[]).await.unwrap_err();
        assert_eq!(
            err.code(),
            &codes::INVALID_TOKEN_PROVIDER_RESPONSE_VALUE,
            "{field}"
        );
    }
    let transport = FakeTransport::new();
    transport.reply(200, r#"{"access_token":"t","expires_on":"tomorrow"}"#);
    let err = get(&transport, &ManualClock::at_unix(NOW), &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), &codes::INVALID_TIMESTAMP_FORMAT);
}

#[tokio::test]
async fn half_life_refresh_only_over_two_hours() {
    for (lifetime, refresh) in [
        (3600, None),
        (7200, None),
        (7201, Some(3600)),
        (86_400, Some(43_200)),
    ] {
        let transport = FakeTransport::new();
        transport.reply(
            200,
            &format!(r#"{{"access_token":"t","expires_in":{lifetime},"refresh_in":60}}"#),
        );
        let token = get(&transport, &ManualClock::at_unix(NOW), &[])
            .await
            .unwrap();
        assert_eq!(
            token.refresh_on.map(unix_seconds),
            refresh.map(|r| NOW + r),
            "{lifetime}"
        );
    }
}

#[tokio::test]
async fn error_bodies_and_unparseable_success() {
    let transport = FakeTransport::new();
    transport.reply(
        400,
        r#"{"error":"invalid_resource","error_description":"AADSTS500011: The resource principal named https://nope was not found.","error_codes":[500011],"correlation_id":"c-1"}"#,
    );
    let clock = ManualClock::at_unix(NOW);
    let err = get(&transport, &clock, &[]).await.unwrap_err();
    assert_eq!(err.code(), &codes::MANAGED_IDENTITY_REQUEST_FAILED);
    assert_eq!(err.status(), Some(400));
    assert_eq!(err.server_error().unwrap().error, "invalid_resource");
    assert_eq!(err.aadsts(), Some(500_011));
    assert!(err.message().contains("AADSTS500011"), "{err}");
    assert_eq!(transport.request_count(), 1, "400 is not retried");

    let transport = FakeTransport::new();
    transport.reply(
        401,
        r#"{"statusCode":401,"message":"Unauthorized request","correlationId":"cid-7"}"#,
    );
    let err = get(&transport, &clock, &APP_SERVICE).await.unwrap_err();
    assert_eq!(err.code(), &codes::MANAGED_IDENTITY_REQUEST_FAILED);
    assert_eq!(err.status(), Some(401));
    assert!(err.message().contains("Unauthorized request"), "{err}");
    assert_eq!(
        err.server_error().unwrap().correlation_id.as_deref(),
        Some("cid-7")
    );

    let transport = FakeTransport::new();
    transport.reply(200, "<html>hello</html>");
    let err = get(&transport, &clock, &[]).await.unwrap_err();
    assert_eq!(err.code(), &codes::MANAGED_IDENTITY_RESPONSE_PARSE_FAILURE);

    let transport = FakeTransport::new();
    transport.reply(200, r#"{"expires_in":3600}"#);
    let err = get(&transport, &clock, &[]).await.unwrap_err();
    assert_eq!(err.code(), &codes::MANAGED_IDENTITY_REQUEST_FAILED);
    // The token never appears in errors or debug output.
    let transport = FakeTransport::new();
    transport.reply(
        200,
        r#"{"access_token":"very-secret-token","expires_in":0}"#,
    );
    let err = get(&transport, &clock, &[]).await.unwrap_err();
    assert!(!format!("{err:?} {err}").contains("very-secret-token"));
}

#[tokio::test]
async fn imds_410_then_success_waits_ten_seconds() {
    let transport = FakeTransport::new();
    transport.reply(410, "").reply(200, &token_body("t"));
    let clock = ManualClock::at_unix(NOW);
    let token = get(&transport, &clock, &[]).await.unwrap();
    assert_eq!(token.token.expose(), "t");
    assert_eq!(clock.sleeps(), secs(&[10]));
    assert_eq!(transport.request_count(), 2);
}

#[tokio::test]
async fn imds_500_twice_then_success_backs_off() {
    let transport = FakeTransport::new();
    transport
        .reply(500, "")
        .reply(503, "")
        .reply(200, &token_body("t"));
    let clock = ManualClock::at_unix(NOW);
    get(&transport, &clock, &[]).await.unwrap();
    assert_eq!(clock.sleeps(), secs(&[1, 2]));
    assert_eq!(transport.request_count(), 3);
    // The retried requests are the same request.
    let requests = transport.requests();
    assert!(requests.iter().all(|r| r.uri == requests[0].uri));
}

#[tokio::test]
async fn imds_gives_up_with_the_last_status() {
    let transport = FakeTransport::new();
    transport
        .reply(500, "")
        .reply(502, "")
        .reply(504, "")
        .reply(503, r#"{"error":"unavailable"}"#);
    let clock = ManualClock::at_unix(NOW);
    let err = get(&transport, &clock, &[]).await.unwrap_err();
    assert_eq!(err.code(), &codes::MANAGED_IDENTITY_REQUEST_FAILED);
    assert_eq!(err.status(), Some(503));
    assert!(err.is_retryable());
    assert_eq!(clock.sleeps(), secs(&[1, 2, 4]));
    assert_eq!(transport.request_count(), 4);

    // A first 410 allows 7 retries, 10 s apart.
    let transport = FakeTransport::new();
    for _ in 0..8 {
        transport.reply(410, "");
    }
    let clock = ManualClock::at_unix(NOW);
    let err = get(&transport, &clock, &[]).await.unwrap_err();
    assert_eq!(err.status(), Some(410));
    assert_eq!(clock.sleeps(), secs(&[10; 7]));
    assert_eq!(transport.request_count(), 8);
}

#[tokio::test]
async fn app_service_429_honours_retry_after() {
    let transport = FakeTransport::new();
    transport
        .reply_with(
            http::Response::builder()
                .status(429)
                .header("retry-after", "7")
                .body(bytes::Bytes::new())
                .unwrap(),
        )
        .reply_with(
            http::Response::builder()
                .status(503)
                .header(
                    "retry-after",
                    httpdate::fmt_http_date(fic_oauth_core::time::from_unix_seconds(NOW + 7 + 20)),
                )
                .body(bytes::Bytes::new())
                .unwrap(),
        )
        .reply(500, "")
        .reply(200, &token_body("t"));
    let clock = ManualClock::at_unix(NOW);
    get(&transport, &clock, &APP_SERVICE).await.unwrap();
    // max(1 s, Retry-After): 7 s, an HTTP date 20 s later, then 1 s.
    assert_eq!(clock.sleeps(), secs(&[7, 20, 1]));
}

#[tokio::test]
async fn app_service_gives_up_after_three_retries_and_skips_unlisted_statuses() {
    let transport = FakeTransport::new();
    for status in [404, 408, 504, 429] {
        transport.reply(status, "");
    }
    let clock = ManualClock::at_unix(NOW);
    let err = get(&transport, &clock, &APP_SERVICE).await.unwrap_err();
    assert_eq!(err.status(), Some(429));
    assert_eq!(clock.sleeps(), secs(&[1, 1, 1]));
    assert_eq!(transport.request_count(), 4);

    // 502 is not retried by the managed identity policy (it is by IMDS's).
    let transport = FakeTransport::new();
    transport.reply(502, "");
    let clock = ManualClock::at_unix(NOW);
    let err = get(&transport, &clock, &APP_SERVICE).await.unwrap_err();
    assert_eq!(err.status(), Some(502));
    assert!(clock.sleeps().is_empty());
}

#[tokio::test]
async fn connection_refused_is_not_retried() {
    for pairs in [&[][..], &APP_SERVICE[..]] {
        let transport = FakeTransport::new();
        transport.fail(ErrorCode::CONNECTION_FAILED);
        let clock = ManualClock::at_unix(NOW);
        let err = get(&transport, &clock, pairs).await.unwrap_err();
        assert_eq!(err.code(), &codes::MANAGED_IDENTITY_UNREACHABLE_NETWORK);
        assert_eq!(transport.request_count(), 1);
        assert!(clock.sleeps().is_empty());
        assert!(std::error::Error::source(&err).is_some());
    }
}

#[tokio::test]
async fn timeouts_are_retried_then_reported() {
    let transport = FakeTransport::new();
    transport
        .fail(ErrorCode::TIMEOUT)
        .reply(200, &token_body("t"));
    let clock = ManualClock::at_unix(NOW);
    get(&transport, &clock, &[]).await.unwrap();
    assert_eq!(clock.sleeps(), secs(&[1]));

    let transport = FakeTransport::new();
    for _ in 0..4 {
        transport.fail(ErrorCode::TIMEOUT);
    }
    let clock = ManualClock::at_unix(NOW);
    let err = get(&transport, &clock, &APP_SERVICE).await.unwrap_err();
    assert_eq!(err.code(), &codes::REQUEST_TIMEOUT);
    assert_eq!(clock.sleeps(), secs(&[1, 1, 1]));
}
