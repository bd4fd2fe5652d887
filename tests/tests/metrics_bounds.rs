//! The metrics servers of the real `rke2-node-agent run` and `rke2-hub serve` against a
//! slowloris client: connections that send part of a request's headers and nothing more are
//! closed once the header-read timeout passes, a connection beyond the cap is closed at once
//! without an answer, and a normal scrape works again once the slow ones are gone.
//!
//! Plain std sockets, no root needed. Waits are bounded by the servers' own timeouts plus a
//! generous margin: what is asserted is that a connection is closed, not how fast.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rke2ops_tests::ground::built_binary;
use rke2ops_tests::hub::HubProcess;

/// Margin over a server's timeout for the machine to get round to it.
const PATIENCE: Duration = Duration::from_secs(20);

/// Whether the server closed `stream` (EOF or reset) before `within`; what it sent first.
fn closed_by_server(stream: &mut TcpStream, within: Duration) -> (bool, String) {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (false, String::from_utf8_lossy(&seen).into_owned());
        }
        stream.set_read_timeout(Some(left)).expect("timeout");
        match stream.read(&mut buf) {
            Ok(0) => return (true, String::from_utf8_lossy(&seen).into_owned()),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (false, String::from_utf8_lossy(&seen).into_owned());
            }
            Err(_) => return (true, String::from_utf8_lossy(&seen).into_owned()),
        }
    }
}

fn healthz(addr: SocketAddr) -> bool {
    rke2ops_tests::http::get(addr, "/healthz", None).is_some_and(|b| b == "ok\n")
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The slowloris scenario against the server on `addr`.
fn slow_clients_are_dropped_and_the_cap_holds(addr: SocketAddr, cap: usize, header: Duration) {
    let mut slow: Vec<TcpStream> = (0..cap)
        .map(|_| {
            let mut stream = TcpStream::connect(addr).expect("connect");
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: rke2-ops\r\n")
                .expect("write");
            stream
        })
        .collect();
    // One more, a complete request: every slot is held, so it is closed unanswered.
    let mut extra = TcpStream::connect(addr).expect("connect");
    let _ = extra.write_all(b"GET /healthz HTTP/1.0\r\nHost: rke2-ops\r\n\r\n");
    let (closed, said) = closed_by_server(&mut extra, PATIENCE);
    assert!(
        closed && said.is_empty(),
        "beyond the cap: closed, no answer: {said:?}"
    );
    for (i, stream) in slow.iter_mut().enumerate() {
        let (closed, said) = closed_by_server(stream, header + PATIENCE);
        assert!(
            closed,
            "slow client {i} still connected after the header timeout"
        );
        assert!(
            !said.contains(" 200 "),
            "slow client {i} was answered: {said}"
        );
    }
    drop(slow);
    wait_until("a normal scrape is served again", || healthz(addr));
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(data_dir: &Path, addr: SocketAddr) -> Agent {
    let child = Command::new(built_binary("rke2-node-agent"))
        .arg("run")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--admin-kubeconfig")
        .arg(data_dir.join("rke2.yaml"))
        .arg("--metrics-addr")
        .arg(addr.to_string())
        .env("RKE2OPS_CONFIG", "/dev/null")
        .env_remove("NOTIFY_SOCKET")
        .env("RKE2OPS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("agent starts");
    let agent = Agent(child);
    wait_until("the agent answers /healthz", || healthz(addr));
    agent
}

#[test]
fn agent_metrics_server_drops_slow_clients_and_caps_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let addr: SocketAddr = "127.0.80.1:9810".parse().expect("addr");
    let _agent = start_agent(&data, addr);
    slow_clients_are_dropped_and_the_cap_holds(
        addr,
        rke2ops_common::http_server::MAX_CONNECTIONS,
        rke2ops_common::http_server::HEADER_READ_TIMEOUT,
    );
}

#[test]
fn hub_metrics_server_drops_slow_clients_and_caps_connections() {
    let state = tempfile::tempdir().expect("tempdir");
    let _hub = HubProcess::start(state.path(), "127.0.80.2");
    let addr: SocketAddr = "127.0.80.2:9812".parse().expect("addr");
    wait_until("the hub answers /healthz", || healthz(addr));
    slow_clients_are_dropped_and_the_cap_holds(
        addr,
        rke2ops_common::http_server::MAX_CONNECTIONS,
        rke2ops_common::http_server::HEADER_READ_TIMEOUT,
    );
}
