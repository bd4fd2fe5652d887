//! Application probes on the proving ground: 3 simulated servers + 2 workers, the real agent
//! everywhere, a real hub, and a small HTTP application on each worker (a Python HTTP server
//! as its own systemd unit, like pods that keep running while RKE2 restarts: containerd
//! outlives rke2-agent).
//!
//! - A rolling rotation of all five nodes keeps both applications available: the report says
//!   100 % with no failure.
//! - An application stopped mid-plan holds the next node and halts the plan naming its probe,
//!   with no further node touched; `plan report` carries the outage.
//!
//! - A Deployment whose only replica is pinned to the first worker (a `nodeSelector`, as a
//!   pod on a local volume is): draining that worker takes it down until the worker is back.
//!   The workload probe holds the next worker until it is available again; with a short
//!   `--probe-halt-after` the plan halts naming the probe, the worker in maintenance finishes,
//!   the next one is never touched, and `resume` re-checks and completes the plan.
//!
//! Needs root and `cargo build --workspace --bins` first.

use std::time::Duration;

use rke2ops_tests::ground::require_root_and_tools;
use rke2ops_tests::plans::{
    enroll_all, hub_address, kube_client, start_hub, wait_state, wait_until,
};
use rke2ops_tests::sim::cluster::SimCluster;
use serde_json::Value;

/// Starts the application on `node` at `ip:8080` (a transient unit of the node's systemd).
fn start_app(node: &rke2ops_tests::ground::Node) {
    let ip = node.ip().to_string();
    let out = node
        .exec(&[
            "systemd-run",
            "--unit=shop-app",
            "--collect",
            "/usr/bin/python3",
            "-m",
            "http.server",
            "8080",
            "--bind",
            &ip,
            "--directory",
            "/usr/share/doc",
        ])
        .expect("systemd-run");
    assert!(out.success(), "{}{}", out.stdout, out.stderr);
}

fn probe_args(cluster: &SimCluster) -> Vec<String> {
    cluster
        .agents
        .iter()
        .flat_map(|a| {
            [
                "--probe".to_owned(),
                format!(
                    "http://{}:8080/,name=app-{},interval=1s,threshold=2",
                    a.node.ip(),
                    a.node.name()
                ),
            ]
        })
        .collect()
}

fn probes(view: &Value) -> Vec<Value> {
    view["probes"].as_array().expect("probes").clone()
}

