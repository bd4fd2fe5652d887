//! Which client certificate the hub still accepts, who may enroll under which name, and where
//! a node's role comes from. Pure decisions over plain data: the store gathers the facts (in
//! one transaction) and the gRPC layer turns a refusal into a status.
//!
//! The model: the hub remembers, per node and per admin name, the serial of the one
//! certificate it issued last (its *current* serial). A certificate that chains to the hub CA
//! is accepted only when its serial is the current one of the name in its CN and was never
//! superseded or revoked. Renewal and `token create --replace` supersede; `nodes remove` and
//! `admin-cert revoke` revoke. Nodes enrolled before the hub recorded serials have a record
//! without one, and the first certificate such a node presents becomes its current one
//! (adoption: the chain is the hub CA's, and the name was already enrolled).
//!
//! A node's role is fixed by its enrollment (the operator's `token create --role`, else the
//! role a replaced enrollment had, else what the enrolling agent claimed) or, when none of
//! those says, by the node's first hello. A later hello never changes it: an agent that claims
//! to be a server is not trusted to become one. When the hub can read Kubernetes, the Node's
//! role labels ([`role_from_node_labels`]) correct the recorded role.

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::error::PkiError;

/// Why a serial stopped being accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationReason {
    /// A newer certificate was issued to the same name (renewal, `--replace`, a new admin
    /// certificate).
    Superseded,
    /// An operator revoked it (`nodes remove`, `admin-cert revoke`).
    Revoked,
}

impl RevocationReason {
    /// The store's word.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Superseded => "superseded",
            Self::Revoked => "revoked",
        }
    }

    /// The store's word back; `None` for anything else.
    #[must_use]
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "superseded" => Some(Self::Superseded),
            "revoked" => Some(Self::Revoked),
            _ => None,
        }
    }
}

/// What the hub knows about a presented serial and the name it claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialFacts {
    /// The name's record: `None` when the name is not enrolled (never, or forgotten);
    /// `Some(None)` for a name enrolled before serials were recorded; `Some(Some(serial))`
    /// with the current serial otherwise.
    pub current: Option<Option<String>>,
    /// The node's certificate before its last renewal, still accepted until the renewed one
    /// is first presented: an agent whose renewal answer was lost on the way still holds
    /// only the old certificate, and must be able to reconnect and renew again.
    pub previous: Option<String>,
    /// When the presented serial was superseded or revoked, and why.
    pub revoked: Option<(RevocationReason, OffsetDateTime)>,
}

/// What to do with a presented certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialVerdict {
    /// It is the current certificate.
    Accept,
    /// The name has no recorded serial yet (enrolled before serials were kept): record this
    /// one as current and accept it.
    Adopt,
    /// Refused, with the reason.
    Refuse(CredentialRefusal),
}

/// Why a certificate is refused. `Display` is the reason given to the caller (it names no
/// serial but the caller's own).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialRefusal {
    /// A newer certificate was issued to the same name.
    #[error(
        "certificate serial {serial} of {who} was superseded at {at} by a newer certificate \
         (renewed, re-enrolled with --replace, or reissued)"
    )]
    Superseded {
        /// `node NAME` or `admin NAME`.
        who: String,
        /// The presented serial.
        serial: String,
        /// When.
        at: OffsetDateTime,
    },
    /// An operator revoked it.
    #[error("certificate serial {serial} of {who} was revoked at {at}")]
    Revoked {
        /// `node NAME` or `admin NAME`.
        who: String,
        /// The presented serial.
        serial: String,
        /// When.
        at: OffsetDateTime,
    },
    /// The name is not enrolled (never, or removed without a revocation record of this
    /// serial).
    #[error("{who} is not enrolled with this hub (removed, or never enrolled); enroll it again")]
    NotEnrolled {
        /// `node NAME` or `admin NAME`.
        who: String,
    },
    /// The name has another current certificate, and this serial is not known as an old one
    /// (e.g. issued by the CA outside the hub).
    #[error("certificate serial {serial} is not the current certificate of {who}")]
    NotCurrent {
        /// `node NAME` or `admin NAME`.
        who: String,
        /// The presented serial.
        serial: String,
    },
}

