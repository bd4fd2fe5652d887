//! Working with a booted node: commands inside it, systemd and the journal, and its files.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use super::error::{GroundError, Result, io_err};
use super::layout::{NODE_PATH, is_clean_absolute, relative};
use super::node::Node;
use super::wait_until;

/// What a command run inside a node produced.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    /// How it ended.
    pub status: ExitStatus,
    /// Its stdout, lossily decoded.
    pub stdout: String,
    /// Its stderr, lossily decoded.
    pub stderr: String,
}

impl ExecOutput {
    /// Whether it exited with status 0.
    #[must_use]
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

impl Node {
    /// Runs `argv` inside the node (its mount, PID, UTS and network namespaces, a clean environment with
    /// a Debian PATH) and returns what it produced, whatever its exit status.
    pub fn exec(&self, argv: &[&str]) -> Result<ExecOutput> {
        let pid = self.init_pid.to_string();
        let output = Command::new("nsenter")
            .args(["--target", &pid, "--mount", "--pid", "--uts", "--net", "--"])
            .args(argv)
            .env_clear()
            .env("PATH", NODE_PATH)
            .env("LANG", "C.UTF-8")
            .env("TERM", "dumb")
            .env("SYSTEMD_PAGER", "")
            .env("SYSTEMD_COLORS", "0")
            .current_dir("/")
            .output()
            .map_err(|source| GroundError::Spawn {
                command: argv.join(" "),
                source,
            })?;
        Ok(ExecOutput {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// Runs `argv` inside the node and returns its stdout; a non-zero exit is an error that
    /// carries both outputs.
    pub fn exec_ok(&self, argv: &[&str]) -> Result<String> {
        let out = self.exec(argv)?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(GroundError::CommandFailed {
                node: self.name.clone(),
                command: argv.join(" "),
                status: out.status.to_string(),
                stdout: out.stdout,
                stderr: out.stderr,
            })
        }
    }

    /// Runs a shell script inside the node (`sh -c script`), like [`Node::exec_ok`].
    pub fn sh(&self, script: &str) -> Result<String> {
        self.exec_ok(&["sh", "-c", script])
    }

    /// `systemctl --no-pager ARGS` inside the node; non-zero exit is an error.
    pub fn systemctl(&self, args: &[&str]) -> Result<String> {
        let mut argv = vec!["systemctl", "--no-pager"];
        argv.extend_from_slice(args);
        self.exec_ok(&argv)
    }

    /// One property of `unit` as systemd reports it (`systemctl show -P`), e.g.
    /// `ActiveState`, `SubState`, `Result`, `MainPID`, `NRestarts`, `StatusText`.
    pub fn unit_property(&self, unit: &str, property: &str) -> Result<String> {
        let out = self.systemctl(&["show", "--property", property, "--value", unit])?;
        Ok(out.trim_end_matches('\n').to_string())
    }

    /// Several properties of `unit` at one instant (one `systemctl show` call).
    pub fn unit_properties(
        &self,
        unit: &str,
        properties: &[&str],
    ) -> Result<BTreeMap<String, String>> {
        let joined = properties.join(",");
        let out = self.systemctl(&["show", "--property", &joined, unit])?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    /// A numeric property of `unit` (`NRestarts`, `MainPID`, `ExecMainStatus`...).
    pub fn unit_property_u64(&self, unit: &str, property: &str) -> Result<u64> {
        let value = self.unit_property(unit, property)?;
        value.parse().map_err(|_| GroundError::BadProperty {
            node: self.name.clone(),
            unit: unit.into(),
            property: property.into(),
            value,
            why: "expected a number",
        })
    }

    /// The main PID of `unit` as seen inside the node, or `None` when it has none.
    pub fn pid_of_main(&self, unit: &str) -> Result<Option<u32>> {
        let pid = self.unit_property_u64(unit, "MainPID")?;
        Ok(u32::try_from(pid).ok().filter(|p| *p != 0))
    }

    /// Translates a PID seen inside the node to the host's PID of the same process.
    pub fn host_pid(&self, node_pid: u32) -> Option<i32> {
        self.host_pids().into_iter().find(|host| {
            fs::read_to_string(format!("/proc/{host}/status")).is_ok_and(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("NSpid:"))
                    .and_then(|ids| ids.split_whitespace().last())
                    .is_some_and(|inner| inner == node_pid.to_string())
            })
        })
    }

    /// Sends `signal` (a name `kill -s` knows: `STOP`, `TERM`, `KILL`...) to `node_pid`.
    pub fn kill(&self, node_pid: u32, signal: &str) -> Result<()> {
        self.exec_ok(&["kill", "-s", signal, &node_pid.to_string()])
            .map(drop)
    }

    /// Waits until `ActiveState` of `unit` is `state` (`active`, `inactive`, `failed`...).
    /// The timeout error carries the last state and the unit's journal tail.
    pub fn wait_for_unit_state(&self, unit: &str, state: &str, timeout: Duration) -> Result<()> {
        self.wait_for_unit(unit, &format!("ActiveState={state}"), timeout, |props| {
            props.get("ActiveState").is_some_and(|s| s == state)
        })
    }

    /// Waits until `check` holds for `unit`'s properties (a map of every property `systemctl
    /// show` prints). `what` names the condition in the timeout error, which carries the last
    /// `ActiveState`/`SubState`/`Result` and the unit's journal tail.
    pub fn wait_for_unit(
        &self,
        unit: &str,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&BTreeMap<String, String>) -> bool,
    ) -> Result<()> {
        let mut last = BTreeMap::new();
        let outcome = wait_until(
            &format!("{unit} {what} on node {}", self.name),
            timeout,
            || {
                let out = self.systemctl(&["show", unit])?;
                last = out
                    .lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                Ok(check(&last))
            },
        );
        outcome.map_err(|e| match e {
            GroundError::Timeout { what, timeout, .. } => {
                let field = |k: &str| last.get(k).map_or("?", String::as_str).to_string();
                let journal = self.journal(unit, 40).unwrap_or_else(|e| e.to_string());
                GroundError::Timeout {
                    what,
                    timeout,
                    detail: format!(
                        "last: ActiveState={} SubState={} Result={} MainPID={} NRestarts={}\n\
                         journal of {unit}:\n{journal}",
                        field("ActiveState"),
                        field("SubState"),
                        field("Result"),
                        field("MainPID"),
                        field("NRestarts"),
                    ),
                }
            }
            other => other,
        })
    }

