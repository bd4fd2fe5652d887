//! The command line of `rke2-node-agent`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{ConfigLayer, DEFAULT_CONFIG_PATH, Overrides};

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
    /// Diagnose this node: certificates, PEM files, kubeconfig copies, SANs, the RKE2 unit,
    /// disk space; each finding with its evidence and the command that fixes it. Exit 0
    /// nothing (or info only), 1 warnings, 2 any blocker.
    Doctor(DoctorArgs),
}

/// `doctor` options (`--warn-days` and the rest of `check`'s settings come with `common`).
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Warn when the upgrade staging folder (the state dir) has less free space (MiB).
    #[arg(long, default_value_t = crate::doctor::DEFAULT_STAGING_MIN_FREE_MIB)]
    pub staging_min_free_mib: u64,
    /// Warn when etcd's data dir (`<data-dir>/server/db`) has less free space (MiB).
    #[arg(long, default_value_t = crate::doctor::DEFAULT_ETCD_MIN_FREE_MIB)]
    pub etcd_min_free_mib: u64,
    /// Fix the findings of this code (pem-empty-or-corrupt, kubeconfig-unknown-authority,
    /// kubeconfig-ca-differs); other codes print their command and exit 2.
    #[arg(long, value_name = "CODE")]
    pub fix: Option<String>,
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
    /// Servers: take an etcd snapshot (`rke2 etcd-snapshot save`) before the unit stops; a
    /// failed snapshot ends the rotation with nothing changed.
    #[arg(long)]
    pub etcd_snapshot: bool,
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
    /// Every configuration key as a flag (and environment variable).
    #[command(flatten)]
    pub settings: ConfigLayer,
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

    /// The flags as config overrides; `metrics_addr` is a flag of `run` alone.
    #[must_use]
    pub fn overrides(&self, metrics_addr: Option<String>) -> Overrides {
        Overrides {
            metrics_addr,
            ..self.settings.clone()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, FileConfig};

    fn common(args: &[&str]) -> CommonArgs {
        match Cli::try_parse_from(args).expect("parses").command {
            Command::Check(a) => a.common,
            Command::Run(a) => a.common,
            Command::Doctor(a) => a.common,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn flags_win_over_the_file_key_by_key() {
        let file = FileConfig::parse(
            "warn_days = 30\nkubeconfigs = [\"/file.yaml\"]\ndata_dir = \"/file\"\n",
            std::path::Path::new("/etc/rke2-ops/node-agent.toml"),
        )
        .expect("parses");
        let flags = common(&[
            "rke2-node-agent",
            "check",
            "--kubeconfig",
            "/a.yaml,/b.yaml",
            "--warn-days",
            "7",
        ]);
        let config = Config::resolve(file, flags.overrides(None)).expect("valid");
        assert_eq!(config.warn_days, 7);
        assert_eq!(
            config.kubeconfigs,
            vec![PathBuf::from("/a.yaml"), PathBuf::from("/b.yaml")]
        );
        assert_eq!(config.data_dir, PathBuf::from("/file"));
    }

    #[test]
    fn doctor_takes_checks_flags_and_its_thresholds() {
        let cli = Cli::try_parse_from([
            "rke2-node-agent",
            "doctor",
            "--data-dir",
            "/d",
            "--warn-days",
            "30",
            "--output",
            "json",
            "--etcd-min-free-mib",
            "10",
        ])
        .expect("parses");
        let Command::Doctor(args) = cli.command else {
            panic!("not doctor");
        };
        assert_eq!(args.output, Output::Json);
        assert_eq!(args.etcd_min_free_mib, 10);
        assert_eq!(args.staging_min_free_mib, 2048);
        assert_eq!(args.common.settings.warn_days, Some(30));
        assert_eq!(args.common.settings.data_dir, Some(PathBuf::from("/d")));
    }

    #[test]
    fn metrics_addr_is_a_flag_of_run_only() {
        assert!(
            Cli::try_parse_from(["rke2-node-agent", "check", "--metrics-addr", "127.0.0.1:1"])
                .is_err()
        );
        let run = Cli::try_parse_from(["rke2-node-agent", "run", "--metrics-addr", "127.0.0.1:1"])
            .expect("parses");
        let Command::Run(args) = run.command else {
            panic!("not run");
        };
        assert_eq!(args.metrics_addr.as_deref(), Some("127.0.0.1:1"));
        assert_eq!(args.common.settings.metrics_addr, None);
    }
}
