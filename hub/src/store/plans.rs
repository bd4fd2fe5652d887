//! Rolling plans: the plan row (kind, target, policy, state), one row per node (phase and
//! what the plan did to it) and an append-only history. The engine writes a node's new phase
//! here *before* acting on it, so a restarted hub re-enters exactly the phase it was in.

use rusqlite::{OptionalExtension, Row, TransactionBehavior, params};
use time::OffsetDateTime;

use rke2ops_common::text::{MAX_DETAIL, clip};

use super::{Store, StoreError, from_db, from_db_opt, to_db};
use crate::plan::model::{
    Plan, PlanEvent, PlanKind, PlanNode, PlanPolicy, PlanState, role_of, role_word,
};

const PLAN_COLUMNS: &str = "id, kind, target_version, channel, policy, state, reason, origin, \
                            created_by, created_at, updated_at, finished_at, resumed_at, cluster, \
                            rollout_id";
const NODE_COLUMNS: &str = "node, position, role, phase, cordoned, attempt, operation_id, step, \
                            detail, from_version, started_at, phase_at, finished_at, settle_until, \
                            etcd_snapshot";

/// What a new plan is made of.
#[derive(Debug, Clone)]
pub struct NewPlan<'a> {
    /// What it does.
    pub kind: PlanKind,
    /// Upgrade target.
    pub target_version: &'a str,
    /// Channel it was resolved from.
    pub channel: &'a str,
    /// How.
    pub policy: &'a PlanPolicy,
    /// `operator` or `auto-maintenance`.
    pub origin: &'a str,
    /// Who asked.
    pub created_by: &'a str,
    /// The cluster whose nodes it holds.
    pub cluster: &'a str,
    /// The rollout it is a wave plan of.
    pub rollout: Option<i64>,
}

fn plan_err(plan: i64, action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::PlanSql {
        plan,
        action,
        source,
    }
}

fn corrupt(key: String, column: &'static str, reason: String) -> StoreError {
    StoreError::Corrupt {
        table: "plans",
        key,
        column,
        reason,
    }
}

fn read_plan(row: &Row<'_>) -> rusqlite::Result<Result<Plan, StoreError>> {
    let id: i64 = row.get(0)?;
    let kind: String = row.get(1)?;
    let policy: String = row.get(4)?;
    let state: String = row.get(5)?;
    let created_at: i64 = row.get(9)?;
    let updated_at: i64 = row.get(10)?;
    let finished_at: Option<i64> = row.get(11)?;
    let target_version: String = row.get(2)?;
    let channel: String = row.get(3)?;
    let reason: String = row.get(6)?;
    let origin: String = row.get(7)?;
    let created_by: String = row.get(8)?;
    let resumed_at: Option<i64> = row.get(12)?;
    let cluster: String = row.get(13)?;
    let rollout: Option<i64> = row.get(14)?;
    Ok((|| {
        let key = || id.to_string();
        Ok(Plan {
            id,
            kind: kind.parse().map_err(|e| corrupt(key(), "kind", e))?,
            target_version,
            channel,
            policy: serde_json::from_str(&policy)
                .map_err(|e| corrupt(key(), "policy", e.to_string()))?,
            state: state.parse().map_err(|e| corrupt(key(), "state", e))?,
            reason,
            origin,
            created_by,
            created_at: from_db(created_at, "plans", key, "created_at")?,
            updated_at: from_db(updated_at, "plans", key, "updated_at")?,
            finished_at: from_db_opt(finished_at, "plans", key, "finished_at")?,
            resumed_at: from_db_opt(resumed_at, "plans", key, "resumed_at")?,
            cluster,
            rollout,
        })
    })())
}

