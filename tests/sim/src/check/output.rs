//! RKE2's four output formats for `certificate check` (see `tests/SIMULATOR.md` §1.3).

use std::fmt::Write as _;

use time::OffsetDateTime;
use time::macros::format_description;

use super::tabwriter::TabWriter;
use super::{CERTIFICATE_RENEW_DAYS, Detection, Report, Status, humanize};

/// `--output/-o` values RKE2 accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Default: logrus lines on stderr, nothing on stdout.
    Text,
    /// Go tabwriter table on stdout.
    Table,
    /// `json.Encoder` line on stdout.
    Json,
    /// `yaml.v2` document on stdout.
    Yaml,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(OutputFormat::Text),
            "table" => Ok(OutputFormat::Table),
            "json" => Ok(OutputFormat::Json),
            "yaml" => Ok(OutputFormat::Yaml),
            other => Err(format!("invalid output format {other}")),
        }
    }
}

/// What a run writes: (stdout, stderr). The detection line (when services were not given)
/// comes first on stderr, as logrus prints it before formatting.
#[must_use]
pub fn render(report: &Report, format: OutputFormat) -> (String, String) {
    let mut stderr = detection_log_line(report).unwrap_or_default();
    let stdout = match format {
        OutputFormat::Text => {
            stderr.push_str(&render_text(report));
            String::new()
        }
        OutputFormat::Table => render_table(report),
        OutputFormat::Json => render_json(report),
        OutputFormat::Yaml => render_yaml(report),
    };
    (stdout, stderr)
}

/// The `Server detected ...` / `Agent detected ...` info line, if RKE2 would log one.
#[must_use]
pub fn detection_log_line(report: &Report) -> Option<String> {
    let msg = match report.detection {
        Detection::Server => "Server detected, checking agent and server certificates",
        Detection::Agent => "Agent detected, checking agent certificates",
        Detection::Explicit => return None,
    };
    Some(logrus_line(report.now, "info", msg))
}

/// Go's `"Jan 02, 2006 15:04 MST"` for a UTC time.
fn table_date(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(format_description!(
        "[month repr:short] [day], [year] [hour]:[minute] UTC"
    ))
    .unwrap_or_default()
}

/// `-o table`.
#[must_use]
pub fn render_table(report: &Report) -> String {
    let mut text = String::from(
        "\nFILENAME\tSUBJECT\tUSAGES\tEXPIRES\tRESIDUAL TIME\tSTATUS\n\
         --------\t-------\t------\t-------\t-------------\t------\n",
    );
    for row in &report.rows {
        let _ = writeln!(
            text,
            "{}\t{}\t{}\t{}\t{}\t{}",
            row.filename,
            row.subject,
            row.usages.join(","),
            table_date(row.expiry_time),
            humanize::residual(row.residual_nanos),
            row.status.as_str()
        );
    }
    TabWriter::RKE2_TABLE.format(&text)
}

/// Go's `time.RFC3339Nano` for a time, in UTC (`Z`), trailing zero fraction digits removed.
#[must_use]
pub fn go_rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let mut s = t
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]"
        ))
        .unwrap_or_default();
    let nanos = t.nanosecond();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Go's `time.Duration.String()` (e.g. `8759h0m0s`, `-48h0m0s`, `1.5s`, `0s`).
#[must_use]
pub fn go_duration_string(nanos: i64) -> String {
    let neg = nanos < 0;
    let u = nanos.unsigned_abs();
    let body = if u == 0 {
        "0s".to_owned()
    } else if u < 1_000_000_000 {
        let (prec, unit) = if u < 1_000 {
            (0, "ns")
        } else if u < 1_000_000 {
            (3, "µs")
        } else {
            (6, "ms")
        };
        format!("{}{unit}", fixed_point(u, prec))
    } else {
        let secs = fixed_point(u % 60_000_000_000, 9);
        let minutes = u / 60_000_000_000;
        if minutes == 0 {
            format!("{secs}s")
        } else if minutes < 60 {
            format!("{minutes}m{secs}s")
        } else {
            format!("{}h{}m{secs}s", minutes / 60, minutes % 60)
        }
    };
    if neg { format!("-{body}") } else { body }
}

