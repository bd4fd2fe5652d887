//! An agent configured with several hub addresses (`hub_addresses`) finds the replica that
//! serves it within seconds, not after the reconnect backoff:
//!
//! - the first address is dead (nothing listens): the agent enrolls and links through the
//!   second, a real `rke2-hub serve`; when that hub stops and one starts on the first address
//!   with the same state dir, the agent moves back;
//! - a follower replica (a test server holding the hub's CA, answering every call
//!   `UNAVAILABLE` with the leader in `x-rke2ops-leader`, as hub replicas do) sends the agent
//!   straight to the leader, past a configured address it never dials; a follower naming an
//!   address that is not configured is not followed.
//!
//! No root needed: the real `rke2-node-agent run` on the host without systemd, hubs on
//! loopback addresses (127.0.43.0/24 is this file's). Needs `cargo build --bins` first.

use std::io::Read as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rke2_hub::pki::HubCa;
use rke2ops_proto::v1 as pb;
use rke2ops_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use rke2ops_tests::ground::built_binary;
use rke2ops_tests::hub::HubProcess;
use serde_json::Value;
use time::OffsetDateTime;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// The agent's reconnect backoff reaches this: a failover must cost far less.
const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// How long a failover may take here: seconds on an idle machine; the margin is for a CI
/// machine building beside the test, and still well under the backoff's cap.
const FAILOVER: Duration = Duration::from_secs(25);

