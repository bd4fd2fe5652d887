//! The hub under fleet load (a bench binary, `harness = false`): N simulated agents against a
//! real `rke2-hub serve`, and what it costs the hub.
//!
//! For each N (default 500, 1,000 and 2,000, each with a fresh hub and state dir):
//!
//! 1. start the release `rke2-hub serve` on loopback ports chosen by the kernel;
//! 2. enroll N agents the way real ones do: a join token each (admin socket, `CreateToken`),
//!    the agent's own key and CSR, `Enroll` over TLS that trusts only the pinned hub CA;
//! 3. open N `Connect` streams, each on its own mutual-TLS connection (as real agents), each
//!    sending a Hello and one full status of an RKE2 server (~50 certificates, scanned from a
//!    generated data dir by the agent's own scanner and converted by the agent's own code),
//!    with the agent's clock (`sent_at`) and its doctor findings: none on most nodes, a
//!    `renewal-deadline-near` warning on ~10 %, a `pem-empty-or-corrupt` blocker (evidence,
//!    restore command) on ~2 % and a `disk-low` warning on ~1 % (0 to 3 a node, built as
//!    common's `Finding` and converted as the agent does); later full statuses carry the clock
//!    and leave the findings out (unchanged);
//! 4. once every full status is stored, measure a window (60 s by default): every agent sends
//!    a heartbeat every 10 s (phases spread at random), and ~1 % of agents per minute send a
//!    full status again (a certificate changed); an operator calls `ListNodes` a few times;
//! 5. after the window, the agents still connected: the fleet doctor (`rke2-hub doctor`, the
//!    admin `Doctor` RPC over every node) 10 times, then `ListNodes` once (each node's worst
//!    finding from that run). The hub has no kubeconfig here, so this is the store reads (nodes,
//!    every node's findings, last renewals) and the pure checks, plus encoding the report.
//!
//! Reported per N: hub CPU over the window (utime + stime from `/proc/<pid>/stat`, % of one
//! core), RSS at the end and its high-water mark, the p99 of the hub's own handling-time
//! histogram (`rke2ops_hub_rpc_duration_seconds`, bucket deltas over the window, interpolated
//! inside the bucket as `histogram_quantile` does) for heartbeats and full statuses, and the
//! client-side time of a `ListNodes` call under load. Enrollment and the connection storm are
//! outside the window; how long they took, and the full-status p99 during the storm (N samples,
//! where the window has only ~N/100 per minute), are printed beside. So are the RSS before and
//! after the first `/metrics` scrape and the scrape's duration: the scrape reads the store.
//! For the doctor: the client-side min / median / max of the `Doctor` calls, the findings in
//! the report (per severity; every finding the agents sent must be in it, else the bench
//! fails), its encoded size, and the `ListNodes` time after it.
//! The histogram times handling only (decode and queueing before it are not in it), and its
//! first bucket is 0.5 ms, so a p99 below that prints as "<0.5".
//!
//! The client side runs in this process: a few shard tasks each own a slice of the agents and a
//! timer heap for their heartbeats; each agent's inbound stream has a reader task that wakes
//! only when the hub speaks. The load generator's own CPU is reported too: on the 2-core
//! machine it competes with the hub.
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p rke2ops-tests --bench
//! hub_load` (~4 min for the three sizes). Choose sizes with arguments (`-- 500 2000`) or
//! `HUB_LOAD_N=500,2000`, the window with `HUB_LOAD_WINDOW_SECS`, the share of agents sending
//! a full status per minute with `HUB_LOAD_FULL_PERCENT` (default 1; 30 gives ~600 samples
//! per minute at N = 2,000). Targets at N = 2,000: hub CPU < 10 % of one core, RSS < 200 MiB,
//! p99 < 20 ms, `rke2-hub doctor` (the `Doctor` RPC, client-side, slowest call) < 1 s.
//! `HUB_STORE=etcd` runs each hub with its state in a fresh one-member etcd (every store
//! write is then an etcd transaction before SQLite commits; see `rke2_hub::ha`).

#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rke2_node_agent::link::{convert, tls};
use rke2ops_common::certs::status::warn_window;
use rke2ops_common::certs::{ScanConfig, Scanner};
use rke2ops_common::doctor::{Code, Finding, Severity};
use rke2ops_common::identity::NodeKey;
use rke2ops_proto::v1 as pb;
use rke2ops_proto::v1::admin_service_client::AdminServiceClient;
use rke2ops_proto::v1::agent_service_client::AgentServiceClient;
use rke2ops_tests::ground::built_binary;
use rke2ops_tests::sim::tree::{ClusterCas, Role, TreeSpec, generate};
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// Interval between an agent's heartbeats (the agent's default).
const HEARTBEAT: Duration = Duration::from_secs(10);
/// Share of the agents that send a full status again per minute (`HUB_LOAD_FULL_PERCENT`
/// overrides it, for enough full-status samples to make their p99 meaningful).
const FULL_STATUS_PER_MINUTE: f64 = 0.01;
/// Agents enrolled at once (enrollment is set-up, not measured).
const ENROLL_CONCURRENCY: usize = 16;
/// Streams being opened at once (a hub restart: agents reconnect with jittered backoff).
const CONNECT_CONCURRENCY: usize = 32;
/// Client shard tasks that drive the streams.
const SHARDS: usize = 4;
/// `ListNodes` calls spread over the window.
const LIST_CALLS: u32 = 4;
/// `Doctor` calls once the window is over (the fleet doctor over every node).
const DOCTOR_CALLS: usize = 10;
/// The hub's handling-time histogram.
const RPC_HISTOGRAM: &str = "rke2ops_hub_rpc_duration_seconds_bucket";

