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

/// The blueprint is SN+I (its assertions carry x5c), with one agent; Alice and Bob exist.
async fn agent_emulator() -> (EmulatorHandle, Pki) {
    let pki = sni_pki("Blueprint Root", "blueprint.contoso.com", true);
    let emu = standard_builder()
        .app(
            App::new(BLUEPRINT, TENANT)
                .subject_issuer("blueprint.contoso.com", pki.root_der.clone())
                .agents([AGENT]),
        )
        .user(User::new(BOB_UPN, BOB_OID, TENANT))
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
