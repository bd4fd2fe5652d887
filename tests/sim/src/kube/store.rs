//! Kubernetes objects kept in the simulated servers' real etcd cluster, as kube-apiserver keeps
//! them: one key per object under `/registry/<resource>/[<namespace>/]<name>`, the object's
//! `resourceVersion` being the key's etcd `mod_revision`, updates guarded by a compare on that
//! revision. Because the data lives in etcd, a server that is down or a cluster without quorum
//! fails writes (and linearizable reads) exactly where a real apiserver would.
//!
//! Differs from kube-apiserver: values are JSON (real: protobuf for built-in kinds), there is
//! no watch cache (every read goes to etcd) and no compaction of old revisions.

use std::path::Path;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    TlsOptions, Txn, TxnOp, WatchOptions,
};
use serde_json::Value;
use tokio::sync::OnceCell;

/// Why a storage operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// etcd did not answer (member down, no quorum, timeout): a 500/503 to the client.
    #[error("etcdserver: {0}")]
    Unavailable(String),
    /// A create found the key taken.
    #[error("already exists")]
    AlreadyExists,
    /// An update or delete lost a race (the revision moved) or the key is gone.
    #[error("the object has been modified")]
    Conflict,
    /// A stored value is not JSON (never written by this module).
    #[error("corrupt value at {0}")]
    Corrupt(String),
}

/// One stored object.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The object, `metadata.resourceVersion` set to its revision.
    pub object: Value,
    /// Its etcd `mod_revision` (compare it when writing it back).
    pub revision: i64,
}

/// A connection to the local etcd member, opened on first use (etcd starts after the
/// apiserver's listener binds).
pub struct Store {
    endpoint: String,
    options: ConnectOptions,
    client: OnceCell<Client>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// How long one etcd request may take before the client gets a 500 (kube-apiserver's
/// `--etcd-...` request timeout is longer; tests want a prompt failure).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);

impl Store {
    /// The member at `endpoint` (`https://<ip>:2379`) with the apiserver's etcd client
    /// credentials under `tls_dir` (`<data-dir>/server/tls`).
    ///
    /// # Errors
    /// A credential file cannot be read.
    pub fn new(endpoint: String, tls_dir: &Path) -> Result<Self, String> {
        let read = |rel: &str| {
            let path = tls_dir.join(rel);
            std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
        };
        let tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(read("etcd/server-ca.crt")?))
            .identity(Identity::from_pem(
                read("etcd/client.crt")?,
                read("etcd/client.key")?,
            ));
        let options = ConnectOptions::new()
            .with_tls(tls)
            .with_timeout(REQUEST_TIMEOUT)
            .with_connect_timeout(Duration::from_secs(2));
        Ok(Self {
            endpoint,
            options,
            client: OnceCell::new(),
        })
    }

    async fn client(&self) -> Result<Client, StoreError> {
        self.client
            .get_or_try_init(|| async {
                Client::connect([self.endpoint.as_str()], Some(self.options.clone()))
                    .await
                    .map_err(unavailable)
            })
            .await
            .cloned()
    }

