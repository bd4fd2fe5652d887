//! Each plan probe's record ([`crate::probe::Tally`]), stored whole as JSON after every
//! check, so a restarted hub continues the plan's availability report where it was.

use rusqlite::params;

use super::{Store, StoreError};
use crate::probe::Tally;

fn err(plan: i64, action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::PlanSql {
        plan,
        action,
        source,
    }
}

impl Store {
    /// Replaces probe `probe`'s record in plan `id`.
    ///
    /// # Errors
    /// SQL failures.
    pub fn save_probe(&self, id: i64, probe: &str, tally: &Tally) -> Result<(), StoreError> {
        let json = serde_json::to_string(tally).unwrap_or_default();
        self.conn()
            .execute(
                "INSERT INTO plan_probes (plan_id, probe, tally) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (plan_id, probe) DO UPDATE SET tally = excluded.tally",
                params![id, probe, json],
            )
            .map_err(err(id, "saving a probe's record"))?;
        Ok(())
    }

    /// Plan `id`'s probe records, by probe name.
    ///
    /// # Errors
    /// SQL failures; [`StoreError::Corrupt`] for a record this build cannot read.
    pub fn plan_probes(&self, id: i64) -> Result<Vec<(String, Tally)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT probe, tally FROM plan_probes WHERE plan_id = ?1 ORDER BY probe",
            )
            .map_err(err(id, "reading probe records"))?;
        let rows = stmt
            .query_map(params![id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(err(id, "reading probe records"))?;
        let mut out = Vec::new();
        for row in rows {
            let (probe, json) = row.map_err(err(id, "reading probe records"))?;
            let tally = serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
                table: "plan_probes",
                key: format!("{id}/{probe}"),
                column: "tally",
                reason: e.to_string(),
            })?;
            out.push((probe, tally));
        }
        Ok(out)
    }

    /// Every stored plan's probe records (for the metrics): (plan, plan still active, probe,
    /// record); records that do not parse are left out.
    ///
    /// # Errors
    /// SQL failures.
    pub fn all_probes(&self) -> Result<Vec<(i64, bool, String, Tally)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT p.plan_id, plans.state IN ('running', 'paused', 'halted'), p.probe, p.tally \
                 FROM plan_probes p JOIN plans ON plans.id = p.plan_id ORDER BY p.plan_id, p.probe",
            )
            .map_err(err(0, "reading probe records"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, bool>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .map_err(err(0, "reading probe records"))?;
        Ok(rows
            .filter_map(Result::ok)
            .filter_map(|(plan, active, probe, json)| {
                serde_json::from_str(&json)
                    .ok()
                    .map(|t| (plan, active, probe, t))
            })
            .collect())
    }
}
