//! Row-level replication of the store, for a hub whose state lives in etcd: every committed
//! transaction's row changes are captured on the connection, handed to a [`Replicator`]
//! *before* SQLite commits (a refusal rolls the transaction back, so no write is ever
//! acknowledged that is not durable in the replicated log), and replayed on the other
//! replicas' copies with [`Store::apply_changes`].
//!
//! How changes are captured: one TEMP trigger per table and operation (created on this
//! connection only; nothing is stored in the database file) calls the SQL function
//! `rke2ops_change(table, op, key, row)` with the row as JSON, which buffers it in Rust; the
//! commit hook ships the buffer, the rollback hook drops it. Why triggers rather than
//! SQLite's session or pre-update hook: those need SQLite built with extra options (and a
//! bindgen toolchain), while triggers see every write of every store method, including
//! cascaded deletes, with no change to the methods themselves.
//!
//! A rowid table's rows are keyed by their rowid (carried as `_rowid_`, so every replica
//! gives a row the same rowid and AUTOINCREMENT ids agree); a `WITHOUT ROWID` table's by its
//! primary key. Replay runs with foreign keys off: the leader's cascaded deletes arrive as
//! changes of their own, and an insert replays as `INSERT OR REPLACE` (a leader's
//! `INSERT OR REPLACE` deletes the row it replaces without any delete trigger firing).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use rusqlite::functions::FunctionFlags;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Store, StoreError};

/// The column name that carries a rowid table's rowid.
const ROWID: &str = "_rowid_";

/// What happened to one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeOp {
    /// A new row (`row` holds it).
    Insert,
    /// The row `key` now reads `row`.
    Update,
    /// The row `key` is gone.
    Delete,
}

/// One row change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The table.
    pub table: String,
    /// What happened.
    pub op: ChangeOp,
    /// Which row (before the change): `_rowid_`, or the primary key's columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Map<String, Value>>,
    /// The row after the change, every column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<Map<String, Value>>,
}

/// Where a transaction's changes go before it commits.
pub trait Replicator: Send + Sync + std::fmt::Debug {
    /// Makes `changes` (one transaction, in order) durable, or says why it cannot; on an
    /// error the transaction is rolled back.
    ///
    /// # Errors
    /// Why the changes are not durable (not the leader, the log unreachable).
    fn ship(&self, changes: Vec<Change>) -> Result<(), String>;
}

/// The capture state shared by the connection's hooks.
#[derive(Debug, Default)]
pub(super) struct Capture {
    /// Changes of the open transaction.
    buffer: Mutex<Vec<Change>>,
    /// Replaying another replica's changes: they are already durable, nothing is shipped.
    applying: AtomicBool,
    /// Why the last refused commit was refused (for the caller's error).
    refused: Mutex<Option<String>>,
}

impl Capture {
    /// Why the last commit was refused, once.
    pub(super) fn take_refusal(&self) -> Option<String> {
        self.refused.lock().ok().and_then(|mut r| r.take())
    }
}

/// Installs the capture on `conn`: the `rke2ops_change` function, the triggers of every table,
/// and the commit and rollback hooks shipping to `sink`.
pub(super) fn install(
    conn: &mut Connection,
    sink: Arc<dyn Replicator>,
) -> rusqlite::Result<Arc<Capture>> {
    let capture = Arc::new(Capture::default());
    let buffer = Arc::clone(&capture);
    conn.create_scalar_function(
        "rke2ops_change",
        4,
        FunctionFlags::SQLITE_UTF8,
        move |ctx| {
            let table: String = ctx.get(0)?;
            let op: String = ctx.get(1)?;
            let parse = |i: usize| -> rusqlite::Result<Option<Map<String, Value>>> {
                let text: Option<String> = ctx.get(i)?;
                text.map(|t| {
                    serde_json::from_str(&t)
                        .map_err(|e| rusqlite::Error::UserFunctionError(Box::new(e)))
                })
                .transpose()
            };
            let op = match op.as_str() {
                "insert" => ChangeOp::Insert,
                "update" => ChangeOp::Update,
                _ => ChangeOp::Delete,
            };
            let change = Change {
                table,
                op,
                key: parse(2)?,
                row: parse(3)?,
            };
            if let Ok(mut b) = buffer.buffer.lock() {
                b.push(change);
            }
            Ok(0i64)
        },
    )?;
    for sql in trigger_sql(conn)? {
        conn.execute_batch(&sql)?;
    }
    let hook = Arc::clone(&capture);
    conn.commit_hook(Some(move || {
        let changes = hook
            .buffer
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default();
        if changes.is_empty() || hook.applying.load(Ordering::SeqCst) {
            return false;
        }
        match sink.ship(changes) {
            Ok(()) => false,
            Err(why) => {
                tracing::error!(error = %why, "store write rolled back: not durable in the replicated log");
                if let Ok(mut r) = hook.refused.lock() {
                    *r = Some(why);
                }
                true
            }
        }
    }))?;
    let hook = Arc::clone(&capture);
    conn.rollback_hook(Some(move || {
        if let Ok(mut b) = hook.buffer.lock() {
            b.clear();
        }
    }))?;
    Ok(capture)
}

