//! `rke2-hub doctor` against a real hub process without a kubeconfig and a fake fleet
//! (`rke2ops_tests::fleet`) reporting node versions: the Kubernetes checks are skipped with one
//! info finding, the inventory's version skew is found, `--node` filters (an unknown node is
//! exit 64 naming it), and the exit code follows the worst finding. No root needed.

use std::time::Duration;

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
        [(
            "kube-checks-skipped".to_owned(),
            "info".to_owned(),
            String::new()
        )]
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
            (
                "version-skew".to_owned(),
                "blocker".to_owned(),
                "agent-1".to_owned()
            ),
            (
                "kube-checks-skipped".to_owned(),
                "info".to_owned(),
                String::new()
            ),
        ]
    );

    let (code, table, _) = doctor(&hub, &[]);
    assert_eq!(code, 2);
    assert!(
        table.contains("BLOCKER    version-skew          agent agent-1"),
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
