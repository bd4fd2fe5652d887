//! `rke2-hub doctor`: asks the hub for the fleet-wide findings (`Doctor` RPC) and prints them
//! as the agent's doctor does (common's table, or its JSON report); the exit code is
//! common's: 0 nothing (or info only), 1 warnings, 2 a blocker; 64 for an unknown `--node`.

use rke2ops_common::doctor::{self, Finding, Report};
use rke2ops_proto::v1 as pb;

use crate::cli::client::{connect, refused};
use crate::cli::{DoctorArgs, Output};
use crate::grpc::convert;

/// Exit code for an unknown `--node` (a usage error).
pub const EXIT_UNKNOWN_NODE: u8 = 64;

/// `rke2-hub doctor`: prints the findings, returns the exit code.
///
/// # Errors
/// When the hub is unreachable or refuses, or answers a finding this build cannot read.
pub async fn doctor(args: &DoctorArgs) -> anyhow::Result<u8> {
    let mut client = connect(&args.client).await?;
    let node = args.node.clone().unwrap_or_default();
    let answer = client
        .doctor(pb::DoctorRequest { node: node.clone() })
        .await;
    let report = match answer {
        Ok(r) => r.into_inner(),
        Err(status) if status.code() == tonic::Code::NotFound => {
            eprintln!("rke2-hub: {}", status.message());
            return Ok(EXIT_UNKNOWN_NODE);
        }
        Err(status) => return Err(refused(status)),
    };
    let mut findings = report
        .findings
        .iter()
        .enumerate()
        .map(|(i, f)| convert::finding_of(f, &format!("findings[{i}]")))
        .collect::<Result<Vec<Finding>, _>>()?;
    doctor::sort(&mut findings);
    let code = doctor::exit_code(&findings);
    match args.client.output {
        Output::Json => {
            let doc = Report {
                node,
                findings,
                exit_code: code,
            };
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Output::Table => print!("{}", doctor::table::render(&findings)),
    }
    Ok(code)
}
