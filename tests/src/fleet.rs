//! A fake fleet: lightweight in-process agents that speak the real agent protocol to a real
//! hub (enrollment with a join token and the CA pin, mutual TLS, `Connect`), report etcd and
//! readiness, and "run" the hub's operations by waiting a fixed inherent time. Plans can then
//! be exercised over many nodes in seconds, without systemd or RKE2: the plan engine's
//! ordering, gates, pause/resume/skip/abort, hub restarts, and its own overhead (benchmark).
//!
//! What it fakes: everything on the node. While a server "operates", every server's etcd
//! report shows its member unhealthy and its own readiness is false, as a restarting RKE2
//! server would look. Operations are idempotent by id like the real agent's. Image staging
//! and pruning (`stage-images`, `prune-images`) leave the node up and its version as it is,
//! and succeed or fail by their own behaviour ([`FakeFleet::set_images_behaviour`]).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rke2_node_agent::link::tls;
use rke2ops_common::identity::NodeKey;
use rke2ops_proto::v1 as pb;
use rke2ops_proto::v1::admin_service_client::AdminServiceClient;
use rke2ops_proto::v1::agent_service_client::AgentServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// What a fake agent does with an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Wait the inherent time, then succeed.
    Succeed,
    /// Wait the inherent time, then fail with this reason.
    Fail(String),
    /// Succeed, but never report ready again.
    NeverReady,
}

/// One operation as the fake agent ran it.
#[derive(Debug, Clone)]
pub struct OpSpan {
    /// Node.
    pub node: String,
    /// Operation id.
    pub id: String,
    /// `rotate`, `restart`, `upgrade`, `stage-images` or `prune-images`.
    pub kind: String,
    /// When it began.
    pub start: Instant,
    /// When it ended (`None` while running).
    pub end: Option<Instant>,
}

/// Shared fleet state.
#[derive(Debug, Default)]
struct State {
    /// Every hub replica the agents may dial, in order (empty: only the one they enrolled
    /// with); an agent whose stream fails tries the next.
    hubs: Vec<SocketAddr>,
    spans: Vec<OpSpan>,
    down: HashSet<String>,
    never_ready: HashSet<String>,
    behaviours: HashMap<String, Behaviour>,
    /// What each node does with its image stagings and prunes, and how long they take.
    images_behaviours: HashMap<String, (Behaviour, Duration)>,
    versions: HashMap<String, String>,
    done: HashMap<String, pb::OperationResult>,
    /// What each node's doctor finds (sent whole with every status; none: nothing).
    findings: HashMap<String, Vec<pb::DoctorFinding>>,
    /// How far each node's clock is ahead of the real one (negative: behind).
    clock_offsets: HashMap<String, Duration>,
    clock_behind: HashSet<String>,
}

/// The fleet's specification.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// Servers (`server-1`...).
    pub servers: usize,
    /// Workers (`agent-1`...).
    pub agents: usize,
    /// RKE2 version every node starts with.
    pub version: String,
    /// How long each operation takes.
    pub op_time: Duration,
    /// Heartbeat (summary status) interval.
    pub heartbeat: Duration,
    /// The renewal deadline every node reports, this far from now (`None`: none reported).
    pub renewal_deadline_in: Option<Duration>,
}

/// A running fake fleet.
#[derive(Debug)]
pub struct FakeFleet {
    state: Arc<Mutex<State>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Node names, servers first.
    pub names: Vec<String>,
}

