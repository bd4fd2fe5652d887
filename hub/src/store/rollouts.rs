//! Rollouts: the rollout row (the plan every cluster gets, its waves, the current wave and its
//! soak, the state), its history, and the plans it made (`plans.rollout_id`). Like a plan's
//! state, a rollout's state and wave only move by compare-and-set from what the caller read,
//! so an operator's abort and the engine's wave change never overwrite each other.

use std::time::Duration;

use rusqlite::{OptionalExtension, Row, params};
use time::OffsetDateTime;

use rke2ops_common::text::{MAX_DETAIL, clip};

use super::{Store, StoreError, from_db, from_db_opt, to_db};
use crate::plan::model::{Plan, PlanEvent, PlanKind, PlanPolicy, PlanState};
use crate::plan::rollout::{Rollout, RolloutFacts};

const COLUMNS: &str = "id, kind, target_version, channel, policy, waves, soak_secs, \
                       state, reason, wave, soak_started_at, created_by, created_at, \
                       updated_at, finished_at";

/// What a new rollout is made of.
#[derive(Debug, Clone)]
pub struct NewRollout<'a> {
    /// What each plan does.
    pub kind: PlanKind,
    /// Upgrade target (resolved once for every wave).
    pub target_version: &'a str,
    /// The channel it came from.
    pub channel: &'a str,
    /// Each plan's policy.
    pub policy: &'a PlanPolicy,
    /// Waves of cluster names.
    pub waves: &'a [Vec<String>],
    /// Soak between waves.
    pub soak: Duration,
    /// Who asked.
    pub created_by: &'a str,
}

fn sql(rollout: i64, action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::RolloutSql {
        rollout,
        action,
        source,
    }
}

fn corrupt(id: i64, column: &'static str, reason: String) -> StoreError {
    StoreError::Corrupt {
        table: "rollouts",
        key: id.to_string(),
        column,
        reason,
    }
}

fn json<T: serde::Serialize + std::fmt::Debug>(
    value: &T,
    column: &'static str,
) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|_| StoreError::Invalid {
        table: "rollouts",
        column,
        value: format!("{value:?}"),
        reason: "not serializable",
    })
}

type RawRollout = (
    i64,
    String,
    String,
    String,
    String,
    String,
    i64,
    String,
    String,
    i64,
    Option<i64>,
    String,
    i64,
    i64,
    Option<i64>,
);

fn raw(row: &Row<'_>) -> rusqlite::Result<RawRollout> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
        row.get(9)?,
        row.get(10)?,
        row.get(11)?,
        row.get(12)?,
        row.get(13)?,
        row.get(14)?,
    ))
}

fn parse(r: RawRollout) -> Result<Rollout, StoreError> {
    let (id, kind, target_version, channel, policy, waves, soak, state, reason, wave) =
        (r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9);
    let key = || id.to_string();
    Ok(Rollout {
        id,
        kind: kind.parse().map_err(|e| corrupt(id, "kind", e))?,
        target_version,
        channel,
        policy: serde_json::from_str(&policy).map_err(|e| corrupt(id, "policy", e.to_string()))?,
        facts: RolloutFacts {
            waves: serde_json::from_str(&waves).map_err(|e| corrupt(id, "waves", e.to_string()))?,
            wave: usize::try_from(wave).map_err(|e| corrupt(id, "wave", e.to_string()))?,
            soak: Duration::from_secs(
                u64::try_from(soak).map_err(|e| corrupt(id, "soak_secs", e.to_string()))?,
            ),
            soak_started_at: from_db_opt(r.10, "rollouts", key, "soak_started_at")?,
        },
        state: state.parse().map_err(|e| corrupt(id, "state", e))?,
        reason,
        created_by: r.11,
        created_at: from_db(r.12, "rollouts", key, "created_at")?,
        updated_at: from_db(r.13, "rollouts", key, "updated_at")?,
        finished_at: from_db_opt(r.14, "rollouts", key, "finished_at")?,
    })
}

