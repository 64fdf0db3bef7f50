//! Client credentials with secrets and certificate-signed assertions, and their rejections.
// Test helpers (not only #[test] functions) may unwrap.
#![allow(clippy::unwrap_used)]

mod support;

use fic_emulator::{codes, App, Emulator};
use serde_json::json;
use support::*;

const LOGIN: &str = "login.microsoftonline.com";

fn form<'a>(
    client_id: &'a str,
    credential: &'a [(&'a str, &'a str)],
    scope: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let mut f = vec![("client_id", client_id)];
    f.extend_from_slice(credential);
    f.push(("scope", scope));
    f.push(("grant_type", "client_credentials"));
    f
}

#[tokio::test]
async fn secret_gives_a_bearer_app_token() {
    let emu = standard_builder().start().await.unwrap();
    let response = token(
        &emu,
        LOGIN,
        &form(SECRET_APP, &[("client_secret", SECRET)], GRAPH_SCOPE),
        None,
    )
    .await;
    assert_eq!(response.status, 200);
    let body = response.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    assert!(
        body.get("refresh_in").is_none(),
        "lifetime under 2 h: no refresh_in"
    );
    assert!(body.get("refresh_token").is_none());
    // The correlation id is echoed when asked for.
    let sent = emu.log().last_token_request().unwrap();
    assert_eq!(
        response.header("client-request-id"),
        sent.header("client-request-id")
    );
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(header_of(token)["alg"], "RS256");
    assert_eq!(header_of(token)["kid"], emu.signing_key_id());
    let claims = claims_of(token);
    assert_eq!(claims["aud"], "https://graph.microsoft.com");
    assert_eq!(
        claims["iss"],
        format!("https://login.microsoftonline.com/{TENANT}/v2.0")
    );
    assert_eq!(claims["appid"], SECRET_APP);
    assert_eq!(claims["azp"], SECRET_APP);
    assert_eq!(claims["appidacr"], "1");
    assert_eq!(claims["idtyp"], "app");
    assert_eq!(claims["tid"], TENANT);
    assert_eq!(claims["roles"], json!(["Files.Read.All"]));
    let app = emu.directory().app(SECRET_APP).unwrap();
    assert_eq!(claims["oid"], app.object_id);
    assert_eq!(claims["sub"], app.object_id);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        3599
    );
    assert!(claims.get("cnf").is_none());
    assert!(claims.get("scp").is_none());
}

#[tokio::test]
async fn refresh_in_follows_the_lifetime() {
    let emu = standard_builder()
        .token_lifetime(std::time::Duration::from_secs(7200))
        .start()
        .await
        .unwrap();
    let response = token(
        &emu,
        LOGIN,
        &form(SECRET_APP, &[("client_secret", SECRET)], GRAPH_SCOPE),
        None,
    )
    .await;
    assert_eq!(response.json()["expires_in"], 7200);
    assert_eq!(response.json()["refresh_in"], 3600);
    emu.update_settings(|s| s.refresh_in = fic_emulator::RefreshIn::Never);
    let response = token(
        &emu,
        LOGIN,
        &form(SECRET_APP, &[("client_secret", SECRET)], GRAPH_SCOPE),
        None,
    )
    .await;
    assert!(response.json().get("refresh_in").is_none());
}

#[tokio::test]
async fn tenant_domain_and_regional_host_work_and_tokens_carry_the_cloud_issuer() {
    let emu = standard_builder().start().await.unwrap();
    let url = endpoint("westus3.login.microsoft.com", "contoso.onmicrosoft.com");
    let response = post_form(
        &emu,
        &url,
        &form(SECRET_APP, &[("client_secret", SECRET)], GRAPH_SCOPE),
        None,
    )
    .await
    .unwrap();
    assert_eq!(response.status, 200);
    let claims = claims_of(response.json()["access_token"].as_str().unwrap());
    assert_eq!(
        claims["iss"],
        format!("https://login.microsoftonline.com/{TENANT}/v2.0")
    );
    // A sovereign cloud's host issues with its own login host.
    let response = post_form(
        &emu,
        &endpoint("login.microsoftonline.us", TENANT),
        &form(SECRET_APP, &[("client_secret", SECRET)], GRAPH_SCOPE),
        None,
    )
    .await
    .unwrap();
    let claims = claims_of(response.json()["access_token"].as_str().unwrap());
    assert_eq!(
        claims["iss"],
        format!("https://login.microsoftonline.us/{TENANT}/v2.0")
    );
}

