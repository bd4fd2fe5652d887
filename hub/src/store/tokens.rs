//! Join tokens: short-lived, single-use credentials a node presents once to enroll. The store
//! keeps only the SHA-256 of each token's secret (the caller hashes with [`hash_secret`]) and
//! never returns it. A token may be bound to one node name, may allow replacing that node's
//! certificate, and may fix its role; [`Store::enroll_node`] applies all of it together with
//! the node's new serial in one transaction.

use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use super::identities::{read_identity, revoke_record};
use super::{
    CredentialKind, Store, StoreError, TokenError, TokenRecord, from_db, from_db_opt, to_db,
};
use crate::pki::{EnrollmentKind, TokenBinding, enrolled_role, judge_cluster, judge_enrollment};

/// A node's enrollment: the token it presents and the certificate the hub signed for it
/// (released to the node only when [`Store::enroll_node`] succeeds).
#[derive(Debug, Clone)]
pub struct Enrollment<'a> {
    /// The token's public id.
    pub token_id: &'a str,
    /// [`hash_secret`] of the presented secret.
    pub secret_hash: &'a str,
    /// The node name the agent claims (already checked against its CSR).
    pub node: &'a str,
    /// The role the enrolling agent claims, if it said one.
    pub claimed_role: Option<&'a str>,
    /// The cluster the enrolling agent names (checked; [`rke2ops_common::ids::DEFAULT_CLUSTER`]
    /// when its config names none).
    pub cluster: &'a str,
    /// Serial of the certificate signed for it.
    pub serial: &'a str,
    /// End of that certificate's validity.
    pub not_after: OffsetDateTime,
    /// Now.
    pub now: OffsetDateTime,
}

/// What an enrollment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    /// A new name, or a replaced one.
    pub kind: EnrollmentKind,
    /// The node's role after enrollment (`None`: its first hello fixes it).
    pub role: Option<String>,
    /// The serial the enrollment superseded (a replaced node's previous certificate).
    pub superseded: Option<String>,
    /// Who created the token.
    pub token_created_by: String,
}

/// The stored form of a join token's secret: one formula, owned by the token module.
pub use crate::pki::token::secret_hash as hash_secret;

