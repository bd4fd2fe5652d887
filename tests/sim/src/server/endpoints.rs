//! What the simulated components answer: kube-apiserver (`/readyz`, `/livez`, `/healthz`,
//! `/version`), the supervisor (`/ping`, `/cacerts`) and the kubelet (`/healthz`).
//!
//! Health output follows k8s' `healthz` package: one `[+]<check> ok` or
//! `[-]<check> failed: reason withheld` line per check, then `<endpoint> check passed` (200) or
//! `<endpoint> check failed` (500). A passing non-verbose request answers just `ok`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use hyper::StatusCode;
use serde::Serialize;

use super::listen::{Handler, Reply, RequestInfo, reply};
use crate::kube::handlers::KubeApi;
use crate::version::{GO_VERSION, SimVersion};

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// Where the apiserver's health comes from.
pub trait HealthSource: Send + Sync {
    /// Whether the etcd datastore answers (local member healthy, quorum present).
    fn etcd_ok(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
    /// Whether start-up finished (false under the `never-ready` fault).
    fn started(&self) -> bool;
}

/// The apiserver's readyz checks (a representative subset of kube-apiserver 1.34's).
const READYZ_CHECKS: &[&str] = &[
    "ping",
    "log",
    "etcd",
    "etcd-readiness",
    "informer-sync",
    "poststarthook/start-apiserver-admission-initializer",
    "poststarthook/generic-apiserver-start-informers",
    "poststarthook/start-apiextensions-informers",
    "poststarthook/crd-informer-synced",
    "poststarthook/rbac/bootstrap-roles",
    "poststarthook/scheduling/bootstrap-system-priority-classes",
    "poststarthook/bootstrap-controller",
    "poststarthook/apiservice-registration-controller",
    "shutdown",
];

/// The apiserver's livez (and healthz) checks.
const LIVEZ_CHECKS: &[&str] = &[
    "ping",
    "log",
    "etcd",
    "poststarthook/start-apiserver-admission-initializer",
    "poststarthook/generic-apiserver-start-informers",
    "poststarthook/rbac/bootstrap-roles",
    "poststarthook/bootstrap-controller",
];

/// Whether one check passes, given etcd's state and whether start-up finished.
fn check_passes(check: &str, etcd_ok: bool, started: bool) -> bool {
    match check {
        "etcd" | "etcd-readiness" => etcd_ok,
        // Under `never-ready` the bootstrap hooks never complete, as on an apiserver that
        // cannot finish its post-start hooks.
        "poststarthook/rbac/bootstrap-roles" | "informer-sync" => started,
        _ => true,
    }
}

/// The k8s healthz body and status for `endpoint` (`readyz`, `livez`, `healthz`).
#[must_use]
pub fn health_report(
    endpoint: &str,
    checks: &[&str],
    verbose: bool,
    etcd_ok: bool,
    started: bool,
) -> (StatusCode, String) {
    let mut body = String::new();
    let mut all_ok = true;
    for check in checks {
        if check_passes(check, etcd_ok, started) {
            body.push_str(&format!("[+]{check} ok\n"));
        } else {
            all_ok = false;
            body.push_str(&format!("[-]{check} failed: reason withheld\n"));
        }
    }
    if all_ok {
        if verbose {
            body.push_str(&format!("{endpoint} check passed\n"));
            (StatusCode::OK, body)
        } else {
            (StatusCode::OK, "ok".to_owned())
        }
    } else {
        body.push_str(&format!("{endpoint} check failed\n"));
        (StatusCode::INTERNAL_SERVER_ERROR, body)
    }
}

/// kube-apiserver's `/version` document.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct VersionInfo {
    major: String,
    minor: String,
    emulation_major: String,
    emulation_minor: String,
    min_compatibility_major: String,
    min_compatibility_minor: String,
    git_version: String,
    git_commit: String,
    git_tree_state: &'static str,
    build_date: &'static str,
    go_version: &'static str,
    compiler: &'static str,
    platform: &'static str,
}

/// `/version` for an RKE2 version string (`v1.34.1+rke2r1` → major `1`, minor `34`).
#[must_use]
pub fn version_json(version: &SimVersion) -> String {
    let k8s = version.version.trim_start_matches('v');
    let mut parts = k8s.split(['.', '+', '-']);
    let major = parts.next().unwrap_or("1").to_owned();
    let minor = parts.next().unwrap_or("0").to_owned();
    let min_compat = minor
        .parse::<u32>()
        .map_or_else(|_| minor.clone(), |m| m.saturating_sub(1).to_string());
    let info = VersionInfo {
        major: major.clone(),
        minor: minor.clone(),
        emulation_major: major.clone(),
        emulation_minor: minor,
        min_compatibility_major: major,
        min_compatibility_minor: min_compat,
        git_version: version.version.clone(),
        git_commit: version.commit.clone(),
        git_tree_state: "clean",
        build_date: "2025-09-10T00:00:00Z",
        go_version: GO_VERSION,
        compiler: "gc",
        platform: "linux/amd64",
    };
    serde_json::to_string_pretty(&info).unwrap_or_default()
}