/// A table's shape, as replication needs it.
#[derive(Debug, Clone)]
struct TableShape {
    name: String,
    columns: Vec<String>,
    /// Primary-key columns in key order (used for `WITHOUT ROWID` tables).
    primary_key: Vec<String>,
    without_rowid: bool,
}

fn shapes(conn: &Connection) -> rusqlite::Result<Vec<TableShape>> {
    let tables: Vec<(String, String)> = {
        let mut stmt = conn.prepare(
            "SELECT name, sql FROM sqlite_schema WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, Option<String>>(1)?)))?
            .map(|r| r.map(|(n, s)| (n, s.unwrap_or_default())))
            .collect::<Result<_, _>>()?
    };
    let mut out = Vec::new();
    for (name, sql) in tables {
        let mut stmt = conn.prepare(&format!("PRAGMA table_info({})", quote(&name)))?;
        let mut cols: Vec<(String, i64)> = stmt
            .query_map([], |r| Ok((r.get(1)?, r.get(5)?)))?
            .collect::<Result<_, _>>()?;
        let columns = cols.iter().map(|(c, _)| c.clone()).collect();
        cols.retain(|(_, pk)| *pk > 0);
        cols.sort_by_key(|(_, pk)| *pk);
        out.push(TableShape {
            name,
            columns,
            primary_key: cols.into_iter().map(|(c, _)| c).collect(),
            without_rowid: sql.to_ascii_uppercase().contains("WITHOUT ROWID"),
        });
    }
    Ok(out)
}

/// The TEMP triggers capturing every table's changes.
fn trigger_sql(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut out = Vec::new();
    for t in shapes(conn)? {
        let object = |prefix: &str, cols: &[String], rowid: bool| {
            let mut parts: Vec<String> = cols
                .iter()
                .map(|c| format!("'{c}', {prefix}.{}", quote(c)))
                .collect();
            if rowid {
                parts.push(format!("'{ROWID}', {prefix}.rowid"));
            }
            format!("json_object({})", parts.join(", "))
        };
        let row = object("NEW", &t.columns, !t.without_rowid);
        let key = if t.without_rowid {
            object("OLD", &t.primary_key, false)
        } else {
            object("OLD", &[], true)
        };
        let name = &t.name;
        let q = quote(name);
        out.push(format!(
            "CREATE TEMP TRIGGER IF NOT EXISTS \"_rke2ops_{name}_i\" AFTER INSERT ON main.{q} \
             BEGIN SELECT rke2ops_change('{name}', 'insert', NULL, {row}); END;"
        ));
        out.push(format!(
            "CREATE TEMP TRIGGER IF NOT EXISTS \"_rke2ops_{name}_u\" AFTER UPDATE ON main.{q} \
             BEGIN SELECT rke2ops_change('{name}', 'update', {key}, {row}); END;"
        ));
        out.push(format!(
            "CREATE TEMP TRIGGER IF NOT EXISTS \"_rke2ops_{name}_d\" AFTER DELETE ON main.{q} \
             BEGIN SELECT rke2ops_change('{name}', 'delete', {key}, NULL); END;"
        ));
    }
    Ok(out)
}

/// `"name"`, for an identifier SQLite gave us.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn sql_value(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match v {
        Value::Null => V::Null,
        Value::Bool(b) => V::Integer(i64::from(*b)),
        Value::Number(n) => n
            .as_i64()
            .map(V::Integer)
            .unwrap_or_else(|| V::Real(n.as_f64().unwrap_or_default())),
        Value::String(s) => V::Text(s.clone()),
        other => V::Text(other.to_string()),
    }
}

/// Column `name` of `shape` as SQL (`rowid` for `_rowid_`); `None` when the table has no
/// such column (a change from another schema).
fn column(shape: &TableShape, name: &str) -> Option<String> {
    if name == ROWID && !shape.without_rowid {
        return Some("rowid".to_owned());
    }
    shape.columns.iter().any(|c| c == name).then(|| quote(name))
}

