//! The hub's state in a real 3-member etcd (`store = "etcd"`), two hub replicas, and a fake
//! fleet that knows both: one replica leads, the other follows the replicated log and serves
//! reads; the leader SIGKILLed in the middle of a server's operation hands over, and the
//! plan completes with every invariant; the old leader restarted does not act; etcd losing
//! quorum stops every write, and the hub comes back with it; a single hub's state migrates
//! into etcd with its agents keeping their identities. Needs the `etcd` binary (the test
//! command installs it); no root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rke2ops_tests::etcd::Etcd;
use rke2ops_tests::fleet::{FakeFleet, FleetSpec, max_overlap};
use rke2ops_tests::hub::HubProcess;
use serde_json::Value;

fn spec() -> FleetSpec {
    FleetSpec {
        servers: 3,
        agents: 1,
        version: "v1.33.5+rke2r1".to_owned(),
        op_time: Duration::from_millis(2500),
        heartbeat: Duration::from_millis(300),
        renewal_deadline_in: None,
    }
}

fn replica(state: &Path, ip: &str, etcd: &Etcd, name: &str) -> HubProcess {
    let log = state.with_extension("log");
    tokio::task::block_in_place(|| {
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
            &log,
        )
    })
}

fn leads(hub: &HubProcess) -> Option<bool> {
    let metrics = rke2ops_tests::http::get(hub.metrics_addr(), "/metrics", None)?;
    rke2ops_tests::http::sample(&metrics, "rke2ops_hub_leader", "replica=").map(|v| v == 1.0)
}

