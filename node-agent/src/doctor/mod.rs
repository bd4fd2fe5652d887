//! `rke2-node-agent doctor`: what is wrong on this node, why, and the command that fixes it.
//!
//! Split as the rest of the agent: [`gather`] does every read (scanner inventory, backups,
//! config.yaml, interface addresses, systemd, statvfs) into plain [`Facts`]; the checks
//! ([`certs`], [`kubeconfigs`], [`sans`], [`unit`], [`disk`], [`etcd`]) are pure functions of the facts
//! and are unit-tested with generated certificates. The finding vocabulary (codes,
//! severities, exit code, table) is `rke2ops_common::doctor`.

use std::net::IpAddr;
use std::path::PathBuf;

use rke2ops_common::certs::Inventory;
use rke2ops_common::doctor::Finding;
use time::OffsetDateTime;

use crate::service::UnitState;

pub mod certs;
pub mod disk;
pub mod etcd;
pub mod fix;
pub mod gather;
pub mod kubeconfigs;
pub mod run;
pub mod sans;
pub mod unit;

#[cfg(test)]
pub(crate) mod test_support;

pub use run::run;

/// Thresholds of one doctor run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Warn when the renewal deadline is closer than this many days.
    pub warn_days: u32,
    /// Warn when the upgrade staging folder has less free space (bytes).
    pub staging_min_free: u64,
    /// Warn when etcd's data folder has less free space (bytes).
    pub etcd_min_free: u64,
}

/// 2 GiB: an RKE2 tarball unpacked plus the previous copy.
pub const DEFAULT_STAGING_MIN_FREE_MIB: u64 = 2048;
/// 1 GiB: room for etcd to compact and snapshot.
pub const DEFAULT_ETCD_MIN_FREE_MIB: u64 = 1024;

/// A copy of a broken file inside one rotation backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupCopy {
    /// The backup folder, relative to the data dir (`server/tls-1732400000`).
    pub backup: String,
    /// When the backup was made (from its name).
    pub created: OffsetDateTime,
    /// The copy's path relative to the data dir.
    pub path: String,
    /// The copy parses (a certificate bundle, or a usable private key).
    pub valid: bool,
    /// The other half of the pair (the `.key` of a `.crt`, the `.crt` of a `.key`) as this
    /// backup holds it, and its live path: restored together, because after a rotation the
    /// live other half is a newer one that does not match the backup's copy.
    pub partner: Option<(String, String)>,
}

/// A file that is empty or not PEM, with what the backups hold of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenFile {
    /// Path relative to the data dir.
    pub path: String,
    /// Why it is unusable (the scanner's reason).
    pub reason: String,
    /// Its copies in the rotation backups, any order.
    pub copies: Vec<BackupCopy>,
}

/// The names a serving certificate of this node must carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeNames {
    /// The node's addresses (config.yaml `node-ip`, else interface addresses without
    /// loopback, link-local and CNI interfaces).
    pub ips: Vec<IpAddr>,
    /// `node-name` from config.yaml, else the host name (lowercase, as RKE2 uses it).
    pub hostname: Option<String>,
    /// config.yaml `tls-san`.
    pub tls_sans: Vec<String>,
}

/// What systemd said about the RKE2 unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitFacts {
    /// systemd could not be asked (no bus, no permission, timeout).
    Unreachable {
        /// Why.
        reason: String,
    },
    /// Neither `rke2-server` nor `rke2-agent` is installed.
    NotInstalled,
    /// The unit and its state.
    Found {
        /// `rke2-server` or `rke2-agent`.
        unit: String,
        /// Its state.
        state: UnitState,
        /// The journal's last lines (only read when the unit is failing).
        journal: Vec<String>,
    },
}

/// Free space of one folder the node needs to write to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskFacts {
    /// What the folder is for (`upgrade staging`, `etcd data`).
    pub purpose: &'static str,
    /// The folder (or the nearest existing parent that was measured).
    pub path: PathBuf,
    /// Free bytes for unprivileged writers.
    pub free: u64,
    /// The threshold.
    pub min_free: u64,
}

/// Everything the checks look at, read once.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The node's name for findings.
    pub node: String,
    /// The instant of the run.
    pub now: OffsetDateTime,
    /// RKE2's data dir (for fix commands).
    pub data_dir: PathBuf,
    /// The scanner's inventory (data dir, `rke2.yaml`, kubeconfig copies).
    pub inventory: Inventory,
    /// Empty or corrupt files and their backup copies.
    pub broken: Vec<BrokenFile>,
    /// The admin kubeconfig as the inventory names it.
    pub admin_kubeconfig: String,
    /// Kubeconfig copies to compare with it, as the inventory names them.
    pub kubeconfig_copies: Vec<String>,
    /// The node's current names.
    pub names: NodeNames,
    /// The RKE2 unit.
    pub unit: UnitFacts,
    /// Free space where it matters.
    pub disks: Vec<DiskFacts>,
    /// Embedded etcd (servers).
    pub etcd: etcd::EtcdFacts,
}

