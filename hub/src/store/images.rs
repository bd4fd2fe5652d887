//! Each plan node's air-gap image staging ([`crate::plan::images`]): one row per node once
//! its staging started, in a table of its own so the node's maintenance row (written whole
//! by its task) never overwrites it. Written before each side effect like the plan's nodes:
//! `staging` before the operation is sent, so a restarted hub asks for the same id again.

use rusqlite::params;
use time::OffsetDateTime;

use rke2ops_common::text::{MAX_DETAIL, clip};

use super::{Store, StoreError, from_db_opt, to_db};
use crate::plan::images::{ImagesState, NodeImages};

fn err(plan: i64, action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::PlanSql {
        plan,
        action,
        source,
    }
}

impl Store {
    /// The staging rows of plan `id` (nodes whose staging never started have none).
    ///
    /// # Errors
    /// SQL failures; a corrupt row names its column.
    pub fn plan_images(&self, id: i64) -> Result<Vec<NodeImages>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT node, state, attempt, detail, started_at, finished_at \
                 FROM plan_node_images WHERE plan_id = ?1 ORDER BY node",
            )
            .map_err(err(id, "reading the plan's image staging"))?;
        let rows = stmt
            .query_map([id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                ))
            })
            .map_err(err(id, "reading the plan's image staging"))?;
        rows.map(|r| {
            let (node, state, attempt, detail, started, finished) =
                r.map_err(err(id, "reading the plan's image staging"))?;
            let key = || node.clone();
            Ok(NodeImages {
                state: state.parse().map_err(|reason| StoreError::Corrupt {
                    table: "plan_node_images",
                    key: node.clone(),
                    column: "state",
                    reason,
                })?,
                attempt,
                detail,
                started_at: from_db_opt(started, "plan_node_images", key, "started_at")?,
                finished_at: from_db_opt(finished, "plan_node_images", key, "finished_at")?,
                node: node.clone(),
            })
        })
        .collect()
    }

    /// Writes one node's staging row and, when given, an event, in one transaction.
    ///
    /// # Errors
    /// SQL failures.
    pub fn save_node_images(
        &self,
        id: i64,
        row: &NodeImages,
        event: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(err(id, "saving a node's image staging"))?;
        tx.execute(
            "INSERT OR REPLACE INTO plan_node_images \
             (plan_id, node, state, attempt, detail, started_at, finished_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                id,
                row.node,
                row.state.name(),
                row.attempt,
                clip(&row.detail, MAX_DETAIL),
                row.started_at.map(to_db),
                row.finished_at.map(to_db),
            ],
        )
        .map_err(err(id, "saving a node's image staging"))?;
        if let Some(message) = event {
            tx.execute(
                "INSERT INTO plan_events (plan_id, at, node, message) VALUES (?1, ?2, ?3, ?4)",
                params![id, to_db(now), row.node, clip(message, MAX_DETAIL)],
            )
            .map_err(err(id, "recording a plan event"))?;
        }
        tx.execute(
            "UPDATE plans SET updated_at = ?2 WHERE id = ?1",
            params![id, to_db(now)],
        )
        .map_err(err(id, "saving a node's image staging"))?;
        tx.commit()
            .map_err(err(id, "saving a node's image staging"))
    }

    /// `resume`: every failed staging of plan `id` becomes pending again with its next
    /// attempt (a new operation id: the agent reports an old id's failure again). Returns
    /// the nodes.
    ///
    /// # Errors
    /// SQL failures.
    pub fn retry_failed_images(
        &self,
        id: i64,
        now: OffsetDateTime,
    ) -> Result<Vec<String>, StoreError> {
        let failed: Vec<NodeImages> = self
            .plan_images(id)?
            .into_iter()
            .filter(|r| r.state == ImagesState::Failed)
            .collect();
        for mut row in failed.clone() {
            row.state = ImagesState::Pending;
            row.attempt += 1;
            row.finished_at = None;
            row.detail = "retrying (plan resumed)".to_owned();
            self.save_node_images(id, &row, Some("images: staging will be retried"), now)?;
        }
        Ok(failed.into_iter().map(|r| r.node).collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::plan::decide::Role;
    use crate::plan::model::{PlanKind, PlanNode, PlanPolicy};
    use crate::store::plans::NewPlan;

    #[test]
    fn stagings_round_trip_and_a_resume_retries_the_failed_with_the_next_attempt() {
        let store = Store::open_in_memory().unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let policy = PlanPolicy {
            stage_images: true,
            ..PlanPolicy::default()
        };
        let id = store
            .create_plan(
                &NewPlan {
                    kind: PlanKind::Upgrade,
                    target_version: "v1.34.1+rke2r1",
                    channel: "",
                    policy: &policy,
                    origin: "operator",
                    created_by: "uid:0",
                    cluster: "default",
                    rollout: None,
                },
                &[
                    PlanNode::pending("s1", 0, Role::Server, "v1.33.5+rke2r1"),
                    PlanNode::pending("a1", 1, Role::Agent, "v1.33.5+rke2r1"),
                ],
                now,
            )
            .unwrap();
        assert!(store.plan(id).unwrap().policy.stage_images);
        assert!(store.plan_images(id).unwrap().is_empty());
        let staged = NodeImages {
            state: ImagesState::Staged,
            attempt: 1,
            detail: "placed x".into(),
            started_at: Some(now),
            finished_at: Some(now),
            ..NodeImages::pending("s1")
        };
        let failed = NodeImages {
            state: ImagesState::Failed,
            detail: "checksum mismatch".into(),
            finished_at: Some(now),
            ..staged.clone()
        };
        let failed = NodeImages {
            node: "a1".into(),
            ..failed
        };
        store
            .save_node_images(id, &staged, Some("images staged"), now)
            .unwrap();
        store.save_node_images(id, &failed, None, now).unwrap();
        assert_eq!(
            store.plan_images(id).unwrap(),
            vec![failed.clone(), staged.clone()]
        );
        assert_eq!(
            store.retry_failed_images(id, now).unwrap(),
            vec!["a1".to_owned()]
        );
        let rows = store.plan_images(id).unwrap();
        let a1 = rows.iter().find(|r| r.node == "a1").unwrap();
        assert_eq!((a1.state, a1.attempt), (ImagesState::Pending, 2));
        assert!(
            store
                .plan_events(id, 10)
                .unwrap()
                .iter()
                .any(|e| e.node == "s1" && e.message == "images staged")
        );
    }
}
