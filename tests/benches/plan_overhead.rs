//! The plan engine's own overhead (a bench binary, `harness = false`): a real `rke2-hub serve`
//! drives plans over a fake fleet (`rke2ops_tests::fleet`: in-process agents on the real
//! gRPC/mTLS protocol whose operations take a fixed inherent time), and every moment is
//! measured with this process's `Instant`s: each operation's start and end as the fake agent
//! saw them (`OpSpan`), the plan's creation (just before `CreatePlan`) and its completion (the
//! first `GetPlan` that says so). The store's timestamps have one-second resolution, so they
//! are not used.
//!
//! Two questions, each with settle 0 and no Kubernetes (no cordon or drain), so every moment
//! that is not an operation is the hub's:
//!
//! 1. **Per-node overhead** (target < 100 ms): 3 servers + 12 workers, one node at a time.
//!    For node i, its slot is from the previous node's operation end (creation, for the first)
//!    to its own operation end; overhead = slot − inherent time. The gap from one node's
//!    operation end to the next one's start is the hub's decide/verify/persist latency. The
//!    tail is last end → completed. Run twice, with the agents' heartbeat at 300 ms and at
//!    10 s (the real agent's): the engine verifies with the status an agent sends right before
//!    its result, so the gap must not depend on the heartbeat.
//! 2. **A 50-node plan** (3 servers + 47 workers; target ratio < 1.05): creation → completed
//!    over the critical path of inherent times, servers one at a time + ceil(47 / concurrency)
//!    waves of workers, with concurrency 5 and 1. Heartbeat 10 s (the real agent's).
//!
//! Also printed: the agents' own time beyond the inherent time (span − inherent: the fake
//! agent's cost, not the hub's), and the hub's CPU over each plan (utime + stime from
//! `/proc/<pid>/stat`, % of one core).
//!
//! Run: `cargo build --release -p rke2-hub && cargo bench -p rke2ops-tests --bench
//! plan_overhead` (~1 min). The release `rke2-hub` is used when present, else the debug one
//! (slower; the table says which). `PLAN_OVERHEAD_OP_MS` sets the inherent time (default
//! 300 ms). Hubs listen on 127.0.70.x. `HUB_STORE=etcd` runs each hub with its state in a
//! fresh one-member etcd (127.0.66.1): the per-node overhead then includes an etcd
//! transaction per store write.

#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rke2ops_proto::v1 as pb;
use rke2ops_proto::v1::admin_service_client::AdminServiceClient;
use rke2ops_tests::fleet::{FakeFleet, FleetSpec, OpSpan, admin_client};
use tonic::transport::Channel;

/// RKE2 version every fake node runs.
const VERSION: &str = "v1.33.5+rke2r1";
/// The real agent's heartbeat interval.
const AGENT_HEARTBEAT: Duration = Duration::from_secs(10);
/// A short heartbeat, to show the gap does not depend on it.
const SHORT_HEARTBEAT: Duration = Duration::from_millis(300);
/// How long a plan may take before the bench gives up.
const PLAN_TIMEOUT: Duration = Duration::from_secs(300);

