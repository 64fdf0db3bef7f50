//! TLS: the emulator's own CA, the server certificate(s), and client-certificate handling.
//!
//! The CA (ECDSA P-256) is generated at start. One server certificate covers every identity host
//! and the resource hosts known at start (wildcards where needed). A resource host registered
//! later ([`Directory::add_resource`](crate::Directory::add_resource)) gets a certificate minted
//! for it on first use (logged at `info`); any other name gets the main certificate, which a
//! client refuses for it, as it would refuse a host that serves nothing there.
//!
//! Client certificates are requested on every connection but never required by TLS (an empty
//! hint list, `client_auth_mandatory` false); any well-formed certificate whose holder proves
//! possession of the key in the handshake is accepted, and the application layer decides what
//! it is good for. TLS session resumption is disabled so every connection presents its
//! certificate afresh.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName as TlsDn, ServerConfig, SignatureScheme};

use crate::directory::Directory;
use crate::hosts::any_matches;
use crate::keys::rand_serial;
use crate::Error;

fn cert_error(e: impl fmt::Display) -> Error {
    Error::Certificate(e.to_string())
}

/// A certificate and private key the emulator's CA issued.
#[derive(Clone)]
#[non_exhaustive]
pub struct IssuedCertificate {
    /// The certificate (DER).
    pub certificate_der: Vec<u8>,
    /// The certificate (PEM).
    pub certificate_pem: String,
    /// The ECDSA P-256 private key (PKCS#8 DER).
    pub private_key_pkcs8_der: Vec<u8>,
    /// The private key (PKCS#8 PEM).
    pub private_key_pem: String,
}

impl fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("certificate_pem", &self.certificate_pem)
            .finish_non_exhaustive()
    }
}

/// The emulator's certificate authority. Its certificate is the one clients must trust.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_der: Vec<u8>,
    cert_pem: String,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("certificate_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    pub(crate) fn generate() -> Result<Self, Error> {
        let key = KeyPair::generate().map_err(cert_error)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "fic-emulator local CA");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "fic-rs");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(SerialNumber::from_slice(&rand_serial()));
        let cert = params.self_signed(&key).map_err(cert_error)?;
        Ok(Self {
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate (DER).
    pub fn certificate_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA certificate (PEM).
    pub fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }

    fn issue(&self, params: &mut CertificateParams) -> Result<IssuedCertificate, Error> {
        let key = KeyPair::generate().map_err(cert_error)?;
        params.serial_number = Some(SerialNumber::from_slice(&rand_serial()));
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).map_err(cert_error)?;
        Ok(IssuedCertificate {
            certificate_der: cert.der().to_vec(),
            certificate_pem: cert.pem(),
            private_key_pkcs8_der: key.serialize_der(),
            private_key_pem: key.serialize_pem(),
        })
    }

    /// Issues a TLS server certificate for `names` (DNS names, `*.` wildcards allowed).
    pub fn issue_server_certificate(&self, names: &[String]) -> Result<IssuedCertificate, Error> {
        let mut params = CertificateParams::new(names.to_vec()).map_err(cert_error)?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().map_or("fic-emulator", String::as_str),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.issue(&mut params)
    }

    /// Issues a client certificate with this common name for an RSA public key (DER
    /// `RSAPublicKey`), valid from `not_before` to `not_after` (Unix seconds): the IMDSv2
    /// certificate of a managed identity. Returns its DER.
    pub(crate) fn issue_for_rsa_key(
        &self,
        common_name: &str,
        rsa_public_key: &[u8],
        not_before: u64,
        not_after: u64,
    ) -> Result<Vec<u8>, Error> {
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = epoch + std::time::Duration::from_secs(not_before);
        params.not_after = epoch + std::time::Duration::from_secs(not_after);
        params.serial_number = Some(SerialNumber::from_slice(&rand_serial()));
        params.use_authority_key_identifier_extension = true;
        let key = RsaPublicKeyDer(rsa_public_key.to_vec());
        let cert = params.signed_by(&key, &self.issuer).map_err(cert_error)?;
        Ok(cert.der().to_vec())
    }

    /// Issues a client certificate with this common name (ECDSA P-256 key). Register it on an app
    /// by thumbprint, or trust the CA for SN+I with [`App::subject_issuer`](crate::App::subject_issuer).
    pub fn issue_client_certificate(&self, common_name: &str) -> Result<IssuedCertificate, Error> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.issue(&mut params)
    }
}

/// An RSA public key (DER `RSAPublicKey`) to certify: its SPKI is `rsaEncryption` with NULL
/// parameters.
struct RsaPublicKeyDer(Vec<u8>);

