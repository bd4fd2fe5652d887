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
