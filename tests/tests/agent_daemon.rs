//! `rke2-node-agent run` outside systemd: it serves promtool-clean metrics, follows
//! certificates replaced by rename, folders created later and a data dir deleted and
//! recreated, never exports key material, and exits 0 on SIGTERM. (The same binary under a
//! real systemd: `agent_systemd.rs`.)

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rke2ops_tests::ground::built_binary;
use rke2ops_tests::http;
use rke2ops_tests::sim::tree::{ClusterCas, GeneratedTree, Role, TreeSpec, Validity, generate};
use time::OffsetDateTime;

/// Generous: the target (< 500 ms from event to metric) is measured by the benchmark, not
/// asserted here. 30 s, not 10: a CI machine building beside the test once took longer to
/// re-export a recreated tree (with the disk nearly full).
const WAIT: Duration = Duration::from_secs(30);

struct Agent {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr(last_octet: u8) -> SocketAddr {
    // A loopback address per test keeps parallel tests apart; port 0 finds a free port.
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 20, last_octet));
    let listener = std::net::TcpListener::bind((ip, 0)).expect("bind probe");
    listener.local_addr().expect("addr")
}

fn start_agent(data_dir: &Path, kubeconfig: &Path, octet: u8) -> Agent {
    let addr = free_addr(octet);
    let child = Command::new(built_binary("rke2-node-agent"))
        .arg("run")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--admin-kubeconfig")
        .arg(kubeconfig)
        .arg("--metrics-addr")
        .arg(addr.to_string())
        .env("RKE2OPS_CONFIG", "/dev/null")
        .env_remove("NOTIFY_SOCKET")
        .env("RKE2OPS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("agent starts");
    let agent = Agent { child, addr };
    wait_until("agent answers /healthz", || {
        http_get(addr, "/healthz", None).is_some_and(|b| b == "ok\n")
    });
    agent
}

fn http_get(addr: SocketAddr, path: &str, accept: Option<&str>) -> Option<String> {
    http::get(addr, path, accept)
}

fn metrics(agent: &Agent) -> String {
    http_get(agent.addr, "/metrics", None).expect("/metrics answers")
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < WAIT,
            "timed out after {WAIT:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sample(text: &str, metric: &str, label_fragment: &str) -> Option<f64> {
    http::sample(text, metric, label_fragment)
}

fn cas() -> &'static ClusterCas {
    static CAS: std::sync::OnceLock<ClusterCas> = std::sync::OnceLock::new();
    CAS.get_or_init(|| ClusterCas::generate(OffsetDateTime::now_utc()).expect("CAs"))
}

fn server_tree(root: &Path, tweak: impl FnOnce(TreeSpec) -> TreeSpec) -> GeneratedTree {
    let mut spec = TreeSpec::new(
        Role::Server,
        "server-1",
        IpAddr::V4(Ipv4Addr::new(127, 0, 10, 1)),
        root.join("data"),
        OffsetDateTime::now_utc(),
    );
    spec.config_dir = Some(root.join("etc"));
    generate(&tweak(spec), cas()).expect("tree")
}