/// The hub's admin client over its Unix socket, once it answers.
///
/// # Panics
/// When the hub does not answer within 20 s.
pub async fn admin_client(socket: &Path) -> AdminServiceClient<Channel> {
    let started = Instant::now();
    loop {
        let path: PathBuf = socket.to_path_buf();
        let channel = tonic::transport::Endpoint::from_static("http://hub.invalid")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await;
        if let Ok(channel) = channel {
            let mut client = AdminServiceClient::new(channel);
            if client
                .list_nodes(pb::ListNodesRequest::default())
                .await
                .is_ok()
            {
                return client;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the hub did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl FakeFleet {
    /// Enrolls and connects every node to the hub at `grpc` (admin socket `socket`), and
    /// waits until the hub lists them all online.
    ///
    /// # Panics
    /// When enrollment fails or the nodes do not show up within 30 s.
    pub async fn start(grpc: SocketAddr, socket: &Path, spec: &FleetSpec) -> FakeFleet {
        Self::start_in(grpc, socket, spec, "").await
    }

    /// [`Self::start`] for the nodes of `cluster` (empty: agents that name none, the default
    /// cluster): named `<cluster>-server-1`..., enrolled and saying hello with `cluster`.
    ///
    /// # Panics
    /// As [`Self::start`].
    pub async fn start_in(
        grpc: SocketAddr,
        socket: &Path,
        spec: &FleetSpec,
        cluster: &str,
    ) -> FakeFleet {
        let mut admin = admin_client(socket).await;
        let prefix = if cluster.is_empty() {
            String::new()
        } else {
            format!("{cluster}-")
        };
        let names: Vec<String> = (1..=spec.servers)
            .map(|i| format!("{prefix}server-{i}"))
            .chain((1..=spec.agents).map(|i| format!("{prefix}agent-{i}")))
            .collect();
        let state = Arc::new(Mutex::new(State::default()));
        let mut tasks = Vec::new();
        for name in &names {
            let token = admin
                .create_token(pb::CreateTokenRequest { ttl_seconds: 600 })
                .await
                .expect("CreateToken")
                .into_inner();
            let config = tls::enrollment_config(&token.ca_pin).expect("enrollment TLS");
            let mut enroller = AgentServiceClient::new(
                tls::channel(&grpc.ip().to_string(), grpc.port(), config).expect("channel"),
            );
            let key = NodeKey::generate().expect("key");
            let enrolled = enroller
                .enroll(pb::EnrollRequest {
                    token: token.token,
                    node_name: name.clone(),
                    csr_pem: key.csr_pem(name).expect("csr"),
                    cluster: cluster.to_owned(),
                })
                .await
                .expect("Enroll")
                .into_inner();
            if let Ok(mut s) = state.lock() {
                s.versions.insert(name.clone(), spec.version.clone());
            }
            let agent = Agent {
                name: name.clone(),
                server: name.starts_with(&format!("{prefix}server-")),
                servers: names
                    .iter()
                    .filter(|n| n.starts_with(&format!("{prefix}server-")))
                    .cloned()
                    .collect(),
                cluster: cluster.to_owned(),
                grpc,
                ca_pem: enrolled.ca_pem,
                cert_pem: enrolled.certificate_pem,
                key_pem: key.to_pem(),
                spec: spec.clone(),
                state: Arc::clone(&state),
            };
            tasks.push(tokio::spawn(agent.run()));
        }
        let started = Instant::now();
        loop {
            let nodes = admin
                .list_nodes(pb::ListNodesRequest::default())
                .await
                .expect("ListNodes")
                .into_inner()
                .nodes;
            if nodes
                .iter()
                .filter(|n| n.online && names.contains(&n.name))
                .count()
                >= names.len()
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the fake fleet did not come online"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        FakeFleet {
            state,
            tasks,
            names,
        }
    }

    /// The hub replicas every agent may dial, in order: an agent whose stream fails (a
    /// replica gone, a follower's refusal) moves to the next, as real agents with
    /// `hub_addresses` do.
    pub fn set_hubs(&self, hubs: &[SocketAddr]) {
        if let Ok(mut s) = self.state.lock() {
            s.hubs = hubs.to_vec();
        }
    }

    /// Sets what `node` does with its next operations.
    pub fn set_behaviour(&self, node: &str, behaviour: Behaviour) {
        if let Ok(mut s) = self.state.lock() {
            s.behaviours.insert(node.to_owned(), behaviour);
        }
    }

    /// What `node` does with its next image stagings and prunes, each taking `time`.
    pub fn set_images_behaviour(&self, node: &str, behaviour: Behaviour, time: Duration) {
        if let Ok(mut s) = self.state.lock() {
            s.images_behaviours
                .insert(node.to_owned(), (behaviour, time));
        }
    }

    /// What `node`'s doctor finds from now on (its next status carries them).
    pub fn set_findings(&self, node: &str, findings: &[rke2ops_common::doctor::Finding]) {
        if let Ok(mut s) = self.state.lock() {
            s.findings.insert(
                node.to_owned(),
                findings.iter().map(pb::DoctorFinding::from).collect(),
            );
        }
    }

    /// Sets `node`'s clock `offset` ahead of (`behind`: behind) the real one.
    pub fn set_clock(&self, node: &str, offset: Duration, behind: bool) {
        if let Ok(mut s) = self.state.lock() {
            s.clock_offsets.insert(node.to_owned(), offset);
            if behind {
                s.clock_behind.insert(node.to_owned());
            } else {
                s.clock_behind.remove(node);
            }
        }
    }

    /// Every operation run so far.
    #[must_use]
    pub fn spans(&self) -> Vec<OpSpan> {
        self.state
            .lock()
            .map(|s| s.spans.clone())
            .unwrap_or_default()
    }

    /// The version `node` runs.
    #[must_use]
    pub fn version(&self, node: &str) -> String {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.versions.get(node).cloned())
            .unwrap_or_default()
    }
}

impl Drop for FakeFleet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The largest number of operations that overlapped in time.
#[must_use]
pub fn max_overlap(spans: &[OpSpan]) -> usize {
    let mut points: Vec<(Instant, i32)> = Vec::new();
    for s in spans {
        points.push((s.start, 1));
        points.push((s.end.unwrap_or_else(Instant::now), -1));
    }
    // Ends before starts at the same instant.
    points.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in points {
        now += d;
        max = max.max(now);
    }
    usize::try_from(max).unwrap_or(0)
}

#[derive(Debug, Clone)]
struct Agent {
    name: String,
    server: bool,
    servers: Vec<String>,
    grpc: SocketAddr,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
    spec: FleetSpec,
    state: Arc<Mutex<State>>,
    /// The cluster it names (empty: none).
    cluster: String,
}

fn now_ts() -> prost_types::Timestamp {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(t.as_secs()).unwrap_or(0),
        nanos: i32::try_from(t.subsec_nanos()).unwrap_or(0),
    }
}

impl Agent {
    fn status(&self) -> pb::AgentMessage {
        let (down, never, version, findings, clock) = self
            .state
            .lock()
            .map(|s| {
                let offset = s.clock_offsets.get(&self.name).copied().unwrap_or_default();
                let now = std::time::SystemTime::now();
                let clock = if s.clock_behind.contains(&self.name) {
                    now - offset
                } else {
                    now + offset
                };
                (
                    s.down.clone(),
                    s.never_ready.contains(&self.name),
                    s.versions.get(&self.name).cloned().unwrap_or_default(),
                    s.findings.get(&self.name).cloned(),
                    clock,
                )
            })
            .unwrap_or_else(|_| {
                (
                    HashSet::new(),
                    false,
                    String::new(),
                    None,
                    std::time::SystemTime::now(),
                )
            });
        let sent = clock
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let me_down = down.contains(&self.name) || never;
        let etcd = self.server.then(|| pb::EtcdHealth {
            members: self
                .servers
                .iter()
                .map(|s| pb::EtcdMember {
                    name: s.clone(),
                    healthy: !down.contains(s),
                })
                .collect(),
            alarms: vec![],
            checked_at: Some(now_ts()),
            error: String::new(),
        });
        pb::AgentMessage {
            body: Some(pb::agent_message::Body::Status(pb::Status {
                full: false,
                service_state: if me_down { "activating" } else { "active" }.to_owned(),
                worst_status: pb::CertStatus::Ok.into(),
                rke2_version: version,
                renewal_deadline: self.spec.renewal_deadline_in.map(|d| {
                    let at = std::time::SystemTime::now() + d;
                    let t = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                    prost_types::Timestamp {
                        seconds: i64::try_from(t.as_secs()).unwrap_or(0),
                        nanos: 0,
                    }
                }),
                etcd,
                readiness: Some(pb::Readiness {
                    apiserver_ready: self.server && !me_down,
                    kubelet_healthy: !me_down,
                    detail: if me_down {
                        "restarting".to_owned()
                    } else {
                        String::new()
                    },
                    checked_at: Some(now_ts()),
                }),
                sent_at: Some(prost_types::Timestamp {
                    seconds: i64::try_from(sent.as_secs()).unwrap_or(0),
                    nanos: i32::try_from(sent.subsec_nanos()).unwrap_or(0),
                }),
                doctor: findings.map(|findings| pb::DoctorFindings { findings }),
                ..pb::Status::default()
            })),
        }
    }

    async fn run(self) {
        let mut next = 0usize;
        loop {
            let hubs = self
                .state
                .lock()
                .map(|s| s.hubs.clone())
                .unwrap_or_default();
            let hub = if hubs.is_empty() {
                self.grpc
            } else {
                hubs[next % hubs.len()]
            };
            if self.session(hub).await.is_err() {
                next = next.wrapping_add(1);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn session(&self, hub: SocketAddr) -> Result<(), String> {
        let config = tls::mutual_config(&self.ca_pem, &self.cert_pem, &self.key_pem)
            .map_err(|e| e.to_string())?;
        let mut client = AgentServiceClient::new(
            tls::channel(&hub.ip().to_string(), hub.port(), config).map_err(|e| e.to_string())?,
        );
        let (tx, rx) = mpsc::channel(64);
        let version = self
            .state
            .lock()
            .ok()
            .and_then(|s| s.versions.get(&self.name).cloned())
            .unwrap_or_default();
        let role = if self.server {
            pb::NodeRole::Server
        } else {
            pb::NodeRole::Agent
        };
        tx.send(pb::AgentMessage {
            body: Some(pb::agent_message::Body::Hello(pb::Hello {
                node_name: self.name.clone(),
                role: role.into(),
                rke2_version: version,
                agent_version: "fake-fleet".to_owned(),
                cluster: self.cluster.clone(),
            })),
        })
        .await
        .map_err(|e| e.to_string())?;
        let mut first = self.status();
        if let Some(pb::agent_message::Body::Status(s)) = &mut first.body {
            s.full = true;
        }
        tx.send(first).await.map_err(|e| e.to_string())?;
        let mut inbound = client
            .connect(ReceiverStream::new(rx))
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        let mut beat = tokio::time::interval(self.spec.heartbeat);
        loop {
            tokio::select! {
                _ = beat.tick() => {
                    tx.send(self.status()).await.map_err(|e| e.to_string())?;
                }
                message = inbound.message() => {
                    match message.map_err(|e| e.to_string())? {
                        None => return Ok(()),
                        Some(pb::HubMessage { body: Some(pb::hub_message::Body::Run(run)) }) => {
                            self.run_op(run, tx.clone());
                        }
                        // As the real agent: probe again and answer at once.
                        Some(pb::HubMessage {
                            body: Some(pb::hub_message::Body::RequestStatus(_)),
                        }) => {
                            tx.send(self.status()).await.map_err(|e| e.to_string())?;
                        }
                        Some(_) => {}
                    }
                }
            }
        }
    }

    fn run_op(&self, run: pb::RunOperation, tx: mpsc::Sender<pb::AgentMessage>) {
        let id = run.operation_id.clone();
        let (done, running, behaviour) = {
            let Ok(s) = self.state.lock() else { return };
            (
                s.done.get(&id).cloned(),
                s.spans.iter().any(|sp| sp.id == id && sp.end.is_none()),
                s.behaviours
                    .get(&self.name)
                    .cloned()
                    .unwrap_or(Behaviour::Succeed),
            )
        };
        if let Some(result) = done {
            // Idempotent: a known id is reported again, never re-run.
            tokio::spawn(async move {
                let _ = tx
                    .send(pb::AgentMessage {
                        body: Some(pb::agent_message::Body::Result(result)),
                    })
                    .await;
            });
            return;
        }
        if running {
            return;
        }
        let (kind, target) = match &run.kind {
            Some(pb::run_operation::Kind::Rotate(_)) => ("rotate", None),
            Some(pb::run_operation::Kind::Restart(_)) => ("restart", None),
            Some(pb::run_operation::Kind::Upgrade(u)) => ("upgrade", Some(u.version.clone())),
            Some(pb::run_operation::Kind::StageImages(_)) => ("stage-images", None),
            Some(pb::run_operation::Kind::PruneImages(_)) => ("prune-images", None),
            None => ("none", None),
        };
        if kind.ends_with("-images") {
            self.run_images_op(id, kind, tx);
            return;
        }
        if let Ok(mut s) = self.state.lock() {
            s.spans.push(OpSpan {
                node: self.name.clone(),
                id: id.clone(),
                kind: kind.to_owned(),
                start: Instant::now(),
                end: None,
            });
            s.down.insert(self.name.clone());
        }
        let agent = self.clone();
        tokio::spawn(async move {
            let progress = |step: &str, phase: pb::StepPhase| pb::AgentMessage {
                body: Some(pb::agent_message::Body::Progress(pb::OperationProgress {
                    operation_id: id.clone(),
                    step: step.to_owned(),
                    phase: phase.into(),
                    detail: String::new(),
                    elapsed_ms: 0,
                })),
            };
            let _ = tx
                .send(progress("restart-unit", pb::StepPhase::Started))
                .await;
            tokio::time::sleep(agent.spec.op_time).await;
            let _ = tx
                .send(progress("restart-unit", pb::StepPhase::Succeeded))
                .await;
            let outcome = match &behaviour {
                Behaviour::Fail(_) => pb::OperationOutcome::Failed,
                _ => pb::OperationOutcome::Succeeded,
            };
            let version = {
                let Ok(mut s) = agent.state.lock() else {
                    return;
                };
                s.down.remove(&agent.name);
                if behaviour == Behaviour::NeverReady {
                    s.never_ready.insert(agent.name.clone());
                }
                if let (Some(v), pb::OperationOutcome::Succeeded) = (&target, outcome) {
                    s.versions.insert(agent.name.clone(), v.clone());
                }
                s.versions.get(&agent.name).cloned().unwrap_or_default()
            };
            let result = pb::OperationResult {
                operation_id: id.clone(),
                outcome: outcome.into(),
                detail: match &behaviour {
                    Behaviour::Fail(reason) => reason.clone(),
                    _ => format!("{kind} done"),
                },
                unit_journal: vec![],
                rke2_version: version,
                finished_at: Some(now_ts()),
            };
            let _ = tx.send(agent.status()).await;
            if let Ok(mut s) = agent.state.lock() {
                s.done.insert(id.clone(), result.clone());
                if let Some(span) = s.spans.iter_mut().find(|sp| sp.id == id) {
                    span.end = Some(Instant::now());
                }
            }
            let _ = tx
                .send(pb::AgentMessage {
                    body: Some(pb::agent_message::Body::Result(result)),
                })
                .await;
        });
    }

    /// A staging or prune: the node stays up; progress per step, then the result.
    fn run_images_op(&self, id: String, kind: &'static str, tx: mpsc::Sender<pb::AgentMessage>) {
        let (behaviour, time) = self
            .state
            .lock()
            .ok()
            .and_then(|s| s.images_behaviours.get(&self.name).cloned())
            .unwrap_or((Behaviour::Succeed, self.spec.op_time));
        if let Ok(mut s) = self.state.lock() {
            s.spans.push(OpSpan {
                node: self.name.clone(),
                id: id.clone(),
                kind: kind.to_owned(),
                start: Instant::now(),
                end: None,
            });
        }
        let agent = self.clone();
        tokio::spawn(async move {
            let steps: &[&str] = if kind == "stage-images" {
                &["fetch-images", "verify-images", "place-images"]
            } else {
                &["prune-images"]
            };
            let failing = match &behaviour {
                Behaviour::Fail(reason) => Some(reason.clone()),
                _ => None,
            };
            let mut failure = None;
            for (i, step) in steps.iter().enumerate() {
                let message = |phase: pb::StepPhase, detail: String| pb::AgentMessage {
                    body: Some(pb::agent_message::Body::Progress(pb::OperationProgress {
                        operation_id: id.clone(),
                        step: (*step).to_owned(),
                        phase: phase.into(),
                        detail,
                        elapsed_ms: 0,
                    })),
                };
                let _ = tx
                    .send(message(pb::StepPhase::Started, String::new()))
                    .await;
                let share = u32::try_from(steps.len()).unwrap_or(1);
                tokio::time::sleep(time / share).await;
                // A failing staging fails at its verify step (a bad checksum): nothing placed.
                if let Some(reason) = failing.as_ref().filter(|_| i + 1 >= steps.len().min(2)) {
                    let _ = tx
                        .send(message(pb::StepPhase::Failed, reason.clone()))
                        .await;
                    failure = Some(format!("{step}: {reason}"));
                    break;
                }
                let _ = tx
                    .send(message(pb::StepPhase::Succeeded, format!("{step} done")))
                    .await;
            }
            let version = agent
                .state
                .lock()
                .ok()
                .and_then(|s| s.versions.get(&agent.name).cloned())
                .unwrap_or_default();
            let result = pb::OperationResult {
                operation_id: id.clone(),
                outcome: if failure.is_some() {
                    pb::OperationOutcome::Failed
                } else {
                    pb::OperationOutcome::Succeeded
                }
                .into(),
                detail: failure.unwrap_or_else(|| format!("{kind} succeeded")),
                unit_journal: vec![],
                rke2_version: version,
                finished_at: Some(now_ts()),
            };
            if let Ok(mut s) = agent.state.lock() {
                s.done.insert(id.clone(), result.clone());
                if let Some(span) = s.spans.iter_mut().find(|sp| sp.id == id) {
                    span.end = Some(Instant::now());
                }
            }
            let _ = tx
                .send(pb::AgentMessage {
                    body: Some(pb::agent_message::Body::Result(result)),
                })
                .await;
        });
    }
}
