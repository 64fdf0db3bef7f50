//! Loading certificates and keys: PEM, DER, PKCS#12, files, and every error code.
// clippy.toml allows unwrap only inside #[test] functions; the helpers here are test code too.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::{certificate_public_key, data, data_path, verify, TempDir, PFX_PASSWORD};
use fic_assertion::{codes, load, CertificateChain, ClientIdentity, SoftwareKey};
use fic_oauth_core::thumbprint::x5t_s256;
use fic_oauth_core::{ErrorCode, KeyKind, SignatureAlgorithm, SigningKey};
use p12_keystore::{
    Certificate as P12Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm,
    PrivateKey as P12PrivateKey, PrivateKeyChain,
};
use ring::signature as verification;
use serde::Deserialize;

fn ca_der() -> Vec<u8> {
    CertificateChain::from_pem(&data("ca.crt.pem"))
        .unwrap()
        .leaf_der()
        .to_vec()
}

fn ec_certificate_der() -> Vec<u8> {
    CertificateChain::from_pem(&data("ec-p256.crt.pem"))
        .unwrap()
        .leaf_der()
        .to_vec()
}

/// The identity is the committed RSA client: its chain and a key that signs for the leaf.
fn assert_rsa_client(identity: &ClientIdentity, chain_len: usize) {
    let leaf = data("rsa.crt.der");
    assert_eq!(identity.leaf_der(), leaf.as_slice());
    assert_eq!(identity.thumbprint_s256(), x5t_s256(&leaf));
    assert_eq!(identity.chain_der().len(), chain_len);
    if chain_len > 1 {
        assert_eq!(identity.chain_der()[1], ca_der());
    }
    assert_eq!(identity.key().kind(), KeyKind::Rsa { bits: 2048 });
    assert_signs_for_leaf(identity);
}

fn assert_signs_for_leaf(identity: &ClientIdentity) {
    let public_key = certificate_public_key(identity.leaf_der());
    let message = b"proof that the key belongs to the leaf";
    let (algorithm, verification): (_, &'static dyn verification::VerificationAlgorithm) =
        match identity.key().kind() {
            KeyKind::Rsa { .. } => (
                SignatureAlgorithm::RsaPssSha256,
                &verification::RSA_PSS_2048_8192_SHA256,
            ),
            KeyKind::EcP256 => (
                SignatureAlgorithm::EcdsaP256Sha256,
                &verification::ECDSA_P256_SHA256_ASN1,
            ),
            KeyKind::EcP384 => (
                SignatureAlgorithm::EcdsaP384Sha384,
                &verification::ECDSA_P384_SHA384_ASN1,
            ),
            other => panic!("unexpected {other:?}"),
        };
    let signature = identity.key().sign(algorithm, message).unwrap();
    assert!(verify(verification, &public_key, message, &signature));
}

#[derive(Deserialize)]
struct ThumbprintVector {
    certificate_der_base64: String,
    #[serde(rename = "x5t#S256")]
    x5t_s256: String,
    x5t: String,
}

#[test]
fn thumbprint_vector_through_the_loading_path() {
    let vector: ThumbprintVector =
        serde_json::from_slice(&data("certificate_thumbprints.json")).unwrap();
    let der = STANDARD.decode(&vector.certificate_der_base64).unwrap();

    let chain = CertificateChain::from_der(&der).unwrap();
    assert_eq!(chain.len(), 1);
    assert_eq!(chain.thumbprint_s256(), vector.x5t_s256);
    assert_eq!(chain.thumbprint_sha1(), vector.x5t);
    assert_eq!(chain.x5c(), vec![vector.certificate_der_base64.clone()]);

    // The same certificate as PEM.
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        vector.certificate_der_base64
    );
    let from_pem = CertificateChain::from_pem(pem.as_bytes()).unwrap();
    assert_eq!(from_pem, chain);

    // It has no private key, so it is no identity.
    let err = load::from_der(&der, &[]).unwrap_err();
    assert_eq!(err.code(), &codes::NO_PRIVATE_KEY);
    assert!(err.message().contains(&vector.x5t_s256), "{err}");
    let err = load::from_pem(pem.as_bytes()).unwrap_err();
    assert_eq!(err.code(), &codes::NO_PRIVATE_KEY);
    let err = load::from_pem_parts(pem.as_bytes(), pem.as_bytes()).unwrap_err();
    assert_eq!(err.code(), &codes::NO_PRIVATE_KEY);
    // ... and no other key is its key.
    let err = chain
        .with_key(SoftwareKey::from_pem(&data("rsa.key.pem")).unwrap())
        .unwrap_err();
    assert_eq!(err.code(), &codes::KEY_CERTIFICATE_MISMATCH);
}

