//! A configured webhook: `[NAME=][slack:|generic:]URL`, the value of a `webhooks` entry in
//! hub.toml or of a `--webhook` flag. One string per webhook keeps the option in the same
//! file-and-flag shape as every other hub setting (an array of tables would have no flag).
//!
//! The URL is a secret: Slack puts its token in the path, other receivers in the query or in
//! `user:pass@`. It is kept only in [`Webhook::url`] and shown only as [`redacted_url`].

use super::event::Format;

/// One webhook.
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    /// The metric label and log name: the configured name, else its position (`0`, `1`...).
    pub name: String,
    /// Which body it gets.
    pub format: Format,
    /// Where it is POSTed (secret; never logged).
    pub url: String,
}

impl std::fmt::Debug for Webhook {
    // `Config` is `Debug`: the URL must not come out of a `{:?}` either.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("url", &redacted_url(&self.url))
            .finish()
    }
}

/// Why a webhook setting is refused (never containing the URL itself).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// Not an http(s) URL.
    #[error("webhook {0}: not an http:// or https:// URL")]
    NotHttp(String),
    /// The name is reused.
    #[error("webhook name {0:?} is used twice")]
    Duplicate(String),
}

/// Whether `s` can be a webhook name (a metric label value a human picked).
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// Parses `[NAME=][slack:|generic:]URL`; `index` names it when no name is given.
///
/// # Errors
/// [`SpecError::NotHttp`] naming the webhook (by name or index, not URL).
pub fn parse(spec: &str, index: usize) -> Result<Webhook, SpecError> {
    let spec = spec.trim();
    let (name, rest) = match spec.split_once('=') {
        Some((n, rest)) if is_name(n) => (n.to_owned(), rest),
        _ => (index.to_string(), spec),
    };
    let (format, url) = if let Some(url) = rest.strip_prefix("slack:") {
        (Format::Slack, url)
    } else if let Some(url) = rest.strip_prefix("generic:") {
        (Format::Generic, url)
    } else {
        (Format::Generic, rest)
    };
    let ok = reqwest::Url::parse(url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
    if !ok {
        return Err(SpecError::NotHttp(name));
    }
    Ok(Webhook {
        name,
        format,
        url: url.to_owned(),
    })
}

/// Every configured webhook, in order, names unique.
///
/// # Errors
/// The first bad entry's [`SpecError`].
pub fn parse_all(specs: &[String]) -> Result<Vec<Webhook>, SpecError> {
    let mut hooks: Vec<Webhook> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let hook = parse(spec, i)?;
        if hooks.iter().any(|h| h.name == hook.name) {
            return Err(SpecError::Duplicate(hook.name));
        }
        hooks.push(hook);
    }
    Ok(hooks)
}

/// `scheme://host[:port]/…`: all a log line or a message may show of a webhook URL. Unlike
/// [`crate::fetch::display_url`] the path goes too (Slack's secret is the path).
#[must_use]
pub fn redacted_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            match u.port() {
                Some(p) => format!("{}://{host}:{p}/…", u.scheme()),
                None => format!("{}://{host}/…", u.scheme()),
            }
        }
        Err(_) => "<not a URL>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_formats_and_urls_are_parsed() {
        let h = parse("ops=slack:https://hooks.slack.com/services/T0/B0/xyz", 0).expect("ok");
        assert_eq!(
            (h.name.as_str(), h.format, h.url.as_str()),
            (
                "ops",
                Format::Slack,
                "https://hooks.slack.com/services/T0/B0/xyz"
            )
        );
        let h = parse("http://recv:8080/hook?token=a=b", 2).expect("ok");
        assert_eq!(
            (h.name.as_str(), h.format, h.url.as_str()),
            ("2", Format::Generic, "http://recv:8080/hook?token=a=b")
        );
        let h = parse("generic:https://x/y", 1).expect("ok");
        assert_eq!((h.name.as_str(), h.format), ("1", Format::Generic));
    }

    #[test]
    fn bad_urls_are_refused_without_showing_them() {
        for bad in [
            "ftp://x/secret",
            "ops=hooks.slack.com/secret",
            "slack:",
            "http://",
        ] {
            let err = parse(bad, 0).expect_err(bad).to_string();
            assert!(!err.contains("secret"), "{err}");
            assert!(err.contains("not an http"), "{err}");
        }
        let err = parse_all(&["a=http://x/1".into(), "a=http://y/2".into()]).expect_err("dup");
        assert_eq!(err, SpecError::Duplicate("a".into()));
    }

    #[test]
    fn redaction_keeps_only_scheme_host_and_port() {
        assert_eq!(
            redacted_url("https://hooks.slack.com/services/T0/B0/xyz"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redacted_url("http://u:p@127.0.0.1:9000/s3cret?token=abc#f"),
            "http://127.0.0.1:9000/…"
        );
        let h = parse("ops=slack:https://hooks.slack.com/services/T0/B0/xyz", 0).expect("ok");
        assert!(!format!("{h:?}").contains("xyz"));
    }
}
