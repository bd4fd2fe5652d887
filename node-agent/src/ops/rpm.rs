//! An upgrade of an RPM install: the same steps as a tarball upgrade, with the package
//! manager doing the fetching and installing.
//!
//! - fetch: from a repository URL, the repository file (`rancher-rke2.repo`, RKE2's per-minor
//!   layout, the target's minor and the installed one's so a rollback finds its packages) is
//!   put in place and the exact packages (`rke2-common-1.34.1~rke2r1`, `rke2-server-...`) are
//!   downloaded without installing; from a folder (air-gapped), the matching `.rpm` files are
//!   copied. Either way the operation's folder then holds the files to install.
//! - verify: `rpm -Kv` checks every file's digests and, when a key is configured
//!   (`rpm_gpg_key`), its signature: the key is imported into the node's RPM database first
//!   (`rpm --import`, what rpm, dnf, yum and zypper trust), and a file that is unsigned or
//!   signed by a key not there is refused by name, from a repository or an air-gap folder
//!   alike. dnf, yum and zypper already check what they download from a `gpgcheck=1`
//!   repository (a failed download names the package, [`download_failure`]), but dnf and
//!   yum install local files, such as an air-gap folder's, unchecked (`localpkg_gpgcheck` is
//!   off by default), and one check for every tool and source says the same. Each pinned
//!   package must be there at exactly the target version.
//! - install: the package manager installs those files. The old package's `%postun`
//!   restarts the unit (`systemctl try-restart`), which is the restart step; the step after
//!   only restarts if the package did not.
//! - rollback: the package manager installs exactly the recorded previous packages again
//!   (from the repository, or the folder's files when they are there); yum downgrades the
//!   older ones with `yum downgrade`, which EL7's yum needs.
//!
//! Every command runs through [`PackageExec`] (outside the agent's sandbox, see
//! [`super::pkg`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rke2ops_common::install::{
    COMMON_PACKAGE, REPO_FILE_NAME, RpmRepository, SELINUX_PACKAGE, minor_of, package_version,
    pinned_packages, version_of_package,
};
use rke2ops_common::version::Rke2Version;

use super::journal::{InstallRecord, OpRecord};
use super::method::{Package, rpm_packages};
use super::pkg::{PackageExec, Restore, compare_version_release};
use super::steps::Role;
use crate::config::RpmConfig;

/// A package transaction may wait for the unit's restart (`%postun`), which may take as long
/// as RKE2 takes to become ready.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(900);
/// Queries and checks.
const QUERY_TIMEOUT: Duration = Duration::from_secs(120);

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Server => "server",
        Role::Agent => "agent",
    }
}

fn argv(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The installed RKE2 version according to the RPM database (`rke2-common`).
///
/// # Errors
/// No `rke2-common`, or a version that is not RKE2's.
pub fn installed_version(packages: &[Package]) -> Result<String, String> {
    let common = packages
        .iter()
        .find(|p| p.name == COMMON_PACKAGE)
        .ok_or_else(|| format!("{COMMON_PACKAGE} is not installed"))?;
    version_of_package(&common.version_release)
        .map(|v| v.to_string())
        .ok_or_else(|| format!("{} is not an RKE2 package version", common.version_release))
}

/// The repository's OS folder: configured, else from `/etc/os-release`.
fn os_folder(config: &RpmConfig) -> Result<String, String> {
    if let Some(os) = &config.os {
        return Ok(os.clone());
    }
    let text = std::fs::read_to_string("/etc/os-release")
        .map_err(|e| format!("/etc/os-release: {e}; set rpm_os in the agent's configuration"))?;
    rke2ops_common::install::os_folder(&text).ok_or_else(|| {
        "cannot tell RKE2's repository folder from /etc/os-release; set rpm_os (e.g. \"centos/9\")"
            .to_owned()
    })
}

/// The configured key as a URL for a repository file's `gpgkey=`: an absolute path becomes
/// a `file://` URL (what dnf, yum and zypper read); URLs are kept.
#[must_use]
pub fn key_url(key: &str) -> String {
    if key.starts_with('/') {
        format!("file://{key}")
    } else {
        key.to_owned()
    }
}

/// Where the packages would come from, for the version check's detail and dry runs.
#[must_use]
pub fn source_text(config: &RpmConfig, target: &Rke2Version) -> String {
    if config.repository.starts_with('/') {
        return match &config.gpg_key {
            Some(key) => format!("the folder {} (signed by {key})", config.repository),
            None => format!("the folder {}", config.repository),
        };
    }
    let os = os_folder(config).unwrap_or_else(|_| "<rpm_os>".to_owned());
    let url = RpmRepository::new(&config.repository, &os, None)
        .minor_url(&minor_of(target), super::artifacts::arch());
    match &config.gpg_key {
        Some(key) => format!("{url} (signed by {key})"),
        None => url,
    }
}

/// `.rpm` files in `dir` (not recursive) whose name starts with `prefix`.
fn rpm_files_in(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".rpm"))
        })
        .collect();
    found.sort();
    found
}