#[test]
fn pem_with_chain_and_key_in_one_input() {
    let identity = load::from_pem(&data("rsa.chain-and-key.pem")).unwrap();
    assert_rsa_client(&identity, 2);
}

#[test]
fn pem_in_any_order_gives_the_leaf_first() {
    let scrambled = [data("rsa.key.pem"), data("ca.crt.pem"), data("rsa.crt.pem")].concat();
    assert_rsa_client(&load::from_pem(&scrambled).unwrap(), 2);
    let parts = load::from_pem_parts(
        &[data("ca.crt.pem"), data("rsa.crt.pem")].concat(),
        &data("rsa.pkcs1.pem"),
    )
    .unwrap();
    assert_rsa_client(&parts, 2);
}

#[test]
fn pem_certificate_and_separate_keys_in_every_format() {
    for key in ["rsa.key.pem", "rsa.pkcs1.pem"] {
        let identity = load::from_pem_parts(&data("rsa.crt.pem"), &data(key)).unwrap();
        assert_rsa_client(&identity, 1);
    }
    let ec = load::from_pem_parts(&data("ec-p256.crt.pem"), &data("ec-p256.sec1.pem")).unwrap();
    assert_eq!(ec.key().kind(), KeyKind::EcP256);
    assert_signs_for_leaf(&ec);
    // A combined SEC1 PEM works as well.
    let combined = [data("ec-p256.sec1.pem"), data("ec-p256.crt.pem")].concat();
    assert_signs_for_leaf(&load::from_pem(&combined).unwrap());
}

#[test]
fn der_certificate_and_keys_in_every_format() {
    for key in ["rsa.key.der", "rsa.pkcs1.der"] {
        let identity = load::from_der(&data("rsa.crt.der"), &data(key)).unwrap();
        assert_rsa_client(&identity, 1);
    }
    // Concatenated DER certificates form a chain.
    let chain = [ca_der(), data("rsa.crt.der")].concat();
    assert_rsa_client(&load::from_der(&chain, &data("rsa.key.der")).unwrap(), 2);
    let ec = load::from_der(&ec_certificate_der(), &data("ec-p256.sec1.der")).unwrap();
    assert_signs_for_leaf(&ec);
}

#[test]
fn pkcs1_is_wrapped_into_the_same_pkcs8_as_openssl_writes() {
    let from_pkcs1 = SoftwareKey::from_der(&data("rsa.pkcs1.der")).unwrap();
    assert_eq!(
        from_pkcs1.expose_pkcs8_der(),
        data("rsa.key.der").as_slice()
    );
    let again = SoftwareKey::from_pkcs8_der(from_pkcs1.expose_pkcs8_der()).unwrap();
    assert_eq!(again.public_key_bytes(), from_pkcs1.public_key_bytes());
    assert_eq!(
        from_pkcs1.public_key_bytes(),
        certificate_public_key(&data("rsa.crt.der")).as_slice()
    );
}

