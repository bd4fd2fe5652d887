//! Who a verified client certificate belongs to. The gRPC layer calls [`peer_identity`] on
//! the leaf that rustls has already verified against the hub CA, and authorizes by the
//! result: a [`PeerIdentity::Node`] may only use the agent service (and only as that node), a
//! [`PeerIdentity::Admin`] only the admin service. Anything else is refused.
//!
//! The decision is by subject: organization [`NODE_ORGANIZATION`] with a node-name CN, or
//! organization [`ADMIN_ORGANIZATION`] with a CN `admin:<name>`. A certificate carrying both
//! organizations, no CN, several CNs, or CA powers is refused, so a certificate can never be
//! read as both kinds. Operator-provided client certificates work when they follow the same
//! subject convention and chain to the CA the hub trusts.

use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use rke2ops_common::identity::validate_node_name;

use super::error::PkiError;

/// The subject organization (O) of every node certificate.
pub const NODE_ORGANIZATION: &str = "rke2-ops:nodes";
/// The subject organization (O) of every admin certificate.
pub const ADMIN_ORGANIZATION: &str = "rke2-ops:admins";
/// The CN prefix of admin certificates, before the admin's name.
pub const ADMIN_CN_PREFIX: &str = "admin:";
/// Longest admin name.
pub const ADMIN_NAME_MAX_LEN: usize = 64;

/// Who is calling, as decided from their client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerIdentity {
    /// A node agent; the node name (its certificate's CN).
    Node(String),
    /// An operator; the name after `admin:` in the certificate's CN.
    Admin(String),
}

impl std::fmt::Display for PeerIdentity {
    /// The certificate CN: what the audit log records as "who".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Node(node) => f.write_str(node),
            Self::Admin(name) => write!(f, "{ADMIN_CN_PREFIX}{name}"),
        }
    }
}

/// Classifies a client certificate (DER) as a node's or an admin's.
///
/// Does not check the chain, validity or usages: rustls's client verifier does that before
/// the certificate gets here.
///
/// # Errors
/// [`PkiError::PeerUnparseable`] for bad DER; [`PkiError::UnknownPeer`] with the subject and
/// the reason for anything that is not clearly one of the two kinds.
pub fn peer_identity(cert_der: &[u8]) -> Result<PeerIdentity, PkiError> {
    let cert = match X509Certificate::from_der(cert_der) {
        Ok(([], cert)) => cert,
        Ok(_) => {
            return Err(PkiError::PeerUnparseable {
                reason: "trailing bytes after the certificate".to_owned(),
            });
        }
        Err(e) => {
            return Err(PkiError::PeerUnparseable {
                reason: e.to_string(),
            });
        }
    };
    let unknown = |reason: String| PkiError::UnknownPeer {
        subject: cert.subject().to_string(),
        reason,
    };
    if cert.is_ca() {
        return Err(unknown("it is a CA certificate".to_owned()));
    }
    let subject = cert.subject();
    let organizations = subject
        .iter_organization()
        .map(|o| o.as_str())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| unknown("an organization (O) is not a string".to_owned()))?;
    let common_names = subject
        .iter_common_name()
        .map(|cn| cn.as_str())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| unknown("the CN is not a string".to_owned()))?;
    let [cn] = common_names.as_slice() else {
        return Err(unknown(format!(
            "it has {} CNs, not exactly one",
            common_names.len()
        )));
    };
    let is_node = organizations.contains(&NODE_ORGANIZATION);
    let is_admin = organizations.contains(&ADMIN_ORGANIZATION);
    match (is_node, is_admin) {
        (true, true) => Err(unknown(format!(
            "it claims both {NODE_ORGANIZATION} and {ADMIN_ORGANIZATION}"
        ))),
        (true, false) => match validate_node_name(cn) {
            Ok(()) => Ok(PeerIdentity::Node((*cn).to_owned())),
            Err(e) => Err(unknown(e.to_string())),
        },
        (false, true) => {
            let name = cn.strip_prefix(ADMIN_CN_PREFIX).ok_or_else(|| {
                unknown(format!("an admin CN must start with {ADMIN_CN_PREFIX:?}"))
            })?;
            validate_admin_name(name).map_err(|e| unknown(e.to_string()))?;
            Ok(PeerIdentity::Admin(name.to_owned()))
        }
        (false, false) => Err(unknown(format!(
            "its organization is neither {NODE_ORGANIZATION} nor {ADMIN_ORGANIZATION}"
        ))),
    }
}

/// Checks an admin name: 1 to 64 characters of ASCII letters, digits, `.`, `_`, `@`, `-`.
/// (Enough for user names and e-mail addresses; nothing that could confuse a log or a CN.)
///
/// # Errors
/// [`PkiError::InvalidAdminName`] naming the rule.
pub fn validate_admin_name(name: &str) -> Result<(), PkiError> {
    let refuse = |reason| {
        Err(PkiError::InvalidAdminName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("it is empty");
    }
    if name.len() > ADMIN_NAME_MAX_LEN {
        return refuse("it is longer than 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
    {
        return refuse("only ASCII letters, digits, '.', '_', '@' and '-' are allowed");
    }
    Ok(())
}