/// Every `.rpm` under `dir`, recursively (zypper downloads into per-repository folders).
fn all_rpms(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            all_rpms(&path, out);
        } else if path.extension().is_some_and(|e| e == "rpm") {
            out.push(path);
        }
    }
}

/// The air-gap folder's files for `pinned` (`name-version`): in the folder or its
/// `<version>/` subfolder; `rke2-selinux` (its own versions) the newest there, if any.
fn files_from_folder(
    folder: &Path,
    version: &str,
    pinned: &[String],
) -> Result<Vec<PathBuf>, String> {
    let dirs = [folder.join(version), folder.to_path_buf()];
    let mut files = Vec::new();
    for package in pinned {
        let found = dirs
            .iter()
            .find_map(|d| rpm_files_in(d, &format!("{package}-")).pop())
            .ok_or_else(|| {
                format!(
                    "no {package}-*.rpm in {} (or its {version}/ folder)",
                    folder.display()
                )
            })?;
        files.push(found);
    }
    if let Some(selinux) = dirs
        .iter()
        .find_map(|d| rpm_files_in(d, &format!("{SELINUX_PACKAGE}-")).pop())
    {
        files.push(selinux);
    }
    Ok(files)
}

/// The error of a failed download: the tool's last line, and the lines about one of the
/// `pinned` packages that say what went wrong with it. dnf and yum check signatures when
/// they download from a repository with `gpgcheck=1`, and their last line is only "GPG check
/// FAILED"; the file is named on a line before ("Public key for
/// rke2-common-1.34.2~rke2r1-0.x86_64.rpm is not installed. Failing package is: ...",
/// "Package ... is not signed"); zypper's says "Signature verification failed".
#[must_use]
pub fn download_failure(tool: &str, out: &super::pkg::ExecOutput, pinned: &[String]) -> String {
    const WHY: [&str; 5] = ["key", "sign", "gpg", "fail", "error"];
    let mut about: Vec<&str> = Vec::new();
    for line in out.stderr.lines().chain(out.stdout.lines()) {
        let line = line.trim();
        let lower = line.to_ascii_lowercase();
        if pinned.iter().any(|p| line.contains(p.as_str()))
            && WHY.iter().any(|w| lower.contains(w))
            && !about.contains(&line)
        {
            about.push(line);
        }
    }
    about.truncate(3);
    let last = out.last_line();
    let mut text = format!(
        "{tool} failed (exit {}): {last}",
        out.status
            .map_or_else(|| "by signal".to_owned(), |s| s.to_string())
    );
    for line in about.into_iter().filter(|l| *l != last) {
        text.push_str("; ");
        text.push_str(line);
    }
    text
}

/// Runs a command and turns a failure into the step's error.
async fn run_ok(
    exec: &impl PackageExec,
    argv: &[String],
    timeout: Duration,
) -> Result<String, String> {
    let out = exec.run(argv, timeout).await?;
    if out.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "{} failed (exit {}): {}",
            argv.first().map_or("", String::as_str),
            out.status
                .map_or_else(|| "by signal".to_owned(), |s| s.to_string()),
            out.last_line()
        ))
    }
}

/// The version check of an RPM install: records the tool and the previous packages.
///
/// # Errors
/// No package tool, or no `rke2-common`.
pub fn start(
    config: &RpmConfig,
    exec: &impl PackageExec,
    packages: Vec<Package>,
) -> Result<(InstallRecord, String), String> {
    let tool = super::pkg::pick_tool(config.package_manager, exec)
        .ok_or("RPM install but no dnf, yum or zypper on this node (set package_manager)")?;
    let installed = installed_version(&packages)?;
    Ok((
        InstallRecord::Rpm {
            tool,
            previous: packages.iter().map(Package::nevr).collect(),
            files: Vec::new(),
            pid_before: None,
            gpg_key: config.gpg_key.clone(),
        },
        installed,
    ))
}

