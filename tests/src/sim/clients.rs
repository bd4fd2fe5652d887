//! Real Kubernetes clients run inside a simulated server node against its API stand-in
//! (`sim::kube`): the host's `kubectl` and Debian's Python `kubernetes` package, with the
//! node's admin kubeconfig (`/etc/rancher/rke2/rke2.yaml`), as an operator on that server
//! would run them.

use std::path::Path;

use crate::ground::{ExecOutput, Node, Result};

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

/// Whether [`kubectl`] passes `--server https://<node-ip>:6443`: `rke2.yaml` names
/// `https://127.0.0.1:6443`, which nothing serves while nodes share the host's network.
/// Remove once nodes have their own network namespace.
pub const KUBECTL_SERVER_OVERRIDE: bool = true;

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

/// The `--server` override for `node`, when [`KUBECTL_SERVER_OVERRIDE`] is on.
#[must_use]
pub fn server_url(node: &Node) -> Option<String> {
    KUBECTL_SERVER_OVERRIDE.then(|| format!("https://{}:6443", node.ip()))
}

/// The command line (before the arguments) [`kubectl`] runs inside `node`: the kubeconfig,
/// a node-private discovery cache under `/tmp` (so runs do not share what a CRD added), the
/// server override.
#[must_use]
pub fn kubectl_argv(node: &Node) -> Vec<String> {
    kubectl_argv_for(KUBECTL, node)
}

/// [`kubectl_argv`] for another kubectl binary (each gets its own discovery cache).
#[must_use]
pub fn kubectl_argv_for(binary: &str, node: &Node) -> Vec<String> {
    let cache = format!(
        "--cache-dir=/tmp/kubectl-cache/{}",
        binary.trim_start_matches('/').replace('/', "_")
    );
    let mut argv: Vec<String> = ["env", "HOME=/tmp", binary, "--kubeconfig", KUBECONFIG]
        .map(str::to_owned)
        .into();
    argv.push(cache);
    if let Some(s) = server_url(node) {
        argv.push(format!("--server={s}"));
    }
    argv
}

/// `kubectl --kubeconfig /etc/rancher/rke2/rke2.yaml ARGS` inside `node` (see
/// [`kubectl_argv`]).
///
/// # Errors
/// The command could not be started (its exit status is in the output).
pub fn kubectl(node: &Node, args: &[&str]) -> Result<ExecOutput> {
    let base = kubectl_argv(node);
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
    let base = kubectl_argv_for(binary, node);
    let mut argv: Vec<&str> = base.iter().map(String::as_str).collect();
    argv.extend_from_slice(args);
    node.exec(&argv)
}

/// Runs a Python script with `/usr/bin/python3` inside `node`; the script finds the
/// kubeconfig in `KUBECONFIG` and the server override (if any) in `KUBE_SERVER`.
///
/// # Errors
/// The command could not be started.
pub fn python(node: &Node, script: &str) -> Result<ExecOutput> {
    let kubeconfig = format!("KUBECONFIG={KUBECONFIG}");
    let server = format!("KUBE_SERVER={}", server_url(node).unwrap_or_default());
    node.exec(&[
        "env",
        "HOME=/tmp",
        &kubeconfig,
        &server,
        PYTHON,
        "-c",
        script,
    ])
}
