//! The hub store survives its process being killed: a child process writes in a loop and
//! prints what each call reported committed; it is SIGKILLed mid-stream, several times, and the
//! database must pass SQLite's integrity check and hold everything the child was told was
//! committed. Also: data survives a clean reopen.
//!
//! The child is this test binary itself, re-run with `CHILD_DB_ENV` set on the ignored test
//! [`kill9_child_writer`], so no extra binary ships.

#![allow(clippy::unwrap_used)] // tests: a failing unwrap names its line

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rke2_hub::store::{CertRow, FileErrorRow, Store, hash_secret};
use time::OffsetDateTime;

/// Set (to the database path) when this binary runs as the writing child.
const CHILD_DB_ENV: &str = "RKE2OPS_STORE_DURABILITY_CHILD_DB";
/// The node whose certificate snapshot the child keeps replacing.
const NODE: &str = "durable-node";
/// Certificates per snapshot: enough that a snapshot spans many pages.
const SNAPSHOT_SIZE: u32 = 40;
/// How long the child writes before it is killed.
const KILL_AFTER: Duration = Duration::from_millis(300);

fn snapshot(generation: u64) -> Vec<CertRow> {
    let now = OffsetDateTime::now_utc();
    (0..SNAPSHOT_SIZE)
        .map(|index| CertRow {
            path: format!("/var/lib/rancher/rke2/server/tls/cert-{index}.crt"),
            index: 0,
            subject: format!("CN=cert-{index}"),
            issuer: "CN=rke2-server-ca".to_owned(),
            serial: format!("{generation:016x}"),
            usages: vec!["ServerAuth".to_owned(), "ClientAuth".to_owned()],
            is_ca: false,
            sans: vec!["localhost".to_owned(); 8],
            not_before: now,
            not_after: now + time::Duration::days(365),
            status: "OK".to_owned(),
        })
        .collect()
}

/// The child: appends audit entries and, every few, replaces the node's snapshot, printing
/// each one only after the store returned `Ok`. Runs until killed (bounded in case the parent
/// died).
#[test]
#[ignore = "the writing child of kill9_keeps_every_committed_write; run by it"]
fn kill9_child_writer() {
    let Some(path) = std::env::var_os(CHILD_DB_ENV) else {
        return; // run by hand without the parent: nothing to do
    };
    let store = Store::open(Path::new(&path)).unwrap();
    let mut out = std::io::stdout().lock();
    let started = Instant::now();
    let mut generation: u64 = std::env::var("GENERATION_START").unwrap().parse().unwrap();
    for n in 0u64..1_000_000 {
        if started.elapsed() > Duration::from_secs(30) {
            break;
        }
        let now = OffsetDateTime::now_utc();
        let id = store
            .audit("durability-test", "write", &format!("row {n}"), now)
            .unwrap();
        writeln!(out, "audit {id}").unwrap();
        if n % 5 == 0 {
            generation += 1;
            store
                .replace_certificates(NODE, &snapshot(generation), &[], now)
                .unwrap();
            writeln!(out, "snapshot {generation}").unwrap();
        }
        out.flush().unwrap();
    }
}

/// What one child run reported committed.
#[derive(Default)]
struct Committed {
    audit_ids: BTreeSet<i64>,
    last_generation: Option<u64>,
}

/// Runs the child on `db` until it has committed at least once, lets it write for
/// [`KILL_AFTER`], SIGKILLs it and returns what it printed.
fn run_and_kill(db: &Path, generation_start: u64) -> Committed {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill9_child_writer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "--quiet",
        ])
        .env(CHILD_DB_ENV, db)
        .env("GENERATION_START", generation_start.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut committed = Committed::default();
    let mut record = |line: String| {
        if let Some(id) = line.strip_prefix("audit ") {
            committed.audit_ids.insert(id.parse().unwrap());
        } else if let Some(generation) = line.strip_prefix("snapshot ") {
            committed.last_generation = Some(generation.parse().unwrap());
        }
    };
    // Wait for the first commit (the child may take a moment to start), then let it run.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the child commits within 20 s");
        let first = line.starts_with("audit ");
        record(line);
        if first {
            break;
        }
    }
    std::thread::sleep(KILL_AFTER);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    for line in lines.try_iter() {
        record(line);
    }
    committed
}