impl rcgen::PublicKeyData for RsaPublicKeyDer {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

/// The Service Fabric endpoint's TLS configuration: a self-signed certificate (as a cluster
/// node's), no client authentication. Returns the configuration and the certificate's DER.
pub(crate) fn service_fabric_config() -> Result<(ServerConfig, Vec<u8>), Error> {
    let key = KeyPair::generate().map_err(cert_error)?;
    let mut params = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        crate::managed_identity::SERVICE_FABRIC_HOST_PORT
            .split(':')
            .next()
            .unwrap_or("10.0.0.4")
            .to_owned(),
    ])
    .map_err(cert_error)?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "fic-emulator Service Fabric node");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.serial_number = Some(SerialNumber::from_slice(&rand_serial()));
    let cert = params.self_signed(&key).map_err(cert_error)?;
    let der = cert.der().to_vec();
    let provider = provider();
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(cert_error)?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .map_err(cert_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, der))
}

fn certified_key(
    provider: &CryptoProvider,
    issued: &IssuedCertificate,
) -> Result<CertifiedKey, Error> {
    let key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            issued.private_key_pkcs8_der.clone(),
        )))
        .map_err(cert_error)?;
    Ok(CertifiedKey::new(
        vec![CertificateDer::from(issued.certificate_der.clone())],
        key,
    ))
}

/// Picks the server certificate by SNI; mints one for a registered resource host the main
/// certificate does not cover.
struct ServerCertificates {
    main: Arc<CertifiedKey>,
    main_names: Vec<String>,
    minted: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    ca: Arc<CertificateAuthority>,
    provider: Arc<CryptoProvider>,
    directory: Directory,
}

impl fmt::Debug for ServerCertificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCertificates")
            .field("main_names", &self.main_names)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ServerCertificates {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = client_hello.server_name() else {
            return Some(self.main.clone());
        };
        let name = name.to_ascii_lowercase();
        if any_matches(&self.main_names, &name) {
            return Some(self.main.clone());
        }
        if self.directory.resource_for_host(&name).is_none() {
            // Nothing is served there: the main certificate, which does not name it.
            tracing::debug!(sni = %name, "fic-emulator: no certificate for a host it does not serve");
            return Some(self.main.clone());
        }
        let mut minted = self.minted.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = minted.get(&name) {
            return Some(key.clone());
        }
        if minted.len() >= 1024 {
            minted.clear();
        }
        let issued = self
            .ca
            .issue_server_certificate(std::slice::from_ref(&name))
            .ok()?;
        let key = Arc::new(certified_key(&self.provider, &issued).ok()?);
        tracing::info!(
            sni = %name,
            "fic-emulator: minted a server certificate for a resource host registered after start"
        );
        minted.insert(name, key.clone());
        Some(key)
    }
}

/// Requests a client certificate, accepts any well-formed one (the handshake signature proves
/// the key), never requires one.
#[derive(Debug)]
struct AnyClientCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[TlsDn] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if crate::x509::facts(end_entity).is_none() {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The ring crypto provider every TLS config of the emulator uses.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the HTTPS listener's server config: the main certificate covers `names`; resource
/// hosts of `directory` added later get their own. Returns the config and the main
/// certificate's DER.
pub(crate) fn server_config(
    ca: Arc<CertificateAuthority>,
    names: Vec<String>,
    directory: Directory,
) -> Result<(ServerConfig, Vec<u8>), Error> {
    let provider = provider();
    let main = ca.issue_server_certificate(&names)?;
    let certs = ServerCertificates {
        main: Arc::new(certified_key(&provider, &main)?),
        main_names: names,
        minted: Mutex::new(HashMap::new()),
        ca,
        provider: provider.clone(),
        directory,
    };
    let verifier = AnyClientCertificate {
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(cert_error)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(certs));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok((config, main.certificate_der))
}

/// The certificate chain a client presented in the TLS handshake.
#[derive(Clone, Debug)]
pub(crate) struct PeerCertificate {
    /// Leaf first, then what the client sent after it.
    pub(crate) chain: Vec<Vec<u8>>,
    /// `x5t#S256` of the leaf.
    pub(crate) thumbprint: String,
}

impl PeerCertificate {
    pub(crate) fn new(chain: Vec<Vec<u8>>) -> Option<Self> {
        let thumbprint = crate::x509::thumbprint_s256(chain.first()?);
        Some(Self { chain, thumbprint })
    }

    pub(crate) fn leaf(&self) -> &[u8] {
        self.chain.first().map_or(&[], Vec::as_slice)
    }
}
