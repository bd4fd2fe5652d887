//! The hub's PKI for agent↔hub mutual TLS and enrollment, in kubeadm's model: a short-lived
//! join token authenticates a new node to the hub, the hub CA's pin authenticates the hub to
//! the node, the node makes its own key, and the hub signs a client certificate whose CN is
//! the node name.
//!
//! - [`HubCa`] (`ca`): the CA in `<state_dir>/pki/` (created on first start), its pin, every
//!   issuance (node certificates from CSRs, admin certificates, the server certificate, kept
//!   across restarts), the lifetimes and file names, and the PEM helpers they use.
//! - `csr`: the checks a node's CSR passes before it is signed.
//! - [`server`]: the server certificate's names and the pure decision when to reissue it.
//! - [`peer_identity`] (`peer`): node or admin, from a verified client certificate.
//! - `credential`: which certificate serial is still accepted, who may enroll a name, where a
//!   node's role comes from (pure decisions; the store keeps the facts).
//! - [`token`]: join tokens (`<id>.<secret>`), their parsing and the hash the store keeps.
//!
//! Files (all 0600 in a 0700 folder, each pair written crash-safely, see
//! `rke2ops_common::identity`): `ca.crt`, `ca.key`, `server.crt` (leaf then CA), `server.key`.
//!
//! The submodules import from each other in one direction (`ca` uses `csr`, `peer`, `server`
//! and `error`; those use only `error`); this file only declares and re-exports.
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

pub use ca::{
    ADMIN_CERT_LIFETIME, CA_CERT_FILE, CA_KEY_FILE, CA_LIFETIME, CLOCK_SKEW_ALLOWANCE, HubCa,
    IssuedCert, NODE_CERT_LIFETIME, PKI_DIR, SERVER_CERT_FILE, SERVER_CERT_LIFETIME,
    SERVER_KEY_FILE, SignedCert,
};
pub use credential::{
    CredentialFacts, CredentialRefusal, CredentialVerdict, EnrollmentKind, EnrollmentRefusal,
    HelloCluster, HelloRole, RevocationReason, TokenBinding, certificate_serial, enrolled_role,
    hello_cluster, hello_role, judge_cluster, judge_credential, judge_enrollment,
    role_from_node_labels, serial_hex,
};
pub use csr::{CheckedCsr, MAX_CSR_PEM_LEN, check_node_csr};
pub use error::PkiError;
pub use peer::{
    ADMIN_CN_PREFIX, ADMIN_ORGANIZATION, NODE_ORGANIZATION, PeerIdentity, peer_identity,
    validate_admin_name,
};
pub use rke2ops_common::identity::{pin_of, renewal_due, verify_pin};
pub use server::{SERVER_REISSUE_BEFORE, ServerIdentity, ServerName};

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap in a test names its line, which is enough
mod tests;
