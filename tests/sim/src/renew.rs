//! What `rke2 server` / `rke2 agent` do with certificates when they start (k3s
//! `deps.CreateRuntimeCertFiles` → `createClientCertKey`, dynamiclistener, the agent's
//! certificate requests; `reference/rke2.md` "Auto-renewal").
//!
//! For each leaf of the node's role, [`decide`] (a pure function) says whether to keep it or
//! issue a new one; [`renew`] reads the files, applies the decisions with the cluster CAs and
//! consumes the trigger files `rke2 certificate rotate` leaves. Rules, as k3s has them:
//!
//! - cert or key file missing → issue (this is how `rotate` takes effect);
//! - a certificate that does not verify against its CA *now* (other issuer, expired, not yet
//!   valid) → issue; one within [`RENEW_DAYS`] of NotAfter → issue; one whose SANs lack a
//!   wanted name (node IP or `tls-san` changed) → issue;
//! - a file that exists but holds no parsable certificate is **kept** (k3s' `expired()` says
//!   "not expired" when it cannot parse): the component that loads it fails later, which is
//!   how RKE2 ends up failing with `tls: failed to find any PEM data in certificate input`;
//! - agent leaves (`agent/*.crt`) are issued anew on every start (agents request their
//!   certificates from the server at each start, `reference/rke2.md`);
//! - the supervisor certificate (`server/tls/dynamic-cert.json`) follows the same rules plus
//!   the trigger `server/tls/dynamic-cert-regenerate`, which is removed once it is reissued;
//!   `<data-dir>/force-restart` (RKE2: recreate the static pods) is removed too.
//!
//! CAs are never created or changed here.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;

use super::check::gopem;
use super::node_config::NodeConfig;
use super::tree::{
    self, CaKind, ClusterCa, ClusterCas, LEAF_LIFETIME, LeafDef, NodeKey, Role, TreeError,
    TreeSpec, Validity,
};

/// k3s `CertificateRenewDays`.
pub const RENEW_DAYS: i64 = 120;
/// Trigger file `rotate --service rke2-server` writes (relative to the data dir).
pub const DYNAMIC_CERT_REGENERATE: &str = "server/tls/dynamic-cert-regenerate";
/// Trigger file RKE2's `rotate` writes (relative to the data dir).
pub const FORCE_RESTART: &str = "force-restart";
/// Environment variable that overrides the leaf lifetime in days (dynamiclistener).
pub const LIFETIME_ENV: &str = "CATTLE_NEW_SIGNED_CERT_EXPIRATION_DAYS";

/// What is on disk for one leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeafState {
    /// The certificate or its key file does not exist.
    Missing,
    /// Both exist but the certificate file holds no parsable certificate.
    Unparsable,
    /// The first certificate of the file.
    Parsed(LeafFacts),
}

/// The facts [`decide`] needs about an existing certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafFacts {
    /// NotBefore.
    pub not_before: OffsetDateTime,
    /// NotAfter.
    pub not_after: OffsetDateTime,
    /// Whether the current cluster CA's key signed it.
    pub signed_by_ca: bool,
    /// DNS SANs.
    pub dns: Vec<String>,
    /// IP SANs.
    pub ips: Vec<IpAddr>,
}

/// Why a leaf is issued anew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Its certificate or key file was missing.
    Missing,
    /// Agent certificates are requested on every start.
    AgentStart,
    /// It does not verify against the CA now (other issuer, expired, not yet valid).
    NotValid,
    /// It expires within [`RENEW_DAYS`].
    RenewWindow,
    /// A wanted SAN is missing (node IP, name or `tls-san` changed).
    SansChanged,
    /// A trigger file asked for it (`dynamic-cert-regenerate`).
    Triggered,
}

impl Reason {
    /// Words for the log line.
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::AgentStart => "agent certificates are requested on every start",
            Reason::NotValid => "not valid for the current CA and time",
            Reason::RenewWindow => "expires within 120 days",
            Reason::SansChanged => "subject alternative names changed",
            Reason::Triggered => "regeneration requested by dynamic-cert-regenerate",
        }
    }
}

/// Keep the file or issue a new certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Leave cert and key untouched.
    Keep,
    /// Issue a new certificate and key.
    Issue(Reason),
}

/// What a leaf needs, independent of what is on disk.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    /// DNS SANs the certificate must carry.
    pub dns: &'a [String],
    /// IP SANs the certificate must carry.
    pub ips: &'a [IpAddr],
    /// Issued on every start regardless of state (agent leaves).
    pub every_start: bool,
    /// A trigger asks for a new one.
    pub triggered: bool,
}

