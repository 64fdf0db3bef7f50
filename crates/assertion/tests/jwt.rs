//! The certificate-signed jwt-bearer assertion: headers, claims and signatures, verified
//! independently with ring.
// clippy.toml allows unwrap only inside #[test] functions; the helpers here are test code too.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::{certificate_public_key, data, decode, verify};
use fic_assertion::{
    codes, load, AssertionProvider, AssertionRequest, CertificateAssertion, CertificateChain,
    ClientIdentity, SoftwareKey, JWT_BEARER,
};
use fic_oauth_core::thumbprint::{x5t, x5t_s256};
use fic_oauth_core::{
    AuthorityKind, Error, ErrorCode, KeyKind, ManualClock, SignatureAlgorithm, SigningKey,
};
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256,
};
use serde_json::{json, Value};
use uuid::Uuid;

const CLIENT_ID: &str = "163ffef9-a313-45b4-ab2f-c7e2f5e0e23e";
const TENANT: &str = "bea21ebe-8b64-4d06-9f6d-6a889b120a7c";
const NOW: u64 = 1_700_000_000;
const REGIONAL: &str =
    "https://westus3.login.microsoft.com/bea21ebe-8b64-4d06-9f6d-6a889b120a7c/oauth2/v2.0/token";
const MTLSAUTH: &str =
    "https://westus3.mtlsauth.microsoft.com/bea21ebe-8b64-4d06-9f6d-6a889b120a7c/oauth2/v2.0/token";

fn rsa_identity() -> ClientIdentity {
    load::from_pem_parts(&data("rsa.crt.pem"), &data("rsa.key.pem")).unwrap()
}

fn p256_identity() -> ClientIdentity {
    let generated = rcgen::generate_simple_self_signed(vec!["p256.example".to_owned()]).unwrap();
    let pem = format!(
        "{}{}",
        generated.cert.pem(),
        generated.signing_key.serialize_pem()
    );
    load::from_pem(pem.as_bytes()).unwrap()
}

fn provider(identity: ClientIdentity, clock: &ManualClock) -> CertificateAssertion {
    CertificateAssertion::new(identity)
        .unwrap()
        .with_clock(Arc::new(clock.clone()))
}

fn request(endpoint: &str, kind: AuthorityKind) -> AssertionRequest {
    AssertionRequest::new(CLIENT_ID, endpoint)
        .with_tenant_id(TENANT)
        .with_authority(format!("https://login.microsoftonline.com/{TENANT}/"), kind)
}

async fn sign(provider: &CertificateAssertion, request: &AssertionRequest) -> common::Jwt {
    let assertion = provider.assertion(request).await.unwrap();
    assert_eq!(assertion.assertion_type(), JWT_BEARER);
    assert!(assertion.binding().is_none());
    decode(assertion.value().expose())
}

/// The claims are exactly these, with a v4 UUID `jti`, which is returned.
fn assert_claims(payload: &Value, aud: &str, now: u64, lifetime: u64) -> String {
    let keys: BTreeSet<&str> = payload
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["aud", "iss", "sub", "jti", "nbf", "iat", "exp"])
    );
    assert_eq!(payload["aud"], aud);
    assert_eq!(payload["iss"], CLIENT_ID);
    assert_eq!(payload["sub"], CLIENT_ID);
    // Numeric dates (RFC 7519), not strings as MSAL.NET sends them.
    assert_eq!(payload["nbf"], json!(now));
    assert_eq!(payload["iat"], json!(now));
    assert_eq!(payload["exp"], json!(now + lifetime));
    assert_eq!(
        payload["exp"].as_u64().unwrap() - payload["nbf"].as_u64().unwrap(),
        lifetime
    );
    let jti = payload["jti"].as_str().unwrap();
    let parsed = Uuid::parse_str(jti).unwrap();
    assert_eq!(parsed.get_version_num(), 4);
    assert_eq!(parsed.hyphenated().to_string(), jti);
    jti.to_owned()
}

