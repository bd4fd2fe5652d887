//! etcd across the servers, from the reports their agents send with every status: members
//! any server sees unhealthy, active alarms, and whether the cluster can lose one member
//! (what every server's restart does) without losing quorum ("starting an upgrade with a
//! degraded etcd risks total data loss").

use rke2ops_common::doctor::{Code, Finding, Severity};

use crate::plan::health::EtcdReport;

const ETCDCTL: &str = "on a server: rke2-node-agent doctor shows the etcdctl command with RKE2's \
                       certificates";

/// The node an etcd member belongs to: RKE2 names members `<node>-<suffix>`.
fn node_of<'a>(member: &'a str, servers: &[&'a str]) -> &'a str {
    servers
        .iter()
        .copied()
        .filter(|s| member == *s || member.strip_prefix(*s).is_some_and(|r| r.starts_with('-')))
        .max_by_key(|s| s.len())
        .unwrap_or(member)
}

/// Findings from `reports` ((server, its latest fresh etcd report)); reports that could not
/// ask etcd say nothing here (the agent's own doctor and the plan gates name them).
#[must_use]
pub fn check(reports: &[(String, EtcdReport)]) -> Vec<Finding> {
    let servers: Vec<&str> = reports.iter().map(|(s, _)| s.as_str()).collect();
    let answered: Vec<&(String, EtcdReport)> = reports
        .iter()
        .filter(|(_, r)| r.error.is_empty() && !r.members.is_empty())
        .collect();
    let mut out = Vec::new();
    // Every member someone sees unhealthy, with who sees it.
    let mut sick: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
    let mut alarms: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
    for (server, r) in &answered {
        for (member, healthy) in &r.members {
            if !healthy {
                sick.entry(member.as_str())
                    .or_default()
                    .push(server.as_str());
            }
        }
        for alarm in &r.alarms {
            alarms
                .entry(alarm.as_str())
                .or_default()
                .push(server.as_str());
        }
    }
    for (member, seen_by) in &sick {
        out.push(
            Finding::new(
                Code::EtcdMemberUnhealthy,
                Severity::Blocker,
                node_of(member, &servers),
                format!("etcd member {member}"),
                ETCDCTL,
            )
            .with("member", *member)
            .with("seen_unhealthy_by", seen_by.join(",")),
        );
    }
    for (alarm, seen_by) in &alarms {
        out.push(
            Finding::new(
                Code::EtcdAlarm,
                Severity::Blocker,
                "",
                format!("etcd alarm {alarm}"),
                "free space or defragment (etcdctl defrag), then: etcdctl alarm disarm",
            )
            .with("alarm", *alarm)
            .with("reported_by", seen_by.join(",")),
        );
    }
    // The widest view decides: the most members, the fewest of them healthy.
    let view = answered
        .iter()
        .map(|(server, r)| {
            let healthy = r.members.iter().filter(|(_, ok)| *ok).count();
            (r.members.len(), healthy, server.as_str())
        })
        .max_by_key(|(members, healthy, _)| (*members, std::cmp::Reverse(*healthy)));
    if let Some((members, healthy, server)) = view {
        let quorum = members / 2 + 1;
        if healthy.saturating_sub(1) < quorum {
            // With three or more members this is a degraded cluster: no server may go down.
            // With one or two it is how the cluster was built (every server's restart stops
            // the API): worth knowing before a plan, not an alarm on every run.
            let severity = if members >= 3 {
                Severity::Blocker
            } else {
                Severity::Info
            };
            // About the servers (each one's maintenance takes a member down): a plan over
            // workers only is not concerned.
            let mut all_servers = servers.clone();
            all_servers.sort_unstable();
            out.push(
                Finding::new(
                    Code::EtcdQuorumAtRisk,
                    severity,
                    all_servers.join(","),
                    "etcd quorum",
                    if members >= 3 {
                        "bring the unhealthy members back (rke2-hub doctor names them) before \
                         any server's maintenance"
                    } else {
                        "run 3 (or 5) servers for a control plane that survives one server's \
                         maintenance"
                    },
                )
                .with("members", members.to_string())
                .with("healthy", healthy.to_string())
                .with("quorum", quorum.to_string())
                .with("seen_by", server),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    fn report(members: &[(&str, bool)], alarms: &[&str]) -> EtcdReport {
        EtcdReport {
            members: members
                .iter()
                .map(|(m, ok)| ((*m).to_owned(), *ok))
                .collect(),
            alarms: alarms.iter().map(|a| (*a).to_owned()).collect(),
            error: String::new(),
            received_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_healthy_three_member_etcd_says_nothing() {
        let all = [("s1-a1", true), ("s2-b2", true), ("s3-c3", true)];
        let reports = vec![
            ("s1".to_owned(), report(&all, &[])),
            ("s2".to_owned(), report(&all, &[])),
        ];
        assert!(check(&reports).is_empty());
    }

    #[test]
    fn a_sick_member_is_named_by_node_and_its_loss_puts_quorum_at_risk() {
        let view = [("s1-a1", true), ("s2-b2", true), ("s3-c3", false)];
        let reports = vec![
            ("s1".to_owned(), report(&view, &["NOSPACE"])),
            ("s2".to_owned(), report(&view, &[])),
        ];
        let found = check(&reports);
        let codes: Vec<(Code, Severity, &str)> = found
            .iter()
            .map(|f| (f.code, f.severity, f.node.as_str()))
            .collect();
        assert_eq!(
            codes,
            [
                (Code::EtcdMemberUnhealthy, Severity::Blocker, "s3-c3"),
                (Code::EtcdAlarm, Severity::Blocker, ""),
                (Code::EtcdQuorumAtRisk, Severity::Blocker, "s1,s2"),
            ],
            "s3 sent no report, so its member keeps its etcd name"
        );
        assert_eq!(found[0].evidence[1].value, "s1,s2");
    }

    #[test]
    fn members_map_to_their_node_by_rke2s_naming() {
        let view = [("s1-a1", true), ("s2-b2", false), ("s3-c3", true)];
        let reports = vec![
            ("s1".to_owned(), report(&view, &[])),
            ("s2".to_owned(), report(&view, &[])),
            ("s3".to_owned(), report(&view, &[])),
        ];
        assert_eq!(check(&reports)[0].node, "s2");
    }

    #[test]
    fn one_or_two_members_cannot_lose_one_noted_as_info() {
        let reports = vec![("s1".to_owned(), report(&[("s1-a1", true)], &[]))];
        let found = check(&reports);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].node, "s1", "about the servers, not the workers");
        assert_eq!(
            (found[0].code, found[0].severity),
            (Code::EtcdQuorumAtRisk, Severity::Info)
        );
    }

    #[test]
    fn reports_that_could_not_ask_etcd_say_nothing_here() {
        let mut broken = report(&[], &[]);
        broken.error = "deadline exceeded".into();
        assert!(check(&[("s1".to_owned(), broken)]).is_empty());
    }
}