    /// The object at `key`, if any.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when etcd does not answer.
    pub async fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        let mut client = self.client().await?;
        let resp = client.get(key, None).await.map_err(unavailable)?;
        resp.kvs()
            .first()
            .map(|kv| decode(key, kv.value(), kv.mod_revision()))
            .transpose()
    }

    /// Every object under `prefix` (key order) and the store's current revision (the list's
    /// `resourceVersion`).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when etcd does not answer.
    pub async fn list(&self, prefix: &str) -> Result<(Vec<Stored>, i64), StoreError> {
        let mut client = self.client().await?;
        let resp = client
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(unavailable)?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let items = resp
            .kvs()
            .iter()
            .map(|kv| {
                decode(
                    &String::from_utf8_lossy(kv.key()),
                    kv.value(),
                    kv.mod_revision(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((items, revision))
    }

    /// Writes `object` at `key` only if the key is free; the new revision.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`], or [`StoreError::Unavailable`].
    pub async fn create(&self, key: &str, object: &Value) -> Result<i64, StoreError> {
        let txn = Txn::new()
            .when([Compare::version(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, encode(object), None)]);
        match self.txn(txn).await? {
            (true, rev) => Ok(rev),
            (false, _) => Err(StoreError::AlreadyExists),
        }
    }

    /// Replaces the object at `key` if its revision is still `expected`; the new revision.
    ///
    /// # Errors
    /// [`StoreError::Conflict`], or [`StoreError::Unavailable`].
    pub async fn update(
        &self,
        key: &str,
        object: &Value,
        expected: i64,
    ) -> Result<i64, StoreError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::put(key, encode(object), None)]);
        match self.txn(txn).await? {
            (true, rev) => Ok(rev),
            (false, _) => Err(StoreError::Conflict),
        }
    }

    /// Deletes `key` if its revision is still `expected`.
    ///
    /// # Errors
    /// [`StoreError::Conflict`], or [`StoreError::Unavailable`].
    pub async fn delete(&self, key: &str, expected: i64) -> Result<(), StoreError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::delete(key, None)]);
        match self.txn(txn).await? {
            (true, _) => Ok(()),
            (false, _) => Err(StoreError::Conflict),
        }
    }

    /// The changes under `prefix` after revision `after`, waiting up to `wait` for a first
    /// one (an empty list when none came): a long poll on an etcd watch, which the stand-in's
    /// `?watch=true` answers with (its listener cannot stream).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when etcd does not answer or the revision is compacted.
    pub async fn changes(
        &self,
        prefix: &str,
        after: i64,
        wait: Duration,
    ) -> Result<Vec<Change>, StoreError> {
        let mut client = self.client().await?;
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(after + 1)
            .with_prev_key();
        let mut stream = client
            .watch(prefix, Some(options))
            .await
            .map_err(unavailable)?;
        let start = tokio::time::Instant::now();
        let mut deadline = start + wait;
        let mut out = Vec::new();
        loop {
            let message = match tokio::time::timeout_at(deadline, stream.message()).await {
                Err(_) | Ok(Ok(None)) => break,
                Ok(Err(e)) => return Err(unavailable(e)),
                Ok(Ok(Some(m))) => m,
            };
            if message.canceled() {
                return Err(StoreError::Unavailable(format!(
                    "watch canceled: {}",
                    message.cancel_reason()
                )));
            }
            for event in message.events() {
                let Some(kv) = event.kv() else { continue };
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let previous = event
                    .prev_kv()
                    .map(|p| decode(&key, p.value(), p.mod_revision()))
                    .transpose()?
                    .map(|s| s.object);
                let deleted = event.event_type() == EventType::Delete;
                let object = if deleted {
                    let mut last = previous.clone().unwrap_or(Value::Null);
                    if let Some(meta) = last.get_mut("metadata").and_then(Value::as_object_mut) {
                        meta.insert(
                            "resourceVersion".to_owned(),
                            Value::String(kv.mod_revision().to_string()),
                        );
                    }
                    last
                } else {
                    decode(&key, kv.value(), kv.mod_revision())?.object
                };
                out.push(Change {
                    deleted,
                    created: !deleted && kv.create_revision() == kv.mod_revision(),
                    object,
                    previous,
                    revision: kv.mod_revision(),
                });
            }
            if !out.is_empty() {
                deadline = deadline.min(tokio::time::Instant::now() + SETTLE);
            }
        }
        Ok(out)
    }

    /// Runs a transaction: whether its compares held, and the revision after it.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when etcd does not answer.
    pub async fn txn(&self, txn: Txn) -> Result<(bool, i64), StoreError> {
        let mut client = self.client().await?;
        let resp = client.txn(txn).await.map_err(unavailable)?;
        Ok((resp.succeeded(), resp.header().map_or(0, |h| h.revision())))
    }
}

/// One change of a key, as an etcd watch reports it.
#[derive(Debug, Clone)]
pub struct Change {
    /// The key was deleted.
    pub deleted: bool,
    /// The put created the key.
    pub created: bool,
    /// The object after the change (for a delete: the last state, at the delete's revision).
    pub object: Value,
    /// The object before the change, when there was one.
    pub previous: Option<Value>,
    /// The change's revision.
    pub revision: i64,
}

/// How long [`Store::changes`] keeps gathering once a first change arrived (they come in
/// bursts: a drain evicts several pods).
const SETTLE: Duration = Duration::from_millis(150);

/// The bytes stored for `object` (its `resourceVersion` is not stored: the revision is).
#[must_use]
pub fn encode(object: &Value) -> Vec<u8> {
    let mut copy = object.clone();
    if let Some(meta) = copy.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&copy).unwrap_or_default()
}

fn decode(key: &str, bytes: &[u8], revision: i64) -> Result<Stored, StoreError> {
    let mut object: Value =
        serde_json::from_slice(bytes).map_err(|_| StoreError::Corrupt(key.to_owned()))?;
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".to_owned(),
            Value::String(revision.to_string()),
        );
    }
    Ok(Stored { object, revision })
}

fn unavailable(e: etcd_client::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}
