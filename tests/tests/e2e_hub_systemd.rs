//! The real hub under a real systemd, with the shipped unit file unchanged, on a simulated
//! RKE2 server: the unit's sandbox (dynamic user, strict read-only system, system-call filter,
//! private users) must let the hub do all of its job, not only start.
//!
//! The hub runs inside `server-1` of a one-server simulated cluster, configured the way the
//! unit's comments tell an operator: `/etc/rke2-ops/hub.toml` for addresses and a
//! `LoadCredential=kubeconfig:` drop-in (what `systemctl edit rke2-hub` writes) for the
//! Kubernetes access its dynamic user could not read otherwise. The node's own agent enrolls
//! with it, a `restart` plan cordons, restarts, verifies and uncordons the node through the
//! simulated Kubernetes API, and a hub restart keeps its CA and its plans.
//!
//! Needs root (it boots systemd in namespaces) and `cargo build --workspace --bins` first.

use std::time::Duration;

use rke2ops_tests::ground::{Node, built_binary, require_root_and_tools, wait_until};
use rke2ops_tests::sim::cluster::SimCluster;
use serde_json::Value;

const UNIT: &str = "rke2-hub.service";
const HUB_BIN: &str = "/usr/local/bin/rke2-hub";

/// What `systemctl edit rke2-hub` adds, as the shipped unit's comment says.
const CREDENTIAL_DROPIN: &str = "\
[Service]
LoadCredential=kubeconfig:/etc/rancher/rke2/rke2.yaml
";

fn hub_cli(node: &Node, args: &[&str]) -> rke2ops_tests::ground::ExecOutput {
    let mut argv = vec![HUB_BIN];
    argv.extend_from_slice(args);
    node.exec(&argv).expect("exec rke2-hub")
}

fn hub_json(node: &Node, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["--output", "json"]);
    let out = hub_cli(node, &args);
    assert!(
        out.success(),
        "rke2-hub {}: {}{}",
        args.join(" "),
        out.stdout,
        out.stderr
    );
    serde_json::from_str(&out.stdout).expect("json")
}