#[tokio::test]
async fn certificate_assertions_ps256_rs256_es256() {
    let a = TestCert::a();
    let ec = TestCert::ec("ec app");
    let emu = standard_builder()
        .app(App::new(EC_APP, TENANT).certificate(ec.der.clone()))
        .start()
        .await
        .unwrap();
    let aud = endpoint(LOGIN, TENANT);
    for (cert, alg, client) in [
        (&a, "PS256", CERT_APP),
        (&a, "RS256", CERT_APP),
        (&ec, "ES256", EC_APP),
    ] {
        let assertion = cert_assertion(cert, alg, client, &aud, now_unix(), false);
        let response = token(
            &emu,
            LOGIN,
            &form(
                client,
                &[
                    ("client_assertion_type", JWT_BEARER),
                    ("client_assertion", &assertion),
                ],
                GRAPH_SCOPE,
            ),
            None,
        )
        .await;
        assert_eq!(response.status, 200, "{alg}: {:#}", response.json());
        let claims = claims_of(response.json()["access_token"].as_str().unwrap());
        assert_eq!(claims["appid"], client);
        assert_eq!(claims["appidacr"], "2");
    }
    // RS256 with the SHA-1 `x5t` header (ADFS style) is found too.
    let header = json!({ "alg": "RS256", "typ": "JWT", "x5t": x5t_sha1(&a.der) });
    let assertion = sign_jwt(
        &header,
        &assertion_claims(CERT_APP, &aud, now_unix()),
        &a.key,
    );
    let response = token(
        &emu,
        LOGIN,
        &form(
            CERT_APP,
            &[
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &assertion),
            ],
            GRAPH_SCOPE,
        ),
        None,
    )
    .await;
    assert_eq!(response.status, 200);
    // MSAL.NET's string dates are accepted, as Entra does.
    let mut claims = assertion_claims(CERT_APP, &aud, now_unix());
    claims["nbf"] = json!(now_unix().to_string());
    claims["exp"] = json!((now_unix() + 600).to_string());
    let header = json!({ "alg": "PS256", "typ": "JWT", "x5t#S256": a.thumbprint() });
    let assertion = sign_jwt(&header, &claims, &a.key);
    let response = token(
        &emu,
        LOGIN,
        &form(
            CERT_APP,
            &[
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &assertion),
            ],
            GRAPH_SCOPE,
        ),
        None,
    )
    .await;
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn subject_name_issuer_needs_the_chain_to_the_registered_issuer() {
    let pki = sni_pki("Contoso Root", "client.contoso.com", true);
    let other = sni_pki("Fabrikam Root", "client.contoso.com", false);
    let emu = standard_builder()
        .app(App::new(SNI_APP, TENANT).subject_issuer("client.contoso.com", pki.root_der.clone()))
        .start()
        .await
        .unwrap();
    let aud = endpoint(LOGIN, TENANT);
    let send_assertion = |assertion: String| {
        let emu = &emu;
        async move {
            token(
                emu,
                LOGIN,
                &form(
                    SNI_APP,
                    &[
                        ("client_assertion_type", JWT_BEARER),
                        ("client_assertion", &assertion),
                    ],
                    GRAPH_SCOPE,
                ),
                None,
            )
            .await
        }
    };
    // x5c with leaf + intermediate: accepted (RS256 and PS256).
    for alg in ["RS256", "PS256"] {
        let response = send_assertion(cert_assertion(
            &pki.leaf,
            alg,
            SNI_APP,
            &aud,
            now_unix(),
            true,
        ))
        .await;
        assert_eq!(response.status, 200, "{:#}", response.json());
    }
    // Without x5c the certificate cannot be found.
    let response = send_assertion(cert_assertion(
        &pki.leaf,
        "PS256",
        SNI_APP,
        &aud,
        now_unix(),
        false,
    ))
    .await;
    response.assert_aadsts(401, "invalid_client", codes::BAD_ASSERTION_SIGNATURE);
    assert!(response.json()["error_description"]
        .as_str()
        .unwrap()
        .contains("x5c"));
    // The leaf alone (no intermediate) does not chain to the root.
    let header = json!({
        "alg": "PS256", "typ": "JWT", "x5t#S256": pki.leaf.thumbprint(),
        "x5c": [base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &pki.leaf.der)],
    });
    let response = send_assertion(sign_jwt(
        &header,
        &assertion_claims(SNI_APP, &aud, now_unix()),
        &pki.leaf.key,
    ))
    .await;
    response.assert_aadsts(401, "invalid_client", codes::BAD_ASSERTION_SIGNATURE);
    // Same subject, chain to another root: refused.
    let response = send_assertion(cert_assertion(
        &other.leaf,
        "ES256",
        SNI_APP,
        &aud,
        now_unix(),
        true,
    ))
    .await;
    response.assert_aadsts(401, "invalid_client", codes::BAD_ASSERTION_SIGNATURE);
    // An x5t#S256 that does not belong to the x5c leaf: refused.
    let mut header =
        json!({ "alg": "PS256", "typ": "JWT", "x5t#S256": TestCert::b().thumbprint() });
    header["x5c"] = json!(pki
        .leaf
        .chain
        .iter()
        .map(|c| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, c))
        .collect::<Vec<_>>());
    let response = send_assertion(sign_jwt(
        &header,
        &assertion_claims(SNI_APP, &aud, now_unix()),
        &pki.leaf.key,
    ))
    .await;
    response.assert_aadsts(401, "invalid_client", codes::BAD_ASSERTION_SIGNATURE);
}

