//! The real agent under a real systemd, with the shipped unit file unchanged.
//!
//! Each test boots a proving-ground node (`rke2ops_tests::ground`), writes a simulated RKE2
//! server data dir into it (`rke2ops_tests::sim::tree`), installs the built
//! `rke2-node-agent` as `/usr/local/bin/rke2-node-agent` and `systemd/rke2-node-agent.service`
//! byte for byte, plus one drop-in that only shortens `WatchdogSec=` and `RestartSec=` so the
//! tests take seconds. The hardening is never relaxed: the first test checks that the merged
//! unit, as the node's systemd sees it, still scores within the shipped limit.
//!
//! Needs root (it boots systemd in namespaces) and `cargo build --workspace --bins` first.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use rke2ops_tests::ground::{Node, NodeSpec, built_binary, require_root_and_tools};
use rke2ops_tests::sim::tree::{self, ClusterCas, Role, TreeSpec};
use time::OffsetDateTime;

const UNIT: &str = "rke2-node-agent.service";
const AGENT_BIN: &str = "/usr/local/bin/rke2-node-agent";
const METRICS_PORT: u16 = 9810;

/// Test timing only; every other directive comes from the shipped file.
const TIMING_DROPIN: &str = "\
[Service]
# proving ground: a 4 s watchdog and 1 s restart delay keep the tests short
WatchdogSec=4s
RestartSec=1s
";

/// A booted node with a server data dir, the agent binary, its config and the shipped unit
/// (installed and enabled, not started).
fn node_with_agent(name: &str) -> Node {
    require_root_and_tools();
    let agent = built_binary("rke2-node-agent");
    let started = Instant::now();
    let node = Node::boot(NodeSpec::new(name)).expect("boot node");
    let booted = started.elapsed();

    let now = OffsetDateTime::now_utc();
    let cas = ClusterCas::generate(now - time::Duration::days(30)).expect("cluster CAs");
    let mut spec = TreeSpec::new(
        Role::Server,
        name,
        IpAddr::V4(node.ip()),
        node.host_path("/var/lib/rancher/rke2").expect("data dir"),
        now,
    )
    .with_config_dir(node.host_path("/etc/rancher/rke2").expect("config dir"));
    spec.node_data_dir = Some("/var/lib/rancher/rke2".into());
    let generated = tree::generate(&spec, &cas).expect("generate data dir");
    assert!(
        generated.leaves().count() > 10,
        "a server tree has many leaves"
    );

    node.write_file(
        "/etc/rke2-ops/node-agent.toml",
        // The production defaults (metrics on 0.0.0.0:9810).
        "",
    )
    .expect("agent config");
    node.install_binary(&agent, AGENT_BIN)
        .expect("install agent");
    node.install_shipped_unit(UNIT)
        .expect("the node runs the shipped unit unchanged");
    node.install_dropin(UNIT, "proving-ground-timing", TIMING_DROPIN)
        .expect("drop-in");
    node.systemctl(&["enable", UNIT]).expect("enable");
    eprintln!(
        "{name}: boot {booted:?}, node ready with agent after {:?}",
        started.elapsed()
    );
    node
}

fn metrics_url(node: &Node) -> String {
    format!("http://{}:{METRICS_PORT}/metrics", node.ip())
}

