//! `docs/runbook.md`, the manual runbook rke2-ops replaces, as data: its `sh` blocks are the
//! commands the real-client tests run verbatim inside a node and the demo prints, so the
//! document, the tests and the demo cannot drift apart.

/// The runbook's text, compiled in.
pub const RUNBOOK: &str = include_str!("../../docs/runbook.md");

/// Runs `command` in a login-like shell on `node`: the runbook's `export` line first (as the
/// operator typed it: `KUBECONFIG` and RKE2's `bin` on `PATH`), `HOME` on the node's private
/// `/tmp` for kubectl's cache.
///
/// # Panics
/// When the command cannot be started on the node.
#[must_use]
pub fn run(node: &crate::ground::Node, command: &str) -> crate::ground::ExecOutput {
    let export = section(1)[0];
    node.exec(&[
        "sh",
        "-c",
        &format!("{export}\nexport HOME=/tmp\n{command}"),
    ])
    .expect("the command runs")
}

/// [`run`], which must succeed; its stdout (often unused: the command is run for its effect).
///
/// # Panics
/// When the command fails (with its output).
pub fn ok(node: &crate::ground::Node, command: &str) -> String {
    let out = run(node, command);
    assert!(
        out.success(),
        "{}: `{command}` failed ({}):\n{}{}",
        node.name(),
        out.status,
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// The commands of the `sh` blocks under the `## {number}.` heading, in order (blank lines
/// dropped).
#[must_use]
pub fn section(number: u32) -> Vec<&'static str> {
    let heading = format!("## {number}.");
    let mut in_section = false;
    let mut in_block = false;
    let mut out = Vec::new();
    for line in RUNBOOK.lines() {
        if line.starts_with("## ") {
            in_section = line.starts_with(&heading);
            continue;
        }
        if !in_section {
            continue;
        }
        match line.trim() {
            "```sh" => in_block = true,
            "```" => in_block = false,
            "" => {}
            command if in_block => out.push(command),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_hold_the_runbook_commands() {
        let look = section(1);
        assert_eq!(
            look.first().map(|c| c.starts_with("export KUBECONFIG=")),
            Some(true)
        );
        assert!(look.contains(&"kubectl get nodes -o wide"), "{look:?}");
        assert!(
            look.iter()
                .any(|c| c.contains("etcdctl") && c.ends_with("member list"))
        );
        assert_eq!(
            section(2),
            [
                "kubectl drain <worker> --ignore-daemonsets --delete-emptydir-data",
                "kubectl uncordon <worker>"
            ]
        );
        assert!(section(3).contains(&"kubectl get plans -n system-upgrade"));
        assert!(section(9).is_empty());
    }
}
