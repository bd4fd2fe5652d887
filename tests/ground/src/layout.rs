//! What a node has of its own, and the script that sets it up: the private folders and files,
//! the host-side layout under the node's root (`fs/<node path>`), and the shell script that
//! `unshare` runs as the namespace's first process to mount them and exec systemd.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use super::error::{Result, io_err};
use super::units::{JOURNALD_CONF, write_vendor_units};

/// Folders every node gets privately (node path; the host keeps its own). A node's root
/// usually lives under the host's `/tmp`, which the node's own `/tmp` hides, so `boot` mounts
/// a folder that contains the root after all the others.
pub(super) const PRIVATE_DIRS: &[&str] = &[
    // Every service's state, as on a fresh machine: RKE2's data dir (/var/lib/rancher/rke2),
    // rke2-ops' (/var/lib/rke2-ops), the node's systemd's own, and DynamicUser= state
    // (/var/lib/private/rke2-ops-hub and its /var/lib/rke2-ops-hub symlink), which must not
    // land on the host or leak from one test's node into the next.
    "/var/lib",
    // RKE2's config (/etc/rancher/rke2) and rke2-ops' config.
    "/etc/rancher",
    "/etc/rke2-ops",
    // The install prefix: binaries and unit files installed on one node stay on that node.
    "/usr/local",
    // install.sh's other prefix (/opt/rke2, when /usr/local is read-only).
    "/opt",
    // Sockets of systemd, D-Bus and journald, and the volatile journal.
    "/run",
    // Where installed and enabled units (and test drop-ins) go.
    "/etc/systemd/system",
    // The node's vendor units: the stand-in targets plus D-Bus and journald (see `units`).
    "/usr/lib/systemd/system",
    // Empty: the host's generators (fstab, sysv, getty...) would pull in the host's services.
    "/usr/lib/systemd/system-generators",
    // PrivateTmp= folders are made here and would outlive a SIGKILLed node on the host.
    "/var/tmp",
    "/tmp",
];

/// Files every node gets privately when the host has them (node path, file under the root).
const PRIVATE_FILES: &[(&str, &str)] = &[
    // systemd sets the hostname from it at boot: each node has its own name (UTS namespace).
    ("/etc/hostname", "hostname"),
    // Journals and D-Bus are keyed by it; nodes are different machines.
    ("/etc/machine-id", "machine-id"),
];

