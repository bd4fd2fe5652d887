//! The audit log: every admin action, who did it and when. Append-only: the store offers no
//! way to change or delete an entry.

use rusqlite::{Connection, params};
use time::OffsetDateTime;

use super::{AuditEntry, Store, StoreError, from_db, to_db};

impl Store {
    /// Appends an entry and returns its id. When this returns, the entry is durable.
    ///
    /// # Errors
    /// [`StoreError::Sql`] if the write fails.
    pub fn audit(
        &self,
        actor: &str,
        action: &str,
        detail: &str,
        now: OffsetDateTime,
    ) -> Result<i64, StoreError> {
        append(&self.conn(), actor, action, detail, now)
    }

    /// The newest `limit` entries, newest first.
    ///
    /// # Errors
    /// [`StoreError::Sql`] if the read fails; [`StoreError::Corrupt`] for an unreadable row.
    pub fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let sql_err = |source| StoreError::Sql {
            table: "audit_log",
            action: "reading the log",
            source,
        };
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, at, actor, action, detail FROM audit_log ORDER BY id DESC LIMIT ?1",
            )
            .map_err(sql_err)?;
        let raw: Vec<(i64, i64, String, String, String)> = stmt
            .query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            })
            .map_err(sql_err)?
            .collect::<Result<_, _>>()
            .map_err(sql_err)?;
        raw.into_iter()
            .map(|(id, at, actor, action, detail)| {
                Ok(AuditEntry {
                    id,
                    at: from_db(at, "audit_log", || id.to_string(), "at")?,
                    actor,
                    action,
                    detail,
                })
            })
            .collect()
    }
}

/// Appends an entry on `conn`, which may be inside a transaction: an action and its audit
/// entry then commit together or not at all.
pub(super) fn append(
    conn: &Connection,
    actor: &str,
    action: &str,
    detail: &str,
    now: OffsetDateTime,
) -> Result<i64, StoreError> {
    conn.execute(
        "INSERT INTO audit_log (at, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
        params![to_db(now), actor, action, detail],
    )
    .map_err(|source| StoreError::Sql {
        table: "audit_log",
        action: "appending an entry",
        source,
    })?;
    Ok(conn.last_insert_rowid())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap in a test names its line, which is enough
mod tests {
    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

    #[test]
    fn audit_log_is_newest_first_and_limited() {
        let store = Store::open_in_memory().unwrap();
        let first = store.audit("uid:0", "token.create", "ttl 1h", NOW).unwrap();
        let second = store
            .audit("admin-alice", "plan.create", "rotate all", NOW)
            .unwrap();
        let third = store.audit("uid:0", "plan.pause", "plan 1", NOW).unwrap();
        assert!(first < second && second < third);

        let log = store.audit_log(2).unwrap();
        assert_eq!(
            log.iter().map(|e| e.id).collect::<Vec<_>>(),
            [third, second]
        );
        assert_eq!(
            log[1],
            AuditEntry {
                id: second,
                at: NOW,
                actor: "admin-alice".to_owned(),
                action: "plan.create".to_owned(),
                detail: "rotate all".to_owned(),
            }
        );
        assert_eq!(store.audit_log(usize::MAX).unwrap().len(), 3);
        assert!(store.audit_log(0).unwrap().is_empty());
    }
}
