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
//! Needs root and `cargo build --workspace --bins` first.

use std::time::Duration;

use rke2ops_tests::ground::require_root_and_tools;
use rke2ops_tests::plans::{enroll_all, hub_address, start_hub, wait_state, wait_until};
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
