//! The simulated Kubernetes API (`rke2ops_sim::kube`, `tests/SIMULATOR.md` §6) driven
//! by kube-rs, and the hub's Kubernetes module (`rke2_hub::kube`) end to end against it:
//! Nodes registered by the simulated kubelets, cordon, pods by node, evictions against
//! PodDisruptionBudgets, the ReplicaSet replacement, a silent node turning NotReady, writes
//! and failover with one of three servers down, and a PDB-blocked drain.
//!
//! Needs root, systemd, etcd and curl (`scripts/install-test-deps.sh`) and
//! `cargo build --workspace --bins` first.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use rke2_hub::kube::{DrainOptions, KubeAccess, KubeError, KubeSettings};
use rke2ops_ground::{Node as GroundNode, require_root_and_tools};
use rke2ops_sim::cluster::{self, CONFIG_DIR, SimCluster};
use rke2ops_sim::kube::fixtures::{pdb, workload_pod};
use rke2ops_sim::tree::Role;

/// The admin kubeconfig of `server` (RKE2's `rke2.yaml`) with `server:` set to its IP, as an
/// operator copies it off a server.
fn kubeconfig_text(server: &GroundNode) -> String {
    let raw = server
        .read_file(format!("{CONFIG_DIR}/rke2.yaml"))
        .expect("read rke2.yaml");
    String::from_utf8(raw).expect("utf-8").replace(
        "https://127.0.0.1:6443",
        &format!("https://{}:6443", server.ip()),
    )
}

async fn client_for(server: &GroundNode) -> Client {
    let kc = Kubeconfig::from_yaml(&kubeconfig_text(server)).expect("kubeconfig parses");
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kube config");
    // Our assertions want to see 429s, not kube-rs' automatic retries.
    config.default_retry = false;
    Client::try_from(config).expect("client")
}