/// The start-time rule for one leaf (see the module docs).
#[must_use]
pub fn decide(state: &LeafState, wanted: Wanted<'_>, now: OffsetDateTime) -> Decision {
    if wanted.every_start {
        return Decision::Issue(Reason::AgentStart);
    }
    if wanted.triggered {
        return Decision::Issue(Reason::Triggered);
    }
    let facts = match state {
        LeafState::Missing => return Decision::Issue(Reason::Missing),
        LeafState::Unparsable => return Decision::Keep,
        LeafState::Parsed(facts) => facts,
    };
    if !facts.signed_by_ca || now < facts.not_before || now > facts.not_after {
        return Decision::Issue(Reason::NotValid);
    }
    if now + time::Duration::days(RENEW_DAYS) > facts.not_after {
        return Decision::Issue(Reason::RenewWindow);
    }
    let dns_ok = wanted
        .dns
        .iter()
        .all(|d| facts.dns.iter().any(|have| have.eq_ignore_ascii_case(d)));
    let ips_ok = wanted.ips.iter().all(|ip| facts.ips.contains(ip));
    if !(dns_ok && ips_ok) {
        return Decision::Issue(Reason::SansChanged);
    }
    Decision::Keep
}

/// What [`renew`] did.
#[derive(Debug, Clone, Default)]
pub struct RenewReport {
    /// Certificates issued (path relative to the data dir) and why.
    pub issued: Vec<(String, Reason)>,
    /// Certificates kept.
    pub kept: Vec<String>,
    /// Trigger files removed.
    pub consumed_triggers: Vec<String>,
    /// Other files (re)written: key-only files, CA copies, kubeconfigs.
    pub written: Vec<String>,
}

/// Inputs of one start.
#[derive(Debug, Clone, Copy)]
pub struct RenewInput<'a> {
    /// Server or agent.
    pub role: Role,
    /// The node's config (name, IP, SANs, data dir).
    pub config: &'a NodeConfig,
    /// The cluster CAs.
    pub cas: &'a ClusterCas,
    /// The current time.
    pub now: OffsetDateTime,
    /// Lifetime of new leaves.
    pub lifetime: Duration,
}

/// Leaf lifetime: `CATTLE_NEW_SIGNED_CERT_EXPIRATION_DAYS` or 365 days.
#[must_use]
pub fn leaf_lifetime() -> Duration {
    std::env::var(LIFETIME_ENV)
        .ok()
        .and_then(|d| d.trim().parse::<u64>().ok())
        .filter(|d| *d > 0)
        .map_or(LEAF_LIFETIME, |d| Duration::from_secs(d * 86_400))
}

/// The tree spec the node's leaves follow.
#[must_use]
pub fn spec_for(role: Role, config: &NodeConfig, now: OffsetDateTime) -> TreeSpec {
    let mut spec = TreeSpec::new(
        role,
        config.node_name.clone(),
        config.node_ip,
        config.data_dir.clone(),
        now,
    );
    spec.tls_sans = config.tls_sans.clone();
    spec.node_data_dir = Some(config.data_dir.clone());
    spec
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TreeError + '_ {
    move |source| TreeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads what is on disk for a certificate file (and its key, when it has one).
fn leaf_state(cert: &Path, key: Option<&Path>, ca: &ClusterCa) -> LeafState {
    if !cert.exists() || key.is_some_and(|k| !k.exists()) {
        return LeafState::Missing;
    }
    let Ok(bytes) = std::fs::read(cert) else {
        return LeafState::Unparsable;
    };
    facts_of_pem(&bytes, ca).map_or(LeafState::Unparsable, LeafState::Parsed)
}

/// Facts of the first certificate of a PEM file, checked against `ca`.
fn facts_of_pem(pem: &[u8], ca: &ClusterCa) -> Option<LeafFacts> {
    let ders = gopem::parse_certs(pem).ok()?;
    let der = ders.first()?;
    let cert = gopem::parse_der(der).ok()?;
    let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca.cert_der).ok()?;
    let signed_by_ca = cert.issuer() == ca_cert.subject()
        && cert.verify_signature(Some(ca_cert.public_key())).is_ok();
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => {
                        let a: [u8; 4] = (*b).try_into().ok()?;
                        ips.push(IpAddr::from(a));
                    }
                    16 => {
                        let a: [u8; 16] = (*b).try_into().ok()?;
                        ips.push(IpAddr::from(a));
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Some(LeafFacts {
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        signed_by_ca,
        dns,
        ips,
    })
}

/// The certificate chain and key PEM held by `dynamic-cert.json`, if it parses.
#[must_use]
pub fn read_dynamic_cert(path: &Path) -> Option<(String, String)> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(path).ok()?;
    let secret: serde_json::Value = serde_json::from_str(&text).ok()?;
    let field = |k: &str| -> Option<String> {
        let b64 = secret.get("data")?.get(k)?.as_str()?;
        let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        String::from_utf8(raw).ok()
    };
    Some((field("tls.crt")?, field("tls.key")?))
}

