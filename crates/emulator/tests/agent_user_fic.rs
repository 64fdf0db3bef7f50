//! FMI / agent identity: blueprint → agent (fmi_path), agent app tokens, `user_fic` by UPN and
//! OID, refresh-token rotation, and the rejections.
// Test helpers (not only #[test] functions) may unwrap.
#![allow(clippy::unwrap_used)]

mod support;

use fic_emulator::{codes, App, EmulatorHandle, User};
use serde_json::json;
use support::*;

const LOGIN: &str = "login.microsoftonline.com";
const BOB_UPN: &str = "bob@contoso.com";
const BOB_OID: &str = "00000000-0000-0000-0000-000000000b0b";
/// A guest in TENANT from OTHER_TENANT: its home object id, and its object id in TENANT.
const GUEST_UPN: &str = "gina@fabrikam.com";
const GUEST_HOME_OID: &str = "00000000-0000-0000-0000-0000000a0e51";
const GUEST_OID: &str = "00000000-0000-0000-0000-0000000b0e51";

/// The blueprint is SN+I (its assertions carry x5c), with one agent; Alice and Bob exist, and
/// Gina of OTHER_TENANT is a guest in TENANT.
async fn agent_emulator() -> (EmulatorHandle, Pki) {
    let pki = sni_pki("Blueprint Root", "blueprint.contoso.com", true);
    let emu = standard_builder()
        .app(
            App::new(BLUEPRINT, TENANT)
                .subject_issuer("blueprint.contoso.com", pki.root_der.clone())
                .agents([AGENT]),
        )
        .user(User::new(BOB_UPN, BOB_OID, TENANT))
        .user(User::new(GUEST_UPN, GUEST_HOME_OID, OTHER_TENANT).guest_in(TENANT, GUEST_OID))
        .start()
        .await
        .unwrap();
    (emu, pki)
}

/// Leg 1: the blueprint's token for `fmi_path` (T1).
async fn leg1(emu: &EmulatorHandle, pki: &Pki, fmi_path: &str) -> HttpResponse {
    let assertion = cert_assertion(
        &pki.leaf,
        "PS256",
        BLUEPRINT,
        &endpoint(LOGIN, TENANT),
        now_unix(),
        true,
    );
    token(
        emu,
        LOGIN,
        &[
            ("client_id", BLUEPRINT),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &assertion),
            ("scope", EXCHANGE_SCOPE),
            ("grant_type", "client_credentials"),
            ("fmi_path", fmi_path),
        ],
        None,
    )
    .await
}

async fn t1(emu: &EmulatorHandle, pki: &Pki) -> String {
    let response = leg1(emu, pki, AGENT).await;
    assert_eq!(response.status, 200, "{:#}", response.json());
    response.json()["access_token"].as_str().unwrap().to_owned()
}

/// Leg 2: the agent's client credentials with T1 as the assertion.
async fn agent_token(emu: &EmulatorHandle, t1: &str, scope: &str) -> HttpResponse {
    token(
        emu,
        LOGIN,
        &[
            ("client_id", AGENT),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", t1),
            ("scope", scope),
            ("grant_type", "client_credentials"),
        ],
        None,
    )
    .await
}

async fn user_fic(
    emu: &EmulatorHandle,
    t1: &str,
    t2: &str,
    user: (&str, &str),
    scope: &str,
) -> HttpResponse {
    token(
        emu,
        LOGIN,
        &[
            ("client_id", AGENT),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", t1),
            ("grant_type", "user_fic"),
            ("user_federated_identity_credential", t2),
            user,
            ("scope", scope),
            ("client_info", "1"),
        ],
        None,
    )
    .await
}

const USER_SCOPE: &str = "https://graph.microsoft.com/User.Read openid offline_access profile";

