//! Client authentication at the token endpoint: secrets, certificate-signed assertions (by
//! thumbprint or SN+I), federated assertions (FIC, FMI agents), and the TLS client certificate.

use serde_json::Value;

use crate::aadsts::AadError;
use crate::codes;
use crate::directory::{App, CertificateCredential, ManagedIdentity};
use crate::hosts::Cloud;
use crate::jwt::{self, Jws, VerifyError, SUPPORTED_ALGS};
use crate::state::State;
use crate::tls::PeerCertificate;
use crate::token::Form;
use crate::util::{b64std_decode, iso_timestamp, sha256};
use crate::x509::{self, thumbprint_s256, thumbprint_sha1, thumbprint_sha1_hex, PublicKey};

pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
pub(crate) const JWT_POP: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-pop";

/// The grant being authenticated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Grant {
    ClientCredentials,
    UserFic,
    RefreshToken,
}

/// Everything client authentication looks at besides the form.
pub(crate) struct AuthContext<'a> {
    pub(crate) state: &'a State,
    pub(crate) app: &'a App,
    pub(crate) cloud: Cloud,
    pub(crate) mtls_host: bool,
    pub(crate) endpoint: &'a str,
    pub(crate) peer: Option<&'a PeerCertificate>,
    pub(crate) pop_requested: bool,
    pub(crate) grant: Grant,
    /// The managed identity whose service principal `app` is, when the client is one.
    pub(crate) managed_identity: Option<&'a ManagedIdentity>,
}

/// How the client authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClientAuth {
    /// `appidacr`: `1` for a secret, `2` for a certificate or assertion.
    pub(crate) appidacr: &'static str,
}

/// Authenticates the client of a token request.
pub(crate) fn authenticate(ctx: &AuthContext<'_>, form: &Form<'_>) -> Result<ClientAuth, AadError> {
    let secret = form.get("client_secret");
    let assertion = form.get("client_assertion");
    if ctx.managed_identity.is_some() {
        return match (secret, assertion, ctx.peer) {
            (None, None, Some(peer)) if ctx.pop_requested => authenticate_tls_certificate(ctx, peer),
            _ => Err(AadError::client(
                codes::EMU_MANAGED_IDENTITY_CREDENTIAL,
                format!(
                    "The managed identity '{}' authenticates only with a certificate IMDS issued for it (issuecredential), presented over mutual TLS with token_type=mtls_pop and no client_secret or client_assertion.",
                    ctx.app.client_id
                ),
            )),
        };
    }
    match (secret, assertion) {
        (Some(_), Some(_)) => Err(AadError::request(
            codes::EMU_MULTIPLE_CREDENTIALS,
            "Only one client credential may be presented: send 'client_secret' or 'client_assertion', not both.",
        )),
        (Some(secret), None) => authenticate_secret(ctx, secret),
        (None, Some(assertion)) => {
            let assertion_type = form
                .get("client_assertion_type")
                .ok_or_else(|| AadError::missing("client_assertion_type"))?;
            authenticate_assertion(ctx, assertion, assertion_type)
        }
        (None, None) => {
            if ctx.pop_requested {
                if let Some(peer) = ctx.peer {
                    return authenticate_tls_certificate(ctx, peer);
                }
            }
            Err(no_credential(ctx.grant))
        }
    }
}

fn no_credential(grant: Grant) -> AadError {
    match grant {
        Grant::ClientCredentials => AadError::client(
            codes::CREDENTIAL_REQUIRED_CLIENT_CREDENTIALS,
            "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
        ),
        Grant::UserFic | Grant::RefreshToken => AadError::client(
            codes::CREDENTIAL_REQUIRED,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ),
    }
}

fn authenticate_secret(ctx: &AuthContext<'_>, secret: &str) -> Result<ClientAuth, AadError> {
    if ctx.mtls_host {
        return Err(AadError::request(
            codes::EMU_CREDENTIAL_NOT_ALLOWED_OVER_MTLS,
            "A client secret cannot be used over mTLS. Use the certificate (no assertion) or a jwt-pop client assertion.",
        ));
    }
    let ok = ctx.app.secrets.iter().any(|s| same_secret(s, secret));
    if ok {
        Ok(ClientAuth { appidacr: "1" })
    } else {
        Err(AadError::client(
            codes::BAD_SECRET,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                ctx.app.client_id
            ),
        ))
    }
}

