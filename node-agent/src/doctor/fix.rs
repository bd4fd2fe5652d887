//! `doctor --fix CODE`: the fixes the agent makes itself.
//!
//! - `pem-empty-or-corrupt`: stop the unit, copy each broken file back from the newest backup
//!   holding a valid copy (through a temporary file and a rename, owner and mode kept), start
//!   the unit, scan again and verify the files are usable.
//! - `kubeconfig-unknown-authority`, `kubeconfig-ca-differs`: refresh the copy from
//!   `rke2.yaml` keeping its `server:` (`ops::files::refresh_kubeconfig`, what rotations use).
//!
//! Any other code prints each finding's command and exits 2: those need a person.

use rke2ops_common::atomic_file::{self, Attrs, Policy};
use rke2ops_common::certs::Scanner;
use rke2ops_common::doctor::{Code, EXIT_BLOCKER, EXIT_OK, Finding};

use super::{Facts, Options, all_findings, certs, gather};
use crate::config::Config;
use crate::ops::files;
use crate::service::{JobResult, ServiceManager};

/// What a planned fix does, decided from the facts alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing of that code was found.
    Nothing,
    /// Copy (backup copy, live file) pairs, both relative to the data dir, with the unit
    /// stopped.
    Restore {
        /// The unit to stop and start.
        unit: String,
        /// (from, to).
        copies: Vec<(String, String)>,
        /// Broken files no backup holds a valid copy of.
        unfixable: Vec<String>,
    },
    /// Refresh these kubeconfig copies from the admin kubeconfig.
    Refresh {
        /// Copies to refresh (absolute paths).
        copies: Vec<String>,
    },
    /// The agent does not fix this code: print these findings' commands.
    Manual(Vec<Finding>),
}

/// Decides what `--fix code` does. Pure.
#[must_use]
pub fn plan(code: Code, facts: &Facts, findings: &[Finding]) -> Plan {
    let of_code: Vec<Finding> = findings
        .iter()
        .filter(|f| f.code == code)
        .cloned()
        .collect();
    if of_code.is_empty() {
        return Plan::Nothing;
    }
    match code {
        Code::PemEmptyOrCorrupt => {
            let mut copies = Vec::new();
            let mut unfixable = Vec::new();
            for file in &facts.broken {
                match certs::newest_valid_copy(file) {
                    Some(copy) => {
                        copies.push((copy.path.clone(), file.path.clone()));
                        copies.extend(copy.partner.clone());
                    }
                    None => unfixable.push(file.path.clone()),
                }
            }
            Plan::Restore {
                unit: facts.unit_name().to_owned(),
                copies,
                unfixable,
            }
        }
        Code::KubeconfigUnknownAuthority | Code::KubeconfigCaDiffers => {
            let mut copies: Vec<String> = of_code.into_iter().map(|f| f.object).collect();
            copies.sort();
            copies.dedup();
            Plan::Refresh { copies }
        }
        _ => Plan::Manual(of_code),
    }
}

/// sysexits' EX_USAGE: `--fix` names no known code.
pub const EXIT_UNKNOWN_CODE: u8 = 64;

/// Runs `--fix code`; returns the exit code: 0 fixed (or nothing to fix), 2 not fixed (the
/// reason on stderr), 64 unknown code, 78 bad config.yaml.
///
/// # Errors
/// Never: every failure is reported on stderr and becomes an exit code, so a failed fix
/// never exits 1 ("warnings only").
pub fn run(config: &Config, options: &Options, code: &str) -> anyhow::Result<u8> {
    match fix(config, options, code) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("rke2-node-agent doctor: {e:#}");
            let unknown = e.downcast_ref::<UnknownCode>().is_some();
            let bad_input = e.downcast_ref::<gather::GatherError>().is_some();
            Ok(if unknown {
                EXIT_UNKNOWN_CODE
            } else if bad_input {
                super::run::EXIT_BAD_INPUT
            } else {
                EXIT_BLOCKER
            })
        }
    }
}

/// `--fix` named no known code.
#[derive(Debug, thiserror::Error)]
#[error("--fix {0:?}: unknown code (known: {1})")]
pub struct UnknownCode(String, String);