fn main() {
    let sizes = sizes();
    let window = Duration::from_secs(
        std::env::var("HUB_LOAD_WINDOW_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    let full_per_minute = std::env::var("HUB_LOAD_FULL_PERCENT")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .map_or(FULL_STATUS_PER_MINUTE, |percent| percent / 100.0);
    let hub_bin = built_binary("rke2-hub");
    let largest = sizes.iter().copied().max().unwrap_or(0);
    raise_open_file_limit(largest as u64 + 1024);
    let payload = server_status();
    let full_count = match &payload.body {
        Some(pb::agent_message::Body::Status(s)) => s.certificates.len(),
        _ => 0,
    };
    println!(
        "hub_load: sizes {sizes:?}, window {} s, full status = {full_count} certificates \
         ({} bytes encoded), heartbeat every {} s, {:.0} % full statuses per minute, \
         {} cores",
        window.as_secs(),
        prost::Message::encoded_len(&payload),
        HEARTBEAT.as_secs(),
        full_per_minute * 100.0,
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let payload = Arc::new(payload);
    let mut results = Vec::new();
    for &n in &sizes {
        let result = runtime.block_on(run(
            &hub_bin,
            n,
            window,
            full_per_minute,
            Arc::clone(&payload),
        ));
        result.print_details();
        results.push(result);
    }
    println!();
    println!(
        "{:>6} {:>7} {:>8} {:>8} {:>10} {:>10} {:>10} {:>9} {:>10} {:>10}",
        "N",
        "CPU %",
        "RSS MiB",
        "HWM MiB",
        "p99 hb ms",
        "p99 full",
        "ListNodes",
        "scrape ms",
        "Doctor med",
        "Doctor max"
    );
    for r in &results {
        println!(
            "{:>6} {:>7.2} {:>8.1} {:>8.1} {:>10} {:>10} {:>10.1} {:>9.1} {:>10.1} {:>10.1}",
            r.n,
            r.hub_cpu_percent,
            r.rss_mib,
            r.hwm_mib,
            ms(r.p99_heartbeat),
            ms(r.p99_full),
            r.list_nodes_ms.iter().copied().fold(0.0, f64::max),
            r.scrape_ms,
            r.doctor.median(),
            r.doctor.max(),
        );
    }
    println!(
        "(p99 of the hub's own histogram over the window, \"<0.5\" = inside its first bucket; \
         ListNodes = slowest of {LIST_CALLS} calls during the window; scrape = one /metrics GET \
         at the window's end; Doctor = median and slowest of {DOCTOR_CALLS} calls after the \
         window, client-side ms, target < 1000 at N = 2,000)"
    );
}

/// A quantile in milliseconds: "<0.5" when it fell in the first bucket (the histogram cannot
/// tell more), ">1000" in the last, else the interpolated value.
fn ms(quantile: Option<Quantile>) -> String {
    match quantile {
        None => "-".to_owned(),
        Some(q) if q.lower == 0.0 => format!("<{}", q.upper * 1000.0),
        Some(q) if q.upper.is_infinite() => format!(">{}", q.lower * 1000.0),
        Some(q) => format!("{:.1}", q.estimate * 1000.0),
    }
}

/// Sizes from the arguments (cargo passes `--bench`, skipped), else `HUB_LOAD_N`, else all three.
fn sizes() -> Vec<usize> {
    let from_args: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .filter_map(|a| a.parse().ok())
        .collect();
    if !from_args.is_empty() {
        return from_args;
    }
    if let Ok(list) = std::env::var("HUB_LOAD_N") {
        let parsed: Vec<usize> = list
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        if !parsed.is_empty() {
            return parsed;
        }
    }
    vec![500, 1000, 2000]
}

/// Both this process and the hub (which inherits the limit) hold one socket per agent.
fn raise_open_file_limit(wanted: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft >= wanted {
        return;
    }
    let new = wanted.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, new, hard).expect("setrlimit");
    println!("raised the open-file limit from {soft} to {new} (hard {hard})");
    assert!(
        new >= wanted,
        "the hard open-file limit {hard} is below the {wanted} this load needs"
    );
}

/// A full status of an RKE2 server: a generated data dir scanned by the agent's scanner and
/// converted by the agent's own code, exactly what a real agent would send.
fn server_status() -> pb::AgentMessage {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = OffsetDateTime::now_utc();
    let cas = ClusterCas::generate(now).expect("CAs");
    let mut spec = TreeSpec::new(
        Role::Server,
        "server-1",
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 11)),
        dir.path().join("data"),
        now,
    );
    spec.config_dir = Some(dir.path().join("etc"));
    generate(&spec, &cas).expect("tree");
    let inventory = Scanner::new(ScanConfig::new(
        dir.path().join("data"),
        Some(dir.path().join("etc/rke2.yaml")),
        &[],
    ))
    .scan();
    pb::AgentMessage {
        body: Some(pb::agent_message::Body::Status(convert::status_message(
            &inventory,
            now,
            warn_window(90),
            "active",
            true,
        ))),
    }
}

