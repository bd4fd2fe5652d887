//! `rke2-hub plan report`: a plan as a change-management ticket takes it (Markdown or JSON):
//! who started it and when, the policy, the outcome, every node's times and steps, the
//! preflight's findings, and each application probe's availability. Pure: it renders the
//! `GetPlan` answer (with all of the plan's events).

use rke2ops_proto::v1 as pb;

use super::plans_client::{kind_word, rfc3339, role_word, state_word};

fn time_text(t: Option<&prost_types::Timestamp>) -> String {
    rfc3339(t).unwrap_or_else(|| "-".to_owned())
}

/// A Markdown table cell: one line, `|` escaped, control characters shown escaped.
fn cell(text: &str) -> String {
    rke2ops_common::text::escape_control(text)
        .replace('|', "\\|")
        .replace('\n', " ")
}

/// A probe's longest outage in words (`6 s from <start> (server-1 in maintenance)`); `None`
/// when it never failed.
#[must_use]
pub fn longest_outage(p: &pb::ProbeReport) -> Option<String> {
    p.longest_outage_start.as_ref()?;
    Some(format!(
        "{} s from {}{}",
        p.longest_outage_seconds,
        time_text(p.longest_outage_start.as_ref()),
        if p.longest_outage_nodes.is_empty() {
            String::new()
        } else {
            format!(" ({} in maintenance)", p.longest_outage_nodes.join(", "))
        }
    ))
}

/// The plan's preflight findings (recorded as events when it was created).
fn preflight(view: &pb::PlanView) -> Vec<&pb::PlanEvent> {
    view.events
        .iter()
        .filter(|e| e.message.starts_with("preflight "))
        .collect()
}

/// One node's events, oldest first (its steps, its phases).
fn steps<'a>(view: &'a pb::PlanView, node: &str) -> Vec<&'a pb::PlanEvent> {
    view.events.iter().filter(|e| e.node == node).collect()
}