fn fix(config: &Config, options: &Options, code: &str) -> anyhow::Result<u8> {
    let known = rke2ops_common::doctor::Code::ALL
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let code = Code::parse(code).ok_or_else(|| UnknownCode(code.to_owned(), known))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let scan = gather::scan_config(config);
    let inventory = Scanner::new(scan.clone()).scan();
    let unit = runtime.block_on(gather::unit_facts());
    let facts = gather::facts(config, options, &scan, inventory, unit)?;
    let findings = all_findings(&facts, options);
    match plan(code, &facts, &findings) {
        Plan::Nothing => {
            println!("no {code} finding on this node: nothing to fix");
            Ok(EXIT_OK)
        }
        Plan::Manual(findings) => {
            println!("{code} is not fixed by the agent; run:");
            for f in findings {
                println!("  {}: {}", f.object, f.fix);
            }
            Ok(EXIT_BLOCKER)
        }
        Plan::Refresh { copies } => {
            let admin = &config.admin_kubeconfig;
            let mut failed = false;
            for copy in copies {
                match files::refresh_kubeconfig(admin, std::path::Path::new(&copy)) {
                    Ok(()) => println!("refreshed {copy} from {} (server: kept)", admin.display()),
                    Err(e) => {
                        eprintln!("rke2-node-agent doctor: {e}");
                        failed = true;
                    }
                }
            }
            Ok(if failed { EXIT_BLOCKER } else { EXIT_OK })
        }
        Plan::Restore {
            unit,
            copies,
            unfixable,
        } => runtime.block_on(async {
            for path in &unfixable {
                eprintln!(
                    "rke2-node-agent doctor: {path}: no backup holds a valid copy; not restored"
                );
            }
            if copies.is_empty() {
                return Ok(EXIT_BLOCKER);
            }
            let systemd = crate::dbus::Systemd::connect().await?;
            let verdict = restore(&systemd, &config.data_dir, &scan, &unit, &copies).await?;
            for line in &verdict.report {
                println!("{line}");
            }
            for p in &verdict.still_broken {
                eprintln!("rke2-node-agent doctor: {p}: still unusable after the restore");
            }
            Ok(if verdict.ok() && unfixable.is_empty() {
                EXIT_OK
            } else {
                EXIT_BLOCKER
            })
        }),
    }
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// Progress lines for the operator.
    pub report: Vec<String>,
    /// systemd's verdict on the start.
    pub started: JobResult,
    /// Restored files that the rescan still finds unusable.
    pub still_broken: Vec<String>,
}

impl Restored {
    /// Started and every restored file verified.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.started.is_success() && self.still_broken.is_empty()
    }
}

