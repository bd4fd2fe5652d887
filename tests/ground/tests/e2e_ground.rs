//! Self-tests of the proving ground against stand-in services (they need root, like every user
//! of the harness, and panic when they cannot run).

use std::path::Path;
use std::time::{Duration, Instant};

use rke2ops_ground::*;

/// A `Type=notify` service with default dependencies, standing in for a real daemon: it reports
/// ready and keeps the watchdog fed from its main process.
const STUB_UNIT: &str = "\
[Unit]
Description=notify stand-in
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=all
WatchdogSec=2s
Restart=on-failure
RestartSec=1s
ExecStart=/bin/sh -c 'echo stub starting; systemd-notify --ready --status=serving; \\
  while :; do systemd-notify WATCHDOG=1; sleep 0.5; done'
ProtectSystem=strict
PrivateTmp=yes
StateDirectory=rke2-ops

[Install]
WantedBy=multi-user.target
";

#[test]
fn two_nodes_boot_side_by_side_with_private_paths() {
    require_root_and_tools();
    let started = Instant::now();
    let a = Node::boot(NodeSpec::new("ground-a")).expect("boot a");
    let b = Node::boot(NodeSpec::new("ground-b")).expect("boot b");
    eprintln!("two boots took {:?}", started.elapsed());
    assert_ne!(a.ip(), b.ip());

    // Own hostname (UTS namespace) and machine id.
    assert_eq!(
        a.exec_ok(&["hostname"]).expect("hostname").trim(),
        "ground-a"
    );
    assert_eq!(
        b.exec_ok(&["hostname"]).expect("hostname").trim(),
        "ground-b"
    );
    assert_ne!(
        a.read_file("/etc/machine-id").expect("machine-id"),
        b.read_file("/etc/machine-id").expect("machine-id")
    );

    // Each node's /run holds its own bus and systemd sockets.
    for node in [&a, &b] {
        node.exec_ok(&["test", "-S", "/run/dbus/system_bus_socket"])
            .expect("system bus socket");
        node.exec_ok(&["test", "-S", "/run/systemd/private"])
            .expect("systemd socket");
        let names = node
            .exec_ok(&["busctl", "--system", "--no-pager", "list", "--acquired"])
            .expect("busctl list");
        assert!(names.contains("org.freedesktop.systemd1"), "{names}");
    }

    // Private folders: a file written on one node is not on the other, nor on the host.
    a.write_file("/etc/rancher/rke2/config.yaml", "node-ip: x\n")
        .expect("write");
    a.exec_ok(&["test", "-f", "/etc/rancher/rke2/config.yaml"])
        .expect("visible on a");
    assert!(
        !b.exec(&["test", "-e", "/etc/rancher/rke2"])
            .expect("exec")
            .success()
    );
    assert!(
        !Path::new("/etc/rancher/rke2").exists(),
        "leaked to the host"
    );
    let tmp = a
        .sh("echo hi > /tmp/ground-probe; cat /tmp/ground-probe")
        .expect("tmp");
    assert_eq!(tmp.trim(), "hi");
    assert!(
        !Path::new("/tmp/ground-probe").exists(),
        "node /tmp leaked to the host"
    );
    assert!(
        a.host_path("/etc/passwd").is_err(),
        "shared path must be refused"
    );

    // Stopping a unit on one node leaves the same unit on the other running.
    for node in [&a, &b] {
        node.install_unit("stub.service", STUB_UNIT)
            .expect("install");
        node.systemctl(&["enable", "--now", "stub.service"])
            .expect("start");
        node.wait_for_unit_state("stub.service", "active", Duration::from_secs(10))
            .expect("active");
    }
    // Each node's units live in the node's own cgroup subtree.
    let cgroup_a = a
        .unit_property("stub.service", "ControlGroup")
        .expect("cgroup");
    let cgroup_b = b
        .unit_property("stub.service", "ControlGroup")
        .expect("cgroup");
    assert!(
        cgroup_a.starts_with("/rke2ops-ground/ground-a-"),
        "{cgroup_a}"
    );
    assert!(
        cgroup_b.starts_with("/rke2ops-ground/ground-b-"),
        "{cgroup_b}"
    );
    assert!(
        cgroup_b.ends_with("/system.slice/stub.service"),
        "{cgroup_b}"
    );
    a.systemctl(&["stop", "stub.service"]).expect("stop");
    assert_eq!(
        a.unit_property("stub.service", "ActiveState")
            .expect("prop"),
        "inactive"
    );
    assert_eq!(
        b.unit_property("stub.service", "ActiveState")
            .expect("prop"),
        "active"
    );

    // journalctl -u works and shows the unit's output.
    let journal = b.journal("stub.service", 20).expect("journal");
    assert!(journal.contains("stub starting"), "{journal}");

    // Teardown leaves nothing behind.
    let (init_a, root_a) = (a.init_pid(), a.root().to_path_buf());
    a.shutdown().expect("clean teardown");
    assert!(
        !Path::new(&format!("/proc/{init_a}")).exists(),
        "init of a still alive"
    );
    assert!(!root_a.exists(), "root of a not removed");
    let left = std::fs::read_dir("/sys/fs/cgroup/unified/rke2ops-ground")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("ground-a-"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(left, 0, "cgroup of a left behind");
    assert_eq!(
        b.unit_property("stub.service", "ActiveState")
            .expect("prop"),
        "active",
        "b survives a's teardown"
    );
}

#[test]
fn watchdog_kills_a_stopped_stub_and_restart_brings_it_back() {
    require_root_and_tools();
    let node = Node::boot(NodeSpec::new("ground-wd")).expect("boot");
    node.install_unit("stub.service", STUB_UNIT)
        .expect("install");
    node.systemctl(&["start", "stub.service"]).expect("start");
    assert_eq!(
        node.unit_property("stub.service", "StatusText")
            .expect("status"),
        "serving"
    );
    let pid = node
        .pid_of_main("stub.service")
        .expect("pid")
        .expect("has a main pid");
    assert!(
        node.host_pid(pid).is_some(),
        "node pid {pid} maps to a host pid"
    );

    node.kill(pid, "STOP").expect("SIGSTOP");
    node.wait_for_unit(
        "stub.service",
        "restarted by the watchdog",
        Duration::from_secs(15),
        |p| {
            p.get("NRestarts").is_some_and(|n| n == "1")
                && p.get("ActiveState").is_some_and(|s| s == "active")
        },
    )
    .expect("restart");
    let new_pid = node
        .pid_of_main("stub.service")
        .expect("pid")
        .expect("main pid");
    assert_ne!(new_pid, pid);
    let journal = node.journal("stub.service", 50).expect("journal");
    assert!(
        journal.contains("Failed with result 'watchdog'"),
        "{journal}"
    );
}

#[test]
fn boot_rejects_bad_names_and_taken_addresses() {
    require_root_and_tools();
    assert!(matches!(
        Node::boot(NodeSpec::new("Bad_Name")),
        Err(GroundError::InvalidSpec(_))
    ));
    let first = Node::boot(NodeSpec::new("ground-first")).expect("boot");
    let err = Node::boot(NodeSpec::new("ground-dup").with_ip(first.ip())).expect_err("taken");
    assert!(
        matches!(err, GroundError::AddressInUse(ip) if ip == first.ip()),
        "{err}"
    );
    let outside = std::net::Ipv4Addr::new(127, 0, 10, 1);
    let err = Node::boot(NodeSpec::new("ground-out").with_ip(outside)).expect_err("outside");
    assert!(matches!(err, GroundError::InvalidSpec(_)), "{err}");
}

/// `curl`'s exit code and stderr for `url` from inside `node` (`-m 3`).
fn curl_from(node: &Node, url: &str) -> (i32, String) {
    let out = node
        .exec(&["curl", "-sS", "-o", "/dev/null", "-m", "3", url])
        .expect("curl runs");
    (out.status.code().unwrap_or(-1), out.stderr)
}

#[test]
fn nodes_meet_on_the_bridge_and_nothing_leaves_the_ground() {
    require_root_and_tools();
    let a = Node::boot(NodeSpec::new("net-a")).expect("boot a");
    let b = Node::boot(NodeSpec::new("net-b")).expect("boot b");
    a.exec_ok(&[
        "systemd-run",
        "--unit=web",
        "/usr/bin/python3",
        "-m",
        "http.server",
        "--bind",
        "0.0.0.0",
        "8080",
    ])
    .expect("web server on a");
    let url = format!("http://{}:8080/", a.ip());
    wait_until("b to reach a's web server", Duration::from_secs(20), || {
        Ok(curl_from(&b, &url).0 == 0)
    })
    .expect("bridge works");

    // b's loopback is b's own: a's server is not on it.
    assert_eq!(curl_from(&b, "http://127.0.0.1:8080/").0, 7, "refused");
    assert_eq!(
        curl_from(&a, "http://127.0.0.1:8080/").0,
        0,
        "a's own loopback"
    );
    // Nothing outside the ground has a route, from a node or from the ground side.
    let (code, err) = curl_from(&b, "http://192.0.2.1/");
    assert_eq!(code, 7, "{err}");
    let from_ground = |url: &str| {
        ground()
            .expect("ground")
            .command("curl")
            .args(["-sS", "-o", "/dev/null", "-m", "3", url])
            .output()
            .expect("curl runs")
            .status
            .code()
    };
    assert_eq!(from_ground("http://192.0.2.1/"), Some(7));
    assert_eq!(from_ground(&url), Some(0), "the ground side reaches nodes");

    // Cuts drop packets (timeouts, exit 28), heal restores.
    a.cut(Cut::All).expect("cut all");
    assert_eq!(curl_from(&b, &url).0, 28, "cut off");
    assert_eq!(
        curl_from(&a, "http://127.0.0.1:8080/").0,
        0,
        "loopback unaffected"
    );
    a.heal().expect("heal");
    assert_eq!(curl_from(&b, &url).0, 0, "healed");
    a.cut(Cut::Port {
        from: vec![b.ip()],
        port: 8080,
    })
    .expect("cut one port from b");
    assert_eq!(curl_from(&b, &url).0, 28, "b is cut off from the port");
    assert_eq!(from_ground(&url), Some(0), "others still reach it");
    a.heal().expect("heal");
    a.cut(Cut::Hosts(vec![b.ip()])).expect("cut b");
    assert_eq!(curl_from(&b, &url).0, 28, "b is cut off");
    assert_eq!(
        curl_from(&a, &format!("http://{}:1/", b.ip())).0,
        28,
        "both ways"
    );
    assert_eq!(from_ground(&url), Some(0), "others still reach it");
}

#[test]
fn overlay_dir_keeps_node_writes_private_and_goes_away_with_the_node() {
    require_root_and_tools();
    let node = Node::boot(NodeSpec::new("ground-ovl").with_overlay_dir("/usr/share"))
        .expect("boot with an overlay");
    let root = node.root().to_path_buf();
    // The host's files are visible, the node's writes stay on the node.
    node.sh("test -d /usr/share/doc && mkdir -p /usr/share/ground-ovl && echo node > /usr/share/ground-ovl/f")
        .expect("write through the overlay");
    assert!(
        !Path::new("/usr/share/ground-ovl").exists(),
        "leaked to the host"
    );
    let host = node
        .host_path("/usr/share/ground-ovl/f")
        .expect("host path");
    assert_eq!(
        std::fs::read_to_string(&host).expect("merged view"),
        "node\n"
    );
    assert!(
        root.join("overlay/usr/share/upper/ground-ovl/f").is_file(),
        "the upper layer holds the file"
    );
    // A write through host_path lands in the node as well.
    std::fs::write(
        node.host_path("/usr/share/ground-ovl/g").expect("path"),
        "host\n",
    )
    .expect("write via host_path");
    assert_eq!(
        node.sh("cat /usr/share/ground-ovl/g").expect("cat"),
        "host\n"
    );
    // Overlays inside private folders are refused.
    assert!(Node::boot(NodeSpec::new("ground-bad").with_overlay_dir("/usr/local/bin")).is_err());
    node.shutdown().expect("clean teardown");
    assert!(!root.exists(), "the node's files are removed");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains("ground-overlay"), "{mounts}");
}
