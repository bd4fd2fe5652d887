//! The agent renews its hub client certificate over mutual TLS long before it expires: a real
//! `rke2-node-agent run` whose enrolled identity has 10 of its 90 days left reconnects,
//! calls `RenewCertificate`, stores a fresh 90-day certificate for the same node name with a
//! new key, and keeps reporting with it. No root needed: the agent runs on the host
//! without systemd (its D-Bus features are simply absent).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rke2_hub::pki::HubCa;
use rke2ops_common::identity::{self, NodeKey};
use rke2ops_tests::ground::built_binary;
use rke2ops_tests::hub::HubProcess;
use time::OffsetDateTime;

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_agent_renews_its_client_certificate_over_the_stream() {
    let hub_state = tempfile::tempdir().expect("hub state");
    let hub = HubProcess::start(hub_state.path(), "127.0.41.1");
    let node = "renew-node";

    // An identity as enrollment would have left it, but issued 80 days ago: 10 days left.
    let now = OffsetDateTime::now_utc();
    let ca = HubCa::load_or_create(hub_state.path(), now).expect("hub CA");
    let key = NodeKey::generate().expect("key");
    let old = ca
        .sign_node_csr(
            &key.csr_pem(node).expect("csr"),
            node,
            now - time::Duration::days(80),
        )
        .expect("sign");
    // The hub accepts only certificates it recorded (as an enrollment would have).
    rke2_hub::store::Store::open(&hub_state.path().join("hub.db"))
        .expect("hub store")
        .import_node_certificate(node, &old.serial, old.not_after, "test", now)
        .expect("record the certificate");
    let agent_state = tempfile::tempdir().expect("agent state");
    let identity_dir = agent_state.path().join("identity");
    let saved = identity::save_identity(&identity_dir, &key.to_pem(), &old.cert_pem, ca.cert_pem())
        .expect("save identity");
    assert!(identity::renewal_due(
        saved.not_before,
        saved.not_after,
        now
    ));

    let data_dir = agent_state.path().join("rke2");
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let config = agent_state.path().join("node-agent.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\nstate_dir = \"{}\"\nmetrics_addr = \"127.0.41.2:9810\"\nhub_address = \"{}\"\nnode_name = \"{node}\"\nheartbeat_secs = 1\n",
            data_dir.display(),
            agent_state.path().display(),
            hub.addr,
        ),
    )
    .expect("config");
    let _agent = Agent(
        Command::new(built_binary("rke2-node-agent"))
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .spawn()
            .expect("agent starts"),
    );

    let started = Instant::now();
    let renewed = loop {
        if let Ok(Some(id)) = identity::load_identity(&identity_dir)
            && id.cert_pem != old.cert_pem
        {
            break id;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the agent did not renew its certificate"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let lifetime = renewed.not_after - renewed.not_before;
    assert!(
        lifetime >= time::Duration::days(89),
        "a fresh full-length certificate: {lifetime}"
    );
    assert!(renewed.not_after - OffsetDateTime::now_utc() > time::Duration::days(85));
    assert_ne!(
        renewed.key_pem,
        key.to_pem(),
        "a new key with the new certificate"
    );
    // The agent keeps reporting with it.
    let started = Instant::now();
    loop {
        let nodes = hub.json(&["nodes"]);
        let online = nodes["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["name"] == node && n["online"] == true));
        if online {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{nodes:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // SIGTERM with an agent connected: the hub ends the stream and exits 0.
    let stopping = Instant::now();
    hub.stop();
    eprintln!(
        "hub stopped in {:?} with an agent connected",
        stopping.elapsed()
    );
}
