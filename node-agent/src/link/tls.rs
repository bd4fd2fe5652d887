//! TLS for the hub link (rustls, ring provider), with HTTP/2 negotiated by ALPN for gRPC.
//!
//! - Enrollment: the agent has no trust anchor yet, only the hub CA's pin (`sha256:<hex>` of
//!   its SubjectPublicKeyInfo, kubeadm's discovery hash). [`PinnedCaVerifier`] accepts the
//!   server only if the chain it presents contains a CA with that pin and the server
//!   certificate verifies against that CA for the dialled name.
//! - Afterwards: ordinary verification against the stored hub CA, with the node's client
//!   certificate (mutual TLS).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM input could not be used (names which).
    #[error("{what}: {reason}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, TlsError> {
    Ok(ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?)
}

/// Accepts a server whose presented chain holds the pinned CA and verifies against it.
#[derive(Debug)]
pub struct PinnedCaVerifier {
    pin: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl PinnedCaVerifier {
    /// A verifier for `pin` (`sha256:<hex>`).
    #[must_use]
    pub fn new(pin: &str) -> Self {
        Self {
            pin: pin.to_ascii_lowercase(),
            provider: provider(),
        }
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| rke2ops_common::identity::pin_of(c.as_ref()).is_ok_and(|p| p == self.pin))
            .ok_or_else(|| {
                rustls::Error::General(format!(
                    "the hub presented no CA with the pinned hash {} (wrong hub or wrong pin)",
                    self.pin
                ))
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&self.provider),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn with_h2(mut config: ClientConfig) -> ClientConfig {
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// For enrollment: the pinned CA, no client certificate.
///
/// # Errors
/// When rustls refuses the configuration.
pub fn enrollment_config(pin: &str) -> Result<ClientConfig, TlsError> {
    let config = builder()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCaVerifier::new(pin)))
        .with_no_client_auth();
    Ok(with_h2(config))
}

/// For the authenticated link: the stored hub CA and the node's identity.
///
/// # Errors
/// [`TlsError::Pem`] naming the unusable input.
pub fn mutual_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<ClientConfig, TlsError> {
    let pem = |what: &'static str| {
        move |e: rustls_pki_types::pem::Error| TlsError::Pem {
            what,
            reason: e.to_string(),
        }
    };
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca.map_err(pem("hub CA"))?)?;
    }
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem("node certificate"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(pem("node key"))?;
    let config = builder()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    Ok(with_h2(config))
}

/// A gRPC channel to `host:port` over TLS with `config` (lazy: connects on first use and
/// reconnects by itself).
///
/// # Errors
/// When the address is not a valid authority.
pub fn channel(
    host: &str,
    port: u16,
    config: ClientConfig,
) -> Result<tonic::transport::Channel, TlsError> {
    let server_name = ServerName::try_from(host.to_owned()).map_err(|e| TlsError::Pem {
        what: "hub address",
        reason: e.to_string(),
    })?;
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| TlsError::Pem {
            what: "hub address",
            reason: e.to_string(),
        })?
        .connect_timeout(std::time::Duration::from_secs(10))
        .http2_keep_alive_interval(std::time::Duration::from_secs(30))
        .keep_alive_timeout(std::time::Duration::from_secs(10));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let target = authority.clone();
    let service = tower::service_fn(move |_uri: tonic::transport::Uri| {
        let connector = connector.clone();
        let server_name = server_name.clone();
        let target = target.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(&target).await?;
            let tls = connector.connect(server_name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(service))
}
