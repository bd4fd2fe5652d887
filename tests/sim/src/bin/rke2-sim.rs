//! `rke2-sim`: write simulated RKE2 data dirs from the command line (see tests/SIMULATOR.md).
//!
//! ```text
//! rke2-sim tree --role server|agent --node-name N --node-ip IP --data-dir D
//!     [--node-data-dir P] [--config-dir C] [--cas-from DIR | --cas-out DIR]
//!     [--tls-san X]... [--server URL] [--now RFC3339]
//!     [--validity FILE=fresh|expires-in:30d|expired:2d|not-yet-valid:1d|window:T1..T2]...
//!     [--break FILE=empty|no-pem-data|bad-der|truncated|unreadable|dangling-symlink|
//!                   looping-symlink|oversized|key-mismatch|foreign-issuer]...
//! rke2-sim cas --out DIR [--now RFC3339]
//! rke2-sim release --out DIR --version V...
//! rke2-sim mirror --dir D --listen ADDR [--channel NAME=VERSION]... [--build V]...
//! ```
//! `tree` prints a JSON summary of what it wrote on stdout.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use rke2ops_sim::check::go_rfc3339;
use rke2ops_sim::tree::{
    self, Breakage, ClusterCas, GeneratedTree, Role, TreeSpec, Validity, parse_assignment,
};
use time::OffsetDateTime;

#[derive(Debug, Parser)]
#[command(name = "rke2-sim", about = "Generate simulated RKE2 data dirs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write one node's data dir (and config dir).
    Tree(Box<TreeArgs>),
    /// Generate cluster CAs into DIR (server/tls layout) for later `tree --cas-from DIR`.
    Cas {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Creation time of the CAs (RFC 3339; default now).
        #[arg(long)]
        now: Option<String>,
    },
    /// Write simulated RKE2 releases (`<out>/<version>/rke2.linux-amd64.tar.gz` and
    /// `sha256sum-amd64.txt`) from the built simulated `rke2` next to this binary.
    Release {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Versions to write (repeatable), e.g. v1.34.1+rke2r1.
        #[arg(long = "version", required = true)]
        versions: Vec<String>,
    },
    /// Serve releases under DIR (`/<version>/<file>`) and a channel server
    /// (`/v1-release/channels`) until killed.
    Mirror {
        /// Folder holding `<version>/` release folders.
        #[arg(long)]
        dir: PathBuf,
        /// Address to listen on, e.g. 127.0.50.1:8080.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// A channel, NAME=VERSION (repeatable).
        #[arg(long = "channel")]
        channels: Vec<rke2ops_sim::release::Channel>,
        /// Build this release into DIR first (repeatable).
        #[arg(long = "build")]
        build: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
struct TreeArgs {
    /// server or agent.
    #[arg(long)]
    role: Role,
    /// Node name.
    #[arg(long)]
    node_name: String,
    /// Node IP.
    #[arg(long)]
    node_ip: IpAddr,
    /// Where to write the data dir.
    #[arg(long)]
    data_dir: PathBuf,
    /// The data dir as the node sees it (paths inside kubeconfigs); default --data-dir.
    #[arg(long)]
    node_data_dir: Option<PathBuf>,
    /// Where to write rke2.yaml (servers) and config.yaml.
    #[arg(long)]
    config_dir: Option<PathBuf>,
    /// Load the cluster CAs from this server/tls directory.
    #[arg(long, conflicts_with = "cas_out")]
    cas_from: Option<PathBuf>,
    /// Generate new cluster CAs and also save them here (server/tls layout).
    #[arg(long)]
    cas_out: Option<PathBuf>,
    /// Extra SAN for the server certificates (repeatable).
    #[arg(long)]
    tls_san: Vec<String>,
    /// Agents: the server URL written to config.yaml.
    #[arg(long)]
    server: Option<String>,
    /// Simulated current time (RFC 3339; default now).
    #[arg(long)]
    now: Option<String>,
    /// FILE=VALIDITY, FILE relative to the data dir (repeatable).
    #[arg(long = "validity", value_parser = parse_assignment::<Validity>)]
    validity: Vec<(String, Validity)>,
    /// FILE=BREAKAGE, FILE relative to the data dir (repeatable).
    #[arg(long = "break", value_parser = parse_assignment::<Breakage>)]
    breakages: Vec<(String, Breakage)>,
}

fn parse_now(now: Option<&str>) -> Result<OffsetDateTime> {
    match now {
        Some(t) => OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .with_context(|| format!("--now {t}")),
        None => Ok(OffsetDateTime::now_utc()),
    }
}

fn summary(tree: &GeneratedTree) -> serde_json::Value {
    let files: BTreeMap<&str, serde_json::Value> = tree
        .files
        .iter()
        .map(|(rel, f)| {
            let mut v = serde_json::json!({ "kind": format!("{:?}", f.kind) });
            if let Some(c) = &f.cert {
                v["serial"] = c.serial.into();
                v["subject"] = c.subject_cn.clone().into();
                v["issuer"] = c.issuer_cn.clone().into();
                v["not_before"] = go_rfc3339(c.not_before).into();
                v["not_after"] = go_rfc3339(c.not_after).into();
            }
            if let Some(b) = f.breakage {
                v["breakage"] = b.name().into();
            }
            (rel.as_str(), v)
        })
        .collect();
    serde_json::json!({
        "data_dir": tree.data_dir,
        "config_dir": tree.config_dir,
        "config_files": tree.config_files,
        "files": files,
    })
}

/// The simulated `rke2` built beside this binary.
fn sibling_rke2() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let rke2 = exe.with_file_name("rke2");
    if !rke2.is_file() {
        bail!(
            "{} is missing: run `cargo build -p rke2ops-sim --bins`",
            rke2.display()
        );
    }
    Ok(rke2)
}