#[test]
fn files() {
    assert_rsa_client(
        &load::from_pem_file(data_path("rsa.chain-and-key.pem")).unwrap(),
        2,
    );
    assert_rsa_client(
        &load::from_pem_files(data_path("rsa.crt.pem"), data_path("rsa.pkcs1.pem")).unwrap(),
        1,
    );
    assert_rsa_client(
        &load::from_der_files(data_path("rsa.crt.der"), data_path("rsa.key.der")).unwrap(),
        1,
    );
    assert_rsa_client(
        &load::from_pkcs12_file(data_path("rsa.chain.pfx"), PFX_PASSWORD).unwrap(),
        2,
    );
    let chain = CertificateChain::from_der_file(data_path("rsa.crt.der")).unwrap();
    assert_eq!(
        chain,
        CertificateChain::from_pem_file(data_path("rsa.crt.pem")).unwrap()
    );
    let key = SoftwareKey::from_der_file(data_path("ec-p256.sec1.der")).unwrap();
    assert_eq!(
        key.public_key_bytes(),
        SoftwareKey::from_pem_file(data_path("ec-p256.sec1.pem"))
            .unwrap()
            .public_key_bytes()
    );

    let missing = TempDir::new("missing");
    let nowhere = missing.path().join("nowhere.pem");
    for err in [
        load::from_pem_file(&nowhere).unwrap_err(),
        load::from_pem_files(&nowhere, data_path("rsa.key.pem")).unwrap_err(),
        load::from_pem_files(data_path("rsa.crt.pem"), &nowhere).unwrap_err(),
        load::from_der_files(&nowhere, &nowhere).unwrap_err(),
        load::from_pkcs12_file(&nowhere, PFX_PASSWORD).unwrap_err(),
        CertificateChain::from_pem_file(&nowhere).unwrap_err(),
        SoftwareKey::from_pem_file(&nowhere).unwrap_err(),
    ] {
        assert_eq!(err.code(), &codes::INVALID_CERTIFICATE);
        assert!(err.message().contains("nowhere.pem"), "{err}");
    }
}

#[test]
fn pkcs12_from_openssl_modern_and_legacy() {
    for file in ["rsa.chain.pfx", "rsa.chain.legacy.pfx"] {
        let identity = load::from_pkcs12(&data(file), PFX_PASSWORD).unwrap();
        assert_rsa_client(&identity, 2);

        let err = load::from_pkcs12(&data(file), "wrong password").unwrap_err();
        assert_eq!(err.code(), &codes::INVALID_PKCS12_PASSWORD, "{file}");
        assert!(!err.message().contains("wrong password"));
    }
    let err = load::from_pkcs12(&data("rsa.certonly.pfx"), PFX_PASSWORD).unwrap_err();
    assert_eq!(err.code(), &codes::NO_PRIVATE_KEY);
    assert!(err.message().contains(&x5t_s256(&data("rsa.crt.der"))));
}

fn rcgen_pfx(
    password: &str,
    encryption: EncryptionAlgorithm,
    mac: MacAlgorithm,
) -> (Vec<u8>, Vec<u8>) {
    let generated = rcgen::generate_simple_self_signed(vec!["pfx.example".to_owned()]).unwrap();
    let certificate = P12Certificate::from_der(generated.cert.der()).unwrap();
    let key = P12PrivateKey::from_der(&generated.signing_key.serialize_der()).unwrap();
    let mut store = KeyStore::new();
    store.add_entry(
        "client",
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(
            b"key-1".as_slice(),
            key,
            [certificate],
        )),
    );
    let pfx = store
        .writer(password)
        .encryption_algorithm(encryption)
        .mac_algorithm(mac)
        .encryption_iterations(1_000)
        .mac_iterations(1_000)
        .write()
        .unwrap();
    (pfx, generated.cert.der().to_vec())
}