#[test]
fn agent_starts_through_notify_serves_metrics_and_stops_cleanly_on_sigterm() {
    let test_start = Instant::now();
    let node = node_with_agent("agent-notify");
    assert_eq!(
        node.systemctl(&["is-enabled", UNIT])
            .expect("is-enabled")
            .trim(),
        "enabled"
    );

    // `systemctl start` of a Type=notify unit returns only once READY=1 arrived.
    let start = Instant::now();
    node.systemctl(&["start", UNIT]).expect("start agent");
    eprintln!("start (until READY=1) took {:?}", start.elapsed());
    let props = node
        .unit_properties(
            UNIT,
            &[
                "Type",
                "NotifyAccess",
                "ActiveState",
                "SubState",
                "StatusText",
                "WatchdogUSec",
            ],
        )
        .expect("properties");
    assert_eq!(props["Type"], "notify");
    assert_eq!(props["NotifyAccess"], "main");
    assert_eq!(props["ActiveState"], "active", "{props:?}");
    assert_eq!(props["SubState"], "running", "{props:?}");
    assert!(
        !props["StatusText"].trim().is_empty(),
        "STATUS= was never sent: {props:?}"
    );
    assert_eq!(props["WatchdogUSec"], "4s", "the timing drop-in applies");
    eprintln!("StatusText: {}", props["StatusText"]);

    // The drop-in must not have weakened the sandbox: score the merged unit as the node's
    // systemd loaded it.
    let security = node
        .exec_ok(&["systemd-analyze", "security", "--no-pager", UNIT])
        .expect("systemd-analyze security");
    let overall = security
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .expect("an overall score");
    let score: f64 = overall
        .rsplit_once(": ")
        .and_then(|(_, s)| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .expect("a numeric score");
    assert!(score <= 3.0, "loaded unit exposure {score}:\n{security}");

    // The metrics endpoint answers on the node's address, from inside the node.
    let body = node
        .exec_ok(&[
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "5",
            &metrics_url(&node),
        ])
        .expect("curl /metrics");
    assert!(
        body.contains("rke2ops_cert_not_after_timestamp_seconds"),
        "{body}"
    );
    assert!(body.contains("rke2ops_build_info"), "{body}");

    // SIGTERM (systemctl stop) ends it cleanly, well inside TimeoutStopSec.
    let stop = Instant::now();
    node.systemctl(&["stop", UNIT]).expect("stop agent");
    let stop_took = stop.elapsed();
    let props = node
        .unit_properties(
            UNIT,
            &["ActiveState", "Result", "ExecMainCode", "ExecMainStatus"],
        )
        .expect("properties");
    assert_eq!(props["ActiveState"], "inactive", "{props:?}");
    assert_eq!(props["Result"], "success", "{props:?}");
    assert_eq!(
        props["ExecMainCode"], "1",
        "exited (CLD_EXITED), not killed: {props:?}"
    );
    assert_eq!(props["ExecMainStatus"], "0", "{props:?}");
    assert!(
        stop_took < Duration::from_secs(10),
        "stop took {stop_took:?}"
    );
    let journal = node.journal(UNIT, 200).expect("journal");
    assert!(
        journal.contains("SIGTERM"),
        "the agent logs the signal:\n{journal}"
    );
    eprintln!("journal of {UNIT}:\n{journal}");
    eprintln!(
        "stop took {stop_took:?}; whole test {:?}",
        test_start.elapsed()
    );
}

#[test]
fn watchdog_kills_a_hung_agent_and_systemd_restarts_it() {
    let test_start = Instant::now();
    let node = node_with_agent("agent-watchdog");
    node.systemctl(&["start", UNIT]).expect("start agent");
    let first_pid = node
        .pid_of_main(UNIT)
        .expect("MainPID")
        .expect("running agent");
    assert_eq!(
        node.unit_property_u64(UNIT, "NRestarts")
            .expect("NRestarts"),
        0
    );

    // A real hang: the process stops, so its WATCHDOG=1 pings stop.
    let hung_at = Instant::now();
    node.kill(first_pid, "STOP").expect("SIGSTOP the agent");

    // systemd notices within WatchdogSec, kills it (Result=watchdog) and, after RestartSec,
    // starts a new one through Type=notify again.
    let mut saw_watchdog_result = false;
    node.wait_for_unit(
        UNIT,
        "a restart after the watchdog fired",
        Duration::from_secs(30),
        |p| {
            saw_watchdog_result |= p.get("Result").is_some_and(|r| r == "watchdog");
            p.get("NRestarts").is_some_and(|n| n == "1")
                && p.get("ActiveState").is_some_and(|s| s == "active")
                && p.get("SubState").is_some_and(|s| s == "running")
        },
    )
    .expect("restarted agent");
    eprintln!("hang to running again: {:?}", hung_at.elapsed());

    let second_pid = node
        .pid_of_main(UNIT)
        .expect("MainPID")
        .expect("running agent");
    assert_ne!(second_pid, first_pid, "a new process");
    let journal = node.journal(UNIT, 200).expect("journal");
    assert!(journal.contains("Watchdog timeout"), "{journal}");
    assert!(
        journal.contains("Failed with result 'watchdog'"),
        "{journal}"
    );
    assert!(
        saw_watchdog_result || journal.contains("Scheduled restart job"),
        "{journal}"
    );
    assert_eq!(
        node.unit_property(UNIT, "Result").expect("Result"),
        "success"
    );

    // The restarted agent serves again.
    let body = node
        .exec_ok(&[
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "5",
            &metrics_url(&node),
        ])
        .expect("curl /metrics after restart");
    assert!(body.contains("rke2ops_"), "{body}");
    eprintln!(
        "saw Result=watchdog while waiting: {saw_watchdog_result}; whole test {:?}",
        test_start.elapsed()
    );
}

/// Runs as `ExecStart=` of a copy of the shipped unit whose sandbox lines are untouched (only
/// the process-management lines are swapped for a oneshot): every line must succeed, so the
/// hardening leaves the agent what rotations and upgrades need, and refuses the rest.
const SANDBOX_PROBE: &str = r#"set -u
must() { if sh -c "$1" >/dev/null 2>&1; then echo "allowed: $1"; else echo "DENIED: $1"; exit 1; fi; }
must_fail() { if sh -c "$1" >/dev/null 2>&1; then echo "NOT REFUSED: $1"; exit 1; else echo "refused: $1"; fi; }
tls=/var/lib/rancher/rke2/server/tls

# Reads private keys.
must "cat $tls/serving-kube-apiserver.key"
# `rke2 certificate rotate` backs up and deletes certificates under the data dir.
must "cp -a $tls $tls-probe-backup && rm $tls/serving-kube-apiserver.crt && rm -r $tls-probe-backup"
# Kubeconfig refresh.
must "echo probe > /etc/rancher/rke2/probe.yaml && rm /etc/rancher/rke2/probe.yaml"
# Journal and identity: private state dir, private files by default.
must "echo probe > /var/lib/rke2-ops/probe"
must "test \"\$(stat -c %a /var/lib/rke2-ops)\" = 700"
must "test \"\$(umask)\" = 0077"
# Upgrades: write beside the target, rename over it.
for d in /usr/local/bin /usr/local/lib/systemd/system /usr/local/share/rke2 \
         /opt/rke2/bin /opt/rke2/lib/systemd/system /opt/rke2/share/rke2 /etc/systemd/system; do
  must "echo probe > $d/.probe.tmp && mv $d/.probe.tmp $d/probe && rm $d/probe"
done
# Which binary the RKE2 unit runs: root processes' command lines are readable.
must "tr '\\0' ' ' < /proc/1/cmdline | grep -q ."
# Drives systemd over the system bus (as root, without CAP_SYS_ADMIN).
must "busctl --system call org.freedesktop.systemd1 /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager StartUnit ss probe-target.service replace"

# Everything else stays read-only or hidden.
must_fail "touch /etc/probe"
must_fail "touch /usr/bin/probe"
must_fail "touch /usr/local/probe"
must_fail "touch /var/lib/rancher/probe"
must_fail "touch /etc/rancher/probe"
must_fail "test -n \"\$(ls -A /root)\""
must_fail "test -e /dev/vda"
must_fail "echo 1 > /proc/sys/kernel/sysrq"
must_fail "chroot / true"
must_fail "mount -t tmpfs none /mnt"
echo probe done
"#;

#[test]
fn shipped_sandbox_allows_what_the_agent_needs_and_refuses_the_rest() {
    let node = node_with_agent("agent-sandbox");
    // The tarball layout an upgrade writes into.
    node.write_file("/usr/local/share/rke2/LICENSE.txt", "probe\n")
        .expect("share/rke2");
    // And install.sh's other prefix, /opt/rke2.
    for dir in ["bin", "lib/systemd/system", "share/rke2"] {
        node.write_file(format!("/opt/rke2/{dir}/.keep"), "")
            .expect("/opt/rke2");
    }
    node.write_file("/usr/local/libexec/sandbox-probe.sh", SANDBOX_PROBE)
        .expect("probe");
    node.install_unit(
        "probe-target.service",
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n",
    )
    .expect("probe target");

    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../systemd")
            .join(UNIT),
    )
    .expect("read shipped unit");
    let process_lines = [
        "Type=",
        "NotifyAccess=",
        "WatchdogSec=",
        "Restart=",
        "RestartSec=",
    ];
    let probe_unit: String = shipped
        .lines()
        .filter(|l| !process_lines.iter().any(|p| l.starts_with(p)))
        .map(|l| {
            if l.starts_with("ExecStart=") {
                "Type=oneshot\nExecStart=/bin/sh /usr/local/libexec/sandbox-probe.sh".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    node.install_unit("sandbox-probe.service", &probe_unit)
        .expect("probe unit");

    let outcome = node.systemctl(&["start", "sandbox-probe.service"]);
    let journal = node.journal("sandbox-probe.service", 100).expect("journal");
    outcome.unwrap_or_else(|e| panic!("sandbox probe failed: {e}\n{journal}"));
    assert!(journal.contains("probe done"), "{journal}");
    assert_eq!(
        node.unit_property("probe-target.service", "ActiveState")
            .expect("state"),
        "active",
        "the D-Bus StartUnit call took effect"
    );
}
