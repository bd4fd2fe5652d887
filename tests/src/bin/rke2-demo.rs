//! `rke2-demo`: the README's demo on the proving ground (run by `scripts/demo.sh`).
//!
//! Boots simulated RKE2 nodes, each a real systemd + D-Bus in its own namespaces, writes
//! realistic RKE2 data dirs (one server whose leaves are already inside RKE2's 120-day renewal
//! window, one agent node), installs the real `rke2-node-agent` with the shipped unit file,
//! and walks through what an operator sees: systemd's status line, RKE2's check table, the
//! metrics, and the agent following a renewal within a second. The hub and the rolling
//! rotation/upgrade join this demo with their issues.

use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use rke2ops_tests::ground::{Node, NodeSpec, built_binary, require_root_and_tools};
use rke2ops_tests::http;
use rke2ops_tests::sim::tree::{ClusterCas, Role, TreeSpec, Validity, generate};
use time::OffsetDateTime;

const UNIT: &str = "rke2-node-agent.service";
const PORT: u16 = 9810;

/// Demo of rke2-ops on simulated RKE2 nodes.
#[derive(Debug, Parser)]
struct Args {
    /// Keep the nodes up this many seconds after the walkthrough (default: until Enter is
    /// pressed when run from a terminal, else 0).
    #[arg(long)]
    hold_secs: Option<u64>,
}

fn step(title: &str) {
    println!("\n\x1b[1m== {title}\x1b[0m");
}

struct DemoNode {
    node: Node,
    role: Role,
}

fn boot(
    name: &str,
    role: Role,
    cas: &ClusterCas,
    expiring_in_days: Option<u64>,
) -> Result<DemoNode> {
    let node = Node::boot(NodeSpec::new(name)).with_context(|| format!("boot {name}"))?;
    let now = OffsetDateTime::now_utc();
    let mut spec = TreeSpec::new(
        role,
        name,
        IpAddr::V4(node.ip()),
        node.host_path("/var/lib/rancher/rke2")?,
        now,
    )
    .with_config_dir(node.host_path("/etc/rancher/rke2")?);
    spec.node_data_dir = Some("/var/lib/rancher/rke2".into());
    if let Some(days) = expiring_in_days {
        // A server that has run for ~9 months: its leaves expire within RKE2's window.
        for leaf in [
            "server/tls/serving-kube-apiserver.crt",
            "server/tls/client-admin.crt",
            "agent/serving-kubelet.crt",
        ] {
            spec = spec.with_validity(
                leaf,
                Validity::ExpiresIn(Duration::from_secs(days * 86_400)),
            );
        }
    }
    generate(&spec, cas).with_context(|| format!("data dir of {name}"))?;
    node.write_file(
        "/etc/rke2-ops/node-agent.toml",
        format!("metrics_addr = \"{}:{PORT}\"\n", node.ip()),
    )?;
    node.install_binary(
        built_binary("rke2-node-agent"),
        "/usr/local/bin/rke2-node-agent",
    )?;
    node.install_binary(built_binary("rke2"), "/usr/local/bin/rke2")?;
    let unit = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../systemd")
        .join(UNIT);
    node.install_unit_file(&unit)?;
    node.systemctl(&["enable", "--now", UNIT])?;
    Ok(DemoNode { node, role })
}