async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn ready_status(node: &Node) -> String {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

/// A ReplicaSet-owned workload pod labelled `app=<app>` on `node`.
async fn pods_on(client: &Client, node: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::all(client.clone());
    pods.list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .expect("list pods by node")
        .items
}

fn names(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

#[test]
fn nodes_pods_evictions_and_budgets_behave_like_kubernetes() {
    rke2ops_ground::block_on(async {
        require_root_and_tools();
        let cluster = SimCluster::boot(1, 2).expect("boot 1 server + 2 agents");
        let server = &cluster.servers[0].node;
        let client = client_for(server).await;
        let version = client.apiserver_version().await.expect("/version");
        assert_eq!(version.git_version, "v1.34.1+rke2r1");

        // Every kubelet registered its Node: Ready, kubeletVersion = the RKE2 version, roles.
        let nodes: Api<Node> = Api::all(client.clone());
        let listed = wait_for("three Ready nodes", Duration::from_secs(20), async || {
            let list = nodes.list(&ListParams::default()).await.ok()?;
            (list.items.len() == 3 && list.items.iter().all(|n| ready_status(n) == "True"))
                .then_some(list)
        })
        .await;
        assert!(listed.metadata.resource_version.is_some());
        for node in &listed.items {
            let info = node
                .status
                .as_ref()
                .and_then(|s| s.node_info.as_ref())
                .expect("nodeInfo");
            assert_eq!(info.kubelet_version, "v1.34.1+rke2r1");
            let labels = node.metadata.labels.clone().unwrap_or_default();
            let is_server = node.metadata.name.as_deref() == Some("server-1");
            assert_eq!(
                labels
                    .get("node-role.kubernetes.io/control-plane")
                    .map(String::as_str),
                is_server.then_some("true"),
                "{labels:?}"
            );
            assert_eq!(
                labels.contains_key("node-role.kubernetes.io/etcd"),
                is_server
            );
        }
        let by_role = nodes
            .list(&ListParams::default().labels("node-role.kubernetes.io/control-plane=true"))
            .await
            .expect("label selector");
        assert_eq!(names_of(&by_role.items), vec!["server-1"]);

        // Cordon / uncordon through kube-rs (a patch of spec.unschedulable).
        let cordoned = nodes.cordon("agent-1").await.expect("cordon");
        assert_eq!(cordoned.spec.and_then(|s| s.unschedulable), Some(true));
        let merge = Patch::Merge(serde_json::json!({"metadata": {"labels": {"plan": "p1"}}}));
        let patched = nodes
            .patch("agent-1", &PatchParams::default(), &merge)
            .await
            .expect("merge patch");
        assert_eq!(
            patched
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("plan"))
                .map(String::as_str),
            Some("p1")
        );
        assert_eq!(
            patched.spec.and_then(|s| s.unschedulable),
            Some(true),
            "other fields kept"
        );
        nodes.uncordon("agent-1").await.expect("uncordon");

        // System pods: mirror pods on the server, kube-proxy and canal on every node.
        let server_pods = pods_on(&client, "server-1").await;
        let mirror = server_pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some("etcd-server-1"))
            .expect("etcd mirror pod");
        assert!(
            mirror
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"))
        );
        let agent_pods = names(&pods_on(&client, "agent-2").await);
        assert!(
            agent_pods.contains(&"kube-proxy-agent-2".to_owned()),
            "{agent_pods:?}"
        );
        assert!(
            agent_pods.iter().any(|p| p.starts_with("rke2-canal-")),
            "{agent_pods:?}"
        );
        assert!(
            !agent_pods.iter().any(|p| p.starts_with("etcd-")),
            "{agent_pods:?}"
        );

        // Workload: two web pods on agent-1 and agent-2, a PDB needing both.
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        for (name, node) in [("web-a", "agent-1"), ("web-b", "agent-2")] {
            pods.create(&PostParams::default(), &workload_pod(name, "web", node, 30))
                .await
                .expect("create pod");
        }
        let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
        budgets
            .create(&PostParams::default(), &pdb("web-pdb", "web", 2))
            .await
            .expect("create pdb");
        let status = budgets
            .get("web-pdb")
            .await
            .expect("get pdb")
            .status
            .expect("status filled");
        assert_eq!(
            (
                status.current_healthy,
                status.desired_healthy,
                status.disruptions_allowed
            ),
            (2, 2, 0)
        );

        // Eviction blocked: 429 naming the budget.
        let err = pods
            .evict("web-a", &EvictParams::default())
            .await
            .expect_err("blocked by PDB");
        match &err {
            kube::Error::Api(s) => {
                assert_eq!(s.code, 429, "{s:?}");
                assert_eq!(s.reason, "TooManyRequests");
                assert_eq!(
                    s.message,
                    "Cannot evict pod as it would violate the pod's disruption budget."
                );
            }
            other => panic!("expected a 429 Status, got {other:?}"),
        }
        // Unknown pod: 404.
        let err = pods
            .evict("nope", &EvictParams::default())
            .await
            .expect_err("404");
        assert!(
            matches!(&err, kube::Error::Api(s) if s.code == 404),
            "{err:?}"
        );

        // Loosen the budget to 1: eviction allowed, the pod goes, a replacement appears on
        // another node, and the budget allows a disruption again.
        budgets
            .delete("web-pdb", &DeleteParams::default())
            .await
            .expect("delete pdb");
        budgets
            .create(&PostParams::default(), &pdb("web-pdb", "web", 1))
            .await
            .expect("recreate pdb");
        let evicted = pods
            .evict("web-a", &EvictParams::default())
            .await
            .expect("eviction allowed");
        assert_eq!(evicted.code, 201);
        let err = pods
            .evict("web-b", &EvictParams::default())
            .await
            .expect_err("second eviction blocked");
        assert!(
            matches!(&err, kube::Error::Api(s) if s.code == 429),
            "{err:?}"
        );
        wait_for("web-a gone", Duration::from_secs(10), async || {
            matches!(pods.get_opt("web-a").await, Ok(None)).then_some(())
        })
        .await;
        let replacement = wait_for("a replacement pod", Duration::from_secs(15), async || {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            list.items
                .into_iter()
                .find(|p| !["web-a", "web-b"].contains(&p.metadata.name.as_deref().unwrap_or("")))
        })
        .await;
        let replacement_node = replacement
            .spec
            .and_then(|s| s.node_name)
            .unwrap_or_default();
        assert_ne!(
            replacement_node, "agent-1",
            "replacement avoids the evicting node"
        );
        let status = wait_for(
            "budget satisfiable again",
            Duration::from_secs(10),
            async || {
                let s = budgets.get("web-pdb").await.ok()?.status?;
                (s.disruptions_allowed == 1).then_some(s)
            },
        )
        .await;
        assert_eq!(status.current_healthy, 2);
        pods.evict("web-b", &EvictParams::default())
            .await
            .expect("allowed again");

        // A pod without a node is placed on a schedulable Ready node; DELETE with grace 0
        // removes it at once, and a pod without a ReplicaSet gets no replacement.
        nodes.cordon("agent-2").await.expect("cordon agent-2");
        let mut loose = workload_pod("loose", "loose", "", 30);
        loose.metadata.owner_references = None;
        if let Some(spec) = loose.spec.as_mut() {
            spec.node_name = None;
        }
        let created = pods
            .create(&PostParams::default(), &loose)
            .await
            .expect("create unscheduled pod");
        let placed = created.spec.and_then(|s| s.node_name).unwrap_or_default();
        assert!(
            ["server-1", "agent-1"].contains(&placed.as_str()),
            "{placed}"
        );
        assert_eq!(
            created.status.and_then(|s| s.phase).as_deref(),
            Some("Running")
        );
        pods.delete("loose", &DeleteParams::default().grace_period(0))
            .await
            .expect("delete");
        assert!(matches!(pods.get_opt("loose").await, Ok(None)));
        nodes.uncordon("agent-2").await.expect("uncordon agent-2");

        // Events: posted and listed.
        let events: Api<Event> = Api::namespaced(client.clone(), "default");
        let event: Event = serde_json::from_value(serde_json::json!({
            "metadata": {"generateName": "agent-1."},
            "involvedObject": {"kind": "Node", "name": "agent-1", "apiVersion": "v1"},
            "reason": "Rke2OpsCordon", "message": "cordoned for plan 1", "type": "Normal",
        }))
        .expect("event json");
        events
            .create(&PostParams::default(), &event)
            .await
            .expect("create event");
        let listed = events
            .list(&ListParams::default())
            .await
            .expect("list events");
        assert!(
            listed
                .items
                .iter()
                .any(|e| e.reason.as_deref() == Some("Rke2OpsCordon"))
        );

        // A stopped node's heartbeats stop: Ready turns Unknown after the grace period (10 s).
        cluster::stop(&cluster.agents[1].node, Role::Agent).expect("stop agent-2");
        let started = Instant::now();
        let node = wait_for("agent-2 NotReady", Duration::from_secs(25), async || {
            let n = nodes.get("agent-2").await.ok()?;
            (ready_status(&n) == "Unknown").then_some(n)
        })
        .await;
        eprintln!(
            "agent-2 turned Ready=Unknown {:?} after its stop",
            started.elapsed()
        );
        let reason = node
            .status
            .and_then(|s| s.conditions)
            .and_then(|c| c.into_iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| c.reason);
        assert_eq!(reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            ready_status(&nodes.get("agent-1").await.expect("agent-1")),
            "True"
        );
    });
}