#[tokio::test]
async fn assertion_rejections() {
    let a = TestCert::a();
    let b = TestCert::b();
    let emu = standard_builder().start().await.unwrap();
    let aud = endpoint(LOGIN, TENANT);
    let post = |assertion: String| {
        let emu = &emu;
        async move {
            token(
                emu,
                LOGIN,
                &form(
                    CERT_APP,
                    &[
                        ("client_assertion_type", JWT_BEARER),
                        ("client_assertion", &assertion),
                    ],
                    GRAPH_SCOPE,
                ),
                None,
            )
            .await
        }
    };
    let now = now_unix();
    let header = json!({ "alg": "PS256", "typ": "JWT", "x5t#S256": a.thumbprint() });

    // Signed by another key than the registered certificate's.
    let response = post(sign_jwt(
        &header,
        &assertion_claims(CERT_APP, &aud, now),
        &b.key,
    ))
    .await;
    response.assert_aadsts(401, "invalid_client", codes::BAD_ASSERTION_SIGNATURE);
    // A certificate that is not registered.
    let response = post(cert_assertion(&b, "PS256", CERT_APP, &aud, now, false)).await;
    response.assert_aadsts(401, "invalid_client", codes::BAD_ASSERTION_SIGNATURE);
    // aud = another endpoint (the regional one) than the one called.
    let response = post(cert_assertion(
        &a,
        "PS256",
        CERT_APP,
        &endpoint("westus3.login.microsoft.com", TENANT),
        now,
        false,
    ))
    .await;
    response.assert_aadsts(401, "invalid_client", codes::ASSERTION_AUDIENCE_MISMATCH);
    // iss/sub another client.
    let mut claims = assertion_claims(CERT_APP, &aud, now);
    claims["sub"] = json!(SECRET_APP);
    let response = post(sign_jwt(&header, &claims, &a.key)).await;
    response.assert_aadsts(401, "invalid_client", codes::ASSERTION_CLIENT_MISMATCH);
    // Expired beyond the 5 minute skew.
    let mut claims = assertion_claims(CERT_APP, &aud, now - 2000);
    claims["exp"] = json!(now - 301);
    let response = post(sign_jwt(&header, &claims, &a.key)).await;
    response.assert_aadsts(401, "invalid_client", codes::ASSERTION_EXPIRED);
    // Expired within the skew: accepted.
    let mut claims = assertion_claims(CERT_APP, &aud, now - 900);
    claims["exp"] = json!(now - 200);
    assert_eq!(post(sign_jwt(&header, &claims, &a.key)).await.status, 200);
    // Not yet valid.
    let claims = assertion_claims(CERT_APP, &aud, now + 1000);
    let response = post(sign_jwt(&header, &claims, &a.key)).await;
    response.assert_aadsts(401, "invalid_client", codes::ASSERTION_EXPIRED);
    // jti replay.
    let assertion = cert_assertion(&a, "PS256", CERT_APP, &aud, now, false);
    assert_eq!(post(assertion.clone()).await.status, 200);
    let response = post(assertion).await;
    response.assert_aadsts(401, "invalid_client", codes::ASSERTION_REPLAYED);
    // Unsupported algorithm.
    let hs = json!({ "alg": "HS256", "typ": "JWT", "x5t#S256": a.thumbprint() });
    let forged = format!(
        "{}.{}.c2ln",
        b64url(hs.to_string()),
        b64url(assertion_claims(CERT_APP, &aud, now).to_string())
    );
    let response = post(forged).await;
    response.assert_aadsts(401, "invalid_client", codes::UNSUPPORTED_ALGORITHM);
    // No thumbprint header.
    let bare = json!({ "alg": "PS256", "typ": "JWT" });
    let response = post(sign_jwt(
        &bare,
        &assertion_claims(CERT_APP, &aud, now),
        &a.key,
    ))
    .await;
    response.assert_aadsts(401, "invalid_client", codes::MALFORMED_ASSERTION);
    // Not a JWT at all.
    let response = post("not-a-jwt".to_owned()).await;
    response.assert_aadsts(401, "invalid_client", codes::MALFORMED_ASSERTION);
    // No jti.
    let mut claims = assertion_claims(CERT_APP, &aud, now);
    claims.as_object_mut().unwrap().remove("jti");
    let response = post(sign_jwt(&header, &claims, &a.key)).await;
    response.assert_aadsts(401, "invalid_client", codes::MALFORMED_ASSERTION);
}

