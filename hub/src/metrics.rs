//! The hub's Prometheus metrics. Fleet gauges are computed from the store at scrape time
//! (so they are never stale and cost nothing between scrapes); RPC counters and latencies
//! are updated by the services.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::registry::Registry as Streams;
use crate::store::Store;

use rke2ops_common::exposition::{Labels, const_gauges as gauge};
use rke2ops_common::http_server::{ServerLimits, serve_bounded};

/// Registry and the handles the services update.
#[derive(Debug)]
pub struct HubMetrics {
    registry: Registry,
    /// RPCs by method and gRPC code.
    pub rpcs: Family<Labels, Counter>,
    /// RPC handling time by method (unary calls, and each message on a stream).
    pub rpc_seconds: Family<Labels, Histogram>,
}

/// Whether this hub leads (`rke2ops_hub_leader`): 1 on a single hub, and on the one replica
/// of an etcd-backed hub that holds the election.
#[derive(Debug)]
struct RoleCollector {
    role: Arc<crate::ha::Role>,
}

impl Collector for RoleCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        gauge(
            &mut encoder,
            "rke2ops_hub_leader",
            "Whether this hub replica leads (runs the plans, takes agents and writes)",
            &[(
                vec![("replica", self.role.replica.clone())],
                if self.role.is_leader() { 1.0 } else { 0.0 },
            )],
        )
    }
}

#[derive(Debug)]
struct FleetCollector {
    store: Store,
    streams: Arc<Streams>,
    doctor: Arc<crate::doctor::Latest>,
}

