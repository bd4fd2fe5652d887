//! An upgrade's side effects: reading the installed version, fetching and verifying the
//! release artifacts, installing them with the previous files kept, checking that the unit
//! runs the new binary, and putting the previous files back on failure. The pure version
//! comparison ([`at_or_above`]) and banner parsing are here too; the order and the rollback
//! policy are the step machine's ([`super::steps`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rke2ops_common::version::Rke2Version;

use super::journal::{InstallRecord, Journal, OpRecord};
use super::pkg::HostExec;
use super::runner::op_dir;
use super::setup::NodeSetup;
use super::steps::OpKind;
use super::{artifacts, install, method, rpm};
use crate::service::ServiceManager;

/// The version `bin --version` reports (`rke2 version v1.34.1+rke2r1 (<commit>)`), if it runs.
pub async fn binary_version(bin: &Path) -> Option<String> {
    let output = super::waits::waited(tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new(bin).arg("--version").output(),
    ))
    .await
    .ok()?
    .ok()?;
    parse_version_banner(&String::from_utf8_lossy(&output.stdout))
}

/// The version in RKE2's `--version` banner.
#[must_use]
pub fn parse_version_banner(stdout: &str) -> Option<String> {
    let line = stdout.lines().next()?;
    let mut words = line.split_whitespace();
    (words.next()? == "rke2" && words.next()? == "version")
        .then(|| words.next().map(str::to_owned))
        .flatten()
}

/// Whether an upgrade to `target` has nothing to do: the installed version is at or above it
/// and the unit does not still run a replaced binary.
#[must_use]
pub fn at_or_above(installed: &str, target: &str, running_replaced: bool) -> bool {
    use rke2ops_common::version::Rke2Version;
    match (
        installed.parse::<Rke2Version>(),
        target.parse::<Rke2Version>(),
    ) {
        (Ok(installed), Ok(target)) => installed >= target && !running_replaced,
        _ => false,
    }
}

/// The binary the upgrade replaces: the detected install's (the configured prefix's before
/// detection).
fn installed_bin(setup: &NodeSetup, record: &OpRecord) -> PathBuf {
    match &record.install {
        Some(InstallRecord::Rpm { .. }) => PathBuf::from(rke2ops_common::install::RPM_BINARY),
        Some(InstallRecord::Tarball { prefix, .. }) => prefix.join("bin/rke2"),
        None => setup.install_prefix.join("bin/rke2"),
    }
}

/// Where the release's files go: the units' folder as journaled when the operation began.
fn layout(setup: &NodeSetup, record: &OpRecord) -> install::Layout {
    let prefix = prefix(setup, record);
    match &record.install {
        Some(InstallRecord::Tarball {
            units: Some(units), ..
        }) => install::Layout {
            prefix,
            units: units.clone(),
        },
        // Journaled by an agent that installed every unit under the prefix.
        Some(InstallRecord::Tarball { units: None, .. }) => install::Layout {
            units: prefix.join("lib/systemd/system"),
            prefix,
        },
        _ => install::Layout::for_prefix(&prefix, &setup.moved_unit_dir),
    }
}

/// The tarball prefix of the detected install.
fn prefix(setup: &NodeSetup, record: &OpRecord) -> PathBuf {
    match &record.install {
        Some(InstallRecord::Tarball { prefix, .. }) => prefix.clone(),
        _ => setup.install_prefix.clone(),
    }
}

/// The upgrade's target version.
fn target_version(record: &OpRecord) -> Result<Rke2Version, String> {
    let OpKind::Upgrade { version, .. } = &record.kind else {
        return Err("not an upgrade".to_owned());
    };
    version
        .parse()
        .map_err(|e: rke2ops_common::version::VersionError| e.to_string())
}

/// The upgrade's target version and its artifact source (the request's, else the
/// configured one): tarball installs only.
fn target(setup: &NodeSetup, record: &OpRecord) -> Result<(String, artifacts::Source), String> {
    let OpKind::Upgrade {
        version, source, ..
    } = &record.kind
    else {
        return Err("not an upgrade".to_owned());
    };
    let source = source
        .clone()
        .or_else(|| setup.artifact_source.clone())
        .ok_or_else(|| artifacts::ArtifactError::NoSource.to_string())?;
    let source = artifacts::Source::parse(&source).map_err(|e| e.to_string())?;
    Ok((version.clone(), source))
}

fn is_rpm(record: &OpRecord) -> bool {
    matches!(record.install, Some(InstallRecord::Rpm { .. }))
}

