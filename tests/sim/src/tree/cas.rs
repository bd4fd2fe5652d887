//! Cluster CAs: made once per simulated cluster and shared by all its nodes.
//!
//! RKE2 keeps five CAs (and the service-account key) in `server/tls/`; every server of a
//! cluster holds the same ones and agents get the client and server CA certificates. A
//! [`ClusterCas`] is generated once ([`ClusterCas::generate`]) and passed to every
//! [`generate`](super::generate) call, or loaded back from a server's `server/tls`
//! ([`ClusterCas::load`]) so a later simulated `rke2 server` can reissue leaves from them.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use time::OffsetDateTime;

use super::TreeError;
use super::pem::{cert_pem, first_cert_der};

/// Days in RKE2's CA lifetime (10 × 365 days).
pub const CA_LIFETIME_DAYS: i64 = 3650;

/// The five RKE2 CAs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CaKind {
    /// `server/tls/client-ca.crt`: signs client certificates.
    Client,
    /// `server/tls/server-ca.crt`: signs serving certificates.
    Server,
    /// `server/tls/request-header-ca.crt`: signs the auth-proxy client cert.
    RequestHeader,
    /// `server/tls/etcd/server-ca.crt`: signs etcd server and client certs.
    EtcdServer,
    /// `server/tls/etcd/peer-ca.crt`: signs etcd peer certs.
    EtcdPeer,
}

impl CaKind {
    /// Every CA, in the order RKE2 creates them.
    pub const ALL: [CaKind; 5] = [
        CaKind::Client,
        CaKind::Server,
        CaKind::RequestHeader,
        CaKind::EtcdServer,
        CaKind::EtcdPeer,
    ];

    /// The CN prefix; the CN is `<prefix>-ca@<unix seconds>`.
    #[must_use]
    pub fn cn_prefix(self) -> &'static str {
        match self {
            CaKind::Client => "rke2-client",
            CaKind::Server => "rke2-server",
            CaKind::RequestHeader => "rke2-request-header",
            CaKind::EtcdServer => "etcd-server",
            CaKind::EtcdPeer => "etcd-peer",
        }
    }

    /// Certificate path relative to the data dir.
    #[must_use]
    pub fn cert_rel(self) -> &'static str {
        match self {
            CaKind::Client => "server/tls/client-ca.crt",
            CaKind::Server => "server/tls/server-ca.crt",
            CaKind::RequestHeader => "server/tls/request-header-ca.crt",
            CaKind::EtcdServer => "server/tls/etcd/server-ca.crt",
            CaKind::EtcdPeer => "server/tls/etcd/peer-ca.crt",
        }
    }

    /// Key path relative to the data dir.
    #[must_use]
    pub fn key_rel(self) -> &'static str {
        match self {
            CaKind::Client => "server/tls/client-ca.key",
            CaKind::Server => "server/tls/server-ca.key",
            CaKind::RequestHeader => "server/tls/request-header-ca.key",
            CaKind::EtcdServer => "server/tls/etcd/server-ca.key",
            CaKind::EtcdPeer => "server/tls/etcd/peer-ca.key",
        }
    }

    /// The file name inside `server/tls` (used by [`ClusterCas::load`]).
    fn tls_rel(self) -> (&'static str, &'static str) {
        let strip = |p: &'static str| p.strip_prefix("server/tls/").unwrap_or(p);
        (strip(self.cert_rel()), strip(self.key_rel()))
    }
}

/// An ECDSA P-256 key as RKE2 stores it.
#[derive(Debug)]
pub struct NodeKey {
    /// Signing handle for rcgen.
    pub pair: KeyPair,
    /// `EC PRIVATE KEY` (SEC1) PEM, as Go's `x509.MarshalECPrivateKey` writes it.
    pub sec1_pem: String,
}

impl NodeKey {
    /// A fresh P-256 key.
    pub fn generate() -> Result<NodeKey, TreeError> {
        let pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let secret = <p256::SecretKey as p256::pkcs8::DecodePrivateKey>::from_pkcs8_der(
            pair.serialized_der(),
        )
        .map_err(|e| TreeError::Key(e.to_string()))?;
        Ok(NodeKey {
            pair,
            sec1_pem: go_sec1_pem(&secret),
        })
    }

