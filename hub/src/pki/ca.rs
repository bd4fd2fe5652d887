//! The hub CA: created once in `<state_dir>/pki/`, loaded on every later start, and the
//! signer of every certificate the hub hands out (node client certificates, admin client
//! certificates, the hub's own server certificate, which it also keeps across restarts), and
//! the PEM and file helpers those need. The files' names and the certificates' lifetimes are
//! defined here, beside their one user.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;

use rke2ops_common::identity::{
    create_private_dir, finish_interrupted_write, spki_pin, write_files_together,
};

use super::csr::check_node_csr;
use super::error::PkiError;
use super::peer::{ADMIN_CN_PREFIX, ADMIN_ORGANIZATION, NODE_ORGANIZATION, validate_admin_name};
use super::server::{
    ReissueReason, ServerIdentity, ServerName, StoredServerCert, reissue_reason, server_name_of,
};

/// Folder under the hub's state directory that holds the PKI files.
pub const PKI_DIR: &str = "pki";
/// The CA certificate.
pub const CA_CERT_FILE: &str = "ca.crt";
/// The CA private key.
pub const CA_KEY_FILE: &str = "ca.key";
/// The hub's server certificate chain (leaf then CA).
pub const SERVER_CERT_FILE: &str = "server.crt";
/// The hub's server key.
pub const SERVER_KEY_FILE: &str = "server.key";
/// The CA's lifetime (kubeadm's too): ten years.
pub const CA_LIFETIME: Duration = Duration::days(3650);
/// A node certificate's lifetime; agents renew it with a third (30 days) left.
pub const NODE_CERT_LIFETIME: Duration = Duration::days(90);
/// An admin certificate's lifetime.
pub const ADMIN_CERT_LIFETIME: Duration = Duration::days(365);
/// The server certificate's lifetime.
pub const SERVER_CERT_LIFETIME: Duration = Duration::days(365);
/// Certificates start this long before `now`, so a node whose clock is a little behind the
/// hub's accepts a certificate the moment it gets it.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::minutes(5);

/// CN of the hub's server certificate (clients check its SANs, not this).
const SERVER_CN: &str = "rke2-ops-hub";

/// The hub's certificate authority: its key (in memory only, never exported) and certificate.
pub struct HubCa {
    /// Signs certificates; holds the CA key and the CA's subject.
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM (one block), as sent to enrolling agents.
    cert_pem: String,
    /// The CA certificate, DER.
    cert_der: Vec<u8>,
    /// `sha256:<hex>` of the CA's SubjectPublicKeyInfo.
    pin: String,
    /// End of the CA's validity: no issued certificate outlives it.
    not_after: OffsetDateTime,
    /// `ca.crt`, for errors.
    cert_path: PathBuf,
}

impl std::fmt::Debug for HubCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubCa")
            .field("pin", &self.pin)
            .field("not_after", &self.not_after)
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

/// A client certificate signed for a node's own key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// End of its validity (what the agent schedules renewal from).
    pub not_after: OffsetDateTime,
    /// Its serial number, lowercase hex (for the audit log).
    pub serial: String,
}

/// A certificate issued together with a new key made by the hub (server and admin
/// certificates). `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PKCS#8 PEM. Secret.
    pub key_pem: String,
    /// End of its validity.
    pub not_after: OffsetDateTime,
    /// Its serial number, lowercase hex.
    pub serial: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("key_pem", &"<secret, not shown>")
            .field("not_after", &self.not_after)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

impl HubCa {
    /// Loads the CA from `<state_dir>/pki/`, creating it on first start: an ECDSA P-256 key,
    /// a self-signed certificate (CN `rke2-ops-hub-ca@<unix now>`, 10 years, keyCertSign and
    /// cRLSign, path length 0), both 0600 and written as one crash-safe set.
    ///
    /// An operator-provided CA works too: put its `ca.crt` and `ca.key` there before the
    /// first start.
    ///
    /// # Errors
    /// [`PkiError`] naming the file: unreadable, not a certificate or key, a key that is not
    /// the certificate's, not a CA, expired, or only one of the two files present.
    pub fn load_or_create(state_dir: &Path, now: OffsetDateTime) -> Result<Self, PkiError> {
        let dir = state_dir.join(PKI_DIR);
        create_private_dir(&dir)?;
        let key_path = dir.join(CA_KEY_FILE);
        let cert_path = dir.join(CA_CERT_FILE);
        finish_interrupted_write(&[&key_path, &cert_path])?;
        let mut created = false;
        match (key_path.exists(), cert_path.exists()) {
            (true, true) => {}
            (false, false) => {
                let (key_pem, cert_pem) = create_ca(now)?;
                write_files_together(&[
                    (&key_path, key_pem.as_bytes()),
                    (&cert_path, cert_pem.as_bytes()),
                ])?;
                created = true;
            }
            (true, false) => {
                return Err(PkiError::HalfCa {
                    present: key_path,
                    missing: cert_path,
                });
            }
            (false, true) => {
                return Err(PkiError::HalfCa {
                    present: cert_path,
                    missing: key_path,
                });
            }
        }
        let ca = Self::load(&key_path, &cert_path, now)?;
        if created {
            tracing::info!(path = %cert_path.display(), pin = %ca.pin, "created the hub CA");
        }
        Ok(ca)
    }

