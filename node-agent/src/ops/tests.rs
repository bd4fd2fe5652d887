//! The runner's rollback paths against a fake node: a fake systemd ([`FakeSystemd`]), fake
//! probes ([`FakeProbes`]) and a temporary data dir holding real certificates (P-256, signed
//! with ring), with `rke2` a shell script written beside it. No root, no systemd, no network.
//!
//! The fakes share one [`FakeNode`], which outlives a runner: a crashed runner and the fresh
//! one that resumes it see the same unit and the same files, as two agent processes would.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use time::OffsetDateTime;

use super::journal::{Journal, JournalError, OpRecord};
use super::runner::{Progress, Runner};
use super::setup::NodeSetup;
use super::steps::{OpKind, Step};
use crate::health::HealthError;
use crate::health::HealthProbes;
use crate::health::apiserver::Readyz;
use crate::health::etcd::{EtcdHealth, MemberHealth};
use crate::service::{JobResult, Rke2Unit, ServiceError, ServiceManager, UnitLog, UnitState};

// ---------------------------------------------------------------------------------------
// Certificates: minimal X.509 v3 (self-signed P-256 leaves, no extensions, so not CAs).

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    match len {
        0..=0x7f => out.push(len as u8),
        0x80..=0xff => out.extend([0x81, len as u8]),
        _ => out.extend([0x82, (len >> 8) as u8, len as u8]),
    }
    out.extend_from_slice(content);
    out
}

fn sequence(parts: &[&[u8]]) -> Vec<u8> {
    der(0x30, &parts.concat())
}

fn utc_time(t: OffsetDateTime) -> Vec<u8> {
    let text = format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}Z",
        t.year() % 100,
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    der(0x17, text.as_bytes())
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ascii"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn name(cn: &str) -> Vec<u8> {
    sequence(&[&der(
        0x31,
        &sequence(&[&[0x06, 0x03, 0x55, 0x04, 0x03], &der(0x0c, cn.as_bytes())]),
    )])
}

fn p256_key() -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("key");
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).expect("key")
}

/// A CA: its name and the key its certificates are signed with.
struct Ca {
    name: Vec<u8>,
    key: EcdsaKeyPair,
}

/// A certificate (PEM) for `subject`'s key, signed by `issuer`, valid from `not_before` for
/// `days`; `is_ca` adds `basicConstraints: critical, CA:TRUE`.
fn certificate(
    subject: &[u8],
    subject_key: &EcdsaKeyPair,
    issuer: &Ca,
    not_before: OffsetDateTime,
    days: i64,
    is_ca: bool,
) -> String {
    let rng = SystemRandom::new();
    let ecdsa_with_sha256 =
        sequence(&[&[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]]);
    let spki = sequence(&[
        &sequence(&[
            &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01],
            &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        ]),
        &der(
            0x03,
            &[&[0u8][..], subject_key.public_key().as_ref()].concat(),
        ),
    ]);
    let mut serial = [0u8; 8];
    ring::rand::SecureRandom::fill(&rng, &mut serial).expect("random");
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    let basic_constraints = sequence(&[
        &[0x06, 0x03, 0x55, 0x1d, 0x13],
        &[0x01, 0x01, 0xff],
        &der(0x04, &sequence(&[&[0x01, 0x01, 0xff]])),
    ]);
    let extensions = if is_ca {
        der(0xa3, &sequence(&[&basic_constraints]))
    } else {
        vec![]
    };
    let tbs = sequence(&[
        &der(0xa0, &der(0x02, &[2])),
        &der(0x02, &serial),
        &ecdsa_with_sha256,
        &issuer.name,
        &sequence(&[
            &utc_time(not_before),
            &utc_time(not_before + time::Duration::days(days)),
        ]),
        subject,
        &spki,
        &extensions,
    ]);
    let signature = issuer.key.sign(&rng, &tbs).expect("sign");
    let cert = sequence(&[
        &tbs,
        &ecdsa_with_sha256,
        &der(0x03, &[&[0u8][..], signature.as_ref()].concat()),
    ]);
    pem("CERTIFICATE", &cert)
}

/// A self-signed CA valid for ten years, and its PEM.
fn ca(cn: &str) -> (Ca, String) {
    let ca = Ca {
        name: name(cn),
        key: p256_key(),
    };
    let not_before = OffsetDateTime::now_utc() - time::Duration::days(400);
    let pem = certificate(&ca.name, &ca.key, &ca, not_before, 3650, true);
    (ca, pem)
}

/// A leaf for `cn` signed by `ca`, valid from `not_before` for a year.
fn leaf_pem(ca: &Ca, cn: &str, not_before: OffsetDateTime) -> String {
    certificate(&name(cn), &p256_key(), ca, not_before, 365, false)
}

