//! Running the node's package tools (`rpm`, `dnf`, `yum`, `zypper`).
//!
//! The agent's own unit is sandboxed (`ProtectSystem=strict`, no `@privileged` calls, W^X
//! memory), which a package transaction cannot live with: it writes `/usr/bin`, the RPM
//! database and the package caches, runs scriptlets, and dnf is Python. Rather than loosen
//! the sandbox for every node, a package command runs as a transient systemd service
//! (`systemd-run --wait --pipe`, over the same systemd the agent drives), outside the agent's
//! sandbox and recorded in the journal as its own unit. Outside systemd (the CLI run by root
//! in a shell) it runs directly. Tests swap the whole seam ([`PackageExec`]).

use std::time::Duration;

/// What a command printed and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit status (`None`: killed by a signal).
    pub status: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl ExecOutput {
    /// Exit status 0.
    #[must_use]
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// The last non-empty line of stderr, else of stdout: what a failure report shows.
    #[must_use]
    pub fn last_line(&self) -> String {
        let last = |s: &str| {
            s.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::trim)
                .map(str::to_owned)
        };
        last(&self.stderr)
            .or_else(|| last(&self.stdout))
            .unwrap_or_default()
    }
}

/// Runs package commands on the node.
#[allow(async_fn_in_trait)] // used with generics only
pub trait PackageExec {
    /// Runs `argv` to completion (bounded by `timeout`); `Err` when it could not be run at
    /// all or timed out.
    async fn run(&self, argv: &[String], timeout: Duration) -> Result<ExecOutput, String>;

    /// Whether `tool` is installed (on the PATH of the node).
    fn has(&self, tool: &str) -> bool;
}

/// The node's own tools: through `systemd-run` under systemd, directly otherwise.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostExec;