/// The doctor findings agent `i` reports with its first full status, as a real agent's own
/// doctor writes them: ~10 % of the nodes have a `renewal-deadline-near` warning, ~2 % (a
/// subset of those) a `pem-empty-or-corrupt` blocker with its backup and the restore command,
/// ~1 % (a subset of those) a `disk-low` warning too; the rest none. 0 to 3 findings a node.
fn agent_findings(i: usize, node: &str, now: OffsetDateTime) -> Vec<Finding> {
    const UNIT: &str = "rke2-server";
    let mut findings = Vec::new();
    if i % 50 == 3 {
        findings.push(
            Finding::new(
                Code::PemEmptyOrCorrupt,
                Severity::Blocker,
                node,
                "server/tls/serving-kube-apiserver.crt",
                format!(
                    "systemctl stop {UNIT} && cp -a /var/lib/rancher/rke2/server/tls-1712000000/\
                     serving-kube-apiserver.crt /var/lib/rancher/rke2/server/tls/\
                     serving-kube-apiserver.crt && cp -a /var/lib/rancher/rke2/server/\
                     tls-1712000000/serving-kube-apiserver.key /var/lib/rancher/rke2/server/tls/\
                     serving-kube-apiserver.key && systemctl start {UNIT}"
                ),
            )
            .with("reason", "failed to find any PEM data in certificate input")
            .with("backup", "server/tls-1712000000/serving-kube-apiserver.crt"),
        );
    }
    if i % 100 == 3 {
        findings.push(
            Finding::new(
                Code::DiskLow,
                Severity::Warning,
                node,
                "/var/lib/rancher/rke2/server/db",
                "free space on the file system of /var/lib/rancher/rke2/server/db (df -h \
                 /var/lib/rancher/rke2/server/db; old etcd snapshots: rke2 etcd-snapshot prune; \
                 images: crictl rmi --prune)",
            )
            .with("purpose", "etcd data")
            .with("free_mib", "812")
            .with("min_free_mib", "2048"),
        );
    }
    if i % 10 == 3 {
        let days_left = 20 + i64::try_from((i / 10) % 60).expect("small");
        let deadline = now + time::Duration::days(days_left);
        findings.push(
            Finding::new(
                Code::RenewalDeadlineNear,
                Severity::Warning,
                node,
                "server/tls/kube-controller-manager/kube-controller-manager.crt",
                format!(
                    "systemctl stop {UNIT} && rke2 certificate rotate && systemctl start {UNIT}"
                ),
            )
            .with(
                "deadline",
                deadline
                    .format(&time::format_description::well_known::Rfc3339)
                    .expect("RFC 3339"),
            )
            .with("days_left", days_left.to_string())
            .with("window_open", "false"),
        );
    }
    findings
}

/// Agent `i`'s first full status: the shared certificates, its clock and its doctor findings
/// (later full statuses leave `doctor` out: unchanged, as a real agent does).
fn first_status(
    payload: &pb::AgentMessage,
    i: usize,
    node: &str,
    now: OffsetDateTime,
) -> pb::AgentMessage {
    let mut message = payload.clone();
    if let Some(pb::agent_message::Body::Status(status)) = &mut message.body {
        status.sent_at = Some(convert::timestamp(now));
        status.doctor = Some(pb::DoctorFindings {
            findings: agent_findings(i, node, now)
                .iter()
                .map(pb::DoctorFinding::from)
                .collect(),
        });
    }
    message
}

/// A later full status: the shared certificates with the agent's clock now.
fn later_status(payload: &pb::AgentMessage) -> pb::AgentMessage {
    let mut message = payload.clone();
    if let Some(pb::agent_message::Body::Status(status)) = &mut message.body {
        status.sent_at = Some(convert::timestamp(OffsetDateTime::now_utc()));
    }
    message
}

