//! Real etcd clusters for tests and benches of the hub's etcd store (`store = "etcd"`): a
//! member per loopback address, killed on drop. Needs the `etcd` and `etcdctl` binaries (the
//! test command installs the `etcd` packages).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An etcd cluster of one or more members on `127.0.<net>.1..n`.
#[derive(Debug)]
pub struct Etcd {
    dir: tempfile::TempDir,
    net: u8,
    members: Vec<Option<Child>>,
}

impl Etcd {
    /// Starts `n` members on `127.0.<net>.1..n` (client port 2379, peer port 2380) and waits
    /// until every one is healthy.
    ///
    /// # Panics
    /// When etcd is not installed or does not become healthy within 30 s.
    #[must_use]
    pub fn start(net: u8, n: usize) -> Etcd {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut etcd = Etcd {
            dir,
            net,
            members: (0..n).map(|_| None).collect(),
        };
        for i in 0..n {
            etcd.start_member(i);
        }
        etcd.wait_healthy(n);
        etcd
    }

    fn ip(&self, i: usize) -> String {
        format!("127.0.{}.{}", self.net, i + 1)
    }

    /// Every member's client URL, comma-separated (for `--etcd-endpoint`).
    #[must_use]
    pub fn endpoints(&self) -> String {
        (0..self.members.len())
            .map(|i| format!("http://{}:2379", self.ip(i)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// (Re)starts member `i` with its data dir (it rejoins with its data after a kill).
    ///
    /// # Panics
    /// When `etcd` cannot be run.
    pub fn start_member(&mut self, i: usize) {
        let cluster = (0..self.members.len())
            .map(|j| format!("m{j}=http://{}:2380", self.ip(j)))
            .collect::<Vec<_>>()
            .join(",");
        let data = self.dir.path().join(format!("m{i}"));
        let state = if data.exists() { "existing" } else { "new" };
        let ip = self.ip(i);
        let child = Command::new("etcd")
            .args(["--name", &format!("m{i}")])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &format!("http://{ip}:2379")])
            .args(["--advertise-client-urls", &format!("http://{ip}:2379")])
            .args(["--listen-peer-urls", &format!("http://{ip}:2380")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://{ip}:2380"),
            ])
            .args(["--initial-cluster", &cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", "rke2ops-hub"])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts (the test command installs the etcd packages)");
        self.members[i] = Some(child);
    }

    /// SIGKILLs member `i`.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until `n` members answer healthy.
    ///
    /// # Panics
    /// After 30 s.
    pub fn wait_healthy(&self, n: usize) {
        let started = Instant::now();
        loop {
            let out = Command::new("etcdctl")
                .args(["--endpoints", &self.endpoints(), "endpoint", "health"])
                .args(["--command-timeout", "2s"])
                .output()
                .expect("etcdctl (the test command installs the etcd packages)");
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            if text.matches("is healthy").count() >= n {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "etcd not healthy: {text}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
    }
}
