//! Entry point: parse the command line, load the configuration (exit 64 when it is bad), run.

use std::process::ExitCode;

use clap::Parser;
use rke2_node_agent::cli::{Cli, Command};
use rke2_node_agent::config::{Config, FileConfig};
use rke2_node_agent::{check, commands, daemon, doctor};

/// sysexits' EX_USAGE / EX_CONFIG: kept apart from `check`'s 1 and 2.
const EXIT_USAGE: u8 = 64;
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    let (common, metrics_addr) = match &cli.command {
        Command::Check(args) => (&args.common, None),
        Command::Run(args) => (&args.common, args.metrics_addr.clone()),
        Command::Rotate(args) => (&args.common, None),
        Command::Restart(args) | Command::Resume(args) => (&args.common, None),
        Command::Status(args) => (&args.common, None),
        Command::Upgrade(args) => (&args.common, None),
        Command::Doctor(args) => (&args.common, None),
    };
    let (path, required) = common.config_path();
    let config = match FileConfig::load(&path, required)
        .and_then(|file| Config::resolve(file, common.overrides(metrics_addr)))
    {
        Ok(config) => config,
        Err(e) => {
            eprintln!("rke2-node-agent: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let result = match cli.command {
        Command::Check(args) => check::run(&config, args.output, &mut std::io::stdout().lock()),
        Command::Run(_) => daemon::main(config).map(|()| 0),
        Command::Rotate(args) => {
            commands::rotate(&config, args.services, args.etcd_snapshot, args.dry_run)
        }
        Command::Restart(args) => commands::restart(&config, args.dry_run),
        Command::Resume(_) => commands::resume(&config),
        Command::Status(args) => commands::status(&config, args.output),
        Command::Upgrade(args) => commands::upgrade(
            &config,
            commands::UpgradeRequest {
                version: args.version,
                source: args.source,
                allow_rollback: !args.no_rollback,
            },
            args.dry_run,
        ),
        Command::Doctor(args) => {
            let options = doctor::Options {
                warn_days: config.warn_days,
                staging_min_free: args.staging_min_free_mib.saturating_mul(1024 * 1024),
                etcd_min_free: args.etcd_min_free_mib.saturating_mul(1024 * 1024),
            };
            match args.fix {
                Some(code) => doctor::fix::run(&config, &options, &code),
                None => doctor::run(
                    &config,
                    &options,
                    args.output,
                    &mut std::io::stdout().lock(),
                ),
            }
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("rke2-node-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