/// `v / 10^prec` with the fraction printed without trailing zeros (Go's `fmtFrac`+`fmtInt`).
fn fixed_point(v: u64, prec: u32) -> String {
    let scale = 10u64.pow(prec);
    let int = v / scale;
    let frac = v % scale;
    if frac == 0 {
        int.to_string()
    } else {
        let digits = format!("{frac:0width$}", width = prec as usize);
        format!("{int}.{}", digits.trim_end_matches('0'))
    }
}

/// Go's JSON encoder escapes these even inside strings (HTML-safe by default).
fn go_json_html_escape(s: &str) -> String {
    s.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// `-o json`: one line, fields in Go struct order, `ResidualTime` in nanoseconds.
#[must_use]
pub fn render_json(report: &Report) -> String {
    let inner = if report.rows.is_empty() {
        "null".to_owned()
    } else {
        let objects: Vec<String> = report
            .rows
            .iter()
            .map(|row| {
                format!(
                    "{{\"Filename\":{},\"Subject\":{},\"Issuer\":{},\"Usages\":{},\
                     \"ExpiryTime\":{},\"ResidualTime\":{},\"Status\":{}}}",
                    json_str(&row.filename),
                    json_str(&row.subject),
                    json_str(&row.issuer),
                    serde_json::Value::from(row.usages.clone()),
                    json_str(&go_rfc3339(row.expiry_time)),
                    row.residual_nanos,
                    json_str(row.status.as_str())
                )
            })
            .collect();
        format!("[{}]", objects.join(","))
    };
    go_json_html_escape(&format!("{{\"Certificates\":{inner}}}\n"))
}

fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// `-o yaml`: gopkg.in/yaml.v2 layout with lower-cased keys.
#[must_use]
pub fn render_yaml(report: &Report) -> String {
    if report.rows.is_empty() {
        return "certificates: []\n".to_owned();
    }
    let mut out = String::from("certificates:\n");
    for row in &report.rows {
        let _ = writeln!(out, "- filename: {}", yaml_str(&row.filename));
        let _ = writeln!(out, "  subject: {}", yaml_str(&row.subject));
        let _ = writeln!(out, "  issuer: {}", yaml_str(&row.issuer));
        out.push_str("  usages:\n");
        for usage in &row.usages {
            let _ = writeln!(out, "  - {}", yaml_str(usage));
        }
        let _ = writeln!(out, "  expirytime: {}", go_rfc3339(row.expiry_time));
        let _ = writeln!(
            out,
            "  residualtime: {}",
            yaml_str(&go_duration_string(row.residual_nanos))
        );
        let _ = writeln!(out, "  status: {}", yaml_str(row.status.as_str()));
    }
    out
}

/// Whether yaml.v2 would resolve a plain scalar to something other than a string (then it
/// double-quotes the string).
fn yaml_resolves_to_non_string(s: &str) -> bool {
    const SPECIAL: &[&str] = &[
        "", "~", "null", "Null", "NULL", "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO",
        "true", "True", "TRUE", "false", "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF",
        ".inf", ".Inf", ".INF", "+.inf", "-.inf", ".nan", ".NaN", ".NAN", "<<",
    ];
    if SPECIAL.contains(&s) {
        return true;
    }
    let plain = s.replace('_', "");
    let digits = plain.trim_start_matches(['+', '-']);
    let numeric = !digits.is_empty()
        && (digits.parse::<f64>().is_ok()
            || digits
                .strip_prefix("0x")
                .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
            || digits
                .strip_prefix("0b")
                .is_some_and(|b| !b.is_empty() && b.chars().all(|c| c == '0' || c == '1')));
    // yaml.v2 also resolves timestamps such as 2006-01-02.
    let date_like = s.len() >= 10
        && s.as_bytes()[..10].iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    numeric || date_like
}

/// Whether libyaml's analysis forbids a plain scalar in block context.
fn yaml_needs_single_quotes(s: &str) -> bool {
    let bytes = s.as_bytes();
    let first = bytes[0];
    let ws_after = |i: usize| bytes.get(i + 1).is_none_or(|c| *c == b' ' || *c == b'\t');
    if b"#,[]{}&*!|>'\"%@`".contains(&first)
        || ((first == b'?' || first == b':' || first == b'-') && ws_after(0))
    {
        return true;
    }
    if s.starts_with(' ') || s.ends_with(' ') || s.contains(['\n', '\t']) {
        return true;
    }
    bytes.iter().enumerate().skip(1).any(|(i, c)| match c {
        b':' => ws_after(i),
        b'#' => bytes[i - 1] == b' ',
        _ => false,
    })
}

fn yaml_str(s: &str) -> String {
    if yaml_resolves_to_non_string(s) {
        serde_json::Value::from(s).to_string()
    } else if yaml_needs_single_quotes(s) {
        format!("'{}'", s.replace('\'', "''"))
    } else {
        s.to_owned()
    }
}

/// Go's `%q` for the characters a certificate message can hold.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One line of logrus' text formatter when stderr is not a terminal.
#[must_use]
pub fn logrus_line(now: OffsetDateTime, level: &str, msg: &str) -> String {
    let needs_quoting = msg.chars().any(|c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '/' | '@' | '^' | '+'))
    });
    let msg = if needs_quoting {
        go_quote(msg)
    } else {
        msg.to_owned()
    };
    let time = go_rfc3339(now.replace_nanosecond(0).unwrap_or(now));
    format!("time=\"{time}\" level={level} msg={msg}\n")
}

