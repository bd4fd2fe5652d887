//! The README's demo (`rke2-demo`) interrupted as a user interrupts it: SIGTERM or SIGINT to
//! the demo process alone, once while everything is up and once in the middle of a rolling
//! plan. Nothing may be left behind: no hub, no node (every process of its PID namespace), no
//! state folder. Both demos run at the same time, which also shows that two demos do not
//! collide (each has its own ground network; nothing binds the host's ports).
//!
//! Needs root and `cargo build --workspace --bins` first.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rke2ops_tests::ground::{built_binary, require_root_and_tools};

/// What the demo printed about the processes and files it made.
#[derive(Debug, Default)]
struct Seen {
    hub_pid: Option<i32>,
    state: Option<PathBuf>,
    node_pids: Vec<i32>,
}

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

/// Runs the demo with one server, sends `signal` once a line contains `trigger`, and returns
/// the exit code and what it had printed.
fn interrupt_demo(signal: Signal, trigger: &'static str) -> (Option<i32>, Seen, String) {
    let mut child = Command::new(built_binary("rke2-demo"))
        .args(["--servers", "1", "--workers", "0", "--hold-secs", "600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("rke2-demo starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Seen::default();
    let mut transcript = String::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("the demo never printed {trigger:?}:\n{transcript}"));
        transcript.push_str(&line);
        transcript.push('\n');
        if let Some(rest) = line.trim().strip_prefix("hub pid ") {
            let (pid, state) = rest.split_once(", state ").expect("hub line");
            seen.hub_pid = pid.parse().ok();
            seen.state = Some(PathBuf::from(state));
        }
        if let Some((_, pid)) = line.split_once("init pid ") {
            let pid = pid.split(')').next().unwrap_or_default();
            seen.node_pids.extend(pid.parse::<i32>().ok());
        }
        if line.contains(trigger) {
            break;
        }
    }
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    kill(pid, signal).expect("signal the demo");
    let status = child.wait().expect("wait for the demo");
    (status.code(), seen, transcript)
}

/// Waits up to 15 s for every process and the state folder to be gone.
fn assert_nothing_left(seen: &Seen, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let hub = seen.hub_pid.filter(|p| alive(*p));
        let nodes: Vec<i32> = seen
            .node_pids
            .iter()
            .copied()
            .filter(|p| alive(*p))
            .collect();
        let state = seen.state.as_ref().filter(|s| s.exists());
        if hub.is_none() && nodes.is_empty() && state.is_none() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: left behind: hub {hub:?}, node inits {nodes:?}, state {state:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_interrupted_demo_leaves_no_hub_node_or_state_behind() {
    require_root_and_tools();
    // SIGTERM while everything is up (holding), SIGINT in the middle of the rotation; both
    // demos at once.
    let held = std::thread::spawn(|| interrupt_demo(Signal::SIGTERM, "Up for"));
    let mid_plan =
        std::thread::spawn(|| interrupt_demo(Signal::SIGINT, "maintenance starts (attempt 1)"));
    for (name, handle, expected) in [("SIGTERM", held, 143), ("SIGINT", mid_plan, 130)] {
        let (code, seen, transcript) = handle.join().expect("demo thread");
        assert_eq!(code, Some(expected), "{name}: exit code\n{transcript}");
        assert!(
            seen.hub_pid.is_some() && seen.state.is_some(),
            "{name}: the demo said where its hub and state are\n{transcript}"
        );
        assert!(
            !seen.node_pids.is_empty(),
            "{name}: the demo named its nodes\n{transcript}"
        );
        assert_nothing_left(&seen, name);
    }
}