/// Compares secrets in time independent of where they differ (compares their SHA-256 digests).
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (sha256(a), sha256(b));
    a.iter()
        .zip(b.iter())
        .fold(0_u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn authenticate_tls_certificate(
    ctx: &AuthContext<'_>,
    peer: &PeerCertificate,
) -> Result<ClientAuth, AadError> {
    match certificate_registered(ctx.app, &peer.chain, ctx.state) {
        Ok(_) => Ok(ClientAuth { appidacr: "2" }),
        Err(reason) => Err(AadError::client(
            codes::BAD_ASSERTION_SIGNATURE,
            format!(
                "The TLS client certificate is not a credential of application '{}'. [Reason - {reason}, Thumbprint of key used by client: '{}']",
                ctx.app.client_id,
                thumbprint_sha1_hex(peer.leaf())
            ),
        )),
    }
}

/// Checks `chain` (leaf first) against the app's certificates; returns the leaf's public key.
pub(crate) fn certificate_registered(
    app: &App,
    chain: &[Vec<u8>],
    state: &State,
) -> Result<PublicKey, String> {
    let leaf = chain.first().ok_or("no certificate")?;
    let facts = x509::facts(leaf).ok_or("the certificate is not valid DER")?;
    let now = state.now_unix();
    let key = facts
        .public_key
        .clone()
        .ok_or("the certificate key is neither RSA nor EC P-256")?;
    let mut reason = "The key was not found.".to_owned();
    for credential in &app.certificates {
        match credential {
            CertificateCredential::Thumbprint { der } if der == leaf => {
                if now < facts.not_before || now > facts.not_after {
                    return Err(format!(
                        "The key used is outside its validity period (Start={}, End={})",
                        iso_timestamp(facts.not_before),
                        iso_timestamp(facts.not_after)
                    ));
                }
                return Ok(key);
            }
            CertificateCredential::SubjectIssuer {
                subject,
                issuer_der,
            } if x509::subject_matches(&facts, subject) => {
                match x509::verify_chain(chain, issuer_der, state.now()) {
                    Ok(()) => return Ok(key),
                    Err(why) => reason = format!("SN+I certificate chain validation failed: {why}"),
                }
            }
            _ => {}
        }
    }
    Err(reason)
}

fn key_not_found(app: &App, thumbprint_hex: &str, reason: &str) -> AadError {
    let sni_hint = app
        .certificates
        .iter()
        .any(|c| matches!(c, CertificateCredential::SubjectIssuer { .. }));
    let mut message = format!(
        "Client assertion contains an invalid signature. [Reason - {reason}, Thumbprint of key used by client: '{thumbprint_hex}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{}'.]",
        app.client_id
    );
    if sni_hint {
        message.push_str(" Alternatively, SNI may be configured on the app. Please ensure that client assertion is being sent with the x5c claim in the JWT header using MSAL's WithSendX5C() method so that Azure Active Directory can validate the certificate being used.");
    }
    AadError::client(codes::BAD_ASSERTION_SIGNATURE, message)
}

fn malformed(detail: impl std::fmt::Display) -> AadError {
    AadError::client(
        codes::MALFORMED_ASSERTION,
        format!("Invalid JWT token. {detail}"),
    )
}

fn authenticate_assertion(
    ctx: &AuthContext<'_>,
    assertion: &str,
    assertion_type: &str,
) -> Result<ClientAuth, AadError> {
    let pop_assertion = match assertion_type {
        JWT_BEARER => false,
        JWT_POP => true,
        other => {
            return Err(malformed(format!(
                "The client_assertion_type '{other}' is not supported; use '{JWT_BEARER}' or '{JWT_POP}'."
            )))
        }
    };
    if pop_assertion && !ctx.mtls_host {
        return Err(AadError::request(
            codes::EMU_MTLS_HOST_REQUIRED,
            "A jwt-pop client assertion is only accepted on an mtlsauth host, over mutual TLS.",
        ));
    }
    if ctx.pop_requested && !pop_assertion {
        return Err(AadError::request(
            codes::EMU_CREDENTIAL_NOT_ALLOWED_OVER_MTLS,
            "token_type=mtls_pop cannot be combined with a jwt-bearer client assertion: send no assertion (the TLS certificate authenticates the application) or a jwt-pop assertion.",
        ));
    }
    let jws = jwt::parse(assertion).map_err(malformed)?;
    let signed_by_client = jws
        .claim_str("iss")
        .is_some_and(|iss| iss.eq_ignore_ascii_case(&ctx.app.client_id));
    let auth = if signed_by_client {
        certificate_assertion(ctx, &jws)?
    } else {
        federated_assertion(ctx, &jws)?
    };
    let cnf = jws
        .payload
        .get("cnf")
        .and_then(|c| c.get("x5t#S256"))
        .and_then(Value::as_str);
    if pop_assertion {
        let Some(peer) = ctx.peer else {
            return Err(AadError::client_certificate_required(
                "a jwt-pop client assertion needs the binding certificate in the TLS handshake",
            ));
        };
        match cnf {
            Some(cnf) if cnf != peer.thumbprint => {
                return Err(AadError::client(
                    codes::EMU_CERTIFICATE_BINDING_MISMATCH,
                    format!(
                        "The TLS client certificate (x5t#S256 '{}') is not the certificate the client assertion is bound to (cnf x5t#S256 '{cnf}').",
                        peer.thumbprint
                    ),
                ))
            }
            Some(_) => {}
            None => {
                if let Err(reason) = certificate_registered(ctx.app, &peer.chain, ctx.state) {
                    return Err(AadError::client(
                        codes::EMU_CERTIFICATE_BINDING_MISMATCH,
                        format!(
                            "The jwt-pop client assertion has no cnf claim and the TLS client certificate (x5t#S256 '{}') is not a credential of application '{}': {reason}",
                            peer.thumbprint, ctx.app.client_id
                        ),
                    ));
                }
            }
        }
    } else if let Some(cnf) = cnf {
        return Err(AadError::client(
            codes::EMU_CERTIFICATE_BINDING_MISMATCH,
            format!(
                "The client assertion is bound to a certificate (cnf x5t#S256 '{cnf}'); present it as a jwt-pop assertion over mutual TLS with that certificate."
            ),
        ));
    }
    Ok(auth)
}

/// The `x5c` header: a JSON array of standard-base64 DER certificates (leaf first), or (as
/// MSAL.NET sends it) a single string.
fn x5c_chain(jws: &Jws) -> Result<Option<Vec<Vec<u8>>>, AadError> {
    let Some(value) = jws.header.get("x5c") else {
        return Ok(None);
    };
    let items: Vec<&str> = match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| malformed("The x5c header must hold strings."))
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(malformed(
                "The x5c header must be an array of base64 certificates.",
            ))
        }
    };
    if items.is_empty() {
        return Err(malformed("The x5c header is empty."));
    }
    let chain = items
        .into_iter()
        .map(|b64| {
            b64std_decode(b64).ok_or_else(|| malformed("An x5c entry is not standard base64."))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(chain))
}

