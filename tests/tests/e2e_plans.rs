//! Rolling plans end to end on the proving ground: 3 simulated servers + 2 workers (real
//! systemd + D-Bus per node, real etcd, the Kubernetes API stand-in), the real
//! `rke2-node-agent` under its shipped unit on every node, and a real `rke2-hub` with the
//! servers' `rke2.yaml` for cordon/drain (failing over between the three apiservers).
//!
//! Needs root and `cargo build --workspace --bins` first. The harness is
//! `rke2ops_tests::plans`; hubs and mirrors live in the proving ground's network.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use rke2ops_tests::ground::require_root_and_tools;
use rke2ops_tests::hub::HubProcess as Hub;
use rke2ops_tests::plans::{
    Recorder, assert_fresh_serials, assert_sequential_in_order, assert_server_snapshots, cordoned,
    enroll_all, enroll_all_with, event_lines, hub_address, idle, kube_client, mirror, plan,
    releases, serials, start_hub, wait_online, wait_state, wait_until, web_workload,
};
use rke2ops_tests::sim::cluster::{self, SimCluster};
use rke2ops_tests::sim::kube::fixtures::{pdb, workload_pod};
use rke2ops_tests::sim::mirror::Mirror;
use rke2ops_tests::sim::release::{self, NEW_VERSION, OLD_VERSION};
use serde_json::Value;

/// Creates an upgrade plan to the new release from `source` and waits until it halts;
/// returns its id and view.
fn upgrade_until_halted(hub: &Hub, source: &str) -> (String, Value) {
    tokio::task::block_in_place(|| {
        let view = hub.json(&[
            "upgrade",
            "--version",
            NEW_VERSION,
            "--artifact-source",
            source,
        ]);
        let id = view["id"].as_str().expect("id").to_owned();
        let halted = wait_state(hub, &id, "halted", Duration::from_secs(120));
        (id, halted)
    })
}

/// A halted upgrade names server-1 and `why`, and server-1's binary is still `before`.
fn halted_on_server_1_untouched(cluster: &SimCluster, halted: &Value, why: &str, before: &[u8]) {
    let reason = halted["reason"].as_str().expect("reason");
    assert!(
        reason.contains("server-1") && reason.contains(why),
        "{reason}"
    );
    let now = cluster.servers[0]
        .node
        .read_file(cluster::RKE2_BIN)
        .expect("read");
    assert_eq!(now, before, "nothing installed");
}

