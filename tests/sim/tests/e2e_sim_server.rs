//! The simulated `rke2 server` under a real systemd: `Type=notify` readiness, the health
//! endpoints with their client-certificate rules, certificate renewal at start, `rke2
//! certificate rotate`, a real three-member etcd cluster, and the fault switches.
//!
//! Each test boots proving-ground nodes (`rke2ops_ground`) and sets simulated RKE2 up
//! with `rke2ops_sim::cluster` (RKE2's unit files from `tests/sim/units/`, unchanged).
//! Needs root, systemd, etcd and curl (`scripts/install-test-deps.sh`) and
//! `cargo build -p rke2ops-tests` first.

use std::time::{Duration, Instant};

use rke2ops_ground::{Node, require_root_and_tools};
use rke2ops_sim::cluster::{
    self, DATA_DIR, SimCluster, clear_fault, etcdctl, https_get, serial_of, set_fault,
};
use rke2ops_sim::tree::{ClusterCas, Role, Validity};
use time::OffsetDateTime;

const SERVER: &str = "rke2-server.service";
const ADMIN: Option<&str> = Some("server/tls/client-admin");

fn one_server() -> SimCluster {
    require_root_and_tools();
    SimCluster::boot(1, 0).expect("boot one server")
}

fn readyz(node: &Node) -> (u16, String) {
    https_get(node, 6443, "/readyz?verbose", ADMIN).expect("curl readyz")
}

