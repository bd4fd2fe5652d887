//! The plan engine against a real hub process and a fake fleet (lightweight agents on the real
//! protocol, `rke2ops_tests::fleet`): ordering, one server at a time, worker concurrency,
//! halts, pause/resume/skip/abort, guards, dry runs, and a hub SIGKILLed mid-plan. No root and
//! no systemd needed; the same rules run against simulated RKE2 nodes in `plans_e2e.rs`.

use std::time::{Duration, Instant};

use rke2ops_tests::fleet::{Behaviour, FakeFleet, FleetSpec, OpSpan, max_overlap};
use rke2ops_tests::hub::HubProcess;
use serde_json::Value;

fn spec(servers: usize, agents: usize, op_ms: u64) -> FleetSpec {
    FleetSpec {
        servers,
        agents,
        version: "v1.33.5+rke2r1".to_owned(),
        op_time: Duration::from_millis(op_ms),
        heartbeat: Duration::from_millis(300),
        renewal_deadline_in: None,
    }
}

fn json(hub: &HubProcess, args: &[&str]) -> Value {
    tokio::task::block_in_place(|| hub.json(args))
}

fn run(hub: &HubProcess, args: &[&str]) -> std::process::Output {
    tokio::task::block_in_place(|| hub.run(args))
}

fn plan(hub: &HubProcess, id: &str) -> Value {
    json(hub, &["plan", "show", id])
}

