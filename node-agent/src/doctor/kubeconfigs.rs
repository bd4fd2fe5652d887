//! Kubeconfig copies after a rotation: a client certificate the current client CA did not
//! sign (`x509: certificate signed by unknown authority`), or a `certificate-authority-data`
//! that is not `rke2.yaml`'s. Both come from the scanner's inventory (embedded certificates
//! are checked against the tree's CAs there); nothing is parsed again here.

use std::collections::BTreeSet;

use rke2ops_common::certs::model::{ChainCheck, Origin};
use rke2ops_common::doctor::{Code, Finding, Severity};

use super::Facts;

/// `doctor --fix code`, or the shell a person would run to refresh `copy` from `admin`
/// keeping its `server:` (what rotations do through `ops::files::refresh_kubeconfig`).
#[must_use]
pub fn refresh_command(code: Code, admin: &str, copy: &str) -> String {
    format!(
        "rke2-node-agent doctor --fix {code} (or by hand: server=$(kubectl \
         --kubeconfig {copy} config view -o jsonpath='{{.clusters[0].cluster.server}}') && cp \
         {admin} {copy} && kubectl --kubeconfig {copy} config set-cluster default --server \"$server\")"
    )
}

fn field_is(origin: &Origin, want: &str) -> bool {
    matches!(origin, Origin::Kubeconfig { field, .. } if field == want)
}

/// Fingerprints of `path`'s `certificate-authority-data` certificates.
fn ca_data(facts: &Facts, path: &str) -> BTreeSet<String> {
    facts
        .inventory
        .certificates
        .iter()
        .filter(|c| c.path == path && field_is(&c.origin, "certificate-authority-data"))
        .map(|c| c.fingerprint.clone())
        .collect()
}

/// Findings for every configured copy (and root's `~/.kube/config` when present).
#[must_use]
pub fn check(facts: &Facts) -> Vec<Finding> {
    let admin_ca = ca_data(facts, &facts.admin_kubeconfig);
    let mut findings = Vec::new();
    for copy in &facts.kubeconfig_copies {
        for cert in facts.inventory.certificates.iter().filter(|c| {
            &c.path == copy && !c.is_ca && field_is(&c.origin, "client-certificate-data")
        }) {
            let why = match &cert.chain {
                ChainCheck::BadSignature { ca_path } => format!("not signed by {ca_path}"),
                ChainCheck::UnknownIssuer => "no CA in the tree has its issuer's name".to_owned(),
                ChainCheck::NotApplicable | ChainCheck::Verified { .. } => continue,
            };
            findings.push(
                Finding::new(
                    Code::KubeconfigUnknownAuthority,
                    Severity::Warning,
                    &facts.node,
                    copy,
                    refresh_command(
                        Code::KubeconfigUnknownAuthority,
                        &facts.admin_kubeconfig,
                        copy,
                    ),
                )
                .with("field", "client-certificate-data")
                .with("subject", &cert.subject_cn)
                .with("issuer", &cert.issuer)
                .with("chain", why),
            );
        }
        // Without rke2.yaml (an agent node) there is nothing to compare with.
        if admin_ca.is_empty() {
            continue;
        }
        let copy_ca = ca_data(facts, copy);
        if !copy_ca.is_empty() && copy_ca != admin_ca {
            findings.push(
                Finding::new(
                    Code::KubeconfigCaDiffers,
                    Severity::Warning,
                    &facts.node,
                    copy,
                    refresh_command(Code::KubeconfigCaDiffers, &facts.admin_kubeconfig, copy),
                )
                .with("field", "certificate-authority-data")
                .with("differs_from", &facts.admin_kubeconfig),
            );
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{ca, facts_with, kubeconfig, write};
    use super::*;
    use rke2ops_common::certs::{ScanConfig, Scanner};

    /// A data dir whose client CA is `current`, with rke2.yaml from it and a copy whose
    /// client certificate and CA come from `copy_ca`.
    fn scan_with_copy(same_ca: bool) -> (tempfile::TempDir, Facts) {
        let dir = tempfile::tempdir().expect("tempdir");
        let client = ca("rke2-client");
        let server = ca("rke2-server");
        write(dir.path(), "data/server/tls/client-ca.crt", &client.pem);
        write(dir.path(), "data/server/tls/server-ca.crt", &server.pem);
        let (admin_cert, admin_key) = client.leaf("system:admin", &[], 0, 365);
        let admin = write(
            dir.path(),
            "rke2.yaml",
            &kubeconfig(
                "https://127.0.0.1:6443",
                &server.pem,
                &admin_cert,
                &admin_key,
            ),
        );
        let copy_text = if same_ca {
            kubeconfig("https://lb:6443", &server.pem, &admin_cert, &admin_key)
        } else {
            // A copy from before a CA rotation: other client CA, other server CA.
            let old_client = ca("rke2-client");
            let old_server = ca("rke2-server");
            let (cert, key) = old_client.leaf("system:admin", &[], 0, 365);
            kubeconfig("https://lb:6443", &old_server.pem, &cert, &key)
        };
        let copy = write(dir.path(), "home/.kube/config", &copy_text);
        let inventory = Scanner::new(ScanConfig::new(
            dir.path().join("data"),
            Some(admin.clone()),
            std::slice::from_ref(&copy),
        ))
        .scan();
        let mut facts = facts_with(vec![]);
        facts.inventory = inventory;
        facts.admin_kubeconfig = admin.display().to_string();
        facts.kubeconfig_copies = vec![copy.display().to_string()];
        (dir, facts)
    }

    #[test]
    fn copy_from_before_a_ca_rotation_has_unknown_authority_and_other_ca_data() {
        let (_dir, facts) = scan_with_copy(false);
        let findings = check(&facts);
        let codes: Vec<Code> = findings.iter().map(|f| f.code).collect();
        assert_eq!(
            codes,
            vec![Code::KubeconfigUnknownAuthority, Code::KubeconfigCaDiffers],
            "{findings:#?}"
        );
        assert!(findings.iter().all(|f| f.severity == Severity::Warning));
        assert!(
            findings[0]
                .fix
                .contains("--fix kubeconfig-unknown-authority")
        );
        assert!(findings[1].fix.contains("--fix kubeconfig-ca-differs"));
    }

    #[test]
    fn copy_matching_rke2_yaml_is_fine() {
        let (_dir, facts) = scan_with_copy(true);
        assert_eq!(check(&facts), vec![]);
    }
}
