//! Which client certificates the hub accepts: per node and per admin name the serial of the
//! one current certificate (table `identities`), and every serial it stopped accepting
//! (`revoked_serials`: superseded by a newer certificate, or revoked by an operator). The
//! decisions are [`crate::pki::judge_credential`] and friends; this module gathers their
//! facts and applies their outcome in one transaction each.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use time::OffsetDateTime;

use super::{
    CredentialKind, IdentityRecord, RemovedNode, Store, StoreError, from_db, from_db_opt, to_db,
};
use crate::pki::{
    CredentialFacts, CredentialVerdict, HelloCluster, HelloRole, RevocationReason, hello_cluster,
    hello_role, judge_credential,
};

impl Store {
    /// Judges the certificate with `serial` that `name` presents ([`judge_credential`]) and,
    /// for a node enrolled before serials were recorded, adopts it as current (audited).
    ///
    /// # Errors
    /// [`StoreError`] if the store fails or a row is unreadable; a refusal is a verdict, not an
    /// error.
    pub fn check_credential(
        &self,
        kind: CredentialKind,
        name: &str,
        serial: &str,
        now: OffsetDateTime,
    ) -> Result<CredentialVerdict, StoreError> {
        let who = kind.who(name);
        let sql = |action| identity_sql(kind, name, action);
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("checking a certificate"))?;
        let record = read_identity(&tx, kind, name)?;
        let current = record.as_ref().map(|r| r.serial.clone());
        let previous = record.as_ref().and_then(|r| r.previous_serial.clone());
        let revoked = read_revocation(&tx, serial)?;
        let verdict = judge_credential(
            &who,
            serial,
            &CredentialFacts {
                current: current.clone(),
                previous: previous.clone(),
                revoked,
            },
        );
        if verdict == CredentialVerdict::Accept
            && current.as_ref().and_then(Option::as_deref) == Some(serial)
            && let Some(old) = previous
        {
            // The renewed certificate is in use: the one before it is superseded for good.
            revoke_serial(&tx, &old, kind, name, "superseded", now)?;
            tx.execute(
                "UPDATE identities SET previous_serial = NULL WHERE kind = ?1 AND name = ?2",
                params![kind.as_str(), name],
            )
            .map_err(sql("confirming a renewal"))?;
            super::audit::append(
                &tx,
                &format!("{}:{name}", kind.as_str()),
                "node.renew.confirmed",
                &format!("{who}: serial {serial} in use; {old} superseded"),
                now,
            )?;
            tx.commit().map_err(sql("confirming a renewal"))?;
            return Ok(verdict);
        }
        if verdict == CredentialVerdict::Adopt {
            tx.execute(
                "UPDATE identities SET serial = ?3, since = ?4 \
                 WHERE kind = ?1 AND name = ?2 AND serial IS NULL",
                params![kind.as_str(), name, serial, to_db(now)],
            )
            .map_err(sql("adopting a certificate"))?;
            super::audit::append(
                &tx,
                &format!("{}:{name}", kind.as_str()),
                "identity.adopt",
                &format!(
                    "{who}: serial {serial} recorded at its first contact since the hub keeps serials"
                ),
                now,
            )?;
            tx.commit().map_err(sql("adopting a certificate"))?;
        }
        Ok(verdict)
    }

    /// Records `serial` as node `node`'s current certificate without a join token (audited
    /// as `node.import` by `actor`): for a node whose certificate the CA issued outside an
    /// enrollment, such as a test's certificate backdated to be due for renewal. An existing
    /// current serial is superseded.
    ///
    /// # Errors
    /// SQL failures.
    pub fn import_node_certificate(
        &self,
        node: &str,
        serial: &str,
        not_after: OffsetDateTime,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let kind = CredentialKind::Node;
        let sql = |action| identity_sql(kind, node, action);
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("importing a certificate"))?;
        if let Some(old) = read_identity(&tx, kind, node)? {
            revoke_record(&tx, &old, "superseded", now)?;
        }
        tx.execute(
            "INSERT INTO identities (kind, name, serial, role, since, not_after) \
             VALUES ('node', ?1, ?2, NULL, ?3, ?4) \
             ON CONFLICT (kind, name) DO UPDATE SET serial = excluded.serial, \
                 since = excluded.since, not_after = excluded.not_after, previous_serial = NULL",
            params![node, serial, to_db(now), to_db(not_after)],
        )
        .map_err(sql("importing a certificate"))?;
        super::audit::append(
            &tx,
            actor,
            "node.import",
            &format!("node {node}: serial {serial}"),
            now,
        )?;
        tx.commit().map_err(sql("importing a certificate"))
    }

    /// The certificate record of `name`, if it is enrolled.
    ///
    /// # Errors
    /// [`StoreError`] if the read fails or the row is unreadable.
    pub fn identity(
        &self,
        kind: CredentialKind,
        name: &str,
    ) -> Result<Option<IdentityRecord>, StoreError> {
        read_identity(&self.conn(), kind, name)
    }

    /// Records a renewal: `new_serial` becomes the node's current certificate. `presented`
    /// (the one the renewal was made with) stays accepted as the previous one until the new
    /// one is first presented ([`Self::check_credential`] then supersedes it): the answer
    /// carrying the new certificate may be lost, and the agent must still get in to renew
    /// again. A renewal made with that previous certificate supersedes the never-used
    /// current one instead. Any other serial is refused.
    ///
    /// # Errors
    /// [`StoreError::CredentialChanged`] when `presented` is neither current nor previous;
    /// [`StoreError::NotEnrolled`] when the node has no record; SQL failures.
    pub fn renew_node_certificate(
        &self,
        node: &str,
        presented: &str,
        new_serial: &str,
        not_after: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let kind = CredentialKind::Node;
        let sql = |action| identity_sql(kind, node, action);
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("renewing a certificate"))?;
        let Some(record) = read_identity(&tx, kind, node)? else {
            return Err(StoreError::NotEnrolled {
                who: kind.who(node),
            });
        };
        let with_previous = record.previous_serial.as_deref() == Some(presented);
        let with_current = record.serial.as_deref().is_none_or(|s| s == presented);
        if !(with_current || with_previous) {
            return Err(StoreError::CredentialChanged {
                who: kind.who(node),
                serial: presented.to_owned(),
            });
        }
        // What stops being accepted now: with the current certificate, an older previous one
        // (normally none: presenting the current one confirmed it); with the previous one,
        // the current one that was never used.
        let dropped = if with_previous && !with_current {
            record.serial.clone()
        } else {
            record.previous_serial.clone().filter(|p| p != presented)
        };
        if let Some(old) = &dropped {
            revoke_serial(&tx, old, kind, node, "superseded", now)?;
        }
        tx.execute(
            "UPDATE identities SET serial = ?2, since = ?3, not_after = ?4, previous_serial = ?5 \
             WHERE kind = 'node' AND name = ?1",
            params![node, new_serial, to_db(now), to_db(not_after), presented],
        )
        .map_err(sql("renewing a certificate"))?;
        super::audit::append(
            &tx,
            &format!("node:{node}"),
            "node.renew",
            &format!(
                "serial {new_serial} issued for {presented} (accepted until {new_serial} is used){}",
                dropped
                    .map(|d| format!("; {d} superseded"))
                    .unwrap_or_default()
            ),
            now,
        )?;
        tx.commit().map_err(sql("renewing a certificate"))
    }

    /// Applies a hello's role claim ([`hello_role`]): the first hello of a node whose
    /// enrollment fixed no role records it; later claims never change it.
    ///
    /// # Errors
    /// [`StoreError::NotEnrolled`] when the node has no record; SQL failures.
    pub fn hello_role(&self, node: &str, claimed: &str) -> Result<HelloRole, StoreError> {
        let kind = CredentialKind::Node;
        let mut conn = self.conn();
        let sql = |action| identity_sql(kind, node, action);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("reading the role"))?;
        let Some(record) = read_identity(&tx, kind, node)? else {
            return Err(StoreError::NotEnrolled {
                who: kind.who(node),
            });
        };
        let decision = hello_role(record.role.as_deref(), claimed);
        if let HelloRole::Fix(role) = &decision {
            tx.execute(
                "UPDATE identities SET role = ?2 WHERE kind = 'node' AND name = ?1",
                params![node, role],
            )
            .map_err(sql("recording the role"))?;
            tx.commit().map_err(sql("recording the role"))?;
        }
        Ok(decision)
    }

    /// Applies a hello's cluster claim ([`hello_cluster`]): a node enrolled before clusters
    /// gets the claimed one; a node never moves (a different claim is refused, and nothing
    /// changes).
    ///
    /// # Errors
    /// [`StoreError::NotEnrolled`] when the node has no record; SQL failures.
    pub fn hello_cluster(&self, node: &str, claimed: &str) -> Result<HelloCluster, StoreError> {
        let kind = CredentialKind::Node;
        let mut conn = self.conn();
        let sql = |action| identity_sql(kind, node, action);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("reading the cluster"))?;
        let fixed: Option<Option<String>> = tx
            .query_row(
                "SELECT cluster FROM identities WHERE kind = 'node' AND name = ?1",
                params![node],
                |row| row.get(0),
            )
            .optional()
            .map_err(sql("reading the cluster"))?;
        let Some(fixed) = fixed else {
            return Err(StoreError::NotEnrolled {
                who: kind.who(node),
            });
        };
        let decision = hello_cluster(fixed.as_deref(), claimed);
        if let HelloCluster::Fix(cluster) = &decision {
            tx.execute(
                "UPDATE identities SET cluster = ?2 WHERE kind = 'node' AND name = ?1",
                params![node, cluster],
            )
            .map_err(sql("recording the cluster"))?;
            tx.commit().map_err(sql("recording the cluster"))?;
        }
        Ok(decision)
    }

    /// Records node `node`'s cluster in the inventory (after its hello was accepted).
    ///
    /// # Errors
    /// SQL failures.
    pub fn set_node_cluster(&self, node: &str, cluster: &str) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE nodes SET cluster = ?2 WHERE name = ?1",
                params![node, cluster],
            )
            .map_err(identity_sql(
                CredentialKind::Node,
                node,
                "recording the cluster",
            ))?;
        Ok(())
    }

    /// Sets enrolled node `node`'s role from an authority above its enrollment (the
    /// Kubernetes Node's labels), in its certificate record and the inventory; audited as
    /// `node.role` by `actor` when it changes. Returns the previous role when it changed;
    /// `None` when it already was `role` or the node is not enrolled (nothing to correct).
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a role other than `server`/`agent`; SQL failures.
    pub fn correct_node_role(
        &self,
        node: &str,
        role: &str,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Option<String>>, StoreError> {
        if role != "server" && role != "agent" {
            return Err(StoreError::Invalid {
                table: "identities",
                column: "role",
                value: role.to_owned(),
                reason: "must be server or agent",
            });
        }
        let kind = CredentialKind::Node;
        let sql = |action| identity_sql(kind, node, action);
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("correcting the role"))?;
        let Some(record) = read_identity(&tx, kind, node)? else {
            return Ok(None);
        };
        if record.role.as_deref() == Some(role) {
            return Ok(None);
        }
        tx.execute(
            "UPDATE identities SET role = ?2 WHERE kind = 'node' AND name = ?1",
            params![node, role],
        )
        .map_err(sql("correcting the role"))?;
        tx.execute(
            "UPDATE nodes SET role = ?2 WHERE name = ?1",
            params![node, role],
        )
        .map_err(sql("correcting the role"))?;
        super::audit::append(
            &tx,
            actor,
            "node.role",
            &format!(
                "node {node}: role {} -> {role}",
                record.role.as_deref().unwrap_or("(unset)")
            ),
            now,
        )?;
        tx.commit().map_err(sql("correcting the role"))?;
        Ok(Some(record.role))
    }

    /// Records a new admin certificate for `name`, superseding its current one only when
    /// `replace` is set; audited as `admin-cert.create` by `actor`. Returns the superseded
    /// serial.
    ///
    /// # Errors
    /// [`StoreError::AdminCertExists`] when `name` has a current certificate and `replace` is
    /// not set; SQL failures.
    pub fn record_admin_certificate(
        &self,
        name: &str,
        serial: &str,
        not_after: OffsetDateTime,
        replace: bool,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        let kind = CredentialKind::Admin;
        let sql = |action| identity_sql(kind, name, action);
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("recording an admin certificate"))?;
        let previous = Self::admin_refusal(&tx, name, replace)?;
        if let Some(old) = &previous {
            revoke_serial(&tx, old, kind, name, "superseded", now)?;
        }
        tx.execute(
            "INSERT INTO identities (kind, name, serial, role, since, not_after) \
             VALUES ('admin', ?1, ?2, NULL, ?3, ?4) \
             ON CONFLICT (kind, name) DO UPDATE SET serial = excluded.serial, \
                 since = excluded.since, not_after = excluded.not_after",
            params![name, serial, to_db(now), to_db(not_after)],
        )
        .map_err(sql("recording an admin certificate"))?;
        let mut detail = format!("admin:{name} serial {serial}");
        if let Some(old) = &previous {
            detail.push_str(&format!(" (supersedes serial {old})"));
        }
        super::audit::append(&tx, actor, "admin-cert.create", &detail, now)?;
        tx.commit().map_err(sql("recording an admin certificate"))?;
        Ok(previous)
    }

    /// Whether a new certificate for admin `name` may be issued: `Ok` with the serial it would
    /// supersede. For checking before issuing anything.
    ///
    /// # Errors
    /// [`StoreError::AdminCertExists`] as [`Self::record_admin_certificate`].
    pub fn admin_certificate_allowed(
        &self,
        name: &str,
        replace: bool,
    ) -> Result<Option<String>, StoreError> {
        Self::admin_refusal(&self.conn(), name, replace)
    }

    fn admin_refusal(
        conn: &Connection,
        name: &str,
        replace: bool,
    ) -> Result<Option<String>, StoreError> {
        let current = read_identity(conn, CredentialKind::Admin, name)?.and_then(|r| r.serial);
        match current {
            Some(serial) if !replace => Err(StoreError::AdminCertExists {
                name: name.to_owned(),
                serial,
            }),
            other => Ok(other),
        }
    }

    /// Revokes admin `name`'s certificate and forgets the name (a new `admin-cert create`
    /// may issue it again); audited as `admin-cert.revoke` by `actor`. With `dry_run`
    /// everything is checked and nothing written. Returns the record that was revoked.
    ///
    /// # Errors
    /// [`StoreError::NotEnrolled`] when `name` has no certificate recorded; SQL failures.
    pub fn revoke_admin(
        &self,
        name: &str,
        actor: &str,
        dry_run: bool,
        now: OffsetDateTime,
    ) -> Result<IdentityRecord, StoreError> {
        let kind = CredentialKind::Admin;
        let sql = |action| identity_sql(kind, name, action);
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("revoking an admin certificate"))?;
        let Some(record) = read_identity(&tx, kind, name)? else {
            return Err(StoreError::NotEnrolled {
                who: kind.who(name),
            });
        };
        if dry_run {
            return Ok(record);
        }
        if let Some(serial) = &record.serial {
            revoke_serial(&tx, serial, kind, name, "revoked", now)?;
        }
        tx.execute(
            "DELETE FROM identities WHERE kind = 'admin' AND name = ?1",
            params![name],
        )
        .map_err(sql("revoking an admin certificate"))?;
        super::audit::append(
            &tx,
            actor,
            "admin-cert.revoke",
            &format!(
                "admin:{name} serial {}",
                record.serial.as_deref().unwrap_or("(not recorded)")
            ),
            now,
        )?;
        tx.commit().map_err(sql("revoking an admin certificate"))?;
        Ok(record)
    }

    /// Forgets a decommissioned node: revokes its certificate, drops its certificate record,
    /// its inventory row and its last snapshot; audited as `node.remove` by `actor`. Refused
    /// while an active plan includes the node. With `dry_run` everything is checked and
    /// nothing written.
    ///
    /// # Errors
    /// [`StoreError::NotEnrolled`] when the hub knows no such node;
    /// [`StoreError::NodeInActivePlan`]; SQL failures.
    pub fn remove_node(
        &self,
        name: &str,
        actor: &str,
        dry_run: bool,
        now: OffsetDateTime,
    ) -> Result<RemovedNode, StoreError> {
        let kind = CredentialKind::Node;
        let node_sql = |action| {
            move |source| StoreError::NodeSql {
                table: "nodes",
                node: name.to_owned(),
                action,
                source,
            }
        };
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(node_sql("removing the node"))?;
        let record = read_identity(&tx, kind, name)?;
        let inventory_role: Option<String> = tx
            .query_row(
                "SELECT role FROM nodes WHERE name = ?1",
                params![name],
                |row| row.get(0),
            )
            .optional()
            .map_err(node_sql("reading the node"))?;
        if record.is_none() && inventory_role.is_none() {
            return Err(StoreError::NotEnrolled {
                who: kind.who(name),
            });
        }
        let active: Option<(i64, String)> = tx
            .query_row(
                "SELECT p.id, p.state FROM plan_nodes n JOIN plans p ON p.id = n.plan_id \
                 WHERE n.node = ?1 AND p.state IN ('running', 'paused', 'halted') \
                 ORDER BY p.id LIMIT 1",
                params![name],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(node_sql("reading the active plans"))?;
        if let Some((plan, state)) = active {
            return Err(StoreError::NodeInActivePlan {
                node: name.to_owned(),
                plan,
                state,
            });
        }
        let certificates: u32 = tx
            .query_row(
                "SELECT count(*) FROM certificates WHERE node = ?1",
                params![name],
                |row| row.get(0),
            )
            .map_err(node_sql("counting the node's certificates"))?;
        let revoked_serial = record.as_ref().and_then(|r| r.serial.clone());
        let removed = RemovedNode {
            name: name.to_owned(),
            role: record
                .as_ref()
                .and_then(|r| r.role.clone())
                .or(inventory_role.clone()),
            revoked_serial: revoked_serial.clone(),
            in_inventory: inventory_role.is_some(),
            certificates,
        };
        if dry_run {
            return Ok(removed);
        }
        if let Some(record) = &record {
            revoke_record(&tx, record, "revoked", now)?;
        }
        tx.execute(
            "DELETE FROM identities WHERE kind = 'node' AND name = ?1",
            params![name],
        )
        .map_err(node_sql("forgetting the node's certificate"))?;
        // The snapshot and file errors go with the row (ON DELETE CASCADE).
        tx.execute("DELETE FROM nodes WHERE name = ?1", params![name])
            .map_err(node_sql("removing the node"))?;
        super::audit::append(
            &tx,
            actor,
            "node.remove",
            &format!(
                "node {name}: certificate serial {} revoked, {certificates} certificates forgotten",
                revoked_serial.as_deref().unwrap_or("(not recorded)")
            ),
            now,
        )?;
        tx.commit().map_err(node_sql("removing the node"))?;
        Ok(removed)
    }
}

