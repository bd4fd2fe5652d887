//! The replicated log in etcd: loading a replica's copy (snapshot, then the entries after
//! it), appending a transaction's changes as the leader (fenced by the election key),
//! following the log as a follower, the election with its lease, and snapshots.
//!
//! The etcd client runs on a runtime of its own: the store's commit hook appends from
//! whatever thread writes (often a worker of the hub's runtime), and blocking that thread on
//! a future of the same runtime could starve it.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions,
    Identity, TlsOptions, Txn, TxnOp, WatchOptions,
};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::{EXIT_RESTART, Role, SNAPSHOT_EVERY};
use crate::store::replicate::{Change, Replicator};
use crate::store::{Store, StoreError};

/// Largest snapshot chunk (etcd's default request limit is 1.5 MiB).
const CHUNK: usize = 1024 * 1024;

/// How to reach etcd and where the hub's keys live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// Client URLs (`https://10.0.0.5:2379`).
    pub endpoints: Vec<String>,
    /// Key prefix (default `/rke2ops/hub`); several hubs may share one etcd with different
    /// prefixes.
    pub prefix: String,
    /// CA bundle that signed etcd's serving certificate (TLS when set).
    pub ca: Option<PathBuf>,
    /// Client certificate and key for etcd's client-certificate auth.
    pub cert: Option<PathBuf>,
    /// The key of `cert`.
    pub key: Option<PathBuf>,
    /// The leader's lease: a failover takes about this long.
    pub lease: Duration,
    /// One etcd request at most this long (a write beyond it fails, and the store rolls back).
    pub timeout: Duration,
}

/// Why the replicated store cannot work.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    /// An etcd request failed.
    #[error("etcd ({endpoints}): {what}: {source}")]
    Etcd {
        /// The endpoints.
        endpoints: String,
        /// What was asked.
        what: &'static str,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// What etcd holds does not make sense (names the key).
    #[error("etcd key {key}: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A local file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The local copy.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The etcd runtime went away or a request timed out.
    #[error("etcd: {0}")]
    Unavailable(String),
}

/// One log entry: a transaction's changes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    index: u64,
    /// The schema version of the replica that wrote it.
    schema: u32,
    changes: Vec<Change>,
}

/// The latest snapshot's description.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotMeta {
    /// The last log entry it contains.
    index: u64,
    schema: u32,
    chunks: u32,
    /// SHA-256 of the gzip stream, hex.
    sha256: String,
}

/// The leader's hold on the election.
#[derive(Debug, Clone)]
struct Leadership {
    key: Vec<u8>,
    rev: i64,
}

/// The replicated log. One per replica, for the process's life.
pub struct EtcdLog {
    /// etcd's own runtime; never dropped (dropping a runtime inside another panics).
    rt: std::mem::ManuallyDrop<tokio::runtime::Runtime>,
    client: Client,
    settings: EtcdSettings,
    role: Arc<Role>,
    leadership: Mutex<Option<Leadership>>,
    /// The last entry in the local copy.
    applied: AtomicU64,
    /// Held while an entry is checked and applied (the follower and a new leader's catch-up
    /// never apply the same entry twice).
    applying: Mutex<()>,
    /// A snapshot is due (the leader's snapshot task waits on it).
    snapshot_due: tokio::sync::Notify,
    /// An append found the election key gone: this replica must stop.
    deposed: AtomicBool,
}

impl std::fmt::Debug for EtcdLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdLog")
            .field("endpoints", &self.settings.endpoints)
            .field("prefix", &self.settings.prefix)
            .field("applied", &self.applied())
            .finish_non_exhaustive()
    }
}

