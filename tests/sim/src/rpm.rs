//! Simulated RKE2 releases as RPM packages, in RKE2's repository layout, and installing them
//! on proving-ground nodes with `dnf` or `zypper` as RKE2's install.sh does.
//!
//! Packages per release (as rancher/rke2-packaging's spec files lay them out):
//! - `rke2-common`: `/usr/bin/rke2` (the same simulated binary as the tarball's `bin/rke2`,
//!   [`release::rke2_binary`]), `/usr/bin/rke2-killall.sh`, `/usr/bin/rke2-uninstall.sh`,
//!   `/usr/share/rke2/*` ([`release::SHARE_FILES`]); `Requires: rke2-selinux`;
//! - `rke2-server`, `rke2-agent`: `/usr/lib/systemd/system/rke2-<role>.service` (this
//!   repository's unit with `ExecStart=/usr/bin/rke2 <role>`, [`rpm_unit_text`]) and the empty
//!   `/etc/sysconfig/rke2-<role>`; `Requires: rke2-common = %{version}-%{release}`; the
//!   scriptlets `%systemd_post`/`%systemd_preun`/`%systemd_postun_with_restart` expand to
//!   (daemon-reload, disable on erase, `try-restart` after an upgrade);
//! - `rke2-selinux` (noarch, [`SELINUX_VERSION`], a placeholder policy file) and
//!   `rke2ops-sim-os` (noarch, no files, `Provides: /bin/sh`: stands for the node's OS, whose
//!   rpmdb is empty on Debian) in the `common` repository.
//!
//! Versions: `v1.34.1+rke2r1` is RPM version `1.34.1~rke2r1`, release `0` ([`rpm_version`]).
//!
//! Layout ([`build_rpm_repo`]): `<releases>/rpm/stable/<major.minor>/centos/9/x86_64/` and
//! `<releases>/rpm/stable/common/centos/9/noarch/`, each with `createrepo_c` metadata, served
//! by [`crate::mirror`] under `/rpm/...`; and the air-gap folders `<releases>/rpm-airgap/<v>/`
//! with every package a node of that version needs. The pure parts (specs, repo files,
//! commands) are separate from the `rpmbuild`/`createrepo_c` runs. `tests/SIMULATOR.md` §8.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sha2::{Digest as _, Sha256};

use super::cluster::{unit_file, unit_name};
use super::release::{self, NEW_VERSION, OLD_VERSION, ReleaseError, SHARE_FILES};
use super::tree::Role;
use rke2ops_ground::{GroundError, Node, NodeSpec, built_binary};

/// The channel folder of the repository (`rpm.rancher.io/rke2/<channel>/...`).
pub const CHANNEL: &str = "stable";
/// The OS path segment of every repository (RKE2 also publishes `centos/7`, `8`, `slemicro`...).
pub const OS_PATH: &str = "centos/9";
/// The architecture of the per-minor repositories.
pub const RPM_ARCH: &str = "x86_64";
/// The placeholder SELinux package's version-release (the same for every release).
pub const SELINUX_VERSION: &str = "0.20-1";
/// The package standing for the node's OS.
pub const OS_PACKAGE: &str = "rke2ops-sim-os";
/// Where `rke2-common` puts the binary.
pub const RPM_RKE2_BIN: &str = "/usr/bin/rke2";
/// Where the role packages put their units.
pub const RPM_UNIT_DIR: &str = "/usr/lib/systemd/system";
/// The placeholder SELinux policy file of `rke2-selinux`.
pub const SELINUX_POLICY: &str = "/usr/share/selinux/packages/rke2/rke2.pp";
/// The repository's public key, `<releases>/rpm/public.key`, served as `/rpm/public.key` (as
/// `rpm.rancher.io/public.key`); [`RpmRepo::key_url`].
pub const PUBLIC_KEY_FILE: &str = "public.key";
/// A release whose packages a node must refuse when it checks signatures: `rke2-common` is
/// signed by a key that is not published, `rke2-agent` is not signed, `rke2-server` is signed
/// by the repository's key (so a refusal has to name the right file). In the repositories and
/// its air-gap folder like the others.
pub const UNTRUSTED_VERSION: &str = "v1.34.2+rke2r1";
/// The rpm macro file that keeps a node's rpmdb on the node (Debian's rpm defaults to
/// `~/.rpmdb`, the host's `/root`).
pub const DBPATH_MACROS: &str = "/etc/rpm/macros.rke2ops-sim";

/// Failures of building or installing packages.
#[derive(Debug, thiserror::Error)]
pub enum RpmError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A host tool (`rpmbuild`, `createrepo_c`) failed or is missing.
    #[error("{command}: {detail}")]
    Tool {
        /// The command line.
        command: String,
        /// Exit status and output, or the spawn error.
        detail: String,
    },
    /// A version that is not `v<major>.<minor>.<patch>+rke2r<n>`.
    #[error("not an RKE2 version: {0:?}")]
    Version(String),
    /// Building the simulated binary of a release failed.
    #[error(transparent)]
    Release(#[from] ReleaseError),
    /// The proving ground failed (a command on the node, a file).
    #[error(transparent)]
    Ground(#[from] GroundError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RpmError + '_ {
    move |source| RpmError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The package manager a node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PackageTool {
    /// `dnf` with `/etc/yum.repos.d/rke2.repo` (RHEL, CentOS, Rocky...).
    Dnf,
    /// `yum` as RHEL/Rocky 8+ ship it: `/usr/bin/yum -> dnf-3`, and no `dnf` on the node
    /// ([`prepare_tool`]), so whatever looks for a tool finds only yum. EL7's own yum (3.x)
    /// is not simulated.
    Yum,
    /// `zypper` with `zypper addrepo` (SLES, openSUSE).
    Zypper,
}

impl PackageTool {
    /// The command's name (`dnf`, `yum`, `zypper`), as the agent's `package_manager` takes it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Dnf => "dnf",
            Self::Yum => "yum",
            Self::Zypper => "zypper",
        }
    }

    /// dnf and yum share the repository file and their pinning (`name-version`).
    fn is_dnf_like(self) -> bool {
        matches!(self, Self::Dnf | Self::Yum)
    }
}

/// RPM version and release of an RKE2 version: `v1.34.1+rke2r1` → (`1.34.1~rke2r1`, `0`).
#[must_use]
pub fn rpm_version(version: &str) -> Option<(String, &'static str)> {
    let (core, build) = version.strip_prefix('v')?.split_once('+')?;
    let numeric = core.split('.').count() == 3
        && core
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let build_ok = build.starts_with("rke2r") && build.bytes().all(|b| b.is_ascii_alphanumeric());
    (numeric && build_ok).then(|| (format!("{core}~{build}"), "0"))
}

fn checked_rpm_version(version: &str) -> Result<String, RpmError> {
    rpm_version(version)
        .map(|(v, _)| v)
        .ok_or_else(|| RpmError::Version(version.to_owned()))
}

