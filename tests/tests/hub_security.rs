//! The hub's security, end to end: a real `rke2-hub serve` child per test (each on its own
//! loopback address, so the tests run in parallel), attacked through its TLS listener with the
//! agent's own TLS helpers, or with hand-made rustls configurations for the hostile cases.
//!
//! Every refusal is checked three ways:
//! - the gRPC status: its code, and a message that names the problem;
//! - the store: nothing written (`rke2-hub nodes` / `certs` while the hub runs, and the SQLite
//!   file opened read-only after it stopped);
//! - the hub's log (its stderr): no join-token secret (nor its hash), no private key.
//!
//! The last part is the hub's identity: who may enroll under a name, which certificate of a
//! name is still accepted (renewal and `--replace` supersede, `nodes remove` and
//! `admin-cert revoke` revoke), where a node's role comes from, and one `serve` per state dir.
//!
//! No root needed. Run `cargo build --workspace --bins` first: the tests start the built
//! `rke2-hub`.

use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rke2_node_agent::link::{convert, tls};
use rke2ops_common::identity::NodeKey;
use rke2ops_proto::v1 as pb;
use rke2ops_proto::v1::admin_service_client::AdminServiceClient;
use rke2ops_proto::v1::agent_service_client::AgentServiceClient;
use rke2ops_tests::ground::built_binary;
use serde_json::Value;
use sha2::Digest as _;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

/// The hub's gRPC port on every test's own address.
const GRPC_PORT: u16 = 9811;
/// The hub's metrics port.
const METRICS_PORT: u16 = 9812;
/// The hub's message limit (`rke2_hub::serve::MAX_MESSAGE_BYTES`).
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// How long a refusal on an open stream may take.
const STREAM_VERDICT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The hub process.

/// A running `rke2-hub serve`; killed on drop.
struct Hub {
    child: Child,
    /// Holds the state dir, the admin socket and the log; removed on drop.
    dir: tempfile::TempDir,
    /// The address it listens on (gRPC :9811, metrics :9812).
    ip: &'static str,
}

/// A hub that stopped cleanly: its log and its database, to inspect.
struct Stopped {
    dir: tempfile::TempDir,
    log: String,
}

impl Hub {
    /// Starts a hub on `ip` and waits until its admin socket answers.
    fn start(ip: &'static str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = File::create(dir.path().join("hub.log")).expect("log file");
        let grpc = format!("{ip}:{GRPC_PORT}");
        let child = Command::new(built_binary("rke2-hub"))
            .args([
                "serve",
                "--listen-addr",
                &grpc,
                "--advertise-address",
                &grpc,
            ])
            .args(["--metrics-addr", &format!("{ip}:{METRICS_PORT}")])
            // The listener's limits are config keys; the tests set them (not the defaults of
            // 32 and 10 s) to prove they take effect.
            .args([
                "--max-unauthenticated-per-peer",
                &MAX_UNAUTHENTICATED_PER_PEER.to_string(),
                "--tls-handshake-timeout-secs",
                &HANDSHAKE_TIMEOUT.as_secs().to_string(),
            ])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--admin-socket")
            .arg(dir.path().join("hub.sock"))
            // Deliberately the hub's pre-`RKE2OPS_HUB_*` names: they must keep working
            // (`old_environment_names_still_work_with_a_warning`).
            .env("RKE2_HUB_CONFIG", "/dev/null")
            .env("RKE2_HUB_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("rke2-hub starts");
        let hub = Self { child, dir, ip };
        let started = Instant::now();
        while !hub.cli(&["nodes", "--output", "json"]).status.success() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the hub did not come up:\n{}",
                hub.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        hub
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn ip(&self) -> IpAddr {
        self.ip.parse().expect("an IP address")
    }

    /// `rke2-hub ARGS --socket <the admin socket>`.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(built_binary("rke2-hub"))
            .args(args)
            .arg("--socket")
            .arg(self.dir.path().join("hub.sock"))
            .output()
            .expect("rke2-hub runs")
    }

    /// The command's `--output json`; panics when it fails.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "rke2-hub {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON")
    }

