//! Rollouts against a real hub process and fake fleets of several clusters
//! (`rke2ops_tests::fleet`): waves in order, the soak between them, a doctor blocker ending a
//! soak, pause, resume and abort of the whole rollout, and the refusals. No root needed.

use std::time::{Duration, Instant};

use rke2ops_common::doctor::{Code, Finding, Severity};
use rke2ops_tests::fleet::{FakeFleet, FleetSpec, OpSpan, max_overlap};
use rke2ops_tests::hub::HubProcess;
use serde_json::Value;

fn spec(servers: usize, agents: usize) -> FleetSpec {
    FleetSpec {
        servers,
        agents,
        version: "v1.33.5+rke2r1".to_owned(),
        op_time: Duration::from_millis(300),
        heartbeat: Duration::from_millis(300),
        renewal_deadline_in: None,
    }
}

fn json(hub: &HubProcess, args: &[&str]) -> Value {
    tokio::task::block_in_place(|| hub.json(args))
}

fn refused(hub: &HubProcess, args: &[&str]) -> String {
    let out = tokio::task::block_in_place(|| hub.run(args));
    assert!(!out.status.success(), "{args:?} must be refused");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits until rollout `id` satisfies `done` (or fails with what it is).
async fn wait_rollout(
    hub: &HubProcess,
    id: &str,
    what: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let view = json(hub, &["rollout", "show", id]);
        if done(&view) {
            return view;
        }
        assert!(
            started.elapsed() < within,
            "rollout {id} not {what} within {within:?}: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn state_is(state: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["state"] == state
}

fn of(spans: &[OpSpan], prefix: &str) -> Vec<OpSpan> {
    spans
        .iter()
        .filter(|s| s.node.starts_with(prefix))
        .cloned()
        .collect()
}

fn first_start(spans: &[OpSpan]) -> Instant {
    spans.iter().map(|s| s.start).min().expect("a span")
}

fn last_end(spans: &[OpSpan]) -> Instant {
    spans
        .iter()
        .map(|s| s.end.expect("ended"))
        .max()
        .expect("a span")
}

fn pem_blocker() -> Finding {
    Finding::new(
        Code::PemEmptyOrCorrupt,
        Severity::Blocker,
        "staging-agent-1",
        "agent/client-kubelet.crt",
        "systemctl restart rke2-agent",
    )
    .with("reason", "no PEM data")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollout_over_three_clusters_goes_wave_by_wave_with_its_soak() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = tokio::task::block_in_place(|| HubProcess::start(dir.path(), "127.0.61.10"));
    let addr = hub.addr.parse().expect("addr");
    let staging = FakeFleet::start_in(addr, &hub.socket(), &spec(1, 1), "staging").await;
    let eu = FakeFleet::start_in(addr, &hub.socket(), &spec(3, 1), "prod-eu").await;
    let us = FakeFleet::start_in(addr, &hub.socket(), &spec(3, 1), "prod-us").await;

    // Refusals, each naming what is wrong.
    let twice = refused(
        &hub,
        &["rotate", "--wave", "staging", "--wave", "prod-eu,staging"],
    );
    assert!(
        twice.contains("wave 2") && twice.contains("cluster staging is already in an earlier wave"),
        "{twice}"
    );
    let unknown = refused(
        &hub,
        &["rotate", "--wave", "staging", "--wave", "prod-asia"],
    );
    assert!(
        unknown.contains("\"prod-asia\"") && unknown.contains("prod-eu, prod-us, staging"),
        "{unknown}"
    );
    let mixed = refused(
        &hub,
        &["rotate", "--wave", "staging", "--cluster", "staging"],
    );
    assert!(mixed.contains("--cluster"), "{mixed}");
    let soak_alone = refused(&hub, &["rotate", "--cluster", "staging", "--soak", "1h"]);
    assert!(soak_alone.contains("--wave"), "{soak_alone}");

    // A dry run stores nothing and says what each wave holds.
    let preview = json(
        &hub,
        &[
            "rotate",
            "--wave",
            "staging",
            "--wave",
            "prod-eu,prod-us",
            "--dry-run",
        ],
    );
    assert_eq!(preview["state"], "dry-run", "{preview:#}");
    let reason = preview["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("wave 1: staging (2 nodes)")
            && reason.contains("wave 2: prod-eu (4 nodes), prod-us (4 nodes)"),
        "{reason}"
    );
    assert!(
        json(&hub, &["rollouts"])
            .as_array()
            .expect("list")
            .is_empty()
    );

    let created = json(
        &hub,
        &[
            "rotate",
            "--wave",
            "staging",
            "--wave",
            "prod-eu,prod-us",
            "--soak",
            "4s",
        ],
    );
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["state"], "running", "{created:#}");
    assert_eq!(created["soak_seconds"], 4);
    let staging_plan = created["waves"][0]["plans"][0]["plan"]
        .as_str()
        .expect("the first wave's plan exists at once")
        .to_owned();
    assert!(
        created["waves"][1]["plans"]
            .as_array()
            .expect("plans")
            .is_empty()
    );
    let plan = json(&hub, &["plan", "show", &staging_plan]);
    assert_eq!(
        (&plan["cluster"], &plan["rollout"]),
        (&Value::from("staging"), &Value::from(id.as_str()))
    );
    // A cluster is in one active rollout at a time.
    let again = refused(&hub, &["restart", "--wave", "prod-us"]);
    assert!(
        again.contains(&format!("cluster prod-us is in rollout {id}")),
        "{again}"
    );

    let soaking = wave_soaking(&hub, &id).await;
    assert!(
        soaking["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("soaking until"),
        "{soaking:#}"
    );
    let done = wait_rollout(
        &hub,
        &id,
        "completed",
        Duration::from_secs(120),
        state_is("completed"),
    )
    .await;
    assert!(
        done["waves"]
            .as_array()
            .expect("waves")
            .iter()
            .all(|w| w["state"] == "done"),
        "{done:#}"
    );
    let events = done["events"].to_string();
    assert!(
        events.contains("soak of 4 s") && events.contains("wave 2 (prod-eu, prod-us) starts"),
        "{events}"
    );

    let (s, e, u) = (staging.spans(), eu.spans(), us.spans());
    assert_eq!((s.len(), e.len(), u.len()), (2, 4, 4), "every node once");
    let prod: Vec<OpSpan> = e.iter().chain(u.iter()).cloned().collect();
    // Wave 2 starts only after wave 1 ended and the soak passed (whole seconds in the store,
    // so at least 3 of the 4 s are visible here).
    let gap = first_start(&prod).duration_since(last_end(&s));
    assert!(
        gap >= Duration::from_secs(3),
        "wave 2 began {gap:?} after wave 1 ended"
    );
    for cluster in [&s, &e, &u] {
        assert_eq!(
            max_overlap(cluster),
            1,
            "one node at a time within a cluster"
        );
    }
    assert_eq!(
        max_overlap(&prod),
        2,
        "the second wave's clusters ran at the same time"
    );
    assert_eq!(max_overlap(&of(&prod, "prod-eu-")), 1);

    // `rollout watch` of an ended rollout prints it once and exits 0 (completed).
    let watched = tokio::task::block_in_place(|| hub.run(&["rollout", "watch", &id]));
    assert_eq!(watched.status.code(), Some(0), "{watched:?}");
    assert!(
        String::from_utf8_lossy(&watched.stdout).contains("completed"),
        "{watched:?}"
    );
    let listed = json(&hub, &["rollouts"]);
    let listed = listed.as_array().expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (&listed[0]["id"], &listed[0]["state"]),
        (&Value::from(id.as_str()), &Value::from("completed"))
    );
    let table = tokio::task::block_in_place(|| hub.cli(&["rollouts"])).expect("rollouts table");
    assert!(
        table.starts_with("ID") && table.contains("completed") && table.contains("2/2"),
        "{table}"
    );
    let metrics = tokio::task::block_in_place(|| {
        rke2ops_tests::http::get(hub.metrics_addr(), "/metrics", None)
    })
    .expect("metrics");
    let sample = |metric: &str, labels: &str| rke2ops_tests::http::sample(&metrics, metric, labels);
    assert_eq!(
        sample("rke2ops_hub_rollouts", "state=\"completed\""),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            "rke2ops_hub_plans",
            "state=\"completed\",cluster=\"prod-us\""
        ),
        Some(1.0),
        "{metrics}"
    );
    let plans = json(&hub, &["plans"]);
    assert_eq!(
        plans
            .as_array()
            .expect("plans")
            .iter()
            .filter(|p| p["rollout"] == id.as_str())
            .count(),
        3,
        "{plans:#}"
    );
}

