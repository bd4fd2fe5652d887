//! `backup` then `restore` through the file system, in process: what is restored, what is
//! refused, and that a refusal changes nothing. The real binaries with a serving hub and a
//! fleet are `tests/tests/hub_backup.rs`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::archive::{Content, Staged, write_archive};
use super::manifest::{CA_KEY_MEMBER, Manifest};
use super::{BackupError, backup, restore};
use crate::store::Store;

/// A state dir as `serve` leaves it: a database with one node, the CA and the server pair.
fn hub_state(dir: &Path) -> PathBuf {
    let state = dir.join("state");
    std::fs::create_dir(&state).unwrap();
    let now = OffsetDateTime::now_utc();
    let store = Store::open(&state.join("hub.db")).unwrap();
    store
        .upsert_node_hello("server-1", "server", "v1.33.5+rke2r1", "0.1.0", now)
        .unwrap();
    let ca = crate::pki::HubCa::load_or_create(&state, now).unwrap();
    ca.load_or_issue_server(&state, &["127.0.0.1".to_owned()], now)
        .unwrap();
    state
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_backup_restores_into_an_empty_state_dir_with_private_files() {
    let dir = tempfile::tempdir().unwrap();
    let state = hub_state(dir.path());
    let archive = dir.path().join("hub.tar.gz");
    let now = OffsetDateTime::now_utc();
    let saved = backup(&state, &archive, false, now).unwrap();
    assert_eq!(saved.facts.nodes, 1);
    assert_eq!(mode(&archive), 0o600);
    assert_eq!(saved.size, std::fs::metadata(&archive).unwrap().len());
    // Nothing but the archive is left beside it (no snapshot folder, no temp file).
    assert_eq!(names(dir.path()), ["hub.tar.gz", "state"]);
    // The same path again is refused without --force, and replaced with it.
    assert!(matches!(
        backup(&state, &archive, false, now),
        Err(BackupError::OutputExists { .. })
    ));
    backup(&state, &archive, true, now).unwrap();

    let fresh = dir.path().join("new/state");
    let restored = restore(&fresh, &archive, false, now).unwrap();
    assert_eq!(restored.facts.nodes, 1);
    assert_eq!(restored.ca_pin, saved.ca_pin);
    assert!(restored.moved_aside.is_none());
    assert_eq!(mode(&fresh), 0o700);
    assert_eq!(mode(&fresh.join("pki")), 0o700);
    for file in [
        "hub.db",
        "pki/ca.key",
        "pki/ca.crt",
        "pki/server.key",
        "pki/server.crt",
    ] {
        assert_eq!(mode(&fresh.join(file)), 0o600, "{file}");
        assert!(
            !std::fs::read(fresh.join(file)).unwrap().is_empty(),
            "{file}"
        );
    }
    for file in ["pki/ca.key", "pki/ca.crt", "pki/server.crt"] {
        assert_eq!(
            std::fs::read(fresh.join(file)).unwrap(),
            std::fs::read(state.join(file)).unwrap(),
            "{file}"
        );
    }
    let store = Store::open(&fresh.join("hub.db")).unwrap();
    assert_eq!(store.nodes().unwrap()[0].name, "server-1");
    // No staging folder is left in the state dir.
    assert!(
        names(&fresh).iter().all(|n| !n.starts_with(".restore-")),
        "{:?}",
        names(&fresh)
    );
}

#[test]
fn an_existing_state_is_refused_without_force_and_moved_aside_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = hub_state(dir.path());
    let archive = dir.path().join("hub.tar.gz");
    let now = OffsetDateTime::now_utc();
    backup(&state, &archive, false, now).unwrap();
    // A change after the backup: a second node.
    Store::open(&state.join("hub.db"))
        .unwrap()
        .upsert_node_hello("agent-1", "agent", "v1.33.5+rke2r1", "0.1.0", now)
        .unwrap();
    let err = restore(&state, &archive, false, now).unwrap_err();
    assert!(
        matches!(&err, BackupError::StateExists { present, .. }
            if present == &["hub.db".to_owned(), "pki/".to_owned()]),
        "{err}"
    );
    assert!(err.to_string().contains("--force"), "{err}");
    let restored = restore(&state, &archive, true, now).unwrap();
    assert_eq!(
        restored.facts.nodes, 1,
        "the backup's state, not the later one"
    );
    let (aside, moved) = restored.moved_aside.unwrap();
    assert_eq!(aside.parent().unwrap(), state);
    assert!(moved.contains(&"hub.db".to_owned()) && moved.contains(&"pki".to_owned()));
    // Nothing is lost: the replaced state is whole in the aside folder.
    let before = Store::open(&aside.join("hub.db")).unwrap();
    assert_eq!(before.nodes().unwrap().len(), 2);
    assert!(aside.join("pki/ca.key").is_file());
}