/// Whether the unit's main process runs an executable that was replaced on disk.
async fn running_replaced(manager: &impl ServiceManager, unit: &str) -> Option<bool> {
    let state = manager.state(unit).await.ok()?;
    if state.main_pid == 0 {
        return None;
    }
    // Under the shipped unit the agent lacks CAP_SYS_PTRACE, so the kernel hides other
    // processes' `exe` links. The upgrade restarts the unit after installing, so an
    // unreadable link counts as "runs what is installed" (the CLI outside the sandbox
    // still checks it).
    match std::fs::read_link(format!("/proc/{}/exe", state.main_pid)) {
        Ok(exe) => Some(exe.to_string_lossy().ends_with(" (deleted)")),
        Err(e) => {
            tracing::debug!(pid = state.main_pid, error = %e, "cannot read the main process's exe link");
            Some(false)
        }
    }
}

/// Finds how RKE2 is installed (refusing a node with both methods), reads the installed
/// version (kept as the previous one) and skips the upgrade when it is at or above the
/// target and running.
pub async fn check_version(
    setup: &NodeSetup,
    manager: &impl ServiceManager,
    record: &mut OpRecord,
) -> Result<String, String> {
    let target = target_version(record)?.to_string();
    let exec = HostExec;
    if record.install.is_none() {
        let detected = method::detect(&exec, &record.unit, &setup.install_prefix).await?;
        record.install = Some(match detected {
            method::Detected::Tarball { prefix } => InstallRecord::Tarball {
                units: Some(install::Layout::for_prefix(&prefix, &setup.moved_unit_dir).units),
                prefix,
            },
            method::Detected::Rpm { packages } => rpm::start(&setup.rpm, &exec, packages)?.0,
        });
    }
    let (installed, how) = match &record.install {
        Some(InstallRecord::Rpm { tool, previous, .. }) => (
            rpm::installed_version(&method::rpm_packages(&exec).await?)?,
            format!("RPM ({}; {})", tool.name(), previous.join(" ")),
        ),
        _ => {
            let bin = installed_bin(setup, record);
            let v = binary_version(&bin)
                .await
                .ok_or_else(|| format!("{} --version did not print a version", bin.display()))?;
            (v, format!("tarball in {}", prefix(setup, record).display()))
        }
    };
    if record.previous_version.is_none() {
        record.previous_version = Some(installed.clone());
    }
    let replaced = running_replaced(manager, &record.unit)
        .await
        .unwrap_or(false);
    if at_or_above(&installed, &target, replaced) {
        let why = format!("{installed} is installed and running, at or above the target {target}");
        record.skipped = Some(why.clone());
        return Ok(why);
    }
    let from = if is_rpm(record) {
        rpm::source_text(&setup.rpm, &target_version(record)?)
    } else {
        self::target(setup, record)?.1.to_string()
    };
    Ok(format!(
        "{installed} installed, {how}{}; upgrading to {target} from {from}",
        if replaced {
            " (the unit runs a replaced binary)"
        } else {
            ""
        }
    ))
}

/// Downloads (or copies, air-gapped) the tarball and its checksum file into the operation's
/// folder.
pub async fn fetch(
    setup: &NodeSetup,
    journal: &Journal,
    record: &mut OpRecord,
) -> Result<String, String> {
    if is_rpm(record) {
        let target = target_version(record)?;
        let previous = record.previous_version.clone().unwrap_or_default();
        let dir = op_dir(journal, record)?.join("artifacts");
        return rpm::fetch(&setup.rpm, &HostExec, record, &target, &previous, &dir).await;
    }
    let (version, source) = target(setup, record)?;
    artifacts::fetch(
        &source,
        &setup.allowed_artifact_sources,
        &version,
        artifacts::arch(),
        &op_dir(journal, record)?.join("artifacts"),
    )
    .await
    .map_err(|e| e.to_string())
}

/// The tarball's sha256 matches its line in the checksum file.
pub async fn verify_checksum(journal: &Journal, record: &OpRecord) -> Result<String, String> {
    if is_rpm(record) {
        return rpm::verify(&HostExec, record, &target_version(record)?).await;
    }
    let hash = artifacts::verify(
        &op_dir(journal, record)?.join("artifacts"),
        artifacts::arch(),
    )
    .map_err(|e| e.to_string())?;
    Ok(format!(
        "{} sha256 {hash} matches {}",
        artifacts::tarball_name(artifacts::arch()),
        artifacts::sums_name(artifacts::arch())
    ))
}

