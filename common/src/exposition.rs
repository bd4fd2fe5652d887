//! Serving metrics to both kinds of scrapers.
//!
//! `prometheus-client` writes OpenMetrics text, which Prometheus asks for in its `Accept`
//! header. Clients that do not ask for it (curl, `promtool check metrics`, older scrapers)
//! expect the classic text format 0.0.4, where a counter's HELP and TYPE carry the `_total`
//! name and there is no `# EOF` or `# UNIT`. [`to_classic_text`] performs that translation.

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