#[tokio::test]
async fn blueprint_fmi_path_gives_t1_with_the_agent_in_sub() {
    let (emu, pki) = agent_emulator().await;
    let t1 = t1(&emu, &pki).await;
    let claims = claims_of(&t1);
    assert_eq!(claims["appid"], BLUEPRINT);
    assert_eq!(claims["aud"], "api://AzureADTokenExchange");
    assert_eq!(claims["fmi_path"], AGENT);
    let sub = claims["sub"].as_str().unwrap();
    assert!(
        sub.starts_with("/eid1/c/pub/t/") && sub.ends_with(&format!("/{AGENT}")),
        "{sub}"
    );
    let logged = emu.log().last_token_request().unwrap();
    assert_eq!(logged.form_value("fmi_path"), Some(AGENT));
}

#[tokio::test]
async fn fmi_path_rejections() {
    let (emu, pki) = agent_emulator().await;
    // Not one of the blueprint's agents.
    leg1(&emu, &pki, OTHER_AGENT).await.assert_aadsts(
        400,
        "unauthorized_client",
        codes::EMU_FMI_PATH_NOT_ALLOWED,
    );
    // Not a blueprint.
    let response = token(
        &emu,
        LOGIN,
        &[
            ("client_id", SECRET_APP),
            ("client_secret", SECRET),
            ("scope", EXCHANGE_SCOPE),
            ("grant_type", "client_credentials"),
            ("fmi_path", AGENT),
        ],
        None,
    )
    .await;
    response.assert_aadsts(400, "unauthorized_client", codes::EMU_FMI_PATH_NOT_ALLOWED);
    // The blueprint without x5c (its SN+I certificate cannot be found).
    let assertion = cert_assertion(
        &pki.leaf,
        "PS256",
        BLUEPRINT,
        &endpoint(LOGIN, TENANT),
        now_unix(),
        false,
    );
    let response = token(
        &emu,
        LOGIN,
        &[
            ("client_id", BLUEPRINT),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &assertion),
            ("scope", EXCHANGE_SCOPE),
            ("grant_type", "client_credentials"),
            ("fmi_path", AGENT),
        ],
        None,
    )
    .await;
    response.assert_aadsts(401, "invalid_client", codes::BAD_ASSERTION_SIGNATURE);
}

#[tokio::test]
async fn agent_authenticates_with_t1_for_app_and_exchange_tokens() {
    let (emu, pki) = agent_emulator().await;
    let t1 = t1(&emu, &pki).await;
    // App-only agent: a Graph token.
    let response = agent_token(&emu, &t1, GRAPH_SCOPE).await;
    assert_eq!(response.status, 200, "{:#}", response.json());
    let claims = claims_of(response.json()["access_token"].as_str().unwrap());
    assert_eq!(claims["appid"], AGENT);
    assert_eq!(claims["aud"], "https://graph.microsoft.com");
    // T2: the exchange audience.
    let response = agent_token(&emu, &t1, EXCHANGE_SCOPE).await;
    assert_eq!(response.status, 200);
    // T1 of the blueprint for another path is not the agent's credential.
    emu.directory()
        .update_app(BLUEPRINT, |app| app.agents.push(OTHER_AGENT.to_owned()));
    let other = leg1(&emu, &pki, OTHER_AGENT).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    agent_token(&emu, &other, GRAPH_SCOPE).await.assert_aadsts(
        401,
        "invalid_client",
        codes::FIC_SUBJECT_NO_MATCH,
    );
    // A blueprint token for Graph (not the exchange audience) is refused.
    let assertion = cert_assertion(
        &pki.leaf,
        "PS256",
        BLUEPRINT,
        &endpoint(LOGIN, TENANT),
        now_unix(),
        true,
    );
    let graph_t1 = token(
        &emu,
        LOGIN,
        &[
            ("client_id", BLUEPRINT),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &assertion),
            ("scope", GRAPH_SCOPE),
            ("grant_type", "client_credentials"),
            ("fmi_path", AGENT),
        ],
        None,
    )
    .await
    .json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    agent_token(&emu, &graph_t1, GRAPH_SCOPE)
        .await
        .assert_aadsts(401, "invalid_client", codes::NOT_TOKEN_EXCHANGE_AUDIENCE);
}

