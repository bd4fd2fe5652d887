//! The hub's gRPC server certificate, kept in `<state_dir>/pki/server.crt` and `server.key`
//! across restarts and reissued when it is missing, unreadable, not from the current CA, not
//! matching its key, within [`SERVER_REISSUE_BEFORE`] of expiry, or issued for other names
//! than the listener now needs. The decision is the pure [`reissue_reason`]; reading, issuing
//! and storing the pair is [`super::HubCa::load_or_issue_server`] (in `ca`).
//!
//! `server.crt` holds the leaf followed by the CA: the hub must present its CA in the TLS
//! chain so an enrolling agent can check the pin before it sends its join token. These two
//! files belong to the hub; to serve an operator's own certificate, configure its paths
//! instead of replacing them.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use rcgen::SanType;
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::GeneralName;

use super::error::PkiError;

/// The server certificate is reissued at start when it has less than this left.
pub const SERVER_REISSUE_BEFORE: Duration = Duration::days(30);

/// One name the hub is reached by: a DNS name (lowercased) or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServerName {
    /// A DNS name, lowercase ASCII (a leading `*.` wildcard allowed).
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
}

impl ServerName {
    /// Reads a configured name: an IP address if it parses as one, otherwise a DNS name of
    /// ASCII letters, digits, `-`, `.` (and a leading `*.`), compared case-insensitively.
    ///
    /// # Errors
    /// [`PkiError::InvalidServerName`].
    pub fn parse(text: &str) -> Result<Self, PkiError> {
        let text = text.trim();
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        let host = text.strip_prefix("*.").unwrap_or(text);
        let valid = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid {
            return Err(PkiError::InvalidServerName {
                name: text.to_owned(),
            });
        }
        Ok(Self::Dns(text.to_ascii_lowercase()))
    }

    /// The SAN that carries this name.
    pub(super) fn to_san(&self) -> Result<SanType, PkiError> {
        match self {
            Self::Ip(ip) => Ok(SanType::IpAddress(*ip)),
            Self::Dns(name) => name
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|_| PkiError::InvalidServerName { name: name.clone() }),
        }
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns(name) => f.write_str(name),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// The hub's TLS identity for its gRPC listener. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerIdentity {
    /// The server certificate then the CA, PEM: the chain to present.
    pub cert_chain_pem: String,
    /// The server's private key, PKCS#8 PEM. Secret.
    pub key_pem: String,
    /// End of the server certificate's validity.
    pub not_after: OffsetDateTime,
    /// Why it was issued at this start; `None` when the stored one was reused.
    pub reissued: Option<ReissueReason>,
}

impl fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("key_pem", &"<secret, not shown>")
            .field("not_after", &self.not_after)
            .field("reissued", &self.reissued)
            .finish_non_exhaustive()
    }
}

/// What the stored server certificate is, as far as the reissue decision cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredServerCert {
    /// Its DNS and IP SANs.
    pub names: BTreeSet<ServerName>,
    /// End of its validity.
    pub not_after: OffsetDateTime,
    /// Its signature verifies against the current CA.
    pub signed_by_current_ca: bool,
    /// `server.key` is its key.
    pub key_matches: bool,
}

/// Why the server certificate is issued anew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReissueReason {
    /// There was none (first start, or a file is missing).
    Missing,
    /// A file could not be read or parsed; the reason names it.
    Unreadable(String),
    /// The key file is not the certificate's key.
    KeyMismatch,
    /// It was signed by another CA than the current one.
    OtherCa,
    /// It expires within [`SERVER_REISSUE_BEFORE`].
    Expiring {
        /// Its end of validity.
        not_after: OffsetDateTime,
    },
    /// The listener's names changed.
    NamesChanged {
        /// The names it has, comma-separated.
        had: String,
        /// The names wanted, comma-separated.
        want: String,
    },
}

impl fmt::Display for ReissueReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("no server certificate yet"),
            Self::Unreadable(reason) => write!(f, "the stored one is unreadable: {reason}"),
            Self::KeyMismatch => f.write_str("the stored key is not the certificate's"),
            Self::OtherCa => f.write_str("the stored one was signed by another CA"),
            Self::Expiring { not_after } => write!(f, "the stored one expires at {not_after}"),
            Self::NamesChanged { had, want } => {
                write!(f, "names changed from [{had}] to [{want}]")
            }
        }
    }
}

/// Whether (and why) the stored server certificate must be replaced at `now` for a listener
/// reached by `wanted` names.
#[must_use]
pub fn reissue_reason(
    stored: &StoredServerCert,
    wanted: &BTreeSet<ServerName>,
    now: OffsetDateTime,
) -> Option<ReissueReason> {
    if !stored.key_matches {
        return Some(ReissueReason::KeyMismatch);
    }
    if !stored.signed_by_current_ca {
        return Some(ReissueReason::OtherCa);
    }
    if stored.not_after - now < SERVER_REISSUE_BEFORE {
        return Some(ReissueReason::Expiring {
            not_after: stored.not_after,
        });
    }
    if stored.names != *wanted {
        return Some(ReissueReason::NamesChanged {
            had: join(&stored.names),
            want: join(wanted),
        });
    }
    None
}

fn join(names: &BTreeSet<ServerName>) -> String {
    names
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A SAN entry as a [`ServerName`] (other kinds are not the hub's names).
pub(super) fn server_name_of(name: &GeneralName<'_>) -> Option<ServerName> {
    match name {
        GeneralName::DNSName(dns) => Some(ServerName::Dns(dns.to_ascii_lowercase())),
        GeneralName::IPAddress(bytes) => match bytes.len() {
            4 => <[u8; 4]>::try_from(*bytes)
                .ok()
                .map(|b| ServerName::Ip(IpAddr::from(b))),
            16 => <[u8; 16]>::try_from(*bytes)
                .ok()
                .map(|b| ServerName::Ip(IpAddr::from(b))),
            _ => None,
        },
        _ => None,
    }
}
