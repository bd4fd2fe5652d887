//! What can go wrong talking to the Kubernetes API, one variant per failure the plan engine
//! reacts to differently.

use std::path::PathBuf;

/// A failure of [`super::KubeAccess`].
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// No apiserver answered (connection refused, timeout, TLS failure, or a 5xx from a
    /// server that lost its etcd) — every endpoint was tried.
    #[error("Kubernetes API unreachable (tried {}): {last}", tried.join(", "))]
    Unreachable {
        /// The endpoints tried, in order.
        tried: Vec<String>,
        /// The last endpoint's error.
        last: String,
    },
    /// The kubeconfig cannot be read or used.
    #[error("kubeconfig {}: {reason}", path.display())]
    Config {
        /// The kubeconfig file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The Node does not exist.
    #[error("node {0} not found in the Kubernetes API")]
    NodeNotFound(String),
    /// An eviction kept being refused (429) until the drain timeout.
    #[error("drain blocked: evicting {pod} was refused {attempts} time(s){}", pdb.as_ref().map(|p| format!(" by PodDisruptionBudget {p}")).unwrap_or_default())]
    DrainBlocked {
        /// `namespace/name` of the pod that could not be evicted.
        pod: String,
        /// The PodDisruptionBudget that refused it, when known.
        pdb: Option<String>,
        /// Eviction attempts made for it.
        attempts: u32,
    },
    /// Evicted pods were still present at the drain timeout.
    #[error("drain timed out waiting for pods to terminate: {}", pods.join(", "))]
    DrainTimeout {
        /// `namespace/name` of each pod still there.
        pods: Vec<String>,
    },
    /// The API refused a request (4xx other than the cases above) or answered nonsense.
    #[error("Kubernetes API: {0}")]
    Api(String),
}
