//! `rke2-hub backup` and `rke2-hub restore` with the real binaries: a backup taken while the
//! hub serves a fake fleet (lightweight agents on the real protocol, `rke2ops_tests::fleet`),
//! the hub's state wiped and restored, and the same agents reconnecting to the restarted hub
//! with the certificates they already hold: no re-enrollment. And the refusals: a running
//! hub, an existing state without `--force`, a tampered or truncated archive.
//!
//! No root needed. Run `cargo build -p rke2-hub --bins` first: the tests start the built
//! `rke2-hub`.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rke2ops_tests::fleet::{FakeFleet, FleetSpec};
use rke2ops_tests::ground::built_binary;
use rke2ops_tests::hub::HubProcess;

fn spec(servers: usize, agents: usize) -> FleetSpec {
    FleetSpec {
        servers,
        agents,
        version: "v1.33.5+rke2r1".to_owned(),
        op_time: Duration::from_millis(100),
        heartbeat: Duration::from_millis(300),
        renewal_deadline_in: None,
    }
}

/// `rke2-hub ARGS` run on the hub's machine (no admin socket: backup and restore work on the
/// state dir), with no hub.toml.
fn hub_cli(args: &[&str]) -> Output {
    tokio::task::block_in_place(|| {
        Command::new(built_binary("rke2-hub"))
            .args(args)
            .env("RKE2OPS_HUB_CONFIG", "/dev/null")
            .output()
            .expect("rke2-hub runs")
    })
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn backup(state: &Path, archive: &Path) -> Output {
    hub_cli(&[
        "backup",
        "--state-dir",
        &state.display().to_string(),
        "--output",
        &archive.display().to_string(),
    ])
}

fn restore(state: &Path, archive: &Path, force: bool) -> Output {
    let (state, archive) = (state.display().to_string(), archive.display().to_string());
    let mut args = vec!["restore", "--state-dir", &state, "--from", &archive];
    if force {
        args.push("--force");
    }
    hub_cli(&args)
}

/// `nodes --output json`: name → online.
fn nodes(hub: &HubProcess) -> Vec<(String, bool)> {
    let doc = tokio::task::block_in_place(|| hub.json(&["nodes"]));
    let mut nodes: Vec<(String, bool)> = doc["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or_default().to_owned(),
                n["online"] == true,
            )
        })
        .collect();
    nodes.sort();
    nodes
}

/// The CA pin the hub hands out with a new token.
fn ca_pin(hub: &HubProcess) -> String {
    let token = tokio::task::block_in_place(|| hub.json(&["token", "create", "--ttl", "1h"]));
    token["ca_pin"].as_str().expect("ca_pin").to_owned()
}