/// `rke2ops_hub_doctor_findings` series of `findings`: the count per (node, code, severity);
/// a finding naming several nodes counts for each, a cluster-wide one under `node=""`.
#[must_use]
pub fn doctor_series(findings: &[rke2ops_common::doctor::Finding]) -> Vec<(Labels, f64)> {
    let mut counts: std::collections::BTreeMap<(String, &str, &str), u32> = Default::default();
    for f in findings {
        for node in f.node.split(',') {
            *counts
                .entry((node.to_owned(), f.code.as_str(), f.severity.as_str()))
                .or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|((node, code, severity), n)| {
            (
                vec![
                    ("node", node),
                    ("code", code.to_owned()),
                    ("severity", severity.to_owned()),
                ],
                f64::from(n),
            )
        })
        .collect()
}

/// Gauge samples and counter samples of one collection.
pub type Series = (Vec<(Labels, f64)>, Vec<(Labels, u64)>);

/// The probe series (pure): `up{plan,probe}` for active plans' probes with a result, and
/// failures per probe name summed over every stored plan.
#[must_use]
#[allow(clippy::cast_precision_loss)]
pub fn probe_series(probes: &[(i64, bool, String, crate::probe::Tally)]) -> Series {
    let up = probes
        .iter()
        .filter(|(_, active, _, t)| *active && t.samples > 0)
        .map(|(plan, _, probe, t)| {
            (
                vec![("plan", plan.to_string()), ("probe", probe.clone())],
                if t.consecutive_failures == 0 {
                    1.0
                } else {
                    0.0
                },
            )
        })
        .collect();
    let mut failures: std::collections::BTreeMap<&str, u64> = Default::default();
    for (_, _, probe, t) in probes {
        *failures.entry(probe.as_str()).or_default() += t.failures;
    }
    let failures = failures
        .into_iter()
        .map(|(probe, n)| (vec![("probe", probe.to_owned())], n))
        .collect();
    (up, failures)
}

impl Collector for FleetCollector {
    #[allow(clippy::cast_precision_loss)]
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Ok(nodes) = self.store.nodes() else {
            return Ok(());
        };
        let mut by_group: std::collections::BTreeMap<(String, String, String, String), usize> =
            Default::default();
        for n in &nodes {
            let state = if n.online { "online" } else { "offline" };
            *by_group
                .entry((
                    state.to_owned(),
                    n.role.clone(),
                    n.rke2_version.clone(),
                    n.cluster.clone(),
                ))
                .or_default() += 1;
        }
        let series: Vec<(Labels, f64)> = by_group
            .into_iter()
            .map(|((state, role, version, cluster), count)| {
                (
                    vec![
                        ("state", state),
                        ("role", role),
                        ("version", version),
                        ("cluster", cluster),
                    ],
                    count as f64,
                )
            })
            .collect();
        gauge(
            &mut encoder,
            "rke2ops_hub_nodes",
            "Known nodes by state, role, RKE2 version and cluster",
            &series,
        )?;
        gauge(
            &mut encoder,
            "rke2ops_hub_doctor_findings",
            "Findings of the fleet doctor's last run (every minute, and at each doctor, plan \
             preflight and node check) by node (empty: cluster-wide), code and severity",
            &doctor_series(&self.doctor.findings()),
        )?;
        gauge(
            &mut encoder,
            "rke2ops_hub_connected_agents",
            "Agents with a live stream",
            &[(vec![], self.streams.connected().len() as f64)],
        )?;
        let deadlines: Vec<(Labels, f64)> = nodes
            .iter()
            .filter_map(|n| {
                Some((
                    vec![("node", n.name.clone()), ("cluster", n.cluster.clone())],
                    n.renewal_deadline?.unix_timestamp() as f64,
                ))
            })
            .collect();
        gauge(
            &mut encoder,
            "rke2ops_hub_renewal_deadline_timestamp_seconds",
            "Each node's renewal deadline (earliest leaf NotAfter)",
            &deadlines,
        )?;
        // Plans: every plan by kind and state, and the active plan's nodes by phase (an
        // alert on `state="halted"` pages whoever must resume, skip or abort it).
        if let Ok(counts) = self.store.plan_counts() {
            let series: Vec<(Labels, f64)> = counts
                .into_iter()
                .map(|(kind, state, cluster, n)| {
                    (
                        vec![("kind", kind), ("state", state), ("cluster", cluster)],
                        n as f64,
                    )
                })
                .collect();
            gauge(
                &mut encoder,
                "rke2ops_hub_plans",
                "Plans by kind, state and cluster",
                &series,
            )?;
            let rollouts: Vec<(Labels, f64)> = self
                .store
                .rollout_counts()
                .unwrap_or_default()
                .into_iter()
                .map(|(state, n)| (vec![("state", state)], n as f64))
                .collect();
            gauge(
                &mut encoder,
                "rke2ops_hub_rollouts",
                "Rollouts (plans over several clusters in waves) by state",
                &rollouts,
            )?;
            let mut phases = Vec::new();
            for p in self.store.plans(true).unwrap_or_default() {
                let mut by_phase: std::collections::BTreeMap<&str, usize> = Default::default();
                for n in self.store.plan_nodes(p.id).unwrap_or_default() {
                    *by_phase.entry(n.phase.name()).or_default() += 1;
                }
                for (phase, n) in by_phase {
                    phases.push((
                        vec![
                            ("plan", p.id.to_string()),
                            ("kind", p.kind.name().to_owned()),
                            ("state", p.state.name().to_owned()),
                            ("phase", phase.to_owned()),
                        ],
                        n as f64,
                    ));
                }
            }
            gauge(
                &mut encoder,
                "rke2ops_hub_plan_nodes",
                "Nodes of active plans by phase",
                &phases,
            )?;
        }
        // Application probes: whether each probe of an active plan passes now (1 up, 0 down
        // or failing, absent before its first result), and failures per probe name over the
        // stored plans (pruned with the plans' history).
        if let Ok(probes) = self.store.all_probes() {
            let (up, failures) = probe_series(&probes);
            gauge(
                &mut encoder,
                "rke2ops_hub_probe_up",
                "Whether each application probe of an active plan passed its last check",
                &up,
            )?;
            let mut metric = encoder.encode_descriptor(
                "rke2ops_hub_probe_failures",
                "Failed application probe checks, by probe name, over the stored plans",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (labels, value) in failures {
                prometheus_client::encoding::EncodeMetric::encode(
                    &prometheus_client::metrics::counter::ConstCounter::new(value),
                    metric.encode_family(&labels)?,
                )?;
            }
        }
        if let Ok(Some(earliest)) = self.store.earliest_not_after() {
            gauge(
                &mut encoder,
                "rke2ops_hub_fleet_earliest_cert_expiry_timestamp_seconds",
                "The fleet's earliest certificate NotAfter",
                &[(vec![], earliest.unix_timestamp() as f64)],
            )?;
        }
        Ok(())
    }
}

impl HubMetrics {
    /// Registers everything.
    #[must_use]
    pub fn new(store: Store, streams: Arc<Streams>, doctor: Arc<crate::doctor::Latest>) -> Self {
        let mut registry = Registry::default();
        let build = Family::<Labels, prometheus_client::metrics::gauge::Gauge>::default();
        build
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_owned())])
            .set(1);
        registry.register(
            "rke2ops_build_info",
            "Build of rke2-hub (value 1); the same name as the agent's, per the metrics contract",
            build,
        );
        let rpcs = Family::<Labels, Counter>::default();
        registry.register(
            "rke2ops_hub_rpcs",
            "gRPC calls and stream messages by method and code",
            rpcs.clone(),
        );
        let rpc_seconds = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0])
        });
        registry.register(
            "rke2ops_hub_rpc_duration_seconds",
            "Time to handle a call or a stream message",
            rpc_seconds.clone(),
        );
        registry.register_collector(Box::new(FleetCollector {
            store,
            streams,
            doctor,
        }));
        Self {
            registry,
            rpcs,
            rpc_seconds,
        }
    }

    /// Registers `rke2ops_hub_leader{replica}` for this hub's role.
    pub fn register_role(&mut self, role: Arc<crate::ha::Role>) {
        self.registry
            .register_collector(Box::new(RoleCollector { role }));
    }

    /// Registers the webhook delivery counter the notifier updates
    /// ([`crate::notify`]): `rke2ops_hub_webhook_deliveries_total{webhook,outcome}`.
    pub fn register_webhooks(&mut self, deliveries: Family<Labels, Counter>) {
        self.registry.register(
            "rke2ops_hub_webhook_deliveries",
            "Webhook events by webhook name and outcome (delivered, failed after the retries, dropped on a full queue)",
            deliveries,
        );
    }

    /// Records one handled call or message.
    pub fn observe(&self, method: &str, code: tonic::Code, seconds: f64) {
        let code = format!("{code:?}");
        self.rpcs
            .get_or_create(&vec![("method", method.to_owned()), ("code", code)])
            .inc();
        self.rpc_seconds
            .get_or_create(&vec![("method", method.to_owned())])
            .observe(seconds);
    }

    /// OpenMetrics text.
    ///
    /// # Errors
    /// Only if formatting fails.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Serves `/metrics` (OpenMetrics when asked, classic text otherwise) and `/healthz`, within
/// [`ServerLimits::METRICS`].
///
/// # Errors
/// When the server fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<HubMetrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    use rke2ops_common::exposition;

    async fn handler(
        State(metrics): State<Arc<HubMetrics>>,
        headers: HeaderMap,
    ) -> axum::response::Response {
        let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
        let scrape = exposition::scrape(metrics.encode(), accept);
        (
            StatusCode::from_u16(scrape.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            [(header::CONTENT_TYPE, scrape.content_type)],
            scrape.body,
        )
            .into_response()
    }
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(handler))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .with_state(metrics);
    serve_bounded(listener, app, ServerLimits::METRICS, shutdown).await
}
