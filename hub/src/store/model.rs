//! The store's domain types: plain Rust values, serializable for `--output json`. The gRPC
//! conversion layer maps wire messages onto these; nothing here knows about prost.
//!
//! Timestamps are kept to the second (the store holds Unix seconds) and serialize as RFC 3339.

use serde::Serialize;
use time::OffsetDateTime;

/// One node of the fleet as the hub last heard of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRecord {
    /// The node's name: the CN of its client certificate, unique in the fleet.
    pub name: String,
    /// `"server"` or `"agent"`, from the node's last hello.
    pub role: String,
    /// The RKE2 version the node runs, from its last hello (e.g. `v1.31.4+rke2r1`).
    pub rke2_version: String,
    /// The version of the node's `rke2-node-agent`, from its last hello.
    pub agent_version: String,
    /// The RKE2 unit's state from the last status (`active`, `failed`, ...), `unknown` until the
    /// first status arrives.
    pub service_state: String,
    /// The worst certificate status on the node in RKE2's words (`OK`, `WARNING`, `EXPIRED`,
    /// `NOT YET VALID`); `None` until the first status, or when the node has no certificates.
    pub worst_status: Option<String>,
    /// The last moment a restart of the RKE2 service still renews the node's certificates
    /// before one expires; `None` when unknown.
    #[serde(with = "time::serde::rfc3339::option")]
    pub renewal_deadline: Option<OffsetDateTime>,
    /// Whether the node's agent has a live stream to the hub.
    pub online: bool,
    /// When `online` last changed (the first hello for a node that never dropped).
    #[serde(with = "time::serde::rfc3339")]
    pub online_changed_at: OffsetDateTime,
    /// When the hub first heard from the node.
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    /// The last hello, status or certificate snapshot from the node.
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// When the node's current certificate snapshot was received; `None` before the first.
    #[serde(with = "time::serde::rfc3339::option")]
    pub certificates_at: Option<OffsetDateTime>,
    /// The RKE2 cluster the node belongs to (fixed at enrollment; `default` when its agent
    /// names none).
    pub cluster: String,
}

/// One certificate of a node's latest snapshot: one row of the agent's `check` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertRow {
    /// The file the certificate was read from, as the agent saw it.
    pub path: String,
    /// The certificate's position in the file's PEM bundle (0 = first).
    pub index: u32,
    /// The subject distinguished name.
    pub subject: String,
    /// The issuer distinguished name.
    pub issuer: String,
    /// The serial number, hex.
    pub serial: String,
    /// Usages in RKE2's words (`CertSign`, `ServerAuth`, `ClientAuth`).
    pub usages: Vec<String>,
    /// Whether the certificate is a CA.
    pub is_ca: bool,
    /// Subject alternative names (DNS names and IP addresses).
    pub sans: Vec<String>,
    /// Start of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// RKE2's status word when the agent reported it (`OK`, `WARNING`, `EXPIRED`,
    /// `NOT YET VALID`).
    pub status: String,
}

/// A certificate file the agent could not read or parse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileErrorRow {
    /// The file.
    pub path: String,
    /// Why it could not be read (e.g. `empty`, `unparsable PEM`).
    pub reason: String,
}

/// A join token as operators may see it: never its secret, never the secret's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    /// The token's public id (the part of the join token before the secret).
    pub id: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it stops being accepted.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When a node consumed it; `None` while unused.
    #[serde(with = "time::serde::rfc3339::option")]
    pub used_at: Option<OffsetDateTime>,
    /// The node that consumed it.
    pub used_by: Option<String>,
    /// Who created it (admin certificate CN or `uid:N` on the local socket).
    pub created_by: String,
    /// The only node it may enroll (`token create --node`); `None`: any name not enrolled.
    pub node: Option<String>,
    /// Whether it may replace an enrolled node's certificate (`--replace`).
    pub allow_replace: bool,
    /// The role it fixes for the node it enrolls (`--role`).
    pub role: Option<String>,
}

/// Whose certificate: a node's or an admin's. The same name may be both (they are
/// different certificates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialKind {
    /// A node agent's client certificate (CN = node name).
    Node,
    /// An admin client certificate (CN = `admin:NAME`).
    Admin,
}

impl CredentialKind {
    /// The store's word.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::Admin => "admin",
        }
    }

    /// `node NAME` or `admin NAME`: how errors and the audit log name the holder.
    #[must_use]
    pub fn who(self, name: &str) -> String {
        format!("{} {name}", self.as_str())
    }
}

/// The certificate the hub accepts for one node or admin name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityRecord {
    /// Node or admin.
    pub kind: CredentialKind,
    /// The node name, or the admin name (without `admin:`).
    pub name: String,
    /// Serial (lowercase hex) of the one certificate accepted for the name; `None` for a node
    /// enrolled before the hub recorded serials, until it next presents its certificate.
    pub serial: Option<String>,
    /// A node's enrolled role (`server`/`agent`); `None` until enrollment or the first hello
    /// fixes it, and for admins.
    pub role: Option<String>,
    /// When the current certificate was recorded.
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// End of the current certificate's validity, when known.
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_after: Option<OffsetDateTime>,
    /// A node's certificate before its last renewal, accepted until the renewed one is first
    /// presented.
    pub previous_serial: Option<String>,
}

/// What `nodes remove` did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemovedNode {
    /// The node.
    pub name: String,
    /// Its enrolled role, if known.
    pub role: Option<String>,
    /// The serial revoked (none for a node whose serial was never recorded).
    pub revoked_serial: Option<String>,
    /// Whether it was in the inventory (had said hello).
    pub in_inventory: bool,
    /// Certificates of its last snapshot that were dropped with it.
    pub certificates: u32,
}

/// One entry of the audit log of admin actions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Position in the log; strictly increasing, never reused.
    pub id: i64,
    /// When the action was recorded.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who did it: admin certificate CN or `uid:N` on the local socket.
    pub actor: String,
    /// What was done, e.g. `token.create`, `plan.create`.
    pub action: String,
    /// Free-form detail (never a secret).
    pub detail: String,
}