/// The statement and parameters replaying `change` on a table shaped `shape`.
fn statement(
    shape: &TableShape,
    change: &Change,
) -> Result<(String, Vec<rusqlite::types::Value>), String> {
    let table = quote(&shape.name);
    let cols = |map: &Map<String, Value>| -> Result<Vec<(String, rusqlite::types::Value)>, String> {
        map.iter()
            .map(|(k, v)| {
                column(shape, k)
                    .map(|c| (c, sql_value(v)))
                    .ok_or_else(|| format!("table {} has no column {k:?}", shape.name))
            })
            .collect()
    };
    let need = |m: &Option<Map<String, Value>>, what: &str| {
        m.clone().ok_or_else(|| {
            format!(
                "a {:?} of table {} without its {what}",
                change.op, shape.name
            )
        })
    };
    Ok(match change.op {
        ChangeOp::Insert => {
            let row = cols(&need(&change.row, "row")?)?;
            let names: Vec<&str> = row.iter().map(|(c, _)| c.as_str()).collect();
            let marks: Vec<String> = (1..=row.len()).map(|i| format!("?{i}")).collect();
            (
                // OR REPLACE: the leader's `INSERT OR REPLACE` removes a conflicting row
                // without a delete trigger firing, so the insert alone must replace it here.
                format!(
                    "INSERT OR REPLACE INTO {table} ({}) VALUES ({})",
                    names.join(", "),
                    marks.join(", ")
                ),
                row.into_iter().map(|(_, v)| v).collect(),
            )
        }
        ChangeOp::Update => {
            let row = cols(&need(&change.row, "row")?)?;
            let key = cols(&need(&change.key, "key")?)?;
            let sets: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, (c, _))| format!("{c} = ?{}", i + 1))
                .collect();
            let wheres: Vec<String> = key
                .iter()
                .enumerate()
                .map(|(i, (c, _))| format!("{c} IS ?{}", row.len() + i + 1))
                .collect();
            (
                format!(
                    "UPDATE {table} SET {} WHERE {}",
                    sets.join(", "),
                    wheres.join(" AND ")
                ),
                row.into_iter().chain(key).map(|(_, v)| v).collect(),
            )
        }
        ChangeOp::Delete => {
            let key = cols(&need(&change.key, "key")?)?;
            let wheres: Vec<String> = key
                .iter()
                .enumerate()
                .map(|(i, (c, _))| format!("{c} IS ?{}", i + 1))
                .collect();
            (
                format!("DELETE FROM {table} WHERE {}", wheres.join(" AND ")),
                key.into_iter().map(|(_, v)| v).collect(),
            )
        }
    })
}