/// Stops `unit`, copies each (backup copy, live file) pair (paths relative to `data_dir`)
/// through a temporary file and a rename keeping the live file's owner and mode, clears the
/// unit's failed state, starts it, rescans and checks the restored files are usable.
///
/// # Errors
/// When systemd fails to answer, the stop job fails, or a copy fails (the unit is then left
/// stopped: starting it on a half-restored tree would only crash-loop).
pub async fn restore(
    manager: &impl ServiceManager,
    data_dir: &std::path::Path,
    scan: &rke2ops_common::certs::ScanConfig,
    unit: &str,
    copies: &[(String, String)],
) -> anyhow::Result<Restored> {
    let mut report = Vec::new();
    let stopped = manager.stop(unit).await?;
    if !stopped.is_success() {
        anyhow::bail!("systemctl stop {unit}: job {stopped}");
    }
    report.push(format!("stopped {unit}"));
    let mut restored = Vec::new();
    for (from, to) in copies {
        let (from_abs, to_abs) = (data_dir.join(from), data_dir.join(to));
        let attrs = std::fs::metadata(&from_abs)
            .map_err(|e| anyhow::anyhow!("{}: {e}", from_abs.display()))?;
        atomic_file::replace_with_copy(&from_abs, &to_abs, Policy::KeepExisting(Attrs::of(&attrs)))
            .map_err(|e| anyhow::anyhow!("{} -> {e}", from_abs.display()))?;
        report.push(format!("restored {to} from {from}"));
        restored.push(to.clone());
    }
    // A unit that crash-looped on the broken file may have hit its start limit.
    manager.reset_failed(unit).await?;
    let started = manager.start(unit).await?;
    report.push(format!("start {unit}: {started}"));
    let inventory = Scanner::new(scan.clone()).scan();
    let still_broken = restored
        .into_iter()
        .filter(|p| inventory.errors.iter().any(|e| &e.path == p))
        .collect();
    Ok(Restored {
        report,
        started,
        still_broken,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::facts_with;
    use super::super::{BackupCopy, BrokenFile};
    use super::*;
    use rke2ops_common::doctor::Severity;
    use time::macros::datetime;

    #[test]
    fn pem_fix_restores_the_pair_from_the_newest_valid_copy_and_lists_the_rest() {
        let mut facts = facts_with(vec![]);
        facts.broken = vec![
            BrokenFile {
                path: "server/tls/client-admin.crt".to_owned(),
                reason: "file is empty".to_owned(),
                copies: vec![BackupCopy {
                    backup: "server/tls-1700000000".to_owned(),
                    created: datetime!(2023-11-14 22:13:20 UTC),
                    path: "server/tls-1700000000/client-admin.crt".to_owned(),
                    valid: true,
                    partner: Some((
                        "server/tls-1700000000/client-admin.key".to_owned(),
                        "server/tls/client-admin.key".to_owned(),
                    )),
                }],
            },
            BrokenFile {
                path: "server/tls/client-ca.crt".to_owned(),
                reason: "file is empty".to_owned(),
                copies: vec![],
            },
        ];
        let findings = certs::broken_files(&facts);
        let Plan::Restore {
            unit,
            copies,
            unfixable,
        } = plan(Code::PemEmptyOrCorrupt, &facts, &findings)
        else {
            panic!("not a restore");
        };
        assert_eq!(unit, "rke2-server");
        assert_eq!(
            copies,
            vec![
                (
                    "server/tls-1700000000/client-admin.crt".to_owned(),
                    "server/tls/client-admin.crt".to_owned()
                ),
                // The backup's key with its certificate: the live key is a newer one.
                (
                    "server/tls-1700000000/client-admin.key".to_owned(),
                    "server/tls/client-admin.key".to_owned()
                )
            ]
        );
        assert!(
            findings[0].fix.contains(
                "cp -a /var/lib/rancher/rke2/server/tls-1700000000/client-admin.key \
                 /var/lib/rancher/rke2/server/tls/client-admin.key"
            ),
            "{}",
            findings[0].fix
        );
        assert_eq!(unfixable, vec!["server/tls/client-ca.crt".to_owned()]);
    }

    #[test]
    fn codes_the_agent_does_not_fix_print_their_commands() {
        let facts = facts_with(vec![]);
        let f = Finding::new(Code::DiskLow, Severity::Warning, "n1", "/var", "df -h /var");
        assert_eq!(
            plan(Code::DiskLow, &facts, std::slice::from_ref(&f)),
            Plan::Manual(vec![f])
        );
        assert_eq!(plan(Code::CertExpired, &facts, &[]), Plan::Nothing);
    }

    #[test]
    fn kubeconfig_fix_refreshes_each_copy_once() {
        let facts = facts_with(vec![]);
        let f = |code| Finding::new(code, Severity::Warning, "n1", "/root/.kube/config", "x");
        let findings = vec![
            f(Code::KubeconfigUnknownAuthority),
            f(Code::KubeconfigCaDiffers),
        ];
        assert_eq!(
            plan(Code::KubeconfigCaDiffers, &facts, &findings),
            Plan::Refresh {
                copies: vec!["/root/.kube/config".to_owned()]
            }
        );
    }

    /// Records calls; checks the live file is still empty when the stop comes (the copy
    /// happens with the unit stopped) and restored when the start comes.
    struct Recorder {
        calls: std::sync::Mutex<Vec<String>>,
        live: std::path::PathBuf,
    }

    impl ServiceManager for Recorder {
        async fn start(&self, unit: &str) -> Result<JobResult, crate::service::ServiceError> {
            let size = std::fs::metadata(&self.live).map(|m| m.len()).unwrap_or(0);
            self.calls
                .lock()
                .expect("lock")
                .push(format!("start {unit} size>0={}", size > 0));
            Ok(JobResult::Done)
        }
        async fn stop(&self, unit: &str) -> Result<JobResult, crate::service::ServiceError> {
            let size = std::fs::metadata(&self.live).map(|m| m.len()).unwrap_or(0);
            self.calls
                .lock()
                .expect("lock")
                .push(format!("stop {unit} size>0={}", size > 0));
            Ok(JobResult::Done)
        }
        async fn restart(&self, _: &str) -> Result<JobResult, crate::service::ServiceError> {
            unreachable!("not used")
        }
        async fn state(
            &self,
            _: &str,
        ) -> Result<crate::service::UnitState, crate::service::ServiceError> {
            unreachable!("not used")
        }
        async fn reset_failed(&self, unit: &str) -> Result<(), crate::service::ServiceError> {
            self.calls
                .lock()
                .expect("lock")
                .push(format!("reset-failed {unit}"));
            Ok(())
        }
        async fn daemon_reload(&self) -> Result<(), crate::service::ServiceError> {
            unreachable!("not used")
        }
    }

    #[tokio::test]
    async fn pem_restore_copies_with_the_unit_stopped_then_starts_and_verifies() {
        use super::super::test_support::{ca, write};
        let dir = tempfile::tempdir().expect("tempdir");
        let client = ca("rke2-client");
        let (cert, key) = client.leaf("system:admin", &[], 0, 365);
        write(dir.path(), "server/tls/client-ca.crt", &client.pem);
        let live = write(dir.path(), "server/tls/client-admin.crt", "");
        write(dir.path(), "server/tls/client-admin.key", &key);
        write(dir.path(), "server/tls-1700000000/client-admin.crt", &cert);
        let scan = rke2ops_common::certs::ScanConfig::new(dir.path(), None, &[]);
        let manager = Recorder {
            calls: std::sync::Mutex::new(Vec::new()),
            live: live.clone(),
        };
        let done = restore(
            &manager,
            dir.path(),
            &scan,
            "rke2-server",
            &[(
                "server/tls-1700000000/client-admin.crt".to_owned(),
                "server/tls/client-admin.crt".to_owned(),
            )],
        )
        .await
        .expect("restores");
        assert!(done.ok(), "{done:?}");
        assert_eq!(
            *manager.calls.lock().expect("lock"),
            vec![
                "stop rke2-server size>0=false".to_owned(),
                "reset-failed rke2-server".to_owned(),
                "start rke2-server size>0=true".to_owned()
            ]
        );
        assert_eq!(std::fs::read_to_string(&live).expect("read"), cert);
    }
}
