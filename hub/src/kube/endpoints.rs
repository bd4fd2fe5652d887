//! Several apiserver endpoints behind one handle: each request goes to the endpoint that
//! answered last, and on a connection-level failure (refused, timeout, TLS, a 5xx from a
//! server that lost its etcd) to the next one, so the hub keeps its Kubernetes access while
//! any one RKE2 server is down. API answers (404, 409, 429...) are returned to the caller, not
//! retried elsewhere: another server would answer the same.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::sync::OnceCell;

use super::KubeError;

/// How long a TCP connect to one apiserver may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one request may take (list, eviction) before the next apiserver is tried.
const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// The order in which to try `count` endpoints when `preferred` answered last.
#[must_use]
pub fn attempt_order(count: usize, preferred: usize) -> Vec<usize> {
    let start = if preferred < count { preferred } else { 0 };
    (0..count).map(|i| (start + i) % count).collect()
}

/// Whether a failure means "this apiserver cannot serve us, try another" rather than an
/// answer from the API.
#[must_use]
pub fn is_failover(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code >= 500,
        kube::Error::SerdeError(_) | kube::Error::BuildRequest(_) => false,
        _ => true,
    }
}

/// Endpoints and their lazily built clients (building a kube client needs the runtime).
pub struct Endpoints {
    kubeconfig_path: PathBuf,
    kubeconfig: Kubeconfig,
    /// `https://host:port` of each apiserver, in the configured order.
    urls: Vec<String>,
    clients: OnceCell<Vec<Client>>,
    preferred: AtomicUsize,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
            .field("kubeconfig", &self.kubeconfig_path)
            .field("urls", &self.urls)
            .field("preferred", &self.preferred)
            .finish_non_exhaustive()
    }
}