/// Issues `def` anew and writes its certificate (leaf + CA) and key; returns the chain and key.
fn issue_leaf(
    def: &LeafDef,
    cas: &ClusterCas,
    now: OffsetDateTime,
    lifetime: Duration,
) -> Result<(String, NodeKey), TreeError> {
    let ca = cas.ca(def.ca);
    let key = NodeKey::generate()?;
    let window = Validity::Fresh.window(now, lifetime, ca.not_before);
    let (chain, _) = tree::issue(def, &key, ca, window)?;
    Ok((chain, key))
}

/// Applies the start-time rules to the node's data dir (see the module docs).
pub fn renew(input: RenewInput<'_>) -> Result<RenewReport, TreeError> {
    let data_dir = input.config.data_dir.as_path();
    let spec = spec_for(input.role, input.config, input.now);
    let mut report = RenewReport::default();
    let dynamic_trigger = data_dir.join(DYNAMIC_CERT_REGENERATE);
    let force_restart = data_dir.join(FORCE_RESTART);
    let triggered = dynamic_trigger.exists();

    for def in tree::leaves(&spec) {
        let cert_path = data_dir.join(&def.cert_rel);
        let key_path = data_dir.join(&def.key_rel);
        let state = leaf_state(&cert_path, Some(&key_path), input.cas.ca(def.ca));
        let wanted = Wanted {
            dns: &def.dns,
            ips: &def.ips,
            every_start: def.cert_rel.starts_with("agent/"),
            triggered: false,
        };
        match decide(&state, wanted, input.now) {
            Decision::Keep => report.kept.push(def.cert_rel.clone()),
            Decision::Issue(reason) => {
                let (chain, key) = issue_leaf(&def, input.cas, input.now, input.lifetime)?;
                tree::write_file(&cert_path, chain.as_bytes(), tree::CERT_MODE)?;
                tree::write_file(&key_path, key.sec1_pem.as_bytes(), tree::SECRET_MODE)?;
                report.issued.push((def.cert_rel.clone(), reason));
            }
        }
    }

    if input.role == Role::Server {
        for rel in tree::SERVER_ONLY_KEYS {
            let path = data_dir.join(rel);
            if !path.exists() {
                let key = NodeKey::generate()?;
                tree::write_file(&path, key.sec1_pem.as_bytes(), tree::SECRET_MODE)?;
                report.written.push((*rel).to_owned());
            }
        }
        let def = tree::supervisor_cert(&spec);
        let path = data_dir.join(&def.cert_rel);
        let ca = input.cas.ca(def.ca);
        let state = if path.exists() {
            read_dynamic_cert(&path)
                .and_then(|(chain, _)| facts_of_pem(chain.as_bytes(), ca))
                .map_or(LeafState::Unparsable, LeafState::Parsed)
        } else {
            LeafState::Missing
        };
        let wanted = Wanted {
            dns: &def.dns,
            ips: &def.ips,
            every_start: false,
            triggered,
        };
        // dynamiclistener cannot use a cache it cannot parse: it issues a new certificate.
        let decision = match (&state, decide(&state, wanted, input.now)) {
            (LeafState::Unparsable, Decision::Keep) => Decision::Issue(Reason::NotValid),
            (_, d) => d,
        };
        match decision {
            Decision::Keep => report.kept.push(def.cert_rel.clone()),
            Decision::Issue(reason) => {
                let (chain, key) = issue_leaf(&def, input.cas, input.now, input.lifetime)?;
                let json = tree::files::dynamic_cert_json(&chain, &key.sec1_pem, &def.cn);
                tree::write_file(&path, json.as_bytes(), tree::SECRET_MODE)?;
                report.issued.push((def.cert_rel.clone(), reason));
            }
        }
    }

    // Agents fetch the CA certificates from the server (`/cacerts`) on every start.
    for (rel, kind) in [
        ("agent/client-ca.crt", CaKind::Client),
        ("agent/server-ca.crt", CaKind::Server),
    ] {
        let path = data_dir.join(rel);
        let pem = input.cas.ca(kind).cert_pem();
        if std::fs::read_to_string(&path).ok().as_deref() != Some(pem.as_str()) {
            tree::write_file(&path, pem.as_bytes(), tree::CERT_MODE)?;
            report.written.push(rel.to_owned());
        }
    }
    for (rel, text) in tree::kubeconfig_files(&spec) {
        let path = data_dir.join(rel);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            tree::write_file(&path, text.as_bytes(), tree::SECRET_MODE)?;
            report.written.push(rel.to_owned());
        }
    }

    for (path, rel) in [
        (&dynamic_trigger, DYNAMIC_CERT_REGENERATE),
        (&force_restart, FORCE_RESTART),
    ] {
        if path.exists() {
            std::fs::remove_file(path).map_err(io_err(path))?;
            report.consumed_triggers.push(rel.to_owned());
        }
    }
    Ok(report)
}