impl Facts {
    /// The RKE2 unit's name for fix commands: the one systemd reported, else guessed from
    /// the tree (a server has `server/tls`).
    #[must_use]
    pub fn unit_name(&self) -> &str {
        if let UnitFacts::Found { unit, .. } = &self.unit {
            return unit;
        }
        let server = self
            .inventory
            .certificates
            .iter()
            .map(|c| &c.path)
            .chain(self.broken.iter().map(|b| &b.path))
            .any(|p| p.starts_with("server/"));
        if server { "rke2-server" } else { "rke2-agent" }
    }

    /// A path relative to the data dir, made absolute for a command line.
    #[must_use]
    pub fn abs(&self, relative: &str) -> String {
        if relative.starts_with('/') {
            relative.to_owned()
        } else {
            self.data_dir.join(relative).display().to_string()
        }
    }
}

/// The file-based checks (certificates, PEM files, kubeconfigs, SANs, disk): what the daemon
/// exports after every rescan.
#[must_use]
pub fn file_findings(facts: &Facts, options: &Options) -> Vec<Finding> {
    let mut findings = certs::expiry(facts, options.warn_days);
    findings.extend(certs::broken_files(facts));
    findings.extend(kubeconfigs::check(facts));
    findings.extend(sans::check(facts));
    findings.extend(disk::check(facts));
    findings
}

/// Every check, worst first.
#[must_use]
pub fn all_findings(facts: &Facts, options: &Options) -> Vec<Finding> {
    let mut findings = file_findings(facts, options);
    findings.extend(unit::check(facts));
    findings.extend(etcd::check(facts));
    rke2ops_common::doctor::sort(&mut findings);
    findings
}

/// What the daemon runs after every rescan: the file-based checks over its fresh inventory
/// (no systemd: the daemon exports the unit's state separately), counted per (code,
/// severity) for `rke2ops_doctor_findings`.
#[derive(Debug, Clone)]
pub struct DaemonChecks {
    config: crate::config::Config,
    options: Options,
}

impl DaemonChecks {
    /// The checks with `config`'s warning window and the default disk thresholds.
    #[must_use]
    pub fn new(config: &crate::config::Config) -> Self {
        Self {
            config: config.clone(),
            options: Options {
                warn_days: config.warn_days,
                staging_min_free: DEFAULT_STAGING_MIN_FREE_MIB * 1024 * 1024,
                etcd_min_free: DEFAULT_ETCD_MIN_FREE_MIB * 1024 * 1024,
            },
        }
    }

    /// The file-based findings for `inventory` (scanned with the daemon's scan config),
    /// worst first: the metric counts them and the hub link sends them.
    ///
    /// # Errors
    /// When config.yaml is bad.
    pub fn findings(&self, inventory: &Inventory) -> Result<Vec<Finding>, gather::GatherError> {
        let scan = self.config.scan_config();
        let facts = gather::facts(
            &self.config,
            &self.options,
            &scan,
            inventory.clone(),
            UnitFacts::NotInstalled,
        )?;
        let mut findings = file_findings(&facts, &self.options);
        rke2ops_common::doctor::sort(&mut findings);
        Ok(findings)
    }
}

/// What the hub link reports: the daemon's file-based findings of the last scan plus the
/// unit's, from the state the link just read (`unit`: `None` when systemd cannot be asked)
/// and the journal lines read when it is failing. Pure; worst first.
#[must_use]
pub fn link_findings(
    node: &str,
    file: &[Finding],
    inventory: &Inventory,
    unit: Option<(String, UnitState, Vec<String>)>,
    now: OffsetDateTime,
) -> Vec<Finding> {
    let facts = match unit {
        Some((unit, state, journal)) => UnitFacts::Found {
            unit,
            state,
            journal,
        },
        None => UnitFacts::Unreachable {
            reason: "the agent has no connection to systemd's D-Bus API".to_owned(),
        },
    };
    let mut findings = file.to_vec();
    findings.extend(unit::check_unit(node, &facts, inventory, now));
    rke2ops_common::doctor::sort(&mut findings);
    findings
}
