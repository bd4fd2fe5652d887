//! RKE2's certificate monitor (k3s `pkg/certmonitor`), run by every simulated `rke2 server`
//! and `rke2 agent` once the apiserver is ready.
//!
//! Every period (30 min in RKE2; `RKE2_SIM_CERT_MONITOR_INTERVAL` seconds here, so tests need
//! not wait) it reads the node's certificates — the files `rke2 certificate check` reads, every
//! certificate of each file, chain entries included — and
//!
//! - records `rke2_certificate_expiration_seconds{subject,usages}` (a process-wide gauge, like
//!   k3s' registration in the global registry), served at `/metrics` on the supervisor port
//!   when `supervisor-metrics: true`;
//! - posts a Warning `CertificateExpirationWarning` on the Node when a leaf file holds a
//!   certificate that is expired, not yet valid or within 120 days of NotAfter, and (servers)
//!   a Warning `CACertificateExpirationWarning` for the CA files within 365 days;
//! - on the first check after start only, a Normal `CertificateExpirationOK` when neither
//!   warning was due.
//!
//! The decisions ([`check_certs`], [`events_for_check`], [`go_subject`]) are pure and
//! unit-tested; [`run`] is the I/O around them. `tests/SIMULATOR.md` §5.8 says what differs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::watch;
use x509_parser::certificate::X509Certificate;

use super::check::{self, gopem};
use super::kube::client::ApiClient;
use super::logrus;
use super::server::listen::{self, Handler, Reply, RequestInfo, reply};

/// The event source and controller name (k3s: `version.Program + "-cert-monitor"`).
pub const CONTROLLER_NAME: &str = "rke2-cert-monitor";
/// Environment variable setting the period in seconds (decimals allowed); simulator only.
pub const INTERVAL_ENV: &str = "RKE2_SIM_CERT_MONITOR_INTERVAL";
/// RKE2's period.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30 * 60);
/// Leaves warn this many days before NotAfter (k3s `CertificateRenewDays`, the same window
/// the start-time renewal uses, so a warned leaf is one a restart would renew).
pub const LEAF_WARNING_DAYS: i64 = super::renew::RENEW_DAYS;
/// CAs warn this many days before NotAfter (k3s: `time.Hour*24*365`).
pub const CA_WARNING_DAYS: i64 = 365;
/// k3s `services.CertificateAuthority`: the name CA files are reported under.
pub const CA_SERVICE: &str = "certificate-authority";
/// The gauge's name.
pub const GAUGE_NAME: &str = "rke2_certificate_expiration_seconds";
/// The gauge's help text (k3s' wording).
pub const GAUGE_HELP: &str =
    "Remaining lifetime in seconds of the certificate, labeled by certificate subject and usages.";
/// Where events go: the recorder is built for the `default` namespace.
pub const EVENT_NAMESPACE: &str = "default";

/// k3s `FilesForServices(..., services.CA)`, relative to the data dir (keys included: they
/// hold no certificate and are skipped, as k3s skips them).
pub const CA_FILES: &[&str] = &[
    "server/tls/server-ca.crt",
    "server/tls/server-ca.key",
    "server/tls/client-ca.crt",
    "server/tls/client-ca.key",
    "server/tls/request-header-ca.crt",
    "server/tls/request-header-ca.key",
    "server/tls/etcd/peer-ca.crt",
    "server/tls/etcd/peer-ca.key",
    "server/tls/etcd/server-ca.crt",
    "server/tls/etcd/server-ca.key",
];

/// One certificate found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// The service the file belongs to (`api-server`, `kubelet`, `certificate-authority`...).
    pub service: String,
    /// The file's base name.
    pub file: String,
    /// The subject as Go's `pkix.Name.String()` prints it (`CN=x,O=y`).
    pub subject: String,
    /// k3s `GetCertUsages`.
    pub usages: Vec<String>,
    /// NotBefore.
    pub not_before: OffsetDateTime,
    /// NotAfter.
    pub not_after: OffsetDateTime,
}

