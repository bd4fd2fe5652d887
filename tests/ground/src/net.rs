//! The proving ground's network: one private network namespace per test process (the
//! *ground*), a bridge in it, and every node in a network namespace of its own joined to that
//! bridge by a veth pair.
//!
//! # Why
//!
//! RKE2 binds fixed addresses: the apiserver and supervisor on every address, the kubelet's
//! `/healthz` and etcd's client port on `127.0.0.1`. The agent's production defaults and the
//! node's own `rke2.yaml` (`https://127.0.0.1:6443`) only work when each node has a loopback of
//! its own, and a node can only be cut off the network when it has a link of its own. So
//! nodes get both; the hub, release mirrors and the test's own clients sit on the bridge.
//!
//! # Addresses, and why nothing can leave the machine
//!
//! All addresses are in `10.250.0.0/16` ([`SUBNET`]): the bridge is `10.250.0.1`, processes on
//! the ground side (hubs, mirrors, Prometheus) take `10.250.0.2`-`10.250.0.254` as extra
//! bridge addresses ([`Ground::lease_host`]), nodes take `10.250.1.1` and up on their `eth0`.
//! The range only exists inside namespaces this module creates: the ground namespace holds
//! `lo` and the bridge, nothing else, and no default route; a node namespace holds `lo` and its
//! `eth0`, with only the on-link route of the /16. A packet for any other address has no route
//! and fails at once with "network unreachable" (`ENETUNREACH`); there is no interface through
//! which it could reach the host's network, let alone leave the machine. Each test process has
//! its own ground, so two processes may hand out the same addresses without meeting.
//!
//! # Lifetime
//!
//! A small holder process (`unshare --net sh`) creates the namespace and waits on a pipe from
//! this process; when this process exits in any way the pipe closes, the holder exits, and the
//! kernel frees the namespace with its bridge once the last process inside it (a hub) is gone.
//! Node namespaces die with their nodes; the kernel deletes both ends of a veth pair when
//! either namespace goes.

use std::collections::BTreeSet;
use std::fs::File;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};

use super::error::{GroundError, Result};

/// The proving ground's address range (documented in the module docs).
pub const SUBNET: &str = "10.250.0.0/16";
/// Prefix length of [`SUBNET`], as written on every interface.
const PREFIX: u8 = 16;
/// The bridge's own address in the ground namespace.
pub const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
/// The bridge's MAC address, set once: a bridge otherwise takes the lowest MAC of its ports
/// and changes it as nodes come and go, and nodes that cached the old one lose the hub and
/// the mirrors (connections hang until their ARP entry expires).
const BRIDGE_MAC: &str = "02:72:6b:32:00:01";
/// The bridge's name in the ground namespace.
const BRIDGE: &str = "rk2g0";
/// A node's link, inside the node.
pub const NODE_LINK: &str = "eth0";

/// The test process's ground network; made on first use.
static GROUND: OnceLock<std::result::Result<Ground, String>> = OnceLock::new();

/// The ground of this test process, created the first time it is asked for.
///
/// # Errors
/// When the namespace or the bridge cannot be made (not root, no `ip`/`unshare`).
pub fn ground() -> Result<&'static Ground> {
    GROUND
        .get_or_init(|| Ground::create().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| GroundError::Prerequisite(format!("ground network: {e}")))
}

/// Moves the calling thread into the ground namespace: every socket it opens and every process
/// it spawns from now on is on the bridge's side (so it can reach nodes, hubs and mirrors, and
/// nothing else). Threads it spawns later inherit this; threads that already exist do not.
///
/// # Errors
/// When the ground cannot be made or `setns` fails.
pub fn enter() -> Result<()> {
    let ground = ground()?;
    setns(ground.ns.as_fd(), CloneFlags::CLONE_NEWNET)
        .map_err(|e| GroundError::Prerequisite(format!("setns into the ground network: {e}")))
}

