//! Serving certificates that lack one of the node's current names: after a hostname or IP
//! change clients see `x509: certificate is valid for <old-names>, not <new-name>`.

use std::net::IpAddr;

use rke2ops_common::certs::model::Origin;
use rke2ops_common::doctor::{Code, Finding, Severity};

use super::Facts;

/// A serving certificate, the `rotate --service` that reissues it, and whether config.yaml's
/// `tls-san` entries belong in it (`reference/rke2.md`, leaves table).
pub const SERVING: [(&str, &str, bool); 3] = [
    ("server/tls/serving-kube-apiserver.crt", "api-server", true),
    ("server/tls/etcd/server-client.crt", "etcd", false),
    ("agent/serving-kubelet.crt", "kubelet", false),
];

/// Whether `sans` covers `name` (IPs compared as addresses, DNS names case-insensitively).
fn covers(sans: &[String], name: &str) -> bool {
    match name.parse::<IpAddr>() {
        Ok(ip) => sans
            .iter()
            .any(|s| s.parse::<IpAddr>().is_ok_and(|s| s == ip)),
        Err(_) => sans.iter().any(|s| s.eq_ignore_ascii_case(name)),
    }
}

/// One warning per serving certificate that misses any of the node's names.
#[must_use]
pub fn check(facts: &Facts) -> Vec<Finding> {
    let unit = facts.unit_name();
    let mut findings = Vec::new();
    for (path, service, with_tls_san) in SERVING {
        let Some(cert) = facts
            .inventory
            .certificates
            .iter()
            .find(|c| c.path == path && c.index == 0 && c.origin == Origin::File)
        else {
            continue;
        };
        let mut wanted: Vec<String> = facts.names.ips.iter().map(ToString::to_string).collect();
        wanted.extend(facts.names.hostname.clone());
        if with_tls_san {
            wanted.extend(facts.names.tls_sans.iter().cloned());
        }
        let mut missing: Vec<String> = wanted
            .into_iter()
            .filter(|n| !covers(&cert.sans, n))
            .collect();
        missing.dedup();
        if missing.is_empty() {
            continue;
        }
        findings.push(
            Finding::new(
                Code::ServingCertMissingSan,
                Severity::Warning,
                &facts.node,
                path,
                format!(
                    "systemctl stop {unit} && rke2 certificate rotate --service {service} && \
                     systemctl start {unit}"
                ),
            )
            .with("missing", missing.join(","))
            .with("sans", cert.sans.join(",")),
        );
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::super::NodeNames;
    use super::super::test_support::{ca, facts_with, write};
    use super::*;
    use rke2ops_common::certs::{ScanConfig, Scanner};

    fn facts_for(apiserver_sans: &[&str], names: NodeNames) -> (tempfile::TempDir, Facts) {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = ca("rke2-server");
        write(dir.path(), "server/tls/server-ca.crt", &server.pem);
        let (cert, key) = server.leaf("kube-apiserver", apiserver_sans, 0, 365);
        write(dir.path(), "server/tls/serving-kube-apiserver.crt", &cert);
        write(dir.path(), "server/tls/serving-kube-apiserver.key", &key);
        let inventory = Scanner::new(ScanConfig::new(dir.path(), None, &[])).scan();
        let mut facts = facts_with(vec![]);
        facts.inventory = inventory;
        facts.names = names;
        (dir, facts)
    }

    fn names() -> NodeNames {
        NodeNames {
            ips: vec![
                "10.0.0.5".parse().expect("ip"),
                "fd00::5".parse().expect("ip"),
            ],
            hostname: Some("cp-1".to_owned()),
            tls_sans: vec!["api.example.com".to_owned()],
        }
    }

    #[test]
    fn new_ip_and_tls_san_missing_from_the_apiserver_cert_are_named() {
        let (_d, facts) = facts_for(&["kubernetes", "cp-1", "10.0.0.4", "fd00::5"], names());
        let findings = check(&facts);
        assert_eq!(findings.len(), 1);
        let f = &findings[0];
        assert_eq!(
            (f.code, f.severity),
            (Code::ServingCertMissingSan, Severity::Warning)
        );
        assert_eq!(f.object, "server/tls/serving-kube-apiserver.crt");
        assert_eq!(f.evidence[0].value, "10.0.0.5,api.example.com");
        assert!(
            f.fix
                .contains("rke2 certificate rotate --service api-server")
        );
    }

    #[test]
    fn a_cert_with_every_name_is_fine_whatever_the_case_or_ip_spelling() {
        let (_d, facts) = facts_for(
            &["CP-1", "10.0.0.5", "fd00:0:0::5", "API.example.com"],
            names(),
        );
        assert_eq!(check(&facts), vec![]);
    }
}