fn unauthorized() -> Reply {
    reply(
        StatusCode::UNAUTHORIZED,
        JSON,
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\
         \"message\":\"Unauthorized\",\"reason\":\"Unauthorized\",\"code\":401}\n",
    )
}

fn not_found(path: &str) -> Reply {
    reply(
        StatusCode::NOT_FOUND,
        JSON,
        format!(
            "{{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{{}},\"status\":\"Failure\",\
             \"message\":\"the server could not find the requested resource\",\
             \"reason\":\"NotFound\",\"details\":{{\"causes\":[{{\"reason\":\"UnexpectedServerResponse\",\
             \"message\":\"404 page not found: {path}\"}}]}},\"code\":404}}\n"
        ),
    )
}

fn is_verbose(query: &str) -> bool {
    query
        .split('&')
        .any(|kv| kv == "verbose" || kv.starts_with("verbose="))
}

/// kube-apiserver on :6443 (RKE2 runs it with `--anonymous-auth=false`: no client
/// certificate, 401).
pub fn apiserver(
    version: SimVersion,
    health: Arc<dyn HealthSource>,
    kube_api: Option<Arc<KubeApi>>,
) -> Handler {
    let version = Arc::new(version);
    Arc::new(move |req: RequestInfo| {
        let version = version.clone();
        let health = health.clone();
        let kube_api = kube_api.clone();
        Box::pin(async move {
            if !req.client_cert {
                return unauthorized();
            }
            let verbose = is_verbose(&req.query);
            let path = req.path.trim_end_matches('/');
            match path {
                "/readyz" | "/livez" | "/healthz" => {
                    let etcd_ok = health.etcd_ok().await;
                    let endpoint = &path[1..];
                    let checks = if endpoint == "readyz" {
                        READYZ_CHECKS
                    } else {
                        LIVEZ_CHECKS
                    };
                    let (status, body) =
                        health_report(endpoint, checks, verbose, etcd_ok, health.started());
                    reply(status, TEXT, body)
                }
                "/version" => reply(StatusCode::OK, JSON, version_json(&version)),
                _ => match &kube_api {
                    Some(api) => match api.handle(&req).await {
                        Some(answer) => answer,
                        None => not_found(&req.path),
                    },
                    None => not_found(&req.path),
                },
            }
        })
    })
}

/// The supervisor on :9345 (no client certificate needed for `/ping` and `/cacerts`).
pub fn supervisor(server_ca_pem: String) -> Handler {
    let ca = Arc::new(server_ca_pem);
    Arc::new(move |req: RequestInfo| {
        let ca = ca.clone();
        Box::pin(async move {
            match req.path.as_str() {
                "/ping" => reply(StatusCode::OK, TEXT, "pong"),
                "/cacerts" => reply(StatusCode::OK, TEXT, ca.as_bytes().to_vec()),
                _ => reply(StatusCode::NOT_FOUND, TEXT, "404 page not found\n"),
            }
        })
    })
}

/// The kubelet: `/healthz` on the plain healthz port (10248) answers anyone; on the
/// authenticated port (10250) a client certificate is required.
pub fn kubelet(require_client_cert: bool) -> Handler {
    Arc::new(move |req: RequestInfo| {
        Box::pin(async move {
            if require_client_cert && !req.client_cert {
                return reply(StatusCode::UNAUTHORIZED, TEXT, "Unauthorized");
            }
            match req.path.as_str() {
                "/healthz" => reply(StatusCode::OK, TEXT, "ok"),
                _ => reply(StatusCode::NOT_FOUND, TEXT, "404 page not found\n"),
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readyz_lists_checks_and_fails_with_etcd() {
        let (status, body) = health_report("readyz", READYZ_CHECKS, true, true, true);
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with("[+]ping ok\n"));
        assert!(body.ends_with("readyz check passed\n"));
        let (status, body) = health_report("readyz", READYZ_CHECKS, false, false, true);
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body.contains("[-]etcd failed: reason withheld\n"));
        assert!(body.ends_with("readyz check failed\n"));
        assert_eq!(
            health_report("readyz", READYZ_CHECKS, false, true, true).1,
            "ok"
        );
    }

    #[test]
    fn version_document_follows_the_rke2_version() {
        let v = SimVersion {
            version: "v1.33.5+rke2r1".into(),
            commit: "abc".into(),
        };
        let doc: serde_json::Value =
            serde_json::from_str(&version_json(&v)).expect("test input is valid");
        assert_eq!(doc["major"], "1");
        assert_eq!(doc["minor"], "33");
        assert_eq!(doc["gitVersion"], "v1.33.5+rke2r1");
        assert_eq!(doc["minCompatibilityMinor"], "32");
    }
}