fn promtool(text: &str) {
    let out = rke2ops_tests::http::promtool_check(text);
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_are_promtool_clean_and_carry_the_contract_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = server_tree(dir.path(), |s| {
        s.with_validity(
            "server/tls/client-admin.crt",
            Validity::ExpiresIn(Duration::from_secs(40 * 86_400)),
        )
        .with_breakage(
            "server/tls/client-scheduler.crt",
            rke2ops_tests::sim::tree::Breakage::Empty,
        )
    });
    std::fs::create_dir_all(tree.data_dir.join("server/tls-1700000000")).expect("backup");
    let kubeconfig = tree.config_dir.as_ref().expect("etc").join("rke2.yaml");
    let agent = start_agent(&tree.data_dir, &kubeconfig, 1);
    let text = metrics(&agent);
    promtool(&text);
    for name in [
        "rke2ops_cert_not_after_timestamp_seconds{",
        "rke2ops_cert_not_before_timestamp_seconds{",
        "rke2ops_cert_file_errors{",
        "rke2ops_renewal_deadline_timestamp_seconds ",
        "rke2ops_build_info{version=",
        "rke2ops_scans_total ",
        "rke2ops_scan_duration_seconds_bucket{",
        "rke2ops_cert_backups 1",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    let admin = tree.cert("server/tls/client-admin.crt").expect("admin");
    #[allow(clippy::cast_precision_loss)]
    let expected = admin.not_after.unix_timestamp() as f64;
    assert_eq!(
        sample(
            &text,
            "rke2ops_cert_not_after_timestamp_seconds",
            "path=\"server/tls/client-admin.crt\",filename=\"client-admin.crt\",subject=\"O=system:masters, CN=system:admin\""
        ),
        Some(expected)
    );
    assert_eq!(
        sample(&text, "rke2ops_renewal_deadline_timestamp_seconds", ""),
        Some(expected)
    );
    assert_eq!(
        sample(
            &text,
            "rke2ops_cert_file_errors",
            "path=\"server/tls/client-scheduler.crt\",reason=\"empty\""
        ),
        Some(1.0)
    );
    assert!(
        text.contains("usages=\"ClientAuth\",is_ca=\"false\""),
        "{text}"
    );
    // No key material: nothing from any key file may appear in the metrics.
    assert!(!text.contains("PRIVATE KEY"));
    let key = std::fs::read_to_string(tree.path("server/tls/client-admin.key")).expect("key");
    for line in key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
    {
        assert!(
            !text.contains(&line[..16]),
            "key material leaked into metrics"
        );
    }
    // OpenMetrics for scrapers that ask for it.
    let om = http_get(
        agent.addr,
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0"),
    )
    .expect("metrics");
    assert!(
        om.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
}

#[test]
fn certificate_replaced_by_rename_shows_up_in_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = server_tree(&dir.path().join("live"), |s| s);
    let kubeconfig = tree.config_dir.as_ref().expect("etc").join("rke2.yaml");
    let agent = start_agent(&tree.data_dir, &kubeconfig, 2);
    let label = "path=\"server/tls/serving-kube-apiserver.crt\",filename=\"serving-kube-apiserver.crt\",subject=\"CN=kube-apiserver\"";
    let before = sample(
        &metrics(&agent),
        "rke2ops_cert_not_after_timestamp_seconds",
        label,
    )
    .expect("sample");

    // A new certificate with another validity, written beside and renamed over the old one
    // (how RKE2 and most tools replace files atomically).
    let replacement = server_tree(&dir.path().join("new"), |s| {
        s.with_validity(
            "server/tls/serving-kube-apiserver.crt",
            Validity::ExpiresIn(Duration::from_secs(10 * 86_400)),
        )
    });
    let target = tree.path("server/tls/serving-kube-apiserver.crt");
    let staging = target.with_extension("crt.tmp");
    std::fs::copy(
        replacement.path("server/tls/serving-kube-apiserver.crt"),
        &staging,
    )
    .expect("copy");
    std::fs::rename(&staging, &target).expect("rename");
    #[allow(clippy::cast_precision_loss)]
    let expected = replacement
        .cert("server/tls/serving-kube-apiserver.crt")
        .expect("cert")
        .not_after
        .unix_timestamp() as f64;
    assert_ne!(before, expected);
    wait_until("the replaced certificate's NotAfter is exported", || {
        sample(
            &metrics(&agent),
            "rke2ops_cert_not_after_timestamp_seconds",
            label,
        ) == Some(expected)
    });
    // Its key no longer matches (only the certificate was replaced): reported as an error.
    wait_until("the key mismatch is reported", || {
        sample(
            &metrics(&agent),
            "rke2ops_cert_file_errors",
            "reason=\"key_mismatch\"",
        ) == Some(1.0)
    });
}

#[test]
fn data_dir_created_later_then_deleted_and_recreated_is_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("node");
    let data_dir = root.join("data");
    let kubeconfig = root.join("etc/rke2.yaml");
    // Nothing exists yet: the agent starts with an empty inventory and watches an ancestor.
    let agent = start_agent(&data_dir, &kubeconfig, 3);
    let count = |agent: &Agent| sample(&metrics(agent), "rke2ops_certificates", "status=\"OK\"");
    assert_eq!(count(&agent), Some(0.0));

    let tree = server_tree(&root, |s| s);
    let full = tree.files.values().filter(|f| f.cert.is_some()).count();
    assert!(full > 20, "a server tree has many certificate files");
    wait_until("certificates of the new tree are exported", || {
        count(&agent).is_some_and(|n| n >= full as f64)
    });
    // The whole tree's count: a scan that ran while the tree was being written (a loaded
    // machine) saw a file half written and fewer certificates; the batches after it settle
    // on the complete tree, with no file error and the same count for two seconds.
    let with_tree = {
        let started = Instant::now();
        loop {
            let text = metrics(&agent);
            let before = sample(&text, "rke2ops_certificates", "status=\"OK\"");
            let clean = !text
                .lines()
                .any(|l| l.starts_with("rke2ops_cert_file_errors{") && !l.ends_with(" 0"));
            std::thread::sleep(Duration::from_secs(2));
            if clean && count(&agent) == before {
                break before.expect("count");
            }
            assert!(started.elapsed() < WAIT, "the count never settled");
        }
    };

    std::fs::remove_dir_all(&root).expect("delete the whole tree");
    wait_until("the deleted tree's certificates are gone", || {
        count(&agent) == Some(0.0)
    });

    // Deleted and recreated at once, several times: a recreated folder often gets its old
    // inode number back while its old watch died with it; the agent must hear from the new
    // one anyway.
    for _ in 0..4 {
        server_tree(&root, |s| s);
        wait_until("the recreated tree is exported again", || {
            count(&agent) == Some(with_tree)
        });
        std::fs::remove_dir_all(&root).expect("delete the whole tree again");
        server_tree(&root, |s| s);
        wait_until("the tree recreated at once is exported", || {
            count(&agent) == Some(with_tree)
        });
        std::fs::remove_dir_all(&root).expect("delete it once more");
        wait_until("gone again", || count(&agent) == Some(0.0));
    }
    server_tree(&root, |s| s);
    wait_until("the recreated tree is exported again", || {
        count(&agent) == Some(with_tree)
    });

    // Folders created later inside an existing tree (a first rotation creates server/tls-*).
    std::fs::create_dir_all(data_dir.join("server/tls-1790000000")).expect("backup");
    wait_until("the new backup is counted", || {
        sample(&metrics(&agent), "rke2ops_cert_backups", "") == Some(1.0)
    });
}

#[test]
fn sigterm_stops_the_daemon_with_exit_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = server_tree(dir.path(), |s| s);
    let kubeconfig = tree.config_dir.as_ref().expect("etc").join("rke2.yaml");
    let mut agent = start_agent(&tree.data_dir, &kubeconfig, 4);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(agent.child.id()).expect("pid fits")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = agent.child.try_wait().expect("wait") {
            break status;
        }
        assert!(start.elapsed() < WAIT, "agent did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn unbindable_metrics_address_fails_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.20.9:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let out = Command::new(built_binary("rke2-node-agent"))
        .args([
            "run",
            "--data-dir",
            "/nonexistent",
            "--metrics-addr",
            &addr.to_string(),
        ])
        .env("RKE2OPS_CONFIG", "/dev/null")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&addr.to_string()) && stderr.contains("metrics_addr"),
        "{stderr}"
    );
}
