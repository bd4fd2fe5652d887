//! The simulated `rke2 certificate check`: which files, which rows, which status.
//!
//! Mirrors k3s' `pkg/cli/cert/cert.go` (`collectCertInfo`) and `pkg/util/services` (see
//! `tests/SIMULATOR.md` §1). Deliberately independent of `rke2ops-common`: end-to-end tests
//! compare the agent's `check` with this one, so they must not share code. The only intended
//! difference from RKE2 is the row order: RKE2 ranges over a Go map (random order per run),
//! the simulator walks services in `services.All` order.

pub mod gopem;
pub mod humanize;
mod output;
pub mod tabwriter;

use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;

pub use output::{
    OutputFormat, detection_log_line, go_duration_string, go_rfc3339, logrus_line, render,
    render_json, render_table, render_text, render_yaml,
};

/// k3s `config.CertificateRenewDays`: certificates expiring within this many days are WARNING.
pub const CERTIFICATE_RENEW_DAYS: i64 = 120;

/// k3s `services.All`, in declaration order (Server then Agent).
pub const ALL_SERVICES: &[&str] = &[
    "api-server",
    "admin",
    "auth-proxy",
    "cloud-controller",
    "controller-manager",
    "etcd",
    "scheduler",
    "supervisor",
    "rke2-server",
    "kube-proxy",
    "kubelet",
    "rke2-controller",
];

/// k3s `services.Agent`.
pub const AGENT_SERVICES: &[&str] = &["kube-proxy", "kubelet", "rke2-controller"];

/// A certificate's status word, as RKE2 prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// Valid and not within the renewal window.
    Ok,
    /// Expires within [`CERTIFICATE_RENEW_DAYS`].
    Warning,
    /// `now` is after NotAfter.
    Expired,
    /// `now` is before NotBefore.
    NotYetValid,
}

impl Status {
    /// The word RKE2 prints.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Expired => "EXPIRED",
            Status::NotYetValid => "NOT YET VALID",
        }
    }

    /// k3s `GetCertStatus`: first match of not-yet-valid, expired, within the window.
    #[must_use]
    pub fn classify(
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Status {
        let warn = now + time::Duration::days(CERTIFICATE_RENEW_DAYS);
        if now < not_before {
            Status::NotYetValid
        } else if now > not_after {
            Status::Expired
        } else if warn > not_after {
            Status::Warning
        } else {
            Status::Ok
        }
    }
}

/// How the services to check were chosen (decides the first log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detection {
    /// No `--service`, `<data-dir>/server` exists: all services.
    Server,
    /// No `--service`, no `<data-dir>/server`: agent services.
    Agent,
    /// Services given on the command line.
    Explicit,
}

/// One row of the report: one certificate of one file (chain entries included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRow {
    /// The file the certificate came from (not printed by RKE2, kept for tests).
    pub path: PathBuf,
    /// Base name of the file.
    pub filename: String,
    /// Subject CN ("" when absent).
    pub subject: String,
    /// Issuer CN ("" when absent).
    pub issuer: String,
    /// `CertSign`, `ServerAuth`, `ClientAuth` in certificate order, or `Unknown`.
    pub usages: Vec<String>,
    /// NotAfter, or NotBefore when the certificate is not yet valid.
    pub expiry_time: OffsetDateTime,
    /// NotAfter - now, in nanoseconds (negative when expired), saturating like Go.
    pub residual_nanos: i64,
    /// Status word.
    pub status: Status,
}

/// A file the check visited but could not turn into rows (RKE2 only logs these at debug).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFile {
    /// The path visited.
    pub path: PathBuf,
    /// Why it gave no rows.
    pub reason: String,
}

/// Everything a `certificate check` run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// How services were selected.
    pub detection: Detection,
    /// The reference time (`now`) of the run.
    pub now: OffsetDateTime,
    /// Rows in output order.
    pub rows: Vec<CertRow>,
    /// Files that yielded no rows (keys, missing or broken files).
    pub skipped: Vec<SkippedFile>,
}