/// Fetches the exact packages into `dir` (the operation's `artifacts/`).
///
/// # Errors
/// A repository that cannot be written or reached, packages that are not there.
pub async fn fetch(
    config: &RpmConfig,
    exec: &impl PackageExec,
    record: &mut OpRecord,
    target: &Rke2Version,
    previous: &str,
    dir: &Path,
) -> Result<String, String> {
    let Some(InstallRecord::Rpm { tool, files, .. }) = &mut record.install else {
        return Err("not an RPM install".to_owned());
    };
    let tool = *tool;
    let pinned = pinned_packages(role_name(record.role), target);
    // A re-run (after a crash) starts from an empty folder.
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (found, from) = if config.repository.starts_with('/') {
        let folder = Path::new(&config.repository);
        let found = files_from_folder(folder, &target.to_string(), &pinned)?;
        let mut copied = Vec::new();
        for file in found {
            let name = file.file_name().ok_or("a file without a name")?;
            let to = dir.join(name);
            std::fs::copy(&file, &to)
                .map_err(|e| format!("copy {} to {}: {e}", file.display(), to.display()))?;
            copied.push(to);
        }
        (copied, format!("the folder {}", folder.display()))
    } else {
        let repo = RpmRepository::new(
            &config.repository,
            &os_folder(config)?,
            config.gpg_key.as_deref().map(key_url),
        );
        let mut minors = vec![minor_of(target)];
        if let Ok(prev) = previous.parse::<Rke2Version>() {
            minors.push(minor_of(&prev));
        }
        let text = repo.repo_file(&minors, super::artifacts::arch());
        // The agent's sandbox cannot write /etc: the file is written beside the download
        // and put in place by the package command's own (unsandboxed) unit.
        let staged = dir.join(REPO_FILE_NAME);
        std::fs::write(&staged, text).map_err(|e| format!("{}: {e}", staged.display()))?;
        let target_file = Path::new(tool.repo_dir()).join(REPO_FILE_NAME);
        run_ok(
            exec,
            &[
                "install".to_owned(),
                "-D".to_owned(),
                "-m".to_owned(),
                "0644".to_owned(),
                staged.display().to_string(),
                target_file.display().to_string(),
            ],
            QUERY_TIMEOUT,
        )
        .await
        .map_err(|e| format!("writing {}: {e}", target_file.display()))?;
        let _ = std::fs::remove_file(&staged);
        let download = tool.download_argv(&pinned, &dir.display().to_string());
        let out = exec.run(&download, TRANSACTION_TIMEOUT).await?;
        if !out.success() {
            return Err(download_failure(tool.name(), &out, &pinned));
        }
        let mut found = Vec::new();
        all_rpms(dir, &mut found);
        found.sort();
        (
            found,
            repo.minor_url(&minor_of(target), super::artifacts::arch()),
        )
    };
    if found.is_empty() {
        return Err(format!(
            "{} downloaded nothing for {}",
            tool.name(),
            pinned.join(" ")
        ));
    }
    let names: Vec<String> = found
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    *files = found;
    Ok(format!(
        "{} from {from} ({})",
        names.join(", "),
        tool.name()
    ))
}

/// The files `rpm -Kv` output refuses, each as `<file name>: <why>`, in `files`' order.
///
/// `rpm -Kv` prints a block per file: the path and `:`, then one indented line per check
/// ending in `: OK` or another verdict (`BAD`, `NOKEY`, `NOTTRUSTED`...): `Header V4
/// RSA/SHA512 Signature, key ID 3a1de1ad: NOKEY`, `Payload SHA256 digest: OK` (rpm 4.11 to
/// 4.19 alike; the short `rpm -K` line differs between them). A digest that is not OK
/// refuses the file; with `signatures`, so does a signature that is not OK or no signature
/// at all (an unsigned package only has digests, and rpm calls that OK). A file without a
/// block (rpm could not read it) is refused too.
#[must_use]
pub fn refused_by_rpm_k(output: &str, files: &[String], signatures: bool) -> Vec<String> {
    let mut blocks: Vec<(&str, Vec<&str>)> = Vec::new();
    for line in output.lines() {
        if line.starts_with(char::is_whitespace) {
            if let Some((_, checks)) = blocks.last_mut()
                && !line.trim().is_empty()
            {
                checks.push(line.trim());
            }
        } else if let Some(path) = line.trim_end().strip_suffix(':') {
            blocks.push((path, Vec::new()));
        }
    }
    let ok = |check: &&str| {
        check
            .rsplit_once(": ")
            .is_some_and(|(_, verdict)| verdict.starts_with("OK"))
    };
    let mut refused = Vec::new();
    for file in files {
        let name = Path::new(file)
            .file_name()
            .map_or_else(|| file.clone(), |n| n.to_string_lossy().into_owned());
        let Some((_, checks)) = blocks.iter().find(|(path, _)| path == file) else {
            refused.push(format!("{name}: not checked (rpm could not read it)"));
            continue;
        };
        let (sigs, digests): (Vec<&str>, Vec<&str>) = checks
            .iter()
            .partition(|c| c.to_ascii_lowercase().contains("signature"));
        if digests.is_empty() {
            refused.push(format!("{name}: no digest checked"));
        } else if let Some(bad) = digests.iter().find(|c| !ok(c)) {
            refused.push(format!("{name}: {bad}"));
        } else if signatures && sigs.is_empty() {
            refused.push(format!("{name}: not signed"));
        } else if let Some(bad) = sigs.iter().find(|c| !ok(c)).filter(|_| signatures) {
            let why = if bad.ends_with("NOKEY") {
                " (signed by a key that is not in the RPM database)"
            } else {
                ""
            };
            refused.push(format!("{name}: {bad}{why}"));
        }
    }
    refused
}