#[test]
fn applications_stay_available_through_a_rotation_and_a_stopped_one_halts_the_plan() {
    rke2ops_tests::ground::block_on(async {
        require_root_and_tools();
        let cluster = tokio::task::block_in_place(|| SimCluster::boot(3, 2).expect("3+2 cluster"));
        for agent in &cluster.agents {
            start_app(&agent.node);
        }
        let state = tempfile::tempdir().expect("state");
        let hub_addr = hub_address();
        let hub = tokio::task::block_in_place(|| {
            start_hub(state.path(), &hub_addr.ip().to_string(), &cluster, None)
        });
        tokio::task::block_in_place(|| enroll_all(&cluster, &hub));
        // A short quiet spell (the long idle is e2e_plans's): the probes' baseline is taken
        // on a settled fleet.
        tokio::time::sleep(Duration::from_secs(10)).await;

        // A rolling rotation: the applications never notice.
        let mut args: Vec<String> = ["rotate", "--settle", "1s"].map(str::to_owned).to_vec();
        args.extend(probe_args(&cluster));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let view = tokio::task::block_in_place(|| hub.json(&args));
        let id = view["id"].as_str().expect("id").to_owned();
        let done = tokio::task::block_in_place(|| {
            wait_state(&hub, &id, "completed", Duration::from_secs(400))
        });
        for p in probes(&done) {
            assert!(p["samples"].as_u64().unwrap_or(0) > 5, "{p:#}");
            assert_eq!(p["failures"], 0, "{p:#}");
            assert_eq!(p["availability_percent"].as_f64(), Some(100.0), "{p:#}");
        }

        // A restart plan; once server-1 is done, agent-2's application stops.
        let mut args: Vec<String> = ["restart", "--settle", "1s", "--probe-halt-after", "5s"]
            .map(str::to_owned)
            .to_vec();
        args.extend(probe_args(&cluster));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let view = tokio::task::block_in_place(|| hub.json(&args));
        let id = view["id"].as_str().expect("id").to_owned();
        tokio::task::block_in_place(|| {
            wait_until("server-1 restarted", Duration::from_secs(120), || {
                hub.json(&["plan", "show", &id])["nodes"][0]["phase"] == "done"
            });
        });
        let stopped = cluster.agents[1]
            .node
            .exec(&["systemctl", "stop", "shop-app"])
            .expect("stop the app");
        assert!(stopped.success());
        let halted = tokio::task::block_in_place(|| {
            wait_state(&hub, &id, "halted", Duration::from_secs(120))
        });
        let reason = halted["reason"].as_str().expect("reason");
        assert!(reason.contains("probe app-agent-2"), "{reason}");
        assert!(reason.contains("down for"), "{reason}");
        let phases: Vec<&str> = halted["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| n["phase"].as_str().unwrap_or(""))
            .collect();
        // server-1 done; server-2 may have been in maintenance when it failed (it finished);
        // nothing after it started.
        assert!(
            phases[2..].iter().all(|p| *p == "pending"),
            "no node started while the probe failed: {phases:?}"
        );
        let report = tokio::task::block_in_place(|| hub.run(&["plan", "report", &id]));
        let report = String::from_utf8_lossy(&report.stdout).into_owned();
        assert!(report.contains("| app-agent-2 |"), "{report}");
        let app2 = probes(&halted)
            .into_iter()
            .find(|p| p["name"] == "app-agent-2")
            .expect("app-agent-2");
        assert_eq!(app2["down"], true, "{app2:#}");
        assert!(app2["failures"].as_u64().unwrap_or(0) >= 2, "{app2:#}");
        let out = tokio::task::block_in_place(|| hub.run(&["abort", &id]));
        assert!(out.status.success());
    });
}

/// A node's entry in a plan view.
fn node_of<'a>(view: &'a Value, name: &str) -> &'a Value {
    view["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == name))
        .unwrap_or_else(|| panic!("no node {name} in {view:#}"))
}

