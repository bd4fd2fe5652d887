//! The hub's addresses: one `host:port` per hub replica, first preferred.
//!
//! A configuration names them as `hub_address` (one address, as before; the flag and the
//! environment variable take several comma-separated, having no list syntax) or
//! `hub_addresses` (a TOML list). Every entry is checked here, when the agent starts, so a
//! typo is an error naming the entry rather than a link that retries a bad address forever.
//! The link dials only these addresses: a leader hint from a hub replica is followed only when
//! it names one of them ([`HubAddress::same_place`]).

use std::net::IpAddr;

use rustls_pki_types::ServerName;

use super::{ConfigError, ConfigLayer};

/// One hub replica's `host:port`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubAddress {
    /// The entry as configured (trimmed): what logs and metrics show, so an operator finds it
    /// in the configuration.
    text: String,
    /// The host to dial and to check the server certificate against: brackets removed, an IP
    /// address in its canonical form, a DNS name lower-cased.
    host: String,
    /// The port (never 0).
    port: u16,
}

impl HubAddress {
    /// Parses `host:port` (an IPv6 host in brackets, `[::1]:9811`; a bare IPv6 host is read up
    /// to its last colon, as the agent always did).
    ///
    /// # Errors
    /// Why the entry is not a usable `host:port`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("an empty address".to_owned());
        }
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?} is not host:port (no port)"))?;
        let port = match port.parse::<u16>() {
            Ok(0) | Err(_) => return Err(format!("{text:?}: the port must be 1-65535")),
            Ok(port) => port,
        };
        let host = match (host.strip_prefix('['), host.strip_suffix(']')) {
            (Some(inner), Some(_)) => inner.strip_suffix(']').unwrap_or(inner),
            (None, None) => host,
            _ => return Err(format!("{text:?}: unbalanced brackets around the host")),
        };
        if host.is_empty() {
            return Err(format!("{text:?} has no host"));
        }
        // The TLS layer needs a server name to check the hub's certificate against: refuse
        // here what it would refuse at every connection.
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => {
                ServerName::try_from(host).map_err(|_| {
                    format!("{text:?}: {host:?} is neither a DNS name nor an IP address")
                })?;
                host.trim_end_matches('.').to_ascii_lowercase()
            }
        };
        Ok(Self {
            text: text.to_owned(),
            host,
            port,
        })
    }

    /// The host to dial and to check the hub's certificate against (no brackets).
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether `other` reaches the same replica: same host (IP addresses compared as
    /// addresses, names without case) and port, however each was written.
    #[must_use]
    pub fn same_place(&self, other: &Self) -> bool {
        self.host == other.host && self.port == other.port
    }
}

impl std::fmt::Display for HubAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The hub addresses one configuration layer sets, with the key that set them: `hub_address`
/// split at commas, or `hub_addresses` as listed; `None` when the layer sets neither.
///
/// # Errors
/// [`ConfigError::Invalid`] naming both keys when the layer sets both (`place` says which
/// layer: which of the two was meant cannot be guessed).
pub(super) fn layer_entries(
    layer: &ConfigLayer,
    place: &str,
) -> Result<Option<(&'static str, Vec<String>)>, ConfigError> {
    match (&layer.hub_address, &layer.hub_addresses) {
        (Some(_), Some(_)) => Err(ConfigError::Invalid {
            key: "hub_addresses",
            message: format!(
                "both `hub_address` and `hub_addresses` are set in {place}; keep one \
                 (`hub_addresses` lists every hub replica)"
            ),
        }),
        (Some(one), None) => Ok(Some((
            "hub_address",
            one.split(',').map(str::to_owned).collect(),
        ))),
        (None, Some(list)) => Ok(Some(("hub_addresses", list.clone()))),
        (None, None) => Ok(None),
    }
}