#[tokio::test]
async fn user_fic_by_upn_and_by_oid() {
    let (emu, pki) = agent_emulator().await;
    let t1 = t1(&emu, &pki).await;
    let t2 = agent_token(&emu, &t1, EXCHANGE_SCOPE).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for (user, oid, upn) in [
        (("username", USER_UPN), USER_OID, USER_UPN),
        (("user_id", BOB_OID), BOB_OID, BOB_UPN),
        (("username", "ALICE@contoso.com"), USER_OID, USER_UPN),
    ] {
        let response = user_fic(&emu, &t1, &t2, user, USER_SCOPE).await;
        assert_eq!(response.status, 200, "{:#}", response.json());
        let body = response.json();
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["scope"], "User.Read openid offline_access profile");
        assert!(body["refresh_token"].as_str().unwrap().len() > 20);
        let access = claims_of(body["access_token"].as_str().unwrap());
        assert_eq!(access["idtyp"], "user");
        assert_eq!(access["oid"], oid);
        assert_eq!(access["scp"], "User.Read");
        assert_eq!(access["appid"], AGENT);
        assert_eq!(access["tid"], TENANT);
        let id = claims_of(body["id_token"].as_str().unwrap());
        assert_eq!(id["aud"], AGENT);
        assert_eq!(id["oid"], oid);
        assert_eq!(id["preferred_username"], upn);
        assert_eq!(id["tid"], TENANT);
        let info = base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            body["client_info"].as_str().unwrap(),
        )
        .unwrap();
        let info: serde_json::Value = serde_json::from_slice(&info).unwrap();
        assert_eq!(info, json!({ "uid": oid, "utid": TENANT }));
    }
    // .default gives the app's delegated scopes.
    let response = user_fic(
        &emu,
        &t1,
        &t2,
        ("username", USER_UPN),
        "https://graph.microsoft.com/.default openid profile offline_access",
    )
    .await;
    assert_eq!(
        claims_of(response.json()["access_token"].as_str().unwrap())["scp"],
        "User.Read"
    );
}

#[tokio::test]
async fn user_fic_rejections() {
    let (emu, pki) = agent_emulator().await;
    let t1 = t1(&emu, &pki).await;
    let t2 = agent_token(&emu, &t1, EXCHANGE_SCOPE).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Missing openid/profile/offline_access.
    user_fic(
        &emu,
        &t1,
        &t2,
        ("username", USER_UPN),
        "https://graph.microsoft.com/User.Read",
    )
    .await
    .assert_aadsts(400, "invalid_scope", codes::INVALID_SCOPE);
    // Two resources.
    user_fic(
        &emu,
        &t1,
        &t2,
        ("username", USER_UPN),
        "User.Read https://vault.azure.net/.default openid profile offline_access",
    )
    .await
    .assert_aadsts(400, "invalid_scope", codes::MULTIPLE_RESOURCES);
    // Unknown users.
    user_fic(
        &emu,
        &t1,
        &t2,
        ("username", "mallory@contoso.com"),
        USER_SCOPE,
    )
    .await
    .assert_aadsts(400, "invalid_grant", codes::USER_NOT_FOUND);
    user_fic(
        &emu,
        &t1,
        &t2,
        ("user_id", "00000000-0000-0000-0000-00000000dead"),
        USER_SCOPE,
    )
    .await
    .assert_aadsts(400, "invalid_grant", codes::USER_NOT_FOUND);
    // A UPN in user_id.
    user_fic(&emu, &t1, &t2, ("user_id", USER_UPN), USER_SCOPE)
        .await
        .assert_aadsts(400, "invalid_request", codes::EMU_INVALID_USER_IDENTIFIER);
    // No user at all.
    user_fic(&emu, &t1, &t2, ("slice", "testslice"), USER_SCOPE)
        .await
        .assert_aadsts(400, "invalid_request", codes::MISSING_PARAMETER);
    // T2 of another app (the blueprint's T1 itself is an app token issued to the blueprint).
    user_fic(&emu, &t1, &t1, ("username", USER_UPN), USER_SCOPE)
        .await
        .assert_aadsts(
            400,
            "invalid_grant",
            codes::EMU_USER_CREDENTIAL_NOT_FOR_CLIENT,
        );
    // T2 for Graph instead of the exchange audience.
    let graph_t2 = agent_token(&emu, &t1, GRAPH_SCOPE).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    user_fic(&emu, &t1, &graph_t2, ("username", USER_UPN), USER_SCOPE)
        .await
        .assert_aadsts(400, "invalid_grant", codes::NOT_TOKEN_EXCHANGE_AUDIENCE);
    // No client credential.
    let response = token(
        &emu,
        LOGIN,
        &[
            ("client_id", AGENT),
            ("grant_type", "user_fic"),
            ("user_federated_identity_credential", &t2),
            ("username", USER_UPN),
            ("scope", USER_SCOPE),
        ],
        None,
    )
    .await;
    response.assert_aadsts(401, "invalid_client", codes::CREDENTIAL_REQUIRED);
    // fmi_path is for client credentials only.
    let response = token(
        &emu,
        LOGIN,
        &[
            ("client_id", AGENT),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &t1),
            ("grant_type", "user_fic"),
            ("user_federated_identity_credential", &t2),
            ("username", USER_UPN),
            ("scope", USER_SCOPE),
            ("fmi_path", AGENT),
        ],
        None,
    )
    .await;
    response.assert_aadsts(400, "unauthorized_client", codes::EMU_FMI_PATH_NOT_ALLOWED);
}