impl Store {
    /// Replays another replica's `changes` (one transaction of its, in order) on this copy,
    /// in one transaction; `entry` names the log entry in errors.
    ///
    /// # Errors
    /// [`StoreError::Replicate`] naming the entry, the table and what did not fit (a change
    /// from a newer schema, a malformed change); SQL failures. Nothing is applied then.
    pub fn apply_changes(&self, entry: u64, changes: &[Change]) -> Result<(), StoreError> {
        let bad = |reason: String| StoreError::Replicate { entry, reason };
        let sql = |source: rusqlite::Error| bad(source.to_string());
        let mut conn = self.conn();
        let shapes: BTreeMap<String, TableShape> = shapes(&conn)
            .map_err(sql)?
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        conn.pragma_update(None, "foreign_keys", false)
            .map_err(sql)?;
        let result = (|| {
            let tx = conn.transaction().map_err(sql)?;
            if let Some(capture) = &self.capture {
                capture.applying.store(true, Ordering::SeqCst);
            }
            for change in changes {
                let shape = shapes
                    .get(&change.table)
                    .ok_or_else(|| bad(format!("no table {:?} here", change.table)))?;
                let (statement, params) = statement(shape, change).map_err(bad)?;
                tx.execute(&statement, rusqlite::params_from_iter(params))
                    .map_err(|e| bad(format!("table {}: {e}", change.table)))?;
            }
            tx.commit().map_err(sql)
        })();
        if let Some(capture) = &self.capture {
            capture.applying.store(false, Ordering::SeqCst);
        }
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sql)?;
        result
    }

    /// Why this store's last write was refused by its replicator, if it was.
    #[must_use]
    pub fn replication_refusal(&self) -> Option<String> {
        self.capture.as_ref().and_then(|c| c.take_refusal())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Ships into a shared list, or refuses while `refuse` is set.
    #[derive(Debug, Default)]
    struct Log {
        entries: Mutex<Vec<Vec<Change>>>,
        refuse: AtomicBool,
    }

    impl Replicator for Log {
        fn ship(&self, changes: Vec<Change>) -> Result<(), String> {
            if self.refuse.load(Ordering::SeqCst) {
                return Err("the log is unreachable".to_owned());
            }
            self.entries.lock().unwrap().push(changes);
            Ok(())
        }
    }

    /// Every table's rows, as text, for comparing two copies.
    fn dump(store: &Store) -> Vec<String> {
        let conn = store.conn();
        let mut out = Vec::new();
        for shape in shapes(&conn).unwrap() {
            let cols: Vec<String> = shape.columns.iter().map(|c| quote(c)).collect();
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {} FROM {} ORDER BY 1, 2",
                    if shape.without_rowid {
                        cols.join(", ")
                    } else {
                        format!("rowid, {}", cols.join(", "))
                    },
                    quote(&shape.name)
                ))
                .unwrap();
            let n = stmt.column_count();
            let rows = stmt
                .query_map([], |r| {
                    let vals: Vec<String> = (0..n)
                        .map(|i| format!("{:?}", r.get::<_, rusqlite::types::Value>(i).unwrap()))
                        .collect();
                    Ok(format!("{}: {}", shape.name, vals.join(" | ")))
                })
                .unwrap();
            out.extend(rows.map(Result::unwrap));
        }
        out
    }

    #[test]
    fn a_replica_replaying_the_log_ends_identical_and_a_refused_write_is_rolled_back() {
        let log = Arc::new(Log::default());
        let leader = Store::open_in_memory_replicated(log.clone()).unwrap();
        let follower = Store::open_in_memory().unwrap();
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        // Writes of every kind: rowid tables with AUTOINCREMENT, WITHOUT ROWID tables,
        // updates, and a delete cascading to child rows.
        leader
            .insert_token(
                "abc123",
                &crate::store::hash_secret("s3cret"),
                now + std::time::Duration::from_secs(600),
                "tester",
                now,
            )
            .unwrap();
        leader.audit("tester", "x.y", "detail", now).unwrap();
        let policy = crate::plan::model::PlanPolicy::default();
        let plan = crate::store::NewPlan {
            kind: crate::plan::model::PlanKind::Rotate,
            target_version: "",
            channel: "",
            policy: &policy,
            origin: "operator",
            created_by: "tester",
            cluster: "default",
            rollout: None,
        };
        let id = leader.create_plan(&plan, &[], now).unwrap();
        leader
            .move_plan_state(
                id,
                crate::plan::model::PlanState::Running,
                crate::plan::model::PlanState::Aborted,
                "by test",
                now,
            )
            .unwrap();
        leader.plan_event(id, "", "an event", now).unwrap();
        leader
            .prune_history(now + std::time::Duration::from_secs(86_400))
            .unwrap();
        assert_eq!(follower.tokens().unwrap().len(), 0, "nothing applied yet");

        let entries = log.entries.lock().unwrap().clone();
        assert!(
            entries.len() >= 5,
            "one entry per committed transaction: {entries:?}"
        );
        for (i, changes) in entries.iter().enumerate() {
            follower.apply_changes(i as u64 + 1, changes).unwrap();
        }
        assert_eq!(dump(&follower), dump(&leader));
        // AUTOINCREMENT keeps counting on the follower from the leader's ids.
        let next = follower.create_plan(&plan, &[], now).unwrap();
        assert_eq!(next, id + 1);

        // The log refuses: the write is rolled back and says why.
        log.refuse.store(true, Ordering::SeqCst);
        let before = dump(&leader);
        assert!(leader.audit("tester", "lost", "", now).is_err());
        assert_eq!(dump(&leader), before, "nothing of the refused write stays");
        assert_eq!(
            leader.replication_refusal().as_deref(),
            Some("the log is unreachable")
        );
        log.refuse.store(false, Ordering::SeqCst);
        leader.audit("tester", "kept", "", now).unwrap();
    }

    #[test]
    fn a_malformed_change_is_refused_naming_the_entry_and_applies_nothing() {
        let store = Store::open_in_memory().unwrap();
        let before = dump(&store);
        let change = |table: &str, row: Value| Change {
            table: table.to_owned(),
            op: ChangeOp::Insert,
            key: None,
            row: row.as_object().cloned(),
        };
        let good = change(
            "audit_log",
            serde_json::json!({"_rowid_": 7, "id": 7, "at": 1, "actor": "a", "action": "b", "detail": ""}),
        );
        let err = store
            .apply_changes(
                9,
                &[good.clone(), change("no_such_table", serde_json::json!({}))],
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("entry 9") && err.contains("no_such_table"),
            "{err}"
        );
        let err = store
            .apply_changes(
                10,
                &[change("audit_log", serde_json::json!({"colour": "red"}))],
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("no column \"colour\""), "{err}");
        assert_eq!(dump(&store), before, "nothing applied");
        store.apply_changes(11, &[good]).unwrap();
        assert_eq!(store.audit_log(10).unwrap().len(), 1);
    }
}
