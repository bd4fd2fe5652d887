//! The agent's Prometheus metrics (OpenMetrics text).
//!
//! Inventory metrics are produced at scrape time from the latest snapshot by a collector, so
//! a scrape never re-reads files (the cause of x509-certificate-exporter's OOMs) and a series
//! disappears as soon as its certificate does. Labels carry names and paths only, never key
//! material.

use std::collections::HashSet;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rke2ops_common::certs::CertStatus;
use rke2ops_common::certs::status::warn_window;
use rke2ops_common::doctor::{Code, Severity};
use rke2ops_common::renewal;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::state::Snapshot;
pub use crate::state::{HubLinkSlot, ServiceSlot};

/// Metrics registry plus the handles the daemon updates.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Completed scans.
    pub scans: Counter,
    /// Scan wall time.
    pub scan_duration: Histogram,
    /// Debounced batches of file events that triggered a rescan.
    pub watch_batches: Counter,
    /// The RKE2 unit's last read state.
    pub service: ServiceSlot,
    /// The doctor's file-based findings after the last rescan, per (code, severity).
    pub doctor: DoctorSlot,
    /// The hub replicas and the one the link is up with (the link writes it).
    pub hub_link: HubLinkSlot,
}

/// Doctor finding counts per (code, severity), replaced after every rescan.
pub type DoctorSlot = Arc<std::sync::Mutex<Vec<(Code, Severity, usize)>>>;

use rke2ops_common::exposition::{Labels, const_gauges as gauge};

#[derive(Debug)]
struct InventoryCollector {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    warn_days: u32,
    service: ServiceSlot,
    doctor: DoctorSlot,
    hub_link: HubLinkSlot,
}

#[allow(clippy::cast_precision_loss)] // Unix seconds fit f64 exactly for millennia.
fn ts(t: OffsetDateTime) -> f64 {
    t.unix_timestamp() as f64
}

