//! Booting a node and tearing it down again (see the module docs of [`super`] for the model).

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::error::{GroundError, Result, io_err};
use super::host::{Reaper, make_cgroups, remove_cgroups, spawn_reaper};
use super::layout::{
    BootMounts, NODE_PATH, PRIVATE_DIRS, boot_script, is_clean_absolute, prepare_overlays,
    prepare_root,
};
use super::net::{AddrLease, Cut, Ground, ground, nft_script};
use super::{check_root_and_tools, systemd_binary};

/// What `Node::boot` should build.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Node name, also its hostname: lowercase letters, digits and `-`.
    pub name: String,
    /// The node's address on the ground's bridge; `None` leases the lowest free one of
    /// 10.250.1.1 up (see [`super::net`]).
    pub ip: Option<Ipv4Addr>,
    /// Host folder for the node's files; `None` makes a temporary one that the node deletes on
    /// teardown (kept when `RKE2OPS_GROUND_KEEP` is set, for debugging).
    pub root: Option<PathBuf>,
    /// More node folders to make private, beyond the standard set (`/var/lib/kubelet`...).
    pub extra_private_dirs: Vec<PathBuf>,
    /// Node folders seen through an overlay ([`NodeSpec::with_overlay_dir`]).
    pub overlay_dirs: Vec<PathBuf>,
    /// How long systemd may take to reach `running`.
    pub boot_timeout: Duration,
}

impl NodeSpec {
    /// A node named `name` with a leased address and a temporary root.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ip: None,
            root: None,
            extra_private_dirs: Vec::new(),
            overlay_dirs: Vec::new(),
            boot_timeout: Duration::from_secs(60),
        }
    }

    /// Uses exactly `ip` (boot fails if another live node holds it).
    #[must_use]
    pub fn with_ip(mut self, ip: Ipv4Addr) -> Self {
        self.ip = Some(ip);
        self
    }

    /// Keeps the node's files in `root` (created if missing, never deleted by the harness).
    #[must_use]
    pub fn with_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = Some(root.into());
        self
    }

    /// Makes the node folder `path` private as well.
    #[must_use]
    pub fn with_private_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.extra_private_dirs.push(path.into());
        self
    }

    /// Shows the host folder `path` inside the node through an overlay: the host's files are
    /// the read-only lower layer, and a writable upper layer of the node's own (under its root,
    /// `overlay/<path>/upper`) takes every change, so a package installed into `/usr/bin` on
    /// one node stays on that node while the host's commands remain usable there.
    ///
    /// `path` must exist on the host, must not be (or lie inside) a private folder or another
    /// overlay, and must not contain the node's root; private folders inside it are fine (the
    /// overlays are mounted first). [`Node::host_path`] of a file below it is the node's merged
    /// view (`/proc/<init>/root/<path>`: reads see host and node files, writes land in the
    /// upper layer), valid while the node runs. Teardown needs nothing extra: the overlay
    /// lives in the node's mount namespace and goes away with it.
    #[must_use]
    pub fn with_overlay_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.overlay_dirs.push(path.into());
        self
    }

    /// Sets how long the boot may take.
    #[must_use]
    pub fn with_boot_timeout(mut self, timeout: Duration) -> Self {
        self.boot_timeout = timeout;
        self
    }

    fn validate(&self) -> Result<()> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 48
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !self.name.starts_with('-');
        if !name_ok {
            return Err(GroundError::InvalidSpec(format!(
                "node name {:?} must be 1-48 of [a-z0-9-], not starting with '-'",
                self.name
            )));
        }
        for dir in &self.extra_private_dirs {
            if !is_clean_absolute(dir) || dir == Path::new("/") {
                return Err(GroundError::InvalidSpec(format!(
                    "private dir {} must be absolute, not /, and free of . and ..",
                    dir.display()
                )));
            }
        }
        for dir in &self.overlay_dirs {
            let private = PRIVATE_DIRS
                .iter()
                .map(Path::new)
                .chain(self.extra_private_dirs.iter().map(PathBuf::as_path))
                .any(|p| dir.starts_with(p));
            let nested = self
                .overlay_dirs
                .iter()
                .any(|o| o != dir && (dir.starts_with(o) || o.starts_with(dir)));
            if !is_clean_absolute(dir) || dir == Path::new("/") || private || nested {
                return Err(GroundError::InvalidSpec(format!(
                    "overlay dir {} must be absolute, not /, free of . and .., and neither \
                     inside a private folder nor nested with another overlay",
                    dir.display()
                )));
            }
            if !dir.is_dir() {
                return Err(GroundError::InvalidSpec(format!(
                    "overlay dir {} does not exist on the host",
                    dir.display()
                )));
            }
        }
        Ok(())
    }
}

