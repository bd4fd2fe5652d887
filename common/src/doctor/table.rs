//! `doctor --output table`: the `check` table's layout (Go tabwriter, padding 3, a leading
//! empty line, header, dashes), one row per finding, then each finding's fix after an empty
//! line, numbered like the rows so long commands do not stretch the table.

use super::Finding;
use crate::report::tabwriter;

/// Renders one node's `findings` (already sorted); "no findings" when there are none.
#[must_use]
pub fn render(findings: &[Finding]) -> String {
    layout(findings, false)
}

/// [`render`] for a fleet: a NODE column after CODE (the nodes a finding is about, `-` for
/// the cluster as a whole).
#[must_use]
pub fn render_fleet(findings: &[Finding]) -> String {
    layout(findings, true)
}

fn layout(findings: &[Finding], with_node: bool) -> String {
    if findings.is_empty() {
        return "\nno findings\n".to_owned();
    }
    let columns = |row: [String; 6]| -> Vec<String> {
        let [n, severity, code, node, object, evidence] = row;
        if with_node {
            vec![n, severity, code, node, object, evidence]
        } else {
            vec![n, severity, code, object, evidence]
        }
    };
    let words = |w: [&str; 6]| columns(w.map(str::to_owned));
    let mut lines: Vec<Vec<String>> = Vec::with_capacity(findings.len() + 3);
    lines.push(vec![String::new()]);
    lines.push(words([
        "#", "SEVERITY", "CODE", "NODE", "OBJECT", "EVIDENCE",
    ]));
    lines.push(words([
        "-", "--------", "----", "----", "------", "--------",
    ]));
    for (i, f) in findings.iter().enumerate() {
        let evidence = f
            .evidence
            .iter()
            .map(|e| format!("{}={}", e.field, e.value))
            .collect::<Vec<_>>()
            .join("; ");
        lines.push(columns([
            (i + 1).to_string(),
            f.severity.as_str().to_uppercase(),
            f.code.as_str().to_owned(),
            if f.node.is_empty() {
                "-".to_owned()
            } else {
                f.node.clone()
            },
            f.object.clone(),
            evidence,
        ]));
    }
    let mut out = tabwriter::layout(&lines, 3);
    out.push('\n');
    for (i, f) in findings.iter().enumerate() {
        out.push_str(&format!(
            "fix {}: {}\n",
            i + 1,
            crate::text::escape_control(&f.fix)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{Code, Severity};
    use super::*;

    #[test]
    fn rows_are_laid_out_like_check_and_fixes_follow() {
        let findings = vec![
            Finding::new(
                Code::PemEmptyOrCorrupt,
                Severity::Blocker,
                "n1",
                "server/tls/client-admin.crt",
                "systemctl stop rke2-server",
            )
            .with("size", "0"),
            Finding::new(Code::DiskLow, Severity::Warning, "n1", "/var", "free space"),
        ];
        let out = render(&findings);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "");
        assert_eq!(
            lines[1],
            "#   SEVERITY   CODE                   OBJECT                        EVIDENCE"
        );
        assert!(lines[3].starts_with(
            "1   BLOCKER    pem-empty-or-corrupt   server/tls/client-admin.crt   size=0"
        ));
        assert!(out.contains("\nfix 1: systemctl stop rke2-server\nfix 2: free space\n"));
    }

    #[test]
    fn the_fleet_table_names_each_findings_nodes() {
        let findings = vec![
            Finding::new(Code::DiskLow, Severity::Warning, "w1", "/var", "free space"),
            Finding::new(
                Code::SucLeftover,
                Severity::Warning,
                "",
                "crd x",
                "kubectl delete",
            ),
        ];
        let out = render_fleet(&findings);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[1],
            "#   SEVERITY   CODE           NODE   OBJECT   EVIDENCE"
        );
        assert!(
            lines[3].starts_with("1   WARNING    disk-low       w1     /var"),
            "{out}"
        );
        assert!(
            lines[4].starts_with("2   WARNING    suc-leftover   -      crd x"),
            "{out}"
        );
    }

    #[test]
    fn no_findings_says_so() {
        assert_eq!(render(&[]), "\nno findings\n");
    }

    #[test]
    fn control_characters_in_a_fix_are_escaped() {
        let f = Finding::new(Code::DiskLow, Severity::Warning, "n", "o", "a\u{1b}[2Jb");
        assert!(!render(&[f]).contains('\u{1b}'));
    }
}
