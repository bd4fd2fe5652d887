//! The hub's PKI for agent↔hub mutual TLS and enrollment, in kubeadm's model: a short-lived
//! join token authenticates a new node to the hub, the hub CA's pin authenticates the hub to
//! the node, the node makes its own key, and the hub signs a client certificate whose CN is
//! the node name.
//!
//! - [`HubCa`] (`ca`): the CA in `<state_dir>/pki/` (created on first start), its pin, and
//!   every issuance: node certificates from CSRs, admin certificates, the server certificate.
//! - `csr`: the checks a node's CSR passes before it is signed.
//! - [`server`]: the stored server certificate and when to reissue it.
//! - [`peer_identity`] (`peer`): node or admin, from a verified client certificate.
//! - `credential`: which certificate serial is still accepted, who may enroll a name, where a
//!   node's role comes from (pure decisions; the store keeps the facts).
//! - [`token`]: join tokens (`<id>.<secret>`), their parsing and the hash the store keeps.
//!
//! Files (all 0600 in a 0700 folder, each pair written crash-safely, see
//! `rke2ops_common::identity`): `ca.crt`, `ca.key`, `server.crt` (leaf then CA), `server.key`.
//!
//! This module owns no network, database or clock: callers pass `now`, and the gRPC layer
//! decides what a [`PeerIdentity`] may call. Nothing here logs or formats key material or
//! token secrets.

mod ca;
mod credential;
mod csr;
mod error;
mod peer;
pub mod server;
pub mod token;

use time::Duration;

pub use ca::{HubCa, IssuedCert, SignedCert};
pub use credential::{
    CredentialFacts, CredentialRefusal, CredentialVerdict, EnrollmentKind, EnrollmentRefusal,
    HelloRole, RevocationReason, TokenBinding, certificate_serial, enrolled_role, hello_role,
    judge_credential, judge_enrollment, role_from_node_labels, serial_hex,
};
pub use csr::{CheckedCsr, MAX_CSR_PEM_LEN, check_node_csr};
pub use error::PkiError;
pub use peer::{
    ADMIN_CN_PREFIX, ADMIN_ORGANIZATION, NODE_ORGANIZATION, PeerIdentity, peer_identity,
    validate_admin_name,
};
pub use rke2ops_common::identity::{pin_of, renewal_due, verify_pin};
pub use server::{ServerIdentity, ServerName};

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
/// The server certificate is reissued at start when it has less than this left.
pub const SERVER_REISSUE_BEFORE: Duration = Duration::days(30);
/// Certificates start this long before `now`, so a node whose clock is a little behind the
/// hub's accepts a certificate the moment it gets it.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::minutes(5);

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap in a test names its line, which is enough
mod tests;