fn certificate_assertion(ctx: &AuthContext<'_>, jws: &Jws) -> Result<ClientAuth, AadError> {
    let app = ctx.app;
    let alg = jws.alg().unwrap_or_default();
    if !SUPPORTED_ALGS.contains(&alg) {
        return Err(AadError::client(
            codes::UNSUPPORTED_ALGORITHM,
            format!(
                "Invalid JWT token. '{alg}' is not a supported signature algorithm. Supported signing algorithms are: 'RS256, PS256, ES256'"
            ),
        ));
    }
    let x5t_s256 = jws.header_str("x5t#S256");
    let x5t = jws.header_str("x5t");
    let key = if let Some(chain) = x5c_chain(jws)? {
        let leaf = &chain[0];
        if x5t_s256.is_some_and(|t| t != thumbprint_s256(leaf)) {
            return Err(key_not_found(
                app,
                &thumbprint_sha1_hex(leaf),
                "The x5t#S256 header does not match the x5c certificate.",
            ));
        }
        if x5t.is_some_and(|t| t != thumbprint_sha1(leaf)) {
            return Err(key_not_found(
                app,
                &thumbprint_sha1_hex(leaf),
                "The x5t header does not match the x5c certificate.",
            ));
        }
        certificate_registered(app, &chain, ctx.state)
            .map_err(|reason| key_not_found(app, &thumbprint_sha1_hex(leaf), &reason))?
    } else if x5t_s256.is_some() || x5t.is_some() {
        let registered = app.certificates.iter().find_map(|c| match c {
            CertificateCredential::Thumbprint { der }
                if x5t_s256.is_some_and(|t| t == thumbprint_s256(der))
                    || x5t.is_some_and(|t| t == thumbprint_sha1(der)) =>
            {
                Some(der.clone())
            }
            _ => None,
        });
        let Some(der) = registered else {
            let shown = x5t_s256.or(x5t).unwrap_or_default();
            return Err(key_not_found(app, shown, "The key was not found."));
        };
        certificate_registered(app, std::slice::from_ref(&der), ctx.state)
            .map_err(|reason| key_not_found(app, &thumbprint_sha1_hex(&der), &reason))?
    } else {
        return Err(malformed(
            "No certificate thumbprint specified in token header.",
        ));
    };
    match jws.verify(&key) {
        Ok(()) => {}
        Err(VerifyError::UnsupportedAlg(alg)) => {
            return Err(AadError::client(
                codes::UNSUPPORTED_ALGORITHM,
                format!("Invalid JWT token. '{alg}' is not a supported signature algorithm."),
            ))
        }
        Err(VerifyError::KeyMismatch) => {
            return Err(AadError::client(
                codes::BAD_ASSERTION_SIGNATURE,
                format!(
                    "Client assertion failed signature validation. [Reason - The '{alg}' algorithm does not fit the type of the certificate key.]"
                ),
            ))
        }
        Err(VerifyError::BadSignature) => {
            return Err(AadError::client(
                codes::BAD_ASSERTION_SIGNATURE,
                "Client assertion failed signature validation. [Reason - Key was found, but use of the key to verify the signature failed.]",
            ))
        }
    }
    // Claims.
    let audiences = jws.audiences();
    if !audiences
        .iter()
        .any(|a| a.eq_ignore_ascii_case(ctx.endpoint))
    {
        return Err(AadError::client(
            codes::ASSERTION_AUDIENCE_MISMATCH,
            format!(
                "Client assertion audience claim does not match Realm issuer. The audience must be the token endpoint the request was sent to ('{}'); the assertion has '{}'.",
                ctx.endpoint,
                audiences.join(", ")
            ),
        ));
    }
    for claim in ["iss", "sub"] {
        if !jws
            .claim_str(claim)
            .is_some_and(|v| v.eq_ignore_ascii_case(&app.client_id))
        {
            return Err(AadError::client(
                codes::ASSERTION_CLIENT_MISMATCH,
                format!(
                    "Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials . (claim '{claim}')"
                ),
            ));
        }
    }
    let exp = check_times(
        ctx.state,
        jws,
        |m| AadError::client(codes::ASSERTION_EXPIRED, m),
        malformed,
    )?;
    let settings = ctx.state.settings();
    let skew = settings.clock_skew.as_secs();
    let latest = ctx
        .state
        .now_unix()
        .saturating_add(settings.max_assertion_lifetime.as_secs())
        .saturating_add(skew);
    if exp > latest {
        return Err(AadError::client(
            codes::ASSERTION_EXPIRED,
            format!(
                "Client assertion is not within its valid time range: its expiry time {} is more than {} seconds after the current time {}. Sign assertions with a short lifetime (MSAL uses 10 minutes). Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
                iso_timestamp(exp),
                settings.max_assertion_lifetime.as_secs(),
                iso_timestamp(ctx.state.now_unix())
            ),
        ));
    }
    match jws.claim_str("jti") {
        Some(jti) => {
            // `exp` is bounded above, and the sum saturates anyway: the jti is kept for as long
            // as the assertion could be presented again.
            let keep_until = exp.saturating_add(skew);
            if !ctx.state.remember_jti(&app.client_id, jti, keep_until) {
                return Err(AadError::client(
                    codes::ASSERTION_REPLAYED,
                    format!("Assertion is invalid: the client assertion with jti '{jti}' was already used."),
                ));
            }
        }
        None if settings.require_assertion_jti => {
            return Err(malformed("The client assertion has no 'jti' claim."));
        }
        None => {}
    }
    Ok(ClientAuth { appidacr: "2" })
}

