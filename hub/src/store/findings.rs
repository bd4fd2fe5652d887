//! Each node's doctor findings as its agent last reported them, and its clock's distance
//! from the hub's. A report replaces the node's findings whole (one transaction), so the hub
//! never shows half of one report and half of another.

use rke2ops_common::doctor::{Code, Evidence, Finding, Severity};
use rusqlite::{TransactionBehavior, params};
use time::OffsetDateTime;

use super::{Store, StoreError, from_db_opt, to_db};

/// One node's reported findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFindings {
    /// The node.
    pub node: String,
    /// When its agent last reported them (`None`: never).
    pub reported_at: Option<OffsetDateTime>,
    /// Its clock minus the hub's at its last status, in milliseconds (`None`: unknown).
    pub clock_offset_ms: Option<i64>,
    /// Worst first, each with `node` set.
    pub findings: Vec<Finding>,
}

fn sql<'a>(node: &'a str, action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + 'a {
    move |source| StoreError::NodeSql {
        table: "node_findings",
        node: node.to_owned(),
        action,
        source,
    }
}

impl Store {
    /// Replaces `node`'s findings with `findings` (reported at `now`).
    ///
    /// # Errors
    /// [`StoreError::UnknownNode`] if the node never said hello; [`StoreError::NodeSql`] if
    /// the write fails.
    pub fn replace_node_findings(
        &self,
        node: &str,
        findings: &[Finding],
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(node, "replacing the findings"))?;
        let changed = tx
            .execute(
                "UPDATE nodes SET findings_at = ?2 WHERE name = ?1",
                params![node, to_db(now)],
            )
            .map_err(sql(node, "replacing the findings"))?;
        if changed == 0 {
            return Err(StoreError::UnknownNode {
                node: node.to_owned(),
            });
        }
        tx.execute("DELETE FROM node_findings WHERE node = ?1", params![node])
            .map_err(sql(node, "replacing the findings"))?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO node_findings (node, idx, code, severity, object, evidence, fix) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(sql(node, "replacing the findings"))?;
            for (i, f) in findings.iter().enumerate() {
                let evidence: Vec<(&str, &str)> = f
                    .evidence
                    .iter()
                    .map(|e| (e.field.as_str(), e.value.as_str()))
                    .collect();
                let evidence = serde_json::to_string(&evidence).unwrap_or_else(|_| "[]".into());
                insert
                    .execute(params![
                        node,
                        i64::try_from(i).unwrap_or(i64::MAX),
                        f.code.as_str(),
                        f.severity.as_str(),
                        f.object,
                        evidence,
                        f.fix
                    ])
                    .map_err(sql(node, "replacing the findings"))?;
            }
        }
        tx.commit().map_err(sql(node, "replacing the findings"))
    }

    /// Records how far `node`'s clock is from the hub's (milliseconds, its minus ours).
    ///
    /// # Errors
    /// [`StoreError::UnknownNode`]; [`StoreError::NodeSql`] if the write fails.
    pub fn set_clock_offset(&self, node: &str, offset_ms: i64) -> Result<(), StoreError> {
        let changed = self
            .conn()
            .execute(
                "UPDATE nodes SET clock_offset_ms = ?2 WHERE name = ?1",
                params![node, offset_ms],
            )
            .map_err(sql(node, "recording the clock offset"))?;
        if changed == 0 {
            return Err(StoreError::UnknownNode {
                node: node.to_owned(),
            });
        }
        Ok(())
    }

    /// Every node's reported findings and clock offset, sorted by node name.
    ///
    /// # Errors
    /// [`StoreError::Sql`] if the read fails; [`StoreError::Corrupt`] for a stored code,
    /// severity or evidence this build cannot read.
    pub fn node_findings(&self) -> Result<Vec<NodeFindings>, StoreError> {
        let sql_err = |source| StoreError::Sql {
            table: "node_findings",
            action: "listing findings",
            source,
        };
        let conn = self.conn();
        let mut nodes = conn
            .prepare_cached("SELECT name, findings_at, clock_offset_ms FROM nodes ORDER BY name")
            .map_err(sql_err)?;
        let heads = nodes
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Option<i64>>(1)?,
                    row.get::<_, Option<i64>>(2)?,
                ))
            })
            .map_err(sql_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql_err)?;
        let mut rows = conn
            .prepare_cached(
                "SELECT node, code, severity, object, evidence, fix FROM node_findings \
                 ORDER BY node, idx",
            )
            .map_err(sql_err)?;
        let raw = rows
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, String>(5)?,
                ))
            })
            .map_err(sql_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql_err)?;
        let mut out: Vec<NodeFindings> = Vec::with_capacity(heads.len());
        for (node, at, offset) in heads {
            let reported_at = from_db_opt(at, "nodes", || node.clone(), "findings_at")?;
            out.push(NodeFindings {
                node,
                reported_at,
                clock_offset_ms: offset,
                findings: Vec::new(),
            });
        }
        for (node, code, severity, object, evidence, fix) in raw {
            let finding = read_finding(&node, &code, &severity, object, &evidence, fix)?;
            if let Ok(i) = out.binary_search_by(|n| n.node.as_str().cmp(&node)) {
                out[i].findings.push(finding);
            }
        }
        Ok(out)
    }

    /// Each node's last renewal: the newest NotBefore among the leaves of its stored
    /// snapshot (nodes without one are absent).
    ///
    /// # Errors
    /// [`StoreError::Sql`] if the read fails; [`StoreError::Corrupt`] for a bad timestamp.
    pub fn last_renewals(
        &self,
    ) -> Result<std::collections::HashMap<String, OffsetDateTime>, StoreError> {
        let sql_err = |source| StoreError::Sql {
            table: "certificates",
            action: "reading the last renewals",
            source,
        };
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT node, MAX(not_before) FROM certificates WHERE is_ca = 0 GROUP BY node",
            )
            .map_err(sql_err)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })
            .map_err(sql_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql_err)?;
        rows.into_iter()
            .map(|(node, at)| {
                let at = super::from_db(at, "certificates", || node.clone(), "not_before")?;
                Ok((node, at))
            })
            .collect()
    }
}