async fn wait_leader(hub: &HubProcess, within: Duration) {
    let started = Instant::now();
    while tokio::task::block_in_place(|| leads(hub)) != Some(true) {
        assert!(
            started.elapsed() < within,
            "{} did not lead within {within:?}: {}",
            hub.addr,
            log_of(hub)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn log_of(hub: &HubProcess) -> String {
    std::fs::read_to_string(hub.state().with_extension("log")).unwrap_or_default()
}

fn copy_ca(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let pki = to.join("pki");
    std::fs::create_dir_all(&pki).expect("pki");
    std::fs::set_permissions(&pki, std::fs::Permissions::from_mode(0o700)).expect("mode");
    for file in ["ca.crt", "ca.key"] {
        std::fs::copy(from.join("pki").join(file), pki.join(file)).expect("copy the CA");
        std::fs::set_permissions(pki.join(file), std::fs::Permissions::from_mode(0o600))
            .expect("mode");
    }
}

fn json(hub: &HubProcess, args: &[&str]) -> Value {
    tokio::task::block_in_place(|| hub.json(args))
}

fn refused(hub: &HubProcess, args: &[&str]) -> String {
    let out = tokio::task::block_in_place(|| hub.run(args));
    assert!(!out.status.success(), "{args:?} must be refused");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn states(dir: &tempfile::TempDir) -> (PathBuf, PathBuf) {
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).expect("a");
    std::fs::create_dir_all(&b).expect("b");
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_dies_mid_operation_and_the_other_replica_finishes_the_plan() {
    let mut etcd = tokio::task::block_in_place(|| Etcd::start(63, 3));
    let dir = tempfile::tempdir().expect("tempdir");
    let (a_state, b_state) = states(&dir);
    let a = replica(&a_state, "127.0.63.10", &etcd, "hub-a");
    wait_leader(&a, Duration::from_secs(20)).await;
    copy_ca(&a_state, &b_state);
    let b = replica(&b_state, "127.0.63.11", &etcd, "hub-b");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        tokio::task::block_in_place(|| leads(&b)),
        Some(false),
        "one leader"
    );
    // A follower refuses writes, naming the leader.
    let no = refused(&b, &["token", "create"]);
    assert!(
        no.contains("hub-b is a follower") && no.contains("127.0.63.10:9811"),
        "{no}"
    );

    let fleet = FakeFleet::start(a.addr.parse().expect("addr"), &a.socket(), &spec()).await;
    fleet.set_hubs(&[a.addr.parse().expect("a"), b.addr.parse().expect("b")]);
    // The follower's copy follows: it lists the fleet (read-only calls work there).
    let started = Instant::now();
    while json(&b, &["nodes"])["nodes"].as_array().map_or(0, Vec::len) < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "follower never saw the fleet"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let plan = json(&a, &["rotate"]);
    let id = plan["id"].as_str().expect("id").to_owned();
    // Kill the leader while a server is in its operation.
    let started = Instant::now();
    loop {
        let view = json(&a, &["plan", "show", &id]);
        let operating = view["nodes"].as_array().is_some_and(|nodes| {
            nodes.iter().any(|n| {
                n["phase"] == "operate"
                    && n["name"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("server-2"))
            })
        });
        if operating {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "server-2 never operated: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let killed_at = Instant::now();
    a.kill();
    wait_leader(&b, Duration::from_secs(20)).await;
    let failover = killed_at.elapsed();
    eprintln!("failover: the follower led {failover:?} after the leader was killed");
    assert!(
        failover < Duration::from_secs(15),
        "failover took {failover:?}"
    );

    let started = Instant::now();
    let done = loop {
        let view = json(&b, &["plan", "show", &id]);
        if view["state"] == "completed" {
            break view;
        }
        assert!(view["state"] != "halted", "{view:#}\n{}", log_of(&b));
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{view:#}\n{}",
            log_of(&b)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let spans = fleet.spans();
    let servers: Vec<_> = spans
        .iter()
        .filter(|s| s.node.starts_with("server-"))
        .cloned()
        .collect();
    assert_eq!(
        max_overlap(&servers),
        1,
        "never two servers at once: {spans:?}"
    );
    let mut names: Vec<&str> = spans.iter().map(|s| s.node.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["agent-1", "server-1", "server-2", "server-3"],
        "every node operated once, server-2's operation not run twice: {done:#}"
    );

    // The old leader, restarted, follows and does not act.
    let a = replica(&a_state, "127.0.63.10", &etcd, "hub-a");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(tokio::task::block_in_place(|| leads(&a)), Some(false));
    let no = refused(&a, &["rotate"]);
    assert!(no.contains("hub-a is a follower"), "{no}");
    assert_eq!(fleet.spans().len(), 4, "nothing more ran");
    let seen = json(&a, &["plan", "show", &id]);
    assert_eq!(
        seen["state"], "completed",
        "the restarted replica's copy is current"
    );

    // etcd loses quorum: no write goes through, so no plan can start or advance.
    tokio::task::block_in_place(|| {
        etcd.kill_member(0);
        etcd.kill_member(1);
    });
    let lost = refused(&b, &["token", "create"]);
    assert!(!lost.is_empty());
    // Without quorum the leader's lease cannot be kept: both replicas stop (code 75, for
    // systemd's Restart=on-failure) rather than go on with a state they cannot write.
    let (mut a, mut b) = (a, b);
    let started = Instant::now();
    while a.exited().is_none() || b.exited().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "replicas kept running without quorum"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        b.exited().and_then(|s| s.code()),
        Some(75),
        "{}",
        log_of(&b)
    );
    drop((a, b));
    // Quorum back, replicas started again (as systemd would): one leads, and writes work.
    tokio::task::block_in_place(|| {
        etcd.start_member(0);
        etcd.start_member(1);
        etcd.wait_healthy(3);
    });
    let a = replica(&a_state, "127.0.63.10", &etcd, "hub-a");
    let b = replica(&b_state, "127.0.63.11", &etcd, "hub-b");
    let started = Instant::now();
    let leader = loop {
        if tokio::task::block_in_place(|| leads(&a)) == Some(true) {
            break &a;
        }
        if tokio::task::block_in_place(|| leads(&b)) == Some(true) {
            break &b;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no leader after quorum returned"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let token = json(leader, &["token", "create"]);
    assert!(
        token["token"].as_str().is_some_and(|t| !t.is_empty()),
        "{token:#}"
    );
    let plans = json(leader, &["plans"]);
    assert_eq!(plans.as_array().map(Vec::len), Some(1), "{plans:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_single_hub_migrates_into_etcd_and_its_agents_keep_their_identities() {
    let etcd = tokio::task::block_in_place(|| Etcd::start(64, 3));
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("hub");
    let hub = tokio::task::block_in_place(|| HubProcess::start(&state, "127.0.64.10"));
    let addr = hub.addr.parse().expect("addr");
    let fleet = FakeFleet::start(
        addr,
        &hub.socket(),
        &FleetSpec {
            op_time: Duration::from_millis(300),
            ..spec()
        },
    )
    .await;
    let before = json(&hub, &["nodes"]);
    tokio::task::block_in_place(|| hub.stop());
    let out = Command::new(rke2ops_tests::ground::built_binary("rke2-hub"))
        .args([
            "migrate",
            "--to",
            "etcd",
            "--etcd-endpoint",
            &etcd.endpoints(),
        ])
        .arg("--state-dir")
        .arg(&state)
        .env("RKE2OPS_HUB_CONFIG", "/dev/null")
        .output()
        .expect("migrate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("4 nodes") && said.contains("/rke2ops/hub"),
        "{said}"
    );
    // A second migration into the same prefix is refused: it would overwrite a live state.
    let again = Command::new(rke2ops_tests::ground::built_binary("rke2-hub"))
        .args([
            "migrate",
            "--to",
            "etcd",
            "--etcd-endpoint",
            &etcd.endpoints(),
        ])
        .arg("--state-dir")
        .arg(&state)
        .env("RKE2OPS_HUB_CONFIG", "/dev/null")
        .output()
        .expect("migrate");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a hub's state"));

    // The same machine now runs as a replica: the agents come back on their old identities.
    let hub = replica(&state, "127.0.64.10", &etcd, "hub-a");
    wait_leader(&hub, Duration::from_secs(20)).await;
    let started = Instant::now();
    loop {
        let nodes = json(&hub, &["nodes"]);
        let online = nodes["nodes"]
            .as_array()
            .map_or(0, |n| n.iter().filter(|n| n["online"] == true).count());
        if online == 4 {
            let serial = |v: &Value| -> Vec<String> {
                let mut s: Vec<String> = v["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|n| n["name"].to_string())
                    .collect();
                s.sort();
                s
            };
            // Online means each agent's old certificate was accepted: none re-enrolled.
            assert_eq!(serial(&nodes), serial(&before), "the same nodes");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{nodes:#}\n{}",
            log_of(&hub)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(fleet);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_reaches_etcd_over_mutual_tls_and_nothing_gets_in_without_a_client_certificate() {
    let etcd = tokio::task::block_in_place(|| Etcd::start_tls(69, 1));
    let tls = etcd.tls().expect("TLS files").clone();
    assert!(etcd.endpoints().starts_with("https://"));
    let dir = tempfile::tempdir().expect("tempdir");
    // Without a client certificate etcd refuses the hub: migrate names etcd and fails.
    let single = dir.path().join("single");
    let hub = tokio::task::block_in_place(|| HubProcess::start(&single, "127.0.69.10"));
    tokio::task::block_in_place(|| hub.stop());
    let migrate = |with_cert: bool| {
        let mut command = Command::new(rke2ops_tests::ground::built_binary("rke2-hub"));
        command
            .args([
                "migrate",
                "--to",
                "etcd",
                "--etcd-endpoint",
                &etcd.endpoints(),
            ])
            .arg("--etcd-ca")
            .arg(&tls.ca)
            .arg("--state-dir")
            .arg(&single)
            .env("RKE2OPS_HUB_CONFIG", "/dev/null");
        if with_cert {
            command
                .arg("--etcd-cert")
                .arg(&tls.cert)
                .arg("--etcd-key")
                .arg(&tls.key);
        }
        command.output().expect("migrate")
    };
    let refused = migrate(false);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    // etcd closes the connection of a client without a certificate; the error names etcd.
    // The client sees the close as "connection closed" or, when it was still writing (a
    // loaded machine), as a broken pipe.
    assert!(
        said.contains("etcd (https://127.0.69.1:2379)")
            && (said.contains("connection closed") || said.contains("broken pipe")),
        "{said}"
    );
    let moved = migrate(true);
    assert!(
        moved.status.success(),
        "{}",
        String::from_utf8_lossy(&moved.stderr)
    );
    // A replica with the client certificate loads that state and leads.
    let log = single.with_extension("log");
    let replica = tokio::task::block_in_place(|| {
        HubProcess::start_logged(
            &single,
            "127.0.69.10",
            &[
                "--store",
                "etcd",
                "--etcd-endpoint",
                &etcd.endpoints(),
                "--etcd-ca",
                tls.ca.to_str().expect("path"),
                "--etcd-cert",
                tls.cert.to_str().expect("path"),
                "--etcd-key",
                tls.key.to_str().expect("path"),
                "--leader-lease-secs",
                "3",
            ],
            &log,
        )
    });
    wait_leader(&replica, Duration::from_secs(20)).await;
    let token = json(&replica, &["token", "create"]);
    assert!(
        token["token"].as_str().is_some_and(|t| !t.is_empty()),
        "{token:#}"
    );
}