#[test]
fn pkcs12_of_an_rcgen_certificate() {
    let cases = [
        (
            EncryptionAlgorithm::PbeWithHmacSha256AndAes256,
            MacAlgorithm::HmacSha256,
        ),
        (
            EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc,
            MacAlgorithm::HmacSha1,
        ),
    ];
    for (encryption, mac) in cases {
        let (pfx, certificate) = rcgen_pfx("s3cret", encryption, mac);
        let identity = load::from_pkcs12(&pfx, "s3cret").unwrap();
        assert_eq!(identity.leaf_der(), certificate.as_slice());
        assert_eq!(identity.thumbprint_s256(), x5t_s256(&certificate));
        assert_eq!(identity.key().kind(), KeyKind::EcP256);
        assert_signs_for_leaf(&identity);

        let err = load::from_pkcs12(&pfx, "S3cret").unwrap_err();
        assert_eq!(err.code(), &codes::INVALID_PKCS12_PASSWORD);
    }
}

#[test]
fn key_certificate_mismatch_in_every_loader() {
    // Another RSA-2048 key (the CA's).
    let errors = [
        load::from_pem_parts(&data("rsa.crt.pem"), &data("ca.key.pem")).unwrap_err(),
        load::from_pem(&[data("rsa.crt.pem"), data("ca.key.pem")].concat()).unwrap_err(),
        load::from_der(
            &data("rsa.crt.der"),
            SoftwareKey::from_pem(&data("ca.key.pem"))
                .unwrap()
                .expose_pkcs8_der(),
        )
        .unwrap_err(),
        // A key of another type.
        load::from_pem_parts(&data("rsa.crt.pem"), &data("ec-p256.sec1.pem")).unwrap_err(),
        load::from_pem_parts(&data("ec-p256.crt.pem"), &data("rsa.key.pem")).unwrap_err(),
        CertificateChain::from_pem(&data("rsa.crt.pem"))
            .unwrap()
            .with_key(SoftwareKey::from_pem(&data("ca.key.pem")).unwrap())
            .unwrap_err(),
    ];
    for err in errors {
        assert_eq!(err.code(), &codes::KEY_CERTIFICATE_MISMATCH, "{err}");
    }
}

#[test]
fn with_signing_key_checks_the_key_kind() {
    let chain = CertificateChain::from_pem(&data("rsa.crt.pem")).unwrap();
    let ec_key: Arc<dyn SigningKey> =
        Arc::new(SoftwareKey::from_pem(&data("ec-p256.sec1.pem")).unwrap());
    let err = chain.clone().with_signing_key(ec_key).unwrap_err();
    assert_eq!(err.code(), &codes::KEY_CERTIFICATE_MISMATCH);
    assert!(err.message().contains("EC P-256"), "{err}");
    // Same kind and size: accepted (a SigningKey cannot show its public key).
    let rsa_key: Arc<dyn SigningKey> =
        Arc::new(SoftwareKey::from_pem(&data("rsa.key.pem")).unwrap());
    let identity = chain.with_signing_key(rsa_key).unwrap();
    assert_rsa_client(&identity, 1);
    // RSA of another size.
    let small = CertificateChain::from_pem(&data("rsa1024.crt.pem")).unwrap();
    let rsa_key: Arc<dyn SigningKey> =
        Arc::new(SoftwareKey::from_pem(&data("rsa.key.pem")).unwrap());
    let err = small.with_signing_key(rsa_key).unwrap_err();
    assert_eq!(err.code(), &codes::KEY_CERTIFICATE_MISMATCH);
}

#[test]
fn unsupported_key_types() {
    for key in ["rsa1024.key.pem", "ec-p521.key.pem", "ed25519.key.pem"] {
        let err = SoftwareKey::from_pem(&data(key)).unwrap_err();
        assert_eq!(err.code(), &codes::UNSUPPORTED_KEY_TYPE, "{key}: {err}");
    }
    let err = load::from_pem_parts(&data("rsa1024.crt.pem"), &data("rsa1024.key.pem")).unwrap_err();
    assert_eq!(err.code(), &codes::UNSUPPORTED_KEY_TYPE);
    let err = SoftwareKey::from_pem(&data("ed25519.key.pem")).unwrap_err();
    assert!(err.message().contains("Ed25519"), "{err}");
    let err = SoftwareKey::from_pem(&data("ec-p521.key.pem")).unwrap_err();
    assert!(err.message().contains("P-521"), "{err}");
}

