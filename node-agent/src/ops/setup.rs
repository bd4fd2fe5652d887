//! Builds the operation runner from the agent's configuration, in one place for the CLI, the
//! daemon's resume at start and the hub's commands, so they agree on what a node is and
//! report a bad `config.yaml` as such rather than as a D-Bus failure.

use std::path::PathBuf;
use std::time::Duration;

use super::artifacts;
use super::journal::{Journal, JournalError};
use super::runner::Runner;
use crate::config::Config;
use crate::dbus::Systemd;
use crate::health::node_config::NodeConfig;
use crate::health::{HealthError, NodeProbes};
use crate::journald::Journald;
use crate::service::ServiceError;

/// Everything an operation needs to know about the node.
#[derive(Debug, Clone)]
pub struct NodeSetup {
    /// RKE2's data dir.
    pub data_dir: PathBuf,
    /// RKE2's admin kubeconfig (written by RKE2 on servers).
    pub admin_kubeconfig: PathBuf,
    /// Kubeconfig copies to refresh after a rotation.
    pub kubeconfig_copies: Vec<PathBuf>,
    /// The `rke2` binary (for `certificate rotate`).
    pub rke2_bin: PathBuf,
    /// This node's IP (from config.yaml).
    pub node_ip: std::net::IpAddr,
    /// kubelet's health endpoint, `host:port`.
    pub kubelet_healthz: String,
    /// How long RKE2 may take to become ready after a start.
    pub ready_timeout: Duration,
    /// Where RKE2's tarball is installed (`<prefix>/bin/rke2`...).
    pub install_prefix: PathBuf,
    /// Where the units of a tarball outside `/usr/local` live (install.sh moves them to
    /// `/etc/systemd/system`; a test's own folder in tests).
    pub moved_unit_dir: PathBuf,
    /// Upgrades' artifact source when the request names none.
    pub artifact_source: Option<String>,
    /// Where upgrades may fetch from (empty: anywhere), checked before anything starts.
    pub allowed_artifact_sources: Vec<artifacts::Source>,
    /// How RPM installs are upgraded.
    pub rpm: crate::config::RpmConfig,
    /// config.yaml's `cni` (empty: RKE2's default, canal): which CNI image archive an
    /// air-gapped node stages when the release has no all-in-one archive.
    pub cni: Vec<String>,
}

impl NodeSetup {
    /// The probes of this node's endpoints.
    #[must_use]
    pub fn probes(&self) -> NodeProbes {
        NodeProbes::new(
            self.node_ip,
            self.kubelet_healthz.clone(),
            self.data_dir.clone(),
        )
    }
}

/// Why the runner could not be built; each variant names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum RunnerSetupError {
    /// RKE2's `config.yaml` cannot be read or is invalid. Shown as the file and the reason,
    /// as the CLI always showed it.
    #[error("{path}: {reason}")]
    NodeConfig {
        /// The file (`node_config` in the agent's configuration).
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The operation journal's folder cannot be opened.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// systemd cannot be reached over D-Bus.
    #[error(transparent)]
    Systemd(ServiceError),
}

/// What operations need, from the configuration and the node's config.yaml.
///
/// # Errors
/// [`RunnerSetupError::NodeConfig`] when config.yaml is unreadable or invalid.
pub fn node_setup(config: &Config) -> Result<NodeSetup, RunnerSetupError> {
    let node = NodeConfig::load(&config.node_config).map_err(|e| match e {
        HealthError::Config { path, reason } => RunnerSetupError::NodeConfig { path, reason },
        // `load` reports nothing else; named for the file all the same.
        other => RunnerSetupError::NodeConfig {
            path: config.node_config.clone(),
            reason: other.to_string(),
        },
    })?;
    Ok(NodeSetup {
        data_dir: config.data_dir.clone(),
        admin_kubeconfig: config.admin_kubeconfig.clone(),
        kubeconfig_copies: config.kubeconfigs.clone(),
        rke2_bin: effective_rke2_bin(&config.rke2_bin),
        node_ip: node.node_ip,
        kubelet_healthz: config.kubelet_healthz_addr.clone(),
        ready_timeout: config.ready_timeout,
        install_prefix: config.install_prefix.clone(),
        moved_unit_dir: PathBuf::from(super::install::MOVED_UNIT_DIR),
        artifact_source: config.artifact_source.clone(),
        allowed_artifact_sources: config.allowed_artifact_sources.clone(),
        rpm: config.rpm.clone(),
        cni: node.cni,
    })
}

/// The `rke2` binary to run: the configured one, unless it is missing and an RPM install's
/// `/usr/bin/rke2` or install.sh's other prefix's `/opt/rke2/bin/rke2` exists (the default
/// names the `/usr/local` tarball's; such nodes need no setting).
#[must_use]
pub fn effective_rke2_bin(configured: &std::path::Path) -> PathBuf {
    if configured.exists() {
        return configured.to_path_buf();
    }
    [rke2ops_common::install::RPM_BINARY, "/opt/rke2/bin/rke2"]
        .iter()
        .map(std::path::Path::new)
        .find(|p| p.is_file())
        .map_or_else(|| configured.to_path_buf(), std::path::Path::to_path_buf)
}

impl Runner<Systemd, NodeProbes, Journald> {
    /// The runner of this node: config.yaml read first (so a bad one is reported as
    /// itself), then the journal under `<state_dir>/ops`, then systemd over D-Bus with the
    /// configured job timeout.
    ///
    /// # Errors
    /// [`RunnerSetupError`], one variant per thing that can be wrong.
    pub async fn from_config(config: &Config) -> Result<Self, RunnerSetupError> {
        let setup = node_setup(config)?;
        let journal = Journal::open(config.state_dir.join("ops"))?;
        let systemd = Systemd::connect()
            .await
            .map_err(RunnerSetupError::Systemd)?
            .with_job_timeout(config.ready_timeout);
        Ok(Self::new(systemd, setup, journal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_config() -> Config {
        Config::resolve(Default::default(), Default::default()).expect("the defaults resolve")
    }

    #[test]
    fn an_invalid_config_yaml_is_reported_as_itself_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, "node-ip: [unclosed\n").expect("write");
        let mut config = default_config();
        config.node_config.clone_from(&file);
        config.state_dir = dir.path().join("state");
        let err = node_setup(&config).expect_err("invalid yaml");
        assert!(
            matches!(&err, RunnerSetupError::NodeConfig { path, .. } if *path == file),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with(&file.display().to_string()),
            "{err}"
        );
    }

    #[tokio::test]
    async fn the_runner_is_not_built_past_an_invalid_config_yaml() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, "node-ip: not-an-ip\n").expect("write");
        let mut config = default_config();
        config.node_config.clone_from(&file);
        config.state_dir = dir.path().join("state");
        // Whether or not this machine has a system bus, the config is what is reported.
        let err = Runner::from_config(&config).await.expect_err("invalid ip");
        assert!(
            matches!(err, RunnerSetupError::NodeConfig { .. }),
            "{err:?}"
        );
        assert!(!dir.path().join("state").exists(), "nothing created");
    }

    #[test]
    fn a_hub_operation_rejected_for_a_bad_config_yaml_names_the_file_not_d_bus() {
        let err = super::super::runner::OpError::from(RunnerSetupError::NodeConfig {
            path: "/etc/rancher/rke2/config.yaml".into(),
            reason: "node-ip \"x\": invalid IP address syntax".to_owned(),
        })
        .to_string();
        assert!(
            err.starts_with("/etc/rancher/rke2/config.yaml: node-ip"),
            "{err}"
        );
        assert!(!err.contains("systemd"), "{err}");
    }
}
