//! Tables for the operator commands, laid out like the agent's (Go tabwriter, padding 3).

use rke2ops_common::report::{humanize, tabwriter};
use time::OffsetDateTime;

use crate::store::model::{CertRow, FileErrorRow, NodeRecord};

fn date(t: Option<OffsetDateTime>) -> String {
    t.map_or_else(
        || "-".to_owned(),
        |t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        },
    )
}

fn ago(t: OffsetDateTime, now: OffsetDateTime) -> String {
    let text = humanize::residual(now - t);
    if text == "now" {
        text
    } else {
        format!("{}ago", text)
    }
}

/// One row of `rke2-hub nodes`.
#[derive(Debug, Clone)]
pub struct NodeLine {
    /// The inventory's record.
    pub record: NodeRecord,
    /// How many files the agent could not read.
    pub file_errors: u32,
    /// The worst doctor finding, "<severity> <code>"; empty when none.
    pub worst_finding: String,
    /// How RKE2 is installed (`rpm`, `tarball`, `mixed`); empty when not reported.
    pub install_method: String,
    /// Its packages or prefix.
    pub install_detail: String,
}

/// `rke2-hub nodes` (newer columns last, FINDING then METHOD, so scripts reading the older
/// columns keep working). Nodes of several clusters are grouped by cluster, with a CLUSTER
/// column last; a single-cluster fleet's table is as it always was.
#[must_use]
pub fn nodes(nodes: &[NodeLine], now: OffsetDateTime) -> String {
    let several = nodes
        .iter()
        .any(|n| n.record.cluster != nodes[0].record.cluster);
    let mut header = [
        "NAME",
        "ROLE",
        "VERSION",
        "SERVICE",
        "CERTS",
        "RENEWAL DEADLINE",
        "LAST SEEN",
        "STATE",
        "FINDING",
        "METHOD",
    ]
    .map(str::to_owned)
    .to_vec();
    if several {
        header.push("CLUSTER".to_owned());
    }
    let mut lines = vec![header];
    let mut ordered: Vec<&NodeLine> = nodes.iter().collect();
    if several {
        ordered.sort_by(|a, b| {
            (&a.record.cluster, &a.record.name).cmp(&(&b.record.cluster, &b.record.name))
        });
    }
    for line in ordered {
        let (node, errors) = (&line.record, &line.file_errors);
        let certs = match (&node.worst_status, errors) {
            (_, n) if *n > 0 => format!(
                "{} ({n} errors)",
                node.worst_status.as_deref().unwrap_or("-")
            ),
            (Some(worst), _) => worst.clone(),
            (None, _) => "-".to_owned(),
        };
        lines.push(vec![
            node.name.clone(),
            node.role.clone(),
            node.rke2_version.clone(),
            node.service_state.clone(),
            certs,
            date(node.renewal_deadline),
            ago(node.last_seen, now),
            if node.online {
                "online".to_owned()
            } else {
                "offline".to_owned()
            },
            if line.worst_finding.is_empty() {
                "-".to_owned()
            } else {
                line.worst_finding.clone()
            },
            if line.install_method.is_empty() {
                "-".to_owned()
            } else {
                line.install_method.clone()
            },
        ]);
        if several && let Some(row) = lines.last_mut() {
            row.push(node.cluster.clone());
        }
    }
    tabwriter::layout(&lines, 3)
}

/// `rke2-hub certs`: the agent's columns with a NODE column first; after the table, each
/// node's file errors and its worst doctor finding (`findings`: node, "<severity> <code>").
#[must_use]
pub fn certs(
    rows: &[(String, CertRow)],
    errors: &[(String, FileErrorRow)],
    findings: &[(String, String)],
    now: OffsetDateTime,
) -> String {
    let mut lines = vec![
        [
            "NODE",
            "FILENAME",
            "SUBJECT",
            "USAGES",
            "EXPIRES",
            "RESIDUAL TIME",
            "STATUS",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    let expires =
        time::macros::format_description!("[month repr:short] [day], [year] [hour]:[minute] UTC");
    for (node, row) in rows {
        let filename = row.path.rsplit('/').next().unwrap_or(&row.path).to_owned();
        let cn = row
            .subject
            .split(", ")
            .find_map(|part| part.strip_prefix("CN="))
            .unwrap_or(&row.subject)
            .to_owned();
        let when = if row.status == "NOT YET VALID" {
            row.not_before
        } else {
            row.not_after
        };
        lines.push(vec![
            node.clone(),
            filename,
            cn,
            if row.usages.is_empty() {
                "Unknown".to_owned()
            } else {
                row.usages.join(",")
            },
            when.format(expires).unwrap_or_default(),
            humanize::residual(row.not_after - now),
            row.status.clone(),
        ]);
    }
    let mut out = tabwriter::layout(&lines, 3);
    if !errors.is_empty() {
        out.push('\n');
        for (node, error) in errors {
            out.push_str(&format!(
                "error: {node}: {}: {}\n",
                error.path, error.reason
            ));
        }
    }
    if !findings.is_empty() {
        out.push('\n');
        for (node, finding) in findings {
            out.push_str(&format!(
                "finding: {node}: {finding} (rke2-hub doctor --node {node})\n"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn line(name: &str, cluster: &str) -> NodeLine {
        let t = datetime!(2026-01-01 00:00 UTC);
        NodeLine {
            record: NodeRecord {
                name: name.to_owned(),
                role: "server".to_owned(),
                rke2_version: "v1.34.1+rke2r1".to_owned(),
                agent_version: "0.1.0".to_owned(),
                service_state: "active".to_owned(),
                worst_status: Some("OK".to_owned()),
                renewal_deadline: None,
                online: true,
                online_changed_at: t,
                first_seen: t,
                last_seen: t,
                certificates_at: None,
                cluster: cluster.to_owned(),
            },
            file_errors: 0,
            worst_finding: String::new(),
            install_method: "tarball".to_owned(),
            install_detail: String::new(),
        }
    }

    fn table(lines: &[NodeLine]) -> Vec<Vec<String>> {
        nodes(lines, datetime!(2026-01-01 00:00:05 UTC))
            .lines()
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .collect()
    }

    #[test]
    fn one_cluster_keeps_the_old_columns_several_are_grouped_with_a_cluster_column() {
        let single = table(&[line("b", "default"), line("a", "default")]);
        assert_eq!(single[0].last().map(String::as_str), Some("METHOD"));
        assert_eq!(single[1][0], "b", "order as given");
        let several = table(&[line("s1", "prod"), line("s1b", "dev"), line("s2", "prod")]);
        assert_eq!(several[0].last().map(String::as_str), Some("CLUSTER"));
        let rows: Vec<(&str, &str)> = several[1..]
            .iter()
            .map(|r| (r[0].as_str(), r.last().map_or("", String::as_str)))
            .collect();
        assert_eq!(rows, [("s1b", "dev"), ("s1", "prod"), ("s2", "prod")]);
    }
}