fn security_score(node: &Node) -> f64 {
    let security = node
        .exec_ok(&["systemd-analyze", "security", "--no-pager", UNIT])
        .expect("systemd-analyze security");
    security
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .and_then(|l| l.rsplit_once(": "))
        .and_then(|(_, s)| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no overall score:\n{security}"))
}

#[test]
fn the_shipped_hub_unit_runs_a_plan_with_a_credential_kubeconfig() {
    require_root_and_tools();
    // The hub's metrics are read from outside the node: from the ground's side of the bridge.
    rke2ops_tests::ground::enter().expect("enter the ground network");
    let cluster = SimCluster::boot(1, 0).expect("cluster");
    let node = &cluster.servers[0].node;
    let ip = node.ip();

    node.install_binary(built_binary("rke2-hub"), HUB_BIN)
        .expect("install hub");
    node.write_file(
        "/etc/rke2-ops/hub.toml",
        format!(
            "listen_addr = \"{ip}:9811\"\nmetrics_addr = \"{ip}:9812\"\n\
             apiserver_endpoints = [\"https://{ip}:6443\"]\n"
        ),
    )
    .expect("hub config");
    node.install_shipped_unit(UNIT)
        .expect("the node runs the shipped unit unchanged");
    node.install_dropin(UNIT, "kubeconfig", CREDENTIAL_DROPIN)
        .expect("drop-in");
    // Type=notify: `start` returns once the hub said READY=1.
    node.systemctl(&["enable", "--now", UNIT])
        .expect("start hub");
    assert_eq!(
        node.unit_property(UNIT, "ActiveState").expect("state"),
        "active"
    );
    let score = security_score(node);
    assert!(score <= 2.0, "the loaded unit's exposure is {score}");

    // The kubeconfig came from the credential, and the state is the dynamic user's.
    let journal = node.journal(UNIT, 50).expect("journal");
    assert!(
        journal.contains("kubeconfig=/run/credentials/rke2-hub.service/kubeconfig"),
        "{journal}"
    );
    let user = node.unit_property(UNIT, "User").expect("user");
    assert!(
        node.exec_ok(&["test", "-s", "/var/lib/rke2-ops-hub/hub.db"])
            .is_ok(),
        "database in the StateDirectory"
    );
    let modes = node
        .exec_ok(&[
            "stat",
            "-c",
            "%a %U",
            "/run/rke2-ops/hub.sock",
            "/var/lib/private/rke2-ops-hub/pki/ca.key",
        ])
        .expect("stat");
    for line in modes.lines() {
        let (mode, owner) = line.split_once(' ').expect("mode owner");
        assert_eq!(mode, "600", "{modes}");
        assert_ne!(
            owner, "root",
            "owned by the hub's dynamic user ({user}): {modes}"
        );
    }
    // Root reaches the admin socket; anybody else is refused, clearly.
    let other = node
        .exec(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            HUB_BIN,
            "nodes",
        ])
        .expect("exec");
    assert!(!other.success(), "{}", other.stdout);
    assert!(
        other.stderr.contains("/run/rke2-ops/hub.sock"),
        "{}",
        other.stderr
    );

    // The node's agent enrolls with the hub (a token from the CLI, over the socket).
    let token = hub_json(node, &["token", "create", "--ttl", "10m"]);
    rke2ops_tests::hub::install_enrolling_agent(
        node,
        &format!("{ip}:9811"),
        &token,
        "heartbeat_secs = 2\nready_timeout_secs = 20\n",
    )
    .expect("agent enrolls");
    let online = || {
        let nodes = hub_json(node, &["nodes"]);
        Ok(nodes["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == 1 && n[0]["online"] == true))
    };
    wait_until(
        "the node online at the hub",
        Duration::from_secs(60),
        online,
    )
    .expect("online");

    // A plan through the sandboxed hub: cordon and uncordon go through the credential's
    // kubeconfig to the (simulated) Kubernetes API.
    let out = hub_cli(node, &["restart", "--settle", "1s", "--watch"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "plan completed:\n{}{}",
        out.stdout,
        out.stderr
    );
    let plan = hub_json(node, &["plan", "show", "1"]);
    assert_eq!(plan["state"], "completed", "{plan:#}");
    assert_eq!(plan["nodes"][0]["phase"], "done", "{plan:#}");
    assert_eq!(plan["nodes"][0]["cordoned_by_plan"], false, "{plan:#}");
    let events: Vec<&str> = plan["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    for expected in ["cordoned", "uncordoned"] {
        assert!(events.contains(&expected), "{expected} in {events:?}");
    }

    // Metrics from outside the node, promtool-clean.
    let metrics = rke2ops_tests::http::get(
        format!("{ip}:9812").parse().expect("addr"),
        "/metrics",
        None,
    )
    .expect("metrics");
    assert!(
        metrics.contains("rke2ops_hub_connected_agents 1"),
        "{metrics}"
    );
    let promtool = rke2ops_tests::http::promtool_check(&metrics);
    assert!(
        promtool.status.success(),
        "{}",
        String::from_utf8_lossy(&promtool.stdout)
    );

    // A restart keeps the CA (agents stay enrolled) and the plans.
    let pin = token["ca_pin"].as_str().expect("pin").to_owned();
    node.systemctl(&["restart", UNIT]).expect("restart hub");
    let again = hub_json(node, &["token", "create", "--ttl", "10m"]);
    assert_eq!(again["ca_pin"].as_str(), Some(pin.as_str()), "same CA");
    let plans = hub_json(node, &["plans"]);
    assert_eq!(plans.as_array().map(Vec::len), Some(1), "{plans:#}");
    wait_until("the agent back online", Duration::from_secs(60), online).expect("online again");

    // SIGTERM: a clean stop, not a failure.
    node.systemctl(&["stop", UNIT]).expect("stop");
    assert_eq!(
        node.unit_property(UNIT, "Result").expect("result"),
        "success"
    );
}