#[test]
fn malformed_input_is_invalid_certificate() {
    let truncated = &data("rsa.crt.der")[..400];
    let mut trailing = data("rsa.crt.der");
    trailing.extend_from_slice(b"junk");
    let bad_base64 = b"-----BEGIN CERTIFICATE-----\nnot*base64!\n-----END CERTIFICATE-----\n";
    let no_end = b"-----BEGIN CERTIFICATE-----\nMIIB\n";
    let errors = [
        CertificateChain::from_pem(b"").unwrap_err(),
        CertificateChain::from_pem(b"hello").unwrap_err(),
        CertificateChain::from_pem(bad_base64).unwrap_err(),
        CertificateChain::from_pem(no_end).unwrap_err(),
        CertificateChain::from_der(b"").unwrap_err(),
        CertificateChain::from_der(truncated).unwrap_err(),
        CertificateChain::from_der(&trailing).unwrap_err(),
        CertificateChain::from_der_chain(Vec::<Vec<u8>>::new()).unwrap_err(),
        CertificateChain::from_der_chain([trailing.clone()]).unwrap_err(),
        // Not a certificate: a key's DER.
        CertificateChain::from_der(&data("rsa.key.der")).unwrap_err(),
        load::from_der(&data("rsa.crt.der"), b"not a key").unwrap_err(),
        load::from_der(&data("rsa.crt.der"), &data("rsa.key.der")[..500]).unwrap_err(),
        load::from_pem(&data("rsa.key.pem")).unwrap_err(), // a key, but no certificate
        load::from_pem(&[data("rsa.chain-and-key.pem"), data("rsa.key.pem")].concat()).unwrap_err(), // two keys
        load::from_pem(&[data("rsa.crt.pem"), bad_base64.to_vec()].concat()).unwrap_err(),
        load::from_pkcs12(b"not pkcs12", PFX_PASSWORD).unwrap_err(),
        load::from_pkcs12(&data("rsa.crt.der"), PFX_PASSWORD).unwrap_err(),
        SoftwareKey::from_der(b"\x30\x03\x02\x01\x00").unwrap_err(),
    ];
    for err in errors {
        assert_eq!(err.code(), &codes::INVALID_CERTIFICATE, "{err}");
    }
    assert_eq!(
        SoftwareKey::from_pem(&data("rsa.crt.pem"))
            .unwrap_err()
            .code(),
        &codes::NO_PRIVATE_KEY
    );
    assert_eq!(
        SoftwareKey::from_der(b"").unwrap_err().code(),
        &codes::NO_PRIVATE_KEY
    );
}

#[test]
fn encrypted_pem_keys_are_refused_clearly() {
    let encrypted = data("rsa.encrypted.key.pem");
    for err in [
        SoftwareKey::from_pem(&encrypted).unwrap_err(),
        load::from_pem(&[data("rsa.crt.pem"), encrypted.clone()].concat()).unwrap_err(),
        load::from_pem_parts(&data("rsa.crt.pem"), &encrypted).unwrap_err(),
    ] {
        assert_eq!(err.code(), &codes::INVALID_CERTIFICATE);
        assert!(err.message().contains("encrypted"), "{err}");
    }
}