/// The PATH a package command runs with (and where the tools are looked for).
const TOOL_PATH: &[&str] = &["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

impl PackageExec for HostExec {
    async fn run(&self, argv: &[String], timeout: Duration) -> Result<ExecOutput, String> {
        let Some((program, args)) = argv.split_first() else {
            return Err("empty command".to_owned());
        };
        let mut command = if std::env::var_os("INVOCATION_ID").is_some() {
            // Started by systemd: leave the sandbox through a transient unit.
            let mut c = tokio::process::Command::new("systemd-run");
            c.args([
                "--wait",
                "--pipe",
                "--quiet",
                "--collect",
                "--service-type=exec",
                "--description=rke2-node-agent package command",
                "--setenv=LC_ALL=C",
            ])
            .arg("--")
            .arg(program)
            .args(args);
            c
        } else {
            let mut c = tokio::process::Command::new(program);
            c.args(args).env("LC_ALL", "C");
            c
        };
        command
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let output = super::waits::waited(tokio::time::timeout(timeout, command.output()))
            .await
            .map_err(|_| format!("{program}: no answer within {timeout:?}"))?
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        Ok(ExecOutput {
            status: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    fn has(&self, tool: &str) -> bool {
        TOOL_PATH
            .iter()
            .any(|dir| std::path::Path::new(dir).join(tool).is_file())
    }
}

/// A package manager RKE2's packages can be installed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageTool {
    /// RHEL 8+, Rocky, Alma, Fedora.
    Dnf,
    /// RHEL/CentOS 7.
    Yum,
    /// SUSE.
    Zypper,
}

impl PackageTool {
    /// Every tool, in the order they are looked for (dnf over yum, as install.sh).
    pub const ALL: [Self; 3] = [Self::Dnf, Self::Yum, Self::Zypper];

    /// The command's name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Dnf => "dnf",
            Self::Yum => "yum",
            Self::Zypper => "zypper",
        }
    }

    /// Parses a configured name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Where the tool reads repository files.
    #[must_use]
    pub fn repo_dir(self) -> &'static str {
        match self {
            Self::Dnf | Self::Yum => "/etc/yum.repos.d",
            Self::Zypper => "/etc/zypp/repos.d",
        }
    }

    /// Downloads `packages` (pinned `name-version`) without installing them into `dir`.
    /// zypper downloads into a package cache folder (`dir`), under per-repository folders.
    #[must_use]
    pub fn download_argv(self, packages: &[String], dir: &str) -> Vec<String> {
        let mut argv: Vec<String> = match self {
            Self::Dnf | Self::Yum => vec![
                self.name().into(),
                "-y".into(),
                "install".into(),
                "--downloadonly".into(),
                format!("--downloaddir={dir}"),
            ],
            Self::Zypper => vec![
                "zypper".into(),
                "--non-interactive".into(),
                "--gpg-auto-import-keys".into(),
                format!("--pkg-cache-dir={dir}"),
                "install".into(),
                "--download-only".into(),
            ],
        };
        argv.extend(packages.iter().map(|p| self.spec(p)));
        argv
    }

    /// Installs `items` (local `.rpm` files or pinned `name-version[-release]` packages),
    /// upgrading or downgrading to exactly them (yum: see [`PackageTool::restore_argvs`]).
    /// `gpg_checked`: a signing key is configured, and the files' signatures were checked
    /// against it (`rpm -K`) after the key was imported into the RPM database; without one,
    /// zypper is told not to check (it refuses local files signed by a key it does not have,
    /// which "unchecked" must not do).
    #[must_use]
    pub fn install_argv(self, items: &[String], gpg_checked: bool) -> Vec<String> {
        let mut argv: Vec<String> = match self {
            Self::Dnf | Self::Yum => vec![self.name().into(), "-y".into(), "install".into()],
            Self::Zypper => {
                let mut argv = vec!["zypper".into(), "--non-interactive".into()];
                argv.push(if gpg_checked {
                    "--gpg-auto-import-keys".into()
                } else {
                    "--no-gpg-checks".into()
                });
                argv.extend([
                    "install".into(),
                    "--oldpackage".into(),
                    // Local files were checked against the repository (or the air-gap folder
                    // the operator provided) before; zypper refuses unsigned local files.
                    "--allow-unsigned-rpm".into(),
                ]);
                argv
            }
        };
        argv.extend(items.iter().map(|p| self.spec(p)));
        argv
    }

    /// The commands that put the recorded packages back (a rollback). dnf and zypper install
    /// every item in one transaction (dnf's `install` downgrades; zypper with
    /// `--oldpackage`). yum is dnf on EL8+, but EL7's yum 3 never downgrades with `install`
    /// ("already installed and latest version"): for yum, the items older than what is
    /// installed go through `yum downgrade`, the missing or newer ones through `yum install`,
    /// and those installed as they are need nothing. Empty: nothing to do.
    #[must_use]
    pub fn restore_argvs(self, items: &[(String, Restore)], gpg_checked: bool) -> Vec<Vec<String>> {
        if self != Self::Yum {
            let all: Vec<String> = items.iter().map(|(item, _)| item.clone()).collect();
            return vec![self.install_argv(&all, gpg_checked)];
        }
        let of = |want: Restore| -> Vec<String> {
            items
                .iter()
                .filter(|(_, how)| *how == want)
                .map(|(item, _)| item.clone())
                .collect()
        };
        let mut argvs = Vec::new();
        let older = of(Restore::Downgrade);
        if !older.is_empty() {
            let mut argv: Vec<String> = vec!["yum".into(), "-y".into(), "downgrade".into()];
            argv.extend(older);
            argvs.push(argv);
        }
        let install = of(Restore::Install);
        if !install.is_empty() {
            argvs.push(self.install_argv(&install, gpg_checked));
        }
        argvs
    }

    /// zypper pins with `name=version`; dnf and yum with `name-version`. Files are kept.
    fn spec(self, item: &str) -> String {
        if self != Self::Zypper || item.starts_with('/') {
            return item.to_owned();
        }
        // `rke2-common-1.34.1~rke2r1[-0]` → `rke2-common=1.34.1~rke2r1[-0]`: the version
        // starts at the first `-` followed by a digit.
        match item
            .char_indices()
            .find(|(i, c)| *c == '-' && item[i + 1..].starts_with(|d: char| d.is_ascii_digit()))
        {
            Some((i, _)) => format!("{}={}", &item[..i], &item[i + 1..]),
            None => item.to_owned(),
        }
    }
}

/// How a rollback puts one recorded package back, from what is installed now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restore {
    /// Installed at the recorded version already.
    Keep,
    /// Installed at a newer version: a downgrade.
    Downgrade,
    /// Not installed, or at an older version.
    Install,
}