fn main() -> Result<()> {
    let args = Args::parse();
    require_root_and_tools();
    let started = Instant::now();
    step("Booting simulated RKE2 nodes (a real systemd + D-Bus each, own loopback address)");
    let cas = ClusterCas::generate(OffsetDateTime::now_utc() - time::Duration::days(400))
        .context("cluster CAs")?;
    let nodes = vec![
        boot("server-1", Role::Server, &cas, Some(40))?,
        boot("agent-1", Role::Agent, &cas, None)?,
    ];
    for n in &nodes {
        println!(
            "  {:<9} {:<6} {}  rke2-node-agent: {} — {}",
            n.node.name(),
            if n.role == Role::Server {
                "server"
            } else {
                "agent"
            },
            n.node.ip(),
            n.node.unit_property(UNIT, "ActiveState")?,
            n.node.unit_property(UNIT, "StatusText")?,
        );
    }

    let server = &nodes[0].node;
    step("server-1: `rke2-node-agent check` (RKE2's table; exit 1 = something is WARNING)");
    let check = server.exec(&["/usr/local/bin/rke2-node-agent", "check"])?;
    let rows: Vec<&str> = check.stdout.lines().collect();
    for line in rows
        .iter()
        .take(3)
        .chain(rows.iter().filter(|l| l.contains("WARNING")))
    {
        println!("  {line}");
    }
    println!(
        "  ... {} rows in all, exit code {:?}",
        rows.len().saturating_sub(3),
        check.status.code()
    );

    step("server-1: metrics (curl http://<node-ip>:9810/metrics)");
    let addr = std::net::SocketAddr::new(IpAddr::V4(server.ip()), PORT);
    let metrics = http::get(addr, "/metrics", None).context("metrics")?;
    for line in metrics.lines().filter(|l| {
        l.starts_with("rke2ops_renewal") || l.starts_with("rke2ops_certificates{") || l.starts_with("rke2ops_cert_not_after_timestamp_seconds{path=\"server/tls/serving-kube-apiserver.crt\"")
    }) {
        println!("  {line}");
    }
    let deadline = http::sample(&metrics, "rke2ops_renewal_deadline_timestamp_seconds", "")
        .context("deadline")?;

    step("RKE2 restarts on server-1 and renews its expiring leaves (simulated); the agent follows");
    let t0 = Instant::now();
    let mut spec = TreeSpec::new(
        Role::Server,
        "server-1",
        IpAddr::V4(server.ip()),
        server.host_path("/var/lib/rancher/rke2")?,
        OffsetDateTime::now_utc(),
    )
    .with_config_dir(server.host_path("/etc/rancher/rke2")?);
    spec.node_data_dir = Some("/var/lib/rancher/rke2".into());
    generate(&spec, &cas).context("renew")?;
    let renewed = loop {
        let text = http::get(addr, "/metrics", None).context("metrics")?;
        let now = http::sample(&text, "rke2ops_renewal_deadline_timestamp_seconds", "")
            .context("deadline")?;
        if now > deadline {
            break now;
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(10),
            "agent did not follow the renewal"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let days = |ts: f64| (ts - OffsetDateTime::now_utc().unix_timestamp() as f64) / 86_400.0;
    println!(
        "  renewal deadline moved from {:.0} to {:.0} days ahead, seen by the agent {:?} after the files changed",
        days(deadline),
        days(renewed),
        t0.elapsed()
    );
    println!(
        "  systemd status: {}",
        server.unit_property(UNIT, "StatusText")?
    );

    step("Explore");
    for n in &nodes {
        println!(
            "  {}: http://{}:{PORT}/metrics   sudo nsenter -t {} -m -p systemctl status {UNIT}",
            n.node.name(),
            n.node.ip(),
            n.node.init_pid()
        );
    }
    println!(
        "  inside a node: rke2-node-agent check --output json; rke2 certificate check -o table; journalctl -u {UNIT}"
    );
    println!(
        "  ready in {:?}. The hub and rolling rotation/upgrade plans join this demo with their issues.",
        started.elapsed()
    );

    let hold = args.hold_secs.map(Duration::from_secs);
    match hold {
        Some(d) if !d.is_zero() => {
            println!("\nNodes stay up for {d:?}; Ctrl-C tears them down earlier.");
            std::thread::sleep(d);
        }
        None if std::io::stdin().is_terminal() => {
            println!("\nPress Enter to tear the nodes down.");
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        }
        _ => {}
    }
    step("Tearing down (SIGKILL to each node's init)");
    drop(nodes);
    println!("  done");
    Ok(())
}