/// A real `rke2-node-agent run`; killed on drop. Its log goes to a file the test reads.
struct Agent {
    child: Child,
    metrics: SocketAddr,
    log: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// Enrolls as `node` with `token` (a `token create --output json`) against
    /// `hub_addresses`, the first preferred.
    fn start(
        dir: &Path,
        node: &str,
        metrics_ip: &str,
        hub_addresses: &[&str],
        token: &Value,
    ) -> Self {
        let data_dir = dir.join("rke2");
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let metrics: SocketAddr = format!("{metrics_ip}:9810").parse().expect("metrics addr");
        let list = hub_addresses
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let config = dir.join("node-agent.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\nstate_dir = \"{}\"\nmetrics_addr = \"{metrics}\"\n\
                 hub_addresses = [{list}]\nhub_token = \"{}\"\nhub_ca_pin = \"{}\"\n\
                 node_name = \"{node}\"\nheartbeat_secs = 1\n",
                data_dir.display(),
                dir.display(),
                token["token"].as_str().expect("token"),
                token["ca_pin"].as_str().expect("ca_pin"),
            ),
        )
        .expect("config");
        let log = dir.join("agent.log");
        let child = Command::new(built_binary("rke2-node-agent"))
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("NOTIFY_SOCKET")
            .env("RKE2OPS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("agent log"))
            .spawn()
            .expect("agent starts");
        Self {
            child,
            metrics,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `rke2ops_agent_hub_connected` per `hub` label, as scraped now.
    fn linked(&self) -> Vec<(String, f64)> {
        let text = rke2ops_tests::http::get(self.metrics, "/metrics", None).unwrap_or_default();
        text.lines()
            .filter_map(|line| line.strip_prefix("rke2ops_agent_hub_connected{hub=\""))
            .filter_map(|rest| {
                let (hub, value) = rest.split_once("\"} ")?;
                Some((hub.to_owned(), value.trim().parse().ok()?))
            })
            .collect()
    }
}

fn token(hub: &HubProcess) -> Value {
    hub.json(&["token", "create", "--ttl", "15m"])
}

fn online(hub: &HubProcess, node: &str) -> bool {
    hub.cli(&["nodes", "--output", "json"])
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .is_some_and(|nodes| {
            nodes["nodes"]
                .as_array()
                .is_some_and(|n| n.iter().any(|n| n["name"] == node && n["online"] == true))
        })
}

/// Waits until `done`, at most [`FAILOVER`]; how long it took. The panic shows `agent`'s log.
fn within_failover(what: &str, agent: &Agent, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < FAILOVER,
            "not within {FAILOVER:?}: {what}\nagent log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

/// The metric names exactly `linked` as the replica the stream is up with, every other
/// configured address at 0.
fn linked_to(agent: &Agent, linked: &str, configured: &[&str]) -> bool {
    let series = agent.linked();
    series.len() == configured.len()
        && series.iter().all(|(hub, value)| {
            configured.contains(&hub.as_str()) && (*value == 1.0) == (hub == linked)
        })
}

#[test]
fn a_dead_first_address_costs_seconds_and_the_agent_moves_back_when_a_hub_returns_there() {
    let hub_state = tempfile::tempdir().expect("hub state");
    let agent_dir = tempfile::tempdir().expect("agent dir");
    let dead = "127.0.43.1:9811";
    let second = "127.0.43.2:9811";
    let hub = HubProcess::start(hub_state.path(), "127.0.43.2");
    assert_eq!(hub.addr, second);
    let configured = [dead, second];
    let node = "failover-1";
    let agent = Agent::start(
        agent_dir.path(),
        node,
        "127.0.43.3",
        &configured,
        &token(&hub),
    );

    let took = within_failover("online through the second address", &agent, || {
        online(&hub, node)
    });
    eprintln!("enrolled and online through {} in {took:?}", hub.addr);
    assert!(took < BACKOFF_CAP);
    within_failover("the metric names the second address", &agent, || {
        linked_to(&agent, &hub.addr, &configured)
    });
    let log = agent.log();
    assert!(
        log.contains(dead) && log.contains("trying the next hub address"),
        "the log names the dead address and the move:\n{log}"
    );
    assert!(
        !log.contains("reconnecting to the hub"),
        "no backoff before the second address:\n{log}"
    );

    // The hub moves to the first address (same state: same CA, same enrolled node).
    hub.stop();
    let moved = Instant::now();
    let hub = HubProcess::start(hub_state.path(), "127.0.43.1");
    assert_eq!(hub.addr, dead);
    within_failover("online again through the first address", &agent, || {
        online(&hub, node)
    });
    within_failover("the metric names the first address", &agent, || {
        linked_to(&agent, dead, &configured)
    });
    eprintln!("back on {dead} {:?} after the hub moved", moved.elapsed());
}

type HubStream = Pin<Box<dyn Stream<Item = Result<pb::HubMessage, Status>> + Send>>;

/// A hub replica that is not the leader: every call is `UNAVAILABLE` naming `leader`.
struct Follower {
    leader: String,
    calls: Arc<AtomicUsize>,
}

impl Follower {
    fn refuse(&self) -> Status {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut status = Status::unavailable(format!(
            "hub replica test-follower is a follower; the leader is at {}",
            self.leader
        ));
        status.metadata_mut().insert(
            "x-rke2ops-leader",
            self.leader.parse().expect("an ASCII address"),
        );
        status
    }
}

#[tonic::async_trait]
impl AgentService for Follower {
    async fn enroll(
        &self,
        _: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        Err(self.refuse())
    }

    async fn renew_certificate(
        &self,
        _: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        Err(self.refuse())
    }

    type ConnectStream = HubStream;

    async fn connect(
        &self,
        _: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<HubStream>, Status> {
        Err(self.refuse())
    }
}

/// Serves a [`Follower`] on `ip:9811` with a server certificate from the hub CA in
/// `hub_state` (so the agent's pin and name checks accept it, as they accept every replica);
/// the number of calls it refused.
fn serve_follower(
    runtime: &tokio::runtime::Runtime,
    hub_state: &Path,
    ip: &str,
    leader: &str,
) -> Arc<AtomicUsize> {
    let now = OffsetDateTime::now_utc();
    let ca = HubCa::load_or_create(hub_state, now).expect("the hub's CA");
    let issued = ca
        .issue_server_cert(&[ip.to_owned()], now)
        .expect("a server certificate");
    let chain = format!("{}{}", issued.cert_pem, ca.cert_pem());
    let tls = Arc::new(
        rke2_hub::listener::server_config(&chain, &issued.key_pem, ca.cert_pem()).expect("TLS"),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let service = Follower {
        leader: leader.to_owned(),
        calls: Arc::clone(&calls),
    };
    let addr = format!("{ip}:9811");
    runtime.spawn(async move {
        let tcp = tokio::net::TcpListener::bind(&addr)
            .await
            .expect("bind the follower");
        tonic::transport::Server::builder()
            .add_service(AgentServiceServer::new(service))
            .serve_with_incoming(rke2_hub::listener::incoming(
                tcp,
                tls,
                rke2_hub::listener::Limits::default(),
            ))
            .await
    });
    calls
}

/// A listener on `ip:9811` that accepts connections, counts them and never answers: an agent
/// that dialled it would wait out its connect timeout. The count.
fn serve_sink(ip: &str) -> Arc<AtomicUsize> {
    let listener = TcpListener::bind(format!("{ip}:9811")).expect("bind the sink");
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            // Hold it open, silent, until the peer gives up.
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 1024];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    count
}

#[test]
fn a_follower_sends_the_agent_to_the_leader_and_only_to_a_configured_one() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let hub_state = tempfile::tempdir().expect("hub state");
    let hub = HubProcess::start(hub_state.path(), "127.0.43.13");

    // Follower → the leader it names, past a configured address in between.
    let follower = "127.0.43.11:9811";
    let between = "127.0.43.12:9811";
    let follower_calls = serve_follower(&runtime, hub_state.path(), "127.0.43.11", &hub.addr);
    let between_dials = serve_sink("127.0.43.12");
    let hinted_dir = tempfile::tempdir().expect("agent dir");
    let hinted_config = [follower, between, hub.addr.as_str()];
    let hinted = Agent::start(
        hinted_dir.path(),
        "failover-hinted",
        "127.0.43.16",
        &hinted_config,
        &token(&hub),
    );

    // Follower → an address that is not configured: not followed, the next configured one is.
    let stranger = "127.0.43.15:9811";
    let misleading = "127.0.43.14:9811";
    let misleading_calls = serve_follower(&runtime, hub_state.path(), "127.0.43.14", stranger);
    let stranger_dials = serve_sink("127.0.43.15");
    let unhinted_dir = tempfile::tempdir().expect("agent dir");
    let unhinted_config = [misleading, hub.addr.as_str()];
    let unhinted = Agent::start(
        unhinted_dir.path(),
        "failover-unhinted",
        "127.0.43.17",
        &unhinted_config,
        &token(&hub),
    );

    let took = within_failover("the hinted agent online at the leader", &hinted, || {
        online(&hub, "failover-hinted")
    });
    eprintln!("hinted agent online in {took:?}");
    within_failover("the unhinted agent online at the hub", &unhinted, || {
        online(&hub, "failover-unhinted")
    });
    within_failover("the hinted agent's metric", &hinted, || {
        linked_to(&hinted, &hub.addr, &hinted_config)
    });
    within_failover("the unhinted agent's metric", &unhinted, || {
        linked_to(&unhinted, &hub.addr, &unhinted_config)
    });

    assert!(
        follower_calls.load(Ordering::SeqCst) >= 1,
        "the follower was asked first"
    );
    assert_eq!(
        between_dials.load(Ordering::SeqCst),
        0,
        "the address between the follower and the leader was never dialled:\n{}",
        hinted.log()
    );
    let log = hinted.log();
    assert!(
        log.contains("moving to the leader the hub replica named") && log.contains(follower),
        "{log}"
    );
    assert!(
        misleading_calls.load(Ordering::SeqCst) >= 1,
        "the misleading follower was asked first"
    );
    assert_eq!(
        stranger_dials.load(Ordering::SeqCst),
        0,
        "an address that is not configured is never dialled:\n{}",
        unhinted.log()
    );
    let log = unhinted.log();
    assert!(
        log.contains(stranger) && log.contains("not dialling it"),
        "the log says why the hint was not followed:\n{log}"
    );
    drop(runtime);
}

/// The real agent against two real hub replicas on a 3-member etcd: configured with the
/// follower first, it enrolls and links through the leader the follower names; when the
/// leader is SIGKILLed, the other replica leads and the agent moves there, online again
/// without enrolling.
#[test]
fn a_real_agent_links_to_the_leader_of_two_etcd_backed_replicas_and_follows_a_failover() {
    let etcd = rke2ops_tests::etcd::Etcd::start(68, 3);
    let dir = tempfile::tempdir().expect("dir");
    let (a_state, b_state) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a_state).expect("a");
    let replica = |state: &Path, ip: &str, name: &str| {
        HubProcess::start_logged(
            state,
            ip,
            &[
                "--store",
                "etcd",
                "--etcd-endpoint",
                &etcd.endpoints(),
                "--replica-name",
                name,
                "--leader-lease-secs",
                "3",
            ],
            &state.with_extension("log"),
        )
    };
    let hub_log =
        |state: &Path| std::fs::read_to_string(state.with_extension("log")).unwrap_or_default();
    let leads = |hub: &HubProcess| {
        rke2ops_tests::http::get(hub.metrics_addr(), "/metrics", None)
            .and_then(|m| rke2ops_tests::http::sample(&m, "rke2ops_hub_leader", "replica="))
            == Some(1.0)
    };
    let a = replica(&a_state, "127.0.43.40", "hub-a");
    let started = Instant::now();
    while !leads(&a) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "hub-a never led"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The second replica gets the same CA, as the runbook says.
    {
        use std::os::unix::fs::PermissionsExt as _;
        let pki = b_state.join("pki");
        std::fs::create_dir_all(&pki).expect("pki");
        std::fs::set_permissions(&pki, std::fs::Permissions::from_mode(0o700)).expect("mode");
        for file in ["ca.crt", "ca.key"] {
            std::fs::copy(a_state.join("pki").join(file), pki.join(file)).expect("copy");
        }
    }
    let b = replica(&b_state, "127.0.43.41", "hub-b");
    let configured = ["127.0.43.41:9811", "127.0.43.40:9811"];
    let agent_dir = dir.path().join("agent");
    std::fs::create_dir_all(&agent_dir).expect("agent dir");
    let agent = Agent::start(
        &agent_dir,
        "node-ha",
        "127.0.43.42",
        &configured,
        &token(&a),
    );
    let linked = || online(&a, "node-ha") && linked_to(&agent, "127.0.43.40:9811", &configured);
    let started = Instant::now();
    while !linked() {
        assert!(
            started.elapsed() < FAILOVER,
            "the agent never linked through the leader\nagent:\n{}\nhub-a:\n{}",
            agent.log(),
            hub_log(&a_state)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        agent.log().contains("127.0.43.41:9811"),
        "it tried the follower first: {}",
        agent.log()
    );
    a.kill();
    let took = within_failover(
        "the other replica leads and the agent is back online",
        &agent,
        || leads(&b) && online(&b, "node-ha") && linked_to(&agent, "127.0.43.41:9811", &configured),
    );
    eprintln!("agent back online on the new leader {took:?} after the old one was killed");
}
