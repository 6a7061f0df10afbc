//! TLS client settings: the probes' HTTPS and TCP+TLS targets and the
//! kubelet's authenticated port. Roots from a CA file or the system's
//! store (read once), or any certificate accepted with its handshake's
//! signatures still checked.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

/// A TLS client: its roots (or none checked) and the name the
/// certificate must carry.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<String>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's trust store, read once (it holds some hundred certificates).
fn native_roots() -> Arc<rustls::RootCertStore> {
    static ROOTS: OnceLock<Arc<rustls::RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            for e in &loaded.errors {
                tracing::warn!(error = %e, "reading the system's CA certificates");
            }
            let mut store = rustls::RootCertStore::empty();
            let (_, ignored) = store.add_parsable_certificates(loaded.certs);
            if ignored > 0 {
                tracing::debug!(ignored, "unparsable system CA certificates");
            }
            Arc::new(store)
        })
        .clone()
}

impl TlsSettings {
    /// `ca_pem`: the CAs to trust instead of the system's.
    pub fn new(
        ca_pem: Option<&[u8]>,
        server_name: Option<String>,
        insecure_skip_verify: bool,
    ) -> Result<TlsSettings, String> {
        if let Some(name) = &server_name {
            ServerName::try_from(name.clone())
                .map_err(|_| format!("server_name {name:?} is not a DNS name or IP address"))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let config = if insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
                .with_no_client_auth()
        } else {
            let roots = match ca_pem {
                Some(pem) => {
                    let mut store = rustls::RootCertStore::empty();
                    for cert in CertificateDer::pem_slice_iter(pem) {
                        let cert = cert.map_err(|e| format!("ca_file: {e}"))?;
                        store
                            .add(cert)
                            .map_err(|e| format!("ca_file: a certificate is not usable: {e}"))?;
                    }
                    if store.is_empty() {
                        return Err("ca_file holds no PEM certificate".into());
                    }
                    Arc::new(store)
                }
                None => native_roots(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        Ok(TlsSettings {
            config: Arc::new(config),
            server_name,
        })
    }
}

impl TlsSettings {
    /// The name the server's certificate must carry: the configured one,
    /// else `host`.
    pub fn name_for(&self, host: &str) -> Result<ServerName<'static>, String> {
        let name = self.server_name.as_deref().unwrap_or(host).to_string();
        ServerName::try_from(name).map_err(|e| e.to_string())
    }

    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.clone())
    }

    /// A TLS session over `stream` with `host` (or the configured server
    /// name), checked as these settings say.
    pub async fn connect(
        &self,
        stream: TcpStream,
        host: &str,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = self
            .name_for(host)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        self.connector().connect(name, stream).await
    }
}

/// `insecure_skip_verify`: any certificate is accepted (its expiry is still
/// reported), but the handshake's signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
