//! The server's real etcd member (Debian's `/usr/bin/etcd`) as a child process, with the
//! simulated certificates, and its health.
//!
//! Cluster formation follows RKE2's scheme: the first server (no `server:` in its config)
//! starts a new cluster with itself; a server with `server: https://<first>:9345` joins it
//! through the etcd API of that host (`etcdctl member add` over TLS with `etcd/client.crt`,
//! like RKE2's join through its etcd client), then starts with `--initial-cluster-state
//! existing`. Once `<data>/member` exists, etcd restarts from its data and the cluster flags
//! are left out. A join is idempotent: a member left unstarted by an earlier attempt is reused,
//! a started member of the same peer URL whose data is gone is removed and added again.
//!
//! The child is started through `setpriv --pdeathsig KILL`, so the kernel kills etcd when
//! `rke2` dies (even by SIGKILL); on SIGTERM `rke2` stops etcd first (SIGTERM, then SIGKILL
//! after 10 s). Real RKE2 runs etcd as a static pod that outlives `rke2` (`KillMode=process`);
//! see `tests/SIMULATOR.md`. If etcd exits on its own, it is started again after 2 s, as the
//! kubelet restarts a static pod.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use super::listen;
use crate::logrus;

/// The etcd binary (Debian package etcd-server).
pub const ETCD: &str = "/usr/bin/etcd";
/// etcdctl (Debian package etcd-client), used to join an existing cluster.
pub const ETCDCTL: &str = "/usr/bin/etcdctl";
/// util-linux' setpriv, which sets the parent-death signal before exec'ing etcd.
pub const SETPRIV: &str = "/usr/bin/setpriv";
/// etcd client port.
pub const CLIENT_PORT: u16 = 2379;
/// etcd peer port.
pub const PEER_PORT: u16 = 2380;
/// etcd metrics and `/health` port (plain HTTP).
pub const METRICS_PORT: u16 = 2381;

/// One server's etcd member.
#[derive(Debug, Clone)]
pub struct EtcdMember {
    /// Member name (the node name).
    pub name: String,
    /// The node IP every etcd URL uses.
    pub ip: IpAddr,
    /// `<data-dir>/server/tls`.
    pub tls_dir: PathBuf,
    /// `<data-dir>/server/db/etcd`.
    pub data_dir: PathBuf,
    /// Host of an existing server to join (`server:` of config.yaml), if any.
    pub join_host: Option<String>,
}

/// The node's own loopback, where RKE2 binds etcd's local client and metrics listeners.
const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn url(scheme: &str, ip: IpAddr, port: u16) -> String {
    format!("{scheme}://{}", SocketAddr::new(ip, port))
}

/// How this start forms or rejoins the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterFlags {
    /// Data exists: etcd rejoins from it.
    Restart,
    /// `--initial-cluster-state new` with this list.
    New(String),
    /// `--initial-cluster-state existing` with this list.
    Existing(String),
}

impl EtcdMember {
    /// Paths and identity for a server with `data_dir`.
    #[must_use]
    pub fn new(name: &str, ip: IpAddr, data_dir: &Path, join_host: Option<String>) -> Self {
        Self {
            name: name.to_owned(),
            ip,
            tls_dir: data_dir.join("server/tls"),
            data_dir: data_dir.join("server/db/etcd"),
            join_host,
        }
    }

    /// `https://<ip>:2380`.
    #[must_use]
    pub fn peer_url(&self) -> String {
        url("https", self.ip, PEER_PORT)
    }

    /// `https://<ip>:2379`.
    #[must_use]
    pub fn client_url(&self) -> String {
        url("https", self.ip, CLIENT_PORT)
    }

    /// `https://127.0.0.1:2379`: what the node's own apiserver uses (`--etcd-servers`), as
    /// RKE2 configures it.
    #[must_use]
    pub fn local_client_url(&self) -> String {
        url("https", LOOPBACK, CLIENT_PORT)
    }

    /// Where `/health` is served: RKE2 puts etcd's metrics listener on loopback only.
    #[must_use]
    pub fn health_addr(&self) -> SocketAddr {
        SocketAddr::new(LOOPBACK, METRICS_PORT)
    }

    fn tls(&self, rel: &str) -> String {
        self.tls_dir.join(rel).display().to_string()
    }