    /// The inventory's node names.
    fn node_names(&self) -> Vec<String> {
        self.json(&["nodes"])["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| n["name"].as_str().expect("name").to_owned())
            .collect()
    }

    /// One node of the inventory, without what changes on every contact (last seen, online).
    fn node_facts(&self, name: &str) -> Value {
        let nodes = self.json(&["nodes"]);
        let node = nodes["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("{name} is in the inventory: {nodes:#}"))
            .clone();
        let keep = [
            "name",
            "role",
            "rke2_version",
            "agent_version",
            "service_state",
            "worst_status",
            "renewal_deadline",
            "file_errors",
        ];
        keep.iter()
            .map(|k| ((*k).to_owned(), node[k].clone()))
            .collect()
    }

    /// A new join token (`token create --ttl TTL`).
    fn token(&self, ttl: &str) -> Token {
        self.token_with(ttl, &[])
    }

    /// A new join token with more `token create` options (`--node`, `--replace`, `--role`).
    fn token_with(&self, ttl: &str, extra: &[&str]) -> Token {
        let mut args = vec!["token", "create", "--ttl", ttl];
        args.extend(extra);
        let doc = self.json(&args);
        Token {
            token: doc["token"].as_str().expect("token").to_owned(),
            pin: doc["ca_pin"].as_str().expect("pin").to_owned(),
        }
    }

    /// The hub's pin, from a token the test then throws away.
    fn pin(&self) -> String {
        self.token("1m").pin
    }

    /// Everything the hub has logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("hub.log")).expect("hub log")
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM; asserts a clean exit.
    fn stop(mut self) -> Stopped {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let status = self.child.wait().expect("wait for the hub");
        let log = self.log();
        assert!(
            status.success(),
            "hub exits 0 on SIGTERM ({status}):\n{log}"
        );
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        Stopped { dir, log }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Stopped {
    /// Rows of `query` on the hub's database, opened read-only, as JSON objects.
    fn rows(&self, query: &str) -> Vec<Value> {
        use rusqlite::types::ValueRef;
        let db = rusqlite::Connection::open_with_flags(
            self.dir.path().join("state/hub.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("the hub's database opens read-only");
        let mut statement = db.prepare(query).expect("query");
        let columns: Vec<String> = statement.column_names().map(str::to_owned).collect();
        statement
            .query_map([], |row| {
                let mut doc = serde_json::Map::new();
                for (i, column) in columns.iter().enumerate() {
                    let value = match row.get_ref(i)? {
                        ValueRef::Null => Value::Null,
                        ValueRef::Integer(n) => n.into(),
                        ValueRef::Real(x) => x.into(),
                        ValueRef::Text(t) => String::from_utf8_lossy(t).into(),
                        ValueRef::Blob(b) => hex::encode(b).into(),
                    };
                    doc.insert(column.clone(), value);
                }
                Ok(Value::Object(doc))
            })
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("row")
    }

    /// Asserts the log holds none of `secrets` (nor their SHA-256, the form the store keeps),
    /// no PEM private key, and no line of the hub's own keys.
    fn assert_log_keeps(&self, secrets: &[&str]) {
        assert!(
            !self.log.contains("PRIVATE KEY"),
            "a private key in the log:\n{}",
            self.log
        );
        for secret in secrets {
            let hash = hex::encode(sha2::Sha256::digest(secret.as_bytes()));
            assert!(
                !self.log.contains(secret) && !self.log.contains(&hash),
                "secret {secret:?} (or its hash) in the log:\n{}",
                self.log
            );
        }
        for key in ["ca.key", "server.key"] {
            let pem = std::fs::read_to_string(self.dir.path().join("state/pki").join(key))
                .expect("hub key");
            for line in pem
                .lines()
                .filter(|l| !l.starts_with("-----") && l.len() > 16)
            {
                assert!(!self.log.contains(line), "a line of {key} in the log");
            }
        }
    }
}

/// A join token and the hub CA's pin, as `token create` prints them.
struct Token {
    token: String,
    pin: String,
}

impl Token {
    /// The secret half (after the dot).
    fn secret(&self) -> &str {
        self.token.split_once('.').expect("id.secret").1
    }

    /// The public id (before the dot).
    fn id(&self) -> &str {
        self.token.split_once('.').expect("id.secret").0
    }
}

// ---------------------------------------------------------------------------------------------
// Clients.

/// An enrolled node's identity.
struct Identity {
    key_pem: String,
    cert_pem: String,
    ca_pem: String,
}

/// An anonymous client that trusts the pinned hub CA (what an enrolling agent uses).
fn anonymous(hub: &Hub, pin: &str) -> Channel {
    let config = tls::enrollment_config(pin).expect("enrollment TLS");
    tls::channel(hub.ip, GRPC_PORT, config).expect("channel")
}

/// A mutual-TLS client with a client certificate the hub CA signed.
fn authenticated(hub: &Hub, ca_pem: &str, cert_pem: &str, key_pem: &str) -> Channel {
    let config = tls::mutual_config(ca_pem, cert_pem, key_pem).expect("mutual TLS");
    tls::channel(hub.ip, GRPC_PORT, config).expect("channel")
}

fn as_node(hub: &Hub, id: &Identity) -> AgentServiceClient<Channel> {
    AgentServiceClient::new(authenticated(hub, &id.ca_pem, &id.cert_pem, &id.key_pem))
}

async fn enroll_with(
    hub: &Hub,
    pin: &str,
    token: &str,
    node_name: &str,
    csr_pem: String,
) -> Result<tonic::Response<pb::EnrollResponse>, tonic::Status> {
    AgentServiceClient::new(anonymous(hub, pin))
        .enroll(pb::EnrollRequest {
            token: token.to_owned(),
            node_name: node_name.to_owned(),
            csr_pem,
            cluster: String::new(),
        })
        .await
}

/// Enrolls `name` as an agent does (own key, CSR with CN = name).
async fn enroll(hub: &Hub, token: &Token, name: &str) -> Result<Identity, tonic::Status> {
    let key = NodeKey::generate().expect("key");
    let csr = key.csr_pem(name).expect("csr");
    let response = enroll_with(hub, &token.pin, &token.token, name, csr)
        .await?
        .into_inner();
    Ok(Identity {
        key_pem: key.to_pem(),
        cert_pem: response.certificate_pem,
        ca_pem: response.ca_pem,
    })
}

/// Asserts `result` is a refusal with `code` whose message holds every one of `needles`.
fn refused<T>(
    what: &str,
    result: Result<T, tonic::Status>,
    code: Code,
    needles: &[&str],
) -> tonic::Status {
    let Err(status) = result else {
        panic!("{what}: accepted, but must be refused with {code:?}");
    };
    assert_eq!(status.code(), code, "{what}: {status:?}");
    for needle in needles {
        assert!(
            status.message().contains(needle),
            "{what}: the message {:?} does not name {needle:?}",
            status.message()
        );
    }
    status
}

fn hello(name: &str) -> pb::AgentMessage {
    pb::AgentMessage {
        body: Some(pb::agent_message::Body::Hello(pb::Hello {
            node_name: name.to_owned(),
            role: pb::NodeRole::Server.into(),
            rke2_version: "v1.34.1+rke2r1".to_owned(),
            agent_version: "security-test".to_owned(),
            cluster: String::new(),
        })),
    }
}

fn certificate(path: &str, serial: &str) -> pb::Certificate {
    let now = OffsetDateTime::now_utc();
    pb::Certificate {
        path: path.to_owned(),
        index: 0,
        subject: format!("CN={path}"),
        issuer: "CN=rke2-server-ca".to_owned(),
        serial: serial.to_owned(),
        usages: vec!["ClientAuth".to_owned()],
        is_ca: false,
        sans: Vec::new(),
        not_before: Some(convert::timestamp(now - time::Duration::days(10))),
        not_after: Some(convert::timestamp(now + time::Duration::days(300))),
        status: pb::CertStatus::Ok.into(),
    }
}

fn full_status(certificates: Vec<pb::Certificate>) -> pb::Status {
    let now = OffsetDateTime::now_utc();
    pb::Status {
        full: true,
        certificates,
        errors: Vec::new(),
        renewal_deadline: Some(convert::timestamp(now + time::Duration::days(200))),
        service_state: "active".to_owned(),
        worst_status: pb::CertStatus::Ok.into(),
        error_count: 0,
        ..pb::Status::default()
    }
}

fn status_message(status: pb::Status) -> pb::AgentMessage {
    pb::AgentMessage {
        body: Some(pb::agent_message::Body::Status(status)),
    }
}

/// A request stream of `messages` that then stays open while the returned sender lives: until
/// the test drops it, whatever ends the call is the hub's doing.
fn held_open(
    messages: Vec<pb::AgentMessage>,
) -> (
    mpsc::Sender<pb::AgentMessage>,
    ReceiverStream<pb::AgentMessage>,
) {
    let (open, rx) = mpsc::channel(messages.len().max(1));
    for message in messages {
        open.try_send(message).expect("room for every message");
    }
    (open, ReceiverStream::new(rx))
}

/// Opens a `Connect` stream that sends `messages` and stays open; the status the hub ends it
/// with. Panics when the hub accepts everything (no verdict within [`STREAM_VERDICT`]) or
/// closes the stream without an error.
async fn stream_refusal(
    client: &mut AgentServiceClient<Channel>,
    messages: Vec<pb::AgentMessage>,
) -> Result<(), tonic::Status> {
    let (_open, messages) = held_open(messages);
    let mut inbound = client.connect(messages).await?.into_inner();
    let verdict = tokio::time::timeout(STREAM_VERDICT, async {
        loop {
            match inbound.message().await {
                Ok(Some(_request)) => {}
                Ok(None) => return Ok(()),
                Err(status) => return Err(status),
            }
        }
    })
    .await;
    match verdict {
        Err(_) => panic!("the hub neither refused nor closed the stream"),
        Ok(Ok(())) => Ok(()),
        Ok(Err(status)) => Err(status),
    }
}

/// Polls `done` every 100 ms until it holds or `timeout` passes.
async fn eventually(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// A hub set up with the `RKE2_HUB_*` names of earlier releases reads them and says once per
/// name what to rename it to.
#[test]
fn old_environment_names_still_work_with_a_warning() {
    let hub = Hub::start("127.0.45.1");
    let log = hub.log();
    for (old, new) in [
        ("RKE2_HUB_CONFIG", "RKE2OPS_HUB_CONFIG"),
        ("RKE2_HUB_LOG", "RKE2OPS_HUB_LOG"),
    ] {
        let warning = format!("environment variable {old} is deprecated: rename it to {new}");
        assert_eq!(
            log.matches(&warning).count(),
            1,
            "one deprecation warning for {old}:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_without_a_client_certificate_is_unauthenticated() {
    let hub = Hub::start("127.0.40.1");
    let pin = hub.pin();
    let mut agent = AgentServiceClient::new(anonymous(&hub, &pin));
    let needs_node = "a node client certificate is required";
    refused(
        "anonymous Connect",
        stream_refusal(&mut agent, vec![hello("alpha")]).await,
        Code::Unauthenticated,
        &[needs_node],
    );
    let key = NodeKey::generate().expect("key");
    refused(
        "anonymous RenewCertificate",
        agent
            .renew_certificate(pb::RenewRequest {
                csr_pem: key.csr_pem("alpha").expect("csr"),
            })
            .await,
        Code::Unauthenticated,
        &[needs_node],
    );
    let mut admin = AdminServiceClient::new(anonymous(&hub, &pin));
    let needs_admin = "an admin certificate is required";
    refused(
        "anonymous ListNodes",
        admin.list_nodes(pb::ListNodesRequest::default()).await,
        Code::Unauthenticated,
        &[needs_admin],
    );
    refused(
        "anonymous CreateToken",
        admin
            .create_token(pb::CreateTokenRequest { ttl_seconds: 60 })
            .await,
        Code::Unauthenticated,
        &[needs_admin],
    );
    refused(
        "anonymous ListCertificates",
        admin
            .list_certificates(pb::ListCertificatesRequest::default())
            .await,
        Code::Unauthenticated,
        &[needs_admin],
    );
    assert!(hub.node_names().is_empty());

    let stopped = hub.stop();
    assert!(stopped.rows("SELECT name FROM nodes").is_empty());
    let tokens = stopped.rows("SELECT created_by FROM join_tokens");
    assert_eq!(tokens.len(), 1, "only the test's own token: {tokens:?}");
    assert!(
        tokens[0]["created_by"]
            .as_str()
            .is_some_and(|by| by.starts_with("uid:"))
    );
    let actions = stopped.rows("SELECT actor, action FROM audit_log");
    assert!(
        actions
            .iter()
            .all(|a| a["actor"].as_str().is_some_and(|by| by.starts_with("uid:"))),
        "{actions:?}"
    );
    stopped.assert_log_keeps(&[]);
}

/// A client certificate that says "node alpha" but was signed by a CA the hub does not trust.
struct RogueCert {
    cert_pem: String,
    key_pem: String,
}

/// A CA named `ca_name` (made here, with its own key) and a leaf it signs with a node
/// certificate's subject (`CN=<node>`, `O=rke2-ops:nodes`) and clientAuth.
fn rogue_node_cert(ca_name: &str, node: &str) -> RogueCert {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("leaf key");
    let mut leaf = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
    leaf.distinguished_name.push(DnType::CommonName, node);
    leaf.distinguished_name
        .push(DnType::OrganizationName, "rke2-ops:nodes");
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    leaf.use_authority_key_identifier_extension = true;
    let cert = leaf.signed_by(&key, &ca).expect("leaf");
    RogueCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A client configuration that verifies the hub by its pin (so the hub side is genuine) and
/// presents `rogue`.
fn rogue_config(pin: &str, rogue: &RogueCert) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = vec![CertificateDer::from_pem_slice(rogue.cert_pem.as_bytes()).expect("cert")];
    let key = PrivateKeyDer::from_pem_slice(rogue.key_pem.as_bytes()).expect("key");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(tls::PinnedCaVerifier::new(pin)))
    .with_client_auth_cert(chain, key)
    .expect("client auth");
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// What the hub's TLS listener says to `rogue`: the error the client ends with (in TLS 1.3 the
/// server judges the client's certificate after the client has finished, so the refusal comes
/// as an alert on the first read).
async fn handshake_verdict(hub: &Hub, pin: &str, rogue: &RogueCert) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let connector = tokio_rustls::TlsConnector::from(Arc::new(rogue_config(pin, rogue)));
    let tcp = tokio::net::TcpStream::connect((hub.ip(), GRPC_PORT))
        .await
        .expect("TCP connect");
    let name = rustls::pki_types::ServerName::try_from(hub.ip.to_owned()).expect("name");
    let mut tls = match connector.connect(name, tcp).await {
        Ok(tls) => tls,
        Err(e) => return e.to_string(),
    };
    let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
        Err(_) => panic!("the hub neither refused nor answered"),
        Ok(Ok(0)) => "closed without an alert".to_owned(),
        Ok(Ok(n)) => panic!("the hub answered {n} bytes to a certificate it does not trust"),
        Ok(Err(e)) => e.to_string(),
    }
}

/// Asserts `result` failed in the transport (the connection was refused or cut), not with a
/// status the hub's services chose.
fn transport_failure<T>(what: &str, result: Result<T, tonic::Status>) {
    let Err(status) = result else {
        panic!("{what}: accepted");
    };
    assert!(
        matches!(
            status.code(),
            Code::Unavailable | Code::Cancelled | Code::Unknown
        ) && std::error::Error::source(&status).is_some(),
        "{what}: not a transport failure: {status:?}"
    );
}

/// The hub CA's subject CN, from its certificate.
fn hub_ca_name(hub: &Hub) -> String {
    let pem = std::fs::read(hub.state().join("pki/ca.crt")).expect("ca.crt");
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem).expect("PEM");
    let cert = block.parse_x509().expect("X.509");
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .expect("CN")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_fails_the_handshake() {
    let hub = Hub::start("127.0.40.2");
    let pin = hub.pin();
    // A stranger's CA (the hub knows no such issuer), and a look-alike with the hub CA's very
    // name but its own key (the issuer is found by name; the signature does not verify).
    let cases = [
        (
            "another CA",
            rogue_node_cert("rogue-ca", "alpha"),
            "UnknownCA",
        ),
        (
            "a CA named like the hub's",
            rogue_node_cert(&hub_ca_name(&hub), "alpha"),
            "DecryptError",
        ),
    ];
    for (what, rogue, alert) in &cases {
        let verdict = handshake_verdict(&hub, &pin, rogue).await;
        eprintln!("TLS with a certificate from {what}: {verdict}");
        assert_eq!(
            verdict,
            format!("received fatal alert: {alert}"),
            "a certificate from {what}"
        );
        let channel =
            || tls::channel(hub.ip, GRPC_PORT, rogue_config(&pin, rogue)).expect("channel");
        transport_failure(
            &format!("Connect with a certificate from {what}"),
            stream_refusal(
                &mut AgentServiceClient::new(channel()),
                vec![hello("alpha")],
            )
            .await,
        );
        transport_failure(
            &format!("ListNodes with a certificate from {what}"),
            AdminServiceClient::new(channel())
                .list_nodes(pb::ListNodesRequest::default())
                .await,
        );
    }
    assert!(hub.node_names().is_empty());
    let stopped = hub.stop();
    assert!(stopped.rows("SELECT name FROM nodes").is_empty());
    assert!(stopped.rows("SELECT node FROM certificates").is_empty());
    let keys: Vec<&str> = cases.iter().map(|(_, r, _)| r.key_pem.as_str()).collect();
    stopped.assert_log_keeps(&keys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_reused_unknown_and_malformed_join_tokens_are_refused() {
    let hub = Hub::start("127.0.40.3");
    let expiring = hub.token("1s");
    let expiring_made = Instant::now();
    let reused = hub.token("10m");
    let guessed = hub.token("10m");
    let pin = reused.pin.clone();

    // Reused: the first enrollment works, the second is refused.
    enroll(&hub, &reused, "first").await.expect("first use");
    let generic = ["join token refused"];
    refused(
        "a second use of a token",
        enroll(&hub, &reused, "second").await,
        Code::PermissionDenied,
        &generic,
    );
    // Unknown: well-formed, never issued.
    let unknown = Token {
        token: "zz9zz9.q1w2e3r4t5y6u7i8".to_owned(),
        pin: pin.clone(),
    };
    refused(
        "a token never issued",
        enroll(&hub, &unknown, "third").await,
        Code::PermissionDenied,
        &generic,
    );
    // A real id with a guessed secret; the guess does not burn the token.
    let wrong = Token {
        token: format!("{}.0000aaaa1111bbbb", guessed.id()),
        pin: pin.clone(),
    };
    refused(
        "a guessed secret",
        enroll(&hub, &wrong, "fourth").await,
        Code::PermissionDenied,
        &generic,
    );
    enroll(&hub, &guessed, "fourth")
        .await
        .expect("the real token still works after a wrong guess");
    // Malformed: refused before any lookup, without echoing the text.
    let malformed = [
        ("not-a-token", "'.'"),
        ("ABCDEF.0123456789abcdef", "id"),
        ("abcdef.0123456789abcdefXYZ", "secret"),
    ];
    for (text, part) in malformed {
        let status = refused(
            &format!("malformed token {text:?}"),
            enroll(
                &hub,
                &Token {
                    token: text.to_owned(),
                    pin: pin.clone(),
                },
                "fifth",
            )
            .await,
            Code::InvalidArgument,
            &["join token", part],
        );
        assert!(!status.message().contains(text), "{status:?}");
    }
    // Expired: its 1 s is over (the store keeps whole seconds).
    tokio::time::sleep(Duration::from_millis(2_100).saturating_sub(expiring_made.elapsed())).await;
    refused(
        "an expired token",
        enroll(&hub, &expiring, "sixth").await,
        Code::PermissionDenied,
        &generic,
    );

    // The reasons are in the hub's log, by token id.
    let log = hub.log();
    for (id, reason) in [
        (reused.id(), "already used"),
        (unknown.id(), "is unknown"),
        (guessed.id(), "does not match"),
        (expiring.id(), "expired at"),
    ] {
        assert!(
            log.lines().any(|l| l.contains("join token refused")
                && l.contains(&format!("token={id}"))
                && l.contains(reason)),
            "no log line for token {id} ({reason}):\n{log}"
        );
    }
    assert!(hub.node_names().is_empty(), "enrollment alone adds no node");

    let stopped = hub.stop();
    let tokens = stopped.rows("SELECT id, used_by FROM join_tokens ORDER BY id");
    let used: Vec<(String, Value)> = tokens
        .iter()
        .map(|t| {
            (
                t["id"].as_str().expect("id").to_owned(),
                t["used_by"].clone(),
            )
        })
        .collect();
    for (token, by) in [
        (&reused, Value::from("first")),
        (&guessed, Value::from("fourth")),
        (&expiring, Value::Null),
    ] {
        assert!(
            used.contains(&(token.id().to_owned(), by.clone())),
            "token {} used by {by}: {used:?}",
            token.id()
        );
    }
    let enrolled = stopped.rows("SELECT detail FROM audit_log WHERE action = 'node.enroll'");
    assert_eq!(enrolled.len(), 2, "{enrolled:?}");
    stopped.assert_log_keeps(&[
        reused.secret(),
        unknown.secret(),
        guessed.secret(),
        wrong.secret(),
        expiring.secret(),
        "0123456789abcdef",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_certificate_cannot_speak_for_another_node() {
    let hub = Hub::start("127.0.40.4");
    let token = hub.token("10m");
    let alpha = enroll(&hub, &token, "alpha").await.expect("enroll alpha");
    let mut client = as_node(&hub, &alpha);
    refused(
        "alpha's certificate saying hello as beta",
        stream_refusal(&mut client, vec![hello("beta")]).await,
        Code::PermissionDenied,
        &["\"alpha\"", "\"beta\""],
    );
    // Nor can it get a certificate for beta by renewal.
    let key = NodeKey::generate().expect("key");
    refused(
        "alpha renewing with a CSR for beta",
        client
            .renew_certificate(pb::RenewRequest {
                csr_pem: key.csr_pem("beta").expect("csr"),
            })
            .await,
        Code::InvalidArgument,
        &["\"alpha\"", "\"beta\""],
    );
    assert!(hub.node_names().is_empty(), "neither node is stored");
    let log = hub.log();
    assert!(
        log.lines().any(|l| l.contains("hello claims another node")
            && l.contains("alpha")
            && l.contains("beta")),
        "{log}"
    );

    // As itself, alpha is welcome.
    let (open, messages) = held_open(vec![hello("alpha")]);
    let inbound = client
        .connect(messages)
        .await
        .expect("alpha as alpha")
        .into_inner();
    eventually("alpha is online", Duration::from_secs(10), || {
        hub.node_names() == ["alpha"]
    })
    .await;
    drop((open, inbound));

    let stopped = hub.stop();
    let names = stopped.rows("SELECT name FROM nodes");
    assert_eq!(names, [serde_json::json!({"name": "alpha"})]);
    stopped.assert_log_keeps(&[token.secret(), &alpha.key_pem, &key.to_pem()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_certificate_cannot_call_admin_methods() {
    let hub = Hub::start("127.0.40.5");
    let token = hub.token("10m");
    let alpha = enroll(&hub, &token, "alpha").await.expect("enroll alpha");
    let mut admin = AdminServiceClient::new(authenticated(
        &hub,
        &alpha.ca_pem,
        &alpha.cert_pem,
        &alpha.key_pem,
    ));
    let denied = ["node \"alpha\" may not call admin methods"];
    refused(
        "ListNodes with a node certificate",
        admin.list_nodes(pb::ListNodesRequest::default()).await,
        Code::PermissionDenied,
        &denied,
    );
    refused(
        "CreateToken with a node certificate",
        admin
            .create_token(pb::CreateTokenRequest { ttl_seconds: 3600 })
            .await,
        Code::PermissionDenied,
        &denied,
    );
    refused(
        "ListCertificates with a node certificate",
        admin
            .list_certificates(pb::ListCertificatesRequest::default())
            .await,
        Code::PermissionDenied,
        &denied,
    );
    refused(
        "ListClusters with a node certificate",
        admin.list_clusters(pb::ListClustersRequest {}).await,
        Code::PermissionDenied,
        &denied,
    );

    // The other way round: an admin certificate cannot act as a node.
    let out_dir = hub.dir.path().join("eve");
    let out = Command::new(built_binary("rke2-hub"))
        .args(["admin-cert", "create", "--name", "eve", "--out"])
        .arg(&out_dir)
        .arg("--state-dir")
        .arg(hub.state())
        .output()
        .expect("admin-cert runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |name: &str| std::fs::read_to_string(out_dir.join(name)).expect("admin file");
    let eve_key = read("admin.key");
    let mut eve = AgentServiceClient::new(authenticated(
        &hub,
        &read("ca.crt"),
        &read("admin.crt"),
        &eve_key,
    ));
    refused(
        "Connect with an admin certificate",
        stream_refusal(&mut eve, vec![hello("eve")]).await,
        Code::PermissionDenied,
        &["admin certificates cannot act as a node"],
    );
    assert!(hub.node_names().is_empty());
    let log = hub.log();
    assert!(
        log.lines()
            .any(|l| l.contains("node certificate tried an admin method") && l.contains("alpha")),
        "{log}"
    );

    let stopped = hub.stop();
    let tokens = stopped.rows("SELECT created_by FROM join_tokens");
    assert_eq!(tokens.len(), 1, "no token made by the node: {tokens:?}");
    let by_node = stopped
        .rows("SELECT action FROM audit_log WHERE actor LIKE 'node:%' AND action != 'node.enroll'");
    assert!(by_node.is_empty(), "{by_node:?}");
    assert!(stopped.rows("SELECT name FROM nodes").is_empty());
    stopped.assert_log_keeps(&[token.secret(), &alpha.key_pem, &eve_key]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_certificate_request_is_refused_without_burning_the_token() {
    let hub = Hub::start("127.0.40.6");
    let token = hub.token("10m");
    let key = NodeKey::generate().expect("key");
    let request =
        |node: &'static str, csr: String| enroll_with(&hub, &token.pin, &token.token, node, csr);
    refused(
        "a CSR for gamma, enrolling as delta",
        request("delta", key.csr_pem("gamma").expect("csr")).await,
        Code::InvalidArgument,
        &["certificate request", "\"delta\"", "\"gamma\""],
    );
    refused(
        "a node name that is not one",
        request("Delta_1", key.csr_pem("delta").expect("csr")).await,
        Code::InvalidArgument,
        &["Delta_1"],
    );
    refused(
        "no CSR at all",
        request("delta", "not a CSR".to_owned()).await,
        Code::InvalidArgument,
        &["\"delta\"", "no CERTIFICATE REQUEST block"],
    );
    refused(
        "a CSR over the size limit",
        request("delta", "A".repeat(64 * 1024)).await,
        Code::InvalidArgument,
        &["\"delta\"", "16384"],
    );
    // A CSR whose signature was not made with its key: the CN swapped after signing.
    let tampered = {
        let pem = key.csr_pem("deltb").expect("csr");
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM");
        let mut der = block.contents;
        let at = der
            .windows(5)
            .position(|w| w == b"deltb")
            .expect("CN in the DER");
        der[at + 4] = b'a';
        let body = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &der);
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n")
    };
    refused(
        "a tampered CSR",
        request("delta", tampered).await,
        Code::InvalidArgument,
        &["\"delta\"", "invalid signature"],
    );
    assert!(hub.log().lines().all(|l| !l.contains("join token refused")));

    // The token is still good.
    let response = request("delta", key.csr_pem("delta").expect("csr"))
        .await
        .expect("a correct request with the same token");
    assert!(
        response
            .get_ref()
            .certificate_pem
            .contains("BEGIN CERTIFICATE")
    );

    let stopped = hub.stop();
    let tokens = stopped.rows("SELECT used_by FROM join_tokens WHERE used_by IS NOT NULL");
    assert_eq!(tokens, [serde_json::json!({"used_by": "delta"})]);
    stopped.assert_log_keeps(&[token.secret(), &key.to_pem()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_messages_are_refused_and_change_nothing() {
    let hub = Hub::start("127.0.40.7");
    let token = hub.token("10m");
    let node = enroll(&hub, &token, "alpha").await.expect("enroll alpha");
    let mut client = as_node(&hub, &node);

    // A good snapshot first.
    let good = vec![
        certificate("server/tls/client-admin.crt", "01"),
        certificate("server/tls/serving-kube-apiserver.crt", "02"),
    ];
    let (open, messages) = held_open(vec![
        hello("alpha"),
        status_message(full_status(good.clone())),
    ]);
    let inbound = client
        .connect(messages)
        .await
        .expect("alpha connects")
        .into_inner();
    let certs = || hub.json(&["certs", "--node", "alpha"]);
    eventually(
        "alpha's snapshot is stored",
        Duration::from_secs(10),
        || {
            certs()["certificates"]
                .as_array()
                .is_some_and(|c| c.len() == 2)
        },
    )
    .await;
    drop((open, inbound));
    let snapshot = certs();
    let facts = hub.node_facts("alpha");
    assert_eq!(facts["worst_status"], "OK", "{facts:#}");

    let other = |serial: &str| vec![certificate("agent/client-kubelet.crt", serial)];
    let mut cases: Vec<(&str, Vec<pb::AgentMessage>, Code, Vec<&str>)> = Vec::new();
    // > 4 MiB of certificates in one status.
    let big = {
        let mut certs = other("03");
        let mut fat = certificate("agent/fat.crt", "04");
        fat.subject = "x".repeat(64 * 1024);
        let count = MAX_MESSAGE_BYTES / fat.subject.len() + 2;
        certs.extend(std::iter::repeat_n(fat, count));
        status_message(full_status(certs))
    };
    cases.push((
        "a status over 4 MiB",
        vec![hello("alpha"), big.clone()],
        Code::OutOfRange,
        vec!["too large", "4194304"],
    ));
    cases.push((
        "a status over 4 MiB as the first message",
        vec![big],
        Code::OutOfRange,
        vec!["too large", "4194304"],
    ));
    let mut no_end = other("05");
    no_end[0].not_after = None;
    cases.push((
        "a certificate without not_after",
        vec![hello("alpha"), status_message(full_status(no_end))],
        Code::InvalidArgument,
        vec!["status.certificates[0].not_after", "missing"],
    ));
    let mut odd_status = other("06");
    odd_status[0].status = 42;
    cases.push((
        "a certificate status out of the enum",
        vec![hello("alpha"), status_message(full_status(odd_status))],
        Code::InvalidArgument,
        vec!["status.certificates[0].status", "42"],
    ));
    let mut odd_worst = full_status(other("07"));
    odd_worst.worst_status = 99;
    cases.push((
        "a worst status out of the enum",
        vec![hello("alpha"), status_message(odd_worst)],
        Code::InvalidArgument,
        vec!["worst_status", "99"],
    ));
    let mut far_deadline = full_status(other("08"));
    let mut never = convert::timestamp(OffsetDateTime::now_utc());
    never.seconds = i64::MAX;
    far_deadline.renewal_deadline = Some(never);
    cases.push((
        "a renewal deadline out of range",
        vec![hello("alpha"), status_message(far_deadline)],
        Code::InvalidArgument,
        vec!["status.renewal_deadline"],
    ));
    let mut odd_role = hello("alpha");
    if let Some(pb::agent_message::Body::Hello(h)) = &mut odd_role.body {
        h.role = 7;
    }
    cases.push((
        "a role out of the enum",
        vec![odd_role],
        Code::InvalidArgument,
        vec!["hello.role"],
    ));
    let mut long_version = hello("alpha");
    if let Some(pb::agent_message::Body::Hello(h)) = &mut long_version.body {
        h.rke2_version = "v".repeat(10_000);
    }
    cases.push((
        "a 10 kB version string in the hello",
        vec![long_version],
        Code::InvalidArgument,
        vec!["hello.rke2_version", "256 bytes"],
    ));
    let mut long_state = full_status(other("10"));
    long_state.service_state = "x".repeat(10_000);
    cases.push((
        "a 10 kB unit state",
        vec![hello("alpha"), status_message(long_state)],
        Code::InvalidArgument,
        vec!["status.rke2_version / status.service_state", "256 bytes"],
    ));
    cases.push((
        "a status before the hello",
        vec![status_message(full_status(other("09")))],
        Code::InvalidArgument,
        vec!["first message must be a hello"],
    ));
    cases.push((
        "a second hello",
        vec![hello("alpha"), hello("alpha")],
        Code::InvalidArgument,
        vec!["hello may only be the first message"],
    ));
    cases.push((
        "an empty message",
        vec![hello("alpha"), pb::AgentMessage { body: None }],
        Code::InvalidArgument,
        vec!["empty message"],
    ));
    for (what, messages, code, needles) in cases {
        let started = Instant::now();
        refused(
            what,
            stream_refusal(&mut client, messages).await,
            code,
            &needles,
        );
        eprintln!("{what}: refused in {:?}", started.elapsed());
        assert_eq!(certs(), snapshot, "{what} changed the snapshot");
        assert_eq!(hub.node_facts("alpha"), facts, "{what} changed the node");
    }
    // An oversized request without any certificate (an enrollment) is refused as early.
    refused(
        "an Enroll over 4 MiB",
        enroll_with(
            &hub,
            &token.pin,
            &"x".repeat(MAX_MESSAGE_BYTES),
            "beta",
            String::new(),
        )
        .await,
        Code::OutOfRange,
        &["too large"],
    );
    assert_eq!(hub.node_names(), ["alpha"]);

    let stopped = hub.stop();
    let stored =
        stopped.rows("SELECT serial FROM certificates WHERE node = 'alpha' ORDER BY serial");
    assert_eq!(
        stored,
        [
            serde_json::json!({"serial": "01"}),
            serde_json::json!({"serial": "02"})
        ]
    );
    stopped.assert_log_keeps(&[token.secret(), &node.key_pem]);
}

/// What the hub lets a peer without a hub certificate hold (handshakes in progress and
/// anonymous connections), as the tests configure it (`--max-unauthenticated-per-peer`).
const MAX_UNAUTHENTICATED_PER_PEER: usize = 24;
/// How long the hub waits for a TLS handshake, as configured (`--tls-handshake-timeout-secs`).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(6);

/// A TCP connection from `source` to the hub's gRPC port.
async fn tcp_from(source: IpAddr, hub: &Hub) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(SocketAddr::new(hub.ip(), GRPC_PORT)).await
}

/// `tls::channel`, but from the local address `source` (every 127.0.0.0/8 address is ours on
/// loopback: one test plays several peers).
fn channel_from(source: IpAddr, hub: &Hub, config: rustls::ClientConfig) -> Channel {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let server_name = rustls::pki_types::ServerName::try_from(hub.ip.to_owned()).expect("name");
    let target = SocketAddr::new(hub.ip(), GRPC_PORT);
    tonic::transport::Endpoint::from_shared(format!("http://{target}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(10))
        .connect_with_connector_lazy(tower::service_fn(move |_| {
            let (connector, server_name) = (connector.clone(), server_name.clone());
            async move {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(source, 0))?;
                let tcp = socket.connect(target).await?;
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
}

/// Whether the hub closed `tcp` (end of file or reset) within `wait`; `false` when it is
/// still open (the hub waits for our TLS hello).
async fn closed_within(tcp: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 16];
    match tokio::time::timeout(wait, tcp.read(&mut buf)).await {
        Err(_) => false,
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(n)) => panic!("the hub sent {n} bytes before our TLS hello"),
    }
}

/// The hub's resident memory, from `/proc/<pid>/status`.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("hub alive");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_from_one_peer_leaves_the_hub_serving_others() {
    let hub = Hub::start("127.0.40.8");
    let token = hub.token("10m");
    let rss_before = rss_kib(hub.pid());
    let idle_peer: IpAddr = "127.0.41.8".parse().expect("IP");
    let enroll_peer: IpAddr = "127.0.42.8".parse().expect("IP");

    // 1. 300 idle TCP connections from one peer: the hub keeps what one peer may hold and
    //    closes the rest at once.
    let flood_started = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tcp_from(idle_peer, &hub).await.expect("TCP connect"));
    }
    let mut checks = tokio::task::JoinSet::new();
    for mut tcp in idle {
        checks.spawn(async move {
            let closed = closed_within(&mut tcp, Duration::from_secs(2)).await;
            (closed, tcp)
        });
    }
    let mut held = Vec::new();
    let mut refused_at_once = 0;
    while let Some(joined) = checks.join_next().await {
        match joined.expect("check") {
            (true, _) => refused_at_once += 1,
            (false, tcp) => held.push(tcp),
        }
    }
    eprintln!(
        "idle flood: {} held, {refused_at_once} closed at once ({:?})",
        held.len(),
        flood_started.elapsed()
    );
    assert_eq!(held.len(), MAX_UNAUTHENTICATED_PER_PEER);

    // 2. Meanwhile the hub serves everyone else: the operator, and an agent that enrolls and
    //    reports.
    let started = Instant::now();
    assert!(hub.node_names().is_empty());
    let answered = started.elapsed();
    let alpha = enroll(&hub, &token, "alpha")
        .await
        .expect("enroll during the flood");
    let (open, messages) = held_open(vec![
        hello("alpha"),
        status_message(full_status(vec![certificate(
            "agent/client-kubelet.crt",
            "01",
        )])),
    ]);
    let inbound = as_node(&hub, &alpha)
        .connect(messages)
        .await
        .expect("Connect during the flood")
        .into_inner();
    eventually("alpha is listed", Duration::from_secs(5), || {
        hub.node_names() == ["alpha"]
    })
    .await;
    eprintln!(
        "during the flood: `nodes` answered in {answered:?}; alpha enrolled and listed after {:?}",
        started.elapsed()
    );
    assert!(answered < Duration::from_secs(3), "{answered:?}");

    // 3. 300 concurrent enrollments with tokens never issued, each on its own connection, from
    //    another peer: refused by the token check, or at the door when over the peer's share.
    let started = Instant::now();
    let mut attempts = tokio::task::JoinSet::new();
    for i in 0..300 {
        let channel = channel_from(
            enroll_peer,
            &hub,
            tls::enrollment_config(&token.pin).expect("TLS"),
        );
        let key = NodeKey::generate().expect("key");
        attempts.spawn(async move {
            AgentServiceClient::new(channel)
                .enroll(pb::EnrollRequest {
                    token: format!("fl{i:04}.0123456789abcdef"),
                    node_name: format!("flood-{i}"),
                    csr_pem: key.csr_pem(&format!("flood-{i}")).expect("csr"),
                    cluster: String::new(),
                })
                .await
        });
    }
    let (mut denied, mut at_the_door) = (0, 0);
    while let Some(joined) = attempts.join_next().await {
        match joined.expect("attempt") {
            Ok(_) => panic!("an enrollment with a token never issued succeeded"),
            Err(s) if s.code() == Code::PermissionDenied => {
                assert_eq!(s.message(), "join token refused");
                denied += 1;
            }
            refused_there => {
                transport_failure("an enrollment over the peer's share", refused_there);
                at_the_door += 1;
            }
        }
    }
    let took = started.elapsed();
    eprintln!(
        "enroll flood: {denied} refused by the token check, {at_the_door} at the door, in {took:?}"
    );
    assert!(denied >= MAX_UNAUTHENTICATED_PER_PEER, "{denied}");
    assert!(took < Duration::from_secs(20), "{took:?}");

    // 4. The hub is alive, answers at once, and its memory did not run away.
    let started = Instant::now();
    assert_eq!(hub.node_names(), ["alpha"]);
    let answered = started.elapsed();
    let rss = rss_kib(hub.pid());
    eprintln!(
        "after the floods: `nodes` answered in {answered:?}; RSS {rss_before} KiB before, {rss} KiB after"
    );
    assert!(answered < Duration::from_secs(3), "{answered:?}");
    assert!(rss < 300 * 1024, "RSS {rss} KiB");

    // 5. The held connections never sent a TLS hello: the hub drops them at its handshake
    //    deadline, and the peer may connect again.
    for tcp in &mut held {
        let left =
            (HANDSHAKE_TIMEOUT + Duration::from_secs(5)).saturating_sub(flood_started.elapsed());
        assert!(
            closed_within(tcp, left).await,
            "an idle connection outlived the handshake deadline"
        );
    }
    eprintln!(
        "idle connections dropped after {:?}",
        flood_started.elapsed()
    );
    refused(
        "the flooding peer, once its connections are gone",
        AdminServiceClient::new(channel_from(
            idle_peer,
            &hub,
            tls::enrollment_config(&token.pin).expect("TLS"),
        ))
        .list_nodes(pb::ListNodesRequest::default())
        .await,
        Code::Unauthenticated,
        &["an admin certificate is required"],
    );
    let log = hub.log();
    let refusals = |peer: &str| {
        log.lines()
            .filter(|l| l.contains("refusing connections") && l.contains(peer))
            .count()
    };
    assert_eq!(refusals("127.0.41.8"), 1, "logged once per peer:\n{log}");
    assert!(refusals("127.0.42.8") >= 1, "{log}");
    drop((open, inbound));

    let stopped = hub.stop();
    let nodes = stopped.rows("SELECT name FROM nodes");
    assert_eq!(nodes, [serde_json::json!({"name": "alpha"})]);
    let used = stopped.rows("SELECT used_by FROM join_tokens WHERE used_by IS NOT NULL");
    assert_eq!(used, [serde_json::json!({"used_by": "alpha"})]);
    stopped.assert_log_keeps(&[token.secret(), &alpha.key_pem, "0123456789abcdef"]);
}

// ---------------------------------------------------------------------------------------------
// Identity: enrollment under a name, current and superseded or revoked certificates, roles,
// one hub per state dir.

/// A hello claiming `role`.
fn hello_as(name: &str, role: pb::NodeRole) -> pb::AgentMessage {
    let mut message = hello(name);
    if let Some(pb::agent_message::Body::Hello(hello)) = message.body.as_mut() {
        hello.role = role.into();
    }
    message
}

/// The serial of a PEM certificate, as the hub records it (lowercase hex, no leading zeros).
fn serial_of(cert_pem: &str) -> String {
    let (_, block) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).expect("PEM");
    let cert = block.parse_x509().expect("X.509");
    let raw = cert.raw_serial();
    let start = raw.iter().position(|b| *b != 0).unwrap_or(0);
    hex::encode(&raw[start..])
}

/// Opens `id`'s stream with a hello claiming `role` and waits until the hub lists the node
/// online; the stream stays open while the returned pair lives.
async fn connected(
    hub: &Hub,
    id: &Identity,
    name: &str,
    role: pb::NodeRole,
) -> (
    mpsc::Sender<pb::AgentMessage>,
    tonic::Streaming<pb::HubMessage>,
) {
    let (open, messages) = held_open(vec![hello_as(name, role)]);
    let inbound = as_node(hub, id)
        .connect(messages)
        .await
        .unwrap_or_else(|s| panic!("{name} connects: {s:?}"))
        .into_inner();
    eventually(
        &format!("{name} is online"),
        Duration::from_secs(10),
        || {
            hub.json(&["nodes"])["nodes"]
                .as_array()
                .is_some_and(|n| n.iter().any(|n| n["name"] == name && n["online"] == true))
        },
    )
    .await;
    (open, inbound)
}

/// Renews `id`'s certificate; the renewed identity.
async fn renew(hub: &Hub, id: &Identity, name: &str) -> Result<Identity, tonic::Status> {
    let key = NodeKey::generate().expect("key");
    let response = as_node(hub, id)
        .renew_certificate(pb::RenewRequest {
            csr_pem: key.csr_pem(name).expect("csr"),
        })
        .await?
        .into_inner();
    Ok(Identity {
        key_pem: key.to_pem(),
        cert_pem: response.certificate_pem,
        ca_pem: id.ca_pem.clone(),
    })
}

/// Asserts that `id`'s Connect and RenewCertificate are refused as UNAUTHENTICATED, each
/// message holding every one of `needles`.
async fn certificate_refused(hub: &Hub, id: &Identity, name: &str, needles: &[&str]) {
    refused(
        &format!("Connect with {name}'s refused certificate"),
        stream_refusal(&mut as_node(hub, id), vec![hello(name)]).await,
        Code::Unauthenticated,
        needles,
    );
    refused(
        &format!("RenewCertificate with {name}'s refused certificate"),
        renew(hub, id, name).await,
        Code::Unauthenticated,
        needles,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbound_token_cannot_enroll_a_name_that_is_already_enrolled() {
    let hub = Hub::start("127.0.44.1");
    let alpha = enroll(&hub, &hub.token("10m"), "alpha")
        .await
        .expect("enroll alpha");
    let second = hub.token("10m");
    refused(
        "a second enrollment of alpha with an unbound token",
        enroll(&hub, &second, "alpha").await,
        Code::AlreadyExists,
        &[
            "\"alpha\" is already enrolled",
            "rke2-hub token create --node alpha --replace",
        ],
    );
    // The refusal spent nothing: the token still enrolls a new name, and alpha keeps its
    // certificate.
    enroll(&hub, &second, "beta").await.expect("enroll beta");
    let _alpha_stream = connected(&hub, &alpha, "alpha", pb::NodeRole::Agent).await;
    let log = hub.log();
    assert!(
        log.lines()
            .any(|l| l.contains("enrollment refused") && l.contains("alpha")),
        "{log}"
    );
    let stopped = hub.stop();
    let used =
        stopped.rows("SELECT used_by FROM join_tokens WHERE used_by IS NOT NULL ORDER BY used_by");
    assert_eq!(
        used,
        [
            serde_json::json!({"used_by": "alpha"}),
            serde_json::json!({"used_by": "beta"})
        ]
    );
    stopped.assert_log_keeps(&[second.secret(), &alpha.key_pem]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_bound_to_a_node_enrolls_only_that_node() {
    let hub = Hub::start("127.0.44.2");
    let for_alpha = hub.token_with("10m", &["--node", "alpha"]);
    refused(
        "beta enrolling with alpha's token",
        enroll(&hub, &for_alpha, "beta").await,
        Code::PermissionDenied,
        &["bound to node \"alpha\"", "\"beta\""],
    );
    assert!(hub.node_names().is_empty());
    let alpha = enroll(&hub, &for_alpha, "alpha")
        .await
        .expect("alpha with its own token");
    let _stream = connected(&hub, &alpha, "alpha", pb::NodeRole::Agent).await;
    // A token bound to an enrolled name without --replace is refused when it is made.
    let out = hub.cli(&["token", "create", "--node", "alpha"]);
    assert!(!out.status.success(), "a useless token was made");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"alpha\" is already enrolled") && stderr.contains("--replace"),
        "{stderr}"
    );
    let out = hub.cli(&["token", "create", "--replace"]);
    assert!(!out.status.success(), "--replace without --node");
    hub.stop()
        .assert_log_keeps(&[for_alpha.secret(), &alpha.key_pem]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_supersedes_the_old_certificate_for_connect_and_renew() {
    let hub = Hub::start("127.0.44.3");
    let old = enroll(&hub, &hub.token("10m"), "alpha")
        .await
        .expect("enroll alpha");
    let old_serial = serial_of(&old.cert_pem);
    let (old_open, mut old_inbound) = connected(&hub, &old, "alpha", pb::NodeRole::Agent).await;
    let replacing = hub.token_with("10m", &["--node", "alpha", "--replace"]);
    let new = enroll(&hub, &replacing, "alpha")
        .await
        .expect("re-enroll alpha with --replace");
    // The superseded certificate's live stream is ended at once.
    let ended = tokio::time::timeout(STREAM_VERDICT, async {
        loop {
            match old_inbound.message().await {
                Ok(Some(_)) => {}
                other => return other.map(|_| ()),
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the replaced certificate's stream stayed open"
    );
    drop(old_open);
    let needles = ["superseded", "node alpha", old_serial.as_str()];
    certificate_refused(&hub, &old, "alpha", &needles).await;
    let stream = connected(&hub, &new, "alpha", pb::NodeRole::Agent).await;
    drop(stream);

    // Renewal: the certificate it was made with stays accepted until the renewed one is
    // used, because the answer may be lost on its way (here the first one is): the agent
    // renews again with its old certificate, and the lost one is superseded. Once the
    // renewed certificate connects, the old one is superseded for good.
    let lost = renew(&hub, &new, "alpha")
        .await
        .expect("renew (answer lost)");
    let renewed = renew(&hub, &new, "alpha")
        .await
        .expect("renew again with the certificate before the lost renewal");
    let lost_serial = serial_of(&lost.cert_pem);
    certificate_refused(&hub, &lost, "alpha", &["superseded", &lost_serial]).await;
    let _stream = connected(&hub, &renewed, "alpha", pb::NodeRole::Agent).await;
    let new_serial = serial_of(&new.cert_pem);
    certificate_refused(&hub, &new, "alpha", &["superseded", &new_serial]).await;

    let stopped = hub.stop();
    let actions: Vec<String> = stopped
        .rows("SELECT action FROM audit_log WHERE actor = 'node:alpha' ORDER BY id")
        .iter()
        .map(|r| r["action"].as_str().expect("action").to_owned())
        .collect();
    assert_eq!(
        actions,
        [
            "node.enroll",
            "node.enroll.replace",
            "node.renew",
            "node.renew",
            "node.renew.confirmed"
        ]
    );
    let revoked = stopped.rows("SELECT serial, reason FROM revoked_serials ORDER BY at, serial");
    assert!(
        revoked.contains(&serde_json::json!({"serial": old_serial, "reason": "superseded"}))
            && revoked.contains(&serde_json::json!({"serial": new_serial, "reason": "superseded"}))
            && revoked
                .contains(&serde_json::json!({"serial": lost_serial, "reason": "superseded"})),
        "{revoked:?}"
    );
    stopped.assert_log_keeps(&[replacing.secret(), &old.key_pem, &new.key_pem]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_remove_forgets_the_node_and_revokes_its_certificate() {
    let hub = Hub::start("127.0.44.4");
    let alpha = enroll(&hub, &hub.token("10m"), "alpha")
        .await
        .expect("enroll alpha");
    let serial = serial_of(&alpha.cert_pem);
    let (open, inbound) = connected(&hub, &alpha, "alpha", pb::NodeRole::Agent).await;
    open.send(status_message(full_status(vec![certificate(
        "agent/client-kubelet.crt",
        "01",
    )])))
    .await
    .expect("status");
    eventually(
        "alpha's certificates are stored",
        Duration::from_secs(10),
        || {
            !hub.json(&["certs"])["certificates"]
                .as_array()
                .expect("certificates")
                .is_empty()
        },
    )
    .await;

    let dry = hub.json(&["nodes", "remove", "alpha", "--dry-run"]);
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert_eq!(dry["revoked_serial"], serial.as_str(), "{dry}");
    assert_eq!(dry["certificates"], 1, "{dry}");
    assert_eq!(dry["was_connected"], true, "{dry}");
    let facts = hub.node_facts("alpha");
    // A dry run changes nothing: the node, its stream and its certificate stay.
    open.send(pb::AgentMessage {
        body: Some(pb::agent_message::Body::Heartbeat(pb::Heartbeat {})),
    })
    .await
    .expect("the stream is open");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hub.node_facts("alpha"), facts);
    drop((open, inbound));
    let (open, mut inbound) = connected(&hub, &alpha, "alpha", pb::NodeRole::Agent).await;

    let out = hub.cli(&["nodes", "remove", "alpha"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("removed node alpha") && said.contains(&serial),
        "{said}"
    );
    assert!(hub.node_names().is_empty(), "alpha is forgotten");
    assert!(
        hub.json(&["certs"])["certificates"]
            .as_array()
            .expect("certificates")
            .is_empty()
    );
    // Its live stream is ended, and its certificate is refused from then on.
    let ended = tokio::time::timeout(STREAM_VERDICT, async {
        loop {
            match inbound.message().await {
                Ok(Some(_)) => {}
                other => return other.map(|_| ()),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the removed node's stream stayed open");
    drop(open);
    certificate_refused(&hub, &alpha, "alpha", &["revoked", "node alpha", &serial]).await;
    assert!(
        hub.node_names().is_empty(),
        "a refused hello stores nothing"
    );

    let out = hub.cli(&["nodes", "remove", "ghost"]);
    assert!(!out.status.success(), "removing an unknown node");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("node ghost"), "{stderr}");

    // The name is free again: an unbound token enrolls it (as a new node).
    let again = enroll(&hub, &hub.token("10m"), "alpha")
        .await
        .expect("alpha enrolls again after removal");
    let _stream = connected(&hub, &again, "alpha", pb::NodeRole::Agent).await;

    let stopped = hub.stop();
    let removals = stopped.rows("SELECT actor, detail FROM audit_log WHERE action = 'node.remove'");
    assert_eq!(
        removals.len(),
        1,
        "the dry run is not audited: {removals:?}"
    );
    assert!(
        removals[0]["actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("uid:"))
            && removals[0]["detail"]
                .as_str()
                .is_some_and(|d| d.contains(&serial)),
        "{removals:?}"
    );
    stopped.assert_log_keeps(&[&alpha.key_pem]);
}

/// `rke2-hub admin-cert ARGS --state-dir <hub's>`.
fn admin_cert(hub: &Hub, args: &[&str]) -> Output {
    Command::new(built_binary("rke2-hub"))
        .arg("admin-cert")
        .args(args)
        .arg("--state-dir")
        .arg(hub.state())
        .output()
        .expect("admin-cert runs")
}

/// `admin-cert create --name NAME --out <dir>/NAME EXTRA`: the issued identity.
fn admin_identity(hub: &Hub, name: &str, extra: &[&str]) -> Identity {
    let out_dir = hub.dir.path().join(name);
    let mut args = vec!["create", "--name", name, "--out"];
    let out_text = out_dir.to_str().expect("UTF-8 path").to_owned();
    args.push(&out_text);
    args.extend(extra);
    let out = admin_cert(hub, &args);
    assert!(
        out.status.success(),
        "admin-cert create {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |file: &str| std::fs::read_to_string(out_dir.join(file)).expect("admin file");
    Identity {
        key_pem: read("admin.key"),
        cert_pem: read("admin.crt"),
        ca_pem: read("ca.crt"),
    }
}

async fn list_as_admin(hub: &Hub, id: &Identity) -> Result<(), tonic::Status> {
    AdminServiceClient::new(authenticated(hub, &id.ca_pem, &id.cert_pem, &id.key_pem))
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_or_superseded_admin_certificate_is_refused() {
    let hub = Hub::start("127.0.44.5");
    let alice = admin_identity(&hub, "alice", &[]);
    list_as_admin(&hub, &alice)
        .await
        .expect("alice is an admin");

    // One certificate per admin name: a second needs --replace, which supersedes the first.
    let out = admin_cert(
        &hub,
        &[
            "create",
            "--name",
            "alice",
            "--out",
            "/nonexistent/never-written",
        ],
    );
    assert!(
        !out.status.success(),
        "a second certificate without --replace"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("alice") && stderr.contains("--replace"),
        "{stderr}"
    );
    let bob = admin_identity(&hub, "bob", &[]);
    let bob_serial = serial_of(&bob.cert_pem);
    let out_dir = hub.dir.path().join("bob-new");
    let out = admin_cert(
        &hub,
        &[
            "create",
            "--name",
            "bob",
            "--replace",
            "--out",
            out_dir.to_str().expect("UTF-8"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    refused(
        "ListNodes with bob's superseded certificate",
        list_as_admin(&hub, &bob).await,
        Code::Unauthenticated,
        &["superseded", "admin bob", &bob_serial],
    );

    // Revocation: a dry run changes nothing; the real one refuses alice from her next call.
    let alice_serial = serial_of(&alice.cert_pem);
    let out = admin_cert(&hub, &["revoke", "alice", "--dry-run", "--output", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dry: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(dry["revoked_serial"], alice_serial.as_str(), "{dry}");
    list_as_admin(&hub, &alice)
        .await
        .expect("a dry run revokes nothing");
    let out = admin_cert(&hub, &["revoke", "alice"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    refused(
        "ListNodes with alice's revoked certificate",
        list_as_admin(&hub, &alice).await,
        Code::Unauthenticated,
        &["revoked", "admin alice", &alice_serial],
    );
    let out = admin_cert(&hub, &["revoke", "carol"]);
    assert!(!out.status.success(), "revoking an unknown admin");
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin carol"));

    let stopped = hub.stop();
    let actions =
        stopped.rows("SELECT action FROM audit_log WHERE action LIKE 'admin-cert.%' ORDER BY id");
    assert_eq!(
        actions
            .iter()
            .map(|a| a["action"].as_str().expect("action"))
            .collect::<Vec<_>>(),
        [
            "admin-cert.create",
            "admin-cert.create",
            "admin-cert.create",
            "admin-cert.revoke"
        ]
    );
    stopped.assert_log_keeps(&[&alice.key_pem, &bob.key_pem]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_never_changes_the_enrolled_role() {
    let hub = Hub::start("127.0.44.6");
    // The operator fixes alpha's role at token creation; its hello claims server.
    let alpha = enroll(
        &hub,
        &hub.token_with("10m", &["--node", "alpha", "--role", "agent"]),
        "alpha",
    )
    .await
    .expect("enroll alpha");
    let stream = connected(&hub, &alpha, "alpha", pb::NodeRole::Server).await;
    assert_eq!(hub.node_facts("alpha")["role"], "agent");
    drop(stream);
    // Without --role, beta's first hello fixes it; a later claim is ignored.
    let beta = enroll(&hub, &hub.token("10m"), "beta")
        .await
        .expect("enroll beta");
    let stream = connected(&hub, &beta, "beta", pb::NodeRole::Agent).await;
    drop(stream);
    let _stream = connected(&hub, &beta, "beta", pb::NodeRole::Server).await;
    assert_eq!(hub.node_facts("beta")["role"], "agent");
    let log = hub.log();
    assert!(
        log.lines().any(|l| l.contains("hello claims another role")
            && l.contains("alpha")
            && l.contains("server")),
        "{log}"
    );
    hub.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_on_the_same_state_dir_exits_before_touching_the_store() {
    let hub = Hub::start("127.0.44.7");
    let alpha = enroll(&hub, &hub.token("10m"), "alpha")
        .await
        .expect("enroll alpha");
    let _stream = connected(&hub, &alpha, "alpha", pb::NodeRole::Agent).await;
    // Another address and socket: only the state dir is shared.
    let mut second = Command::new(built_binary("rke2-hub"))
        .args([
            "serve",
            "--listen-addr",
            "127.0.44.8:9811",
            "--metrics-addr",
            "127.0.44.8:9812",
        ])
        .arg("--state-dir")
        .arg(hub.state())
        .arg("--admin-socket")
        .arg(hub.dir.path().join("second.sock"))
        .env("RKE2OPS_HUB_CONFIG", "/dev/null")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("a second rke2-hub starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = second.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = second.kill();
            let _ = second.wait();
            panic!("a second serve on the same state dir kept running");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert!(!status.success(), "{stderr}");
    let lock = hub.state().join("serve.lock");
    assert!(
        stderr.contains(&lock.display().to_string()) && stderr.contains(&hub.pid().to_string()),
        "the message names the lock and its holder: {stderr}"
    );
    // It never opened the store: the first hub's online node is still online (a serve that
    // opens the store marks every node offline first), and its socket still answers.
    assert_eq!(
        hub.json(&["nodes"])["nodes"][0]["online"],
        true,
        "the second serve touched the store"
    );
    assert!(!hub.dir.path().join("second.sock").exists());
    hub.stop();
}

#[test]
fn admin_cert_create_never_creates_a_ca() {
    let dir = tempfile::tempdir().expect("temp dir");
    for state in [dir.path().join("missing"), dir.path().join("empty")] {
        if state.ends_with("empty") {
            std::fs::create_dir(&state).expect("empty state dir");
        }
        let out_dir = dir.path().join("alice");
        let out = Command::new(built_binary("rke2-hub"))
            .args(["admin-cert", "create", "--name", "alice", "--out"])
            .arg(&out_dir)
            .arg("--state-dir")
            .arg(&state)
            .output()
            .expect("admin-cert runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(
            stderr.contains("no hub CA") && stderr.contains(&state.display().to_string()),
            "the error names the state dir: {stderr}"
        );
        assert!(!out_dir.exists(), "nothing written for the admin");
        if state.exists() {
            let left: Vec<_> = std::fs::read_dir(&state)
                .expect("state dir")
                .map(|e| e.expect("entry").file_name())
                .collect();
            assert!(left.is_empty(), "no CA, no database: {left:?}");
        }
        assert!(!dir.path().join("missing").exists());
    }
}

/// A node that floods the hub is cut off naming itself and the limit, before the hub parses
/// and stores what it sends: statuses beyond the burst end its stream with
/// RESOURCE_EXHAUSTED, and renewals beyond theirs are refused (the CA signs nothing).
/// Another node is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_node_is_rate_limited_by_name_and_others_are_not() {
    let hub = Hub::start("127.0.44.8");
    let alpha = enroll(&hub, &hub.token("10m"), "alpha")
        .await
        .expect("enroll alpha");
    let beta = enroll(&hub, &hub.token("10m"), "beta")
        .await
        .expect("enroll beta");
    let (flood, mut inbound) = connected(&hub, &alpha, "alpha", pb::NodeRole::Agent).await;
    let (beta_open, _beta_inbound) = connected(&hub, &beta, "beta", pb::NodeRole::Agent).await;
    for _ in 0..100 {
        let status = pb::AgentMessage {
            body: Some(pb::agent_message::Body::Status(full_status(Vec::new()))),
        };
        if flood.send(status).await.is_err() {
            break;
        }
    }
    let ended = tokio::time::timeout(STREAM_VERDICT, async {
        loop {
            match inbound.message().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("alpha's stream ended without a reason"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the flooding stream is ended");
    assert_eq!(ended.code(), Code::ResourceExhausted, "{ended:?}");
    assert!(ended.message().contains("node alpha"), "{ended:?}");
    // beta keeps its stream.
    let status = pb::AgentMessage {
        body: Some(pb::agent_message::Body::Status(full_status(Vec::new()))),
    };
    beta_open.send(status).await.expect("beta still connected");

    // Renewals: the burst passes (each with the newest certificate), the next is refused.
    let mut current = alpha;
    for i in 0..3 {
        current = renew(&hub, &current, "alpha")
            .await
            .unwrap_or_else(|s| panic!("renewal {i} within the burst: {s:?}"));
    }
    let Err(refused) = renew(&hub, &current, "alpha").await else {
        panic!("a fourth renewal at once was signed");
    };
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("node alpha") && refused.message().contains("renewals"),
        "{refused:?}"
    );
    drop(beta_open);
    hub.stop();
}

/// `ListCertificates` answers a page at a time: pages of 7 put together are exactly the
/// whole list, in order, the unreadable files come once, and a forged page token is refused
/// naming the field. `rke2-hub certs` pages too and shows every certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_come_in_pages_that_add_up_to_the_whole_list() {
    let hub = Hub::start("127.0.44.9");
    let alpha = enroll(&hub, &hub.token("10m"), "alpha")
        .await
        .expect("enroll alpha");
    let (open, _inbound) = connected(&hub, &alpha, "alpha", pb::NodeRole::Agent).await;
    let mut status = full_status(
        (0..30)
            .map(|i| certificate(&format!("server/tls/c{i:02}.crt"), &format!("{i:02x}")))
            .collect(),
    );
    status.errors = vec![pb::FileError {
        path: "server/tls/broken.crt".into(),
        reason: "empty".into(),
    }];
    open.send(pb::AgentMessage {
        body: Some(pb::agent_message::Body::Status(status)),
    })
    .await
    .expect("status sent");
    let admin_id = admin_identity(&hub, "pager", &[]);
    let mut admin = AdminServiceClient::new(authenticated(
        &hub,
        &admin_id.ca_pem,
        &admin_id.cert_pem,
        &admin_id.key_pem,
    ));
    eventually("30 certificates stored", Duration::from_secs(10), || {
        hub.json(&["certs"])["certificates"]
            .as_array()
            .is_some_and(|c| c.len() == 30)
    })
    .await;
    let whole = admin
        .list_certificates(pb::ListCertificatesRequest::default())
        .await
        .expect("one page")
        .into_inner();
    assert_eq!(whole.certificates.len(), 30);
    assert!(whole.next_page_token.is_empty());
    let (mut paged, mut errors, mut token, mut pages) = (Vec::new(), Vec::new(), String::new(), 0);
    loop {
        let page = admin
            .list_certificates(pb::ListCertificatesRequest {
                limit: 7,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("a page")
            .into_inner();
        pages += 1;
        assert!(page.certificates.len() <= 7);
        paged.extend(page.certificates);
        errors.extend(page.errors);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(pages, 5, "30 certificates in pages of 7");
    assert_eq!(paged, whole.certificates);
    assert_eq!(errors, whole.errors);
    assert_eq!(errors.len(), 1);
    refused(
        "ListCertificates with a forged page token",
        admin
            .list_certificates(pb::ListCertificatesRequest {
                page_token: "zz-not-a-token".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        &["page_token"],
    );
    drop(open);
    hub.stop();
}

/// `hello(name)` naming `cluster`.
fn hello_in(name: &str, cluster: &str) -> pb::AgentMessage {
    let mut message = hello_as(name, pb::NodeRole::Agent);
    if let Some(pb::agent_message::Body::Hello(hello)) = message.body.as_mut() {
        hello.cluster = cluster.to_owned();
    }
    message
}

/// Enrolls `name` naming `cluster` (as an agent whose config sets `cluster`).
async fn enroll_in(
    hub: &Hub,
    token: &Token,
    name: &str,
    cluster: &str,
) -> Result<Identity, tonic::Status> {
    let key = NodeKey::generate().expect("key");
    let response = AgentServiceClient::new(anonymous(hub, &token.pin))
        .enroll(pb::EnrollRequest {
            token: token.token.clone(),
            node_name: name.to_owned(),
            csr_pem: key.csr_pem(name).expect("csr"),
            cluster: cluster.to_owned(),
        })
        .await?
        .into_inner();
    Ok(Identity {
        key_pem: key.to_pem(),
        cert_pem: response.certificate_pem,
        ca_pem: response.ca_pem,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_one_cluster_at_enrollment_and_never_moves() {
    let hub = Hub::start("127.0.44.10");
    // A token bound to a cluster refuses an agent naming another; the token stays unspent.
    let for_prod = hub.token_with("10m", &["--cluster", "prod"]);
    refused(
        "a dev agent with a prod token",
        enroll_in(&hub, &for_prod, "dev-1", "dev").await,
        Code::PermissionDenied,
        &["cluster \"prod\"", "\"dev-1\"", "cluster \"dev\""],
    );
    let prod = enroll_in(&hub, &for_prod, "prod-1", "prod")
        .await
        .expect("the same token, the right cluster");
    // A cluster name that is no DNS label is refused, naming the field.
    refused(
        "a bad cluster name",
        enroll_in(&hub, &hub.token("10m"), "odd-1", "Prod_EU").await,
        Code::InvalidArgument,
        &["cluster", "DNS label"],
    );
    let out = hub.cli(&["token", "create", "--cluster", "-x"]);
    assert!(!out.status.success(), "a token for a bad cluster name");
    // An agent naming no cluster (from before clusters) is in the default one.
    let old = enroll_in(&hub, &hub.token("10m"), "old-1", "")
        .await
        .expect("old agent");

    // The enrolled cluster is the only one a hello may name.
    let err = stream_refusal(&mut as_node(&hub, &prod), vec![hello_in("prod-1", "dev")])
        .await
        .expect_err("a hello naming another cluster");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    for needle in [
        "\"prod-1\"",
        "cluster \"prod\"",
        "cluster \"dev\"",
        "--replace",
    ] {
        assert!(err.message().contains(needle), "{needle}: {err:?}");
    }
    assert!(
        !hub.node_names().contains(&"prod-1".to_owned()),
        "a refused hello changes nothing"
    );
    let (open_prod, messages) = held_open(vec![hello_in("prod-1", "prod")]);
    let _prod_stream = as_node(&hub, &prod)
        .connect(messages)
        .await
        .expect("prod-1 in prod");
    let (open_old, messages) = held_open(vec![hello_in("old-1", "")]);
    let _old_stream = as_node(&hub, &old).connect(messages).await.expect("old-1");
    eventually("both online", Duration::from_secs(10), || {
        hub.json(&["nodes"])["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == 2 && n.iter().all(|n| n["online"] == true))
    })
    .await;

    // `nodes` shows each node's cluster, filters by it, and names the clusters on a typo.
    let all = hub.json(&["nodes"]);
    let clusters: Vec<(String, String)> = all["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or("").to_owned(),
                n["cluster"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        clusters,
        [
            ("old-1".to_owned(), "default".to_owned()),
            ("prod-1".to_owned(), "prod".to_owned())
        ]
    );
    let only = hub.json(&["nodes", "--cluster", "prod"]);
    assert_eq!(only["nodes"].as_array().map(Vec::len), Some(1), "{only:#}");
    let table = String::from_utf8_lossy(&hub.cli(&["nodes"]).stdout).into_owned();
    let header = table.lines().next().unwrap_or_default().to_owned();
    assert!(header.trim_end().ends_with("CLUSTER"), "{table}");
    let out = hub.cli(&["nodes", "--cluster", "prdo"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"prdo\"") && stderr.contains("default, prod"),
        "{stderr}"
    );
    let certs = hub.cli(&["certs", "--cluster", "prod"]);
    assert!(certs.status.success(), "{certs:?}");
    drop((open_prod, open_old));
    hub.stop()
        .assert_log_keeps(&[for_prod.secret(), &prod.key_pem]);
}
