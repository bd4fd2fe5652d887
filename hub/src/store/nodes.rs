//! The node inventory: one row per node that ever said hello, updated by its hello, its status
//! reports and its stream coming and going.

use rusqlite::{OptionalExtension, Row, params};
use time::OffsetDateTime;

use super::{NodeRecord, Store, StoreError, check_status, from_db, from_db_opt, to_db};

/// The `nodes` columns in the order [`RawNode::read`] expects.
const COLUMNS: &str = "name, role, rke2_version, agent_version, service_state, worst_status, \
                       renewal_deadline, online, online_changed_at, first_seen, last_seen, \
                       certificates_at, cluster";

impl Store {
    /// Records a node's hello: inserts it, or updates its role and versions. A hello only
    /// arrives on a live stream, so the node is marked online and seen `now`.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a role other than `server`/`agent`; [`StoreError::NodeSql`]
    /// if the write fails.
    pub fn upsert_node_hello(
        &self,
        name: &str,
        role: &str,
        rke2_version: &str,
        agent_version: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        if role != "server" && role != "agent" {
            return Err(StoreError::Invalid {
                table: "nodes",
                column: "role",
                value: role.to_owned(),
                reason: "must be server or agent",
            });
        }
        self.conn()
            .execute(
                "INSERT INTO nodes (name, role, rke2_version, agent_version, online, \
                                    online_changed_at, first_seen, last_seen) \
                 VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5, ?5) \
                 ON CONFLICT (name) DO UPDATE SET \
                     role = excluded.role, \
                     rke2_version = excluded.rke2_version, \
                     agent_version = excluded.agent_version, \
                     online_changed_at = CASE WHEN nodes.online = 1 \
                         THEN nodes.online_changed_at ELSE excluded.online_changed_at END, \
                     online = 1, \
                     last_seen = excluded.last_seen",
                params![name, role, rke2_version, agent_version, to_db(now)],
            )
            .map_err(|source| node_err(name, "recording the hello", source))?;
        Ok(())
    }

    /// Records a node's status report (or heartbeat): its RKE2 unit state, worst certificate
    /// status and renewal deadline, and that it was seen `now`.
    ///
    /// # Errors
    /// [`StoreError::UnknownNode`] if the node never said hello; [`StoreError::Invalid`] for a
    /// status word RKE2 does not use; [`StoreError::NodeSql`] if the write fails.
    pub fn update_node_status(
        &self,
        name: &str,
        service_state: &str,
        worst_status: Option<&str>,
        renewal_deadline: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        if let Some(word) = worst_status {
            check_status("nodes", "worst_status", word)?;
        }
        let changed = self
            .conn()
            .execute(
                "UPDATE nodes SET service_state = ?2, worst_status = ?3, renewal_deadline = ?4, \
                                  last_seen = ?5 \
                 WHERE name = ?1",
                params![
                    name,
                    service_state,
                    worst_status,
                    renewal_deadline.map(to_db),
                    to_db(now)
                ],
            )
            .map_err(|source| node_err(name, "recording the status", source))?;
        found(name, changed)
    }

    /// Marks a node online (its stream is up: also seen `now`) or offline (its stream closed or
    /// its heartbeats stopped: `last_seen` keeps the last time it was really heard from).
    /// `online_changed_at` moves to `now` only when the state changes.
    ///
    /// # Errors
    /// [`StoreError::UnknownNode`] if the node never said hello; [`StoreError::NodeSql`] if the
    /// write fails.
    pub fn set_online(
        &self,
        name: &str,
        online: bool,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let changed = self
            .conn()
            .execute(
                "UPDATE nodes SET \
                     online_changed_at = CASE WHEN online = ?2 THEN online_changed_at ELSE ?3 END, \
                     last_seen = CASE WHEN ?2 THEN ?3 ELSE last_seen END, \
                     online = ?2 \
                 WHERE name = ?1",
                params![name, online, to_db(now)],
            )
            .map_err(|source| node_err(name, "recording online state", source))?;
        found(name, changed)
    }