fn read(node: &Node, rel: &str) -> Vec<u8> {
    node.read_file(format!("{DATA_DIR}/{rel}"))
        .unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn exists(node: &Node, rel: &str) -> bool {
    node.host_path(format!("{DATA_DIR}/{rel}"))
        .expect("private path")
        .exists()
}

fn journal(node: &Node) -> String {
    node.journal(SERVER, 200).expect("journal")
}

/// Waits until the unit's journal holds `needle`: journald may store a line a moment after
/// systemd reports the state change that followed it.
fn wait_journal(node: &Node, needle: &str) {
    let found = rke2ops_ground::wait_until(needle, Duration::from_secs(5), || {
        Ok(journal(node).contains(needle))
    });
    assert!(
        found.is_ok(),
        "journal lacks {needle:?}:\n{}",
        journal(node)
    );
}

const CAS: &[&str] = &[
    "server/tls/client-ca.crt",
    "server/tls/client-ca.key",
    "server/tls/server-ca.crt",
    "server/tls/server-ca.key",
    "server/tls/request-header-ca.crt",
    "server/tls/etcd/server-ca.crt",
    "server/tls/etcd/peer-ca.crt",
];

#[test]
fn server_becomes_active_through_notify_and_serves_health_with_client_certs() {
    let cluster = one_server();
    let node = &cluster.servers[0].node;
    let props = node
        .unit_properties(SERVER, &["Type", "ActiveState", "NRestarts", "StatusText"])
        .expect("properties");
    assert_eq!(props["Type"], "notify");
    assert_eq!(props["ActiveState"], "active");
    assert_eq!(props["NRestarts"], "0");
    assert!(props["StatusText"].contains("ready"), "{props:?}");
    for unit in ["rke2-server.service", "rke2-agent.service"] {
        let path = format!("{}/{unit}", cluster::UNIT_DIR);
        let verify = node
            .exec(&["systemd-analyze", "verify", &path])
            .expect("systemd-analyze");
        assert!(
            verify.success() && verify.stderr.trim().is_empty(),
            "{unit}: {verify:?}"
        );
    }

    // kube-apiserver with --anonymous-auth=false: no client certificate, 401.
    let (code, body) = https_get(node, 6443, "/readyz?verbose", None).expect("curl");
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("\"reason\":\"Unauthorized\""), "{body}");
    let (code, body) = readyz(node);
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("[+]ping ok\n"), "{body}");
    assert!(body.contains("[+]etcd ok\n"), "{body}");
    assert!(body.ends_with("readyz check passed\n"), "{body}");
    let (code, body) = https_get(node, 6443, "/livez", ADMIN).expect("curl");
    assert_eq!((code, body.as_str()), (200, "ok"));

    // A client certificate from another CA does not get through the handshake.
    let foreign = ClusterCas::generate(OffsetDateTime::now_utc()).expect("foreign CAs");
    let spec = rke2ops_sim::tree::TreeSpec::new(
        Role::Server,
        "intruder",
        "127.0.0.1".parse().expect("ip"),
        node.host_path("/var/tmp/foreign").expect("path"),
        OffsetDateTime::now_utc(),
    );
    rke2ops_sim::tree::generate(&spec, &foreign).expect("foreign tree");
    let url = format!("https://{}:6443/readyz", node.ip());
    let out = node
        .exec(&[
            "curl",
            "-sS",
            "--cacert",
            "/var/lib/rancher/rke2/agent/server-ca.crt",
            "--cert",
            "/var/tmp/foreign/server/tls/client-admin.crt",
            "--key",
            "/var/tmp/foreign/server/tls/client-admin.key",
            &url,
        ])
        .expect("curl");
    assert!(
        !out.success(),
        "a foreign client cert must be refused: {out:?}"
    );

    // /version follows `rke2 --version`.
    let banner = node
        .exec_ok(&["/usr/local/bin/rke2", "--version"])
        .expect("version");
    let (code, body) = https_get(node, 6443, "/version", ADMIN).expect("curl");
    assert_eq!(code, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).expect("json");
    let git_version = doc["gitVersion"].as_str().expect("gitVersion");
    assert!(
        banner.starts_with(&format!("rke2 version {git_version} (")),
        "{banner}"
    );

    // Supervisor and kubelet.
    assert_eq!(
        https_get(node, 9345, "/ping", None).expect("curl"),
        (200, "pong".into())
    );
    let kubelet = node
        .exec_ok(&["curl", "-sS", "http://127.0.0.1:10248/healthz"])
        .expect("kubelet healthz");
    assert_eq!(kubelet, "ok");
    // As RKE2's kubelet: /healthz on loopback only, not on the node's address.
    let outside = node
        .exec(&[
            "curl",
            "-sS",
            &format!("http://{}:10248/healthz", node.ip()),
        ])
        .expect("curl");
    assert_eq!(outside.status.code(), Some(7), "{}", outside.stderr);
    let (code, _) = https_get(node, 10250, "/healthz", None).expect("curl");
    assert_eq!(code, 401);
    assert_eq!(
        https_get(node, 10250, "/healthz", ADMIN).expect("curl"),
        (200, "ok".into())
    );
    // The admin kubeconfig is written at start.
    let kubeconfig = String::from_utf8(
        node.read_file("/etc/rancher/rke2/rke2.yaml")
            .expect("rke2.yaml"),
    )
    .expect("utf-8");
    assert!(kubeconfig.contains("server: https://127.0.0.1:6443"));

    // SIGTERM (systemctl stop) ends the service cleanly and takes etcd down with it.
    cluster::stop(node, Role::Server).expect("stop");
    assert_eq!(
        node.unit_property(SERVER, "Result").expect("result"),
        "success"
    );
    let etcd_left = node.exec(&["pgrep", "-x", "etcd"]).expect("pgrep");
    assert!(
        !etcd_left.success(),
        "etcd must die with rke2: {etcd_left:?}"
    );
}

