//! How RKE2 is installed on a node, and the RPM side of it as RKE2's packaging lays it out:
//! package names and versions, the per-minor repository layout and the repository file
//! RKE2's `install.sh` writes. Pure, shared by the agent (which detects and upgrades) and
//! the hub (which shows the method and what an upgrade would fetch).

use std::fmt;

use crate::version::Rke2Version;

/// How RKE2 was installed on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstallMethod {
    /// RPM packages (`rke2-common`, `rke2-server`/`rke2-agent`, `rke2-selinux`), binary at
    /// `/usr/bin/rke2`.
    Rpm,
    /// The release tarball unpacked into a prefix (`/usr/local` or `/opt/rke2`).
    Tarball,
}

impl InstallMethod {
    /// The name in status, tables and JSON (`rpm`, `tarball`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Rpm => "rpm",
            Self::Tarball => "tarball",
        }
    }

    /// Parses [`InstallMethod::name`].
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "rpm" => Some(Self::Rpm),
            "tarball" => Some(Self::Tarball),
            _ => None,
        }
    }
}

impl fmt::Display for InstallMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The method's name for a node whose install mixes both (an RPM and a tarball binary): the
/// agent refuses to upgrade it.
pub const MIXED: &str = "mixed";

/// RKE2's default RPM repository (the `stable` channel; install.sh's `rpm.rancher.io`).
pub const DEFAULT_RPM_REPOSITORY: &str = "https://rpm.rancher.io/rke2/stable";
/// The key RKE2's packages are signed with.
pub const DEFAULT_RPM_GPG_KEY: &str = "https://rpm.rancher.io/public.key";
/// The repository file the agent writes (the name RKE2's install.sh uses).
pub const REPO_FILE_NAME: &str = "rancher-rke2.repo";
/// The package with the binary; its presence in the RPM database means an RPM install.
pub const COMMON_PACKAGE: &str = "rke2-common";
/// The SELinux policy package every `rke2-common` requires.
pub const SELINUX_PACKAGE: &str = "rke2-selinux";
/// Where the RPM packages put the binary.
pub const RPM_BINARY: &str = "/usr/bin/rke2";

/// The RPM version of an RKE2 version: `v1.34.1+rke2r1` → `1.34.1~rke2r1` (`~` sorts before
/// anything, as RKE2's packaging chose; `+` is not allowed in an RPM version).
#[must_use]
pub fn package_version(version: &Rke2Version) -> String {
    format!(
        "{}.{}.{}~rke2r{}",
        version.major, version.minor, version.patch, version.release
    )
}

/// The RKE2 version of an installed package's `VERSION[-RELEASE]`: `1.34.1~rke2r1-0` →
/// `v1.34.1+rke2r1`; `None` for anything else.
#[must_use]
pub fn version_of_package(version_release: &str) -> Option<Rke2Version> {
    let version = version_release
        .split_once('-')
        .map_or(version_release, |(v, _)| v);
    let (k8s, rke2) = version.split_once('~')?;
    format!("v{k8s}+{rke2}").parse().ok()
}

/// `major.minor` of a version: the repository folder its packages are in.
#[must_use]
pub fn minor_of(version: &Rke2Version) -> String {
    format!("{}.{}", version.major, version.minor)
}

/// The packages an upgrade to `version` installs on a node of `role` (`server`|`agent`),
/// pinned to the exact version: the role's package and the matching `rke2-common`.
/// `rke2-selinux` has its own versions and comes as their dependency.
#[must_use]
pub fn pinned_packages(role: &str, version: &Rke2Version) -> Vec<String> {
    let v = package_version(version);
    vec![format!("{COMMON_PACKAGE}-{v}"), format!("rke2-{role}-{v}")]
}

/// A repository of RKE2's layout: `<base>/<major.minor>/<os>/<arch>` per minor and
/// `<base>/common/<os>/noarch` (rke2-selinux).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpmRepository {
    /// e.g. `https://rpm.rancher.io/rke2/stable` (no trailing `/`).
    pub base: String,
    /// The OS folder, e.g. `centos/9` or `slemicro`.
    pub os: String,
    /// The key to check packages with; `None`: unchecked (a local mirror without signatures).
    pub gpg_key: Option<String>,
}

impl RpmRepository {
    /// A repository; a trailing `/` on `base` is dropped.
    #[must_use]
    pub fn new(base: &str, os: &str, gpg_key: Option<String>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            os: os.trim_matches('/').to_owned(),
            gpg_key,
        }
    }

    /// Where one minor's packages are (`x86_64` for `amd64`).
    #[must_use]
    pub fn minor_url(&self, minor: &str, arch: &str) -> String {
        format!("{}/{minor}/{}/{}", self.base, self.os, rpm_arch(arch))
    }

    /// Where `rke2-selinux` is.
    #[must_use]
    pub fn common_url(&self) -> String {
        format!("{}/common/{}/noarch", self.base, self.os)
    }

    /// The repository file (the INI format dnf, yum and zypper all read) with the common
    /// repository and one section per minor in `minors` (the target's, and the installed
    /// one's so a rollback can find the previous packages).
    #[must_use]
    pub fn repo_file(&self, minors: &[String], arch: &str) -> String {
        let mut out = String::from(
            "# Written by rke2-node-agent for RKE2's RPM packages (the layout of RKE2's install.sh).\n",
        );
        let mut section = |id: &str, name: &str, url: &str| {
            out.push_str(&format!("[{id}]\nname={name}\nbaseurl={url}\nenabled=1\n"));
            match &self.gpg_key {
                Some(key) => out.push_str(&format!("gpgcheck=1\ngpgkey={key}\n")),
                None => out.push_str("gpgcheck=0\n"),
            }
            out.push_str("type=rpm-md\nautorefresh=1\n\n");
        };
        section(
            "rancher-rke2-common",
            "Rancher RKE2 Common",
            &self.common_url(),
        );
        let mut seen = std::collections::BTreeSet::new();
        for minor in minors {
            if seen.insert(minor) {
                section(
                    &format!("rancher-rke2-{minor}"),
                    &format!("Rancher RKE2 {minor}"),
                    &self.minor_url(minor, arch),
                );
            }
        }
        out
    }
}

