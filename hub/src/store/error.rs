//! The store's errors. Every variant names what it was working on (the database file, the
//! table, the node or the token id) so a log line is enough to find the failing row. None of them
//! carries a secret or a secret's hash.

use std::path::PathBuf;

use time::OffsetDateTime;

/// A failure of the hub's store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be created, opened or configured.
    #[error("opening the hub database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },

    /// The database file (or a file SQLite keeps beside it) could not be created or restricted
    /// to mode 0600.
    #[error("creating or restricting the hub database file {path} (mode 0600): {source}")]
    Permissions {
        /// The file whose mode could not be set.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A connection setting (journal mode, synchronous, foreign keys) was refused or did not take.
    #[error("setting PRAGMA {pragma} on the hub database: {reason}")]
    Pragma {
        /// The pragma's name.
        pragma: &'static str,
        /// What went wrong.
        reason: String,
    },

    /// Applying schema migration `version` failed; the migration was rolled back.
    #[error("applying hub database migration {version}: {source}")]
    Migrate {
        /// The migration's number (`PRAGMA user_version` after it).
        version: u32,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },

    /// The database was written by a newer hub: this build does not know its schema.
    #[error(
        "the hub database is at schema version {found}, newer than this hub's {supported}; \
         run a newer rke2-hub or restore a backup"
    )]
    SchemaTooNew {
        /// `PRAGMA user_version` found in the file.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },

    /// A statement on `table` failed.
    #[error("{action} in table {table}: {source}")]
    Sql {
        /// The table the statement works on.
        table: &'static str,
        /// What the statement was for, e.g. "listing nodes".
        action: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },

    /// A statement about one node failed.
    #[error("{action} for node {node} in table {table}: {source}")]
    NodeSql {
        /// The table the statement works on.
        table: &'static str,
        /// The node's name.
        node: String,
        /// What the statement was for, e.g. "replacing the certificate snapshot".
        action: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },

    /// A statement about one plan failed.
    #[error("{action} for plan {plan}: {source}")]
    PlanSql {
        /// The plan's id.
        plan: i64,
        /// What the statement was for.
        action: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },

    /// Another plan is still active; one plan at a time keeps "one node at a time" true.
    #[error(
        "plan {id} is still {state} in this cluster; finish, resume or abort it before creating \
         another"
    )]
    PlanActive {
        /// The active plan.
        id: i64,
        /// Its state.
        state: String,
    },

    /// No plan with this id.
    #[error("no plan {0}")]
    UnknownPlan(i64),

    /// A statement about one rollout failed.
    #[error("{action} for rollout {rollout}: {source}")]
    RolloutSql {
        /// The rollout's id (0 before it has one).
        rollout: i64,
        /// What the statement was for.
        action: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },

    /// A change from the replicated log does not fit this copy, or the capture failed.
    #[error("replicated log entry {entry}: {reason}")]
    Replicate {
        /// The log entry (0: not about one entry).
        entry: u64,
        /// What did not fit.
        reason: String,
    },

    /// No rollout with this id.
    #[error("no rollout {0}")]
    UnknownRollout(i64),

    /// A statement about one join token failed.
    #[error("{action} for join token {id} in table join_tokens: {source}")]
    TokenSql {
        /// The token's public id.
        id: String,
        /// What the statement was for.
        action: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },

    /// The node is not in the inventory (it has never said hello).
    #[error("node {node} is not in the hub's inventory (no hello received from it)")]
    UnknownNode {
        /// The node's name.
        node: String,
    },

    /// Nothing is enrolled under this name (for `nodes remove`, `admin-cert revoke`, a
    /// renewal).
    #[error("{who} is not enrolled with this hub (no certificate recorded)")]
    NotEnrolled {
        /// `node NAME` or `admin NAME`.
        who: String,
    },

    /// The certificate of a name changed while a renewal was using the previous one (another
    /// renewal or a `--replace` enrollment won); nothing was changed.
    #[error(
        "certificate serial {serial} of {who} is no longer current (renewed or replaced \
         meanwhile); nothing was changed"
    )]
    CredentialChanged {
        /// `node NAME` or `admin NAME`.
        who: String,
        /// The serial the caller presented.
        serial: String,
    },

    /// An admin name already has a current certificate and replacing it was not asked for.
    #[error(
        "admin {name} already has certificate serial {serial}; pass --replace to supersede it \
         (its holder is then refused), or `rke2-hub admin-cert revoke {name}` first"
    )]
    AdminCertExists {
        /// The admin name.
        name: String,
        /// Its current serial.
        serial: String,
    },

    /// The node is part of a plan that is still active; removing it would pull it from under
    /// the plan.
    #[error(
        "node {node} is in plan {plan}, which is still {state}; finish or abort the plan first"
    )]
    NodeInActivePlan {
        /// The node.
        node: String,
        /// The plan's id.
        plan: i64,
        /// The plan's state.
        state: String,
    },

    /// A join token with this id already exists.
    #[error("join token {id} already exists")]
    DuplicateToken {
        /// The token's public id.
        id: String,
    },

    /// A stored value could not be read back (the file was edited by hand, or a bug wrote it).
    #[error("reading {column} of {key} in table {table}: {reason}")]
    Corrupt {
        /// The table the row is in.
        table: &'static str,
        /// The row's key (node name, node/path, token id, audit id).
        key: String,
        /// The column.
        column: &'static str,
        /// What is wrong with the stored value.
        reason: String,
    },

    /// A value cannot be stored as given (e.g. a timestamp outside what the store can hold).
    #[error("cannot store {column} = {value} in table {table}: {reason}")]
    Invalid {
        /// The table it was for.
        table: &'static str,
        /// The column it was for.
        column: &'static str,
        /// The offending value, printable (never a secret).
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
}

/// Why a join token was refused. Checked in this order, so a caller who does not hold the
/// secret learns only `Unknown` or `Mismatch`, never whether the token was used or expired.
///
/// The hub must not hand these details to the enrolling peer (answer it with one generic
/// refusal); they are for the hub's log and audit trail.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No token has this id.
    #[error("join token {id} is unknown")]
    Unknown {
        /// The id the caller presented.
        id: String,
    },

    /// The secret does not match the token's stored hash.
    #[error("join token {id}: secret does not match")]
    Mismatch {
        /// The token's id.
        id: String,
    },

    /// The token was already used by a node (tokens are single use).
    #[error("join token {id} was already used at {used_at}")]
    AlreadyUsed {
        /// The token's id.
        id: String,
        /// When it was consumed.
        used_at: OffsetDateTime,
    },

    /// The token's lifetime is over.
    #[error("join token {id} expired at {expires_at}")]
    Expired {
        /// The token's id.
        id: String,
        /// When it expired.
        expires_at: OffsetDateTime,
    },

    /// The token is valid but may not enroll this node (bound to another node, or the node
    /// is enrolled and the token does not replace it). Only a holder of the secret gets here.
    #[error(transparent)]
    Refused(#[from] crate::pki::EnrollmentRefusal),

    /// The store itself failed; nothing was consumed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