#[test]
fn start_renews_certificates_within_120_days_and_keeps_fresh_ones() {
    require_root_and_tools();
    let cas =
        ClusterCas::generate(OffsetDateTime::now_utc() - time::Duration::days(300)).expect("CAs");
    let day = Duration::from_secs(86_400);
    let cluster = SimCluster::boot_with(cas, 1, 0, |_, setup| {
        setup
            .with_validity(
                "server/tls/serving-kube-apiserver.crt",
                Validity::ExpiresIn(day * 30),
            )
            .with_validity(
                "server/tls/client-admin.crt",
                Validity::ExpiresIn(day * 119),
            )
            .with_validity("server/tls/etcd/client.crt", Validity::ExpiresIn(day * 121))
    })
    .expect("boot");
    let server = &cluster.servers[0];
    let node = &server.node;
    let generated = |rel: &str| server.tree.cert(rel).expect("generated").serial;

    for rel in [
        "server/tls/serving-kube-apiserver.crt",
        "server/tls/client-admin.crt",
    ] {
        assert_ne!(serial_of(node, rel), Some(generated(rel)), "{rel} renewed");
    }
    for rel in [
        "server/tls/etcd/client.crt",
        "server/tls/client-controller.crt",
        "server/tls/etcd/peer-server-client.crt",
    ] {
        assert_eq!(serial_of(node, rel), Some(generated(rel)), "{rel} kept");
    }
    // The renewed apiserver certificate is the one being served, and readyz passes with the
    // renewed admin certificate.
    assert_eq!(readyz(node).0, 200);
    let status = node
        .exec_ok(&["rke2", "certificate", "check", "-o", "json"])
        .expect("check");
    assert!(!status.contains("\"WARNING\""), "{status}");

    // A restart keeps every fresh server certificate; agent certificates are reissued.
    let before: Vec<(String, Option<u64>)> = server
        .tree
        .leaves()
        .map(|(rel, _)| (rel.to_owned(), serial_of(node, rel)))
        .collect();
    node.systemctl(&["restart", SERVER]).expect("restart");
    node.wait_for_unit_state(SERVER, "active", Duration::from_secs(20))
        .expect("active again");
    for (rel, serial) in before {
        let now = serial_of(node, &rel);
        if rel.starts_with("agent/") {
            assert_ne!(
                now, serial,
                "{rel}: agents request new certificates at start"
            );
        } else {
            assert_eq!(now, serial, "{rel}: fresh, kept across a restart");
        }
    }
}