    /// Load an `EC PRIVATE KEY` (or PKCS#8 `PRIVATE KEY`) PEM.
    pub fn from_pem(pem: &str) -> Result<NodeKey, TreeError> {
        use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
        let secret = p256::SecretKey::from_sec1_pem(pem)
            .or_else(|_| p256::SecretKey::from_pkcs8_pem(pem))
            .map_err(|e| TreeError::Key(e.to_string()))?;
        let pkcs8 = secret
            .to_pkcs8_der()
            .map_err(|e| TreeError::Key(e.to_string()))?;
        let pair = KeyPair::try_from(pkcs8.as_bytes())?;
        Ok(NodeKey {
            pair,
            sec1_pem: go_sec1_pem(&secret),
        })
    }
}

/// DER content of the named-curve OID prime256v1 (1.2.840.10045.3.1.7).
const P256_OID: [u8; 8] = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// `EC PRIVATE KEY` PEM exactly as Go's `x509.MarshalECPrivateKey` lays it out: version 1,
/// the 32-byte scalar, `[0]` named-curve parameters and `[1]` uncompressed public key. (The
/// RustCrypto encoder omits the parameters, which Go's `ParseECPrivateKey` rejects.)
fn go_sec1_pem(secret: &p256::SecretKey) -> String {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let scalar = secret.to_bytes();
    let point = secret.public_key().to_encoded_point(false);
    let mut der = Vec::with_capacity(121);
    der.extend_from_slice(&[0x30, 0x77, 0x02, 0x01, 0x01, 0x04, 0x20]);
    der.extend_from_slice(&scalar);
    der.extend_from_slice(&[0xa0, 0x0a, 0x06, 0x08]);
    der.extend_from_slice(&P256_OID);
    der.extend_from_slice(&[0xa1, 0x44, 0x03, 0x42, 0x00]);
    der.extend_from_slice(point.as_bytes());
    super::pem::encode("EC PRIVATE KEY", &der)
}

/// One CA: certificate and key.
#[derive(Debug)]
pub struct ClusterCa {
    /// Which CA.
    pub kind: CaKind,
    /// DER of the CA certificate.
    pub cert_der: Vec<u8>,
    /// The signing key.
    pub key: NodeKey,
    /// Subject CN, `<prefix>-ca@<unix>`.
    pub cn: String,
    /// NotBefore.
    pub not_before: OffsetDateTime,
    /// NotAfter.
    pub not_after: OffsetDateTime,
}

impl ClusterCa {
    /// Self-sign a CA like dynamiclistener's `NewSelfSignedCACert`.
    fn generate(
        kind: CaKind,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<ClusterCa, TreeError> {
        Self::generate_named(kind, kind.cn_prefix(), not_before, not_after)
    }

    /// Self-sign a CA with CN `<cn_prefix>-ca@<unix NotBefore>`.
    pub(crate) fn generate_named(
        kind: CaKind,
        cn_prefix: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<ClusterCa, TreeError> {
        let cn = format!("{cn_prefix}-ca@{}", not_before.unix_timestamp());
        let key = NodeKey::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn.clone());
        params.distinguished_name = dn;
        params.serial_number = Some(SerialNumber::from_slice(&[0]));
        params.not_before = not_before;
        params.not_after = not_after;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyCertSign,
        ];
        let cert = params.self_signed(&key.pair)?;
        Ok(ClusterCa {
            kind,
            cert_der: cert.der().to_vec(),
            key,
            cn,
            not_before: truncate(not_before),
            not_after: truncate(not_after),
        })
    }

    /// The CA certificate as PEM (what `server/tls/<ca>.crt` holds).
    #[must_use]
    pub fn cert_pem(&self) -> String {
        cert_pem(&self.cert_der)
    }

    /// An rcgen issuer for signing leaves; the AKI of leaves will equal this CA's SKI.
    pub fn issuer(&self) -> Result<rcgen::Issuer<'static, &KeyPair>, TreeError> {
        Ok(rcgen::Issuer::from_ca_cert_der(
            &self.cert_der.as_slice().into(),
            &self.key.pair,
        )?)
    }
}