impl Collector for InventoryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let snapshot = Arc::clone(&self.snapshots.borrow());
        let inventory = &snapshot.inventory;
        let now = OffsetDateTime::now_utc();
        let warn = warn_window(self.warn_days);

        let mut seen = HashSet::new();
        let mut not_after = Vec::new();
        let mut not_before = Vec::new();
        for cert in &inventory.certificates {
            let labels: Labels = vec![
                ("path", cert.path.clone()),
                ("filename", cert.filename.clone()),
                ("subject", cert.subject.clone()),
                ("issuer", cert.issuer.clone()),
                ("usages", cert.usages_label()),
                ("is_ca", cert.is_ca.to_string()),
            ];
            // A bundle repeating a certificate would give a duplicate series: skip it.
            if !seen.insert(labels.clone()) {
                continue;
            }
            not_after.push((labels.clone(), ts(cert.not_after)));
            not_before.push((labels, ts(cert.not_before)));
        }
        gauge(
            &mut encoder,
            "rke2ops_cert_not_after_timestamp_seconds",
            "NotAfter of each certificate (Unix seconds)",
            &not_after,
        )?;
        gauge(
            &mut encoder,
            "rke2ops_cert_not_before_timestamp_seconds",
            "NotBefore of each certificate (Unix seconds)",
            &not_before,
        )?;

        let statuses = [
            CertStatus::Ok,
            CertStatus::Warning,
            CertStatus::Expired,
            CertStatus::NotYetValid,
        ];
        let counts: Vec<(Labels, f64)> = statuses
            .iter()
            .map(|s| {
                let n = inventory
                    .certificates
                    .iter()
                    .filter(|c| c.status(now, warn) == *s)
                    .count();
                (vec![("status", s.as_str().to_owned())], n as f64)
            })
            .collect();
        gauge(
            &mut encoder,
            "rke2ops_certificates",
            "Certificates by RKE2 status word, evaluated at scrape time",
            &counts,
        )?;

        // One series per (path, reason), even if a file has several problems of one kind.
        let errors: Vec<(Labels, f64)> = inventory
            .errors
            .iter()
            .map(|e| {
                vec![
                    ("path", e.path.clone()),
                    ("reason", e.kind.as_str().to_owned()),
                ]
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|labels| (labels, 1.0))
            .collect();
        gauge(
            &mut encoder,
            "rke2ops_cert_file_errors",
            "1 for each certificate file that cannot be used, by reason",
            &errors,
        )?;

        let service = self.service.lock().ok().and_then(|slot| slot.clone());
        let started = service
            .as_ref()
            .and_then(|(_, s)| s.active_enter.filter(|_| s.is_active()));
        let state = renewal::assess(
            inventory.leaves().map(|c| c.not_after),
            now,
            renewal::window(renewal::RENEW_WINDOW_DAYS),
            started,
        );
        if let Some((unit, unit_state)) = &service {
            let labels: Labels = vec![("unit", unit.clone())];
            gauge(
                &mut encoder,
                "rke2ops_service_active",
                "1 when the RKE2 unit is active (read from systemd on each scrape)",
                &[(labels.clone(), f64::from(u8::from(unit_state.is_active())))],
            )?;
            if let Some(since) = unit_state.active_enter {
                gauge(
                    &mut encoder,
                    "rke2ops_service_active_since_timestamp_seconds",
                    "When the RKE2 unit last became active (systemd ActiveEnterTimestamp)",
                    &[(labels.clone(), ts(since))],
                )?;
            }
            gauge(
                &mut encoder,
                "rke2ops_service_restarts",
                "systemd's NRestarts of the RKE2 unit",
                &[(labels, f64::from(unit_state.n_restarts))],
            )?;
            gauge(
                &mut encoder,
                "rke2ops_renewal_restart_due",
                "1 when inside the renewal window and RKE2 has not started since it opened",
                &[(vec![], f64::from(u8::from(state.restart_due)))],
            )?;
        }
        if let Some(deadline) = state.deadline {
            gauge(
                &mut encoder,
                "rke2ops_renewal_deadline_timestamp_seconds",
                "Earliest leaf NotAfter: the last moment an RKE2 restart still renews",
                &[(vec![], ts(deadline))],
            )?;
        }
        gauge(
            &mut encoder,
            "rke2ops_renewal_window_open",
            "1 when the node is within 120 days of its renewal deadline (a restart renews)",
            &[(vec![], f64::from(u8::from(state.in_window)))],
        )?;

        gauge(
            &mut encoder,
            "rke2ops_cert_backups",
            "Rotation backup folders (tls-*) under server/ and agent/",
            &[(vec![], inventory.backups.len() as f64)],
        )?;
        if let Some(newest) = inventory.newest_backup() {
            gauge(
                &mut encoder,
                "rke2ops_cert_backup_newest_timestamp_seconds",
                "Creation time of the newest rotation backup, from its name",
                &[(vec![], ts(newest.created))],
            )?;
        }
        // Codes and severities only: a bounded label set, never file names or contents.
        let doctor: Vec<(Labels, f64)> = self
            .doctor
            .lock()
            .map(|counts| {
                counts
                    .iter()
                    .map(|(code, severity, n)| {
                        (
                            vec![
                                ("code", code.as_str().to_owned()),
                                ("severity", severity.as_str().to_owned()),
                            ],
                            *n as f64,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        gauge(
            &mut encoder,
            "rke2ops_doctor_findings",
            "Current doctor findings of the file-based checks (certificates, PEM files, \
             kubeconfigs, SANs, disk) by code and severity; absent means none",
            &doctor,
        )?;
        // One series per configured replica (a bounded set, from the configuration), so a
        // dashboard sees which one the node is linked to and an alert sees none.
        let hub_link: Vec<(Labels, f64)> = self
            .hub_link
            .lock()
            .map(|link| {
                link.addresses
                    .iter()
                    .enumerate()
                    .map(|(i, address)| {
                        (
                            vec![("hub", address.clone())],
                            f64::from(u8::from(link.connected == Some(i))),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        gauge(
            &mut encoder,
            "rke2ops_agent_hub_connected",
            "1 for the hub replica the agent's stream is up with, 0 for the other configured \
             hub addresses; absent without a hub",
            &hub_link,
        )?;
        gauge(
            &mut encoder,
            "rke2ops_last_scan_timestamp_seconds",
            "When the inventory was last rebuilt",
            &[(vec![], ts(snapshot.scanned_at))],
        )?;
        Ok(())
    }
}

impl Metrics {
    /// Registers every metric; inventory metrics read `snapshots` at scrape time.
    #[must_use]
    pub fn new(snapshots: watch::Receiver<Arc<Snapshot>>, warn_days: u32) -> Self {
        let mut registry = Registry::default();
        let build = prometheus_client::metrics::family::Family::<
            Labels,
            prometheus_client::metrics::gauge::Gauge,
        >::default();
        build
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_owned())])
            .set(1);
        registry.register(
            "rke2ops_build_info",
            "Build of rke2-node-agent (value 1)",
            build,
        );
        let scans = Counter::default();
        registry.register(
            "rke2ops_scans",
            "Completed certificate scans",
            scans.clone(),
        );
        let scan_duration =
            Histogram::new([0.0005, 0.001, 0.002, 0.005, 0.01, 0.03, 0.1, 0.3, 1.0]);
        registry.register(
            "rke2ops_scan_duration_seconds",
            "Wall time of one certificate scan",
            scan_duration.clone(),
        );
        let watch_batches = Counter::default();
        registry.register(
            "rke2ops_watch_batches",
            "Debounced batches of file events that caused a rescan",
            watch_batches.clone(),
        );
        let service = ServiceSlot::default();
        let doctor = DoctorSlot::default();
        let hub_link = HubLinkSlot::default();
        registry.register_collector(Box::new(InventoryCollector {
            snapshots,
            warn_days,
            service: Arc::clone(&service),
            doctor: Arc::clone(&doctor),
            hub_link: Arc::clone(&hub_link),
        }));
        Self {
            registry,
            scans,
            scan_duration,
            watch_batches,
            service,
            doctor,
            hub_link,
        }
    }

    /// The OpenMetrics text of every metric.
    ///
    /// # Errors
    /// Only if formatting fails (it writes to a `String`).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod doctor_tests {
    use super::*;
    use rke2ops_common::certs::Inventory;

    #[test]
    fn doctor_findings_are_exported_by_code_and_severity_only() {
        let (_tx, rx) = watch::channel(Arc::new(Snapshot {
            inventory: Inventory::default(),
            scanned_at: OffsetDateTime::now_utc(),
            findings: Vec::new(),
        }));
        let metrics = Metrics::new(rx, 120);
        *metrics.doctor.lock().expect("not poisoned") = vec![
            (Code::PemEmptyOrCorrupt, Severity::Blocker, 2),
            (Code::DiskLow, Severity::Warning, 1),
        ];
        let text = metrics.encode().expect("encodes");
        assert!(text.contains(
            "rke2ops_doctor_findings{code=\"pem-empty-or-corrupt\",severity=\"blocker\"} 2"
        ));
        assert!(text.contains("rke2ops_doctor_findings{code=\"disk-low\",severity=\"warning\"} 1"));
    }

    #[test]
    fn the_hub_link_names_every_configured_replica_and_the_linked_one() {
        let (_tx, rx) = watch::channel(Arc::new(Snapshot {
            inventory: Inventory::default(),
            scanned_at: OffsetDateTime::now_utc(),
            findings: Vec::new(),
        }));
        let metrics = Metrics::new(rx, 120);
        let text = metrics.encode().expect("encodes");
        assert!(
            !text.contains("rke2ops_agent_hub_connected{"),
            "no series without a hub: {text}"
        );
        *metrics.hub_link.lock().expect("not poisoned") = crate::state::HubLink {
            addresses: vec!["10.0.0.1:9811".into(), "10.0.0.2:9811".into()],
            connected: Some(1),
        };
        let text = metrics.encode().expect("encodes");
        assert!(text.contains("rke2ops_agent_hub_connected{hub=\"10.0.0.1:9811\"} 0"));
        assert!(text.contains("rke2ops_agent_hub_connected{hub=\"10.0.0.2:9811\"} 1"));
    }
}
