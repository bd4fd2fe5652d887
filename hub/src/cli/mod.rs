//! The command line of `rke2-hub`: `serve`, and the operator commands that talk to a running
//! hub over its admin socket (or over TLS with an admin certificate).
//!
//! - this module: the arguments (clap) of every command;
//! - [`plans`]: the plan commands' arguments; [`plans_client`]: their requests and output;
//! - [`client`]: the connection to a hub and the other operator commands;
//! - [`doctor`]: `doctor`'s request and output;
//! - [`env`]: the environment variables' names (`RKE2OPS_HUB_*`) and the deprecated
//!   `RKE2_HUB_*` ones still read;
//! - [`backup`]: `backup` and `restore` (arguments and output; the work is
//!   [`crate::backup`]'s);
//! - [`render`]: tables and values shown to operators.

pub mod backup;
pub mod client;
pub mod doctor;
pub mod env;
pub mod plans;
pub mod plans_client;
pub mod render;
pub mod report;
pub mod rollouts;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// rke2-ops fleet hub: inventory of node agents and rolling maintenance.
#[derive(Debug, Parser)]
#[command(name = "rke2-hub", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the hub: gRPC for agents (mutual TLS), the admin socket, metrics.
    Serve(ServeArgs),
    /// Join tokens for agents.
    Token {
        /// What to do with tokens.
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Every node: role, versions, service state, worst certificate status, renewal deadline,
    /// last seen. `nodes remove NAME` forgets a decommissioned node.
    Nodes(NodesArgs),
    /// Every node's certificates (the agent's table with a NODE column).
    Certs(CertsArgs),
    /// Every cluster: its nodes, versions, whether the hub can cordon and drain there, and
    /// its active plan.
    Clusters(ListArgs),
    /// Admin client certificates for remote CLI use over TLS (run on the hub's machine: it
    /// needs the hub CA's key).
    AdminCert {
        /// What to do.
        #[command(subcommand)]
        command: AdminCertCommand,
    },
    /// Rotate every node's certificates (`rke2 certificate rotate`), one node at a time.
    Rotate(plans::RotateArgs),
    /// Restart every node's RKE2 so leaves inside the renewal window are reissued.
    Restart(plans::PlanArgs),
    /// Upgrade RKE2 across the cluster: servers one at a time, then workers.
    Upgrade(plans::UpgradeArgs),
    /// Plans, newest first (the newest 50 unless `--limit N` or `--all`).
    Plans(plans::PlansListArgs),
    /// One plan.
    Plan {
        /// What to do.
        #[command(subcommand)]
        command: plans::PlanCommand,
    },
    /// Move a stopped hub's state into etcd (`--to etcd`), for several hub replicas: every
    /// node keeps its identity. Takes the etcd settings like `serve` (hub.toml or flags).
    Migrate(MigrateArgs),
    /// Rollouts (plans over several clusters in waves), newest first.
    Rollouts(rollouts::RolloutsListArgs),
    /// One rollout: show, watch, pause, resume, abort.
    Rollout {
        /// What to do.
        #[command(subcommand)]
        command: rollouts::RolloutCommand,
    },
    /// Pause a plan: no new node starts (a node in maintenance finishes).
    Pause(plans::ActionArgs),
    /// Resume a paused plan, or retry the failed node of a halted one.
    Resume(plans::ActionArgs),
    /// Pass over a pending or failed node of a plan.
    Skip(plans::SkipArgs),
    /// End a plan: nothing new starts and what it cordoned is uncordoned.
    Abort(plans::ActionArgs),
    /// What is wrong across the fleet: every node's own findings (as its agent reports
    /// them), clocks, etcd, PodDisruptionBudgets that block drains, leftover
    /// system-upgrade-controller, version skew, RKE2's certificate events. Exit 0 / 1
    /// (warnings) / 2 (a blocker); 69 when the hub cannot be asked.
    Doctor(DoctorArgs),
    /// Save the hub's database (a consistent copy, while it serves) and its CA into one
    /// archive (mode 0600: it holds the CA key).
    Backup(backup::BackupArgs),
    /// Put a backup into the state dir, the hub stopped: enrolled agents reconnect without
    /// re-enrolling. Refuses a damaged archive, a running hub and an existing state (unless
    /// `--force`, which moves it aside).
    Restore(backup::RestoreArgs),
}

/// `doctor` options.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only findings about this node.
    #[arg(long)]
    pub node: Option<String>,
    /// The version an upgrade would install: nodes already at or above it are noted.
    #[arg(long, value_name = "VERSION")]
    pub target: Option<String>,
    /// Only findings about this cluster.
    #[arg(long)]
    pub cluster: Option<String>,
}

/// Admin certificate subcommands.
#[derive(Debug, Subcommand)]
pub enum AdminCertCommand {
    /// Issue a certificate for admin NAME into a folder (admin.crt, admin.key, ca.crt; 0600).
    /// Needs the hub's CA (never creates one).
    Create(AdminCertArgs),
    /// Revoke admin NAME's certificate: the hub refuses it from then on (audited).
    Revoke(AdminCertRevokeArgs),
}

