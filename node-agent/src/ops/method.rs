//! How RKE2 was installed on this node: the RPM database (`rke2-common`), the unit's
//! `ExecStart`, and the tarball prefixes (`/usr/local`, `/opt/rke2`, the configured one).
//! An upgrade follows the method it finds and refuses a node that has both, naming what it
//! found: installing a tarball over an RPM install (or the reverse) leaves two binaries and
//! a package database that lies (rancher/rke2 issue 661).
//!
//! [`decide`] is pure; [`gather`] reads the node.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rke2ops_common::install::{COMMON_PACKAGE, InstallMethod, RPM_BINARY};

use super::pkg::PackageExec;

/// One installed RKE2 package.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Package {
    /// `rke2-common`, `rke2-server`, `rke2-agent`, `rke2-selinux`.
    pub name: String,
    /// `VERSION-RELEASE`, e.g. `1.34.1~rke2r1-0`.
    pub version_release: String,
}

impl Package {
    /// `name-version-release`: what a package manager installs exactly (a rollback target).
    #[must_use]
    pub fn nevr(&self) -> String {
        format!("{}-{}", self.name, self.version_release)
    }
}

/// What the node shows about its install.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// RKE2's packages in the RPM database (empty: none, or no `rpm`).
    pub packages: Vec<Package>,
    /// The binary the RKE2 unit's `ExecStart` runs.
    pub unit_exec: Option<PathBuf>,
    /// Tarball prefixes that hold `bin/rke2`.
    pub tarball_prefixes: Vec<PathBuf>,
}

/// The install an upgrade works with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    /// RPM packages.
    Rpm {
        /// The installed RKE2 packages (what a rollback returns to).
        packages: Vec<Package>,
    },
    /// The tarball in `prefix`.
    Tarball {
        /// e.g. `/usr/local`.
        prefix: PathBuf,
    },
}

impl Detected {
    /// The method.
    #[must_use]
    pub fn method(&self) -> InstallMethod {
        match self {
            Self::Rpm { .. } => InstallMethod::Rpm,
            Self::Tarball { .. } => InstallMethod::Tarball,
        }
    }

    /// The binary this install runs.
    #[must_use]
    pub fn binary(&self) -> PathBuf {
        match self {
            Self::Rpm { .. } => PathBuf::from(RPM_BINARY),
            Self::Tarball { prefix } => prefix.join("bin/rke2"),
        }
    }

    /// One line for status and reports: `rke2-common-1.34.1~rke2r1-0` or `/usr/local`.
    #[must_use]
    pub fn detail(&self) -> String {
        match self {
            Self::Rpm { packages } => packages
                .iter()
                .map(Package::nevr)
                .collect::<Vec<_>>()
                .join(" "),
            Self::Tarball { prefix } => prefix.display().to_string(),
        }
    }
}

/// The tarball prefixes install.sh uses (`/opt/rke2` when `/usr/local` is read-only).
pub const TARBALL_PREFIXES: [&str; 2] = ["/usr/local", "/opt/rke2"];

/// The install, or why the node is refused: both an RPM install and a tarball binary.
/// `configured_prefix` is where a tarball install is assumed when nothing is found.
///
/// # Errors
/// A message naming both installs found.
pub fn decide(facts: &Facts, configured_prefix: &Path) -> Result<Detected, String> {
    let common = facts.packages.iter().find(|p| p.name == COMMON_PACKAGE);
    let exec_prefix = facts.unit_exec.as_deref().and_then(|exec| {
        (exec != Path::new(RPM_BINARY) && exec.ends_with("bin/rke2"))
            .then(|| exec.parent().and_then(Path::parent))
            .flatten()
    });
    if let Some(common) = common {
        let tarball = facts
            .tarball_prefixes
            .first()
            .map(|p| p.join("bin/rke2"))
            .or_else(|| exec_prefix.map(|p| p.join("bin/rke2")));
        if let Some(tarball) = tarball {
            return Err(format!(
                "both installs found: {} (RPM, {RPM_BINARY}) and {} (tarball){}; \
                 remove one (rke2-uninstall.sh of the tarball, or the packages) before upgrading",
                common.nevr(),
                tarball.display(),
                facts
                    .unit_exec
                    .as_ref()
                    .map(|e| format!("; the unit runs {}", e.display()))
                    .unwrap_or_default()
            ));
        }
        return Ok(Detected::Rpm {
            packages: facts.packages.clone(),
        });
    }
    let prefix = exec_prefix
        .map(Path::to_path_buf)
        .filter(|p| facts.tarball_prefixes.contains(p))
        .or_else(|| {
            facts
                .tarball_prefixes
                .iter()
                .find(|p| p.as_path() == configured_prefix)
                .cloned()
        })
        .or_else(|| facts.tarball_prefixes.first().cloned())
        .unwrap_or_else(|| configured_prefix.to_path_buf());
    Ok(Detected::Tarball { prefix })
}

/// The binary of an `ExecStart=` line (its first word, without systemd's `-@:+!` prefixes).
#[must_use]
pub fn exec_start_binary(unit_text: &str) -> Option<PathBuf> {
    unit_text.lines().find_map(|line| {
        let value = line.trim().strip_prefix("ExecStart=")?;
        let word = value.split_whitespace().next()?;
        let word = word.trim_start_matches(['-', '@', ':', '+', '!']);
        (!word.is_empty()).then(|| PathBuf::from(word))
    })
}

/// `rpm -q --qf '%{NAME} %{VERSION}-%{RELEASE}\n'` lines → packages ("package x is not
/// installed" lines are skipped).
#[must_use]
pub fn parse_rpm_query(stdout: &str) -> Vec<Package> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (name, version_release, None) = (words.next()?, words.next()?, words.next()) else {
                return None;
            };
            name.starts_with("rke2-").then(|| Package {
                name: name.to_owned(),
                version_release: version_release.to_owned(),
            })
        })
        .collect()
}