#[tokio::test]
async fn request_rejections() {
    let emu = standard_builder().start().await.unwrap();
    let ok_secret = [("client_secret", SECRET)];
    // Wrong secret.
    let response = token(
        &emu,
        LOGIN,
        &form(SECRET_APP, &[("client_secret", "nope")], GRAPH_SCOPE),
        None,
    )
    .await;
    response.assert_aadsts(401, "invalid_client", codes::BAD_SECRET);
    // Unknown application.
    let response = token(
        &emu,
        LOGIN,
        &form(
            "99999999-9999-9999-9999-999999999999",
            &ok_secret,
            GRAPH_SCOPE,
        ),
        None,
    )
    .await;
    response.assert_aadsts(400, "unauthorized_client", codes::APP_NOT_FOUND);
    // Unknown tenant.
    let response = post_form(
        &emu,
        &endpoint(LOGIN, OTHER_TENANT),
        &form(SECRET_APP, &ok_secret, GRAPH_SCOPE),
        None,
    )
    .await
    .unwrap();
    response.assert_aadsts(400, "invalid_tenant", codes::TENANT_NOT_FOUND);
    // Missing parameters.
    for missing in ["grant_type", "client_id", "scope"] {
        let f: Vec<_> = form(SECRET_APP, &ok_secret, GRAPH_SCOPE)
            .into_iter()
            .filter(|(k, _)| *k != missing)
            .collect();
        let response = token(&emu, LOGIN, &f, None).await;
        response.assert_aadsts(400, "invalid_request", codes::MISSING_PARAMETER);
        assert!(response.json()["error_description"]
            .as_str()
            .unwrap()
            .contains(&format!("'{missing}'")));
    }
    // No credential at all.
    let response = token(&emu, LOGIN, &form(SECRET_APP, &[], GRAPH_SCOPE), None).await;
    response.assert_aadsts(
        401,
        "invalid_client",
        codes::CREDENTIAL_REQUIRED_CLIENT_CREDENTIALS,
    );
    // Scopes.
    let response = token(
        &emu,
        LOGIN,
        &form(
            SECRET_APP,
            &ok_secret,
            "https://graph.microsoft.com/User.Read",
        ),
        None,
    )
    .await;
    response.assert_aadsts(400, "invalid_scope", codes::SCOPE_NOT_DEFAULT);
    let two = "https://graph.microsoft.com/.default https://vault.azure.net/.default";
    let response = token(&emu, LOGIN, &form(SECRET_APP, &ok_secret, two), None).await;
    response.assert_aadsts(400, "invalid_scope", codes::INVALID_SCOPE);
    let oidc = "https://graph.microsoft.com/.default openid profile offline_access";
    let response = token(&emu, LOGIN, &form(SECRET_APP, &ok_secret, oidc), None).await;
    response.assert_aadsts(400, "invalid_scope", codes::INVALID_SCOPE);
    let response = token(
        &emu,
        LOGIN,
        &form(SECRET_APP, &ok_secret, "https://unknown.example/.default"),
        None,
    )
    .await;
    response.assert_aadsts(400, "invalid_resource", codes::RESOURCE_NOT_FOUND);
    // Unsupported grant, repeated parameter, not POST, common tenant.
    let mut f = form(SECRET_APP, &ok_secret, GRAPH_SCOPE);
    f.retain(|(k, _)| *k != "grant_type");
    f.push(("grant_type", "password"));
    token(&emu, LOGIN, &f, None).await.assert_aadsts(
        400,
        "unsupported_grant_type",
        codes::UNSUPPORTED_GRANT_TYPE,
    );
    let mut f = form(SECRET_APP, &ok_secret, GRAPH_SCOPE);
    f.push(("scope", GRAPH_SCOPE));
    token(&emu, LOGIN, &f, None).await.assert_aadsts(
        400,
        "invalid_request",
        codes::DUPLICATE_PARAMETER,
    );
    let response = send(&emu, "GET", &endpoint(LOGIN, TENANT), &[], b"", None)
        .await
        .unwrap();
    response.assert_aadsts(400, "invalid_request", codes::POST_REQUIRED);
    let response = post_form(
        &emu,
        &endpoint(LOGIN, "common"),
        &form(SECRET_APP, &ok_secret, GRAPH_SCOPE),
        None,
    )
    .await
    .unwrap();
    response.assert_aadsts(400, "invalid_request", codes::TENANT_REQUIRED);
    // Both a secret and an assertion.
    let f = form(
        SECRET_APP,
        &[
            ("client_secret", SECRET),
            ("client_assertion", "x"),
            ("client_assertion_type", JWT_BEARER),
        ],
        GRAPH_SCOPE,
    );
    token(&emu, LOGIN, &f, None).await.assert_aadsts(
        400,
        "invalid_request",
        codes::EMU_MULTIPLE_CREDENTIALS,
    );
    // A body that is not a form is a request without parameters, not a crash.
    let response = send(
        &emu,
        "POST",
        &endpoint(LOGIN, TENANT),
        &[("Content-Type", "application/json")],
        br#"{"grant_type":"client_credentials"}"#,
        None,
    )
    .await
    .unwrap();
    response.assert_aadsts(400, "invalid_request", codes::MISSING_PARAMETER);
    // Garbage percent-encoding does not crash either.
    let response = send(
        &emu,
        "POST",
        &endpoint(LOGIN, TENANT),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"grant_type=%ZZ%&&=&client_id=%ff%fe",
        None,
    )
    .await
    .unwrap();
    assert_eq!(response.status, 400);
    // The correlation id of an error is the request's client-request-id.
    let response = send(
        &emu,
        "POST",
        &endpoint(LOGIN, TENANT),
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("client-request-id", "corr-123"),
        ],
        b"client_id=x",
        None,
    )
    .await
    .unwrap();
    assert_eq!(response.json()["correlation_id"], "corr-123");
}