    /// Loads the CA from `<state_dir>/pki/` and never creates one, nor any file or folder:
    /// for commands other than `serve` (`admin-cert create`), which must fail on a wrong or
    /// empty state dir instead of minting a CA no agent trusts.
    ///
    /// # Errors
    /// [`PkiError::NoCa`] naming the state dir when neither file exists; otherwise as
    /// [`Self::load_or_create`].
    pub fn load_existing(state_dir: &Path, now: OffsetDateTime) -> Result<Self, PkiError> {
        let dir = state_dir.join(PKI_DIR);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_path = dir.join(CA_CERT_FILE);
        match (key_path.exists(), cert_path.exists()) {
            (true, true) => Self::load(&key_path, &cert_path, now),
            (false, false) => Err(PkiError::NoCa {
                cert_file: CA_CERT_FILE,
                key_file: CA_KEY_FILE,
                state_dir: state_dir.to_path_buf(),
                pki_dir: dir,
            }),
            (true, false) => Err(PkiError::HalfCa {
                present: key_path,
                missing: cert_path,
            }),
            (false, true) => Err(PkiError::HalfCa {
                present: cert_path,
                missing: key_path,
            }),
        }
    }

    /// Reads and checks an existing CA.
    fn load(key_path: &Path, cert_path: &Path, now: OffsetDateTime) -> Result<Self, PkiError> {
        let key_pem = read_text(key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::Content {
            path: key_path.to_path_buf(),
            reason: format!("not a usable private key: {e}"),
        })?;
        let cert_der = first_certificate(&read_text(cert_path)?, cert_path)?;
        let cert = parse_certificate(&cert_der, cert_path)?;
        if !cert.is_ca() {
            return Err(PkiError::NotACa {
                path: cert_path.to_path_buf(),
            });
        }
        if key.der_bytes() != &*cert.public_key().subject_public_key.data {
            return Err(PkiError::CaKeyMismatch {
                key: key_path.to_path_buf(),
                cert: cert_path.to_path_buf(),
            });
        }
        let not_after = cert.validity().not_after.to_datetime();
        if not_after <= now {
            return Err(PkiError::CaExpired {
                path: cert_path.to_path_buf(),
                not_after,
            });
        }
        let pin = spki_pin(cert.public_key().raw);
        let issuer = Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key).map_err(|e| {
            PkiError::Content {
                path: cert_path.to_path_buf(),
                reason: format!("cannot sign with this CA certificate: {e}"),
            }
        })?;
        Ok(Self {
            issuer,
            cert_pem: pem_encode("CERTIFICATE", &cert_der),
            cert_der,
            pin,
            not_after,
            cert_path: cert_path.to_path_buf(),
        })
    }

    /// `sha256:<hex>` of the CA certificate's DER SubjectPublicKeyInfo: kubeadm's
    /// discovery-token-ca-cert-hash, printed with every join token.
    #[must_use]
    pub fn ca_pin(&self) -> String {
        self.pin.clone()
    }

    /// The CA certificate, PEM: returned to agents at enrollment, trusted by the TLS layer.
    #[must_use]
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    #[must_use]
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// End of the CA's validity.
    #[must_use]
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Signs a node's CSR: after [`check_node_csr`] passes, a
    /// client certificate for the node's own key with CN = node name, O = `rke2-ops:nodes`,
    /// extended key usage clientAuth only, 90 days (never past the CA's end), random serial.
    ///
    /// # Errors
    /// The CSR check's [`PkiError`]; [`PkiError::CaExpired`]; [`PkiError::Build`] or
    /// [`PkiError::Random`] if signing fails.
    pub fn sign_node_csr(
        &self,
        csr_pem: &str,
        claimed_node_name: &str,
        now: OffsetDateTime,
    ) -> Result<SignedCert, PkiError> {
        let request = check_node_csr(csr_pem, claimed_node_name)?;
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(&request.spki_der).map_err(|e| {
            PkiError::CsrUnsupportedKey {
                node: request.node.clone(),
                key: e.to_string(),
            }
        })?;
        let params = client_params(&request.node, NODE_ORGANIZATION);
        let what = || format!("sign the certificate of node {}", request.node);
        let (cert, not_after, serial) =
            self.issue(params, &public_key, now, NODE_CERT_LIFETIME, what)?;
        Ok(SignedCert {
            cert_pem: cert.pem(),
            not_after,
            serial,
        })
    }

    /// Issues an admin client certificate and its new key for remote CLI use: CN
    /// `admin:<name>`, O `rke2-ops:admins`, clientAuth only, 1 year.
    ///
    /// # Errors
    /// [`PkiError::InvalidAdminName`]; otherwise as [`Self::sign_node_csr`].
    pub fn issue_admin_cert(
        &self,
        name: &str,
        now: OffsetDateTime,
    ) -> Result<IssuedCert, PkiError> {
        validate_admin_name(name)?;
        let key = new_key()?;
        let params = client_params(&format!("{ADMIN_CN_PREFIX}{name}"), ADMIN_ORGANIZATION);
        let what = || format!("issue the admin certificate of {name}");
        let (cert, not_after, serial) = self.issue(params, &key, now, ADMIN_CERT_LIFETIME, what)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after,
            serial,
        })
    }

    /// Issues the hub's gRPC server certificate and its new key: the given DNS names and IP
    /// addresses as SANs, serverAuth only, 1 year. Prefer [`Self::load_or_issue_server`],
    /// which keeps it across restarts.
    ///
    /// # Errors
    /// [`PkiError::NoServerNames`] or [`PkiError::InvalidServerName`]; otherwise as
    /// [`Self::sign_node_csr`].
    pub fn issue_server_cert(
        &self,
        sans: &[String],
        now: OffsetDateTime,
    ) -> Result<IssuedCert, PkiError> {
        if sans.is_empty() {
            return Err(PkiError::NoServerNames);
        }
        let subject_alt_names = sans
            .iter()
            .map(|name| ServerName::parse(name).and_then(|name| name.to_san()))
            .collect::<Result<Vec<_>, _>>()?;
        let key = new_key()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, SERVER_CN);
        params.subject_alt_names = subject_alt_names;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let what = || "issue the hub's server certificate".to_owned();
        let (cert, not_after, serial) =
            self.issue(params, &key, now, SERVER_CERT_LIFETIME, what)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after,
            serial,
        })
    }

    /// Signs `params` for `public_key`: validity from `now` (backdated by the clock-skew
    /// allowance) for `lifetime`, capped at the CA's end; random serial; authority key id.
    fn issue(
        &self,
        mut params: CertificateParams,
        public_key: &impl PublicKeyData,
        now: OffsetDateTime,
        lifetime: Duration,
        what: impl Fn() -> String,
    ) -> Result<(Certificate, OffsetDateTime, String), PkiError> {
        if self.not_after <= now {
            return Err(PkiError::CaExpired {
                path: self.cert_path.clone(),
                not_after: self.not_after,
            });
        }
        let now = whole_seconds(now);
        let not_after = (now + lifetime).min(self.not_after);
        let serial = random_serial()?;
        params.not_before = now - CLOCK_SKEW_ALLOWANCE;
        params.not_after = not_after;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(|source| PkiError::Build {
                what: what(),
                source,
            })?;
        Ok((cert, not_after, hex::encode(serial)))
    }
}

