//! A `rke2-hub serve` child process for end-to-end tests, and its CLI.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::ground::built_binary;

/// Where a hub runs.
#[derive(Debug, Clone, Copy)]
enum Where {
    /// The test's own network (host loopback): for tests without nodes.
    Host,
    /// A station of its own on the ground's bridge.
    Station,
    /// The ground namespace itself, on a bridge address.
    Bridge,
}

/// A running hub; killed on drop.
#[derive(Debug)]
pub struct HubProcess {
    child: Child,
    state: PathBuf,
    /// Its gRPC address.
    pub addr: String,
    /// Its address on the ground's bridge when it leased one itself
    /// ([`HubProcess::start_in_ground`]); released after the hub is killed.
    _lease: Option<crate::ground::net::AddrLease>,
}

impl HubProcess {
    /// Starts a hub on `ip` (gRPC :9811, metrics :9812) with `state` as its state dir and
    /// waits until its admin socket answers.
    ///
    /// # Panics
    /// When it does not come up within 20 s.
    #[must_use]
    pub fn start(state: &Path, ip: &str) -> HubProcess {
        Self::start_with(state, ip, &[])
    }

    /// [`HubProcess::start`] with extra `serve` arguments (e.g. `--kubeconfig`).
    ///
    /// # Panics
    /// When it does not come up within 20 s.
    #[must_use]
    pub fn start_with(state: &Path, ip: &str, extra: &[&str]) -> HubProcess {
        Self::spawn(Where::Host, state, ip, extra, None)
    }

    /// [`HubProcess::start_with`] with the hub's stderr (its log) written to `log`, for tests
    /// that check what the hub logs (e.g. that no secret ever appears in it).
    ///
    /// # Panics
    /// When `log` cannot be created or the hub does not come up within 20 s.
    #[must_use]
    pub fn start_logged(state: &Path, ip: &str, extra: &[&str], log: &Path) -> HubProcess {
        let file = std::fs::File::create(log).expect("hub log file");
        Self::spawn_io(Where::Host, state, ip, extra, None, Some(file.into()))
    }

    /// Starts a hub that proving-ground nodes can reach, as a *station* on the ground's
    /// bridge: a network namespace of its own with an address of its own (see
    /// [`crate::ground::net`]), so its connections come from that address and a node can be
    /// cut off from the hub alone. Extra `serve` arguments as in [`HubProcess::start_with`].
    /// Its CLI works from anywhere (the admin socket is a file).
    ///
    /// # Panics
    /// When the ground cannot give it an address or it does not come up within 20 s.
    #[must_use]
    pub fn start_in_ground(state: &Path, extra: &[&str]) -> HubProcess {
        let ground = crate::ground::ground().expect("ground network");
        let lease = ground.lease_station().expect("an address for the hub");
        let ip = lease.ip().to_string();
        Self::spawn(Where::Station, state, &ip, extra, Some(lease))
    }

    /// [`HubProcess::start_in_ground`] on `ip`, a station address the caller leased
    /// ([`crate::ground::net::Ground::lease_station`]) and keeps, so a restarted hub comes back
    /// where its agents look for it.
    ///
    /// # Panics
    /// When it does not come up within 20 s.
    #[must_use]
    pub fn start_in_ground_on(state: &Path, ip: &str, extra: &[&str]) -> HubProcess {
        Self::spawn(Where::Station, state, ip, extra, None)
    }

    /// A hub in the ground namespace itself, on `ip`, a bridge address the caller leased
    /// ([`crate::ground::net::Ground::lease_host`]): for a test that later serves its own hub
    /// on the same address from this process.
    ///
    /// # Panics
    /// When it does not come up within 20 s.
    #[must_use]
    pub fn start_on_bridge(state: &Path, ip: &str, extra: &[&str]) -> HubProcess {
        Self::spawn(Where::Bridge, state, ip, extra, None)
    }

    fn spawn(
        place: Where,
        state: &Path,
        ip: &str,
        extra: &[&str],
        lease: Option<crate::ground::net::AddrLease>,
    ) -> HubProcess {
        Self::spawn_io(place, state, ip, extra, lease, None)
    }

    fn spawn_io(
        place: Where,
        state: &Path,
        ip: &str,
        extra: &[&str],
        lease: Option<crate::ground::net::AddrLease>,
        stderr: Option<Stdio>,
    ) -> HubProcess {
        let addr = format!("{ip}:9811");
        let mut command = match place {
            Where::Bridge => crate::ground::ground()
                .expect("ground network")
                .command(built_binary("rke2-hub")),
            Where::Host | Where::Station => Command::new(built_binary("rke2-hub")),
        };
        command
            .args([
                "serve",
                "--listen-addr",
                &addr,
                "--advertise-address",
                &addr,
            ])
            .args([
                "--metrics-addr",
                &format!("{ip}:9812"),
                "--heartbeat-timeout-secs",
                "6",
            ])
            .arg("--state-dir")
            .arg(state)
            .arg("--admin-socket")
            .arg(state.join("hub.sock"))
            .args(extra)
            .env("RKE2OPS_HUB_CONFIG", "/dev/null")
            .stdout(Stdio::null());
        if let Some(stderr) = stderr {
            command.stderr(stderr);
        }
        let child = match place {
            Where::Station => crate::ground::ground()
                .expect("ground network")
                .spawn_station(&command, ip.parse().expect("an IPv4 station address"))
                .expect("hub starts"),
            Where::Host | Where::Bridge => command.spawn().expect("hub starts"),
        };
        let hub = HubProcess {
            child,
            state: state.to_path_buf(),
            addr,
            _lease: lease,
        };
        let start = Instant::now();
        while hub.cli(&["nodes", "--output", "json"]).is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the hub did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        hub
    }