/// Decides whether the certificate with `serial`, presented for `who` (`node NAME` or
/// `admin NAME`), is accepted. A revocation record wins over everything, so a forgotten
/// name's old certificate stays refused even if the name is enrolled again.
#[must_use]
pub fn judge_credential(who: &str, serial: &str, facts: &CredentialFacts) -> CredentialVerdict {
    if let Some((reason, at)) = facts.revoked {
        let (who, serial) = (who.to_owned(), serial.to_owned());
        return CredentialVerdict::Refuse(match reason {
            RevocationReason::Superseded => CredentialRefusal::Superseded { who, serial, at },
            RevocationReason::Revoked => CredentialRefusal::Revoked { who, serial, at },
        });
    }
    match &facts.current {
        None => CredentialVerdict::Refuse(CredentialRefusal::NotEnrolled {
            who: who.to_owned(),
        }),
        Some(None) => CredentialVerdict::Adopt,
        Some(Some(current)) if current == serial => CredentialVerdict::Accept,
        Some(Some(_)) if facts.previous.as_deref() == Some(serial) => CredentialVerdict::Accept,
        Some(Some(_)) => CredentialVerdict::Refuse(CredentialRefusal::NotCurrent {
            who: who.to_owned(),
            serial: serial.to_owned(),
        }),
    }
}

/// What a join token allows, as `token create` recorded it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenBinding {
    /// The only node name the token may enroll (`--node`); `None`: any name not enrolled yet.
    pub node: Option<String>,
    /// The token may enroll a name that is already enrolled, superseding its certificate
    /// (`--replace`; only with `node`).
    pub replace: bool,
    /// The role the operator fixed (`--role`).
    pub role: Option<String>,
    /// The only cluster the token enrolls into (`--cluster`); `None`: the agent's.
    pub cluster: Option<String>,
}

/// Whether an enrollment creates a name or replaces an enrolled one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollmentKind {
    /// The name was not enrolled.
    New,
    /// The name was enrolled; its certificate is superseded.
    Replace,
}

/// Why a valid token may not enroll this name. Only holders of the token's secret see these
/// (the secret is checked first), so they may name the node and the remedy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollmentRefusal {
    /// The token is bound to another node.
    #[error("join token {id} is bound to node {bound:?} and cannot enroll node {claimed:?}")]
    BoundToOtherNode {
        /// The token's id.
        id: String,
        /// The node it is bound to.
        bound: String,
        /// The node that tried.
        claimed: String,
    },
    /// The name is enrolled and the token does not allow replacing it.
    #[error(
        "node {node:?} is already enrolled; to replace its certificate, enroll it with a token \
         from `rke2-hub token create --node {node} --replace`"
    )]
    AlreadyEnrolled {
        /// The node.
        node: String,
    },
    /// The token is bound to another cluster than the one the agent's config names.
    #[error(
        "join token {id} enrolls into cluster {bound:?}, but node {node:?}'s agent names cluster \
         {claimed:?} (its config's `cluster`)"
    )]
    BoundToOtherCluster {
        /// The token's id.
        id: String,
        /// The node that tried.
        node: String,
        /// The cluster the token is bound to.
        bound: String,
        /// The cluster the agent named.
        claimed: String,
    },
}

