//! The managed identity endpoints: IMDS v1, IMDSv2 (platform metadata, CSR checks, the issued
//! certificate at the token endpoint and the resource), App Service, Machine Learning, Cloud
//! Shell, Azure Arc (challenge files) and Service Fabric (its own HTTPS listener). Requests and
//! CSRs are built by hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use fic_emulator::{
    codes, EmulatorHandle, Fault, FaultTarget, Listener, ManagedIdentity, ManagedIdentitySource,
    Route,
};
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256, RSA_PSS_SHA256};
use serde_json::{json, Value};
use std::fmt::Write as _;
use support::*;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const SAMI_CLIENT: &str = "5a3b6c7d-0000-4000-8000-00000000a001";
const SAMI_OBJECT: &str = "5a3b6c7d-0000-4000-8000-00000000a002";
const UAMI_CLIENT: &str = "5a3b6c7d-0000-4000-8000-00000000b001";
const UAMI_OBJECT: &str = "5a3b6c7d-0000-4000-8000-00000000b002";
const UAMI_RESOURCE: &str = "/subscriptions/0b1c2d3e-0000-4000-8000-000000000001/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/uami-1";
const VM_ID: &str = "0f9e8d7c-6b5a-4938-8271-605f4e3d2c1b";
const ARM: &str = "https://management.azure.com";
const IMDS_TOKEN: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
const PLATFORM: &str = "http://169.254.169.254/metadata/identity/getplatformmetadata";
const ISSUE: &str = "http://169.254.169.254/metadata/identity/issuecredential";

fn builder() -> fic_emulator::EmulatorBuilder {
    standard_builder()
        .managed_identity(ManagedIdentity::system_assigned(
            SAMI_CLIENT,
            SAMI_OBJECT,
            TENANT,
        ))
        .managed_identity(ManagedIdentity::user_assigned(
            UAMI_CLIENT,
            UAMI_OBJECT,
            UAMI_RESOURCE,
            TENANT,
        ))
        .vm_id(VM_ID)
}

async fn emulator() -> EmulatorHandle {
    builder().start().await.unwrap()
}

/// `base?pairs`, percent-encoded.
fn url(base: &str, pairs: &[(&str, &str)]) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    format!("{base}?{query}")
}

async fn get(emu: &EmulatorHandle, url: &str, headers: &[(&str, &str)]) -> HttpResponse {
    send(emu, "GET", url, headers, b"", None).await.unwrap()
}

#[track_caller]
fn assert_token_for(body: &Value, client_id: &str, object_id: &str, resource: &str) -> Value {
    let claims = claims_of(body["access_token"].as_str().unwrap());
    assert_eq!(claims["appid"], client_id, "{claims:#}");
    assert_eq!(claims["oid"], object_id);
    assert_eq!(claims["sub"], object_id);
    assert_eq!(claims["aud"], resource);
    assert_eq!(claims["idtyp"], "app");
    assert_eq!(claims["tid"], TENANT);
    assert_eq!(
        claims["iss"],
        format!("https://login.microsoftonline.com/{TENANT}/v2.0")
    );
    claims
}

// ---------------------------------------------------------------------------------------------
// IMDS v1

#[tokio::test]
async fn imds_v1_system_assigned() {
    let emu = emulator().await;
    let response = get(
        &emu,
        &url(
            IMDS_TOKEN,
            &[("api-version", "2018-02-01"), ("resource", ARM)],
        ),
        &[("Metadata", "true")],
    )
    .await;
    assert_eq!(response.status, 200, "{:#}", response.json());
    assert_eq!(response.header("server"), Some("IMDS/150.870.65.1854"));
    let body = response.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["resource"], ARM);
    assert_eq!(body["client_id"], SAMI_CLIENT);
    let expires_on: u64 = body["expires_on"].as_str().unwrap().parse().unwrap();
    let expires_in: u64 = body["expires_in"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires_in, 86_399);
    assert!(expires_on.abs_diff(now_unix() + expires_in) < 60);
    let claims = assert_token_for(&body, SAMI_CLIENT, SAMI_OBJECT, ARM);
    assert!(claims["xms_mirid"]
        .as_str()
        .unwrap()
        .contains("virtualMachines"));
    assert!(claims.get("cnf").is_none());

    let entry = emu.log().last().unwrap();
    assert_eq!(entry.listener, Listener::Imds);
    assert_eq!(entry.route, Route::Imds);
    assert_eq!(entry.path, "/metadata/identity/oauth2/token");
    assert_eq!(entry.query_value("resource").as_deref(), Some(ARM));

    // The token works at the resource.
    let response = call_resource(
        &emu,
        "https://management.azure.com/subscriptions",
        Some(&format!(
            "Bearer {}",
            body["access_token"].as_str().unwrap()
        )),
        None,
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["oid"], SAMI_OBJECT);
}

#[tokio::test]
async fn imds_v1_user_assigned_by_each_id() {
    let emu = emulator().await;
    for (name, value) in [
        ("client_id", UAMI_CLIENT),
        ("msi_res_id", UAMI_RESOURCE),
        ("mi_res_id", UAMI_RESOURCE),
        ("object_id", UAMI_OBJECT),
    ] {
        let response = get(
            &emu,
            &url(
                IMDS_TOKEN,
                &[
                    ("api-version", "2018-02-01"),
                    ("resource", ARM),
                    (name, value),
                ],
            ),
            &[("Metadata", "true")],
        )
        .await;
        assert_eq!(response.status, 200, "{name}: {:#}", response.json());
        let body = response.json();
        assert_eq!(body["client_id"], UAMI_CLIENT);
        let claims = assert_token_for(&body, UAMI_CLIENT, UAMI_OBJECT, ARM);
        assert_eq!(claims["xms_mirid"], UAMI_RESOURCE);
        // The decoded value reached the emulator.
        assert_eq!(
            emu.log().last().unwrap().query_value(name).as_deref(),
            Some(value)
        );
    }
}

