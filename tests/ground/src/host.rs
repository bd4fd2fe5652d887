//! Host resources a node holds that the kernel does not free by itself: its cgroup subtrees,
//! and the reaper that cleans up when the test process dies without tearing the node down.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::error::{GroundError, Result, io_err};
use super::layout::sh_path;

/// The cgroup hierarchies systemd tracks processes in on this host: the unified one alone
/// (cgroup v2), or the unified one and `name=systemd` (hybrid), or `name=systemd` (v1).
pub(super) fn cgroup_hierarchies() -> std::result::Result<Vec<PathBuf>, String> {
    let base = Path::new("/sys/fs/cgroup");
    let mut hierarchies = Vec::new();
    if base.join("cgroup.controllers").exists() {
        hierarchies.push(base.to_path_buf());
    } else {
        if base.join("unified/cgroup.controllers").exists() {
            hierarchies.push(base.join("unified"));
        }
        if base.join("systemd/cgroup.procs").exists() {
            hierarchies.push(base.join("systemd"));
        }
    }
    if hierarchies.is_empty() {
        return Err("no cgroup hierarchy for systemd is mounted under /sys/fs/cgroup".into());
    }
    Ok(hierarchies)
}

/// Creates `rke2ops-ground/<id>` in each cgroup hierarchy systemd uses on this host.
pub(super) fn make_cgroups(id: &str) -> Result<Vec<PathBuf>> {
    let mut made = Vec::new();
    for h in cgroup_hierarchies().map_err(GroundError::Prerequisite)? {
        let dir = h.join("rke2ops-ground").join(id);
        fs::create_dir_all(&dir).map_err(io_err("create cgroup", &dir))?;
        made.push(dir);
    }
    Ok(made)
}

/// Removes cgroup subtrees bottom-up, retrying while the kernel finishes killing processes.
pub(super) fn remove_cgroups(
    cgroups: &[PathBuf],
    timeout: Duration,
) -> std::result::Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut left = Vec::new();
        for cg in cgroups {
            if cg.exists() && remove_cgroup_tree(cg).is_err() {
                left.push(cg.display().to_string());
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("cgroups not removed: {}", left.join(", ")));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// cgroup folders cannot be removed recursively; only empty leaves can be rmdir'ed.
fn remove_cgroup_tree(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_cgroup_tree(&entry.path())?;
        }
    }
    fs::remove_dir(dir)
}

/// A tiny shell process, outside the test's process group, that holds the read end of a pipe
/// whose write end only this process holds. If the test process dies in any way (panic with
/// abort, SIGKILL, Ctrl-C, timeout) the pipe closes and the reaper kills the node, removes its
/// cgroups and its temporary root. A clean teardown first tells it "done".
#[derive(Debug)]
pub(super) struct Reaper {
    /// The shell process.
    pub(super) child: Child,
    /// The write end of its pipe; "done" dismisses it, closing it fires it.
    pub(super) stdin: ChildStdin,
}

/// Starts the [`Reaper`] for a node whose `unshare` has PID `unshare_pid`.
pub(super) fn spawn_reaper(
    unshare_pid: u32,
    marker: &str,
    cgroups: &[PathBuf],
    owned_root: Option<&PathBuf>,
) -> Result<Reaper> {
    let cg_list: Vec<String> = cgroups.iter().map(|c| sh_path(c)).collect();
    let rm_root = owned_root.map_or(String::new(), |r| format!("rm -rf {}\n", sh_path(r)));
    // The marker check makes sure $1 is still the node's unshare, not a reused PID.
    let script = format!(
        "trap '' INT HUP TERM QUIT\n\
         read -r word || word=\n\
         [ \"$word\" = done ] && exit 0\n\
         grep -qaF -- \"$2\" \"/proc/$1/cmdline\" 2>/dev/null && kill -KILL \"$1\"\n\
         i=0\n\
         while [ $i -lt 100 ]; do\n\
           left=0\n\
           for d in {cgs}; do\n\
             [ -d \"$d\" ] || continue\n\
             find \"$d\" -depth -type d -exec rmdir {{}} + 2>/dev/null || left=1\n\
           done\n\
           [ $left = 0 ] && break\n\
           sleep 0.1; i=$((i+1))\n\
         done\n\
         {rm_root}",
        cgs = cg_list.join(" "),
    );
    let mut child = Command::new("sh")
        .args([
            "-c",
            &script,
            "rke2ops-ground-reaper",
            &unshare_pid.to_string(),
            marker,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir("/")
        .process_group(0)
        .spawn()
        .map_err(|source| GroundError::Spawn {
            command: "sh (node reaper)".into(),
            source,
        })?;
    let stdin = child.stdin.take().ok_or_else(|| GroundError::Spawn {
        command: "sh (node reaper)".into(),
        source: std::io::Error::other("no stdin pipe"),
    })?;
    Ok(Reaper { child, stdin })
}