fn read_node(row: &Row<'_>) -> rusqlite::Result<Result<PlanNode, StoreError>> {
    let node: String = row.get(0)?;
    let position: u32 = row.get(1)?;
    let role: String = row.get(2)?;
    let phase: String = row.get(3)?;
    let cordoned: bool = row.get(4)?;
    let attempt: u32 = row.get(5)?;
    let operation_id: String = row.get(6)?;
    let step: String = row.get(7)?;
    let detail: String = row.get(8)?;
    let from_version: String = row.get(9)?;
    let times: [Option<i64>; 4] = [row.get(10)?, row.get(11)?, row.get(12)?, row.get(13)?];
    let etcd_snapshot: String = row.get(14)?;
    Ok((|| {
        let key = || node.clone();
        let bad = |column, reason: String| StoreError::Corrupt {
            table: "plan_nodes",
            key: node.clone(),
            column,
            reason,
        };
        Ok(PlanNode {
            position,
            role: role_of(&role).map_err(|e| bad("role", e))?,
            phase: phase.parse().map_err(|e| bad("phase", e))?,
            cordoned,
            attempt,
            operation_id,
            step,
            detail,
            from_version,
            started_at: from_db_opt(times[0], "plan_nodes", key, "started_at")?,
            phase_at: from_db_opt(times[1], "plan_nodes", key, "phase_at")?,
            finished_at: from_db_opt(times[2], "plan_nodes", key, "finished_at")?,
            settle_until: from_db_opt(times[3], "plan_nodes", key, "settle_until")?,
            etcd_snapshot,
            node: node.clone(),
        })
    })())
}