fn names_of(nodes: &[Node]) -> Vec<String> {
    nodes
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect()
}

#[test]
fn writes_and_kubelets_survive_one_of_three_servers_down() {
    rke2ops_ground::block_on(async {
        require_root_and_tools();
        let cluster = SimCluster::boot(3, 1).expect("boot 3 servers + 1 agent");
        let client = client_for(&cluster.servers[1].node).await;
        let nodes: Api<Node> = Api::all(client.clone());
        wait_for("four Ready nodes", Duration::from_secs(20), async || {
            let list = nodes.list(&ListParams::default()).await.ok()?;
            (list.items.len() == 4 && list.items.iter().all(|n| ready_status(n) == "True"))
                .then_some(())
        })
        .await;

        // server-1 is the agent's configured server: stop it.
        cluster::stop(&cluster.servers[0].node, Role::Server).expect("stop server-1");
        nodes
            .cordon("agent-1")
            .await
            .expect("cordon with 2 of 3 servers");
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        pods.create(
            &PostParams::default(),
            &workload_pod("db-0", "db", "agent-1", 30),
        )
        .await
        .expect("create pod");
        // The agent's kubelet fails over to another server; server-1 turns NotReady.
        let grace = Duration::from_secs(10);
        tokio::time::sleep(grace + Duration::from_secs(3)).await;
        assert_eq!(
            ready_status(&nodes.get("agent-1").await.expect("agent-1")),
            "True",
            "agent heartbeats through server-2/3"
        );
        wait_for("server-1 NotReady", Duration::from_secs(10), async || {
            (ready_status(&nodes.get("server-1").await.ok()?) == "Unknown").then_some(())
        })
        .await;
        // What was written while server-1 was down is there when it comes back.
        cluster::start(
            &cluster.servers[0].node,
            Role::Server,
            cluster::START_TIMEOUT,
        )
        .expect("start server-1");
        let back = client_for(&cluster.servers[0].node).await;
        let pods_back: Api<Pod> = Api::namespaced(back.clone(), "default");
        assert!(pods_back.get("db-0").await.is_ok());
        let agent = Api::<Node>::all(back)
            .get("agent-1")
            .await
            .expect("agent-1");
        assert_eq!(agent.spec.and_then(|s| s.unschedulable), Some(true));
    });
}