    /// Decides how to start: restart from data, bootstrap, or join (adding the member).
    pub async fn cluster_flags(&self) -> Result<ClusterFlags, String> {
        if self.data_dir.join("member").exists() {
            return Ok(ClusterFlags::Restart);
        }
        let Some(host) = &self.join_host else {
            return Ok(ClusterFlags::New(format!(
                "{}={}",
                self.name,
                self.peer_url()
            )));
        };
        let endpoint = match host.parse::<IpAddr>() {
            Ok(ip) => url("https", ip, CLIENT_PORT),
            Err(_) => format!("https://{host}:{CLIENT_PORT}"),
        };
        let peer = self.peer_url();
        let list = self.etcdctl(&endpoint, &["member", "list"]).await?;
        let mut members = members_of(&list);
        if let Some(existing) = members.iter().find(|m| m.peer_urls.contains(&peer)) {
            if existing.name.is_empty() {
                logrus::info(&format!(
                    "etcd member for {peer} was added earlier but never started; reusing it"
                ));
            } else {
                let id = format!("{:x}", existing.id);
                logrus::info(&format!(
                    "Removing stale etcd member {} ({id}) before joining again",
                    existing.name
                ));
                self.etcdctl(&endpoint, &["member", "remove", &id]).await?;
                members = self.add(&endpoint, &peer).await?;
            }
        } else {
            members = self.add(&endpoint, &peer).await?;
        }
        let initial = members
            .iter()
            .filter_map(|m| {
                let first = m.peer_urls.first()?;
                let name = if m.peer_urls.contains(&peer) {
                    self.name.clone()
                } else if m.name.is_empty() {
                    format!("unstarted-{:x}", m.id)
                } else {
                    m.name.clone()
                };
                Some(format!("{name}={first}"))
            })
            .collect::<Vec<_>>()
            .join(",");
        Ok(ClusterFlags::Existing(initial))
    }

    async fn add(&self, endpoint: &str, peer: &str) -> Result<Vec<Member>, String> {
        logrus::info(&format!(
            "Adding member {}={peer} to etcd cluster at {endpoint}",
            self.name
        ));
        let out = self
            .etcdctl(
                endpoint,
                &["member", "add", &self.name, &format!("--peer-urls={peer}")],
            )
            .await?;
        Ok(members_of(&out))
    }

    async fn etcdctl(&self, endpoint: &str, args: &[&str]) -> Result<serde_json::Value, String> {
        let out = Command::new(ETCDCTL)
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                endpoint,
                "--cacert",
                &self.tls("etcd/server-ca.crt"),
                "--cert",
                &self.tls("etcd/client.crt"),
                "--key",
                &self.tls("etcd/client.key"),
                "--dial-timeout=3s",
                "--command-timeout=5s",
                "-w",
                "json",
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("{ETCDCTL}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "etcdctl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("etcdctl output: {e}"))
    }

    /// The etcd command line for `flags`.
    #[must_use]
    pub fn args(&self, flags: &ClusterFlags) -> Vec<String> {
        let mut args = vec![
            format!("--name={}", self.name),
            format!("--data-dir={}", self.data_dir.display()),
            // As RKE2: clients on loopback and the node address, peers on the node address.
            format!(
                "--listen-client-urls={},{}",
                self.local_client_url(),
                self.client_url()
            ),
            format!("--advertise-client-urls={}", self.client_url()),
            format!("--listen-peer-urls={}", self.peer_url()),
            format!("--initial-advertise-peer-urls={}", self.peer_url()),
            format!(
                "--listen-metrics-urls={}",
                url("http", LOOPBACK, METRICS_PORT)
            ),
            format!("--cert-file={}", self.tls("etcd/server-client.crt")),
            format!("--key-file={}", self.tls("etcd/server-client.key")),
            format!("--trusted-ca-file={}", self.tls("etcd/server-ca.crt")),
            "--client-cert-auth".to_owned(),
            format!(
                "--peer-cert-file={}",
                self.tls("etcd/peer-server-client.crt")
            ),
            format!(
                "--peer-key-file={}",
                self.tls("etcd/peer-server-client.key")
            ),
            format!("--peer-trusted-ca-file={}", self.tls("etcd/peer-ca.crt")),
            "--peer-client-cert-auth".to_owned(),
            // etcd 3.5, which RKE2 ships, runs Raft's pre-vote phase by default (3.4, which the
            // proving ground has, does not): a member that was cut off does not force an
            // election when it returns.
            "--pre-vote=true".to_owned(),
            "--logger=zap".to_owned(),
            "--log-level=warn".to_owned(),
        ];
        match flags {
            ClusterFlags::Restart => {}
            ClusterFlags::New(list) | ClusterFlags::Existing(list) => {
                let state = if matches!(flags, ClusterFlags::New(_)) {
                    "new"
                } else {
                    "existing"
                };
                args.push(format!("--initial-cluster={list}"));
                args.push(format!("--initial-cluster-state={state}"));
                args.push("--initial-cluster-token=rke2-sim-etcd".to_owned());
            }
        }
        args
    }