async fn refresh(emu: &EmulatorHandle, t1: &str, refresh_token: &str) -> HttpResponse {
    token(
        emu,
        LOGIN,
        &[
            ("client_id", AGENT),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", t1),
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("scope", USER_SCOPE),
            ("client_info", "1"),
        ],
        None,
    )
    .await
}

#[tokio::test]
async fn refresh_token_rotation() {
    let clock = fic_oauth_core::ManualClock::new(std::time::SystemTime::now());
    let pki = sni_pki("Blueprint Root", "blueprint.contoso.com", true);
    let emu = standard_builder()
        .clock(std::sync::Arc::new(clock.clone()))
        .app(
            App::new(BLUEPRINT, TENANT)
                .subject_issuer("blueprint.contoso.com", pki.root_der.clone())
                .agents([AGENT]),
        )
        .start()
        .await
        .unwrap();
    let t1 = t1(&emu, &pki).await;
    let t2 = agent_token(&emu, &t1, EXCHANGE_SCOPE).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = user_fic(&emu, &t1, &t2, ("username", USER_UPN), USER_SCOPE)
        .await
        .json();
    let rt1 = first["refresh_token"].as_str().unwrap().to_owned();
    let response = refresh(&emu, &t1, &rt1).await;
    assert_eq!(response.status, 200, "{:#}", response.json());
    let second = response.json();
    let rt2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rt1, rt2);
    assert_eq!(
        claims_of(second["access_token"].as_str().unwrap())["oid"],
        USER_OID
    );
    assert!(second["id_token"].is_string() && second["client_info"].is_string());
    // The old one is spent.
    refresh(&emu, &t1, &rt1)
        .await
        .assert_aadsts(400, "invalid_grant", codes::INVALID_GRANT);
    // An unknown one.
    refresh(&emu, &t1, "1.emu.nonsense").await.assert_aadsts(
        400,
        "invalid_grant",
        codes::INVALID_GRANT,
    );
    // Another client cannot redeem it.
    let response = token(
        &emu,
        LOGIN,
        &[
            ("client_id", SECRET_APP),
            ("client_secret", SECRET),
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt2),
            ("scope", USER_SCOPE),
        ],
        None,
    )
    .await;
    response.assert_aadsts(400, "invalid_grant", codes::INVALID_GRANT);
    // Expired: the clock moves past its 90 days (T1 has expired too; the agent gets a secret).
    clock.advance(std::time::Duration::from_secs(91 * 24 * 3600));
    emu.directory()
        .update_app(AGENT, |app| app.secrets.push("agent-secret".to_owned()));
    let response = token(
        &emu,
        LOGIN,
        &[
            ("client_id", AGENT),
            ("client_secret", "agent-secret"),
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt2),
            ("scope", USER_SCOPE),
        ],
        None,
    )
    .await;
    response.assert_aadsts(400, "invalid_grant", codes::REFRESH_TOKEN_EXPIRED);
    refresh(&emu, &t1, &rt2)
        .await
        .assert_aadsts(401, "invalid_client", codes::ASSERTION_EXPIRED);
    // A missing refresh_token parameter.
    let response = token(
        &emu,
        LOGIN,
        &[
            ("client_id", AGENT),
            ("client_secret", "agent-secret"),
            ("grant_type", "refresh_token"),
            ("scope", USER_SCOPE),
        ],
        None,
    )
    .await;
    response.assert_aadsts(400, "invalid_request", codes::MISSING_PARAMETER);
}

