//! `rke2-hub doctor` against a real hub process without a kubeconfig and a fake fleet
//! (`rke2ops_tests::fleet`) reporting node versions: the Kubernetes checks are skipped with one
//! info finding, the inventory's version skew is found, `--node` filters (an unknown node is
//! exit 64 naming it), and the exit code follows the worst finding; the agents' own findings
//! and clocks reach the fleet doctor, `nodes`, `certs` and the metrics; a plan's node is held
//! by a blocker that appears mid-plan; no hub is exit 69. No root needed.

use std::time::Duration;

use rke2ops_common::doctor::{Code, Finding, Severity};
use rke2ops_tests::fleet::{FakeFleet, FleetSpec};
use rke2ops_tests::hub::HubProcess;
use serde_json::Value;

fn spec(servers: usize, agents: usize, version: &str) -> FleetSpec {
    FleetSpec {
        servers,
        agents,
        version: version.to_owned(),
        op_time: Duration::from_millis(100),
        heartbeat: Duration::from_millis(300),
        renewal_deadline_in: None,
    }
}

/// `doctor ARGS`: its exit code, stdout and stderr.
fn doctor(hub: &HubProcess, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["doctor"];
    all.extend(args);
    let out = tokio::task::block_in_place(|| hub.run(&all));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits until the hub lists `n` nodes online with a version (a second `FakeFleet` returns as
/// soon as the first fleet's nodes are online).
async fn wait_online(hub: &HubProcess, n: usize) {
    let started = std::time::Instant::now();
    loop {
        let nodes = tokio::task::block_in_place(|| hub.json(&["nodes"]));
        let online = nodes["nodes"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|n| n["online"] == true).count());
        if online >= n {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{n} nodes not online: {nodes:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One `codes` row: (code, severity, node).
fn row(code: &str, severity: &str, node: &str) -> (String, String, String) {
    (code.to_owned(), severity.to_owned(), node.to_owned())
}

fn codes(report: &Value) -> Vec<(String, String, String)> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["code"].as_str().unwrap_or_default().to_owned(),
                f["severity"].as_str().unwrap_or_default().to_owned(),
                f["node"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn doctor_without_kubeconfig_reports_skipped_kube_checks_and_version_skew() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = tokio::task::block_in_place(|| HubProcess::start(dir.path(), "127.0.70.1"));
    let addr = hub.addr.parse().expect("addr");
    // A server on v1.33 and, enrolled separately, a worker already on v1.34: newer than
    // every apiserver.
    let _servers = FakeFleet::start(addr, &hub.socket(), &spec(1, 0, "v1.33.5+rke2r1")).await;

    let (code, out, err) = doctor(&hub, &["--output", "json"]);
    assert_eq!(code, 0, "only info on a one-version fleet: {out}{err}");
    let report: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        codes(&report),
        [
            row("kube-checks-skipped", "info", ""),
            row("etcd-quorum-at-risk", "info", "server-1")
        ],
        "one server: its etcd cannot lose a member (info)"
    );
    assert_eq!(report["exit_code"], 0);

    let _workers = FakeFleet::start(addr, &hub.socket(), &spec(0, 1, "v1.34.1+rke2r1")).await;
    wait_online(&hub, 2).await;
    let (code, out, _) = doctor(&hub, &["--output", "json"]);
    assert_eq!(code, 2, "{out}");
    let report: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        codes(&report),
        [
            row("version-skew", "blocker", "agent-1"),
            row("kube-checks-skipped", "info", ""),
            row("etcd-quorum-at-risk", "info", "server-1"),
        ]
    );

    // With an upgrade's target, the nodes already there are noted.
    let (code, out, _) = doctor(&hub, &["--target", "v1.34.1+rke2r1", "--output", "json"]);
    assert_eq!(code, 2, "{out}");
    let report: Value = serde_json::from_str(&out).expect("json");
    assert!(
        codes(&report).contains(&row("version-skew", "info", "agent-1")),
        "{report:#}"
    );
    let (code, _, err) = doctor(&hub, &["--target", "one-point-three"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("one-point-three"), "{err}");

    let (code, table, _) = doctor(&hub, &[]);
    assert_eq!(code, 2);
    assert!(
        table.contains("BLOCKER    version-skew          agent-1    agent agent-1"),
        "{table}"
    );
    assert!(table.contains("fix 1: upgrade every server"), "{table}");

    let (code, out, _) = doctor(&hub, &["--node", "server-1", "--output", "json"]);
    assert_eq!(code, 0, "the skew is about agent-1 only: {out}");

    let (code, _, err) = doctor(&hub, &["--node", "nope"]);
    assert_eq!(code, 64);
    assert!(err.contains("unknown node \"nope\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plan_is_refused_by_a_preflight_blocker_unless_its_code_is_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = tokio::task::block_in_place(|| HubProcess::start(dir.path(), "127.0.70.2"));
    let addr = hub.addr.parse().expect("addr");
    let _servers = FakeFleet::start(addr, &hub.socket(), &spec(1, 0, "v1.33.5+rke2r1")).await;
    let _workers = FakeFleet::start(addr, &hub.socket(), &spec(0, 1, "v1.34.1+rke2r1")).await;
    wait_online(&hub, 2).await;
    let run = |args: &[&str]| tokio::task::block_in_place(|| hub.run(args));

    let refused = run(&["restart"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("version-skew agent agent-1 on agent-1")
            && err.contains("--accept version-skew"),
        "{err}"
    );
    assert!(
        tokio::task::block_in_place(|| hub.json(&["plans"]))["plans"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "nothing was created"
    );

    let preview = run(&["restart", "--dry-run", "--output", "json"]);
    assert!(preview.status.success());
    let preview = String::from_utf8_lossy(&preview.stdout);
    assert!(
        preview.contains("preflight blocker (refuses the plan unless accepted): version-skew"),
        "{preview}"
    );

    let bad = run(&["restart", "--accept", "no-such-code"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no-such-code"));

    let view = tokio::task::block_in_place(|| hub.json(&["restart", "--accept", "version-skew"]));
    let id = view["id"].as_str().expect("id").to_owned();
    let shown = tokio::task::block_in_place(|| hub.json(&["plan", "show", &id])).to_string();
    assert!(
        shown.contains("preflight blocker accepted by uid:"),
        "the acceptance is in the plan's events: {shown}"
    );
}

/// Polls `hub`'s doctor (JSON) until `done` holds; the report. Fails after 20 s.
async fn doctor_until(hub: &HubProcess, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = std::time::Instant::now();
    loop {
        let (_, out, err) = doctor(hub, &["--output", "json"]);
        let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {err}"));
        if done(&report) {
            return report;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what}: the doctor's last report: {report:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn has(report: &Value, code: &str, severity: &str, node: &str) -> bool {
    codes(report)
        .iter()
        .any(|(c, s, n)| c == code && s == severity && n == node)
}

fn pem_blocker(node: &str) -> Finding {
    Finding::new(
        Code::PemEmptyOrCorrupt,
        Severity::Blocker,
        "whatever-the-agent-calls-itself",
        "agent/client-kubelet.crt",
        "systemctl stop rke2-agent && cp ... && systemctl start rke2-agent",
    )
    .with("reason", "no PEM data")
    .with("node_said", node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_findings_and_clocks_reach_the_fleet_doctor_nodes_and_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = tokio::task::block_in_place(|| HubProcess::start(dir.path(), "127.0.70.3"));
    let addr = hub.addr.parse().expect("addr");
    let fleet = FakeFleet::start(addr, &hub.socket(), &spec(3, 1, "v1.34.1+rke2r1")).await;
    wait_online(&hub, 4).await;

    // A healthy 3 + 1 fleet: nothing but the skipped Kubernetes checks.
    let report = doctor_until(&hub, "a clean fleet", |r| codes(r).len() == 1).await;
    assert!(
        has(&report, "kube-checks-skipped", "info", ""),
        "{report:#}"
    );

    // agent-1's own doctor finds an emptied PEM file; server-2's clock runs 10 min ahead and
    // server-3's 45 s behind.
    fleet.set_findings("agent-1", &[pem_blocker("agent-1")]);
    fleet.set_clock("server-2", Duration::from_secs(600), false);
    fleet.set_clock("server-3", Duration::from_secs(45), true);
    // `nodes` shows it without anyone running the doctor: a changed report refreshes the
    // fleet doctor's last run within seconds.
    let started = std::time::Instant::now();
    loop {
        let nodes = tokio::task::block_in_place(|| hub.json(&["nodes"]));
        let worst = nodes["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["name"] == "agent-1"))
            .map(|n| n["worst_finding"].clone());
        if worst.as_ref().and_then(Value::as_str) == Some("blocker pem-empty-or-corrupt") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{nodes:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let report = doctor_until(&hub, "the agent's finding and both clocks", |r| {
        has(r, "pem-empty-or-corrupt", "blocker", "agent-1")
            && has(r, "clock-skew", "blocker", "server-2")
            && has(r, "clock-skew", "warning", "server-3")
    })
    .await;
    // The hub names the node by its certificate, never by what the agent says.
    let pem = report["findings"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["code"] == "pem-empty-or-corrupt"))
        .expect("pem finding");
    assert_eq!(pem["node"], "agent-1", "{pem:#}");
    assert_eq!(pem["object"], "agent/client-kubelet.crt");
    let skew = report["findings"]
        .as_array()
        .and_then(|f| {
            f.iter()
                .find(|f| f["code"] == "clock-skew" && f["node"] == "server-3")
        })
        .expect("server-3's skew")
        .to_string();
    assert!(skew.contains("(behind the hub)"), "{skew}");
    let (code, _, _) = doctor(&hub, &[]);
    assert_eq!(code, 2, "blockers");
    let (code, out, _) = doctor(&hub, &["--node", "agent-1", "--output", "json"]);
    let only: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(code, 2);
    assert!(
        codes(&only)
            .iter()
            .all(|(c, _, n)| n == "agent-1" || c == "kube-checks-skipped"),
        "{only:#}"
    );

    // The fleet views: each node's worst finding in `nodes` and `certs`, and the metric.
    let nodes = tokio::task::block_in_place(|| hub.json(&["nodes"]));
    let worst = |name: &str| {
        nodes["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["name"] == name))
            .map(|n| n["worst_finding"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(
        worst("agent-1").as_deref(),
        Some("blocker pem-empty-or-corrupt")
    );
    assert_eq!(worst("server-2").as_deref(), Some("blocker clock-skew"));
    assert_eq!(worst("server-1").as_deref(), Some(""), "{nodes:#}");
    let table = tokio::task::block_in_place(|| hub.run(&["certs"]));
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains(
            "finding: agent-1: blocker pem-empty-or-corrupt (rke2-hub doctor --node agent-1)"
        ),
        "{table}"
    );
    let metrics = rke2ops_tests::http::get(hub.metrics_addr(), "/metrics", None).expect("metrics");
    assert_eq!(
        rke2ops_tests::http::sample(
            &metrics,
            "rke2ops_hub_doctor_findings",
            "node=\"agent-1\",code=\"pem-empty-or-corrupt\",severity=\"blocker\""
        ),
        Some(1.0),
        "{metrics}"
    );

    // A plan over agent-1 is refused by its node's finding; fixed on the node, it runs.
    let refused = tokio::task::block_in_place(|| hub.run(&["restart", "--node", "agent-1"]));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("pem-empty-or-corrupt"),
        "{err}"
    );
    // A warning does not refuse a plan; it is recorded in the plan's history.
    let low = Finding::new(
        Code::DiskLow,
        Severity::Warning,
        "agent-1",
        "/var/lib/rke2-ops/node-agent",
        "df -h",
    )
    .with("purpose", "upgrade staging");
    fleet.set_findings("agent-1", &[low]);
    doctor_until(&hub, "only the warning on agent-1", |r| {
        has(r, "disk-low", "warning", "agent-1")
            && !has(r, "pem-empty-or-corrupt", "blocker", "agent-1")
    })
    .await;
    let view =
        tokio::task::block_in_place(|| hub.json(&["restart", "--node", "agent-1", "--no-drain"]));
    let id = view["id"].as_str().expect("id").to_owned();
    let shown = tokio::task::block_in_place(|| hub.json(&["plan", "show", &id])).to_string();
    assert!(
        shown.contains("preflight warning noted: disk-low /var/lib/rke2-ops/node-agent on agent-1"),
        "{shown}"
    );
    let started = std::time::Instant::now();
    while tokio::task::block_in_place(|| hub.json(&["plan", "show", &id]))["state"] != "completed" {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the plan completes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    fleet.set_findings("agent-1", &[]);
    fleet.set_clock("server-2", Duration::ZERO, false);
    fleet.set_clock("server-3", Duration::ZERO, false);
    doctor_until(&hub, "clean again", |r| codes(r).len() == 1).await;

    // The agent goes away: its last findings stay, and the doctor says they are old.
    drop(fleet);
    let report = doctor_until(&hub, "agents offline", |r| {
        has(r, "agent-offline", "warning", "agent-1")
    })
    .await;
    assert_eq!(doctor(&hub, &[]).0, 1, "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blocker_that_appears_mid_plan_holds_the_next_node_before_it_is_touched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = tokio::task::block_in_place(|| HubProcess::start(dir.path(), "127.0.70.4"));
    let addr = hub.addr.parse().expect("addr");
    let mut slow = spec(3, 1, "v1.34.1+rke2r1");
    slow.op_time = Duration::from_secs(2);
    let fleet = FakeFleet::start(addr, &hub.socket(), &slow).await;
    wait_online(&hub, 4).await;
    doctor_until(&hub, "a clean fleet", |r| codes(r).len() == 1).await;

    let view = tokio::task::block_in_place(|| hub.json(&["restart", "--no-drain"]));
    let id = view["id"].as_str().expect("id").to_owned();
    let show = || tokio::task::block_in_place(|| hub.json(&["plan", "show", &id]));
    let phase = |view: &Value, node: &str| {
        view["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["name"] == node))
            .map(|n| n["phase"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    // While server-1 is in maintenance, server-2's unit starts failing.
    let started = std::time::Instant::now();
    while phase(&show(), "server-1") == "pending" {
        assert!(started.elapsed() < Duration::from_secs(20), "{:#}", show());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failed = Finding::new(
        Code::UnitFailed,
        Severity::Blocker,
        "server-2",
        "rke2-server.service",
        "journalctl -u rke2-server",
    )
    .with("result", "exit-code");
    fleet.set_findings("server-2", &[failed]);
    // server-1 finishes; server-2 is held by the doctor, untouched.
    let started = std::time::Instant::now();
    let held = loop {
        let view = show();
        let reason = view["reason"].as_str().unwrap_or_default().to_owned();
        if reason.contains("the doctor holds the next node: unit-failed") {
            break view;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{view:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(phase(&held, "server-1"), "done", "{held:#}");
    assert_eq!(phase(&held, "server-2"), "pending", "{held:#}");
    assert!(
        held["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("on server-2"),
        "{held:#}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        fleet.spans().iter().all(|s| s.node != "server-2"),
        "server-2 was never operated while held"
    );
    // Fixed on the node: the plan goes on by itself and completes.
    fleet.set_findings("server-2", &[]);
    let started = std::time::Instant::now();
    loop {
        let view = show();
        if view["state"] == "completed" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{view:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut operated: Vec<String> = fleet.spans().into_iter().map(|s| s.node).collect();
    operated.sort();
    assert_eq!(operated, ["agent-1", "server-1", "server-2", "server-3"]);
}

#[test]
fn without_a_hub_the_doctor_exits_69_never_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(rke2ops_tests::ground::built_binary("rke2-hub"))
        .args(["doctor", "--socket"])
        .arg(dir.path().join("no-hub.sock"))
        .output()
        .expect("rke2-hub runs");
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no report"),
        "{out:?}"
    );
}
