//! Embedded etcd on servers: unhealthy members, active alarms, and a database close to its
//! backend quota (from etcd's plain-HTTP metrics on 127.0.0.1:2381).

use rke2ops_common::doctor::{Code, Finding, Severity};

use super::Facts;
use crate::health::etcd::EtcdHealth;

/// Warn from this share of the quota; blocker from [`DB_BLOCKER_RATIO`] (etcd raises NOSPACE
/// at 100% and the cluster becomes read-only).
pub const DB_WARN_RATIO: f64 = 0.8;
/// See [`DB_WARN_RATIO`].
pub const DB_BLOCKER_RATIO: f64 = 0.95;

/// What was learnt from etcd.
#[derive(Debug, Clone, PartialEq)]
pub enum EtcdFacts {
    /// No embedded etcd on this node (agent, or an external datastore).
    NotHere,
    /// The local member did not answer (or its credentials are unusable).
    Unreachable {
        /// Why.
        reason: String,
    },
    /// The cluster as the local member sees it.
    Found {
        /// Members and alarms.
        health: EtcdHealth,
        /// `etcd_mvcc_db_total_size_in_bytes`, when the metrics answered.
        db_size: Option<f64>,
        /// `etcd_server_quota_backend_bytes`, when the metrics answered.
        quota: Option<f64>,
    },
}

/// `(db size, quota)` from etcd's Prometheus text. Pure.
#[must_use]
pub fn parse_db_metrics(text: &str) -> (Option<f64>, Option<f64>) {
    let value = |name: &str| {
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let rest = l.strip_prefix(name)?;
            // The exact name, with or without labels.
            let rest = if let Some(after) = rest.strip_prefix('{') {
                after.split_once('}')?.1
            } else {
                rest
            };
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
    };
    (
        value("etcd_mvcc_db_total_size_in_bytes"),
        value("etcd_server_quota_backend_bytes"),
    )
}

const ETCDCTL: &str = "ETCDCTL_API=3 etcdctl --cacert /var/lib/rancher/rke2/server/tls/etcd/server-ca.crt \
     --cert /var/lib/rancher/rke2/server/tls/etcd/server-client.crt \
     --key /var/lib/rancher/rke2/server/tls/etcd/server-client.key";