    /// The address the hub listens on.
    ///
    /// # Panics
    /// Never for hubs started here (the address was parsed when it was written).
    #[must_use]
    pub fn ip(&self) -> std::net::Ipv4Addr {
        self.addr
            .rsplit_once(':')
            .and_then(|(ip, _)| ip.parse().ok())
            .expect("the hub's address is an IPv4 address and port")
    }

    /// The hub's `/metrics` address (its IP, port 9812).
    #[must_use]
    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from((self.ip(), 9812))
    }

    /// The admin socket.
    #[must_use]
    pub fn socket(&self) -> PathBuf {
        self.state.join("hub.sock")
    }

    /// The hub's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs `rke2-hub ARGS --socket <socket>`; its output.
    #[must_use]
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        self.command(args).output().expect("rke2-hub runs")
    }

    /// `rke2-hub ARGS --socket <this hub's socket>`, not started (for a background watcher).
    #[must_use]
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(built_binary("rke2-hub"));
        cmd.args(args).arg("--socket").arg(self.socket());
        cmd
    }

    /// `Some(stdout)` when the command succeeds.
    #[must_use]
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let out = self.run(args);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The command's `--output json`.
    ///
    /// # Panics
    /// When it fails or prints no JSON.
    #[must_use]
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.run(&all);
        assert!(
            out.status.success(),
            "rke2-hub {}: {}\n{}{}",
            all.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    }

    /// Its state dir.
    #[must_use]
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// How the hub exited, if it did (it is still running: `None`).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL (no clean shutdown), and waits for it to be gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and asserts a clean exit.
    ///
    /// # Panics
    /// When it does not exit 0.
    pub fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "hub exits 0 on SIGTERM: {status}");
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the agent binary goes on a node.
pub const AGENT_BIN: &str = "/usr/local/bin/rke2-node-agent";

/// Installs the real `rke2-node-agent` on `node` under the shipped unit, configured to enroll
/// with `hub` (a fresh single-use token and the hub CA's pin) and `extra_toml` lines appended
/// (every other setting is the agent's production default), and starts it.
///
/// # Errors
/// When the token cannot be created or the node refuses a step.
pub fn enroll_agent(
    node: &crate::ground::Node,
    hub: &HubProcess,
    extra_toml: &str,
) -> crate::ground::Result<()> {
    let token = hub.json(&["token", "create", "--ttl", "15m"]);
    install_enrolling_agent(node, &hub.addr, &token, extra_toml)
}

/// Installs the built agent and the shipped unit on `node`, configured to enroll with the hub
/// at `hub_address` using `token` (the `--output json` of `rke2-hub token create`) and
/// `extra_toml` lines appended (every other setting is the agent's production default), and
/// starts it.
///
/// # Errors
/// When the node refuses a step.
pub fn install_enrolling_agent(
    node: &crate::ground::Node,
    hub_address: &str,
    token: &Value,
    extra_toml: &str,
) -> crate::ground::Result<()> {
    let field = |key: &str| token[key].as_str().unwrap_or_default().to_owned();
    node.install_binary(built_binary("rke2-node-agent"), AGENT_BIN)?;
    node.write_file(
        "/etc/rke2-ops/node-agent.toml",
        format!(
            "hub_address = \"{hub_address}\"\nhub_token = \"{}\"\nhub_ca_pin = \"{}\"\n\
             node_name = \"{}\"\n{extra_toml}",
            field("token"),
            field("ca_pin"),
            node.name(),
        ),
    )?;
    node.install_shipped_unit("rke2-node-agent.service")?;
    node.systemctl(&["enable", "--now", "rke2-node-agent.service"])?;
    Ok(())
}

/// `rke2-node-agent doctor --fix CODE` on `node`, which must succeed; its stdout.
///
/// # Panics
/// When it cannot run or fails (with its output).
pub fn doctor_fix(node: &crate::ground::Node, code: &str) -> String {
    let fixed = node
        .exec(&[AGENT_BIN, "doctor", "--fix", code])
        .expect("doctor --fix runs");
    assert!(
        fixed.success(),
        "doctor --fix {code}: {}\n{}{}",
        fixed.status,
        fixed.stdout,
        fixed.stderr
    );
    fixed.stdout
}