impl EtcdLog {
    /// Connects to etcd (on a runtime of its own).
    ///
    /// # Errors
    /// [`HaError`] naming the endpoints or the TLS file.
    pub async fn connect(settings: EtcdSettings, role: Arc<Role>) -> Result<Arc<Self>, HaError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("etcd-log")
            .enable_all()
            .build()
            .map_err(|e| HaError::Unavailable(format!("cannot start etcd's runtime: {e}")))?;
        let options = connect_options(&settings)?;
        let endpoints = settings.endpoints.clone();
        let client = rt
            .spawn(async move { Client::connect(endpoints, Some(options)).await })
            .await
            .map_err(|e| HaError::Unavailable(e.to_string()))?
            .map_err(|source| HaError::Etcd {
                endpoints: settings.endpoints.join(","),
                what: "connecting",
                source,
            })?;
        Ok(Arc::new(Self {
            rt: std::mem::ManuallyDrop::new(rt),
            client,
            settings,
            role,
            leadership: Mutex::new(None),
            applied: AtomicU64::new(0),
            applying: Mutex::new(()),
            snapshot_due: tokio::sync::Notify::new(),
            deposed: AtomicBool::new(false),
        }))
    }

    fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.settings.prefix.trim_end_matches('/'))
    }

    fn log_key(&self, index: u64) -> String {
        self.key(&format!("log/{index:020}"))
    }

    fn etcd(&self, what: &'static str) -> impl FnOnce(etcd_client::Error) -> HaError + '_ {
        move |source| HaError::Etcd {
            endpoints: self.settings.endpoints.join(","),
            what,
            source,
        }
    }

    /// Runs `fut` on etcd's runtime and waits for it from async code.
    async fn call<T, F>(&self, fut: F) -> Result<T, HaError>
    where
        F: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        tokio::time::timeout(self.settings.timeout, self.rt.spawn(fut))
            .await
            .map_err(|_| {
                HaError::Unavailable(format!(
                    "no answer within {} s",
                    self.settings.timeout.as_secs()
                ))
            })?
            .map_err(|e| HaError::Unavailable(e.to_string()))
    }

    /// Runs `fut` on etcd's runtime and waits for it from blocking code.
    fn call_blocking<T, F>(&self, fut: F) -> Result<T, String>
    where
        F: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv_timeout(self.settings.timeout).map_err(|_| {
            format!(
                "etcd did not answer within {} s",
                self.settings.timeout.as_secs()
            )
        })
    }

    /// The last entry in the local copy.
    #[must_use]
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::SeqCst)
    }

    /// Rebuilds the local copy at `path` from etcd (the latest snapshot, then every entry
    /// after it) and opens it with this log as its replicator. Returns the store and the etcd
    /// revision the copy is current at.
    ///
    /// # Errors
    /// [`HaError`]: etcd unreachable, a corrupt snapshot or entry (naming the key), a local
    /// file that cannot be written.
    pub async fn load(self: &Arc<Self>, path: &Path) -> Result<(Store, i64), HaError> {
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(HaError::Io {
                        path: file.into(),
                        source,
                    });
                }
            }
        }
        let mut from = 0;
        if let Some((meta, bytes)) = self.read_snapshot().await? {
            let mut db = Vec::new();
            flate2::read::GzDecoder::new(bytes.as_slice())
                .read_to_end(&mut db)
                .map_err(|e| HaError::Corrupt {
                    key: self.key("snapshot"),
                    reason: format!("not a gzip stream: {e}"),
                })?;
            write_private(path, &db)?;
            from = meta.index;
            tracing::info!(
                index = meta.index,
                bytes = db.len(),
                "replica copy loaded from the snapshot"
            );
        }
        let sink: Arc<dyn Replicator> = Arc::clone(self) as Arc<dyn Replicator>;
        let store = Store::open_replicated(path, sink)?;
        self.applied.store(from, Ordering::SeqCst);
        let revision = self.catch_up(&store).await?;
        Ok((store, revision))
    }

    /// Applies every entry after the local copy's; returns the revision read at.
    async fn catch_up(&self, store: &Store) -> Result<i64, HaError> {
        let start = self.log_key(self.applied() + 1);
        let mut kv = self.client.kv_client();
        let range_end = prefix_end(&self.key("log/"));
        let resp = self
            .call(async move {
                kv.get(start, Some(GetOptions::new().with_range(range_end)))
                    .await
            })
            .await?
            .map_err(self.etcd("reading the log"))?;
        let revision = resp.header().map_or(0, |h| h.revision());
        for kv in resp.kvs() {
            let entry = self.parse(kv.key(), kv.value())?;
            self.apply(store, &entry)?;
        }
        Ok(revision)
    }

    fn parse(&self, key: &[u8], value: &[u8]) -> Result<Entry, HaError> {
        serde_json::from_slice(value).map_err(|e| HaError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: format!("not a log entry: {e}"),
        })
    }

    /// Applies `entry` if it is the next one; an old one is skipped; a gap is an error.
    fn apply(&self, store: &Store, entry: &Entry) -> Result<(), HaError> {
        let _guard = self.applying.lock().unwrap_or_else(|p| p.into_inner());
        // The leader's own entries are in its copy already (it wrote them before it
        // committed): one reaching the follow loop still draining after the election must
        // not be applied again, nor move `applied` back under a write in flight.
        if self.role.is_leader() {
            return Ok(());
        }
        let applied = self.applied();
        if entry.index <= applied {
            return Ok(());
        }
        if entry.index != applied + 1 {
            return Err(HaError::Corrupt {
                key: self.log_key(entry.index),
                reason: format!(
                    "the copy is at entry {applied} and the log goes on at {}: entries are missing \
                     (compacted by a snapshot); the replica must reload",
                    entry.index
                ),
            });
        }
        let supported = crate::store::schema_version();
        if entry.schema > supported {
            return Err(HaError::Corrupt {
                key: self.log_key(entry.index),
                reason: format!(
                    "written by a hub with schema {}, this one knows {supported}: upgrade this \
                     replica",
                    entry.schema
                ),
            });
        }
        store.apply_changes(entry.index, &entry.changes)?;
        self.applied.fetch_max(entry.index, Ordering::SeqCst);
        Ok(())
    }

    /// Follows the log while this replica is a follower, applying each new entry. Returns
    /// when the replica leads; exits the process when the copy cannot be kept current.
    pub async fn follow(self: Arc<Self>, store: Store, revision: i64) {
        let mut watch_client = self.client.watch_client();
        let prefix = self.key("log/");
        let opened = self
            .call(async move {
                watch_client
                    .watch(
                        prefix,
                        Some(
                            WatchOptions::new()
                                .with_prefix()
                                .with_start_revision(revision + 1),
                        ),
                    )
                    .await
            })
            .await;
        let mut stream = match opened {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return self.restart(&format!("cannot watch the log: {e}")),
            Err(e) => return self.restart(&format!("cannot watch the log: {e}")),
        };
        loop {
            if self.role.is_leader() {
                return;
            }
            let message = tokio::time::timeout(Duration::from_secs(1), stream.message()).await;
            let response = match message {
                Err(_) => continue,
                Ok(Ok(Some(r))) => r,
                Ok(Ok(None)) => return self.restart("etcd ended the log watch"),
                Ok(Err(e)) => return self.restart(&format!("the log watch failed: {e}")),
            };
            for event in response.events() {
                if self.role.is_leader() {
                    return;
                }
                if event.event_type() != EventType::Put {
                    continue;
                }
                let Some(kv) = event.kv() else { continue };
                let applied = self
                    .parse(kv.key(), kv.value())
                    .and_then(|entry| self.apply(&store, &entry));
                if let Err(e) = applied {
                    return self.restart(&e.to_string());
                }
            }
        }
    }

    /// Logs why and exits for systemd to start the replica again from etcd.
    fn restart(&self, why: &str) {
        tracing::error!(replica = %self.role.replica, "{why}: exiting to rebuild the copy from etcd");
        std::process::exit(EXIT_RESTART);
    }

    /// Keeps the leader's address current on a follower (for its refusals).
    pub async fn observe_leader(self: Arc<Self>) {
        loop {
            let mut election = self.client.election_client();
            let name = self.key("election");
            if let Ok(Ok(resp)) = self.call(async move { election.leader(name).await }).await
                && let Some(kv) = resp.kv()
            {
                self.role
                    .set_leader_address(&String::from_utf8_lossy(kv.value()));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Campaigns until this replica leads: takes a lease (kept alive from then on; a lost
    /// lease exits the process), waits for the election, applies the entries it has not
    /// applied yet, and writes a fresh snapshot. From its return, this replica writes.
    ///
    /// # Errors
    /// [`HaError`] when etcd refuses the lease or the election.
    pub async fn lead(self: &Arc<Self>, store: &Store, advertise: &str) -> Result<(), HaError> {
        let ttl = i64::try_from(self.settings.lease.as_secs().max(2)).unwrap_or(10);
        let mut lease_client = self.client.lease_client();
        let lease = self
            .call(async move { lease_client.grant(ttl, None).await })
            .await?
            .map_err(self.etcd("granting the leader lease"))?
            .id();
        tokio::spawn(Arc::clone(self).keep_alive(lease));
        // The campaign waits as long as another replica leads, but each request times out
        // (the client's timeout): campaigning again with the same lease picks up the same
        // election key and goes on waiting. A lease that cannot be kept ends the process.
        let won = loop {
            let mut election = self.client.election_client();
            let name = self.key("election");
            let value = advertise.to_owned();
            let attempt = self
                .rt
                .spawn(async move { election.campaign(name, value, lease).await })
                .await
                .map_err(|e| HaError::Unavailable(e.to_string()))?;
            match attempt {
                Ok(won) => break won,
                Err(e) => {
                    tracing::debug!(error = %e, "campaign request ended; campaigning on");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let key = won.leader().ok_or_else(|| HaError::Corrupt {
            key: self.key("election"),
            reason: "etcd elected this replica without a leader key".to_owned(),
        })?;
        let leadership = Leadership {
            key: key.key().to_vec(),
            rev: key.rev(),
        };
        // The previous leader's key is gone, so its appends fail from now on: whatever the
        // log holds is final. Apply it, then write.
        self.catch_up(store).await?;
        if let Ok(mut l) = self.leadership.lock() {
            *l = Some(leadership);
        }
        self.role.set_leader(true);
        self.role.set_leader_address(advertise);
        tracing::info!(replica = %self.role.replica, applied = self.applied(), "this hub replica is the leader");
        self.snapshot(store).await?;
        Ok(())
    }

    async fn keep_alive(self: Arc<Self>, lease: i64) {
        let mut lease_client = self.client.lease_client();
        let opened = self
            .call(async move { lease_client.keep_alive(lease).await })
            .await;
        let (mut keeper, mut stream) = match opened {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return self.restart(&format!("cannot keep the lease alive: {e}")),
            Err(e) => return self.restart(&format!("cannot keep the lease alive: {e}")),
        };
        let every = (self.settings.lease / 3).max(Duration::from_millis(500));
        let mut last_ok = std::time::Instant::now();
        loop {
            tokio::time::sleep(every).await;
            if self.deposed.load(Ordering::SeqCst) {
                return self.restart("the election key is gone: this replica no longer leads");
            }
            let sent = keeper.keep_alive().await.is_ok();
            let answered = sent
                && matches!(
                    tokio::time::timeout(every, stream.message()).await,
                    Ok(Ok(Some(r))) if r.ttl() > 0
                );
            if answered {
                last_ok = std::time::Instant::now();
            } else if last_ok.elapsed() >= self.settings.lease {
                return self.restart("the leader lease expired");
            }
        }
    }

    /// Writes a snapshot of `store` (the leader only), then deletes the log entries and the
    /// older snapshot it replaces.
    ///
    /// # Errors
    /// [`HaError`]: the copy cannot be read, etcd refuses.
    pub async fn snapshot(&self, store: &Store) -> Result<(), HaError> {
        let Some(lead) = self.leadership.lock().ok().and_then(|l| l.clone()) else {
            return Ok(());
        };
        let dir = store
            .path()
            .and_then(Path::parent)
            .map_or_else(std::env::temp_dir, Path::to_path_buf);
        let tmp = dir.join("replica.snapshot.tmp");
        let index = store.copy_to(&tmp, || self.applied())?;
        let db = std::fs::read(&tmp).map_err(|source| HaError::Io {
            path: tmp.clone(),
            source,
        })?;
        let _ = std::fs::remove_file(&tmp);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&db).map_err(|source| HaError::Io {
            path: tmp.clone(),
            source,
        })?;
        let bytes = gz.finish().map_err(|source| HaError::Io {
            path: tmp.clone(),
            source,
        })?;
        let chunks: Vec<Vec<u8>> = bytes.chunks(CHUNK).map(<[u8]>::to_vec).collect();
        let meta = SnapshotMeta {
            index,
            schema: crate::store::schema_version(),
            chunks: u32::try_from(chunks.len()).unwrap_or(u32::MAX),
            sha256: hex(&sha2::Sha256::digest(&bytes)),
        };
        let fence = || Compare::create_revision(lead.key.clone(), CompareOp::Equal, lead.rev);
        for (i, chunk) in chunks.into_iter().enumerate() {
            let key = self.key(&format!("snapshot/{index:020}/{i:04}"));
            let mut kv = self.client.kv_client();
            let txn = Txn::new()
                .when([fence()])
                .and_then([TxnOp::put(key, chunk, None)]);
            let done = self
                .call(async move { kv.txn(txn).await })
                .await?
                .map_err(self.etcd("writing a snapshot chunk"))?;
            if !done.succeeded() {
                self.deposed.store(true, Ordering::SeqCst);
                return Err(HaError::Unavailable(
                    "lost the leadership while writing a snapshot".to_owned(),
                ));
            }
        }
        let previous = self.read_meta().await?;
        let meta_json = serde_json::to_vec(&meta).unwrap_or_default();
        let mut kv = self.client.kv_client();
        let txn = Txn::new().when([fence()]).and_then([TxnOp::put(
            self.key("snapshot/meta"),
            meta_json,
            None,
        )]);
        let done = self
            .call(async move { kv.txn(txn).await })
            .await?
            .map_err(self.etcd("writing the snapshot's description"))?;
        if !done.succeeded() {
            self.deposed.store(true, Ordering::SeqCst);
            return Err(HaError::Unavailable(
                "lost the leadership while writing a snapshot".to_owned(),
            ));
        }
        // What the snapshot replaces: the entries it holds and the previous snapshot.
        let mut kv = self.client.kv_client();
        let from = self.key("log/");
        let to = self.log_key(index + 1);
        let _ = self
            .call(async move {
                kv.delete(from, Some(DeleteOptions::new().with_range(to)))
                    .await
            })
            .await;
        if let Some(old) = previous.filter(|p| p.index != index) {
            let mut kv = self.client.kv_client();
            let old_prefix = self.key(&format!("snapshot/{:020}/", old.index));
            let _ = self
                .call(async move {
                    kv.delete(old_prefix, Some(DeleteOptions::new().with_prefix()))
                        .await
                })
                .await;
        }
        tracing::info!(
            index,
            bytes = db.len(),
            "snapshot of the hub state written to etcd"
        );
        Ok(())
    }

    /// The leader's snapshot task: a snapshot every [`SNAPSHOT_EVERY`] entries.
    pub async fn snapshots(self: Arc<Self>, store: Store) {
        loop {
            self.snapshot_due.notified().await;
            if let Err(e) = self.snapshot(&store).await {
                tracing::warn!(error = %e, "snapshot not written (the log keeps every entry meanwhile)");
            }
        }
    }

    async fn read_meta(&self) -> Result<Option<SnapshotMeta>, HaError> {
        let mut kv = self.client.kv_client();
        let key = self.key("snapshot/meta");
        let resp = self
            .call(async move { kv.get(key, None).await })
            .await?
            .map_err(self.etcd("reading the snapshot's description"))?;
        resp.kvs()
            .first()
            .map(|kv| {
                serde_json::from_slice(kv.value()).map_err(|e| HaError::Corrupt {
                    key: self.key("snapshot/meta"),
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    async fn read_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, HaError> {
        let Some(meta) = self.read_meta().await? else {
            return Ok(None);
        };
        let mut kv = self.client.kv_client();
        let prefix = self.key(&format!("snapshot/{:020}/", meta.index));
        let resp = self
            .call(async move { kv.get(prefix, Some(GetOptions::new().with_prefix())).await })
            .await?
            .map_err(self.etcd("reading the snapshot"))?;
        let mut bytes = Vec::new();
        for kv in resp.kvs() {
            bytes.extend_from_slice(kv.value());
        }
        let sum = hex(&sha2::Sha256::digest(&bytes));
        if resp.kvs().len() != meta.chunks as usize || sum != meta.sha256 {
            return Err(HaError::Corrupt {
                key: self.key(&format!("snapshot/{:020}/", meta.index)),
                reason: format!(
                    "{} of {} chunks, SHA-256 {sum} where the description says {}",
                    resp.kvs().len(),
                    meta.chunks,
                    meta.sha256
                ),
            });
        }
        Ok(Some((meta, bytes)))
    }

    /// Writes `db` (a whole SQLite database) as the state of an empty hub prefix, for
    /// `rke2-hub migrate --to etcd`; refuses when the prefix already holds a hub's state.
    ///
    /// # Errors
    /// [`HaError`]: etcd unreachable or the prefix not empty.
    pub async fn seed(&self, db: &[u8]) -> Result<(), HaError> {
        let mut kv = self.client.kv_client();
        let prefix = self.key("");
        let existing = self
            .call(async move {
                kv.get(
                    prefix,
                    Some(GetOptions::new().with_prefix().with_count_only()),
                )
                .await
            })
            .await?
            .map_err(self.etcd("looking for an existing hub state"))?
            .count();
        if existing > 0 {
            return Err(HaError::Corrupt {
                key: self.key(""),
                reason: format!(
                    "already holds a hub's state ({existing} keys); migrate only into an empty \
                     prefix (or choose another with --etcd-prefix)"
                ),
            });
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let _ = gz.write_all(db);
        let bytes = gz
            .finish()
            .map_err(|e| HaError::Unavailable(e.to_string()))?;
        let chunks: Vec<Vec<u8>> = bytes.chunks(CHUNK).map(<[u8]>::to_vec).collect();
        let meta = SnapshotMeta {
            index: 0,
            schema: crate::store::schema_version(),
            chunks: u32::try_from(chunks.len()).unwrap_or(u32::MAX),
            sha256: hex(&sha2::Sha256::digest(&bytes)),
        };
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut kv = self.client.kv_client();
            let key = self.key(&format!("snapshot/{:020}/{i:04}", 0));
            self.call(async move { kv.put(key, chunk, None).await })
                .await?
                .map_err(self.etcd("writing the snapshot"))?;
        }
        let mut kv = self.client.kv_client();
        let key = self.key("snapshot/meta");
        let json = serde_json::to_vec(&meta).unwrap_or_default();
        self.call(async move { kv.put(key, json, None).await })
            .await?
            .map_err(self.etcd("writing the snapshot's description"))?;
        Ok(())
    }
}

impl Replicator for EtcdLog {
    fn ship(&self, changes: Vec<Change>) -> Result<(), String> {
        let Some(lead) = self.leadership.lock().ok().and_then(|l| l.clone()) else {
            return Err(self
                .role
                .refusal()
                .unwrap_or_else(|| "this hub replica does not hold the leadership".to_owned()));
        };
        let index = self.applied() + 1;
        let entry = Entry {
            index,
            schema: crate::store::schema_version(),
            changes,
        };
        let value = serde_json::to_vec(&entry).map_err(|e| e.to_string())?;
        let key = self.log_key(index);
        let txn = Txn::new()
            .when([
                Compare::create_revision(lead.key.clone(), CompareOp::Equal, lead.rev),
                Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            ])
            .and_then([TxnOp::put(key, value, None)]);
        let mut kv = self.client.kv_client();
        let done = self
            .call_blocking(async move { kv.txn(txn).await })?
            .map_err(|e| format!("appending log entry {index} to etcd: {e}"))?;
        if !done.succeeded() {
            self.deposed.store(true, Ordering::SeqCst);
            self.role.set_leader(false);
            return Err(format!(
                "log entry {index} refused: this replica's election key is gone (another \
                 replica leads)"
            ));
        }
        self.applied.store(index, Ordering::SeqCst);
        if index.is_multiple_of(SNAPSHOT_EVERY) {
            self.snapshot_due.notify_one();
        }
        Ok(())
    }
}

/// The key just after every key starting with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), HaError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| HaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

fn connect_options(settings: &EtcdSettings) -> Result<ConnectOptions, HaError> {
    let mut options = ConnectOptions::new()
        .with_timeout(settings.timeout)
        .with_connect_timeout(settings.timeout);
    if let Some(ca) = &settings.ca {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| HaError::Io {
                path: path.clone(),
                source,
            })
        };
        let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let (Some(cert), Some(key)) = (&settings.cert, &settings.key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        options = options.with_tls(tls);
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_range_ends_after_every_key_with_the_prefix() {
        assert_eq!(prefix_end("/a/log/"), b"/a/log0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