// ---------------------------------------------------------------------------------------------
// The blueprint → agent link does not depend on registration order.

#[tokio::test]
async fn agent_registered_before_or_after_its_blueprint_or_added_by_update_is_linked() {
    // The agent's own registration after the blueprint's (it replaces the placeholder).
    let (emu, pki) = agent_emulator().await;
    emu.directory()
        .add_app(App::new(AGENT, TENANT).display_name("the agent"));
    assert_eq!(
        emu.directory().app(AGENT).unwrap().blueprint.as_deref(),
        Some(BLUEPRINT)
    );
    let t1 = t1(&emu, &pki).await;
    let response = agent_token(&emu, &t1, GRAPH_SCOPE).await;
    assert_eq!(response.status, 200, "{:#}", response.json());
    assert_eq!(
        claims_of(response.json()["access_token"].as_str().unwrap())["appid"],
        AGENT
    );

    // An agent added to the blueprint's list with update_app is created and linked.
    assert!(emu.directory().app(OTHER_AGENT).is_none());
    assert!(emu
        .directory()
        .update_app(BLUEPRINT, |app| app.agents.push(OTHER_AGENT.to_owned())));
    let other = emu.directory().app(OTHER_AGENT).unwrap();
    assert_eq!(other.blueprint.as_deref(), Some(BLUEPRINT));
    assert_eq!(other.tenant_id, TENANT);
    let other_t1 = leg1(&emu, &pki, OTHER_AGENT).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = token(
        &emu,
        LOGIN,
        &[
            ("client_id", OTHER_AGENT),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &other_t1),
            ("scope", GRAPH_SCOPE),
            ("grant_type", "client_credentials"),
        ],
        None,
    )
    .await;
    assert_eq!(response.status, 200, "{:#}", response.json());
    assert_eq!(
        claims_of(response.json()["access_token"].as_str().unwrap())["appid"],
        OTHER_AGENT
    );

    // The agent registered first, its blueprint second.
    let pki = sni_pki("Blueprint Root", "blueprint.contoso.com", true);
    let emu = standard_builder()
        .app(App::new(AGENT, TENANT).display_name("the agent"))
        .app(
            App::new(BLUEPRINT, TENANT)
                .subject_issuer("blueprint.contoso.com", pki.root_der.clone())
                .agents([AGENT]),
        )
        .start()
        .await
        .unwrap();
    assert_eq!(
        emu.directory().app(AGENT).unwrap().display_name,
        "the agent"
    );
    let t1 = self::t1(&emu, &pki).await;
    assert_eq!(agent_token(&emu, &t1, GRAPH_SCOPE).await.status, 200);
}

// ---------------------------------------------------------------------------------------------
// user_fic: the user identifier and the user credential (T2).

