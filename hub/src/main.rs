//! Entry point of `rke2-hub`: parse, configure (exit 78 on a bad configuration), run.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory as _, FromArgMatches as _};
use rke2_hub::cli::env;
use rke2_hub::cli::plans::PlanCommand;
use rke2_hub::cli::{AdminCertCommand, Cli, Command, ServeArgs, TokenCommand};
use rke2_hub::cli::{client, doctor, plans_client, rollouts};
use rke2_hub::config::{Config, DEFAULT_CONFIG_PATH, Options};
use rke2_hub::serve;
use rke2ops_common::shutdown::Shutdown;

const EXIT_USAGE: u8 = 64;
const EXIT_CONFIG: u8 = 78;

fn config(args: &ServeArgs) -> Result<Config, rke2_hub::config::ConfigError> {
    let (path, required) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (DEFAULT_CONFIG_PATH.into(), false),
    };
    let file = Options::load(&path, required)?;
    Config::resolve(args.options.clone().or(file))
}

/// `serve` until the first SIGTERM/SIGINT drains it (a second one forces the stop).
async fn serve(config: Config) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    shutdown
        .escalate_on_signals("rke2-hub")
        .context("cannot install the SIGTERM/SIGINT handlers")?;
    serve::run(config, shutdown.listener()).await
}

fn main() -> ExitCode {
    let os_env = |name: &str| std::env::var_os(name);
    let command = env::with_legacy_names(Cli::command(), &os_env);
    let parsed = command
        .clone()
        .try_get_matches()
        .and_then(|matches| Ok((Cli::from_arg_matches(&matches)?, matches)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    // kube-rs logs every non-2xx answer at ERROR (a 500 from the apiserver of a server in
    // maintenance, a 404 for a Node not registered yet); the hub's kube module reports what
    // matters itself (failovers with the endpoint, errors to the plan), so those lines are
    // off unless RKE2OPS_HUB_LOG asks for them.
    let filter = env::lookup(env::LOG, &os_env)
        .0
        .and_then(|directives| {
            tracing_subscriber::EnvFilter::try_new(directives.to_string_lossy()).ok()
        })
        .unwrap_or_else(|| {
            tracing_subscriber::EnvFilter::new("info,kube_client::client::builder=off")
        });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    // One warning per deprecated name the command reads: in the log for `serve`, on stderr
    // for the operator commands (whose stderr is their only channel).
    for legacy in env::used_legacy_names(&command, &matches, &os_env) {
        if matches!(cli.command, Command::Serve(_)) {
            tracing::warn!(old = %legacy.old, new = %legacy.new, "{legacy}");
        } else {
            eprintln!("rke2-hub: warning: {legacy}");
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rke2-hub: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = |r: anyhow::Result<()>| r.map(|()| 0u8);
    let result: anyhow::Result<u8> = match cli.command {
        Command::Serve(args) => match config(&args) {
            Ok(config) => code(runtime.block_on(serve(config))),
            Err(e) => {
                eprintln!("rke2-hub: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        Command::Migrate(args) => {
            let mut serve_args = args.serve;
            serve_args.options.store = Some(args.to);
            match config(&serve_args) {
                Ok(config) => runtime
                    .block_on(rke2_hub::ha::migrate::to_etcd(&config))
                    .map(|done| {
                        println!("{done}");
                        0
                    }),
                Err(e) => {
                    eprintln!("rke2-hub: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
        }
        Command::Token {
            command: TokenCommand::Create(args),
        } => code(runtime.block_on(client::token_create(&args))),
        Command::Nodes(args) => code(runtime.block_on(client::nodes(&args))),
        Command::Certs(args) => code(runtime.block_on(client::certs(&args))),
        Command::Clusters(args) => code(runtime.block_on(client::clusters(&args))),
        Command::AdminCert {
            command: AdminCertCommand::Create(args),
        } => code(client::admin_cert_create(&args)),
        Command::AdminCert {
            command: AdminCertCommand::Revoke(args),
        } => code(client::admin_cert_revoke(&args)),
        Command::Rotate(args) => runtime.block_on(plans_client::rotate(&args)),
        Command::Restart(args) => runtime.block_on(plans_client::restart(&args)),
        Command::Upgrade(args) => runtime.block_on(plans_client::upgrade(&args)),
        Command::Plans(args) => runtime.block_on(plans_client::plans(&args)),
        Command::Plan {
            command: PlanCommand::Show(args),
        } => runtime.block_on(plans_client::show(&args)),
        Command::Plan {
            command: PlanCommand::Watch(args),
        } => runtime.block_on(plans_client::watch(&args)),
        Command::Plan {
            command: PlanCommand::Report(args),
        } => runtime.block_on(plans_client::report(&args)),
        Command::Rollouts(args) => runtime.block_on(rollouts::list(&args)),
        Command::Rollout { command } => runtime.block_on(rollouts::command(&command)),
        Command::Pause(args) => runtime.block_on(plans_client::pause(&args)),
        Command::Resume(args) => runtime.block_on(plans_client::resume(&args)),
        Command::Skip(args) => runtime.block_on(plans_client::skip(&args)),
        Command::Abort(args) => runtime.block_on(plans_client::abort(&args)),
        Command::Doctor(args) => runtime.block_on(doctor::doctor(&args)),
        Command::Backup(args) => code(rke2_hub::cli::backup::backup(&args)),
        Command::Restore(args) => code(rke2_hub::cli::backup::restore(&args)),
    };
    match result {
        Ok(0) => ExitCode::SUCCESS,
        Ok(n) => ExitCode::from(n),
        Err(e) => {
            eprintln!("rke2-hub: {e:#}");
            ExitCode::FAILURE
        }
    }
}