/// Where systemd finds a unit's file, in its order of precedence.
const UNIT_DIRS: [&str; 4] = [
    "/etc/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// The RKE2 packages in the RPM database (none when `rpm` is not installed).
pub async fn rpm_packages(exec: &impl PackageExec) -> Result<Vec<Package>, String> {
    if !exec.has("rpm") {
        return Ok(Vec::new());
    }
    let argv: Vec<String> = [
        "rpm",
        "-q",
        "--qf",
        "%{NAME} %{VERSION}-%{RELEASE}\\n",
        COMMON_PACKAGE,
        "rke2-server",
        "rke2-agent",
        rke2ops_common::install::SELINUX_PACKAGE,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let out = exec.run(&argv, Duration::from_secs(60)).await?;
    // Exit status 1 only says some were not installed; a database that cannot be read says
    // so on stderr and prints no package.
    if !out.success() && out.stdout.trim().is_empty() && !out.stderr.contains("not installed") {
        return Err(format!("rpm -q: {}", out.last_line()));
    }
    Ok(parse_rpm_query(&out.stdout))
}

/// Reads what [`decide`] needs.
///
/// # Errors
/// When the RPM database cannot be read.
pub async fn gather(
    exec: &impl PackageExec,
    unit: &str,
    configured_prefix: &Path,
) -> Result<Facts, String> {
    let packages = rpm_packages(exec).await?;
    let unit_exec = UNIT_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(unit))
        .find_map(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| exec_start_binary(&text));
    let mut tarball_prefixes = Vec::new();
    for prefix in TARBALL_PREFIXES
        .iter()
        .map(PathBuf::from)
        .chain(std::iter::once(configured_prefix.to_path_buf()))
    {
        if prefix.join("bin/rke2").is_file() && !tarball_prefixes.contains(&prefix) {
            tarball_prefixes.push(prefix);
        }
    }
    Ok(Facts {
        packages,
        unit_exec,
        tarball_prefixes,
    })
}

/// [`gather`] then [`decide`].
///
/// # Errors
/// Unreadable RPM database, or both installs found.
pub async fn detect(
    exec: &impl PackageExec,
    unit: &str,
    configured_prefix: &Path,
) -> Result<Detected, String> {
    decide(
        &gather(exec, unit, configured_prefix).await?,
        configured_prefix,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, vr: &str) -> Package {
        Package {
            name: name.into(),
            version_release: vr.into(),
        }
    }

    #[test]
    fn rpm_database_means_rpm() {
        let facts = Facts {
            packages: vec![
                pkg("rke2-common", "1.33.5~rke2r1-0"),
                pkg("rke2-server", "1.33.5~rke2r1-0"),
            ],
            unit_exec: Some("/usr/bin/rke2".into()),
            tarball_prefixes: vec![],
        };
        let d = decide(&facts, Path::new("/usr/local")).expect("rpm");
        assert_eq!(d.method(), InstallMethod::Rpm);
        assert_eq!(d.binary(), PathBuf::from("/usr/bin/rke2"));
        assert_eq!(
            d.detail(),
            "rke2-common-1.33.5~rke2r1-0 rke2-server-1.33.5~rke2r1-0"
        );
    }

    #[test]
    fn both_installs_are_refused_naming_each() {
        let facts = Facts {
            packages: vec![pkg("rke2-common", "1.33.5~rke2r1-0")],
            unit_exec: Some("/usr/local/bin/rke2".into()),
            tarball_prefixes: vec!["/usr/local".into()],
        };
        let err = decide(&facts, Path::new("/usr/local")).expect_err("mixed");
        assert!(err.contains("rke2-common-1.33.5~rke2r1-0 (RPM"), "{err}");
        assert!(err.contains("/usr/local/bin/rke2 (tarball)"), "{err}");
        // A unit pointing at a tarball binary that is gone still counts.
        let facts = Facts {
            tarball_prefixes: vec![],
            ..facts
        };
        assert!(decide(&facts, Path::new("/usr/local")).is_err());
    }

    #[test]
    fn tarball_prefix_follows_the_unit() {
        let facts = Facts {
            packages: vec![],
            unit_exec: Some("/opt/rke2/bin/rke2".into()),
            tarball_prefixes: vec!["/usr/local".into(), "/opt/rke2".into()],
        };
        assert_eq!(
            decide(&facts, Path::new("/usr/local")),
            Ok(Detected::Tarball {
                prefix: "/opt/rke2".into()
            })
        );
        let nothing = Facts::default();
        assert_eq!(
            decide(&nothing, Path::new("/srv/rke2")),
            Ok(Detected::Tarball {
                prefix: "/srv/rke2".into()
            })
        );
    }

    #[test]
    fn exec_start_and_rpm_output_parse() {
        let unit = "[Service]\nType=notify\nExecStartPre=-/sbin/modprobe br_netfilter\nExecStart=/usr/bin/rke2 server\n";
        assert_eq!(exec_start_binary(unit), Some("/usr/bin/rke2".into()));
        assert_eq!(
            exec_start_binary("ExecStart=-/usr/local/bin/rke2 agent"),
            Some("/usr/local/bin/rke2".into())
        );
        let out = "rke2-common 1.34.1~rke2r1-0\nrke2-server 1.34.1~rke2r1-0\npackage rke2-agent is not installed\nrke2-selinux 0.20-1\n";
        let pkgs = parse_rpm_query(out);
        assert_eq!(pkgs.len(), 3);
        assert_eq!(pkgs[2], pkg("rke2-selinux", "0.20-1"));
    }
}