#[tokio::test]
async fn issued_tokens_validate_with_an_independent_jwt_library() {
    use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
    let emu = standard_builder().start().await.unwrap();
    let token = secret_token(&emu, GRAPH_SCOPE).await;
    // Fetch the JWKS over HTTPS as an OIDC tool would.
    let discovery = send(
        &emu,
        "GET",
        &format!(
            "https://login.microsoftonline.com/{TENANT}/v2.0/.well-known/openid-configuration"
        ),
        &[],
        b"",
        None,
    )
    .await
    .unwrap()
    .json();
    assert_eq!(
        discovery["issuer"],
        format!("https://login.microsoftonline.com/{TENANT}/v2.0")
    );
    let jwks = send(
        &emu,
        "GET",
        discovery["jwks_uri"].as_str().unwrap(),
        &[],
        b"",
        None,
    )
    .await
    .unwrap()
    .json();
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).unwrap();
    let kid = decode_header(&token).unwrap().kid.unwrap();
    let jwk = set.find(&kid).unwrap();
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&["https://graph.microsoft.com"]);
    validation.set_issuer(&[discovery["issuer"].as_str().unwrap()]);
    let data = decode::<serde_json::Value>(&token, &key, &validation).unwrap();
    assert_eq!(data.claims["appid"], SECRET_APP);
    // A tampered token fails.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut claims = claims_of(&token);
    claims["appid"] = json!("someone-else");
    parts[1] = b64url(claims.to_string());
    assert!(decode::<serde_json::Value>(&parts.join("."), &key, &validation).is_err());
}