/// The leaf files of the test node (relative to `server/tls`).
const LEAVES: [&str; 3] = [
    "client-admin.crt",
    "serving-kube-apiserver.crt",
    "etcd/client.crt",
];

/// One certificate set, by file.
type CertSet = BTreeMap<&'static str, String>;

fn cert_set(ca: &Ca, not_before: OffsetDateTime) -> CertSet {
    LEAVES
        .iter()
        .map(|file| (*file, leaf_pem(ca, file, not_before)))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The fake node.

/// What systemd knows about the RKE2 unit, shared by every fake of one node.
#[derive(Debug, Default)]
struct FakeNode {
    /// The unit runs.
    active: bool,
    /// The last start failed (until reset-failed or a successful start).
    failed: bool,
    /// How many of the next starts/restarts fail.
    failing_starts: u32,
    /// Every job, in order (`start`, `stop`, `restart`, `daemon-reload`).
    jobs: Vec<String>,
}

#[derive(Debug, Clone)]
struct FakeSystemd {
    node: Arc<Mutex<FakeNode>>,
    unit: Rke2Unit,
}

impl FakeSystemd {
    fn start_job(&self, name: &str) -> JobResult {
        let mut node = self.node.lock().unwrap();
        node.jobs.push(name.to_owned());
        if node.failing_starts > 0 {
            node.failing_starts -= 1;
            node.active = false;
            node.failed = true;
            JobResult::Failed
        } else {
            node.active = true;
            node.failed = false;
            JobResult::Done
        }
    }
}

impl ServiceManager for FakeSystemd {
    async fn start(&self, _unit: &str) -> Result<JobResult, ServiceError> {
        Ok(self.start_job("start"))
    }

    async fn stop(&self, _unit: &str) -> Result<JobResult, ServiceError> {
        let mut node = self.node.lock().unwrap();
        node.jobs.push("stop".to_owned());
        node.active = false;
        Ok(JobResult::Done)
    }

    async fn restart(&self, _unit: &str) -> Result<JobResult, ServiceError> {
        Ok(self.start_job("restart"))
    }

    async fn state(&self, unit: &str) -> Result<UnitState, ServiceError> {
        let node = self.node.lock().unwrap();
        let ours = unit == self.unit.name();
        let (active_state, sub_state) = match (ours, node.active, node.failed) {
            (true, true, _) => ("active", "running"),
            (true, false, true) => ("failed", "failed"),
            _ => ("inactive", "dead"),
        };
        Ok(UnitState {
            load_state: if ours { "loaded" } else { "not-found" }.to_owned(),
            active_state: active_state.to_owned(),
            sub_state: sub_state.to_owned(),
            result: if node.failed { "exit-code" } else { "success" }.to_owned(),
            active_enter: None,
            n_restarts: 0,
            exec_main_status: i32::from(node.failed),
            // A process whose executable was not replaced (this test's own).
            main_pid: if node.active { std::process::id() } else { 0 },
        })
    }

    async fn reset_failed(&self, _unit: &str) -> Result<(), ServiceError> {
        self.node.lock().unwrap().failed = false;
        Ok(())
    }

    async fn daemon_reload(&self) -> Result<(), ServiceError> {
        self.node
            .lock()
            .unwrap()
            .jobs
            .push("daemon-reload".to_owned());
        Ok(())
    }
}

/// Healthy etcd (one member), an apiserver that serves whatever serving certificate is on
/// disk, and a kubelet whose health the test decides.
#[derive(Clone)]
struct FakeProbes {
    data_dir: PathBuf,
    kubelet_healthy: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl std::fmt::Debug for FakeProbes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeProbes").finish_non_exhaustive()
    }
}