#[tokio::test]
async fn imds_v1_refusals() {
    let emu = emulator().await;
    let ok_query = [("api-version", "2018-02-01"), ("resource", ARM)];
    // No Metadata header.
    let response = get(&emu, &url(IMDS_TOKEN, &ok_query), &[]).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"], "invalid_request");
    assert!(response.json()["error_description"]
        .as_str()
        .unwrap()
        .contains("metadata header"));
    assert!(response.header("server").unwrap().starts_with("IMDS/"));
    // Unknown identity.
    let response = get(
        &emu,
        &url(
            IMDS_TOKEN,
            &[
                ("api-version", "2018-02-01"),
                ("resource", ARM),
                ("client_id", "00000000-dead-4000-8000-000000000000"),
            ],
        ),
        &[("Metadata", "true")],
    )
    .await;
    assert_eq!(response.status, 400);
    assert_eq!(
        response.json(),
        json!({"error": "invalid_request", "error_description": "Identity not found"})
    );
    // Two identity parameters.
    let response = get(
        &emu,
        &url(
            IMDS_TOKEN,
            &[
                ("api-version", "2018-02-01"),
                ("resource", ARM),
                ("client_id", UAMI_CLIENT),
                ("object_id", UAMI_OBJECT),
            ],
        ),
        &[("Metadata", "true")],
    )
    .await;
    assert_eq!(response.status, 400);
    // Unknown resource.
    let response = get(
        &emu,
        &url(
            IMDS_TOKEN,
            &[
                ("api-version", "2018-02-01"),
                ("resource", "https://nothing.example"),
            ],
        ),
        &[("Metadata", "true")],
    )
    .await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"], "invalid_resource");
    assert!(response.json()["error_description"]
        .as_str()
        .unwrap()
        .starts_with("AADSTS500011:"));
    // No api-version, no resource.
    for query in [vec![("resource", ARM)], vec![("api-version", "2018-02-01")]] {
        let response = get(&emu, &url(IMDS_TOKEN, &query), &[("Metadata", "true")]).await;
        assert_eq!(response.status, 400, "{query:?}");
    }
    // POST.
    let response = send(
        &emu,
        "POST",
        &url(IMDS_TOKEN, &ok_query),
        &[("Metadata", "true")],
        b"",
        None,
    )
    .await
    .unwrap();
    assert_eq!(response.status, 405);
    // A host with no system-assigned identity.
    let bare = standard_builder().start().await.unwrap();
    let response = get(&bare, &url(IMDS_TOKEN, &ok_query), &[("Metadata", "true")]).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error_description"], "Identity not found");
}

#[tokio::test]
async fn imds_faults_carry_the_imds_server_header() {
    let emu = emulator().await;
    emu.faults()
        .inject(Fault::status(410).on(FaultTarget::Imds).times(1));
    let query = url(
        IMDS_TOKEN,
        &[("api-version", "2018-02-01"), ("resource", ARM)],
    );
    let response = get(&emu, &query, &[("Metadata", "true")]).await;
    assert_eq!(response.status, 410);
    assert!(response.header("server").unwrap().starts_with("IMDS/"));
    let response = get(&emu, &query, &[("Metadata", "true")]).await;
    assert_eq!(response.status, 200);
    // A managed identity fault does not touch IMDS.
    emu.faults()
        .inject(Fault::status(500).on(FaultTarget::ManagedIdentity));
    assert_eq!(get(&emu, &query, &[("Metadata", "true")]).await.status, 200);
}

// ---------------------------------------------------------------------------------------------
// IMDSv2

/// A query, request headers and the expected status.
type Case<'a> = (Vec<(&'a str, &'a str)>, &'a [(&'a str, &'a str)], u16);

#[tokio::test]
async fn platform_metadata_of_each_identity() {
    let emu = builder().vmss_id("vmss-42").start().await.unwrap();
    let response = get(
        &emu,
        &url(PLATFORM, &[("cred-api-version", "2.0")]),
        &[("Metadata", "true")],
    )
    .await;
    assert_eq!(response.status, 200, "{:#}", response.json());
    assert_eq!(response.header("server"), Some("IMDS/150.870.65.1854"));
    let body = response.json();
    assert_eq!(body["cuId"], json!({"vmId": VM_ID, "vmssId": "vmss-42"}));
    assert_eq!(body["clientId"], SAMI_CLIENT);
    assert_eq!(body["tenantId"], TENANT);
    assert!(body["attestationEndpoint"]
        .as_str()
        .unwrap()
        .starts_with("https://"));
    for (name, value) in [
        ("client_id", UAMI_CLIENT),
        ("mi_res_id", UAMI_RESOURCE),
        ("object_id", UAMI_OBJECT),
    ] {
        let response = get(
            &emu,
            &url(PLATFORM, &[("cred-api-version", "2.0"), (name, value)]),
            &[("Metadata", "true")],
        )
        .await;
        assert_eq!(response.json()["clientId"], UAMI_CLIENT, "{name}");
    }
    // Refusals: no Metadata, another cred-api-version, an api-version instead, unknown identity.
    let cases: [Case<'_>; 4] = [
        (vec![("cred-api-version", "2.0")], &[], 400),
        (
            vec![("cred-api-version", "1.0")],
            &[("Metadata", "true")],
            400,
        ),
        (
            vec![("api-version", "2018-02-01")],
            &[("Metadata", "true")],
            400,
        ),
        (
            vec![("cred-api-version", "2.0"), ("object_id", "nobody")],
            &[("Metadata", "true")],
            400,
        ),
    ];
    for (query, headers, status) in cases {
        let response = get(&emu, &url(PLATFORM, &query), headers).await;
        assert_eq!(response.status, status, "{query:?}");
        assert!(response.header("server").unwrap().starts_with("IMDS/"));
    }
}