/// Checks `exp` (required) and `nbf` (optional) with the configured skew; returns `exp`.
pub(crate) fn check_times(
    state: &State,
    jws: &Jws,
    expired: impl Fn(String) -> AadError,
    malformed: impl Fn(String) -> AadError,
) -> Result<u64, AadError> {
    let skew = state.settings().clock_skew.as_secs();
    let now = state.now_unix();
    let exp = match jws.claim_time("exp") {
        Some(Ok(exp)) => exp,
        Some(Err(())) => {
            return Err(malformed(
                "The 'exp' claim is not a NumericDate.".to_owned(),
            ))
        }
        None => return Err(malformed("The token has no 'exp' claim.".to_owned())),
    };
    let nbf = match jws.claim_time("nbf") {
        Some(Ok(nbf)) => Some(nbf),
        Some(Err(())) => {
            return Err(malformed(
                "The 'nbf' claim is not a NumericDate.".to_owned(),
            ))
        }
        None => None,
    };
    if now > exp.saturating_add(skew) || nbf.is_some_and(|nbf| nbf > now.saturating_add(skew)) {
        return Err(expired(format!(
            "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
            iso_timestamp(now),
            iso_timestamp(nbf.unwrap_or(0)),
            iso_timestamp(exp)
        )));
    }
    Ok(exp)
}