impl HubCa {
    /// The hub's server identity for `sans` (DNS names and IP addresses): the stored one
    /// when still good (see [`reissue_reason`]), otherwise a new one, stored 0600 as a
    /// crash-safe pair. Logs why it reissued.
    ///
    /// # Errors
    /// [`PkiError::NoServerNames`] / [`PkiError::InvalidServerName`] for bad names; issuance
    /// errors; a [`PkiError::File`] naming the file that could not be written.
    pub fn load_or_issue_server(
        &self,
        state_dir: &Path,
        sans: &[String],
        now: OffsetDateTime,
    ) -> Result<ServerIdentity, PkiError> {
        if sans.is_empty() {
            return Err(PkiError::NoServerNames);
        }
        let wanted = sans
            .iter()
            .map(|name| ServerName::parse(name))
            .collect::<Result<BTreeSet<_>, _>>()?;
        let dir = state_dir.join(PKI_DIR);
        create_private_dir(&dir)?;
        let key_path = dir.join(SERVER_KEY_FILE);
        let cert_path = dir.join(SERVER_CERT_FILE);
        finish_interrupted_write(&[&key_path, &cert_path])?;

        let reason = match self.read_stored_server(&key_path, &cert_path) {
            Ok(None) => Some(ReissueReason::Missing),
            Ok(Some((stored, identity))) => match reissue_reason(&stored, &wanted, now) {
                None => return Ok(identity),
                reason => reason,
            },
            Err(e) => Some(ReissueReason::Unreadable(e.to_string())),
        };
        let names: Vec<String> = wanted.iter().map(ToString::to_string).collect();
        let issued = self.issue_server_cert(&names, now)?;
        let cert_chain_pem = format!("{}{}", issued.cert_pem, self.cert_pem());
        write_files_together(&[
            (&key_path, issued.key_pem.as_bytes()),
            (&cert_path, cert_chain_pem.as_bytes()),
        ])?;
        if let Some(reason) = &reason {
            tracing::info!(
                path = %cert_path.display(),
                names = %names.join(","),
                not_after = %issued.not_after,
                %reason,
                "issued the hub's server certificate"
            );
        }
        Ok(ServerIdentity {
            cert_chain_pem,
            key_pem: issued.key_pem,
            not_after: issued.not_after,
            reissued: reason,
        })
    }