#[tokio::test]
async fn two_emulators_do_not_trust_each_other() {
    let one = standard_builder().start().await.unwrap();
    let two = Emulator::builder()
        .app(App::new(SECRET_APP, TENANT).secret(SECRET))
        .start()
        .await
        .unwrap();
    assert_ne!(one.signing_key_id(), two.signing_key_id());
    let token = secret_token(&one, GRAPH_SCOPE).await;
    let response = call_resource(
        &two,
        "https://graph.microsoft.com/v1.0/me",
        Some(&format!("Bearer {token}")),
        None,
    )
    .await;
    assert_eq!(response.status, 401);
}

#[tokio::test]
async fn assertion_with_an_absurd_expiry_is_refused_and_its_jti_is_kept() {
    let a = TestCert::a();
    // A clock that stands still: the limits below are exact to the second.
    let clock = fic_oauth_core::ManualClock::new(std::time::SystemTime::now());
    let emu = standard_builder()
        .clock(std::sync::Arc::new(clock.clone()))
        .start()
        .await
        .unwrap();
    let aud = endpoint(LOGIN, TENANT);
    let header = json!({ "alg": "PS256", "typ": "JWT", "x5t#S256": a.thumbprint() });
    let post = |assertion: String| {
        let emu = &emu;
        async move {
            token(
                emu,
                LOGIN,
                &form(
                    CERT_APP,
                    &[
                        ("client_assertion_type", JWT_BEARER),
                        ("client_assertion", &assertion),
                    ],
                    GRAPH_SCOPE,
                ),
                None,
            )
            .await
        }
    };
    let now = fic_oauth_core::time::unix_seconds(fic_oauth_core::Clock::now(&clock));
    let signed_with_exp = |exp: serde_json::Value| {
        let mut claims = assertion_claims(CERT_APP, &aud, now);
        claims["exp"] = exp;
        sign_jwt(&header, &claims, &a.key)
    };
    // u64::MAX, a float that saturates to it, and a day past the limit (24 h + 5 min skew):
    // an Entra error, not a dropped connection.
    for exp in [json!(u64::MAX), json!(1e300), json!(now + 24 * 3600 + 301)] {
        let response = post(signed_with_exp(exp.clone())).await;
        response.assert_aadsts(401, "invalid_client", codes::ASSERTION_EXPIRED);
        assert!(
            response.json()["error_description"]
                .as_str()
                .unwrap()
                .contains("more than 86400 seconds after the current time"),
            "{exp}"
        );
    }
    // At the limit: accepted.
    assert_eq!(
        post(signed_with_exp(json!(now + 24 * 3600))).await.status,
        200
    );
    // With the limit lifted, an assertion valid "for ever" is accepted once: its jti is kept
    // until exp + skew, which saturates instead of overflowing, so the replay is refused.
    emu.update_settings(|s| s.max_assertion_lifetime = std::time::Duration::MAX);
    for exp in [json!(u64::MAX), json!(1e300)] {
        let assertion = signed_with_exp(exp);
        let response = post(assertion.clone()).await;
        assert_eq!(response.status, 200, "{:#}", response.json());
        let response = post(assertion).await;
        response.assert_aadsts(401, "invalid_client", codes::ASSERTION_REPLAYED);
    }
}

