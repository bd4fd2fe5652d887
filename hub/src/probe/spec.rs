//! What a plan probes, as the operator writes it (`--probe`, `probes` in hub.toml):
//!
//! - `http://host:port/path[,status=200][,body=TEXT]` (or `https://`): the status must match
//!   (default: any 2xx) and the body contain `TEXT` when given;
//! - `tcp://host:port`: a TCP connection must open;
//! - `workload:NAMESPACE/KIND/NAME[,allowance=N]` (`--probe-workload` takes the part after
//!   `workload:`): a Deployment, StatefulSet or DaemonSet must have at least its desired
//!   replicas minus `allowance` (default 0) available.
//!
//! Every probe also takes `name=`, `interval=` (default 2 s), `timeout=` (default 2 s) and
//! `threshold=` (consecutive failures before it counts as down, default 3). Pure.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A workload kind a probe can watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkloadKind {
    /// `apps/v1` Deployment (`status.availableReplicas` vs `spec.replicas`).
    Deployment,
    /// `apps/v1` StatefulSet (`status.availableReplicas` vs `spec.replicas`).
    StatefulSet,
    /// `apps/v1` DaemonSet (`status.numberAvailable` vs `status.desiredNumberScheduled`).
    DaemonSet,
}

impl WorkloadKind {
    fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "deployment" | "deploy" => Some(Self::Deployment),
            "statefulset" | "sts" => Some(Self::StatefulSet),
            "daemonset" | "ds" => Some(Self::DaemonSet),
            _ => None,
        }
    }

    /// The kind's name as Kubernetes writes it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
        }
    }
}

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// An HTTP(S) GET.
    Http {
        /// The URL.
        url: String,
        /// The status expected; `None`: any 2xx.
        status: Option<u16>,
        /// Text the body must contain.
        body: Option<String>,
    },
    /// A TCP connect.
    Tcp {
        /// `host:port`.
        address: String,
    },
    /// A workload's available replicas.
    Workload {
        /// Its namespace.
        namespace: String,
        /// Deployment, StatefulSet or DaemonSet.
        workload: WorkloadKind,
        /// Its name.
        name: String,
        /// Replicas that may be unavailable.
        allowance: u32,
    },
}

impl Target {
    /// The target in words (`plan show`, halt reasons): the URL without credentials or
    /// query, `tcp://host:port`, `ns/Kind/name`.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Http { url, .. } => crate::fetch::display_url(url),
            Self::Tcp { address } => format!("tcp://{address}"),
            Self::Workload {
                namespace,
                workload,
                name,
                ..
            } => format!("{namespace}/{}/{name}", workload.name()),
        }
    }
}

/// One probe of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSpec {
    /// Its name in reports, metrics and gate reasons (unique in a plan).
    pub name: String,
    /// What it checks.
    pub target: Target,
    /// Seconds between two checks.
    pub interval_secs: u64,
    /// Seconds one check may take.
    pub timeout_secs: u64,
    /// Consecutive failures before the probe counts as down.
    pub threshold: u32,
}

impl ProbeSpec {
    /// The interval.
    #[must_use]
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs.max(1))
    }

    /// The timeout.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }
}

/// A probe that cannot be used, naming the part that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("probe {probe}: {reason}")]
pub struct ProbeSpecError {
    /// The probe as written (credentials hidden).
    pub probe: String,
    /// What is wrong.
    pub reason: String,
}

fn seconds(value: &str) -> Option<u64> {
    let value = value.trim();
    if let Some(m) = value.strip_suffix('m') {
        return m.parse::<u64>().ok().map(|m| m * 60);
    }
    value.strip_suffix('s').unwrap_or(value).parse().ok()
}