/// One size's numbers.
#[derive(Debug)]
struct RunResult {
    n: usize,
    enroll: Duration,
    connect: Duration,
    settle: Duration,
    window: Duration,
    hub_cpu_percent: f64,
    hub_cpu_ramp_percent: f64,
    bench_cpu_percent: f64,
    rss_mib: f64,
    hwm_mib: f64,
    /// RSS once every status is stored, before the first `/metrics` scrape, and after it.
    rss_storm_mib: (f64, f64),
    /// That first scrape's duration.
    first_scrape_ms: f64,
    p99_heartbeat: Option<Quantile>,
    p99_full: Option<Quantile>,
    p99_full_storm: Option<Quantile>,
    handled: BTreeMap<String, f64>,
    list_nodes_ms: Vec<f64>,
    scrape_ms: f64,
    sent: CounterValues,
    doctor: DoctorTimes,
}

/// The fleet doctor after the window: `DOCTOR_CALLS` `Doctor` calls, then one `ListNodes`.
#[derive(Debug)]
struct DoctorTimes {
    /// Client-side time of each call, sorted (ms).
    ms: Vec<f64>,
    /// Findings in the (last) report, and how many of them the agents reported.
    findings: usize,
    from_agents: usize,
    /// Findings per severity word in the report.
    by_severity: BTreeMap<String, usize>,
    /// The report's encoded size (bytes).
    bytes: usize,
    /// `ListNodes` right after (each node's worst finding), client-side (ms).
    list_nodes_ms: f64,
}

impl DoctorTimes {
    fn min(&self) -> f64 {
        self.ms.first().copied().unwrap_or(f64::NAN)
    }
    fn median(&self) -> f64 {
        self.ms.get(self.ms.len() / 2).copied().unwrap_or(f64::NAN)
    }
    fn max(&self) -> f64 {
        self.ms.last().copied().unwrap_or(f64::NAN)
    }
}

impl RunResult {
    fn print_details(&self) {
        println!(
            "N={}: enroll {:.1} s, connect storm {:.1} s (hub CPU {:.0} %), all full statuses \
             stored {:.1} s later; window {:.0} s",
            self.n,
            self.enroll.as_secs_f64(),
            self.connect.as_secs_f64(),
            self.hub_cpu_ramp_percent,
            self.settle.as_secs_f64(),
            self.window.as_secs_f64(),
        );
        println!(
            "  hub CPU {:.2} % of one core, RSS {:.1} MiB (peak {:.1}); load generator CPU \
             {:.2} %",
            self.hub_cpu_percent, self.rss_mib, self.hwm_mib, self.bench_cpu_percent
        );
        println!(
            "  RSS after the storm {:.1} MiB, after the first /metrics scrape ({:.0} ms) {:.1} MiB",
            self.rss_storm_mib.0, self.first_scrape_ms, self.rss_storm_mib.1
        );
        let handled: Vec<String> = self
            .handled
            .iter()
            .map(|(method, count)| format!("{method} {count:.0}"))
            .collect();
        println!(
            "  handled in the window: {}; sent: {} heartbeats, {} full statuses, {} dropped \
             (agent queue full), {} streams ended",
            handled.join(", "),
            self.sent.heartbeats,
            self.sent.full,
            self.sent.dropped,
            self.sent.ended
        );
        println!(
            "  p99 heartbeat {} ms, full status {} ms (during the connect storm {} ms); \
             ListNodes {:?} ms; /metrics scrape {:.1} ms",
            ms(self.p99_heartbeat),
            ms(self.p99_full),
            ms(self.p99_full_storm),
            self.list_nodes_ms
                .iter()
                .map(|v| (v * 10.0).round() / 10.0)
                .collect::<Vec<_>>(),
            self.scrape_ms,
        );
        let d = &self.doctor;
        let severities: Vec<String> = d
            .by_severity
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect();
        println!(
            "  Doctor x{}: min {:.1} / median {:.1} / max {:.1} ms; {} findings ({}; {} reported \
             by the agents), {} bytes; ListNodes after it {:.1} ms",
            d.ms.len(),
            d.min(),
            d.median(),
            d.max(),
            d.findings,
            severities.join(", "),
            d.from_agents,
            d.bytes,
            d.list_nodes_ms,
        );
    }
}

/// A hub child process on loopback, killed on drop.
struct Hub {
    child: Child,
    grpc: SocketAddr,
    metrics: SocketAddr,
    socket: PathBuf,
    /// The etcd holding its state (`HUB_STORE=etcd`), stopped after the hub.
    _etcd: Option<rke2ops_tests::etcd::Etcd>,
}