/// A [`StoreError::NodeSql`] on `identities` naming the holder (`node NAME`, `admin NAME`).
fn identity_sql(
    kind: CredentialKind,
    name: &str,
    action: &'static str,
) -> impl FnOnce(rusqlite::Error) -> StoreError {
    let who = kind.who(name);
    move |source| StoreError::NodeSql {
        table: "identities",
        node: who,
        action,
        source,
    }
}

/// The record of `name`, read on `conn` (which may be inside a transaction).
pub(super) fn read_identity(
    conn: &Connection,
    kind: CredentialKind,
    name: &str,
) -> Result<Option<IdentityRecord>, StoreError> {
    type Raw = (
        Option<String>,
        Option<String>,
        i64,
        Option<i64>,
        Option<String>,
    );
    let raw: Option<Raw> = conn
        .query_row(
            "SELECT serial, role, since, not_after, previous_serial FROM identities \
             WHERE kind = ?1 AND name = ?2",
            params![kind.as_str(), name],
            |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            },
        )
        .optional()
        .map_err(|source| StoreError::NodeSql {
            table: "identities",
            node: kind.who(name),
            action: "reading the certificate record",
            source,
        })?;
    raw.map(|(serial, role, since, not_after, previous_serial)| {
        let key = || kind.who(name);
        Ok(IdentityRecord {
            kind,
            name: name.to_owned(),
            serial,
            role,
            since: from_db(since, "identities", key, "since")?,
            not_after: from_db_opt(not_after, "identities", key, "not_after")?,
            previous_serial,
        })
    })
    .transpose()
}