#[tokio::test]
async fn an_assertion_whose_iss_is_not_the_client_is_taken_for_a_federated_one() {
    let a = TestCert::a();
    let emu = standard_builder().start().await.unwrap();
    let aud = endpoint(LOGIN, TENANT);
    let header = json!({ "alg": "PS256", "typ": "JWT", "x5t#S256": a.thumbprint() });
    // iss another app, sub the client: no federated credential has that issuer.
    let mut claims = assertion_claims(CERT_APP, &aud, now_unix());
    claims["iss"] = json!(SECRET_APP);
    let assertion = sign_jwt(&header, &claims, &a.key);
    let response = token(
        &emu,
        LOGIN,
        &form(
            CERT_APP,
            &[
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &assertion),
            ],
            GRAPH_SCOPE,
        ),
        None,
    )
    .await;
    response.assert_aadsts(401, "invalid_client", codes::FIC_ISSUER_NO_MATCH);
    assert!(response.json()["error_description"]
        .as_str()
        .unwrap()
        .contains(&format!("assertion issuer '{SECRET_APP}'")));
    // The same claims with iss = the client: accepted (the refusal was about iss alone).
    claims["iss"] = json!(CERT_APP);
    claims["jti"] = json!(uuid::Uuid::new_v4().to_string());
    let assertion = sign_jwt(&header, &claims, &a.key);
    let response = token(
        &emu,
        LOGIN,
        &form(
            CERT_APP,
            &[
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &assertion),
            ],
            GRAPH_SCOPE,
        ),
        None,
    )
    .await;
    assert_eq!(response.status, 200, "{:#}", response.json());
}