    /// The stored server certificate's facts and identity; `Ok(None)` when a file is missing.
    fn read_stored_server(
        &self,
        key_path: &Path,
        cert_path: &Path,
    ) -> Result<Option<(StoredServerCert, ServerIdentity)>, PkiError> {
        if !key_path.exists() || !cert_path.exists() {
            return Ok(None);
        }
        let key_pem = read_text(key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::Content {
            path: key_path.to_path_buf(),
            reason: format!("not a usable private key: {e}"),
        })?;
        let leaf_der = first_certificate(&read_text(cert_path)?, cert_path)?;
        let leaf = parse_certificate(&leaf_der, cert_path)?;
        let ca_der = self.cert_der();
        let ca = parse_certificate(ca_der, cert_path)?;
        let names = leaf
            .subject_alternative_name()
            .map_err(|e| PkiError::Content {
                path: cert_path.to_path_buf(),
                reason: format!("unreadable subjectAltName: {e}"),
            })?
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(server_name_of)
                    .collect()
            })
            .unwrap_or_default();
        let stored = StoredServerCert {
            names,
            not_after: leaf.validity().not_after.to_datetime(),
            signed_by_current_ca: leaf.verify_signature(Some(ca.public_key())).is_ok(),
            key_matches: key.der_bytes() == &*leaf.public_key().subject_public_key.data,
        };
        let identity = ServerIdentity {
            cert_chain_pem: format!(
                "{}{}",
                pem_encode("CERTIFICATE", &leaf_der),
                self.cert_pem()
            ),
            key_pem,
            not_after: stored.not_after,
            reissued: None,
        };
        Ok(Some((stored, identity)))
    }
}

/// Makes a new CA: (key PEM, certificate PEM).
fn create_ca(now: OffsetDateTime) -> Result<(String, String), PkiError> {
    let key = new_key()?;
    let now = whole_seconds(now);
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("rke2-ops-hub-ca@{}", now.unix_timestamp()),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - CLOCK_SKEW_ALLOWANCE;
    params.not_after = now + CA_LIFETIME;
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    let cert = params.self_signed(&key).map_err(|source| PkiError::Build {
        what: "create the hub CA".to_owned(),
        source,
    })?;
    Ok((key.serialize_pem(), cert.pem()))
}

/// Subject and usages of a client certificate.
fn client_params(common_name: &str, organization: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, organization);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

/// A new ECDSA P-256 key.
fn new_key() -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| PkiError::Build {
        what: "generate an ECDSA P-256 key".to_owned(),
        source,
    })
}

/// 16 random bytes, positive and without a leading zero byte (so the DER INTEGER is exactly
/// these bytes and the hex in [`SignedCert::serial`] matches what tools print).
fn random_serial() -> Result<[u8; 16], PkiError> {
    let mut serial = [0u8; 16];
    SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| PkiError::Random {
            what: "a certificate serial number",
        })?;
    serial[0] = (serial[0] & 0x7f) | 0x40;
    Ok(serial)
}

/// X.509 times have whole seconds; truncating first makes the returned `not_after` exact.
fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t - Duration::nanoseconds(i64::from(t.nanosecond()))
}

fn read_text(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| {
        PkiError::File(rke2ops_common::identity::FileError {
            path: path.to_path_buf(),
            action: "read",
            source,
        })
    })
}

/// The DER of the first `CERTIFICATE` block of `pem`.
fn first_certificate(pem: &str, path: &Path) -> Result<Vec<u8>, PkiError> {
    let content = |reason: String| PkiError::Content {
        path: path.to_path_buf(),
        reason,
    };
    for block in Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| content(format!("malformed PEM: {e}")))?;
        if block.label == "CERTIFICATE" {
            return Ok(block.contents);
        }
    }
    Err(content("no CERTIFICATE block".to_owned()))
}

fn parse_certificate<'a>(der: &'a [u8], path: &Path) -> Result<X509Certificate<'a>, PkiError> {
    X509Certificate::from_der(der)
        .map(|(_, cert)| cert)
        .map_err(|e| PkiError::Content {
            path: path.to_path_buf(),
            reason: format!("not an X.509 certificate: {e}"),
        })
}

/// PEM with LF line endings and 64-character lines.
fn pem_encode(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}
