//! Webhook notifications against a real hub process, a fake fleet and two real local HTTP
//! receivers (one generic, one Slack-format), each answering 500 to its first request: every
//! event arrives exactly once and in order after the retry (a completed plan, then an aborted
//! one), the Slack receiver gets `{"text": ...}` bodies, the delivery metric counts them, and
//! the secret parts of the webhook URLs never appear in the hub's log.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rke2ops_tests::fleet::{FakeFleet, FleetSpec};
use rke2ops_tests::hub::HubProcess;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A webhook receiver: records each request's target and JSON body; the first request gets
/// a 500 (to prove the hub retries), the rest 200.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<(String, Value)>>>,
    answered: Arc<Mutex<u32>>,
}

/// Reads one HTTP request: its request target and body (by content-length).
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < end + 4 + length {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
        return Some((target, buf[end + 4..end + 4 + length].to_vec()));
    }
}

impl Receiver {
    async fn start(ip: &str) -> Receiver {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let answered = Arc::new(Mutex::new(0));
        let (g, a) = (got.clone(), answered.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let Some((target, body)) = read_request(&mut stream).await else {
                    continue;
                };
                // One request at a time (accept, answer, next): the order recorded is the
                // order the hub sent in.
                let first = {
                    let mut a = a.lock().expect("lock");
                    *a += 1;
                    *a == 1
                };
                let answer = if first {
                    "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                } else {
                    let body: Value = serde_json::from_slice(&body).expect("a JSON body");
                    g.lock().expect("lock").push((target, body));
                    "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                };
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        Receiver {
            port,
            got,
            answered,
        }
    }

    fn bodies(&self) -> Vec<Value> {
        self.got
            .lock()
            .expect("lock")
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }
}

fn json(hub: &HubProcess, args: &[&str]) -> Value {
    tokio::task::block_in_place(|| hub.json(args))
}

async fn wait_until(what: &str, within: Duration, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "not {what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_receiver_gets_every_webhook_once_and_in_order() {
    let ip = "127.0.63.1";
    let dir = tempfile::tempdir().expect("tempdir");
    let generic = Receiver::start(ip).await;
    let slack = Receiver::start(ip).await;
    let generic_url = format!("http://{ip}:{}/hook?token=s3cr3t-generic", generic.port);
    let slack_url = format!("http://{ip}:{}/services/T000/B000/s3cr3t-slack", slack.port);
    let log = dir.path().join("hub.log");
    let state = dir.path().join("state");
    let hub = tokio::task::block_in_place(|| {
        HubProcess::start_logged(
            &state,
            ip,
            &[
                "--webhook",
                &format!("ops={generic_url}"),
                "--webhook",
                &format!("chat=slack:{slack_url}"),
            ],
            &log,
        )
    });
    let spec = FleetSpec {
        servers: 1,
        agents: 1,
        version: "v1.34.1+rke2r1".to_owned(),
        op_time: Duration::from_millis(200),
        heartbeat: Duration::from_millis(300),
        renewal_deadline_in: None,
    };
    let fleet = FakeFleet::start(hub.addr.parse().expect("addr"), &hub.socket(), &spec).await;

    // A plan that completes.
    let first = json(&hub, &["restart", "--settle", "1s"]);
    let first = first["id"].as_str().expect("id").to_owned();
    wait_until("completed", Duration::from_secs(60), || {
        json(&hub, &["plan", "show", &first])["state"] == "completed"
    })
    .await;
    // A plan that is aborted.
    let second = json(&hub, &["restart", "--settle", "1s"]);
    let second = second["id"].as_str().expect("id").to_owned();
    let out = tokio::task::block_in_place(|| hub.run(&["abort", &second]));
    assert!(out.status.success(), "{out:?}");

    let want = [
        ("plan.created", &first),
        ("plan.completed", &first),
        ("plan.created", &second),
        ("plan.aborted", &second),
    ];
    wait_until("every event delivered", Duration::from_secs(30), || {
        generic.bodies().len() >= want.len() && slack.bodies().len() >= want.len()
    })
    .await;
    // Nothing more arrives late (a duplicate from a retry, say).
    tokio::time::sleep(Duration::from_secs(2)).await;

    let got = generic.bodies();
    let seen: Vec<(String, String)> = got
        .iter()
        .map(|b| {
            (
                b["event"].as_str().unwrap_or("").to_owned(),
                b["plan"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = want
        .iter()
        .map(|(e, p)| ((*e).to_owned(), (*p).clone()))
        .collect();
    assert_eq!(seen, expected, "{got:#?}");
    assert_eq!(*generic.answered.lock().expect("lock"), 5, "one retry");
    for b in &got {
        assert!(b["at"].as_str().is_some_and(|t| t.ends_with('Z')), "{b}");
        assert!(b["message"].is_string(), "{b}");
    }
    assert_eq!(got[0]["kind"], "restart", "{:#}", got[0]);
    assert!(
        got[3]["actor"].as_str().is_some_and(|a| !a.is_empty()),
        "{:#}",
        got[3]
    );
    let targets: Vec<String> = generic
        .got
        .lock()
        .expect("lock")
        .iter()
        .map(|(t, _)| t.clone())
        .collect();
    assert!(
        targets.iter().all(|t| t == "/hook?token=s3cr3t-generic"),
        "{targets:?}"
    );

    let texts: Vec<String> = slack
        .bodies()
        .iter()
        .map(|b| {
            let obj = b.as_object().expect("an object");
            assert_eq!(obj.len(), 1, "only text: {b}");
            b["text"].as_str().expect("text").to_owned()
        })
        .collect();
    assert_eq!(texts.len(), 4, "{texts:?}");
    for (text, (word, plan)) in texts.iter().zip([
        ("created", &first),
        ("completed", &first),
        ("created", &second),
        ("aborted", &second),
    ]) {
        assert!(
            text.contains(&format!("plan {plan}")) && text.contains(word),
            "{texts:?}"
        );
    }

    // The metric counts deliveries by webhook name.
    let metrics = tokio::task::block_in_place(|| {
        rke2ops_tests::http::get(hub.metrics_addr(), "/metrics", None)
    })
    .expect("metrics");
    for name in ["ops", "chat"] {
        assert_eq!(
            rke2ops_tests::http::sample(
                &metrics,
                "rke2ops_hub_webhook_deliveries_total",
                &format!("webhook=\"{name}\",outcome=\"delivered\"")
            ),
            Some(4.0),
            "{metrics}"
        );
    }
    assert!(!metrics.contains("s3cr3t"), "{metrics}");

    drop(fleet);
    hub.stop();
    let logged = std::fs::read_to_string(&log).expect("hub log");
    assert!(logged.contains("webhook configured"), "{logged}");
    assert!(
        !logged.contains("s3cr3t"),
        "a webhook secret in the log: {logged}"
    );
    assert!(!logged.contains("/services/T000"), "{logged}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_node_is_announced_before_the_halt() {
    let ip = "127.0.63.2";
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start(ip).await;
    let url = format!("http://{ip}:{}/hook", receiver.port);
    let hub = tokio::task::block_in_place(|| {
        HubProcess::start_with(dir.path(), ip, &["--webhook", &url])
    });
    let spec = FleetSpec {
        servers: 1,
        agents: 1,
        version: "v1.34.1+rke2r1".to_owned(),
        op_time: Duration::from_millis(200),
        heartbeat: Duration::from_millis(300),
        renewal_deadline_in: None,
    };
    let fleet = FakeFleet::start(hub.addr.parse().expect("addr"), &hub.socket(), &spec).await;
    fleet.set_behaviour(
        "server-1",
        rke2ops_tests::fleet::Behaviour::Fail("disk full".into()),
    );
    let plan = json(&hub, &["restart", "--settle", "1s"]);
    let plan = plan["id"].as_str().expect("id").to_owned();
    wait_until("halted", Duration::from_secs(60), || {
        json(&hub, &["plan", "show", &plan])["state"] == "halted"
    })
    .await;
    wait_until("three events", Duration::from_secs(30), || {
        receiver.bodies().len() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = receiver.bodies();
    let names: Vec<&str> = got
        .iter()
        .map(|b| b["event"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        ["plan.created", "node.failed", "plan.halted"],
        "{got:#?}"
    );
    assert_eq!(got[1]["node"], "server-1", "{:#}", got[1]);
    assert!(
        got[1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("disk full")),
        "{:#}",
        got[1]
    );
    assert!(
        got[2]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("server-1")),
        "{:#}",
        got[2]
    );
    assert!(got.iter().all(|b| b["plan"] == plan.as_str()), "{got:#?}");
    drop(fleet);
}

/// A probed application: 200 while healthy, 503 otherwise.
async fn app(ip: &str, healthy: Arc<std::sync::atomic::AtomicBool>) -> u16 {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let _ = read_request(&mut stream).await;
            let answer = if healthy.load(std::sync::atomic::Ordering::SeqCst) {
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            } else {
                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            };
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_probe_going_down_and_up_is_announced() {
    let ip = "127.0.63.3";
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start(ip).await;
    let url = format!("http://{ip}:{}/hook", receiver.port);
    let hub = tokio::task::block_in_place(|| {
        HubProcess::start_with(dir.path(), ip, &["--webhook", &format!("ops={url}")])
    });
    let spec = FleetSpec {
        servers: 1,
        agents: 2,
        version: "v1.34.1+rke2r1".to_owned(),
        op_time: Duration::from_millis(2000),
        heartbeat: Duration::from_millis(300),
        renewal_deadline_in: None,
    };
    let fleet = FakeFleet::start(hub.addr.parse().expect("addr"), &hub.socket(), &spec).await;
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let port = app(ip, healthy.clone()).await;
    let probe = format!("http://{ip}:{port}/health,name=app,interval=1s,threshold=1");
    let plan = json(
        &hub,
        &["restart", "--probe", &probe, "--probe-halt-after", "10m"],
    );
    let plan = plan["id"].as_str().expect("id").to_owned();
    let events = || -> Vec<String> {
        receiver
            .bodies()
            .iter()
            .map(|b| b["event"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    wait_until("the baseline", Duration::from_secs(30), || {
        json(&hub, &["plan", "show", &plan])["probes"][0]["samples"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    })
    .await;
    healthy.store(false, std::sync::atomic::Ordering::SeqCst);
    wait_until("probe.down", Duration::from_secs(30), || {
        events().iter().any(|e| e == "probe.down")
    })
    .await;
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_until("probe.up", Duration::from_secs(30), || {
        events().iter().any(|e| e == "probe.up")
    })
    .await;
    let got = receiver.bodies();
    assert_eq!(
        events()[..3],
        ["plan.created", "probe.down", "probe.up"],
        "{got:#?}"
    );
    assert_eq!(got[1]["probe"], "app", "{:#}", got[1]);
    assert!(
        got[1]["error"].as_str().is_some_and(|e| e.contains("503")),
        "{:#}",
        got[1]
    );
    assert!(
        got[1]["target"]
            .as_str()
            .is_some_and(|t| t.contains("/health")),
        "{:#}",
        got[1]
    );
    drop(fleet);
}
