//! The latest certificate snapshot of every node: the certificates and unreadable files its
//! agent last reported. A new snapshot replaces the previous one whole, in one transaction.

use std::time::Duration;

use rusqlite::{OptionalExtension, Row, TransactionBehavior, params};
use time::OffsetDateTime;

use super::{CertRow, FileErrorRow, Store, StoreError, check_status, from_db, from_db_opt, to_db};

impl Store {
    /// Replaces `node`'s certificate snapshot with `certs` and `file_errors`, received `now`.
    /// All or nothing: if any row is refused, the previous snapshot stays as it was.
    ///
    /// # Errors
    /// [`StoreError::UnknownNode`] if the node never said hello; [`StoreError::Invalid`] for a
    /// status word RKE2 does not use; [`StoreError::NodeSql`] if a write fails, e.g. two rows
    /// with the same path and index.
    pub fn replace_certificates(
        &self,
        node: &str,
        certs: &[CertRow],
        file_errors: &[FileErrorRow],
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        for cert in certs {
            check_status("certificates", "status", &cert.status)?;
        }
        let on = |table| {
            move |source| StoreError::NodeSql {
                table,
                node: node.to_owned(),
                action: "replacing the certificate snapshot",
                source,
            }
        };
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(on("nodes"))?;
        let known = tx
            .query_row("SELECT 1 FROM nodes WHERE name = ?1", params![node], |_| {
                Ok(())
            })
            .optional()
            .map_err(on("nodes"))?;
        if known.is_none() {
            return Err(StoreError::UnknownNode {
                node: node.to_owned(),
            });
        }
        tx.execute("DELETE FROM certificates WHERE node = ?1", params![node])
            .map_err(on("certificates"))?;
        tx.execute("DELETE FROM file_errors WHERE node = ?1", params![node])
            .map_err(on("file_errors"))?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO certificates (node, path, idx, subject, issuer, serial, usages, \
                                               is_ca, sans, not_before, not_after, status) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )
                .map_err(on("certificates"))?;
            for cert in certs {
                insert
                    .execute(params![
                        node,
                        cert.path,
                        cert.index,
                        cert.subject,
                        cert.issuer,
                        cert.serial,
                        json_list(&cert.usages),
                        cert.is_ca,
                        json_list(&cert.sans),
                        to_db(cert.not_before),
                        to_db(cert.not_after),
                        cert.status,
                    ])
                    .map_err(on("certificates"))?;
            }
            let mut insert = tx
                .prepare_cached("INSERT INTO file_errors (node, path, reason) VALUES (?1, ?2, ?3)")
                .map_err(on("file_errors"))?;
            for error in file_errors {
                insert
                    .execute(params![node, error.path, error.reason])
                    .map_err(on("file_errors"))?;
            }
        }
        tx.execute(
            "UPDATE nodes SET certificates_at = ?2, last_seen = ?2 WHERE name = ?1",
            params![node, to_db(now)],
        )
        .map_err(on("nodes"))?;
        tx.commit().map_err(on("certificates"))
    }

    /// The certificates of `node` (every node when `None`), sorted by node, path and index.
    /// With `expiring_within`, only those whose NotAfter is at most that far after `now`
    /// (already expired ones included).
    ///
    /// # Errors
    /// [`StoreError::Sql`] if the read fails; [`StoreError::Corrupt`] for an unreadable row.
    pub fn certificates(
        &self,
        node: Option<&str>,
        expiring_within: Option<Duration>,
        now: OffsetDateTime,
    ) -> Result<Vec<(String, CertRow)>, StoreError> {
        self.certificates_page(node, expiring_within, now, None, u32::MAX)
    }

    /// One page of [`Self::certificates`]: at most `limit` rows after the key `after`
    /// (node, path, index; from the start when `None`), in the same order. 500 nodes of 50
    /// certificates do not fit one gRPC message; the CLI pages through them.
    ///
    /// # Errors
    /// As [`Self::certificates`].
    pub fn certificates_page(
        &self,
        node: Option<&str>,
        expiring_within: Option<Duration>,
        now: OffsetDateTime,
        after: Option<(&str, &str, u32)>,
        limit: u32,
    ) -> Result<Vec<(String, CertRow)>, StoreError> {
        let cutoff = expiring_within.map(|within| {
            to_db(now).saturating_add(i64::try_from(within.as_secs()).unwrap_or(i64::MAX))
        });
        let sql_err = |source| StoreError::Sql {
            table: "certificates",
            action: "listing certificates",
            source,
        };
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT node, path, idx, subject, issuer, serial, usages, is_ca, sans, \
                        not_before, not_after, status \
                 FROM certificates \
                 WHERE (?1 IS NULL OR node = ?1) AND (?2 IS NULL OR not_after <= ?2) \
                   AND (?3 IS NULL OR (node, path, idx) > (?3, ?4, ?5)) \
                 ORDER BY node, path, idx LIMIT ?6",
            )
            .map_err(sql_err)?;
        let (after_node, after_path, after_idx) = match after {
            Some((n, p, i)) => (Some(n), Some(p), Some(i)),
            None => (None, None, None),
        };
        let raw = stmt
            .query_map(
                params![node, cutoff, after_node, after_path, after_idx, limit],
                RawCert::read,
            )
            .map_err(sql_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql_err)?;
        raw.into_iter().map(RawCert::into_row).collect()
    }

    /// The earliest NotAfter over every node's certificates; `None` when there are none.
    ///
    /// One lookup in the `not_after` index: the metrics scrape needs this one value, and
    /// reading every row instead (100,000 for 2,000 servers) held the store for ~130 ms and
    /// left ~40 MiB of heap behind per scrape.
    ///
    /// # Errors
    /// [`StoreError::Sql`] if the read fails; [`StoreError::Corrupt`] for an out-of-range value.
    pub fn earliest_not_after(&self) -> Result<Option<OffsetDateTime>, StoreError> {
        let sql_err = |source| StoreError::Sql {
            table: "certificates",
            action: "finding the earliest expiry",
            source,
        };
        let earliest: Option<i64> = self
            .conn()
            .prepare_cached("SELECT MIN(not_after) FROM certificates")
            .map_err(sql_err)?
            .query_row([], |row| row.get(0))
            .map_err(sql_err)?;
        from_db_opt(earliest, "certificates", || "MIN".to_owned(), "not_after")
    }

    /// The unreadable certificate files of `node` (every node when `None`), sorted by node and
    /// path.
    ///
    /// # Errors
    /// [`StoreError::Sql`] if the read fails.
    pub fn file_errors(
        &self,
        node: Option<&str>,
    ) -> Result<Vec<(String, FileErrorRow)>, StoreError> {
        let sql_err = |source| StoreError::Sql {
            table: "file_errors",
            action: "listing unreadable files",
            source,
        };
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT node, path, reason FROM file_errors \
                 WHERE (?1 IS NULL OR node = ?1) ORDER BY node, path",
            )
            .map_err(sql_err)?;
        stmt.query_map(params![node], |row| {
            Ok((
                row.get(0)?,
                FileErrorRow {
                    path: row.get(1)?,
                    reason: row.get(2)?,
                },
            ))
        })
        .map_err(sql_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql_err)
    }
}