impl Store {
    /// Creates a plan with its nodes (in order) in one transaction, and audits it. Refused
    /// while another plan is running, paused or halted: two plans at once could take two
    /// servers down together.
    ///
    /// # Errors
    /// [`StoreError::PlanActive`] naming the active plan; SQL failures.
    pub fn create_plan(
        &self,
        plan: &NewPlan<'_>,
        nodes: &[PlanNode],
        now: OffsetDateTime,
    ) -> Result<i64, StoreError> {
        let policy = serde_json::to_string(plan.policy).map_err(|e| StoreError::Invalid {
            table: "plans",
            column: "policy",
            value: format!("{:?}", plan.policy),
            reason: if e.is_data() {
                "not serializable"
            } else {
                "serialization failed"
            },
        })?;
        let mut conn = self.conn();
        let err = plan_err(0, "creating the plan");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(plan_err(0, "creating the plan"))?;
        // One active plan per cluster: plans of different clusters run at the same time.
        let active: Option<(i64, String)> = tx
            .query_row(
                "SELECT id, state FROM plans WHERE state IN ('running', 'paused', 'halted') \
                 AND cluster = ?1 ORDER BY id LIMIT 1",
                [plan.cluster],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(plan_err(0, "looking for an active plan"))?;
        if let Some((id, state)) = active {
            return Err(StoreError::PlanActive { id, state });
        }
        tx.execute(
            "INSERT INTO plans (kind, target_version, channel, policy, state, reason, origin, \
                                created_by, created_at, updated_at, cluster, rollout_id) \
             VALUES (?1, ?2, ?3, ?4, 'running', '', ?5, ?6, ?7, ?7, ?8, ?9)",
            params![
                plan.kind.name(),
                plan.target_version,
                plan.channel,
                policy,
                plan.origin,
                plan.created_by,
                to_db(now),
                plan.cluster,
                plan.rollout
            ],
        )
        .map_err(err)?;
        let id = tx.last_insert_rowid();
        for node in nodes {
            insert_node(&tx, id, node)?;
        }
        tx.execute(
            "INSERT INTO audit_log (at, actor, action, detail) VALUES (?1, ?2, 'plan.create', ?3)",
            params![
                to_db(now),
                plan.created_by,
                format!(
                    "plan {id}: {} {} on {} nodes",
                    plan.kind.name(),
                    plan.target_version,
                    nodes.len()
                )
            ],
        )
        .map_err(plan_err(id, "auditing the plan"))?;
        tx.execute(
            "INSERT INTO plan_events (plan_id, at, node, message) VALUES (?1, ?2, '', ?3)",
            params![
                id,
                to_db(now),
                format!("created by {} ({})", plan.created_by, plan.origin)
            ],
        )
        .map_err(plan_err(id, "recording the plan's creation"))?;
        tx.commit().map_err(plan_err(id, "creating the plan"))?;
        Ok(id)
    }

    /// One plan.
    ///
    /// # Errors
    /// [`StoreError::UnknownPlan`]; SQL failures; a corrupt row names its column.
    pub fn plan(&self, id: i64) -> Result<Plan, StoreError> {
        self.conn()
            .query_row(
                &format!("SELECT {PLAN_COLUMNS} FROM plans WHERE id = ?1"),
                [id],
                read_plan,
            )
            .optional()
            .map_err(plan_err(id, "reading the plan"))?
            .ok_or(StoreError::UnknownPlan(id))?
    }

    /// Plans matching `condition` (SQL after `WHERE`, with `?1` bound to `arg`).
    pub(super) fn plans_where(&self, condition: &str, arg: i64) -> Result<Vec<Plan>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {PLAN_COLUMNS} FROM plans WHERE {condition}"
            ))
            .map_err(plan_err(0, "listing plans"))?;
        let rows = stmt
            .query_map([arg], read_plan)
            .map_err(plan_err(0, "listing plans"))?;
        rows.map(|r| r.map_err(plan_err(0, "listing plans"))?)
            .collect()
    }

    /// Plans, newest first; only the active ones when `active_only`.
    ///
    /// # Errors
    /// SQL failures; a corrupt row names its column.
    pub fn plans(&self, active_only: bool) -> Result<Vec<Plan>, StoreError> {
        let filter = if active_only {
            "WHERE state IN ('running', 'paused', 'halted')"
        } else {
            ""
        };
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {PLAN_COLUMNS} FROM plans {filter} ORDER BY id DESC"
            ))
            .map_err(plan_err(0, "listing plans"))?;
        let rows = stmt
            .query_map([], read_plan)
            .map_err(plan_err(0, "listing plans"))?;
        rows.map(|r| r.map_err(plan_err(0, "listing plans"))?)
            .collect()
    }

    /// One page of plans, newest first: at most `limit` plans with an id below `before_id`
    /// (all when `None`). The CLI pages through a long history instead of loading it whole.
    ///
    /// # Errors
    /// SQL failures; a corrupt row names its column.
    pub fn plans_page(&self, before_id: Option<i64>, limit: u32) -> Result<Vec<Plan>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {PLAN_COLUMNS} FROM plans WHERE id < ?1 ORDER BY id DESC LIMIT ?2"
            ))
            .map_err(plan_err(0, "listing plans"))?;
        let rows = stmt
            .query_map(params![before_id.unwrap_or(i64::MAX), limit], read_plan)
            .map_err(plan_err(0, "listing plans"))?;
        rows.map(|r| r.map_err(plan_err(0, "listing plans"))?)
            .collect()
    }

    /// Plans created at or after `since`, newest first (what auto-maintenance did lately),
    /// without reading the rest of the history.
    ///
    /// # Errors
    /// SQL failures; a corrupt row names its column.
    pub fn plans_created_since(&self, since: OffsetDateTime) -> Result<Vec<Plan>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {PLAN_COLUMNS} FROM plans WHERE created_at >= ?1 ORDER BY id DESC"
            ))
            .map_err(plan_err(0, "listing recent plans"))?;
        let rows = stmt
            .query_map(params![to_db(since)], read_plan)
            .map_err(plan_err(0, "listing recent plans"))?;
        rows.map(|r| r.map_err(plan_err(0, "listing recent plans"))?)
            .collect()
    }

    /// Ids of ended plans that still hold a node in maintenance or cordoned: what the engine
    /// must still release. Read every pass, so it must not grow with the history.
    ///
    /// # Errors
    /// SQL failures.
    pub fn ended_plans_to_release(&self) -> Result<Vec<i64>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT DISTINCT p.id FROM plans p JOIN plan_nodes n ON n.plan_id = p.id \
                 WHERE p.state IN ('completed', 'aborted') \
                   AND (n.cordoned = 1 OR n.phase NOT IN ('pending', 'done', 'skipped', 'failed')) \
                 ORDER BY p.id",
            )
            .map_err(plan_err(0, "listing ended plans to release"))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, i64>(0))
            .map_err(plan_err(0, "listing ended plans to release"))?;
        rows.map(|r| r.map_err(plan_err(0, "listing ended plans to release")))
            .collect()
    }

    /// How many plans there are of each kind, state and cluster (for metrics), counted by
    /// SQLite.
    ///
    /// # Errors
    /// SQL failures.
    pub fn plan_counts(&self) -> Result<Vec<(String, String, String, u64)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT kind, state, cluster, COUNT(*) FROM plans GROUP BY kind, state, cluster \
                 ORDER BY 1, 2, 3",
            )
            .map_err(plan_err(0, "counting plans"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, i64>(3)?))
            })
            .map_err(plan_err(0, "counting plans"))?;
        rows.map(|r| {
            let (kind, state, cluster, n) = r.map_err(plan_err(0, "counting plans"))?;
            Ok((kind, state, cluster, u64::try_from(n).unwrap_or_default()))
        })
        .collect()
    }

    /// How many rollouts are in each state.
    ///
    /// # Errors
    /// SQL failures.
    pub fn rollout_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT state, COUNT(*) FROM rollouts GROUP BY state ORDER BY 1")
            .map_err(plan_err(0, "counting rollouts"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?)))
            .map_err(plan_err(0, "counting rollouts"))?;
        rows.map(|r| {
            let (state, n) = r.map_err(plan_err(0, "counting rollouts"))?;
            Ok((state, u64::try_from(n).unwrap_or_default()))
        })
        .collect()
    }

    /// A plan's nodes in plan order.
    ///
    /// # Errors
    /// SQL failures; a corrupt row names its column.
    pub fn plan_nodes(&self, id: i64) -> Result<Vec<PlanNode>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {NODE_COLUMNS} FROM plan_nodes WHERE plan_id = ?1 ORDER BY position"
            ))
            .map_err(plan_err(id, "listing the plan's nodes"))?;
        let rows = stmt
            .query_map([id], read_node)
            .map_err(plan_err(id, "listing the plan's nodes"))?;
        rows.map(|r| r.map_err(plan_err(id, "listing the plan's nodes"))?)
            .collect()
    }

    /// Sets a plan's state and reason (and its end time when final), from whatever state it
    /// is in except a final one. For tests and setup; the engine uses
    /// [`Self::move_plan_state`], which cannot undo a concurrent operator's action.
    ///
    /// # Errors
    /// [`StoreError::UnknownPlan`]; SQL failures.
    pub fn set_plan_state(
        &self,
        id: i64,
        state: PlanState,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let current = self.plan(id)?.state;
        self.move_plan_state(id, current, state, reason, now)?;
        Ok(())
    }

    /// Moves plan `id` from state `from` to `to` only if it is still in `from`, and says
    /// whether it did. Why: the engine decides on a plan it read a moment ago while an
    /// operator may abort or pause it meanwhile; an unconditional write would turn an aborted
    /// plan back into a completed or running one. A final plan never leaves its state.
    ///
    /// # Errors
    /// [`StoreError::UnknownPlan`], SQL failures.
    pub fn move_plan_state(
        &self,
        id: i64,
        from: PlanState,
        to: PlanState,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        if from.is_final() && from != to {
            return Ok(false);
        }
        let finished = to.is_final().then(|| to_db(now));
        let conn = self.conn();
        let changed = conn
            .execute(
                "UPDATE plans SET state = ?2, reason = ?3, updated_at = ?4, \
                                  finished_at = COALESCE(finished_at, ?5) \
                 WHERE id = ?1 AND state = ?6",
                params![id, to.name(), reason, to_db(now), finished, from.name()],
            )
            .map_err(plan_err(id, "updating the plan's state"))?;
        if changed == 0 {
            let exists: bool = conn
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM plans WHERE id = ?1)",
                    [id],
                    |r| r.get(0),
                )
                .map_err(plan_err(id, "reading the plan's state"))?;
            if !exists {
                return Err(StoreError::UnknownPlan(id));
            }
        }
        Ok(changed == 1)
    }

    /// Records that an operator resumed plan `id` at `now` (see [`Plan::resumed_at`]).
    ///
    /// # Errors
    /// [`StoreError::UnknownPlan`], SQL failures.
    pub fn mark_resumed(&self, id: i64, now: OffsetDateTime) -> Result<(), StoreError> {
        let changed = self
            .conn()
            .execute(
                "UPDATE plans SET resumed_at = ?2 WHERE id = ?1",
                params![id, to_db(now)],
            )
            .map_err(plan_err(id, "recording the resume"))?;
        if changed == 0 {
            return Err(StoreError::UnknownPlan(id));
        }
        Ok(())
    }

    /// Writes one node's row (phase, what the plan did, timings) and, when given, an event.
    ///
    /// # Errors
    /// SQL failures.
    pub fn save_plan_node(
        &self,
        id: i64,
        node: &PlanNode,
        event: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(plan_err(id, "saving a plan node"))?;
        insert_node(&tx, id, node)?;
        if let Some(message) = event {
            tx.execute(
                "INSERT INTO plan_events (plan_id, at, node, message) VALUES (?1, ?2, ?3, ?4)",
                params![id, to_db(now), node.node, clip(message, MAX_DETAIL)],
            )
            .map_err(plan_err(id, "recording a plan event"))?;
        }
        tx.execute(
            "UPDATE plans SET updated_at = ?2 WHERE id = ?1",
            params![id, to_db(now)],
        )
        .map_err(plan_err(id, "saving a plan node"))?;
        tx.commit().map_err(plan_err(id, "saving a plan node"))
    }

    /// Appends an event to a plan's history.
    ///
    /// # Errors
    /// SQL failures.
    pub fn plan_event(
        &self,
        id: i64,
        node: &str,
        message: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO plan_events (plan_id, at, node, message) VALUES (?1, ?2, ?3, ?4)",
                params![id, to_db(now), node, clip(message, MAX_DETAIL)],
            )
            .map_err(plan_err(id, "recording a plan event"))?;
        Ok(())
    }

    /// The last `limit` events of a plan, oldest first.
    ///
    /// # Errors
    /// SQL failures.
    pub fn plan_events(&self, id: i64, limit: u32) -> Result<Vec<PlanEvent>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, at, node, message FROM \
                 (SELECT * FROM plan_events WHERE plan_id = ?1 ORDER BY id DESC LIMIT ?2) \
                 ORDER BY id",
            )
            .map_err(plan_err(id, "reading the plan's events"))?;
        let rows = stmt
            .query_map(params![id, limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get(2)?,
                    r.get(3)?,
                ))
            })
            .map_err(plan_err(id, "reading the plan's events"))?;
        rows.map(|r| {
            let (eid, at, node, message) = r.map_err(plan_err(id, "reading the plan's events"))?;
            Ok(PlanEvent {
                id: eid,
                at: from_db(at, "plan_events", || eid.to_string(), "at")?,
                node,
                message,
            })
        })
        .collect()
    }
}

