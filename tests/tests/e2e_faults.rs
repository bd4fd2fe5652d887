//! Network faults during rolling plans, on the proving ground's network (every node in its own
//! namespace on the ground's bridge, the hub a station there; see `rke2ops_tests::ground::net`):
//! an agent cut off from the hub in the middle of its operation, a server cut off from its
//! etcd peers before its turn, and the hub cut off from one apiserver. Cuts drop packets
//! silently in both directions (nftables in the node's namespace), as a real partition does.
//!
//! Each test asserts the plan invariants throughout (sampled by `plans::Recorder`): never two
//! nodes in maintenance at once, etcd quorum never lost, and nothing left cordoned.
//!
//! Needs root and `cargo build --workspace --bins` first.

use std::time::{Duration, Instant};

use rke2ops_tests::ground::{Cut, require_root_and_tools};
use rke2ops_tests::hub::HubProcess as Hub;
use rke2ops_tests::plans::{
    IN_MAINTENANCE, Recorder, assert_fresh_serials, boot_fleet, cordoned, event_lines, kube_client,
    plan, serials, wait_nodes_ready, wait_state, wait_until,
};
use rke2ops_tests::sim::cluster;
use serde_json::Value;
use tokio::task::block_in_place;

/// The phase of `node` in the plan view.
fn phase<'a>(view: &'a Value, node: &str) -> &'a str {
    view["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["name"] == node))
        .and_then(|n| n["phase"].as_str())
        .unwrap_or_default()
}