/// Waits until the rollout's first wave is soaking, and returns the view.
async fn wave_soaking(hub: &HubProcess, id: &str) -> Value {
    wait_rollout(hub, id, "soaking", Duration::from_secs(60), |v| {
        v["waves"][0]["state"] == "soaking"
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blocker_ends_the_soak_and_pause_resume_abort_apply_to_the_whole_rollout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = tokio::task::block_in_place(|| HubProcess::start(dir.path(), "127.0.61.11"));
    let addr = hub.addr.parse().expect("addr");
    let staging = FakeFleet::start_in(addr, &hub.socket(), &spec(1, 1), "staging").await;
    let prod = FakeFleet::start_in(addr, &hub.socket(), &spec(3, 1), "prod").await;

    let created = json(
        &hub,
        &[
            "restart", "--wave", "staging", "--wave", "prod", "--soak", "20s",
        ],
    );
    let id = created["id"].as_str().expect("id").to_owned();
    wave_soaking(&hub, &id).await;
    // A blocker appears in the soaking cluster: the soak fails and prod is never touched.
    staging.set_findings("staging-agent-1", &[pem_blocker()]);
    let halted = wait_rollout(
        &hub,
        &id,
        "halted",
        Duration::from_secs(40),
        state_is("halted"),
    )
    .await;
    let reason = halted["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("soak of wave 1 (staging) failed")
            && reason.contains("cluster staging")
            && reason.contains("pem-empty-or-corrupt"),
        "{reason}"
    );
    assert!(
        prod.spans().is_empty(),
        "prod untouched: {:?}",
        prod.spans()
    );
    assert!(
        halted["waves"][1]["plans"]
            .as_array()
            .expect("plans")
            .is_empty()
    );

    // Fixed: resume starts a whole soak again, then the next wave runs.
    staging.set_findings("staging-agent-1", &[]);
    let started = Instant::now();
    loop {
        let doctor = tokio::task::block_in_place(|| {
            hub.run(&["doctor", "--cluster", "staging", "--output", "json"])
        });
        let doctor = String::from_utf8_lossy(&doctor.stdout).into_owned();
        if !doctor.contains("pem-empty-or-corrupt") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "blocker never cleared: {doctor}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let dry = json(&hub, &["rollout", "resume", &id, "--dry-run"]);
    assert_eq!(dry["state"], "halted", "a dry run changes nothing");
    let resumed_at = Instant::now();
    let resumed = json(&hub, &["rollout", "resume", &id]);
    assert_eq!(resumed["state"], "running", "{resumed:#}");
    let prod_running = wait_rollout(&hub, &id, "at wave 2", Duration::from_secs(60), |v| {
        v["current_wave"] == 1 && !v["waves"][1]["plans"].as_array().is_none_or(Vec::is_empty)
    })
    .await;
    assert!(
        resumed_at.elapsed() >= Duration::from_secs(18),
        "the soak restarted at resume: wave 2 began after {:?}",
        resumed_at.elapsed()
    );
    let prod_plan = prod_running["waves"][1]["plans"][0]["plan"]
        .as_str()
        .expect("prod plan")
        .to_owned();

    // Pause the whole rollout: its running plan pauses too; resume continues both.
    let paused = json(&hub, &["rollout", "pause", &id]);
    assert_eq!(paused["state"], "paused", "{paused:#}");
    let plan = json(&hub, &["plan", "show", &prod_plan]);
    assert!(
        plan["state"] == "paused" || plan["state"] == "completed",
        "the wave's plan follows the pause: {plan:#}"
    );
    let skip = refused(&hub, &["rollout", "pause", &id]);
    assert!(skip.contains("only a running rollout pauses"), "{skip}");
    json(&hub, &["rollout", "resume", &id]);
    wait_rollout(
        &hub,
        &id,
        "completed",
        Duration::from_secs(90),
        state_is("completed"),
    )
    .await;
    assert_eq!(prod.spans().len(), 4, "every prod node once");
    let again = refused(&hub, &["rollout", "abort", &id]);
    assert!(
        again.contains(&format!("rollout {id} is completed")),
        "{again}"
    );

    // Abort: the current wave's plan is aborted and no later wave starts.
    let second = json(&hub, &["rotate", "--wave", "staging", "--wave", "prod"]);
    let second_id = second["id"].as_str().expect("id").to_owned();
    let staging_plan = second["waves"][0]["plans"][0]["plan"]
        .as_str()
        .expect("plan")
        .to_owned();
    let aborted = json(&hub, &["rollout", "abort", &second_id]);
    assert_eq!(aborted["state"], "aborted", "{aborted:#}");
    let plan = json(&hub, &["plan", "show", &staging_plan]);
    assert_eq!(plan["state"], "aborted", "{plan:#}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = json(&hub, &["rollout", "show", &second_id]);
    assert!(
        after["waves"][1]["plans"]
            .as_array()
            .expect("plans")
            .is_empty(),
        "{after:#}"
    );
    assert_eq!(
        prod.spans().len(),
        4,
        "no prod node touched by the aborted rollout"
    );
}