    /// Records the RKE2 version a node runs now (after an upgrade), without a write when it
    /// is unchanged.
    ///
    /// # Errors
    /// [`StoreError::NodeSql`] if the write fails.
    pub fn set_rke2_version(&self, name: &str, version: &str) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE nodes SET rke2_version = ?2 WHERE name = ?1 AND rke2_version <> ?2",
                params![name, version],
            )
            .map_err(|source| node_err(name, "recording the RKE2 version", source))?;
        Ok(())
    }

    /// Marks every node offline, as of `now`: called when the hub starts, since no stream
    /// survives a hub restart. Returns how many nodes were online.
    ///
    /// # Errors
    /// [`StoreError::Sql`] if the write fails.
    pub fn mark_all_offline(&self, now: OffsetDateTime) -> Result<usize, StoreError> {
        self.conn()
            .execute(
                "UPDATE nodes SET online = 0, online_changed_at = ?1 WHERE online = 1",
                params![to_db(now)],
            )
            .map_err(|source| StoreError::Sql {
                table: "nodes",
                action: "marking every node offline",
                source,
            })
    }

    /// Every node, sorted by name.
    ///
    /// # Errors
    /// [`StoreError::Sql`] if the read fails; [`StoreError::Corrupt`] for an unreadable row.
    pub fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let sql_err = |source| StoreError::Sql {
            table: "nodes",
            action: "listing nodes",
            source,
        };
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM nodes ORDER BY name"))
            .map_err(sql_err)?;
        let raw = stmt
            .query_map([], RawNode::read)
            .map_err(sql_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql_err)?;
        raw.into_iter().map(RawNode::into_record).collect()
    }

    /// One node, or `None` if it never said hello.
    ///
    /// # Errors
    /// [`StoreError::NodeSql`] if the read fails; [`StoreError::Corrupt`] for an unreadable row.
    pub fn node(&self, name: &str) -> Result<Option<NodeRecord>, StoreError> {
        let raw = self
            .conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM nodes WHERE name = ?1"),
                params![name],
                RawNode::read,
            )
            .optional()
            .map_err(|source| node_err(name, "reading the node", source))?;
        raw.map(RawNode::into_record).transpose()
    }
}

/// A [`StoreError::NodeSql`] on table `nodes`.
fn node_err(name: &str, action: &'static str, source: rusqlite::Error) -> StoreError {
    StoreError::NodeSql {
        table: "nodes",
        node: name.to_owned(),
        action,
        source,
    }
}

/// Turns "no row updated" into [`StoreError::UnknownNode`].
fn found(name: &str, changed: usize) -> Result<(), StoreError> {
    if changed == 0 {
        Err(StoreError::UnknownNode {
            node: name.to_owned(),
        })
    } else {
        Ok(())
    }
}

/// A `nodes` row as SQLite holds it, before its timestamps are checked.
struct RawNode {
    name: String,
    role: String,
    rke2_version: String,
    agent_version: String,
    service_state: String,
    worst_status: Option<String>,
    renewal_deadline: Option<i64>,
    online: bool,
    online_changed_at: i64,
    first_seen: i64,
    last_seen: i64,
    certificates_at: Option<i64>,
    cluster: String,
}

