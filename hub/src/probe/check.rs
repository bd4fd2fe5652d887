//! One check of one probe: an HTTP(S) GET, a TCP connect, or a workload's replicas from the
//! Kubernetes API. Each is bounded by the probe's timeout; the error says what failed in a
//! line (the gate and the report show it).

use std::sync::Arc;

use super::spec::{ProbeSpec, Target};
use crate::engine::cluster::Cluster;

/// Longest body read from an HTTP probe (it is only searched for the expected text).
const MAX_BODY: usize = 64 << 10;

/// A client error in one line with its causes, without the URL (it may carry credentials).
fn error_text(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether `available` replicas satisfy `desired` minus `allowance`. Pure.
#[must_use]
pub fn enough_replicas(desired: i64, available: i64, allowance: u32) -> bool {
    available >= desired - i64::from(allowance)
}

/// Runs one check.
///
/// # Errors
/// What failed, in one line (never the URL's credentials).
pub async fn check(
    spec: &ProbeSpec,
    http: &reqwest::Client,
    cluster: Option<&Arc<dyn Cluster>>,
) -> Result<(), String> {
    let timeout = spec.timeout();
    match &spec.target {
        Target::Http { url, status, body } => {
            let answer = tokio::time::timeout(timeout, async {
                let response = http
                    .get(url)
                    .timeout(timeout)
                    .send()
                    .await
                    .map_err(error_text)?;
                let code = response.status().as_u16();
                let status_ok = status.map_or((200..300).contains(&code), |s| s == code);
                if !status_ok {
                    return Err(format!(
                        "HTTP {code}, expected {}",
                        status.map_or_else(|| "2xx".to_owned(), |s| s.to_string())
                    ));
                }
                if let Some(want) = body {
                    let bytes = response.bytes().await.map_err(error_text)?;
                    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_BODY)]);
                    if !text.contains(want.as_str()) {
                        return Err(format!("HTTP {code}, body without {want:?}"));
                    }
                }
                Ok(())
            })
            .await;
            answer.unwrap_or_else(|_| Err(format!("no answer within {} s", timeout.as_secs())))
        }
        Target::Tcp { address } => {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address.as_str()))
                .await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("connect: {e}")),
                Err(_) => Err(format!("connect: no answer within {} s", timeout.as_secs())),
            }
        }
        Target::Workload {
            namespace,
            workload,
            name,
            allowance,
        } => {
            let cluster =
                cluster.ok_or("workload probes need the hub's Kubernetes access (--kubeconfig)")?;
            let (desired, available) = tokio::time::timeout(
                timeout,
                cluster.workload_replicas(namespace, *workload, name),
            )
            .await
            .map_err(|_| format!("Kubernetes API: no answer within {} s", timeout.as_secs()))??;
            if enough_replicas(desired, available, *allowance) {
                Ok(())
            } else {
                Err(format!(
                    "{available} of {desired} replicas available (allowance {allowance})"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowance_lets_that_many_replicas_be_missing() {
        assert!(enough_replicas(3, 3, 0));
        assert!(!enough_replicas(3, 2, 0));
        assert!(enough_replicas(3, 2, 1));
        assert!(enough_replicas(0, 0, 0));
    }
}