/// Runs `f` on a short-lived thread inside the ground namespace and returns its result: for
/// binding a listener there (a socket keeps the namespace it was made in) without moving the
/// calling thread.
///
/// # Errors
/// When the ground cannot be entered.
pub fn in_ground<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter()?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Runs `future` on a new multi-threaded runtime whose threads are all in the ground
/// namespace (the calling thread enters it first, and the runtime's threads inherit it). For
/// tests whose in-process clients talk to nodes: kube-rs, tonic, hyper.
///
/// # Panics
/// When the ground cannot be entered or the runtime cannot be built.
pub fn block_on<F: Future>(future: F) -> F::Output {
    super::require_root_and_tools();
    enter().expect("enter the ground network");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future)
}

/// The ground namespace and the addresses handed out in it.
#[derive(Debug)]
pub struct Ground {
    /// The holder process (its namespace is the ground); exits when this process's end of its stdin closes.
    holder: Child,
    /// Our end of the holder's stdin pipe, never written; closing it dismisses the holder.
    _holder_stdin: ChildStdin,
    /// The namespace itself; this descriptor keeps it alive for as long as the process runs.
    ns: File,
    /// Inode of the namespace, to tell "already inside" from "outside".
    ns_inode: u64,
    /// Host octets (`10.250.0.x`) in use.
    hosts: Mutex<BTreeSet<u8>>,
    /// Node addresses in use, as `u32`.
    nodes: Mutex<BTreeSet<u32>>,
    /// Numbers the ground-side ends of veth pairs (`rkn<n>`, within the 15-byte limit).
    veth_seq: AtomicU32,
    /// Where the next node / ground-side address search starts (see [`next_free`]).
    node_cursor: AtomicU32,
    host_cursor: AtomicU32,
}

/// The first address of `range` at or after the cursor (wrapping) that `taken` does not
/// hold; the cursor moves past it. Addresses are handed out round-robin rather than lowest
/// first: a new node on the address a dead one had would meet stale neighbour (ARP) entries
/// for the old one's MAC on the bridge side, and connections to it would hang for seconds.
fn next_free(range: &[u32], cursor: &AtomicU32, taken: impl Fn(u32) -> bool) -> Result<u32> {
    let len = range.len();
    if len == 0 {
        return Err(GroundError::NoFreeAddress);
    }
    let start = usize::try_from(cursor.load(Ordering::Relaxed)).unwrap_or(0) % len;
    for step in 0..len {
        let i = (start + step) % len;
        if !taken(range[i]) {
            cursor.store(u32::try_from(i + 1).unwrap_or(0), Ordering::Relaxed);
            return Ok(range[i]);
        }
    }
    Err(GroundError::NoFreeAddress)
}

