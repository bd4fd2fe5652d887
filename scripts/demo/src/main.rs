//! `rke2-demo`: the README's demo on the proving ground (run by `scripts/demo.sh`).
//!
//! Starts `rke2-hub`, boots a simulated RKE2 cluster (3 servers + 2 workers, each a real
//! systemd + D-Bus in its own namespaces, real etcd, simulated RKE2), installs the real
//! `rke2-node-agent` with the shipped unit on every node and enrolls it with a single-use
//! token and the pinned hub CA. The nodes start on the simulated v1.33.5+rke2r1 release; a
//! local mirror serves it and v1.34.1+rke2r1 with their checksums and a channel list. Then the
//! hub's plan engine runs two rolling plans with live progress: a certificate rotation and an
//! upgrade from the `v1.34` channel (servers one at a time, then workers; each node cordoned,
//! drained with its PodDisruptionBudget honoured, operated on by its agent, verified healthy,
//! uncordoned).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use rke2ops_tests::ground::{built_binary, ground, require_root_and_tools};
use rke2ops_tests::hub::HubProcess;
use rke2ops_tests::sim::cluster::{self, BootOptions, CONFIG_DIR, SimCluster};
use rke2ops_tests::sim::mirror::Mirror;
use rke2ops_tests::sim::release::{self, NEW_VERSION, OLD_VERSION};
use rke2ops_tests::sim::rpm::PackageTool;
use rke2ops_tests::sim::tree::{Role, Validity};
use time::OffsetDateTime;

/// Demo of rke2-ops on simulated RKE2 nodes.
#[derive(Debug, Parser)]
struct Args {
    /// Keep everything up this many seconds after the walkthrough (default: until Enter is
    /// pressed when run from a terminal, else 0).
    #[arg(long)]
    hold_secs: Option<u64>,
    /// Simulated servers.
    #[arg(long, default_value_t = 3)]
    servers: usize,
    /// Simulated workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

fn step(title: &str) {
    println!("\n\x1b[1m== {title}\x1b[0m");
}

fn indent(text: &str) {
    for line in text.lines() {
        println!("  {line}");
    }
}

/// POSTs `doc` to the Kubernetes API stand-in on server-1 as the cluster admin.
fn kube_post(cluster: &SimCluster, path: &str, doc: &serde_json::Value) -> Result<()> {
    let (status, body) = cluster::https_post_json(
        &cluster.servers[0].node,
        6443,
        path,
        Some("server/tls/client-admin"),
        &doc.to_string(),
    )?;
    anyhow::ensure!(status == 201, "POST {path}: {status} {body}");
    Ok(())
}

/// Runs an `rke2-hub` plan command with `--watch`, its live progress going straight to the
/// terminal; fails unless the plan completed.
fn watch(hub: &HubProcess, args: &[&str]) -> Result<()> {
    let status = std::process::Command::new(built_binary("rke2-hub"))
        .args(args)
        .arg("--socket")
        .arg(hub.socket())
        .status()
        .context("rke2-hub")?;
    anyhow::ensure!(status.success(), "the plan did not complete ({status})");
    Ok(())
}

/// Tears the demo down when this process alone gets SIGINT or SIGTERM (a terminal's Ctrl-C
/// also reaches the hub CLI watching a plan, which then just ends): the hub is stopped, the
/// state folder removed, and on exit every node's reaper kills its node (see
/// `rke2ops_tests::ground`), so nothing is left behind.
fn tear_down_on_signal(hub_pid: Arc<AtomicU32>, state: PathBuf) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Registered before the thread starts: a signal from now on is ours to handle.
    let (mut term, mut int) = runtime.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        ))
    })?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let (name, code) = runtime.block_on(async {
                tokio::select! {
                    _ = term.recv() => ("SIGTERM", 143),
                    _ = int.recv() => ("SIGINT", 130),
                }
            });
            INTERRUPTED.store(true, Ordering::SeqCst);
            eprintln!("\n{name}: tearing down (hub stopped, nodes killed by their reapers)");
            let pid = hub_pid.load(Ordering::SeqCst);
            if let Ok(pid) = i32::try_from(pid)
                && pid > 0
            {
                use nix::sys::signal::{Signal, kill};
                let pid = nix::unistd::Pid::from_raw(pid);
                let _ = kill(pid, Signal::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(5);
                while kill(pid, None).is_ok() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = kill(pid, Signal::SIGKILL);
            }
            let _ = std::fs::remove_dir_all(&state);
            std::process::exit(code);
        })?;
    Ok(())
}

