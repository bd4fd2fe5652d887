//! The hub's state in etcd, for several hub replicas (`store = "etcd"`): each replica keeps a
//! local SQLite copy (`<state_dir>/replica.db`, a cache rebuilt from etcd at every start)
//! that the same store code reads and writes; every transaction's row changes
//! ([`crate::store::replicate`]) are appended to a log in etcd before SQLite commits them.
//! One replica is the leader (etcd's election, on a lease): only it writes, runs the plan
//! engines and takes agents; the others replay the log as it grows, serve the read-only admin
//! calls, and one of them takes over within a lease's time after the leader is gone.
//!
//! Why a log of row changes rather than a key per record: the store's 70-odd methods and
//! their transactions stay exactly as they are (one code path for both stores), every write
//! the plan engine relies on is still one atomic transaction, and each log append is a
//! single etcd transaction fenced by the leader's election key, so a deposed leader that has
//! not noticed yet can never write.
//!
//! Keys under the prefix (default `/rke2ops/hub`):
//! - `election`: etcd's election; its value is the leader's advertised address;
//! - `log/<index>` (20 digits): one entry, `{"index", "schema", "changes"}` as JSON;
//! - `snapshot/meta` and `snapshot/<index>/<chunk>`: the latest snapshot of the whole
//!   database (gzip, 1 MiB chunks), written by each new leader and every
//!   [`SNAPSHOT_EVERY`] entries; log entries it covers are deleted then.
//!
//! What a replica does when it cannot keep up: a follower that finds a gap in the log (it
//! lagged behind a snapshot) and a leader that loses its lease exit (code 75); systemd starts
//! them again, and a fresh start rebuilds the copy from etcd. That is the controllers'
//! "leader election lost" rule: never go on with a state that may be stale.

mod log;
pub mod migrate;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use log::{EtcdLog, EtcdSettings, HaError};

/// The replica's local copy in the state dir (a cache: rebuilt from etcd at every start).
pub const REPLICA_DB: &str = "replica.db";

/// Entries between two snapshots (each snapshot lets etcd forget the entries before it).
pub const SNAPSHOT_EVERY: u64 = 2000;

/// Exit code of a replica that must start over (lost lease, gap in the log).
pub const EXIT_RESTART: i32 = 75;

/// This replica's role, read by the gRPC services (followers refuse writes and agents) and
/// the metrics.
#[derive(Debug)]
pub struct Role {
    /// This replica's name (logs, metrics, refusals).
    pub replica: String,
    leader: AtomicBool,
    /// The leader's advertised address, as last seen (empty: unknown).
    leader_address: std::sync::Mutex<String>,
    /// Whether the hub is replicated at all (SQLite alone: always the leader).
    pub replicated: bool,
}

impl Role {
    /// A hub on its own (SQLite): always the leader.
    #[must_use]
    pub fn single() -> Arc<Self> {
        Arc::new(Self {
            replica: String::new(),
            leader: AtomicBool::new(true),
            leader_address: std::sync::Mutex::default(),
            replicated: false,
        })
    }

    /// A replica that starts as a follower.
    #[must_use]
    pub fn replica(name: &str) -> Arc<Self> {
        Arc::new(Self {
            replica: name.to_owned(),
            leader: AtomicBool::new(false),
            leader_address: std::sync::Mutex::default(),
            replicated: true,
        })
    }

    /// Whether this replica leads now.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    pub(crate) fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::SeqCst);
    }

    /// The leader's advertised address, if known.
    #[must_use]
    pub fn leader_address(&self) -> String {
        self.leader_address
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    pub(crate) fn set_leader_address(&self, address: &str) {
        if let Ok(mut a) = self.leader_address.lock() {
            address.clone_into(&mut a);
        }
    }

    /// Why this replica refuses a write or an agent, when it is not the leader.
    #[must_use]
    pub fn refusal(&self) -> Option<String> {
        if self.is_leader() {
            return None;
        }
        let leader = self.leader_address();
        Some(if leader.is_empty() {
            format!(
                "hub replica {} is a follower and no leader is elected yet; try again shortly",
                self.replica
            )
        } else {
            format!(
                "hub replica {} is a follower; the leader is at {leader}",
                self.replica
            )
        })
    }
}

/// How long a leader's lease lives without a keep-alive (a failover takes about this long).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