/// The hub's settings for `cluster`: RKE2's `rke2.yaml` as written (server
/// `https://127.0.0.1:6443`) and the servers' apiservers as endpoints.
fn hub_settings(cluster: &SimCluster, dir: &std::path::Path) -> KubeSettings {
    let kubeconfig = dir.join("rke2.yaml");
    let raw = cluster.servers[0]
        .node
        .read_file(format!("{CONFIG_DIR}/rke2.yaml"))
        .expect("read rke2.yaml");
    std::fs::write(&kubeconfig, raw).expect("write kubeconfig");
    KubeSettings {
        kubeconfig,
        endpoints: cluster
            .servers
            .iter()
            .map(|s| format!("https://{}:6443", s.node.ip()))
            .collect(),
    }
}

#[test]
fn hub_drain_waits_for_budgets_and_names_the_blocking_one() {
    rke2ops_ground::block_on(async {
        require_root_and_tools();
        let cluster = SimCluster::boot(1, 2).expect("boot 1 server + 2 agents");
        let dir = tempfile::tempdir().expect("tempdir");
        let access = KubeAccess::new(&hub_settings(&cluster, dir.path())).expect("kube access");
        let all = wait_for("three Ready nodes", Duration::from_secs(20), async || {
            let nodes = access.nodes().await.ok()?;
            (nodes.len() == 3 && nodes.iter().all(|n| n.ready)).then_some(nodes)
        })
        .await;
        let server = all.iter().find(|n| n.name == "server-1").expect("server-1");
        assert!(server.control_plane);
        assert_eq!(server.kubelet_version, "v1.34.1+rke2r1");
        assert!(matches!(access.node("nope").await, Ok(None)));

        let client = client_for(&cluster.servers[0].node).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        for (name, node) in [
            ("web-a", "agent-1"),
            ("web-b", "agent-1"),
            ("web-c", "agent-2"),
        ] {
            pods.create(&PostParams::default(), &workload_pod(name, "web", node, 30))
                .await
                .expect("create pod");
        }
        let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
        budgets
            .create(&PostParams::default(), &pdb("web-pdb", "web", 2))
            .await
            .expect("create pdb");

        // Cordon: true the first time, false when already cordoned (the plan must not undo it).
        assert!(access.cordon("agent-1").await.expect("cordon"));
        assert!(!access.cordon("agent-1").await.expect("cordon again"));
        assert!(matches!(
            access.cordon("nope").await,
            Err(KubeError::NodeNotFound(n)) if n == "nope"
        ));

        // 3 healthy, 2 needed: one eviction now, the second only once web-a's replacement runs
        // elsewhere (agent-1 is cordoned).
        let started = Instant::now();
        let mut lines = Vec::new();
        let opts = DrainOptions {
            grace_period: Some(Duration::from_secs(5)),
            timeout: Duration::from_secs(60),
            retry_interval: Duration::from_secs(1),
        };
        let report = access
            .drain("agent-1", &opts, &mut |l: String| lines.push(l))
            .await
            .unwrap_or_else(|e| panic!("drain agent-1: {e}"));
        eprintln!("drain of agent-1 took {:?}: {lines:#?}", started.elapsed());
        let mut evicted = report.evicted.clone();
        evicted.sort();
        assert_eq!(evicted, vec!["default/web-a", "default/web-b"]);
        assert!(
            lines
                .iter()
                .any(|l| l.contains("refused by PodDisruptionBudget web-pdb")),
            "{lines:?}"
        );
        let skipped: Vec<&str> = report.skipped.iter().map(|(p, _)| p.as_str()).collect();
        assert!(
            skipped.contains(&"kube-system/kube-proxy-agent-1"),
            "{skipped:?}"
        );
        assert!(
            skipped
                .iter()
                .any(|p| p.starts_with("kube-system/rke2-canal-")),
            "{skipped:?}"
        );
        let left = names(&pods_on(&client, "agent-1").await);
        assert!(!left.iter().any(|p| p.starts_with("web-")), "{left:?}");

        // A budget that can never allow a disruption: DrainBlocked naming it.
        pods.create(
            &PostParams::default(),
            &workload_pod("solo-0", "solo", "agent-2", 30),
        )
        .await
        .expect("create solo pod");
        budgets
            .create(&PostParams::default(), &pdb("solo-pdb", "solo", 1))
            .await
            .expect("create solo pdb");
        let opts = DrainOptions {
            grace_period: None,
            timeout: Duration::from_secs(4),
            retry_interval: Duration::from_secs(1),
        };
        let err = access
            .drain("agent-2", &opts, &mut |_| {})
            .await
            .expect_err("blocked by solo-pdb");
        match err {
            KubeError::DrainBlocked { pod, pdb, attempts } => {
                assert_eq!(pod, "default/solo-0");
                assert_eq!(pdb.as_deref(), Some("solo-pdb"));
                assert!(attempts >= 3, "{attempts}");
            }
            other => panic!("expected DrainBlocked, got {other}"),
        }

        access.uncordon("agent-1").await.expect("uncordon");
        let view = access.node("agent-1").await.expect("node").expect("exists");
        assert!(!view.unschedulable);
        access
            .event("agent-1", "Rke2OpsDrained", "drained for plan 7")
            .await;
        let events: Api<Event> = Api::namespaced(client, "default");
        let listed = events.list(&ListParams::default()).await.expect("events");
        let event = listed
            .items
            .iter()
            .find(|e| e.reason.as_deref() == Some("Rke2OpsDrained"))
            .expect("event recorded");
        assert_eq!(event.involved_object.name.as_deref(), Some("agent-1"));
    });
}

