//! Plan commands: `rotate`, `restart`, `upgrade`, `plans`, `plan show|watch`,
//! `pause|resume|skip|abort`.

use std::time::Duration;

use clap::{Args, Subcommand};

use super::ClientArgs;

/// `plans` options.
#[derive(Debug, Args)]
pub struct PlansListArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Show at most this many plans, newest first.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limit: u32,
    /// Show every plan (the hub sends them a page at a time).
    #[arg(long, conflicts_with = "limit")]
    pub all: bool,
    /// Only this cluster's plans.
    #[arg(long)]
    pub cluster: Option<String>,
}

/// How a plan treats each node (shared by `rotate`, `restart` and `upgrade`).
#[derive(Debug, Args, Clone)]
pub struct PlanArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only these nodes (repeatable; default: every node of the cluster).
    #[arg(long = "node")]
    pub nodes: Vec<String>,
    /// The cluster whose nodes the plan holds (needed when the hub has several).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Workers in maintenance at once (servers always go one at a time).
    #[arg(long, default_value_t = 1)]
    pub concurrency: u32,
    /// Wait after each node is healthy again (e.g. `30s`).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Do not cordon and drain nodes.
    #[arg(long)]
    pub no_drain: bool,
    /// Give up draining a node after this long (PDB refusals are retried meanwhile).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Grace period for evicted pods [default: each pod's own].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub grace_period: Option<Duration>,
    /// Maintenance window: `[days] HH:MM-HH:MM [time zone]`, e.g. "Sat,Sun 22:00-04:00
    /// Europe/Berlin" [default: any time].
    #[arg(long)]
    pub window: Option<String>,
    /// How long a node may take to be healthy after its operation.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub ready_timeout: Duration,
    /// Start although the preflight (`rke2-hub doctor`) finds blockers of this code
    /// (repeatable; recorded in the plan's events and the audit log).
    #[arg(long = "accept", value_name = "CODE")]
    pub accept: Vec<String>,
    /// An application probe checked for the whole plan (repeatable); no node starts while
    /// one fails: `http(s)://host/path[,status=200][,body=TEXT]`, `tcp://host:port` or
    /// `workload:NS/Deployment|StatefulSet|DaemonSet/NAME[,allowance=N]`, each with optional
    /// `,name=N,interval=2s,timeout=2s,threshold=3`.
    #[arg(long = "probe", value_name = "PROBE")]
    pub probes: Vec<String>,
    /// A workload probe: `NS/KIND/NAME[,allowance=N,...]` (same as `--probe workload:...`).
    #[arg(long = "probe-workload", value_name = "NS/KIND/NAME")]
    pub probe_workloads: Vec<String>,
    /// A probe down this long halts the plan [default: 2m].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub probe_halt_after: Option<Duration>,
    /// Print the exact order and gates; create nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Follow the plan's progress after creating it (like `plan watch`).
    #[arg(long)]
    pub watch: bool,
    /// A rollout wave: one or more clusters, comma-separated (repeatable, in order). With
    /// waves, one plan per cluster is made, wave by wave: the next wave starts only after
    /// every plan of the previous one completed and the soak passed. `rke2-hub rollouts`
    /// lists them.
    #[arg(long = "wave", value_name = "CLUSTER[,CLUSTER...]", conflicts_with_all = ["nodes", "cluster"])]
    pub waves: Vec<String>,
    /// With --wave: after a wave completed, this long with no doctor blocker and no failing
    /// probe in its clusters before the next wave starts (e.g. `24h`) [default: 0s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub soak: Option<Duration>,
}

/// `rotate` options.
#[derive(Debug, Args, Clone)]
pub struct RotateArgs {
    /// Plan options.
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Only these RKE2 services (repeatable; e.g. `etcd`, `kube-apiserver`) [default: all].
    #[arg(long = "service")]
    pub services: Vec<String>,
    /// Each server takes an etcd snapshot (`rke2 etcd-snapshot save`) after its preflight and
    /// before its unit stops; a failed snapshot fails the node with nothing changed, and
    /// `plan show` prints each snapshot's restore command.
    #[arg(long)]
    pub etcd_snapshot: bool,
}

/// `upgrade` options.
#[derive(Debug, Args, Clone)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["channel", "version"])))]
pub struct UpgradeArgs {
    /// Plan options.
    #[command(flatten)]
    pub plan: PlanArgs,
    /// A release channel (`stable`, `latest`, `v1.34`), resolved now, once.
    #[arg(long)]
    pub channel: Option<String>,
    /// A version, e.g. `v1.34.1+rke2r1`.
    #[arg(long)]
    pub version: Option<String>,
    /// Allow skipping a minor version.
    #[arg(long)]
    pub allow_minor_skip: bool,
    /// Keep the new binary even when a node does not become ready with it.
    #[arg(long)]
    pub no_rollback: bool,
    /// Artifact URL prefix or air-gap folder on the nodes [default: the hub's
    /// `artifact_mirror`].
    #[arg(long)]
    pub artifact_source: Option<String>,
    /// Air-gapped clusters: first stage the release's image archives (checksum-verified) in
    /// `agent/images` on every node the plan upgrades, before any node is upgraded; prune
    /// the previous release's after the plan completes.
    #[arg(long)]
    pub stage_images: bool,
}

/// `plan` subcommands.
#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// The plan, its nodes, gates and recent events.
    Show(PlanIdArgs),
    /// Follow the plan live until it completes, halts or is aborted.
    Watch(PlanIdArgs),
    /// A change-management record of the plan: who started it, the policy, every node's
    /// times and steps, the preflight findings, the probes' availability.
    Report(PlanReportArgs),
}

/// `plan report` options.
#[derive(Debug, Args)]
pub struct PlanReportArgs {
    /// The hub's admin socket.
    #[arg(long, env = "RKE2OPS_HUB_SOCKET", default_value = crate::config::DEFAULT_ADMIN_SOCKET)]
    pub socket: std::path::PathBuf,
    /// A remote hub's host:port (TLS with `--admin-dir`).
    #[arg(long, env = "RKE2OPS_HUB_ADDRESS")]
    pub hub: Option<String>,
    /// Folder with admin.crt, admin.key and ca.crt from `rke2-hub admin-cert create`.
    #[arg(long, env = "RKE2OPS_HUB_ADMIN_DIR", requires = "hub")]
    pub admin_dir: Option<std::path::PathBuf>,
    /// Report format.
    #[arg(long, short, value_enum, default_value_t = ReportFormat::Markdown)]
    pub output: ReportFormat,
    /// The plan's id.
    pub id: String,
}

/// `plan report` formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// Markdown, for a ticket.
    Markdown,
    /// JSON.
    Json,
}

/// A plan id with connection options.
#[derive(Debug, Args)]
pub struct PlanIdArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The plan's id.
    pub id: String,
}

/// `pause`, `resume`, `abort` options.
#[derive(Debug, Args)]
pub struct ActionArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The plan's id.
    pub id: String,
    /// Say what would happen; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `skip` options.
#[derive(Debug, Args)]
pub struct SkipArgs {
    /// Plan and connection.
    #[command(flatten)]
    pub action: ActionArgs,
    /// The node to pass over.
    #[arg(long)]
    pub node: String,
}