/// `major.minor` of an RKE2 version (`v1.34.1+rke2r1` → `1.34`): its repository.
#[must_use]
pub fn minor_of(version: &str) -> Option<String> {
    rpm_version(version)?;
    let mut parts = version.strip_prefix('v')?.split('.');
    Some(format!("{}.{}", parts.next()?, parts.next()?))
}

/// The per-minor repository of `version`, relative to the channel folder
/// (`1.34/centos/9/x86_64`).
#[must_use]
pub fn minor_repo_path(version: &str) -> Option<String> {
    Some(format!("{}/{OS_PATH}/{RPM_ARCH}", minor_of(version)?))
}

/// The common repository, relative to the channel folder (`common/centos/9/noarch`).
#[must_use]
pub fn common_repo_path() -> String {
    format!("common/{OS_PATH}/noarch")
}

/// One file of a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageFile {
    /// The installed path.
    pub path: String,
    /// Its mode.
    pub mode: u32,
    /// Its file name in the build's source folder.
    pub source: String,
    /// `%config(noreplace)` (the `/etc/sysconfig` files).
    pub config: bool,
}

/// What a spec file says (pure data; [`render_spec`] writes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSpec {
    /// Package name.
    pub name: String,
    /// RPM version (`1.34.1~rke2r1`).
    pub version: String,
    /// RPM release.
    pub release: String,
    /// `BuildArch: noarch` (else the build machine's, x86_64).
    pub noarch: bool,
    /// One line.
    pub summary: String,
    /// `Requires:` lines.
    pub requires: Vec<String>,
    /// `Provides:` lines.
    pub provides: Vec<String>,
    /// Files.
    pub files: Vec<PackageFile>,
    /// Directories the package owns (`%dir`).
    pub dirs: Vec<String>,
    /// Scriptlets: section (`post`, `preun`, `postun`) → body.
    pub scripts: BTreeMap<String, String>,
}

impl PackageSpec {
    /// The package's file name as [`build_rpm_repo`] writes it
    /// (`rke2-common-1.34.1~rke2r1-0.x86_64.rpm`).
    #[must_use]
    pub fn file_name(&self) -> String {
        let arch = if self.noarch { "noarch" } else { RPM_ARCH };
        format!("{}-{}-{}.{arch}.rpm", self.name, self.version, self.release)
    }
}

fn file(path: &str, mode: u32, source: &str) -> PackageFile {
    PackageFile {
        path: path.to_owned(),
        mode,
        source: source.to_owned(),
        config: false,
    }
}

/// Source file names of the SHARE_FILES in the build folder.
fn share_source(name: &str) -> String {
    format!("share-{name}")
}

/// `rke2-common` of `rpm_version` (see the module docs).
#[must_use]
pub fn common_spec(rpm_version: &str) -> PackageSpec {
    let mut files = vec![
        file(RPM_RKE2_BIN, 0o755, "rke2"),
        file("/usr/bin/rke2-killall.sh", 0o755, "rke2-killall.sh"),
        file("/usr/bin/rke2-uninstall.sh", 0o755, "rke2-uninstall.sh"),
    ];
    for (name, _) in SHARE_FILES {
        files.push(file(
            &format!("/usr/share/rke2/{name}"),
            0o644,
            &share_source(name),
        ));
    }
    PackageSpec {
        name: "rke2-common".into(),
        version: rpm_version.into(),
        release: "0".into(),
        noarch: false,
        summary: "Rancher Kubernetes Engine 2 (simulated): the rke2 binary".into(),
        requires: vec!["rke2-selinux".into()],
        provides: Vec::new(),
        files,
        dirs: vec!["/usr/share/rke2".into()],
        scripts: BTreeMap::new(),
    }
}

/// The scriptlets of a role package, as `%systemd_post`, `%systemd_preun` and
/// `%systemd_postun_with_restart` expand.
#[must_use]
pub fn role_scripts(role: Role) -> BTreeMap<String, String> {
    let unit = unit_name(role);
    let reload = "systemctl daemon-reload >/dev/null 2>&1 || :";
    BTreeMap::from([
        ("post".to_owned(), format!("{reload}\n")),
        (
            "preun".to_owned(),
            format!(
                "if [ $1 -eq 0 ]; then\n  systemctl --no-reload disable --now {unit} >/dev/null 2>&1 || :\nfi\n"
            ),
        ),
        (
            "postun".to_owned(),
            format!(
                "{reload}\nif [ $1 -ge 1 ]; then\n  systemctl try-restart {unit} >/dev/null 2>&1 || :\nfi\n"
            ),
        ),
    ])
}

/// `rke2-server` or `rke2-agent` of `rpm_version`.
#[must_use]
pub fn role_spec(rpm_version: &str, role: Role) -> PackageSpec {
    let base = unit_name(role).trim_end_matches(".service");
    let mut sysconfig = file(&format!("/etc/sysconfig/{base}"), 0o644, "sysconfig-empty");
    sysconfig.config = true;
    PackageSpec {
        name: base.to_owned(),
        version: rpm_version.into(),
        release: "0".into(),
        noarch: false,
        summary: format!("Rancher Kubernetes Engine 2 (simulated): the {base} unit"),
        requires: vec!["rke2-common = %{version}-%{release}".into()],
        provides: Vec::new(),
        files: vec![
            file(
                &format!("{RPM_UNIT_DIR}/{}", unit_name(role)),
                0o644,
                &format!("{base}.service"),
            ),
            sysconfig,
        ],
        dirs: Vec::new(),
        scripts: role_scripts(role),
    }
}

/// `rke2-selinux` ([`SELINUX_VERSION`]): a placeholder policy file, no policy loaded.
#[must_use]
pub fn selinux_spec() -> PackageSpec {
    let (version, release) = SELINUX_VERSION.split_once('-').unwrap_or(("0.20", "1"));
    PackageSpec {
        name: "rke2-selinux".into(),
        version: version.into(),
        release: release.into(),
        noarch: true,
        summary: "SELinux policy for RKE2 (simulated placeholder)".into(),
        requires: Vec::new(),
        provides: Vec::new(),
        files: vec![file(SELINUX_POLICY, 0o644, "rke2.pp")],
        dirs: vec!["/usr/share/selinux/packages/rke2".into()],
        scripts: BTreeMap::new(),
    }
}

/// `rke2ops-sim-os`: no files, `Provides: /bin/sh` (the scriptlets' interpreter, which the
/// Debian node has but its empty rpmdb does not list) and `glibc` (zypper refuses to touch a
/// system without it: `/etc/zypp/systemCheck`).
#[must_use]
pub fn os_spec() -> PackageSpec {
    PackageSpec {
        name: OS_PACKAGE.into(),
        version: "1".into(),
        release: "1".into(),
        noarch: true,
        summary: "The proving-ground node's OS, for rpm's dependency checks".into(),
        requires: Vec::new(),
        provides: vec!["/bin/sh".into(), "/usr/bin/sh".into(), "glibc".into()],
        files: Vec::new(),
        dirs: Vec::new(),
        scripts: BTreeMap::new(),
    }
}