/// `rpmvercmp`: how RPM orders two version (or release) strings. Alphanumeric segments are
/// compared one by one (numbers numerically and newer than letters), separators are
/// ignored, and `~` sorts before anything, even the end (`1.34.1~rke2r1` < `1.34.1`); `^`
/// after the end only.
#[must_use]
pub fn rpm_vercmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let (mut one, mut two) = (a.as_bytes(), b.as_bytes());
    if one == two {
        return Equal;
    }
    let separator = |c: &u8| !c.is_ascii_alphanumeric() && *c != b'~' && *c != b'^';
    while !one.is_empty() || !two.is_empty() {
        while one.first().is_some_and(separator) {
            one = &one[1..];
        }
        while two.first().is_some_and(separator) {
            two = &two[1..];
        }
        if one.first() == Some(&b'~') || two.first() == Some(&b'~') {
            if one.first() != Some(&b'~') {
                return Greater;
            }
            if two.first() != Some(&b'~') {
                return Less;
            }
            one = &one[1..];
            two = &two[1..];
            continue;
        }
        if one.first() == Some(&b'^') || two.first() == Some(&b'^') {
            if one.is_empty() {
                return Less;
            }
            if two.is_empty() {
                return Greater;
            }
            if one.first() != Some(&b'^') {
                return Greater;
            }
            if two.first() != Some(&b'^') {
                return Less;
            }
            one = &one[1..];
            two = &two[1..];
            continue;
        }
        if one.is_empty() || two.is_empty() {
            break;
        }
        let numeric = one[0].is_ascii_digit();
        let class = |c: &u8| {
            if numeric {
                c.is_ascii_digit()
            } else {
                c.is_ascii_alphabetic()
            }
        };
        let len1 = one.iter().take_while(|c| class(c)).count();
        let len2 = two.iter().take_while(|c| class(c)).count();
        if len2 == 0 {
            // A number is newer than letters.
            return if numeric { Greater } else { Less };
        }
        let (mut seg1, mut seg2) = (&one[..len1], &two[..len2]);
        if numeric {
            while seg1.len() > 1 && seg1[0] == b'0' {
                seg1 = &seg1[1..];
            }
            while seg2.len() > 1 && seg2[0] == b'0' {
                seg2 = &seg2[1..];
            }
            match seg1.len().cmp(&seg2.len()) {
                Equal => {}
                longer => return longer,
            }
        }
        match seg1.cmp(seg2) {
            Equal => {}
            order => return order,
        }
        one = &one[len1..];
        two = &two[len2..];
    }
    match (one.is_empty(), two.is_empty()) {
        (true, true) => Equal,
        (true, false) => Less,
        _ => Greater,
    }
}

/// Orders two `VERSION-RELEASE` strings as RPM does (version first, then release).
#[must_use]
pub fn compare_version_release(a: &str, b: &str) -> std::cmp::Ordering {
    let split = |s: &str| {
        s.rsplit_once('-')
            .map_or((s.to_owned(), String::new()), |(v, r)| {
                (v.to_owned(), r.to_owned())
            })
    };
    let (va, ra) = split(a);
    let (vb, rb) = split(b);
    rpm_vercmp(&va, &vb).then_with(|| rpm_vercmp(&ra, &rb))
}

