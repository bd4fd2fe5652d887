//! `rke2-hub backup` and `rke2-hub restore`: their arguments, the state dir they work on,
//! and what they print. The work is [`crate::backup`]'s.
//!
//! Both run on the hub's machine against its state dir, not through the admin socket: a
//! backup must work while the hub serves (it reads the database as SQLite allows beside a
//! writer), and a restore must work when no hub runs at all.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use time::OffsetDateTime;

use crate::backup::{BackupReport, RestoreReport};
use crate::config::{DEFAULT_CONFIG_PATH, DEFAULT_STATE_DIR, Options};

/// Where the state dir comes from: `--state-dir`, else hub.toml's `state_dir`, else the
/// default (as `serve` resolves it).
#[derive(Debug, Args, Clone)]
pub struct StateDirArgs {
    /// The hub's configuration file, read for its `state_dir` [default:
    /// /etc/rke2-ops/hub.toml, may be absent].
    #[arg(long, env = "RKE2OPS_HUB_CONFIG")]
    pub config: Option<PathBuf>,
    /// The hub's state dir [default: hub.toml's `state_dir`, else /var/lib/rke2-ops-hub].
    #[arg(long, env = "RKE2OPS_HUB_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// `backup` options.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where the state dir is.
    #[command(flatten)]
    pub state: StateDirArgs,
    /// The archive to write (gzipped tar, created mode 0600: it holds the CA key).
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub force: bool,
}

/// `restore` options.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Where the state dir is.
    #[command(flatten)]
    pub state: StateDirArgs,
    /// The archive `rke2-hub backup` wrote.
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// Restore over an existing state: its hub.db and pki/ are moved aside into
    /// `<state dir>/pre-restore-<UTC time>/` first (nothing is deleted).
    #[arg(long)]
    pub force: bool,
}

impl StateDirArgs {
    /// The state dir: the flag, else the config file's, else the default.
    ///
    /// # Errors
    /// When the config file cannot be read or parsed (an explicit `--config` must exist).
    pub fn resolve(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.state_dir {
            return Ok(dir.clone());
        }
        let (path, required) = match &self.config {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let file = Options::load(&path, required)?;
        Ok(file
            .state_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)))
    }
}

/// `rke2-hub backup`.
///
/// # Errors
/// When the state dir cannot be found or the backup fails (naming the file).
pub fn backup(args: &BackupArgs) -> anyhow::Result<()> {
    let state_dir = args.state.resolve()?;
    let report = crate::backup::backup(
        &state_dir,
        &args.output,
        args.force,
        OffsetDateTime::now_utc(),
    )
    .with_context(|| format!("backup of {} failed", state_dir.display()))?;
    print!("{}", backup_summary(&state_dir, &report));
    eprintln!(
        "rke2-hub: warning: {} holds the hub CA's private key: whoever has it can pose as \
         this hub to every agent; keep it encrypted and offline, readable by root only",
        report.path.display()
    );
    Ok(())
}

/// `rke2-hub restore`.
///
/// # Errors
/// When the state dir cannot be found or the restore is refused or fails (naming the file and
/// the member, field or lock).
pub fn restore(args: &RestoreArgs) -> anyhow::Result<()> {
    let state_dir = args.state.resolve()?;
    let report = crate::backup::restore(
        &state_dir,
        &args.from,
        args.force,
        OffsetDateTime::now_utc(),
    )
    .with_context(|| format!("restore into {} failed", state_dir.display()))?;
    print!("{}", restore_summary(&args.from, &report));
    Ok(())
}

/// What `backup` prints: counts, size, path; never a secret.
#[must_use]
pub fn backup_summary(state_dir: &Path, report: &BackupReport) -> String {
    let f = &report.facts;
    let members: Vec<String> = report
        .manifest
        .members
        .iter()
        .map(|m| format!("{} ({})", m.path, size(m.size)))
        .collect();
    format!(
        "backed up {} to {} ({})\n  \
         {} nodes, {} identities, {} plans (schema version {}, rke2-hub {}, {})\n  \
         members: {}\n  \
         hub CA {}\n",
        state_dir.display(),
        report.path.display(),
        size(report.size),
        f.nodes,
        f.identities,
        f.plans,
        report.manifest.schema_version,
        report.manifest.hub_version,
        report.manifest.created_at,
        members.join(", "),
        report.ca_pin,
    )
}

/// What `restore` prints.
#[must_use]
pub fn restore_summary(from: &Path, report: &RestoreReport) -> String {
    let f = &report.facts;
    let m = &report.manifest;
    let migrated = if f.schema_version == m.schema_version {
        format!("schema version {}", f.schema_version)
    } else {
        format!(
            "schema version {} migrated to {}",
            m.schema_version, f.schema_version
        )
    };
    let mut out = format!(
        "restored {} from {} (backed up {} by rke2-hub {})\n  \
         {} nodes, {} identities, {} plans ({migrated})\n  \
         hub CA {}: agents that pin it reconnect with the certificates they hold\n",
        report.state_dir.display(),
        from.display(),
        m.created_at,
        m.hub_version,
        f.nodes,
        f.identities,
        f.plans,
        report.ca_pin,
    );
    if let Some((aside, names)) = &report.moved_aside {
        out.push_str(&format!(
            "  the state it replaced ({}) is in {}\n",
            names.join(", "),
            aside.display()
        ));
    }
    out.push_str(
        "next: start the hub (systemctl start rke2-hub), then `rke2-hub nodes` shows the \
         agents coming back online\n",
    );
    out
}

/// A byte count for people.
fn size(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)] // a display rounding, far below 2^52 bytes
    let b = bytes as f64;
    if bytes < 1024 {
        format!("{bytes} B")
    } else if bytes < 1024 * 1024 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    }
}