/// The report as JSON.
#[must_use]
pub fn json(view: &pb::PlanView) -> serde_json::Value {
    let event = |e: &pb::PlanEvent| serde_json::json!({"at": time_text(e.at.as_ref()), "node": e.node, "message": e.message});
    serde_json::json!({
        "plan": view.id,
        "kind": kind_word(view.kind),
        "target_version": view.target_version,
        "channel": view.channel,
        "state": state_word(view.state),
        "reason": view.reason,
        "created_by": view.created_by,
        "origin": view.origin,
        "created_at": time_text(view.created_at.as_ref()),
        "finished_at": time_text(view.finished_at.as_ref()),
        "policy": view.policy,
        "gates": view.gates,
        "preflight": preflight(view).into_iter().map(event).collect::<Vec<_>>(),
        "nodes": view.nodes.iter().map(|n| serde_json::json!({
            "name": n.name,
            "role": role_word(n.role),
            "from_version": n.from_version,
            "phase": n.phase,
            "attempts": n.attempt,
            "started_at": time_text(n.started_at.as_ref()),
            "finished_at": time_text(n.finished_at.as_ref()),
            "detail": n.detail,
            "etcd_snapshot": n.etcd_snapshot,
            "steps": steps(view, &n.name).into_iter().map(event).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "probes": view.probes.iter().map(|p| serde_json::json!({
            "name": p.name,
            "target": p.target,
            "samples": p.samples,
            "failures": p.failures,
            "availability_percent": p.availability_percent,
            "longest_outage_seconds": p.longest_outage_seconds,
            "longest_outage_start": p.longest_outage_start.as_ref().map(|t| time_text(Some(t))),
            "longest_outage_end": p.longest_outage_end.as_ref().map(|t| time_text(Some(t))),
            "longest_outage_nodes": p.longest_outage_nodes,
            "last_error": p.last_error,
        })).collect::<Vec<_>>(),
    })
}

/// The report as Markdown.
#[must_use]
pub fn markdown(view: &pb::PlanView) -> String {
    let mut out = String::new();
    let target = if view.target_version.is_empty() {
        String::new()
    } else {
        format!(" to {}", view.target_version)
    };
    out.push_str(&format!(
        "# RKE2 maintenance plan {}: {}{target}\n\n",
        view.id,
        kind_word(view.kind)
    ));
    out.push_str("| | |\n|---|---|\n");
    for (k, v) in [
        (
            "State",
            format!("{} ({})", state_word(view.state), view.reason),
        ),
        (
            "Started by",
            format!("{} ({})", view.created_by, view.origin),
        ),
        ("Created", time_text(view.created_at.as_ref())),
        ("Finished", time_text(view.finished_at.as_ref())),
        ("Policy", view.policy.clone()),
    ] {
        out.push_str(&format!("| {k} | {} |\n", cell(&v)));
    }
    out.push_str("\n## Gates\n\n");
    for g in &view.gates {
        out.push_str(&format!("- {}\n", cell(g)));
    }
    out.push_str("\n## Preflight findings\n\n");
    let found = preflight(view);
    if found.is_empty() {
        out.push_str("None.\n");
    }
    for e in found {
        out.push_str(&format!(
            "- {}{}\n",
            if e.node.is_empty() {
                String::new()
            } else {
                format!("{}: ", cell(&e.node))
            },
            cell(&e.message)
        ));
    }
    out.push_str("\n## Nodes\n\n| # | Node | Role | From | Phase | Attempts | Started | Finished | Detail |\n|---|---|---|---|---|---|---|---|---|\n");
    for (i, n) in view.nodes.iter().enumerate() {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            i + 1,
            cell(&n.name),
            role_word(n.role),
            cell(&n.from_version),
            cell(&n.phase),
            n.attempt,
            time_text(n.started_at.as_ref()),
            time_text(n.finished_at.as_ref()),
            cell(&n.detail)
        ));
    }
    if !view.probes.is_empty() {
        out.push_str("\n## Application probes\n\n| Probe | Target | Samples | Failures | Availability | Longest outage |\n|---|---|---|---|---|---|\n");
        for p in &view.probes {
            let longest = longest_outage(p).unwrap_or_else(|| "none".to_owned());
            out.push_str(&format!(
                "| {} | {} | {} | {} | {:.2} % | {} |\n",
                cell(&p.name),
                cell(&p.target),
                p.samples,
                p.failures,
                p.availability_percent,
                cell(&longest)
            ));
        }
    }
    out.push_str("\n## Steps\n");
    for n in &view.nodes {
        let node_steps = steps(view, &n.name);
        if node_steps.is_empty() {
            continue;
        }
        out.push_str(&format!("\n### {}\n\n", cell(&n.name)));
        for e in node_steps {
            out.push_str(&format!(
                "- {} {}\n",
                time_text(e.at.as_ref()),
                cell(&e.message)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp {
            seconds: 1_790_000_000 + s,
            nanos: 0,
        })
    }

    fn view() -> pb::PlanView {
        pb::PlanView {
            id: "7".into(),
            kind: pb::PlanKind::Rotate.into(),
            state: pb::PlanState::Completed.into(),
            reason: "every node done or skipped".into(),
            created_by: "uid:0".into(),
            origin: "operator".into(),
            created_at: ts(0),
            finished_at: ts(60),
            policy: "servers one at a time".into(),
            nodes: vec![pb::PlanNodeView {
                name: "server-1".into(),
                role: pb::NodeRole::Server.into(),
                phase: "done".into(),
                attempt: 1,
                started_at: ts(1),
                finished_at: ts(30),
                detail: "rotate succeeded | all".into(),
                ..pb::PlanNodeView::default()
            }],
            events: vec![
                pb::PlanEvent {
                    at: ts(0),
                    node: "server-1".into(),
                    message: "preflight warning (noted): disk-low /var".into(),
                },
                pb::PlanEvent {
                    at: ts(2),
                    node: "server-1".into(),
                    message: "stop-unit: done".into(),
                },
            ],
            probes: vec![pb::ProbeReport {
                name: "app".into(),
                target: "http://app/health".into(),
                samples: 30,
                failures: 3,
                availability_percent: 90.0,
                longest_outage_start: ts(10),
                longest_outage_seconds: 6,
                longest_outage_nodes: vec!["server-1".into()],
                ..pb::ProbeReport::default()
            }],
            ..pb::PlanView::default()
        }
    }

    #[test]
    fn markdown_has_who_policy_nodes_findings_probes_and_steps() {
        let md = markdown(&view());
        assert!(
            md.starts_with("# RKE2 maintenance plan 7: rotate\n"),
            "{md}"
        );
        assert!(md.contains("| Started by | uid:0 (operator) |"), "{md}");
        assert!(
            md.contains("- server-1: preflight warning (noted): disk-low /var"),
            "{md}"
        );
        assert!(md.contains("| 1 | server-1 | server |"), "{md}");
        assert!(
            md.contains("rotate succeeded \\| all"),
            "a pipe cannot break the table: {md}"
        );
        assert!(
            md.contains("| app | http://app/health | 30 | 3 | 90.00 % | 6 s from"),
            "{md}"
        );
        assert!(md.contains("(server-1 in maintenance)"), "{md}");
        assert!(md.contains("### server-1\n\n- "), "{md}");
        assert!(md.contains("stop-unit: done"), "{md}");
    }

    #[test]
    fn json_carries_the_same_facts() {
        let j = json(&view());
        assert_eq!(j["plan"], "7");
        assert_eq!(j["state"], "completed");
        assert_eq!(j["preflight"].as_array().map(Vec::len), Some(1));
        assert_eq!(j["nodes"][0]["steps"].as_array().map(Vec::len), Some(2));
        assert_eq!(j["probes"][0]["failures"], 3);
    }
}