impl Hub {
    fn start(bin: &Path, state: &Path) -> Hub {
        let grpc = free_port();
        let metrics = free_port();
        let log = std::fs::File::create(state.join("hub.log")).expect("log file");
        let socket = state.join("hub.sock");
        // `HUB_STORE=etcd`: the hub's state in a fresh one-member etcd on 127.0.65.1.
        let etcd = (std::env::var("HUB_STORE").as_deref() == Ok("etcd"))
            .then(|| rke2ops_tests::etcd::Etcd::start(65, 1));
        let mut command = Command::new(bin);
        command.args(["serve", "--listen-addr", &grpc.to_string()]);
        if let Some(etcd) = &etcd {
            command.args(["--store", "etcd", "--etcd-endpoint", &etcd.endpoints()]);
        }
        let child = command
            .args(["--advertise-address", &grpc.to_string()])
            .args(["--metrics-addr", &metrics.to_string()])
            .arg("--state-dir")
            .arg(state.join("state"))
            .arg("--admin-socket")
            .arg(&socket)
            .env("RKE2OPS_HUB_CONFIG", "/dev/null")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("rke2-hub starts");
        Hub {
            child,
            grpc,
            metrics,
            socket,
            _etcd: etcd,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port the kernel says is free now (the hub binds it a moment later).
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.local_addr().expect("addr")
}

/// One enrolled simulated agent.
struct Enrolled {
    name: String,
    cert_pem: String,
    key_pem: String,
}

/// A connected agent, handed to its shard.
struct Connected {
    /// Keeps the agent's TLS connection alive.
    client: AgentServiceClient<Channel>,
    /// The agent's side of its `Connect` request stream.
    to_hub: mpsc::Sender<pb::AgentMessage>,
    /// What the hub sends (nothing under this load, but it may ask for a full status).
    from_hub: tonic::Streaming<pb::HubMessage>,
}

/// What the shards sent; shared.
#[derive(Debug, Default)]
struct Counters {
    heartbeats: AtomicU64,
    full: AtomicU64,
    dropped: AtomicU64,
    ended: AtomicU64,
}

#[derive(Debug, Default, Clone, Copy)]
struct CounterValues {
    heartbeats: u64,
    full: u64,
    dropped: u64,
    ended: u64,
}

impl Counters {
    fn values(&self) -> CounterValues {
        CounterValues {
            heartbeats: self.heartbeats.load(Ordering::Relaxed),
            full: self.full.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            ended: self.ended.load(Ordering::Relaxed),
        }
    }
}

impl std::ops::Sub for CounterValues {
    type Output = CounterValues;
    fn sub(self, before: CounterValues) -> CounterValues {
        CounterValues {
            heartbeats: self.heartbeats - before.heartbeats,
            full: self.full - before.full,
            dropped: self.dropped - before.dropped,
            ended: self.ended - before.ended,
        }
    }
}

/// One size against a fresh hub: enroll, connect, measure the window.
async fn run(
    hub_bin: &Path,
    n: usize,
    window: Duration,
    full_per_minute: f64,
    payload: Arc<pb::AgentMessage>,
) -> RunResult {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(hub_bin, dir.path());
    let mut admin = admin_client(&hub).await;

    // Enrollment (not measured).
    let started = Instant::now();
    let (agents, ca_pem) = enroll(&hub, &admin, n).await;
    let enroll_time = started.elapsed();

    // The connect storm.
    let counters = Arc::new(Counters::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let full_every =
        Duration::from_secs_f64(60.0 / (n as f64 * full_per_minute).max(1.0) * SHARDS as f64);
    let mut shard_inputs = Vec::new();
    let mut shard_tasks = Vec::new();
    for _ in 0..SHARDS {
        let (tx, rx) = mpsc::unbounded_channel();
        shard_inputs.push(tx);
        shard_tasks.push(tokio::spawn(shard(
            rx,
            Arc::clone(&payload),
            full_every,
            Arc::clone(&counters),
            stop_rx.clone(),
        )));
    }
    let before_storm = scrape(hub.metrics).await.0;
    let hub_ticks = cpu_ticks(hub.pid());
    let started = Instant::now();
    connect_all(&hub, &ca_pem, agents, &payload, &shard_inputs).await;
    let connect_time = started.elapsed();
    let hub_cpu_ramp_percent = cpu_percent(cpu_ticks(hub.pid()) - hub_ticks, connect_time);
    // Wait with ListNodes, not /metrics: a scrape has costs of its own, measured below.
    let started = Instant::now();
    loop {
        let nodes = admin
            .list_nodes(pb::ListNodesRequest::default())
            .await
            .expect("ListNodes")
            .into_inner()
            .nodes;
        let reported = nodes
            .iter()
            .filter(|n| n.online && n.renewal_deadline.is_some())
            .count();
        if reported >= n {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "N={n}: after 300 s only {reported} agents online with a stored status"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settle_time = started.elapsed();
    let rss_before_scrape = proc_status_kib(hub.pid(), "VmRSS:") as f64 / 1024.0;
    let (after_storm, first_scrape) = scrape(hub.metrics).await;
    let rss_after_scrape = proc_status_kib(hub.pid(), "VmRSS:") as f64 / 1024.0;
    assert!(
        gauge(&after_storm, "rke2ops_hub_connected_agents") >= n as f64,
        "every agent is connected"
    );
    let p99_full_storm = p99(&after_storm, &before_storm, "Connect/status-full");
    // Let the storm's after-effects (allocator, WAL checkpoint) pass before measuring.
    tokio::time::sleep(Duration::from_secs(5)).await;

    // The window.
    let (before, _) = scrape(hub.metrics).await;
    let hub_ticks = cpu_ticks(hub.pid());
    let own_ticks = cpu_ticks(std::process::id());
    let sent_before = counters.values();
    let started = Instant::now();
    let mut list_nodes_ms = Vec::new();
    for _ in 0..LIST_CALLS {
        tokio::time::sleep(window / LIST_CALLS / 2).await;
        let call = Instant::now();
        let listed = admin
            .list_nodes(pb::ListNodesRequest::default())
            .await
            .expect("ListNodes")
            .into_inner()
            .nodes
            .len();
        list_nodes_ms.push(call.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(listed, n, "every agent is listed");
        tokio::time::sleep(window / LIST_CALLS / 2).await;
    }
    let elapsed = started.elapsed();
    let hub_cpu = cpu_ticks(hub.pid()) - hub_ticks;
    let own_cpu = cpu_ticks(std::process::id()) - own_ticks;
    let sent = counters.values() - sent_before;
    let rss_mib = proc_status_kib(hub.pid(), "VmRSS:") as f64 / 1024.0;
    let hwm_mib = proc_status_kib(hub.pid(), "VmHWM:") as f64 / 1024.0;
    let (after, scrape_time) = scrape(hub.metrics).await;

    // The fleet doctor over every node, the agents still connected and sending.
    let doctor = doctor_calls(&mut admin, n).await;

    let _ = stop_tx.send(true);
    for task in shard_tasks {
        let _ = task.await;
    }
    drop(hub);
    let handled = ["Connect/heartbeat", "Connect/status-full", "Connect/status"]
        .into_iter()
        .map(|m| (m.to_owned(), counter(&after, m) - counter(&before, m)))
        .filter(|(_, c)| *c > 0.0)
        .collect();
    RunResult {
        n,
        enroll: enroll_time,
        connect: connect_time,
        settle: settle_time,
        window: elapsed,
        hub_cpu_percent: cpu_percent(hub_cpu, elapsed),
        hub_cpu_ramp_percent,
        bench_cpu_percent: cpu_percent(own_cpu, elapsed),
        rss_mib,
        hwm_mib,
        rss_storm_mib: (rss_before_scrape, rss_after_scrape),
        first_scrape_ms: first_scrape.as_secs_f64() * 1000.0,
        p99_heartbeat: p99(&after, &before, "Connect/heartbeat"),
        p99_full: p99(&after, &before, "Connect/status-full"),
        p99_full_storm,
        handled,
        list_nodes_ms,
        scrape_ms: scrape_time.as_secs_f64() * 1000.0,
        sent,
        doctor,
    }
}

/// `DOCTOR_CALLS` `Doctor` calls over the whole fleet, then one `ListNodes`; checks that
/// every finding the agents reported is in the report.
async fn doctor_calls(admin: &mut AdminServiceClient<Channel>, n: usize) -> DoctorTimes {
    let now = OffsetDateTime::now_utc();
    let from_agents: usize = (0..n)
        .map(|i| agent_findings(i, &format!("load-{i:05}"), now).len())
        .sum();
    let mut ms = Vec::with_capacity(DOCTOR_CALLS);
    let mut report = pb::DoctorReport::default();
    for _ in 0..DOCTOR_CALLS {
        let call = Instant::now();
        report = admin
            .doctor(pb::DoctorRequest::default())
            .await
            .expect("Doctor")
            .into_inner();
        ms.push(call.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    let reported = report
        .findings
        .iter()
        .filter(|f| {
            matches!(
                f.code.as_str(),
                "renewal-deadline-near" | "pem-empty-or-corrupt" | "disk-low"
            ) && f.node.starts_with("load-")
        })
        .count();
    assert_eq!(
        reported, from_agents,
        "the report holds every finding the agents sent"
    );
    let mut by_severity = BTreeMap::new();
    for f in &report.findings {
        *by_severity.entry(f.severity.clone()).or_insert(0) += 1;
    }
    let call = Instant::now();
    let nodes = admin
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .expect("ListNodes")
        .into_inner()
        .nodes;
    let list_nodes_ms = call.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(nodes.len(), n, "every agent is listed");
    DoctorTimes {
        ms,
        findings: report.findings.len(),
        from_agents,
        by_severity,
        bytes: prost::Message::encoded_len(&report),
        list_nodes_ms,
    }
}

/// The admin socket's client, once the hub answers on it.
async fn admin_client(hub: &Hub) -> AdminServiceClient<Channel> {
    rke2ops_tests::fleet::admin_client(&hub.socket).await
}

/// Enrolls `n` agents through the real `Enroll` RPC; their identities and the hub CA.
async fn enroll(
    hub: &Hub,
    admin: &AdminServiceClient<Channel>,
    n: usize,
) -> (Vec<Enrolled>, String) {
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..ENROLL_CONCURRENCY {
        let mut admin = admin.clone();
        let grpc = hub.grpc;
        workers.spawn(async move {
            let mut done = Vec::new();
            let mut ca = String::new();
            let mut enroller = None;
            for i in (worker..n).step_by(ENROLL_CONCURRENCY) {
                let token = admin
                    .create_token(pb::CreateTokenRequest { ttl_seconds: 3600 })
                    .await
                    .expect("CreateToken")
                    .into_inner();
                let client = enroller.get_or_insert_with(|| {
                    let config = tls::enrollment_config(&token.ca_pin).expect("enrollment TLS");
                    AgentServiceClient::new(
                        tls::channel(&grpc.ip().to_string(), grpc.port(), config).expect("channel"),
                    )
                });
                let name = format!("load-{i:05}");
                let key = NodeKey::generate().expect("key");
                let response = client
                    .enroll(pb::EnrollRequest {
                        token: token.token,
                        node_name: name.clone(),
                        csr_pem: key.csr_pem(&name).expect("csr"),
                        cluster: String::new(),
                    })
                    .await
                    .expect("Enroll")
                    .into_inner();
                ca = response.ca_pem;
                done.push(Enrolled {
                    name,
                    cert_pem: response.certificate_pem,
                    key_pem: key.to_pem(),
                });
            }
            (done, ca)
        });
    }
    let mut all = Vec::with_capacity(n);
    let mut ca_pem = String::new();
    while let Some(joined) = workers.join_next().await {
        let (done, ca) = joined.expect("enrollment worker");
        all.extend(done);
        if !ca.is_empty() {
            ca_pem = ca;
        }
    }
    all.sort_by(|a, b| a.name.cmp(&b.name));
    (all, ca_pem)
}

/// Opens every agent's own mutual-TLS connection and `Connect` stream (Hello, full status),
/// `CONNECT_CONCURRENCY` at a time, and hands each to a shard.
async fn connect_all(
    hub: &Hub,
    ca_pem: &str,
    agents: Vec<Enrolled>,
    payload: &Arc<pb::AgentMessage>,
    shards: &[mpsc::UnboundedSender<Connected>],
) {
    let mut queues: Vec<Vec<(usize, Enrolled)>> =
        (0..CONNECT_CONCURRENCY).map(|_| Vec::new()).collect();
    for (i, agent) in agents.into_iter().enumerate() {
        queues[i % CONNECT_CONCURRENCY].push((i, agent));
    }
    let mut workers = tokio::task::JoinSet::new();
    for queue in queues {
        let grpc = hub.grpc;
        let ca_pem = ca_pem.to_owned();
        let payload = Arc::clone(payload);
        let shards = shards.to_vec();
        workers.spawn(async move {
            for (i, agent) in queue {
                let config = tls::mutual_config(&ca_pem, &agent.cert_pem, &agent.key_pem)
                    .expect("mutual TLS");
                let mut client = AgentServiceClient::new(
                    tls::channel(&grpc.ip().to_string(), grpc.port(), config).expect("channel"),
                );
                let (to_hub, rx) = mpsc::channel(16);
                to_hub
                    .send(pb::AgentMessage {
                        body: Some(pb::agent_message::Body::Hello(pb::Hello {
                            node_name: agent.name.clone(),
                            role: pb::NodeRole::Server.into(),
                            rke2_version: "v1.34.1+rke2r1".to_owned(),
                            agent_version: "hub-load".to_owned(),
                            cluster: String::new(),
                        })),
                    })
                    .await
                    .expect("queue hello");
                to_hub
                    .send(first_status(
                        &payload,
                        i,
                        &agent.name,
                        OffsetDateTime::now_utc(),
                    ))
                    .await
                    .expect("queue status");
                let from_hub = client
                    .connect(ReceiverStream::new(rx))
                    .await
                    .unwrap_or_else(|s| panic!("{}: Connect refused: {s}", agent.name))
                    .into_inner();
                let _ = shards[i % shards.len()].send(Connected {
                    client,
                    to_hub,
                    from_hub,
                });
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.expect("connect worker");
    }
}

/// Drives a slice of the agents: each one's heartbeat every [`HEARTBEAT`] at a random phase,
/// a full status from a random one every `full_every`, and a full status when the hub asks.
async fn shard(
    mut new_agents: mpsc::UnboundedReceiver<Connected>,
    payload: Arc<pb::AgentMessage>,
    full_every: Duration,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    let heartbeat = pb::AgentMessage {
        body: Some(pb::agent_message::Body::Heartbeat(pb::Heartbeat {})),
    };
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut agents: Vec<(AgentServiceClient<Channel>, mpsc::Sender<pb::AgentMessage>)> = Vec::new();
    let mut due: BinaryHeap<Reverse<(tokio::time::Instant, usize)>> = BinaryHeap::new();
    // Each agent's inbound stream has its own reader task, woken only when the hub speaks (a
    // StreamMap here would poll every stream of the shard at each heartbeat).
    let (asks_tx, mut asks) = mpsc::unbounded_channel::<usize>();
    let mut full_tick =
        tokio::time::interval_at(tokio::time::Instant::now() + full_every, full_every);
    let send =
        |to_hub: &mpsc::Sender<pb::AgentMessage>, message: pb::AgentMessage, sent: &AtomicU64| {
            match to_hub.try_send(message) {
                Ok(()) => {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
    loop {
        let next = due.peek().map_or_else(
            || tokio::time::Instant::now() + Duration::from_secs(3600),
            |Reverse((at, _))| *at,
        );
        tokio::select! {
            _ = stop.changed() => break,
            Some(agent) = new_agents.recv() => {
                let idx = agents.len();
                let phase = HEARTBEAT.mul_f64(rng.r#gen::<f64>());
                due.push(Reverse((tokio::time::Instant::now() + phase, idx)));
                let (asks_tx, counters) = (asks_tx.clone(), Arc::clone(&counters));
                let mut from_hub = agent.from_hub;
                tokio::spawn(async move {
                    while let Ok(Some(message)) = from_hub.message().await {
                        if matches!(message.body, Some(pb::hub_message::Body::RequestStatus(_))) {
                            let _ = asks_tx.send(idx);
                        }
                    }
                    counters.ended.fetch_add(1, Ordering::Relaxed);
                });
                agents.push((agent.client, agent.to_hub));
            }
            () = tokio::time::sleep_until(next), if !due.is_empty() => {
                let now = tokio::time::Instant::now();
                while let Some(&Reverse((at, idx))) = due.peek() {
                    if at > now {
                        break;
                    }
                    due.pop();
                    send(&agents[idx].1, heartbeat.clone(), &counters.heartbeats);
                    due.push(Reverse((at + HEARTBEAT, idx)));
                }
            }
            Some(idx) = asks.recv() => {
                send(&agents[idx].1, later_status(&payload), &counters.full);
            }
            _ = full_tick.tick() => {
                if !agents.is_empty() {
                    let idx = rng.gen_range(0..agents.len());
                    send(&agents[idx].1, later_status(&payload), &counters.full);
                }
            }
        }
    }
}

/// `GET /metrics` (classic text) and how long it took.
async fn scrape(addr: SocketAddr) -> (String, Duration) {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut stream =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: hub\r\n\r\n").expect("request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response");
        let elapsed = started.elapsed();
        let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
        assert!(head.contains(" 200 "), "metrics: {head}");
        (body.to_owned(), elapsed)
    })
    .await
    .expect("scrape task")
}

/// The labels and value of a sample line `name{labels} value`.
fn sample(line: &str) -> Option<(BTreeMap<&str, &str>, f64)> {
    let open = line.find('{')?;
    let close = line.rfind('}')?;
    let labels = line[open + 1..close]
        .split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.trim(), v.trim().trim_matches('"')))
        })
        .collect();
    let value = line[close + 1..].trim().parse().ok()?;
    Some((labels, value))
}

/// Messages of `method` handled so far, from the histogram's `+Inf` bucket.
fn counter(text: &str, method: &str) -> f64 {
    buckets(text, method).last().map_or(0.0, |(_, c)| *c)
}

/// The first sample of an unlabelled gauge.
fn gauge(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `(upper bound, cumulative count)` of `method`'s handling-time buckets, ascending.
fn buckets(text: &str, method: &str) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(RPC_HISTOGRAM))
        .filter_map(sample)
        .filter(|(labels, _)| labels.get("method") == Some(&method))
        .filter_map(|(labels, count)| {
            let le = labels.get("le")?;
            let le = if *le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// A percentile read from histogram buckets (seconds).
#[derive(Debug, Clone, Copy)]
struct Quantile {
    /// Linear inside its bucket, as `histogram_quantile` computes it.
    estimate: f64,
    /// The bucket it fell in.
    lower: f64,
    upper: f64,
}

/// The 99th percentile of `method` between two scrapes.
fn p99(after: &str, before: &str, method: &str) -> Option<Quantile> {
    let before = buckets(before, method);
    let delta: Vec<(f64, f64)> = buckets(after, method)
        .into_iter()
        .map(|(le, count)| {
            let earlier = before
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0.0, |(_, c)| *c);
            (le, count - earlier)
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = 0.99 * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in &delta {
        if count >= rank {
            if le.is_infinite() {
                return Some(Quantile {
                    estimate: lower.0,
                    lower: lower.0,
                    upper: le,
                });
            }
            let inside = count - lower.1;
            let share = if inside > 0.0 {
                (rank - lower.1) / inside
            } else {
                1.0
            };
            return Some(Quantile {
                estimate: lower.0 + (le - lower.0) * share,
                lower: lower.0,
                upper: le,
            });
        }
        lower = (le, count);
    }
    None
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

fn cpu_percent(ticks: u64, over: Duration) -> f64 {
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    ticks as f64 / per_second / over.as_secs_f64() * 100.0
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("field present")
}
