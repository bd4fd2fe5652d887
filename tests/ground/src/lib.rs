//! The proving ground: simulated nodes, each a real systemd booted on this machine.
//!
//! # Why
//!
//! rke2-ops lives at the seam between its binaries and systemd: `Type=notify` readiness, the
//! watchdog, restarts, sandboxing of the shipped unit, D-Bus calls that stop and start
//! `rke2-server`. Mocks cannot tell whether a hardened unit still lets the agent write the
//! files a rotation touches; a real systemd can. So end-to-end tests boot nodes here and run the
//! shipped unit files unchanged on them.
//!
//! # How
//!
//! [`Node::boot`] starts `unshare --pid --mount --uts --fork` and, in that namespace, a small
//! script that
//!
//! 1. moves itself into a cgroup subtree of its own (`/sys/fs/cgroup/{unified,systemd}/
//!    rke2ops-ground/<node>-<pid>-<n>`): systemd takes the cgroup it starts in as its root, so
//!    each node's units live in the node's own subtree and two nodes running a unit of the same
//!    name do not share a cgroup;
//! 2. builds a private `/dev` (tmpfs with `null`, `zero`, `full`, `random`, `urandom`, `tty`
//!    bound from the host, a new `devpts`, `shm`; `/dev/console` is the file `console.log`),
//!    so the node neither creates `/dev/log` on the host nor writes to the host's kernel log;
//! 3. bind-mounts per-node folders (under the node's root, `fs/<path>`) over the paths rke2-ops
//!    and RKE2 use: `/var/lib` (every service's state, RKE2's data dir and DynamicUser state
//!    included, empty as on a fresh machine), `/etc/rancher`, `/etc/rke2-ops`, `/usr/local`,
//!    `/run`, `/etc/systemd/system`, `/usr/lib/systemd/system` (the node's vendor units, see
//!    below), `/usr/lib/systemd/system-generators` (empty), `/var/tmp`, `/tmp`, plus files
//!    `/etc/hostname` (the node's name) and `/etc/machine-id` (random);
//! 4. makes the node's mounts shared within its own namespace (`mount --make-rshared /`, as a
//!    booted host has them; systemd needs propagation for `LoadCredential=`), then execs
//!    `/lib/systemd/systemd --system --unit=multi-user.target` as the namespace's PID 1.
//!
//! The node's `/usr/lib/systemd/system` holds minimal stand-ins for systemd's standard targets
//! (`sysinit`, `basic`, `sockets`, `timers`, `paths`, `slices`, `local-fs`, `network`,
//! `network-online`, `multi-user`, `shutdown`, ...) and the host's own `dbus.socket`,
//! `dbus.service` and journald units, so unit files with default dependencies work unchanged
//! and `journalctl -u` works. journald keeps the journal in the node's `/run` (volatile) and
//! never rate-limits. Boot waits until `systemctl is-system-running` says `running` (a
//! `degraded` boot is an error listing the failed units); it takes about 0.2 s here.
//!
//! Everything else is done from the host: [`Node::exec`] runs a command inside the node with
//! `nsenter --mount --pid --uts`; [`Node::systemctl`], [`Node::unit_property`],
//! [`Node::wait_for_unit_state`], [`Node::journal`] and [`Node::pid_of_main`] are thin layers
//! over it; [`Node::write_file`], [`Node::install_binary`], [`Node::install_unit`] and
//! [`Node::host_path`] reach the node's private folders from the host side.
//!
//! Each node has a network namespace of its own: its own loopback (so `127.0.0.1:6443` in
//! the node's `rke2.yaml` and the agent's default `127.0.0.1:10248` kubelet probe mean what
//! they mean on a real node) and an `eth0` on a bridge shared by every node of the test
//! process (10.250.1.1 and up). The bridge lives in the *ground* namespace, which has no
//! route off the machine: see [`net`] for the address range and why nothing can leave.
//! Hubs and mirrors that nodes must reach run there ([`net::Ground::command`],
//! [`net::Ground::lease_host`], [`enter`], [`block_on`]). [`Node::cut`] and [`Node::heal`]
//! partition a node (all traffic, some peers, or one port) with nftables in its namespace.
//!
//! # Teardown
//!
//! Dropping a [`Node`] (also while a test panics, after printing the node's failed units and
//! journal tail) SIGKILLs its init, which makes the kernel kill every process of the node;
//! it then waits until no process of the node's PID namespace is left, removes the node's
//! cgroups and, when the harness made it, the node's root folder (`RKE2OPS_GROUND_KEEP=1`
//! keeps it). If the test process dies without unwinding (SIGKILL, Ctrl-C, abort), a small
//! reaper process that waits on a pipe from the test process does the same; and `unshare`
//! runs with `--kill-child`, so the node's init also dies with `unshare`.
//!
//! # Limits
//!
//! - Needs root, a writable cgroup tree and systemd, dbus-daemon, nsenter and unshare on the
//!   host ([`require_root_and_tools`]; `scripts/install-test-deps.sh` installs them).
//!   Developed on cgroup v1+v2 hybrid (systemd 252); pure cgroup v2 is handled but untested.
//! - Nodes share the host's kernel, `/sys` and the rest of the file system:
//!   only the paths listed above are private ([`Node::host_path`] refuses the others, add more
//!   with [`NodeSpec::with_private_dir`]). The empty folders `/etc/rancher` and
//!   `/etc/rke2-ops` are created on the host as mount points.
//! - The node's systemd mounts cgroup controllers the host had not mounted (hugetlb,
//!   perf_event, net_cls) inside its namespace; their empty mount-point folders appear in the
//!   host's `/sys/fs/cgroup` tmpfs and stay until reboot. Harmless, but visible.
//! - Resource accounting per unit is approximate (v1 controllers other than the systemd
//!   hierarchy are not moved into the node's subtree); do not assert on it.
//! - This is not a container: no user namespace, and systemd runs in its ordinary (non-
//!   container) mode, as on a machine.