#[test]
fn rotate_backs_up_deletes_and_regenerates_at_the_next_start() {
    let cluster = one_server();
    let node = &cluster.servers[0].node;
    let rotated = [
        "server/tls/serving-kube-apiserver.crt",
        "server/tls/client-kube-apiserver.crt",
        "server/tls/etcd/server-client.crt",
        "server/tls/etcd/peer-server-client.crt",
        "server/tls/etcd/client.crt",
    ];
    let untouched = [
        "server/tls/client-admin.crt",
        "server/tls/client-scheduler.crt",
    ];
    let serials =
        |rels: &[&str]| -> Vec<Option<u64>> { rels.iter().map(|r| serial_of(node, r)).collect() };
    let (rotated_before, untouched_before) = (serials(&rotated), serials(&untouched));
    let cas_before: Vec<Vec<u8>> = CAS.iter().map(|r| read(node, r)).collect();
    let dynamic_before = read(node, "server/tls/dynamic-cert.json");
    let apiserver_before = read(node, "server/tls/serving-kube-apiserver.crt");

    cluster::stop(node, Role::Server).expect("stop");
    let started = OffsetDateTime::now_utc().unix_timestamp();
    let out = node
        .exec(&[
            "rke2",
            "certificate",
            "rotate",
            "--service",
            "api-server",
            "-s",
            "etcd",
            "-s",
            "rke2-server",
        ])
        .expect("rotate");
    assert!(out.success(), "{out:?}");
    assert!(
        out.stderr
            .contains("Successfully backed up certificates to"),
        "{}",
        out.stderr
    );

    // Backup: server/tls-<unix seconds>, a copy of the whole server/tls.
    let server_dir = node.host_path(format!("{DATA_DIR}/server")).expect("path");
    let backups: Vec<String> = std::fs::read_dir(&server_dir)
        .expect("server dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("tls-"))
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    let stamp: i64 = backups[0]["tls-".len()..].parse().expect("unix seconds");
    assert!(
        (started - 1..=started + 5).contains(&stamp),
        "{stamp} vs {started}"
    );
    let backup = format!("server/{}", backups[0]);
    assert_eq!(
        read(node, &format!("{backup}/serving-kube-apiserver.crt")),
        apiserver_before
    );
    assert_eq!(
        read(node, &format!("{backup}/client-ca.key")),
        cas_before[1]
    );

    // Deleted, triggers written, CAs untouched, nothing issued yet.
    for rel in rotated {
        assert!(!exists(node, rel), "{rel} deleted");
        assert!(
            !exists(node, &rel.replace(".crt", ".key")),
            "{rel} key deleted"
        );
    }
    assert!(exists(node, "server/tls/dynamic-cert-regenerate"));
    assert!(exists(node, "force-restart"));
    assert_eq!(serials(&untouched), untouched_before);

    cluster::start(node, Role::Server, Duration::from_secs(30)).expect("start again");
    for (rel, before) in rotated.iter().zip(&rotated_before) {
        let now = serial_of(node, rel);
        assert!(now.is_some() && now != *before, "{rel}: new certificate");
    }
    assert_eq!(serials(&untouched), untouched_before, "other services kept");
    assert_ne!(read(node, "server/tls/dynamic-cert.json"), dynamic_before);
    assert!(
        !exists(node, "server/tls/dynamic-cert-regenerate"),
        "trigger consumed"
    );
    assert!(!exists(node, "force-restart"), "trigger consumed");
    let cas_after: Vec<Vec<u8>> = CAS.iter().map(|r| read(node, r)).collect();
    assert_eq!(cas_after, cas_before, "CAs never change");
    assert_eq!(
        readyz(node).0,
        200,
        "etcd and the apiserver run on the new certificates"
    );
}

#[test]
fn three_servers_form_one_etcd_cluster_that_keeps_quorum_with_one_down() {
    require_root_and_tools();
    let started = Instant::now();
    let cluster = SimCluster::boot(3, 0).expect("boot three servers");
    let [s1, s2, s3] = [0, 1, 2].map(|i| &cluster.servers[i].node);

    let out = etcdctl(s1, &["endpoint", "health", "--cluster"]).expect("etcdctl");
    let healthy = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(
        healthy.matches("is healthy").count(),
        3,
        "three healthy members: {healthy}"
    );
    let members = etcdctl(s2, &["member", "list"]).expect("member list");
    for name in ["server-1", "server-2", "server-3"] {
        assert!(members.stdout.contains(name), "{}", members.stdout);
    }

    // One server down: the other two keep quorum and stay ready.
    cluster::stop(s3, Role::Server).expect("stop server-3");
    for node in [s1, s2] {
        let (code, body) = readyz(node);
        assert_eq!(code, 200, "{}: {body}", node.name());
    }
    let out = etcdctl(
        s1,
        &[
            &format!(
                "--endpoints=https://{}:2379,https://{}:2379",
                s1.ip(),
                s2.ip()
            ),
            "endpoint",
            "health",
        ],
    )
    .expect("etcdctl");
    assert!(out.success(), "{out:?}");

    // Two down: quorum lost, the survivor's apiserver is not ready.
    cluster::stop(s2, Role::Server).expect("stop server-2");
    let (code, body) = readyz(s1);
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("[-]etcd failed: reason withheld"), "{body}");
    assert!(body.ends_with("readyz check failed\n"), "{body}");

    // Back: server-2 restarts from its data and quorum returns.
    cluster::start(s2, Role::Server, Duration::from_secs(30)).expect("server-2 back");
    assert_eq!(readyz(s1).0, 200);
    eprintln!("three-server test took {:?}", started.elapsed());
}