#[tokio::test]
async fn each_cloud_issues_tokens_for_its_own_exchange_audience_only() {
    let emu = standard_builder().start().await.unwrap();
    let secret_token_on = |host: &'static str, scope: String| {
        let emu = &emu;
        async move {
            token(
                emu,
                host,
                &form(SECRET_APP, &[("client_secret", SECRET)], &scope),
                None,
            )
            .await
        }
    };
    let audiences = [
        ("login.microsoftonline.com", "api://AzureADTokenExchange"),
        (
            "login.microsoftonline.us",
            "api://AzureADTokenExchangeUSGov",
        ),
        (
            "login.partner.microsoftonline.cn",
            "api://AzureADTokenExchangeChina",
        ),
        (
            "login.sovcloud-identity.fr",
            "api://AzureADTokenExchangeFrance",
        ),
        (
            "login.sovcloud-identity.de",
            "api://AzureADTokenExchangeGermany",
        ),
        (
            "login.sovcloud-identity.sg",
            "api://AzureADTokenExchangeSingapore",
        ),
    ];
    for (host, own) in audiences {
        for (_, audience) in audiences {
            let response = secret_token_on(host, format!("{audience}/.default")).await;
            // Singapore publishes no exchange audience: none is built in there.
            if audience == own && host != "login.sovcloud-identity.sg" {
                assert_eq!(response.status, 200, "{audience} on {host}");
                let claims = claims_of(response.json()["access_token"].as_str().unwrap());
                assert_eq!(claims["aud"], audience);
            } else {
                response.assert_aadsts(400, "invalid_resource", codes::RESOURCE_NOT_FOUND);
                assert!(
                    response.json()["error_description"]
                        .as_str()
                        .unwrap()
                        .contains(&format!("resource principal named {audience} ")),
                    "{audience} on {host}"
                );
            }
        }
    }
    // Registered, the Singapore audience is served there.
    emu.directory().add_resource(fic_emulator::Resource::new(
        "api://AzureADTokenExchangeSingapore",
    ));
    let response = secret_token_on(
        "login.sovcloud-identity.sg",
        "api://AzureADTokenExchangeSingapore/.default".to_owned(),
    )
    .await;
    assert_eq!(response.status, 200, "{:#}", response.json());
}

#[tokio::test]
async fn directory_facts_are_told_only_to_an_authenticated_client() {
    let emu = standard_builder()
        .app(
            App::new(BLUEPRINT, TENANT)
                .secret("bp-secret")
                .agents([AGENT]),
        )
        .start()
        .await
        .unwrap();
    let request = |client_id: &'static str,
                   secret: &'static str,
                   scope: &'static str,
                   fmi_path: Option<&'static str>| {
        let emu = &emu;
        async move {
            let credential = [("client_secret", secret)];
            let mut f = form(client_id, &credential, scope);
            if let Some(path) = fmi_path {
                f.push(("fmi_path", path));
            }
            token(emu, LOGIN, &f, None).await
        }
    };
    // A wrong secret with an fmi_path: the credential error, whether the app is a blueprint,
    // the path one of its agents, or neither.
    for (client, path) in [
        (SECRET_APP, AGENT),
        (BLUEPRINT, OTHER_AGENT),
        (BLUEPRINT, AGENT),
    ] {
        request(client, "wrong", EXCHANGE_SCOPE, Some(path))
            .await
            .assert_aadsts(401, "invalid_client", codes::BAD_SECRET);
    }
    // A wrong secret for an unknown resource: the credential error too.
    request(
        SECRET_APP,
        "wrong",
        "https://nothing.example/.default",
        None,
    )
    .await
    .assert_aadsts(401, "invalid_client", codes::BAD_SECRET);
    // Authenticated, the same requests learn what is wrong.
    request(SECRET_APP, SECRET, EXCHANGE_SCOPE, Some(AGENT))
        .await
        .assert_aadsts(400, "unauthorized_client", codes::EMU_FMI_PATH_NOT_ALLOWED);
    request(BLUEPRINT, "bp-secret", EXCHANGE_SCOPE, Some(OTHER_AGENT))
        .await
        .assert_aadsts(400, "unauthorized_client", codes::EMU_FMI_PATH_NOT_ALLOWED);
    request(SECRET_APP, SECRET, "https://nothing.example/.default", None)
        .await
        .assert_aadsts(400, "invalid_resource", codes::RESOURCE_NOT_FOUND);
    let response = request(BLUEPRINT, "bp-secret", EXCHANGE_SCOPE, Some(AGENT)).await;
    assert_eq!(response.status, 200, "{:#}", response.json());
    assert_eq!(
        claims_of(response.json()["access_token"].as_str().unwrap())["fmi_path"],
        AGENT
    );
}