/// Whether `hash` looks like [`hash_secret`]'s output, so a plain secret passed by mistake is
/// refused instead of stored.
fn is_secret_hash(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Store {
    /// Stores a new join token: its public `id`, the hash of its secret, and when it expires.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] if `secret_hash` is not a SHA-256 hex digest or the token would
    /// expire before it is created; [`StoreError::DuplicateToken`] if the id exists;
    /// [`StoreError::TokenSql`] if the write fails.
    pub fn insert_token(
        &self,
        id: &str,
        secret_hash: &str,
        expires_at: OffsetDateTime,
        created_by: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.insert_bound_token(
            id,
            secret_hash,
            expires_at,
            created_by,
            &TokenBinding::default(),
            now,
        )
    }

    /// [`Self::insert_token`] with what the token allows: the one node it may enroll, whether
    /// it may replace that node's certificate, and the role it fixes.
    ///
    /// # Errors
    /// As [`Self::insert_token`]; [`StoreError::Invalid`] for `replace` without a node or a
    /// role other than `server`/`agent`.
    pub fn insert_bound_token(
        &self,
        id: &str,
        secret_hash: &str,
        expires_at: OffsetDateTime,
        created_by: &str,
        binding: &TokenBinding,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        if binding.replace && binding.node.is_none() {
            return Err(StoreError::Invalid {
                table: "join_tokens",
                column: "allow_replace",
                value: "true".to_owned(),
                reason: "a token may replace only the node it is bound to",
            });
        }
        if let Some(role) = binding.role.as_deref()
            && role != "server"
            && role != "agent"
        {
            return Err(StoreError::Invalid {
                table: "join_tokens",
                column: "role",
                value: role.to_owned(),
                reason: "must be server or agent",
            });
        }
        if !is_secret_hash(secret_hash) {
            return Err(StoreError::Invalid {
                table: "join_tokens",
                column: "secret_hash",
                value: format!("<{} characters, not shown>", secret_hash.len()),
                reason: "must be hash_secret()'s lowercase SHA-256 hex, never the secret",
            });
        }
        if expires_at <= now {
            return Err(StoreError::Invalid {
                table: "join_tokens",
                column: "expires_at",
                value: expires_at.to_string(),
                reason: "the token would expire before it is created",
            });
        }
        if let Some(cluster) = binding.cluster.as_deref()
            && rke2ops_common::ids::check_cluster_name(cluster).is_err()
        {
            return Err(StoreError::Invalid {
                table: "join_tokens",
                column: "cluster",
                value: cluster.to_owned(),
                reason: "must be a DNS label ([a-z0-9] with inner '-', at most 63)",
            });
        }
        let result = self.conn().execute(
            "INSERT INTO join_tokens (id, secret_hash, created_at, expires_at, created_by, \
                                      node, allow_replace, role, cluster) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                id,
                secret_hash,
                to_db(now),
                to_db(expires_at),
                created_by,
                binding.node,
                binding.replace,
                binding.role,
                binding.cluster
            ],
        );
        match result {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(err, _))
                if err.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
            {
                Err(StoreError::DuplicateToken { id: id.to_owned() })
            }
            Err(source) => Err(StoreError::TokenSql {
                id: id.to_owned(),
                action: "creating the token",
                source,
            }),
        }
    }

    /// Consumes join token `id` for `node_name` if `secret_hash` matches and it is unused and
    /// unexpired at `now`. Exactly one caller can consume a token: the check and the update are
    /// one IMMEDIATE transaction, which also excludes other processes on the same file.
    ///
    /// The hash is compared in constant time. The checks run in [`TokenError`]'s order, so only
    /// a holder of the secret learns that a token was used or expired.
    ///
    /// # Errors
    /// [`TokenError`] saying why the token was refused, or [`TokenError::Store`] if the store
    /// failed (nothing was consumed then).
    pub fn consume_token(
        &self,
        id: &str,
        secret_hash: &str,
        node_name: &str,
        now: OffsetDateTime,
    ) -> Result<(), TokenError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(token_sql(id, "consuming the token"))?;
        check_token(&tx, id, secret_hash, now)?;
        spend_token(&tx, id, node_name, now)?;
        tx.commit().map_err(token_sql(id, "consuming the token"))?;
        Ok(())
    }

    /// Enrolls a node: checks the token as [`Self::consume_token`] does, then what it allows
    /// ([`judge_enrollment`]: its bound node, whether an enrolled name may be replaced), then
    /// records the node's new serial and role, supersedes a replaced node's previous serial,
    /// spends the token and appends the audit entry, all in one IMMEDIATE transaction. A
    /// refusal changes nothing: the token stays unused.
    ///
    /// A name counts as enrolled when it has a certificate record or is in the inventory.
    ///
    /// # Errors
    /// [`TokenError`]: the token's own refusals first (so only a holder of the secret learns
    /// more), then [`TokenError::Refused`] naming the node; [`TokenError::Store`] if the store
    /// failed.
    pub fn enroll_node(&self, e: &Enrollment<'_>) -> Result<Enrolled, TokenError> {
        let id = e.token_id;
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(token_sql(id, "enrolling with the token"))?;
        let (binding, created_by) = check_token(&tx, id, e.secret_hash, e.now)?;
        let previous = read_identity(&tx, CredentialKind::Node, e.node)?;
        let in_inventory = tx
            .query_row(
                "SELECT 1 FROM nodes WHERE name = ?1",
                params![e.node],
                |_| Ok(()),
            )
            .optional()
            .map_err(token_sql(id, "reading the node"))?
            .is_some();
        let kind = judge_enrollment(id, &binding, e.node, previous.is_some() || in_inventory)?;
        judge_cluster(id, &binding, e.node, e.cluster)?;
        let previous_role = previous.as_ref().and_then(|p| p.role.as_deref());
        let role = enrolled_role(binding.role.as_deref(), previous_role, e.claimed_role);
        if let Some(old) = &previous {
            revoke_record(&tx, old, "superseded", e.now)?;
        }
        let superseded = previous.and_then(|p| p.serial);
        tx.execute(
            "INSERT INTO identities (kind, name, serial, role, since, not_after, cluster) \
             VALUES ('node', ?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (kind, name) DO UPDATE SET serial = excluded.serial, \
                 role = excluded.role, since = excluded.since, not_after = excluded.not_after, \
                 previous_serial = NULL, cluster = excluded.cluster",
            params![
                e.node,
                e.serial,
                role,
                to_db(e.now),
                to_db(e.not_after),
                e.cluster
            ],
        )
        .map_err(token_sql(id, "recording the node's certificate"))?;
        tx.execute(
            "UPDATE nodes SET cluster = ?2 WHERE name = ?1",
            params![e.node, e.cluster],
        )
        .map_err(token_sql(id, "recording the node's cluster"))?;
        if let Some(role) = &role {
            tx.execute(
                "UPDATE nodes SET role = ?2 WHERE name = ?1",
                params![e.node, role],
            )
            .map_err(token_sql(id, "recording the node's role"))?;
        }
        spend_token(&tx, id, e.node, e.now)?;
        let mut detail = format!(
            "token {id} (created by {created_by}), serial {}, role {}, cluster {}",
            e.serial,
            role.as_deref().unwrap_or("from its first hello"),
            e.cluster
        );
        if kind == EnrollmentKind::Replace {
            detail.push_str(&format!(
                ", replaced serial {}",
                superseded.as_deref().unwrap_or("(not recorded)")
            ));
        }
        super::audit::append(
            &tx,
            &format!("node:{}", e.node),
            if kind == EnrollmentKind::Replace {
                "node.enroll.replace"
            } else {
                "node.enroll"
            },
            &detail,
            e.now,
        )?;
        tx.commit()
            .map_err(token_sql(id, "enrolling with the token"))?;
        Ok(Enrolled {
            kind,
            role,
            superseded,
            token_created_by: created_by,
        })
    }

    /// Every join token, oldest first, without secrets or their hashes.
    ///
    /// # Errors
    /// [`StoreError::Sql`] if the read fails; [`StoreError::Corrupt`] for an unreadable row.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        type Raw = (
            String,
            i64,
            i64,
            Option<i64>,
            Option<String>,
            String,
            (Option<String>, bool, Option<String>),
        );
        let sql_err = |source| StoreError::Sql {
            table: "join_tokens",
            action: "listing join tokens",
            source,
        };
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, created_at, expires_at, used_at, used_by, created_by, node, \
                        allow_replace, role \
                 FROM join_tokens ORDER BY created_at, id",
            )
            .map_err(sql_err)?;
        let raw: Vec<Raw> = stmt
            .query_map([], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                    (row.get(6)?, row.get(7)?, row.get(8)?),
                ))
            })
            .map_err(sql_err)?
            .collect::<Result<_, _>>()
            .map_err(sql_err)?;
        raw.into_iter()
            .map(
                |(id, created_at, expires_at, used_at, used_by, created_by, bound)| {
                    let (node, allow_replace, role) = bound;
                    let key = || id.clone();
                    Ok(TokenRecord {
                        created_at: from_db(created_at, "join_tokens", key, "created_at")?,
                        expires_at: from_db(expires_at, "join_tokens", key, "expires_at")?,
                        used_at: from_db_opt(used_at, "join_tokens", key, "used_at")?,
                        used_by,
                        created_by,
                        node,
                        allow_replace,
                        role,
                        id,
                    })
                },
            )
            .collect()
    }
}