/// The spec file text.
#[must_use]
pub fn render_spec(spec: &PackageSpec) -> String {
    let mut s = String::new();
    // Fast builds: gzip level 1, no brp scripts (no strip, no byte-compiling), no debuginfo,
    // no build-id links, no automatic dependencies.
    for define in [
        "_binary_payload w1.gzdio",
        "__os_install_post %{nil}",
        "debug_package %{nil}",
        "_build_id_links none",
    ] {
        let _ = writeln!(s, "%define {define}");
    }
    let _ = writeln!(s, "Name: {}", spec.name);
    let _ = writeln!(s, "Version: {}", spec.version);
    let _ = writeln!(s, "Release: {}", spec.release);
    let _ = writeln!(s, "Summary: {}", spec.summary);
    let _ = writeln!(s, "License: ASL 2.0");
    let _ = writeln!(s, "URL: https://github.com/rancher/rke2");
    if spec.noarch {
        let _ = writeln!(s, "BuildArch: noarch");
    }
    let _ = writeln!(s, "AutoReqProv: no");
    for r in &spec.requires {
        let _ = writeln!(s, "Requires: {r}");
    }
    for p in &spec.provides {
        let _ = writeln!(s, "Provides: {p}");
    }
    let _ = write!(
        s,
        "\n%description\n{} (rke2-ops simulator package).\n\n%prep\n\n%build\n\n%install\n",
        spec.summary
    );
    for f in &spec.files {
        let _ = writeln!(
            s,
            "install -D -m {:04o} %{{_sourcedir}}/{} %{{buildroot}}{}",
            f.mode, f.source, f.path
        );
    }
    let _ = writeln!(s, "\n%files");
    for d in &spec.dirs {
        let _ = writeln!(s, "%dir {d}");
    }
    for f in &spec.files {
        let config = if f.config { "%config(noreplace) " } else { "" };
        let _ = writeln!(s, "{config}%attr({:04o},root,root) {}", f.mode, f.path);
    }
    for (section, body) in &spec.scripts {
        let _ = write!(s, "\n%{section}\n{body}");
    }
    s
}

/// The unit `rke2-server`/`rke2-agent` ships: this repository's unit (`tests/sim/units/`)
/// with `ExecStart` pointing at `/usr/bin/rke2`.
#[must_use]
pub fn rpm_unit_text(tarball_unit: &str) -> String {
    tarball_unit.replace(
        &format!("ExecStart={}", super::cluster::RKE2_BIN),
        &format!("ExecStart={RPM_RKE2_BIN}"),
    )
}

/// `/etc/yum.repos.d/rke2.repo` as install.sh writes it for `version` from `repo_url` (the
/// channel folder, `<mirror>/rpm/stable`), without GPG checks.
#[must_use]
pub fn dnf_repo_file(repo_url: &str, version: &str) -> Option<String> {
    let minor = minor_of(version)?;
    let url = repo_url.trim_end_matches('/');
    Some(format!(
        "[rke2-common]\nname=Rancher RKE2 Common ({CHANNEL})\nbaseurl={url}/{common}\n\
         enabled=1\ngpgcheck=0\nrepo_gpgcheck=0\n\n\
         [rke2-{minor}]\nname=Rancher RKE2 {minor} ({CHANNEL})\nbaseurl={url}/{path}\n\
         enabled=1\ngpgcheck=0\nrepo_gpgcheck=0\n",
        common = common_repo_path(),
        path = minor_repo_path(version)?,
    ))
}

/// The package argument that pins `rke2-<role>` to `version` for `tool`
/// (`rke2-server-1.34.1~rke2r1`, `rke2-server=1.34.1~rke2r1`).
#[must_use]
pub fn pinned_package(tool: PackageTool, role: Role, version: &str) -> Option<String> {
    let (v, _) = rpm_version(version)?;
    let name = unit_name(role).trim_end_matches(".service");
    Some(if tool.is_dnf_like() {
        format!("{name}-{v}")
    } else {
        format!("{name}={v}")
    })
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The node script that configures the repositories and installs `rke2-<role>` of `version`
/// (pulling the matching `rke2-common` and `rke2-selinux`) with `tool`.
#[must_use]
pub fn install_script(
    tool: PackageTool,
    repo_url: &str,
    version: &str,
    role: Role,
) -> Option<String> {
    let pinned = sh_quote(&pinned_package(tool, role, version)?);
    // rke2-common pinned as well, so a downgrade takes it along (zypper refuses otherwise).
    let (v, _) = rpm_version(version)?;
    let common_pkg = sh_quote(&if tool.is_dnf_like() {
        format!("rke2-common-{v}")
    } else {
        format!("rke2-common={v}")
    });
    let url = repo_url.trim_end_matches('/');
    let minor = minor_of(version)?;
    Some(match tool {
        // The repo file is written beforehand ([`dnf_repo_file`]).
        PackageTool::Dnf | PackageTool::Yum => format!(
            "set -e\n{dnf} -y -q install {OS_PACKAGE}\n{dnf} -y -q install {pinned} {common_pkg}\n",
            dnf = tool.name()
        ),
        PackageTool::Zypper => format!(
            "set -e\nrm -f /etc/zypp/repos.d/rke2-*.repo\n\
             zypper --non-interactive -q addrepo --no-gpgcheck {common} rke2-common\n\
             zypper --non-interactive -q addrepo --no-gpgcheck {minor_url} rke2-{minor}\n\
             zypper --non-interactive -q --no-gpg-checks install {OS_PACKAGE}\n\
             zypper --non-interactive -q --no-gpg-checks install --oldpackage {pinned} {common_pkg}\n",
            common = sh_quote(&format!("{url}/{}", common_repo_path())),
            minor_url = sh_quote(&format!("{url}/{}", minor_repo_path(version)?)),
        ),
    })
}

/// The node script that installs the packages in the node folder `dir` (an air-gap copy)
/// with `tool`, no repositories involved.
#[must_use]
pub fn airgap_install_script(tool: PackageTool, dir: &str, files: &[String]) -> String {
    let os = files
        .iter()
        .find(|f| f.starts_with(&format!("{OS_PACKAGE}-")))
        .map(|f| sh_quote(&format!("{dir}/{f}")))
        .unwrap_or_default();
    let all: Vec<String> = files
        .iter()
        .map(|f| sh_quote(&format!("{dir}/{f}")))
        .collect();
    let all = all.join(" ");
    match tool {
        PackageTool::Dnf | PackageTool::Yum => format!(
            "set -e\n{dnf} -y -q --disablerepo='*' install {os}\n\
             {dnf} -y -q --disablerepo='*' install {all}\n",
            dnf = tool.name()
        ),
        PackageTool::Zypper => format!(
            "set -e\nzypper --non-interactive -q --no-gpg-checks install --allow-unsigned-rpm {os}\n\
             zypper --non-interactive -q --no-gpg-checks install --allow-unsigned-rpm --oldpackage {all}\n"
        ),
    }
}

/// The node spec of an RPM node: `spec` plus what packages write kept on the node:
/// overlays for `/usr/bin`, `/usr/share` and `/etc` (so `/usr/bin/rke2`, `/usr/share/rke2`,
/// `/etc/sysconfig`, `/etc/yum.repos.d`, `/etc/zypp` and the rpm macro file stay on the node
/// while the host's commands and configuration remain visible; `/etc/yum.repos.d` and
/// `/etc/sysconfig` do not exist on a Debian host, and overlaying `/etc` avoids creating them
/// there), and private `/var/cache` (dnf's and zypper's caches) and `/var/log` (their logs).
/// The rpmdb goes to `/var/lib/rpm`, private already ([`prepare_node`] sets the macro).
#[must_use]
pub fn rpm_node_spec(spec: NodeSpec) -> NodeSpec {
    spec.with_overlay_dir("/usr/bin")
        .with_overlay_dir("/usr/share")
        .with_overlay_dir("/etc")
        .with_private_dir("/var/cache")
        .with_private_dir("/var/log")
}

/// Points the node's rpm at its own database (`%_dbpath /var/lib/rpm`; Debian's rpm uses the
/// host's `~/.rpmdb`) and creates it.
///
/// # Errors
/// When the node (booted with [`rpm_node_spec`]) cannot be written or `rpm --initdb` fails.
pub fn prepare_node(node: &Node) -> Result<(), RpmError> {
    node.write_file(DBPATH_MACROS, "%_dbpath /var/lib/rpm\n")?;
    node.sh("mkdir -p /var/lib/rpm && rpm --initdb")?;
    Ok(())
}

/// The node script that makes `tool` the node's only dnf-like tool: for [`PackageTool::Yum`],
/// `/usr/bin/yum -> dnf-3` and no `/usr/bin/dnf`, as on RHEL/Rocky 8+ where yum is dnf's
/// compatibility name (Debian has no yum). Nothing for the others.
#[must_use]
pub fn tool_script(tool: PackageTool) -> Option<&'static str> {
    (tool == PackageTool::Yum).then_some("rm -f /usr/bin/dnf && ln -sfn dnf-3 /usr/bin/yum")
}

