//! The shared harness of the plan tests on the proving ground (`plans_e2e`, `faults_e2e`):
//! a 3 server + 2 worker simulated cluster, a real `rke2-hub` as a station on the ground's
//! bridge with the servers' `rke2.yaml` and every apiserver as a failover endpoint, the real
//! agent enrolled on every node, the simulated release mirror, a Kubernetes client, and a
//! [`Recorder`] that samples the plan invariants (nodes in maintenance at once, healthy etcd
//! members) while a plan runs.
//!
//! Everything that opens sockets must run inside the ground network: tests call it from
//! [`crate::ground::block_on`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::Value;

use crate::ground::net::AddrLease;
use crate::ground::{built_binary, ground};
use crate::hub::HubProcess as Hub;
use crate::sim::cluster::{self, CONFIG_DIR, SimCluster};
use crate::sim::mirror::{Mirror, MirrorHandle};
use crate::sim::release::{self, NEW_VERSION, OLD_VERSION, Release};
use crate::sim::tree::Role;

pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Both simulated releases, built once per test binary.
pub fn releases() -> &'static (PathBuf, Release, Release) {
    static RELEASES: OnceLock<(PathBuf, Release, Release)> = OnceLock::new();
    RELEASES.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("rke2ops-plan-releases-")
            .tempdir()
            .expect("tempdir")
            .keep();
        let old = release::build_release(&dir, OLD_VERSION).expect("old release");
        let new = release::build_release(&dir, NEW_VERSION).expect("new release");
        (dir, old, new)
    })
}

pub fn mirror() -> MirrorHandle {
    let (dir, _, _) = releases();
    Mirror::serve_in_ground(
        dir,
        vec![
            "stable=v1.33.5+rke2r1".parse().expect("channel"),
            "v1.34=v1.34.1+rke2r1".parse().expect("channel"),
        ],
    )
    .expect("mirror")
}

/// The hub's kubeconfig: server-1's `rke2.yaml`, as an operator copies it.
pub fn kubeconfig(cluster: &SimCluster, dir: &Path) -> PathBuf {
    let path = dir.join("rke2.yaml");
    let raw = cluster.servers[0]
        .node
        .read_file(format!("{CONFIG_DIR}/rke2.yaml"))
        .expect("read rke2.yaml");
    std::fs::write(&path, raw).expect("write kubeconfig");
    path
}

