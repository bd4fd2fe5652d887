//! The certificate inventory's value types: what one scan found.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::status::{CertStatus, cert_status};

/// A usage as RKE2 names it in `certificate check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Usage {
    /// KeyUsage keyCertSign: a CA.
    CertSign,
    /// ExtKeyUsage serverAuth.
    ServerAuth,
    /// ExtKeyUsage clientAuth.
    ClientAuth,
}

impl Usage {
    /// The word RKE2 prints.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CertSign => "CertSign",
            Self::ServerAuth => "ServerAuth",
            Self::ClientAuth => "ClientAuth",
        }
    }
}

/// Where a certificate was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// A PEM file of the TLS tree.
    File,
    /// A `*-data` field of a kubeconfig.
    Kubeconfig {
        /// `certificate-authority-data` or `client-certificate-data`.
        field: String,
        /// The cluster or user entry it belongs to.
        entry: String,
    },
}

/// Outcome of checking a leaf against the CAs of the same tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ChainCheck {
    /// CA certificates and chain entries are not checked.
    NotApplicable,
    /// The signature verifies with the public key of the CA in `ca_path`.
    Verified {
        /// The CA file (relative to the data dir).
        ca_path: String,
    },
    /// A CA with the issuer's name exists but its key did not sign this certificate.
    BadSignature {
        /// The CA file whose key was tried.
        ca_path: String,
    },
    /// No CA with the issuer's name was found in the tree.
    UnknownIssuer,
}

/// Outcome of checking the `.key` beside a leaf's `.crt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum KeyCheck {
    /// Not a leaf of a file with a sibling key (chain entries, CAs, kubeconfig data).
    NotApplicable,
    /// No `.key` beside the `.crt` (some files, like `*.nochain.crt`, have none).
    Missing,
    /// The key's public half equals the certificate's.
    Matches,
    /// The key belongs to another certificate.
    Mismatch,
    /// The key file could not be used.
    Unusable {
        /// Why.
        reason: String,
    },
}

/// One certificate of one PEM bundle (or kubeconfig field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertEntry {
    /// Path relative to the data dir; absolute for kubeconfigs outside it.
    pub path: String,
    /// The file's base name (RKE2's FILENAME column).
    pub filename: String,
    /// Position in the bundle: 0 is the file's first certificate.
    pub index: usize,
    /// Where it was found.
    pub origin: Origin,
    /// Full subject in certificate order (`O=system:masters, CN=system:admin`).
    pub subject: String,
    /// The subject's common name (RKE2's SUBJECT column); empty if none.
    pub subject_cn: String,
    /// Full issuer name.
    pub issuer: String,
    /// Serial number, colon-separated hex.
    pub serial: String,
    /// DNS names and IP addresses of the SubjectAltName extension.
    pub sans: Vec<String>,
    /// Usages in RKE2's vocabulary, in RKE2's order.
    pub usages: Vec<Usage>,
    /// basicConstraints CA:true.
    pub is_ca: bool,
    /// Start of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// Leaf vs. the tree's CAs.
    pub chain: ChainCheck,
    /// Leaf vs. its `.key`.
    pub key: KeyCheck,
    /// SHA-256 of the DER, hex; identifies the certificate across scans.
    pub fingerprint: String,
}

impl CertEntry {
    /// RKE2's status of this certificate at `now` with a warning window of `warn`.
    #[must_use]
    pub fn status(&self, now: OffsetDateTime, warn: Duration) -> CertStatus {
        cert_status(self.not_before, self.not_after, now, warn)
    }

    /// A leaf is what RKE2 reissues: every non-CA certificate.
    #[must_use]
    pub fn is_leaf(&self) -> bool {
        !self.is_ca
    }

    /// Usages joined by `,` as RKE2 prints them (`Unknown` when none).
    #[must_use]
    pub fn usages_label(&self) -> String {
        if self.usages.is_empty() {
            return "Unknown".to_owned();
        }
        self.usages
            .iter()
            .map(|u| u.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Why a file contributed no certificate (or a problem found beside its certificates).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileError {
    /// Path as in [`CertEntry::path`].
    pub path: String,
    /// Machine-friendly reason class (a metrics label: bounded set).
    pub kind: ErrorKind,
    /// Human reason, naming what was wrong.
    pub reason: String,
}

/// The bounded set of error classes (used as the `reason` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The file is empty.
    Empty,
    /// No PEM block in it.
    NoPemData,
    /// A PEM block whose contents are not a certificate.
    BadDer,
    /// open/read failed (permissions, I/O, not a regular file).
    Unreadable,
    /// A symlink to nothing.
    DanglingSymlink,
    /// A symlink loop.
    SymlinkLoop,
    /// Over the size limit.
    TooLarge,
    /// The `.key` beside the certificate is not its key.
    KeyMismatch,
    /// The `.key` beside the certificate cannot be used.
    BadKey,
    /// The leaf does not verify against a CA of the tree.
    ChainInvalid,
    /// A kubeconfig that cannot be parsed, or a bad `*-data` field.
    BadKubeconfig,
}

impl ErrorKind {
    /// Label value for metrics.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::NoPemData => "no_pem_data",
            Self::BadDer => "bad_der",
            Self::Unreadable => "unreadable",
            Self::DanglingSymlink => "dangling_symlink",
            Self::SymlinkLoop => "symlink_loop",
            Self::TooLarge => "too_large",
            Self::KeyMismatch => "key_mismatch",
            Self::BadKey => "bad_key",
            Self::ChainInvalid => "chain_invalid",
            Self::BadKubeconfig => "bad_kubeconfig",
        }
    }
}

/// A backup folder left by `rke2 certificate rotate` (not live certificates).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    /// Path relative to the data dir (`server/tls-1732400000`).
    pub path: String,
    /// When it was made, from its name.
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
}

/// Everything one scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Certificates in stable order: path, then position in the file.
    pub certificates: Vec<CertEntry>,
    /// Files that could not be used, in path order.
    pub errors: Vec<FileError>,
    /// Rotation backups, oldest first.
    pub backups: Vec<Backup>,
}

impl Inventory {
    /// The newest rotation backup, if any.
    #[must_use]
    pub fn newest_backup(&self) -> Option<&Backup> {
        self.backups.iter().max_by_key(|b| b.created)
    }

    /// Leaves (what RKE2 reissues), in inventory order.
    pub fn leaves(&self) -> impl Iterator<Item = &CertEntry> {
        self.certificates.iter().filter(|c| c.is_leaf())
    }

    /// The worst status over every certificate at `now`; `None` for an empty inventory.
    #[must_use]
    pub fn worst_status(&self, now: OffsetDateTime, warn: Duration) -> Option<CertStatus> {
        self.certificates.iter().map(|c| c.status(now, warn)).max()
    }
}