impl Store {
    /// Creates a rollout (running, at its first wave, no plan yet) and audits it.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a policy that does not serialize; SQL failures.
    pub fn create_rollout(
        &self,
        new: &NewRollout<'_>,
        now: OffsetDateTime,
    ) -> Result<i64, StoreError> {
        let policy = json(new.policy, "policy")?;
        let waves = json(&new.waves, "waves")?;
        let soak = i64::try_from(new.soak.as_secs()).unwrap_or(i64::MAX);
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(sql(0, "creating the rollout"))?;
        tx.execute(
            "INSERT INTO rollouts (kind, target_version, channel, policy, waves, \
                                   soak_secs, state, reason, wave, created_by, created_at, \
                                   updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running', '', 0, ?7, ?8, ?8)",
            params![
                new.kind.name(),
                new.target_version,
                new.channel,
                policy,
                waves,
                soak,
                new.created_by,
                to_db(now)
            ],
        )
        .map_err(sql(0, "creating the rollout"))?;
        let id = tx.last_insert_rowid();
        let waves_words: Vec<String> = new.waves.iter().map(|w| w.join(",")).collect();
        tx.execute(
            "INSERT INTO audit_log (at, actor, action, detail) \
             VALUES (?1, ?2, 'rollout.create', ?3)",
            params![
                to_db(now),
                new.created_by,
                format!(
                    "rollout {id}: {} {} in waves {} with soak {} s",
                    new.kind.name(),
                    new.target_version,
                    waves_words.join(" then "),
                    new.soak.as_secs()
                )
            ],
        )
        .map_err(sql(id, "auditing the rollout"))?;
        tx.execute(
            "INSERT INTO rollout_events (rollout_id, at, message) VALUES (?1, ?2, ?3)",
            params![id, to_db(now), format!("created by {}", new.created_by)],
        )
        .map_err(sql(id, "recording the rollout's creation"))?;
        tx.commit().map_err(sql(id, "creating the rollout"))?;
        Ok(id)
    }

