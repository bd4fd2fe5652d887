//! A real Prometheus server (Debian's `prometheus`, installed by
//! `scripts/install-test-deps.sh`) evaluating test alerting rules every second, for the hub's
//! alert gate. It scrapes nothing: the rules are constant expressions, so a test decides
//! which alerts fire by the rules it loads, and changes them with [`Prometheus::set_rules`]
//! (SIGHUP reload, as an operator's config management would).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Prometheus; killed on drop.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    dir: tempfile::TempDir,
    /// `ip:port` of its web API.
    pub addr: SocketAddr,
}

/// Rules for one group of always-firing alerts named `names` (`vector(1)`, no `for`).
#[must_use]
pub fn firing_rules(names: &[&str]) -> String {
    let mut rules = String::from("groups:\n  - name: test\n    interval: 1s\n    rules:\n");
    if names.is_empty() {
        // A group needs a rule; this one never fires.
        rules.push_str("      - alert: NeverFires\n        expr: vector(1) < 0\n");
    }
    for name in names {
        rules.push_str(&format!(
            "      - alert: {name}\n        expr: vector(1)\n        labels:\n          severity: warning\n"
        ));
    }
    rules
}

impl Prometheus {
    /// Starts Prometheus on a free port of `ip` with `rules` and waits until it is ready. (A
    /// fixed port could meet a host's own Prometheus, whose `/-/ready` would answer for it.)
    ///
    /// # Panics
    /// When Prometheus is missing, exits, or does not become ready within 30 s.
    #[must_use]
    pub fn start(ip: std::net::IpAddr, rules: &str) -> Self {
        let addr = std::net::TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("rules.yml"), rules).expect("rules");
        std::fs::write(
            dir.path().join("prometheus.yml"),
            "global:\n  evaluation_interval: 1s\nrule_files:\n  - rules.yml\n",
        )
        .expect("config");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).expect("log"))
            .spawn()
            .expect("prometheus is installed (scripts/install-test-deps.sh installs Debian's prometheus)");
        let mut prometheus = Self { child, dir, addr };
        let started = Instant::now();
        while crate::http::get(addr, "/-/ready", None).is_none() {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", prometheus.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "prometheus not ready on {addr}:\n{}",
                prometheus.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        prometheus
    }

    /// Its base URL, as the hub's `alert_gate_prometheus_url`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the rules and reloads (SIGHUP).
    ///
    /// # Panics
    /// When the file cannot be written or the signal not sent.
    pub fn set_rules(&self, rules: &str) {
        std::fs::write(self.dir.path().join("rules.yml"), rules).expect("rules");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    }

    /// The names of the alerts firing now.
    #[must_use]
    pub fn firing(&self) -> Vec<String> {
        let Some(body) = crate::http::get(self.addr, "/api/v1/alerts", None) else {
            return Vec::new();
        };
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let mut names: Vec<String> = doc["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == "firing")
            .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    }

    /// Waits until exactly `names` fire (sorted).
    ///
    /// # Panics
    /// After 30 s.
    pub fn wait_firing(&self, names: &[&str]) {
        let started = Instant::now();
        loop {
            let now = self.firing();
            if now == names {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "firing {now:?}, want {names:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("prometheus.log")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
