//! Checking an IMDSv2 certificate signing request (PKCS#10, RFC 2986) before a certificate is
//! issued for it, the way IMDS does:
//!
//! * it is one DER `CertificationRequest` of version 0, nothing after it;
//! * the key is RSA (`rsaEncryption`), 2048 to 8192 bits;
//! * the signature algorithm is RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt, and
//!   the signature over the DER `CertificationRequestInfo` verifies with the request's own key;
//! * the subject is exactly `CN=<clientId>, DC=<tenantId>` of the identity asked for (one of
//!   each, in any order, compared ASCII case-insensitively);
//! * the attribute `1.3.6.1.4.1.311.90.2.10` holds one UTF8String with a JSON object whose
//!   `vmId` is this VM's id (and whose `vmssId`, when present, is this VM's scale set id).
//!
//! x509-parser keeps only the header of an attribute it does not know, so the attributes are
//! read from the raw `CertificationRequestInfo` with [`der`](crate::der).

use ring::signature::{UnparsedPublicKey, RSA_PSS_2048_8192_SHA256};
use serde_json::Value;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::der_parser::oid::Oid;
use x509_parser::prelude::FromDer as _;
use x509_parser::signature_algorithm::RsaSsaPssParams;

use crate::der;

/// The Microsoft attribute carrying the compute unit id (`cuId`) JSON.
pub(crate) const CUID_ATTRIBUTE: &str = "1.3.6.1.4.1.311.90.2.10";
/// Its DER contents (the bytes after the OID tag and length).
const CUID_ATTRIBUTE_DER: [u8; 10] = [0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x5a, 0x02, 0x0a];
const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const RSASSA_PSS: &str = "1.2.840.113549.1.1.10";
const MGF1: &str = "1.2.840.113549.1.1.8";
const SHA256: &str = "2.16.840.1.101.3.4.2.1";
const COMMON_NAME: &str = "2.5.4.3";
const DOMAIN_COMPONENT: &str = "0.9.2342.19200300.100.1.25";

/// What the request must name.
#[allow(clippy::struct_field_names)]
pub(crate) struct Expected<'a> {
    pub(crate) client_id: &'a str,
    pub(crate) tenant_id: &'a str,
    pub(crate) vm_id: &'a str,
    pub(crate) vmss_id: Option<&'a str>,
}

/// The key of a request that passed every check.
#[derive(Debug)]
pub(crate) struct CsrKey {
    /// The DER `SubjectPublicKeyInfo`.
    pub(crate) spki: Vec<u8>,
    /// The DER `RSAPublicKey` inside it.
    pub(crate) rsa_public_key: Vec<u8>,
}

fn is(oid: &Oid<'_>, dotted: &str) -> bool {
    oid.to_id_string() == dotted
}

/// Checks `der` against `expected`; the error says what is wrong, for the 400 answer.
pub(crate) fn verify(der_bytes: &[u8], expected: &Expected<'_>) -> Result<CsrKey, String> {
    let (rest, csr) = X509CertificationRequest::from_der(der_bytes)
        .map_err(|e| format!("the CSR is not a DER PKCS#10 certification request ({e})"))?;
    if !rest.is_empty() {
        return Err("the CSR has trailing bytes after the certification request".to_owned());
    }
    let info = &csr.certification_request_info;
    if info.version.0 != 0 {
        return Err(format!("the CSR version is {}, not 0 (v1)", info.version.0));
    }

    // The key.
    let spki = &info.subject_pki;
    if !is(&spki.algorithm.algorithm, RSA_ENCRYPTION) {
        return Err(format!(
            "the CSR key is not an RSA key (algorithm {})",
            spki.algorithm.algorithm
        ));
    }
    let rsa_public_key = spki.subject_public_key.data.to_vec();

    // The signature: RSASSA-PSS, SHA-256, MGF1-SHA-256, salt 32, by the request's own key.
    let algorithm = &csr.signature_algorithm;
    if !is(&algorithm.algorithm, RSASSA_PSS) {
        return Err(format!(
            "the CSR is not signed with RSASSA-PSS (algorithm {})",
            algorithm.algorithm
        ));
    }
    let params = algorithm
        .parameters
        .as_ref()
        .ok_or("the RSASSA-PSS signature algorithm has no parameters")?;
    let params = RsaSsaPssParams::try_from(params)
        .map_err(|e| format!("the RSASSA-PSS parameters do not parse ({e})"))?;
    if !is(params.hash_algorithm_oid(), SHA256) {
        return Err(format!(
            "the RSASSA-PSS hash is {}, not SHA-256",
            params.hash_algorithm_oid()
        ));
    }
    let mask = params
        .mask_gen_algorithm()
        .map_err(|e| format!("the RSASSA-PSS mask generation function does not parse ({e})"))?;
    if !is(&mask.mgf, MGF1) || !is(&mask.hash, SHA256) {
        return Err("the RSASSA-PSS mask generation function is not MGF1 with SHA-256".to_owned());
    }
    if params.salt_length() != 32 {
        return Err(format!(
            "the RSASSA-PSS salt length is {}, not 32",
            params.salt_length()
        ));
    }
    UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, &rsa_public_key)
        .verify(info.raw, &csr.signature_value.data)
        .map_err(|_| {
            "the CSR signature does not verify with the CSR's own key (RSASSA-PSS, SHA-256, 2048 to 8192 bits)"
                .to_owned()
        })?;

    // The subject: exactly CN=<client id> and DC=<tenant id>.
    let mut common_names = Vec::new();
    let mut domain_components = Vec::new();
    let mut others = Vec::new();
    for rdn in info.subject.iter_rdn() {
        for attribute in rdn.iter() {
            let value = attribute.as_str().unwrap_or_default().to_owned();
            if is(attribute.attr_type(), COMMON_NAME) {
                common_names.push(value);
            } else if is(attribute.attr_type(), DOMAIN_COMPONENT) {
                domain_components.push(value);
            } else {
                others.push(attribute.attr_type().to_id_string());
            }
        }
    }
    let subject_ok = others.is_empty()
        && matches!(common_names.as_slice(), [cn] if cn.eq_ignore_ascii_case(expected.client_id))
        && matches!(domain_components.as_slice(), [dc] if dc.eq_ignore_ascii_case(expected.tenant_id));
    if !subject_ok {
        return Err(format!(
            "the CSR subject is '{}'; it must be 'CN={}, DC={}' (the identity's client id and tenant id)",
            info.subject, expected.client_id, expected.tenant_id
        ));
    }

    // The compute unit id attribute.
    let cuid = cuid_attribute(info.raw)?;
    let cuid: Value =
        serde_json::from_str(&cuid).map_err(|_| "the cuId attribute is not JSON".to_owned())?;
    let Some(cuid) = cuid.as_object() else {
        return Err("the cuId attribute is not a JSON object".to_owned());
    };
    match cuid.get("vmId").and_then(Value::as_str) {
        Some(vm_id) if vm_id.eq_ignore_ascii_case(expected.vm_id) => {}
        Some(vm_id) => {
            return Err(format!(
                "the cuId vmId '{vm_id}' is not this VM's id '{}'",
                expected.vm_id
            ))
        }
        None => return Err("the cuId attribute has no vmId".to_owned()),
    }
    if let Some(vmss_id) = cuid.get("vmssId") {
        let matches = vmss_id
            .as_str()
            .zip(expected.vmss_id)
            .is_some_and(|(got, want)| got.eq_ignore_ascii_case(want));
        if !matches {
            return Err(format!(
                "the cuId vmssId {vmss_id} is not this VM's scale set id ({})",
                expected.vmss_id.unwrap_or("none")
            ));
        }
    }
    Ok(CsrKey {
        spki: spki.raw.to_vec(),
        rsa_public_key,
    })
}