/// Outcome of checking the signature of a token the emulator may have issued.
pub(crate) enum Signer {
    /// Signed by this emulator.
    Emulator,
    /// Signed by a registered external issuer.
    External,
}

/// Verifies a token's signature against the emulator key (by `kid`) or the keys of the trusted
/// external issuer named by its `iss`. `Ok(None)` when no key is known for it.
pub(crate) fn verify_issued_token(state: &State, jws: &Jws) -> Result<Option<Signer>, VerifyError> {
    if jws.header_str("kid") == Some(state.key.kid.as_str()) {
        if jws.alg() != Some("RS256") {
            return Err(VerifyError::UnsupportedAlg(
                jws.alg().unwrap_or_default().to_owned(),
            ));
        }
        return jws
            .verify(&state.key.public_key())
            .map(|()| Some(Signer::Emulator));
    }
    let Some(issuer) = jws
        .claim_str("iss")
        .and_then(|iss| state.directory.trusted_issuer(iss))
    else {
        return Ok(None);
    };
    let kid = jws.header_str("kid");
    let keys = issuer.public_keys();
    let mut last = VerifyError::BadSignature;
    for (key_kid, key) in keys {
        if kid.is_some() && key_kid.is_some() && key_kid.as_deref() != kid {
            continue;
        }
        match jws.verify(&key) {
            Ok(()) => return Ok(Some(Signer::External)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn federated_assertion(ctx: &AuthContext<'_>, jws: &Jws) -> Result<ClientAuth, AadError> {
    let app = ctx.app;
    let issuer = jws.claim_str("iss").unwrap_or_default().to_owned();
    let subject = jws.claim_str("sub").unwrap_or_default().to_owned();
    let audiences = jws.audiences();
    let issuer_no_match = || {
        AadError::client(
            codes::FIC_ISSUER_NO_MATCH,
            format!(
                "No matching federated identity record found for presented assertion issuer '{issuer}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
            ),
        )
    };
    let signer = match verify_issued_token(ctx.state, jws) {
        Ok(Some(signer)) => signer,
        Ok(None) => {
            if app.federated_credentials.iter().any(|f| f.issuer == issuer) {
                return Err(AadError::client(
                    codes::BAD_ASSERTION_SIGNATURE,
                    format!(
                        "Client assertion failed signature validation. [Reason - The key was not found. The emulator has no signing keys for issuer '{issuer}'; register them with Directory::add_trusted_issuer.]"
                    ),
                ));
            }
            return Err(issuer_no_match());
        }
        Err(VerifyError::UnsupportedAlg(alg)) => {
            return Err(AadError::client(
                codes::UNSUPPORTED_ALGORITHM,
                format!("Invalid JWT token. '{alg}' is not a supported signature algorithm."),
            ))
        }
        Err(_) => {
            return Err(AadError::client(
                codes::BAD_ASSERTION_SIGNATURE,
                "Client assertion failed signature validation. [Reason - Key was found, but use of the key to verify the signature failed.]",
            ))
        }
    };
    check_times(
        ctx.state,
        jws,
        |m| AadError::client(codes::ASSERTION_EXPIRED, m),
        malformed,
    )?;
    let exchange = ctx.cloud.token_exchange_audience();
    let wrong_audience = |aud: &str| {
        AadError::client(
            codes::NOT_TOKEN_EXCHANGE_AUDIENCE,
            format!(
                "Forbidden token audience '{aud}'. Token audience must match the cloud-specific AAD Token Exchange App Uri ('{exchange}')."
            ),
        )
    };

    // An FMI agent authenticates with a token its blueprint got for the agent's fmi_path.
    if let (Some(blueprint), Signer::Emulator, Some(fmi_path)) =
        (&app.blueprint, &signer, jws.claim_str("fmi_path"))
    {
        if issuer != ctx.cloud.issuer(&app.tenant_id) {
            return Err(issuer_no_match());
        }
        let from_blueprint = jws
            .claim_str("appid")
            .is_some_and(|a| a.eq_ignore_ascii_case(blueprint));
        if !from_blueprint || !fmi_path.eq_ignore_ascii_case(&app.client_id) {
            return Err(AadError::client(
                codes::FIC_SUBJECT_NO_MATCH,
                format!(
                    "No matching federated identity record found for presented assertion subject '{subject}'. The agent '{}' accepts tokens its blueprint '{blueprint}' obtained with fmi_path='{}'.",
                    app.client_id, app.client_id
                ),
            ));
        }
        if !audiences.iter().any(|a| a == exchange) {
            return Err(wrong_audience(&audiences.join(", ")));
        }
        return Ok(ClientAuth { appidacr: "2" });
    }

    let by_issuer: Vec<_> = app
        .federated_credentials
        .iter()
        .filter(|f| f.issuer == issuer)
        .collect();
    if by_issuer.is_empty() {
        return Err(issuer_no_match());
    }
    let by_subject: Vec<_> = by_issuer
        .into_iter()
        .filter(|f| f.subject == subject)
        .collect();
    if by_subject.is_empty() {
        return Err(AadError::client(
            codes::FIC_SUBJECT_NO_MATCH,
            format!(
                "No matching federated identity record found for presented assertion subject '{subject}'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
            ),
        ));
    }
    let matched = audiences.iter().find(|aud| {
        by_subject
            .iter()
            .any(|f| f.audiences.iter().any(|fa| fa == *aud))
    });
    let Some(matched) = matched else {
        return Err(AadError::client(
            codes::FIC_AUDIENCE_NO_MATCH,
            format!(
                "No matching federated identity record found for presented assertion audience '{}'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation",
                audiences.join(", ")
            ),
        ));
    };
    if matched != exchange {
        return Err(wrong_audience(matched));
    }
    Ok(ClientAuth { appidacr: "2" })
}