/// Stages the tarball, keeps the files it replaces (journaled before anything is replaced,
/// so a failure or a crash can put them back), then installs atomically.
pub async fn install_files(
    setup: &NodeSetup,
    manager: &impl ServiceManager,
    journal: &Journal,
    record: &mut OpRecord,
) -> Result<String, String> {
    if is_rpm(record) {
        let pid = manager.state(&record.unit).await.ok().map(|s| s.main_pid);
        if let Some(InstallRecord::Rpm { pid_before, .. }) = &mut record.install
            && pid_before.is_none()
        {
            *pid_before = pid;
        }
        // From here a failure puts the previous packages back.
        record.backup = Some("rpm:previous-packages".to_owned());
        journal.save(record).map_err(|e| e.to_string())?;
        return rpm::install(&HostExec, record, &target_version(record)?).await;
    }
    let prefix = prefix(setup, record);
    let layout = layout(setup, record);
    let dir = op_dir(journal, record)?;
    let tarball = dir
        .join("artifacts")
        .join(artifacts::tarball_name(artifacts::arch()));
    let files = install::stage(&tarball, &dir.join("staged")).map_err(|e| e.to_string())?;
    // As install.sh does for another prefix: the units run (and the uninstall script removes)
    // the binary where it is.
    let relocated =
        install::relocate(&dir.join("staged"), &files, &prefix).map_err(|e| e.to_string())?;
    record.installed_files.clone_from(&files);
    let previous = dir.join("previous");
    let kept = install::keep_previous(&layout, &files, &previous).map_err(|e| e.to_string())?;
    record.backup = Some(previous.display().to_string());
    journal.save(record).map_err(|e| e.to_string())?;
    let own = install::install(&dir.join("staged"), &layout, &files).map_err(|e| e.to_string())?;
    let targets: Vec<PathBuf> = files
        .iter()
        .filter(|f| !own.contains(f))
        .map(|f| layout.target(f))
        .collect();
    let contexts = restore_selinux_contexts(&HostExec, selinux_enabled(), &targets).await;
    Ok(format!(
        "{} files installed into {}{} ({kept} previous kept in {}){}{}{contexts}",
        files.len() - own.len(),
        prefix.display(),
        if layout.units == prefix.join("lib/systemd/system") {
            String::new()
        } else {
            format!(", units into {}", layout.units.display())
        },
        previous.display(),
        if relocated > 0 {
            format!("; {relocated} files point at {}", prefix.display())
        } else {
            String::new()
        },
        if own.is_empty() {
            String::new()
        } else {
            format!("; the node's own {} kept", own.join(", "))
        }
    ))
}

/// Whether SELinux is on (enforcing or permissive): its filesystem is mounted.
fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

/// Where SELinux is enforced or permissive (rke2-selinux installed), files written by
/// rename keep the label of the temp file; `restorecon` gives them the policy's labels again
/// (`bin_t` for the binary, `systemd_unit_file_t` for the units). Nothing without SELinux.
/// A failure is reported in the detail, not fatal: the unit's start (verified next) is what
/// says whether the labels matter.
async fn restore_selinux_contexts(
    exec: &impl super::pkg::PackageExec,
    selinux_on: bool,
    targets: &[PathBuf],
) -> String {
    if !selinux_on || targets.is_empty() || !exec.has("restorecon") {
        return String::new();
    }
    let mut argv = vec!["restorecon".to_owned()];
    argv.extend(targets.iter().map(|f| f.display().to_string()));
    match exec.run(&argv, Duration::from_secs(120)).await {
        Ok(out) if out.success() => "; SELinux contexts restored".to_owned(),
        Ok(out) => format!("; restorecon failed: {}", out.last_line()),
        Err(e) => format!("; restorecon failed: {e}"),
    }
}

/// The installed binary reports the target and the unit runs it (not a replaced file).
pub async fn verify_version(
    setup: &NodeSetup,
    manager: &impl ServiceManager,
    record: &OpRecord,
) -> Result<String, String> {
    let target = target_version(record)?.to_string();
    let database = if is_rpm(record) {
        format!("; {}", rpm::verify_database(&HostExec, &target).await?)
    } else {
        String::new()
    };
    let bin = installed_bin(setup, record);
    let installed = binary_version(&bin)
        .await
        .ok_or_else(|| format!("{} --version did not print a version", bin.display()))?;
    if installed != target {
        return Err(format!(
            "{} reports {installed}, not {target}",
            bin.display()
        ));
    }
    match running_replaced(manager, &record.unit).await {
        Some(true) => Err(format!(
            "{} still runs the binary that was replaced",
            record.unit
        )),
        Some(false) => Ok(format!(
            "{} reports {installed}; {} runs it{database}",
            bin.display(),
            record.unit
        )),
        None => Err(format!("{} has no main process", record.unit)),
    }
}

