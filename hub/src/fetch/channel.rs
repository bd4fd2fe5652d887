//! Fetching RKE2's channels document for `upgrade --channel`; the reading of it is
//! [`crate::plan::channel::resolve`] (pure).

use crate::plan::channel::{ChannelError, resolve};
use crate::plan::version::Rke2Version;

/// Fetches the channels document and resolves `channel`.
///
/// # Errors
/// [`ChannelError`] naming the URL.
pub async fn fetch_and_resolve(url: &str, channel: &str) -> Result<Rke2Version, ChannelError> {
    let fetch = |reason: String| ChannelError::Fetch {
        url: super::display_url(url),
        reason,
    };
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .map_err(|e| fetch(e.without_url().to_string()))?;
    let body = super::get_json_text(&client, url).await.map_err(fetch)?;
    resolve(&body, channel, &super::display_url(url))
}
