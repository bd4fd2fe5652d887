//! `rke2-hub doctor`: asks the hub for the fleet-wide findings (`Doctor` RPC) and prints them
//! as the agent's doctor does (common's table, or its JSON report); the exit code is
//! common's: 0 nothing (or info only), 1 warnings, 2 a blocker; 64 for an unknown `--node`
//! or a bad `--target`; 69 when no report could be had (so a script never reads "the hub is
//! down" as "warnings").

use rke2ops_common::doctor::{self, Finding, Report};
use rke2ops_proto::v1 as pb;

use crate::cli::client::{connect, refused};
use crate::cli::{DoctorArgs, Output};
use crate::grpc::convert;

/// Exit code for an unknown `--node` or a bad `--target` (sysexits' EX_USAGE).
pub const EXIT_UNKNOWN_NODE: u8 = 64;
/// Exit code when the hub cannot be reached or refuses (sysexits' EX_UNAVAILABLE).
pub const EXIT_NO_REPORT: u8 = 69;

/// `rke2-hub doctor`: prints the findings, returns the exit code.
///
/// # Errors
/// When the hub is unreachable or refuses, or answers a finding this build cannot read.
pub async fn doctor(args: &DoctorArgs) -> anyhow::Result<u8> {
    let mut client = match connect(&args.client).await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("rke2-hub doctor: no report: {e:#}");
            return Ok(EXIT_NO_REPORT);
        }
    };
    let node = args.node.clone().unwrap_or_default();
    let answer = client
        .doctor(pb::DoctorRequest {
            node: node.clone(),
            target: args.target.clone().unwrap_or_default(),
            cluster: args.cluster.clone().unwrap_or_default(),
        })
        .await;
    let report = match answer {
        Ok(r) => r.into_inner(),
        Err(status)
            if matches!(
                status.code(),
                tonic::Code::NotFound | tonic::Code::InvalidArgument
            ) =>
        {
            eprintln!("rke2-hub: {}", status.message());
            return Ok(EXIT_UNKNOWN_NODE);
        }
        Err(status) => {
            eprintln!("rke2-hub doctor: no report: {:#}", refused(status));
            return Ok(EXIT_NO_REPORT);
        }
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
        Output::Table => print!("{}", doctor::table::render_fleet(&findings)),
    }
    Ok(code)
}
