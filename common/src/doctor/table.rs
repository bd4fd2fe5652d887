//! `doctor --output table`: the `check` table's layout (Go tabwriter, padding 3, a leading
//! empty line, header, dashes), one row per finding, then each finding's fix after an empty
//! line, numbered like the rows so long commands do not stretch the table.

use super::Finding;
use crate::report::tabwriter;

const HEADER: [&str; 5] = ["#", "SEVERITY", "CODE", "OBJECT", "EVIDENCE"];
const DASHES: [&str; 5] = ["-", "--------", "----", "------", "--------"];

/// Renders `findings` (already sorted); "no findings" when there are none.
#[must_use]
pub fn render(findings: &[Finding]) -> String {
    if findings.is_empty() {
        return "\nno findings\n".to_owned();
    }
    let mut lines: Vec<Vec<String>> = Vec::with_capacity(findings.len() + 3);
    lines.push(vec![String::new()]);
    lines.push(HEADER.iter().map(|s| (*s).to_owned()).collect());
    lines.push(DASHES.iter().map(|s| (*s).to_owned()).collect());
    for (i, f) in findings.iter().enumerate() {
        let evidence = f
            .evidence
            .iter()
            .map(|e| format!("{}={}", e.field, e.value))
            .collect::<Vec<_>>()
            .join("; ");
        lines.push(vec![
            (i + 1).to_string(),
            f.severity.as_str().to_uppercase(),
            f.code.as_str().to_owned(),
            f.object.clone(),
            evidence,
        ]);
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
    fn no_findings_says_so() {
        assert_eq!(render(&[]), "\nno findings\n");
    }

    #[test]
    fn control_characters_in_a_fix_are_escaped() {
        let f = Finding::new(Code::DiskLow, Severity::Warning, "n", "o", "a\u{1b}[2Jb");
        assert!(!render(&[f]).contains('\u{1b}'));
    }
}
