//! The `doctor` command: gather, check, print (table or JSON), exit 0/1/2.

use std::io::Write;

use rke2ops_common::certs::Scanner;
use rke2ops_common::doctor::{self, Report};

use super::{Options, all_findings, gather};
use crate::cli::Output;
use crate::config::Config;

/// sysexits' EX_CONFIG: config.yaml (or another input) is bad.
pub const EXIT_BAD_INPUT: u8 = 78;

/// Runs every check once and writes the report to `out`; returns the exit code (0 nothing
/// or info only, 1 warnings, 2 any blocker, 78 bad input named on stderr).
///
/// # Errors
/// When the runtime cannot start or writing to `out` fails.
pub fn run(
    config: &Config,
    options: &Options,
    output: Output,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let scan = gather::scan_config(config);
    let inventory = Scanner::new(scan.clone()).scan();
    let (unit, etcd) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            tokio::join!(gather::unit_facts(), gather::etcd_facts(&config.data_dir))
        });
    let facts = match gather::facts(config, options, &scan, inventory, unit) {
        Ok(mut facts) => {
            facts.etcd = etcd;
            facts
        }
        Err(e) => {
            eprintln!("rke2-node-agent doctor: {e}");
            return Ok(EXIT_BAD_INPUT);
        }
    };
    let findings = all_findings(&facts, options);
    let code = doctor::exit_code(&findings);
    match output {
        Output::Table => out.write_all(doctor::table::render(&findings).as_bytes())?,
        Output::Json => {
            let report = Report {
                node: facts.node.clone(),
                findings,
                exit_code: code,
            };
            serde_json::to_writer_pretty(&mut *out, &report)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigLayer, FileConfig};
    use crate::doctor::test_support::{ca, write};

    fn config(root: &std::path::Path, node_config: &str) -> Config {
        write(root, "etc/config.yaml", node_config);
        let overrides = ConfigLayer {
            data_dir: Some(root.join("data")),
            admin_kubeconfig: Some(root.join("etc/rke2.yaml")),
            node_config: Some(root.join("etc/config.yaml")),
            state_dir: Some(root.join("state")),
            ..ConfigLayer::default()
        };
        Config::resolve(FileConfig::default(), overrides).expect("config")
    }

    fn options() -> Options {
        Options {
            warn_days: 120,
            staging_min_free: 0,
            etcd_min_free: 0,
        }
    }

    #[test]
    fn json_report_of_an_empty_pem_names_the_backup_and_exits_2() {
        let dir = tempfile::tempdir().expect("tempdir");
        let client = ca("rke2-client");
        let (cert, key) = client.leaf("system:admin", &[], 0, 365);
        write(dir.path(), "data/server/tls/client-ca.crt", &client.pem);
        write(dir.path(), "data/server/tls/client-admin.crt", "");
        write(dir.path(), "data/server/tls/client-admin.key", &key);
        write(
            dir.path(),
            "data/server/tls-1700000000/client-admin.crt",
            &cert,
        );
        let config = config(dir.path(), "node-name: cp-1\n");
        let mut out = Vec::new();
        let code = run(&config, &options(), Output::Json, &mut out).expect("runs");
        assert_eq!(code, 2);
        let report: Report = serde_json::from_slice(&out).expect("JSON report");
        assert_eq!(report.node, "cp-1");
        assert_eq!(report.exit_code, 2);
        let pem = report
            .findings
            .iter()
            .find(|f| f.code == rke2ops_common::doctor::Code::PemEmptyOrCorrupt)
            .expect("pem finding");
        assert_eq!(pem.object, "server/tls/client-admin.crt");
        assert!(
            pem.fix.contains("server/tls-1700000000/client-admin.crt"),
            "{}",
            pem.fix
        );
    }

    #[test]
    fn a_bad_config_yaml_is_named_and_exits_78() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path(), "node-ip: [not-an-ip]\n");
        let mut out = Vec::new();
        let code = run(&config, &options(), Output::Table, &mut out).expect("runs");
        assert_eq!(code, EXIT_BAD_INPUT);
        assert!(out.is_empty());
    }
}