fn config_error(path: &Path, reason: impl ToString) -> KubeError {
    KubeError::Config {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The `server:` of the kubeconfig's current context (or only context).
fn current_server(kc: &Kubeconfig) -> Option<String> {
    let context = kc
        .current_context
        .as_ref()
        .and_then(|name| kc.contexts.iter().find(|c| &c.name == name))
        .or_else(|| kc.contexts.first())?;
    let cluster_name = &context.context.as_ref()?.cluster;
    kc.clusters
        .iter()
        .find(|c| &c.name == cluster_name)?
        .cluster
        .as_ref()?
        .server
        .clone()
}

impl Endpoints {
    /// Reads the kubeconfig (RKE2's `rke2.yaml`: embedded admin certificate and server CA)
    /// and fixes the endpoint list: `endpoints`, or else the kubeconfig's own server.
    ///
    /// # Errors
    /// [`KubeError::Config`] when the file cannot be read or parsed, has no usable context,
    /// or an endpoint is not an `https://` URL.
    pub fn new(kubeconfig_path: &Path, endpoints: &[String]) -> Result<Self, KubeError> {
        let kubeconfig =
            Kubeconfig::read_from(kubeconfig_path).map_err(|e| config_error(kubeconfig_path, e))?;
        let urls: Vec<String> =
            if endpoints.is_empty() {
                vec![current_server(&kubeconfig).ok_or_else(|| {
                    config_error(kubeconfig_path, "no server in the current context")
                })?]
            } else {
                endpoints
                    .iter()
                    .map(|e| e.trim_end_matches('/').to_owned())
                    .collect()
            };
        for url in &urls {
            let authority = url.strip_prefix("https://").unwrap_or_default();
            if authority.is_empty() || authority.contains('/') {
                return Err(config_error(
                    kubeconfig_path,
                    format!("endpoint {url}: expected https://host:port"),
                ));
            }
        }
        Ok(Self {
            kubeconfig_path: kubeconfig_path.to_path_buf(),
            kubeconfig,
            urls,
            clients: OnceCell::new(),
            preferred: AtomicUsize::new(0),
        })
    }

    /// The endpoint URLs in configured order.
    #[must_use]
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    async fn clients(&self) -> Result<&Vec<Client>, KubeError> {
        self.clients
            .get_or_try_init(|| async {
                let base = Config::from_custom_kubeconfig(
                    self.kubeconfig.clone(),
                    &KubeConfigOptions::default(),
                )
                .await
                .map_err(|e| config_error(&self.kubeconfig_path, e))?;
                let mut clients = Vec::with_capacity(self.urls.len());
                for url in &self.urls {
                    let mut config = base.clone();
                    config.cluster_url = url
                        .parse()
                        .map_err(|e| config_error(&self.kubeconfig_path, format!("{url}: {e}")))?;
                    config.connect_timeout = Some(CONNECT_TIMEOUT);
                    config.read_timeout = Some(READ_TIMEOUT);
                    // 429s (PDBs) are the drain's to handle and 5xx means "next server";
                    // kube-rs' own retries would hide both.
                    config.default_retry = false;
                    let client = Client::try_from(config)
                        .map_err(|e| config_error(&self.kubeconfig_path, format!("{url}: {e}")))?;
                    clients.push(client);
                }
                Ok(clients)
            })
            .await
    }

    /// Runs `op` against the preferred endpoint, failing over on connection-level errors.
    /// The outer error: no endpoint could serve; the inner result: the API's answer.
    ///
    /// # Errors
    /// [`KubeError::Unreachable`] after every endpoint failed, [`KubeError::Config`] when the
    /// clients cannot be built.
    pub async fn call<T, F, Fut>(&self, op: F) -> Result<Result<T, kube::Error>, KubeError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let clients = self.clients().await?;
        let preferred = self.preferred.load(Ordering::Relaxed);
        let mut tried = Vec::new();
        let mut last = String::new();
        for idx in attempt_order(clients.len(), preferred) {
            let url = self.urls.get(idx).cloned().unwrap_or_default();
            match op(clients[idx].clone()).await {
                Err(e) if is_failover(&e) => {
                    tracing::debug!(endpoint = %url, error = %e, "apiserver failed; trying the next");
                    last = format!("{url}: {e}");
                    tried.push(url);
                }
                answer => {
                    if idx != preferred {
                        tracing::info!(endpoint = %url, "Kubernetes API: now using {url}");
                        self.preferred.store(idx, Ordering::Relaxed);
                    }
                    return Ok(answer);
                }
            }
        }
        Err(KubeError::Unreachable { tried, last })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_start_at_the_last_good_endpoint_and_wrap() {
        assert_eq!(attempt_order(3, 0), vec![0, 1, 2]);
        assert_eq!(attempt_order(3, 2), vec![2, 0, 1]);
        assert_eq!(attempt_order(3, 7), vec![0, 1, 2], "stale index falls back");
        assert!(attempt_order(0, 0).is_empty());
    }

    #[test]
    fn server_errors_fail_over_but_api_answers_do_not() {
        let status = |code: u16| {
            kube::Error::Api(
                kube::core::Status {
                    code,
                    ..kube::core::Status::failure("x", "y")
                }
                .boxed(),
            )
        };
        assert!(is_failover(&status(500)));
        assert!(is_failover(&status(503)));
        assert!(!is_failover(&status(404)));
        assert!(!is_failover(&status(429)));
        assert!(!is_failover(&kube::Error::SerdeError(
            serde_json::from_str::<u8>("x").expect_err("invalid")
        )));
    }

    #[test]
    fn endpoints_must_be_https_urls_and_the_kubeconfig_must_parse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rke2.yaml");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://127.0.0.1:6443\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\nusers:\n- name: default\n  user: {}\n",
        )
        .expect("write");
        let e = Endpoints::new(&path, &[]).expect("valid");
        assert_eq!(e.urls(), ["https://127.0.0.1:6443"]);
        let e = Endpoints::new(&path, &["https://10.0.0.2:6443/".into()]).expect("valid");
        assert_eq!(e.urls(), ["https://10.0.0.2:6443"]);
        assert!(matches!(
            Endpoints::new(&path, &["10.0.0.2:6443".into()]),
            Err(KubeError::Config { .. })
        ));
        assert!(matches!(
            Endpoints::new(&dir.path().join("missing.yaml"), &[]),
            Err(KubeError::Config { .. })
        ));
    }
}