#[tokio::test]
async fn a_v1_only_host_answers_404_to_imds_v2() {
    let emu = builder().imds_v1_only().start().await.unwrap();
    let response = get(
        &emu,
        &url(PLATFORM, &[("cred-api-version", "2.0")]),
        &[("Metadata", "true")],
    )
    .await;
    assert_eq!(response.status, 404);
    assert!(response.header("server").unwrap().starts_with("IMDS/"));
    let key = rsa_key();
    let response = issue_credential(&emu, &[], &CsrSpec::good(&key, SAMI_CLIENT).der()).await;
    assert_eq!(response.status, 404);
    // IMDS v1 still works, and v2 can be turned on at run time.
    let response = get(
        &emu,
        &url(
            IMDS_TOKEN,
            &[("api-version", "2018-02-01"), ("resource", ARM)],
        ),
        &[("Metadata", "true")],
    )
    .await;
    assert_eq!(response.status, 200);
    emu.update_settings(|s| s.imds_v2 = true);
    let response = get(
        &emu,
        &url(PLATFORM, &[("cred-api-version", "2.0")]),
        &[("Metadata", "true")],
    )
    .await;
    assert_eq!(response.status, 200);
}

/// DER: tag, length, contents.
fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap());
    } else if len < 0x100 {
        out.extend([0x81, u8::try_from(len).unwrap()]);
    } else {
        out.extend([
            0x82,
            u8::try_from(len >> 8).unwrap(),
            u8::try_from(len & 0xff).unwrap(),
        ]);
    }
    out.extend_from_slice(contents);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    der(0x30, &parts.concat())
}

fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = vec![u8::try_from(arcs[0] * 40 + arcs[1]).unwrap()];
    for &arc in &arcs[2..] {
        let mut groups = vec![u8::try_from(arc & 0x7f).unwrap()];
        let mut rest = arc >> 7;
        while rest > 0 {
            groups.push(u8::try_from(rest & 0x7f).unwrap() | 0x80);
            rest >>= 7;
        }
        groups.reverse();
        body.extend(groups);
    }
    der(0x06, &body)
}

const RSA_ENCRYPTION: &[u64] = &[1, 2, 840, 113_549, 1, 1, 1];
const SHA256_WITH_RSA: &[u64] = &[1, 2, 840, 113_549, 1, 1, 11];
const RSASSA_PSS: &[u64] = &[1, 2, 840, 113_549, 1, 1, 10];
const MGF1: &[u64] = &[1, 2, 840, 113_549, 1, 1, 8];
const SHA256: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 1];
const CN: &[u64] = &[2, 5, 4, 3];
const DC: &[u64] = &[0, 9, 2342, 19_200_300, 100, 1, 25];
const OU: &[u64] = &[2, 5, 4, 11];
const CUID: &[u64] = &[1, 3, 6, 1, 4, 1, 311, 90, 2, 10];

/// A 2048-bit RSA key (the fixture of certificate A), with its PKCS#8 for TLS.
struct RsaKey {
    pair: RsaKeyPair,
    pkcs8: Vec<u8>,
}

fn rsa_key() -> RsaKey {
    let cert = TestCert::a();
    RsaKey {
        pair: RsaKeyPair::from_pkcs8(&cert.pkcs8).unwrap(),
        pkcs8: cert.pkcs8,
    }
}

/// One relative distinguished name with one attribute.
fn rdn(kind: &[u64], tag: u8, value: &str) -> Vec<u8> {
    der(0x31, &seq(&[&oid(kind), &der(tag, value.as_bytes())]))
}

/// What goes into a hand-made CSR.
struct CsrSpec<'a> {
    key: &'a RsaKey,
    subject: Vec<u8>,
    cuid: Option<String>,
    pss: bool,
    tamper: bool,
}