/// When and why `serial` stopped being accepted, if it did.
fn read_revocation(
    conn: &Connection,
    serial: &str,
) -> Result<Option<(RevocationReason, OffsetDateTime)>, StoreError> {
    let raw: Option<(String, i64)> = conn
        .query_row(
            "SELECT reason, at FROM revoked_serials WHERE serial = ?1",
            params![serial],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(|source| StoreError::Sql {
            table: "revoked_serials",
            action: "reading a revocation",
            source,
        })?;
    raw.map(|(reason, at)| {
        let key = || serial.to_owned();
        let reason = RevocationReason::parse(&reason).ok_or_else(|| StoreError::Corrupt {
            table: "revoked_serials",
            key: key(),
            column: "reason",
            reason: format!("{reason:?} is neither superseded nor revoked"),
        })?;
        Ok((reason, from_db(at, "revoked_serials", key, "at")?))
    })
    .transpose()
}

/// Records that `serial` (of `name`) is no longer accepted. A serial already recorded keeps
/// its first reason and time.
/// Stops accepting every certificate of `record` (the current one and, for a node whose
/// renewal is not confirmed yet, the one before it), for `reason`.
pub(super) fn revoke_record(
    conn: &Connection,
    record: &IdentityRecord,
    reason: &'static str,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    for serial in [&record.serial, &record.previous_serial]
        .into_iter()
        .flatten()
    {
        revoke_serial(conn, serial, record.kind, &record.name, reason, now)?;
    }
    Ok(())
}

pub(super) fn revoke_serial(
    conn: &Connection,
    serial: &str,
    kind: CredentialKind,
    name: &str,
    reason: &'static str,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO revoked_serials (serial, kind, name, reason, at) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (serial) DO NOTHING",
        params![serial, kind.as_str(), name, reason, to_db(now)],
    )
    .map_err(|source| StoreError::NodeSql {
        table: "revoked_serials",
        node: kind.who(name),
        action: "recording a superseded or revoked serial",
        source,
    })?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap in a test names its line, which is enough
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::pki::{CredentialRefusal, EnrollmentKind, EnrollmentRefusal, TokenBinding};
    use crate::store::{Enrollment, TokenError, hash_secret};

    const NOW: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);
    const HOUR: time::Duration = time::Duration::hours(1);

    fn token(store: &Store, id: &str, node: Option<&str>, replace: bool, role: Option<&str>) {
        let binding = TokenBinding {
            node: node.map(str::to_owned),
            replace,
            role: role.map(str::to_owned),
            cluster: None,
        };
        store
            .insert_bound_token(id, &hash_secret("s"), NOW + HOUR, "uid:0", &binding, NOW)
            .unwrap();
    }

    fn enroll(
        store: &Store,
        id: &str,
        node: &str,
        serial: &str,
    ) -> Result<crate::store::Enrolled, TokenError> {
        store.enroll_node(&Enrollment {
            token_id: id,
            secret_hash: &hash_secret("s"),
            node,
            claimed_role: None,
            cluster: "default",
            serial,
            not_after: NOW + time::Duration::days(90),
            now: NOW,
        })
    }

    fn verdict(store: &Store, kind: CredentialKind, name: &str, serial: &str) -> CredentialVerdict {
        store.check_credential(kind, name, serial, NOW).unwrap()
    }

    #[test]
    fn an_unbound_token_cannot_take_an_enrolled_name_and_stays_unused() {
        let store = Store::open_in_memory().unwrap();
        token(&store, "t1", None, false, None);
        token(&store, "t2", None, false, None);
        enroll(&store, "t1", "a", "aa").unwrap();
        let err = enroll(&store, "t2", "a", "bb").unwrap_err();
        assert!(
            matches!(&err, TokenError::Refused(EnrollmentRefusal::AlreadyEnrolled { node }) if node == "a"),
            "{err}"
        );
        assert_eq!(
            verdict(&store, CredentialKind::Node, "a", "aa"),
            CredentialVerdict::Accept
        );
        // The refused token still enrolls a new name.
        let enrolled = enroll(&store, "t2", "b", "bb").unwrap();
        assert_eq!(enrolled.kind, EnrollmentKind::New);
    }

    #[test]
    fn replace_supersedes_the_old_serial_and_keeps_the_role() {
        let store = Store::open_in_memory().unwrap();
        token(&store, "t1", Some("a"), false, Some("agent"));
        token(&store, "t2", Some("a"), true, None);
        enroll(&store, "t1", "a", "aa").unwrap();
        let enrolled = enroll(&store, "t2", "a", "bb").unwrap();
        assert_eq!(enrolled.kind, EnrollmentKind::Replace);
        assert_eq!(enrolled.superseded.as_deref(), Some("aa"));
        assert_eq!(enrolled.role.as_deref(), Some("agent"));
        assert!(matches!(
            verdict(&store, CredentialKind::Node, "a", "aa"),
            CredentialVerdict::Refuse(CredentialRefusal::Superseded { .. })
        ));
        assert_eq!(
            verdict(&store, CredentialKind::Node, "a", "bb"),
            CredentialVerdict::Accept
        );
        let log = store.audit_log(1).unwrap();
        assert_eq!(log[0].action, "node.enroll.replace");
        assert!(log[0].detail.contains("replaced serial aa"), "{log:?}");
    }

    #[test]
    fn renewal_keeps_the_old_certificate_until_the_new_one_is_used() {
        let store = Store::open_in_memory().unwrap();
        token(&store, "t1", None, false, None);
        enroll(&store, "t1", "a", "aa").unwrap();
        store
            .renew_node_certificate("a", "aa", "bb", NOW + HOUR, NOW)
            .unwrap();
        // The answer with bb was lost: the agent still holds aa, gets in and renews again.
        assert_eq!(
            verdict(&store, CredentialKind::Node, "a", "aa"),
            CredentialVerdict::Accept
        );
        store
            .renew_node_certificate("a", "aa", "cc", NOW + HOUR, NOW)
            .unwrap();
        assert!(matches!(
            verdict(&store, CredentialKind::Node, "a", "bb"),
            CredentialVerdict::Refuse(CredentialRefusal::Superseded { .. })
        ));
        // cc is used: from now on aa is superseded for good, and renews nothing.
        assert_eq!(
            verdict(&store, CredentialKind::Node, "a", "cc"),
            CredentialVerdict::Accept
        );
        assert!(matches!(
            verdict(&store, CredentialKind::Node, "a", "aa"),
            CredentialVerdict::Refuse(CredentialRefusal::Superseded { .. })
        ));
        let err = store
            .renew_node_certificate("a", "aa", "dd", NOW + HOUR, NOW)
            .unwrap_err();
        assert!(matches!(err, StoreError::CredentialChanged { .. }), "{err}");
        let record = store.identity(CredentialKind::Node, "a").unwrap().unwrap();
        assert_eq!(record.serial.as_deref(), Some("cc"));
        assert_eq!(record.previous_serial, None);
    }

    #[test]
    fn a_replacement_or_removal_also_ends_a_pending_renewals_old_certificate() {
        let store = Store::open_in_memory().unwrap();
        token(&store, "t1", None, false, None);
        enroll(&store, "t1", "a", "aa").unwrap();
        store
            .renew_node_certificate("a", "aa", "bb", NOW + HOUR, NOW)
            .unwrap();
        store
            .import_node_certificate("a", "cc", NOW + HOUR, "test", NOW)
            .unwrap();
        for old in ["aa", "bb"] {
            assert!(matches!(
                verdict(&store, CredentialKind::Node, "a", old),
                CredentialVerdict::Refuse(CredentialRefusal::Superseded { .. })
            ));
        }
    }

    #[test]
    fn an_imported_certificate_is_current_and_supersedes_the_previous_one() {
        let store = Store::open_in_memory().unwrap();
        store
            .import_node_certificate("a", "aa", NOW + HOUR, "test", NOW)
            .unwrap();
        assert_eq!(
            verdict(&store, CredentialKind::Node, "a", "aa"),
            CredentialVerdict::Accept
        );
        store
            .import_node_certificate("a", "bb", NOW + HOUR, "test", NOW)
            .unwrap();
        assert!(matches!(
            verdict(&store, CredentialKind::Node, "a", "aa"),
            CredentialVerdict::Refuse(CredentialRefusal::Superseded { .. })
        ));
        assert_eq!(store.audit_log(1).unwrap()[0].action, "node.import");
    }

    #[test]
    fn remove_revokes_forgets_and_a_dry_run_changes_nothing() {
        let store = Store::open_in_memory().unwrap();
        token(&store, "t1", None, false, None);
        enroll(&store, "t1", "a", "aa").unwrap();
        store
            .upsert_node_hello("a", "agent", "v1", "0.1.0", NOW)
            .unwrap();
        let dry = store.remove_node("a", "uid:0", true, NOW).unwrap();
        assert_eq!(dry.revoked_serial.as_deref(), Some("aa"));
        assert!(store.node("a").unwrap().is_some());
        assert_eq!(
            verdict(&store, CredentialKind::Node, "a", "aa"),
            CredentialVerdict::Accept
        );
        store.remove_node("a", "uid:0", false, NOW).unwrap();
        assert!(store.node("a").unwrap().is_none());
        assert!(matches!(
            verdict(&store, CredentialKind::Node, "a", "aa"),
            CredentialVerdict::Refuse(CredentialRefusal::Revoked { .. })
        ));
        let err = store.remove_node("a", "uid:0", false, NOW).unwrap_err();
        assert!(err.to_string().contains("node a"), "{err}");
        // The name is free again for an unbound token.
        token(&store, "t2", None, false, None);
        enroll(&store, "t2", "a", "bb").unwrap();
    }

    #[test]
    fn a_node_in_an_active_plan_is_not_removed() {
        use crate::plan::decide::Role;
        use crate::plan::model::{PlanKind, PlanNode, PlanPolicy};
        let store = Store::open_in_memory().unwrap();
        token(&store, "t1", None, false, None);
        enroll(&store, "t1", "a", "aa").unwrap();
        let policy = PlanPolicy::default();
        let plan = crate::store::NewPlan {
            kind: PlanKind::Restart,
            target_version: "",
            channel: "",
            policy: &policy,
            origin: "operator",
            created_by: "uid:0",
            cluster: "default",
            rollout: None,
        };
        let nodes = [PlanNode::pending("a", 0, Role::Agent, "v1")];
        let id = store.create_plan(&plan, &nodes, NOW).unwrap();
        let err = store.remove_node("a", "uid:0", true, NOW).unwrap_err();
        assert!(
            matches!(&err, StoreError::NodeInActivePlan { node, plan, .. } if node == "a" && *plan == id),
            "{err}"
        );
        assert!(err.to_string().contains("abort"), "{err}");
    }

    #[test]
    fn the_first_hello_fixes_an_unset_role_and_later_ones_are_ignored() {
        let store = Store::open_in_memory().unwrap();
        token(&store, "t1", None, false, None);
        enroll(&store, "t1", "a", "aa").unwrap();
        assert_eq!(
            store.hello_role("a", "agent").unwrap(),
            HelloRole::Fix("agent".into())
        );
        assert_eq!(store.hello_role("a", "server").unwrap().role(), "agent");
    }

    #[test]
    fn kubernetes_corrects_the_role_everywhere_and_once() {
        let store = Store::open_in_memory().unwrap();
        token(&store, "t1", None, false, Some("agent"));
        enroll(&store, "t1", "a", "aa").unwrap();
        store
            .upsert_node_hello("a", "agent", "v1", "0.1.0", NOW)
            .unwrap();
        let changed = store
            .correct_node_role("a", "server", "hub:kubernetes", NOW)
            .unwrap();
        assert_eq!(changed, Some(Some("agent".to_owned())));
        assert_eq!(store.node("a").unwrap().unwrap().role, "server");
        assert_eq!(store.hello_role("a", "agent").unwrap().role(), "server");
        assert_eq!(
            store
                .correct_node_role("a", "server", "hub:kubernetes", NOW)
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .correct_node_role("ghost", "server", "hub:kubernetes", NOW)
                .unwrap(),
            None
        );
        assert_eq!(store.audit_log(1).unwrap()[0].action, "node.role");
    }

    #[test]
    fn admin_certificates_are_replaced_only_when_asked_and_revoked_by_name() {
        let store = Store::open_in_memory().unwrap();
        store
            .record_admin_certificate("alice", "aa", NOW + HOUR, false, "uid:0", NOW)
            .unwrap();
        let err = store
            .record_admin_certificate("alice", "bb", NOW + HOUR, false, "uid:0", NOW)
            .unwrap_err();
        assert!(matches!(err, StoreError::AdminCertExists { .. }), "{err}");
        store
            .record_admin_certificate("alice", "bb", NOW + HOUR, true, "uid:0", NOW)
            .unwrap();
        assert!(matches!(
            verdict(&store, CredentialKind::Admin, "alice", "aa"),
            CredentialVerdict::Refuse(CredentialRefusal::Superseded { .. })
        ));
        store.revoke_admin("alice", "uid:0", true, NOW).unwrap();
        assert_eq!(
            verdict(&store, CredentialKind::Admin, "alice", "bb"),
            CredentialVerdict::Accept
        );
        store.revoke_admin("alice", "uid:0", false, NOW).unwrap();
        assert!(matches!(
            verdict(&store, CredentialKind::Admin, "alice", "bb"),
            CredentialVerdict::Refuse(CredentialRefusal::Revoked { .. })
        ));
        // A node named like the admin is another holder.
        assert!(matches!(
            verdict(&store, CredentialKind::Node, "alice", "cc"),
            CredentialVerdict::Refuse(CredentialRefusal::NotEnrolled { .. })
        ));
    }

    #[test]
    fn nodes_and_admin_certificates_from_before_migration_3_are_carried_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            // Migrations 1 and 2 only, as an older hub left the file.
            let tx = conn.transaction().unwrap();
            for sql in &super::super::schema::MIGRATIONS[..2] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 2).unwrap();
            tx.execute_batch(
                "INSERT INTO nodes (name, role, rke2_version, agent_version, online, \
                                    online_changed_at, first_seen, last_seen) \
                 VALUES ('old', 'server', 'v1', '0.1.0', 0, 0, 0, 0); \
                 INSERT INTO audit_log (at, actor, action, detail) VALUES \
                   (1, 'uid:0', 'admin-cert.create', 'admin:bob serial 4a01'), \
                   (2, 'uid:0', 'admin-cert.create', 'admin:bob serial 4a02');",
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let store = Store::open(&path).unwrap();
        let bob = store
            .identity(CredentialKind::Admin, "bob")
            .unwrap()
            .unwrap();
        assert_eq!(bob.serial.as_deref(), Some("4a02"));
        assert!(matches!(
            verdict(&store, CredentialKind::Admin, "bob", "4a01"),
            CredentialVerdict::Refuse(CredentialRefusal::NotCurrent { .. })
        ));
        let old = store
            .identity(CredentialKind::Node, "old")
            .unwrap()
            .unwrap();
        assert_eq!((old.serial, old.role.as_deref()), (None, Some("server")));
        // The node's first certificate is adopted; another one then is not.
        assert_eq!(
            verdict(&store, CredentialKind::Node, "old", "77"),
            CredentialVerdict::Adopt
        );
        assert_eq!(
            verdict(&store, CredentialKind::Node, "old", "77"),
            CredentialVerdict::Accept
        );
        assert!(matches!(
            verdict(&store, CredentialKind::Node, "old", "78"),
            CredentialVerdict::Refuse(CredentialRefusal::NotCurrent { .. })
        ));
    }
}