fn main() {
    let op_time = Duration::from_millis(
        std::env::var("PLAN_OVERHEAD_OP_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(300),
    );
    let (bin, profile) = hub_binary();
    println!(
        "plan_overhead: rke2-hub {profile} ({}), inherent operation time {} ms, settle 0, \
         no cordon/drain, {} cores",
        bin.display(),
        op_time.as_millis(),
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut overheads = Vec::new();
        for (ip, heartbeat) in [
            ("127.0.70.1", SHORT_HEARTBEAT),
            ("127.0.70.2", AGENT_HEARTBEAT),
        ] {
            let mut bench = Bench::start(&bin, ip, 3, 12, op_time, heartbeat).await;
            overheads.push((heartbeat, bench.run(1).await));
        }
        let mut bench = Bench::start(&bin, "127.0.70.3", 3, 47, op_time, AGENT_HEARTBEAT).await;
        let fifty = [bench.run(5).await, bench.run(1).await];
        drop(bench);

        println!();
        println!("1. Per-node overhead: 3 servers + 12 workers, one at a time (ms)");
        println!(
            "{:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
            "heartbeat",
            "ovh p50",
            "ovh p90",
            "ovh max",
            "gap p50",
            "gap p90",
            "gap max",
            "first",
            "tail",
            "agent"
        );
        for (heartbeat, run) in &overheads {
            let overhead = run.per_node_overhead(op_time);
            let gaps = run.gaps();
            println!(
                "{:>10} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>8.1}",
                format!("{} ms", heartbeat.as_millis()),
                quantile(&overhead, 0.5),
                quantile(&overhead, 0.9),
                quantile(&overhead, 1.0),
                quantile(&gaps, 0.5),
                quantile(&gaps, 0.9),
                quantile(&gaps, 1.0),
                run.first_start_ms(),
                run.tail_ms(),
                quantile(&run.agent_extra(op_time), 1.0),
            );
        }
        println!(
            "(overhead = slot − inherent time, slot = previous operation end (or creation) → \
             this one's end; gap = one operation's end → the next one's start; first = \
             creation → first start; tail = last end → completed; agent = the fake agent's \
             own time beyond the inherent time, max)"
        );
        println!();
        println!("2. 50 nodes (3 servers + 47 workers), heartbeat 10 s");
        println!(
            "{:>11} {:>12} {:>13} {:>7} {:>8} {:>8} {:>8} {:>8}",
            "concurrency",
            "critical s",
            "wall s",
            "ratio",
            "gap p50",
            "gap p90",
            "gap max",
            "hub CPU"
        );
        for run in &fifty {
            let critical = run.critical_path(op_time);
            println!(
                "{:>11} {:>12.2} {:>13.2} {:>7.3} {:>8.1} {:>8.1} {:>8.1} {:>7.1}%",
                run.concurrency,
                critical.as_secs_f64(),
                run.wall.as_secs_f64(),
                run.wall.as_secs_f64() / critical.as_secs_f64(),
                quantile(&run.gaps(), 0.5),
                quantile(&run.gaps(), 0.9),
                quantile(&run.gaps(), 1.0),
                run.hub_cpu_percent,
            );
        }
        println!(
            "(critical = inherent times along the critical path: 3 servers one at a time + \
             ceil(47 / concurrency) waves; wall = creation → completed; gap in ms; hub CPU = % \
             of one core over the plan)"
        );
        let worst_overhead = overheads
            .iter()
            .map(|(_, run)| quantile(&run.per_node_overhead(op_time), 1.0))
            .fold(0.0, f64::max);
        let worst_ratio = fifty
            .iter()
            .map(|run| run.wall.as_secs_f64() / run.critical_path(op_time).as_secs_f64())
            .fold(0.0, f64::max);
        let verdict = |met: bool| if met { "met" } else { "MISSED" };
        println!(
            "targets: per-node overhead < 100 ms {} (worst {worst_overhead:.1} ms); 50-node \
             ratio < 1.05 {} (worst {worst_ratio:.3})",
            verdict(worst_overhead < 100.0),
            verdict(worst_ratio < 1.05),
        );
        for (heartbeat, run) in &overheads {
            println!(
                "1. heartbeat {} ms: wall {:.2} s for 15 nodes (critical path {:.2} s), hub CPU \
                 {:.1} %",
                heartbeat.as_millis(),
                run.wall.as_secs_f64(),
                run.critical_path(op_time).as_secs_f64(),
                run.hub_cpu_percent
            );
        }
    });
}

