//! Real Kubernetes clients run inside a simulated server node against its API stand-in
//! (`sim::kube`): the host's `kubectl` and Debian's Python `kubernetes` package, with the
//! node's admin kubeconfig (`/etc/rancher/rke2/rke2.yaml`), as an operator on that server
//! would run them.

use std::path::Path;

use rke2ops_ground::{ExecOutput, GroundError, Node, Result};

/// The admin kubeconfig RKE2 writes on a server.
pub const KUBECONFIG: &str = "/etc/rancher/rke2/rke2.yaml";
/// The kubectl the tests run (comes with the machine image; other versions live under
/// `/usr/lib/google-cloud-sdk/bin/kubectl.1.*`).
pub const KUBECTL: &str = "/usr/bin/kubectl";
/// Where the machine image keeps other kubectl versions.
pub const OTHER_KUBECTLS: &str = "/usr/lib/google-cloud-sdk/bin";
/// Debian's Python, which has `python3-kubernetes` (not a pyenv Python from `PATH`).
pub const PYTHON: &str = "/usr/bin/python3";
/// Proof that `python3-kubernetes` is installed.
pub const PYTHON_KUBERNETES: &str = "/usr/lib/python3/dist-packages/kubernetes/__init__.py";

/// Panics with the install hint when kubectl or python3-kubernetes is missing (the tests
/// that use them must not silently skip).
pub fn require_clients() {
    assert!(
        Path::new(KUBECTL).exists(),
        "{KUBECTL} is missing: it comes with the machine image (scripts/install-test-deps.sh checks it)"
    );
    assert!(
        Path::new(PYTHON_KUBERNETES).exists(),
        "python3-kubernetes is missing: run scripts/install-test-deps.sh (apt-get install python3-kubernetes)"
    );
}

/// The command line (before the arguments) [`kubectl`] runs inside `node`: the node's
/// `rke2.yaml` (its `https://127.0.0.1:6443` is the node's own apiserver: every node has its
/// own loopback) and a node-private discovery cache under `/tmp` (so runs do not share what a
/// CRD added).
#[must_use]
pub fn kubectl_argv() -> Vec<String> {
    kubectl_argv_for(KUBECTL)
}

/// [`kubectl_argv`] for another kubectl binary (each gets its own discovery cache).
#[must_use]
pub fn kubectl_argv_for(binary: &str) -> Vec<String> {
    let cache = format!(
        "--cache-dir=/tmp/kubectl-cache/{}",
        binary.trim_start_matches('/').replace('/', "_")
    );
    let mut argv: Vec<String> = ["env", "HOME=/tmp", binary, "--kubeconfig", KUBECONFIG]
        .map(str::to_owned)
        .into();
    argv.push(cache);
    argv
}

/// `kubectl --kubeconfig /etc/rancher/rke2/rke2.yaml ARGS` inside `node` (see
/// [`kubectl_argv`]).
///
/// # Errors
/// The command could not be started (its exit status is in the output).
pub fn kubectl(node: &Node, args: &[&str]) -> Result<ExecOutput> {
    let base = kubectl_argv();
    let mut argv: Vec<&str> = base.iter().map(String::as_str).collect();
    argv.extend_from_slice(args);
    node.exec(&argv)
}

/// Every other kubectl version the machine image ships (`kubectl.1.27` ... `kubectl.1.33`),
/// sorted.
#[must_use]
pub fn other_kubectls() -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(OTHER_KUBECTLS)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("kubectl.1."))
        .map(|e| e.path().to_string_lossy().into_owned())
        .collect();
    found.sort();
    found
}

/// `binary ARGS` inside `node`, set up as [`kubectl`] is.
///
/// # Errors
/// The command could not be started.
pub fn kubectl_with(binary: &str, node: &Node, args: &[&str]) -> Result<ExecOutput> {
    let base = kubectl_argv_for(binary);
    let mut argv: Vec<&str> = base.iter().map(String::as_str).collect();
    argv.extend_from_slice(args);
    node.exec(&argv)
}

/// Runs a Python script with `/usr/bin/python3` inside `node`; the script finds the
/// kubeconfig in `KUBECONFIG`.
///
/// # Errors
/// The command could not be started.
pub fn python(node: &Node, script: &str) -> Result<ExecOutput> {
    let kubeconfig = format!("KUBECONFIG={KUBECONFIG}");
    node.exec(&["env", "HOME=/tmp", &kubeconfig, PYTHON, "-c", script])
}

/// Where [`install_runbook_files`] puts the runbook's files on a node (a node-private folder:
/// the repository may itself live under `/tmp`, which every node has its own of).
pub const RUNBOOK_DIR: &str = "/var/tmp/runbook";

/// Copies `tests/fixtures/runbook/*` (the SUC CRD, RKE2's server and agent plans) into
/// [`RUNBOOK_DIR`] on `node`, as an operator copies them onto a server.
///
/// # Errors
/// A file cannot be read or written.
pub fn install_runbook_files(node: &Node) -> Result<&'static str> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/runbook");
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| GroundError::Io {
            action,
            path,
            source,
        }
    };
    let entries = std::fs::read_dir(&dir).map_err(io("read folder", &dir))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let text = std::fs::read(&path).map_err(io("read", &path))?;
        node.write_file(Path::new(RUNBOOK_DIR).join(entry.file_name()), text)?;
    }
    Ok(RUNBOOK_DIR)
}
