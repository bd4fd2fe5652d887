//! A compromised hub cannot make an agent touch anything outside its own operation folders.
//!
//! A real agent on a simulated server node (shipped unit, real systemd) enrolls with a real
//! hub; the hub is then replaced by a test hub that holds the same CA (so the agent's pin
//! accepts it) and sends `RunOperation`s with hostile fields: operation ids that are paths
//! (`/var/lib/rancher/rke2`, `.`, `..`, `../x`), a 10 kB id, a non-canonical upgrade version,
//! an unknown rotate service. Every one must come back REJECTED naming the field, and RKE2's
//! data dir, the agent's journal and the installed binaries must be byte for byte as before.
//!
//! Needs root and `cargo build --workspace --bins` first.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rke2_hub::pki::HubCa;
use rke2ops_proto::v1 as pb;
use rke2ops_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use rke2ops_tests::ground::require_root_and_tools;
use rke2ops_tests::hub::HubProcess as Hub;
use rke2ops_tests::sim::cluster::SimCluster;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

type HubStream = Pin<Box<dyn Stream<Item = Result<pb::HubMessage, Status>> + Send>>;

/// The test hub: on every stream, after the agent's first message, sends its script of
/// requests once and records what the agent answers.
struct HostileHub {
    script: Mutex<Option<Vec<pb::RunOperation>>>,
    answers: mpsc::UnboundedSender<pb::AgentMessage>,
}

#[tonic::async_trait]
impl AgentService for HostileHub {
    async fn enroll(
        &self,
        _: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        Err(Status::unimplemented("test hub"))
    }

    async fn renew_certificate(
        &self,
        _: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        Err(Status::unimplemented("test hub"))
    }

    type ConnectStream = HubStream;