/// `admin-cert revoke` options.
#[derive(Debug, Args)]
pub struct AdminCertRevokeArgs {
    /// The admin's name (as given to `admin-cert create`).
    pub name: String,
    /// The hub's state dir.
    #[arg(long, env = "RKE2OPS_HUB_STATE_DIR", default_value = crate::config::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Show what would be revoked; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `nodes` options: the listing, or a subcommand.
#[derive(Debug, Args)]
pub struct NodesArgs {
    /// A subcommand; none lists the nodes.
    #[command(subcommand)]
    pub command: Option<NodesCommand>,
    /// Connection and output of the listing.
    #[command(flatten)]
    pub list: ListArgs,
}

/// `nodes` subcommands.
#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// Forget a decommissioned node and revoke its certificate (audited). Its agent is
    /// refused from then on; enrolling the name again needs a new token.
    Remove(NodeRemoveArgs),
}

/// `nodes remove` options.
#[derive(Debug, Args)]
pub struct NodeRemoveArgs {
    /// The node's name.
    pub name: String,
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Show what would be removed and revoked; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `admin-cert create` options.
#[derive(Debug, Args)]
pub struct AdminCertArgs {
    /// The admin's name (the certificate CN becomes `admin:NAME`; audited).
    #[arg(long)]
    pub name: String,
    /// Folder to write admin.crt, admin.key and ca.crt into (created 0700).
    #[arg(long)]
    pub out: PathBuf,
    /// The hub's state dir.
    #[arg(long, env = "RKE2OPS_HUB_STATE_DIR", default_value = crate::config::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Show what would be issued; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Supersede NAME's current certificate (its holder is refused from then on); without
    /// it, a name that has a certificate is refused.
    #[arg(long)]
    pub replace: bool,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Token subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a single-use join token; prints it with the hub CA's pin.
    Create(TokenCreateArgs),
}

/// Where the running hub is: its admin socket (default), or `--hub host:port` over TLS with
/// an admin certificate from `rke2-hub admin-cert create`.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// The hub's admin socket.
    #[arg(long, env = "RKE2OPS_HUB_SOCKET", default_value = crate::config::DEFAULT_ADMIN_SOCKET)]
    pub socket: PathBuf,
    /// A remote hub's host:port (TLS with `--admin-dir`).
    #[arg(long, env = "RKE2OPS_HUB_ADDRESS")]
    pub hub: Option<String>,
    /// Folder with admin.crt, admin.key and ca.crt from `rke2-hub admin-cert create`.
    #[arg(long, env = "RKE2OPS_HUB_ADMIN_DIR", requires = "hub")]
    pub admin_dir: Option<PathBuf>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `token create` options.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Lifetime (e.g. `1h`, `24h`, `7d`).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub ttl: std::time::Duration,
    /// Show what would be created; create nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The only node name the token may enroll. Without it the token enrolls any name that
    /// is not enrolled yet.
    #[arg(long)]
    pub node: Option<String>,
    /// Let the token enroll `--node` although it is enrolled: its current certificate is
    /// superseded (refused from then on). For a reinstalled node.
    #[arg(long, requires = "node")]
    pub replace: bool,
    /// The role the node gets. Without it, a new node's first hello fixes its role and a
    /// replaced node keeps its own; later hellos never change it.
    #[arg(long, value_enum)]
    pub role: Option<RoleArg>,
    /// The only cluster the token enrolls into: an agent whose config names another
    /// `cluster` is refused. Without it, the agent's config decides.
    #[arg(long)]
    pub cluster: Option<String>,
}

/// `--role` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// An RKE2 server (control plane, etcd).
    Server,
    /// An RKE2 agent (worker).
    Agent,
}

impl RoleArg {
    /// The store's word.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Agent => "agent",
        }
    }
}

/// Options of listing commands.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only this cluster's nodes.
    #[arg(long)]
    pub cluster: Option<String>,
}

/// `certs` options.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only this node.
    #[arg(long)]
    pub node: Option<String>,
    /// Only certificates expiring within this time (e.g. `30d`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub expiring_within: Option<std::time::Duration>,
    /// Only this cluster's nodes.
    #[arg(long)]
    pub cluster: Option<String>,
}

/// `serve` options (each overrides the config file).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML) [default: /etc/rke2-ops/hub.toml, may be absent].
    #[arg(long, env = "RKE2OPS_HUB_CONFIG")]
    pub config: Option<PathBuf>,
    /// Every other setting, each also a hub.toml key.
    #[command(flatten)]
    pub options: crate::config::Options,
}

/// `migrate` options.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Where the state goes: `etcd`.
    #[arg(long, value_parser = ["etcd"])]
    pub to: String,
    /// The hub's settings (state dir, etcd endpoints, prefix, TLS), as for `serve`.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `--output` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// JSON.
    Json,
}
