//! A tiny HTTP/1.0 GET for tests and benchmarks that read the agent's `/metrics` and
//! `/healthz`: plain std sockets, no client library, one request per connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The body of `GET path` when the answer is 200, else `None` (refused, timeout, other status).
#[must_use]
pub fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: rke2-ops\r\n{accept}\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?;
    (status == "200").then(|| body.to_owned())
}

/// The value of the first sample of `metric` (exact name) whose label text contains
/// `label_fragment`, in classic or OpenMetrics text.
#[must_use]
pub fn sample(text: &str, metric: &str, label_fragment: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
        .find(|l| l.contains(label_fragment))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `promtool check metrics` on `text` (promtool comes from `scripts/install-test-deps.sh`).
///
/// # Panics
/// When promtool is missing or cannot be run.
#[must_use]
pub fn promtool_check(text: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/install-test-deps.sh)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    child.wait_with_output().expect("promtool")
}
