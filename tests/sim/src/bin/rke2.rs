//! The simulated `rke2` binary: `--version`, `server`, `agent`, `certificate check`,
//! `certificate rotate` and `etcd-snapshot save` (see tests/SIMULATOR.md).
//!
//! Environment: `RKE2_SIM_VERSION` / `RKE2_SIM_COMMIT` (or `rke2.version` next to the binary)
//! set the reported version; `RKE2_SIM_NOW` (RFC 3339) pins "now" for `check` and for the
//! certificates `server`/`agent` issue; `CATTLE_NEW_SIGNED_CERT_EXPIRATION_DAYS` sets the
//! lifetime of issued leaves.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use rke2ops_sim::check::{self, OutputFormat};
use rke2ops_sim::node_config::NodeConfig;
use rke2ops_sim::server::{self, Launch};
use rke2ops_sim::tree::Role;
use rke2ops_sim::version::SimVersion;
use rke2ops_sim::{logrus, rotate};
use time::OffsetDateTime;

#[derive(Debug, Parser)]
#[command(
    name = "rke2",
    disable_version_flag = true,
    about = "Rancher Kubernetes Engine 2 (simulated)"
)]
struct Cli {
    /// Print the version.
    #[arg(short = 'v', long)]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Flags `rke2 server` / `rke2 agent` take (everything else comes from config.yaml).
#[derive(Debug, Args)]
struct ServiceArgs {
    /// (config) Load configuration from FILE.
    #[arg(short = 'c', long, env = "RKE2_CONFIG_FILE")]
    config: Option<PathBuf>,
    /// (data) Folder to hold state.
    #[arg(short = 'd', long)]
    data_dir: Option<PathBuf>,
    /// (logging) Turn on debug logs (accepted, no effect).
    #[arg(long)]
    debug: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run management server.
    Server(ServiceArgs),
    /// Run node agent.
    Agent(ServiceArgs),
    /// Manage RKE2 certificates.
    Certificate {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Manage etcd snapshots (`save`, backed by the real etcd).
    EtcdSnapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Anything else RKE2 has: not simulated here.
    #[command(external_subcommand)]
    Other(Vec<String>),
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// Trigger an immediate etcd snapshot.
    Save {
        /// Set the base name of the etcd on-demand snapshot.
        #[arg(long, default_value = rke2ops_sim::snapshot::DEFAULT_NAME)]
        name: String,
        /// (data) Folder to hold state.
        #[arg(short = 'd', long)]
        data_dir: Option<PathBuf>,
        /// (config) Load configuration from FILE.
        #[arg(short = 'c', long, env = "RKE2_CONFIG_FILE")]
        config: Option<PathBuf>,
    },
    /// Not simulated yet.
    #[command(external_subcommand)]
    Other(Vec<String>),
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// Check RKE2 component certificates on disk.
    Check {
        /// (data) Folder to hold state.
        #[arg(short = 'd', long, default_value = "/var/lib/rancher/rke2")]
        data_dir: PathBuf,
        /// List of services to manage certificates for (repeatable).
        #[arg(short = 's', long = "service")]
        services: Vec<String>,
        /// Output format: text, table, json or yaml.
        #[arg(short = 'o', long, default_value = "text")]
        output: String,
        /// (config) Load configuration from FILE (accepted, not read by the simulator).
        #[arg(short = 'c', long)]
        config: Option<PathBuf>,
        /// (logging) Turn on debug logs: also list files that gave no rows.
        #[arg(long)]
        debug: bool,
    },
    /// Back up and delete component certificates; new ones are issued at the next start.
    Rotate {
        /// (data) Folder to hold state.
        #[arg(short = 'd', long, default_value = "/var/lib/rancher/rke2")]
        data_dir: PathBuf,
        /// List of services to rotate certificates for (repeatable).
        #[arg(short = 's', long = "service")]
        services: Vec<String>,
        /// (config) Load configuration from FILE (accepted, not read by the simulator).
        #[arg(short = 'c', long)]
        config: Option<PathBuf>,
        /// (logging) Turn on debug logs.
        #[arg(long)]
        debug: bool,
    },
    /// Not simulated yet.
    #[command(external_subcommand)]
    Other(Vec<String>),
}

fn binary_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
}

fn run_service(role: Role, args: &ServiceArgs) -> ExitCode {
    let config = match NodeConfig::load(args.config.as_deref(), args.data_dir.as_deref()) {
        Ok(c) => c,
        Err(e) => return fatal(&format!("Error: {e}")),
    };
    let now = match std::env::var("RKE2_SIM_NOW") {
        Ok(t) if !t.is_empty() => match now() {
            Ok(t) => Some(t),
            Err(e) => return fatal(&format!("Error: {e}")),
        },
        _ => None,
    };
    server::run(Launch {
        role,
        config,
        version: SimVersion::resolve(binary_dir().as_deref()),
        now,
    })
}

fn run_rotate(data_dir: &std::path::Path, services: &[String], debug: bool) -> ExitCode {
    let now = match now() {
        Ok(t) => t,
        Err(e) => return fatal(&format!("Error: {e}")),
    };
    match rotate::rotate(data_dir, services, now) {
        Ok(report) => {
            for msg in rotate::log_messages(&report) {
                logrus::info(&msg);
            }
            if debug {
                for path in &report.deleted {
                    eprintln!("level=debug msg=\"file {} is deleted\"", path.display());
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => fatal(&format!("Error: {e}")),
    }
}

fn fatal(msg: &str) -> ExitCode {
    let now = check::go_rfc3339(
        OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
    );
    eprintln!("time=\"{now}\" level=fatal msg={msg:?}");
    ExitCode::from(1)
}

fn now() -> Result<OffsetDateTime, String> {
    match std::env::var("RKE2_SIM_NOW") {
        Ok(t) if !t.is_empty() => {
            OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                .map_err(|e| format!("RKE2_SIM_NOW={t}: {e}"))
        }
        _ => Ok(OffsetDateTime::now_utc()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.version {
        print!("{}", SimVersion::resolve(binary_dir().as_deref()).banner());
        return ExitCode::SUCCESS;
    }
    match cli.command {
        None => {
            let _ = <Cli as clap::CommandFactory>::command().print_help();
            ExitCode::SUCCESS
        }
        Some(Command::Certificate {
            command:
                CertCommand::Check {
                    data_dir,
                    services,
                    output,
                    config: _,
                    debug,
                },
        }) => {
            let format: OutputFormat = match output.parse() {
                Ok(f) => f,
                Err(e) => return fatal(&format!("Error: {e}")),
            };
            let now = match now() {
                Ok(t) => t,
                Err(e) => return fatal(&format!("Error: {e}")),
            };
            let report = match check::check(&data_dir, &services, now) {
                Ok(r) => r,
                Err(e) => return fatal(&format!("Error: {e}")),
            };
            let (stdout, mut stderr) = check::render(&report, format);
            if debug {
                for skipped in &report.skipped {
                    stderr.push_str(&format!("level=debug msg={:?}\n", skipped.reason));
                }
            }
            // Failing to write to a closed pipe is not worth a panic in a test helper.
            let _ = std::io::stderr().write_all(stderr.as_bytes());
            let _ = std::io::stdout().write_all(stdout.as_bytes());
            ExitCode::SUCCESS
        }
        Some(Command::Server(args)) => run_service(Role::Server, &args),
        Some(Command::Agent(args)) => run_service(Role::Agent, &args),
        Some(Command::Certificate {
            command:
                CertCommand::Rotate {
                    data_dir,
                    services,
                    config: _,
                    debug,
                },
        }) => run_rotate(&data_dir, &services, debug),
        Some(Command::Certificate {
            command: CertCommand::Other(args),
        }) => fatal(&format!(
            "Error: rke2 simulator: certificate {} is not simulated yet",
            args.join(" ")
        )),
        Some(Command::EtcdSnapshot {
            command:
                SnapshotCommand::Save {
                    name,
                    data_dir,
                    config,
                },
        }) => {
            let config = match NodeConfig::load(config.as_deref(), data_dir.as_deref()) {
                Ok(c) => c,
                Err(e) => return fatal(&format!("Error: {e}")),
            };
            let unix = OffsetDateTime::now_utc().unix_timestamp();
            match rke2ops_sim::snapshot::save(&config.data_dir, &name, &config.node_name, unix) {
                Ok(path) => {
                    let file = path.file_name().map(|f| f.to_string_lossy().into_owned());
                    logrus::info(&format!("Snapshot {} saved.", file.unwrap_or_default()));
                    ExitCode::SUCCESS
                }
                Err(e) => fatal(&format!("Error: failed to save snapshot: {e}")),
            }
        }
        Some(Command::EtcdSnapshot {
            command: SnapshotCommand::Other(args),
        }) => fatal(&format!(
            "Error: rke2 simulator: etcd-snapshot {} is not simulated yet",
            args.join(" ")
        )),
        Some(Command::Other(args)) => fatal(&format!(
            "Error: rke2 simulator: {} is not simulated yet",
            args.join(" ")
        )),
    }
}
