//! The command line of `rke2-node-agent`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{DEFAULT_CONFIG_PATH, Overrides};

/// Per-node agent of rke2-ops: watches RKE2's certificates and exports their state.
#[derive(Debug, Parser)]
#[command(name = "rke2-node-agent", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print every certificate with RKE2's status words; exit 0 all OK, 1 any WARNING, 2 any
    /// EXPIRED, NOT YET VALID or unusable file.
    Check(CheckArgs),
    /// Run the daemon: watch the certificates, serve /metrics and /healthz, notify systemd.
    Run(RunArgs),
    /// Rotate this node's certificates: stop RKE2, `rke2 certificate rotate`, start, verify;
    /// restores the backup when RKE2 does not come back healthy. Exit 0 only after a
    /// verified success.
    Rotate(RotateArgs),
    /// Restart RKE2 so it renews leaves inside the 120-day window, and verify they were.
    Restart(OpArgs),
    /// Unit state, health and renewal deadline of this node.
    Status(StatusArgs),
    /// Finish an operation that was interrupted (the daemon also does this when it starts).
    Resume(OpArgs),
    /// Upgrade RKE2 on this node from a release tarball (mirror URL or air-gap folder):
    /// verify its sha256, install keeping the previous files, restart, wait ready, check the
    /// version; roll back when the new release does not become ready. Already at or above
    /// the target: skipped (exit 0).
    Upgrade(UpgradeArgs),
}

/// `upgrade` options.
#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Target version, e.g. v1.34.1+rke2r1.
    #[arg(long)]
    pub version: String,
    /// Artifact source for this run (URL prefix or absolute folder) [default: the configured
    /// `artifact_source`].
    #[arg(long)]
    pub source: Option<String>,
    /// Leave the new release in place when it does not become ready (report only).
    #[arg(long)]
    pub no_rollback: bool,
    /// Print what would happen and where from; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `rotate` options.
#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Rotate only this service's certificates (repeatable; RKE2's names, e.g. kubelet).
    #[arg(long = "service", short = 's')]
    pub services: Vec<String>,
    /// Print what would happen and run the read-only preflight; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Options of `restart` and `resume`.
#[derive(Debug, Args)]
pub struct OpArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Print what would happen; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `status` options.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Options every subcommand shares.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Configuration file (TOML). The default path may be absent; a path given here must exist.
    #[arg(long, env = "RKE2OPS_CONFIG")]
    pub config: Option<PathBuf>,
    /// RKE2's data dir [default: /var/lib/rancher/rke2].
    #[arg(long, env = "RKE2OPS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// RKE2's admin kubeconfig [default: /etc/rancher/rke2/rke2.yaml].
    #[arg(long, env = "RKE2OPS_ADMIN_KUBECONFIG")]
    pub admin_kubeconfig: Option<PathBuf>,
    /// Extra kubeconfig whose embedded certificates are inspected (repeatable).
    #[arg(
        long = "kubeconfig",
        env = "RKE2OPS_KUBECONFIGS",
        value_delimiter = ','
    )]
    pub kubeconfigs: Vec<PathBuf>,
    /// Days before expiry from which a certificate is WARNING [default: 120].
    #[arg(long, env = "RKE2OPS_WARN_DAYS")]
    pub warn_days: Option<u32>,
    /// Journal and identity folder [default: /var/lib/rke2-ops/node-agent].
    #[arg(long, env = "RKE2OPS_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// The rke2 binary [default: /usr/local/bin/rke2].
    #[arg(long, env = "RKE2OPS_RKE2_BIN")]
    pub rke2_bin: Option<PathBuf>,
    /// RKE2's config.yaml, for node-ip [default: /etc/rancher/rke2/config.yaml].
    #[arg(long, env = "RKE2OPS_NODE_CONFIG")]
    pub node_config: Option<PathBuf>,
    /// kubelet's health endpoint host:port [default: 127.0.0.1:10248].
    #[arg(long, env = "RKE2OPS_KUBELET_HEALTHZ_ADDR")]
    pub kubelet_healthz_addr: Option<String>,
    /// Seconds RKE2 may take to become ready after a start [default: 600].
    #[arg(long, env = "RKE2OPS_READY_TIMEOUT_SECS")]
    pub ready_timeout_secs: Option<u64>,
    /// The hub's host:port (no hub link when unset).
    #[arg(long, env = "RKE2OPS_HUB_ADDRESS")]
    pub hub_address: Option<String>,
    /// Join token for the first enrollment (prefer the config file or the environment: a
    /// flag is visible in the process list).
    #[arg(long, env = "RKE2OPS_HUB_TOKEN", hide_env_values = true)]
    pub hub_token: Option<String>,
    /// sha256:<hex> pin of the hub CA, for the first enrollment.
    #[arg(long, env = "RKE2OPS_HUB_CA_PIN")]
    pub hub_ca_pin: Option<String>,
    /// This node's name at the hub [default: the host name].
    #[arg(long, env = "RKE2OPS_NODE_NAME")]
    pub node_name: Option<String>,
    /// Seconds between heartbeats to the hub [default: 10].
    #[arg(long, env = "RKE2OPS_HEARTBEAT_SECS")]
    pub heartbeat_secs: Option<u64>,
    /// Where upgrades fetch RKE2 releases: http(s) URL prefix or absolute folder.
    #[arg(long, env = "RKE2OPS_ARTIFACT_SOURCE")]
    pub artifact_source: Option<String>,
    /// The only sources upgrades may fetch from (repeatable; URL prefix or folder)
    /// [default: any].
    #[arg(
        long = "allowed-artifact-source",
        env = "RKE2OPS_ALLOWED_ARTIFACT_SOURCES",
        value_delimiter = ','
    )]
    pub allowed_artifact_sources: Vec<String>,
    /// Where RKE2's tarball is installed [default: /usr/local].
    #[arg(long, env = "RKE2OPS_INSTALL_PREFIX")]
    pub install_prefix: Option<PathBuf>,
}

impl CommonArgs {
    /// The config file to read and whether it must exist.
    #[must_use]
    pub fn config_path(&self) -> (PathBuf, bool) {
        match &self.config {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        }
    }

    /// The flags as config overrides.
    #[must_use]
    pub fn overrides(&self, metrics_addr: Option<String>) -> Overrides {
        Overrides {
            data_dir: self.data_dir.clone(),
            admin_kubeconfig: self.admin_kubeconfig.clone(),
            kubeconfigs: self.kubeconfigs.clone(),
            metrics_addr,
            warn_days: self.warn_days,
            state_dir: self.state_dir.clone(),
            rke2_bin: self.rke2_bin.clone(),
            node_config: self.node_config.clone(),
            kubelet_healthz_addr: self.kubelet_healthz_addr.clone(),
            ready_timeout_secs: self.ready_timeout_secs,
            hub_address: self.hub_address.clone(),
            hub_token: self.hub_token.clone(),
            hub_ca_pin: self.hub_ca_pin.clone(),
            node_name: self.node_name.clone(),
            heartbeat_secs: self.heartbeat_secs,
            artifact_source: self.artifact_source.clone(),
            allowed_artifact_sources: self.allowed_artifact_sources.clone(),
            install_prefix: self.install_prefix.clone(),
        }
    }
}

/// `check` options.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `run` options.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// host:port for /metrics and /healthz [default: 0.0.0.0:9810].
    #[arg(long, env = "RKE2OPS_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
}

/// `--output` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// RKE2's `certificate check --output table` layout.
    Table,
    /// rke2-ops' JSON document.
    Json,
}