#[test]
fn kill9_keeps_every_committed_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hub.db");
    {
        let store = Store::open(&db).unwrap();
        store
            .upsert_node_hello(
                NODE,
                "server",
                "v1.31.4+rke2r1",
                "0.1.0",
                OffsetDateTime::now_utc(),
            )
            .unwrap();
    }

    let mut all_ids = BTreeSet::new();
    let mut generation_start = 0;
    for round in 0..3 {
        let committed = run_and_kill(&db, generation_start);
        assert!(
            !committed.audit_ids.is_empty(),
            "round {round}: nothing committed"
        );
        all_ids.extend(committed.audit_ids.iter().copied());

        // A fresh raw connection: the file must be intact after the kill.
        let raw = rusqlite::Connection::open(&db).unwrap();
        let integrity: Vec<String> = raw
            .prepare("PRAGMA integrity_check")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(integrity, ["ok"], "round {round}");
        drop(raw);

        // Reopening runs the migrations again (idempotent) and must find every printed write.
        let store = Store::open(&db).unwrap();
        let stored: BTreeSet<i64> = store
            .audit_log(usize::MAX)
            .unwrap()
            .into_iter()
            .map(|entry| entry.id)
            .collect();
        let missing: Vec<_> = all_ids.difference(&stored).collect();
        assert!(
            missing.is_empty(),
            "round {round}: lost committed audit ids {missing:?}"
        );

        // The snapshot is whole, and at least as new as the last one reported committed.
        let certs = store
            .certificates(Some(NODE), None, OffsetDateTime::now_utc())
            .unwrap();
        assert_eq!(certs.len(), SNAPSHOT_SIZE as usize, "round {round}");
        let serials: BTreeSet<&str> = certs.iter().map(|(_, c)| c.serial.as_str()).collect();
        assert_eq!(
            serials.len(),
            1,
            "round {round}: a torn snapshot {serials:?}"
        );
        let stored_generation = u64::from_str_radix(serials.first().unwrap(), 16).unwrap();
        let reported = committed.last_generation.unwrap();
        assert!(
            stored_generation >= reported,
            "round {round}: snapshot {stored_generation} older than committed {reported}"
        );
        generation_start = stored_generation + 1_000;
        eprintln!(
            "round {round}: {} audit rows and snapshot {reported} committed before SIGKILL, all kept",
            committed.audit_ids.len()
        );
    }
}

#[test]
fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hub.db");
    let now = OffsetDateTime::from_unix_timestamp(1_780_000_000).unwrap();
    {
        let store = Store::open(&db).unwrap();
        store
            .upsert_node_hello("n1", "server", "v1.31.4+rke2r1", "0.1.0", now)
            .unwrap();
        store
            .update_node_status(
                "n1",
                "active",
                Some("OK"),
                Some(now + time::Duration::days(200)),
                now,
            )
            .unwrap();
        let mut certs = snapshot(7);
        certs.truncate(2);
        let errors = [FileErrorRow {
            path: "/tls/empty.crt".to_owned(),
            reason: "empty".to_owned(),
        }];
        store
            .replace_certificates("n1", &certs, &errors, now)
            .unwrap();
        store
            .insert_token(
                "abc123",
                &hash_secret("s"),
                now + time::Duration::hours(1),
                "uid:0",
                now,
            )
            .unwrap();
        store
            .consume_token("abc123", &hash_secret("s"), "n1", now)
            .unwrap();
        store.audit("uid:0", "token.create", "ttl 1h", now).unwrap();
    }
    let store = Store::open(&db).unwrap();
    let node = store.node("n1").unwrap().unwrap();
    assert_eq!(node.service_state, "active");
    assert_eq!(node.renewal_deadline, Some(now + time::Duration::days(200)));
    assert_eq!(store.certificates(None, None, now).unwrap().len(), 2);
    assert_eq!(store.file_errors(Some("n1")).unwrap().len(), 1);
    assert_eq!(store.tokens().unwrap()[0].used_by.as_deref(), Some("n1"));
    assert_eq!(store.audit_log(10).unwrap()[0].action, "token.create");
    // The token stays used across the restart.
    assert!(
        store
            .consume_token("abc123", &hash_secret("s"), "n2", now)
            .is_err()
    );
}
