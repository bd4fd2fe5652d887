//! Join tokens: short-lived, single-use credentials a node presents once to enroll. The store
//! keeps only the SHA-256 of each token's secret (the caller hashes with [`hash_secret`]) and
//! never returns it.

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use super::{Store, StoreError, TokenError, TokenRecord, from_db, from_db_opt, to_db};

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
        let result = self.conn().execute(
            "INSERT INTO join_tokens (id, secret_hash, created_at, expires_at, created_by) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, secret_hash, to_db(now), to_db(expires_at), created_by],
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
        let sql_err = |action| {
            move |source| StoreError::TokenSql {
                id: id.to_owned(),
                action,
                source,
            }
        };
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err("consuming the token"))?;
        let row: Option<(String, i64, Option<i64>)> = tx
            .query_row(
                "SELECT secret_hash, expires_at, used_at FROM join_tokens WHERE id = ?1",
                params![id],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
            .map_err(sql_err("reading the token"))?;
        let Some((stored_hash, expires_at, used_at)) = row else {
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
        let changed = tx
            .execute(
                "UPDATE join_tokens SET used_at = ?2, used_by = ?3 \
                 WHERE id = ?1 AND used_at IS NULL",
                params![id, to_db(now), node_name],
            )
            .map_err(sql_err("consuming the token"))?;
        if changed != 1 {
            // Unreachable while the IMMEDIATE transaction holds the write lock; kept so that a
            // change of isolation can never make a token usable twice.
            return Err(TokenError::AlreadyUsed {
                id: id.to_owned(),
                used_at: now,
            });
        }
        tx.commit().map_err(sql_err("consuming the token"))?;
        Ok(())
    }

    /// Every join token, oldest first, without secrets or their hashes.
    ///
    /// # Errors
    /// [`StoreError::Sql`] if the read fails; [`StoreError::Corrupt`] for an unreadable row.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        type Raw = (String, i64, i64, Option<i64>, Option<String>, String);
        let sql_err = |source| StoreError::Sql {
            table: "join_tokens",
            action: "listing join tokens",
            source,
        };
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, created_at, expires_at, used_at, used_by, created_by \
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
                ))
            })
            .map_err(sql_err)?
            .collect::<Result<_, _>>()
            .map_err(sql_err)?;
        raw.into_iter()
            .map(
                |(id, created_at, expires_at, used_at, used_by, created_by)| {
                    let key = || id.clone();
                    Ok(TokenRecord {
                        created_at: from_db(created_at, "join_tokens", key, "created_at")?,
                        expires_at: from_db(expires_at, "join_tokens", key, "expires_at")?,
                        used_at: from_db_opt(used_at, "join_tokens", key, "used_at")?,
                        used_by,
                        created_by,
                        id,
                    })
                },
            )
            .collect()
    }
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
