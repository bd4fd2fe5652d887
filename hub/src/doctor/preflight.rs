//! A plan's preflight: the fleet doctor's findings decide whether a plan may start. Pure:
//! findings and the plan's scope in, the blockers that refuse it (and those the operator
//! accepted with `--accept CODE`) out.

use rke2ops_common::doctor::{Code, Finding, Severity};

/// What a plan's scope makes of the findings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preflight {
    /// Blockers that refuse the plan (their code was not accepted).
    pub refused: Vec<Finding>,
    /// Blockers the operator accepted (recorded in the plan's events and the audit log).
    pub accepted: Vec<Finding>,
    /// Everything else in scope (warnings, info), shown with a dry run.
    pub noted: Vec<Finding>,
}

/// Blockers every plan remedies on the node it operates: each restarts RKE2, and a start
/// renews the leaves inside the renewal window (rotate reissues them all). They are what the
/// plan is for, so they never refuse it or hold its node.
pub const REMEDIED_BY_EVERY_PLAN: [Code; 3] = [
    Code::CertExpired,
    Code::RenewalDeadlinePassed,
    Code::ServicePastRenewalWindow,
];

impl Preflight {
    /// Sorts `findings` for a plan over `nodes` (empty: every node) that drains (`drain`):
    /// findings about other nodes are out of scope (cluster-wide ones, with no node, never
    /// are), without a drain a budget blocks nothing, and what the plan remedies
    /// ([`REMEDIED_BY_EVERY_PLAN`]) is only noted.
    #[must_use]
    pub fn of(findings: Vec<Finding>, nodes: &[String], drain: bool, accept: &[Code]) -> Self {
        let mut out = Self::default();
        for f in findings {
            let in_scope = nodes.is_empty()
                || f.node.is_empty()
                || nodes.iter().any(|n| super::is_about(&f, n));
            if !in_scope || (!drain && f.code == Code::PdbBlocksDrain) {
                continue;
            }
            if f.severity != Severity::Blocker || REMEDIED_BY_EVERY_PLAN.contains(&f.code) {
                out.noted.push(f);
            } else if accept.contains(&f.code) {
                out.accepted.push(f);
            } else {
                out.refused.push(f);
            }
        }
        out
    }

    /// The refusal naming every refused finding (empty when nothing refuses).
    #[must_use]
    pub fn refusal(&self) -> String {
        if self.refused.is_empty() {
            return String::new();
        }
        let mut codes: Vec<&str> = self.refused.iter().map(|f| f.code.as_str()).collect();
        codes.dedup();
        let lines: Vec<String> = self.refused.iter().map(line).collect();
        format!(
            "the plan's preflight found {} blocker(s): {}; fix them (rke2-hub doctor shows \
             the commands) or pass {}",
            self.refused.len(),
            lines.join("; "),
            codes
                .iter()
                .map(|c| format!("--accept {c}"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    }

    /// Why the next node may not start, when a blocker about it (or the cluster) that the
    /// plan did not accept is found in the checks run right before it: the same rules as at
    /// creation, so a budget created mid-plan holds the node before its drain.
    #[must_use]
    pub fn hold(&self) -> Option<String> {
        if self.refused.is_empty() {
            return None;
        }
        let lines: Vec<String> = self.refused.iter().map(line).collect();
        Some(format!(
            "the doctor holds the next node: {}; fix it (rke2-hub doctor shows the commands), \
             or abort and start again with --accept {}",
            lines.join("; "),
            self.refused[0].code
        ))
    }
}

/// One finding in one line: `code object [node N] (evidence)`.
#[must_use]
pub fn line(f: &Finding) -> String {
    let evidence = f
        .evidence
        .iter()
        .map(|e| format!("{}={}", e.field, e.value))
        .collect::<Vec<_>>()
        .join(", ");
    let node = if f.node.is_empty() {
        String::new()
    } else {
        format!(" on {}", f.node)
    };
    format!("{} {}{node} ({evidence})", f.code, f.object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(code: Code, severity: Severity, node: &str) -> Finding {
        Finding::new(code, severity, node, format!("obj-{node}"), "fix").with("field", "value")
    }

    fn sample() -> Vec<Finding> {
        vec![
            finding(Code::PdbBlocksDrain, Severity::Blocker, "w1,w2"),
            finding(Code::VersionSkew, Severity::Blocker, "w3"),
            finding(Code::SucLeftover, Severity::Warning, ""),
        ]
    }

    #[test]
    fn blockers_refuse_a_plan_and_the_refusal_names_each_with_its_accept_flag() {
        let p = Preflight::of(sample(), &[], true, &[]);
        assert_eq!(p.refused.len(), 2);
        assert_eq!(p.noted.len(), 1);
        let msg = p.refusal();
        assert!(
            msg.contains("pdb-blocks-drain obj-w1,w2 on w1,w2 (field=value)"),
            "{msg}"
        );
        assert!(msg.contains("version-skew obj-w3 on w3"), "{msg}");
        assert!(
            msg.ends_with("--accept pdb-blocks-drain --accept version-skew"),
            "{msg}"
        );
    }

    #[test]
    fn accepted_codes_no_longer_refuse_and_are_kept_for_the_record() {
        let p = Preflight::of(
            sample(),
            &[],
            true,
            &[Code::PdbBlocksDrain, Code::VersionSkew],
        );
        assert!(p.refused.is_empty());
        assert_eq!(p.refusal(), "");
        assert_eq!(p.accepted.len(), 2);
    }

    #[test]
    fn findings_about_nodes_outside_the_plan_do_not_refuse_it() {
        let p = Preflight::of(sample(), &["w2".to_owned()], true, &[]);
        assert_eq!(p.refused.len(), 1);
        assert_eq!(p.refused[0].code, Code::PdbBlocksDrain);
        assert_eq!(
            p.noted.len(),
            1,
            "cluster-wide findings are always in scope"
        );
    }

    #[test]
    fn a_plan_without_drain_is_not_refused_by_a_budget() {
        let p = Preflight::of(sample(), &[], false, &[]);
        assert_eq!(p.refused.len(), 1);
        assert_eq!(p.refused[0].code, Code::VersionSkew);
    }

    #[test]
    fn what_every_plan_remedies_is_noted_not_refused() {
        let findings = vec![
            finding(Code::CertExpired, Severity::Blocker, "w1"),
            finding(Code::ServicePastRenewalWindow, Severity::Blocker, "w1"),
            finding(Code::PemEmptyOrCorrupt, Severity::Blocker, "w1"),
        ];
        let p = Preflight::of(findings, &[], true, &[]);
        assert_eq!(p.noted.len(), 2);
        assert_eq!(p.refused.len(), 1);
        assert_eq!(p.refused[0].code, Code::PemEmptyOrCorrupt);
    }

    #[test]
    fn a_hold_names_the_blocker_and_how_to_get_past_it() {
        let p = Preflight::of(sample(), &["w1".to_owned()], true, &[]);
        let hold = p.hold().expect("held");
        assert!(
            hold.starts_with("the doctor holds the next node: pdb-blocks-drain obj-w1,w2"),
            "{hold}"
        );
        assert!(hold.ends_with("--accept pdb-blocks-drain"), "{hold}");
        let accepted = Preflight::of(sample(), &["w1".to_owned()], true, &[Code::PdbBlocksDrain]);
        assert_eq!(accepted.hold(), None);
    }
}
