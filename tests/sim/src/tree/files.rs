//! Non-certificate files: kubeconfigs, `rke2.yaml`, `config.yaml`, `dynamic-cert.json`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// k3s `kubeconfigTemplate` (`deps.go`), used for `server/cred/*.kubeconfig` and the agent's
/// kubeconfigs: certificates referenced by path.
#[must_use]
pub fn path_kubeconfig(server: &str, ca: &str, cert: &str, key: &str) -> String {
    format!(
        "apiVersion: v1
clusters:
- cluster:
    server: {server}
    certificate-authority: {ca}
  name: local
contexts:
- context:
    cluster: local
    namespace: default
    user: user
  name: Default
current-context: Default
kind: Config
preferences: {{}}
users:
- name: user
  user:
    client-certificate: {cert}
    client-key: {key}
"
    )
}

/// `/etc/rancher/rke2/rke2.yaml`: the admin kubeconfig with embedded data, as client-go's
/// writer lays it out (names `default`).
#[must_use]
pub fn admin_kubeconfig(server: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> String {
    format!(
        "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: {}
    server: {server}
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {{}}
users:
- name: default
  user:
    client-certificate-data: {}
    client-key-data: {}
",
        STANDARD.encode(ca_pem),
        STANDARD.encode(cert_pem),
        STANDARD.encode(key_pem)
    )
}

/// `/etc/rancher/rke2/config.yaml` with the node options the project reads.
#[must_use]
pub fn node_config(
    node_name: &str,
    node_ip: &str,
    tls_sans: &[String],
    server_url: Option<&str>,
    token: Option<&str>,
) -> String {
    let mut out = format!("node-name: {node_name}\nnode-ip: {node_ip}\n");
    if !tls_sans.is_empty() {
        out.push_str("tls-san:\n");
        for san in tls_sans {
            out.push_str(&format!("  - {san}\n"));
        }
    }
    if let Some(url) = server_url {
        out.push_str(&format!("server: {url}\n"));
    }
    if let Some(token) = token {
        out.push_str(&format!("token: {token}\n"));
    }
    out
}

/// dynamiclistener's file cache: a JSON-encoded `kubernetes.io/tls` Secret.
#[must_use]
pub fn dynamic_cert_json(cert_chain_pem: &str, key_pem: &str, cn: &str) -> String {
    let secret = serde_json::json!({
        "metadata": {
            "name": "rke2-serving",
            "namespace": "kube-system",
            "creationTimestamp": null,
            "annotations": {
                format!("listener.cattle.io/cn-{cn}"): cn,
            }
        },
        "data": {
            "tls.crt": STANDARD.encode(cert_chain_pem),
            "tls.key": STANDARD.encode(key_pem),
        },
        "type": "kubernetes.io/tls"
    });
    format!("{secret}\n")
}
