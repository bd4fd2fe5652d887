//! `rke2-hub`: the fleet hub. This first version only parses its command line; the
//! gRPC server, inventory and plan engine arrive with their issues.

use clap::{Parser, Subcommand};

/// Fleet hub for rke2-ops: inventory of node agents and rolling maintenance.
#[derive(Debug, Parser)]
#[command(name = "rke2-hub", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub server (not implemented yet).
    Serve,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve => anyhow::bail!("`rke2-hub serve` is not implemented yet (see issue 4)"),
    }
}