/// Imports the configured key into the node's RPM database (`rpm --import`, a path or a
/// URL; rpm fetches URLs with curl), so that `rpm -K` and the package manager's installs
/// check against it. Importing a key already there changes nothing.
async fn import_key(exec: &impl PackageExec, key: &str) -> Result<(), String> {
    run_ok(exec, &argv(&["rpm", "--import", key]), QUERY_TIMEOUT)
        .await
        .map(drop)
        .map_err(|e| format!("importing the signing key {key}: {e}"))
}

/// Checks the fetched files: digests and, with a key, signatures (`rpm -Kv`), and exactly
/// the pinned packages.
///
/// # Errors
/// A damaged, unsigned or foreign-signed file (named, with why the key could not be imported
/// if it could not), or a package missing or at another version.
pub async fn verify(
    exec: &impl PackageExec,
    record: &OpRecord,
    target: &Rke2Version,
) -> Result<String, String> {
    let Some(InstallRecord::Rpm { files, gpg_key, .. }) = &record.install else {
        return Err("not an RPM install".to_owned());
    };
    if files.is_empty() {
        return Err("no package files fetched".to_owned());
    }
    // Best effort: an air-gapped node cannot fetch the default key URL, but may have the
    // key in its RPM database already (it passed the check before); `rpm -Kv` still refuses
    // any file whose key is not there, and the refusal then says why the import failed.
    let import_failed = match gpg_key {
        Some(key) => import_key(exec, key).await.err(),
        None => None,
    };
    let paths: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let mut check = argv(&["rpm", "-Kv"]);
    check.extend(paths.iter().cloned());
    // Not OK exits 1; the verdicts are read from the output, file by file.
    let out = exec.run(&check, QUERY_TIMEOUT).await?;
    let refused = refused_by_rpm_k(&out.stdout, &paths, gpg_key.is_some());
    if !refused.is_empty() {
        let against = if gpg_key.is_some() {
            ", signatures checked against the keys in the RPM database"
        } else {
            ""
        };
        let stderr = out.last_line();
        return Err(format!(
            "rpm -K refused {} of {} packages{against}: {}{}{}",
            refused.len(),
            paths.len(),
            refused.join("; "),
            if refused.iter().any(|r| r.contains("not checked")) && !stderr.is_empty() {
                format!(" ({stderr})")
            } else {
                String::new()
            },
            import_failed.map(|e| format!("; {e}")).unwrap_or_default()
        ));
    }
    let mut query = argv(&["rpm", "-qp", "--qf", "%{NAME} %{VERSION}-%{RELEASE}\\n"]);
    query.extend(files.iter().map(|f| f.display().to_string()));
    let found = super::method::parse_rpm_query(&run_ok(exec, &query, QUERY_TIMEOUT).await?);
    let want = package_version(target);
    for name in [
        COMMON_PACKAGE.to_owned(),
        format!("rke2-{}", role_name(record.role)),
    ] {
        match found.iter().find(|p| p.name == name) {
            Some(p) if p.version_release.split('-').next() == Some(want.as_str()) => {}
            Some(p) => {
                return Err(format!("{name} is {}, not {want}", p.version_release));
            }
            None => return Err(format!("{name} is not among the fetched packages")),
        }
    }
    let checked = match (gpg_key, &import_failed) {
        (Some(key), None) => format!("digests and signatures OK (signed by {key})"),
        (Some(_), Some(e)) => {
            format!("digests and signatures OK (signed by a key already in the RPM database; {e})")
        }
        (None, _) => "digests OK (signatures not checked: rpm_gpg_key is empty)".to_owned(),
    };
    Ok(format!(
        "{} packages' {checked}, {} {want}",
        files.len(),
        found
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Installs the fetched files with the package manager.
///
/// # Errors
/// The transaction failing (its last line), or the database not showing the target after.
pub async fn install(
    exec: &impl PackageExec,
    record: &OpRecord,
    target: &Rke2Version,
) -> Result<String, String> {
    let Some(InstallRecord::Rpm {
        tool,
        files,
        gpg_key,
        ..
    }) = &record.install
    else {
        return Err("not an RPM install".to_owned());
    };
    let items: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    run_ok(
        exec,
        &tool.install_argv(&items, gpg_key.is_some()),
        TRANSACTION_TIMEOUT,
    )
    .await?;
    let now = installed_version(&rpm_packages(exec).await?)?;
    if now != target.to_string() {
        return Err(format!(
            "{} installed, but the RPM database shows {COMMON_PACKAGE} {now}",
            tool.name()
        ));
    }
    Ok(format!(
        "{} installed {} ({COMMON_PACKAGE} now {now})",
        tool.name(),
        files.len()
    ))
}

/// The restart step of an RPM upgrade: the package's `%postun` normally did it (the main
/// PID changed); `None` when the unit still runs the process from before, so the caller
/// restarts it.
#[must_use]
pub fn restarted_by_package(pid_before: Option<u32>, pid_now: u32, active: bool) -> Option<String> {
    let before = pid_before?;
    (active && pid_now != 0 && pid_now != before)
        .then(|| format!("restarted by the package's %postun (main PID {before} → {pid_now})"))
}

/// The database shows the target (`rke2-common`), for the version verification.
///
/// # Errors
/// Another version, or no `rke2-common`.
pub async fn verify_database(exec: &impl PackageExec, target: &str) -> Result<String, String> {
    let now = installed_version(&rpm_packages(exec).await?)?;
    if now == target {
        Ok(format!("the RPM database shows {COMMON_PACKAGE} {now}"))
    } else {
        Err(format!(
            "the RPM database shows {COMMON_PACKAGE} {now}, not {target}"
        ))
    }
}

/// Installs exactly the previous packages again (a downgrade), preferring the air-gap
/// folder's files when it has them.
///
/// # Errors
/// The transaction failing, or the database not showing the previous version after.
pub async fn restore(
    config: &RpmConfig,
    exec: &impl PackageExec,
    record: &OpRecord,
) -> Result<String, String> {
    let Some(InstallRecord::Rpm {
        tool,
        previous,
        gpg_key,
        ..
    }) = &record.install
    else {
        return Err("not an RPM install".to_owned());
    };
    // The key is there already unless the upgrade failed before its verification. Best
    // effort: a key server that is down must not stop a rollback (the package manager then
    // says what it misses).
    if let Some(key) = gpg_key {
        let _ = import_key(exec, key).await;
    }
    let installed = rpm_packages(exec).await?;
    let items: Vec<(String, Restore)> = previous
        .iter()
        .map(|nevr| {
            let how = restore_kind(nevr, &installed);
            if config.repository.starts_with('/') {
                let folder = Path::new(&config.repository);
                let in_version = record.previous_version.as_deref().map(|v| folder.join(v));
                let found = in_version
                    .iter()
                    .chain(std::iter::once(&folder.to_path_buf()))
                    .find_map(|d| rpm_files_in(d, &format!("{nevr}.")).pop());
                if let Some(file) = found {
                    return (file.display().to_string(), how);
                }
            }
            (nevr.clone(), how)
        })
        .collect();
    for command in tool.restore_argvs(&items, gpg_key.is_some()) {
        run_ok(exec, &command, TRANSACTION_TIMEOUT).await?;
    }
    let now = installed_version(&rpm_packages(exec).await?)?;
    if let Some(previous_version) = &record.previous_version
        && &now != previous_version
    {
        return Err(format!(
            "{} reinstalled {}, but the RPM database shows {COMMON_PACKAGE} {now}",
            tool.name(),
            previous.join(" ")
        ));
    }
    Ok(format!(
        "{} reinstalled {} ({now})",
        tool.name(),
        previous.join(" ")
    ))
}

/// How a rollback puts back the recorded package `nevr` (`name-version-release`), given
/// what is installed now.
#[must_use]
pub fn restore_kind(nevr: &str, installed: &[Package]) -> Restore {
    // `name-version-release`: the name is everything before the last two `-`.
    let Some((name, version_release)) = nevr
        .rsplitn(3, '-')
        .collect::<Vec<_>>()
        .as_slice()
        .split_first()
        .and_then(|(release, rest)| match rest {
            [version, name] => Some((*name, format!("{version}-{release}"))),
            _ => None,
        })
    else {
        return Restore::Install;
    };
    match installed.iter().find(|p| p.name == name) {
        None => Restore::Install,
        Some(now) => match compare_version_release(&version_release, &now.version_release) {
            std::cmp::Ordering::Equal => Restore::Keep,
            std::cmp::Ordering::Less => Restore::Downgrade,
            std::cmp::Ordering::Greater => Restore::Install,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn rpm_k_refuses_unsigned_and_foreign_signed_files_by_name_when_a_key_is_configured() {
        // rpm 4.18's `rpm -Kv` on a package signed by the imported key, one signed by a key
        // that is not imported, and an unsigned one.
        let out = "/op/a/rke2-server-1.34.2~rke2r1-0.x86_64.rpm:
    Header V4 RSA/SHA512 Signature, key ID 3a1de1ad: OK
    Header SHA256 digest: OK
    Header SHA1 digest: OK
    Payload SHA256 digest: OK
    MD5 digest: OK
/op/a/rke2-common-1.34.2~rke2r1-0.x86_64.rpm:
    Header V4 RSA/SHA512 Signature, key ID 77aa01bc: NOKEY
    Header SHA256 digest: OK
    Header SHA1 digest: OK
    Payload SHA256 digest: OK
    MD5 digest: OK
/op/a/rke2-agent-1.34.2~rke2r1-0.x86_64.rpm:
    Header SHA256 digest: OK
    Header SHA1 digest: OK
    Payload SHA256 digest: OK
    MD5 digest: OK
";
        let files = strings(&[
            "/op/a/rke2-common-1.34.2~rke2r1-0.x86_64.rpm",
            "/op/a/rke2-server-1.34.2~rke2r1-0.x86_64.rpm",
            "/op/a/rke2-agent-1.34.2~rke2r1-0.x86_64.rpm",
        ]);
        assert_eq!(
            refused_by_rpm_k(out, &files, true),
            [
                "rke2-common-1.34.2~rke2r1-0.x86_64.rpm: Header V4 RSA/SHA512 Signature, key ID 77aa01bc: NOKEY (signed by a key that is not in the RPM database)",
                "rke2-agent-1.34.2~rke2r1-0.x86_64.rpm: not signed",
            ]
        );
        // Without a key only digests count: a signature rpm cannot check is no refusal.
        assert!(refused_by_rpm_k(out, &files, false).is_empty());
    }

    #[test]
    fn rpm_k_refuses_bad_digests_and_files_it_did_not_read() {
        // rpm 4.11's (EL7) wording: digests carry their value.
        let out = "/op/x.rpm:
    Header V4 RSA/SHA1 Signature, key ID f4a80eb5: OK
    Header SHA1 digest: OK (5e3a4f)
    V4 RSA/SHA1 Signature, key ID f4a80eb5: OK
    MD5 digest: BAD (Expected 9a0c != 11aa)
";
        let files = strings(&["/op/x.rpm", "/op/missing.rpm"]);
        assert_eq!(
            refused_by_rpm_k(out, &files, false),
            [
                "x.rpm: MD5 digest: BAD (Expected 9a0c != 11aa)",
                "missing.rpm: not checked (rpm could not read it)",
            ]
        );
        let good = "/op/x.rpm:\n    Header SHA1 digest: OK (5e3a4f)\n    V4 RSA/SHA1 Signature, key ID f4a80eb5: OK\n";
        assert!(refused_by_rpm_k(good, &strings(&["/op/x.rpm"]), true).is_empty());
        let empty = "/op/x.rpm:\n";
        assert_eq!(
            refused_by_rpm_k(empty, &strings(&["/op/x.rpm"]), false),
            ["x.rpm: no digest checked"]
        );
    }

    #[test]
    fn a_rollback_downgrades_what_is_newer_keeps_what_is_there_and_installs_the_rest() {
        let installed = vec![
            Package {
                name: "rke2-common".into(),
                version_release: "1.34.1~rke2r1-0".into(),
            },
            Package {
                name: "rke2-selinux".into(),
                version_release: "0.20-1".into(),
            },
        ];
        assert_eq!(
            restore_kind("rke2-common-1.33.5~rke2r1-0", &installed),
            Restore::Downgrade
        );
        assert_eq!(
            restore_kind("rke2-selinux-0.20-1", &installed),
            Restore::Keep
        );
        assert_eq!(
            restore_kind("rke2-server-1.33.5~rke2r1-0", &installed),
            Restore::Install
        );
        assert_eq!(
            restore_kind("rke2-common-1.34.2~rke2r1-0", &installed),
            Restore::Install
        );
    }

    #[test]
    fn a_failed_download_names_the_package_whose_signature_failed() {
        // dnf 4's output when the repository's key does not sign a package (the critical
        // lines on stderr, progress on stdout).
        let out = super::super::pkg::ExecOutput {
            status: Some(1),
            stdout: "(1/2): rke2-server-1.34.2~rke2r1-0.x86_64.rpm  2.1 MB/s | 1.2 MB  00:00\n\
                     (2/2): rke2-common-1.34.2~rke2r1-0.x86_64.rpm  3.0 MB/s | 4.8 MB  00:00\n"
                .into(),
            stderr: "Importing GPG key 0x3A1DE1AD:\n\
                     Public key for rke2-common-1.34.2~rke2r1-0.x86_64.rpm is not installed. Failing package is: rke2-common-1.34.2~rke2r1-0.x86_64\n \
                     GPG Keys are configured as: http://m/rpm/public.key\n\
                     Package rke2-agent-1.34.2~rke2r1-0.x86_64.rpm is not signed\n\
                     Error: GPG check FAILED\n"
                .into(),
        };
        let pinned = strings(&["rke2-common-1.34.2~rke2r1", "rke2-agent-1.34.2~rke2r1"]);
        assert_eq!(
            download_failure("yum", &out, &pinned),
            "yum failed (exit 1): Error: GPG check FAILED; \
             Public key for rke2-common-1.34.2~rke2r1-0.x86_64.rpm is not installed. Failing package is: rke2-common-1.34.2~rke2r1-0.x86_64; \
             Package rke2-agent-1.34.2~rke2r1-0.x86_64.rpm is not signed"
        );
        let plain = super::super::pkg::ExecOutput {
            status: Some(1),
            stdout: String::new(),
            stderr: "Error: Unable to find a match: rke2-server-1.34.9~rke2r1\n".into(),
        };
        assert_eq!(
            download_failure("dnf", &plain, &strings(&["rke2-server-1.34.9~rke2r1"])),
            "dnf failed (exit 1): Error: Unable to find a match: rke2-server-1.34.9~rke2r1"
        );
    }

    #[test]
    fn a_key_path_becomes_a_file_url_for_the_repository_file() {
        assert_eq!(
            key_url("/srv/rke2/public.key"),
            "file:///srv/rke2/public.key"
        );
        assert_eq!(
            key_url("https://rpm.rancher.io/public.key"),
            "https://rpm.rancher.io/public.key"
        );
    }

    #[test]
    fn a_package_restart_is_recognised_by_the_new_main_pid() {
        assert!(restarted_by_package(Some(10), 11, true).is_some());
        assert_eq!(restarted_by_package(Some(10), 10, true), None);
        assert_eq!(restarted_by_package(Some(10), 11, false), None);
        assert_eq!(restarted_by_package(None, 11, true), None);
    }

    #[test]
    fn the_folder_source_finds_the_pinned_files_and_names_what_is_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v = dir.path().join("v1.34.1+rke2r1");
        std::fs::create_dir_all(&v).expect("mkdir");
        for name in [
            "rke2-common-1.34.1~rke2r1-0.x86_64.rpm",
            "rke2-server-1.34.1~rke2r1-0.x86_64.rpm",
            "rke2-server-1.33.5~rke2r1-0.x86_64.rpm",
        ] {
            std::fs::write(v.join(name), b"x").expect("write");
        }
        std::fs::write(dir.path().join("rke2-selinux-0.20-1.noarch.rpm"), b"x").expect("write");
        let pinned = pinned_packages("server", &"v1.34.1+rke2r1".parse().expect("v"));
        let files = files_from_folder(dir.path(), "v1.34.1+rke2r1", &pinned).expect("found");
        let names: Vec<_> = files
            .iter()
            .map(|f| f.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "rke2-common-1.34.1~rke2r1-0.x86_64.rpm",
                "rke2-server-1.34.1~rke2r1-0.x86_64.rpm",
                "rke2-selinux-0.20-1.noarch.rpm"
            ]
        );
        let agent = pinned_packages("agent", &"v1.34.1+rke2r1".parse().expect("v"));
        let err = files_from_folder(dir.path(), "v1.34.1+rke2r1", &agent).expect_err("missing");
        assert!(err.contains("rke2-agent-1.34.1~rke2r1-*.rpm"), "{err}");
    }

    #[test]
    fn installed_version_comes_from_rke2_common() {
        let pkgs = vec![Package {
            name: "rke2-common".into(),
            version_release: "1.33.5~rke2r1-0".into(),
        }];
        assert_eq!(installed_version(&pkgs).as_deref(), Ok("v1.33.5+rke2r1"));
        assert!(installed_version(&[]).is_err());
    }
}

#[cfg(test)]
mod verify_tests {
    use std::time::Duration;

    use super::*;
    use crate::ops::journal::OpRecord;
    use crate::ops::pkg::ExecOutput;
    use crate::ops::steps::{OpKind, Step};

    const COMMON: &str = "/op/a/rke2-common-1.34.1~rke2r1-0.x86_64.rpm";
    const SERVER: &str = "/op/a/rke2-server-1.34.1~rke2r1-0.x86_64.rpm";

    /// An offline node: `rpm --import <url>` fails; `rpm -Kv` answers `verdict` for both files.
    struct Offline {
        verdict: &'static str,
    }

    impl PackageExec for Offline {
        async fn run(&self, argv: &[String], _timeout: Duration) -> Result<ExecOutput, String> {
            let out = |status, stdout: String, stderr: &str| ExecOutput {
                status: Some(status),
                stdout,
                stderr: stderr.to_owned(),
            };
            Ok(match argv.get(1).map(String::as_str) {
                Some("--import") => out(
                    1,
                    String::new(),
                    "curl: (6) Could not resolve host: rpm.rancher.io",
                ),
                Some("-Kv") => out(
                    i32::from(self.verdict != "OK"),
                    [COMMON, SERVER]
                        .iter()
                        .map(|f| {
                            format!(
                                "{f}:\n    Header V4 RSA/SHA512 Signature, key ID 3a1de1ad: {}\n    Header SHA256 digest: OK\n    Payload SHA256 digest: OK\n",
                                self.verdict
                            )
                        })
                        .collect(),
                    "",
                ),
                _ => out(
                    0,
                    "rke2-common 1.34.1~rke2r1-0\nrke2-server 1.34.1~rke2r1-0\n".to_owned(),
                    "",
                ),
            })
        }

        fn has(&self, _tool: &str) -> bool {
            true
        }
    }

    fn record() -> OpRecord {
        let mut record = OpRecord::new(
            "op-1".into(),
            OpKind::Upgrade {
                version: "v1.34.1+rke2r1".into(),
                source: None,
                allow_rollback: true,
            },
            Role::Server,
            "rke2-server.service".into(),
            Step::VerifyChecksum,
            time::OffsetDateTime::UNIX_EPOCH,
        );
        record.install = Some(InstallRecord::Rpm {
            tool: super::super::pkg::PackageTool::Dnf,
            previous: vec![],
            files: vec![COMMON.into(), SERVER.into()],
            pid_before: None,
            gpg_key: Some(rke2ops_common::install::DEFAULT_RPM_GPG_KEY.into()),
        });
        record
    }

    #[tokio::test]
    async fn an_offline_node_with_the_key_already_trusted_still_verifies() {
        let target: Rke2Version = "v1.34.1+rke2r1".parse().expect("version");
        let ok = verify(&Offline { verdict: "OK" }, &record(), &target)
            .await
            .expect("signatures OK with the key already in the RPM database");
        assert!(
            ok.contains("signed by a key already in the RPM database")
                && ok.contains("Could not resolve host"),
            "{ok}"
        );
        // Without the key in the database the files are refused, and the refusal says why
        // the import failed.
        let err = verify(&Offline { verdict: "NOKEY" }, &record(), &target)
            .await
            .expect_err("NOKEY refused");
        assert!(
            err.contains("rke2-common-1.34.1~rke2r1-0.x86_64.rpm")
                && err.contains("NOKEY")
                && err.contains("importing the signing key")
                && err.contains("Could not resolve host"),
            "{err}"
        );
    }
}