/// The release `rke2-hub` beside the bench's profile folder when present, else the debug one.
fn hub_binary() -> (PathBuf, &'static str) {
    let exe = std::env::current_exe().expect("the bench knows its own path");
    // target/<profile>/deps/plan_overhead-<hash>
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the bench lives in target/<profile>/deps");
    for profile in ["release", "debug"] {
        let bin = target.join(profile).join("rke2-hub");
        if bin.is_file() {
            return (bin, profile);
        }
    }
    panic!(
        "no rke2-hub under {}: run `cargo build --release -p rke2-hub` first",
        target.display()
    );
}

/// A hub child process, killed on drop.
struct Hub {
    child: Child,
    /// The etcd holding its state (`HUB_STORE=etcd`), stopped after the hub.
    _etcd: Option<rke2ops_tests::etcd::Etcd>,
}

impl Hub {
    fn start(bin: &Path, state: &Path, ip: &str) -> Hub {
        let addr = format!("{ip}:9811");
        let log = std::fs::File::create(state.join("hub.log")).expect("log file");
        // `HUB_STORE=etcd`: the hub's state in a fresh one-member etcd on 127.0.66.1.
        let etcd = (std::env::var("HUB_STORE").as_deref() == Ok("etcd"))
            .then(|| rke2ops_tests::etcd::Etcd::start(66, 1));
        let mut command = Command::new(bin);
        command.arg("serve");
        if let Some(etcd) = &etcd {
            command.args(["--store", "etcd", "--etcd-endpoint", &etcd.endpoints()]);
        }
        let child = command
            .args(["--listen-addr", &addr, "--advertise-address", &addr])
            .args(["--metrics-addr", &format!("{ip}:9812")])
            .arg("--state-dir")
            .arg(state.join("state"))
            .arg("--admin-socket")
            .arg(state.join("hub.sock"))
            .env("RKE2OPS_HUB_CONFIG", "/dev/null")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("rke2-hub starts");
        Hub { child, _etcd: etcd }
    }

    /// utime + stime in seconds (`/proc/<pid>/stat`; clock ticks are 100 Hz on Linux).
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("/proc/<pid>/stat");
        // Fields after the command's closing parenthesis; utime and stime are the 14th and
        // 15th of the line, the 12th and 13th after it.
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        ticks as f64 / 100.0
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A hub with its fake fleet.
struct Bench {
    fleet: FakeFleet,
    admin: AdminServiceClient<Channel>,
    servers: usize,
    agents: usize,
    hub: Hub,
    _dir: tempfile::TempDir,
}

/// One plan's measurements.
struct Run {
    concurrency: usize,
    servers: usize,
    agents: usize,
    created: Instant,
    completed: Instant,
    wall: Duration,
    /// The plan's operations, by start.
    spans: Vec<OpSpan>,
    hub_cpu_percent: f64,
}

impl Bench {
    async fn start(
        bin: &Path,
        ip: &str,
        servers: usize,
        agents: usize,
        op_time: Duration,
        heartbeat: Duration,
    ) -> Bench {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = Hub::start(bin, dir.path(), ip);
        let socket = dir.path().join("hub.sock");
        let admin = admin_client(&socket).await;
        let spec = FleetSpec {
            servers,
            agents,
            version: VERSION.to_owned(),
            op_time,
            heartbeat,
            renewal_deadline_in: None,
        };
        let addr = format!("{ip}:9811").parse().expect("addr");
        let fleet = FakeFleet::start(addr, &socket, &spec).await;
        Bench {
            fleet,
            admin,
            servers,
            agents,
            hub,
            _dir: dir,
        }
    }