/// X.509 times have second precision.
pub(crate) fn truncate(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

/// The CAs and service-account key of one simulated cluster.
#[derive(Debug)]
pub struct ClusterCas {
    cas: Vec<ClusterCa>,
    /// RSA service-account key (`RSA PRIVATE KEY` PEM), as in `service.key`.
    pub service_key_pem: String,
}

impl ClusterCas {
    /// New CAs created at `created_at` (NotBefore = `created_at`, CN `...-ca@<created_at>`,
    /// NotAfter = +3650 days), plus an RSA-2048 service-account key (the only slow step).
    pub fn generate(created_at: OffsetDateTime) -> Result<ClusterCas, TreeError> {
        Self::generate_window(
            created_at,
            created_at + time::Duration::days(CA_LIFETIME_DAYS),
        )
    }

    /// New CAs with an explicit validity window (for CA-expiry tests).
    pub fn generate_window(
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<ClusterCas, TreeError> {
        let cas = CaKind::ALL
            .iter()
            .map(|&kind| ClusterCa::generate(kind, not_before, not_after))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ClusterCas {
            cas,
            service_key_pem: generate_service_key()?,
        })
    }

    /// Load the CAs and `service.key` from an existing server's `server/tls` directory.
    pub fn load(server_tls_dir: &Path) -> Result<ClusterCas, TreeError> {
        let read = |rel: &str| -> Result<(PathBuf, String), TreeError> {
            let path = server_tls_dir.join(rel);
            let text = std::fs::read_to_string(&path).map_err(|source| TreeError::Io {
                path: path.clone(),
                source,
            })?;
            Ok((path, text))
        };
        let mut cas = Vec::new();
        for kind in CaKind::ALL {
            let (cert_rel, key_rel) = kind.tls_rel();
            let (cert_path, cert_text) = read(cert_rel)?;
            let cert_der = first_cert_der(&cert_text).ok_or_else(|| TreeError::BadCa {
                path: cert_path.clone(),
                reason: "no CERTIFICATE block".into(),
            })?;
            let (_, parsed) =
                x509_parser::parse_x509_certificate(&cert_der).map_err(|e| TreeError::BadCa {
                    path: cert_path.clone(),
                    reason: e.to_string(),
                })?;
            let cn = parsed
                .subject()
                .iter_common_name()
                .last()
                .and_then(|cn| cn.as_str().ok())
                .unwrap_or_default()
                .to_owned();
            let not_before = parsed.validity().not_before.to_datetime();
            let not_after = parsed.validity().not_after.to_datetime();
            drop(parsed);
            let (_, key_text) = read(key_rel)?;
            cas.push(ClusterCa {
                kind,
                key: NodeKey::from_pem(&key_text)?,
                cert_der,
                cn,
                not_before,
                not_after,
            });
        }
        let (_, service_key_pem) = read("service.key")?;
        Ok(ClusterCas {
            cas,
            service_key_pem,
        })
    }

    /// Write the CAs and `service.key` into `server_tls_dir` with RKE2's names (the layout
    /// [`ClusterCas::load`] reads), e.g. to share one cluster's CAs between CLI invocations.
    pub fn save(&self, server_tls_dir: &Path) -> Result<(), TreeError> {
        let write = |rel: &str, contents: &str, mode: u32| -> Result<(), TreeError> {
            use std::os::unix::fs::PermissionsExt;
            let path = server_tls_dir.join(rel);
            let err = |source| TreeError::Io {
                path: path.clone(),
                source,
            };
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(err)?;
            }
            std::fs::write(&path, contents).map_err(err)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(err)
        };
        for ca in &self.cas {
            let (cert_rel, key_rel) = ca.kind.tls_rel();
            write(cert_rel, &ca.cert_pem(), 0o644)?;
            write(key_rel, &ca.key.sec1_pem, 0o600)?;
        }
        write("service.key", &self.service_key_pem, 0o600)
    }

    /// One CA.
    #[must_use]
    pub fn ca(&self, kind: CaKind) -> &ClusterCa {
        // `cas` is built from `CaKind::ALL` in both constructors, in that order.
        &self.cas[CaKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or_default()]
    }

    /// Every CA.
    pub fn iter(&self) -> impl Iterator<Item = &ClusterCa> {
        self.cas.iter()
    }

    /// The cluster join token in RKE2's secure format, `K10<sha256 of the server CA
    /// PEM>::server:<secret>`; the secret is derived from the client CA so every node (and a
    /// reload from disk) computes the same token.
    #[must_use]
    pub fn token(&self) -> String {
        use sha2::{Digest, Sha256};
        let ca_hash = hex::encode(Sha256::digest(self.ca(CaKind::Server).cert_pem()));
        let secret = hex::encode(Sha256::digest(&self.ca(CaKind::Client).cert_der));
        format!("K10{ca_hash}::server:{}", &secret[..32])
    }
}

fn generate_service_key() -> Result<String, TreeError> {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
        .map_err(|e| TreeError::Key(e.to_string()))?;
    Ok(key
        .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
        .map_err(|e| TreeError::Key(e.to_string()))?
        .to_string())
}