impl<'a> CsrSpec<'a> {
    /// What IMDS accepts for `client_id`: `[DC=<tenant>], [CN=<client id>]`, the cuId, PSS.
    fn good(key: &'a RsaKey, client_id: &str) -> Self {
        Self {
            key,
            subject: seq(&[&rdn(DC, 0x16, TENANT), &rdn(CN, 0x0c, client_id)]),
            cuid: Some(format!(r#"{{"vmId":"{VM_ID}"}}"#)),
            pss: true,
            tamper: false,
        }
    }

    fn der(&self) -> Vec<u8> {
        let public = self.key.pair.public().as_ref();
        let spki = seq(&[
            &seq(&[&oid(RSA_ENCRYPTION), &[0x05, 0x00]]),
            &der(0x03, &[&[0u8][..], public].concat()),
        ]);
        let attributes = match &self.cuid {
            Some(cuid) => der(
                0xa0,
                &seq(&[&oid(CUID), &der(0x31, &der(0x0c, cuid.as_bytes()))]),
            ),
            None => der(0xa0, &[]),
        };
        let info = seq(&[&der(0x02, &[0]), &self.subject, &spki, &attributes]);
        let rng = SystemRandom::new();
        let mut signature = vec![0; self.key.pair.public().modulus_len()];
        let algorithm = if self.pss {
            self.key
                .pair
                .sign(&RSA_PSS_SHA256, &rng, &info, &mut signature)
                .unwrap();
            let sha256 = seq(&[&oid(SHA256)]);
            seq(&[
                &oid(RSASSA_PSS),
                &seq(&[
                    &der(0xa0, &sha256),
                    &der(0xa1, &seq(&[&oid(MGF1), &sha256])),
                    &der(0xa2, &der(0x02, &[32])),
                ]),
            ])
        } else {
            self.key
                .pair
                .sign(&RSA_PKCS1_SHA256, &rng, &info, &mut signature)
                .unwrap();
            seq(&[&oid(SHA256_WITH_RSA), &[0x05, 0x00]])
        };
        if self.tamper {
            signature[10] ^= 0x01;
        }
        seq(&[
            &info,
            &algorithm,
            &der(0x03, &[&[0u8][..], &signature].concat()),
        ])
    }
}

async fn issue_credential(
    emu: &EmulatorHandle,
    identity: &[(&str, &str)],
    csr: &[u8],
) -> HttpResponse {
    let mut query = vec![("cred-api-version", "2.0")];
    query.extend_from_slice(identity);
    let body = json!({ "csr": STANDARD.encode(csr) }).to_string();
    send(
        emu,
        "POST",
        &url(ISSUE, &query),
        &[("Metadata", "true"), ("Content-Type", "application/json")],
        body.as_bytes(),
        None,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn issue_credential_refuses_bad_csrs() {
    let emu = emulator().await;
    let key = rsa_key();
    let refused = |response: &HttpResponse, why: &str| {
        assert_eq!(response.status, 400, "{why}: {:#}", response.json());
        assert_eq!(response.json()["error"], "invalid_request", "{why}");
        let description = response.json()["error_description"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            description.contains(why),
            "expected '{why}' in '{description}'"
        );
        assert!(response.header("server").unwrap().starts_with("IMDS/"));
    };

    let mut tampered = CsrSpec::good(&key, SAMI_CLIENT);
    tampered.tamper = true;
    refused(
        &issue_credential(&emu, &[], &tampered.der()).await,
        "signature does not verify",
    );

    let mut pkcs1 = CsrSpec::good(&key, SAMI_CLIENT);
    pkcs1.pss = false;
    refused(
        &issue_credential(&emu, &[], &pkcs1.der()).await,
        "not signed with RSASSA-PSS",
    );

    // The subject of another identity, a missing DC, an extra attribute.
    refused(
        &issue_credential(&emu, &[], &CsrSpec::good(&key, UAMI_CLIENT).der()).await,
        "CSR subject",
    );
    let mut no_dc = CsrSpec::good(&key, SAMI_CLIENT);
    no_dc.subject = seq(&[&rdn(CN, 0x0c, SAMI_CLIENT)]);
    refused(
        &issue_credential(&emu, &[], &no_dc.der()).await,
        "CSR subject",
    );
    let mut extra = CsrSpec::good(&key, SAMI_CLIENT);
    extra.subject = seq(&[
        &rdn(DC, 0x16, TENANT),
        &rdn(CN, 0x0c, SAMI_CLIENT),
        &rdn(OU, 0x0c, "extra"),
    ]);
    refused(
        &issue_credential(&emu, &[], &extra.der()).await,
        "CSR subject",
    );

    let mut no_attribute = CsrSpec::good(&key, SAMI_CLIENT);
    no_attribute.cuid = None;
    refused(
        &issue_credential(&emu, &[], &no_attribute.der()).await,
        "no attribute 1.3.6.1.4.1.311.90.2.10",
    );

    let mut wrong_vm = CsrSpec::good(&key, SAMI_CLIENT);
    wrong_vm.cuid = Some(r#"{"vmId":"another-vm"}"#.to_owned());
    refused(
        &issue_credential(&emu, &[], &wrong_vm.der()).await,
        "is not this VM's id",
    );
    let mut stray_vmss = CsrSpec::good(&key, SAMI_CLIENT);
    stray_vmss.cuid = Some(format!(r#"{{"vmId":"{VM_ID}","vmssId":"x"}}"#));
    refused(
        &issue_credential(&emu, &[], &stray_vmss.der()).await,
        "scale set",
    );
    let mut not_json = CsrSpec::good(&key, SAMI_CLIENT);
    not_json.cuid = Some("vmId=1".to_owned());
    refused(
        &issue_credential(&emu, &[], &not_json.der()).await,
        "not JSON",
    );

    refused(
        &issue_credential(&emu, &[], b"not a csr").await,
        "not a DER PKCS#10",
    );

    // The body: not JSON, no csr, not base64, not application/json.
    for (content_type, body, why) in [
        ("application/json", "{", "not JSON"),
        ("application/json", "{}", "no 'csr'"),
        ("application/json", r#"{"csr":"%%%"}"#, "base64"),
        ("text/plain", r#"{"csr":"AA=="}"#, "application/json"),
    ] {
        let response = send(
            &emu,
            "POST",
            &url(ISSUE, &[("cred-api-version", "2.0")]),
            &[("Metadata", "true"), ("Content-Type", content_type)],
            body.as_bytes(),
            None,
        )
        .await
        .unwrap();
        refused(&response, why);
    }
    // Nothing was issued.
    assert!(emu
        .directory()
        .managed_identity(SAMI_CLIENT)
        .unwrap()
        .certificates
        .is_empty());
}

#[tokio::test]
async fn issued_certificate_authenticates_the_identity_over_mtls() {
    let emu = emulator().await;
    let key = rsa_key();
    // A user-assigned identity by resource id; the CSR subject is its client id.
    let csr = CsrSpec::good(&key, UAMI_CLIENT).der();
    // The client JSON-escapes '+' as .NET does; the emulator reads JSON.
    let escaped = json!({ "csr": STANDARD.encode(&csr) })
        .to_string()
        .replace('+', "\\u002B");
    let response = send(
        &emu,
        "POST",
        &url(
            ISSUE,
            &[("cred-api-version", "2.0"), ("mi_res_id", UAMI_RESOURCE)],
        ),
        &[
            ("Metadata", "true"),
            ("Content-Type", "application/json; charset=utf-8"),
        ],
        escaped.as_bytes(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(response.status, 200, "{:#}", response.json());
    assert!(response.header("server").unwrap().starts_with("IMDS/"));
    let body = response.json();
    assert_eq!(body["client_id"], UAMI_CLIENT);
    assert_eq!(body["tenant_id"], TENANT);
    assert_eq!(body["identity_type"], "UserAssigned");
    assert_eq!(
        body["mtls_authentication_endpoint"],
        "https://westus3.mtlsauth.microsoft.com"
    );
    let certificate = STANDARD
        .decode(body["certificate"].as_str().unwrap())
        .unwrap();
    // CN = client id, the CSR's key, issued by the emulator CA, valid 7 days.
    {
        use x509_parser::prelude::{FromDer as _, X509Certificate};
        let (_, cert) = X509Certificate::from_der(&certificate).unwrap();
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            UAMI_CLIENT
        );
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            key.pair.public().as_ref()
        );
        let ca_der = emu.ca_certificate_der();
        let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
        assert_eq!(cert.issuer(), ca.subject());
        assert!(cert.verify_signature(Some(ca.public_key())).is_ok());
        let validity = cert.validity();
        assert_eq!(
            validity.not_after.timestamp() - validity.not_before.timestamp(),
            7 * 24 * 3600
        );
        assert!(
            validity
                .not_before
                .timestamp()
                .abs_diff(i64::try_from(now_unix()).unwrap())
                < 60
        );
    }
    assert_eq!(
        emu.directory()
            .managed_identity(UAMI_CLIENT)
            .unwrap()
            .certificates,
        vec![certificate.clone()]
    );

    // The token endpoint accepts the certificate as the identity's credential.
    let identity = Identity {
        chain: vec![certificate.clone()],
        pkcs8: key.pkcs8.clone(),
    };
    let mtls = "westus3.mtlsauth.microsoft.com";
    let form = [
        ("client_id", UAMI_CLIENT),
        ("scope", "https://vault.azure.net/.default"),
        ("grant_type", "client_credentials"),
        ("token_type", "mtls_pop"),
    ];
    let response = token(&emu, mtls, &form, Some(&identity)).await;
    assert_eq!(response.status, 200, "{:#}", response.json());
    let body = response.json();
    assert_eq!(body["token_type"], "mtls_pop");
    assert_eq!(body["expires_in"], 3599);
    let claims = claims_of(body["access_token"].as_str().unwrap());
    assert_eq!(claims["cnf"]["x5t#S256"], x5t_s256(&certificate));
    assert_eq!(claims["oid"], UAMI_OBJECT);
    assert_eq!(claims["appid"], UAMI_CLIENT);
    assert_eq!(claims["idtyp"], "app");
    assert_eq!(claims["aud"], "https://vault.azure.net");

    // The resource: accepted with the certificate, refused without it.
    let authorization = format!("mtls_pop {}", body["access_token"].as_str().unwrap());
    let vault = "https://mi.vault.azure.net/secrets/s";
    let response = call_resource(&emu, vault, Some(&authorization), Some(&identity)).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["oid"], UAMI_OBJECT);
    let response = call_resource(&emu, vault, Some(&authorization), None).await;
    assert_eq!(response.status, 401);

    // Another certificate for the same key is not registered: invalid_client.
    let other = TestCert::a();
    let response = token(&emu, mtls, &form, Some(&other.identity())).await;
    response.assert_aadsts(401, "invalid_client", codes::BAD_ASSERTION_SIGNATURE);
    // Nor is the issued one once the identity's certificates are cleared.
    emu.directory()
        .update_managed_identity(UAMI_CLIENT, |mi| mi.certificates.clear());
    let response = token(&emu, mtls, &form, Some(&identity)).await;
    response.assert_aadsts(401, "invalid_client", codes::BAD_ASSERTION_SIGNATURE);
}

#[tokio::test]
async fn a_managed_identity_only_authenticates_with_its_certificate_over_mtls() {
    let emu = emulator().await;
    let key = rsa_key();
    let response = issue_credential(&emu, &[], &CsrSpec::good(&key, SAMI_CLIENT).der()).await;
    assert_eq!(response.status, 200, "{:#}", response.json());
    assert_eq!(response.json()["identity_type"], "SystemAssigned");
    let certificate = STANDARD
        .decode(response.json()["certificate"].as_str().unwrap())
        .unwrap();
    let identity = Identity {
        chain: vec![certificate],
        pkcs8: key.pkcs8.clone(),
    };
    // Without token_type=mtls_pop: no credential.
    let response = token(
        &emu,
        "mtlsauth.microsoft.com",
        &[
            ("client_id", SAMI_CLIENT),
            ("scope", GRAPH_SCOPE),
            ("grant_type", "client_credentials"),
        ],
        Some(&identity),
    )
    .await;
    response.assert_aadsts(
        401,
        "invalid_client",
        codes::EMU_MANAGED_IDENTITY_CREDENTIAL,
    );
    // A secret on the login host.
    let response = token(
        &emu,
        "login.microsoftonline.com",
        &[
            ("client_id", SAMI_CLIENT),
            ("client_secret", "guess"),
            ("scope", GRAPH_SCOPE),
            ("grant_type", "client_credentials"),
        ],
        None,
    )
    .await;
    response.assert_aadsts(
        401,
        "invalid_client",
        codes::EMU_MANAGED_IDENTITY_CREDENTIAL,
    );
    // Another grant.
    let response = token(
        &emu,
        "mtlsauth.microsoft.com",
        &[
            ("client_id", SAMI_CLIENT),
            ("refresh_token", "x"),
            ("scope", GRAPH_SCOPE),
            ("grant_type", "refresh_token"),
            ("token_type", "mtls_pop"),
        ],
        Some(&identity),
    )
    .await;
    response.assert_aadsts(
        400,
        "unauthorized_client",
        codes::EMU_MANAGED_IDENTITY_CREDENTIAL,
    );
    // The right request (client capabilities become xms_cc).
    let response = token(
        &emu,
        "mtlsauth.microsoft.com",
        &[
            ("client_id", SAMI_CLIENT),
            ("scope", GRAPH_SCOPE),
            (
                "claims",
                r#"{"access_token":{"xms_cc":{"values":["cp1"]}}}"#,
            ),
            ("grant_type", "client_credentials"),
            ("token_type", "mtls_pop"),
        ],
        Some(&identity),
    )
    .await;
    assert_eq!(response.status, 200, "{:#}", response.json());
    let claims = claims_of(response.json()["access_token"].as_str().unwrap());
    assert_eq!(claims["xms_cc"], json!(["cp1"]));
    assert_eq!(claims["oid"], SAMI_OBJECT);
}

// ---------------------------------------------------------------------------------------------
// App Service

#[tokio::test]
async fn app_service() {
    let emu = emulator().await;
    let env = emu.managed_identity_environment(ManagedIdentitySource::AppService);
    let endpoint = &env["IDENTITY_ENDPOINT"];
    let secret = &env["IDENTITY_HEADER"];
    assert_eq!(
        endpoint,
        &format!("http://127.0.0.1:{}/msi/token", emu.imds_addr().port())
    );
    let query = |extra: &[(&str, &str)]| {
        let mut pairs = vec![("api-version", "2019-08-01"), ("resource", ARM)];
        pairs.extend_from_slice(extra);
        url(endpoint, &pairs)
    };
    let response = get(&emu, &query(&[]), &[("X-IDENTITY-HEADER", secret)]).await;
    assert_eq!(response.status, 200, "{:#}", response.json());
    let body = response.json();
    assert_eq!(body["client_id"], SAMI_CLIENT);
    assert!(body["expires_on"].is_string());
    assert_token_for(&body, SAMI_CLIENT, SAMI_OBJECT, ARM);
    let entry = emu.log().last().unwrap();
    assert_eq!(entry.route, Route::AppService);
    assert_eq!(entry.listener, Listener::Imds);
    assert_eq!(entry.host, "127.0.0.1");

    for (name, value) in [
        ("client_id", UAMI_CLIENT),
        ("mi_res_id", UAMI_RESOURCE),
        ("object_id", UAMI_OBJECT),
    ] {
        let response = get(
            &emu,
            &query(&[(name, value)]),
            &[("X-IDENTITY-HEADER", secret)],
        )
        .await;
        assert_eq!(response.json()["client_id"], UAMI_CLIENT, "{name}");
    }

    // Refusals, App Service shaped.
    let shaped = |response: &HttpResponse, status: u16| {
        let body = response.json();
        assert_eq!(response.status, status, "{body:#}");
        assert_eq!(body["statusCode"], status);
        assert!(body["message"].is_string());
        assert!(body["correlationId"].is_string());
    };
    shaped(&get(&emu, &query(&[]), &[]).await, 400);
    shaped(
        &get(&emu, &query(&[]), &[("X-IDENTITY-HEADER", "wrong")]).await,
        401,
    );
    shaped(
        &get(
            &emu,
            &query(&[("client_id", "00000000-dead-4000-8000-000000000000")]),
            &[("X-IDENTITY-HEADER", secret)],
        )
        .await,
        400,
    );
    shaped(
        &get(
            &emu,
            &query(&[("msi_res_id", UAMI_RESOURCE)]),
            &[("X-IDENTITY-HEADER", secret)],
        )
        .await,
        400,
    );
    shaped(
        &get(
            &emu,
            &url(
                endpoint,
                &[("api-version", "2017-09-01"), ("resource", ARM)],
            ),
            &[("X-IDENTITY-HEADER", secret)],
        )
        .await,
        400,
    );

    // Faults on the managed identity target, with Retry-After.
    emu.faults().inject(
        Fault::status(429)
            .retry_after("5")
            .on(FaultTarget::ManagedIdentity)
            .times(1),
    );
    let response = get(&emu, &query(&[]), &[("X-IDENTITY-HEADER", secret)]).await;
    assert_eq!(response.status, 429);
    assert_eq!(response.header("retry-after"), Some("5"));
    assert_eq!(
        emu.log().last().unwrap().fault.as_deref(),
        Some("status 429")
    );
}

// ---------------------------------------------------------------------------------------------
// Machine Learning

#[tokio::test]
async fn machine_learning() {
    let emu = emulator().await;
    let env = emu.managed_identity_environment(ManagedIdentitySource::MachineLearning);
    assert_eq!(env["DEFAULT_IDENTITY_CLIENT_ID"], SAMI_CLIENT);
    let endpoint = &env["MSI_ENDPOINT"];
    let secret = env["MSI_SECRET"].as_str();
    let query = |client: &str| {
        url(
            endpoint,
            &[
                ("api-version", "2017-09-01"),
                ("resource", ARM),
                ("clientid", client),
            ],
        )
    };
    let response = get(
        &emu,
        &query(SAMI_CLIENT),
        &[("Metadata", "true"), ("secret", secret)],
    )
    .await;
    assert_eq!(response.status, 200, "{:#}", response.json());
    let body = response.json();
    assert!(body["expires_on"].is_u64(), "a number: {body:#}");
    assert_token_for(&body, SAMI_CLIENT, SAMI_OBJECT, ARM);
    assert_eq!(emu.log().last().unwrap().route, Route::MachineLearning);
    let response = get(
        &emu,
        &query(UAMI_CLIENT),
        &[("Metadata", "true"), ("secret", secret)],
    )
    .await;
    assert_token_for(&response.json(), UAMI_CLIENT, UAMI_OBJECT, ARM);

    let aad = |response: &HttpResponse, status: u16| {
        assert_eq!(response.status, status, "{:#}", response.json());
        assert!(response.json()["error"].is_string());
        assert!(response.json()["error_description"].is_string());
    };
    aad(
        &get(&emu, &query(SAMI_CLIENT), &[("secret", secret)]).await,
        400,
    );
    aad(
        &get(
            &emu,
            &query(SAMI_CLIENT),
            &[("Metadata", "true"), ("secret", "wrong")],
        )
        .await,
        401,
    );
    aad(
        &get(&emu, &query(SAMI_CLIENT), &[("Metadata", "true")]).await,
        400,
    );
    aad(
        &get(
            &emu,
            &url(
                endpoint,
                &[
                    ("api-version", "2017-09-01"),
                    ("resource", ARM),
                    ("object_id", UAMI_OBJECT),
                ],
            ),
            &[("Metadata", "true"), ("secret", secret)],
        )
        .await,
        400,
    );
}

// ---------------------------------------------------------------------------------------------
// Cloud Shell

#[tokio::test]
async fn cloud_shell() {
    let emu = emulator().await;
    let endpoint = emu.managed_identity_endpoint(ManagedIdentitySource::CloudShell);
    let post = |body: &'static str, headers: Vec<(&'static str, &'static str)>| {
        let endpoint = endpoint.clone();
        let emu = &emu;
        async move {
            send(emu, "POST", &endpoint, &headers, body.as_bytes(), None)
                .await
                .unwrap()
        }
    };
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let response = post(
        "resource=https%3A%2F%2Fmanagement.azure.com",
        vec![("Metadata", "true"), form],
    )
    .await;
    assert_eq!(response.status, 200, "{:#}", response.json());
    assert_token_for(&response.json(), SAMI_CLIENT, SAMI_OBJECT, ARM);
    let entry = emu.log().last().unwrap();
    assert_eq!(entry.route, Route::CloudShell);
    assert_eq!(entry.form_value("resource"), Some(ARM));

    let shaped = |response: &HttpResponse, status: u16| {
        assert_eq!(response.status, status, "{:#}", response.json());
        assert!(response.json()["error"]["code"].is_string());
        assert!(response.json()["error"]["message"].is_string());
    };
    shaped(
        &post("resource=https%3A%2F%2Fmanagement.azure.com", vec![form]).await,
        400,
    );
    shaped(
        &post(
            "resource=https%3A%2F%2Fmanagement.azure.com&client_id=x",
            vec![("Metadata", "true"), form],
        )
        .await,
        400,
    );
    shaped(&post("", vec![("Metadata", "true"), form]).await, 400);
    shaped(&get(&emu, &endpoint, &[("Metadata", "true")]).await, 405);
}

// ---------------------------------------------------------------------------------------------
// Azure Arc

#[tokio::test]
async fn azure_arc_challenge() {
    let directory = tempfile_dir();
    let emu = builder()
        .azure_arc_token_directory(&directory)
        .start()
        .await
        .unwrap();
    assert_eq!(emu.azure_arc_token_directory(), directory.as_path());
    let env = emu.managed_identity_environment(ManagedIdentitySource::AzureArc);
    assert_eq!(
        env["IMDS_ENDPOINT"],
        format!("http://127.0.0.1:{}", emu.imds_addr().port())
    );
    let endpoint = url(
        &env["IDENTITY_ENDPOINT"],
        &[("api-version", "2020-06-01"), ("resource", ARM)],
    );
    // First call: 401 with the challenge file.
    let response = get(&emu, &endpoint, &[("Metadata", "true")]).await;
    assert_eq!(response.status, 401);
    let challenge = response.header("www-authenticate").unwrap();
    let path = challenge.strip_prefix("Basic realm=").unwrap();
    let path = std::path::Path::new(path);
    assert_eq!(path.parent().unwrap(), directory.as_path());
    assert_eq!(path.extension().unwrap(), "key");
    let secret = std::fs::read_to_string(path).unwrap();
    assert!(secret.len() <= 4096 && !secret.contains(['\r', '\n']));
    assert_eq!(emu.log().last().unwrap().route, Route::AzureArc);

    // Second call with the contents.
    let authorization = format!("Basic {secret}");
    let response = get(
        &emu,
        &endpoint,
        &[("Metadata", "true"), ("Authorization", &authorization)],
    )
    .await;
    assert_eq!(response.status, 200, "{:#}", response.json());
    assert_token_for(&response.json(), SAMI_CLIENT, SAMI_OBJECT, ARM);
    assert!(!path.exists(), "a used challenge file is removed");
    // Each secret is good once; a wrong one is refused.
    for authorization in [authorization.as_str(), "Basic wrong"] {
        let response = get(
            &emu,
            &endpoint,
            &[("Metadata", "true"), ("Authorization", authorization)],
        )
        .await;
        assert_eq!(response.status, 401);
        assert!(response.header("www-authenticate").is_none());
    }
    // No Metadata header; a user-assigned identity.
    assert_eq!(get(&emu, &endpoint, &[]).await.status, 400);
    let challenge = get(&emu, &endpoint, &[("Metadata", "true")]).await;
    let path = challenge
        .header("www-authenticate")
        .unwrap()
        .strip_prefix("Basic realm=")
        .unwrap()
        .to_owned();
    let authorization = format!("Basic {}", std::fs::read_to_string(&path).unwrap());
    let response = get(
        &emu,
        &url(
            &env["IDENTITY_ENDPOINT"],
            &[
                ("api-version", "2020-06-01"),
                ("resource", ARM),
                ("client_id", UAMI_CLIENT),
            ],
        ),
        &[("Metadata", "true"), ("Authorization", &authorization)],
    )
    .await;
    assert_eq!(response.status, 400);
    std::fs::remove_dir_all(&directory).unwrap();
}

#[tokio::test]
async fn azure_arc_default_endpoint_by_host() {
    let emu = emulator().await;
    // Not in the resolver map (a loopback override would capture other loopback endpoints).
    assert_eq!(emu.resolve("127.0.0.1", 40342), None);
    // The IMDS listener serves Azure Arc for the agent's default Host.
    let mut tcp = tokio::net::TcpStream::connect(emu.imds_addr())
        .await
        .unwrap();
    tcp.write_all(
        b"GET /metadata/identity/oauth2/token?api-version=2020-06-01&resource=https%3A%2F%2Fmanagement.azure.com HTTP/1.1\r\n\
          Host: 127.0.0.1:40342\r\nMetadata: true\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer
        .to_ascii_lowercase()
        .contains("www-authenticate: basic realm="));
    let entry = emu.log().last().unwrap();
    assert_eq!(entry.route, Route::AzureArc);
    assert_eq!(entry.host, "127.0.0.1");
    // The emulator's own directory is removed when it stops.
    let directory = emu.azure_arc_token_directory().to_path_buf();
    assert!(directory.exists());
    drop(emu);
    assert!(!directory.exists());
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fic-emulator-test-arc-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---------------------------------------------------------------------------------------------
// Service Fabric

/// Accepts the server certificate whose SHA-1 is the pin (upper-case hex), nothing else.
#[derive(Debug)]
struct Pinned {
    thumbprint: String,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use sha1::Digest as _;
        use std::fmt::Write as _;
        let hex = sha1::Sha1::digest(end_entity.as_ref())
            .iter()
            .fold(String::new(), |mut s, b| {
                let _ = write!(s, "{b:02X}");
                s
            });
        if hex == self.thumbprint {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the pinned certificate".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// GET `target` (path and query) on the Service Fabric listener, pinning `thumbprint`.
async fn service_fabric_get(
    emu: &EmulatorHandle,
    thumbprint: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, Value), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Pinned {
        thumbprint: thumbprint.to_owned(),
        algorithms: provider.signature_verification_algorithms,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let addr = emu.resolve("10.0.0.4", 2377).unwrap();
    assert_eq!(addr, emu.service_fabric_addr());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("10.0.0.4").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut request =
        format!("GET {target} HTTP/1.1\r\nHost: 10.0.0.4:2377\r\nConnection: close\r\n");
    for (name, value) in headers {
        let _ = write!(request, "{name}: {value}\r\n");
    }
    request.push_str("\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u16>()
        .unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

#[tokio::test]
async fn service_fabric() {
    let emu = emulator().await;
    let env = emu.managed_identity_environment(ManagedIdentitySource::ServiceFabric);
    assert_eq!(
        env["IDENTITY_ENDPOINT"],
        "https://10.0.0.4:2377/metadata/identity/oauth2/token"
    );
    let thumbprint = env["IDENTITY_SERVER_THUMBPRINT"].clone();
    assert_eq!(thumbprint.len(), 40);
    assert_eq!(thumbprint, thumbprint.to_ascii_uppercase());
    let secret = env["IDENTITY_HEADER"].clone();
    let target = |extra: &str| {
        format!(
            "/metadata/identity/oauth2/token?api-version=2020-05-01&resource=https%3A%2F%2Fmanagement.azure.com{extra}"
        )
    };
    let (status, body) = service_fabric_get(&emu, &thumbprint, &target(""), &[("secret", &secret)])
        .await
        .unwrap();
    assert_eq!(status, 200, "{body:#}");
    assert!(body["expires_on"].is_u64());
    assert_eq!(body["token_type"], "Bearer");
    assert_token_for(&body, SAMI_CLIENT, SAMI_OBJECT, ARM);
    let entry = emu.log().last().unwrap();
    assert_eq!(entry.listener, Listener::ServiceFabric);
    assert_eq!(entry.route, Route::ServiceFabric);
    assert_eq!(entry.header("secret"), Some(secret.as_str()));

    let (status, body) = service_fabric_get(
        &emu,
        &thumbprint,
        &target(&format!("&principalId={UAMI_OBJECT}")),
        &[("secret", &secret)],
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body:#}");
    assert_token_for(&body, UAMI_CLIENT, UAMI_OBJECT, ARM);

    // Refusals, Service Fabric shaped.
    for (extra, headers, status, code) in [
        ("", vec![], 401, "SecretHeaderNotFound"),
        ("", vec![("secret", "wrong")], 401, "SecretHeaderMismatch"),
        (
            "&client_id=5a3b6c7d-0000-4000-8000-00000000b001",
            vec![("secret", secret.as_str())],
            400,
            "invalid_request",
        ),
    ] {
        let (got, body) = service_fabric_get(&emu, &thumbprint, &target(extra), &headers)
            .await
            .unwrap();
        assert_eq!(got, status, "{body:#}");
        assert_eq!(body["error"]["code"], code);
        assert!(body["error"]["correlationId"].is_string());
    }
    // Another pin fails the handshake.
    assert!(service_fabric_get(
        &emu,
        "0000000000000000000000000000000000000000",
        &target(""),
        &[("secret", &secret)]
    )
    .await
    .is_err());
}

// ---------------------------------------------------------------------------------------------
// api-versions: only the ones the real endpoints answer

#[tokio::test]
async fn imds_v1_and_azure_arc_refuse_api_versions_they_do_not_serve() {
    let emu = emulator().await;
    let imds =
        |version: &'static str| url(IMDS_TOKEN, &[("api-version", version), ("resource", ARM)]);
    // IMDS: 2018-02-01 and later IMDS versions.
    for version in ["2018-02-01", "2019-08-01", "2021-02-01"] {
        let response = get(&emu, &imds(version), &[("Metadata", "true")]).await;
        assert_eq!(response.status, 200, "{version}: {:#}", response.json());
        assert_token_for(&response.json(), SAMI_CLIENT, SAMI_OBJECT, ARM);
    }
    // Well-formed, but older than the identity endpoint, or no IMDS version at all.
    for version in ["2017-09-01", "2018-02-02", "2099-12-31", "latest"] {
        let response = get(&emu, &imds(version), &[("Metadata", "true")]).await;
        assert_eq!(response.status, 400, "{version}");
        assert_eq!(response.header("server"), Some("IMDS/150.870.65.1854"));
        assert_eq!(
            response.json(),
            json!({
                "error": "invalid_request",
                "error_description": format!(
                    "The api-version '{version}' is not supported; use 2018-02-01 or a later version."
                ),
            })
        );
    }
    assert_eq!(
        emu.log()
            .count(|r| r.route == Route::Imds && r.status == Some(400)),
        4
    );

    // Azure Arc: 2019-11-01 and 2020-06-01; the version is checked once the challenge is met.
    let env = emu.managed_identity_environment(ManagedIdentitySource::AzureArc);
    let arc = |version: &str| {
        url(
            &env["IDENTITY_ENDPOINT"],
            &[("api-version", version), ("resource", ARM)],
        )
    };
    let authorization = |response: &HttpResponse| {
        let path = response
            .header("www-authenticate")
            .unwrap()
            .strip_prefix("Basic realm=")
            .unwrap()
            .to_owned();
        format!("Basic {}", std::fs::read_to_string(path).unwrap())
    };
    for (version, status) in [
        ("2020-06-01", 200),
        ("2019-11-01", 200),
        ("2018-02-01", 400),
        ("2021-02-01", 400),
    ] {
        let challenge = get(&emu, &arc(version), &[("Metadata", "true")]).await;
        assert_eq!(challenge.status, 401, "{version}");
        let response = get(
            &emu,
            &arc(version),
            &[
                ("Metadata", "true"),
                ("Authorization", &authorization(&challenge)),
            ],
        )
        .await;
        assert_eq!(response.status, status, "{version}: {:#}", response.json());
        if status == 200 {
            assert_token_for(&response.json(), SAMI_CLIENT, SAMI_OBJECT, ARM);
        } else {
            assert_eq!(
                response.json(),
                json!({
                    "error": "invalid_request",
                    "error_description": format!(
                        "The api-version '{version}' is not supported; use 2019-11-01 or 2020-06-01."
                    ),
                })
            );
        }
    }
}
