//! What the agents reported: every node's own findings (certificates, PEM files,
//! kubeconfigs, SANs, disk, its RKE2 unit) as stored, each node's clock against the hub's,
//! and the nodes whose agent is offline (their findings are as old as their last report).

use std::time::Duration;

use rke2ops_common::doctor::{Code, Finding, Severity};
use time::OffsetDateTime;

use crate::store::NodeFindings;

/// One node as the doctor sees its agent.
#[derive(Debug, Clone, Copy)]
pub struct AgentView<'a> {
    /// Its stored report.
    pub reported: &'a NodeFindings,
    /// Its agent has a live stream now.
    pub online: bool,
    /// When the hub last heard from it.
    pub last_seen: OffsetDateTime,
}

/// The findings of every node's agent, its clock, and whether it is online.
#[must_use]
pub fn check(agents: &[AgentView<'_>], clock_threshold: Duration) -> Vec<Finding> {
    let mut out = Vec::new();
    for agent in agents {
        let r = agent.reported;
        out.extend(r.findings.iter().cloned());
        if let Some(offset) = r.clock_offset_ms
            && let Some(f) = super::clock::check(&r.node, offset, clock_threshold)
        {
            out.push(f);
        }
        if !agent.online {
            let mut f = Finding::new(
                Code::AgentOffline,
                Severity::Warning,
                &r.node,
                "rke2-node-agent",
                format!(
                    "on {}: systemctl status rke2-node-agent; journalctl -u rke2-node-agent -n 50",
                    r.node
                ),
            )
            .with("last_seen", agent.last_seen.to_string());
            if let Some(at) = r.reported_at {
                f = f.with("findings_as_of", at.to_string());
            }
            out.push(f);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(node: &str, findings: Vec<Finding>, offset: Option<i64>) -> NodeFindings {
        NodeFindings {
            node: node.into(),
            reported_at: Some(OffsetDateTime::UNIX_EPOCH),
            clock_offset_ms: offset,
            findings,
        }
    }

    #[test]
    fn reported_findings_pass_through_and_clock_and_offline_are_added() {
        let pem = Finding::new(
            Code::PemEmptyOrCorrupt,
            Severity::Blocker,
            "w1",
            "agent/client-kubelet.crt",
            "restore",
        );
        let w1 = report("w1", vec![pem.clone()], Some(120_000));
        let s1 = report("s1", Vec::new(), Some(5));
        let found = check(
            &[
                AgentView {
                    reported: &w1,
                    online: true,
                    last_seen: OffsetDateTime::UNIX_EPOCH,
                },
                AgentView {
                    reported: &s1,
                    online: false,
                    last_seen: OffsetDateTime::UNIX_EPOCH,
                },
            ],
            Duration::from_secs(30),
        );
        let codes: Vec<(Code, &str)> = found.iter().map(|f| (f.code, f.node.as_str())).collect();
        assert_eq!(
            codes,
            [
                (Code::PemEmptyOrCorrupt, "w1"),
                (Code::ClockSkew, "w1"),
                (Code::AgentOffline, "s1")
            ]
        );
        assert_eq!(found[0], pem);
    }

    #[test]
    fn a_healthy_online_fleet_has_nothing_to_say() {
        let s1 = report("s1", Vec::new(), Some(-800));
        let view = AgentView {
            reported: &s1,
            online: true,
            last_seen: OffsetDateTime::UNIX_EPOCH,
        };
        assert!(check(&[view], Duration::from_secs(30)).is_empty());
    }
}
