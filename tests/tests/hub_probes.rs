//! Application probes on a plan (`--probe`) against a real hub process, a fake fleet and a
//! real local HTTP application that counts the requests it answers: the probe's baseline
//! holds the first node; a probe that fails mid-plan holds the next node and then halts the
//! plan naming the probe while no further node is touched; the report's samples and failures
//! match the application's own count; the metrics show the probe.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rke2ops_tests::fleet::{FakeFleet, FleetSpec};
use rke2ops_tests::hub::HubProcess;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A tiny HTTP application: answers 200 "ok" while healthy, 503 otherwise, and counts both.
struct App {
    port: u16,
    healthy: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl App {
    async fn start(ip: &str, healthy: bool) -> App {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let app = App {
            port,
            healthy: Arc::new(AtomicBool::new(healthy)),
            ok: Arc::new(AtomicU64::new(0)),
            failed: Arc::new(AtomicU64::new(0)),
        };
        let (h, ok, failed) = (app.healthy.clone(), app.ok.clone(), app.failed.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (h, ok, failed) = (h.clone(), ok.clone(), failed.clone());
                tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    let _ = stream.read(&mut buf).await;
                    let answer = if h.load(Ordering::SeqCst) {
                        ok.fetch_add(1, Ordering::SeqCst);
                        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                    } else {
                        failed.fetch_add(1, Ordering::SeqCst);
                        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nconnection: close\r\n\r\ndown"
                    };
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        app
    }

    fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }
}

fn spec(op_ms: u64) -> FleetSpec {
    FleetSpec {
        servers: 3,
        agents: 2,
        version: "v1.34.1+rke2r1".to_owned(),
        op_time: Duration::from_millis(op_ms),
        heartbeat: Duration::from_millis(300),
        renewal_deadline_in: None,
    }
}

fn json(hub: &HubProcess, args: &[&str]) -> Value {
    tokio::task::block_in_place(|| hub.json(args))
}

async fn wait_for(
    hub: &HubProcess,
    id: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let view = json(hub, &["plan", "show", id]);
        if done(&view) {
            return view;
        }
        assert!(
            started.elapsed() < within,
            "plan {id}: not {what} within {within:?}: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn phases(view: &Value) -> Vec<String> {
    view["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["phase"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn probe(view: &Value) -> Value {
    view["probes"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_probe_holds_then_halts_the_plan_and_the_report_matches_the_app() {
    let ip = "127.0.62.1";
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = tokio::task::block_in_place(|| HubProcess::start(dir.path(), ip));
    let fleet = FakeFleet::start(hub.addr.parse().expect("addr"), &hub.socket(), &spec(1500)).await;
    let app = App::start(ip, true).await;
    let url = format!("http://{ip}:{}/health", app.port);
    let probe_arg = format!("{url},name=app,interval=1s,threshold=2,body=ok");

    // A bad probe is refused naming it.
    let bad = tokio::task::block_in_place(|| {
        hub.run(&["rotate", "--probe", "ftp://nowhere", "--dry-run"])
    });
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("must start with http://"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    let view = json(
        &hub,
        &[
            "rotate",
            "--probe",
            &probe_arg,
            "--probe-halt-after",
            "4s",
            "--settle",
            "1s",
        ],
    );
    let id = view["id"].as_str().expect("id").to_owned();
    assert!(
        view["gates"].as_array().expect("gates").iter().any(|g| g
            .as_str()
            .is_some_and(|g| g.contains("application probes (app)"))),
        "{view:#}"
    );
    // The first node runs; once it is done, the application starts failing.
    wait_for(&hub, &id, Duration::from_secs(30), "server-1 done", |v| {
        phases(v)[0] == "done"
    })
    .await;
    app.set_healthy(false);
    let halted = wait_for(&hub, &id, Duration::from_secs(40), "halted", |v| {
        v["state"] == "halted"
    })
    .await;
    let reason = halted["reason"].as_str().expect("reason");
    assert!(
        reason.contains("probe app") && reason.contains(&url) && reason.contains("HTTP 503"),
        "{reason}"
    );
    // The node in maintenance when it failed (if any) finished; nothing after it started.
    let ph = phases(&halted);
    let touched = ph.iter().filter(|p| *p != "pending").count();
    assert!(
        touched <= 2,
        "no node started while the probe failed: {ph:?}"
    );
    assert!(ph[2..].iter().all(|p| p == "pending"), "{ph:?}");
    let events = halted["events"].to_string();
    assert!(events.contains("probe app down"), "{events}");

    // It comes back: the report goes on while halted; an abort ends the probes.
    app.set_healthy(true);
    wait_for(&hub, &id, Duration::from_secs(20), "probe up", |v| {
        probe(v)["down"] == false && probe(v)["failures"].as_u64().unwrap_or(0) >= 2
    })
    .await;
    let out = tokio::task::block_in_place(|| hub.run(&["abort", &id]));
    assert!(out.status.success());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = json(&hub, &["plan", "show", &id]);
    let p = probe(&report);
    let served_ok = app.ok.load(Ordering::SeqCst);
    let served_failed = app.failed.load(Ordering::SeqCst);
    assert_eq!(
        p["samples"].as_u64(),
        Some(served_ok + served_failed),
        "the report counts every request the app answered: {p:#}"
    );
    assert_eq!(p["failures"].as_u64(), Some(served_failed), "{p:#}");
    let availability = p["availability_percent"].as_f64().expect("availability");
    #[allow(clippy::cast_precision_loss)]
    let expected = served_ok as f64 * 100.0 / (served_ok + served_failed) as f64;
    assert!(
        (availability - expected).abs() < 0.01,
        "{availability} vs {expected}"
    );
    let longest = &p["longest_outage"];
    assert!(longest["seconds"].as_i64().unwrap_or(0) >= 4, "{p:#}");
    assert!(longest["end"].is_string(), "{p:#}");
    let text = tokio::task::block_in_place(|| hub.run(&["plan", "show", &id]));
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains("probes (checked for the whole plan)"),
        "{text}"
    );
    // No samples after the abort.
    assert_eq!(app.ok.load(Ordering::SeqCst), served_ok);

    // The change-management export: who, policy, nodes, steps and the probe's numbers.
    let md = tokio::task::block_in_place(|| hub.run(&["plan", "report", &id]));
    assert!(md.status.success());
    let md = String::from_utf8_lossy(&md.stdout).into_owned();
    assert!(
        md.starts_with(&format!("# RKE2 maintenance plan {id}: rotate")),
        "{md}"
    );
    assert!(md.contains("| Started by | uid:0 (operator) |"), "{md}");
    assert!(md.contains("## Application probes"), "{md}");
    assert!(
        md.contains(&format!(
            "| app | {url} | {} | {served_failed} |",
            served_ok + served_failed
        )),
        "{md}"
    );
    assert!(md.contains("### server-1"), "{md}");
    let exported = json(&hub, &["plan", "report", &id]);
    assert_eq!(
        exported["probes"][0]["failures"].as_u64(),
        Some(served_failed)
    );
    assert_eq!(exported["state"], "aborted");
    assert!(
        exported["nodes"][0]["steps"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "{exported:#}"
    );

    // The metrics: failures per probe name.
    let addr = hub.metrics_addr();
    let metrics = tokio::task::block_in_place(|| rke2ops_tests::http::get(addr, "/metrics", None))
        .expect("metrics");
    #[allow(clippy::cast_precision_loss)]
    let want = served_failed as f64;
    assert_eq!(
        rke2ops_tests::http::sample(
            &metrics,
            "rke2ops_hub_probe_failures_total",
            "probe=\"app\""
        ),
        Some(want),
        "{metrics}"
    );
    drop(fleet);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_node_starts_before_the_probe_baseline_passes() {
    let ip = "127.0.62.2";
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = tokio::task::block_in_place(|| HubProcess::start(dir.path(), ip));
    let fleet = FakeFleet::start(hub.addr.parse().expect("addr"), &hub.socket(), &spec(200)).await;
    let app = App::start(ip, false).await;
    let probe_arg = format!(
        "http://{ip}:{}/health,name=app,interval=1s,threshold=3",
        app.port
    );
    let view = json(
        &hub,
        &[
            "restart",
            "--probe",
            &probe_arg,
            "--probe-halt-after",
            "10m",
        ],
    );
    let id = view["id"].as_str().expect("id").to_owned();
    let held = wait_for(
        &hub,
        &id,
        Duration::from_secs(20),
        "held by the probe",
        |v| {
            v["reason"]
                .as_str()
                .is_some_and(|r| r.contains("probe app"))
        },
    )
    .await;
    assert!(phases(&held).iter().all(|p| p == "pending"), "{held:#}");
    assert!(fleet.spans().is_empty(), "no operation ran");
    app.set_healthy(true);
    let done = wait_for(&hub, &id, Duration::from_secs(60), "completed", |v| {
        v["state"] == "completed"
    })
    .await;
    let p = probe(&done);
    assert!(p["failures"].as_u64().unwrap_or(0) >= 1, "{p:#}");
    assert!(
        p["availability_percent"].as_f64().unwrap_or(100.0) < 100.0,
        "{p:#}"
    );
}