    /// Runs a `rotate` plan over every node with `concurrency` workers at once.
    async fn run(&mut self, concurrency: usize) -> Run {
        let nodes = self.servers + self.agents;
        let cpu_before = self.hub.cpu_seconds();
        let created = Instant::now();
        let view = self
            .admin
            .create_plan(pb::CreatePlanRequest {
                kind: pb::PlanKind::Rotate.into(),
                concurrency: u32::try_from(concurrency).expect("concurrency"),
                settle_seconds: 0,
                ..Default::default()
            })
            .await
            .expect("CreatePlan")
            .into_inner();
        let prefix = format!("plan{}-", view.id);
        let mine = |spans: Vec<OpSpan>| -> Vec<OpSpan> {
            spans
                .into_iter()
                .filter(|s| s.id.starts_with(&prefix))
                .collect()
        };
        // Watch the fleet (in-process, free) until every operation ended, then ask the hub
        // often until it says completed; now and then meanwhile, to stop on a halt.
        let mut looked = Instant::now();
        loop {
            let spans = mine(self.fleet.spans());
            let ended = spans.len() == nodes && spans.iter().all(|s| s.end.is_some());
            if ended || looked.elapsed() > Duration::from_secs(2) {
                looked = Instant::now();
                let state = self.state(&view.id).await;
                if state == pb::PlanState::Completed {
                    break;
                }
                assert!(
                    matches!(state, pb::PlanState::Running),
                    "plan {} is {state:?}",
                    view.id
                );
            }
            assert!(
                created.elapsed() < PLAN_TIMEOUT,
                "plan {} not completed within {PLAN_TIMEOUT:?}",
                view.id
            );
            tokio::time::sleep(Duration::from_millis(if ended { 2 } else { 10 })).await;
        }
        let completed = Instant::now();
        let cpu = self.hub.cpu_seconds() - cpu_before;
        let mut spans = mine(self.fleet.spans());
        spans.sort_by_key(|s| s.start);
        assert_eq!(spans.len(), nodes, "every node operated once");
        let wall = completed - created;
        Run {
            concurrency,
            servers: self.servers,
            agents: self.agents,
            created,
            completed,
            wall,
            spans,
            hub_cpu_percent: cpu / wall.as_secs_f64() * 100.0,
        }
    }

    async fn state(&mut self, id: &str) -> pb::PlanState {
        let view = self
            .admin
            .get_plan(pb::GetPlanRequest {
                id: id.to_owned(),
                ..pb::GetPlanRequest::default()
            })
            .await
            .expect("GetPlan")
            .into_inner();
        pb::PlanState::try_from(view.state).unwrap_or_default()
    }
}

impl Run {
    fn end(span: &OpSpan) -> Instant {
        span.end.expect("every operation ended")
    }

    /// Inherent times along the critical path.
    fn critical_path(&self, op_time: Duration) -> Duration {
        let waves = self.agents.div_ceil(self.concurrency);
        op_time * u32::try_from(self.servers + waves).expect("small")
    }

    /// Per node (one at a time): previous end (or creation) → its end, minus the inherent time.
    fn per_node_overhead(&self, op_time: Duration) -> Vec<f64> {
        let mut previous = self.created;
        self.spans
            .iter()
            .map(|s| {
                let slot = Self::end(s) - previous;
                previous = Self::end(s);
                ms(slot) - ms(op_time)
            })
            .collect()
    }

    /// For every operation but the first: the latest end before its start → its start.
    fn gaps(&self) -> Vec<f64> {
        self.spans
            .iter()
            .skip(1)
            .filter_map(|s| {
                self.spans
                    .iter()
                    .map(Self::end)
                    .filter(|e| *e <= s.start)
                    .max()
                    .map(|e| ms(s.start - e))
            })
            .collect()
    }

    fn first_start_ms(&self) -> f64 {
        ms(self.spans[0].start - self.created)
    }

    fn tail_ms(&self) -> f64 {
        let last = self.spans.iter().map(Self::end).max().expect("spans");
        ms(self.completed - last)
    }

    /// The fake agents' time beyond the inherent time, per operation.
    fn agent_extra(&self, op_time: Duration) -> Vec<f64> {
        self.spans
            .iter()
            .map(|s| ms(Self::end(s) - s.start) - ms(op_time))
            .collect()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `q` quantile (nearest rank) of `values`; 1.0 = the largest.
fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
