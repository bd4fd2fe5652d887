//! `rke2-demo`: the README's demo on the proving ground (run by `scripts/demo.sh`).
//!
//! Starts `rke2-hub`, boots a simulated RKE2 cluster (3 servers + 2 workers, each a real
//! systemd + D-Bus in its own namespaces, real etcd, simulated RKE2), installs the real
//! `rke2-node-agent` with the shipped unit on every node and enrolls it with a single-use
//! token and the pinned hub CA. Then it shows the fleet at the hub and rotates every node's
//! certificates one at a time, servers first, each verified before the next (driven node by
//! node from here: the hub's own plan engine arrives with its issue), while the hub's
//! inventory follows.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use rke2ops_tests::ground::{built_binary, require_root_and_tools};
use rke2ops_tests::hub::HubProcess;
use rke2ops_tests::sim::cluster::{self, SimCluster, SimNode};
use rke2ops_tests::sim::tree::{Role, Validity};
use time::OffsetDateTime;

const AGENT: &str = "/usr/local/bin/rke2-node-agent";
const HUB_IP: &str = "127.0.30.1";

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

fn enroll(sim: &SimNode, hub: &HubProcess) -> Result<()> {
    let token = hub.json(&["token", "create", "--ttl", "15m"]);
    let node = &sim.node;
    node.install_binary(built_binary("rke2-node-agent"), AGENT)?;
    node.write_file(
        "/etc/rke2-ops/node-agent.toml",
        format!(
            "metrics_addr = \"{ip}:9810\"\nkubelet_healthz_addr = \"{ip}:10248\"\nready_timeout_secs = 60\n\
             hub_address = \"{}\"\nhub_token = \"{}\"\nhub_ca_pin = \"{}\"\nnode_name = \"{}\"\nheartbeat_secs = 5\n",
            hub.addr,
            token["token"].as_str().context("token")?,
            token["ca_pin"].as_str().context("pin")?,
            node.name(),
            ip = node.ip(),
        ),
    )?;
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/rke2-node-agent.service");
    node.install_unit_file(&unit)?;
    node.systemctl(&["enable", "--now", "rke2-node-agent.service"])?;
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    require_root_and_tools();
    let started = Instant::now();
    let state = tempfile::tempdir()?;

    step(
        "Starting rke2-hub (gRPC with mutual TLS on 127.0.30.1:9811, admin socket, metrics :9812)",
    );
    let hub = HubProcess::start(state.path(), HUB_IP);
    println!("  hub state: {}", state.path().display());

    step(&format!(
        "Booting {} simulated servers and {} workers (real systemd, D-Bus, etcd each)",
        args.servers, args.workers
    ));
    let cas = rke2ops_tests::sim::tree::ClusterCas::generate(
        OffsetDateTime::now_utc() - time::Duration::days(400),
    )
    .context("cluster CAs")?;
    let cluster = SimCluster::boot_with(cas, args.servers, args.workers, |_, setup| setup)
        .context("cluster")?;
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

    step(
        "Enrolling every node's agent (single-use token + pinned hub CA; the key never leaves the node)",
    );
    for sim in cluster.nodes() {
        enroll(sim, &hub)?;
        println!("  {} ({}) enrolled", sim.node.name(), sim.node.ip());
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

    step("The fleet at the hub: rke2-hub nodes");
    indent(&hub.cli(&["nodes"]).context("nodes")?);
    step("Certificates expiring within 60 days: rke2-hub certs --expiring-within 60d");
    indent(
        &hub.cli(&["certs", "--expiring-within", "60d"])
            .context("certs")?,
    );

    step("Rolling rotation: one node at a time, servers first, each verified before the next");
    for sim in cluster.servers.iter().chain(cluster.agents.iter()) {
        println!("\n  -- {} --", sim.node.name());
        let t0 = Instant::now();
        let out = sim.node.exec(&[AGENT, "rotate"])?;
        for line in out
            .stdout
            .lines()
            .filter(|l| l.contains(" ok ") || l.contains("FAILED") || l.contains("succeeded"))
        {
            println!("  {line}");
        }
        anyhow::ensure!(
            out.status.success(),
            "rotation on {} failed; stopping the roll:\n{}",
            sim.node.name(),
            out.stdout
        );
        println!(
            "  {} rotated in {:.1} s",
            sim.node.name(),
            t0.elapsed().as_secs_f64()
        );
    }
    // One heartbeat (5 s) lets every agent report its unit's state after the restart.
    std::thread::sleep(Duration::from_secs(6));
    step("After the roll: every node fresh (rke2-hub nodes)");
    indent(&hub.cli(&["nodes"]).context("nodes")?);

    step("Explore");
    println!(
        "  rke2-hub nodes|certs [--output json] --socket {}",
        hub.socket().display()
    );
    println!("  hub metrics:  curl http://{HUB_IP}:9812/metrics");
    for sim in cluster.nodes() {
        println!(
            "  {:<9} agent metrics http://{}:9810/metrics   shell: nsenter -t {} -m -p -u bash",
            sim.node.name(),
            sim.node.ip(),
            sim.node.init_pid()
        );
    }
    println!(
        "  inside a node: rke2-node-agent status | check | rotate --dry-run; systemctl status rke2-server"
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
    step("Tearing down (SIGKILL to each node's init, SIGTERM to the hub)");
    drop(cluster);
    hub.stop();
    println!("  done");
    Ok(())
}