/// Whether token `id` with `binding` may enroll `node` into `claimed_cluster` (the agent's).
///
/// # Errors
/// [`EnrollmentRefusal::BoundToOtherCluster`] naming both clusters.
pub fn judge_cluster(
    id: &str,
    binding: &TokenBinding,
    node: &str,
    claimed_cluster: &str,
) -> Result<(), EnrollmentRefusal> {
    match &binding.cluster {
        Some(bound) if bound != claimed_cluster => Err(EnrollmentRefusal::BoundToOtherCluster {
            id: id.to_owned(),
            node: node.to_owned(),
            bound: bound.clone(),
            claimed: claimed_cluster.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// What a hello's cluster claim does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloCluster {
    /// No cluster was fixed yet (a node enrolled before clusters): this hello fixes it.
    Fix(String),
    /// The claim matches the enrolled cluster.
    Matches(String),
    /// The claim differs: the stream is refused (a node never moves between clusters).
    Refuse {
        /// The enrolled cluster.
        fixed: String,
        /// What the hello claimed.
        claimed: String,
    },
}

/// Decides what a hello claiming cluster `claimed` does to a node enrolled in `fixed`.
#[must_use]
pub fn hello_cluster(fixed: Option<&str>, claimed: &str) -> HelloCluster {
    match fixed {
        None => HelloCluster::Fix(claimed.to_owned()),
        Some(fixed) if fixed == claimed => HelloCluster::Matches(fixed.to_owned()),
        Some(fixed) => HelloCluster::Refuse {
            fixed: fixed.to_owned(),
            claimed: claimed.to_owned(),
        },
    }
}

/// Decides whether token `id` with `binding` may enroll `claimed`, which is `enrolled` or not.
///
/// # Errors
/// [`EnrollmentRefusal`] naming the node and what to do.
pub fn judge_enrollment(
    id: &str,
    binding: &TokenBinding,
    claimed: &str,
    enrolled: bool,
) -> Result<EnrollmentKind, EnrollmentRefusal> {
    if let Some(bound) = &binding.node
        && bound != claimed
    {
        return Err(EnrollmentRefusal::BoundToOtherNode {
            id: id.to_owned(),
            bound: bound.clone(),
            claimed: claimed.to_owned(),
        });
    }
    match (enrolled, binding.replace && binding.node.is_some()) {
        (false, _) => Ok(EnrollmentKind::New),
        (true, true) => Ok(EnrollmentKind::Replace),
        (true, false) => Err(EnrollmentRefusal::AlreadyEnrolled {
            node: claimed.to_owned(),
        }),
    }
}

/// The role an enrollment records: the operator's (`token create --role`) first, then the
/// role the replaced enrollment had, then the enrolling agent's claim; `None` leaves it to the
/// first hello.
#[must_use]
pub fn enrolled_role(
    token_role: Option<&str>,
    previous: Option<&str>,
    claimed: Option<&str>,
) -> Option<String> {
    token_role.or(previous).or(claimed).map(str::to_owned)
}

/// What a hello's role claim does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloRole {
    /// No role was fixed yet: this first hello fixes it.
    Fix(String),
    /// The claim matches the fixed role.
    Matches(String),
    /// The claim differs from the fixed role and is ignored (the fixed role stays).
    Ignore {
        /// The fixed role, which stays.
        fixed: String,
        /// What the hello claimed.
        claimed: String,
    },
}

impl HelloRole {
    /// The role the node has after the hello.
    #[must_use]
    pub fn role(&self) -> &str {
        match self {
            Self::Fix(role) | Self::Matches(role) | Self::Ignore { fixed: role, .. } => role,
        }
    }
}

/// Decides what a hello claiming `claimed` does to a node whose role is `fixed`.
#[must_use]
pub fn hello_role(fixed: Option<&str>, claimed: &str) -> HelloRole {
    match fixed {
        None => HelloRole::Fix(claimed.to_owned()),
        Some(fixed) if fixed == claimed => HelloRole::Matches(fixed.to_owned()),
        Some(fixed) => HelloRole::Ignore {
            fixed: fixed.to_owned(),
            claimed: claimed.to_owned(),
        },
    }
}

/// A node's role as its Kubernetes Node's labels say: `server` for an RKE2 server (labelled
/// `node-role.kubernetes.io/control-plane`, `master` or `etcd`, which RKE2 sets on servers and
/// which the NodeRestriction admission plugin forbids a kubelet to set on itself), `agent`
/// otherwise. The hub trusts this over an enrollment's role: it is the cluster's own record.
#[must_use]
pub fn role_from_node_labels(control_plane: bool, etcd: bool) -> &'static str {
    if control_plane || etcd {
        "server"
    } else {
        "agent"
    }
}

/// The serial number of a certificate (DER) as the hub records serials: lowercase hex of the
/// integer's bytes without leading zero bytes (what [`super::SignedCert::serial`] holds for
/// the hub's own certificates).
///
/// # Errors
/// [`PkiError::PeerUnparseable`] for bad DER.
pub fn certificate_serial(cert_der: &[u8]) -> Result<String, PkiError> {
    let (_, cert) = X509Certificate::from_der(cert_der).map_err(|e| PkiError::PeerUnparseable {
        reason: e.to_string(),
    })?;
    Ok(serial_hex(cert.raw_serial()))
}

/// Lowercase hex of a DER integer's bytes, leading zero bytes dropped (one kept for zero).
#[must_use]
pub fn serial_hex(raw: &[u8]) -> String {
    let start = raw
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    hex::encode(raw.get(start..).unwrap_or_default())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap in a test names its line, which is enough
mod tests {
    use time::macros::datetime;

    use super::*;

    const AT: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

    fn facts(current: Option<Option<&str>>, revoked: Option<RevocationReason>) -> CredentialFacts {
        CredentialFacts {
            current: current.map(|c| c.map(str::to_owned)),
            previous: None,
            revoked: revoked.map(|r| (r, AT)),
        }
    }

    #[test]
    fn the_current_serial_is_accepted_and_another_is_refused() {
        let f = facts(Some(Some("aa")), None);
        assert_eq!(
            judge_credential("node n", "aa", &f),
            CredentialVerdict::Accept
        );
        let CredentialVerdict::Refuse(refusal) = judge_credential("node n", "bb", &f) else {
            panic!("accepted");
        };
        assert!(matches!(refusal, CredentialRefusal::NotCurrent { .. }));
        assert!(refusal.to_string().contains("node n"), "{refusal}");
    }

    #[test]
    fn a_revocation_record_wins_even_over_a_matching_or_missing_record() {
        for current in [None, Some(None), Some(Some("aa"))] {
            let verdict = judge_credential(
                "node n",
                "aa",
                &facts(current, Some(RevocationReason::Revoked)),
            );
            assert!(
                matches!(
                    &verdict,
                    CredentialVerdict::Refuse(CredentialRefusal::Revoked { at, .. }) if *at == AT
                ),
                "{verdict:?}"
            );
        }
        let verdict = judge_credential(
            "admin a",
            "aa",
            &facts(Some(Some("bb")), Some(RevocationReason::Superseded)),
        );
        let CredentialVerdict::Refuse(refusal) = verdict else {
            panic!("accepted");
        };
        assert!(refusal.to_string().contains("superseded"), "{refusal}");
        assert!(refusal.to_string().contains("admin a"), "{refusal}");
    }

    #[test]
    fn the_certificate_before_a_renewal_is_accepted_until_it_is_superseded() {
        let f = CredentialFacts {
            previous: Some("aa".into()),
            ..facts(Some(Some("bb")), None)
        };
        assert_eq!(
            judge_credential("node n", "aa", &f),
            CredentialVerdict::Accept
        );
        assert_eq!(
            judge_credential("node n", "bb", &f),
            CredentialVerdict::Accept
        );
        assert!(matches!(
            judge_credential("node n", "cc", &f),
            CredentialVerdict::Refuse(_)
        ));
        // Once the renewed one was used, the old one is in the revocation table: refused.
        let used = CredentialFacts {
            revoked: Some((RevocationReason::Superseded, AT)),
            ..f
        };
        assert!(matches!(
            judge_credential("node n", "aa", &used),
            CredentialVerdict::Refuse(CredentialRefusal::Superseded { .. })
        ));
    }

    #[test]
    fn a_name_without_a_record_is_refused_and_a_legacy_record_adopts() {
        assert!(matches!(
            judge_credential("node n", "aa", &facts(None, None)),
            CredentialVerdict::Refuse(CredentialRefusal::NotEnrolled { .. })
        ));
        assert_eq!(
            judge_credential("node n", "aa", &facts(Some(None), None)),
            CredentialVerdict::Adopt
        );
    }

    fn binding(node: Option<&str>, replace: bool) -> TokenBinding {
        TokenBinding {
            node: node.map(str::to_owned),
            replace,
            role: None,
            cluster: None,
        }
    }

    #[test]
    fn an_unbound_token_enrolls_new_names_only() {
        assert_eq!(
            judge_enrollment("t", &binding(None, false), "a", false),
            Ok(EnrollmentKind::New)
        );
        let err = judge_enrollment("t", &binding(None, false), "a", true).unwrap_err();
        assert!(
            err.to_string()
                .contains("rke2-hub token create --node a --replace"),
            "{err}"
        );
        // `replace` without a bound node is never honoured.
        assert!(judge_enrollment("t", &binding(None, true), "a", true).is_err());
    }

    #[test]
    fn a_bound_token_enrolls_only_its_node_and_replaces_only_when_allowed() {
        let err = judge_enrollment("t", &binding(Some("a"), true), "b", false).unwrap_err();
        assert!(
            matches!(&err, EnrollmentRefusal::BoundToOtherNode { bound, claimed, .. }
                if bound == "a" && claimed == "b"),
            "{err}"
        );
        assert_eq!(
            judge_enrollment("t", &binding(Some("a"), false), "a", false),
            Ok(EnrollmentKind::New)
        );
        assert!(judge_enrollment("t", &binding(Some("a"), false), "a", true).is_err());
        assert_eq!(
            judge_enrollment("t", &binding(Some("a"), true), "a", true),
            Ok(EnrollmentKind::Replace)
        );
        assert_eq!(
            judge_enrollment("t", &binding(Some("a"), true), "a", false),
            Ok(EnrollmentKind::New)
        );
    }

    #[test]
    fn the_operator_fixes_the_role_before_history_and_claims() {
        assert_eq!(
            enrolled_role(Some("agent"), Some("server"), Some("server")).as_deref(),
            Some("agent")
        );
        assert_eq!(
            enrolled_role(None, Some("agent"), Some("server")).as_deref(),
            Some("agent")
        );
        assert_eq!(
            enrolled_role(None, None, Some("server")).as_deref(),
            Some("server")
        );
        assert_eq!(enrolled_role(None, None, None), None);
    }

    #[test]
    fn only_the_first_hello_fixes_a_role() {
        assert_eq!(hello_role(None, "server"), HelloRole::Fix("server".into()));
        assert_eq!(
            hello_role(Some("agent"), "agent"),
            HelloRole::Matches("agent".into())
        );
        let ignored = hello_role(Some("agent"), "server");
        assert_eq!(ignored.role(), "agent");
        assert!(matches!(ignored, HelloRole::Ignore { .. }));
    }

    #[test]
    fn control_plane_or_etcd_labels_make_a_server() {
        assert_eq!(role_from_node_labels(true, true), "server");
        assert_eq!(role_from_node_labels(false, true), "server");
        assert_eq!(role_from_node_labels(true, false), "server");
        assert_eq!(role_from_node_labels(false, false), "agent");
    }

    #[test]
    fn serial_hex_drops_leading_zero_bytes() {
        assert_eq!(serial_hex(&[0x00, 0x8f, 0x01]), "8f01");
        assert_eq!(serial_hex(&[0x4a, 0x00]), "4a00");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(serial_hex(&[]), "");
    }
}
