//! An upgrade's air-gap image phase (`upgrade --stage-images`) against a real hub process and
//! a fake fleet: every node the plan upgrades has the release's images staged before the
//! first node starts its upgrade; a failed staging (a bad checksum) halts the plan before any
//! upgrade, and `resume` retries it; a hub killed mid-staging resumes it without running any
//! staging twice; after the plan every staged node is asked to prune the old archives.

use std::time::{Duration, Instant};

use rke2ops_tests::fleet::{Behaviour, FakeFleet, FleetSpec, OpSpan, max_overlap};
use rke2ops_tests::hub::HubProcess;
use serde_json::Value;

const TARGET: &str = "v1.34.1+rke2r1";

fn spec(op_ms: u64) -> FleetSpec {
    FleetSpec {
        servers: 3,
        agents: 2,
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

async fn setup(ip: &str, op_ms: u64) -> (tempfile::TempDir, HubProcess, FakeFleet) {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = tokio::task::block_in_place(|| HubProcess::start(dir.path(), ip));
    let addr = hub.addr.parse().expect("addr");
    let fleet = FakeFleet::start(addr, &hub.socket(), &spec(op_ms)).await;
    (dir, hub, fleet)
}

/// Polls plan `id` until `done` says so (or fails after `within`, showing the plan).
async fn wait_for(
    hub: &HubProcess,
    id: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let view = plan(hub, id);
        if done(&view) {
            return view;
        }
        assert!(
            started.elapsed() < within,
            "plan {id}: not {what} within {within:?}: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_state(hub: &HubProcess, id: &str, state: &str, within: Duration) -> Value {
    wait_for(hub, id, within, state, |v| v["state"] == state).await
}

fn kind<'a>(spans: &'a [OpSpan], kind: &str) -> Vec<&'a OpSpan> {
    spans.iter().filter(|s| s.kind == kind).collect()
}

fn nodes(view: &Value) -> Vec<Value> {
    view["nodes"].as_array().expect("nodes").clone()
}

fn upgrade(hub: &HubProcess) -> String {
    let view = json(hub, &["upgrade", "--version", TARGET, "--stage-images"]);
    view["id"].as_str().expect("id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_air_gapped_upgrade_stages_images_on_all_five_nodes_before_server_1_restarts() {
    let (_dir, hub, fleet) = setup("127.0.61.1", 300).await;
    // The dry run says, per node, that images would be staged; only upgrades stage them.
    let dry = json(
        &hub,
        &[
            "upgrade",
            "--version",
            TARGET,
            "--stage-images",
            "--dry-run",
        ],
    );
    assert_eq!(dry["images"], "staged 0/5", "{dry:#}");
    for n in nodes(&dry) {
        assert_eq!(n["images"]["state"], "pending", "{n:#}");
    }
    assert!(
        dry["gates"][0]
            .as_str()
            .is_some_and(|g| g.contains("image archives staged")),
        "{dry:#}"
    );
    let refused = run(&hub, &["rotate", "--stage-images"]);
    assert!(!refused.status.success(), "only upgrade takes the flag");
    let id = upgrade(&hub);
    let done = wait_state(&hub, &id, "completed", Duration::from_secs(90)).await;
    assert_eq!(done["images"], "staged 5/5", "{done:#}");

    // From the plan's own timestamps (whole seconds): every staging finished no later than
    // the first node's maintenance began.
    let first_start = nodes(&done)
        .iter()
        .filter_map(|n| n["started_at"].as_str().map(str::to_owned))
        .min()
        .expect("a node started");
    for n in nodes(&done) {
        assert_eq!(n["phase"], "done", "{n:#}");
        assert_eq!(n["images"]["state"], "staged", "{n:#}");
        let finished = n["images"]["finished_at"].as_str().expect("finished_at");
        assert!(
            finished <= first_start.as_str(),
            "{}: staged at {finished}, after {first_start}",
            n["name"]
        );
    }
    // And from the fleet's own clock, exactly: all five stagings ended before the first
    // upgrade (server-1's restart) began; each node staged once, and several at once.
    let spans = fleet.spans();
    let staged = kind(&spans, "stage-images");
    let upgrades = kind(&spans, "upgrade");
    assert_eq!(staged.len(), 5, "{spans:?}");
    assert_eq!(upgrades.len(), 5, "{spans:?}");
    let first_upgrade = upgrades.iter().map(|s| s.start).min().expect("upgrades");
    assert!(
        staged
            .iter()
            .all(|s| s.end.is_some_and(|e| e <= first_upgrade)),
        "{spans:?}"
    );
    let first = upgrades
        .iter()
        .min_by_key(|s| s.start)
        .map(|s| s.node.as_str());
    assert_eq!(first, Some("server-1"));
    let staged_owned: Vec<OpSpan> = staged.iter().map(|s| (*s).clone()).collect();
    assert!(max_overlap(&staged_owned) > 1, "stagings run concurrently");

    // After the plan: every staged node is asked to prune the old archives, recorded.
    let pruned = wait_for(&hub, &id, Duration::from_secs(30), "pruned", |v| {
        v["events"].as_array().is_some_and(|events| {
            events
                .iter()
                .filter(|e| {
                    e["message"].as_str().is_some_and(|m| {
                        m.starts_with("images: previous releases' archives pruned")
                    })
                })
                .count()
                == 5
        })
    })
    .await;
    let prunes = kind(&fleet.spans(), "prune-images").len();
    assert_eq!(prunes, 5, "{pruned:#}");
    // `plan show` prints the phase line and each node's staging.
    let text = String::from_utf8_lossy(&run(&hub, &["plan", "show", &id]).stdout).into_owned();
    assert!(text.contains("images: staged 5/5"), "{text}");
    assert!(
        text.contains("images staged before any node is upgraded"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_image_checksum_halts_the_plan_before_any_restart_and_resume_retries_it() {
    let (_dir, hub, fleet) = setup("127.0.61.2", 200).await;
    let mismatch = "checksum mismatch for rke2-images.linux-amd64.tar.zst: expected 3f5a, got 9c1d; nothing placed";
    fleet.set_images_behaviour(
        "agent-2",
        Behaviour::Fail(mismatch.to_owned()),
        Duration::from_millis(300),
    );
    let id = upgrade(&hub);
    let halted = wait_state(&hub, &id, "halted", Duration::from_secs(30)).await;
    let reason = halted["reason"].as_str().expect("reason");
    assert!(
        reason.contains("images: staging failed on agent-2") && reason.contains(mismatch),
        "{reason}"
    );
    assert!(
        halted["images"]
            .as_str()
            .expect("images")
            .contains("failed on agent-2")
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spans = fleet.spans();
    assert!(
        kind(&spans, "upgrade").is_empty(),
        "no node upgraded: {spans:?}"
    );
    assert!(
        nodes(&plan(&hub, &id))
            .iter()
            .all(|n| n["phase"] == "pending")
    );
    // Fixed (the mirror now serves the published archive): resume retries agent-2 only,
    // with a new operation id, and the plan goes on.
    fleet.set_images_behaviour("agent-2", Behaviour::Succeed, Duration::from_millis(300));
    assert!(run(&hub, &["resume", &id]).status.success());
    let done = wait_state(&hub, &id, "completed", Duration::from_secs(90)).await;
    assert_eq!(done["images"], "staged 5/5", "{done:#}");
    let spans = fleet.spans();
    let staged = kind(&spans, "stage-images");
    for name in &fleet.names {
        let n = staged.iter().filter(|s| &s.node == name).count();
        assert_eq!(
            n,
            if name == "agent-2" { 2 } else { 1 },
            "{name}: {spans:?}"
        );
    }
    let first_upgrade = kind(&spans, "upgrade")
        .iter()
        .map(|s| s.start)
        .min()
        .expect("upgrades");
    assert!(
        staged
            .iter()
            .all(|s| s.end.is_some_and(|e| e <= first_upgrade))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hub_killed_mid_staging_resumes_it_without_staging_twice() {
    let ip = "127.0.61.3";
    let (dir, hub, fleet) = setup(ip, 200).await;
    for name in &fleet.names {
        fleet.set_images_behaviour(name, Behaviour::Succeed, Duration::from_secs(3));
    }
    let id = upgrade(&hub);
    wait_for(&hub, &id, Duration::from_secs(20), "staging", |v| {
        nodes(v).iter().any(|n| n["images"]["state"] == "staging")
    })
    .await;
    hub.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hub = tokio::task::block_in_place(|| HubProcess::start(dir.path(), ip));
    let done = wait_state(&hub, &id, "completed", Duration::from_secs(90)).await;
    assert_eq!(done["images"], "staged 5/5", "{done:#}");
    let spans = fleet.spans();
    let staged = kind(&spans, "stage-images");
    for name in &fleet.names {
        let n = staged.iter().filter(|s| &s.node == name).count();
        assert_eq!(
            n, 1,
            "{name} staged exactly once across the restart: {spans:?}"
        );
    }
    let first_upgrade = kind(&spans, "upgrade")
        .iter()
        .map(|s| s.start)
        .min()
        .expect("upgrades");
    assert!(
        staged
            .iter()
            .all(|s| s.end.is_some_and(|e| e <= first_upgrade)),
        "{spans:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abort_mid_staging_cancels_it_and_upgrades_nothing() {
    let (_dir, hub, fleet) = setup("127.0.61.4", 200).await;
    for name in &fleet.names {
        fleet.set_images_behaviour(name, Behaviour::Succeed, Duration::from_secs(2));
    }
    let id = upgrade(&hub);
    wait_for(&hub, &id, Duration::from_secs(20), "staging", |v| {
        nodes(v).iter().any(|n| n["images"]["state"] == "staging")
    })
    .await;
    assert!(run(&hub, &["abort", &id]).status.success());
    // Every staging task records its end (cancelled, or finished before the cancel).
    let ended = wait_for(&hub, &id, Duration::from_secs(30), "ended stagings", |v| {
        v["state"] == "aborted" && nodes(v).iter().all(|n| n["images"]["state"] != "staging")
    })
    .await;
    assert!(
        nodes(&ended).iter().all(|n| n["phase"] == "pending"),
        "{ended:#}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spans = fleet.spans();
    assert!(kind(&spans, "upgrade").is_empty(), "{spans:?}");
    assert!(kind(&spans, "prune-images").is_empty(), "{spans:?}");
    // An upgrade without the flag has no images phase at all.
    let plain = json(&hub, &["upgrade", "--version", TARGET, "--dry-run"]);
    assert!(plain["images"].is_null(), "{plain:#}");
    assert!(nodes(&plain).iter().all(|n| n["images"].is_null()));
}
