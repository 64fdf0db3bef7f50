//! OIDC discovery (`/{tenant}/v2.0/.well-known/openid-configuration`), the JWKS
//! (`/{tenant}/discovery/v2.0/keys`) and instance discovery (`/common/discovery/instance`).

use serde_json::{json, Value};

use crate::aadsts::AadError;
use crate::hosts::Cloud;
use crate::state::State;

/// Which metadata document a path asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Document {
    OpenIdConfiguration,
    Keys,
    InstanceDiscovery,
}

/// Recognises metadata paths; returns the tenant segment and the document.
pub(crate) fn classify(path: &str) -> Option<(String, Document)> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let lower: Vec<String> = segments.iter().map(|s| s.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    let tenant = (*segments.first()?).to_owned();
    if tenant.is_empty() {
        return None;
    }
    match &lower[1..] {
        ["v2.0", ".well-known", "openid-configuration"] => {
            Some((tenant, Document::OpenIdConfiguration))
        }
        ["discovery", "v2.0", "keys"] | ["discovery", "keys"] => Some((tenant, Document::Keys)),
        ["discovery", "instance"] if lower[0] == "common" => {
            Some((tenant, Document::InstanceDiscovery))
        }
        _ => None,
    }
}

fn is_multi_tenant(segment: &str) -> bool {
    ["common", "organizations", "consumers"]
        .iter()
        .any(|t| t.eq_ignore_ascii_case(segment))
}

/// Builds the document; the error is an Entra-shaped failure.
pub(crate) fn document(
    state: &State,
    host: &str,
    cloud: Cloud,
    tenant_segment: &str,
    document: Document,
) -> Result<Value, AadError> {
    let tenant_id = if is_multi_tenant(tenant_segment) {
        "{tenantid}".to_owned()
    } else {
        state
            .directory
            .tenant(tenant_segment)
            .ok_or_else(|| AadError::tenant_not_found(tenant_segment))?
            .id
    };
    let issuer = cloud.issuer(&tenant_id);
    Ok(match document {
        Document::Keys => json!({ "keys": [state.key.jwk(Some(&issuer))] }),
        Document::OpenIdConfiguration => json!({
            "token_endpoint": format!("https://{host}/{tenant_segment}/oauth2/v2.0/token"),
            "token_endpoint_auth_methods_supported": [
                "client_secret_post", "private_key_jwt", "client_secret_basic", "self_signed_tls_client_auth", "tls_client_auth"
            ],
            "jwks_uri": format!("https://{host}/{tenant_segment}/discovery/v2.0/keys"),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": issuer,
            "request_uri_parameter_supported": false,
            "authorization_endpoint": format!("https://{host}/{tenant_segment}/oauth2/v2.0/authorize"),
            "tls_client_certificate_bound_access_tokens": true,
            "mtls_endpoint_aliases": {
                "token_endpoint": format!("https://{}/{tenant_segment}/oauth2/v2.0/token", cloud.mtls_host()),
            },
            "grant_types_supported": ["client_credentials", "user_fic", "refresh_token"],
            "tenant_region_scope": null,
            "cloud_instance_name": cloud.login_host().trim_start_matches("login."),
        }),
        Document::InstanceDiscovery => json!({
            "tenant_discovery_endpoint": format!("https://{host}/{tenant_segment}/v2.0/.well-known/openid-configuration"),
            "api-version": "1.1",
            "metadata": Cloud::ALL.iter().map(|c| {
                let mut aliases = vec![c.login_host()];
                aliases.extend_from_slice(c.login_aliases());
                json!({
                    "preferred_network": c.login_host(),
                    "preferred_cache": c.login_aliases().first().copied().unwrap_or(c.login_host()),
                    "aliases": aliases,
                })
            }).collect::<Vec<_>>(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_metadata_paths() {
        assert_eq!(
            classify("/t1/v2.0/.well-known/openid-configuration"),
            Some(("t1".into(), Document::OpenIdConfiguration))
        );
        assert_eq!(
            classify("/t1/discovery/v2.0/keys"),
            Some(("t1".into(), Document::Keys))
        );
        assert_eq!(
            classify("/common/discovery/instance"),
            Some(("common".into(), Document::InstanceDiscovery))
        );
        assert_eq!(classify("/t1/oauth2/v2.0/token"), None);
        assert_eq!(classify("/"), None);
    }
}