/// Set by the signal thread: the main thread's errors from then on (a plan watch cut short)
/// are the interruption's doing, and the signal thread decides the exit code.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn main() -> Result<()> {
    let result = run();
    if INTERRUPTED.load(Ordering::SeqCst) {
        // The signal thread is tearing down and exits the process with 128 + the signal.
        loop {
            std::thread::park();
        }
    }
    result
}

fn run() -> Result<()> {
    let args = Args::parse();
    require_root_and_tools();
    let started = Instant::now();
    let state = tempfile::tempdir()?;
    let hub_pid = Arc::new(AtomicU32::new(0));
    tear_down_on_signal(Arc::clone(&hub_pid), state.path().to_path_buf())?;
    let ground = ground()?;

    step(&format!(
        "Booting {} simulated servers and {} workers (real systemd, D-Bus, etcd each)",
        args.servers, args.workers
    ));
    let cas = rke2ops_tests::sim::tree::ClusterCas::generate(
        OffsetDateTime::now_utc() - time::Duration::days(400),
    )
    .context("cluster CAs")?;
    // The last server is an RPM install (dnf, RKE2's packages from its per-minor repository
    // layout), the others tarball installs: one plan upgrades both.
    let rpm_repo = rke2ops_tests::sim::rpm::shared_rpm_repo().map_err(anyhow::Error::msg)?;
    let rpm_mirror = Mirror::serve_in_ground(&rpm_repo.releases_dir, vec![])?;
    let rpm_url = rke2ops_tests::sim::rpm::RpmRepo::url(&rpm_mirror.base_url());
    let rpm_node = (args.servers >= 2).then(|| format!("server-{}", args.servers));
    let mut options = BootOptions::default()
        .rpm_repo(rpm_url.clone())
        .rpm_version(OLD_VERSION);
    if let Some(name) = &rpm_node {
        options = options.rpm_node(name, PackageTool::Dnf);
    }
    let cluster =
        SimCluster::boot_with_options(cas, args.servers, args.workers, &options, |_, setup| setup)
            .context("cluster")?;
    // Every node runs the older release, servers first.
    for sim in cluster.nodes() {
        if sim.package_tool.is_none() {
            release::install_rke2(&sim.node, OLD_VERSION)?;
            sim.node.systemctl(&["restart", sim.unit()])?;
        }
        sim.node
            .wait_for_unit_state(sim.unit(), "active", Duration::from_secs(60))?;
    }
    println!(
        "  every node runs {OLD_VERSION}{}",
        rpm_node.as_deref().map_or_else(String::new, |n| format!(
            "; {n} from RPM packages (dnf, repository {rpm_url}), the others from the tarball"
        ))
    );
    // server-1 has been running for ~9 months: its leaves are inside RKE2's renewal window.
    let aged = cluster::NodeSetup::new(Role::Server, None)
        .with_validity(
            "server/tls/serving-kube-apiserver.crt",
            Validity::ExpiresIn(Duration::from_secs(40 * 86_400)),
        )
        .with_validity(
            "server/tls/client-admin.crt",
            Validity::ExpiresIn(Duration::from_secs(40 * 86_400)),
        );
    cluster::write_node(&cluster.servers[0].node, &aged, &cluster.cas)?;
    // A workload on two workers (ReplicaSet pods) with a PodDisruptionBudget: drains evict
    // one pod at a time and wait for its replacement. Needs two workers to place it on.
    if args.workers >= 2 {
        for (name, node) in [("web-a", "agent-1"), ("web-b", "agent-2")] {
            let pod = serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": {"app": "web"}, "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5f7c9d",
                    "uid": "6c1f0d2e-3b4a-4e59-8f61-2a7d9e0b4c13", "controller": true}]},
                "spec": {"nodeName": node, "terminationGracePeriodSeconds": 5,
                         "containers": [{"name": "web", "image": "registry.example/web:1"}]}
            });
            kube_post(&cluster, "/api/v1/namespaces/default/pods", &pod)?;
        }
        let pdb = serde_json::json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "web-pdb"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}
        });
        kube_post(
            &cluster,
            "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
            &pdb,
        )?;
        println!(
            "  workload: pods web-a (agent-1), web-b (agent-2), PodDisruptionBudget web-pdb (minAvailable 1)"
        );
    } else {
        println!("  no workload (it needs two workers)");
    }

    let releases = state.path().join("releases");
    release::build_release(&releases, OLD_VERSION)?;
    release::build_release(&releases, NEW_VERSION)?;
    let mirror = Mirror::serve_in_ground(
        &releases,
        vec![
            format!("stable={OLD_VERSION}")
                .parse()
                .map_err(anyhow::Error::msg)?,
            format!("v1.34={NEW_VERSION}")
                .parse()
                .map_err(anyhow::Error::msg)?,
            format!("latest={NEW_VERSION}")
                .parse()
                .map_err(anyhow::Error::msg)?,
        ],
    )?;
    step(&format!(
        "Artifact mirror and channel server on {} ({OLD_VERSION} and {NEW_VERSION}, sha256sum files)",
        mirror.addr
    ));
    println!("  channels: {}/v1-release/channels", mirror.base_url());

    // The hub's Kubernetes access: server-1's rke2.yaml, failing over between all apiservers.
    let kubeconfig = state.path().join("rke2.yaml");
    std::fs::write(
        &kubeconfig,
        cluster.servers[0]
            .node
            .read_file(format!("{CONFIG_DIR}/rke2.yaml"))?,
    )?;
    let endpoints = cluster
        .servers
        .iter()
        .map(|s| format!("https://{}:6443", s.node.ip()))
        .collect::<Vec<_>>()
        .join(",");
    let channels = format!("{}/v1-release/channels", mirror.base_url());
    let hub = HubProcess::start_in_ground(
        state.path(),
        &[
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "--apiserver-endpoint",
            &endpoints,
            "--artifact-mirror",
            &mirror.base_url(),
            "--channel-url",
            &channels,
        ],
    );
    hub_pid.store(hub.pid(), Ordering::SeqCst);
    step(&format!(
        "rke2-hub up: gRPC with mutual TLS on {}, admin socket, metrics :9812",
        hub.addr
    ));
    println!("  hub pid {}, state {}", hub.pid(), state.path().display());

    step(
        "Enrolling every node's agent (single-use token + pinned hub CA; the key never leaves the node)",
    );
    for sim in cluster.nodes() {
        let mut config = "ready_timeout_secs = 60\nheartbeat_secs = 5\n".to_owned();
        if sim.package_tool.is_some() {
            // The simulated repository is laid out for centos/9 and signed with its own key,
            // which the mirror serves as RKE2's repository serves public.key.
            let key = rke2ops_tests::sim::rpm::RpmRepo::key_url(&rpm_mirror.base_url());
            config.push_str(&format!(
                "rpm_repository = \"{rpm_url}\"\nrpm_os = \"centos/9\"\nrpm_gpg_key = \"{key}\"\n"
            ));
        }
        rke2ops_tests::hub::enroll_agent(&sim.node, &hub, &config)?;
        println!(
            "  {} ({}, init pid {}) enrolled",
            sim.node.name(),
            sim.node.ip(),
            sim.node.init_pid()
        );
    }
    let total = cluster.nodes().count();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let nodes = hub.json(&["nodes"]);
        let online = nodes["nodes"].as_array().map_or(0, |n| {
            n.iter()
                .filter(|n| n["online"] == true && !n["worst_status"].is_null())
                .count()
        });
        if online == total {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {online} of {total} agents reported"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    step(
        "What the doctor finds across the fleet: rke2-hub doctor (exit 0 none, 1 warnings, 2 blockers)",
    );
    let doctor = hub.run(&["doctor"]);
    indent(&String::from_utf8_lossy(&doctor.stdout));
    println!("  (exit {})", doctor.status.code().unwrap_or(-1));
    step(
        "The fleet at the hub: rke2-hub nodes (FINDING: each node's worst; METHOD: rpm or tarball)",
    );
    indent(&hub.cli(&["nodes"]).context("nodes")?);
    step("Certificates expiring within 60 days: rke2-hub certs --expiring-within 60d");
    indent(
        &hub.cli(&["certs", "--expiring-within", "60d"])
            .context("certs")?,
    );

    step("Rolling rotation, planned by the hub: rke2-hub rotate --dry-run (order and gates)");
    indent(&hub.cli(&["rotate", "--dry-run"]).context("dry run")?);
    step(
        "rke2-hub rotate --etcd-snapshot --watch: one node at a time, servers first, each verified before the next, each server's etcd snapshotted first",
    );
    watch(
        &hub,
        &["rotate", "--settle", "2s", "--etcd-snapshot", "--watch"],
    )?;
    step(
        "What an upgrade would do, per node: rke2-hub upgrade --channel v1.34 --stage-images --dry-run",
    );
    indent(
        &hub.cli(&[
            "upgrade",
            "--channel",
            "v1.34",
            "--stage-images",
            "--dry-run",
        ])
        .context("upgrade dry run")?,
    );
    step(&format!(
        "Rolling upgrade from the v1.34 channel, images staged on every node first: rke2-hub upgrade --channel v1.34 --stage-images --watch ({OLD_VERSION} → {NEW_VERSION})"
    ));
    watch(
        &hub,
        &[
            "upgrade",
            "--channel",
            "v1.34",
            "--stage-images",
            "--settle",
            "2s",
            "--watch",
        ],
    )?;
    if let Some(sim) = cluster.nodes().find(|s| s.package_tool.is_some()) {
        let q = sim
            .node
            .exec(&["rpm", "-q", "rke2-common", "rke2-server"])?;
        println!(
            "  {}'s RPM database: {}",
            sim.node.name(),
            q.stdout.split_whitespace().collect::<Vec<_>>().join(", ")
        );
    }
    // One heartbeat (5 s) lets every agent report its unit's state after the restart.
    std::thread::sleep(Duration::from_secs(6));
    step("After both plans: rke2-hub nodes");
    indent(&hub.cli(&["nodes"]).context("nodes")?);
    step("rke2-hub plans");
    indent(&hub.cli(&["plans"]).context("plans")?);

    step("Explore");
    println!(
        "  rke2-hub nodes|certs|plans [--output json] --socket {}",
        hub.socket().display()
    );
    println!(
        "  rke2-hub plan show 2 --socket {0};  rke2-hub restart --dry-run --socket {0}",
        hub.socket().display()
    );
    println!(
        "  hub metrics:  nsenter --net={} curl -s http://{}:9812/metrics",
        ground.netns_path().display(),
        hub.ip()
    );
    println!(
        "  alert rules:  monitoring/rke2-ops.rules.yml (promtool test rules monitoring/rke2-ops.rules.test.yml)"
    );
    for sim in cluster.nodes() {
        println!(
            "  {:<9} {}  shell: nsenter -t {} -m -p -u -n bash",
            sim.node.name(),
            sim.node.ip(),
            sim.node.init_pid()
        );
    }
    let server = &cluster.servers[0].node;
    println!(
        "\n  Inside a server (nsenter -t {} -m -p -u -n bash), the runbook's commands work as on a real node:",
        server.init_pid()
    );
    for command in rke2ops_tests::runbook::section(1) {
        println!("    {command}");
    }
    println!(
        "  and the agent's own: rke2-node-agent status | check | rotate --dry-run; systemctl status rke2-server"
    );
    println!(
        "  everything was up after {:.0} s",
        started.elapsed().as_secs_f64()
    );

    match args.hold_secs.map(Duration::from_secs) {
        Some(d) if !d.is_zero() => {
            println!("\nUp for {d:?}; Ctrl-C tears everything down earlier.");
            std::thread::sleep(d);
        }
        None if std::io::stdin().is_terminal() => {
            println!("\nPress Enter to tear everything down.");
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        }
        _ => {}
    }
    step("Tearing down (SIGKILL to each node's init, SIGTERM to the hub, mirror stopped)");
    drop(cluster);
    hub.stop();
    drop(mirror);
    println!("  done");
    Ok(())
}
