//! How RKE2 was installed on this node: the RPM database (`rke2-common`), the unit's
//! `ExecStart`, the binary the unit's process runs now, and the tarball prefixes
//! (`/usr/local`, `/opt/rke2`, the configured one).
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
    /// The binary the unit's RKE2 process runs now (it differs from `unit_exec` when the
    /// unit file changed since the start, or a drop-in or wrapper starts another binary).
    pub running: Option<PathBuf>,
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
    // The running process is the strongest evidence, then the unit file.
    let exec_prefixes: Vec<&Path> = [facts.running.as_deref(), facts.unit_exec.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(|exec| {
            (exec != Path::new(RPM_BINARY) && exec.ends_with("bin/rke2"))
                .then(|| exec.parent().and_then(Path::parent))
                .flatten()
        })
        .collect();
    let exec_prefix = exec_prefixes.first().copied();
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
                match (&facts.unit_exec, &facts.running) {
                    (_, Some(r)) => format!("; RKE2 runs {}", r.display()),
                    (Some(e), None) => format!("; the unit runs {}", e.display()),
                    (None, None) => String::new(),
                }
            ));
        }
        return Ok(Detected::Rpm {
            packages: facts.packages.clone(),
        });
    }
    let prefix = exec_prefixes
        .iter()
        .map(|p| p.to_path_buf())
        .find(|p| facts.tarball_prefixes.contains(p))
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

/// The RKE2 binary among the unit's processes, each given as (its `exe` link when the
/// kernel shows it, its command line words): the first absolute path ending in `bin/rke2`
/// (RKE2's children, containerd and the kubelet, run other binaries). The `exe` link is
/// hidden from an agent without CAP_SYS_PTRACE (the shipped unit); `argv[0]` is the path
/// systemd started, readable by anyone. Pure.
#[must_use]
pub fn pick_running(processes: &[(Option<PathBuf>, Vec<String>)]) -> Option<PathBuf> {
    processes.iter().find_map(|(exe, argv)| {
        let exe = exe.as_ref().map(|e| {
            // A binary replaced on disk (an upgrade before its restart) still names its path.
            PathBuf::from(e.to_string_lossy().trim_end_matches(" (deleted)"))
        });
        exe.into_iter()
            .chain(argv.first().map(PathBuf::from))
            .find(|p| p.is_absolute() && p.ends_with("bin/rke2"))
    })
}

/// Whether a `/proc/<pid>/cgroup` text puts the process in `unit` (cgroup v2's `0::` line
/// or v1's `name=systemd` hierarchy). Pure.
#[must_use]
pub fn in_unit_cgroup(cgroup: &str, unit: &str) -> bool {
    let suffix = format!("/{unit}");
    cgroup.lines().any(|line| {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        (controllers.is_empty() || controllers == "name=systemd") && path.ends_with(&suffix)
    })
}

/// The binary `unit`'s RKE2 process runs, from `/proc` (none when the unit is not running).
fn running_binary(unit: &str) -> Option<PathBuf> {
    let mut processes = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let dir = entry.path();
        let Ok(cgroup) = std::fs::read_to_string(dir.join("cgroup")) else {
            continue;
        };
        if !in_unit_cgroup(&cgroup, unit) {
            continue;
        }
        let argv = std::fs::read(dir.join("cmdline"))
            .map(|raw| {
                raw.split(|b| *b == 0)
                    .filter(|w| !w.is_empty())
                    .map(|w| String::from_utf8_lossy(w).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        processes.push((std::fs::read_link(dir.join("exe")).ok(), argv));
    }
    pick_running(&processes)
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
        running: running_binary(unit),
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
            running: Some("/usr/bin/rke2".into()),
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
            running: None,
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
            running: None,
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
    fn the_running_binary_outweighs_the_unit_file() {
        // The unit file was switched to the package's binary, but RKE2 still runs the
        // tarball's: both installs are there.
        let facts = Facts {
            packages: vec![pkg("rke2-common", "1.34.1~rke2r1-0")],
            unit_exec: Some("/usr/bin/rke2".into()),
            running: Some("/usr/local/bin/rke2".into()),
            tarball_prefixes: vec![],
        };
        let err = decide(&facts, Path::new("/usr/local")).expect_err("mixed");
        assert!(
            err.contains("/usr/local/bin/rke2 (tarball)")
                && err.contains("RKE2 runs /usr/local/bin/rke2"),
            "{err}"
        );
        // Tarball in two prefixes: the one running is the one upgraded.
        let facts = Facts {
            packages: vec![],
            unit_exec: Some("/usr/local/bin/rke2".into()),
            running: Some("/opt/rke2/bin/rke2".into()),
            tarball_prefixes: vec!["/usr/local".into(), "/opt/rke2".into()],
        };
        assert_eq!(
            decide(&facts, Path::new("/usr/local")),
            Ok(Detected::Tarball {
                prefix: "/opt/rke2".into()
            })
        );
    }

    #[test]
    fn a_running_binary_outside_every_prefix_leaves_the_unit_file_to_decide() {
        let facts = Facts {
            packages: vec![],
            unit_exec: Some("/opt/rke2/bin/rke2".into()),
            running: Some("/tmp/hand-run/bin/rke2".into()),
            tarball_prefixes: vec!["/usr/local".into(), "/opt/rke2".into()],
        };
        assert_eq!(
            decide(&facts, Path::new("/usr/local")),
            Ok(Detected::Tarball {
                prefix: "/opt/rke2".into()
            })
        );
    }

    #[test]
    fn the_running_binary_is_found_among_the_units_processes() {
        let words = |w: &[&str]| w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let procs = vec![
            // containerd and the kubelet: RKE2's children, other binaries.
            (
                None,
                words(&["/var/lib/rancher/rke2/data/v1/bin/containerd", "-c", "x"]),
            ),
            (None, words(&["kubelet", "--v=0"])),
            (None, words(&["/usr/local/bin/rke2", "server"])),
        ];
        assert_eq!(pick_running(&procs), Some("/usr/local/bin/rke2".into()));
        // The exe link, when shown, wins; a replaced binary still names its path.
        let replaced = vec![(
            Some(PathBuf::from("/opt/rke2/bin/rke2 (deleted)")),
            words(&["rke2", "agent"]),
        )];
        assert_eq!(pick_running(&replaced), Some("/opt/rke2/bin/rke2".into()));
        // A relative argv[0] says nothing.
        assert_eq!(
            pick_running(&[(None, words(&["bin/rke2", "server"]))]),
            None
        );
        assert_eq!(pick_running(&[]), None);

        let v2 = "0::/system.slice/rke2-server.service\n";
        let v1 = "12:pids:/system.slice/rke2-server.service\n1:name=systemd:/system.slice/rke2-server.service\n";
        assert!(in_unit_cgroup(v2, "rke2-server.service"));
        assert!(in_unit_cgroup(v1, "rke2-server.service"));
        assert!(!in_unit_cgroup(v2, "rke2-agent.service"));
        assert!(!in_unit_cgroup(
            "0::/system.slice/my-rke2-server.service2\n",
            "rke2-server.service"
        ));
        assert!(!in_unit_cgroup(
            "12:pids:/system.slice/rke2-server.service\n",
            "rke2-server.service"
        ));
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