/// Findings about etcd.
#[must_use]
pub fn check(facts: &Facts) -> Vec<Finding> {
    let (health, db_size, quota) = match &facts.etcd {
        EtcdFacts::NotHere => return Vec::new(),
        EtcdFacts::Unreachable { reason } => {
            // A stopped or failing unit explains it (`unit-failed` says so); only a running
            // server whose member does not answer is a finding of its own.
            let running =
                matches!(&facts.unit, super::UnitFacts::Found { state, .. } if state.is_active());
            if !running {
                return Vec::new();
            }
            return vec![
                Finding::new(
                    Code::EtcdMemberUnhealthy,
                    Severity::Warning,
                    &facts.node,
                    "local",
                    format!("{ETCDCTL} endpoint health; journalctl -u rke2-server -n 200"),
                )
                .with("reason", reason),
            ];
        }
        EtcdFacts::Found {
            health,
            db_size,
            quota,
        } => (health, *db_size, *quota),
    };
    let mut findings = Vec::new();
    for member in health.members.iter().filter(|m| !m.healthy) {
        findings.push(
            Finding::new(
                Code::EtcdMemberUnhealthy,
                Severity::Blocker,
                &facts.node,
                &member.name,
                format!(
                    "{ETCDCTL} endpoint status --cluster; on that node: systemctl status \
                     rke2-server (no rotation, restart or upgrade of another server until \
                     it is healthy)"
                ),
            )
            .with("client_urls", member.client_urls.join(","))
            .with("problem", member.problem.clone().unwrap_or_default()),
        );
    }
    for alarm in &health.alarms {
        findings.push(
            Finding::new(
                Code::EtcdAlarm,
                Severity::Blocker,
                &facts.node,
                "etcd",
                format!(
                    "{ETCDCTL} defrag --cluster && {ETCDCTL} alarm disarm (after freeing space)"
                ),
            )
            .with("alarm", alarm),
        );
    }
    if let (Some(size), Some(quota)) = (db_size, quota)
        && quota > 0.0
    {
        let ratio = size / quota;
        if ratio >= DB_WARN_RATIO {
            findings.push(
                Finding::new(
                    Code::EtcdDbNearQuota,
                    if ratio >= DB_BLOCKER_RATIO {
                        Severity::Blocker
                    } else {
                        Severity::Warning
                    },
                    &facts.node,
                    "etcd",
                    format!("{ETCDCTL} compact <rev> && {ETCDCTL} defrag --cluster"),
                )
                .with("db_size_bytes", format!("{size:.0}"))
                .with("quota_bytes", format!("{quota:.0}"))
                .with("percent", format!("{:.0}", ratio * 100.0)),
            );
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::super::test_support::facts_with;
    use super::*;
    use crate::health::etcd::MemberHealth;

    fn member(name: &str, healthy: bool) -> MemberHealth {
        MemberHealth {
            id: 1,
            name: name.to_owned(),
            client_urls: vec![format!("https://{name}:2379")],
            healthy,
            problem: (!healthy).then(|| "deadline exceeded".to_owned()),
        }
    }

    #[test]
    fn unhealthy_member_alarm_and_full_db_are_reported() {
        let mut facts = facts_with(vec![]);
        facts.etcd = EtcdFacts::Found {
            health: EtcdHealth {
                members: vec![member("cp-1", true), member("cp-2", false)],
                leader: Some(1),
                local_member: 1,
                alarms: vec!["Nospace".to_owned()],
            },
            db_size: Some(1.9e9),
            quota: Some(2.0e9),
        };
        let findings = check(&facts);
        let got: Vec<(Code, Severity, &str)> = findings
            .iter()
            .map(|f| (f.code, f.severity, f.object.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Code::EtcdMemberUnhealthy, Severity::Blocker, "cp-2"),
                (Code::EtcdAlarm, Severity::Blocker, "etcd"),
                (Code::EtcdDbNearQuota, Severity::Blocker, "etcd"),
            ]
        );
    }

    #[test]
    fn db_at_85_percent_warns_and_at_half_is_fine() {
        let mut facts = facts_with(vec![]);
        let health = EtcdHealth {
            members: vec![member("cp-1", true)],
            leader: Some(1),
            local_member: 1,
            alarms: vec![],
        };
        facts.etcd = EtcdFacts::Found {
            health: health.clone(),
            db_size: Some(1.7e9),
            quota: Some(2.0e9),
        };
        assert_eq!(check(&facts)[0].severity, Severity::Warning);
        facts.etcd = EtcdFacts::Found {
            health,
            db_size: Some(1.0e9),
            quota: Some(2.0e9),
        };
        assert_eq!(check(&facts), vec![]);
    }

    #[test]
    fn metrics_text_gives_size_and_quota() {
        let text = "# HELP etcd_mvcc_db_total_size_in_bytes x\n# TYPE etcd_mvcc_db_total_size_in_bytes gauge\n\
                    etcd_mvcc_db_total_size_in_bytes 2.097152e+07\n\
                    etcd_mvcc_db_total_size_in_use_in_bytes 1e+07\n\
                    etcd_server_quota_backend_bytes{x=\"y\"} 2.147483648e+09\n";
        assert_eq!(
            parse_db_metrics(text),
            (Some(2.097152e7), Some(2.147483648e9))
        );
        assert_eq!(parse_db_metrics(""), (None, None));
    }

    #[test]
    fn unreachable_etcd_is_silent_unless_the_server_runs() {
        let mut facts = facts_with(vec![]);
        facts.etcd = EtcdFacts::Unreachable {
            reason: "connection refused".to_owned(),
        };
        assert_eq!(check(&facts), vec![]);
    }
}
