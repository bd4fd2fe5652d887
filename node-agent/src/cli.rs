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