/// A `user_fic` request as the agent with T1 and `extra` parameters.
async fn user_fic_with(
    emu: &EmulatorHandle,
    host: &str,
    assertion_type: &str,
    t1: &str,
    extra: &[(&str, &str)],
    identity: Option<&Identity>,
) -> HttpResponse {
    let mut form = vec![
        ("client_id", AGENT),
        ("client_assertion_type", assertion_type),
        ("client_assertion", t1),
        ("grant_type", "user_fic"),
        ("scope", USER_SCOPE),
    ];
    form.extend_from_slice(extra);
    token(emu, host, &form, identity).await
}

#[tokio::test]
async fn user_fic_user_identifier_and_credential_presence() {
    let (emu, pki) = agent_emulator().await;
    let t1 = t1(&emu, &pki).await;
    let t2 = agent_token(&emu, &t1, EXCHANGE_SCOPE).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Both username and user_id (even naming the same user).
    let response = user_fic_with(
        &emu,
        LOGIN,
        JWT_BEARER,
        &t1,
        &[
            ("user_federated_identity_credential", &t2),
            ("username", USER_UPN),
            ("user_id", USER_OID),
        ],
        None,
    )
    .await;
    response.assert_aadsts(400, "invalid_request", codes::EMU_INVALID_USER_IDENTIFIER);
    // No user_federated_identity_credential.
    let response = user_fic_with(
        &emu,
        LOGIN,
        JWT_BEARER,
        &t1,
        &[("username", USER_UPN)],
        None,
    )
    .await;
    response.assert_aadsts(400, "invalid_request", codes::MISSING_PARAMETER);
    assert!(response.json()["error_description"]
        .as_str()
        .unwrap()
        .contains("'user_federated_identity_credential'"));
    // With exactly one of each, the same request succeeds.
    let response = user_fic_with(
        &emu,
        LOGIN,
        JWT_BEARER,
        &t1,
        &[
            ("user_federated_identity_credential", &t2),
            ("user_id", USER_OID),
        ],
        None,
    )
    .await;
    assert_eq!(response.status, 200, "{:#}", response.json());
    assert_eq!(
        claims_of(response.json()["access_token"].as_str().unwrap())["oid"],
        USER_OID
    );
}

#[tokio::test]
async fn user_fic_refuses_an_expired_or_badly_signed_t2() {
    let clock = fic_oauth_core::ManualClock::new(std::time::SystemTime::now());
    let pki = sni_pki("Blueprint Root", "blueprint.contoso.com", true);
    let emu = standard_builder()
        .clock(std::sync::Arc::new(clock.clone()))
        .app(
            App::new(BLUEPRINT, TENANT)
                .subject_issuer("blueprint.contoso.com", pki.root_der.clone())
                .agents([AGENT]),
        )
        .start()
        .await
        .unwrap();
    let t1 = t1(&emu, &pki).await;
    let t2 = agent_token(&emu, &t1, EXCHANGE_SCOPE).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let with_t2 = |t2: String| {
        let (emu, t1) = (&emu, &t1);
        async move {
            user_fic_with(
                emu,
                LOGIN,
                JWT_BEARER,
                t1,
                &[
                    ("user_federated_identity_credential", &t2),
                    ("username", USER_UPN),
                ],
                None,
            )
            .await
        }
    };
    // Tampered: another user's oid in the payload, the emulator's signature kept.
    let mut parts: Vec<String> = t2.split('.').map(str::to_owned).collect();
    let mut claims = claims_of(&t2);
    claims["appid"] = json!(AGENT);
    claims["oid"] = json!("00000000-0000-0000-0000-00000000dead");
    parts[1] = b64url(claims.to_string());
    let response = with_t2(parts.join(".")).await;
    response.assert_aadsts(400, "invalid_grant", codes::ASSERTION_REPLAYED);
    assert!(response.json()["error_description"]
        .as_str()
        .unwrap()
        .contains("verify the signature failed"));
    // The same claims signed by another key (with the emulator's kid, then without).
    let a = TestCert::a();
    let kid = emu.signing_key_id();
    for header in [
        json!({ "alg": "RS256", "typ": "JWT", "kid": kid }),
        json!({ "alg": "RS256", "typ": "JWT", "kid": "someone-else" }),
    ] {
        let forged = sign_jwt(&header, &claims_of(&t2), &a.key);
        with_t2(forged)
            .await
            .assert_aadsts(400, "invalid_grant", codes::ASSERTION_REPLAYED);
    }
    // Expired: a T2 with a 60 s lifetime, 60 s + the 5 minutes of skew + 1 s later (T1 and the
    // long T2 are still valid).
    emu.update_settings(|s| s.access_token_lifetime = std::time::Duration::from_secs(60));
    let short_t2 = agent_token(&emu, &t1, EXCHANGE_SCOPE).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let claims = claims_of(&short_t2);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        60
    );
    clock.advance(std::time::Duration::from_secs(60 + 300));
    assert_eq!(
        with_t2(short_t2.clone()).await.status,
        200,
        "within the skew"
    );
    clock.advance(std::time::Duration::from_secs(1));
    let response = with_t2(short_t2).await;
    response.assert_aadsts(400, "invalid_grant", codes::ASSERTION_EXPIRED);
    assert!(response.json()["error_description"]
        .as_str()
        .unwrap()
        .contains("User federated identity credential"));
    let response = with_t2(t2).await;
    assert_eq!(response.status, 200, "{:#}", response.json());
}