/// A [`StoreError::TokenSql`] maker for token `id`.
fn token_sql<'a>(id: &'a str, action: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + 'a {
    move |source| StoreError::TokenSql {
        id: id.to_owned(),
        action,
        source,
    }
}

/// Checks token `id` inside `tx`: known, `secret_hash` matching (constant time), unused,
/// unexpired at `now`, in [`TokenError`]'s order. Returns what it allows and who created it.
fn check_token(
    tx: &Transaction<'_>,
    id: &str,
    secret_hash: &str,
    now: OffsetDateTime,
) -> Result<(TokenBinding, String), TokenError> {
    type Raw = (
        String,
        i64,
        Option<i64>,
        String,
        Option<String>,
        bool,
        Option<String>,
        Option<String>,
    );
    let row: Option<Raw> = tx
        .query_row(
            "SELECT secret_hash, expires_at, used_at, created_by, node, allow_replace, role, \
                    cluster \
             FROM join_tokens WHERE id = ?1",
            params![id],
            |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                    row.get(6)?,
                    row.get(7)?,
                ))
            },
        )
        .optional()
        .map_err(token_sql(id, "reading the token"))?;
    let Some((stored_hash, expires_at, used_at, created_by, node, replace, role, cluster)) = row
    else {
        return Err(TokenError::Unknown { id: id.to_owned() });
    };
    let key = || id.to_owned();
    if !bool::from(stored_hash.as_bytes().ct_eq(secret_hash.as_bytes())) {
        return Err(TokenError::Mismatch { id: id.to_owned() });
    }
    if let Some(used_at) = from_db_opt(used_at, "join_tokens", key, "used_at")? {
        return Err(TokenError::AlreadyUsed {
            id: id.to_owned(),
            used_at,
        });
    }
    let expires_at = from_db(expires_at, "join_tokens", key, "expires_at")?;
    if now >= expires_at {
        return Err(TokenError::Expired {
            id: id.to_owned(),
            expires_at,
        });
    }
    Ok((
        TokenBinding {
            node,
            replace,
            role,
            cluster,
        },
        created_by,
    ))
}

