//! The hub's Kubernetes access for the engine, from the configuration.

use std::sync::Arc;

use super::cluster::Cluster;
use crate::config::Config;

/// The cluster access `config` asks for (none without a kubeconfig).
///
/// # Errors
/// When the kubeconfig cannot be used.
pub fn from_config(config: &Config) -> anyhow::Result<Option<Arc<dyn Cluster>>> {
    match &config.kubeconfig {
        None => Ok(None),
        Some(path) => anyhow::bail!(
            "kubeconfig {}: Kubernetes access not wired yet",
            path.display()
        ),
    }
}
