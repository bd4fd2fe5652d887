//! The daemon's footprint and reaction time (a bench binary, `harness = false`):
//!
//! - idle RSS (VmRSS, VmHWM) of `rke2-node-agent run` on a full server tree;
//! - idle CPU over 10 s with no file changes (and the scan counter, which must not move);
//! - file event → updated metric: a certificate replaced by rename, then `/metrics` polled
//!   every 2 ms until its new NotAfter shows; 30 rounds, percentiles reported.
//!
//! Needs the agent built in the same profile: `cargo build --release -p rke2-node-agent`
//! before `cargo bench -p rke2ops-tests --bench agent_runtime`. Targets: RSS < 15 MiB, idle
//! CPU zero work, event → metric < 500 ms.

#![allow(clippy::cast_precision_loss, clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rke2ops_tests::ground::built_binary;
use rke2ops_tests::http;
use rke2ops_tests::sim::tree::{ClusterCas, Role, TreeSpec, Validity, generate};
use time::OffsetDateTime;

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("field present")
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

fn tree(root: &Path, cas: &ClusterCas, days: u64) {
    let mut spec = TreeSpec::new(
        Role::Server,
        "server-1",
        IpAddr::V4(Ipv4Addr::new(127, 0, 30, 1)),
        root.join("data"),
        OffsetDateTime::now_utc(),
    );
    spec.config_dir = Some(root.join("etc"));
    let spec = spec.with_validity(
        "server/tls/serving-kube-apiserver.crt",
        Validity::ExpiresIn(Duration::from_secs(days * 86_400)),
    );
    generate(&spec, cas).expect("tree");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to filter here.
    let dir = tempfile::tempdir().expect("tempdir");
    let cas = ClusterCas::generate(OffsetDateTime::now_utc()).expect("CAs");
    tree(&dir.path().join("live"), &cas, 300);
    // Two alternative versions of the apiserver certificate to swap in.
    tree(&dir.path().join("alt-a"), &cas, 200);
    tree(&dir.path().join("alt-b"), &cas, 100);
    let data = dir.path().join("live/data");

    let probe = std::net::TcpListener::bind("127.0.30.1:0").expect("probe");
    let addr: SocketAddr = probe.local_addr().expect("addr");
    drop(probe);
    let mut child = Command::new(built_binary("rke2-node-agent"))
        .args(["run", "--metrics-addr", &addr.to_string(), "--data-dir"])
        .arg(&data)
        .arg("--admin-kubeconfig")
        .arg(dir.path().join("live/etc/rke2.yaml"))
        .env("RKE2OPS_CONFIG", "/dev/null")
        .env("RKE2OPS_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("agent starts");
    let pid = child.id();
    let start = Instant::now();
    while http::get(addr, "/healthz", None).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "agent did not come up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let scans = |addr| {
        http::sample(
            &http::get(addr, "/metrics", None).expect("metrics"),
            "rke2ops_scans_total",
            "",
        )
        .expect("scans")
    };

    std::thread::sleep(Duration::from_secs(3));
    let rss = proc_status_kib(pid, "VmRSS:");
    let hwm = proc_status_kib(pid, "VmHWM:");
    let threads = proc_status_kib(pid, "Threads:");
    let scans_before = scans(addr);
    let ticks_before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(10));
    let ticks_after = cpu_ticks(pid);
    let scans_after = scans(addr);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;

    let label = "path=\"server/tls/serving-kube-apiserver.crt\",filename=\"serving-kube-apiserver.crt\",subject=\"CN=kube-apiserver\"";
    let target = data.join("server/tls/serving-kube-apiserver.crt");
    let mut latencies = Vec::new();
    for round in 0..30 {
        let source = dir
            .path()
            .join(if round % 2 == 0 { "alt-a" } else { "alt-b" })
            .join("data/server/tls/serving-kube-apiserver.crt");
        let bytes = std::fs::read(&source).expect("alt cert");
        let expected = rke2ops_common::certs::parse::parse_bundle(&bytes).certs[0]
            .not_after
            .unix_timestamp() as f64;
        let staging = target.with_extension("tmp");
        std::fs::write(&staging, &bytes).expect("stage");
        let t0 = Instant::now();
        std::fs::rename(&staging, &target).expect("rename");
        loop {
            let text = http::get(addr, "/metrics", None).expect("metrics");
            if http::sample(&text, "rke2ops_cert_not_after_timestamp_seconds", label)
                == Some(expected)
            {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "metric never updated"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        latencies.push(t0.elapsed());
        std::thread::sleep(Duration::from_millis(150));
    }
    latencies.sort();
    let _ = child.kill();
    let _ = child.wait();

    println!("agent_runtime: server tree, agent pid {pid}, {threads} threads");
    println!(
        "  idle RSS             {:.1} MiB (peak {:.1} MiB)  target < 15 MiB",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "  idle CPU over 10 s   {:.3} s ({} ticks), scans {} -> {}  target: zero work",
        (ticks_after - ticks_before) as f64 / hz,
        ticks_after - ticks_before,
        scans_before,
        scans_after
    );
    println!(
        "  event -> metric      p50 {:?}  p90 {:?}  max {:?}  (30 renames)  target < 500 ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        latencies[latencies.len() - 1]
    );
}