/// The package tool to use: the configured one, else the first installed of dnf, yum,
/// zypper.
#[must_use]
pub fn pick_tool(configured: Option<PackageTool>, exec: &impl PackageExec) -> Option<PackageTool> {
    configured.or_else(|| PackageTool::ALL.into_iter().find(|t| exec.has(t.name())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn dnf_and_zypper_pin_the_way_each_understands() {
        let pkgs = s(&["rke2-common-1.34.1~rke2r1", "rke2-server-1.34.1~rke2r1"]);
        assert_eq!(
            PackageTool::Dnf.download_argv(&pkgs, "/d"),
            s(&[
                "dnf",
                "-y",
                "install",
                "--downloadonly",
                "--downloaddir=/d",
                "rke2-common-1.34.1~rke2r1",
                "rke2-server-1.34.1~rke2r1"
            ])
        );
        let z = PackageTool::Zypper.install_argv(
            &s(&[
                "rke2-common-1.33.5~rke2r1-0",
                "/var/x/rke2-server-1.34.1~rke2r1-0.x86_64.rpm",
            ]),
            true,
        );
        assert!(
            z.contains(&"rke2-common=1.33.5~rke2r1-0".to_owned()),
            "{z:?}"
        );
        assert!(z.contains(&"/var/x/rke2-server-1.34.1~rke2r1-0.x86_64.rpm".to_owned()));
        assert!(z.contains(&"--oldpackage".to_owned()));
        assert!(z.contains(&"--gpg-auto-import-keys".to_owned()));
        let unchecked = PackageTool::Zypper.install_argv(&s(&["/x.rpm"]), false);
        assert!(
            unchecked.contains(&"--no-gpg-checks".to_owned()),
            "{unchecked:?}"
        );
        assert!(!unchecked.contains(&"--gpg-auto-import-keys".to_owned()));
    }

    #[test]
    fn a_yum_rollback_downgrades_older_packages_as_el7_yum_needs() {
        let items = vec![
            ("rke2-common-1.33.5~rke2r1-0".to_owned(), Restore::Downgrade),
            (
                "/srv/rke2/rke2-server-1.33.5~rke2r1-0.x86_64.rpm".to_owned(),
                Restore::Downgrade,
            ),
            ("rke2-selinux-0.20-1".to_owned(), Restore::Keep),
            ("rke2-agent-1.33.5~rke2r1-0".to_owned(), Restore::Install),
        ];
        assert_eq!(
            PackageTool::Yum.restore_argvs(&items, true),
            [
                s(&[
                    "yum",
                    "-y",
                    "downgrade",
                    "rke2-common-1.33.5~rke2r1-0",
                    "/srv/rke2/rke2-server-1.33.5~rke2r1-0.x86_64.rpm"
                ]),
                s(&["yum", "-y", "install", "rke2-agent-1.33.5~rke2r1-0"]),
            ]
        );
        // Nothing older, nothing missing: nothing to run.
        assert!(
            PackageTool::Yum
                .restore_argvs(&[("rke2-selinux-0.20-1".to_owned(), Restore::Keep)], true)
                .is_empty()
        );
        // dnf's install downgrades: one transaction of everything, as before.
        assert_eq!(
            PackageTool::Dnf.restore_argvs(&items, true),
            [s(&[
                "dnf",
                "-y",
                "install",
                "rke2-common-1.33.5~rke2r1-0",
                "/srv/rke2/rke2-server-1.33.5~rke2r1-0.x86_64.rpm",
                "rke2-selinux-0.20-1",
                "rke2-agent-1.33.5~rke2r1-0"
            ])]
        );
    }

    #[test]
    fn versions_order_as_rpmvercmp() {
        use std::cmp::Ordering::{Equal, Greater, Less};
        for (a, b, want) in [
            ("1.34.1~rke2r1", "1.33.5~rke2r1", Greater),
            ("1.34.1~rke2r1", "1.34.1~rke2r2", Less),
            ("1.34.1~rke2r1", "1.34.1", Less),
            ("1.34.10~rke2r1", "1.34.9~rke2r1", Greater),
            ("1.0", "1.0", Equal),
            ("1.01", "1.1", Equal),
            ("1.0a", "1.0", Greater),
            ("1.0", "1.0a", Less),
            ("1a", "1.1", Less),
            ("2.0", "2_0", Equal),
            ("1.0^", "1.0", Greater),
            ("1.0^git1", "1.0.1", Less),
            ("0.20", "0.20", Equal),
        ] {
            assert_eq!(rpm_vercmp(a, b), want, "{a} vs {b}");
            assert_eq!(rpm_vercmp(b, a), want.reverse(), "{b} vs {a}");
        }
        assert_eq!(
            compare_version_release("1.33.5~rke2r1-0", "1.34.1~rke2r1-0"),
            Less
        );
        assert_eq!(compare_version_release("0.20-2", "0.20-1"), Greater);
        assert_eq!(compare_version_release("0.20-1", "0.20-1"), Equal);
    }

    #[test]
    fn last_line_prefers_stderr() {
        let out = ExecOutput {
            status: Some(1),
            stdout: "a\nb\n".into(),
            stderr: "Error: nothing provides x\n\n".into(),
        };
        assert_eq!(out.last_line(), "Error: nothing provides x");
        assert!(!out.success());
    }
}
