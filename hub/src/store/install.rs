//! How RKE2 is installed on each node, as its agent last reported it.

use std::collections::BTreeMap;

use rusqlite::params;

use super::{Store, StoreError};
use crate::engine::messages::InstallFacts;

fn sql<'a>(node: &'a str, action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + 'a {
    move |source| StoreError::NodeSql {
        table: "nodes",
        node: node.to_owned(),
        action,
        source,
    }
}

impl Store {
    /// Records `node`'s install report.
    ///
    /// # Errors
    /// [`StoreError::UnknownNode`]; [`StoreError::NodeSql`] if the write fails.
    pub fn set_install(&self, node: &str, install: &InstallFacts) -> Result<(), StoreError> {
        let changed = self
            .conn()
            .execute(
                "UPDATE nodes SET install_method = ?2, install_detail = ?3, package_manager = ?4, \
                 rpm_repository = ?5 WHERE name = ?1",
                params![
                    node,
                    install.method,
                    install.detail,
                    install.package_manager,
                    install.rpm_repository
                ],
            )
            .map_err(sql(node, "recording the install method"))?;
        if changed == 0 {
            return Err(StoreError::UnknownNode {
                node: node.to_owned(),
            });
        }
        Ok(())
    }

    /// Every node's install report (nodes that sent none are left out).
    ///
    /// # Errors
    /// [`StoreError::Sql`] if the read fails.
    pub fn installs(&self) -> Result<BTreeMap<String, InstallFacts>, StoreError> {
        let sql_err = |source| StoreError::Sql {
            table: "nodes",
            action: "listing install methods",
            source,
        };
        let conn = self.conn();
        let mut statement = conn
            .prepare_cached(
                "SELECT name, install_method, install_detail, package_manager, rpm_repository \
                 FROM nodes WHERE install_method != '' ORDER BY name",
            )
            .map_err(sql_err)?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    InstallFacts {
                        method: row.get(1)?,
                        detail: row.get(2)?,
                        package_manager: row.get(3)?,
                        rpm_repository: row.get(4)?,
                    },
                ))
            })
            .map_err(sql_err)?;
        rows.collect::<Result<BTreeMap<_, _>, _>>().map_err(sql_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_reports_read_back_and_unknown_nodes_are_named() {
        let store = Store::open_in_memory().expect("store");
        let now = time::OffsetDateTime::from_unix_timestamp(1_790_000_000).expect("time");
        for node in ["s1", "w1"] {
            store
                .upsert_node_hello(node, "server", "v1.34.1+rke2r1", "0.1.0", now)
                .expect("hello");
        }
        assert!(
            store.installs().expect("read").is_empty(),
            "none reported yet"
        );
        let rpm = InstallFacts {
            method: "rpm".into(),
            detail: "rke2-common-1.34.1~rke2r1-0 rke2-server-1.34.1~rke2r1-0".into(),
            package_manager: "dnf".into(),
            rpm_repository: "https://rpm.rancher.io/rke2/stable".into(),
        };
        store.set_install("s1", &rpm).expect("write");
        let read = store.installs().expect("read");
        assert_eq!(read.len(), 1);
        assert_eq!(read["s1"], rpm);
        let err = store.set_install("ghost", &rpm).expect_err("unknown node");
        assert!(err.to_string().contains("ghost"), "{err}");
    }
}