/// A booted node: its own systemd (PID 1 of a PID + mount + UTS + network namespace), D-Bus
/// and journald, on the ground's bridge.
/// Dropping it SIGKILLs the node's init, which kills every process of the node, then removes its
/// cgroups and (if temporary) its files.
#[derive(Debug)]
pub struct Node {
    /// The node's name and hostname.
    pub(super) name: String,
    /// The node's address on the bridge, held for the node's lifetime.
    pub(super) lease: AddrLease,
    /// The cuts in force ([`Node::cut`]).
    cuts: std::sync::Mutex<Vec<Cut>>,
    /// Host folder with the node's files; `fs/` mirrors the node's private paths.
    pub(super) root: PathBuf,
    /// Present when the harness made `root` and must delete it.
    owned_root: Option<tempfile::TempDir>,
    /// Node paths whose contents are private (sorted as mounted).
    pub(super) private_dirs: Vec<PathBuf>,
    /// Private single files: (node path, host path).
    pub(super) private_files: Vec<(PathBuf, PathBuf)>,
    /// Node folders seen through an overlay with a private upper layer.
    pub(super) overlay_dirs: Vec<PathBuf>,
    /// `unshare`, the parent of the node's init; reaped on teardown.
    unshare: Child,
    /// Kills the node if this process dies without tearing it down (see [`Reaper`]).
    reaper: Option<Reaper>,
    /// Host PID of the node's systemd.
    pub(super) init_pid: i32,
    /// Inode of the node's PID namespace: identifies the node's processes on the host.
    pid_ns: u64,
    /// The node's cgroup subtrees (one per mounted hierarchy).
    cgroups: Vec<PathBuf>,
    /// Set once teardown ran.
    torn_down: bool,
}

/// Distinguishes nodes of one process in cgroup names.
static NODE_SEQ: AtomicU32 = AtomicU32::new(0);