fn main() -> Result<()> {
    use rke2ops_sim::{mirror::Mirror, release};
    match Cli::parse().command {
        Command::Release { out, versions } => {
            let rke2 = sibling_rke2()?;
            for version in versions {
                let r = release::build_release_from(&out, &version, &rke2)?;
                println!("{}  {}", r.sha256, r.tarball.display());
            }
            Ok(())
        }
        Command::Mirror {
            dir,
            listen,
            channels,
            build,
        } => {
            if !build.is_empty() {
                let rke2 = sibling_rke2()?;
                for version in build {
                    release::build_release_from(&dir, &version, &rke2)?;
                }
            }
            let handle = Mirror::serve(&dir, listen, channels)?;
            println!(
                "serving {} on {} (channels at {}/v1-release/channels)",
                dir.display(),
                handle.base_url(),
                handle.base_url()
            );
            loop {
                std::thread::park();
            }
        }
        Command::Cas { out, now } => {
            let now = parse_now(now.as_deref())?;
            ClusterCas::generate(now)?.save(&out)?;
            Ok(())
        }
        Command::Tree(args) => {
            let now = parse_now(args.now.as_deref())?;
            let cas = match (&args.cas_from, &args.cas_out) {
                (Some(dir), _) => ClusterCas::load(dir)?,
                (None, out) => {
                    let cas = ClusterCas::generate(now)?;
                    if let Some(out) = out {
                        cas.save(out)?;
                    }
                    cas
                }
            };
            if args.role == Role::Agent && args.server.is_none() && args.config_dir.is_some() {
                eprintln!("rke2-sim: note: agent config.yaml without --server has no server: line");
            }
            let mut spec =
                TreeSpec::new(args.role, args.node_name, args.node_ip, args.data_dir, now);
            spec.node_data_dir = args.node_data_dir;
            spec.config_dir = args.config_dir;
            spec.tls_sans = args.tls_san;
            spec.server_url = args.server;
            for (file, v) in args.validity {
                if spec.validity.insert(file.clone(), v).is_some() {
                    bail!("--validity given twice for {file}");
                }
            }
            for (file, b) in args.breakages {
                if spec.breakages.insert(file.clone(), b).is_some() {
                    bail!("--break given twice for {file}");
                }
            }
            let generated = tree::generate(&spec, &cas)?;
            println!("{}", serde_json::to_string_pretty(&summary(&generated))?);
            Ok(())
        }
    }
}