/// Marks token `id` used by `node_name` inside `tx`.
fn spend_token(
    tx: &Transaction<'_>,
    id: &str,
    node_name: &str,
    now: OffsetDateTime,
) -> Result<(), TokenError> {
    let changed = tx
        .execute(
            "UPDATE join_tokens SET used_at = ?2, used_by = ?3 \
             WHERE id = ?1 AND used_at IS NULL",
            params![id, to_db(now), node_name],
        )
        .map_err(token_sql(id, "consuming the token"))?;
    if changed != 1 {
        // Unreachable while the IMMEDIATE transaction holds the write lock; kept so that a
        // change of isolation can never make a token usable twice.
        return Err(TokenError::AlreadyUsed {
            id: id.to_owned(),
            used_at: now,
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap in a test names its line, which is enough
mod tests {
    use std::sync::{Arc, Barrier};

    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);
    const HOUR: time::Duration = time::Duration::hours(1);

    fn store_with_token(id: &str, secret: &str) -> Store {
        let store = Store::open_in_memory().unwrap();
        store
            .insert_token(id, &hash_secret(secret), NOW + HOUR, "uid:0", NOW)
            .unwrap();
        store
    }

    #[test]
    fn hash_secret_is_sha256_hex() {
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_token_is_consumed_once_and_records_its_node() {
        let store = store_with_token("abc123", "s3cret");
        store
            .consume_token("abc123", &hash_secret("s3cret"), "node-1", NOW)
            .unwrap();
        let err = store
            .consume_token("abc123", &hash_secret("s3cret"), "node-2", NOW)
            .unwrap_err();
        assert!(
            matches!(err, TokenError::AlreadyUsed { used_at, .. } if used_at == NOW),
            "{err}"
        );

        let tokens = store.tokens().unwrap();
        assert_eq!(
            tokens,
            [TokenRecord {
                id: "abc123".to_owned(),
                created_at: NOW,
                expires_at: NOW + HOUR,
                used_at: Some(NOW),
                used_by: Some("node-1".to_owned()),
                created_by: "uid:0".to_owned(),
                node: None,
                allow_replace: false,
                role: None,
            }]
        );
    }

    #[test]
    fn unknown_mismatched_and_expired_tokens_are_refused_and_stay_unused() {
        let store = store_with_token("abc123", "s3cret");
        let err = store
            .consume_token("nope", &hash_secret("s3cret"), "n", NOW)
            .unwrap_err();
        assert!(
            matches!(&err, TokenError::Unknown { id } if id == "nope"),
            "{err}"
        );

        let err = store
            .consume_token("abc123", &hash_secret("guess"), "n", NOW)
            .unwrap_err();
        assert!(
            matches!(&err, TokenError::Mismatch { id } if id == "abc123"),
            "{err}"
        );

        let err = store
            .consume_token("abc123", &hash_secret("s3cret"), "n", NOW + HOUR)
            .unwrap_err();
        assert!(matches!(err, TokenError::Expired { expires_at, .. } if expires_at == NOW + HOUR));

        // A wrong secret on an expired token says only "mismatch".
        let err = store
            .consume_token("abc123", &hash_secret("guess"), "n", NOW + HOUR)
            .unwrap_err();
        assert!(matches!(err, TokenError::Mismatch { .. }), "{err}");

        assert_eq!(store.tokens().unwrap()[0].used_at, None);
    }

    #[test]
    fn errors_never_show_the_secret_or_its_hash() {
        let store = store_with_token("abc123", "s3cret");
        let hash = hash_secret("s3cret");
        for err in [
            store
                .consume_token("abc123", &hash_secret("x"), "n", NOW)
                .unwrap_err(),
            store
                .consume_token("abc123", &hash, "n", NOW + HOUR)
                .unwrap_err(),
        ] {
            let text = format!("{err} {err:?}");
            assert!(!text.contains("s3cret") && !text.contains(&hash), "{text}");
        }
        let err = store
            .insert_token("plain", "s3cret", NOW + HOUR, "uid:0", NOW)
            .unwrap_err();
        assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
        let json = serde_json::to_string(&store.tokens().unwrap()).unwrap();
        assert!(!json.contains(&hash), "{json}");
    }

    #[test]
    fn insert_refuses_duplicates_plain_secrets_and_past_expiry() {
        let store = store_with_token("abc123", "s3cret");
        let err = store
            .insert_token("abc123", &hash_secret("other"), NOW + HOUR, "uid:0", NOW)
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::DuplicateToken { id } if id == "abc123"),
            "{err}"
        );
        let err = store
            .insert_token("new", &hash_secret("x"), NOW, "uid:0", NOW)
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Invalid {
                    column: "expires_at",
                    ..
                }
            ),
            "{err}"
        );
        let err = store
            .insert_token("new", &"A".repeat(64), NOW + HOUR, "uid:0", NOW)
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Invalid {
                    column: "secret_hash",
                    ..
                }
            ),
            "{err}"
        );
    }

    /// Races `racers` threads on each of `rounds` fresh tokens; exactly one wins every time.
    fn race(stores: &[Store], rounds: usize) {
        for round in 0..rounds {
            let id = format!("tok{round}");
            stores[0]
                .insert_token(&id, &hash_secret("s"), NOW + HOUR, "uid:0", NOW)
                .unwrap();
            let barrier = Arc::new(Barrier::new(stores.len()));
            let handles: Vec<_> = stores
                .iter()
                .enumerate()
                .map(|(i, store)| {
                    let (store, barrier, id) = (store.clone(), Arc::clone(&barrier), id.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        store.consume_token(&id, &hash_secret("s"), &format!("node-{i}"), NOW)
                    })
                })
                .collect();
            let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let winners = results.iter().filter(|r| r.is_ok()).count();
            assert_eq!(winners, 1, "round {round}: {results:?}");
            assert!(
                results
                    .iter()
                    .filter_map(|r| r.as_ref().err())
                    .all(|e| matches!(e, TokenError::AlreadyUsed { .. })),
                "round {round}: {results:?}"
            );
        }
    }

    #[test]
    fn two_threads_sharing_a_store_consume_a_token_once() {
        let store = Store::open_in_memory().unwrap();
        race(&[store.clone(), store], 50);
    }

    #[test]
    fn two_connections_on_one_file_consume_a_token_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.db");
        let first = Store::open(&path).unwrap();
        let second = Store::open(&path).unwrap();
        race(&[first, second], 50);
    }
}