#[test]
fn fail_start_exits_before_ready_and_systemd_restarts() {
    let cluster = one_server();
    let node = &cluster.servers[0].node;
    cluster::stop(node, Role::Server).expect("stop");
    set_fault(node, "fail-start", "1").expect("fault");
    let t0 = Instant::now();
    cluster::start(node, Role::Server, Duration::from_secs(25)).expect("active after a retry");
    assert!(
        t0.elapsed() >= Duration::from_secs(5),
        "RestartSec=5s between tries"
    );
    assert_eq!(node.unit_property(SERVER, "NRestarts").expect("n"), "1");
    wait_journal(node, "simulated start failure");
    wait_journal(node, "Failed with result 'exit-code'");
    assert!(
        !exists(node, ".sim-faults/fail-start"),
        "a counted switch is consumed"
    );

    // Persistent: the unit cycles through auto-restart until the switch goes.
    set_fault(node, "fail-start", "").expect("fault");
    node.systemctl(&["restart", "--no-block", SERVER])
        .expect("restart");
    node.wait_for_unit(
        SERVER,
        "auto-restart after exit 1",
        Duration::from_secs(10),
        |p| {
            p.get("SubState").is_some_and(|s| s == "auto-restart")
                && p.get("Result").is_some_and(|r| r == "exit-code")
        },
    )
    .expect("failing");
    clear_fault(node, "fail-start").expect("clear");
    node.wait_for_unit_state(SERVER, "active", Duration::from_secs(15))
        .expect("recovers");
}

#[test]
fn slow_start_delays_ready_and_never_ready_stays_activating() {
    let cluster = one_server();
    let node = &cluster.servers[0].node;
    cluster::stop(node, Role::Server).expect("stop");

    set_fault(node, "slow-start", "3").expect("fault");
    let t0 = Instant::now();
    node.systemctl(&["start", "--no-block", SERVER])
        .expect("start");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        node.unit_property(SERVER, "ActiveState").expect("state"),
        "activating"
    );
    node.wait_for_unit_state(SERVER, "active", Duration::from_secs(20))
        .expect("active");
    assert!(t0.elapsed() >= Duration::from_secs(3), "{:?}", t0.elapsed());
    clear_fault(node, "slow-start").expect("clear");

    set_fault(node, "never-ready", "").expect("fault");
    node.systemctl(&["restart", "--no-block", SERVER])
        .expect("restart");
    std::thread::sleep(Duration::from_secs(4));
    let props = node
        .unit_properties(SERVER, &["ActiveState", "SubState", "StatusText"])
        .expect("props");
    assert_eq!(props["ActiveState"], "activating", "{props:?}");
    assert_eq!(props["SubState"], "start", "{props:?}");
    let (code, body) = readyz(node);
    assert_eq!(code, 500, "{body}");
    assert!(
        body.contains("[-]poststarthook/rbac/bootstrap-roles failed"),
        "{body}"
    );
    assert!(body.contains("[+]etcd ok"), "{body}");
    clear_fault(node, "never-ready").expect("clear");
    node.systemctl(&["restart", "--no-block", SERVER])
        .expect("restart");
    node.wait_for_unit_state(SERVER, "active", Duration::from_secs(20))
        .expect("ready without the switch");
}

#[test]
fn empty_pem_fails_every_start_until_the_file_is_restored() {
    let cluster = one_server();
    let node = &cluster.servers[0].node;
    let rel = "server/tls/serving-kube-apiserver.crt";
    let good = read(node, rel);
    set_fault(node, "empty-pem", rel).expect("fault");
    node.systemctl(&["restart", "--no-block", SERVER])
        .expect("restart");
    node.wait_for_unit(SERVER, "exit 1", Duration::from_secs(10), |p| {
        p.get("Result").is_some_and(|r| r == "exit-code")
    })
    .expect("failed");
    assert!(read(node, rel).is_empty(), "the file is left empty");
    assert!(
        !exists(node, ".sim-faults/empty-pem"),
        "the switch is consumed"
    );

    // The next automatic start keeps the empty file (as k3s does) and fails loading it.
    node.wait_for_unit(SERVER, "second failure", Duration::from_secs(15), |p| {
        p.get("NRestarts").is_some_and(|n| n != "0")
            && p.get("SubState").is_some_and(|s| s == "auto-restart")
    })
    .expect("fails again");
    wait_journal(
        node,
        "kube-apiserver: unable to load /var/lib/rancher/rke2/server/tls/serving-kube-apiserver.crt: \
         tls: failed to find any PEM data in certificate input",
    );

    // Restoring the file (from the rotation backup, in real life) brings it back.
    node.write_file(format!("{DATA_DIR}/{rel}"), &good)
        .expect("restore");
    node.wait_for_unit_state(SERVER, "active", Duration::from_secs(15))
        .expect("recovers");
    assert_eq!(readyz(node).0, 200);
}