/// What [`Store::prune_history`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pruned {
    /// Ended plans (with their nodes and events).
    pub plans: usize,
    /// Audit rows.
    pub audit_rows: usize,
}

impl Store {
    /// Forgets history older than `before`: plans that ended (completed or aborted) and were
    /// last changed before it, with their nodes and events, and audit rows written before
    /// it. Running, paused and halted plans are kept whatever their age: they still act or
    /// wait for an operator. One transaction.
    ///
    /// # Errors
    /// SQL failures.
    pub fn prune_history(&self, before: OffsetDateTime) -> Result<Pruned, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(plan_err(0, "pruning old history"))?;
        let plans = tx
            .execute(
                "DELETE FROM plans WHERE state IN ('completed', 'aborted') AND updated_at < ?1",
                params![to_db(before)],
            )
            .map_err(plan_err(0, "pruning old plans"))?;
        // A rollout's plans went with the plans above; its own row and events go here.
        tx.execute(
            "DELETE FROM rollouts WHERE state IN ('completed', 'aborted') AND updated_at < ?1",
            params![to_db(before)],
        )
        .map_err(plan_err(0, "pruning old rollouts"))?;
        let audit_rows = tx
            .execute(
                "DELETE FROM audit_log WHERE at < ?1",
                params![to_db(before)],
            )
            .map_err(plan_err(0, "pruning old audit rows"))?;
        tx.commit().map_err(plan_err(0, "pruning old history"))?;
        Ok(Pruned { plans, audit_rows })
    }
}

