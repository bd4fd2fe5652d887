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
    /// upgrading or downgrading to exactly them.
    #[must_use]
    pub fn install_argv(self, items: &[String]) -> Vec<String> {
        let mut argv: Vec<String> = match self {
            Self::Dnf | Self::Yum => vec![self.name().into(), "-y".into(), "install".into()],
            Self::Zypper => vec![
                "zypper".into(),
                "--non-interactive".into(),
                "--gpg-auto-import-keys".into(),
                "install".into(),
                "--oldpackage".into(),
                // Local files were checked against the repository (or the air-gap folder
                // the operator provided) before; zypper refuses unsigned local files.
                "--allow-unsigned-rpm".into(),
            ],
        };
        argv.extend(items.iter().map(|p| self.spec(p)));
        argv
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
        let z = PackageTool::Zypper.install_argv(&s(&[
            "rke2-common-1.33.5~rke2r1-0",
            "/var/x/rke2-server-1.34.1~rke2r1-0.x86_64.rpm",
        ]));
        assert!(
            z.contains(&"rke2-common=1.33.5~rke2r1-0".to_owned()),
            "{z:?}"
        );
        assert!(z.contains(&"/var/x/rke2-server-1.34.1~rke2r1-0.x86_64.rpm".to_owned()));
        assert!(z.contains(&"--oldpackage".to_owned()));
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