/// The UTF8String value of the cuId attribute, read from the DER `CertificationRequestInfo`:
/// `SEQUENCE { version, subject, subjectPKInfo, [0] { Attribute… } }`, each
/// `Attribute ::= SEQUENCE { type OID, values SET { … } }`.
fn cuid_attribute(info: &[u8]) -> Result<String, String> {
    let malformed = |what: &str| format!("the CSR request info is malformed: {what}");
    let (sequence, _) = der::read(info).map_err(|e| malformed(&e))?;
    if sequence.tag != der::SEQUENCE {
        return Err(malformed("not a SEQUENCE"));
    }
    let mut fields = sequence.contents;
    for name in ["version", "subject", "subjectPKInfo"] {
        let (_, rest) = der::read(fields).map_err(|e| malformed(&format!("{name}: {e}")))?;
        fields = rest;
    }
    let missing = || format!("the CSR has no attribute {CUID_ATTRIBUTE}");
    if fields.is_empty() {
        return Err(missing());
    }
    let (attributes, rest) = der::read(fields).map_err(|e| malformed(&e))?;
    if attributes.tag != der::context_constructed(0) || !rest.is_empty() {
        return Err(malformed("the attributes are not [0] at the end"));
    }
    let mut remaining = attributes.contents;
    while !remaining.is_empty() {
        let (attribute, rest) = der::read(remaining).map_err(|e| malformed(&e))?;
        remaining = rest;
        if attribute.tag != der::SEQUENCE {
            return Err(malformed("an attribute is not a SEQUENCE"));
        }
        let (kind, values) = der::read(attribute.contents).map_err(|e| malformed(&e))?;
        if kind.tag != der::OID || kind.contents != CUID_ATTRIBUTE_DER {
            continue;
        }
        let (set, after) = der::read(values).map_err(|e| malformed(&e))?;
        if set.tag != der::SET || !after.is_empty() {
            return Err(malformed("the cuId attribute values are not one SET"));
        }
        let (value, more) = der::read(set.contents).map_err(|e| malformed(&e))?;
        if !more.is_empty() {
            return Err("the cuId attribute has more than one value".to_owned());
        }
        if value.tag != der::UTF8_STRING {
            return Err(format!(
                "the cuId attribute value is not a UTF8String (tag 0x{:02x})",
                value.tag
            ));
        }
        return String::from_utf8(value.contents.to_vec())
            .map_err(|_| "the cuId attribute value is not UTF-8".to_owned());
    }
    Err(missing())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cuid_oid_encodes_as_expected() {
        let oid = Oid::from(&[1, 3, 6, 1, 4, 1, 311, 90, 2, 10]).unwrap();
        assert_eq!(oid.as_bytes(), CUID_ATTRIBUTE_DER);
        assert!(is(&oid, CUID_ATTRIBUTE));
    }

    #[test]
    fn garbage_is_refused() {
        let expected = Expected {
            client_id: "c",
            tenant_id: "t",
            vm_id: "v",
            vmss_id: None,
        };
        assert!(verify(b"\x30\x03\x02\x01\x00", &expected).is_err());
        assert!(verify(b"not der", &expected).is_err());
    }
}
