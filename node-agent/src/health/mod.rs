//! Health probes of the node's RKE2: the apiserver's `/readyz` over mutual TLS (servers),
//! the kubelet's `/healthz`, and etcd membership, health, alarms and quorum (servers). An
//! operation reaches them through [`HealthProbes`], so it can run against fakes in tests.
//!
//! Addresses come from the node's `/etc/rancher/rke2/config.yaml` (`node-ip`, default
//! 127.0.0.1) and RKE2's ports. Each probe reads the certificate files afresh, so after a
//! rotation it authenticates with the *new* certificates, as the design requires.

pub mod apiserver;
pub mod etcd;
pub mod kubelet;
pub mod node_config;
pub mod probes;

pub use probes::{HealthProbes, NodeProbes};

use std::path::PathBuf;

/// Why a probe could not be made or failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// A certificate or key file could not be used.
    #[error("{path}: {reason}")]
    Credentials {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The endpoint did not answer (connection, TLS or HTTP failure).
    #[error("{endpoint}: {reason}")]
    Unreachable {
        /// What was probed.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// The node's config.yaml is invalid.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}
