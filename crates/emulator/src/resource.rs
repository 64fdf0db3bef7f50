//! The protected resource: any path on a resource host (Graph, Key Vault, ARM, registered ones).
//!
//! It accepts `Authorization: Bearer <token>` or `Authorization: mtls_pop <token>` and checks
//! the token's signature (this emulator's key), issuer form, audience (the host's resource URI,
//! with or without a trailing slash) and lifetime (5 minutes of skew, configurable). A token with
//! `cnf` is bound (RFC 8705): the TLS client certificate's `x5t#S256` must equal it, whatever the
//! scheme. The `mtls_pop` scheme with an unbound token is refused. Failures are 401 with
//! `WWW-Authenticate: <scheme> error="invalid_token", error_description="…"`; success is a JSON
//! description of the caller.

use serde_json::{json, Value};

use crate::client_auth::verify_issued_token;
use crate::client_auth::Signer;
use crate::directory::Resource;
use crate::hosts::Cloud;
use crate::jwt;
use crate::reply::Reply;
use crate::state::State;
use crate::tls::PeerCertificate;

/// What the resource handler needs of a request.
pub(crate) struct ResourceRequest<'a> {
    pub(crate) method: &'a str,
    pub(crate) host: &'a str,
    pub(crate) path: &'a str,
    pub(crate) authorization: Option<&'a str>,
    pub(crate) peer: Option<&'a PeerCertificate>,
}

fn unauthorized(scheme: &str, description: &str) -> Reply {
    let escaped = description.replace('\\', "\\\\").replace('"', "'");
    Reply::json(
        401,
        &json!({
            "error": {
                "code": "InvalidAuthenticationToken",
                "message": description,
            }
        }),
    )
    .header(
        "www-authenticate",
        format!("{scheme} error=\"invalid_token\", error_description=\"{escaped}\""),
    )
}

/// Answers a request to `resource`.
pub(crate) fn respond(state: &State, resource: &Resource, req: &ResourceRequest<'_>) -> Reply {
    let Some(authorization) = req.authorization else {
        return unauthorized(
            "Bearer",
            "No access token was presented in the Authorization header.",
        );
    };
    let (scheme, token) = match authorization.trim().split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => ("Bearer", token.trim()),
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("mtls_pop") => {
            ("mtls_pop", token.trim())
        }
        _ => {
            return unauthorized(
                "Bearer",
                "The Authorization header must use the Bearer or mtls_pop scheme.",
            )
        }
    };
    let jws = match jwt::parse(token) {
        Ok(jws) => jws,
        Err(why) => return unauthorized(scheme, &format!("The access token is malformed: {why}")),
    };
    match verify_issued_token(state, &jws) {
        Ok(Some(Signer::Emulator)) => {}
        Ok(Some(Signer::External) | None) => {
            return unauthorized(
                scheme,
                "The access token was not issued by this identity provider (unknown signing key).",
            )
        }
        Err(_) => return unauthorized(scheme, "The access token signature is invalid."),
    }
    let tid = jws.claim_str("tid").unwrap_or_default();
    let iss = jws.claim_str("iss").unwrap_or_default();
    if !Cloud::ALL.iter().any(|c| c.issuer(tid) == iss) {
        return unauthorized(
            scheme,
            &format!("The access token issuer '{iss}' is not valid."),
        );
    }
    let wanted = resource.uri.trim_end_matches('/');
    let audiences = jws.audiences();
    if !audiences
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(wanted))
    {
        return unauthorized(
            scheme,
            &format!(
                "The access token audience '{}' is not valid for this resource; expected '{}'.",
                audiences.join(", "),
                resource.uri
            ),
        );
    }
    let now = state.now_unix();
    let skew = state.settings().clock_skew.as_secs();
    match (jws.claim_time("exp"), jws.claim_time("nbf")) {
        (Some(Ok(exp)), _) if now > exp.saturating_add(skew) => {
            return unauthorized(
                scheme,
                &format!("The access token expired (exp {exp}, now {now})."),
            );
        }
        (Some(Ok(_)), Some(Ok(nbf))) if nbf > now.saturating_add(skew) => {
            return unauthorized(scheme, "The access token is not yet valid (nbf).");
        }
        (Some(Ok(_)), None | Some(Ok(_))) => {}
        _ => return unauthorized(scheme, "The access token has no valid exp/nbf."),
    }
    let cnf = jws
        .payload
        .get("cnf")
        .and_then(|c| c.get("x5t#S256"))
        .and_then(Value::as_str);
    match (cnf, req.peer) {
        (Some(_), None) => {
            return unauthorized(
                scheme,
                "The access token is bound to a certificate (cnf x5t#S256) but no TLS client certificate was presented.",
            )
        }
        (Some(cnf), Some(peer)) if cnf != peer.thumbprint => {
            return unauthorized(
                scheme,
                &format!(
                    "The TLS client certificate (x5t#S256 '{}') does not match the certificate the access token is bound to (cnf x5t#S256 '{cnf}').",
                    peer.thumbprint
                ),
            )
        }
        (None, _) if scheme == "mtls_pop" => {
            return unauthorized(scheme, "The mtls_pop scheme needs a certificate-bound access token (no cnf claim).")
        }
        _ => {}
    }
    let claim = |name: &str| jws.payload.get(name).cloned().unwrap_or(Value::Null);
    Reply::json(
        200,
        &json!({
            "resource": resource.uri,
            "host": req.host,
            "method": req.method,
            "path": req.path,
            "scheme": scheme,
            "token_type": if cnf.is_some() { "mtls_pop" } else { "Bearer" },
            "bound": cnf.is_some(),
            "cnf_x5t#S256": cnf,
            "client_cert_thumbprint": req.peer.map(|p| p.thumbprint.clone()),
            "sub": claim("sub"),
            "oid": claim("oid"),
            "tid": claim("tid"),
            "appid": claim("appid"),
            "azp": claim("azp"),
            "idtyp": claim("idtyp"),
            "scp": claim("scp"),
            "roles": claim("roles"),
            "fmi_path": claim("fmi_path"),
            "preferred_username": claim("preferred_username"),
            "aud": claim("aud"),
            "iss": claim("iss"),
            "exp": claim("exp"),
        }),
    )
}