#[test]
fn software_keys_sign_every_advertised_algorithm() {
    let rsa = SoftwareKey::from_pem(&data("rsa.key.pem")).unwrap();
    let rsa_public = certificate_public_key(&data("rsa.crt.der"));
    let message = b"tls handshake transcript";
    let rsa_cases: [(
        SignatureAlgorithm,
        &'static dyn verification::VerificationAlgorithm,
    ); 6] = [
        (
            SignatureAlgorithm::RsaPssSha256,
            &verification::RSA_PSS_2048_8192_SHA256,
        ),
        (
            SignatureAlgorithm::RsaPssSha384,
            &verification::RSA_PSS_2048_8192_SHA384,
        ),
        (
            SignatureAlgorithm::RsaPssSha512,
            &verification::RSA_PSS_2048_8192_SHA512,
        ),
        (
            SignatureAlgorithm::RsaPkcs1Sha256,
            &verification::RSA_PKCS1_2048_8192_SHA256,
        ),
        (
            SignatureAlgorithm::RsaPkcs1Sha384,
            &verification::RSA_PKCS1_2048_8192_SHA384,
        ),
        (
            SignatureAlgorithm::RsaPkcs1Sha512,
            &verification::RSA_PKCS1_2048_8192_SHA512,
        ),
    ];
    assert_eq!(
        rsa.algorithms(),
        rsa_cases.iter().map(|(a, _)| *a).collect::<Vec<_>>()
    );
    for (algorithm, verification) in rsa_cases {
        let signature = rsa.sign(algorithm, message).unwrap();
        assert!(
            verify(verification, &rsa_public, message, &signature),
            "{algorithm:?}"
        );
    }
    let err = rsa
        .sign(SignatureAlgorithm::EcdsaP256Sha256, message)
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::SIGNING_FAILED);

    let p256 = SoftwareKey::from_pem(&data("ec-p256.sec1.pem")).unwrap();
    assert_eq!(p256.algorithms(), [SignatureAlgorithm::EcdsaP256Sha256]);
    let signature = p256
        .sign(SignatureAlgorithm::EcdsaP256Sha256, message)
        .unwrap();
    assert!(verify(
        &verification::ECDSA_P256_SHA256_ASN1,
        &certificate_public_key(&ec_certificate_der()),
        message,
        &signature
    ));
    let err = p256
        .sign(SignatureAlgorithm::RsaPssSha256, message)
        .unwrap_err();
    assert_eq!(err.code(), &ErrorCode::SIGNING_FAILED);

    let generated = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let p384 = SoftwareKey::from_der(&generated.serialize_der()).unwrap();
    assert_eq!(p384.kind(), KeyKind::EcP384);
    let signature = p384
        .sign(SignatureAlgorithm::EcdsaP384Sha384, message)
        .unwrap();
    assert!(verify(
        &verification::ECDSA_P384_SHA384_ASN1,
        generated.public_key_raw(),
        message,
        &signature
    ));
}

#[test]
fn debug_output_shows_no_key_material() {
    let pem = data("rsa.chain-and-key.pem");
    let identity = load::from_pem(&pem).unwrap();
    let key = SoftwareKey::from_pem(&data("rsa.key.pem")).unwrap();
    let chain = CertificateChain::from_pem(&pem).unwrap();
    let debug = format!("{identity:?} {key:?} {chain:?}");
    // Every line of the PEM body (base64 of the key), not only the fixed header.
    let key_pem = String::from_utf8(data("rsa.key.pem")).unwrap();
    let body_lines: Vec<&str> = key_pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    assert!(body_lines.len() > 20, "{key_pem}");
    for line in body_lines {
        assert!(!debug.contains(line), "{line} in {debug}");
    }
    // The end of the PKCS#8 is private material (the CRT coefficient of the RSA key), in the
    // forms a Debug impl would print it: a byte list, hex, base64.
    let pkcs8 = key.expose_pkcs8_der();
    let private_tail = &pkcs8[pkcs8.len() - 24..];
    let as_list = format!("{private_tail:?}");
    let as_list = as_list.trim_start_matches('[').trim_end_matches(']');
    let as_hex = private_tail
        .iter()
        .fold(String::new(), |hex, b| hex + &format!("{b:02x}"));
    for form in [
        as_list.to_owned(),
        as_hex.clone(),
        as_hex.to_uppercase(),
        STANDARD.encode(private_tail),
    ] {
        assert!(!debug.contains(&form), "{form} in {debug}");
    }
    assert!(
        debug.contains("SoftwareKey { kind: Rsa { bits: 2048 }"),
        "{debug}"
    );
    assert!(debug.contains(&x5t_s256(&data("rsa.crt.der"))));
}
