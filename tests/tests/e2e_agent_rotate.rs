//! Certificate operations of the real `rke2-node-agent` on simulated RKE2 nodes (a real
//! systemd + D-Bus per node, the simulated `rke2 server/agent` as Type=notify units with a
//! real etcd): rotation on servers and agents, rollback when RKE2 does not come back, an
//! agent killed at each step, the etcd quorum guard, and renew-by-restart.
//!
//! Needs root and `cargo build --workspace --bins` first.

use std::path::Path;
use std::time::{Duration, Instant};

use rke2ops_tests::ground::{ExecOutput, Node, built_binary, require_root_and_tools};
use rke2ops_tests::sim::cluster::{self, DATA_DIR, SimCluster, SimNode, serial_of};
use rke2ops_tests::sim::tree::{Role, Validity};

const AGENT: &str = "/usr/local/bin/rke2-node-agent";
const COPY: &str = "/etc/rancher/rke2/copies/admin.yaml";

/// Installs the agent binary and a config pointing at this node's endpoints; writes a
/// kubeconfig copy (with its own `server:`) on servers.
fn install_agent(sim: &SimNode) {
    let node = &sim.node;
    node.install_binary(built_binary("rke2-node-agent"), AGENT)
        .expect("install agent");
    // Every address is the agent's production default (the node has its own loopback).
    let mut config = "ready_timeout_secs = 60\n".to_owned();
    if sim.role == Role::Server {
        let admin = node
            .read_file("/etc/rancher/rke2/rke2.yaml")
            .expect("rke2.yaml");
        let copy = String::from_utf8(admin)
            .expect("utf-8")
            .replace("https://127.0.0.1:6443", "https://lb.example.internal:6443");
        node.write_file(COPY, copy).expect("copy");
        config.push_str(&format!("kubeconfigs = [\"{COPY}\"]\n"));
    }
    node.write_file("/etc/rke2-ops/node-agent.toml", config)
        .expect("config");
}

fn agent(node: &Node, args: &[&str]) -> ExecOutput {
    let mut argv = vec![AGENT];
    argv.extend_from_slice(args);
    let out = node.exec(&argv).expect("exec agent");
    eprintln!(
        "$ rke2-node-agent {}\n{}{}",
        args.join(" "),
        out.stdout,
        out.stderr
    );
    out
}

fn leaves(sim: &SimNode) -> Vec<String> {
    sim.tree.leaves().map(|(rel, _)| rel.to_owned()).collect()
}

fn serials(sim: &SimNode) -> Vec<(String, Option<u64>)> {
    leaves(sim)
        .into_iter()
        .map(|rel| (rel.clone(), serial_of(&sim.node, &rel)))
        .collect()
}