    async fn connect(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<HubStream>, Status> {
        let mut inbound = request.into_inner();
        let script = self
            .script
            .lock()
            .expect("script lock")
            .take()
            .unwrap_or_default();
        let answers = self.answers.clone();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            if let Some(Ok(first)) = inbound.next().await {
                let _ = answers.send(first);
            }
            for run in script {
                let message = pb::HubMessage {
                    body: Some(pb::hub_message::Body::Run(run)),
                };
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
            }
            while let Some(Ok(message)) = inbound.next().await {
                let _ = answers.send(message);
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn rotate(id: &str) -> pb::RunOperation {
    pb::RunOperation {
        operation_id: id.to_owned(),
        kind: Some(pb::run_operation::Kind::Rotate(pb::RotateOperation {
            services: vec![],
            etcd_snapshot: false,
        })),
    }
}

fn upgrade(id: &str, version: &str) -> pb::RunOperation {
    pb::RunOperation {
        operation_id: id.to_owned(),
        kind: Some(pb::run_operation::Kind::Upgrade(pb::UpgradeOperation {
            version: version.to_owned(),
            artifact_source: "/var/lib/rancher".to_owned(),
            allow_rollback: true,
        })),
    }
}

/// What an operation could touch on the node: the layout of RKE2's data dir (etcd's own
/// database, which the simulated cluster writes all the time, left out), every certificate
/// and key with its mode, size and hash, the agent's state (journal and identity), the
/// installed binaries and RKE2's config. Equal before and after means nothing was created,
/// removed or changed.
fn fingerprint(cluster: &SimCluster) -> BTreeSet<String> {
    let node = &cluster.servers[0].node;
    let out = node
        .sh(
            "find /var/lib/rancher/rke2 -maxdepth 2 -not -path '*/server/db*' -printf '%y %p\\n'; \
             for p in /var/lib/rancher/rke2/server/tls /var/lib/rke2-ops /usr/local/bin /etc/rancher; do \
               find \"$p\" -printf '%y %m %s %p\\n'; \
               find \"$p\" -type f -exec sha256sum {} +; \
             done",
        )
        .expect("fingerprint the node");
    out.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_hostile_hub_cannot_name_paths_versions_or_services() {
    rke2ops_tests::ground::block_on(async {
        require_root_and_tools();
        let cluster = tokio::task::block_in_place(|| SimCluster::boot(1, 0).expect("1 server"));
        let server = &cluster.servers[0].node;
        let state = tempfile::tempdir().expect("state");
        let hub_addr = rke2ops_tests::ground::ground()
            .expect("ground network")
            .lease_host()
            .expect("hub address");
        let hub_ip = hub_addr.ip().to_string();

        // Enroll with the real hub, then stop it: the agent keeps its identity and pin.
        tokio::task::block_in_place(|| {
            let hub = Hub::start_on_bridge(state.path(), &hub_ip, &[]);
            rke2ops_tests::hub::enroll_agent(server, &hub, "heartbeat_secs = 2\n").expect("enroll");
            let started = Instant::now();
            while hub.json(&["nodes"])["nodes"][0]["online"] != true {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "agent never online"
                );
                std::thread::sleep(Duration::from_millis(250));
            }
            hub.stop();
        });
        let before = tokio::task::block_in_place(|| fingerprint(&cluster));

        // The test hub: the real hub's CA and server certificate, so the agent's pin accepts it.
        let now = OffsetDateTime::now_utc();
        let ca = HubCa::load_or_create(state.path(), now).expect("the hub's CA");
        let identity = ca
            .load_or_issue_server(state.path(), std::slice::from_ref(&hub_ip), now)
            .expect("server certificate");
        let tls = Arc::new(
            rke2_hub::listener::server_config(
                &identity.cert_chain_pem,
                &identity.key_pem,
                ca.cert_pem(),
            )
            .expect("TLS"),
        );
        let long_id = "x".repeat(10_000);
        let hostile = vec![
            rotate("/var/lib/rancher/rke2"),
            rotate("."),
            rotate(".."),
            rotate("../x"),
            rotate(&long_id),
            upgrade("upgrade-1", "v1.034.1+rke2r1"),
            upgrade("upgrade-2", "v1.34.1+rke2r1/../../../../tmp"),
            pb::RunOperation {
                operation_id: "rotate-1".into(),
                kind: Some(pb::run_operation::Kind::Rotate(pb::RotateOperation {
                    services: vec!["--data-dir=/tmp/elsewhere".into()],
                    etcd_snapshot: false,
                })),
            },
        ];
        let expected: Vec<(String, &str)> = vec![
            ("/var/lib/rancher/rke2".into(), "operation_id"),
            (".".into(), "operation_id"),
            ("..".into(), "operation_id"),
            ("../x".into(), "operation_id"),
            (
                format!("{}…(9872 bytes cut)", "x".repeat(128)),
                "operation_id",
            ),
            ("upgrade-1".into(), "upgrade.version"),
            ("upgrade-2".into(), "upgrade.version"),
            ("rotate-1".into(), "rotate.services"),
        ];
        let (answers_tx, mut answers) = mpsc::unbounded_channel();
        let service = HostileHub {
            script: Mutex::new(Some(hostile)),
            answers: answers_tx,
        };
        let tcp = tokio::net::TcpListener::bind(format!("{hub_ip}:9811"))
            .await
            .expect("bind the test hub");
        let server_task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AgentServiceServer::new(service))
                .serve_with_incoming(rke2_hub::listener::incoming(
                    tcp,
                    tls,
                    rke2_hub::listener::Limits::default(),
                )),
        );

        // Collect the results (the agent reconnects within its backoff).
        let mut results: Vec<pb::OperationResult> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        while results.len() < expected.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Some(message)) = tokio::time::timeout(left, answers.recv()).await else {
                panic!(
                    "only {} of {} results within 90 s: {results:#?}",
                    results.len(),
                    expected.len()
                );
            };
            match message.body {
                Some(pb::agent_message::Body::Result(r)) => results.push(r),
                Some(pb::agent_message::Body::Progress(p)) => {
                    panic!("the agent started a hostile operation: {p:?}")
                }
                _ => {}
            }
        }
        // Not a graceful stop: that would wait for the agent's stream, which never ends.
        server_task.abort();

        for ((id, field), result) in expected.iter().zip(&results) {
            assert_eq!(&result.operation_id, id, "results in request order");
            assert_eq!(
                result.outcome,
                i32::from(pb::OperationOutcome::Rejected),
                "{id:.40}: {result:?}"
            );
            assert!(
                result.detail.contains(field),
                "{id:.40}: the refusal names {field}: {}",
                result.detail
            );
            assert!(
                result.detail.len() < 512,
                "short refusal: {}",
                result.detail
            );
        }
        let after = tokio::task::block_in_place(|| fingerprint(&cluster));
        let changed: Vec<_> = before.symmetric_difference(&after).collect();
        assert!(
            changed.is_empty(),
            "data dir, journal or binaries changed: {changed:#?}"
        );
        assert_eq!(
            server
                .systemctl(&["is-active", "rke2-server.service"])
                .expect("systemctl")
                .trim(),
            "active",
            "RKE2 kept running"
        );
    });
}