    /// One rollout.
    ///
    /// # Errors
    /// [`StoreError::UnknownRollout`]; SQL failures; a corrupt row names its column.
    pub fn rollout(&self, id: i64) -> Result<Rollout, StoreError> {
        let row = self
            .conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM rollouts WHERE id = ?1"),
                [id],
                raw,
            )
            .optional()
            .map_err(sql(id, "reading the rollout"))?
            .ok_or(StoreError::UnknownRollout(id))?;
        parse(row)
    }

    /// Rollouts, newest first: the active ones only (running, paused, halted), or the newest
    /// `limit` of all.
    ///
    /// # Errors
    /// SQL failures; a corrupt row names its column.
    pub fn rollouts(&self, active_only: bool, limit: u32) -> Result<Vec<Rollout>, StoreError> {
        let filter = if active_only {
            "WHERE state IN ('running', 'paused', 'halted')"
        } else {
            ""
        };
        let rows: Vec<RawRollout> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM rollouts {filter} ORDER BY id DESC LIMIT ?1"
                ))
                .map_err(sql(0, "listing rollouts"))?;
            stmt.query_map([limit], raw)
                .map_err(sql(0, "listing rollouts"))?
                .collect::<Result<_, _>>()
                .map_err(sql(0, "listing rollouts"))?
        };
        rows.into_iter().map(parse).collect()
    }

    /// Moves rollout `id` from `from` to `to` with `reason`, only if it is still in `from`; a
    /// final state never changes. Returns whether it moved.
    ///
    /// # Errors
    /// [`StoreError::UnknownRollout`]; SQL failures.
    pub fn move_rollout_state(
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
        let changed = self
            .conn()
            .execute(
                "UPDATE rollouts SET state = ?2, reason = ?3, updated_at = ?4, \
                                     finished_at = COALESCE(finished_at, ?5) \
                 WHERE id = ?1 AND state = ?6",
                params![
                    id,
                    to.name(),
                    clip(reason, MAX_DETAIL),
                    to_db(now),
                    finished,
                    from.name()
                ],
            )
            .map_err(sql(id, "updating the rollout's state"))?;
        if changed == 0 {
            self.rollout(id)?;
        }
        Ok(changed == 1)
    }

    /// The current wave's soak began at `at` (`None`: it restarts from nothing), if the
    /// rollout is still at `wave`. Returns whether it was written.
    ///
    /// # Errors
    /// SQL failures.
    pub fn set_rollout_soak(
        &self,
        id: i64,
        wave: usize,
        at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let changed = self
            .conn()
            .execute(
                "UPDATE rollouts SET soak_started_at = ?3, updated_at = ?4 \
                 WHERE id = ?1 AND wave = ?2 AND state IN ('running', 'paused', 'halted')",
                params![
                    id,
                    i64::try_from(wave).unwrap_or(i64::MAX),
                    at.map(to_db),
                    to_db(now)
                ],
            )
            .map_err(sql(id, "recording the soak"))?;
        Ok(changed == 1)
    }

    /// Moves a running rollout from wave `from` to the next one (no soak yet). Returns
    /// whether it moved (false: it is not running at `from` any more).
    ///
    /// # Errors
    /// SQL failures.
    pub fn advance_rollout(
        &self,
        id: i64,
        from: usize,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let changed = self
            .conn()
            .execute(
                "UPDATE rollouts SET wave = wave + 1, soak_started_at = NULL, reason = '', \
                                     updated_at = ?3 \
                 WHERE id = ?1 AND wave = ?2 AND state = 'running'",
                params![id, i64::try_from(from).unwrap_or(i64::MAX), to_db(now)],
            )
            .map_err(sql(id, "moving to the next wave"))?;
        Ok(changed == 1)
    }

    /// Sets a running rollout's reason (what it waits for) without touching its state.
    ///
    /// # Errors
    /// SQL failures.
    pub fn set_rollout_reason(
        &self,
        id: i64,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE rollouts SET reason = ?2, updated_at = ?3 \
                 WHERE id = ?1 AND state = 'running' AND reason <> ?2",
                params![id, clip(reason, MAX_DETAIL), to_db(now)],
            )
            .map_err(sql(id, "recording why the rollout waits"))?;
        Ok(())
    }

    /// Appends to a rollout's history.
    ///
    /// # Errors
    /// SQL failures.
    pub fn rollout_event(
        &self,
        id: i64,
        message: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO rollout_events (rollout_id, at, message) VALUES (?1, ?2, ?3)",
                params![id, to_db(now), clip(message, MAX_DETAIL)],
            )
            .map_err(sql(id, "recording a rollout event"))?;
        Ok(())
    }

    /// A rollout's latest `limit` events, oldest first.
    ///
    /// # Errors
    /// SQL failures; a corrupt time names its column.
    pub fn rollout_events(&self, id: i64, limit: u32) -> Result<Vec<PlanEvent>, StoreError> {
        let rows: Vec<(i64, i64, String)> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare_cached(
                    "SELECT rowid, at, message FROM rollout_events WHERE rollout_id = ?1 \
                     ORDER BY rowid DESC LIMIT ?2",
                )
                .map_err(sql(id, "reading the rollout's events"))?;
            stmt.query_map(params![id, limit], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(sql(id, "reading the rollout's events"))?
            .collect::<Result<_, _>>()
            .map_err(sql(id, "reading the rollout's events"))?
        };
        let mut events = rows
            .into_iter()
            .map(|(row, at, message)| {
                Ok(PlanEvent {
                    id: row,
                    at: from_db(at, "rollout_events", || id.to_string(), "at")?,
                    node: String::new(),
                    message,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        events.reverse();
        Ok(events)
    }

    /// Every plan rollout `id` made, oldest first.
    ///
    /// # Errors
    /// SQL failures; a corrupt row names its column.
    pub fn rollout_plans(&self, id: i64) -> Result<Vec<Plan>, StoreError> {
        self.plans_where("rollout_id = ?1 ORDER BY id", id)
    }
}