/// RPM's name of a Go architecture.
#[must_use]
pub fn rpm_arch(arch: &str) -> &str {
    match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        other => other,
    }
}

/// The OS folder of RKE2's repository for a node's `/etc/os-release` (`ID`, `ID_LIKE`,
/// `VERSION_ID`), as install.sh picks it: RHEL-like → `centos/<major>`, SUSE → `slemicro`;
/// `None` when it cannot tell (the agent then asks for `rpm_os`).
#[must_use]
pub fn os_folder(os_release: &str) -> Option<String> {
    let field = |key: &str| {
        os_release.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|v| v.strip_prefix('='))
                .map(|v| v.trim_matches('"').to_owned())
        })
    };
    let family = format!(
        "{} {}",
        field("ID").unwrap_or_default(),
        field("ID_LIKE").unwrap_or_default()
    );
    if family.contains("suse") || family.contains("sles") {
        return Some("slemicro".to_owned());
    }
    if ["rhel", "centos", "fedora", "rocky", "almalinux", "ol"]
        .iter()
        .any(|f| family.split_whitespace().any(|w| w == *f))
    {
        let major = field("VERSION_ID")?
            .split('.')
            .next()?
            .parse::<u32>()
            .ok()?;
        return Some(format!("centos/{major}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Rke2Version {
        s.parse().expect("version")
    }

    #[test]
    fn versions_map_both_ways_as_rke2_packages_them() {
        assert_eq!(package_version(&v("v1.34.1+rke2r1")), "1.34.1~rke2r1");
        assert_eq!(
            version_of_package("1.34.1~rke2r1-0"),
            Some(v("v1.34.1+rke2r1"))
        );
        assert_eq!(
            version_of_package("1.33.5~rke2r2"),
            Some(v("v1.33.5+rke2r2"))
        );
        assert_eq!(version_of_package("0.20-1"), None);
        assert_eq!(minor_of(&v("v1.34.1+rke2r1")), "1.34");
    }

    #[test]
    fn packages_are_pinned_to_the_exact_version() {
        assert_eq!(
            pinned_packages("server", &v("v1.34.1+rke2r1")),
            ["rke2-common-1.34.1~rke2r1", "rke2-server-1.34.1~rke2r1"]
        );
    }

    #[test]
    fn the_repo_file_has_common_and_each_minor_once() {
        let repo = RpmRepository::new(
            "https://rpm.rancher.io/rke2/stable/",
            "centos/9",
            Some(DEFAULT_RPM_GPG_KEY.into()),
        );
        let text = repo.repo_file(&["1.34".into(), "1.33".into(), "1.34".into()], "amd64");
        assert!(text.contains(
            "[rancher-rke2-common]\nname=Rancher RKE2 Common\nbaseurl=https://rpm.rancher.io/rke2/stable/common/centos/9/noarch\n"
        ));
        assert!(text.contains("baseurl=https://rpm.rancher.io/rke2/stable/1.34/centos/9/x86_64\n"));
        assert!(text.contains("baseurl=https://rpm.rancher.io/rke2/stable/1.33/centos/9/x86_64\n"));
        assert_eq!(text.matches("[rancher-rke2-1.34]").count(), 1);
        assert!(text.contains("gpgcheck=1\ngpgkey=https://rpm.rancher.io/public.key\n"));
        let unsigned = RpmRepository::new("file:///srv/rke2", "centos/9", None);
        assert!(unsigned.repo_file(&[], "amd64").contains("gpgcheck=0\n"));
    }

    #[test]
    fn os_folder_follows_install_sh() {
        let rocky = "NAME=\"Rocky Linux\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.4\"\n";
        assert_eq!(os_folder(rocky).as_deref(), Some("centos/9"));
        let sles = "ID=\"sles\"\nID_LIKE=\"suse\"\nVERSION_ID=\"15.6\"\n";
        assert_eq!(os_folder(sles).as_deref(), Some("slemicro"));
        assert_eq!(os_folder("ID=debian\nVERSION_ID=\"12\"\n"), None);
    }

    #[test]
    fn method_names_round_trip() {
        for m in [InstallMethod::Rpm, InstallMethod::Tarball] {
            assert_eq!(InstallMethod::from_name(m.name()), Some(m));
        }
        assert_eq!(InstallMethod::from_name(MIXED), None);
    }
}