#[test]
fn hub_keeps_kubernetes_access_with_one_of_three_servers_down() {
    rke2ops_ground::block_on(async {
        require_root_and_tools();
        let cluster = SimCluster::boot(3, 1).expect("boot 3 servers + 1 agent");
        let dir = tempfile::tempdir().expect("tempdir");
        let access = KubeAccess::new(&hub_settings(&cluster, dir.path())).expect("kube access");
        wait_for("four Ready nodes", Duration::from_secs(20), async || {
            let nodes = access.nodes().await.ok()?;
            (nodes.len() == 4 && nodes.iter().all(|n| n.ready)).then_some(())
        })
        .await;

        // The first endpoint goes away: every call still works, through server-2 or -3.
        cluster::stop(&cluster.servers[0].node, Role::Server).expect("stop server-1");
        let started = Instant::now();
        assert_eq!(
            access
                .nodes()
                .await
                .expect("nodes with server-1 down")
                .len(),
            4
        );
        eprintln!("first call after server-1 stopped: {:?}", started.elapsed());
        assert!(access.cordon("agent-1").await.expect("cordon"));
        let mut lines = Vec::new();
        let report = access
            .drain("agent-1", &DrainOptions::default(), &mut |l: String| {
                lines.push(l)
            })
            .await
            .expect("drain with server-1 down");
        assert!(report.evicted.is_empty(), "{report:?}");
        access.uncordon("agent-1").await.expect("uncordon");
        let started = Instant::now();
        let view = access.node("agent-1").await.expect("node").expect("exists");
        assert!(!view.unschedulable && view.ready);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the good endpoint is remembered"
        );

        // Two of three down: no quorum, so no server can serve: Unreachable names every endpoint.
        cluster::stop(&cluster.servers[1].node, Role::Server).expect("stop server-2");
        let err = access.cordon("agent-1").await.expect_err("no quorum");
        match err {
            KubeError::Unreachable { tried, .. } => assert_eq!(tried.len(), 3, "{tried:?}"),
            other => panic!("expected Unreachable, got {other}"),
        }
    });
}