fn at(value: &Value) -> time::OffsetDateTime {
    let text = value.as_str().unwrap_or_else(|| panic!("no time: {value}"));
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// `rotate` of both workers with the workload probe on Deployment `default/shop`.
fn rotate_workers(hub: &rke2ops_tests::hub::HubProcess, halt_after: &str) -> String {
    let view = hub.json(&[
        "rotate",
        "--settle",
        "1s",
        "--node",
        "agent-1",
        "--node",
        "agent-2",
        "--probe-workload",
        "default/Deployment/shop,name=shop,interval=1s,threshold=1",
        "--probe-halt-after",
        halt_after,
    ]);
    view["id"].as_str().expect("id").to_owned()
}

#[test]
fn a_workload_whose_only_replica_is_on_the_drained_node_holds_then_halts_the_plan() {
    rke2ops_tests::ground::block_on(async {
        use k8s_openapi::api::apps::v1::Deployment;
        use k8s_openapi::api::core::v1::Pod;
        use kube::api::{Api, PostParams};
        use rke2ops_tests::sim::kube::fixtures::pinned_workload_pod;

        require_root_and_tools();
        let cluster = tokio::task::block_in_place(|| {
            let cluster = SimCluster::boot(1, 2).expect("1+2 cluster");
            // The replacement pod takes 20 s to run (scheduling, image pull, readiness): the
            // outage outlasts the worker's maintenance, which takes a second or two here.
            let server = &cluster.servers[0];
            rke2ops_tests::sim::cluster::set_env(
                &server.node,
                server.role,
                &[("RKE2_SIM_REPLACEMENT_DELAY", "20")],
            )
            .expect("replacement delay");
            server
                .node
                .systemctl(&["restart", server.unit()])
                .expect("restart");
            server
                .node
                .wait_for_unit_state(server.unit(), "active", Duration::from_secs(60))
                .expect("active");
            cluster
        });
        let state = tempfile::tempdir().expect("state");
        let hub_addr = hub_address();
        let hub = tokio::task::block_in_place(|| {
            start_hub(state.path(), &hub_addr.ip().to_string(), &cluster, None)
        });
        tokio::task::block_in_place(|| enroll_all(&cluster, &hub));
        let client = kube_client(&cluster).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        pods.create(
            &PostParams::default(),
            &pinned_workload_pod("shop-a", "shop", "agent-1", 1),
        )
        .await
        .expect("create the pod");
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
        let available = || async {
            deployments
                .get("shop")
                .await
                .ok()
                .and_then(|d| d.status?.available_replicas)
                .unwrap_or(0)
        };
        assert_eq!(
            available().await,
            1,
            "the Deployment is up before the plans"
        );
        tokio::time::sleep(Duration::from_secs(10)).await;

        // 1. Hold: the outage starts with agent-1's drain and ends 20 s later; agent-2 waits
        //    for it.
        let id = tokio::task::block_in_place(|| rotate_workers(&hub, "300s"));
        let done = tokio::task::block_in_place(|| {
            wait_state(&hub, &id, "completed", Duration::from_secs(300))
        });
        let shop = probes(&done).remove(0);
        assert!(shop["failures"].as_u64().unwrap_or(0) >= 1, "{shop:#}");
        assert!(
            shop["availability_percent"].as_f64().unwrap_or(100.0) < 100.0,
            "{shop:#}"
        );
        let outage = &shop["longest_outage"];
        assert!(
            outage["nodes_in_maintenance"]
                .as_array()
                .is_some_and(|n| n.iter().any(|n| n == "agent-1")),
            "{shop:#}"
        );
        let second = at(&node_of(&done, "agent-2")["started_at"]);
        assert!(
            second >= at(&outage["end"]),
            "agent-2 started at {second} during the outage: {shop:#}"
        );

        // 2. Halt: down for longer than --probe-halt-after.
        let id = tokio::task::block_in_place(|| rotate_workers(&hub, "5s"));
        let halted = tokio::task::block_in_place(|| {
            wait_state(&hub, &id, "halted", Duration::from_secs(120))
        });
        let reason = halted["reason"].as_str().expect("reason");
        assert!(
            reason.contains("probe shop") && reason.contains("down for"),
            "{reason}"
        );
        assert!(reason.contains("default/Deployment/shop"), "{reason}");
        // The node in maintenance finishes its operation; the next is never touched.
        let finished = tokio::task::block_in_place(|| {
            wait_until("agent-1 done", Duration::from_secs(120), || {
                node_of(&hub.json(&["plan", "show", &id]), "agent-1")["phase"] == "done"
            });
            hub.json(&["plan", "show", &id])
        });
        assert_eq!(finished["state"], "halted", "{finished:#}");
        assert_eq!(
            node_of(&finished, "agent-2")["phase"],
            "pending",
            "{finished:#}"
        );
        let started = std::time::Instant::now();
        while available().await < 1 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "shop never back"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // `resume` re-checks the probe, which passes again: the plan completes.
        let out = tokio::task::block_in_place(|| hub.run(&["resume", &id]));
        assert!(out.status.success(), "{out:?}");
        let done = tokio::task::block_in_place(|| {
            wait_state(&hub, &id, "completed", Duration::from_secs(300))
        });
        assert_eq!(node_of(&done, "agent-2")["phase"], "done", "{done:#}");
    });
}