mod control;
mod error;
mod host;
mod layout;
pub mod net;
mod node;
mod units;

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

pub use control::ExecOutput;
pub use error::{GroundError, Result};
pub use net::{Cut, block_on, enter, ground};
pub use node::{Node, NodeSpec};

/// Where Debian (and most distributions) keep systemd itself.
const SYSTEMD_CANDIDATES: &[&str] = &["/lib/systemd/systemd", "/usr/lib/systemd/systemd"];

/// Tools the harness runs on the host (found on PATH).
const HOST_TOOLS: &[&str] = &[
    "dbus-daemon",
    "nsenter",
    "unshare",
    "systemctl",
    "journalctl",
    // The ground network (`net`): namespaces, veth pairs, the bridge, and cuts.
    "ip",
    "nft",
];

/// Panics with a clear message, naming what is missing, unless this process can boot nodes:
/// it runs as root, systemd, dbus-daemon, nsenter, unshare, systemctl and journalctl exist,
/// and the cgroup tree is writable. Tests that need the proving ground call it first; they
/// never skip silently.
pub fn require_root_and_tools() {
    if let Err(why) = check_root_and_tools() {
        panic!("proving ground unavailable: {why}");
    }
}

/// Like [`require_root_and_tools`] but returns what is missing.
pub fn check_root_and_tools() -> std::result::Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "these tests boot systemd in namespaces and must run as root (sudo -E scripts/test.sh, \
             or sudo -E cargo test --features e2e ...)"
                .into(),
        );
    }
    systemd_binary()?;
    for tool in HOST_TOOLS {
        if find_on_path(tool).is_none() {
            return Err(format!(
                "`{tool}` is not installed; run scripts/install-test-deps.sh"
            ));
        }
    }
    for hierarchy in host::cgroup_hierarchies()? {
        if nix::unistd::access(&hierarchy, nix::unistd::AccessFlags::W_OK).is_err() {
            return Err(format!(
                "{} is not writable; nodes need their own cgroup subtree",
                hierarchy.display()
            ));
        }
    }
    Ok(())
}

/// The host's systemd binary.
pub(crate) fn systemd_binary() -> std::result::Result<PathBuf, String> {
    SYSTEMD_CANDIDATES
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        // Resolved so it compares equal to /proc/<pid>/exe.
        .map(|p| p.canonicalize().unwrap_or_else(|_| p.to_path_buf()))
        .ok_or_else(|| {
            format!(
                "systemd is not installed (none of {SYSTEMD_CANDIDATES:?}); run \
                 scripts/install-test-deps.sh"
            )
        })
}

fn find_on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// The repository's shipped unit file `systemd/<name>` (this crate is `tests/ground/`).
#[must_use]
pub fn shipped_unit(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../systemd")
        .join(name)
}

/// The workspace binary `name` as built by cargo next to the running test (`target/debug/`).
/// Test binaries live in `target/debug/deps/`, so the build folder is the parent of theirs.
///
/// # Panics
/// When it is not built: end-to-end tests use the real binaries, which `cargo test` alone
/// does not build.
#[must_use]
pub fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let dir = exe
        .parent()
        .and_then(|deps| {
            if deps.ends_with("deps") {
                deps.parent()
            } else {
                Some(deps)
            }
        })
        .expect("the test binary lives in a folder");
    let binary = dir.join(name);
    assert!(
        binary.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first",
        binary.display()
    );
    binary
}

/// Polls `check` every 50 ms until it returns `Ok(true)`, returns its first error, or fails
/// with [`GroundError::Timeout`] naming `what` after `timeout`.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(GroundError::Timeout {
                what: what.to_string(),
                timeout,
                detail: String::new(),
            });
        }
        thread::sleep(Duration::from_millis(50));
    }
}