    /// The last `lines` journal lines of `unit` (systemd's own lines about it and the unit's
    /// output), with precise timestamps.
    pub fn journal(&self, unit: &str, lines: usize) -> Result<String> {
        let n = lines.to_string();
        self.exec_ok(&[
            "journalctl",
            "--no-pager",
            "-u",
            unit,
            "-n",
            &n,
            "-o",
            "short-precise",
        ])
    }

    /// Where the node path `node_path` lives on the host. Only paths inside the node's private
    /// folders have one (`<root>/fs/<path>`), and paths inside its overlays
    /// ([`super::NodeSpec::with_overlay_dir`]): their merged view `/proc/<init>/root/<path>`
    /// while the node runs (writes land in the node's upper layer); anything else is the
    /// host's own file and an error.
    pub fn host_path(&self, node_path: impl AsRef<Path>) -> Result<PathBuf> {
        let node_path = node_path.as_ref();
        if let Some((_, host)) = self.private_files.iter().find(|(p, _)| p == node_path) {
            return Ok(host.clone());
        }
        let private = is_clean_absolute(node_path)
            && self
                .private_dirs
                .iter()
                .any(|dir| node_path.starts_with(dir));
        let overlaid = is_clean_absolute(node_path)
            && self
                .overlay_dirs
                .iter()
                .any(|dir| node_path.starts_with(dir));
        if private {
            Ok(self.root.join("fs").join(relative(node_path)))
        } else if overlaid {
            // The merged view, through the node's init (its mount namespace).
            Ok(PathBuf::from(format!("/proc/{}/root", self.init_pid)).join(relative(node_path)))
        } else {
            Err(GroundError::NotPrivate {
                node: self.name.clone(),
                path: node_path.to_path_buf(),
                private: self
                    .private_dirs
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
            })
        }
    }