    fn spawn(&self, flags: &ClusterFlags) -> Result<Child, String> {
        // etcd wants its data dir private (it warns about anything wider than 0700).
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.data_dir)
            .map_err(|e| format!("{}: {e}", self.data_dir.display()))?;
        let mut command = if Path::new(SETPRIV).is_file() {
            let mut c = Command::new(SETPRIV);
            c.args(["--pdeathsig", "KILL", "--", ETCD]);
            c
        } else {
            logrus::warn("setpriv not found: etcd may outlive rke2 if rke2 is killed");
            Command::new(ETCD)
        };
        command
            .args(self.args(flags))
            // etcd speaks sd_notify itself; only rke2 (the unit's main PID) may.
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command.spawn().map_err(|e| format!("{ETCD}: {e}"))
    }

    /// `GET /health` on the metrics port: healthy when etcd answers `{"health":"true"}`,
    /// which etcd 3.4 only does while this member has a leader and a quorum read succeeds.
    pub async fn healthy(&self) -> bool {
        match listen::get(self.health_addr(), "/health", None, Duration::from_secs(2)).await {
            Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    v.get("health")
                        .and_then(|h| h.as_str())
                        .map(|h| h == "true")
                })
                .unwrap_or(false),
            _ => false,
        }
    }

    /// Runs the member until `shutdown` turns true: forms or joins the cluster (retrying
    /// every 2 s while the existing cluster is unreachable), starts etcd, restarts it when it
    /// exits, stops it on shutdown.
    pub async fn supervise(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let flags = match self.cluster_flags().await {
                Ok(f) => f,
                Err(e) => {
                    logrus::warn(&format!("etcd: cannot join the cluster yet: {e}"));
                    if sleep_or_shutdown(&mut shutdown, Duration::from_secs(2)).await {
                        return;
                    }
                    continue;
                }
            };
            logrus::info(&format!(
                "Starting etcd member {} ({}) at {}",
                self.name,
                match &flags {
                    ClusterFlags::Restart => "from existing data".to_owned(),
                    ClusterFlags::New(l) => format!("new cluster {l}"),
                    ClusterFlags::Existing(l) => format!("joining cluster {l}"),
                },
                self.client_url()
            ));
            let mut child = match self.spawn(&flags) {
                Ok(c) => c,
                Err(e) => {
                    logrus::error(&format!("etcd: {e}"));
                    if sleep_or_shutdown(&mut shutdown, Duration::from_secs(2)).await {
                        return;
                    }
                    continue;
                }
            };
            tokio::select! {
                status = child.wait() => {
                    let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                    logrus::error(&format!("etcd exited ({status}); restarting in 2s"));
                    if sleep_or_shutdown(&mut shutdown, Duration::from_secs(2)).await {
                        return;
                    }
                }
                _ = shutdown.changed() => {
                    stop(&mut child).await;
                    return;
                }
            }
        }
    }
}

/// SIGTERM, then SIGKILL after 10 s.
async fn stop(child: &mut Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
    logrus::info("etcd stopped");
}

/// Sleeps `d`; true when shutdown came first.
async fn sleep_or_shutdown(shutdown: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}

/// A member as etcdctl's JSON lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    id: u64,
    name: String,
    peer_urls: Vec<String>,
}

fn members_of(doc: &serde_json::Value) -> Vec<Member> {
    doc.get("members")
        .and_then(|m| m.as_array())
        .map(|list| {
            list.iter()
                .map(|m| Member {
                    id: m.get("ID").and_then(serde_json::Value::as_u64).unwrap_or(0),
                    name: m
                        .get("name")
                        .and_then(|n| n.as_str())
                        .unwrap_or_default()
                        .to_owned(),
                    peer_urls: m
                        .get("peerURLs")
                        .and_then(|p| p.as_array())
                        .map(|urls| {
                            urls.iter()
                                .filter_map(|u| u.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcdctl_member_json_is_read() {
        let doc: serde_json::Value = serde_json::from_str(
            r#"{"header":{"cluster_id":1},"member":{"ID":12,"peerURLs":["https://127.0.10.2:2380"]},
            "members":[{"ID":11,"name":"server-1","peerURLs":["https://127.0.10.1:2380"],
            "clientURLs":["https://127.0.10.1:2379"]},{"ID":12,"peerURLs":["https://127.0.10.2:2380"]}]}"#,
        )
        .expect("test input is valid");
        let m = members_of(&doc);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].name, "server-1");
        assert_eq!(m[1].name, "");
        assert_eq!(m[1].peer_urls, ["https://127.0.10.2:2380"]);
    }

    #[test]
    fn first_server_bootstraps_with_itself() {
        let dir = tempfile::tempdir().expect("test input is valid");
        let m = EtcdMember::new(
            "server-1",
            "127.0.10.1".parse().expect("test input is valid"),
            dir.path(),
            None,
        );
        let flags = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("test input is valid")
            .block_on(m.cluster_flags())
            .expect("test input is valid");
        assert_eq!(
            flags,
            ClusterFlags::New("server-1=https://127.0.10.1:2380".into())
        );
        let args = m.args(&flags);
        assert!(args.contains(&"--initial-cluster-state=new".to_owned()));
        assert!(args.contains(&"--client-cert-auth".to_owned()));
        assert!(args.contains(&"--listen-metrics-urls=http://127.0.0.1:2381".to_owned()));
        std::fs::create_dir_all(dir.path().join("server/db/etcd/member"))
            .expect("test input is valid");
        let restart = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("test input is valid")
            .block_on(m.cluster_flags())
            .expect("test input is valid");
        assert_eq!(restart, ClusterFlags::Restart);
        assert!(
            !m.args(&restart)
                .iter()
                .any(|a| a.starts_with("--initial-cluster"))
        );
    }
}