/// Failures that make RKE2's check exit non-zero.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A `--service` value outside `services.All` (`validateCertConfig`).
    #[error("service {0} is not recognized")]
    UnknownService(String),
    /// `stat` of `<data-dir>/server` failed with something other than "not found".
    #[error("stat {path}: {source}")]
    Stat {
        /// The server dir.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// k3s `FilesForServices` for one service, relative to the data dir.
#[must_use]
pub fn files_for_service(service: &str) -> Vec<&'static str> {
    match service {
        "admin" => vec!["server/tls/client-admin.crt", "server/tls/client-admin.key"],
        "api-server" => vec![
            "server/tls/client-kube-apiserver.crt",
            "server/tls/client-kube-apiserver.key",
            "server/tls/serving-kube-apiserver.crt",
            "server/tls/serving-kube-apiserver.key",
        ],
        "controller-manager" => vec![
            "server/tls/client-controller.crt",
            "server/tls/client-controller.key",
            "server/tls/kube-controller-manager/kube-controller-manager.crt",
            "server/tls/kube-controller-manager/kube-controller-manager.key",
        ],
        "scheduler" => vec![
            "server/tls/client-scheduler.crt",
            "server/tls/client-scheduler.key",
            "server/tls/kube-scheduler/kube-scheduler.crt",
            "server/tls/kube-scheduler/kube-scheduler.key",
        ],
        "etcd" => vec![
            "server/tls/etcd/client.crt",
            "server/tls/etcd/client.key",
            "server/tls/etcd/server-client.crt",
            "server/tls/etcd/server-client.key",
            "server/tls/etcd/peer-server-client.crt",
            "server/tls/etcd/peer-server-client.key",
        ],
        "cloud-controller" => vec![
            "server/tls/client-rke2-cloud-controller.crt",
            "server/tls/client-rke2-cloud-controller.key",
        ],
        "rke2-controller" => vec![
            "server/tls/client-rke2-controller.crt",
            "server/tls/client-rke2-controller.key",
            "agent/client-rke2-controller.crt",
            "agent/client-rke2-controller.key",
        ],
        "supervisor" => vec![
            "server/tls/client-supervisor.crt",
            "server/tls/client-supervisor.key",
        ],
        "auth-proxy" => vec![
            "server/tls/client-auth-proxy.crt",
            "server/tls/client-auth-proxy.key",
        ],
        "kubelet" => vec![
            "server/tls/client-kubelet.key",
            "server/tls/serving-kubelet.key",
            "agent/client-kubelet.crt",
            "agent/client-kubelet.key",
            "agent/serving-kubelet.crt",
            "agent/serving-kubelet.key",
        ],
        "kube-proxy" => vec![
            "server/tls/client-kube-proxy.crt",
            "server/tls/client-kube-proxy.key",
            "agent/client-kube-proxy.crt",
            "agent/client-kube-proxy.key",
        ],
        // rke2-server: the dynamiclistener cache is not a standard cert file.
        _ => Vec::new(),
    }
}

/// Run the check over `data_dir` at `now`, like `rke2 certificate check --data-dir D
/// [--service S]...`.
pub fn check(
    data_dir: &Path,
    services: &[String],
    now: OffsetDateTime,
) -> Result<Report, CheckError> {
    if let Some(bad) = services
        .iter()
        .find(|s| !ALL_SERVICES.contains(&s.as_str()))
    {
        return Err(CheckError::UnknownService(bad.clone()));
    }
    let (detection, selected): (Detection, Vec<&str>) = if services.is_empty() {
        let server_dir = data_dir.join("server");
        match std::fs::metadata(&server_dir) {
            Ok(_) => (Detection::Server, ALL_SERVICES.to_vec()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (Detection::Agent, AGENT_SERVICES.to_vec())
            }
            Err(source) => {
                return Err(CheckError::Stat {
                    path: server_dir,
                    source,
                });
            }
        }
    } else {
        // RKE2 keys a map by service, so repeating a service does not repeat its rows.
        let explicit = ALL_SERVICES
            .iter()
            .copied()
            .filter(|s| services.iter().any(|x| x == s))
            .collect();
        (Detection::Explicit, explicit)
    };

    let mut report = Report {
        detection,
        now,
        rows: Vec::new(),
        skipped: Vec::new(),
    };
    for service in selected {
        for rel in files_for_service(service) {
            let path = data_dir.join(rel);
            match read_rows(&path, now) {
                Ok(rows) => report.rows.extend(rows),
                Err(reason) => report.skipped.push(SkippedFile { path, reason }),
            }
        }
    }
    Ok(report)
}