fn insert_node(tx: &rusqlite::Transaction<'_>, id: i64, node: &PlanNode) -> Result<(), StoreError> {
    let t = |at: Option<OffsetDateTime>| at.map(to_db);
    tx.execute(
        &format!(
            "INSERT OR REPLACE INTO plan_nodes (plan_id, {NODE_COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
        ),
        params![
            id,
            node.node,
            node.position,
            role_word(node.role),
            node.phase.name(),
            node.cordoned,
            node.attempt,
            node.operation_id,
            clip(&node.step, 128),
            clip(&node.detail, MAX_DETAIL),
            node.from_version,
            t(node.started_at),
            t(node.phase_at),
            t(node.finished_at),
            t(node.settle_until),
            clip(&node.etcd_snapshot, 1024),
        ],
    )
    .map_err(plan_err(id, "saving a plan node"))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::plan::decide::Role;
    use crate::plan::model::NodePhase;

    fn new_plan(policy: &PlanPolicy) -> NewPlan<'_> {
        NewPlan {
            kind: PlanKind::Upgrade,
            target_version: "v1.34.1+rke2r1",
            channel: "stable",
            policy,
            origin: "operator",
            created_by: "uid:0",
            cluster: "default",
            rollout: None,
        }
    }

    #[test]
    fn plans_round_trip_and_one_is_active_at_a_time() {
        let store = Store::open_in_memory().unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let policy = PlanPolicy {
            concurrency: 2,
            ..PlanPolicy::default()
        };
        let nodes = vec![
            PlanNode::pending("s1", 0, Role::Server, "v1.33.5+rke2r1"),
            PlanNode::pending("w1", 1, Role::Agent, "v1.33.5+rke2r1"),
        ];
        let id = store.create_plan(&new_plan(&policy), &nodes, now).unwrap();
        let plan = store.plan(id).unwrap();
        assert_eq!(plan.state, PlanState::Running);
        assert_eq!(plan.policy, policy);
        assert_eq!(store.plan_nodes(id).unwrap(), nodes);
        let err = store
            .create_plan(&new_plan(&policy), &nodes, now)
            .unwrap_err();
        assert!(
            matches!(err, StoreError::PlanActive { id: i, .. } if i == id),
            "{err}"
        );

        let mut s1 = nodes[0].clone();
        s1.phase = NodePhase::Drain;
        s1.cordoned = true;
        store
            .save_plan_node(id, &s1, Some("cordoned"), now)
            .unwrap();
        assert_eq!(store.plan_nodes(id).unwrap()[0], s1);
        let events = store.plan_events(id, 10).unwrap();
        assert_eq!(events.last().unwrap().message, "cordoned");

        store
            .set_plan_state(id, PlanState::Completed, "done", now)
            .unwrap();
        assert_eq!(store.plan(id).unwrap().finished_at, Some(now));
        assert!(store.plans(true).unwrap().is_empty());
        let second = store.create_plan(&new_plan(&policy), &nodes, now).unwrap();
        assert!(second > id);
        assert!(matches!(store.plan(999), Err(StoreError::UnknownPlan(999))));
    }

    #[test]
    fn a_state_moves_only_from_the_state_it_was_read_in_and_never_leaves_a_final_one() {
        let store = Store::open_in_memory().unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let policy = PlanPolicy::default();
        let nodes = vec![PlanNode::pending("s1", 0, Role::Server, "")];
        let id = store.create_plan(&new_plan(&policy), &nodes, now).unwrap();
        assert!(
            !store
                .move_plan_state(id, PlanState::Halted, PlanState::Running, "", now)
                .unwrap(),
            "not halted: nothing moves"
        );
        assert!(
            store
                .move_plan_state(id, PlanState::Running, PlanState::Aborted, "aborted", now)
                .unwrap()
        );
        assert!(
            !store
                .move_plan_state(id, PlanState::Running, PlanState::Completed, "done", now)
                .unwrap()
        );
        assert!(
            !store
                .move_plan_state(id, PlanState::Aborted, PlanState::Running, "", now)
                .unwrap()
        );
        store
            .set_plan_state(id, PlanState::Completed, "done", now)
            .unwrap();
        let plan = store.plan(id).unwrap();
        assert_eq!(
            (plan.state, plan.reason.as_str()),
            (PlanState::Aborted, "aborted")
        );
        assert!(matches!(
            store.move_plan_state(999, PlanState::Running, PlanState::Halted, "", now),
            Err(StoreError::UnknownPlan(999))
        ));
    }

    #[test]
    fn old_ended_plans_and_audit_rows_are_pruned_active_ones_kept() {
        let store = Store::open_in_memory().unwrap();
        let t0 = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let day = time::Duration::days(1);
        let policy = PlanPolicy::default();
        let node = || vec![PlanNode::pending("s1", 0, Role::Server, "v1.33.5+rke2r1")];
        let old = store.create_plan(&new_plan(&policy), &node(), t0).unwrap();
        store
            .set_plan_state(old, PlanState::Completed, "", t0)
            .unwrap();
        let mut cordoned = store.plan_nodes(old).unwrap().remove(0);
        cordoned.cordoned = true;
        store.save_plan_node(old, &cordoned, None, t0).unwrap();
        assert_eq!(store.ended_plans_to_release().unwrap(), vec![old]);
        cordoned.cordoned = false;
        store.save_plan_node(old, &cordoned, None, t0).unwrap();
        assert!(store.ended_plans_to_release().unwrap().is_empty());
        let active = store
            .create_plan(&new_plan(&policy), &node(), t0 + day)
            .unwrap();
        store.audit("uid:0", "old", "", t0).unwrap();
        store.audit("uid:0", "new", "", t0 + day * 2).unwrap();
        assert_eq!(store.plans_created_since(t0 + day).unwrap().len(), 1);
        assert_eq!(
            store.plan_counts().unwrap(),
            vec![
                ("upgrade".into(), "completed".into(), "default".into(), 1),
                ("upgrade".into(), "running".into(), "default".into(), 1)
            ]
        );

        // Long after both: the ended plan goes, the running one stays however old.
        let pruned = store.prune_history(t0 + day * 30).unwrap();
        assert_eq!(pruned.plans, 1);
        assert!(pruned.audit_rows >= 2, "{pruned:?}");
        assert!(store.plan(old).is_err());
        assert!(store.plan_events(old, 10).unwrap().is_empty());
        assert_eq!(store.plan(active).unwrap().state, PlanState::Running);
        assert_eq!(store.plan_nodes(active).unwrap().len(), 1);
    }

    #[test]
    fn plans_come_in_pages_newest_first() {
        let store = Store::open_in_memory().unwrap();
        let t0 = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let policy = PlanPolicy::default();
        let mut ids = Vec::new();
        for i in 0..5 {
            let id = store
                .create_plan(
                    &new_plan(&policy),
                    &[PlanNode::pending("s1", 0, Role::Server, "v1.33.5+rke2r1")],
                    t0 + time::Duration::minutes(i),
                )
                .unwrap();
            store
                .set_plan_state(id, PlanState::Aborted, "", t0)
                .unwrap();
            ids.push(id);
        }
        let first: Vec<i64> = store
            .plans_page(None, 2)
            .unwrap()
            .iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(first, vec![ids[4], ids[3]]);
        let next: Vec<i64> = store
            .plans_page(Some(ids[3]), 2)
            .unwrap()
            .iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(next, vec![ids[2], ids[1]]);
        assert_eq!(store.plans_page(Some(ids[0]), 2).unwrap().len(), 0);
    }

    #[test]
    fn hostile_details_are_clipped_before_they_are_stored() {
        let store = Store::open_in_memory().unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let policy = PlanPolicy::default();
        let id = store
            .create_plan(
                &new_plan(&policy),
                &[PlanNode::pending("s1", 0, Role::Server, "v1.33.5+rke2r1")],
                now,
            )
            .unwrap();
        let mut node = store.plan_nodes(id).unwrap().remove(0);
        node.detail = "d".repeat(1_000_000);
        store
            .save_plan_node(id, &node, Some(&"e".repeat(1_000_000)), now)
            .unwrap();
        store
            .plan_event(id, "s1", &"f".repeat(1_000_000), now)
            .unwrap();
        assert!(store.plan_nodes(id).unwrap()[0].detail.len() < MAX_DETAIL + 32);
        for e in store.plan_events(id, 10).unwrap() {
            assert!(e.message.len() < MAX_DETAIL + 32, "{}", e.message.len());
        }
    }
}