impl HealthProbes for FakeProbes {
    async fn apiserver_readyz(&self, _timeout: Duration) -> Result<Readyz, HealthError> {
        let file = self.data_dir.join("server/tls/serving-kube-apiserver.crt");
        let served_chain = std::fs::read(&file)
            .map(|bytes| {
                rke2ops_common::certs::parse::parse_bundle(&bytes)
                    .certs
                    .into_iter()
                    .map(|c| c.der)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Readyz {
            status: 200,
            body: "readyz check passed".to_owned(),
            served_chain,
        })
    }

    async fn kubelet_healthz(&self, _timeout: Duration) -> Result<bool, HealthError> {
        Ok((self.kubelet_healthy)())
    }

    async fn etcd_health(&self, _timeout: Duration) -> Result<EtcdHealth, HealthError> {
        Ok(EtcdHealth {
            members: vec![MemberHealth {
                id: 1,
                name: "node-1".to_owned(),
                client_urls: vec![],
                healthy: true,
                problem: None,
            }],
            leader: Some(1),
            local_member: 1,
            alarms: vec![],
        })
    }
}

/// The unit's journal: one recognisable line.
#[derive(Debug, Clone, Copy)]
struct FakeLog;

const JOURNAL_LINE: &str = "rke2: fatal: certificate signed by unknown authority";

impl UnitLog for FakeLog {
    async fn tail(&self, _unit: &str, _lines: usize) -> Vec<String> {
        vec![JOURNAL_LINE.to_owned()]
    }
}

type TestRunner = Runner<FakeSystemd, FakeProbes, FakeLog>;

/// A server node in a temporary folder: data dir with the old certificates, the new ones
/// the fake `rke2 certificate rotate` puts in their place, the journal and the install
/// prefix.
struct TestNode {
    dir: tempfile::TempDir,
    systemd: FakeSystemd,
    /// The leaves before the rotation.
    old: CertSet,
    /// The leaves the fake rotation writes.
    new: CertSet,
    /// Whether the kubelet answers healthy (asked on every probe).
    kubelet_healthy: Arc<dyn Fn() -> bool + Send + Sync>,
    /// The node's readiness deadline after a start.
    ready_timeout: Duration,
}

impl TestNode {
    /// `empty_after_rotate`: the fake rotation leaves this leaf as an empty file.
    fn new(empty_after_rotate: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = OffsetDateTime::now_utc();
        // RKE2's rotation reissues the leaves under the same CA.
        let (ca, ca_pem) = ca("rke2-client-ca@1700000000");
        let old = cert_set(&ca, now - time::Duration::days(200));
        let new = cert_set(&ca, now - time::Duration::hours(1));
        let tls = dir.path().join("data/server/tls");
        write(&tls.join("client-ca.crt"), &ca_pem);
        let fresh = dir.path().join("fresh");
        for (file, text) in &old {
            write(&tls.join(file), text);
        }
        for (file, text) in &new {
            write(&fresh.join(file), text);
        }
        // What `rke2 certificate rotate` does, as far as the agent can tell: the live
        // folder is backed up as tls-<unix seconds>, and new leaves take its place.
        // And `rke2 etcd-snapshot save --name N --data-dir D`: a file `N-<node>-<time>`
        // under `D/server/db/snapshots` (empty with RKE2OPS_TEST_EMPTY_SNAPSHOT=1, refused
        // with RKE2OPS_TEST_SNAPSHOT_FAILS=1).
        let mut script = format!(
            "#!/bin/sh\nset -e\n\
             if [ \"$1 $2 $3 $5\" = 'etcd-snapshot save --name --data-dir' ]; then\n\
             [ \"$RKE2OPS_TEST_SNAPSHOT_FAILS\" = 1 ] && {{ echo 'etcdserver: request timed out' >&2; exit 1; }}\n\
             mkdir -p \"$6/server/db/snapshots\"\n\
             if [ \"$RKE2OPS_TEST_EMPTY_SNAPSHOT\" = 1 ]; then : > \"$6/server/db/snapshots/$4-n1-$(date +%s)\";\n\
             else echo snapshot > \"$6/server/db/snapshots/$4-n1-$(date +%s)\"; fi\n\
             exit 0\nfi\n\
             [ \"$1 $2 $3\" = 'certificate rotate --data-dir' ] || exit 2\n\
             cp -a \"$4/server/tls\" \"$4/server/tls-$(date +%s)\"\n\
             cp -a '{}/.' \"$4/server/tls/\"\n",
            fresh.display()
        );
        if let Some(file) = empty_after_rotate {
            script.push_str(&format!(": > \"$4/server/tls/{file}\"\n"));
        }
        write_script(&dir.path().join("rke2"), &script);
        let systemd = FakeSystemd {
            node: Arc::new(Mutex::new(FakeNode {
                active: true,
                ..FakeNode::default()
            })),
            unit: Rke2Unit::Server,
        };
        Self {
            dir,
            systemd,
            old,
            new,
            kubelet_healthy: Arc::new(|| true),
            ready_timeout: Duration::from_secs(1),
        }
    }

    /// A node with [`OLD_VERSION`] installed under its prefix and [`NEW_VERSION`]'s release
    /// in its artifact folder; `new_release_gets_ready`: whether the kubelet is healthy
    /// once the new binary is installed (the old one always is).
    fn for_upgrade(new_release_gets_ready: bool) -> Self {
        let mut node = Self::new(None);
        let installed = node.path("prefix/bin/rke2");
        write_script(&installed, &version_script(OLD_VERSION));
        write_release(&node.path("artifacts"), NEW_VERSION);
        let old_binary = version_script(OLD_VERSION);
        node.kubelet_healthy = Arc::new(move || {
            new_release_gets_ready
                || std::fs::read_to_string(&installed).is_ok_and(|text| text == old_binary)
        });
        // Not ready at the first look is not ready: keeps the many runs below fast.
        node.ready_timeout = Duration::ZERO;
        node
    }