pub fn endpoints(cluster: &SimCluster) -> String {
    cluster
        .servers
        .iter()
        .map(|s| format!("https://{}:6443", s.node.ip()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Starts (or restarts) the hub with Kubernetes access and the mirror.
pub fn start_hub(
    state: &Path,
    ip: &str,
    cluster: &SimCluster,
    mirror: Option<&MirrorHandle>,
) -> Hub {
    let kubeconfig = kubeconfig(cluster, state);
    let endpoints = endpoints(cluster);
    let mut args = vec![
        "--kubeconfig".to_owned(),
        kubeconfig.display().to_string(),
        "--apiserver-endpoint".to_owned(),
        endpoints,
    ];
    if let Some(m) = mirror {
        args.extend([
            "--artifact-mirror".to_owned(),
            m.base_url(),
            "--channel-url".to_owned(),
            format!("{}/v1-release/channels", m.base_url()),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Hub::start_in_ground_on(state, ip, &args)
}

/// An address for a hub in the proving ground, kept across the hub's restarts.
pub fn hub_address() -> AddrLease {
    ground()
        .expect("ground network")
        .lease_station()
        .expect("hub address")
}

pub fn enroll_all(cluster: &SimCluster, hub: &Hub) {
    enroll_all_with(cluster, hub, "");
}

/// Enrolls every node with `extra` lines in its agent config.
pub fn enroll_all_with(cluster: &SimCluster, hub: &Hub, extra: &str) {
    for sim in cluster.nodes() {
        crate::hub::enroll_agent(
            &sim.node,
            hub,
            &format!("heartbeat_secs = 2\nready_timeout_secs = 20\n{extra}"),
        )
        .expect("enroll");
    }
    let names: Vec<String> = cluster.nodes().map(|s| s.node.name().to_owned()).collect();
    wait_until(
        &format!("all {} nodes online", names.len()),
        Duration::from_secs(90),
        || {
            hub.json(&["nodes"])["nodes"].as_array().is_some_and(|n| {
                names.iter().all(|name| {
                    n.iter()
                        .any(|n| n["name"] == name.as_str() && n["online"] == true)
                })
            })
        },
    );
}

pub async fn kube_client(cluster: &SimCluster) -> Client {
    let raw = cluster.servers[0]
        .node
        .read_file(format!("{CONFIG_DIR}/rke2.yaml"))
        .expect("read rke2.yaml");
    let text = String::from_utf8(raw).expect("utf-8").replace(
        "https://127.0.0.1:6443",
        &format!("https://{}:6443", cluster.servers[0].node.ip()),
    );
    let kc = Kubeconfig::from_yaml(&text).expect("kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kube config");
    config.default_retry = false;
    Client::try_from(config).expect("client")
}

/// Waits (up to `within`) until `count` Nodes are registered and Ready: kubelets register
/// on their own schedule after their unit is active, so a test that partitions a node must
/// wait for this first or it tests registration instead.
pub async fn wait_nodes_ready(client: &Client, count: usize, within: Duration) {
    let nodes: Api<Node> = Api::all(client.clone());
    let started = Instant::now();
    loop {
        let ready = nodes
            .list(&ListParams::default())
            .await
            .map(|list| {
                list.items
                    .iter()
                    .filter(|n| {
                        n.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| {
                                c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                    })
                    .count()
            })
            .unwrap_or(0);
        if ready >= count {
            return;
        }
        assert!(
            started.elapsed() < within,
            "only {ready} of {count} Nodes Ready after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The names of the cordoned Nodes.
pub async fn cordoned(client: &Client) -> Vec<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .list(&ListParams::default())
        .await
        .expect("list nodes")
        .items
        .into_iter()
        .filter(|n| n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true))
        .filter_map(|n| n.metadata.name)
        .collect()
}

pub fn plan(hub: &Hub, id: &str) -> Value {
    hub.json(&["plan", "show", id])
}

pub fn wait_state(hub: &Hub, id: &str, state: &str, within: Duration) -> Value {
    let started = Instant::now();
    loop {
        let view = plan(hub, id);
        if view["state"] == state {
            return view;
        }
        assert!(
            view["state"] != "halted" || state == "halted",
            "plan {id} halted while waiting for {state}: {view:#}"
        );
        assert!(
            started.elapsed() < within,
            "plan {id} not {state} within {within:?}: {view:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub const IN_MAINTENANCE: [&str; 6] =
    ["cordon", "drain", "operate", "verify", "uncordon", "settle"];

/// Samples the plan and etcd throughout: the most nodes ever in maintenance at once, and the
/// fewest healthy etcd members ever seen (from the servers still up).
#[derive(Debug)]
pub struct Recorder {
    stop: Arc<AtomicBool>,
    max_busy: Arc<Mutex<usize>>,
    min_healthy: Arc<Mutex<usize>>,
    order: Arc<Mutex<Vec<String>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Recorder {
    pub fn start(hub_socket: PathBuf, id: String, cluster: &SimCluster) -> Recorder {
        let stop = Arc::new(AtomicBool::new(false));
        let max_busy = Arc::new(Mutex::new(0));
        let min_healthy = Arc::new(Mutex::new(usize::MAX));
        let order = Arc::new(Mutex::new(Vec::new()));
        // etcd's client credentials, copied to the host (rotations keep the CA, so the copy
        // stays valid), and every server's endpoint.
        let creds = tempfile::tempdir().expect("tempdir").keep();
        let tls = format!("{}/server/tls/etcd", cluster::DATA_DIR);
        for file in ["server-ca.crt", "client.crt", "client.key"] {
            let bytes = cluster.servers[0]
                .node
                .read_file(format!("{tls}/{file}"))
                .expect("etcd credentials");
            std::fs::write(creds.join(file), bytes).expect("copy");
        }
        let endpoints: String = cluster
            .servers
            .iter()
            .map(|s| format!("https://{}:2379", s.node.ip()))
            .collect::<Vec<_>>()
            .join(",");
        let (s, b, h, o) = (
            Arc::clone(&stop),
            Arc::clone(&max_busy),
            Arc::clone(&min_healthy),
            Arc::clone(&order),
        );
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let out = std::process::Command::new(built_binary("rke2-hub"))
                    .args(["plan", "show", &id, "--output", "json", "--socket"])
                    .arg(&hub_socket)
                    .output();
                if let Ok(out) = out
                    && out.status.success()
                    && let Ok(view) = serde_json::from_slice::<Value>(&out.stdout)
                {
                    let busy: Vec<String> = view["nodes"]
                        .as_array()
                        .map(|nodes| {
                            nodes
                                .iter()
                                .filter(|n| {
                                    IN_MAINTENANCE.contains(&n["phase"].as_str().unwrap_or(""))
                                })
                                .filter_map(|n| n["name"].as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    if let Ok(mut m) = b.lock() {
                        *m = (*m).max(busy.len());
                    }
                    if let Ok(mut o) = o.lock() {
                        for name in busy {
                            if !o.contains(&name) {
                                o.push(name);
                            }
                        }
                    }
                }
                // Healthy etcd members, asked from the host.
                let out = std::process::Command::new("etcdctl")
                    .env("ETCDCTL_API", "3")
                    .arg(format!("--endpoints={endpoints}"))
                    .arg(format!(
                        "--cacert={}",
                        creds.join("server-ca.crt").display()
                    ))
                    .arg(format!("--cert={}", creds.join("client.crt").display()))
                    .arg(format!("--key={}", creds.join("client.key").display()))
                    .args([
                        "--dial-timeout=2s",
                        "--command-timeout=2s",
                        "endpoint",
                        "health",
                    ])
                    .output();
                if let Ok(out) = out {
                    let text = format!(
                        "{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                    let n = text.matches("is healthy").count();
                    if let Ok(mut m) = h.lock() {
                        *m = (*m).min(n);
                    }
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        Recorder {
            stop,
            max_busy,
            min_healthy,
            order,
            handle: Some(handle),
        }
    }

    pub fn finish(mut self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let busy = *self.max_busy.lock().expect("lock");
        let healthy = *self.min_healthy.lock().expect("lock");
        let order = self.order.lock().expect("lock").clone();
        (busy, healthy, order)
    }
}

/// Servers before workers, in plan order, one after the other: each node's maintenance began
/// no earlier than the previous one's ended (the store keeps seconds, so equal is fine; the
/// sampled recorder can miss a node quicker than its interval, this cannot).
pub fn assert_sequential_in_order(view: &Value) {
    let nodes = view["nodes"].as_array().expect("nodes");
    let names: Vec<&str> = nodes.iter().filter_map(|n| n["name"].as_str()).collect();
    assert_eq!(
        names,
        ["server-1", "server-2", "server-3", "agent-1", "agent-2"]
    );
    for pair in nodes.windows(2) {
        let (prev, next) = (&pair[0], &pair[1]);
        let ended = prev["finished_at"].as_str().expect("finished_at");
        let began = next["started_at"].as_str().expect("started_at");
        assert!(
            ended <= began,
            "{} began at {began}, before {} ended at {ended}",
            next["name"],
            prev["name"]
        );
    }
}

/// Longer than every freshness limit the hub's gates apply (reports older than 45 s are
/// stale), with margin.
pub const IDLE: Duration = Duration::from_secs(130);

/// Leaves the fleet alone for [`IDLE`]: no plan, no operator request, only what agents send
/// on their own.
pub fn idle(hub: &Hub) {
    eprintln!("leaving the fleet idle for {IDLE:?}");
    std::thread::sleep(IDLE);
    let nodes = hub.json(&["nodes"]);
    let online = nodes["nodes"]
        .as_array()
        .map_or(0, |n| n.iter().filter(|n| n["online"] == true).count());
    eprintln!("after {IDLE:?} idle: {online} nodes online");
}

/// Waits until all `count` nodes of the inventory are online.
pub fn wait_online(hub: &Hub, count: usize, within: Duration) {
    wait_until(&format!("{count} nodes online"), within, || {
        hub.json(&["nodes"])["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == count && n.iter().all(|n| n["online"] == true))
    });
}

pub fn serials(cluster: &SimCluster) -> Vec<(String, Option<u64>)> {
    cluster
        .nodes()
        .map(|sim| {
            let rel = if sim.role == Role::Server {
                "server/tls/serving-kube-apiserver.crt"
            } else {
                "agent/client-kubelet.crt"
            };
            (
                sim.node.name().to_owned(),
                cluster::serial_of(&sim.node, rel),
            )
        })
        .collect()
}

/// A booted 3 server + 2 worker cluster with a hub that has Kubernetes access (and the
/// mirror, when given) and every agent enrolled and online. Fields drop in order: the hub
/// first, then its address, its state, and the nodes.
#[derive(Debug)]
pub struct Fleet {
    /// The hub, a station on the ground's bridge.
    pub hub: Hub,
    /// The hub's address, kept for restarts on it.
    pub hub_addr: AddrLease,
    /// The hub's state folder.
    pub state: tempfile::TempDir,
    /// The nodes.
    pub cluster: SimCluster,
}

/// Boots a [`Fleet`] (blocking: call it from `block_in_place` inside [`crate::ground::block_on`]).
///
/// # Panics
/// When any step fails.
#[must_use]
pub fn boot_fleet(mirror: Option<&MirrorHandle>) -> Fleet {
    let cluster = SimCluster::boot(3, 2).expect("3+2 cluster");
    let state = tempfile::tempdir().expect("state");
    let hub_addr = hub_address();
    let hub = start_hub(state.path(), &hub_addr.ip().to_string(), &cluster, mirror);
    enroll_all(&cluster, &hub);
    Fleet {
        hub,
        hub_addr,
        state,
        cluster,
    }
}

/// A workload on the workers guarded by a budget that allows one disruption: pods `web-a`
/// (agent-1) and `web-b` (agent-2) of a ReplicaSet, PodDisruptionBudget `web-pdb`
/// (minAvailable 1).
pub async fn web_workload(client: &Client) {
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use kube::api::PostParams;

    use crate::sim::kube::fixtures::{pdb, workload_pod};

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for (name, node) in [("web-a", "agent-1"), ("web-b", "agent-2")] {
        pods.create(&PostParams::default(), &workload_pod(name, "web", node, 5))
            .await
            .expect("create pod");
    }
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    budgets
        .create(&PostParams::default(), &pdb("web-pdb", "web", 1))
        .await
        .expect("create pdb");
}

/// The plan view's events as `"<node> <message>"` lines.
#[must_use]
pub fn event_lines(view: &Value) -> Vec<String> {
    view["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e["node"].as_str().unwrap_or(""),
                        e["message"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts every node's serial changed between two [`serials`] readings.
///
/// # Panics
/// When one did not (or a certificate is missing).
pub fn assert_fresh_serials(before: &[(String, Option<u64>)], after: &[(String, Option<u64>)]) {
    for ((name, old), (_, new)) in before.iter().zip(after) {
        assert!(
            old.is_some() && new.is_some() && old != new,
            "{name}: {old:?} → {new:?}"
        );
    }
}

/// Each server of the finished plan `view` took a non-empty etcd snapshot named for the plan
/// and the node (a real one: `stat` on the node), the plan names it and `plan show` prints its
/// restore command; workers took none.
pub fn assert_server_snapshots(cluster: &SimCluster, hub: &Hub, id: &str, view: &Value) {
    for n in view["nodes"].as_array().expect("nodes") {
        let name = n["name"].as_str().expect("name");
        let snapshot = n["etcd_snapshot"].as_str().unwrap_or_default();
        if !name.starts_with("server-") {
            assert_eq!(snapshot, "", "{n}");
            continue;
        }
        let prefix =
            format!("/var/lib/rancher/rke2/server/db/snapshots/rke2ops-plan{id}-{name}-1-{name}-");
        assert!(snapshot.starts_with(&prefix), "{n}");
        let sim = cluster
            .nodes()
            .find(|s| s.node.name() == name)
            .expect("the node");
        let size = sim
            .node
            .exec(&["stat", "-c", "%s", snapshot])
            .expect("stat");
        let size: u64 = size.stdout.trim().parse().unwrap_or(0);
        assert!(size > 0, "{snapshot} is a real snapshot ({size} bytes)");
    }
    let shown = hub.run(&["plan", "show", id]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains(&format!(
            "restore: systemctl stop rke2-server && rke2 server --cluster-reset \
             --cluster-reset-restore-path=/var/lib/rancher/rke2/server/db/snapshots/rke2ops-plan{id}-"
        )),
        "{shown}"
    );
}