/// Writes the admin kubeconfig (`/etc/rancher/rke2/rke2.yaml`) from the current
/// `client-admin` files, as RKE2 servers do on every start.
pub fn write_admin_kubeconfig(
    data_dir: &Path,
    cas: &ClusterCas,
    target: &Path,
) -> Result<(), TreeError> {
    let read = |rel: &str| {
        let path = data_dir.join(rel);
        std::fs::read_to_string(&path).map_err(io_err(&path))
    };
    let text = tree::files::admin_kubeconfig(
        tree::LOCAL_APISERVER,
        &cas.ca(CaKind::Server).cert_pem(),
        &read("server/tls/client-admin.crt")?,
        &read("server/tls/client-admin.key")?,
    );
    tree::write_file(target, text.as_bytes(), tree::SECRET_MODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(days: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000 + days)
    }

    fn facts(not_after_days: i64) -> LeafState {
        LeafState::Parsed(LeafFacts {
            not_before: t(not_after_days - 365),
            not_after: t(not_after_days),
            signed_by_ca: true,
            dns: vec!["localhost".into()],
            ips: vec!["127.0.0.1".parse().expect("test input is valid")],
        })
    }

    fn wanted() -> Wanted<'static> {
        Wanted {
            dns: &[],
            ips: &[],
            every_start: false,
            triggered: false,
        }
    }

    #[test]
    fn fresh_certificates_are_kept_and_the_window_is_120_days() {
        let now = t(0);
        assert_eq!(decide(&facts(300), wanted(), now), Decision::Keep);
        assert_eq!(decide(&facts(121), wanted(), now), Decision::Keep);
        assert_eq!(
            decide(&facts(119), wanted(), now),
            Decision::Issue(Reason::RenewWindow)
        );
        assert_eq!(
            decide(&facts(-1), wanted(), now),
            Decision::Issue(Reason::NotValid)
        );
    }

    #[test]
    fn missing_is_issued_and_unparsable_is_kept_like_k3s() {
        assert_eq!(
            decide(&LeafState::Missing, wanted(), t(0)),
            Decision::Issue(Reason::Missing)
        );
        assert_eq!(
            decide(&LeafState::Unparsable, wanted(), t(0)),
            Decision::Keep
        );
    }

    #[test]
    fn other_issuer_sans_agent_and_trigger_force_a_new_certificate() {
        let LeafState::Parsed(mut f) = facts(300) else {
            unreachable!()
        };
        f.signed_by_ca = false;
        assert_eq!(
            decide(&LeafState::Parsed(f), wanted(), t(0)),
            Decision::Issue(Reason::NotValid)
        );
        let ips = ["127.0.10.9".parse().expect("test input is valid")];
        let w = Wanted {
            ips: &ips,
            ..wanted()
        };
        assert_eq!(
            decide(&facts(300), w, t(0)),
            Decision::Issue(Reason::SansChanged)
        );
        let w = Wanted {
            every_start: true,
            ..wanted()
        };
        assert_eq!(
            decide(&facts(300), w, t(0)),
            Decision::Issue(Reason::AgentStart)
        );
        let w = Wanted {
            triggered: true,
            ..wanted()
        };
        assert_eq!(
            decide(&facts(300), w, t(0)),
            Decision::Issue(Reason::Triggered)
        );
    }
}
