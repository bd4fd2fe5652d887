//! The node agent's own time in a rotation, beyond the waits on RKE2 (a bench binary).
//!
//! Boots one simulated server (real systemd, D-Bus, etcd; simulated RKE2), runs five
//! rotations with the real agent, and splits each from the agent's journal into the waits on
//! RKE2 (stop job, `rke2 certificate rotate`, start job, readiness) and the agent's own work
//! (preflight incl. the etcd health and quorum check, backup and snapshot, verification,
//! kubeconfig refresh, served-certificate check, journal writes). Then times 200 unit-state
//! reads over D-Bus inside the node. Target: own time < 200 ms per rotation.
//!
//! Needs root and release binaries:
//! `cargo build --release --workspace --bins && cargo bench -p rke2ops-tests --bench rotation`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_precision_loss)]

use rke2ops_tests::ground::{built_binary, require_root_and_tools};
use rke2ops_tests::sim::cluster::SimCluster;

const AGENT: &str = "/usr/local/bin/rke2-node-agent";
/// Steps whose time is RKE2's (or systemd's), not the agent's.
const WAITS: [&str; 4] = ["stop-unit", "rotate", "start-unit", "wait-ready"];

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    require_root_and_tools();
    let cluster = SimCluster::boot(1, 0).expect("cluster");
    let server = &cluster.servers[0];
    let node = &server.node;
    node.install_binary(built_binary("rke2-node-agent"), AGENT)
        .expect("agent");
    node.install_binary(
        built_binary("rke2-node-agent-dbus-probe"),
        "/usr/local/bin/dbus-probe",
    )
    .expect("probe");
    node.write_file("/etc/rke2-ops/node-agent.toml", "ready_timeout_secs = 60\n")
        .expect("config");

    let mut totals = Vec::new();
    let mut waits = Vec::new();
    let mut own = Vec::new();
    let mut per_step: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for round in 0..5 {
        let out = node.exec(&[AGENT, "rotate"]).expect("rotate");
        assert_eq!(out.status.code(), Some(0), "round {round}: {}", out.stdout);
        let last = node
            .read_file("/var/lib/rke2-ops/node-agent/ops/last.json")
            .expect("journal");
        let record: serde_json::Value = serde_json::from_slice(&last).expect("json");
        let parse = |key: &str| {
            time::OffsetDateTime::parse(
                record[key].as_str().expect("time"),
                &time::format_description::well_known::Rfc3339,
            )
            .expect("rfc3339")
        };
        let total = (parse("finished_at") - parse("started_at")).as_seconds_f64() * 1000.0;
        let mut wait = 0.0;
        for step in record["log"].as_array().expect("log") {
            let name = step["step"].as_str().expect("name").to_owned();
            let millis = step["millis"].as_f64().expect("millis");
            if WAITS.contains(&name.as_str()) {
                wait += millis;
            }
            per_step.entry(name).or_default().push(millis);
        }
        totals.push(total);
        waits.push(wait);
        own.push(total - wait);
    }
    println!("rotation (1 simulated server, 5 rounds, medians):");
    println!("  total            {:7.1} ms", median(totals));
    println!(
        "  waits on RKE2    {:7.1} ms  ({})",
        median(waits),
        WAITS.join(", ")
    );
    println!("  agent's own      {:7.1} ms  target < 200 ms", median(own));
    for (step, values) in per_step {
        println!("    {step:<20} {:7.1} ms", median(values));
    }

    let bench = node
        .exec(&[
            "/usr/local/bin/dbus-probe",
            "bench-state",
            "rke2-server.service",
            "200",
        ])
        .expect("probe");
    println!(
        "unit-state read over D-Bus (200 reads): {}",
        bench.stdout.trim()
    );
}
