//! TLS for the simulated listeners and probes: rustls with the `ring` provider, identities
//! loaded from RKE2's PEM files with Go's `tls.LoadX509KeyPair` error texts (what RKE2's
//! components print when a rotation left a file empty or mismatched).

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};

use crate::check::gopem;

/// A certificate chain and its key.
#[derive(Debug)]
pub struct Identity {
    /// Leaf first, then the CA(s), as RKE2's files hold them.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
}

/// The crypto provider every config here uses (`ring`; no aws-lc in this workspace).
#[must_use]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Go's `tls.X509KeyPair` over PEM contents: the same error texts, the key must match.
pub fn identity_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Identity, String> {
    let chain: Vec<CertificateDer<'static>> = gopem::decode_all(cert_pem)
        .into_iter()
        .filter(|b| b.kind == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.der))
        .collect();
    if chain.is_empty() {
        return Err(
            if cert_pem.is_empty() || gopem::decode_all(cert_pem).is_empty() {
                "tls: failed to find any PEM data in certificate input".to_owned()
            } else {
                "tls: failed to find \"CERTIFICATE\" PEM block in certificate input".to_owned()
            },
        );
    }
    let blocks = gopem::decode_all(key_pem);
    if blocks.is_empty() {
        return Err("tls: failed to find any PEM data in key input".to_owned());
    }
    let key = blocks
        .into_iter()
        .find_map(|b| match b.kind.as_str() {
            "EC PRIVATE KEY" => Some(PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(b.der))),
            "PRIVATE KEY" => Some(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(b.der))),
            "RSA PRIVATE KEY" => Some(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(b.der))),
            _ => None,
        })
        .ok_or_else(|| {
            "tls: found a certificate rather than a key in the PEM for the private key".to_owned()
        })?;
    let identity = Identity { chain, key };
    // The same consistency check Go makes (rustls does it while building a config).
    rustls::sign::CertifiedKey::from_der(
        identity.chain.clone(),
        identity.key.clone_key(),
        &provider(),
    )
    .map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            "tls: private key does not match public key".to_owned()
        }
        other => format!("tls: failed to parse private key: {other}"),
    })?;
    Ok(identity)
}

/// Go's `tls.LoadX509KeyPair(cert, key)`.
pub fn load_identity(cert: &Path, key: &Path) -> Result<Identity, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("open {}: {e}", p.display()));
    identity_from_pem(&read(cert)?, &read(key)?)
}

/// Every certificate of a PEM file as trust roots.
pub fn roots(ca_file: &Path) -> Result<RootCertStore, String> {
    let pem = std::fs::read(ca_file).map_err(|e| format!("open {}: {e}", ca_file.display()))?;
    roots_from_pem(&pem).map_err(|e| format!("{}: {e}", ca_file.display()))
}

/// Every certificate of PEM text as trust roots.
pub fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for block in gopem::decode_all(pem) {
        if block.kind == "CERTIFICATE" {
            store
                .add(CertificateDer::from(block.der))
                .map_err(|e| format!("bad CA certificate: {e}"))?;
        }
    }
    if store.is_empty() {
        return Err("no CA certificate found".to_owned());
    }
    Ok(store)
}

/// A server config for `identity`. With `client_roots`, client certificates are requested
/// and, when given, must chain to those roots (a client without one still connects; the
/// handler answers 401, as kube-apiserver with `--anonymous-auth=false` does).
pub fn server_config(
    identity: Identity,
    client_roots: Option<RootCertStore>,
) -> Result<Arc<ServerConfig>, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_roots {
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(identity.chain, identity.key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client config trusting `roots`, optionally presenting `identity`.
pub fn client_config(
    roots: RootCertStore,
    identity: Option<Identity>,
) -> Result<Arc<ClientConfig>, String> {
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| e.to_string())?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_webpki_verifier(verifier);
    let config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain, id.key)
            .map_err(|e| e.to_string())?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_junk_inputs_give_gos_messages() {
        assert_eq!(
            identity_from_pem(b"", b"").expect_err("empty input"),
            "tls: failed to find any PEM data in certificate input"
        );
    }
}