/// Lays out `tool` on `node` (booted with [`rpm_node_spec`], whose `/usr/bin` is the node's
/// own overlay, so the host keeps its `dnf` and gets no `yum`). Idempotent.
///
/// # Errors
/// When the command on the node fails.
pub fn prepare_tool(node: &Node, tool: PackageTool) -> Result<(), RpmError> {
    if let Some(script) = tool_script(tool) {
        node.sh(script)?;
    }
    Ok(())
}

/// Installs `rke2-<role>` of `version` on `node` (booted with [`rpm_node_spec`]) from the
/// repositories under `repo_url` (`<mirror base_url>/rpm/stable`) as install.sh does: dnf
/// gets `/etc/yum.repos.d/rke2.repo` with `[rke2-common]` and `[rke2-<major.minor>]`, zypper
/// the same two repositories by `addrepo`; then `rke2ops-sim-os` and the pinned package
/// (which pulls the matching `rke2-common` and `rke2-selinux`). Calling it again with another
/// version upgrades or downgrades (the old package's `%postun` try-restarts a running unit).
/// The unit is not enabled (install.sh does not either).
///
/// # Errors
/// When the version is not an RKE2 version or a command on the node fails.
pub fn install_rke2_rpm(
    node: &Node,
    repo_url: &str,
    version: &str,
    role: Role,
    tool: PackageTool,
) -> Result<(), RpmError> {
    let bad = || RpmError::Version(version.to_owned());
    prepare_node(node)?;
    prepare_tool(node, tool)?;
    if tool.is_dnf_like() {
        node.write_file(
            "/etc/yum.repos.d/rke2.repo",
            dnf_repo_file(repo_url, version).ok_or_else(bad)?,
        )?;
    }
    node.sh(&install_script(tool, repo_url, version, role).ok_or_else(bad)?)?;
    Ok(())
}

/// The node folder [`install_rke2_rpm_airgap`] copies the packages to (private `/tmp`).
pub const NODE_AIRGAP_DIR: &str = "/tmp/rke2-artifacts";