/// The rows of one file, or why it has none (Go's `CertsFromFile` error text).
fn read_rows(path: &Path, now: OffsetDateTime) -> Result<Vec<CertRow>, String> {
    let data = std::fs::read(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let ders =
        gopem::parse_certs(&data).map_err(|e| format!("error reading {}: {e}", path.display()))?;
    let filename = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut rows = Vec::with_capacity(ders.len());
    for der in &ders {
        let cert = gopem::parse_der(der).map_err(|e| e.to_string())?;
        rows.push(row_for(path, &filename, &cert, now));
    }
    Ok(rows)
}

fn last_cn(name: &x509_parser::x509::X509Name<'_>) -> String {
    name.iter_common_name()
        .last()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn row_for(
    path: &Path,
    filename: &str,
    cert: &X509Certificate<'_>,
    now: OffsetDateTime,
) -> CertRow {
    let not_before = cert.validity().not_before.to_datetime();
    let not_after = cert.validity().not_after.to_datetime();
    let status = Status::classify(not_before, not_after, now);
    let expiry_time = if status == Status::NotYetValid {
        not_before
    } else {
        not_after
    };
    let residual = (not_after - now).whole_nanoseconds();
    let residual_nanos =
        i64::try_from(residual).unwrap_or(if residual < 0 { i64::MIN } else { i64::MAX });
    CertRow {
        path: path.to_path_buf(),
        filename: filename.to_owned(),
        subject: last_cn(cert.subject()),
        issuer: last_cn(cert.issuer()),
        usages: usages(cert),
        expiry_time,
        residual_nanos,
        status,
    }
}

const OID_KEY_USAGE: &str = "2.5.29.15";
const OID_EXT_KEY_USAGE: &str = "2.5.29.37";
/// DER content bytes of id-kp-serverAuth (1.3.6.1.5.5.7.3.1) and id-kp-clientAuth (.2).
const KP_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
const KP_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

/// k3s `GetCertUsages`: `CertSign` (key usage), then each EKU in certificate order mapped to
/// `ServerAuth`/`ClientAuth` (others dropped), or `Unknown` when nothing matched.
#[must_use]
pub fn usages(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for ext in cert.extensions() {
        if ext.oid.to_id_string() == OID_KEY_USAGE
            && let x509_parser::extensions::ParsedExtension::KeyUsage(ku) = ext.parsed_extension()
            && ku.key_cert_sign()
        {
            out.push("CertSign".to_owned());
        }
    }
    for ext in cert.extensions() {
        if ext.oid.to_id_string() == OID_EXT_KEY_USAGE {
            for oid in eku_oids(ext.value) {
                if oid == KP_SERVER_AUTH {
                    out.push("ServerAuth".to_owned());
                } else if oid == KP_CLIENT_AUTH {
                    out.push("ClientAuth".to_owned());
                }
            }
        }
    }
    if out.is_empty() {
        out.push("Unknown".to_owned());
    }
    out
}

/// Read one DER TLV at the start of `data`: (tag, content, rest).
fn der_tlv(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The OIDs (content bytes) of an ExtKeyUsage extension value, in order.
fn eku_oids(value: &[u8]) -> Vec<&[u8]> {
    let mut oids = Vec::new();
    let Some((0x30, mut seq, _)) = der_tlv(value) else {
        return oids;
    };
    while let Some((tag, content, rest)) = der_tlv(seq) {
        if tag == 0x06 {
            oids.push(content);
        }
        seq = rest;
    }
    oids
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn status_boundaries_follow_get_cert_status() {
        let now = datetime!(2025-06-01 12:00:00 UTC);
        let nb = now - time::Duration::hours(1);
        assert_eq!(
            Status::classify(
                now + time::Duration::seconds(1),
                now + time::Duration::days(365),
                now
            ),
            Status::NotYetValid
        );
        assert_eq!(
            Status::classify(nb, now - time::Duration::nanoseconds(1), now),
            Status::Expired
        );
        // Exactly at NotAfter: not expired yet, and inside the window.
        assert_eq!(Status::classify(nb, now, now), Status::Warning);
        assert_eq!(
            Status::classify(nb, now + time::Duration::days(30), now),
            Status::Warning
        );
        // Exactly 120 days left is OK (warn.After(NotAfter) is false).
        assert_eq!(
            Status::classify(nb, now + time::Duration::days(120), now),
            Status::Ok
        );
        assert_eq!(
            Status::classify(nb, now + time::Duration::days(365), now),
            Status::Ok
        );
    }

    #[test]
    fn unknown_service_is_rejected_like_validate_cert_config() {
        let err = check(
            Path::new("/nonexistent"),
            &["certificate-authority".into()],
            OffsetDateTime::UNIX_EPOCH,
        )
        .expect_err("certificate-authority is not in services.All");
        assert_eq!(
            err.to_string(),
            "service certificate-authority is not recognized"
        );
    }

    #[test]
    fn eku_oids_are_read_in_order() {
        // SEQUENCE { clientAuth, serverAuth }
        let mut v = vec![0x30, 20, 0x06, 8];
        v.extend_from_slice(KP_CLIENT_AUTH);
        v.extend_from_slice(&[0x06, 8]);
        v.extend_from_slice(KP_SERVER_AUTH);
        assert_eq!(eku_oids(&v), vec![KP_CLIENT_AUTH, KP_SERVER_AUTH]);
        assert!(eku_oids(&[0x30]).is_empty());
    }
}