/// Default `-o text`: logrus lines (stderr) per certificate.
#[must_use]
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    for row in &report.rows {
        let usages = row.usages.join(",");
        let at = go_rfc3339(row.expiry_time);
        let (level, msg) = match row.status {
            Status::NotYetValid => (
                "error",
                format!(
                    "{}: certificate {} ({usages}) is not valid before {at}",
                    row.filename, row.subject
                ),
            ),
            Status::Expired => (
                "error",
                format!(
                    "{}: certificate {} ({usages}) expired at {at}",
                    row.filename, row.subject
                ),
            ),
            Status::Warning => (
                "warning",
                format!(
                    "{}: certificate {} ({usages}) will expire within {CERTIFICATE_RENEW_DAYS} days at {at}",
                    row.filename, row.subject
                ),
            ),
            Status::Ok => (
                "info",
                format!(
                    "{}: certificate {} ({usages}) is ok, expires at {at}",
                    row.filename, row.subject
                ),
            ),
        };
        out.push_str(&logrus_line(report.now, level, &msg));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn go_duration_strings() {
        assert_eq!(go_duration_string(0), "0s");
        assert_eq!(go_duration_string(1), "1ns");
        assert_eq!(go_duration_string(1_500), "1.5µs");
        assert_eq!(go_duration_string(1_500_000), "1.5ms");
        assert_eq!(go_duration_string(1_500_000_000), "1.5s");
        assert_eq!(go_duration_string(61_000_000_000), "1m1s");
        assert_eq!(go_duration_string(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration_string(-48 * 3_600_000_000_000), "-48h0m0s");
        assert_eq!(
            go_duration_string(8759 * 3_600_000_000_000 + 59 * 60_000_000_000 + 59_250_000_000),
            "8759h59m59.25s"
        );
    }

    #[test]
    fn dates_in_go_layouts() {
        let t = datetime!(2026-03-05 09:07:03 UTC);
        assert_eq!(table_date(t), "Mar 05, 2026 09:07 UTC");
        assert_eq!(go_rfc3339(t), "2026-03-05T09:07:03Z");
        assert_eq!(
            go_rfc3339(datetime!(2026-03-05 09:07:03.5 UTC)),
            "2026-03-05T09:07:03.5Z"
        );
    }

    #[test]
    fn yaml_quoting_matches_yaml_v2_for_typical_values() {
        assert_eq!(yaml_str("system:admin"), "system:admin");
        assert_eq!(
            yaml_str("rke2-client-ca@1700000000"),
            "rke2-client-ca@1700000000"
        );
        assert_eq!(yaml_str("NOT YET VALID"), "NOT YET VALID");
        assert_eq!(yaml_str("-48h0m0s"), "-48h0m0s");
        assert_eq!(yaml_str(""), "\"\"");
        assert_eq!(yaml_str("123"), "\"123\"");
        assert_eq!(yaml_str("yes"), "\"yes\"");
        assert_eq!(yaml_str("@x"), "'@x'");
        assert_eq!(yaml_str("a: b"), "'a: b'");
    }

    #[test]
    fn output_format_parse_error_matches_rke2() {
        assert_eq!(
            "xml"
                .parse::<OutputFormat>()
                .expect_err("xml is not a format"),
            "invalid output format xml"
        );
    }
}