/// Parses one probe.
///
/// # Errors
/// [`ProbeSpecError`] naming the option or part that is wrong.
pub fn parse(text: &str) -> Result<ProbeSpec, ProbeSpecError> {
    let shown = crate::fetch::display_url(text.split(',').next().unwrap_or(text));
    let bad = |reason: String| ProbeSpecError {
        probe: shown.clone(),
        reason,
    };
    let mut parts = text.split(',');
    let head = parts.next().unwrap_or_default().trim();
    let mut name = None;
    let mut interval_secs = 2;
    let mut timeout_secs = 2;
    let mut threshold = 3;
    let mut status = None;
    let mut body = None;
    let mut allowance = 0;
    for option in parts {
        let (key, value) = option
            .split_once('=')
            .ok_or_else(|| bad(format!("option {option:?} is not key=value")))?;
        let number = |what: &str| {
            seconds(value)
                .ok_or_else(|| bad(format!("{what}={value:?} is not a number of seconds")))
        };
        match key.trim() {
            "name" if !value.trim().is_empty() && !value.contains(char::is_control) => {
                name = Some(value.trim().to_owned());
            }
            "interval" => interval_secs = number("interval")?.max(1),
            "timeout" => timeout_secs = number("timeout")?.max(1),
            "threshold" => {
                threshold = value
                    .parse::<u32>()
                    .ok()
                    .filter(|t| *t >= 1)
                    .ok_or_else(|| {
                        bad(format!("threshold={value:?} is not a count of at least 1"))
                    })?;
            }
            "status" => {
                status = Some(
                    value
                        .parse::<u16>()
                        .ok()
                        .filter(|s| (100..600).contains(s))
                        .ok_or_else(|| bad(format!("status={value:?} is not an HTTP status")))?,
                );
            }
            "body" => body = Some(value.to_owned()),
            "allowance" => {
                allowance = value
                    .parse()
                    .map_err(|_| bad(format!("allowance={value:?} is not a count")))?;
            }
            other => {
                return Err(bad(format!(
                    "unknown option {other:?} (name, interval, timeout, threshold, status, body, allowance)"
                )));
            }
        }
    }
    let target = if head.starts_with("http://") || head.starts_with("https://") {
        let url = reqwest::Url::parse(head).map_err(|e| bad(format!("not a URL: {e}")))?;
        if url.host_str().is_none() {
            return Err(bad("the URL has no host".to_owned()));
        }
        Target::Http {
            url: head.to_owned(),
            status,
            body,
        }
    } else if let Some(address) = head.strip_prefix("tcp://") {
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| bad("tcp:// needs host:port".to_owned()))?;
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad("tcp:// needs host:port".to_owned()));
        }
        Target::Tcp {
            address: address.to_owned(),
        }
    } else if let Some(workload) = head.strip_prefix("workload:") {
        let mut it = workload.split('/');
        let (Some(namespace), Some(kind), Some(wname), None) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(bad(
                "workload: needs NAMESPACE/KIND/NAME (Deployment, StatefulSet, DaemonSet)"
                    .to_owned(),
            ));
        };
        let workload = WorkloadKind::parse(kind).ok_or_else(|| {
            bad(format!(
                "{kind:?} is not Deployment, StatefulSet or DaemonSet"
            ))
        })?;
        if namespace.is_empty() || wname.is_empty() {
            return Err(bad("workload: needs NAMESPACE/KIND/NAME".to_owned()));
        }
        Target::Workload {
            namespace: namespace.to_owned(),
            workload,
            name: wname.to_owned(),
            allowance,
        }
    } else {
        return Err(bad(
            "must start with http://, https://, tcp:// or workload:".to_owned(),
        ));
    };
    if matches!(target, Target::Http { .. }) && allowance != 0 {
        return Err(bad("allowance is for workload probes".to_owned()));
    }
    let name = name.unwrap_or_else(|| match &target {
        Target::Http { .. } => target.describe(),
        Target::Tcp { address } => address.clone(),
        Target::Workload { .. } => target.describe(),
    });
    Ok(ProbeSpec {
        name,
        target,
        interval_secs,
        timeout_secs,
        threshold,
    })
}

/// Parses every probe and refuses two with one name.
///
/// # Errors
/// The first bad probe, or a repeated name.
pub fn parse_all(texts: &[String]) -> Result<Vec<ProbeSpec>, ProbeSpecError> {
    let mut out: Vec<ProbeSpec> = Vec::with_capacity(texts.len());
    for text in texts {
        let spec = parse(text)?;
        if out.iter().any(|p| p.name == spec.name) {
            return Err(ProbeSpecError {
                probe: spec.name.clone(),
                reason: "two probes with this name (set name=...)".to_owned(),
            });
        }
        out.push(spec);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_tcp_and_workload_probes_parse_with_their_options() {
        let p = parse("http://10.0.0.5:8080/healthz,status=204,body=ok,interval=1s,threshold=2")
            .expect("http");
        assert_eq!(p.name, "http://10.0.0.5:8080/healthz");
        assert_eq!(
            p.target,
            Target::Http {
                url: "http://10.0.0.5:8080/healthz".into(),
                status: Some(204),
                body: Some("ok".into())
            }
        );
        assert_eq!((p.interval_secs, p.timeout_secs, p.threshold), (1, 2, 2));
        let t = parse("tcp://db.internal:5432,name=db,timeout=5s").expect("tcp");
        assert_eq!(t.name, "db");
        assert_eq!(t.target.describe(), "tcp://db.internal:5432");
        let w = parse("workload:shop/deploy/web,allowance=1").expect("workload");
        assert_eq!(w.name, "shop/Deployment/web");
        assert!(matches!(w.target, Target::Workload { allowance: 1, .. }));
    }

    #[test]
    fn bad_probes_are_named_with_what_is_wrong() {
        for (text, what) in [
            ("ftp://x", "must start with"),
            ("tcp://host", "host:port"),
            ("workload:shop/Pod/web", "not Deployment"),
            ("http://x/,threshold=0", "threshold"),
            ("http://x/,status=99", "status"),
            ("http://x/,colour=red", "unknown option"),
            ("http://x/,allowance=1", "allowance is for workload"),
        ] {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(what), "{text}: {err}");
        }
        let err = parse("https://user:secret@app.example/health,colour=red")
            .expect_err("bad option")
            .to_string();
        assert!(!err.contains("secret"), "{err}");
        let dup = parse_all(&["tcp://a:1,name=x".into(), "tcp://b:2,name=x".into()])
            .expect_err("duplicate");
        assert!(dup.to_string().contains("two probes"), "{dup}");
    }
}