/// Aborts plan `id` and waits (up to 20 s) until no node is cordoned any more.
async fn abort_uncordons(hub: &Hub, id: &str, client: &Client, what: &str) {
    let out = tokio::task::block_in_place(|| hub.run(&["abort", id]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = Instant::now();
    loop {
        let left = cordoned(client).await;
        if left.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what}: still cordoned {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[test]
fn rotation_plan_keeps_quorum_one_node_at_a_time_and_survives_hub_kills() {
    rke2ops_tests::ground::block_on(async {
        require_root_and_tools();
        let cluster = tokio::task::block_in_place(|| SimCluster::boot(3, 2).expect("3+2 cluster"));
        let state = tempfile::tempdir().expect("state");
        let hub_addr = hub_address();
        let ip = &hub_addr.ip().to_string();
        let hub = tokio::task::block_in_place(|| start_hub(state.path(), ip, &cluster, None));
        tokio::task::block_in_place(|| enroll_all(&cluster, &hub));
        let client = kube_client(&cluster).await;
        web_workload(&client).await;
        let before = serials(&cluster);
        // Plans are created on fleets that have been quiet for hours: stay idle past every
        // freshness limit the gates apply before starting it.
        tokio::task::block_in_place(|| idle(&hub));

        // With an etcd snapshot on each server first: the hub kills below also show the
        // snapshot is kept when the step's progress was lost with the hub.
        let view = tokio::task::block_in_place(|| {
            hub.json(&["rotate", "--settle", "1s", "--etcd-snapshot"])
        });
        let id = view["id"].as_str().expect("id").to_owned();
        let recorder = Recorder::start(hub.socket(), id.clone(), &cluster);
        // Kill -9 the hub at three points and restart it on the same state each time: while
        // server-2 operates, while server-3 verifies (or just after: a short phase may be
        // passed between two looks), and while a worker is in maintenance (cordoned, drained or
        // restarting).
        let mut hub = hub;
        for (node, phases) in [
            ("server-2", &["operate"][..]),
            ("server-3", &["verify", "uncordon", "settle", "done"][..]),
            ("agent-1", &["drain", "operate", "verify", "uncordon"][..]),
        ] {
            tokio::task::block_in_place(|| {
                wait_until(
                    &format!("{node} in {phases:?}"),
                    Duration::from_secs(120),
                    || {
                        plan(&hub, &id)["nodes"].as_array().is_some_and(|n| {
                            n.iter().any(|n| {
                                n["name"] == node
                                    && phases.contains(&n["phase"].as_str().unwrap_or_default())
                            })
                        })
                    },
                );
            });
            eprintln!("SIGKILL to the hub with {node} in {phases:?}");
            hub.kill();
            hub = tokio::task::block_in_place(|| start_hub(state.path(), ip, &cluster, None));
        }
        let done = tokio::task::block_in_place(|| {
            wait_state(&hub, &id, "completed", Duration::from_secs(300))
        });
        let (max_busy, min_healthy, order) = recorder.finish();
        eprintln!(
            "plan done: max busy {max_busy}, min healthy etcd {min_healthy}, order {order:?}"
        );
        assert_eq!(max_busy, 1, "never two nodes in maintenance at once");
        assert!(
            min_healthy >= 2,
            "etcd quorum never dropped (min healthy {min_healthy})"
        );
        eprintln!("sampled maintenance order: {order:?}");
        assert_sequential_in_order(&done);

        for n in done["nodes"].as_array().expect("nodes") {
            assert_eq!(n["phase"], "done", "{n:#}");
            assert_eq!(
                n["attempt"], 1,
                "one attempt each across the hub kills: {n:#}"
            );
        }
        // Every certificate is fresh: a new serial on every node.
        assert_fresh_serials(&before, &serials(&cluster));
        tokio::task::block_in_place(|| assert_server_snapshots(&cluster, &hub, &id, &done));
        // Nothing stays cordoned; the workers were drained (events say so).
        assert!(cordoned(&client).await.is_empty());
        let events = event_lines(&done);
        assert!(
            events
                .iter()
                .any(|e| e.starts_with("agent-2 drained: ") && e.contains("1 pods evicted")),
            "{events:#?}"
        );
    });
}

#[test]
fn upgrade_plan_from_a_channel_refuses_a_bad_checksum_then_upgrades_every_node() {
    rke2ops_tests::ground::block_on(async {
        require_root_and_tools();
        let cluster = tokio::task::block_in_place(|| {
            let cluster = SimCluster::boot(3, 2).expect("3+2 cluster");
            // Every node runs the older release, servers first, air-gapped: no registry
            // answers, and the release's images are in agent/images as an air-gap install
            // leaves them (RKE2 now needs its runtime image from there to start).
            let archive = release::image_archive(release::IMAGE_ARCHIVES[0], OLD_VERSION)
                .expect("old image archive");
            for sim in cluster.nodes() {
                release::install_rke2(&sim.node, OLD_VERSION).expect("install old");
                sim.node
                    .write_file(
                        format!(
                            "{}/{}/{}",
                            cluster::DATA_DIR,
                            rke2ops_tests::sim::images::IMAGES_DIR,
                            release::IMAGE_ARCHIVES[0]
                        ),
                        &archive,
                    )
                    .expect("air-gap images");
                cluster::set_fault(&sim.node, "no-registry", "").expect("air-gapped");
                sim.node
                    .systemctl(&["restart", sim.unit()])
                    .expect("restart");
                sim.node
                    .wait_for_unit_state(sim.unit(), "active", Duration::from_secs(60))
                    .expect("active");
            }
            cluster
        });
        let good = mirror();
        // A mirror whose checksum file lies.
        let (_, _, new) = releases();
        let bad_dir = tempfile::tempdir().expect("tempdir");
        release::with_lying_checksum(bad_dir.path(), NEW_VERSION, new).expect("lying mirror");
        let bad_mirror = Mirror::serve_in_ground(bad_dir.path(), vec![]).expect("bad mirror");
        // A mirror whose image archive does not match its checksum line.
        let bad_images_dir = tempfile::tempdir().expect("tempdir");
        release::with_bad_image_checksum(bad_images_dir.path(), NEW_VERSION, new)
            .expect("bad image mirror");
        let bad_images =
            Mirror::serve_in_ground(bad_images_dir.path(), vec![]).expect("bad image mirror");

        let state = tempfile::tempdir().expect("state");
        // Held for the whole test: the hub's address on the ground's bridge.
        let hub_addr = hub_address();
        let hub = tokio::task::block_in_place(|| {
            start_hub(
                state.path(),
                &hub_addr.ip().to_string(),
                &cluster,
                Some(&good),
            )
        });
        // The nodes fetch only from the two mirrors.
        let allowed = format!(
            "allowed_artifact_sources = [\"{}\", \"{}\", \"{}\"]\n",
            good.base_url(),
            bad_mirror.base_url(),
            bad_images.base_url()
        );
        tokio::task::block_in_place(|| enroll_all_with(&cluster, &hub, &allowed));
        let client = kube_client(&cluster).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        pods.create(
            &PostParams::default(),
            &workload_pod("api-a", "api", "agent-2", 5),
        )
        .await
        .expect("create pod");

        // A source outside the nodes' allow-list: refused by the first node before any fetch,
        // the plan halts naming the list.
        let (id, halted) = upgrade_until_halted(&hub, "http://127.0.33.9:8080/rke2");
        let reason = halted["reason"].as_str().expect("reason");
        assert!(
            reason.contains("server-1")
                && reason.contains("not allowed on this node")
                && reason.contains("allowed_artifact_sources"),
            "{reason}"
        );
        abort_uncordons(&hub, &id, &client, "abort uncordoned server-1").await;

        // The bad checksum: refused on the first node, nothing installed, plan halted.
        let binary_before = cluster.servers[0]
            .node
            .read_file(cluster::RKE2_BIN)
            .expect("read");
        let (id, halted) = upgrade_until_halted(&hub, &bad_mirror.base_url());
        halted_on_server_1_untouched(&cluster, &halted, "checksum", &binary_before);
        let nodes = halted["nodes"].as_array().expect("nodes");
        assert!(
            nodes[1..].iter().all(|n| n["phase"] == "pending"),
            "{halted:#}"
        );
        abort_uncordons(&hub, &id, &client, "abort uncordoned server-1").await;

        // Air-gapped: a bad image archive halts the plan in its images phase, before any
        // node is touched; the staging failure names the node and the archive.
        let view = tokio::task::block_in_place(|| {
            hub.json(&[
                "upgrade",
                "--version",
                NEW_VERSION,
                "--artifact-source",
                &bad_images.base_url(),
                "--stage-images",
            ])
        });
        let id = view["id"].as_str().expect("id").to_owned();
        let halted = tokio::task::block_in_place(|| {
            wait_state(&hub, &id, "halted", Duration::from_secs(180))
        });
        let reason = halted["reason"].as_str().expect("reason");
        assert!(
            reason.contains("images") && reason.contains("rke2-images.linux-amd64.tar.zst"),
            "{reason}"
        );
        assert!(
            halted["nodes"]
                .as_array()
                .expect("nodes")
                .iter()
                .all(|n| n["phase"] == "pending"),
            "no node was upgraded: {halted:#}"
        );
        assert_eq!(
            cluster.servers[0]
                .node
                .read_file(cluster::RKE2_BIN)
                .expect("read"),
            binary_before
        );
        let out = tokio::task::block_in_place(|| hub.run(&["abort", &id]));
        assert!(out.status.success());

        // server-1's etcd cannot be snapshotted: its node fails before anything is installed.
        cluster::set_fault(&cluster.servers[0].node, "etcd-snapshot-fails", "").expect("fault");
        let (id, halted) = upgrade_until_halted(&hub, &good.base_url());
        halted_on_server_1_untouched(&cluster, &halted, "etcd-snapshot", &binary_before);
        abort_uncordons(&hub, &id, &client, "abort uncordoned server-1").await;
        cluster::clear_fault(&cluster.servers[0].node, "etcd-snapshot-fails").expect("clear");

        // Air-gapped without staging: server-1's new release finds no runtime image in
        // agent/images and cannot pull one, so it never starts; the agent puts the previous
        // release back (its images are there) and the plan halts on server-1.
        let (id, halted) = upgrade_until_halted(&hub, &good.base_url());
        let reason = halted["reason"].as_str().expect("reason");
        assert!(
            reason.contains("server-1")
                && reason.contains("restart-unit")
                && reason.contains("failed to get runtime image"),
            "the halt names the node, the step and RKE2's own fatal line: {reason}"
        );
        let server_1 = &cluster.servers[0];
        assert_eq!(
            server_1.node.read_file(cluster::RKE2_BIN).expect("read"),
            binary_before,
            "the previous release is back"
        );
        let journal = server_1
            .node
            .exec(&["journalctl", "-u", server_1.unit(), "--no-pager"])
            .expect("journal");
        assert!(
            journal.stdout.contains(&format!(
                "failed to get runtime image docker.io/rancher/rke2-runtime:{}",
                NEW_VERSION.replace('+', "-")
            )),
            "{}",
            journal.stdout
        );
        abort_uncordons(&hub, &id, &client, "abort uncordoned server-1").await;
        tokio::task::block_in_place(|| {
            server_1
                .node
                .wait_for_unit_state(server_1.unit(), "active", Duration::from_secs(60))
                .expect("server-1 runs the previous release again");
        });

        // From the channel, through the good mirror, the images staged first.
        // server-1 may still be rejoining etcd after its rollback: the preflight refuses the
        // plan until the cluster is whole again, and an operator tries again.
        let view = tokio::task::block_in_place(|| {
            let started = Instant::now();
            loop {
                let out = hub.run(&[
                    "upgrade",
                    "--channel",
                    "v1.34",
                    "--stage-images",
                    "--output",
                    "json",
                ]);
                if out.status.success() {
                    break serde_json::from_slice::<Value>(&out.stdout).expect("plan json");
                }
                assert!(
                    started.elapsed() < Duration::from_secs(90),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                std::thread::sleep(Duration::from_secs(2));
            }
        });
        assert_eq!(view["target_version"], NEW_VERSION);
        assert_eq!(view["channel"], "v1.34");
        let id = view["id"].as_str().expect("id").to_owned();
        let recorder = Recorder::start(hub.socket(), id.clone(), &cluster);
        let done = tokio::task::block_in_place(|| {
            wait_state(&hub, &id, "completed", Duration::from_secs(400))
        });
        let (max_busy, min_healthy, order) = recorder.finish();
        assert_eq!(max_busy, 1);
        assert!(min_healthy >= 2, "quorum kept ({min_healthy})");
        eprintln!("sampled maintenance order: {order:?}");
        assert_sequential_in_order(&done);
        // Air-gapped: every node had the release's images staged before server-1 began (from
        // the plan's own timestamps), and has them in agent/images.
        assert!(
            done["images"]
                .as_str()
                .is_some_and(|i| i.starts_with("staged 5/5")),
            "{done:#}"
        );
        let nodes = done["nodes"].as_array().expect("nodes");
        let first_start = nodes[0]["started_at"].as_str().expect("server-1 started");
        for n in nodes {
            assert_eq!(n["images"]["state"], "staged", "{n}");
            let staged = n["images"]["finished_at"].as_str().expect("staged at");
            // RFC 3339 UTC with whole seconds: text order is time order.
            assert!(
                staged <= first_start,
                "{n}: staged {staged}, server-1 began {first_start}"
            );
        }
        for sim in cluster.nodes() {
            let listed = sim
                .node
                .exec(&["ls", "/var/lib/rancher/rke2/agent/images"])
                .expect("ls");
            assert!(
                listed.stdout.contains(NEW_VERSION) && listed.stdout.contains("rke2-images"),
                "{}: {}",
                sim.node.name(),
                listed.stdout
            );
        }
        // Each server took an etcd snapshot (of the real etcd) before it was changed; the plan
        // names it and how to restore it; workers took none.
        tokio::task::block_in_place(|| assert_server_snapshots(&cluster, &hub, &id, &done));
        // Every node runs the new release, as its kubelet reports it.
        let nodes: Api<Node> = Api::all(client.clone());
        for n in nodes
            .list(&ListParams::default())
            .await
            .expect("nodes")
            .items
        {
            let version = n
                .status
                .and_then(|s| s.node_info)
                .map(|i| i.kubelet_version)
                .unwrap_or_default();
            assert_eq!(version, NEW_VERSION, "{:?}", n.metadata.name);
        }
        let listed = tokio::task::block_in_place(|| hub.json(&["nodes"]));
        for n in listed["nodes"].as_array().expect("nodes") {
            assert_eq!(n["rke2_version"], NEW_VERSION, "{n}");
        }
        // The worker with the workload was drained: its pod evicted before the upgrade.
        let drained = done["events"].as_array().expect("events").iter().any(|e| {
            e["node"] == "agent-2"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("drained: 1 pods evicted"))
        });
        assert!(drained, "{:#}", done["events"]);
        assert!(cordoned(&client).await.is_empty());
    });
}

#[test]
fn a_never_ready_server_halts_the_plan_and_a_blocking_pdb_is_named() {
    rke2ops_tests::ground::block_on(async {
        require_root_and_tools();
        let cluster = tokio::task::block_in_place(|| SimCluster::boot(3, 2).expect("3+2 cluster"));
        let state = tempfile::tempdir().expect("state");
        // Held for the whole test: the hub's address on the ground's bridge.
        let hub_addr = hub_address();
        let hub = tokio::task::block_in_place(|| {
            start_hub(state.path(), &hub_addr.ip().to_string(), &cluster, None)
        });
        tokio::task::block_in_place(|| enroll_all(&cluster, &hub));
        let client = kube_client(&cluster).await;

        // server-2 will never be ready again after its restart.
        cluster::set_fault(&cluster.servers[1].node, "never-ready", "").expect("fault");
        let view = tokio::task::block_in_place(|| hub.json(&["restart", "--ready-timeout", "20s"]));
        let id = view["id"].as_str().expect("id").to_owned();
        let halted = tokio::task::block_in_place(|| {
            wait_state(&hub, &id, "halted", Duration::from_secs(240))
        });
        let reason = halted["reason"].as_str().expect("reason");
        assert!(reason.contains("server-2"), "{reason}");
        let phases: Vec<(String, String)> = halted["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| {
                (
                    n["name"].as_str().unwrap_or("").to_owned(),
                    n["phase"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        assert_eq!(phases[0].1, "done");
        assert_eq!(phases[1].1, "failed");
        assert!(
            phases[2..].iter().all(|(_, p)| p == "pending"),
            "{phases:?}"
        );
        // The halted node stays cordoned (it is broken); abort uncordons it.
        assert_eq!(cordoned(&client).await, ["server-2"]);
        cluster::clear_fault(&cluster.servers[1].node, "never-ready").expect("clear");
        let sim = &cluster.servers[1];
        tokio::task::block_in_place(|| {
            sim.node
                .systemctl(&["restart", sim.unit()])
                .expect("restart");
            sim.node
                .wait_for_unit_state(sim.unit(), "active", Duration::from_secs(60))
                .expect("active");
        });
        abort_uncordons(&hub, &id, &client, "abort uncordoned server-2").await;

        // A budget that never allows a disruption blocks agent-1's drain: the preflight refuses
        // the plan naming it; accepted, the drain is retried, then the plan halts naming it.
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        pods.create(
            &PostParams::default(),
            &workload_pod("db-0", "db", "agent-1", 5),
        )
        .await
        .expect("pod");
        let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
        budgets
            .create(&PostParams::default(), &pdb("db-pdb", "db", 1))
            .await
            .expect("pdb");
        let refused = tokio::task::block_in_place(|| hub.run(&["rotate", "--node", "agent-1"]));
        let refusal = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success()
                && refusal.contains("pdb-blocks-drain pdb default/db-pdb on agent-1"),
            "{refusal}"
        );
        let view = tokio::task::block_in_place(|| {
            hub.json(&[
                "rotate",
                "--node",
                "agent-1",
                "--drain-timeout",
                "12s",
                "--accept",
                "pdb-blocks-drain",
            ])
        });
        let id = view["id"].as_str().expect("id").to_owned();
        let halted = tokio::task::block_in_place(|| {
            wait_state(&hub, &id, "halted", Duration::from_secs(120))
        });
        let reason = halted["reason"].as_str().expect("reason");
        assert!(
            reason.contains("agent-1") && reason.contains("db-pdb"),
            "{reason}"
        );
        assert!(
            pods.get("db-0").await.is_ok(),
            "the protected pod was not evicted"
        );
        abort_uncordons(&hub, &id, &client, "abort uncordoned agent-1").await;

        // A budget created mid-plan holds the next node before its drain, not during it:
        // the doctor's checks run again right before each node.
        budgets
            .delete("db-pdb", &DeleteParams::default())
            .await
            .expect("delete the first budget");
        pods.create(
            &PostParams::default(),
            &workload_pod("web-0", "web", "agent-2", 5),
        )
        .await
        .expect("pod");
        let view = tokio::task::block_in_place(|| {
            hub.json(&["rotate", "--node", "agent-1", "--node", "agent-2"])
        });
        let id = view["id"].as_str().expect("id").to_owned();
        let phase_of = |view: &serde_json::Value, node: &str| {
            view["nodes"]
                .as_array()
                .and_then(|n| n.iter().find(|n| n["name"] == node))
                .map(|n| n["phase"].as_str().unwrap_or_default().to_owned())
                .unwrap_or_default()
        };
        tokio::task::block_in_place(|| {
            wait_until("agent-1 in maintenance", Duration::from_secs(60), || {
                phase_of(&plan(&hub, &id), "agent-1") != "pending"
            });
        });
        budgets
            .create(&PostParams::default(), &pdb("web-pdb", "web", 1))
            .await
            .expect("pdb mid-plan");
        let held = tokio::task::block_in_place(|| {
            let mut last = serde_json::Value::Null;
            wait_until("the doctor holds agent-2", Duration::from_secs(120), || {
                last = plan(&hub, &id);
                last["reason"].as_str().is_some_and(|r| {
                    r.contains(
                        "the doctor holds the next node: pdb-blocks-drain pdb default/web-pdb",
                    )
                })
            });
            last
        });
        assert_eq!(phase_of(&held, "agent-1"), "done", "{held:#}");
        assert_eq!(phase_of(&held, "agent-2"), "pending", "{held:#}");
        assert!(
            cordoned(&client).await.is_empty(),
            "agent-2 was not even cordoned"
        );
        budgets
            .delete("web-pdb", &DeleteParams::default())
            .await
            .expect("delete the budget");
        let done = tokio::task::block_in_place(|| {
            wait_state(&hub, &id, "completed", Duration::from_secs(180))
        });
        assert_eq!(phase_of(&done, "agent-2"), "done", "{done:#}");
        assert!(cordoned(&client).await.is_empty());
    });
}

/// A hub frozen past the heartbeat timeout reaps every session when it thaws; the reaped
/// streams end, so every agent reconnects on its own. Then, after a hub restart on a fleet
/// left idle past every freshness limit, a rotation over 3 servers + 2 workers still starts
/// and completes: the gates ask the quiet nodes for a fresh status instead of waiting forever.
#[test]
fn a_frozen_hub_gets_its_agents_back_and_a_restarted_hub_rotates_an_idle_fleet() {
    rke2ops_tests::ground::block_on(async {
        require_root_and_tools();
        let cluster = tokio::task::block_in_place(|| SimCluster::boot(3, 2).expect("3+2 cluster"));
        let state = tempfile::tempdir().expect("state");
        let hub_addr = hub_address();
        let ip = &hub_addr.ip().to_string();
        let hub = tokio::task::block_in_place(|| {
            let hub = start_hub(state.path(), ip, &cluster, None);
            enroll_all(&cluster, &hub);
            wait_online(&hub, 5, Duration::from_secs(60));
            hub
        });

        // SIGSTOP past the heartbeat timeout (6 s in tests), then SIGCONT.
        let pid = nix::unistd::Pid::from_raw(i32::try_from(hub.pid()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
        tokio::task::block_in_place(|| std::thread::sleep(Duration::from_secs(20)));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");
        let thawed = Instant::now();
        tokio::task::block_in_place(|| {
            // The thawed hub reaps the sessions it did not hear from (the sweep runs before the
            // queued messages are read), then the agents come back.
            wait_online(&hub, 5, Duration::from_secs(60));
        });
        eprintln!("all nodes online {:?} after SIGCONT", thawed.elapsed());

        // A clean restart, then a fleet left alone.
        hub.stop();
        let hub = tokio::task::block_in_place(|| {
            let hub = start_hub(state.path(), ip, &cluster, None);
            wait_online(&hub, 5, Duration::from_secs(60));
            idle(&hub);
            hub
        });
        let client = kube_client(&cluster).await;
        // With an etcd snapshot on each server first: the hub kills below also show the
        // snapshot is kept when the step's progress was lost with the hub.
        let view = tokio::task::block_in_place(|| {
            hub.json(&["rotate", "--settle", "1s", "--etcd-snapshot"])
        });
        let id = view["id"].as_str().expect("id").to_owned();
        let recorder = Recorder::start(hub.socket(), id.clone(), &cluster);
        let done = tokio::task::block_in_place(|| {
            wait_state(&hub, &id, "completed", Duration::from_secs(300))
        });
        let (max_busy, min_healthy, _) = recorder.finish();
        assert_eq!(max_busy, 1, "never two nodes in maintenance at once");
        assert!(
            min_healthy >= 2,
            "etcd quorum kept (min healthy {min_healthy})"
        );
        assert_sequential_in_order(&done);
        for n in done["nodes"].as_array().expect("nodes") {
            assert_eq!(n["phase"], "done", "{n:#}");
        }
        assert!(cordoned(&client).await.is_empty());
    });
}