/// k3s `GetCertStatus` with a warning window of `window_days`.
#[must_use]
pub fn status(cert: &CertFacts, now: OffsetDateTime, window_days: i64) -> check::Status {
    let warn = now + time::Duration::days(window_days);
    if now < cert.not_before {
        check::Status::NotYetValid
    } else if now > cert.not_after {
        check::Status::Expired
    } else if warn > cert.not_after {
        check::Status::Warning
    } else {
        check::Status::Ok
    }
}

/// k3s `checkCerts`: one line per certificate that needs attention, joined with newlines (Go's
/// `errors.Join`), or `None` when all are fine.
#[must_use]
pub fn check_certs(certs: &[CertFacts], now: OffsetDateTime, window_days: i64) -> Option<String> {
    let lines: Vec<String> = certs
        .iter()
        .filter_map(|c| {
            let prefix = format!("{}/{}: certificate {}", c.service, c.file, c.subject);
            match status(c, now, window_days) {
                check::Status::Ok => None,
                check::Status::NotYetValid => Some(format!(
                    "{prefix} is not valid before {}",
                    check::go_rfc3339(c.not_before)
                )),
                check::Status::Expired => Some(format!(
                    "{prefix} expired at {}",
                    check::go_rfc3339(c.not_after)
                )),
                check::Status::Warning => Some(format!(
                    "{prefix} will expire within {window_days} days at {}",
                    check::go_rfc3339(c.not_after)
                )),
            }
        })
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// An event the monitor records on its Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorEvent {
    /// `Warning` or `Normal`.
    pub type_: &'static str,
    /// `CertificateExpirationWarning`, `CACertificateExpirationWarning`,
    /// `CertificateExpirationOK`.
    pub reason: &'static str,
    /// The message, in k3s' wording with `rke2` as the program.
    pub message: String,
}

/// What one check records: the leaf warning, the CA warning, and — only when `first_check`
/// and neither warning is due — the OK event (k3s runs that part in a `sync.Once`, so a node
/// whose first check warned never reports OK until it restarts).
#[must_use]
pub fn events_for_check(
    leaves: &[CertFacts],
    cas: &[CertFacts],
    now: OffsetDateTime,
    first_check: bool,
) -> Vec<MonitorEvent> {
    let mut out = Vec::new();
    if let Some(err) = check_certs(leaves, now, LEAF_WARNING_DAYS) {
        out.push(MonitorEvent {
            type_: "Warning",
            reason: "CertificateExpirationWarning",
            message: format!(
                "Node certificates require attention - restart rke2 on this node to trigger \
                 automatic rotation: {err}"
            ),
        });
    }
    if let Some(err) = check_certs(cas, now, CA_WARNING_DAYS) {
        out.push(MonitorEvent {
            type_: "Warning",
            reason: "CACertificateExpirationWarning",
            message: format!(
                "Certificate Authority certificates require attention - check rke2 \
                 documentation and begin planning rotation: {err}"
            ),
        });
    }
    if first_check && out.is_empty() {
        out.push(MonitorEvent {
            type_: "Normal",
            reason: "CertificateExpirationOK",
            message: "Node and Certificate Authority certificates managed by rke2 are OK"
                .to_owned(),
        });
    }
    out
}

/// The Event object client-go's recorder would create for `event` on Node `node` at `now`
/// (name `<node>.<hex unix nanos>`, count 1, source = the monitor on this host; the Node
/// reference carries the node name as uid and no namespace, as k3s builds it).
#[must_use]
pub fn event_object(node: &str, event: &MonitorEvent, now: OffsetDateTime) -> Value {
    let nanos = now.unix_timestamp_nanos();
    let stamp = check::go_rfc3339(now.replace_nanosecond(0).unwrap_or(now));
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": format!("{node}.{:x}", nanos.max(0)),
            "namespace": EVENT_NAMESPACE,
        },
        "involvedObject": {"kind": "Node", "name": node, "uid": node},
        "reason": event.reason,
        "message": event.message,
        "type": event.type_,
        "source": {"component": CONTROLLER_NAME, "host": node},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "reportingComponent": CONTROLLER_NAME,
        "reportingInstance": node,
    })
}

