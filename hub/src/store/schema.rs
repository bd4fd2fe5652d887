//! The schema, as numbered migrations. `PRAGMA user_version` holds the number of the last one
//! applied; each runs in its own IMMEDIATE transaction together with the version bump, so a crash
//! leaves the file either before or after a migration, never half-way. Append new migrations;
//! never edit one that has shipped.
//!
//! Timestamps are INTEGER Unix seconds (UTC): they compare and index as numbers, and cover
//! certificates that claim to be valid until 9999. Lists (usages, SANs) are JSON arrays.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// The migrations, in order; `MIGRATIONS[i]` brings the schema from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: nodes, the latest certificate snapshot per node, join tokens, audit log.
    r"
    CREATE TABLE nodes (
        name              TEXT PRIMARY KEY NOT NULL,
        role              TEXT NOT NULL CHECK (role IN ('server', 'agent')),
        rke2_version      TEXT NOT NULL,
        agent_version     TEXT NOT NULL,
        service_state     TEXT NOT NULL DEFAULT 'unknown',
        worst_status      TEXT CHECK (worst_status IN ('OK', 'WARNING', 'EXPIRED', 'NOT YET VALID')),
        renewal_deadline  INTEGER,
        online            INTEGER NOT NULL CHECK (online IN (0, 1)),
        online_changed_at INTEGER NOT NULL,
        first_seen        INTEGER NOT NULL,
        last_seen         INTEGER NOT NULL,
        certificates_at   INTEGER
    ) STRICT;

    CREATE TABLE certificates (
        node       TEXT NOT NULL REFERENCES nodes (name) ON DELETE CASCADE,
        path       TEXT NOT NULL,
        idx        INTEGER NOT NULL CHECK (idx >= 0),
        subject    TEXT NOT NULL,
        issuer     TEXT NOT NULL,
        serial     TEXT NOT NULL,
        usages     TEXT NOT NULL,
        is_ca      INTEGER NOT NULL CHECK (is_ca IN (0, 1)),
        sans       TEXT NOT NULL,
        not_before INTEGER NOT NULL,
        not_after  INTEGER NOT NULL,
        status     TEXT NOT NULL CHECK (status IN ('OK', 'WARNING', 'EXPIRED', 'NOT YET VALID')),
        PRIMARY KEY (node, path, idx)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX certificates_by_not_after ON certificates (not_after);

    CREATE TABLE file_errors (
        node   TEXT NOT NULL REFERENCES nodes (name) ON DELETE CASCADE,
        path   TEXT NOT NULL,
        reason TEXT NOT NULL,
        PRIMARY KEY (node, path)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE join_tokens (
        id          TEXT PRIMARY KEY NOT NULL,
        secret_hash TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL,
        created_by  TEXT NOT NULL,
        used_at     INTEGER,
        used_by     TEXT,
        CHECK ((used_at IS NULL) = (used_by IS NULL))
    ) STRICT;

    CREATE TABLE audit_log (
        id     INTEGER PRIMARY KEY AUTOINCREMENT,
        at     INTEGER NOT NULL,
        actor  TEXT NOT NULL,
        action TEXT NOT NULL,
        detail TEXT NOT NULL
    ) STRICT;
    ",
    // 2: rolling plans, their nodes and their history.
    r"
    CREATE TABLE plans (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        kind           TEXT NOT NULL CHECK (kind IN ('rotate', 'restart', 'upgrade')),
        target_version TEXT NOT NULL,
        channel        TEXT NOT NULL,
        policy         TEXT NOT NULL,
        state          TEXT NOT NULL
                       CHECK (state IN ('running', 'paused', 'halted', 'completed', 'aborted')),
        reason         TEXT NOT NULL,
        origin         TEXT NOT NULL,
        created_by     TEXT NOT NULL,
        created_at     INTEGER NOT NULL,
        updated_at     INTEGER NOT NULL,
        finished_at    INTEGER
    ) STRICT;
    CREATE INDEX plans_by_state ON plans (state);

    CREATE TABLE plan_nodes (
        plan_id      INTEGER NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
        node         TEXT NOT NULL,
        position     INTEGER NOT NULL,
        role         TEXT NOT NULL CHECK (role IN ('server', 'agent')),
        phase        TEXT NOT NULL,
        cordoned     INTEGER NOT NULL CHECK (cordoned IN (0, 1)),
        attempt      INTEGER NOT NULL,
        operation_id TEXT NOT NULL,
        step         TEXT NOT NULL,
        detail       TEXT NOT NULL,
        from_version TEXT NOT NULL,
        started_at   INTEGER,
        phase_at     INTEGER,
        finished_at  INTEGER,
        settle_until INTEGER,
        PRIMARY KEY (plan_id, node)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE plan_events (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        plan_id INTEGER NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
        at      INTEGER NOT NULL,
        node    TEXT NOT NULL,
        message TEXT NOT NULL
    ) STRICT;
    CREATE INDEX plan_events_by_plan ON plan_events (plan_id, id);
    ",
    // 3: hub identity. The certificate serial the hub accepts per node and admin name, the
    // serials it stopped accepting, a node's enrolled role, and join tokens bound to a node.
    // Nodes already in the inventory get a record without a serial: the first certificate
    // each presents becomes its current one. Admin certificates issued before are known from
    // the audit log ("admin:NAME serial HEX"); the newest per name becomes current.
    r"
    CREATE TABLE identities (
        kind      TEXT NOT NULL CHECK (kind IN ('node', 'admin')),
        name      TEXT NOT NULL,
        serial    TEXT,
        role      TEXT CHECK (role IS NULL OR role IN ('server', 'agent')),
        since     INTEGER NOT NULL,
        not_after INTEGER,
        -- a node's certificate before its last renewal, accepted until the renewed one is
        -- first presented (a lost renewal answer must not lock the node out)
        previous_serial TEXT,
        PRIMARY KEY (kind, name)
    ) STRICT, WITHOUT ROWID;
    CREATE UNIQUE INDEX identities_by_serial ON identities (serial) WHERE serial IS NOT NULL;

    CREATE TABLE revoked_serials (
        serial TEXT PRIMARY KEY NOT NULL,
        kind   TEXT NOT NULL CHECK (kind IN ('node', 'admin')),
        name   TEXT NOT NULL,
        reason TEXT NOT NULL CHECK (reason IN ('superseded', 'revoked')),
        at     INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;

    ALTER TABLE join_tokens ADD COLUMN node TEXT;
    ALTER TABLE join_tokens ADD COLUMN allow_replace INTEGER NOT NULL DEFAULT 0
        CHECK (allow_replace IN (0, 1));
    ALTER TABLE join_tokens ADD COLUMN role TEXT
        CHECK (role IS NULL OR role IN ('server', 'agent'));

    INSERT INTO identities (kind, name, serial, role, since)
        SELECT 'node', name, NULL, role, first_seen FROM nodes;
    INSERT OR REPLACE INTO identities (kind, name, serial, role, since)
        SELECT 'admin',
               substr(detail, 7, instr(detail, ' serial ') - 7),
               substr(detail, instr(detail, ' serial ') + 8),
               NULL,
               at
        FROM audit_log
        WHERE action = 'admin-cert.create' AND detail LIKE 'admin:% serial %'
        ORDER BY id;
    ",
    // 4: each node's doctor findings as its agent last reported them (replaced whole), when
    // they were reported, and how far the node's clock was from the hub's at its last status.
    r"
    CREATE TABLE node_findings (
        node     TEXT NOT NULL REFERENCES nodes (name) ON DELETE CASCADE,
        idx      INTEGER NOT NULL CHECK (idx >= 0),
        code     TEXT NOT NULL,
        severity TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'blocker')),
        object   TEXT NOT NULL,
        evidence TEXT NOT NULL,
        fix      TEXT NOT NULL,
        PRIMARY KEY (node, idx)
    ) STRICT, WITHOUT ROWID;

    ALTER TABLE nodes ADD COLUMN findings_at INTEGER;
    ALTER TABLE nodes ADD COLUMN clock_offset_ms INTEGER;
    ",
    // 5: the etcd snapshot a server's upgrade took before it changed the node (its path on
    // that server; empty when none).
    r"
    ALTER TABLE plan_nodes ADD COLUMN etcd_snapshot TEXT NOT NULL DEFAULT '';
    ",
    // 6: how RKE2 is installed on each node (rpm, tarball, mixed; empty: not reported), with
    // the packages or prefix, and for RPM installs the package manager and repository.
    r"
    ALTER TABLE nodes ADD COLUMN install_method TEXT NOT NULL DEFAULT '';
    ALTER TABLE nodes ADD COLUMN install_detail TEXT NOT NULL DEFAULT '';
    ALTER TABLE nodes ADD COLUMN package_manager TEXT NOT NULL DEFAULT '';
    ALTER TABLE nodes ADD COLUMN rpm_repository TEXT NOT NULL DEFAULT '';
    ",
    // 7: each plan node's air-gap image staging (`upgrade --stage-images`): a table of its
    // own, written only by the staging task, so a node's maintenance row never overwrites it.
    r"
    CREATE TABLE plan_node_images (
        plan_id     INTEGER NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
        node        TEXT NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('pending', 'staging', 'staged', 'failed')),
        attempt     INTEGER NOT NULL CHECK (attempt >= 0),
        detail      TEXT NOT NULL,
        started_at  INTEGER,
        finished_at INTEGER,
        PRIMARY KEY (plan_id, node)
    ) STRICT, WITHOUT ROWID;
    ",
    // 8: each plan probe's record (samples, failures, outages; JSON of `probe::Tally`),
    // replaced after every check.
    r"
    CREATE TABLE plan_probes (
        plan_id INTEGER NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
        probe   TEXT NOT NULL,
        tally   TEXT NOT NULL,
        PRIMARY KEY (plan_id, probe)
    ) STRICT, WITHOUT ROWID;
    ",
    // 9: when an operator last resumed the plan: a probe's halt clock restarts there.
    r"
    ALTER TABLE plans ADD COLUMN resumed_at INTEGER;
    ",
    // 10: clusters. A token may fix the cluster it enrolls into; enrollment (or, for a node
    // enrolled before clusters, its first hello) fixes a node's; the inventory shows it.
    // Nodes from before are in the default cluster.
    r"
    ALTER TABLE join_tokens ADD COLUMN cluster TEXT;
    ALTER TABLE identities ADD COLUMN cluster TEXT;
    ALTER TABLE nodes ADD COLUMN cluster TEXT NOT NULL DEFAULT 'default';
    ",
    // 11: a plan belongs to one cluster; one active plan per cluster.
    r"
    ALTER TABLE plans ADD COLUMN cluster TEXT NOT NULL DEFAULT 'default';
    ",
    // 12: rollouts: one plan per cluster, wave by wave (`waves`: JSON list of cluster
    // lists; `policy`: the plans' policy as JSON, accepted doctor codes included). A
    // plan made by a rollout points at it. The rollout's state words are a plan's.
    r"
    CREATE TABLE rollouts (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        kind            TEXT NOT NULL CHECK (kind IN ('rotate', 'restart', 'upgrade')),
        target_version  TEXT NOT NULL,
        channel         TEXT NOT NULL,
        policy          TEXT NOT NULL,
        waves           TEXT NOT NULL,
        soak_secs       INTEGER NOT NULL CHECK (soak_secs >= 0),
        state           TEXT NOT NULL
                        CHECK (state IN ('running', 'paused', 'halted', 'completed', 'aborted')),
        reason          TEXT NOT NULL,
        wave            INTEGER NOT NULL CHECK (wave >= 0),
        soak_started_at INTEGER,
        created_by      TEXT NOT NULL,
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL,
        finished_at     INTEGER
    ) STRICT;
    CREATE INDEX rollouts_by_state ON rollouts (state);
    CREATE TABLE rollout_events (
        rollout_id INTEGER NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
        at         INTEGER NOT NULL,
        message    TEXT NOT NULL
    ) STRICT;
    CREATE INDEX rollout_events_by_rollout ON rollout_events (rollout_id);
    ALTER TABLE plans ADD COLUMN rollout_id INTEGER;
    CREATE INDEX plans_by_rollout ON plans (rollout_id);
    ",
];

/// The schema version this build writes.
pub(crate) fn latest_version() -> u32 {
    u32::try_from(MIGRATIONS.len()).expect("fewer than 2^32 migrations")
}

/// Applies every migration the database has not seen yet. Idempotent: a database already at
/// the latest version is left untouched. Two processes migrating at once are serialized by the
/// IMMEDIATE transaction, and the second finds the work done.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let supported = latest_version();
    for (done, sql) in MIGRATIONS.iter().enumerate() {
        let version = u32::try_from(done + 1).expect("fewer than 2^32 migrations");
        let wrap = |source| StoreError::Migrate { version, source };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(wrap)?;
        let current: u32 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(wrap)?;
        if current > supported {
            return Err(StoreError::SchemaTooNew {
                found: current,
                supported,
            });
        }
        if current >= version {
            continue; // dropping `tx` ends the read-only transaction
        }
        tx.execute_batch(sql).map_err(wrap)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(wrap)?;
        tx.commit().map_err(wrap)?;
    }
    Ok(())
}