/// Nodes of the plan in a maintenance phase.
fn busy(view: &Value) -> Vec<String> {
    view["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter(|n| IN_MAINTENANCE.contains(&n["phase"].as_str().unwrap_or_default()))
                .filter_map(|n| n["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the hub's inventory shows `node` online.
fn online(hub: &Hub, node: &str) -> bool {
    hub.json(&["nodes"])["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["name"] == node))
        .is_some_and(|n| n["online"] == true)
}

/// The invariants every plan keeps, checked at the end of a completed plan.
async fn assert_invariants(recorder: Recorder, done: &Value, client: &kube::Client) {
    let (max_busy, min_healthy, order) = recorder.finish();
    eprintln!("plan done: max busy {max_busy}, min healthy etcd {min_healthy}, order {order:?}");
    assert_eq!(max_busy, 1, "never two nodes in maintenance at once");
    assert!(
        min_healthy >= 2,
        "etcd quorum never lost (min healthy {min_healthy})"
    );
    for n in done["nodes"].as_array().expect("nodes") {
        assert_eq!(n["phase"], "done", "{n:#}");
    }
    assert!(
        cordoned(client).await.is_empty(),
        "nothing left cordoned by the plan"
    );
}

#[test]
fn an_agent_cut_off_from_the_hub_mid_operation_finishes_alone_and_the_plan_waits_for_it() {
    rke2ops_tests::ground::block_on(async {
        require_root_and_tools();
        let fleet = block_in_place(|| boot_fleet(None));
        let (cluster, hub) = (&fleet.cluster, &fleet.hub);
        let client = kube_client(cluster).await;
        wait_nodes_ready(&client, 5, Duration::from_secs(60)).await;
        let server2 = &cluster.servers[1].node;
        // server-2's RKE2 takes 10 s to become ready at its next start: its operation is
        // surely still running when the cut lands.
        cluster::set_fault(server2, "slow-start", "10").expect("slow-start on server-2");
        let before = serials(cluster);

        let view = block_in_place(|| hub.json(&["rotate", "--settle", "1s"]));
        let id = view["id"].as_str().expect("id").to_owned();
        let recorder = Recorder::start(hub.socket(), id.clone(), cluster);
        block_in_place(|| {
            wait_until("server-2 operating", Duration::from_secs(180), || {
                phase(&plan(hub, &id), "server-2") == "operate"
            });
        });
        server2
            .cut(Cut::Hosts(vec![hub.ip()]))
            .expect("cut server-2 off from the hub");
        let cut_at = Instant::now();
        eprintln!("server-2 cut off from the hub in the middle of its rotation");

        // The node finishes on its own: a new apiserver certificate, RKE2 active again.
        let rel = "server/tls/serving-kube-apiserver.crt";
        let old_serial = before
            .iter()
            .find(|(n, _)| n == "server-2")
            .and_then(|(_, s)| *s);
        block_in_place(|| {
            wait_until(
                "server-2 rotated and active on its own",
                Duration::from_secs(120),
                || {
                    cluster::serial_of(server2, rel) != old_serial
                        && server2
                            .unit_property("rke2-server.service", "ActiveState")
                            .is_ok_and(|s| s == "active")
                },
            );
        });
        cluster::clear_fault(server2, "slow-start").expect("clear slow-start");
        // The hub hears nothing: it sees the agent gone and waits, starting nobody else.
        block_in_place(|| {
            wait_until(
                "the hub sees server-2 offline",
                Duration::from_secs(60),
                || !online(hub, "server-2"),
            );
            while cut_at.elapsed() < Duration::from_secs(40) {
                let view = plan(hub, &id);
                assert_eq!(view["state"], "running", "the plan waits: {view:#}");
                for other in ["server-3", "agent-1", "agent-2"] {
                    assert_eq!(phase(&view, other), "pending", "{other} waits: {view:#}");
                }
                let busy = busy(&view);
                assert!(
                    busy.iter().all(|n| n == "server-2"),
                    "only server-2 in maintenance: {busy:?}"
                );
                std::thread::sleep(Duration::from_millis(500));
            }
        });

        server2.heal().expect("heal server-2");
        eprintln!("server-2 back after {:?}", cut_at.elapsed());
        let done = block_in_place(|| wait_state(hub, &id, "completed", Duration::from_secs(300)));
        let server2_view = done["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["name"] == "server-2"))
            .expect("server-2 in the plan");
        assert_eq!(
            server2_view["attempt"], 1,
            "the operation the node finished alone counts; it is not run again: {server2_view:#}"
        );
        assert_fresh_serials(&before, &serials(cluster));
        assert_invariants(recorder, &done, &client).await;
    });
}

#[test]
fn a_server_cut_off_from_its_etcd_peers_holds_the_gate_and_the_hub_fails_over_apiservers() {
    rke2ops_tests::ground::block_on(async {
        require_root_and_tools();
        let fleet = block_in_place(|| boot_fleet(None));
        let (cluster, hub) = (&fleet.cluster, &fleet.hub);
        let client = kube_client(cluster).await;
        wait_nodes_ready(&client, 5, Duration::from_secs(60)).await;
        let [s1, s2, s3] = [0, 1, 2].map(|i| &cluster.servers[i].node);

        // The hub loses server-1's apiserver, its first endpoint, for the whole plan: every
        // cordon, drain and Node read must go to another server.
        s1.cut(Cut::Port {
            from: vec![hub.ip()],
            port: 6443,
        })
        .expect("cut the hub off from server-1's apiserver");
        // server-3 loses its etcd peers before its turn.
        s3.cut(Cut::Hosts(vec![s1.ip(), s2.ip()]))
            .expect("cut server-3 off from its peers");

        // The fleet doctor sees it as the servers do: server-3's member unhealthy, and no
        // server may go down now (two healthy members of three). The plan's preflight refuses
        // to start on that; accepted, the plan's own etcd gate must still hold.
        block_in_place(|| {
            let mut last = serde_json::Value::Null;
            wait_until(
                "the doctor names server-3's member and the quorum at risk",
                Duration::from_secs(60),
                || {
                    let out = hub.run(&["doctor", "--output", "json"]);
                    last = serde_json::from_slice(&out.stdout).unwrap_or_default();
                    let found = |code: &str, node: &dyn Fn(&str) -> bool| {
                        last["findings"].as_array().is_some_and(|f| {
                            f.iter().any(|f| {
                                f["code"] == code
                                    && f["severity"] == "blocker"
                                    && f["node"].as_str().is_some_and(node)
                            })
                        })
                    };
                    out.status.code() == Some(2)
                        && found("etcd-member-unhealthy", &|n| n == "server-3")
                        && found("etcd-quorum-at-risk", &|n| n.split(',').count() == 3)
                },
            );
            eprintln!("doctor during the partition: {last:#}");
            let refused = hub.run(&["rotate", "--settle", "1s"]);
            let err = String::from_utf8_lossy(&refused.stderr);
            assert!(
                !refused.status.success()
                    && err.contains("etcd-member-unhealthy etcd member server-3")
                    && err.contains("--accept etcd-quorum-at-risk"),
                "{err}"
            );
        });

        let view = block_in_place(|| {
            hub.json(&[
                "rotate",
                "--settle",
                "1s",
                "--accept",
                "etcd-member-unhealthy",
                "--accept",
                "etcd-quorum-at-risk",
            ])
        });
        let id = view["id"].as_str().expect("id").to_owned();
        let recorder = Recorder::start(hub.socket(), id.clone(), cluster);
        // The gate holds, naming server-3; nobody enters maintenance (taking any server down
        // now would leave one healthy member of three).
        let held = block_in_place(|| {
            let mut reasons: Vec<String> = Vec::new();
            wait_until(
                "the plan waits on etcd, naming server-3",
                Duration::from_secs(120),
                || {
                    let view = plan(hub, &id);
                    let reason = view["reason"].as_str().unwrap_or_default().to_owned();
                    assert!(busy(&view).is_empty(), "the gate holds: {view:#}");
                    if reasons.last() != Some(&reason) {
                        eprintln!("plan reason: {reason}");
                        reasons.push(reason.clone());
                    }
                    // Either the other servers' reports name server-3 unhealthy, or
                    // server-3's own agent cannot ask its partitioned etcd (its request times
                    // out once the member has no leader; which comes first depends on timing):
                    // both hold the gate and name server-3.
                    reason.contains("unhealthy: server-3")
                        || reason.contains("etcd could not be asked on server-3")
                },
            );
            let since = Instant::now();
            while since.elapsed() < Duration::from_secs(15) {
                let view = plan(hub, &id);
                assert!(busy(&view).is_empty(), "the gate holds: {view:#}");
                std::thread::sleep(Duration::from_millis(500));
            }
            reasons.pop().unwrap_or_default()
        });
        eprintln!("gate held: {held}");
        s3.heal().expect("heal server-3");
        let done = block_in_place(|| wait_state(hub, &id, "completed", Duration::from_secs(300)));
        // The last worker was cordoned, drained and uncordoned through the other apiservers
        // (the view holds the latest events).
        let messages = event_lines(&done);
        for step in ["cordoned", "drained", "uncordoned"] {
            assert!(
                messages
                    .iter()
                    .any(|m| m.starts_with(&format!("agent-2 {step}"))),
                "agent-2 {step} through another apiserver: {messages:#?}"
            );
        }
        s1.heal().expect("heal server-1");
        assert_invariants(recorder, &done, &client).await;
    });
}