/// Go's `pkix.Name.String()`: RFC 2253 order (the last RDN first), `+` between values of one
/// multi-valued attribute, `\` before `,+"\<>;` (and a leading `#`/space or a trailing space).
/// Attributes outside the nine named ones are left out (the simulator's certificates have
/// none).
#[must_use]
pub fn go_subject(name: &x509_parser::x509::X509Name<'_>) -> String {
    // Go rebuilds the sequence from its parsed fields in this order, then prints it reversed.
    const ORDER: &[(&str, &str, bool)] = &[
        ("2.5.4.6", "C", false),
        ("2.5.4.8", "ST", false),
        ("2.5.4.7", "L", false),
        ("2.5.4.9", "STREET", false),
        ("2.5.4.17", "POSTALCODE", false),
        ("2.5.4.10", "O", false),
        ("2.5.4.11", "OU", false),
        ("2.5.4.3", "CN", true),
        ("2.5.4.5", "SERIALNUMBER", true),
    ];
    let mut values: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for attr in name.iter_attributes() {
        let oid = attr.attr_type().to_id_string();
        if let Some(&(key, _, single)) = ORDER.iter().find(|(o, _, _)| *o == oid) {
            let value = attr.as_str().unwrap_or_default().to_owned();
            let slot = values.entry(key).or_default();
            if single {
                // Go keeps the last CommonName / SerialNumber.
                slot.clear();
            }
            slot.push(value);
        }
    }
    let rdns: Vec<String> = ORDER
        .iter()
        .filter_map(|(oid, label, _)| {
            let vals = values.get(oid).filter(|v| !v.is_empty())?;
            Some(
                vals.iter()
                    .map(|v| format!("{label}={}", escape_rdn_value(v)))
                    .collect::<Vec<_>>()
                    .join("+"),
            )
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn escape_rdn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.char_indices() {
        let escape = match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => true,
            ' ' => i == 0 || i + c.len_utf8() == v.len(),
            '#' => i == 0,
            _ => false,
        };
        if escape {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The facts of one parsed certificate.
fn facts(service: &str, file: &str, cert: &X509Certificate<'_>) -> CertFacts {
    CertFacts {
        service: service.to_owned(),
        file: file.to_owned(),
        subject: go_subject(cert.subject()),
        usages: check::usages(cert),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
    }
}

/// Every certificate of `files` (relative to `data_dir`) under `service`; unreadable files and
/// keys give none, as k3s ignores `CertsFromFile` errors.
fn read_service(data_dir: &Path, service: &str, files: &[&str]) -> Vec<CertFacts> {
    let mut out = Vec::new();
    for rel in files {
        let path = data_dir.join(rel);
        let Ok(data) = std::fs::read(&path) else {
            continue;
        };
        let Ok(ders) = gopem::parse_certs(&data) else {
            continue;
        };
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for der in &ders {
            if let Ok(cert) = gopem::parse_der(der) {
                out.push(facts(service, &file, &cert));
            }
        }
    }
    out
}

/// The node's leaf certificates (all services when `<data-dir>/server` exists, else the agent
/// services) and its CA certificates (servers only), in `services.All` order.
#[must_use]
pub fn inventory(data_dir: &Path) -> (Vec<CertFacts>, Vec<CertFacts>) {
    let server = data_dir.join("server").is_dir();
    let services = if server {
        check::ALL_SERVICES
    } else {
        check::AGENT_SERVICES
    };
    let leaves = services
        .iter()
        .flat_map(|s| read_service(data_dir, s, &check::files_for_service(s)))
        .collect();
    let cas = if server {
        read_service(data_dir, CA_SERVICE, CA_FILES)
    } else {
        Vec::new()
    };
    (leaves, cas)
}

/// The gauge: (subject, usages) → remaining seconds. Process-wide, like k3s' registration in
/// the global registry; label sets are never removed, as in k3s.
static GAUGE: Mutex<BTreeMap<(String, String), f64>> = Mutex::new(BTreeMap::new());

/// Records the remaining lifetime of every certificate in `certs` at `now`.
pub fn record_gauge(certs: &[CertFacts], now: OffsetDateTime) {
    if let Ok(mut g) = GAUGE.lock() {
        for c in certs {
            let secs = (c.not_after - now).as_seconds_f64();
            g.insert((c.subject.clone(), c.usages.join(",")), secs);
        }
    }
}

/// Prometheus text exposition of `gauge` (labels sorted like client_golang: `subject`,
/// `usages`; values printed as Go's `strconv.FormatFloat(v, 'g', -1, 64)`).
#[must_use]
pub fn exposition(gauge: &BTreeMap<(String, String), f64>) -> String {
    if gauge.is_empty() {
        return String::new();
    }
    let mut out = format!("# HELP {GAUGE_NAME} {GAUGE_HELP}\n# TYPE {GAUGE_NAME} gauge\n");
    for ((subject, usages), v) in gauge {
        out.push_str(&format!(
            "{GAUGE_NAME}{{subject=\"{}\",usages=\"{}\"}} {}\n",
            escape_label(subject),
            escape_label(usages),
            go_float(*v)
        ));
    }
    out
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Go's `strconv.FormatFloat(v, 'g', -1, 64)` (what client_golang's text format prints):
/// the shortest digits, in exponent form (`e+07`, two exponent digits at least) when the
/// decimal exponent is below -4 or at least 6.
#[must_use]
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    if v == 0.0 {
        return "0".to_owned();
    }
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        format!("{v}")
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

/// The current gauge as exposition text.
#[must_use]
pub fn metrics_text() -> String {
    GAUGE.lock().map(|g| exposition(&g)).unwrap_or_default()
}

fn metrics_reply(req: &RequestInfo) -> Reply {
    // k3s puts the metrics route behind client-certificate authentication (and a
    // SubjectAccessReview, which the simulator does not make).
    if !req.client_cert {
        return reply(
            StatusCode::UNAUTHORIZED,
            "text/plain; charset=utf-8",
            "Unauthorized",
        );
    }
    reply(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        metrics_text(),
    )
}

/// `inner` plus `GET /metrics` (k3s `--supervisor-metrics` adds the route to the supervisor's
/// router); without `enabled`, `inner` unchanged.
#[must_use]
pub fn with_metrics(inner: Handler, enabled: bool) -> Handler {
    if !enabled {
        return inner;
    }
    Arc::new(move |req: RequestInfo| {
        if req.path == "/metrics" {
            let answer = metrics_reply(&req);
            Box::pin(async move { answer })
        } else {
            inner(req)
        }
    })
}

/// Agents with `supervisor-metrics`: k3s opens its own HTTPS listener on the supervisor port
/// (serving-kubelet certificate, client certificates from the client CA) for the route.
pub async fn serve_agent_metrics(
    addr: SocketAddr,
    data_dir: PathBuf,
    shutdown: watch::Receiver<bool>,
) {
    use super::server::tls;
    let acceptor = (|| -> Result<tokio_rustls::TlsAcceptor, String> {
        let id = tls::load_identity(
            &data_dir.join("agent/serving-kubelet.crt"),
            &data_dir.join("agent/serving-kubelet.key"),
        )?;
        let roots = tls::roots(&data_dir.join("agent/client-ca.crt"))?;
        Ok(tokio_rustls::TlsAcceptor::from(tls::server_config(
            id,
            Some(roots),
        )?))
    })();
    let acceptor = match acceptor {
        Ok(a) => a,
        Err(e) => {
            logrus::warn(&format!("supervisor metrics: {e}"));
            return;
        }
    };
    let not_found: Handler = Arc::new(|_req: RequestInfo| {
        Box::pin(async {
            reply(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "404 page not found\n",
            )
        })
    });
    match listen::bind(addr, "supervisor metrics").await {
        Ok(l) => {
            listen::serve(l, Some(acceptor), with_metrics(not_found, true), shutdown).await;
        }
        Err(e) => logrus::warn(&e),
    }
}

/// The period from [`INTERVAL_ENV`] (seconds, decimals allowed, 0 < s ≤ 86400; anything else
/// gives [`DEFAULT_INTERVAL`]).
#[must_use]
pub fn interval_from_env() -> Duration {
    parse_interval(std::env::var(INTERVAL_ENV).ok().as_deref())
}

fn parse_interval(v: Option<&str>) -> Duration {
    v.and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
        .map_or(DEFAULT_INTERVAL, Duration::from_secs_f64)
}

/// What [`run`] needs.
#[derive(Debug)]
pub struct Monitor {
    /// The Node the events are about.
    pub node_name: String,
    /// The data dir to read.
    pub data_dir: PathBuf,
    /// The kubelet's API client (k3s uses the kubelet kubeconfig).
    pub client: ApiClient,
    /// The period.
    pub interval: Duration,
    /// `RKE2_SIM_NOW` when set: the monitor's clock starts there and runs on.
    pub pinned_now: Option<OffsetDateTime>,
}

impl Monitor {
    /// A monitor for `config`'s node with the period from the environment.
    #[must_use]
    pub fn new(
        config: &super::node_config::NodeConfig,
        client: ApiClient,
        pinned_now: Option<OffsetDateTime>,
    ) -> Self {
        Self {
            node_name: config.node_name.clone(),
            data_dir: config.data_dir.clone(),
            client,
            interval: interval_from_env(),
            pinned_now,
        }
    }
}

/// Sleeps `d`; true when shutdown came first.
async fn sleep_or_shutdown(shutdown: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}

/// Waits until the apiserver answers `/readyz` with 200 (k3s waits for
/// `executor.APIServerReadyChan()`, so early events are not lost); true when shutdown came
/// first.
async fn wait_for_apiserver(client: &ApiClient, shutdown: &mut watch::Receiver<bool>) -> bool {
    loop {
        if let Ok((200, _)) = client.send(Method::GET, "/readyz", "", None).await {
            return false;
        }
        if sleep_or_shutdown(shutdown, Duration::from_secs(1)).await {
            return true;
        }
    }
}

/// The monitor loop: wait for the apiserver, then check, record and post every period until
/// shutdown.
pub async fn run(monitor: Monitor, mut shutdown: watch::Receiver<bool>) {
    let started = Instant::now();
    let clock = move || match monitor.pinned_now {
        Some(t) => t + started.elapsed(),
        None => OffsetDateTime::now_utc(),
    };
    if wait_for_apiserver(&monitor.client, &mut shutdown).await {
        return;
    }
    logrus::info(&format!(
        "Running {CONTROLLER_NAME} every {:?}",
        monitor.interval
    ));
    let path = format!("/api/v1/namespaces/{EVENT_NAMESPACE}/events");
    let mut first = true;
    loop {
        let now = clock();
        let (leaves, cas) = inventory(&monitor.data_dir);
        record_gauge(&leaves, now);
        record_gauge(&cas, now);
        for event in events_for_check(&leaves, &cas, now, first) {
            let body = event_object(&monitor.node_name, &event, OffsetDateTime::now_utc());
            match monitor
                .client
                .send(Method::POST, &path, "application/json", Some(&body))
                .await
            {
                Ok((201 | 200, _)) => {}
                Ok((status, answer)) => logrus::warn(&format!(
                    "{CONTROLLER_NAME}: event {} refused: {status} {answer}",
                    event.reason
                )),
                Err(e) => logrus::warn(&format!(
                    "{CONTROLLER_NAME}: event {} not recorded: {e}",
                    event.reason
                )),
            }
        }
        first = false;
        if sleep_or_shutdown(&mut shutdown, monitor.interval).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-06 10:00:00 UTC);

    fn cert(service: &str, file: &str, subject: &str, days_left: i64) -> CertFacts {
        CertFacts {
            service: service.into(),
            file: file.into(),
            subject: subject.into(),
            usages: vec!["ClientAuth".into()],
            not_before: NOW - time::Duration::days(300),
            not_after: NOW + time::Duration::days(days_left),
        }
    }

    #[test]
    fn leaf_status_matches_the_check_commands_rules() {
        for days in [-1, 0, 1, 60, 119, 120, 121, 365] {
            let c = cert("kubelet", "client-kubelet.crt", "CN=x", days);
            assert_eq!(
                status(&c, NOW, LEAF_WARNING_DAYS),
                check::Status::classify(c.not_before, c.not_after, NOW),
                "{days} days left"
            );
        }
    }

    #[test]
    fn warning_lines_follow_k3s_wording_and_are_joined_by_newlines() {
        let mut future = cert(
            "api-server",
            "serving-kube-apiserver.crt",
            "CN=kube-apiserver",
            400,
        );
        future.not_before = NOW + time::Duration::hours(2);
        let certs = vec![
            cert(
                "kubelet",
                "client-kubelet.crt",
                "CN=system:node:agent-1,O=system:nodes",
                60,
            ),
            cert("admin", "client-admin.crt", "CN=system:admin", 200),
            cert("etcd", "client.crt", "CN=etcd-client", -2),
            future,
        ];
        let msg = check_certs(&certs, NOW, LEAF_WARNING_DAYS).expect("three need attention");
        assert_eq!(
            msg,
            "kubelet/client-kubelet.crt: certificate CN=system:node:agent-1,O=system:nodes will \
             expire within 120 days at 2027-02-04T10:00:00Z\n\
             etcd/client.crt: certificate CN=etcd-client expired at 2026-12-04T10:00:00Z\n\
             api-server/serving-kube-apiserver.crt: certificate CN=kube-apiserver is not valid \
             before 2026-12-06T12:00:00Z"
        );
        assert_eq!(check_certs(&certs[1..2], NOW, LEAF_WARNING_DAYS), None);
    }

    #[test]
    fn events_warn_every_check_and_report_ok_only_on_a_clean_first_check() {
        let clean = vec![cert("kubelet", "client-kubelet.crt", "CN=k", 300)];
        let soon = vec![cert("kubelet", "client-kubelet.crt", "CN=k", 30)];
        let ca_soon = vec![cert(
            CA_SERVICE,
            "server-ca.crt",
            "CN=rke2-server-ca@1",
            200,
        )];
        let ok = events_for_check(&clean, &[], NOW, true);
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].type_, "Normal");
        assert_eq!(ok[0].reason, "CertificateExpirationOK");
        assert_eq!(
            ok[0].message,
            "Node and Certificate Authority certificates managed by rke2 are OK"
        );
        assert!(events_for_check(&clean, &[], NOW, false).is_empty());

        let warn = events_for_check(&soon, &[], NOW, false);
        assert_eq!(warn.len(), 1);
        assert_eq!(warn[0].reason, "CertificateExpirationWarning");
        assert_eq!(warn[0].type_, "Warning");
        assert!(warn[0].message.starts_with(
            "Node certificates require attention - restart rke2 on this node to trigger \
             automatic rotation: kubelet/client-kubelet.crt: certificate CN=k will expire \
             within 120 days at "
        ));
        // A warning on the first check means no OK event.
        assert_eq!(events_for_check(&soon, &[], NOW, true).len(), 1);

        let ca = events_for_check(&clean, &ca_soon, NOW, true);
        assert_eq!(ca.len(), 1);
        assert_eq!(ca[0].reason, "CACertificateExpirationWarning");
        assert_eq!(
            ca[0].message,
            "Certificate Authority certificates require attention - check rke2 documentation \
             and begin planning rotation: certificate-authority/server-ca.crt: certificate \
             CN=rke2-server-ca@1 will expire within 365 days at 2027-06-24T10:00:00Z"
        );
    }

    #[test]
    fn event_object_is_a_valid_event_on_the_node() {
        let e = MonitorEvent {
            type_: "Warning",
            reason: "CertificateExpirationWarning",
            message: "m".into(),
        };
        let v = event_object("agent-1", &e, NOW);
        let parsed: k8s_openapi::api::core::v1::Event =
            serde_json::from_value(v.clone()).expect("valid Event");
        assert_eq!(parsed.involved_object.kind.as_deref(), Some("Node"));
        assert_eq!(parsed.involved_object.name.as_deref(), Some("agent-1"));
        assert_eq!(parsed.involved_object.namespace, None);
        assert_eq!(
            parsed.source.and_then(|s| s.component).as_deref(),
            Some(CONTROLLER_NAME)
        );
        assert_eq!(parsed.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(
            v["metadata"]["name"],
            format!("agent-1.{:x}", NOW.unix_timestamp_nanos())
        );
        assert_eq!(v["count"], 1);
    }

    #[test]
    fn subjects_print_like_go_pkix_name() {
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "system:masters");
        dn.push(rcgen::DnType::CommonName, "system:admin");
        dn.push(rcgen::DnType::CountryName, "DE");
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().expect("key");
        let der = params.self_signed(&key).expect("cert").der().to_vec();
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).expect("parses");
        assert_eq!(
            go_subject(parsed.subject()),
            "CN=system:admin,O=system:masters,C=DE"
        );
        assert_eq!(escape_rdn_value(" a,b#"), "\\ a\\,b#");
        assert_eq!(escape_rdn_value("#x "), "\\#x\\ ");
    }

    #[test]
    fn gauge_text_follows_the_prometheus_format() {
        let mut g = BTreeMap::new();
        g.insert(
            (
                "CN=system:admin,O=system:masters".to_owned(),
                "ClientAuth".to_owned(),
            ),
            31_535_999.5,
        );
        g.insert(("CN=a\"b".to_owned(), "CertSign".to_owned()), -120.0);
        assert_eq!(
            exposition(&g),
            "# HELP rke2_certificate_expiration_seconds Remaining lifetime in seconds of the \
             certificate, labeled by certificate subject and usages.\n\
             # TYPE rke2_certificate_expiration_seconds gauge\n\
             rke2_certificate_expiration_seconds{subject=\"CN=a\\\"b\",usages=\"CertSign\"} -120\n\
             rke2_certificate_expiration_seconds{subject=\"CN=system:admin,O=system:masters\",usages=\"ClientAuth\"} 3.15359995e+07\n"
        );
        assert_eq!(exposition(&BTreeMap::new()), "");
    }

    #[test]
    fn go_float_uses_the_exponent_form_from_one_million() {
        assert_eq!(go_float(0.0), "0");
        assert_eq!(go_float(123_456.0), "123456");
        assert_eq!(go_float(999_999.5), "999999.5");
        assert_eq!(go_float(1_000_000.0), "1e+06");
        assert_eq!(go_float(-31_536_000.0), "-3.1536e+07");
        assert_eq!(go_float(0.0001), "0.0001");
        assert_eq!(go_float(0.00001), "1e-05");
    }

    #[test]
    fn interval_parses_decimals_and_falls_back_to_thirty_minutes() {
        assert_eq!(parse_interval(Some("0.5")), Duration::from_millis(500));
        assert_eq!(parse_interval(Some(" 2 ")), Duration::from_secs(2));
        assert_eq!(parse_interval(Some("0")), DEFAULT_INTERVAL);
        assert_eq!(parse_interval(Some("soon")), DEFAULT_INTERVAL);
        assert_eq!(parse_interval(None), DEFAULT_INTERVAL);
    }
}