#[tokio::test]
async fn ps256_for_aad_with_a_regional_endpoint() {
    let clock = ManualClock::at_unix(NOW);
    let identity = rsa_identity();
    let jwt = sign(
        &provider(identity.clone(), &clock),
        &request(REGIONAL, AuthorityKind::Aad),
    )
    .await;

    let thumbprint = x5t_s256(&data("rsa.crt.der"));
    assert_eq!(identity.thumbprint_s256(), thumbprint);
    assert_eq!(
        jwt.header,
        json!({"alg": "PS256", "typ": "JWT", "x5t#S256": thumbprint})
    );
    // MSAL's field order, too.
    assert_eq!(
        jwt.header_json,
        format!(r#"{{"alg":"PS256","typ":"JWT","x5t#S256":"{thumbprint}"}}"#)
    );
    assert_claims(&jwt.payload, REGIONAL, NOW, 600);

    let public_key = certificate_public_key(&data("rsa.crt.der"));
    assert_eq!(jwt.signature.len(), 256);
    assert!(verify(
        &RSA_PSS_2048_8192_SHA256,
        &public_key,
        jwt.signing_input.as_bytes(),
        &jwt.signature
    ));
    // The check can fail: not PKCS#1, not another message, not another key.
    assert!(!verify(
        &RSA_PKCS1_2048_8192_SHA256,
        &public_key,
        jwt.signing_input.as_bytes(),
        &jwt.signature
    ));
    let tampered = jwt.signing_input.replacen('e', "f", 1);
    assert!(!verify(
        &RSA_PSS_2048_8192_SHA256,
        &public_key,
        tampered.as_bytes(),
        &jwt.signature
    ));
    let other_key = certificate_public_key(
        CertificateChain::from_pem(&data("ca.crt.pem"))
            .unwrap()
            .leaf_der(),
    );
    assert!(!verify(
        &RSA_PSS_2048_8192_SHA256,
        &other_key,
        jwt.signing_input.as_bytes(),
        &jwt.signature
    ));
}

#[tokio::test]
async fn ps256_for_b2c_and_ciam_with_the_mtlsauth_endpoint() {
    let clock = ManualClock::at_unix(NOW);
    let provider = provider(rsa_identity(), &clock);
    let public_key = certificate_public_key(&data("rsa.crt.der"));
    for kind in [AuthorityKind::B2c, AuthorityKind::Ciam] {
        let jwt = sign(&provider, &request(MTLSAUTH, kind)).await;
        assert_eq!(jwt.header["alg"], "PS256", "{kind:?}");
        assert_eq!(jwt.header["x5t#S256"], x5t_s256(&data("rsa.crt.der")));
        assert_claims(&jwt.payload, MTLSAUTH, NOW, 600);
        assert!(verify(
            &RSA_PSS_2048_8192_SHA256,
            &public_key,
            jwt.signing_input.as_bytes(),
            &jwt.signature
        ));
    }
}

#[tokio::test]
async fn rs256_with_sha1_thumbprint_for_adfs_dsts_and_generic() {
    let clock = ManualClock::at_unix(NOW);
    let provider = provider(rsa_identity(), &clock);
    let public_key = certificate_public_key(&data("rsa.crt.der"));
    let cases = [
        (
            AuthorityKind::Adfs,
            "https://adfs.contoso.com/adfs/oauth2/token",
        ),
        (
            AuthorityKind::Dsts,
            "https://contoso.dsts.core.windows.net/dstsv2/tenant/oauth2/v2.0/token",
        ),
        (AuthorityKind::Generic, "https://idp.example/oauth2/token"),
    ];
    for (kind, endpoint) in cases {
        let jwt = sign(&provider, &request(endpoint, kind)).await;
        let thumbprint = x5t(&data("rsa.crt.der"));
        assert_eq!(
            jwt.header,
            json!({"alg": "RS256", "typ": "JWT", "x5t": thumbprint}),
            "{kind:?}"
        );
        assert_eq!(
            jwt.header_json,
            format!(r#"{{"alg":"RS256","typ":"JWT","x5t":"{thumbprint}"}}"#)
        );
        assert_claims(&jwt.payload, endpoint, NOW, 600);
        assert!(verify(
            &RSA_PKCS1_2048_8192_SHA256,
            &public_key,
            jwt.signing_input.as_bytes(),
            &jwt.signature
        ));
        assert!(!verify(
            &RSA_PSS_2048_8192_SHA256,
            &public_key,
            jwt.signing_input.as_bytes(),
            &jwt.signature
        ));
    }
}

#[tokio::test]
async fn es256_with_fixed_size_signature_for_p256_keys() {
    let clock = ManualClock::at_unix(NOW);
    let from_openssl =
        load::from_pem_parts(&data("ec-p256.crt.pem"), &data("ec-p256.sec1.pem")).unwrap();
    for identity in [p256_identity(), from_openssl] {
        let public_key = certificate_public_key(identity.leaf_der());
        let provider = provider(identity.clone(), &clock);
        // Many signatures, so that short r or s (needing left padding) are exercised too.
        for _ in 0..32 {
            let jwt = sign(&provider, &request(REGIONAL, AuthorityKind::Aad)).await;
            assert_eq!(
                jwt.header,
                json!({"alg": "ES256", "typ": "JWT", "x5t#S256": identity.thumbprint_s256()})
            );
            assert_claims(&jwt.payload, REGIONAL, NOW, 600);
            assert_eq!(jwt.signature.len(), 64, "ES256 is raw r||s, not DER");
            assert!(verify(
                &ECDSA_P256_SHA256_FIXED,
                &public_key,
                jwt.signing_input.as_bytes(),
                &jwt.signature
            ));
        }
        // Legacy authorities look certificates up by SHA-1 thumbprint.
        let jwt = sign(&provider, &request(REGIONAL, AuthorityKind::Adfs)).await;
        assert_eq!(
            jwt.header,
            json!({"alg": "ES256", "typ": "JWT", "x5t": identity.thumbprint_sha1()})
        );
    }
}

#[tokio::test]
async fn jti_is_new_for_every_assertion_and_time_comes_from_the_clock() {
    let clock = ManualClock::at_unix(NOW);
    let provider = provider(rsa_identity(), &clock);
    let request = request(MTLSAUTH, AuthorityKind::Aad);
    let first = sign(&provider, &request).await;
    let second = sign(&provider, &request).await;
    let first_jti = assert_claims(&first.payload, MTLSAUTH, NOW, 600);
    let second_jti = assert_claims(&second.payload, MTLSAUTH, NOW, 600);
    assert_ne!(first_jti, second_jti);

    clock.advance(Duration::from_secs(42));
    let later = sign(&provider, &request).await;
    assert_claims(&later.payload, MTLSAUTH, NOW + 42, 600);
}

#[tokio::test]
async fn lifetime_is_configurable() {
    let clock = ManualClock::at_unix(NOW);
    let provider = provider(rsa_identity(), &clock).with_lifetime(Duration::from_secs(300));
    let jwt = sign(&provider, &request(REGIONAL, AuthorityKind::Aad)).await;
    assert_claims(&jwt.payload, REGIONAL, NOW, 300);
}

#[tokio::test]
async fn x5c_is_the_whole_chain_leaf_first_in_standard_base64() {
    let clock = ManualClock::at_unix(NOW);
    let identity = load::from_pem(&data("rsa.chain-and-key.pem")).unwrap();
    let provider = provider(identity, &clock).with_x5c(true);
    let jwt = sign(&provider, &request(REGIONAL, AuthorityKind::Aad)).await;

    let leaf = data("rsa.crt.der");
    let ca = CertificateChain::from_pem(&data("ca.crt.pem"))
        .unwrap()
        .leaf_der()
        .to_vec();
    let expected = [STANDARD.encode(&leaf), STANDARD.encode(&ca)];
    assert_eq!(
        jwt.header,
        json!({
            "alg": "PS256",
            "typ": "JWT",
            "x5t#S256": x5t_s256(&leaf),
            "x5c": expected,
        })
    );
    let x5c = jwt.header["x5c"].as_array().unwrap();
    assert_eq!(STANDARD.decode(x5c[0].as_str().unwrap()).unwrap(), leaf);
    assert_eq!(STANDARD.decode(x5c[1].as_str().unwrap()).unwrap(), ca);
    // Standard alphabet with padding: this leaf's DER length is not a multiple of 3.
    assert_ne!(leaf.len() % 3, 0);
    assert!(x5c[0].as_str().unwrap().ends_with('='));
    assert!(jwt
        .header_json
        .ends_with(&format!(r#""x5c":["{}","{}"]}}"#, expected[0], expected[1])));
    // Still verifies.
    assert!(verify(
        &RSA_PSS_2048_8192_SHA256,
        &certificate_public_key(&leaf),
        jwt.signing_input.as_bytes(),
        &jwt.signature
    ));
}

#[tokio::test]
async fn assertions_are_fresh_unless_reuse_is_asked_for() {
    let clock = ManualClock::at_unix(NOW);
    let request = request(REGIONAL, AuthorityKind::Aad);

    let fresh = provider(rsa_identity(), &clock);
    let a = fresh.assertion(&request).await.unwrap();
    let b = fresh.assertion(&request).await.unwrap();
    assert_ne!(a.value(), b.value());

    let reusing = provider(rsa_identity(), &clock).with_reuse(Duration::from_secs(300));
    let first = reusing.assertion(&request).await.unwrap();
    clock.advance(Duration::from_secs(299));
    let again = reusing.assertion(&request).await.unwrap();
    assert_eq!(
        first.value(),
        again.value(),
        "reused while > 300 s are left"
    );
    // Another endpoint, client or authority kind gets its own assertion.
    let other_endpoint = reusing
        .assertion(&AssertionRequest::new(CLIENT_ID, MTLSAUTH))
        .await
        .unwrap();
    assert_ne!(first.value(), other_endpoint.value());
    assert_eq!(
        decode(other_endpoint.value().expose()).payload["aud"],
        MTLSAUTH
    );
    let other_client = reusing
        .assertion(&AssertionRequest::new("another-client", REGIONAL))
        .await
        .unwrap();
    assert_ne!(first.value(), other_client.value());
    let legacy = reusing
        .assertion(&request.clone().with_authority_kind(AuthorityKind::Adfs))
        .await
        .unwrap();
    assert_eq!(decode(legacy.value().expose()).header["alg"], "RS256");

    clock.advance(Duration::from_secs(1));
    let renewed = reusing.assertion(&request).await.unwrap();
    assert_ne!(first.value(), renewed.value(), "300 s left: signed again");
    assert_claims(
        &decode(renewed.value().expose()).payload,
        REGIONAL,
        NOW + 300,
        600,
    );
    // `sign` never reuses.
    assert_ne!(
        reusing.sign(&request).unwrap(),
        reusing.sign(&request).unwrap()
    );
}

#[test]
fn keys_that_cannot_sign_assertions_are_refused() {
    let generated = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let certificate = rcgen::CertificateParams::new(vec!["p384.example".to_owned()])
        .unwrap()
        .self_signed(&generated)
        .unwrap();
    let pem = format!("{}{}", certificate.pem(), generated.serialize_pem());
    let identity = load::from_pem(pem.as_bytes()).unwrap();
    assert_eq!(identity.key().kind(), KeyKind::EcP384);
    let err = CertificateAssertion::new(identity).unwrap_err();
    assert_eq!(err.code(), &codes::UNSUPPORTED_KEY_TYPE);
}

#[test]
fn requests_need_a_client_id_and_an_endpoint() {
    let clock = ManualClock::at_unix(NOW);
    let provider = provider(p256_identity(), &clock);
    for request in [
        AssertionRequest::new("", REGIONAL),
        AssertionRequest::new(CLIENT_ID, " "),
    ] {
        let err = provider.sign(&request).unwrap_err();
        assert_eq!(err.code(), &ErrorCode::INVALID_ARGUMENT);
    }
}

/// A key that signs only RSASSA-PKCS1-v1_5, like some HSMs, or returns a broken signature.
#[derive(Debug)]
struct LimitedKey {
    inner: SoftwareKey,
    algorithms: &'static [SignatureAlgorithm],
    broken: bool,
}

impl SigningKey for LimitedKey {
    fn kind(&self) -> KeyKind {
        self.inner.kind()
    }
    fn algorithms(&self) -> &[SignatureAlgorithm] {
        self.algorithms
    }
    fn sign(&self, algorithm: SignatureAlgorithm, message: &[u8]) -> Result<Vec<u8>, Error> {
        assert!(
            self.algorithms.contains(&algorithm),
            "asked for {algorithm:?}"
        );
        if self.broken {
            return Ok(vec![0x30, 0x00]);
        }
        self.inner.sign(algorithm, message)
    }
}

#[tokio::test]
async fn a_custom_key_without_pss_falls_back_to_rs256() {
    let clock = ManualClock::at_unix(NOW);
    let key = LimitedKey {
        inner: SoftwareKey::from_pem(&data("rsa.key.pem")).unwrap(),
        algorithms: &[SignatureAlgorithm::RsaPkcs1Sha256],
        broken: false,
    };
    let identity = CertificateChain::from_pem(&data("rsa.crt.pem"))
        .unwrap()
        .with_signing_key(Arc::new(key))
        .unwrap();
    let jwt = sign(
        &provider(identity, &clock),
        &request(REGIONAL, AuthorityKind::Aad),
    )
    .await;
    assert_eq!(
        jwt.header,
        json!({"alg": "RS256", "typ": "JWT", "x5t": x5t(&data("rsa.crt.der"))})
    );
    assert!(verify(
        &RSA_PKCS1_2048_8192_SHA256,
        &certificate_public_key(&data("rsa.crt.der")),
        jwt.signing_input.as_bytes(),
        &jwt.signature
    ));
}

#[tokio::test]
async fn a_malformed_ecdsa_signature_from_a_custom_key_is_an_error() {
    let generated = rcgen::generate_simple_self_signed(vec!["p256.example".to_owned()]).unwrap();
    let key = LimitedKey {
        inner: SoftwareKey::from_pem(generated.signing_key.serialize_pem().as_bytes()).unwrap(),
        algorithms: &[SignatureAlgorithm::EcdsaP256Sha256],
        broken: true,
    };
    let identity = CertificateChain::from_der(generated.cert.der())
        .unwrap()
        .with_signing_key(Arc::new(key))
        .unwrap();
    let provider = CertificateAssertion::new(identity).unwrap();
    let err = provider
        .assertion(&request(REGIONAL, AuthorityKind::Aad))
        .await
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::SIGNING_FAILED);
}

#[tokio::test]
async fn nothing_secret_in_debug_output() {
    let clock = ManualClock::at_unix(NOW);
    let provider = provider(rsa_identity(), &clock).with_x5c(true);
    let assertion = provider
        .assertion(&request(REGIONAL, AuthorityKind::Aad))
        .await
        .unwrap();
    let jwt = assertion.value().expose().to_owned();
    let signature = jwt.rsplit('.').next().unwrap();
    let debug = format!("{provider:?} {assertion:?}");
    assert!(!debug.contains(&jwt[..20]), "{debug}");
    assert!(!debug.contains(signature));
    assert!(debug.contains("Secret(***)"));
    assert!(debug.contains(&x5t_s256(&data("rsa.crt.der"))));
}

/// `cargo xtask test` names the crypto library each of its builds must sign with (feature
/// unification can switch ring on behind a build's back); other runs skip the check.
#[test]
fn the_software_keys_use_the_expected_crypto_library() {
    if let Ok(expected) = std::env::var("FIC_EXPECT_CRYPTO_BACKEND") {
        assert_eq!(fic_assertion::BACKEND, expected);
        let key = SoftwareKey::from_pem(&data("rsa.key.pem")).unwrap();
        assert!(format!("{key:?}").contains(&format!("backend: {expected:?}")));
    }
}