    /// Writes a file at `node_path` (parents created, mode 0644 for new files).
    pub fn write_file(
        &self,
        node_path: impl AsRef<Path>,
        contents: impl AsRef<[u8]>,
    ) -> Result<()> {
        let host = self.host_path(node_path)?;
        if let Some(parent) = host.parent() {
            fs::create_dir_all(parent).map_err(io_err("create folder", parent))?;
        }
        fs::write(&host, contents).map_err(io_err("write", &host))
    }

    /// Reads the file at `node_path`.
    pub fn read_file(&self, node_path: impl AsRef<Path>) -> Result<Vec<u8>> {
        let host = self.host_path(node_path)?;
        fs::read(&host).map_err(io_err("read", &host))
    }

    /// Installs the host file `host_source` as the executable `node_path` (mode 0755). Written
    /// beside the target and renamed over it, so replacing a running binary works as an
    /// upgrade would (no ETXTBSY) and a reader never sees half a file.
    pub fn install_binary(
        &self,
        host_source: impl AsRef<Path>,
        node_path: impl AsRef<Path>,
    ) -> Result<()> {
        let host_source = host_source.as_ref();
        let target = self.host_path(node_path)?;
        let parent = target.parent().unwrap_or(Path::new("/"));
        fs::create_dir_all(parent).map_err(io_err("create folder", parent))?;
        let staging = parent.join(format!(
            ".{}.ground-tmp",
            target
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        fs::copy(host_source, &staging).map_err(io_err("copy", host_source))?;
        fs::set_permissions(&staging, fs::Permissions::from_mode(0o755))
            .map_err(io_err("chmod", &staging))?;
        fs::rename(&staging, &target).map_err(io_err("rename", &target))
    }

    /// Installs a unit file `name` with `contents` into the node's `/etc/systemd/system` and
    /// reloads systemd.
    pub fn install_unit(&self, name: &str, contents: &str) -> Result<()> {
        self.write_file(Path::new("/etc/systemd/system").join(name), contents)?;
        self.systemctl(&["daemon-reload"]).map(drop)
    }

    /// Installs the host's unit file `host_file` unchanged (same file name) into the node's
    /// `/etc/systemd/system` and reloads systemd.
    pub fn install_unit_file(&self, host_file: impl AsRef<Path>) -> Result<()> {
        let host_file = host_file.as_ref();
        let contents = fs::read_to_string(host_file).map_err(io_err("read", host_file))?;
        let name = host_file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                GroundError::InvalidSpec(format!("{} has no file name", host_file.display()))
            })?;
        self.install_unit(&name, &contents)
    }

    /// Installs the repository's shipped unit `systemd/<name>` and checks that the node's
    /// copy is byte for byte the shipped file (tests run what users install, not a variant).
    pub fn install_shipped_unit(&self, name: &str) -> Result<()> {
        let shipped = super::shipped_unit(name);
        self.install_unit_file(&shipped)?;
        let installed = self.read_file(Path::new("/etc/systemd/system").join(name))?;
        let original = fs::read(&shipped).map_err(io_err("read", &shipped))?;
        if installed == original {
            Ok(())
        } else {
            Err(GroundError::InvalidSpec(format!(
                "the node's {name} differs from {}",
                shipped.display()
            )))
        }
    }

    /// Adds the drop-in `/etc/systemd/system/<unit>.d/<name>.conf` and reloads systemd.
    pub fn install_dropin(&self, unit: &str, name: &str, contents: &str) -> Result<()> {
        let path = format!("/etc/systemd/system/{unit}.d/{name}.conf");
        self.write_file(path, contents)?;
        self.systemctl(&["daemon-reload"]).map(drop)
    }
}