/// Device nodes bound into the node's private `/dev`. `/dev/kmsg` is left out on purpose so
/// the node's systemd and journald neither write to nor read the host's kernel log.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// PATH inside the node, as on a Debian machine.
pub(super) const NODE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Creates the root layout: `fs/<node path>` for every private folder, the vendor units, the
/// private files, the journald drop-in and the `/dev` mount point. Returns the private files
/// that will be mounted.
pub(super) fn prepare_root(
    root: &Path,
    name: &str,
    private_dirs: &[PathBuf],
) -> Result<Vec<(PathBuf, PathBuf)>> {
    let fs_root = root.join("fs");
    for dir in private_dirs {
        let host = fs_root.join(relative(dir));
        fs::create_dir_all(&host).map_err(io_err("create folder", &host))?;
        // The mount point must exist: inside an outer private folder it is the folder just
        // made; otherwise on the host (an empty folder; the bind itself is private).
        let nested = private_dirs
            .iter()
            .any(|outer| outer != dir && dir.starts_with(outer));
        if !nested {
            fs::create_dir_all(dir).map_err(io_err("create mount point", dir))?;
        }
    }
    for sub in ["bin", "sbin", "lib/systemd/system", "share"] {
        let dir = fs_root.join("usr/local").join(sub);
        fs::create_dir_all(&dir).map_err(io_err("create folder", &dir))?;
    }
    fs::set_permissions(
        fs_root.join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .map_err(io_err("chmod", fs_root.join("tmp")))?;
    fs::set_permissions(
        fs_root.join("var/tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .map_err(io_err("chmod", fs_root.join("var/tmp")))?;
    write_vendor_units(&fs_root.join("usr/lib/systemd/system"))?;

    let journald = fs_root.join("run/systemd/journald.conf.d");
    fs::create_dir_all(&journald).map_err(io_err("create folder", &journald))?;
    let conf = journald.join("proving-ground.conf");
    fs::write(&conf, JOURNALD_CONF).map_err(io_err("write", &conf))?;

    let mut files = Vec::new();
    for (node_path, file) in PRIVATE_FILES {
        if !Path::new(node_path).is_file() {
            continue; // nothing to cover on this host
        }
        let host = root.join(file);
        let contents = match *file {
            "hostname" => format!("{name}\n"),
            _ => format!("{}\n", new_machine_id()?),
        };
        fs::write(&host, contents).map_err(io_err("write", &host))?;
        files.push((PathBuf::from(node_path), host));
    }
    let dev = root.join("dev");
    fs::create_dir_all(&dev).map_err(io_err("create folder", &dev))?;
    Ok(files)
}

/// The host folders of overlay `dir` under the node's root: (upper layer, overlayfs' work
/// folder), both under `overlay/<dir>/`.
pub(super) fn overlay_layers(root: &Path, dir: &Path) -> (PathBuf, PathBuf) {
    let base = root.join("overlay").join(relative(dir));
    (base.join("upper"), base.join("work"))
}

/// Creates the upper and work folders of every overlay.
pub(super) fn prepare_overlays(root: &Path, overlay_dirs: &[PathBuf]) -> Result<()> {
    for dir in overlay_dirs {
        let (upper, work) = overlay_layers(root, dir);
        for d in [&upper, &work] {
            fs::create_dir_all(d).map_err(io_err("create folder", d))?;
        }
        // The merged folder's own mode and owner come from the upper layer's root.
        if let Ok(meta) = fs::metadata(dir) {
            fs::set_permissions(&upper, meta.permissions()).map_err(io_err("chmod", &upper))?;
        }
    }
    Ok(())
}

/// A random machine ID (32 lowercase hex digits), from the kernel's UUID generator.
fn new_machine_id() -> Result<String> {
    let path = "/proc/sys/kernel/random/uuid";
    let uuid = fs::read_to_string(path).map_err(io_err("read", path))?;
    Ok(uuid.trim().replace('-', ""))
}

/// `dir` without its leading `/`.
pub(super) fn relative(dir: &Path) -> &Path {
    dir.strip_prefix("/").unwrap_or(dir)
}

/// Whether `p` is absolute and has no `.`/`..` components.
pub(super) fn is_clean_absolute(p: &Path) -> bool {
    use std::path::Component;
    p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// Single-quotes `s` for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub(super) fn sh_path(p: &Path) -> String {
    sh_quote(&p.to_string_lossy())
}

/// What the boot script mounts besides `/dev`.
#[derive(Debug, Clone, Copy)]
pub(super) struct BootMounts<'a> {
    /// Private folders, in mount order.
    pub private_dirs: &'a [PathBuf],
    /// Private files: (node path, host file).
    pub private_files: &'a [(PathBuf, PathBuf)],
    /// Overlay folders (mounted first).
    pub overlay_dirs: &'a [PathBuf],
}

/// The script `unshare` runs as the namespace's first process before exec'ing systemd.
pub(super) fn boot_script(
    ip: std::net::Ipv4Addr,
    root: &Path,
    name: &str,
    mounts: &BootMounts<'_>,
    cgroups: &[PathBuf],
    systemd: &Path,
) -> String {
    let BootMounts {
        private_dirs,
        private_files,
        overlay_dirs,
    } = *mounts;
    let mut s = String::from("set -eu\n");
    // The node's own network first: its loopback, and its link once the harness plugged it.
    s.push_str(&super::net::node_link_script(ip));
    // systemd takes the cgroup it starts in as its root: its units land below this node's own
    // subtree, not in /system.slice shared with every other node.
    for cg in cgroups {
        let _ = writeln!(s, "echo 0 > {}", sh_path(&cg.join("cgroup.procs")));
    }
    let dev = root.join("dev");
    let d = sh_path(&dev);
    // A private /dev (like systemd-nspawn's): without it every node would write /dev/log into
    // the host's devtmpfs and log to the host's /dev/kmsg. /dev/console is a plain file so the
    // node's systemd console output lands in console.log.
    let _ = writeln!(
        s,
        "mount -t tmpfs -o mode=755,nosuid,size=4m ground-dev {d}"
    );
    for dev_name in DEVICES {
        let _ = writeln!(
            s,
            ": > {d}/{dev_name}; mount --bind /dev/{dev_name} {d}/{dev_name}"
        );
    }
    let _ = writeln!(s, "mkdir {d}/pts {d}/shm");
    let _ = writeln!(
        s,
        "mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 ground-devpts {d}/pts"
    );
    let _ = writeln!(s, "ln -s pts/ptmx {d}/ptmx");
    let _ = writeln!(
        s,
        "mount -t tmpfs -o mode=1777,nosuid,nodev ground-shm {d}/shm"
    );
    let _ = writeln!(
        s,
        ": > {c}; : > {d}/console; mount --bind {c} {d}/console",
        c = sh_path(&root.join("console.log"))
    );
    let _ = writeln!(s, "mount --move {d} /dev");

    // Overlays first: private folders inside them are bound onto the merged view, and the
    // root's folder (usually under /tmp) is still visible.
    for dir in overlay_dirs {
        let (upper, work) = overlay_layers(root, dir);
        let _ = writeln!(
            s,
            "mount -t overlay ground-overlay -o lowerdir={d},upperdir={u},workdir={w} {d}",
            d = sh_path(dir),
            u = sh_path(&upper),
            w = sh_path(&work)
        );
    }
    for (node_path, host) in private_files {
        let _ = writeln!(s, "mount --bind {} {}", sh_path(host), sh_path(node_path));
    }
    for dir in private_dirs {
        let source = root.join("fs").join(relative(dir));
        let _ = writeln!(s, "mount --bind {} {}", sh_path(&source), sh_path(dir));
    }
    // As on a booted host (and systemd's container interface asks): the node's mounts are
    // shared within its own namespace (unshare made them private, cutting them off from the
    // host's). systemd sets a unit's credentials up in a child namespace and relies on
    // propagation to make them appear under /run/credentials: with private mounts,
    // LoadCredential= left $CREDENTIALS_DIRECTORY empty.
    let _ = writeln!(s, "mount --make-rshared /");
    let _ = writeln!(s, "hostname {}", sh_quote(name));
    let _ = writeln!(
        s,
        "exec {} --system --unit=multi-user.target",
        sh_path(systemd)
    );
    s
}
