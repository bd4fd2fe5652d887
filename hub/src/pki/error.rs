//! Why the hub's PKI refused or failed. Every variant names the file, the node, the field or
//! the peer it is about; none carries key material or a token secret.

use std::path::PathBuf;

use rke2ops_common::identity::{FileError, NodeNameError};
use time::OffsetDateTime;

/// A failure of the hub's CA, of an issuance, or of a peer check.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A PKI file or folder could not be read, written or renamed.
    #[error(transparent)]
    File(#[from] FileError),
    /// A PKI file does not hold what it should (not PEM, not a certificate, not a key).
    #[error("{}: {reason}", path.display())]
    Content {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Only one half of the CA exists. The hub will not invent a new CA beside a lost one:
    /// every enrolled node would silently stop trusting it.
    #[error(
        "hub CA is incomplete: {} exists but {} does not; restore the missing file, or remove \
         both to create a new CA (every node must then enroll again)",
        present.display(),
        missing.display()
    )]
    HalfCa {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// There is no hub CA in the state dir, and this command must not create one (only
    /// `serve` does: a CA made by another command would not be the one agents pinned).
    #[error(
        "no hub CA in {} (expected {CA_CERT} and {CA_KEY} under {}); run this on the hub's \
         machine with its --state-dir, or start `rke2-hub serve --state-dir {}` once to create \
         the CA",
        state_dir.display(),
        pki_dir.display(),
        state_dir.display(),
        CA_CERT = cert_file,
        CA_KEY = key_file
    )]
    NoCa {
        /// The CA certificate's file name (`ca.crt`).
        cert_file: &'static str,
        /// The CA key's file name (`ca.key`).
        key_file: &'static str,
        /// The state dir that was given.
        state_dir: PathBuf,
        /// Its PKI folder.
        pki_dir: PathBuf,
    },
    /// The CA key is not the key of the CA certificate.
    #[error("{} is not the key of the CA certificate {}", key.display(), cert.display())]
    CaKeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// The CA certificate is not allowed to sign certificates.
    #[error("{} is not a CA certificate (basicConstraints CA:TRUE is missing)", path.display())]
    NotACa {
        /// The certificate file.
        path: PathBuf,
    },
    /// The CA has expired, so nothing it signs would be valid.
    #[error("hub CA {} expired at {not_after}", path.display())]
    CaExpired {
        /// The certificate file.
        path: PathBuf,
        /// When it expired.
        not_after: OffsetDateTime,
    },
    /// rcgen could not build or sign a certificate.
    #[error("cannot {what}: {source}")]
    Build {
        /// What was being built, e.g. "sign the certificate of node node-a".
        what: String,
        /// rcgen's error.
        source: rcgen::Error,
    },
    /// The system random source failed.
    #[error("the system random source failed while making {what}")]
    Random {
        /// What needed randomness (a serial number, a key).
        what: &'static str,
    },
    /// A node name (claimed by an agent, or in a CSR) is not a valid node name.
    #[error(transparent)]
    InvalidNodeName(#[from] NodeNameError),
    /// The CSR is not a parseable PEM `CERTIFICATE REQUEST`.
    #[error("certificate request for node {node:?} is unusable: {reason}")]
    CsrMalformed {
        /// The node the agent claims to be.
        node: String,
        /// What is wrong.
        reason: String,
    },
    /// The CSR's self-signature does not verify: it was altered, or not made with the key it
    /// carries.
    #[error(
        "certificate request for node {node:?} has an invalid signature (altered, or not \
         signed with its own key)"
    )]
    CsrBadSignature {
        /// The node the agent claims to be.
        node: String,
    },
    /// The CSR names another node than the one the agent claims to be.
    #[error("certificate request claims node {claimed:?} but its subject CN is {csr_cn:?}")]
    CsrNameMismatch {
        /// The node the agent claims to be.
        claimed: String,
        /// The CSR's CN (empty when it has none, or several joined by ", ").
        csr_cn: String,
    },
    /// The CSR asks to be a CA; nodes only ever get client certificates.
    #[error("certificate request for node {node:?} asks for a CA certificate ({what})")]
    CsrRequestsCa {
        /// The node the agent claims to be.
        node: String,
        /// Which request: `basicConstraints CA:TRUE`, `keyCertSign`, `cRLSign`.
        what: &'static str,
    },
    /// The CSR's key is of a type the hub does not sign.
    #[error(
        "certificate request for node {node:?} carries a {key} key; only ECDSA P-256, \
         ECDSA P-384 and Ed25519 keys are signed"
    )]
    CsrUnsupportedKey {
        /// The node the agent claims to be.
        node: String,
        /// The key's algorithm (and curve), as far as it could be read.
        key: String,
    },
    /// An admin name is not usable in a certificate CN.
    #[error("admin name {name:?} is invalid: {reason}")]
    InvalidAdminName {
        /// The refused name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A server certificate was asked for without any name.
    #[error("the hub's server certificate needs at least one DNS name or IP address")]
    NoServerNames,
    /// A server name is neither an IP address nor an ASCII DNS name.
    #[error("server name {name:?} is neither an IP address nor an ASCII DNS name")]
    InvalidServerName {
        /// The refused name.
        name: String,
    },
    /// A peer's certificate is not X.509 DER.
    #[error("peer certificate is not X.509 DER: {reason}")]
    PeerUnparseable {
        /// The parser's message.
        reason: String,
    },
    /// A peer's certificate is neither a node's nor an admin's.
    #[error("peer certificate {subject} is not a node or admin certificate: {reason}")]
    UnknownPeer {
        /// The certificate's subject, as text.
        subject: String,
        /// Why it is not recognised.
        reason: String,
    },
}
