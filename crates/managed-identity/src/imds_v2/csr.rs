//! The IMDSv2 certificate signing request (PKCS#10, RFC 2986), built by hand: rcgen has no
//! RSASSA-PSS.
//!
//! ```text
//! CertificationRequest ::= SEQUENCE {
//!   certificationRequestInfo SEQUENCE {
//!     version       INTEGER 0,
//!     subject       Name: [DC=<tenantId>], [CN=<clientId>]   (shown as "CN=<clientId>, DC=<tenantId>")
//!     subjectPKInfo rsaEncryption (NULL), RSAPublicKey of the 2048-bit key
//!     attributes    [0] { SEQUENCE { 1.3.6.1.4.1.311.90.2.10, SET { UTF8String <cuId JSON> } } }
//!   }
//!   signatureAlgorithm RSASSA-PSS { [0] sha256, [1] mgf1(sha256), [2] 32 }
//!   signature          BIT STRING
//! }
//! ```

use fic_oauth_core::{Error, ErrorCode, SignatureAlgorithm, SigningKey};

use super::der;

/// rsaEncryption.
const RSA_ENCRYPTION: [u64; 7] = [1, 2, 840, 113_549, 1, 1, 1];
/// RSASSA-PSS.
const RSASSA_PSS: [u64; 7] = [1, 2, 840, 113_549, 1, 1, 10];
/// MGF1.
const MGF1: [u64; 7] = [1, 2, 840, 113_549, 1, 1, 8];
/// SHA-256.
const SHA256: [u64; 9] = [2, 16, 840, 1, 101, 3, 4, 2, 1];
/// commonName.
const COMMON_NAME: [u64; 4] = [2, 5, 4, 3];
/// domainComponent.
const DOMAIN_COMPONENT: [u64; 7] = [0, 9, 2342, 19_200_300, 100, 1, 25];
/// The Microsoft attribute carrying the compute unit id (`cuId`) JSON.
pub(crate) const CUID_ATTRIBUTE_OID: [u64; 10] = [1, 3, 6, 1, 4, 1, 311, 90, 2, 10];
/// The PSS salt length.
pub(crate) const PSS_SALT_LENGTH: u8 = 32;

/// The `cuId` JSON of the CSR attribute: `{"vmId":…}`, `{"vmssId":…}` or both, in that order.
pub(crate) fn cuid_json(vm_id: Option<&str>, vmss_id: Option<&str>) -> String {
    let mut fields = Vec::with_capacity(2);
    if let Some(vm_id) = vm_id.filter(|v| !v.is_empty()) {
        fields.push(format!("\"vmId\":{}", serde_json::Value::from(vm_id)));
    }
    if let Some(vmss_id) = vmss_id.filter(|v| !v.is_empty()) {
        fields.push(format!("\"vmssId\":{}", serde_json::Value::from(vmss_id)));
    }
    format!("{{{}}}", fields.join(","))
}

fn attribute_value(oid: &[u64], value: &str, ascii_tag: u8) -> Vec<u8> {
    let tag = if value.is_ascii() {
        ascii_tag
    } else {
        der::UTF8_STRING
    };
    der::constructed(
        der::SET,
        &[&der::constructed(
            der::SEQUENCE,
            &[&der::oid(oid), &der::tlv(tag, value.as_bytes())],
        )],
    )
}

/// The subject `CN=<clientId>, DC=<tenantId>`: in DER the DC RDN comes first (as .NET's
/// `X500DistinguishedName` writes that string).
pub(crate) fn subject(client_id: &str, tenant_id: &str) -> Vec<u8> {
    der::constructed(
        der::SEQUENCE,
        &[
            &attribute_value(&DOMAIN_COMPONENT, tenant_id, der::IA5_STRING),
            &attribute_value(&COMMON_NAME, client_id, der::UTF8_STRING),
        ],
    )
}

/// SubjectPublicKeyInfo of an RSA key from its DER `RSAPublicKey`.
pub(crate) fn rsa_spki(rsa_public_key: &[u8]) -> Vec<u8> {
    der::constructed(
        der::SEQUENCE,
        &[
            &der::constructed(
                der::SEQUENCE,
                &[&der::oid(&RSA_ENCRYPTION), &der::tlv(der::NULL, &[])],
            ),
            &der::bit_string(rsa_public_key),
        ],
    )
}

/// AlgorithmIdentifier of RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt.
pub(crate) fn pss_sha256_algorithm() -> Vec<u8> {
    let sha256 = der::constructed(der::SEQUENCE, &[&der::oid(&SHA256)]);
    let mgf1 = der::constructed(der::SEQUENCE, &[&der::oid(&MGF1), &sha256]);
    let params = der::constructed(
        der::SEQUENCE,
        &[
            &der::tlv(der::context(0), &sha256),
            &der::tlv(der::context(1), &mgf1),
            &der::tlv(der::context(2), &der::small_integer(PSS_SALT_LENGTH)),
        ],
    );
    der::constructed(der::SEQUENCE, &[&der::oid(&RSASSA_PSS), &params])
}

/// The DER CSR, signed by `key` (RSASSA-PSS, SHA-256, salt 32) over the request info.
pub(crate) fn build(
    key: &dyn SigningKey,
    rsa_public_key: &[u8],
    client_id: &str,
    tenant_id: &str,
    cuid_json: &str,
) -> Result<Vec<u8>, Error> {
    if client_id.is_empty() || tenant_id.is_empty() {
        return Err(Error::new(
            ErrorCode::INVALID_ARGUMENT,
            "the CSR needs a client id and a tenant id",
        ));
    }
    let attribute = der::constructed(
        der::SEQUENCE,
        &[
            &der::oid(&CUID_ATTRIBUTE_OID),
            &der::constructed(
                der::SET,
                &[&der::tlv(der::UTF8_STRING, cuid_json.as_bytes())],
            ),
        ],
    );
    let info = der::constructed(
        der::SEQUENCE,
        &[
            &der::small_integer(0),
            &subject(client_id, tenant_id),
            &rsa_spki(rsa_public_key),
            &der::tlv(der::context(0), &attribute),
        ],
    );
    let signature = key.sign(SignatureAlgorithm::RsaPssSha256, &info)?;
    Ok(der::constructed(
        der::SEQUENCE,
        &[&info, &pss_sha256_algorithm(), &der::bit_string(&signature)],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuid_json_shapes() {
        assert_eq!(cuid_json(Some("vm"), None), r#"{"vmId":"vm"}"#);
        assert_eq!(
            cuid_json(Some("vm"), Some("ss")),
            r#"{"vmId":"vm","vmssId":"ss"}"#
        );
        assert_eq!(cuid_json(None, Some("ss")), r#"{"vmssId":"ss"}"#);
        assert_eq!(cuid_json(Some("a\"b"), Some("")), r#"{"vmId":"a\"b"}"#);
    }
}