fn backups(node: &Node, parent: &str) -> Vec<String> {
    let dir = node
        .host_path(Path::new(DATA_DIR).join(parent))
        .expect("path");
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with("tls-"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// The agent's own check must pass: every file readable, chains and keys verified.
fn assert_tree_consistent(node: &Node) {
    let out = agent(node, &["check", "--output", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("check json");
    assert_eq!(doc["errors"], serde_json::json!([]), "tree has errors");
    assert_eq!(out.status.code(), Some(0), "every certificate OK");
}

fn assert_active(sim: &SimNode) {
    sim.node
        .wait_for_unit_state(sim.unit(), "active", Duration::from_secs(30))
        .expect("RKE2 active");
}

#[test]
fn rotation_on_a_server_reissues_every_leaf_and_the_apiserver_serves_the_new_one() {
    require_root_and_tools();
    let cluster = SimCluster::boot(1, 0).expect("cluster");
    let server = &cluster.servers[0];
    install_agent(server);
    let before = serials(server);
    let started = Instant::now();
    let out = agent(&server.node, &["rotate"]);
    eprintln!("rotation took {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(0), "rotate succeeded");
    assert!(
        out.stdout.contains("verify-served ok"),
        "served certificate verified"
    );
    let after = serials(server);
    for ((rel, old), (_, new)) in before.iter().zip(&after) {
        assert!(new.is_some(), "{rel} exists after rotation");
        assert_ne!(old, new, "{rel} was reissued");
    }
    assert_eq!(
        backups(&server.node, "server").len(),
        1,
        "one tls-<unix> backup"
    );
    assert_tree_consistent(&server.node);
    // The kubeconfig copy has the new client certificate and keeps its own server.
    let copy = String::from_utf8(server.node.read_file(COPY).expect("copy")).expect("utf-8");
    let admin = String::from_utf8(
        server
            .node
            .read_file("/etc/rancher/rke2/rke2.yaml")
            .expect("admin"),
    )
    .expect("utf-8");
    assert!(copy.contains("https://lb.example.internal:6443"), "{copy}");
    let data_line = |text: &str| {
        text.lines()
            .find(|l| l.contains("client-certificate-data"))
            .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
    };
    assert_eq!(
        data_line(&copy),
        data_line(&admin),
        "copy carries the new client certificate"
    );
    // The apiserver accepts the new admin certificate.
    let (status, _) = cluster::https_get(
        &server.node,
        6443,
        "/readyz",
        Some("server/tls/client-admin"),
    )
    .expect("readyz");
    assert_eq!(status, 200);
}

#[test]
fn rotation_on_an_agent_node_reissues_its_leaves() {
    require_root_and_tools();
    let cluster = SimCluster::boot(1, 1).expect("cluster");
    let worker = &cluster.agents[0];
    install_agent(worker);
    let before = serials(worker);
    let out = agent(&worker.node, &["rotate"]);
    assert_eq!(out.status.code(), Some(0), "rotate succeeded");
    assert!(
        !out.stdout.contains("verify-served"),
        "no apiserver on an agent node"
    );
    for ((rel, old), (_, new)) in before.iter().zip(&serials(worker)) {
        assert_ne!(old, new, "{rel} was reissued");
    }
    assert_eq!(
        backups(&worker.node, "agent").len(),
        1,
        "agent/tls-<unix> backup"
    );
    assert_tree_consistent(&worker.node);
}

#[test]
fn rotating_one_service_leaves_the_others_alone() {
    require_root_and_tools();
    let cluster = SimCluster::boot(1, 0).expect("cluster");
    let server = &cluster.servers[0];
    install_agent(server);
    let before = serials(server);
    let dry = agent(&server.node, &["rotate", "--service", "etcd", "--dry-run"]);
    assert_eq!(dry.status.code(), Some(0));
    assert!(
        dry.stdout.contains("server/tls/etcd/client.crt"),
        "dry run lists the files"
    );
    assert_eq!(serials(server), before, "dry run changed nothing");
    assert!(
        backups(&server.node, "server").is_empty(),
        "dry run made no backup"
    );

    let bad = agent(&server.node, &["rotate", "--service", "etcdd"]);
    assert_ne!(bad.status.code(), Some(0));
    assert!(bad.stderr.contains("etcdd"), "unknown service is named");

    let out = agent(&server.node, &["rotate", "--service", "etcd"]);
    assert_eq!(out.status.code(), Some(0), "rotate etcd succeeded");
    for ((rel, old), (_, new)) in before.iter().zip(&serials(server)) {
        // RKE2 reissues agent certificates on every start; server leaves outside etcd stay.
        if rel.starts_with("server/tls/etcd/") {
            assert_ne!(old, new, "{rel} reissued");
        } else if rel.starts_with("server/") {
            assert_eq!(old, new, "{rel} untouched");
        }
    }
}

#[test]
fn unit_that_fails_to_start_after_rotation_gets_the_backup_back() {
    require_root_and_tools();
    let cluster = SimCluster::boot(1, 0).expect("cluster");
    let server = &cluster.servers[0];
    install_agent(server);
    let before = serials(server);
    // The next start fails once (like a bad certificate), the one after succeeds.
    cluster::set_fault(&server.node, "fail-start", "1").expect("fault");
    let out = agent(&server.node, &["rotate"]);
    assert_eq!(out.status.code(), Some(1), "rotation reported as failed");
    assert!(
        out.stdout.contains("FAILED: start-unit"),
        "the failing step is named:\n{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("restore-backup ok"),
        "backup restored:\n{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("last lines of rke2-server.service's journal"),
        "journal reported"
    );
    assert_active(server);
    for ((rel, old), (_, new)) in before.iter().zip(&serials(server)) {
        if rel.starts_with("server/") {
            assert_eq!(old, new, "{rel} is the original again");
        }
    }
    assert_tree_consistent(&server.node);
}

#[test]
fn empty_pem_left_at_start_is_restored_from_the_backup() {
    require_root_and_tools();
    let cluster = SimCluster::boot(1, 0).expect("cluster");
    let server = &cluster.servers[0];
    install_agent(server);
    cluster::set_fault(
        &server.node,
        "empty-pem",
        "server/tls/serving-kube-apiserver.crt",
    )
    .expect("fault");
    let out = agent(&server.node, &["rotate"]);
    assert_eq!(out.status.code(), Some(1), "rotation reported as failed");
    assert!(out.stdout.contains("restore-backup ok"), "{}", out.stdout);
    assert_active(server);
    let pem = server
        .node
        .read_file(format!("{DATA_DIR}/server/tls/serving-kube-apiserver.crt"))
        .expect("read");
    assert!(!pem.is_empty(), "the empty PEM was replaced");
    assert_tree_consistent(&server.node);
    let (status, _) = cluster::https_get(
        &server.node,
        6443,
        "/readyz",
        Some("server/tls/client-admin"),
    )
    .expect("readyz");
    assert_eq!(status, 200);
}

#[test]
fn agent_killed_at_any_step_finishes_or_rolls_back_after_restart() {
    require_root_and_tools();
    let cluster = SimCluster::boot(1, 0).expect("cluster");
    let server = &cluster.servers[0];
    install_agent(server);
    let crash_points = [
        "stop-unit",
        "rotate",
        "rotate:after",
        "verify-backup",
        "start-unit",
        "start-unit:after",
        "wait-ready",
        "verify-fresh",
        "refresh-kubeconfigs",
        "verify-served:after",
    ];
    for point in crash_points {
        let out = server
            .node
            .exec(&[
                "env",
                &format!("RKE2OPS_TEST_CRASH_AT={point}"),
                AGENT,
                "rotate",
            ])
            .expect("exec");
        assert_eq!(
            out.status.code(),
            None,
            "{point}: killed by a signal\n{}{}",
            out.stdout,
            out.stderr
        );
        let status = agent(&server.node, &["status", "--output", "json"]);
        let doc: serde_json::Value = serde_json::from_str(&status.stdout).expect("status json");
        assert!(
            doc["interrupted_operation"].is_object(),
            "{point}: the journal holds the interrupted operation"
        );
        let resumed = agent(&server.node, &["resume"]);
        assert_eq!(
            resumed.status.code(),
            Some(0),
            "{point}: resumed to success\n{}",
            resumed.stdout
        );
        assert!(
            resumed.stdout.contains("succeeded"),
            "{point}: {}",
            resumed.stdout
        );
        assert_active(server);
        assert_tree_consistent(&server.node);
        let status = agent(&server.node, &["status", "--output", "json"]);
        let doc: serde_json::Value = serde_json::from_str(&status.stdout).expect("status json");
        assert_eq!(
            doc["last_operation"]["step"], "done",
            "{point}: outcome recorded"
        );
        assert!(
            doc["interrupted_operation"].is_null(),
            "{point}: nothing left interrupted"
        );
    }
}

#[test]
fn rotation_is_refused_when_another_etcd_member_is_down() {
    require_root_and_tools();
    let cluster = SimCluster::boot(3, 0).expect("cluster");
    let first = &cluster.servers[0];
    install_agent(first);
    cluster::stop(&cluster.servers[2].node, Role::Server).expect("stop server-3");
    let before = serials(first);
    let out = agent(&first.node, &["rotate"]);
    assert_eq!(out.status.code(), Some(1), "refused");
    assert!(
        out.stdout.contains("preflight FAILED") && out.stdout.contains("quorum"),
        "{}",
        out.stdout
    );
    assert_eq!(serials(first), before, "nothing rotated");
    assert!(
        backups(&first.node, "server").is_empty(),
        "nothing backed up"
    );
    assert_active(first);

    // With all three members back, the same rotation is allowed.
    cluster::start(
        &cluster.servers[2].node,
        Role::Server,
        Duration::from_secs(30),
    )
    .expect("start server-3");
    let out = agent(&first.node, &["rotate", "--service", "admin"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "allowed with quorum kept:\n{}",
        out.stdout
    );
    assert!(out.stdout.contains("3/3 healthy"), "{}", out.stdout);
}

#[test]
fn restart_renews_leaves_inside_the_renewal_window() {
    require_root_and_tools();
    let cluster = SimCluster::boot(1, 0).expect("cluster");
    // Months pass while rke2-server runs: rewrite its leaves as a long-running node would
    // have them (client-admin within 30 days of expiry) without restarting it.
    let setup = cluster::NodeSetup::new(Role::Server, None).with_validity(
        "server/tls/client-admin.crt",
        Validity::ExpiresIn(Duration::from_secs(30 * 86_400)),
    );
    cluster::write_node(&cluster.servers[0].node, &setup, &cluster.cas).expect("age the tree");
    let server = &cluster.servers[0];
    install_agent(server);
    let status = agent(&server.node, &["status", "--output", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&status.stdout).expect("status json");
    assert_eq!(doc["renewal"]["in_window"], true, "{doc:#}");
    let before = serial_of(&server.node, "server/tls/client-admin.crt");
    let out = agent(&server.node, &["restart"]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stdout);
    assert!(out.stdout.contains("verify-renewed ok"), "{}", out.stdout);
    assert_ne!(
        serial_of(&server.node, "server/tls/client-admin.crt"),
        before,
        "renewed by the restart"
    );
    let status = agent(&server.node, &["status", "--output", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&status.stdout).expect("status json");
    assert_eq!(doc["renewal"]["in_window"], false, "{doc:#}");
}

#[test]
fn daemon_under_the_shipped_unit_finishes_an_interrupted_rotation_and_reports_the_service() {
    require_root_and_tools();
    let cluster = SimCluster::boot(1, 0).expect("cluster");
    let server = &cluster.servers[0];
    install_agent(server);
    server
        .node
        .install_shipped_unit("rke2-node-agent.service")
        .expect("install the shipped unit");

    // The operator's rotation dies right after `rke2 certificate rotate` deleted the certs
    // (RKE2 is stopped, nothing regenerated yet).
    let out = server
        .node
        .exec(&["env", "RKE2OPS_TEST_CRASH_AT=start-unit", AGENT, "rotate"])
        .expect("exec");
    assert_eq!(out.status.code(), None, "killed\n{}", out.stdout);
    assert_eq!(
        server
            .node
            .unit_property(server.unit(), "ActiveState")
            .expect("state"),
        "inactive"
    );

    // The agent service (hardened, shipped unit) starts and finishes it.
    server
        .node
        .systemctl(&["start", "rke2-node-agent.service"])
        .expect("start agent");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = agent(&server.node, &["status", "--output", "json"]);
        let doc: serde_json::Value = serde_json::from_str(&status.stdout).expect("status json");
        if doc["last_operation"]["step"] == "done" && doc["interrupted_operation"].is_null() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not finish the rotation: {doc:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_active(server);
    assert_tree_consistent(&server.node);

    let metrics = server
        .node
        .exec(&["curl", "-sS", "http://127.0.0.1:9810/metrics"])
        .expect("curl")
        .stdout;
    assert!(
        metrics.contains("rke2ops_service_active{unit=\"rke2-server.service\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "rke2ops_service_active_since_timestamp_seconds{unit=\"rke2-server.service\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("rke2ops_renewal_restart_due 0"),
        "{metrics}"
    );
    let status_text = server
        .node
        .unit_property("rke2-node-agent.service", "StatusText")
        .expect("status");
    assert!(
        status_text.contains("rke2-server.service active since"),
        "{status_text}"
    );
}
