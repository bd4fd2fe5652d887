//! The alert gate: no node starts while Prometheus has an alert firing that the operator has
//! not chosen to ignore (kured's "Prometheus alert gate", before every node instead of only
//! before a reboot). The hub reads Prometheus's `GET /api/v1/alerts`; an unreachable
//! Prometheus holds the plan too, because "no answer" must not read as "all clear".
//!
//! The ignore list always holds the alerts a plan exists to clear or causes itself (rke2-ops'
//! own renewal and halted-plan alerts, `monitoring/rke2-ops.rules.yml`) and the always-firing
//! heartbeats (`Watchdog`, `InfoInhibitor`): gating a renewal plan on the renewal alert would
//! deadlock it. The operator's `alert_gate_ignore` adds to it.
//!
//! This module only reads an answer it is given ([`blocking`], pure);
//! [`crate::fetch::alerts`] asks Prometheus.

use serde::Deserialize;

/// Alerts that never hold maintenance; `alert_gate_ignore` adds to them.
pub const DEFAULT_IGNORED: &[&str] = &[
    "Watchdog",
    "InfoInhibitor",
    "RKE2CertificateRenewalDeadlineNear",
    "RKE2CertificateRenewalDeadlineCritical",
    "RKE2CertificateExpired",
    "RKE2RenewalRestartDue",
    "RKE2OpsFleetRenewalDeadlineNear",
    "RKE2OpsPlanHalted",
];

/// `extra` names added to [`DEFAULT_IGNORED`], sorted and without repeats.
#[must_use]
pub fn ignore_list(extra: &[String]) -> Vec<String> {
    let mut all: Vec<String> = DEFAULT_IGNORED
        .iter()
        .map(|s| (*s).to_owned())
        .chain(extra.iter().cloned())
        .collect();
    all.sort();
    all.dedup();
    all
}

// Pure (URL parsing only); shown with the gate in `plan show`.
pub use crate::fetch::display_url;

#[derive(Debug, Deserialize)]
struct Response {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: String,
}

#[derive(Debug, Deserialize)]
struct Data {
    alerts: Vec<Alert>,
}

#[derive(Debug, Deserialize)]
struct Alert {
    labels: std::collections::BTreeMap<String, String>,
    state: String,
}

/// Why the alert gate cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertGateError {
    /// Prometheus did not answer, or not with 200.
    #[error("Prometheus alerts at {url}: {reason}")]
    Fetch {
        /// The alerts URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The answer is not Prometheus's alerts document.
    #[error("Prometheus alerts at {url}: unexpected answer: {reason}")]
    Malformed {
        /// The alerts URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

/// The firing alerts in `json` (a `/api/v1/alerts` answer) that are not ignored, as sorted
/// names with a count when one fires for several series (`NodeDown (2)`); pending alerts do
/// not block (pure).
///
/// # Errors
/// [`AlertGateError::Malformed`] naming the URL.
pub fn blocking(json: &str, ignore: &[String], url: &str) -> Result<Vec<String>, AlertGateError> {
    let malformed = |reason: String| AlertGateError::Malformed {
        url: url.to_owned(),
        reason,
    };
    let doc: Response = serde_json::from_str(json).map_err(|e| malformed(e.to_string()))?;
    if doc.status != "success" {
        return Err(malformed(format!("status {:?} {}", doc.status, doc.error)));
    }
    let data = doc.data.ok_or_else(|| malformed("no data".to_owned()))?;
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for alert in data.alerts.iter().filter(|a| a.state == "firing") {
        let name = alert
            .labels
            .get("alertname")
            .map_or("(unnamed)", String::as_str);
        if !ignore.iter().any(|i| i == name) {
            *counts.entry(name.to_owned()).or_default() += 1;
        }
    }
    Ok(counts
        .into_iter()
        .map(
            |(name, n)| {
                if n > 1 { format!("{name} ({n})") } else { name }
            },
        )
        .collect())
}

/// Where the alerts are: `<prometheus>/api/v1/alerts`.
#[must_use]
pub fn alerts_url(prometheus: &str) -> String {
    format!("{}/api/v1/alerts", prometheus.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"status":"success","data":{"alerts":[
      {"labels":{"alertname":"NodeDown","instance":"a"},"annotations":{},"state":"firing","activeAt":"2026-12-01T10:00:00Z","value":"1e+00"},
      {"labels":{"alertname":"NodeDown","instance":"b"},"annotations":{},"state":"firing","activeAt":"2026-12-01T10:00:00Z","value":"1e+00"},
      {"labels":{"alertname":"DiskFilling"},"annotations":{},"state":"pending","activeAt":"2026-12-01T10:00:00Z","value":"1e+00"},
      {"labels":{"alertname":"Watchdog"},"annotations":{},"state":"firing","activeAt":"2026-12-01T10:00:00Z","value":"1e+00"},
      {"labels":{"alertname":"RKE2CertificateRenewalDeadlineNear","instance":"s1"},"annotations":{},"state":"firing","activeAt":"2026-12-01T10:00:00Z","value":"1e+00"}]}}"#;

    fn defaults() -> Vec<String> {
        DEFAULT_IGNORED.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn firing_alerts_block_except_ignored_and_pending_ones() {
        assert_eq!(
            blocking(DOC, &defaults(), "u").expect("parses"),
            ["NodeDown (2)"]
        );
        assert_eq!(
            blocking(DOC, &["NodeDown".to_owned()], "u").expect("parses"),
            ["RKE2CertificateRenewalDeadlineNear", "Watchdog"],
            "only what the list names is ignored"
        );
        let list = ignore_list(&["NodeDown".to_owned(), "Watchdog".to_owned()]);
        assert!(
            blocking(DOC, &list, "u").expect("parses").is_empty(),
            "{list:?}"
        );
        assert_eq!(list.iter().filter(|n| *n == "Watchdog").count(), 1);
        assert_eq!(
            display_url("https://user:pw@prom.example:9090/"),
            "https://prom.example:9090"
        );
        let quiet = r#"{"status":"success","data":{"alerts":[]}}"#;
        assert!(blocking(quiet, &[], "u").expect("parses").is_empty());
    }

    #[test]
    fn a_wrong_answer_is_an_error_naming_the_url() {
        for bad in [
            "<html>",
            r#"{"status":"error","errorType":"bad_data","error":"nope"}"#,
            r#"{"status":"success"}"#,
        ] {
            let err = blocking(bad, &[], "http://prom:9090/api/v1/alerts")
                .expect_err("refused")
                .to_string();
            assert!(err.contains("http://prom:9090/api/v1/alerts"), "{err}");
        }
        assert_eq!(
            alerts_url("http://prom:9090/"),
            "http://prom:9090/api/v1/alerts"
        );
    }
}