/// Puts the previous release's files back and reloads systemd (the unit is started again by
/// the next step).
pub async fn restore_previous(
    setup: &NodeSetup,
    manager: &impl ServiceManager,
    journal: &Journal,
    record: &OpRecord,
) -> Result<String, String> {
    // Stop first: a release that never gets ready may still be starting.
    let _ = manager.stop(&record.unit).await;
    if is_rpm(record) {
        let done = rpm::restore(&setup.rpm, &HostExec, record).await?;
        manager.daemon_reload().await.map_err(|e| e.to_string())?;
        return Ok(format!("{done}, systemd reloaded"));
    }
    let prefix = prefix(setup, record);
    let layout = layout(setup, record);
    let previous = op_dir(journal, record)?.join("previous");
    let n =
        install::restore(&previous, &layout, &record.installed_files).map_err(|e| e.to_string())?;
    let targets: Vec<PathBuf> = record
        .installed_files
        .iter()
        .map(|f| layout.target(f))
        .filter(|t| t.is_file())
        .collect();
    let contexts = restore_selinux_contexts(&HostExec, selinux_enabled(), &targets).await;
    manager.daemon_reload().await.map_err(|e| e.to_string())?;
    Ok(format!(
        "restored {n} previous files into {}{}, systemd reloaded{contexts}",
        prefix.display(),
        record
            .previous_version
            .as_deref()
            .map(|v| format!(" ({v})"))
            .unwrap_or_default()
    ))
}

/// The restart step: after an RPM install the package's `%postun` normally restarted the
/// unit already (checked by its new main PID); otherwise (and for tarballs) the unit is
/// restarted.
pub async fn restart(manager: &impl ServiceManager, record: &OpRecord) -> Result<String, String> {
    if let Some(InstallRecord::Rpm { pid_before, .. }) = &record.install
        && let Ok(state) = manager.state(&record.unit).await
        && let Some(done) =
            rpm::restarted_by_package(*pid_before, state.main_pid, state.is_active())
    {
        return Ok(done);
    }
    super::units::run(manager, super::units::UnitJob::Restart, &record.unit).await
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::ops::pkg::{ExecOutput, PackageExec};

    /// Records each command; `restorecon` installed or not, succeeding or not.
    struct FakeExec {
        has_restorecon: bool,
        status: i32,
        ran: Mutex<Vec<Vec<String>>>,
    }

    impl PackageExec for FakeExec {
        async fn run(&self, argv: &[String], _timeout: Duration) -> Result<ExecOutput, String> {
            self.ran.lock().expect("lock").push(argv.to_vec());
            Ok(ExecOutput {
                status: Some(self.status),
                stdout: String::new(),
                stderr: if self.status == 0 {
                    String::new()
                } else {
                    "restorecon: lstat(/x) failed: No such file or directory".to_owned()
                },
            })
        }

        fn has(&self, tool: &str) -> bool {
            tool == "restorecon" && self.has_restorecon
        }
    }

    fn fake(has_restorecon: bool, status: i32) -> FakeExec {
        FakeExec {
            has_restorecon,
            status,
            ran: Mutex::new(Vec::new()),
        }
    }

    #[tokio::test]
    async fn installed_files_get_their_selinux_labels_back_only_where_selinux_is_on() {
        let targets = vec![
            PathBuf::from("/opt/rke2/bin/rke2"),
            PathBuf::from("/etc/systemd/system/rke2-server.service"),
        ];
        let exec = fake(true, 0);
        let said = restore_selinux_contexts(&exec, true, &targets).await;
        assert_eq!(said, "; SELinux contexts restored");
        assert_eq!(
            *exec.ran.lock().expect("lock"),
            vec![vec![
                "restorecon".to_owned(),
                "/opt/rke2/bin/rke2".to_owned(),
                "/etc/systemd/system/rke2-server.service".to_owned()
            ]]
        );
        // SELinux off, or no restorecon: nothing runs, nothing is said.
        for (exec, on) in [(fake(true, 0), false), (fake(false, 0), true)] {
            assert_eq!(restore_selinux_contexts(&exec, on, &targets).await, "");
            assert!(exec.ran.lock().expect("lock").is_empty());
        }
        // A failure is reported in the detail (the unit's start decides whether it matters).
        let exec = fake(true, 1);
        let said = restore_selinux_contexts(&exec, true, &targets).await;
        assert!(
            said.starts_with("; restorecon failed: restorecon: lstat"),
            "{said}"
        );
    }
}
