//! kube-apiserver `/readyz?verbose` over mutual TLS: the server is verified against
//! `server-ca.crt` (by IP SAN, as RKE2 issues it), the agent authenticates with the node's own
//! admin client certificate. The served chain is returned so a rotation can prove that the
//! running apiserver serves the new certificate, not only that the file changed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::HealthError;

/// Files the probe authenticates with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiserverCredentials {
    /// CA that signed the serving certificate (`server/tls/server-ca.crt`).
    pub server_ca: PathBuf,
    /// Client certificate (`server/tls/client-admin.crt`).
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

impl ApiserverCredentials {
    /// RKE2's files under `data_dir`.
    #[must_use]
    pub fn rke2(data_dir: &Path) -> Self {
        let tls = data_dir.join("server/tls");
        Self {
            server_ca: tls.join("server-ca.crt"),
            client_cert: tls.join("client-admin.crt"),
            client_key: tls.join("client-admin.key"),
        }
    }
}

/// What `/readyz?verbose` answered.
#[derive(Debug, Clone)]
pub struct Readyz {
    /// HTTP status (200 = ready).
    pub status: u16,
    /// The verbose check list.
    pub body: String,
    /// The certificate chain the server presented, leaf first (DER).
    pub served_chain: Vec<Vec<u8>>,
}

impl Readyz {
    /// 200 means ready.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.status == 200
    }

    /// The failing checks (`[-]etcd failed: ...` lines), for reports.
    #[must_use]
    pub fn failures(&self) -> Vec<String> {
        self.body
            .lines()
            .filter(|l| l.starts_with("[-]"))
            .map(str::to_owned)
            .collect()
    }
}

fn credential_error(path: &Path, reason: impl ToString) -> HealthError {
    HealthError::Credentials {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn tls_config(creds: &ApiserverCredentials) -> Result<ClientConfig, HealthError> {
    let mut roots = rustls::RootCertStore::empty();
    let cas = CertificateDer::pem_file_iter(&creds.server_ca)
        .map_err(|e| credential_error(&creds.server_ca, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| credential_error(&creds.server_ca, e))?;
    if cas.is_empty() {
        return Err(credential_error(&creds.server_ca, "no certificate in file"));
    }
    for ca in cas {
        roots
            .add(ca)
            .map_err(|e| credential_error(&creds.server_ca, e))?;
    }
    let chain = CertificateDer::pem_file_iter(&creds.client_cert)
        .map_err(|e| credential_error(&creds.client_cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| credential_error(&creds.client_cert, e))?;
    if chain.is_empty() {
        return Err(credential_error(
            &creds.client_cert,
            "no certificate in file",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&creds.client_key)
        .map_err(|e| credential_error(&creds.client_key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| credential_error(&creds.client_cert, e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| credential_error(&creds.client_cert, e))
}

/// GETs `path` from the apiserver at `addr` over mutual TLS.
///
/// # Errors
/// [`HealthError::Credentials`] for unusable files, [`HealthError::Unreachable`] when the
/// server does not answer or the handshake fails (e.g. it serves a certificate that does not
/// verify against `server-ca.crt`).
pub async fn get(
    addr: SocketAddr,
    path: &str,
    creds: &ApiserverCredentials,
    timeout: Duration,
) -> Result<Readyz, HealthError> {
    let config = Arc::new(tls_config(creds)?);
    let endpoint = format!("https://{addr}{path}");
    let unreachable = |reason: String| HealthError::Unreachable {
        endpoint: endpoint.clone(),
        reason,
    };
    let fetch = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let tls = connector
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await
            .map_err(|e| unreachable(format!("TLS: {e}")))?;
        let served_chain = tls
            .get_ref()
            .1
            .peer_certificates()
            .map(|certs| certs.iter().map(|c| c.as_ref().to_vec()).collect())
            .unwrap_or_default();
        let (status, body) = super::kubelet::get_over(tls, &addr.to_string(), path)
            .await
            .map_err(unreachable)?;
        Ok(Readyz {
            status,
            body,
            served_chain,
        })
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| unreachable(format!("no answer within {timeout:?}")))?
}

/// `/readyz?verbose`.
///
/// # Errors
/// As [`get`].
pub async fn readyz(
    addr: SocketAddr,
    creds: &ApiserverCredentials,
    timeout: Duration,
) -> Result<Readyz, HealthError> {
    get(addr, "/readyz?verbose", creds, timeout).await
}
