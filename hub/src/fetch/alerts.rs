//! Asking Prometheus which alerts are firing, for the alert gate; the reading of the answer
//! is [`crate::plan::alerts::blocking`] (pure).

use super::display_url;
use crate::plan::alerts::{AlertGateError, alerts_url, blocking};

/// Asks Prometheus (base URL `prometheus`) which alerts block maintenance now.
///
/// # Errors
/// [`AlertGateError`] naming the URL: unreachable, not 200, or not an alerts document.
pub async fn fetch_blocking(
    client: &reqwest::Client,
    prometheus: &str,
    ignore: &[String],
) -> Result<Vec<String>, AlertGateError> {
    let url = alerts_url(prometheus);
    let shown = display_url(&url);
    let fetch = |reason: String| AlertGateError::Fetch {
        url: shown.clone(),
        reason: reason.replace(&url, &shown),
    };
    let body = super::get_json_text(client, &url).await.map_err(fetch)?;
    blocking(&body, ignore, &shown)
}