impl Ground {
    fn create() -> Result<Self> {
        let script = format!(
            "set -e\n\
             ip link set lo up\n\
             ip link add {BRIDGE} type bridge\n\
             ip link set {BRIDGE} address {BRIDGE_MAC}\n\
             ip addr add {BRIDGE_IP}/{PREFIX} dev {BRIDGE}\n\
             ip link set {BRIDGE} up\n\
             echo ready\n\
             read -r _ || true\n"
        );
        let mut child = Command::new("unshare")
            .args(["--net", "sh", "-c", &script, "rke2ops-ground-net"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .current_dir("/")
            // Outside the test's process group: a Ctrl-C meant for the test does not end it.
            .process_group(0)
            .spawn()
            .map_err(|source| GroundError::Spawn {
                command: "unshare --net (ground network)".into(),
                source,
            })?;
        let stdin = child.stdin.take().ok_or_else(|| {
            GroundError::Prerequisite("ground network holder has no stdin".into())
        })?;
        let stdout = child.stdout.take().ok_or_else(|| {
            GroundError::Prerequisite("ground network holder has no stdout".into())
        })?;
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        if line.trim() != "ready" {
            let _ = child.kill();
            let out = child.wait_with_output().ok();
            let stderr = out
                .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .unwrap_or_default();
            return Err(GroundError::Prerequisite(format!(
                "could not make the ground network namespace and bridge: {}",
                stderr.trim()
            )));
        }
        let path = format!("/proc/{}/ns/net", child.id());
        let ns = File::open(&path).map_err(super::error::io_err("open", &path))?;
        let ns_inode = ns
            .metadata()
            .map_err(super::error::io_err("stat", &path))?
            .ino();
        Ok(Self {
            holder: child,
            _holder_stdin: stdin,
            ns,
            ns_inode,
            hosts: Mutex::new(BTreeSet::new()),
            nodes: Mutex::new(BTreeSet::new()),
            veth_seq: AtomicU32::new(0),
            node_cursor: AtomicU32::new(0),
            host_cursor: AtomicU32::new(0),
        })
    }

    /// A command that runs `program` in the ground namespace, whichever thread spawns it:
    /// `nsenter --net=<ground> -- program`; nsenter execs `program` in place, so the child's
    /// PID is the program's own.
    #[must_use]
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.netns_path().display()))
            .arg("--")
            .arg(program);
        command
    }

    /// The ground namespace as a path for `nsenter --net=<path>` (valid while this process
    /// runs): how a person reaches the hub or a mirror from a shell on the host.
    #[must_use]
    pub fn netns_path(&self) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("/proc/{}/ns/net", self.holder.id()))
    }

    /// Whether the calling thread is already in the ground namespace.
    #[must_use]
    pub fn is_current(&self) -> bool {
        std::fs::metadata("/proc/thread-self/ns/net").is_ok_and(|m| m.ino() == self.ns_inode)
    }

    /// Drops the ground side's neighbour (ARP) entry for `ip`, if any: the address may have
    /// belonged to a process that is gone (after the round-robin wrapped).
    fn forget_neighbour(&self, ip: Ipv4Addr) {
        let _ = self.ip(&["neigh", "flush", "to", &ip.to_string()]);
    }

    /// Runs `ip ARGS` in the ground namespace.
    fn ip(&self, args: &[&str]) -> Result<()> {
        let out = self
            .command("ip")
            .args(args)
            .output()
            .map_err(|source| GroundError::Spawn {
                command: format!("ip {}", args.join(" ")),
                source,
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(GroundError::Prerequisite(format!(
                "ip {} (ground network): {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// A ground-side address (`10.250.0.2`-`10.250.0.254`) added to the bridge, for a listener
    /// of this process (or a process in the ground namespace) that nodes must reach (a mirror,
    /// a test hub); removed when the lease is dropped. Connections such processes open start
    /// from the bridge's own address.
    ///
    /// # Errors
    /// When all are taken or the address cannot be added.
    pub fn lease_host(&'static self) -> Result<AddrLease> {
        let mut lease = self.lease_station()?;
        let ip = lease.ip();
        self.ip(&["addr", "add", &format!("{ip}/{PREFIX}"), "dev", BRIDGE])?;
        lease.on_bridge = true;
        Ok(lease)
    }

    /// A ground-side address (`10.250.0.2`-`10.250.0.254`) for a process with a network
    /// namespace of its own on the bridge ([`Ground::spawn_station`]): a hub, whose own
    /// connections then come from this address, so a node can be cut off from it alone.
    ///
    /// # Errors
    /// When all are taken.
    pub fn lease_station(&'static self) -> Result<AddrLease> {
        let octet = {
            let mut hosts = self
                .hosts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let range: Vec<u32> = (2..=254).collect();
            let octet = next_free(&range, &self.host_cursor, |o| {
                hosts.contains(&u8::try_from(o).unwrap_or(0))
            })?;
            let octet = u8::try_from(octet).map_err(|_| GroundError::NoFreeAddress)?;
            hosts.insert(octet);
            octet
        };
        self.forget_neighbour(Ipv4Addr::new(10, 250, 0, octet));
        Ok(AddrLease {
            ip: Ipv4Addr::new(10, 250, 0, octet),
            ground: self,
            host_side: true,
            on_bridge: false,
        })
    }

    /// Spawns `command` (its program and arguments; its environment and stdio are kept) as a
    /// *station*: in a new network namespace whose `eth0` on the bridge has `ip` (a
    /// [`Ground::lease_station`] address), like a node but without the rest of a node. The
    /// child's PID is the program's own (`unshare` and `sh` exec it in place).
    ///
    /// # Errors
    /// When it cannot be spawned or plugged in.
    pub fn spawn_station(&self, command: &Command, ip: Ipv4Addr) -> Result<Child> {
        let mut station = Command::new("unshare");
        station
            .args(["--net", "--", "sh", "-c"])
            .arg(format!(
                "set -eu\n{}exec \"$0\" \"$@\"",
                node_link_script(ip)
            ))
            .arg(command.get_program())
            .args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(v) => station.env(key, v),
                None => station.env_remove(key),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            station.current_dir(dir);
        }
        station.stdout(Stdio::null());
        let child = station.spawn().map_err(|source| GroundError::Spawn {
            command: format!(
                "unshare --net ... {}",
                command.get_program().to_string_lossy()
            ),
            source,
        })?;
        Self::wait_own_netns(child.id(), Duration::from_secs(10))?;
        self.attach(child.id(), ip)?;
        Ok(child)
    }

    /// A node address: `want` if free (it must be in the node range), else the lowest free one.
    pub(super) fn lease_node(&'static self, want: Option<Ipv4Addr>) -> Result<AddrLease> {
        let first = u32::from(Ipv4Addr::new(10, 250, 1, 1));
        let last = u32::from(Ipv4Addr::new(10, 250, 255, 254));
        let mut nodes = self
            .nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ip = match want {
            Some(ip) => {
                let n = u32::from(ip);
                if !(first..=last).contains(&n) || ip.octets()[3] == 0 || ip.octets()[3] == 255 {
                    return Err(GroundError::InvalidSpec(format!(
                        "node address {ip} is outside the ground's node range \
                         10.250.1.1-10.250.255.254"
                    )));
                }
                if nodes.contains(&n) {
                    return Err(GroundError::AddressInUse(ip));
                }
                n
            }
            None => {
                let range: Vec<u32> = (first..=last)
                    .filter(|n| !matches!(n & 0xff, 0 | 255))
                    .collect();
                next_free(&range, &self.node_cursor, |n| nodes.contains(&n))?
            }
        };
        self.forget_neighbour(Ipv4Addr::from(ip));
        nodes.insert(ip);
        Ok(AddrLease {
            ip: Ipv4Addr::from(ip),
            ground: self,
            host_side: false,
            on_bridge: false,
        })
    }

    fn release(&self, ip: Ipv4Addr, host_side: bool) {
        if host_side {
            self.hosts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&ip.octets()[3]);
        } else {
            self.nodes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&u32::from(ip));
        }
    }

    /// Joins the network namespace of process `pid` (a node's `unshare`) to the bridge: a veth
    /// pair whose ground end is enslaved to the bridge and whose other end appears in the node
    /// as [`NODE_LINK`], down and without an address (the node's boot script configures it).
    pub(super) fn attach(&self, pid: u32, ip: Ipv4Addr) -> Result<String> {
        let veth = format!("rkn{}", self.veth_seq.fetch_add(1, Ordering::Relaxed));
        self.ip(&[
            "link",
            "add",
            &veth,
            "type",
            "veth",
            "peer",
            "name",
            NODE_LINK,
            "address",
            &link_mac(ip),
            "netns",
            &pid.to_string(),
        ])?;
        self.ip(&["link", "set", &veth, "master", BRIDGE, "up"])?;
        Ok(veth)
    }

    /// Waits until process `pid`, spawned by the calling thread, runs in a network namespace
    /// other than that thread's (`unshare --net` has made it), so [`Ground::attach`] reaches
    /// the right one. The thread's, not the process's: a thread that [`enter`]ed the ground
    /// spawns its children there, while `/proc/self` names the main thread.
    pub(super) fn wait_own_netns(pid: u32, timeout: Duration) -> Result<()> {
        let ours = std::fs::metadata("/proc/thread-self/ns/net")
            .map_err(super::error::io_err("stat", "/proc/thread-self/ns/net"))?
            .ino();
        let path = format!("/proc/{pid}/ns/net");
        let deadline = Instant::now() + timeout;
        loop {
            match std::fs::metadata(&path) {
                Ok(m) if m.ino() != ours => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(super::error::io_err("stat", &path)(e)),
            }
            if Instant::now() > deadline {
                return Err(GroundError::Timeout {
                    what: format!("process {pid} to get its own network namespace"),
                    timeout,
                    detail: String::new(),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// An address held in the ground; released (and for host addresses removed from the bridge)
/// when dropped.
#[derive(Debug)]
pub struct AddrLease {
    ip: Ipv4Addr,
    ground: &'static Ground,
    host_side: bool,
    /// Added to the bridge ([`Ground::lease_host`]); removed from it on drop.
    on_bridge: bool,
}

impl AddrLease {
    /// The address.
    #[must_use]
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
}

impl Drop for AddrLease {
    fn drop(&mut self) {
        if self.on_bridge {
            let _ = self.ground.ip(&[
                "addr",
                "del",
                &format!("{}/{PREFIX}", self.ip),
                "dev",
                BRIDGE,
            ]);
        }
        self.ground.release(self.ip, self.host_side);
    }
}

/// The MAC address of the link that carries `ip`, derived from it: a hub restarted on its
/// address (or a node that inherits one) answers with the MAC its peers have cached, so no
/// connection waits for a stale ARP entry to expire.
#[must_use]
pub fn link_mac(ip: Ipv4Addr) -> String {
    let [_, b, c, d] = ip.octets();
    format!("02:72:6b:{b:02x}:{c:02x}:{d:02x}")
}

/// The shell lines a node's boot script runs first, inside the node's new network namespace:
/// bring up `lo`, wait for the harness to plug in [`NODE_LINK`], give it `ip`.
#[must_use]
pub(super) fn node_link_script(ip: Ipv4Addr) -> String {
    format!(
        "ip link set lo up\n\
         i=0\n\
         until ip link show {NODE_LINK} >/dev/null 2>&1; do\n\
           i=$((i+1)); [ $i -le 1000 ] || {{ echo 'ground: {NODE_LINK} never appeared' >&2; exit 1; }}\n\
           sleep 0.01\n\
         done\n\
         ip addr add {ip}/{PREFIX} dev {NODE_LINK}\n\
         ip link set {NODE_LINK} up\n"
    )
}

/// Ways to cut a node off the network ([`super::Node::cut`]); every cut silently drops
/// packets in both directions, as a real partition does (peers see timeouts, not resets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// Everything through the node's link (its own loopback keeps working).
    All,
    /// Traffic to and from these addresses (the hub, the node's etcd peers).
    Hosts(Vec<Ipv4Addr>),
    /// Connections from these addresses to the node's TCP `port` (e.g. the hub to the
    /// apiserver on 6443), in both directions.
    Port {
        /// The peers cut off.
        from: Vec<Ipv4Addr>,
        /// The node's port.
        port: u16,
    },
}

/// The nftables table that holds a node's cuts, in the node's own namespace.
pub(super) const FAULT_TABLE: &str = "rke2ops_fault";

/// The nftables script that replaces the node's cuts with `cuts` (empty: heal). One
/// transaction: declaring the table first makes the delete safe when it does not exist yet.
#[must_use]
pub(super) fn nft_script(cuts: &[Cut]) -> String {
    let mut input = Vec::new();
    let mut output = Vec::new();
    let set = |hosts: &[Ipv4Addr]| {
        let list: Vec<String> = hosts.iter().map(ToString::to_string).collect();
        format!("{{ {} }}", list.join(", "))
    };
    for cut in cuts {
        match cut {
            Cut::All => {
                input.push(format!("iifname \"{NODE_LINK}\" drop"));
                output.push(format!("oifname \"{NODE_LINK}\" drop"));
            }
            Cut::Hosts(hosts) if !hosts.is_empty() => {
                input.push(format!("ip saddr {} drop", set(hosts)));
                output.push(format!("ip daddr {} drop", set(hosts)));
            }
            Cut::Port { from, port } if !from.is_empty() => {
                input.push(format!("ip saddr {} tcp dport {port} drop", set(from)));
                output.push(format!("ip daddr {} tcp sport {port} drop", set(from)));
            }
            Cut::Hosts(_) | Cut::Port { .. } => {}
        }
    }
    let mut s = format!("table inet {FAULT_TABLE}\ndelete table inet {FAULT_TABLE}\n");
    if !cuts.is_empty() {
        s.push_str(&format!("table inet {FAULT_TABLE} {{\n"));
        for (chain, hook, rules) in [("input", "input", &input), ("output", "output", &output)] {
            s.push_str(&format!(
                "  chain {chain} {{\n    type filter hook {hook} priority 0; policy accept;\n"
            ));
            for rule in rules {
                s.push_str(&format!("    {rule}\n"));
            }
            s.push_str("  }\n");
        }
        s.push_str("}\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_go_round_robin_skipping_taken_ones() {
        let cursor = AtomicU32::new(0);
        let range = [1, 2, 3];
        assert_eq!(next_free(&range, &cursor, |_| false).ok(), Some(1));
        assert_eq!(
            next_free(&range, &cursor, |_| false).ok(),
            Some(2),
            "not 1 again"
        );
        assert_eq!(
            next_free(&range, &cursor, |n| n == 3).ok(),
            Some(1),
            "wraps, skips"
        );
        assert!(next_free(&range, &cursor, |_| true).is_err());
        assert!(next_free(&[], &cursor, |_| false).is_err());
    }

    #[test]
    fn link_macs_follow_addresses_and_differ_from_the_bridge() {
        assert_eq!(link_mac(Ipv4Addr::new(10, 250, 1, 7)), "02:72:6b:fa:01:07");
        assert_eq!(link_mac(Ipv4Addr::new(10, 250, 0, 2)), "02:72:6b:fa:00:02");
        assert_ne!(link_mac(Ipv4Addr::new(10, 250, 0, 1)), BRIDGE_MAC);
    }

    #[test]
    fn healing_only_deletes_the_table() {
        let s = nft_script(&[]);
        assert_eq!(
            s,
            "table inet rke2ops_fault\ndelete table inet rke2ops_fault\n"
        );
    }

    #[test]
    fn cuts_drop_both_directions() {
        let s = nft_script(&[
            Cut::Hosts(vec![Ipv4Addr::new(10, 250, 0, 2)]),
            Cut::Port {
                from: vec![Ipv4Addr::new(10, 250, 0, 3)],
                port: 6443,
            },
        ]);
        assert!(s.contains("ip saddr { 10.250.0.2 } drop"), "{s}");
        assert!(s.contains("ip daddr { 10.250.0.2 } drop"), "{s}");
        assert!(
            s.contains("ip saddr { 10.250.0.3 } tcp dport 6443 drop"),
            "{s}"
        );
        assert!(
            s.contains("ip daddr { 10.250.0.3 } tcp sport 6443 drop"),
            "{s}"
        );
    }

    #[test]
    fn a_cut_of_nobody_adds_no_rule() {
        let s = nft_script(&[Cut::Hosts(Vec::new())]);
        assert!(!s.contains("drop"), "{s}");
    }

    #[test]
    fn the_node_script_waits_for_its_link_then_addresses_it() {
        let s = node_link_script(Ipv4Addr::new(10, 250, 1, 7));
        let wait = s.find("until ip link show eth0").expect("waits");
        let addr = s
            .find("ip addr add 10.250.1.7/16 dev eth0")
            .expect("addresses");
        assert!(wait < addr);
    }
}
