//! RKE2 release channels (`https://update.rke2.io/v1-release/channels`): a JSON collection
//! whose `data[]` entries have an `id` (`stable`, `latest`, `v1.34`, ...) and a `latest`
//! version. The hub resolves a channel once, when a plan is created, so the plan's target
//! never moves under it.
//!
//! This module only reads a document it is given ([`resolve`], pure);
//! [`crate::fetch::channel`] fetches it.

use serde::Deserialize;

use super::version::Rke2Version;

#[derive(Debug, Deserialize)]
struct Collection {
    data: Vec<Channel>,
}

#[derive(Debug, Deserialize)]
struct Channel {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    latest: String,
}

/// Why a channel cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The document is not a channels collection.
    #[error("channels document from {url}: {reason}")]
    Malformed {
        /// Where it came from.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// No such channel.
    #[error("channel {channel:?} not found at {url} (known: {known})")]
    Unknown {
        /// The channel asked for.
        channel: String,
        /// Where it was looked up.
        url: String,
        /// The channels there.
        known: String,
    },
    /// The channel could not be fetched.
    #[error("cannot fetch channels from {url}: {reason}")]
    Fetch {
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
}

/// The version `channel` points at in the channels document `json` (pure).
///
/// # Errors
/// [`ChannelError`] naming the URL and the channel.
pub fn resolve(json: &str, channel: &str, url: &str) -> Result<Rke2Version, ChannelError> {
    let doc: Collection = serde_json::from_str(json).map_err(|e| ChannelError::Malformed {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    let found = doc
        .data
        .iter()
        .find(|c| c.id == channel || (!c.name.is_empty() && c.name == channel))
        .ok_or_else(|| ChannelError::Unknown {
            channel: channel.to_owned(),
            url: url.to_owned(),
            known: doc
                .data
                .iter()
                .map(|c| c.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    found
        .latest
        .parse()
        .map_err(|e: super::version::VersionError| ChannelError::Malformed {
            url: url.to_owned(),
            reason: format!("channel {channel}: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"type":"collection","links":{"self":"…"},"actions":{},
      "resourceType":"channels","data":[
        {"id":"stable","type":"channel","links":{"self":"…"},"name":"stable","latest":"v1.33.5+rke2r1"},
        {"id":"latest","type":"channel","links":{"self":"…"},"name":"latest","latest":"v1.34.1+rke2r1","latestRegexp":".*","excludeRegexp":"^[^+]+-"},
        {"id":"v1.34","type":"channel","links":{"self":"…"},"name":"v1.34","latest":"v1.34.1+rke2r1","latestRegexp":"v1\\.34\\..*"}]}"#;

    #[test]
    fn resolves_channels_by_id() {
        assert_eq!(
            resolve(DOC, "stable", "u").expect("stable").to_string(),
            "v1.33.5+rke2r1"
        );
        assert_eq!(
            resolve(DOC, "v1.34", "u").expect("v1.34").to_string(),
            "v1.34.1+rke2r1"
        );
    }

    #[test]
    fn unknown_channels_and_bad_documents_are_named() {
        let e = resolve(DOC, "testing", "http://mirror/channels").expect_err("unknown");
        assert!(
            e.to_string().contains("testing") && e.to_string().contains("stable, latest, v1.34"),
            "{e}"
        );
        let e = resolve("{}", "stable", "http://mirror/channels").expect_err("bad");
        assert!(e.to_string().contains("http://mirror/channels"), "{e}");
    }
}
