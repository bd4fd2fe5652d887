//! The node's "vendor" unit folder: stand-ins for systemd's standard targets, plus the host's own
//! D-Bus and journald units copied unchanged.
//!
//! The folder is bind-mounted over the node's `/usr/lib/systemd/system`, so the node's systemd,
//! `systemctl` and `systemd-analyze` all find units through systemd's ordinary search path
//! (`/etc/systemd/system`, `/run/systemd/system`, `/usr/local/lib/systemd/system`, then this).
//! The targets carry the dependencies that matter for ordering (sysinit → basic → multi-user,
//! network-online) and none of the hardware and mount plumbing of a real boot, so a shipped unit
//! with default dependencies (`Requires=sysinit.target`, `After=basic.target`,
//! `Conflicts=shutdown.target`, `WantedBy=multi-user.target`) behaves as on a machine.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use super::error::{GroundError, Result, io_err};

/// Minimal stand-ins for the targets of systemd.special(7), with the ordering of the real ones.
const TARGETS: &[(&str, &str)] = &[
    (
        "sysinit.target",
        "[Unit]\nDescription=System Initialization (proving ground)\n\
         Wants=local-fs.target swap.target\nAfter=local-fs.target swap.target\n",
    ),
    (
        "local-fs-pre.target",
        "[Unit]\nDescription=Preparation for Local File Systems (proving ground)\nRefuseManualStart=yes\n",
    ),
    (
        "local-fs.target",
        "[Unit]\nDescription=Local File Systems (proving ground)\nDefaultDependencies=no\n\
         After=local-fs-pre.target\nConflicts=shutdown.target\n",
    ),
    (
        "swap.target",
        "[Unit]\nDescription=Swaps (proving ground)\n",
    ),
    (
        "sockets.target",
        "[Unit]\nDescription=Sockets (proving ground)\n",
    ),
    (
        "timers.target",
        "[Unit]\nDescription=Timers (proving ground)\n",
    ),
    (
        "paths.target",
        "[Unit]\nDescription=Path Units (proving ground)\n",
    ),
    (
        "slices.target",
        "[Unit]\nDescription=Slice Units (proving ground)\nWants=system.slice\n",
    ),
    (
        "basic.target",
        "[Unit]\nDescription=Basic System (proving ground)\nRequires=sysinit.target\n\
         Wants=sockets.target timers.target paths.target slices.target\n\
         After=sysinit.target sockets.target paths.target slices.target\n",
    ),
    (
        "network-pre.target",
        "[Unit]\nDescription=Preparation for Network (proving ground)\nRefuseManualStart=yes\n",
    ),
    (
        // The node shares the host's network, which is up before any node boots.
        "network.target",
        "[Unit]\nDescription=Network (proving ground)\nAfter=network-pre.target\n",
    ),
    (
        "network-online.target",
        "[Unit]\nDescription=Network is Online (proving ground)\nWants=network.target\n\
         After=network.target\n",
    ),
    (
        "nss-lookup.target",
        "[Unit]\nDescription=Host and Network Name Lookups (proving ground)\n",
    ),
    (
        "time-set.target",
        "[Unit]\nDescription=System Time Set (proving ground)\n",
    ),
    (
        "time-sync.target",
        "[Unit]\nDescription=System Time Synchronized (proving ground)\nAfter=time-set.target\n",
    ),
    (
        "remote-fs.target",
        "[Unit]\nDescription=Remote File Systems (proving ground)\n",
    ),
    (
        "multi-user.target",
        "[Unit]\nDescription=Multi-User System (proving ground)\nRequires=basic.target\n\
         After=basic.target\nAllowIsolate=yes\n",
    ),
    (
        "shutdown.target",
        "[Unit]\nDescription=System Shutdown (proving ground)\nDefaultDependencies=no\n\
         RefuseManualStart=yes\n",
    ),
    (
        "umount.target",
        "[Unit]\nDescription=Unmount All Filesystems (proving ground)\nDefaultDependencies=no\n\
         RefuseManualStart=yes\n",
    ),
    (
        "final.target",
        "[Unit]\nDescription=Late Shutdown Services (proving ground)\nDefaultDependencies=no\n\
         RefuseManualStart=yes\nAfter=shutdown.target umount.target\n",
    ),
];

/// Units copied from the host unchanged: they must match the host's `dbus-daemon` and
/// `systemd-journald` binaries, which the node runs.
const HOST_UNITS: &[&str] = &[
    "dbus.socket",
    "dbus.service",
    "systemd-journald.service",
    "systemd-journald.socket",
    "systemd-journald-dev-log.socket",
];

/// `.wants/` links, as the distribution's packages would install them.
const WANTS: &[(&str, &str)] = &[
    ("sysinit.target", "systemd-journald.service"),
    ("sockets.target", "systemd-journald.socket"),
    ("sockets.target", "systemd-journald-dev-log.socket"),
    ("sockets.target", "dbus.socket"),
    // Started eagerly (not only on first use) so a broken bus fails the boot, not a test step.
    ("multi-user.target", "dbus.service"),
];

/// Where the host keeps its vendor units.
const HOST_UNIT_DIRS: &[&str] = &["/usr/lib/systemd/system", "/lib/systemd/system"];

/// Fills `dir` (the future `/usr/lib/systemd/system` of a node).
pub(crate) fn write_vendor_units(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(io_err("create folder", dir))?;
    for (name, contents) in TARGETS {
        let path = dir.join(name);
        fs::write(&path, contents).map_err(io_err("write", &path))?;
    }
    symlink("multi-user.target", dir.join("default.target"))
        .map_err(io_err("link", dir.join("default.target")))?;

    for name in HOST_UNITS {
        let source = HOST_UNIT_DIRS
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                GroundError::Prerequisite(format!(
                    "the host has no {name} in {HOST_UNIT_DIRS:?} (install systemd and dbus: \
                     scripts/install-test-deps.sh)"
                ))
            })?;
        let target = dir.join(name);
        fs::copy(&source, &target).map_err(io_err("copy", &source))?;
    }

    for (target, wanted) in WANTS {
        let wants = dir.join(format!("{target}.wants"));
        fs::create_dir_all(&wants).map_err(io_err("create folder", &wants))?;
        let link = wants.join(wanted);
        symlink(format!("../{wanted}"), &link).map_err(io_err("link", &link))?;
    }
    Ok(())
}

/// journald settings for a node, written to the node's private `/run/systemd/journald.conf.d/`:
/// keep the journal in the node's own `/run` (the host's `/var/log/journal` is shared by every
/// node) and never drop lines, because tests assert on them.
pub(crate) const JOURNALD_CONF: &str = "[Journal]\nStorage=volatile\nRateLimitIntervalSec=0\n\
RateLimitBurst=0\nRuntimeMaxUse=32M\n";