#[test]
fn a_tampered_archive_is_refused_naming_the_member_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = hub_state(dir.path());
    let archive = dir.path().join("hub.tar.gz");
    let now = OffsetDateTime::now_utc();
    backup(&state, &archive, false, now).unwrap();
    let before = names(&state);

    // Same manifest, one byte of the CA key changed.
    let mut entries = read_entries(&archive);
    let manifest: Manifest = serde_json::from_slice(&entries.remove(0).1).unwrap();
    let staged: Vec<Staged> = entries
        .into_iter()
        .map(|(path, mut bytes)| {
            if path == CA_KEY_MEMBER {
                let last = bytes.len() - 30;
                bytes[last] ^= 1;
            }
            Staged {
                member: manifest.member(&path).unwrap().clone(),
                content: Content::Bytes(bytes),
            }
        })
        .collect();
    let tampered = dir.path().join("tampered.tar.gz");
    std::fs::write(
        &tampered,
        write_archive(Vec::new(), &manifest, &staged, 0).unwrap(),
    )
    .unwrap();
    let err = restore(&state, &tampered, true, now).unwrap_err();
    let text = chain(&err);
    assert!(
        text.contains("tampered.tar.gz") && text.contains("member pki/ca.key"),
        "{text}"
    );
    assert_eq!(names(&state), before, "a refused archive changes nothing");

    // A newer schema than this build's is refused by its field, before anything changes.
    let mut newer = manifest.clone();
    newer.schema_version = crate::store::schema_version() + 1;
    let entries = read_entries(&archive);
    let staged: Vec<Staged> = entries[1..]
        .iter()
        .map(|(path, bytes)| Staged::bytes(path, bytes.clone()))
        .collect();
    let future = dir.path().join("future.tar.gz");
    std::fs::write(
        &future,
        write_archive(Vec::new(), &newer, &staged, 0).unwrap(),
    )
    .unwrap();
    let err = restore(&dir.path().join("elsewhere"), &future, false, now).unwrap_err();
    assert!(chain(&err).contains("schema_version"), "{}", chain(&err));
    assert!(!dir.path().join("elsewhere").exists());
}

#[test]
fn a_database_whose_schema_is_not_the_manifests_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = hub_state(dir.path());
    let archive = dir.path().join("hub.tar.gz");
    let now = OffsetDateTime::now_utc();
    backup(&state, &archive, false, now).unwrap();
    let entries = read_entries(&archive);
    let mut manifest: Manifest = serde_json::from_slice(&entries[0].1).unwrap();
    manifest.schema_version -= 1;
    let staged: Vec<Staged> = entries[1..]
        .iter()
        .map(|(path, bytes)| Staged::bytes(path, bytes.clone()))
        .collect();
    let lying = dir.path().join("lying.tar.gz");
    std::fs::write(
        &lying,
        write_archive(Vec::new(), &manifest, &staged, 0).unwrap(),
    )
    .unwrap();
    let fresh = dir.path().join("fresh");
    let err = restore(&fresh, &lying, false, now).unwrap_err();
    assert!(matches!(err, BackupError::SchemaMismatch { .. }), "{err}");
    assert!(!fresh.join("hub.db").exists());
}

#[test]
fn a_state_dir_without_a_database_or_ca_is_not_backed_up() {
    let dir = tempfile::tempdir().unwrap();
    let now = OffsetDateTime::now_utc();
    let err = backup(dir.path(), &dir.path().join("out.tar.gz"), false, now).unwrap_err();
    assert!(matches!(err, BackupError::NoDatabase { .. }), "{err}");
    Store::open(&dir.path().join("hub.db")).unwrap();
    let err = backup(dir.path(), &dir.path().join("out.tar.gz"), false, now).unwrap_err();
    assert!(matches!(err, BackupError::Ca { .. }), "{err}");
    assert!(!dir.path().join("out.tar.gz").exists());
}

/// The error and its causes, as the CLI prints them.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Every member of the archive, manifest first: `(path, bytes)`.
fn read_entries(archive: &Path) -> Vec<(String, Vec<u8>)> {
    use std::io::Read as _;
    let file = std::fs::File::open(archive).unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    tar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            (path, bytes)
        })
        .collect()
}