impl Node {
    /// Boots a node as `spec` says and waits until its systemd reports `running`.
    pub fn boot(spec: NodeSpec) -> Result<Self> {
        spec.validate()?;
        check_root_and_tools().map_err(GroundError::Prerequisite)?;
        let ground = ground()?;
        let lease = ground.lease_node(spec.ip)?;

        let (root, owned_root) = match &spec.root {
            Some(root) => {
                fs::create_dir_all(root).map_err(io_err("create folder", root))?;
                (root.clone(), None)
            }
            None => {
                let dir = tempfile::Builder::new()
                    .prefix(&format!("rke2ops-ground-{}-", spec.name))
                    .tempdir()
                    .map_err(io_err("create folder", std::env::temp_dir()))?;
                (dir.path().to_path_buf(), Some(dir))
            }
        };

        let mut private_dirs: Vec<PathBuf> = PRIVATE_DIRS.iter().map(PathBuf::from).collect();
        private_dirs.extend(spec.extra_private_dirs.iter().cloned());
        // Parents before children; folders that contain the root (usually /tmp) come last,
        // because mounting them hides the sources of the other mounts (see PRIVATE_DIRS).
        private_dirs.sort_by_key(|p| (root.starts_with(p), p.components().count()));
        private_dirs.dedup();

        if let Some(dir) = spec.overlay_dirs.iter().find(|d| root.starts_with(d)) {
            return Err(GroundError::InvalidSpec(format!(
                "overlay dir {} contains the node's root {}",
                dir.display(),
                root.display()
            )));
        }
        let private_files = prepare_root(&root, &spec.name, &private_dirs)?;
        prepare_overlays(&root, &spec.overlay_dirs)?;
        // The script's and systemd's own stdout/stderr; /dev/console goes to console.log.
        let boot_log = root.join("boot.log");
        let log = fs::File::create(&boot_log).map_err(io_err("create", &boot_log))?;
        let log2 = log.try_clone().map_err(io_err("open", &boot_log))?;
        let id = format!(
            "{}-{}-{}",
            spec.name,
            std::process::id(),
            NODE_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let cgroups = make_cgroups(&id)?;
        let systemd = systemd_binary().map_err(GroundError::Prerequisite)?;
        let script = boot_script(
            lease.ip(),
            &root,
            &spec.name,
            &BootMounts {
                private_dirs: &private_dirs,
                private_files: &private_files,
                overlay_dirs: &spec.overlay_dirs,
            },
            &cgroups,
            &systemd,
        );

        let mut command = Command::new("unshare");
        command
            .args([
                "--pid",
                "--net",
                "--fork",
                // When unshare dies, the kernel SIGKILLs the node's init (PR_SET_PDEATHSIG).
                "--kill-child=SIGKILL",
                "--mount",
                "--propagation=private",
                "--uts",
                "--mount-proc",
                "sh",
                "-c",
                &script,
                // $0 and $1 of the script: they mark the process for the reaper.
                "rke2ops-ground-node",
                &id,
            ])
            .env_clear()
            .env("PATH", NODE_PATH)
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .current_dir("/")
            // Its own process group: a Ctrl-C meant for the test does not reach the node;
            // the reaper tears it down instead.
            .process_group(0);
        let unshare = match command.spawn() {
            Ok(child) => child,
            Err(source) => {
                let _ = remove_cgroups(&cgroups, Duration::ZERO);
                return Err(GroundError::Spawn {
                    command: "unshare ... systemd".into(),
                    source,
                });
            }
        };
        let reaper = spawn_reaper(
            unshare.id(),
            &id,
            &cgroups,
            owned_root.is_some().then_some(&root),
        );

        let mut node = Self {
            name: spec.name.clone(),
            lease,
            cuts: std::sync::Mutex::new(Vec::new()),
            root,
            owned_root,
            private_dirs,
            private_files,
            overlay_dirs: spec.overlay_dirs.clone(),
            unshare,
            reaper: None,
            init_pid: 0,
            pid_ns: 0,
            cgroups,
            torn_down: false,
        };
        // From here on every early return drops `node`, which tears down what was started.
        node.reaper = Some(reaper?);
        // The boot script waits for its link before it mounts anything.
        let unshare_pid = node.unshare.id();
        Ground::wait_own_netns(unshare_pid, Duration::from_secs(10))?;
        ground.attach(unshare_pid, node.ip())?;
        node.find_init()?;
        node.wait_until_running(spec.boot_timeout)?;
        Ok(node)
    }

    /// The node's name (also its hostname).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's address on the ground's bridge (its `eth0`).
    #[must_use]
    pub fn ip(&self) -> Ipv4Addr {
        self.lease.ip()
    }

    /// Cuts the node off as `cut` says, on top of the cuts already in force: packets are
    /// dropped silently in both directions by nftables in the node's own namespace.
    pub fn cut(&self, cut: Cut) -> Result<()> {
        let mut cuts = self
            .cuts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cuts.push(cut);
        self.apply_cuts(&cuts)
    }

    /// Lifts every cut.
    pub fn heal(&self) -> Result<()> {
        let mut cuts = self
            .cuts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cuts.clear();
        self.apply_cuts(&cuts)
    }

    fn apply_cuts(&self, cuts: &[Cut]) -> Result<()> {
        let script = nft_script(cuts);
        let mut child = Command::new("nsenter")
            .args([
                "--target",
                &self.init_pid.to_string(),
                "--net",
                "--",
                "nft",
                "-f",
                "-",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| GroundError::Spawn {
                command: "nsenter ... nft -f -".into(),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(script.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|source| GroundError::Spawn {
                command: "nft -f -".into(),
                source,
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(GroundError::CommandFailed {
                node: self.name.clone(),
                command: format!("nft -f - <<EOF\n{script}EOF"),
                status: out.status.to_string(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
    }

    /// Host PID of the node's systemd (PID 1 inside the node).
    #[must_use]
    pub fn init_pid(&self) -> i32 {
        self.init_pid
    }

    /// The host folder holding the node's files (`fs/` mirrors its private paths,
    /// `boot.log` and `console.log` its systemd's output).
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What the boot script and the node's systemd wrote to stdout/stderr and to the node's
    /// `/dev/console` (early boot errors land here, before journald runs).
    #[must_use]
    pub fn console_log(&self) -> String {
        let read = |f: &str| fs::read_to_string(self.root.join(f)).unwrap_or_default();
        format!("{}{}", read("boot.log"), read("console.log"))
    }

    /// Kills the node now and reports what could not be cleaned up. Dropping the node does the
    /// same and prints such problems instead.
    pub fn shutdown(mut self) -> Result<()> {
        self.teardown()
    }

    /// Waits for the node's init (the child of `unshare`, once it has exec'd systemd).
    fn find_init(&mut self) -> Result<()> {
        let unshare_pid = self.unshare.id();
        let children = format!("/proc/{unshare_pid}/task/{unshare_pid}/children");
        let systemd = systemd_binary().map_err(GroundError::Prerequisite)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.unshare.try_wait() {
                return Err(self.boot_error(format!("unshare exited with {status}")));
            }
            let pid = fs::read_to_string(&children).ok().and_then(|s| {
                s.split_whitespace()
                    .next()
                    .and_then(|p| p.parse::<i32>().ok())
            });
            if let Some(pid) = pid
                && fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == systemd)
            {
                let ns = format!("/proc/{pid}/ns/pid");
                self.pid_ns = fs::metadata(&ns).map_err(io_err("stat", &ns))?.ino();
                self.init_pid = pid;
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.boot_error("systemd was not exec'd within 10s".into()));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait_until_running(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            // Fails (and prints "offline" or nothing) until systemd's private socket is up.
            if let Ok(out) = self.exec(&["systemctl", "is-system-running"]) {
                last = out.stdout.trim().to_string();
                match last.as_str() {
                    "running" => return Ok(()),
                    "degraded" => {
                        let failed = self
                            .exec(&["systemctl", "--failed", "--plain", "--no-legend"])
                            .map(|o| o.stdout)
                            .unwrap_or_default();
                        return Err(self.boot_error(format!("degraded; failed units:\n{failed}")));
                    }
                    _ => {}
                }
            }
            if Instant::now() > deadline {
                return Err(self.boot_error(format!(
                    "systemd did not reach `running` within {timeout:?} (last state {last:?})"
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn boot_error(&self, detail: String) -> GroundError {
        let mut detail = detail;
        let console = self.console_log();
        let tail: Vec<&str> = console.lines().rev().take(40).collect();
        let _ = write!(detail, "\n--- console (last 40 lines) ---");
        for line in tail.iter().rev() {
            let _ = write!(detail, "\n{line}");
        }
        GroundError::Boot {
            node: self.name.clone(),
            detail,
        }
    }

    /// Kills the node and cleans up; safe to call twice.
    fn teardown(&mut self) -> Result<()> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let mut problems = Vec::new();

        // SIGKILL to a namespace's init kills every process of the namespace. Check that the
        // PID is still the node's init first (it could be gone and the PID reused).
        if self.init_pid > 0 && self.in_node_pid_ns(self.init_pid) {
            let _ = kill(Pid::from_raw(self.init_pid), Signal::SIGKILL);
        }
        // unshare is our unreaped child, so its PID is safe to signal; killing it also kills
        // init through --kill-child if the line above did not.
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();

        if let Err(e) = self.wait_namespace_empty(Duration::from_secs(10)) {
            problems.push(e.to_string());
        }
        // Only now dismiss the reaper: had this process died while tearing down (a signal
        // handler exiting while the main thread drops its nodes), the reaper would still have
        // finished the job. Its kill checks the node's marker first, so it never hits a reused
        // PID.
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.stdin.write_all(b"done\n");
            drop(reaper.stdin);
            let _ = reaper.child.wait();
        }
        if let Err(e) = remove_cgroups(&self.cgroups, Duration::from_secs(5)) {
            problems.push(e);
        }
        if let Some(dir) = self.owned_root.take() {
            if std::env::var_os("RKE2OPS_GROUND_KEEP").is_some() {
                let kept = dir.keep();
                eprintln!(
                    "proving ground: kept node {} files in {}",
                    self.name,
                    kept.display()
                );
            } else {
                let path = dir.path().to_path_buf();
                if let Err(e) = dir.close() {
                    problems.push(format!("remove {}: {e}", path.display()));
                }
            }
        }

        if problems.is_empty() {
            Ok(())
        } else {
            Err(GroundError::Boot {
                node: self.name.clone(),
                detail: format!("teardown incomplete: {}", problems.join("; ")),
            })
        }
    }

    fn in_node_pid_ns(&self, host_pid: i32) -> bool {
        fs::metadata(format!("/proc/{host_pid}/ns/pid")).is_ok_and(|m| m.ino() == self.pid_ns)
    }

    /// Host PIDs of every process in the node's PID namespace.
    pub(super) fn host_pids(&self) -> Vec<i32> {
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| self.in_node_pid_ns(*pid))
            .collect()
    }

    fn wait_namespace_empty(&self, timeout: Duration) -> Result<()> {
        if self.pid_ns == 0 {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = self.host_pids();
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(GroundError::Timeout {
                    what: format!("the processes of node {} to die", self.name),
                    timeout,
                    detail: format!("still alive (host PIDs): {left:?}"),
                });
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Prints what helps debug a failed test: failed units and the node's journal tail.
    fn dump_diagnostics(&self) {
        let failed = self
            .exec(&["systemctl", "--failed", "--plain", "--no-legend"])
            .map(|o| o.stdout)
            .unwrap_or_default();
        let journal = self
            .exec(&[
                "journalctl",
                "--no-pager",
                "-n",
                "80",
                "-o",
                "short-precise",
            ])
            .map(|o| o.stdout)
            .unwrap_or_default();
        eprintln!(
            "--- proving ground: node {} ({}) at test failure ---\nfailed units:\n{failed}\n\
             journal (last 80 lines):\n{journal}--- end of node {} ---",
            self.name,
            self.ip(),
            self.name
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.torn_down {
            return;
        }
        if thread::panicking() && self.init_pid > 0 {
            self.dump_diagnostics();
        }
        if let Err(e) = self.teardown() {
            eprintln!("proving ground: {e}");
        }
    }
}