impl RawNode {
    /// Reads a row selected with [`COLUMNS`].
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            name: row.get(0)?,
            role: row.get(1)?,
            rke2_version: row.get(2)?,
            agent_version: row.get(3)?,
            service_state: row.get(4)?,
            worst_status: row.get(5)?,
            renewal_deadline: row.get(6)?,
            online: row.get(7)?,
            online_changed_at: row.get(8)?,
            first_seen: row.get(9)?,
            last_seen: row.get(10)?,
            certificates_at: row.get(11)?,
            cluster: row.get(12)?,
        })
    }

    fn into_record(self) -> Result<NodeRecord, StoreError> {
        let name = self.name;
        let key = || name.clone();
        Ok(NodeRecord {
            renewal_deadline: from_db_opt(self.renewal_deadline, "nodes", key, "renewal_deadline")?,
            online_changed_at: from_db(self.online_changed_at, "nodes", key, "online_changed_at")?,
            first_seen: from_db(self.first_seen, "nodes", key, "first_seen")?,
            last_seen: from_db(self.last_seen, "nodes", key, "last_seen")?,
            certificates_at: from_db_opt(self.certificates_at, "nodes", key, "certificates_at")?,
            role: self.role,
            rke2_version: self.rke2_version,
            agent_version: self.agent_version,
            service_state: self.service_state,
            worst_status: self.worst_status,
            online: self.online,
            cluster: self.cluster,
            name,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap in a test names its line, which is enough
mod tests {
    use time::macros::datetime;

    use super::*;

    const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

    fn secs(n: i64) -> OffsetDateTime {
        T0 + time::Duration::seconds(n)
    }

    #[test]
    fn hello_inserts_then_updates_keeping_first_seen() {
        let store = Store::open_in_memory().unwrap();
        store
            .upsert_node_hello("b", "agent", "v1.30.1+rke2r1", "0.1.0", secs(0))
            .unwrap();
        store
            .upsert_node_hello("a", "server", "v1.30.1+rke2r1", "0.1.0", secs(1))
            .unwrap();
        store
            .upsert_node_hello("b", "server", "v1.31.4+rke2r1", "0.2.0", secs(10))
            .unwrap();

        let nodes = store.nodes().unwrap();
        assert_eq!(
            nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let b = store.node("b").unwrap().unwrap();
        assert_eq!(b.role, "server");
        assert_eq!(b.rke2_version, "v1.31.4+rke2r1");
        assert_eq!(b.agent_version, "0.2.0");
        assert_eq!(b.service_state, "unknown");
        assert_eq!(b.worst_status, None);
        assert!(b.online);
        assert_eq!(b.first_seen, secs(0));
        assert_eq!(b.last_seen, secs(10));
        assert_eq!(b.online_changed_at, secs(0));
        assert_eq!(store.node("nope").unwrap(), None);
    }

    #[test]
    fn hello_refuses_an_unknown_role() {
        let store = Store::open_in_memory().unwrap();
        let err = store
            .upsert_node_hello("n", "worker", "v1", "0.1.0", T0)
            .unwrap_err();
        assert!(err.to_string().contains("worker"), "{err}");
        assert!(store.nodes().unwrap().is_empty());
    }

    #[test]
    fn status_updates_state_deadline_and_last_seen() {
        let store = Store::open_in_memory().unwrap();
        store
            .upsert_node_hello("n", "server", "v1", "0.1.0", T0)
            .unwrap();
        let deadline = datetime!(2026-09-01 12:00 UTC);
        store
            .update_node_status("n", "active", Some("WARNING"), Some(deadline), secs(5))
            .unwrap();
        let n = store.node("n").unwrap().unwrap();
        assert_eq!(n.service_state, "active");
        assert_eq!(n.worst_status.as_deref(), Some("WARNING"));
        assert_eq!(n.renewal_deadline, Some(deadline));
        assert_eq!(n.last_seen, secs(5));

        let err = store
            .update_node_status("n", "active", Some("BAD"), None, secs(6))
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Invalid {
                    column: "worst_status",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn status_for_an_unknown_node_is_refused_by_name() {
        let store = Store::open_in_memory().unwrap();
        let err = store
            .update_node_status("ghost", "active", None, None, T0)
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::UnknownNode { node } if node == "ghost"),
            "{err}"
        );
        let err = store.set_online("ghost", true, T0).unwrap_err();
        assert!(
            matches!(&err, StoreError::UnknownNode { node } if node == "ghost"),
            "{err}"
        );
    }

    #[test]
    fn offline_keeps_last_seen_and_records_when_it_changed() {
        let store = Store::open_in_memory().unwrap();
        store
            .upsert_node_hello("n", "agent", "v1", "0.1.0", secs(0))
            .unwrap();
        store.set_online("n", false, secs(30)).unwrap();
        let n = store.node("n").unwrap().unwrap();
        assert!(!n.online);
        assert_eq!(n.last_seen, secs(0));
        assert_eq!(n.online_changed_at, secs(30));

        // Repeating the same state does not move the change time.
        store.set_online("n", false, secs(40)).unwrap();
        assert_eq!(
            store.node("n").unwrap().unwrap().online_changed_at,
            secs(30)
        );

        store.set_online("n", true, secs(50)).unwrap();
        let n = store.node("n").unwrap().unwrap();
        assert!(n.online);
        assert_eq!(n.last_seen, secs(50));
        assert_eq!(n.online_changed_at, secs(50));

        // A hello on a node that was offline brings it back and records the change.
        store.set_online("n", false, secs(60)).unwrap();
        store
            .upsert_node_hello("n", "agent", "v1", "0.1.0", secs(70))
            .unwrap();
        let n = store.node("n").unwrap().unwrap();
        assert!(n.online);
        assert_eq!(n.online_changed_at, secs(70));
    }

    #[test]
    fn mark_all_offline_counts_the_nodes_it_changed() {
        let store = Store::open_in_memory().unwrap();
        for name in ["a", "b", "c"] {
            store
                .upsert_node_hello(name, "agent", "v1", "0.1.0", secs(0))
                .unwrap();
        }
        store.set_online("c", false, secs(5)).unwrap();
        assert_eq!(store.mark_all_offline(secs(100)).unwrap(), 2);
        let nodes = store.nodes().unwrap();
        assert!(nodes.iter().all(|n| !n.online));
        assert_eq!(nodes[0].online_changed_at, secs(100));
        assert_eq!(nodes[2].online_changed_at, secs(5));
    }

    #[test]
    fn node_record_serializes_timestamps_as_rfc3339() {
        let store = Store::open_in_memory().unwrap();
        store
            .upsert_node_hello("n", "server", "v1", "0.1.0", T0)
            .unwrap();
        let json = serde_json::to_value(store.node("n").unwrap().unwrap()).unwrap();
        assert_eq!(json["first_seen"], "2026-01-01T00:00:00Z");
        assert_eq!(json["renewal_deadline"], serde_json::Value::Null);
        assert_eq!(json["online"], true);
    }
}