    fn installed_binary(&self) -> String {
        std::fs::read_to_string(self.path("prefix/bin/rke2")).expect("installed binary")
    }

    fn upgrade(&self) -> OpKind {
        OpKind::Upgrade {
            version: NEW_VERSION.to_owned(),
            source: Some(self.path("artifacts").display().to_string()),
            allow_rollback: true,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn setup(&self) -> NodeSetup {
        NodeSetup {
            data_dir: self.path("data"),
            admin_kubeconfig: self.path("rke2.yaml"),
            kubeconfig_copies: vec![],
            rke2_bin: self.path("rke2"),
            node_ip: "127.0.0.1".parse().expect("ip"),
            kubelet_healthz: String::new(),
            ready_timeout: self.ready_timeout,
            install_prefix: self.path("prefix"),
            moved_unit_dir: self.path("etc-systemd-system"),
            artifact_source: None,
            allowed_artifact_sources: vec![],
            rpm: crate::config::RpmConfig {
                repository: rke2ops_common::install::DEFAULT_RPM_REPOSITORY.into(),
                os: None,
                gpg_key: None,
                package_manager: None,
            },
            cni: vec![],
        }
    }

    /// A fresh runner (as a new agent process would build) on this node's journal.
    fn runner(&self) -> TestRunner {
        let probes = FakeProbes {
            data_dir: self.path("data"),
            kubelet_healthy: Arc::clone(&self.kubelet_healthy),
        };
        let journal = Journal::open(self.path("journal")).expect("journal");
        Runner::with_seams(self.systemd.clone(), probes, FakeLog, self.setup(), journal)
    }

    fn live_certs(&self) -> CertSet {
        LEAVES
            .iter()
            .map(|file| {
                let text = std::fs::read_to_string(self.path("data/server/tls").join(file))
                    .unwrap_or_default();
                (*file, text)
            })
            .collect()
    }

    fn unit_runs(&self) -> bool {
        let node = self.systemd.node.lock().unwrap();
        node.active && !node.failed
    }

    /// Sets one of the fake `rke2`'s switches (`RKE2OPS_TEST_*`) in the script itself: the
    /// environment is the test process's, shared by parallel tests.
    fn switch_on(&self, var: &str) {
        let script = self.path("rke2");
        let text = std::fs::read_to_string(&script).expect("script");
        write_script(
            &script,
            &text.replacen("set -e\n", &format!("set -e\n{var}=1\n"), 1),
        );
    }

    fn fail_next_starts(&self, n: u32) {
        self.systemd.node.lock().unwrap().failing_starts = n;
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

fn write_script(path: &Path, text: &str) {
    write(path, text);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn rotate_all() -> OpKind {
    OpKind::Rotate {
        services: vec![],
        etcd_snapshot: false,
    }
}

fn ok_steps(record: &OpRecord) -> Vec<Step> {
    record.log.iter().filter(|l| l.ok).map(|l| l.step).collect()
}

// ---------------------------------------------------------------------------------------
// Rotation.

#[tokio::test]
async fn rotation_with_a_healthy_restart_keeps_the_new_certificates() {
    let node = TestNode::new(None);
    let record = node.runner().run(rotate_all(), |_| {}).await.expect("runs");
    assert_eq!(record.step, Step::Done, "{:?}", record.failure);
    assert_eq!(node.live_certs(), node.new);
    assert!(node.unit_runs());
    assert!(ok_steps(&record).contains(&Step::VerifyServed));
}

#[tokio::test]
async fn rotation_restores_the_backup_when_the_unit_fails_to_start() {
    let node = TestNode::new(None);
    node.fail_next_starts(1);
    let record = node.runner().run(rotate_all(), |_| {}).await.expect("runs");
    assert_eq!(record.step, Step::Failed);
    let failure = record.failure.clone().unwrap_or_default();
    assert!(
        failure.starts_with("start-unit: start rke2-server.service: job failed"),
        "{failure}"
    );
    assert_eq!(
        ok_steps(&record)[ok_steps(&record).len() - 3..],
        [
            Step::RestoreBackup,
            Step::StartAfterFailure,
            Step::WaitAfterFailure
        ]
    );
    assert_eq!(node.live_certs(), node.old, "the old certificates are back");
    assert!(node.unit_runs(), "started again with the old certificates");
    assert_eq!(record.unit_journal, vec![JOURNAL_LINE.to_owned()]);
}

#[tokio::test]
async fn rotation_restores_the_backup_when_a_rotated_pem_is_empty() {
    let node = TestNode::new(Some("client-admin.crt"));
    let record = node.runner().run(rotate_all(), |_| {}).await.expect("runs");
    assert_eq!(record.step, Step::Failed);
    let failure = record.failure.clone().unwrap_or_default();
    assert!(
        failure.starts_with("verify-fresh:") && failure.contains("client-admin.crt"),
        "{failure}"
    );
    assert!(ok_steps(&record).contains(&Step::RestoreBackup));
    assert_eq!(node.live_certs(), node.old, "the old certificates are back");
    assert!(node.unit_runs());
}

fn rotate_with_snapshot() -> OpKind {
    OpKind::Rotate {
        services: vec![],
        etcd_snapshot: true,
    }
}

#[tokio::test]
async fn a_rotation_that_asks_for_it_snapshots_etcd_before_the_unit_stops() {
    let node = TestNode::new(None);
    let record = node
        .runner()
        .run(rotate_with_snapshot(), |_| {})
        .await
        .expect("runs");
    assert_eq!(record.step, Step::Done, "{:?}", record.failure);
    let steps = ok_steps(&record);
    assert_eq!(
        steps[..3],
        [Step::Preflight, Step::EtcdSnapshot, Step::StopUnit],
        "{steps:?}"
    );
    let snap = record
        .log
        .iter()
        .find(|l| l.step == Step::EtcdSnapshot)
        .expect("a snapshot step");
    let prefix = node
        .path("data/server/db/snapshots")
        .join(format!("rke2ops-{}-n1-", record.id));
    assert!(
        snap.detail
            .starts_with(&format!("saved {}", prefix.display())),
        "{}",
        snap.detail
    );
    assert_eq!(node.live_certs(), node.new);
    // The result names the snapshot too, for a hub that missed the step's progress.
    let result = crate::link::ops::result_of(&record, String::new());
    assert!(
        result
            .detail
            .ends_with(&format!("; etcd-snapshot: {}", snap.detail)),
        "{}",
        result.detail
    );
    // Without the request (and on agents: no etcd) there is no snapshot step.
    let plain = node.runner().run(rotate_all(), |_| {}).await.expect("runs");
    assert!(!ok_steps(&plain).contains(&Step::EtcdSnapshot));
}

#[tokio::test]
async fn a_rotation_that_fails_after_its_snapshot_still_names_it_in_the_result() {
    let node = TestNode::new(Some("client-admin.crt"));
    let record = node
        .runner()
        .run(rotate_with_snapshot(), |_| {})
        .await
        .expect("runs");
    assert_eq!(record.step, Step::Failed);
    let result = crate::link::ops::result_of(&record, String::new());
    assert!(
        result.detail.starts_with("verify-fresh:")
            && result.detail.contains("; etcd-snapshot: saved "),
        "{}",
        result.detail
    );
}

#[tokio::test]
async fn a_failed_snapshot_ends_the_rotation_before_the_unit_stops() {
    let node = TestNode::new(None);
    node.switch_on("RKE2OPS_TEST_SNAPSHOT_FAILS");
    let record = node
        .runner()
        .run(rotate_with_snapshot(), |_| {})
        .await
        .expect("runs");
    assert_eq!(record.step, Step::Failed);
    let failure = record.failure.clone().unwrap_or_default();
    assert!(
        failure.starts_with("etcd-snapshot: ") && failure.contains("request timed out"),
        "{failure}"
    );
    assert!(
        !record.log.iter().any(|l| l.step.changes_node()),
        "the unit was never stopped: {:?}",
        record.log
    );
    assert_eq!(node.live_certs(), node.old, "nothing rotated");
    assert!(node.unit_runs());
    let jobs = node.systemd.node.lock().unwrap().jobs.clone();
    assert!(jobs.is_empty(), "no systemd job ran: {jobs:?}");
}

/// Where a simulated crash strikes: when `step` starts (journaled, nothing done) or when
/// it has ended (its side effect done, the journal not yet told).
#[derive(Debug, Clone, Copy)]
struct CrashAt {
    step: Step,
    after: bool,
}

/// The payload of a simulated crash, so it is told apart from a failing assertion.
struct Crash;

/// Runs `kind` as operation `id` until the crash point, like a process killed there: the
/// run future unwinds from the progress callback (no panic hook, so no noise), its journal
/// lock is released and the journal is left as written. `false` if the operation never
/// reached the crash point (it ran to the end).
async fn run_until_crash(runner: TestRunner, id: &str, kind: OpKind, crash: CrashAt) -> bool {
    let id = id.to_owned();
    let task = tokio::spawn(async move {
        runner
            .run_with(Some(id), kind, None, move |p: &Progress<'_>| {
                if p.step == crash.step && p.outcome.is_some() == crash.after {
                    std::panic::resume_unwind(Box::new(Crash));
                }
            })
            .await
            .map(|_| ())
    });
    match task.await {
        Ok(result) => {
            result.expect("the operation runs");
            false
        }
        Err(e) => match e.try_into_panic() {
            Ok(payload) if payload.is::<Crash>() => true,
            Ok(payload) => std::panic::resume_unwind(payload),
            Err(e) => panic!("task cancelled: {e}"),
        },
    }
}

/// Waits (at most 10 s) until nobody holds `journal`'s operations lock. The crashed run
/// dropped its lock, but a sibling test that forked a child (`rke2` scripts) at that moment
/// shares the lock's open file until the child's exec closes it: a restarted agent meets the
/// same thing from a dying process, and systemd's restart delay covers it.
async fn wait_until_unlocked(journal: &Journal) {
    let started = std::time::Instant::now();
    loop {
        match journal.lock() {
            Ok(lock) => return drop(lock),
            Err(JournalError::Busy { .. }) if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("the crashed run's journal lock was never released: {e}"),
        }
    }
}

/// Crashes `kind` at the start and at the end of every step its path runs (the path taken
/// from an uninterrupted run on another node from `make_node`), resumes each with a fresh
/// runner on the same journal and hands the final record to `check`. Whatever the crash
/// point, the resumed operation keeps its id and ends finished in the journal.
async fn crash_at_every_step(
    make_node: impl Fn() -> TestNode,
    kind: impl Fn(&TestNode) -> OpKind,
    check: impl Fn(&TestNode, &OpRecord, &str),
) {
    let reference = make_node();
    let steps: Vec<Step> = reference
        .runner()
        .run(kind(&reference), |_| {})
        .await
        .expect("runs")
        .log
        .iter()
        .map(|l| l.step)
        .collect();
    for step in steps {
        for after in [false, true] {
            let crash = CrashAt { step, after };
            let node = make_node();
            let id = "op-crash-1";
            assert!(
                run_until_crash(node.runner(), id, kind(&node), crash).await,
                "{crash:?}: never reached"
            );
            let journal = Journal::open(node.path("journal")).expect("journal");
            let interrupted = journal.current().expect("readable");
            assert_eq!(
                interrupted.as_ref().map(|r| (r.id.as_str(), r.step)),
                Some((id, step)),
                "{crash:?}: the journal holds the crashed step"
            );
            wait_until_unlocked(&journal).await;
            let record = node
                .runner()
                .resume(|_| {})
                .await
                .expect("resumes")
                .expect("an interrupted operation");
            let context = format!("{crash:?}: {record:?}");
            assert_eq!(record.id, id, "{context}");
            assert!(journal.current().expect("readable").is_none(), "{context}");
            assert_eq!(
                journal.finished(id).expect("readable").map(|r| r.id),
                Some(id.to_owned()),
                "{context}"
            );
            check(&node, &record, &context);
        }
    }
}

#[tokio::test]
async fn a_rotation_crashed_at_any_step_resumes_to_a_running_unit_with_the_new_certificates() {
    for kind in [rotate_all(), rotate_with_snapshot()] {
        crash_at_every_step(
            || TestNode::new(None),
            |_| kind.clone(),
            |node, record, context| {
                assert_eq!(record.step, Step::Done, "{context}");
                assert!(node.unit_runs(), "{context}");
                assert_eq!(node.live_certs(), node.new, "{context}");
            },
        )
        .await;
    }
}

#[tokio::test]
async fn a_rolled_back_rotation_crashed_at_any_step_ends_running_on_one_certificate_set() {
    crash_at_every_step(
        || {
            let node = TestNode::new(None);
            node.fail_next_starts(1);
            node
        },
        |_| rotate_all(),
        |node, record, context| {
            assert!(node.unit_runs(), "{context}");
            // A crash after the failed start re-runs it, and the second start succeeds.
            match record.step {
                Step::Done => assert_eq!(node.live_certs(), node.new, "{context}"),
                Step::Failed => assert_eq!(node.live_certs(), node.old, "{context}"),
                other => panic!("ended at {other:?}: {context}"),
            }
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// Upgrade.

const OLD_VERSION: &str = "v1.33.5+rke2r1";
const NEW_VERSION: &str = "v1.34.1+rke2r1";

fn version_script(version: &str) -> String {
    format!("#!/bin/sh\necho 'rke2 version {version} (0123abcd)'\necho 'go version go1.24'\n")
}

/// Writes the release tarball of `version` and its checksum file into `dir`, as an
/// air-gapped artifact folder holds them.
fn write_release(dir: &Path, version: &str) {
    use sha2::Digest as _;
    let arch = super::artifacts::arch();
    let tarball = dir.join(super::artifacts::tarball_name(arch));
    std::fs::create_dir_all(dir).expect("mkdir");
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&tarball).expect("create"),
        flate2::Compression::fast(),
    );
    let mut tar = tar::Builder::new(gz);
    let binary = version_script(version);
    let mut header = tar::Header::new_gnu();
    header.set_size(binary.len() as u64);
    header.set_mode(0o755);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, "bin/rke2", binary.as_bytes())
        .expect("append");
    tar.into_inner().expect("tar").finish().expect("gz");
    let hash = hex::encode(sha2::Sha256::digest(std::fs::read(&tarball).expect("read")));
    std::fs::write(
        dir.join(super::artifacts::sums_name(arch)),
        format!("{hash}  {}\n", super::artifacts::tarball_name(arch)),
    )
    .expect("write");
}

#[tokio::test]
async fn upgrade_restores_the_previous_binary_when_the_unit_does_not_become_ready() {
    let node = TestNode::for_upgrade(false);
    let record = node
        .runner()
        .run(node.upgrade(), |_| {})
        .await
        .expect("runs");
    assert_eq!(record.step, Step::Failed);
    let failure = record.failure.clone().unwrap_or_default();
    assert!(
        failure.starts_with("wait-ready: not ready within"),
        "{failure}"
    );
    assert!(
        ok_steps(&record).contains(&Step::InstallFiles),
        "{record:?}"
    );
    assert!(
        ok_steps(&record).contains(&Step::RestorePrevious),
        "{record:?}"
    );
    assert_eq!(
        node.installed_binary(),
        version_script(OLD_VERSION),
        "the previous binary is back"
    );
    assert_eq!(record.previous_version.as_deref(), Some(OLD_VERSION));
    assert!(node.unit_runs(), "started again on the previous release");
    let jobs = node.systemd.node.lock().unwrap().jobs.clone();
    assert_eq!(
        jobs.iter().filter(|j| *j == "daemon-reload").count(),
        2,
        "reloaded after the install and after the restore: {jobs:?}"
    );
}

#[tokio::test]
async fn upgrade_to_a_release_that_gets_ready_keeps_the_new_binary() {
    let node = TestNode::for_upgrade(true);
    let record = node
        .runner()
        .run(node.upgrade(), |_| {})
        .await
        .expect("runs");
    assert_eq!(record.step, Step::Done, "{:?}", record.failure);
    assert_eq!(node.installed_binary(), version_script(NEW_VERSION));
    assert!(node.unit_runs());
}

#[tokio::test]
async fn a_server_upgrade_keeps_an_etcd_snapshot_and_says_how_to_restore_it() {
    let node = TestNode::for_upgrade(true);
    let record = node
        .runner()
        .run(node.upgrade(), |_| {})
        .await
        .expect("runs");
    assert_eq!(record.step, Step::Done, "{:?}", record.failure);
    let snap = record
        .log
        .iter()
        .find(|l| l.step == Step::EtcdSnapshot)
        .expect("a snapshot step");
    assert!(snap.ok, "{}", snap.detail);
    let prefix = format!("rke2ops-{}-n1-", record.id);
    let dir = node.path("data/server/db/snapshots");
    let files: Vec<String> = std::fs::read_dir(&dir)
        .expect("snapshots")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.iter().any(|f| f.starts_with(&prefix)), "{files:?}");
    assert!(
        snap.detail
            .starts_with(&format!("saved {}", dir.join(&prefix).display()))
            && snap.detail.ends_with(" bytes)"),
        "{}",
        snap.detail
    );
}

#[tokio::test]
async fn a_failed_or_empty_snapshot_fails_the_upgrade_before_anything_changes() {
    for (var, words) in [
        ("RKE2OPS_TEST_SNAPSHOT_FAILS", "request timed out"),
        ("RKE2OPS_TEST_EMPTY_SNAPSHOT", "is empty"),
    ] {
        let node = TestNode::for_upgrade(true);
        node.switch_on(var);
        let record = node
            .runner()
            .run(node.upgrade(), |_| {})
            .await
            .expect("runs");
        assert_eq!(record.step, Step::Failed, "{var}");
        let failure = record.failure.clone().unwrap_or_default();
        assert!(
            failure.starts_with("etcd-snapshot: ") && failure.contains(words),
            "{failure}"
        );
        assert_eq!(
            node.installed_binary(),
            version_script(OLD_VERSION),
            "nothing installed"
        );
        assert!(node.unit_runs());
        assert!(
            !record.log.iter().any(|l| l.step.changes_node()),
            "no step that changes the node ran: {:?}",
            record.log
        );
    }
}

#[tokio::test]
async fn an_upgrade_crashed_at_any_step_ends_running_on_one_whole_release() {
    for gets_ready in [true, false] {
        crash_at_every_step(
            || TestNode::for_upgrade(gets_ready),
            TestNode::upgrade,
            |node, record, context| {
                assert!(node.unit_runs(), "{context}");
                let (step, version) = if gets_ready {
                    (Step::Done, NEW_VERSION)
                } else {
                    (Step::Failed, OLD_VERSION)
                };
                assert_eq!(record.step, step, "{context}");
                assert_eq!(
                    node.installed_binary(),
                    version_script(version),
                    "{context}"
                );
            },
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------
// Air-gap images.

/// A node whose artifact folder holds [`NEW_VERSION`]'s all-in-one image archive, listed in
/// the sum file (`published`: with its right hash), and an old release's archive and one of
/// the operator's in `agent/images`.
fn node_with_images(published: bool) -> TestNode {
    use sha2::Digest as _;
    let node = TestNode::for_upgrade(true);
    let arch = super::artifacts::arch();
    let whole = super::images::whole_name(arch);
    let dir = node.path("artifacts");
    std::fs::write(dir.join(&whole), b"all images").expect("write");
    let listed = if published {
        &b"all images"[..]
    } else {
        &b"other"[..]
    };
    let sums = dir.join(super::artifacts::sums_name(arch));
    let mut text = std::fs::read_to_string(&sums).expect("sums");
    text.push_str(&format!(
        "{}  {whole}\n",
        hex::encode(sha2::Sha256::digest(listed))
    ));
    std::fs::write(&sums, text).expect("write");
    let images = node.path("data").join(super::images::IMAGES_DIR);
    std::fs::create_dir_all(&images).expect("mkdir");
    let old = super::images::placed_name(&whole, OLD_VERSION);
    std::fs::write(images.join(old), b"old images").expect("write");
    std::fs::write(images.join("my-app.tar.zst"), b"mine").expect("write");
    node
}

impl TestNode {
    fn stage_images(&self) -> OpKind {
        OpKind::StageImages {
            version: NEW_VERSION.to_owned(),
            source: Some(self.path("artifacts").display().to_string()),
        }
    }

    fn images(&self) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(self.path("data").join(super::images::IMAGES_DIR))
                .expect("images")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
        names.sort();
        names
    }

    fn unit_jobs(&self) -> Vec<String> {
        self.systemd.node.lock().unwrap().jobs.clone()
    }
}

#[tokio::test]
async fn staging_images_crashed_at_any_step_places_them_once_and_never_touches_the_unit() {
    let arch = super::artifacts::arch();
    let placed = super::images::placed_name(&super::images::whole_name(arch), NEW_VERSION);
    let old = super::images::placed_name(&super::images::whole_name(arch), OLD_VERSION);
    crash_at_every_step(
        || node_with_images(true),
        TestNode::stage_images,
        |node, record, context| {
            assert_eq!(record.step, Step::Done, "{context}");
            let mut want = vec![placed.clone(), "my-app.tar.zst".to_owned(), old.clone()];
            want.sort();
            assert_eq!(node.images(), want, "{context}");
            assert!(
                node.unit_jobs().is_empty(),
                "{context}: {:?}",
                node.unit_jobs()
            );
            assert!(
                !node.path("data").join(super::images::STAGING_DIR).exists(),
                "{context}"
            );
        },
    )
    .await;
    // Then the prune, after the plan: the old release's archive goes, the operator's stays.
    let node = node_with_images(true);
    let staged = node
        .runner()
        .run(node.stage_images(), |_| {})
        .await
        .expect("runs");
    assert_eq!(staged.step, Step::Done, "{:?}", staged.failure);
    let pruned = node
        .runner()
        .run(
            OpKind::PruneImages {
                version: NEW_VERSION.to_owned(),
            },
            |_| {},
        )
        .await
        .expect("runs");
    assert_eq!(pruned.step, Step::Done, "{:?}", pruned.failure);
    assert_eq!(node.images(), vec!["my-app.tar.zst".to_owned(), placed]);
    assert!(node.unit_jobs().is_empty());
}

#[tokio::test]
async fn an_image_archive_that_is_not_the_published_one_fails_with_nothing_placed() {
    let node = node_with_images(false);
    let before = node.images();
    let record = node
        .runner()
        .run(node.stage_images(), |_| {})
        .await
        .expect("runs");
    assert_eq!(record.step, Step::Failed);
    let failure = record.failure.clone().unwrap_or_default();
    assert!(
        failure.starts_with("verify-images: checksum mismatch for rke2-images.linux-")
            && failure.contains("expected ")
            && failure.contains(", got "),
        "{failure}"
    );
    assert_eq!(node.images(), before, "nothing placed");
    assert!(!node.path("data").join(super::images::STAGING_DIR).exists());
    assert!(node.unit_jobs().is_empty());
}