/// A list column's stored form: a JSON array of strings.
fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).expect("a list of strings always serializes")
}

/// A `certificates` row as SQLite holds it, before its lists and timestamps are checked.
struct RawCert {
    node: String,
    path: String,
    index: u32,
    subject: String,
    issuer: String,
    serial: String,
    usages: String,
    is_ca: bool,
    sans: String,
    not_before: i64,
    not_after: i64,
    status: String,
}

impl RawCert {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            node: row.get(0)?,
            path: row.get(1)?,
            index: row.get(2)?,
            subject: row.get(3)?,
            issuer: row.get(4)?,
            serial: row.get(5)?,
            usages: row.get(6)?,
            is_ca: row.get(7)?,
            sans: row.get(8)?,
            not_before: row.get(9)?,
            not_after: row.get(10)?,
            status: row.get(11)?,
        })
    }

    fn into_row(self) -> Result<(String, CertRow), StoreError> {
        let key = || format!("{}:{}#{}", self.node, self.path, self.index);
        let list = |text: &str, column| {
            serde_json::from_str::<Vec<String>>(text).map_err(|err| StoreError::Corrupt {
                table: "certificates",
                key: key(),
                column,
                reason: err.to_string(),
            })
        };
        let row = CertRow {
            usages: list(&self.usages, "usages")?,
            sans: list(&self.sans, "sans")?,
            not_before: from_db(self.not_before, "certificates", key, "not_before")?,
            not_after: from_db(self.not_after, "certificates", key, "not_after")?,
            path: self.path,
            index: self.index,
            subject: self.subject,
            issuer: self.issuer,
            serial: self.serial,
            is_ca: self.is_ca,
            status: self.status,
        };
        Ok((self.node, row))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap in a test names its line, which is enough
mod tests {
    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2026-03-01 00:00 UTC);

    fn cert(path: &str, index: u32, days_left: i64, serial: &str) -> CertRow {
        CertRow {
            path: path.to_owned(),
            index,
            subject: format!("CN={path}"),
            issuer: "CN=rke2-server-ca@1700000000".to_owned(),
            serial: serial.to_owned(),
            usages: vec!["ClientAuth".to_owned()],
            is_ca: false,
            sans: vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            not_before: NOW - time::Duration::days(365 - days_left),
            not_after: NOW + time::Duration::days(days_left),
            status: if days_left < 0 { "EXPIRED" } else { "OK" }.to_owned(),
        }
    }

    fn store_with(nodes: &[&str]) -> Store {
        let store = Store::open_in_memory().unwrap();
        for name in nodes {
            store
                .upsert_node_hello(name, "server", "v1", "0.1.0", NOW)
                .unwrap();
        }
        store
    }

    #[test]
    fn certificates_round_trip_sorted_by_node_path_index() {
        let store = store_with(&["b", "a"]);
        let b = vec![
            cert("/tls/z.crt", 0, 200, "01"),
            cert("/tls/a.crt", 1, 200, "03"),
        ];
        let a = vec![
            cert("/tls/a.crt", 1, 10, "05"),
            cert("/tls/a.crt", 0, 10, "04"),
        ];
        store.replace_certificates("b", &b, &[], NOW).unwrap();
        store.replace_certificates("a", &a, &[], NOW).unwrap();

        let all = store.certificates(None, None, NOW).unwrap();
        let keys: Vec<_> = all
            .iter()
            .map(|(n, c)| (n.as_str(), c.path.as_str(), c.index))
            .collect();
        assert_eq!(
            keys,
            [
                ("a", "/tls/a.crt", 0),
                ("a", "/tls/a.crt", 1),
                ("b", "/tls/a.crt", 1),
                ("b", "/tls/z.crt", 0),
            ]
        );
        assert_eq!(all[0].1, a[1]);
        assert_eq!(store.certificates(Some("b"), None, NOW).unwrap().len(), 2);
        assert!(
            store
                .certificates(Some("nope"), None, NOW)
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.node("a").unwrap().unwrap().certificates_at, Some(NOW));
    }

    #[test]
    fn certificate_pages_continue_after_the_last_key_without_gaps() {
        let store = store_with(&["a", "b", "c"]);
        for node in ["a", "b", "c"] {
            let certs: Vec<CertRow> = (0..3)
                .map(|i| cert(&format!("/tls/{i}.crt"), 0, 100, "01"))
                .collect();
            store.replace_certificates(node, &certs, &[], NOW).unwrap();
        }
        let all = store.certificates(None, None, NOW).unwrap();
        let mut paged = Vec::new();
        let mut after: Option<(String, String, u32)> = None;
        loop {
            let page = store
                .certificates_page(
                    None,
                    None,
                    NOW,
                    after.as_ref().map(|(n, p, i)| (n.as_str(), p.as_str(), *i)),
                    4,
                )
                .unwrap();
            let Some((node, last)) = page.last() else {
                break;
            };
            after = Some((node.clone(), last.path.clone(), last.index));
            paged.extend(page);
        }
        assert_eq!(paged, all);
        assert_eq!(paged.len(), 9);
    }

    #[test]
    fn earliest_not_after_is_the_fleet_minimum_or_none() {
        let store = store_with(&["a", "b"]);
        assert_eq!(store.earliest_not_after().unwrap(), None);
        store
            .replace_certificates("a", &[cert("/a.crt", 0, 90, "01")], &[], NOW)
            .unwrap();
        store
            .replace_certificates("b", &[cert("/b.crt", 0, 12, "02")], &[], NOW)
            .unwrap();
        assert_eq!(
            store.earliest_not_after().unwrap(),
            Some(NOW + time::Duration::days(12))
        );
    }

    #[test]
    fn expiring_within_keeps_certificates_ending_before_the_cutoff() {
        let store = store_with(&["n"]);
        let certs = vec![
            cert("/expired.crt", 0, -1, "01"),
            cert("/soon.crt", 0, 30, "02"),
            cert("/later.crt", 0, 31, "03"),
        ];
        store.replace_certificates("n", &certs, &[], NOW).unwrap();
        let within = Duration::from_secs(30 * 86_400);
        let paths: Vec<_> = store
            .certificates(None, Some(within), NOW)
            .unwrap()
            .into_iter()
            .map(|(_, c)| c.path)
            .collect();
        assert_eq!(paths, ["/expired.crt", "/soon.crt"]);
        // A huge window does not overflow.
        let all = store
            .certificates(None, Some(Duration::from_secs(u64::MAX)), NOW)
            .unwrap();
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn a_new_snapshot_replaces_the_previous_one() {
        let store = store_with(&["n", "other"]);
        let errors = vec![FileErrorRow {
            path: "/tls/empty.crt".to_owned(),
            reason: "empty".to_owned(),
        }];
        store
            .replace_certificates("n", &[cert("/old.crt", 0, 10, "01")], &errors, NOW)
            .unwrap();
        store
            .replace_certificates("other", &[cert("/x.crt", 0, 10, "09")], &errors, NOW)
            .unwrap();
        store
            .replace_certificates("n", &[cert("/new.crt", 0, 365, "02")], &[], NOW)
            .unwrap();

        let n = store.certificates(Some("n"), None, NOW).unwrap();
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].1.path, "/new.crt");
        assert!(store.file_errors(Some("n")).unwrap().is_empty());
        // Other nodes' snapshots are untouched.
        assert_eq!(
            store.certificates(Some("other"), None, NOW).unwrap().len(),
            1
        );
        assert_eq!(
            store.file_errors(None).unwrap(),
            [("other".to_owned(), errors[0].clone())]
        );
    }

    #[test]
    fn a_failing_snapshot_leaves_the_previous_one() {
        let store = store_with(&["n"]);
        let before = vec![cert("/a.crt", 0, 10, "01"), cert("/b.crt", 0, 10, "02")];
        let errors = vec![FileErrorRow {
            path: "/c.crt".to_owned(),
            reason: "unparsable PEM".to_owned(),
        }];
        store
            .replace_certificates("n", &before, &errors, NOW)
            .unwrap();

        // The duplicate (path, index) fails on the third insert, after the deletes ran.
        let bad = vec![
            cert("/new.crt", 0, 365, "10"),
            cert("/other.crt", 0, 365, "11"),
            cert("/new.crt", 0, 365, "12"),
        ];
        let later = NOW + time::Duration::hours(1);
        let err = store
            .replace_certificates("n", &bad, &[], later)
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::NodeSql { table: "certificates", node, .. } if node == "n"),
            "{err}"
        );

        let after: Vec<_> = store
            .certificates(Some("n"), None, NOW)
            .unwrap()
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        assert_eq!(after, before);
        assert_eq!(store.file_errors(Some("n")).unwrap().len(), 1);
        assert_eq!(store.node("n").unwrap().unwrap().certificates_at, Some(NOW));
    }

    #[test]
    fn a_snapshot_with_an_unknown_status_word_is_refused_whole() {
        let store = store_with(&["n"]);
        let mut odd = cert("/a.crt", 0, 10, "01");
        odd.status = "FINE".to_owned();
        let err = store
            .replace_certificates("n", &[odd], &[], NOW)
            .unwrap_err();
        assert!(err.to_string().contains("FINE"), "{err}");
    }

    #[test]
    fn a_snapshot_for_an_unknown_node_is_refused() {
        let store = store_with(&[]);
        let err = store
            .replace_certificates("ghost", &[cert("/a.crt", 0, 1, "01")], &[], NOW)
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::UnknownNode { node } if node == "ghost"),
            "{err}"
        );
        assert!(store.certificates(None, None, NOW).unwrap().is_empty());
    }
}