/// `(kind, name, serial)` of every identity in the database at `db` (read-only; the hub
/// stopped).
fn identities(db: &Path) -> Vec<(String, String, String)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("the database opens read-only");
    let mut statement = conn
        .prepare("SELECT kind, name, COALESCE(serial, '') FROM identities ORDER BY kind, name")
        .expect("query");
    statement
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("row")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// The `pre-restore-*` folders in `state`.
fn aside_dirs(state: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(state)
        .expect("state dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("pre-restore-"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restored_hub_takes_its_fleet_back_without_re_enrollment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let ip = "127.0.90.1";
    let hub = tokio::task::block_in_place(|| HubProcess::start(&state, ip));
    let grpc: SocketAddr = hub.addr.parse().expect("addr");
    let fleet = FakeFleet::start(grpc, &hub.socket(), &spec(3, 2)).await;
    let pin = ca_pin(&hub);

    // Backed up while the hub serves the fleet.
    std::fs::create_dir(dir.path().join("backups")).expect("backups dir");
    let archive = dir.path().join("backups/hub.tar.gz");
    let saved = backup(&state, &archive);
    assert!(saved.status.success(), "{}", text(&saved));
    let stdout = String::from_utf8_lossy(&saved.stdout);
    assert!(
        stdout.contains("5 nodes") && stdout.contains(&archive.display().to_string()),
        "{}",
        text(&saved)
    );
    assert!(
        stdout.contains(&pin),
        "the CA pin is shown: {}",
        text(&saved)
    );
    let stderr = String::from_utf8_lossy(&saved.stderr);
    assert!(stderr.contains("private key"), "{}", text(&saved));
    assert!(!text(&saved).contains("BEGIN"), "no PEM is printed");
    assert_eq!(mode(&archive), 0o600, "it holds the CA key");
    let again = backup(&state, &archive);
    assert!(
        !again.status.success() && text(&again).contains("--force"),
        "an existing backup is not overwritten: {}",
        text(&again)
    );

    // After the backup: one more node enrolls (in its own cluster, so its name is new).
    let late = FakeFleet::start_in(grpc, &hub.socket(), &spec(0, 1), "late").await;
    assert_eq!(nodes(&hub).len(), 6);

    // Refused while the hub serves the state dir, naming the lock; nothing moved.
    let busy = restore(&state, &archive, true);
    assert!(!busy.status.success(), "{}", text(&busy));
    assert!(
        text(&busy).contains("serve.lock") && text(&busy).contains("in use"),
        "{}",
        text(&busy)
    );
    assert!(aside_dirs(&state).is_empty());

    tokio::task::block_in_place(|| hub.stop());
    let before = identities(&state.join("hub.db"));
    assert_eq!(before.len(), 6, "{before:?}");

    // Refused over an existing state without --force, naming what is there.
    let full = restore(&state, &archive, false);
    assert!(!full.status.success(), "{}", text(&full));
    for word in ["hub.db", "pki/", "--force"] {
        assert!(text(&full).contains(word), "{word}: {}", text(&full));
    }
    assert!(aside_dirs(&state).is_empty());

    let restored = restore(&state, &archive, true);
    assert!(restored.status.success(), "{}", text(&restored));
    let stdout = String::from_utf8_lossy(&restored.stdout);
    assert!(
        stdout.contains("5 nodes") && stdout.contains("pre-restore-") && stdout.contains(&pin),
        "{}",
        text(&restored)
    );
    // Nothing lost: the replaced state is whole beside it.
    let aside = aside_dirs(&state);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(identities(&aside[0].join("hub.db")), before);
    assert!(aside[0].join("pki/ca.key").is_file());
    assert_eq!(mode(&state.join("pki")), 0o700);
    for file in ["hub.db", "pki/ca.key", "pki/ca.crt", "pki/server.key"] {
        assert_eq!(mode(&state.join(file)), 0o600, "{file}");
    }
    // The backup's identities: the late node's is not among them.
    let after = identities(&state.join("hub.db"));
    let expected: Vec<_> = before
        .iter()
        .filter(|(_, name, _)| name != "late-agent-1")
        .cloned()
        .collect();
    assert_eq!(after, expected);

    // The restarted hub gets every agent of the backup back, online with its own certificate;
    // the node enrolled after the backup is unknown (its agent is refused).
    let hub = tokio::task::block_in_place(|| HubProcess::start(&state, ip));
    let mut wanted: Vec<(String, bool)> = fleet.names.iter().map(|n| (n.clone(), true)).collect();
    wanted.sort();
    let started = Instant::now();
    loop {
        let now = nodes(&hub);
        if now == wanted {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the fleet did not come back: {now:?}, wanted {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ca_pin(&hub), pin, "the same CA");
    tokio::task::block_in_place(|| hub.stop());
    assert_eq!(
        identities(&state.join("hub.db")),
        expected,
        "nobody re-enrolled: the same serials"
    );
    drop(late);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_or_truncated_backup_is_refused_naming_the_member() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let hub = tokio::task::block_in_place(|| HubProcess::start(&state, "127.0.90.2"));
    tokio::task::block_in_place(|| hub.stop());
    // A backup of a stopped hub works too.
    let archive = dir.path().join("hub.tar.gz");
    let saved = backup(&state, &archive);
    assert!(saved.status.success(), "{}", text(&saved));

    // The same manifest, one byte of the database changed.
    let tampered = dir.path().join("tampered.tar.gz");
    rewrite(&archive, &tampered, |path, bytes| {
        if path == "hub.db" {
            let last = bytes.len() - 1;
            bytes[last] ^= 0xff;
        }
    });
    let fresh = dir.path().join("fresh");
    let refused = restore(&fresh, &tampered, false);
    assert!(!refused.status.success(), "{}", text(&refused));
    for word in ["tampered.tar.gz", "member hub.db", "SHA-256"] {
        assert!(text(&refused).contains(word), "{word}: {}", text(&refused));
    }
    assert!(!fresh.exists(), "a refused archive changes nothing");

    let bytes = std::fs::read(&archive).expect("archive");
    let truncated = dir.path().join("truncated.tar.gz");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let refused = restore(&fresh, &truncated, false);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("truncated.tar.gz") && text(&refused).contains("truncated"),
        "{}",
        text(&refused)
    );
    assert!(!fresh.exists());

    // The untouched archive restores into a fresh dir.
    let restored = restore(&fresh, &archive, false);
    assert!(restored.status.success(), "{}", text(&restored));
}

/// Copies the archive `from` to `to`, every member through `change` (the manifest kept as
/// it was, so the checksums no longer match what changed).
fn rewrite(from: &Path, to: &Path, mut change: impl FnMut(&str, &mut Vec<u8>)) {
    use std::io::Read as _;
    let input = std::fs::File::open(from).expect("archive");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(input));
    let output = std::fs::File::create(to).expect("copy");
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        output,
        flate2::Compression::default(),
    ));
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").display().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("member");
        change(&path, &mut bytes);
        let mut header = entry.header().clone();
        header.set_size(bytes.len() as u64);
        header.set_cksum();
        builder.append(&header, &bytes[..]).expect("append");
    }
    builder.into_inner().expect("tar").finish().expect("gzip");
}

#[test]
fn the_commands_are_documented_in_help() {
    for command in ["backup", "restore"] {
        let out = Command::new(built_binary("rke2-hub"))
            .args([command, "--help"])
            .output()
            .expect("rke2-hub runs");
        assert!(out.status.success(), "{}", text(&out));
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("--state-dir") && help.contains("--force"),
            "{help}"
        );
    }
}
