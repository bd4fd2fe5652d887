//! Serving metrics to both kinds of scrapers.
//!
//! `prometheus-client` writes OpenMetrics text, which Prometheus asks for in its `Accept`
//! header. Clients that do not ask for it (curl, `promtool check metrics`, older scrapers)
//! expect the classic text format 0.0.4, where a counter's HELP and TYPE carry the `_total`
//! name and there is no `# EOF` or `# UNIT`. [`to_classic_text`] performs that translation.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

/// A sample's labels, as the collectors build them.
pub type Labels = Vec<(&'static str, String)>;

/// Content type of OpenMetrics text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the classic Prometheus text format.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header value asks for OpenMetrics.
#[must_use]
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// What a `/metrics` request gets: HTTP status, content type and body. Pure, so both
/// binaries' handlers are a line of axum around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scrape {
    /// 200, or 500 when the registry could not be encoded.
    pub status: u16,
    /// The body's content type.
    pub content_type: &'static str,
    /// The exposition (or a one-line error).
    pub body: String,
}

/// Answers a scrape: `encoded` is the registry's OpenMetrics text, `accept` the request's
/// `Accept` header.
#[must_use]
pub fn scrape(encoded: Result<String, std::fmt::Error>, accept: Option<&str>) -> Scrape {
    match encoded {
        Ok(body) if wants_openmetrics(accept) => Scrape {
            status: 200,
            content_type: OPENMETRICS_CONTENT_TYPE,
            body,
        },
        Ok(body) => Scrape {
            status: 200,
            content_type: CLASSIC_CONTENT_TYPE,
            body: to_classic_text(&body),
        },
        Err(_) => Scrape {
            status: 500,
            content_type: "text/plain; charset=utf-8",
            body: "cannot encode metrics\n".to_owned(),
        },
    }
}

/// Encodes one gauge family of constant samples, read at scrape time by a collector. A
/// sample without labels is written without a family, so it carries no empty `{}`.
///
/// # Errors
/// The encoder's formatting error.
pub fn const_gauges(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(Labels, f64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        if labels.is_empty() {
            ConstGauge::new(*value).encode(metric)?;
            break;
        }
        ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

/// Translates OpenMetrics text (as `prometheus-client` writes it) into the classic format.
#[must_use]
pub fn to_classic_text(openmetrics: &str) -> String {
    let lines: Vec<&str> = openmetrics.lines().collect();
    let mut out = String::with_capacity(openmetrics.len());
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line == "# EOF" || line.starts_with("# UNIT ") {
            i += 1;
            continue;
        }
        // A HELP line followed by `TYPE <same> counter`: rename both to `<name>_total`.
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            let counter_type = format!("# TYPE {name} counter");
            if lines.get(i + 1).is_some_and(|next| *next == counter_type)
                && !name.ends_with("_total")
            {
                out.push_str(&format!("# HELP {name}_total{}\n", &rest[name.len()..]));
                out.push_str(&format!("# TYPE {name}_total counter\n"));
                i += 2;
                continue;
            }
        }
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|r| r.strip_suffix(" counter"))
            && !name.ends_with("_total")
        {
            out.push_str(&format!("# TYPE {name}_total counter\n"));
            i += 1;
            continue;
        }
        out.push_str(line);
        out.push('\n');
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry_text() -> String {
        use prometheus_client::collector::Collector;
        #[derive(Debug)]
        struct Two;
        impl Collector for Two {
            fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
                const_gauges(&mut encoder, "up", "Plain", &[(vec![], 1.0)])?;
                const_gauges(
                    &mut encoder,
                    "node_ok",
                    "Per node",
                    &[
                        (vec![("node", "a".to_owned())], 1.0),
                        (vec![("node", "b".to_owned())], 0.0),
                    ],
                )
            }
        }
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Two));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encodes");
        out
    }

    #[test]
    fn scrapes_negotiate_the_format_and_gauges_need_no_empty_braces() {
        let text = registry_text();
        assert!(text.contains("\nup 1.0\n"), "{text}");
        assert!(text.contains("node_ok{node=\"b\"} 0.0"), "{text}");
        let open = scrape(
            Ok(text.clone()),
            Some("application/openmetrics-text; version=1.0.0"),
        );
        assert_eq!(
            (open.status, open.content_type),
            (200, OPENMETRICS_CONTENT_TYPE)
        );
        assert!(open.body.ends_with("# EOF\n"));
        let classic = scrape(Ok(text), None);
        assert_eq!(classic.content_type, CLASSIC_CONTENT_TYPE);
        assert!(!classic.body.contains("# EOF"));
        assert_eq!(scrape(Err(std::fmt::Error), None).status, 500);
    }

    #[test]
    fn counters_get_total_names_and_eof_goes() {
        let om = "# HELP x_scans Scans.\n# TYPE x_scans counter\nx_scans_total 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n# EOF\n";
        assert_eq!(
            to_classic_text(om),
            "# HELP x_scans_total Scans.\n# TYPE x_scans_total counter\nx_scans_total 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n"
        );
    }

    #[test]
    fn units_are_dropped() {
        let om = "# HELP d Dur.\n# TYPE d gauge\n# UNIT d seconds\nd 1\n# EOF\n";
        assert_eq!(to_classic_text(om), "# HELP d Dur.\n# TYPE d gauge\nd 1\n");
    }

    #[test]
    fn accept_negotiation() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }
}