#[test]
fn agent_waits_for_its_server_and_rotates_into_agent_backup() {
    require_root_and_tools();
    let cluster = SimCluster::boot(1, 1).expect("boot server + agent");
    let server = &cluster.servers[0].node;
    let agent = &cluster.agents[0];
    let node = &agent.node;
    const AGENT: &str = "rke2-agent.service";
    assert_eq!(node.unit_property(AGENT, "Type").expect("type"), "notify");
    let kubelet = node
        .exec_ok(&["curl", "-sS", "http://127.0.0.1:10248/healthz"])
        .expect("kubelet healthz");
    assert_eq!(kubelet, "ok");
    // As RKE2's kubelet: /healthz on loopback only, not on the node's address.
    let outside = node
        .exec(&[
            "curl",
            "-sS",
            &format!("http://{}:10248/healthz", node.ip()),
        ])
        .expect("curl");
    assert_eq!(outside.status.code(), Some(7), "{}", outside.stderr);
    let rel = "agent/client-kubelet.crt";
    let issued = serial_of(node, rel);
    assert_ne!(
        issued,
        Some(agent.tree.cert(rel).expect("generated").serial)
    );
    assert!(!exists(node, "server"), "an agent has no server dir");

    // Without its server, an agent start waits (activating) and says why.
    cluster::stop(server, Role::Server).expect("stop server");
    node.systemctl(&["restart", "--no-block", AGENT])
        .expect("restart");
    node.wait_for_unit(
        AGENT,
        "waiting for the server",
        Duration::from_secs(10),
        |p| {
            p.get("ActiveState").is_some_and(|s| s == "activating")
                && p.get("StatusText").is_some_and(|s| {
                    s.starts_with("Waiting to retrieve agent configuration; server is not ready")
                })
        },
    )
    .expect("waits");
    cluster::start(server, Role::Server, Duration::from_secs(30)).expect("server back");
    node.wait_for_unit_state(AGENT, "active", Duration::from_secs(15))
        .expect("agent follows");

    // rotate on an agent-only node: backup in agent/tls-<unix>, files flat by base name.
    cluster::stop(node, Role::Agent).expect("stop agent");
    let before = read(node, "agent/serving-kubelet.crt");
    let out = node
        .exec(&["rke2", "certificate", "rotate"])
        .expect("rotate");
    assert!(out.success(), "{out:?}");
    assert!(
        out.stderr
            .contains("Agent detected, rotating agent certificates"),
        "{}",
        out.stderr
    );
    let agent_dir = node.host_path(format!("{DATA_DIR}/agent")).expect("path");
    let backup = std::fs::read_dir(&agent_dir)
        .expect("agent dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| n.starts_with("tls-"))
        .expect("agent/tls-<unix>");
    assert_eq!(
        read(node, &format!("agent/{backup}/serving-kubelet.crt")),
        before
    );
    assert!(exists(
        node,
        &format!("agent/{backup}/client-kube-proxy.key")
    ));
    assert!(!exists(node, "agent/serving-kubelet.crt"), "deleted");
    assert!(exists(node, "agent/client-ca.crt"), "CA copies stay");
    cluster::start(node, Role::Agent, Duration::from_secs(20)).expect("agent again");
    assert!(serial_of(node, "agent/serving-kubelet.crt").is_some());
}