fn read_finding(
    node: &str,
    code: &str,
    severity: &str,
    object: String,
    evidence: &str,
    fix: String,
) -> Result<Finding, StoreError> {
    let corrupt = |column, reason: String| StoreError::Corrupt {
        table: "node_findings",
        key: node.to_owned(),
        column,
        reason,
    };
    let code =
        Code::parse(code).ok_or_else(|| corrupt("code", format!("unknown code {code:?}")))?;
    let severity = match severity {
        "info" => Severity::Info,
        "warning" => Severity::Warning,
        "blocker" => Severity::Blocker,
        other => return Err(corrupt("severity", format!("unknown severity {other:?}"))),
    };
    let evidence: Vec<(String, String)> =
        serde_json::from_str(evidence).map_err(|e| corrupt("evidence", e.to_string()))?;
    Ok(Finding {
        code,
        severity,
        node: node.to_owned(),
        object,
        evidence: evidence
            .into_iter()
            .map(|(field, value)| Evidence { field, value })
            .collect(),
        fix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(node: &str) -> Store {
        let store = Store::open_in_memory().expect("store");
        let now = OffsetDateTime::from_unix_timestamp(1_790_000_000).expect("time");
        store
            .upsert_node_hello(node, "server", "v1.34.1+rke2r1", "0.1.0", now)
            .expect("hello");
        store
    }

    #[test]
    fn a_report_replaces_the_nodes_findings_whole_and_reads_back_unchanged() {
        let store = store_with("s1");
        let now = OffsetDateTime::from_unix_timestamp(1_790_000_100).expect("time");
        let first = vec![
            Finding::new(
                Code::UnitFailed,
                Severity::Blocker,
                "s1",
                "rke2-server",
                "fix it",
            )
            .with("journal", "line 1")
            .with("journal", "line \"2\""),
            Finding::new(Code::DiskLow, Severity::Warning, "s1", "/var", "free space"),
        ];
        store
            .replace_node_findings("s1", &first, now)
            .expect("stored");
        store.set_clock_offset("s1", -42_000).expect("offset");
        let read = store.node_findings().expect("read");
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].findings, first);
        assert_eq!(read[0].reported_at, Some(now));
        assert_eq!(read[0].clock_offset_ms, Some(-42_000));
        store
            .replace_node_findings("s1", &[], now)
            .expect("cleared");
        assert!(store.node_findings().expect("read")[0].findings.is_empty());
    }

    #[test]
    fn findings_of_an_unknown_node_are_refused_naming_it() {
        let store = store_with("s1");
        let err = store
            .replace_node_findings("ghost", &[], OffsetDateTime::UNIX_EPOCH)
            .expect_err("unknown");
        assert!(err.to_string().contains("ghost"), "{err}");
        assert!(store.set_clock_offset("ghost", 1).is_err());
    }
}
