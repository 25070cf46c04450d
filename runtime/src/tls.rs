//! TLS termination on the gateway's listener: a PEM certificate chain and key
//! (`TLS_CERT_FILE`, `TLS_KEY_FILE`), rustls with ALPN h2 and http/1.1, reloaded on SIGHUP.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::env::Environment;

/// Where the certificate is and how long a handshake may take.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first (`TLS_CERT_FILE`).
    pub cert_file: String,
    /// PEM file with the private key: PKCS#8, PKCS#1 or SEC1 (`TLS_KEY_FILE`).
    pub key_file: String,
    /// How long a client may take to complete the handshake
    /// (`TLS_HANDSHAKE_TIMEOUT_SECONDS`, 10); slower connections are closed.
    pub handshake_timeout: Duration,
}

impl TlsConfig {
    /// Reads the TLS variables: `None` when no certificate is configured; both files or
    /// neither.
    pub fn from_env(env: &Environment) -> Result<Option<Self>, Vec<String>> {
        let get = |name: &str| env.get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let timeout_s = get("TLS_HANDSHAKE_TIMEOUT_SECONDS").unwrap_or_else(|| "10".to_owned());
        let mut errors = Vec::new();
        let handshake_timeout = match timeout_s.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => Duration::from_secs_f64(v),
            _ => {
                errors.push(format!("TLS_HANDSHAKE_TIMEOUT_SECONDS={timeout_s:?} is not a positive number of seconds"));
                Duration::from_secs(10)
            }
        };
        let config = match (get("TLS_CERT_FILE"), get("TLS_KEY_FILE")) {
            (None, None) => None,
            (Some(cert_file), Some(key_file)) => Some(TlsConfig { cert_file, key_file, handshake_timeout }),
            (Some(_), None) => {
                errors.push("TLS_CERT_FILE is set but TLS_KEY_FILE is not: both are needed to serve HTTPS".to_owned());
                None
            }
            (None, Some(_)) => {
                errors.push("TLS_KEY_FILE is set but TLS_CERT_FILE is not: both are needed to serve HTTPS".to_owned());
                None
            }
        };
        if errors.is_empty() { Ok(config) } else { Err(errors) }
    }

    /// Reads and checks the certificate chain and key (the key must match the leaf).
    pub fn load(&self) -> Result<Arc<CertifiedKey>, String> {
        let chain = read_chain(&self.cert_file)?;
        let key = PrivateKeyDer::from_pem_file(&self.key_file).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => format!("TLS_KEY_FILE={:?} contains no private key (PEM)", self.key_file),
            e => format!("TLS_KEY_FILE={:?} cannot be read: {e}", self.key_file),
        })?;
        let provider = provider();
        let certified = CertifiedKey::from_der(chain, key, &provider)
            .map_err(|e| format!("TLS_CERT_FILE={:?} and TLS_KEY_FILE={:?} do not go together: {e}", self.cert_file, self.key_file))?;
        Ok(Arc::new(certified))
    }
}

/// The certificates of a PEM file, leaf first.
pub fn read_chain(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("TLS_CERT_FILE={path:?} cannot be read: {e}"))?
        .collect();
    let certs = certs.map_err(|e| format!("TLS_CERT_FILE={path:?} is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("TLS_CERT_FILE={path:?} contains no certificate"));
    }
    Ok(certs)
}

fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// The certificate in force, swapped on reload; every new handshake reads it.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
    config: TlsConfig,
}

impl CertStore {
    /// Reads the configured files (start-up fails on an error).
    pub fn new(config: TlsConfig) -> Result<Self, String> {
        let key = config.load()?;
        Ok(CertStore { current: RwLock::new(key), config })
    }

    /// Reads the files again; on an error the certificate in force stays.
    pub fn reload(&self) -> Result<(), String> {
        let key = self.config.load()?;
        match self.current.write() {
            Ok(mut c) => *c = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
        Ok(())
    }

    /// The rustls server configuration: TLS 1.2 and 1.3, ALPN h2 then http/1.1.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, String> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    /// The handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        self.config.handshake_timeout
    }
}

#[derive(Debug)]
struct Resolver(Arc<CertStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match self.0.current.read() {
            Ok(c) => Some(c.clone()),
            Err(poisoned) => Some(poisoned.into_inner().clone()),
        }
    }
}

/// A client configuration that trusts exactly the leaf certificate of `TLS_CERT_FILE`,
/// whatever name it carries (for `gateway health-check`, which talks to its own listener).
pub fn pinned_client_config(cert_file: &str) -> Result<rustls::ClientConfig, String> {
    let leaf = read_chain(cert_file)?.swap_remove(0);
    let provider = Arc::new(provider());
    let verifier = Arc::new(Pinned { leaf, provider: provider.clone() });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[derive(Debug)]
struct Pinned {
    leaf: CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("the server's certificate is not the one in TLS_CERT_FILE".to_owned()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