/// Checks the entries `key` set: at least one, each a `host:port`, no replica twice.
///
/// # Errors
/// [`ConfigError::Invalid`] naming `key` and the entry (by position and text).
pub(super) fn parse_entries(
    key: &'static str,
    entries: &[String],
) -> Result<Vec<HubAddress>, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid { key, message };
    if entries.is_empty() {
        return Err(invalid("no address listed".to_owned()));
    }
    let mut addresses: Vec<HubAddress> = Vec::with_capacity(entries.len());
    for (n, entry) in entries.iter().enumerate() {
        let address = HubAddress::parse(entry)
            .map_err(|why| invalid(format!("entry {} ({entry:?}): {why}", n + 1)))?;
        if let Some(first) = addresses.iter().position(|a| a.same_place(&address)) {
            return Err(invalid(format!(
                "entry {} ({:?}) names the same hub as entry {} ({:?})",
                n + 1,
                address.text,
                first + 1,
                addresses[first].text
            )));
        }
        addresses.push(address);
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> HubAddress {
        HubAddress::parse(text).expect("valid")
    }

    #[test]
    fn host_port_forms_parse_to_the_host_to_dial() {
        let a = parsed("10.0.0.1:9811");
        assert_eq!(
            (a.host(), a.port(), a.to_string()),
            ("10.0.0.1", 9811, "10.0.0.1:9811".into())
        );
        let a = parsed(" Hub-A.Example:9811 ");
        assert_eq!(
            (a.host(), a.to_string()),
            ("hub-a.example", "Hub-A.Example:9811".into())
        );
        assert_eq!(parsed("[fd00::1]:9811").host(), "fd00::1");
        // A bare IPv6 host is read up to its last colon, as before.
        assert_eq!(parsed("fd00::1:9811").host(), "fd00::1");
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        for (text, why) in [
            ("", "empty"),
            ("10.0.0.1", "no port"),
            ("10.0.0.1:", "port"),
            ("10.0.0.1:0", "port"),
            ("10.0.0.1:65536", "port"),
            (":9811", "no host"),
            ("[fd00::1:9811", "brackets"),
            ("hub a:9811", "neither a DNS name"),
        ] {
            let err = HubAddress::parse(text).expect_err(text);
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn the_same_replica_written_two_ways_is_the_same_place() {
        assert!(parsed("[fd00::1]:9811").same_place(&parsed("fd00:0::1:9811")));
        assert!(parsed("HUB.example.:9811").same_place(&parsed("hub.example:9811")));
        assert!(!parsed("hub.example:9811").same_place(&parsed("hub.example:9812")));
    }

    #[test]
    fn hub_address_splits_at_commas_and_hub_addresses_is_taken_as_listed() {
        let layer = ConfigLayer {
            hub_address: Some("10.0.0.1:9811, 10.0.0.2:9811".into()),
            ..ConfigLayer::default()
        };
        let (key, entries) = layer_entries(&layer, "the flags")
            .expect("ok")
            .expect("set");
        assert_eq!(key, "hub_address");
        assert_eq!(entries, ["10.0.0.1:9811", " 10.0.0.2:9811"]);
        let layer = ConfigLayer {
            hub_addresses: Some(vec!["a:1".into(), "b:2".into()]),
            ..ConfigLayer::default()
        };
        let (key, entries) = layer_entries(&layer, "the file").expect("ok").expect("set");
        assert_eq!((key, entries.len()), ("hub_addresses", 2));
        assert!(
            layer_entries(&ConfigLayer::default(), "x")
                .expect("ok")
                .is_none()
        );
    }

    #[test]
    fn both_keys_in_one_layer_is_an_error_naming_both() {
        let layer = ConfigLayer {
            hub_address: Some("a:1".into()),
            hub_addresses: Some(vec!["b:2".into()]),
            ..ConfigLayer::default()
        };
        let msg = layer_entries(&layer, "/etc/rke2-ops/node-agent.toml")
            .expect_err("both")
            .to_string();
        assert!(
            msg.contains("`hub_address`") && msg.contains("`hub_addresses`"),
            "{msg}"
        );
        assert!(msg.contains("/etc/rke2-ops/node-agent.toml"), "{msg}");
    }

    #[test]
    fn entries_are_checked_one_by_one_and_duplicates_refused() {
        let list = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let ok = parse_entries("hub_addresses", &list(&["a:1", "b:1"])).expect("valid");
        assert_eq!(ok.len(), 2);
        let msg = parse_entries("hub_addresses", &list(&["a:1", "b"]))
            .expect_err("no port")
            .to_string();
        assert!(
            msg.contains("hub_addresses") && msg.contains("entry 2") && msg.contains("\"b\""),
            "{msg}"
        );
        let msg = parse_entries("hub_address", &list(&["a:1", "", "c:1"]))
            .expect_err("empty entry")
            .to_string();
        assert!(msg.contains("entry 2") && msg.contains("empty"), "{msg}");
        let msg = parse_entries("hub_addresses", &list(&["A:1", "b:1", "a:1"]))
            .expect_err("duplicate")
            .to_string();
        assert!(
            msg.contains("entry 3") && msg.contains("entry 1") && msg.contains("same hub"),
            "{msg}"
        );
        let msg = parse_entries("hub_addresses", &[])
            .expect_err("empty list")
            .to_string();
        assert!(msg.contains("no address"), "{msg}");
    }
}