/// Waits until plan `id` is in `state` (or fails naming what it is).
async fn wait_state(hub: &HubProcess, id: &str, state: &str, within: Duration) -> Value {
    let started = Instant::now();
    loop {
        let view = plan(hub, id);
        if view["state"] == state {
            return view;
        }
        assert!(
            view["state"] != "halted" || state == "halted",
            "plan {id} halted while waiting for {state}: {view:#}"
        );
        assert!(
            started.elapsed() < within,
            "plan {id} not {state} within {within:?}: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn phases(view: &Value) -> Vec<(String, String)> {
    view["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or_default().to_owned(),
                n["phase"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn of(spans: &[OpSpan], prefix: &str) -> Vec<OpSpan> {
    spans
        .iter()
        .filter(|s| s.node.starts_with(prefix))
        .cloned()
        .collect()
}

async fn setup(ip: &str, fleet: &FleetSpec) -> (tempfile::TempDir, HubProcess, FakeFleet) {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = tokio::task::block_in_place(|| HubProcess::start(dir.path(), ip));
    let addr = hub.addr.parse().expect("addr");
    let fleet = FakeFleet::start(addr, &hub.socket(), fleet).await;
    (dir, hub, fleet)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_goes_server_by_server_then_workers_in_pairs() {
    let (_dir, hub, fleet) = setup("127.0.60.1", &spec(3, 4, 300)).await;
    let view = json(&hub, &["rotate", "--concurrency", "2"]);
    let id = view["id"].as_str().expect("id").to_owned();
    let order: Vec<String> = phases(&view).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        order,
        [
            "server-1", "server-2", "server-3", "agent-1", "agent-2", "agent-3", "agent-4"
        ]
    );
    let done = wait_state(&hub, &id, "completed", Duration::from_secs(60)).await;
    assert!(phases(&done).iter().all(|(_, p)| p == "done"), "{done:#}");

    let spans = fleet.spans();
    assert_eq!(
        spans.len(),
        7,
        "every node operated exactly once: {spans:?}"
    );
    assert!(spans.iter().all(|s| s.kind == "rotate"));
    let servers = of(&spans, "server-");
    let agents = of(&spans, "agent-");
    assert_eq!(max_overlap(&servers), 1, "servers one at a time");
    let last_server = servers.iter().filter_map(|s| s.end).max().expect("ends");
    assert!(
        agents.iter().all(|a| a.start >= last_server),
        "workers only after every server"
    );
    assert_eq!(max_overlap(&agents), 2, "workers two at a time");
    // Servers went in plan order.
    let mut by_start = servers.clone();
    by_start.sort_by_key(|s| s.start);
    assert_eq!(
        by_start.iter().map(|s| s.node.as_str()).collect::<Vec<_>>(),
        ["server-1", "server-2", "server-3"]
    );
    // The listing shows it.
    let plans = json(&hub, &["plans"]);
    assert_eq!(plans[0]["state"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_guards_skips_and_versions() {
    let (_dir, hub, fleet) = setup("127.0.60.2", &spec(1, 3, 200)).await;
    // Guards: a minor skip and a downgrade are refused with the reason.
    let skip = run(&hub, &["upgrade", "--version", "v1.35.0+rke2r1"]);
    assert!(!skip.status.success());
    let err = String::from_utf8_lossy(&skip.stderr);
    assert!(err.contains("--allow-minor-skip"), "{err}");
    let down = run(&hub, &["upgrade", "--version", "v1.32.9+rke2r1"]);
    assert!(String::from_utf8_lossy(&down.stderr).contains("never downgrades"));
    let neither = run(&hub, &["upgrade"]);
    assert!(!neither.status.success());

    // A dry run prints the order and the gates and creates nothing.
    let dry = json(
        &hub,
        &["upgrade", "--version", "v1.34.1+rke2r1", "--dry-run"],
    );
    assert_eq!(dry["state"], "dry-run");
    assert!(
        dry["gates"].as_array().expect("gates").len() >= 3,
        "{dry:#}"
    );
    assert!(json(&hub, &["plans"]).as_array().expect("plans").is_empty());

    let view = json(&hub, &["upgrade", "--version", "v1.34.1+rke2r1"]);
    let id = view["id"].as_str().expect("id").to_owned();
    wait_state(&hub, &id, "completed", Duration::from_secs(60)).await;
    for name in &fleet.names {
        assert_eq!(fleet.version(name), "v1.34.1+rke2r1", "{name}");
    }
    let nodes = json(&hub, &["nodes"]);
    for n in nodes["nodes"].as_array().expect("nodes") {
        assert_eq!(n["rke2_version"], "v1.34.1+rke2r1", "{n}");
    }
    // Everything at the target now: a second plan skips every node and completes at once.
    let again = json(&hub, &["upgrade", "--version", "v1.34.1+rke2r1"]);
    assert!(
        phases(&again).iter().all(|(_, p)| p == "skipped"),
        "{again:#}"
    );
    let id = again["id"].as_str().expect("id").to_owned();
    wait_state(&hub, &id, "completed", Duration::from_secs(10)).await;
    assert_eq!(fleet.spans().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failure_halts_then_resume_retries_and_skip_passes() {
    let (_dir, hub, fleet) = setup("127.0.60.3", &spec(3, 2, 200)).await;
    fleet.set_behaviour(
        "server-2",
        Behaviour::Fail("certificate rotate exited 1".into()),
    );
    let view = json(&hub, &["restart", "--ready-timeout", "10s"]);
    let id = view["id"].as_str().expect("id").to_owned();
    let halted = wait_state(&hub, &id, "halted", Duration::from_secs(30)).await;
    let reason = halted["reason"].as_str().expect("reason");
    assert!(
        reason.contains("server-2") && reason.contains("certificate rotate exited 1"),
        "{reason}"
    );
    // The halt is visible in the hub's metrics (promtool-clean).
    let metrics = tokio::task::block_in_place(|| {
        rke2ops_tests::http::get("127.0.60.3:9812".parse().expect("addr"), "/metrics", None)
    })
    .expect("metrics");
    assert_eq!(
        rke2ops_tests::http::sample(&metrics, "rke2ops_hub_plans", "state=\"halted\""),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        rke2ops_tests::http::sample(&metrics, "rke2ops_hub_plan_nodes", "phase=\"failed\""),
        Some(1.0),
        "{metrics}"
    );
    let promtool = tokio::task::block_in_place(|| rke2ops_tests::http::promtool_check(&metrics));
    assert!(
        promtool.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&promtool.stdout)
    );
    // Nothing after the failed node was touched.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let touched: Vec<String> = fleet.spans().into_iter().map(|s| s.node).collect();
    assert_eq!(touched, ["server-1", "server-2"]);
    // `plan watch` ends on a halted plan with exit code 1 and the reason.
    let watch = run(&hub, &["plan", "watch", &id]);
    assert_eq!(watch.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&watch.stderr).contains("server-2"));

    // Resume retries the failed node (it works now).
    fleet.set_behaviour("server-2", Behaviour::Succeed);
    assert!(run(&hub, &["resume", &id]).status.success());
    // Make a worker fail; skip it; the plan completes.
    fleet.set_behaviour("agent-1", Behaviour::Fail("kubelet never came back".into()));
    let halted = wait_state(&hub, &id, "halted", Duration::from_secs(30)).await;
    assert!(halted["reason"].as_str().expect("r").contains("agent-1"));
    let out = run(&hub, &["skip", &id, "--node", "agent-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = wait_state(&hub, &id, "completed", Duration::from_secs(30)).await;
    let p = phases(&done);
    assert!(p.contains(&("agent-1".into(), "skipped".into())), "{p:?}");
    assert!(p.contains(&("server-2".into(), "done".into())), "{p:?}");
    let server2 = done["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["name"] == "server-2")
        .expect("server-2")
        .clone();
    assert_eq!(server2["attempt"], 2);
    // Actions on a finished plan are refused, and a dry run refuses them the same way.
    let refused = run(&hub, &["pause", &id]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("will not act again"), "{stderr}");
    let dry = run(&hub, &["abort", &id, "--dry-run"]);
    let stderr = String::from_utf8_lossy(&dry.stderr);
    assert!(!dry.status.success(), "{stderr}");
    assert!(
        stderr.contains("dry run: would be refused") && stderr.contains("will not act again"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_holds_new_nodes_and_abort_ends_the_plan() {
    let (_dir, hub, fleet) = setup("127.0.60.4", &spec(1, 3, 800)).await;
    let view = json(&hub, &["rotate"]);
    let id = view["id"].as_str().expect("id").to_owned();
    // A second plan is refused while this one runs.
    let second = run(&hub, &["restart"]);
    assert!(String::from_utf8_lossy(&second.stderr).contains(&format!("plan {id}")));
    // Dry runs act on nothing: a running plan has nothing to resume; pausing it would work.
    let dry = run(&hub, &["resume", &id, "--dry-run"]);
    assert!(
        String::from_utf8_lossy(&dry.stderr).contains("nothing to resume"),
        "{dry:?}"
    );
    let dry = run(&hub, &["pause", &id, "--dry-run"]);
    assert!(
        String::from_utf8_lossy(&dry.stdout).contains("dry run: would pause"),
        "{dry:?}"
    );
    assert_eq!(plan(&hub, &id)["state"], "running");
    // Pause while server-1 operates: server-1 finishes, nothing new starts.
    while fleet.spans().is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(run(&hub, &["pause", &id]).status.success());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let paused = plan(&hub, &id);
    assert_eq!(paused["state"], "paused");
    assert_eq!(fleet.spans().len(), 1, "nothing new starts while paused");
    assert!(run(&hub, &["resume", &id]).status.success());
    // Abort once a worker is in maintenance: nothing new starts afterwards.
    let started = Instant::now();
    while !fleet.spans().iter().any(|s| s.node.starts_with("agent-")) {
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(run(&hub, &["abort", &id]).status.success());
    let aborted = wait_state(&hub, &id, "aborted", Duration::from_secs(5)).await;
    let count = fleet.spans().len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fleet.spans().len(), count, "nothing starts after abort");
    // The node in maintenance finishes its operation and is released.
    let started = Instant::now();
    loop {
        let view = plan(&hub, &id);
        if view["nodes"].as_array().expect("nodes").iter().all(|n| {
            !["cordon", "drain", "operate", "verify", "uncordon", "settle"]
                .contains(&n["phase"].as_str().unwrap_or_default())
        }) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{view:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        aborted["reason"]
            .as_str()
            .expect("r")
            .contains("aborted by")
    );
    // A new plan may start now.
    assert!(run(&hub, &["restart", "--dry-run"]).status.success());
    // A rotation may snapshot etcd first; the gates say so; nothing else takes the flag.
    let dry = run(&hub, &["rotate", "--etcd-snapshot", "--dry-run"]);
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(dry.status.success(), "{text}");
    assert!(
        text.contains("servers: an etcd snapshot after the preflight and before the unit stops")
            && text.contains("etcd snapshot on each server before it stops"),
        "{text}"
    );
    let refused = run(&hub, &["restart", "--etcd-snapshot", "--dry-run"]);
    assert!(
        !refused.status.success(),
        "restart takes no --etcd-snapshot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_never_becomes_ready_halts_the_plan() {
    let (_dir, hub, fleet) = setup("127.0.60.5", &spec(3, 1, 200)).await;
    fleet.set_behaviour("server-1", Behaviour::NeverReady);
    let view = json(&hub, &["rotate", "--ready-timeout", "3s"]);
    let id = view["id"].as_str().expect("id").to_owned();
    let halted = wait_state(&hub, &id, "halted", Duration::from_secs(30)).await;
    let reason = halted["reason"].as_str().expect("reason");
    assert!(
        reason.contains("server-1") && reason.contains("not healthy within 3 s"),
        "{reason}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(fleet.spans().len(), 1, "no further node touched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hub_killed_mid_plan_finishes_it_after_a_restart() {
    let ip = "127.0.60.6";
    let (dir, hub, fleet) = setup(ip, &spec(3, 2, 1500)).await;
    let view = json(&hub, &["rotate", "--settle", "1s"]);
    let id = view["id"].as_str().expect("id").to_owned();
    // A watcher loses its stream when the hub dies: exit 3, distinct from halted (1).
    let mut child = hub
        .command(&["plan", "watch", &id])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("plan watch runs");
    // Its first line means it has the stream (a kill before that would be a connect error).
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let first = tokio::task::block_in_place(|| lines.next());
    assert!(
        first.is_some_and(|l| l.is_ok()),
        "the watcher printed nothing"
    );
    // Keep draining so the watcher never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let mut watcher = Some(child);
    let mut hub = Some(hub);
    // Kill -9 at several points: while server-1 operates, while server-2 operates, and while
    // a worker settles.
    for (wait_for, phase) in [
        ("server-1", "operate"),
        ("server-2", "operate"),
        ("agent-1", "settle"),
    ] {
        let started = Instant::now();
        loop {
            let h = hub.as_ref().expect("hub");
            let view = plan(h, &id);
            let at = view["nodes"]
                .as_array()
                .expect("nodes")
                .iter()
                .any(|n| n["name"] == wait_for && n["phase"] == phase);
            if at {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{view:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        hub.take().expect("hub").kill();
        if let Some(watcher) = watcher.take() {
            let out =
                tokio::task::block_in_place(|| watcher.wait_with_output()).expect("watcher ends");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(3), "{stderr}");
            assert!(
                stderr.contains(&format!("lost the watch of plan {id}")),
                "{stderr}"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        hub = Some(tokio::task::block_in_place(|| {
            HubProcess::start(dir.path(), ip)
        }));
    }
    let hub = hub.expect("hub");
    let done = wait_state(&hub, &id, "completed", Duration::from_secs(90)).await;
    assert!(phases(&done).iter().all(|(_, p)| p == "done"), "{done:#}");
    let spans = fleet.spans();
    for name in &fleet.names {
        let n = spans.iter().filter(|s| &s.node == name).count();
        assert_eq!(
            n, 1,
            "{name} operated exactly once across hub restarts: {spans:?}"
        );
    }
    assert_eq!(max_overlap(&spans), 1, "never two nodes at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_maintenance_restarts_nodes_before_their_renewal_deadline_once() {
    let ip = "127.0.60.7";
    let dir = tempfile::tempdir().expect("tempdir");
    let auto = ["--auto-restart-within-days", "30"];
    let hub = tokio::task::block_in_place(|| HubProcess::start_with(dir.path(), ip, &auto));
    let mut near = spec(3, 1, 200);
    // 20 days before the first leaf expires: inside the 30-day lead, and RKE2's 120-day
    // window, so a restart renews.
    near.renewal_deadline_in = Some(Duration::from_secs(20 * 86_400));
    let fleet = FakeFleet::start(hub.addr.parse().expect("addr"), &hub.socket(), &near).await;
    // The hub looks at start and every 5 minutes; a restart makes it look now.
    hub.kill();
    let hub = tokio::task::block_in_place(|| HubProcess::start_with(dir.path(), ip, &auto));
    let started = Instant::now();
    let id = loop {
        let plans = json(&hub, &["plans"]);
        if let Some(p) = plans.as_array().and_then(|p| p.first()) {
            break p["id"].as_str().expect("id").to_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no auto plan");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let view = plan(&hub, &id);
    assert_eq!(view["kind"], "restart");
    assert_eq!(view["origin"], "auto-maintenance");
    assert_eq!(view["created_by"], "hub:auto-maintenance");
    wait_state(&hub, &id, "completed", Duration::from_secs(60)).await;
    assert_eq!(fleet.spans().len(), 4, "every node restarted once");
    assert!(fleet.spans().iter().all(|s| s.kind == "restart"));
    // The fake nodes still report the same deadline (a restart that renewed nothing): the
    // hub does not loop on them within a day.
    hub.kill();
    let hub = tokio::task::block_in_place(|| HubProcess::start_with(dir.path(), ip, &auto));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(json(&hub, &["plans"]).as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_maintenance_warns_when_the_window_opens_after_a_deadline() {
    let ip = "127.0.60.8";
    let dir = tempfile::tempdir().expect("tempdir");
    // A daily one-hour window opening 12 hours from now; the nodes' deadline is in 2 hours.
    let opens = time::OffsetDateTime::now_utc() + time::Duration::hours(12);
    let window = format!(
        "daily {:02}:{:02}-{:02}:{:02} UTC",
        opens.hour(),
        opens.minute(),
        (opens.hour() + 1) % 24,
        opens.minute()
    );
    let auto = [
        "--auto-restart-within-days",
        "30",
        "--auto-restart-window",
        &window,
    ];
    let hub = tokio::task::block_in_place(|| HubProcess::start_with(dir.path(), ip, &auto));
    let mut near = spec(1, 1, 200);
    near.renewal_deadline_in = Some(Duration::from_secs(2 * 3600));
    let _fleet = FakeFleet::start(hub.addr.parse().expect("addr"), &hub.socket(), &near).await;
    hub.kill();
    let hub = tokio::task::block_in_place(|| HubProcess::start_with(dir.path(), ip, &auto));
    let started = Instant::now();
    // The plan waits for its window, and says which nodes it would restart too late (the
    // warnings are written right after the plan, so poll for them).
    let late = |view: &Value| {
        let mut nodes: Vec<String> = view["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| {
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("comes before the window"))
            })
            .filter_map(|e| e["node"].as_str().map(str::to_owned))
            .collect();
        nodes.sort();
        nodes
    };
    let view = loop {
        let plans = json(&hub, &["plans"]);
        if let Some(p) = plans.as_array().and_then(|p| p.first()) {
            let view = plan(&hub, p["id"].as_str().expect("id"));
            if late(&view).len() == 2 {
                break view;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no auto plan with warnings"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(view["state"], "running", "{view:#}");
    assert!(
        phases(&view).iter().all(|(_, p)| p == "pending"),
        "{view:#}"
    );
    assert_eq!(late(&view), ["agent-1", "server-1"], "{view:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_alert_gate_holds_nodes_while_prometheus_has_a_firing_alert() {
    use rke2ops_tests::prometheus::{Prometheus, firing_rules};
    let ip = "127.0.60.9";
    // A real Prometheus with two firing alerts; the renewal one is ignored by default (a
    // restart plan is what clears it).
    let prometheus = tokio::task::block_in_place(|| {
        let p = Prometheus::start(
            ip.parse().expect("ip"),
            &firing_rules(&["EtcdDiskSlow", "RKE2RenewalRestartDue"]),
        );
        p.wait_firing(&["EtcdDiskSlow", "RKE2RenewalRestartDue"]);
        p
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let url = prometheus.url();
    let hub = tokio::task::block_in_place(|| {
        HubProcess::start_with(dir.path(), ip, &["--alert-gate-prometheus-url", &url])
    });
    let fleet = FakeFleet::start(
        hub.addr.parse().expect("addr"),
        &hub.socket(),
        &spec(1, 1, 200),
    )
    .await;

    let view = json(&hub, &["restart"]);
    let id = view["id"].as_str().expect("id").to_owned();
    let started = Instant::now();
    loop {
        let view = plan(&hub, &id);
        if view["reason"] == "alerts firing: EtcdDiskSlow" {
            let gates = view["gates"].to_string();
            assert!(
                gates.contains(&format!("no firing alert at {url}")),
                "{gates}"
            );
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "{view:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        fleet.spans().is_empty(),
        "no node starts while the alert fires"
    );

    // The alert resolves: the plan goes on by itself.
    tokio::task::block_in_place(|| {
        prometheus.set_rules(&firing_rules(&["RKE2RenewalRestartDue"]));
        prometheus.wait_firing(&["RKE2RenewalRestartDue"]);
    });
    wait_state(&hub, &id, "completed", Duration::from_secs(30)).await;
    assert_eq!(fleet.spans().len(), 2);

    // Prometheus gone: "no answer" is not "all clear".
    drop(prometheus);
    let view = json(&hub, &["rotate"]);
    let id = view["id"].as_str().expect("id").to_owned();
    let started = Instant::now();
    loop {
        let view = plan(&hub, &id);
        let reason = view["reason"].as_str().unwrap_or_default().to_owned();
        if reason.contains(&format!("Prometheus alerts at {url}/api/v1/alerts")) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{view:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(fleet.spans().len(), 2, "nothing started without an answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plans_of_two_clusters_run_at_once_each_one_node_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = tokio::task::block_in_place(|| HubProcess::start(dir.path(), "127.0.60.20"));
    let addr = hub.addr.parse().expect("addr");
    let east = FakeFleet::start_in(addr, &hub.socket(), &spec(3, 1, 400), "east").await;
    // West runs a release two minors older: within one cluster that is a skew blocker,
    // across clusters nothing.
    let west_spec = FleetSpec {
        version: "v1.31.9+rke2r1".to_owned(),
        ..spec(3, 1, 400)
    };
    let west = FakeFleet::start_in(addr, &hub.socket(), &west_spec, "west").await;
    let doctor = json(&hub, &["doctor"]);
    assert!(
        !doctor.to_string().contains("version-skew"),
        "no skew across clusters: {doctor:#}"
    );
    let east_only = json(&hub, &["doctor", "--cluster", "east"]).to_string();
    assert!(!east_only.contains("west-"), "{east_only}");
    assert!(
        !run(&hub, &["doctor", "--cluster", "north"])
            .status
            .success()
    );

    // With two clusters a plan must name one.
    let out = run(&hub, &["rotate"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("several clusters (east, west)") && stderr.contains("--cluster"),
        "{stderr}"
    );
    // A node of the other cluster is named as such.
    let out = run(
        &hub,
        &["rotate", "--cluster", "east", "--node", "west-agent-1"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("west-agent-1 is in cluster west, not east"),
        "{stderr}"
    );
    let out = run(&hub, &["rotate", "--cluster", "north"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"north\"") && stderr.contains("east, west"),
        "{stderr}"
    );

    let a = json(&hub, &["rotate", "--cluster", "east"]);
    let b = json(&hub, &["rotate", "--cluster", "west"]);
    assert_eq!(a["cluster"], "east");
    assert_eq!(b["cluster"], "west");
    let names = |v: &Value| -> Vec<String> { phases(v).into_iter().map(|(n, _)| n).collect() };
    assert_eq!(
        names(&a),
        [
            "east-server-1",
            "east-server-2",
            "east-server-3",
            "east-agent-1"
        ]
    );
    assert!(names(&b).iter().all(|n| n.starts_with("west-")), "{b:#}");
    let clusters = json(&hub, &["clusters"]);
    let clusters = clusters["clusters"].as_array().expect("clusters").clone();
    assert_eq!(clusters.len(), 2, "{clusters:?}");
    assert_eq!(
        (
            &clusters[0]["name"],
            &clusters[0]["servers"],
            &clusters[0]["agents"]
        ),
        (&Value::from("east"), &Value::from(3), &Value::from(1))
    );
    assert_eq!(
        clusters[1]["versions"],
        serde_json::json!(["v1.31.9+rke2r1"])
    );
    assert_eq!(clusters[1]["kubernetes_access"], false);
    assert!(
        clusters.iter().all(|c| !c["active_plan"]["id"].is_null()),
        "both plans active: {clusters:?}"
    );
    // One active plan per cluster.
    let out = run(&hub, &["rotate", "--cluster", "east"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("still running in this cluster"), "{stderr}");

    let (a, b) = (
        a["id"].as_str().expect("id").to_owned(),
        b["id"].as_str().expect("id").to_owned(),
    );
    wait_state(&hub, &a, "completed", Duration::from_secs(90)).await;
    wait_state(&hub, &b, "completed", Duration::from_secs(90)).await;
    let mut spans = east.spans();
    spans.extend(west.spans());
    assert_eq!(
        spans.len(),
        8,
        "every node of both clusters once: {spans:?}"
    );
    for cluster in ["east-", "west-"] {
        let own = of(&spans, cluster);
        assert_eq!(own.len(), 4, "{cluster}: {own:?}");
        assert_eq!(max_overlap(&own), 1, "{cluster}: one node at a time");
    }
    assert_eq!(
        max_overlap(&spans),
        2,
        "the two clusters' plans ran at the same time"
    );

    let listed = json(&hub, &["plans", "--cluster", "west"]);
    let listed = listed.as_array().expect("plans");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], b.as_str());
    let table = String::from_utf8_lossy(&run(&hub, &["plans"]).stdout).into_owned();
    assert!(
        table.lines().next().is_some_and(|h| h.contains("CLUSTER")),
        "{table}"
    );
}
