//! The hub with real agents: three simulated RKE2 nodes enroll with single-use tokens and a
//! pinned hub CA, appear in `rke2-hub nodes` with their roles, versions and certificate
//! status; a certificate replaced on a node shows up in `rke2-hub certs` within seconds; a
//! node whose agent stops is offline; a hub restart keeps the inventory.
//!
//! Needs root and `cargo build --workspace --bins` first.

use std::time::{Duration, Instant};

use rke2ops_tests::ground::require_root_and_tools;
use rke2ops_tests::hub::HubProcess as Hub;
use rke2ops_tests::plans::wait_until;
use rke2ops_tests::sim::cluster::{self, SimCluster};
use rke2ops_tests::sim::tree::{Role, Validity};
use serde_json::Value;

fn node<'a>(nodes: &'a Value, name: &str) -> Option<&'a Value> {
    nodes["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == name)
}

#[test]
fn three_nodes_enroll_report_and_survive_a_hub_restart() {
    require_root_and_tools();
    let state = tempfile::tempdir().expect("state");
    // In the ground network, on an address kept across the restart below.
    let hub_addr = rke2ops_tests::ground::ground()
        .expect("ground network")
        .lease_station()
        .expect("hub address");
    let hub_ip = hub_addr.ip().to_string();
    let hub = Hub::start_in_ground_on(state.path(), &hub_ip, &[]);
    let cluster = SimCluster::boot(1, 2).expect("cluster");
    for sim in cluster.nodes() {
        rke2ops_tests::hub::enroll_agent(&sim.node, &hub, "heartbeat_secs = 2\n").expect("enroll");
    }
    wait_until(
        "three nodes online with status",
        Duration::from_secs(60),
        || {
            let nodes = hub.json(&["nodes"]);
            cluster.nodes().all(|sim| {
                node(&nodes, sim.node.name())
                    .is_some_and(|n| n["online"] == true && n["worst_status"] == "OK")
            })
        },
    );
    let nodes = hub.json(&["nodes"]);
    for sim in cluster.nodes() {
        let n = node(&nodes, sim.node.name()).expect("listed");
        let role = if sim.role == Role::Server {
            "server"
        } else {
            "agent"
        };
        assert_eq!(n["role"], role, "{n:#}");
        assert_eq!(n["rke2_version"], "v1.34.1+rke2r1", "{n:#}");
        assert_eq!(n["service_state"], "active", "{n:#}");
        assert!(n["renewal_deadline"].is_string(), "{n:#}");
    }
    let table = hub.cli(&["nodes"]).expect("table");
    assert!(table.starts_with("NAME"), "{table}");

    // A certificate replaced on agent-1 shows up at the hub.
    let worker = &cluster.agents[0];
    let setup = cluster::NodeSetup::new(Role::Agent, Some(cluster.servers[0].node.ip()))
        .with_validity(
            "agent/client-kubelet.crt",
            Validity::ExpiresIn(Duration::from_secs(30 * 86_400)),
        );
    let started = Instant::now();
    cluster::write_node(&worker.node, &setup, &cluster.cas).expect("replace certificates");
    wait_until(
        "the hub sees the expiring kubelet certificate",
        Duration::from_secs(20),
        || {
            let certs = hub.json(&[
                "certs",
                "--node",
                worker.node.name(),
                "--expiring-within",
                "40d",
            ]);
            certs["certificates"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["path"] == "agent/client-kubelet.crt" && c["status"] == "WARNING")
            })
        },
    );
    eprintln!(
        "certificate change reached the hub after {:?}",
        started.elapsed()
    );
    let certs = hub.cli(&["certs"]).expect("certs table");
    assert!(certs.starts_with("NODE"), "{certs}");
    assert!(
        hub.cli(&["certs", "--node", "no-such-node"]).is_none(),
        "unknown node is an error"
    );

    // agent-2's agent stops: offline.
    let quiet = &cluster.agents[1];
    quiet
        .node
        .systemctl(&["stop", "rke2-node-agent.service"])
        .expect("stop agent");
    wait_until("agent-2 is offline", Duration::from_secs(20), || {
        node(&hub.json(&["nodes"]), quiet.node.name()).is_some_and(|n| n["online"] == false)
    });

    // A hub restart keeps the inventory; running agents come back online.
    hub.stop();
    let hub = Hub::start_in_ground_on(state.path(), &hub_ip, &[]);
    let nodes = hub.json(&["nodes"]);
    for sim in cluster.nodes() {
        assert!(
            node(&nodes, sim.node.name()).is_some(),
            "{} kept after restart",
            sim.node.name()
        );
    }
    wait_until("server-1 reconnects", Duration::from_secs(90), || {
        node(&hub.json(&["nodes"]), cluster.servers[0].node.name())
            .is_some_and(|n| n["online"] == true)
    });
    assert_eq!(
        node(&hub.json(&["nodes"]), quiet.node.name()).map(|n| n["online"].clone()),
        Some(Value::Bool(false))
    );
}