#[tokio::test]
async fn user_fic_t2_bound_to_a_certificate_needs_that_certificate() {
    let (emu, pki) = agent_emulator().await;
    let a = TestCert::a();
    let b = TestCert::b();
    // The agent may present A or B over mutual TLS (with T1 as a jwt-pop assertion).
    emu.directory().update_app(AGENT, |app| {
        *app = app
            .clone()
            .certificate(a.der.clone())
            .certificate(b.der.clone());
    });
    let t1 = t1(&emu, &pki).await;
    // T2 bound to A.
    let response = token(
        &emu,
        "mtlsauth.microsoft.com",
        &[
            ("client_id", AGENT),
            ("client_assertion_type", JWT_POP),
            ("client_assertion", &t1),
            ("scope", EXCHANGE_SCOPE),
            ("grant_type", "client_credentials"),
            ("token_type", "mtls_pop"),
        ],
        Some(&a.identity()),
    )
    .await;
    assert_eq!(response.status, 200, "{:#}", response.json());
    let t2 = response.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims_of(&t2)["cnf"]["x5t#S256"], a.thumbprint());
    let extra = [
        ("user_federated_identity_credential", t2.as_str()),
        ("username", USER_UPN),
    ];
    // No certificate (a login host).
    user_fic_with(&emu, LOGIN, JWT_BEARER, &t1, &extra, None)
        .await
        .assert_aadsts(
            400,
            "invalid_grant",
            codes::EMU_CERTIFICATE_BINDING_MISMATCH,
        );
    // Another certificate (B authenticates the agent, but T2 is bound to A).
    let mtls = "mtlsauth.microsoft.com";
    user_fic_with(&emu, mtls, JWT_POP, &t1, &extra, Some(&b.identity()))
        .await
        .assert_aadsts(
            400,
            "invalid_grant",
            codes::EMU_CERTIFICATE_BINDING_MISMATCH,
        );
    // A.
    let response = user_fic_with(&emu, mtls, JWT_POP, &t1, &extra, Some(&a.identity())).await;
    assert_eq!(response.status, 200, "{:#}", response.json());
    assert_eq!(
        emu.log()
            .last_token_request()
            .unwrap()
            .client_cert_thumbprint
            .as_deref(),
        Some(a.thumbprint().as_str())
    );
}

// ---------------------------------------------------------------------------------------------
// Guests: `tid` and `oid` of the resource tenant, `client_info` of the home account.

fn client_info_of(body: &serde_json::Value) -> serde_json::Value {
    let info = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        body["client_info"].as_str().unwrap(),
    )
    .unwrap();
    serde_json::from_slice(&info).unwrap()
}

