//! A node's role against a real (simulated) Kubernetes API: the hub reads the Nodes' role
//! labels and corrects the role a node's first hello claimed. The rest of the hub's identity
//! (tokens bound to a node, superseded and revoked certificates, the serve lock) is tested
//! without root in `hub_security.rs`.
//!
//! Needs root, systemd, etcd and curl (`scripts/install-test-deps.sh`) and
//! `cargo build --workspace --bins` first.

use std::path::Path;
use std::time::Duration;

use rke2_node_agent::link::tls;
use rke2ops_common::identity::NodeKey;
use rke2ops_proto::v1 as pb;
use rke2ops_proto::v1::agent_service_client::AgentServiceClient;
use rke2ops_tests::ground::require_root_and_tools;
use rke2ops_tests::hub::HubProcess as Hub;
use rke2ops_tests::plans::{kubeconfig, wait_until};
use rke2ops_tests::sim::cluster::SimCluster;
use tokio_stream::wrappers::ReceiverStream;

fn start_hub(state: &Path, ip: &str, cluster: &SimCluster) -> Hub {
    let kubeconfig = kubeconfig(cluster, state);
    let endpoint = format!("https://{}:6443", cluster.servers[0].node.ip());
    let kubeconfig = kubeconfig.display().to_string();
    Hub::start_in_ground_on(
        state,
        ip,
        &[
            "--kubeconfig",
            &kubeconfig,
            "--apiserver-endpoint",
            &endpoint,
        ],
    )
}

/// `name`'s role in `rke2-hub nodes`, if listed.
fn role_of(hub: &Hub, name: &str) -> Option<String> {
    hub.json(&["nodes"])["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == name)
        .and_then(|n| n["role"].as_str().map(str::to_owned))
}

#[test]
fn kubernetes_node_labels_correct_the_role_a_hello_claimed() {
    rke2ops_tests::ground::block_on(async {
        require_root_and_tools();
        let cluster = tokio::task::block_in_place(|| SimCluster::boot(1, 1).expect("1+1 cluster"));
        let state = tempfile::tempdir().expect("state");
        let hub_addr = rke2ops_tests::ground::ground()
            .expect("ground network")
            .lease_station()
            .expect("hub address");
        let ip = &hub_addr.ip().to_string();
        let hub = tokio::task::block_in_place(|| start_hub(state.path(), ip, &cluster));

        // agent-1 is a worker in Kubernetes, but enrolls and says hello as a server.
        let token = tokio::task::block_in_place(|| hub.json(&["token", "create", "--ttl", "10m"]));
        let pin = token["ca_pin"].as_str().expect("pin");
        let key = NodeKey::generate().expect("key");
        let enrolled = AgentServiceClient::new(
            tls::channel(ip, 9811, tls::enrollment_config(pin).expect("TLS")).expect("channel"),
        )
        .enroll(pb::EnrollRequest {
            token: token["token"].as_str().expect("token").to_owned(),
            node_name: "agent-1".to_owned(),
            csr_pem: key.csr_pem("agent-1").expect("csr"),
            cluster: String::new(),
        })
        .await
        .expect("enroll agent-1")
        .into_inner();
        let mutual = tls::mutual_config(&enrolled.ca_pem, &enrolled.certificate_pem, &key.to_pem())
            .expect("mutual TLS");
        let (open, rx) = tokio::sync::mpsc::channel(4);
        open.send(pb::AgentMessage {
            body: Some(pb::agent_message::Body::Hello(pb::Hello {
                node_name: "agent-1".to_owned(),
                role: pb::NodeRole::Server.into(),
                rke2_version: "v1.34.1+rke2r1".to_owned(),
                agent_version: "identity-test".to_owned(),
                cluster: String::new(),
            })),
        })
        .await
        .expect("hello");
        let _inbound = AgentServiceClient::new(tls::channel(ip, 9811, mutual).expect("channel"))
            .connect(ReceiverStream::new(rx))
            .await
            .expect("connect")
            .into_inner();
        tokio::task::block_in_place(|| {
            wait_until("agent-1 is listed", Duration::from_secs(10), || {
                role_of(&hub, "agent-1").is_some()
            });
        });

        // Until the hub next reads Kubernetes, the first hello's claim stands.
        assert_eq!(
            tokio::task::block_in_place(|| role_of(&hub, "agent-1")).as_deref(),
            Some("server")
        );
        // The hub reads the labels at start and every minute: a restart reads them now.
        hub.kill();
        let hub = tokio::task::block_in_place(|| start_hub(state.path(), ip, &cluster));
        tokio::task::block_in_place(|| {
            wait_until(
                "the Kubernetes labels make agent-1 an agent",
                Duration::from_secs(30),
                || role_of(&hub, "agent-1").as_deref() == Some("agent"),
            );
        });
        drop(open);
        hub.stop();
    });
}