/// Installs `rke2-<role>` of `version` on `node` from the air-gap folder `airgap_dir`
/// ([`RpmRepo::airgap_dir`]): copies its `.rpm` files to [`NODE_AIRGAP_DIR`] and installs them
/// with `tool` without repositories.
///
/// # Errors
/// When the folder cannot be read, the files copied or a command on the node fails.
pub fn install_rke2_rpm_airgap(
    node: &Node,
    airgap_dir: &Path,
    version: &str,
    role: Role,
    tool: PackageTool,
) -> Result<(), RpmError> {
    let v = checked_rpm_version(version)?;
    prepare_node(node)?;
    prepare_tool(node, tool)?;
    let other = match role {
        Role::Server => "rke2-agent-",
        Role::Agent => "rke2-server-",
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(airgap_dir).map_err(io(airgap_dir))? {
        let entry = entry.map_err(io(airgap_dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let wanted = name.ends_with(".rpm")
            && !name.starts_with(other)
            && (!name.starts_with("rke2-common-") || name.contains(&v));
        if wanted {
            node.write_file(
                Path::new(NODE_AIRGAP_DIR).join(&name),
                std::fs::read(entry.path()).map_err(io(&entry.path()))?,
            )?;
            files.push(name);
        }
    }
    files.sort();
    node.sh(&airgap_install_script(tool, NODE_AIRGAP_DIR, &files))?;
    Ok(())
}

/// A written repository.
#[derive(Debug, Clone)]
pub struct RpmRepo {
    /// `<releases_dir>`: what [`crate::mirror::Mirror::serve`] serves (`/rpm/...`).
    pub releases_dir: PathBuf,
    /// `<releases_dir>/rpm/stable`: the channel folder.
    pub channel_dir: PathBuf,
    /// `<releases_dir>/rpm-airgap`.
    pub airgap_root: PathBuf,
    /// `<releases_dir>/rpm/public.key`: the armored key every trusted package and every
    /// `repomd.xml` is signed with.
    pub public_key: PathBuf,
    /// The versions built (with the untrusted ones).
    pub versions: Vec<String>,
}

impl RpmRepo {
    /// The repository URL install scripts take: `<base_url>/rpm/stable`.
    #[must_use]
    pub fn url(base_url: &str) -> String {
        format!("{}/rpm/{CHANNEL}", base_url.trim_end_matches('/'))
    }

    /// Where the mirror at `base_url` serves [`RpmRepo::public_key`]: `<base_url>/rpm/public.key`
    /// (what an agent's `rpm_gpg_key` names).
    #[must_use]
    pub fn key_url(base_url: &str) -> String {
        format!("{}/rpm/{PUBLIC_KEY_FILE}", base_url.trim_end_matches('/'))
    }

    /// `<releases_dir>/rpm-airgap/<version>/`: every package a node of `version` needs.
    #[must_use]
    pub fn airgap_dir(&self, version: &str) -> PathBuf {
        self.airgap_root.join(version)
    }
}

fn run_tool(command: &mut Command) -> Result<(), RpmError> {
    output_of(command).map(drop)
}

/// Runs a host tool and returns its standard output.
fn output_of(command: &mut Command) -> Result<String, RpmError> {
    let line = format!("{command:?}");
    let out = command.output().map_err(|e| RpmError::Tool {
        command: line.clone(),
        detail: format!("{e} (scripts/install-test-deps.sh installs rpm, createrepo-c and gnupg)"),
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(RpmError::Tool {
            command: line,
            detail: format!(
                "{}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }
}

/// Builds the package `spec` with `rpmbuild` from the sources in `sources` into `out`
/// (flat, [`PackageSpec::file_name`]).
fn rpmbuild(spec: &PackageSpec, sources: &Path, out: &Path, work: &Path) -> Result<(), RpmError> {
    let spec_file = work.join(format!("{}-{}.spec", spec.name, spec.version));
    std::fs::write(&spec_file, render_spec(spec)).map_err(io(&spec_file))?;
    let topdir = work.join(format!("top-{}-{}", spec.name, spec.version));
    let define = |k: &str, v: &Path| format!("{k} {}", v.display());
    run_tool(
        Command::new("rpmbuild")
            .arg("-bb")
            .arg("--quiet")
            .args([
                "--target",
                &format!("{}-linux", if spec.noarch { "noarch" } else { RPM_ARCH }),
            ])
            .args(["--define", &define("_topdir", &topdir)])
            .args(["--define", &define("_sourcedir", sources)])
            .args(["--define", &define("_rpmdir", out)])
            .args([
                "--define",
                "_rpmfilename %{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}.rpm",
            ])
            .arg(&spec_file)
            .env("LC_ALL", "C"),
    )
}

fn link_or_copy(from: &Path, to: &Path) -> Result<(), RpmError> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let _ = std::fs::remove_file(to);
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).map_err(io(to))?;
    }
    Ok(())
}

/// The key id in `gpg --with-colons --list-secret-keys` output (the `sec` record's fifth
/// field), `None` without one.
#[must_use]
pub fn secret_key_id(colons: &str) -> Option<String> {
    colons
        .lines()
        .find(|l| l.starts_with("sec:"))
        .and_then(|l| l.split(':').nth(4))
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

/// A throwaway OpenPGP key (RSA 2048, no passphrase) in its own GNUPGHOME inside the build's
/// temporary folder, so no user keyring is read or written. It signs packages (`rpmsign
/// --addsign`) and repository metadata (`repomd.xml.asc`). Dropping it stops the gpg-agent
/// its signatures started.
struct Signer {
    /// The GNUPGHOME (mode 0700).
    home: PathBuf,
    /// The key's long id (`_gpg_name` for rpmsign, `--local-user` for gpg).
    key_id: String,
}

impl Signer {
    fn generate(home: &Path, uid: &str) -> Result<Self, RpmError> {
        std::fs::create_dir_all(home).map_err(io(home))?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700))
                .map_err(io(home))?;
        }
        let gpg = |args: &[&str]| {
            let mut c = Command::new("gpg");
            c.arg("--homedir").arg(home).arg("--batch").args(args);
            c
        };
        run_tool(&mut gpg(&[
            "--passphrase",
            "",
            "--quick-gen-key",
            uid,
            "rsa2048",
            "sign",
            "never",
        ]))?;
        let listed = output_of(&mut gpg(&["--with-colons", "--list-secret-keys"]))?;
        let key_id = secret_key_id(&listed).ok_or_else(|| RpmError::Tool {
            command: "gpg --list-secret-keys".into(),
            detail: format!("no secret key listed:\n{listed}"),
        })?;
        Ok(Self {
            home: home.to_path_buf(),
            key_id,
        })
    }

    fn gpg(&self) -> Command {
        let mut c = Command::new("gpg");
        c.arg("--homedir")
            .arg(&self.home)
            .arg("--batch")
            .env("GNUPGHOME", &self.home);
        c
    }

    /// The armored public key, as `public.key`.
    fn export_public(&self, to: &Path) -> Result<(), RpmError> {
        let key = output_of(self.gpg().args(["--armor", "--export", &self.key_id]))?;
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(to, key).map_err(io(to))
    }

    /// Adds this key's signature to each package (in place). Debian's rpm names the signing
    /// program `gpg2`, which Debian does not have: `%__gpg` points at `gpg`.
    fn sign_packages(&self, files: &[PathBuf]) -> Result<(), RpmError> {
        if files.is_empty() {
            return Ok(());
        }
        run_tool(
            Command::new("rpmsign")
                .arg("--addsign")
                .args(["--define", &format!("_gpg_name {}", self.key_id)])
                .args(["--define", &format!("_gpg_path {}", self.home.display())])
                .args(["--define", "__gpg /usr/bin/gpg"])
                .args(files)
                .env("GNUPGHOME", &self.home)
                .env("LC_ALL", "C"),
        )
    }

    /// `repodata/repomd.xml.asc`: the detached, armored signature of the repository's
    /// metadata that yum/dnf (`repo_gpgcheck`) and zypper check.
    fn sign_metadata(&self, repo_dir: &Path) -> Result<(), RpmError> {
        let repomd = repo_dir.join("repodata").join("repomd.xml");
        run_tool(
            self.gpg()
                .args(["--yes", "--armor", "--detach-sign", "--local-user"])
                .arg(&self.key_id)
                .arg("--output")
                .arg(repomd.with_extension("xml.asc"))
                .arg(&repomd),
        )
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&self.home)
            .args(["--kill", "gpg-agent"])
            .output();
    }
}

/// Writes the repositories and air-gap folders for `versions` under `releases_dir` (see the
/// module docs) from the built simulator (`target/debug/rke2`). Takes ~1 s per version.
///
/// # Errors
/// When a version is not an RKE2 version, a file cannot be written, or `rpmbuild` /
/// `createrepo_c` fail.
pub fn build_rpm_repo(releases_dir: &Path, versions: &[&str]) -> Result<RpmRepo, RpmError> {
    build_rpm_repo_from(releases_dir, versions, &[], &built_binary("rke2"))
}

/// [`build_rpm_repo`] from the simulator at `simulator`. Every package and every
/// repository's `repomd.xml` is signed with a key made for this build (its public half in
/// `rpm/public.key`), except in the `untrusted` versions (built as [`UNTRUSTED_VERSION`]
/// describes: `rke2-common` signed by another key, `rke2-agent` unsigned).
///
/// # Errors
/// As [`build_rpm_repo`].
pub fn build_rpm_repo_from(
    releases_dir: &Path,
    versions: &[&str],
    untrusted: &[&str],
    simulator: &Path,
) -> Result<RpmRepo, RpmError> {
    let channel_dir = releases_dir.join("rpm").join(CHANNEL);
    let airgap_root = releases_dir.join("rpm-airgap");
    let work = tempfile::tempdir().map_err(io(&std::env::temp_dir()))?;
    let signer = Signer::generate(
        &work.path().join("gnupg"),
        "rke2ops simulator repository <rpm@rke2ops-sim.invalid>",
    )?;
    let public_key = releases_dir.join("rpm").join(PUBLIC_KEY_FILE);
    signer.export_public(&public_key)?;
    // Signs the untrusted versions' rke2-common; its public half is published nowhere.
    let stranger = if untrusted.is_empty() {
        None
    } else {
        Some(Signer::generate(
            &work.path().join("gnupg-stranger"),
            "someone else <stranger@rke2ops-sim.invalid>",
        )?)
    };
    let built = work.path().join("rpms");
    let sources = work.path().join("sources");
    std::fs::create_dir_all(&sources).map_err(io(&sources))?;
    let write_source = |name: &str, bytes: &[u8]| {
        let path = sources.join(name);
        std::fs::write(&path, bytes).map_err(io(&path))
    };
    write_source(
        "rke2.pp",
        b"# rke2-selinux placeholder policy (simulated)\n",
    )?;
    write_source("sysconfig-empty", b"")?;
    for role in [Role::Server, Role::Agent] {
        let unit = unit_file(role);
        let text = std::fs::read_to_string(&unit).map_err(io(&unit))?;
        write_source(unit_name(role), rpm_unit_text(&text).as_bytes())?;
    }
    write_source(
        "rke2-killall.sh",
        b"#!/bin/sh\n# rke2-killall.sh (simulated package): stops what rke2 started.\n\
systemctl stop rke2-server.service rke2-agent.service 2>/dev/null || true\n",
    )?;
    write_source(
        "rke2-uninstall.sh",
        b"#!/bin/sh\n# rke2-uninstall.sh (simulated package): not simulated.\necho 'not simulated' >&2\nexit 1\n",
    )?;
    for (name, text) in SHARE_FILES {
        write_source(&share_source(name), text.as_bytes())?;
    }

    let common_dir = channel_dir.join(common_repo_path());
    let mut noarch = Vec::new();
    for spec in [selinux_spec(), os_spec()] {
        rpmbuild(&spec, &sources, &built, work.path())?;
        let file = built.join(spec.file_name());
        signer.sign_packages(std::slice::from_ref(&file))?;
        link_or_copy(&file, &common_dir.join(spec.file_name()))?;
        noarch.push(file);
    }
    let mut minors = std::collections::BTreeSet::new();
    for version in versions.iter().chain(untrusted) {
        let v = checked_rpm_version(version)?;
        let trusted = !untrusted.contains(version);
        let minor_dir = channel_dir.join(minor_repo_path(version).unwrap_or_default());
        minors.insert(minor_dir.clone());
        // Each version's binary differs (its trailer): one source folder per version.
        let binary = release::rke2_binary(simulator, version)?;
        write_source("rke2", &binary)?;
        let airgap = airgap_root.join(version);
        for spec in [
            common_spec(&v),
            role_spec(&v, Role::Server),
            role_spec(&v, Role::Agent),
        ] {
            rpmbuild(&spec, &sources, &built, work.path())?;
            let file = built.join(spec.file_name());
            let sign = std::slice::from_ref(&file);
            match (&stranger, spec.name.as_str()) {
                (Some(stranger), "rke2-common") if !trusted => stranger.sign_packages(sign)?,
                (_, "rke2-agent") if !trusted => {}
                _ => signer.sign_packages(sign)?,
            }
            link_or_copy(&file, &minor_dir.join(spec.file_name()))?;
            link_or_copy(&file, &airgap.join(spec.file_name()))?;
        }
        for file in &noarch {
            link_or_copy(file, &airgap.join(file.file_name().unwrap_or_default()))?;
        }
    }
    for dir in std::iter::once(&common_dir).chain(&minors) {
        run_tool(
            Command::new("createrepo_c")
                .args(["--quiet", "--update"])
                .arg(dir),
        )?;
        signer.sign_metadata(dir)?;
    }
    Ok(RpmRepo {
        releases_dir: releases_dir.to_path_buf(),
        channel_dir,
        airgap_root,
        public_key,
        versions: versions
            .iter()
            .chain(untrusted)
            .map(|v| (*v).to_owned())
            .collect(),
    })
}

/// The repository of [`OLD_VERSION`] and [`NEW_VERSION`] (and [`UNTRUSTED_VERSION`]) from the
/// built simulator, built once
/// per simulator build and reused by every test (and test process): it lives in
/// `target/rke2ops-sim-rpm/<key>/`, keyed by the simulator's size and modification time, and
/// is built beside it and renamed into place, so concurrent processes do not see half a repo.
///
/// # Errors
/// As [`build_rpm_repo`] (the message, so it can be cached).
pub fn shared_rpm_repo() -> Result<&'static RpmRepo, String> {
    static REPO: OnceLock<Result<RpmRepo, String>> = OnceLock::new();
    REPO.get_or_init(|| {
        let simulator = built_binary("rke2");
        let meta = std::fs::metadata(&simulator).map_err(|e| {
            format!(
                "{}: {e} (cargo build -p rke2ops-sim first)",
                simulator.display()
            )
        })?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let key = hex::encode(Sha256::digest(format!(
            // "signed": repositories from before signing must not be reused.
            "{}:{}:{mtime}:{OLD_VERSION}:{NEW_VERSION}:signed:{UNTRUSTED_VERSION}:{}",
            env!("CARGO_PKG_VERSION"),
            meta.len(),
            [
                common_spec("0"),
                role_spec("0", Role::Server),
                selinux_spec(),
                os_spec()
            ]
            .iter()
            .map(render_spec)
            .collect::<String>()
        )));
        let cache = simulator
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("/tmp"))
            .join("rke2ops-sim-rpm");
        let dir = cache.join(&key[..16]);
        let repo = |dir: &Path| RpmRepo {
            releases_dir: dir.to_path_buf(),
            channel_dir: dir.join("rpm").join(CHANNEL),
            airgap_root: dir.join("rpm-airgap"),
            public_key: dir.join("rpm").join(PUBLIC_KEY_FILE),
            versions: vec![
                OLD_VERSION.to_owned(),
                NEW_VERSION.to_owned(),
                UNTRUSTED_VERSION.to_owned(),
            ],
        };
        if dir.join(".complete").is_file() {
            return Ok(repo(&dir));
        }
        // Older builds' repositories are of no use any more.
        if let Ok(entries) = std::fs::read_dir(&cache) {
            for e in entries.flatten() {
                if e.path() != dir {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let staging = cache.join(format!(".{}-{}", &key[..16], std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        build_rpm_repo_from(
            &staging,
            &[OLD_VERSION, NEW_VERSION],
            &[UNTRUSTED_VERSION],
            &simulator,
        )
        .map_err(|e| e.to_string())?;
        std::fs::write(staging.join(".complete"), "").map_err(|e| e.to_string())?;
        if std::fs::rename(&staging, &dir).is_err() {
            // Another process won the race: use its copy.
            let _ = std::fs::remove_dir_all(&staging);
        }
        if dir.join(".complete").is_file() {
            Ok(repo(&dir))
        } else {
            Err(format!("rpm repository {} incomplete", dir.display()))
        }
    })
    .as_ref()
    .map_err(Clone::clone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_map_to_rpm_versions_and_minor_repositories() {
        assert_eq!(
            rpm_version("v1.34.1+rke2r1"),
            Some(("1.34.1~rke2r1".to_owned(), "0"))
        );
        assert_eq!(minor_of("v1.33.5+rke2r1").as_deref(), Some("1.33"));
        assert_eq!(
            minor_repo_path("v1.34.1+rke2r1").as_deref(),
            Some("1.34/centos/9/x86_64")
        );
        assert_eq!(common_repo_path(), "common/centos/9/noarch");
        for bad in [
            "1.34.1+rke2r1",
            "v1.34+rke2r1",
            "v1.34.1",
            "v1.34.1+k3s1",
            "v1.x.1+rke2r1",
        ] {
            assert_eq!(rpm_version(bad), None, "{bad}");
        }
        assert_eq!(
            pinned_package(PackageTool::Dnf, Role::Server, "v1.34.1+rke2r1").as_deref(),
            Some("rke2-server-1.34.1~rke2r1")
        );
        assert_eq!(
            pinned_package(PackageTool::Zypper, Role::Agent, "v1.33.5+rke2r1").as_deref(),
            Some("rke2-agent=1.33.5~rke2r1")
        );
    }

    #[test]
    fn specs_follow_rke2_packaging() {
        let common = render_spec(&common_spec("1.34.1~rke2r1"));
        for line in [
            "Name: rke2-common\n",
            "Version: 1.34.1~rke2r1\n",
            "Release: 0\n",
            "AutoReqProv: no\n",
            "Requires: rke2-selinux\n",
            "%attr(0755,root,root) /usr/bin/rke2\n",
            "%attr(0755,root,root) /usr/bin/rke2-killall.sh\n",
            "%attr(0644,root,root) /usr/share/rke2/LICENSE.txt\n",
            "install -D -m 0755 %{_sourcedir}/rke2 %{buildroot}/usr/bin/rke2\n",
            "%define _binary_payload w1.gzdio\n",
        ] {
            assert!(common.contains(line), "{line:?} in\n{common}");
        }
        let server = role_spec("1.34.1~rke2r1", Role::Server);
        assert_eq!(server.file_name(), "rke2-server-1.34.1~rke2r1-0.x86_64.rpm");
        let text = render_spec(&server);
        for line in [
            "Requires: rke2-common = %{version}-%{release}\n",
            "%attr(0644,root,root) /usr/lib/systemd/system/rke2-server.service\n",
            "%config(noreplace) %attr(0644,root,root) /etc/sysconfig/rke2-server\n",
            "%postun\nsystemctl daemon-reload >/dev/null 2>&1 || :\nif [ $1 -ge 1 ]; then\n  systemctl try-restart rke2-server.service >/dev/null 2>&1 || :\nfi\n",
            "%post\nsystemctl daemon-reload",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
        assert!(render_spec(&os_spec()).contains("Provides: /bin/sh\n"));
        assert!(render_spec(&selinux_spec()).contains("BuildArch: noarch\n"));
        assert_eq!(selinux_spec().file_name(), "rke2-selinux-0.20-1.noarch.rpm");
    }

    #[test]
    fn unit_points_at_usr_bin_and_repo_files_name_both_repositories() {
        let unit = std::fs::read_to_string(unit_file(Role::Agent)).expect("unit");
        let rpm = rpm_unit_text(&unit);
        assert!(rpm.contains("\nExecStart=/usr/bin/rke2 agent\n"), "{rpm}");
        assert!(!rpm.contains("/usr/local/bin/rke2"), "{rpm}");
        let repo = dnf_repo_file("http://m/rpm/stable/", "v1.33.5+rke2r1").expect("repo");
        assert!(repo.contains(
            "[rke2-common]\nname=Rancher RKE2 Common (stable)\nbaseurl=http://m/rpm/stable/common/centos/9/noarch\n"
        ));
        assert!(repo.contains("[rke2-1.33]\n"));
        assert!(repo.contains("baseurl=http://m/rpm/stable/1.33/centos/9/x86_64\n"));
        assert_eq!(repo.matches("\ngpgcheck=0\n").count(), 2);
        let zypper = install_script(
            PackageTool::Zypper,
            "http://m/rpm/stable",
            "v1.34.1+rke2r1",
            Role::Server,
        )
        .expect("script");
        assert!(zypper.contains(
            "addrepo --no-gpgcheck 'http://m/rpm/stable/1.34/centos/9/x86_64' rke2-1.34\n"
        ));
        assert!(zypper.contains(
            "install --oldpackage 'rke2-server=1.34.1~rke2r1' 'rke2-common=1.34.1~rke2r1'\n"
        ));
        assert_eq!(RpmRepo::url("http://m/"), "http://m/rpm/stable");
    }

    #[test]
    fn repo_builds_with_rke2_layout_airgap_folders_and_signatures() {
        if ["rpmbuild", "createrepo_c", "rpmsign", "gpg"]
            .iter()
            .any(|tool| Command::new(tool).arg("--version").output().is_err())
        {
            eprintln!(
                "skipped: rpmbuild, createrepo_c, rpmsign or gpg missing (scripts/install-test-deps.sh)"
            );
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = dir.path().join("fake-rke2");
        std::fs::write(&sim, b"\x7fELF simulated rke2").expect("write");
        let out = dir.path().join("releases");
        let repo = build_rpm_repo_from(
            &out,
            &[OLD_VERSION, NEW_VERSION],
            &[UNTRUSTED_VERSION],
            &sim,
        )
        .expect("build");
        let stable = out.join("rpm/stable");
        assert_eq!(repo.channel_dir, stable);
        for file in [
            "1.33/centos/9/x86_64/rke2-common-1.33.5~rke2r1-0.x86_64.rpm",
            "1.33/centos/9/x86_64/rke2-server-1.33.5~rke2r1-0.x86_64.rpm",
            "1.33/centos/9/x86_64/rke2-agent-1.33.5~rke2r1-0.x86_64.rpm",
            "1.33/centos/9/x86_64/repodata/repomd.xml",
            "1.34/centos/9/x86_64/rke2-server-1.34.1~rke2r1-0.x86_64.rpm",
            "1.34/centos/9/x86_64/repodata/repomd.xml",
            "common/centos/9/noarch/rke2-selinux-0.20-1.noarch.rpm",
            "common/centos/9/noarch/rke2ops-sim-os-1-1.noarch.rpm",
            "common/centos/9/noarch/repodata/repomd.xml",
        ] {
            assert!(stable.join(file).is_file(), "{file}");
        }
        assert!(
            !stable
                .join("1.34/centos/9/x86_64/rke2-common-1.33.5~rke2r1-0.x86_64.rpm")
                .exists()
        );
        let mut airgap: Vec<String> = std::fs::read_dir(repo.airgap_dir(NEW_VERSION))
            .expect("airgap")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        airgap.sort();
        assert_eq!(
            airgap,
            [
                "rke2-agent-1.34.1~rke2r1-0.x86_64.rpm",
                "rke2-common-1.34.1~rke2r1-0.x86_64.rpm",
                "rke2-selinux-0.20-1.noarch.rpm",
                "rke2-server-1.34.1~rke2r1-0.x86_64.rpm",
                "rke2ops-sim-os-1-1.noarch.rpm",
            ]
        );
        // The package holds the simulated binary with the version trailer, and the metadata.
        let rpm = stable.join("1.34/centos/9/x86_64/rke2-server-1.34.1~rke2r1-0.x86_64.rpm");
        let q = Command::new("rpm")
            .args(["-qp", "--requires", "--scripts"])
            .arg(&rpm)
            .output()
            .expect("rpm -qp");
        let q = String::from_utf8_lossy(&q.stdout);
        assert!(q.contains("rke2-common = 1.34.1~rke2r1-0"), "{q}");
        assert!(
            q.contains("systemctl try-restart rke2-server.service"),
            "{q}"
        );
        let common = stable.join("1.34/centos/9/x86_64/rke2-common-1.34.1~rke2r1-0.x86_64.rpm");
        let l = Command::new("rpm")
            .args(["-qpl"])
            .arg(&common)
            .output()
            .expect("rpm -qpl");
        let l = String::from_utf8_lossy(&l.stdout);
        for f in [
            "/usr/bin/rke2\n",
            "/usr/bin/rke2-uninstall.sh\n",
            "/usr/share/rke2/rke2-cis-sysctl.conf\n",
        ] {
            assert!(l.contains(f), "{f} in {l}");
        }

        // Signatures, as a node with the published key sees them.
        assert_eq!(repo.public_key, out.join("rpm/public.key"));
        let db = dir.path().join("rpmdb");
        std::fs::create_dir_all(&db).expect("mkdir");
        let rpm_db = |args: &[&str], files: &[&Path]| {
            let out = Command::new("rpm")
                .arg("--dbpath")
                .arg(&db)
                .args(args)
                .args(files)
                .env("LC_ALL", "C")
                .output()
                .expect("rpm");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        rpm_db(&["--initdb"], &[]);
        rpm_db(&["--import"], &[&repo.public_key]);
        let x86 = stable.join("1.34/centos/9/x86_64");
        let checked = rpm_db(
            &["-K"],
            &[
                &common,
                &stable.join("common/centos/9/noarch/rke2-selinux-0.20-1.noarch.rpm"),
                &x86.join("rke2-common-1.34.2~rke2r1-0.x86_64.rpm"),
                &x86.join("rke2-agent-1.34.2~rke2r1-0.x86_64.rpm"),
                &x86.join("rke2-server-1.34.2~rke2r1-0.x86_64.rpm"),
            ],
        );
        let verdicts: Vec<&str> = checked
            .lines()
            .filter_map(|l| l.rsplit_once(": ").map(|(_, v)| v))
            .collect();
        assert_eq!(
            verdicts,
            [
                "digests signatures OK",
                "digests signatures OK",
                "digests SIGNATURES NOT OK",
                "digests OK",
                "digests signatures OK"
            ],
            "{checked}"
        );
        assert!(
            repo.airgap_dir(UNTRUSTED_VERSION)
                .join("rke2-common-1.34.2~rke2r1-0.x86_64.rpm")
                .is_file()
        );
        // Each repository's metadata carries a detached signature by the published key.
        let home = dir.path().join("verify-gnupg");
        std::fs::create_dir_all(&home).expect("mkdir");
        let gpg = |args: &[&str]| {
            Command::new("gpg")
                .arg("--homedir")
                .arg(&home)
                .arg("--batch")
                .args(args)
                .output()
                .expect("gpg")
        };
        assert!(
            gpg(&["--import", &repo.public_key.display().to_string()])
                .status
                .success()
        );
        for repodata in [
            "1.33/centos/9/x86_64",
            "1.34/centos/9/x86_64",
            "common/centos/9/noarch",
        ] {
            let repomd = stable.join(repodata).join("repodata/repomd.xml");
            let verified = gpg(&[
                "--verify",
                &format!("{}.asc", repomd.display()),
                &repomd.display().to_string(),
            ]);
            assert!(
                verified.status.success(),
                "{repodata}: {}",
                String::from_utf8_lossy(&verified.stderr)
            );
        }
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&home)
            .args(["--kill", "all"])
            .output();
    }

    #[test]
    fn the_key_id_comes_from_the_secret_key_record() {
        let colons = "sec:u:2048:1:3D99EBBE3A1DE1AD:1796609966:::u:::scSC:::+:::23::0:\n\
                      fpr:::::::::0B0700EAA528ED0AF9B135C53D99EBBE3A1DE1AD:\n";
        assert_eq!(secret_key_id(colons).as_deref(), Some("3D99EBBE3A1DE1AD"));
        assert_eq!(secret_key_id("pub:u:2048:1:AB:\n"), None);
    }

    #[test]
    fn yum_nodes_have_yum_as_dnf_and_no_dnf() {
        assert_eq!(
            tool_script(PackageTool::Yum),
            Some("rm -f /usr/bin/dnf && ln -sfn dnf-3 /usr/bin/yum")
        );
        assert_eq!(tool_script(PackageTool::Dnf), None);
        let script = install_script(
            PackageTool::Yum,
            "http://m/rpm/stable",
            "v1.34.1+rke2r1",
            Role::Agent,
        )
        .expect("script");
        assert!(
            script.contains(
                "yum -y -q install 'rke2-agent-1.34.1~rke2r1' 'rke2-common-1.34.1~rke2r1'\n"
            ),
            "{script}"
        );
        assert_eq!(RpmRepo::key_url("http://m/"), "http://m/rpm/public.key");
    }
}