/// Asserts a user answer for TENANT: access and id token of `oid` in TENANT (issued by
/// TENANT), `client_info` naming `home`.
fn assert_user_answer(body: &serde_json::Value, oid: &str, upn: &str, home: (&str, &str)) {
    let access = claims_of(body["access_token"].as_str().unwrap());
    let id = claims_of(body["id_token"].as_str().unwrap());
    for claims in [&access, &id] {
        assert_eq!(claims["tid"], TENANT);
        assert_eq!(claims["oid"], oid);
        assert_eq!(claims["preferred_username"], upn);
        assert!(
            claims["iss"].as_str().unwrap().contains(TENANT),
            "{}",
            claims["iss"]
        );
    }
    assert_eq!(access["idtyp"], "user");
    assert_eq!(access["appid"], AGENT);
    assert_eq!(id["aud"], AGENT);
    assert_eq!(
        client_info_of(body),
        json!({ "uid": home.0, "utid": home.1 })
    );
}

#[tokio::test]
async fn user_fic_for_a_guest_by_upn_and_by_its_object_id_in_the_tenant() {
    let (emu, pki) = agent_emulator().await;
    let t1 = t1(&emu, &pki).await;
    let t2 = agent_token(&emu, &t1, EXCHANGE_SCOPE).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let guest_home = (GUEST_HOME_OID, OTHER_TENANT);
    for user in [
        ("username", GUEST_UPN),
        ("username", "GINA@Fabrikam.com"),
        ("user_id", GUEST_OID),
    ] {
        let response = user_fic(&emu, &t1, &t2, user, USER_SCOPE).await;
        assert_eq!(response.status, 200, "{user:?}: {:#}", response.json());
        let body = response.json();
        assert_user_answer(&body, GUEST_OID, GUEST_UPN, guest_home);
        // The refresh token keeps working for the guest in TENANT.
        let refreshed = refresh(&emu, &t1, body["refresh_token"].as_str().unwrap()).await;
        assert_eq!(refreshed.status, 200, "{:#}", refreshed.json());
        let refreshed = refreshed.json();
        assert_user_answer(&refreshed, GUEST_OID, GUEST_UPN, guest_home);
        // And its successor too.
        let again = refresh(&emu, &t1, refreshed["refresh_token"].as_str().unwrap()).await;
        assert_eq!(again.status, 200, "{:#}", again.json());
        assert_user_answer(&again.json(), GUEST_OID, GUEST_UPN, guest_home);
    }
    // Members are unchanged: their home account is in TENANT.
    let response = user_fic(&emu, &t1, &t2, ("user_id", BOB_OID), USER_SCOPE).await;
    assert_eq!(response.status, 200, "{:#}", response.json());
    assert_user_answer(&response.json(), BOB_OID, BOB_UPN, (BOB_OID, TENANT));
}

#[tokio::test]
async fn a_guest_asked_for_by_its_home_object_id_is_unknown_in_the_resource_tenant() {
    let (emu, pki) = agent_emulator().await;
    let t1 = t1(&emu, &pki).await;
    let t2 = agent_token(&emu, &t1, EXCHANGE_SCOPE).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = user_fic(&emu, &t1, &t2, ("user_id", GUEST_HOME_OID), USER_SCOPE).await;
    response.assert_aadsts(400, "invalid_grant", codes::USER_NOT_FOUND);
    assert!(response.json()["error_description"]
        .as_str()
        .unwrap()
        .contains(GUEST_HOME_OID));
    // No longer a guest: neither its UPN nor its old object id there finds it.
    emu.directory()
        .add_user(User::new(GUEST_UPN, GUEST_HOME_OID, OTHER_TENANT));
    for user in [("username", GUEST_UPN), ("user_id", GUEST_OID)] {
        user_fic(&emu, &t1, &t2, user, USER_SCOPE)
            .await
            .assert_aadsts(400, "invalid_grant", codes::USER_NOT_FOUND);
    }
}
