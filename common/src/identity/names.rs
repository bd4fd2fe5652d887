//! What a node name may be. Kubernetes requires node names to be DNS-1123 subdomains; the hub
//! puts the name in a certificate's CN and in its inventory, so both sides refuse anything
//! else before it reaches a certificate or a database row.

/// Longest DNS-1123 subdomain (and so the longest Kubernetes node name).
pub const NODE_NAME_MAX_LEN: usize = 253;

/// Why a string is not a node name. The name is quoted with `{:?}` so control characters
/// cannot forge a log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node name {name:?} is not a DNS-1123 subdomain: {reason}")]
pub struct NodeNameError {
    /// The refused name (a node name is not secret).
    pub name: String,
    /// Which rule it breaks.
    pub reason: &'static str,
}

/// Checks that `name` is a DNS-1123 subdomain: at most 253 characters of `[a-z0-9.-]`,
/// dot-separated labels that each start and end with a letter or digit.
///
/// # Errors
/// [`NodeNameError`] naming the name and the broken rule.
pub fn validate_node_name(name: &str) -> Result<(), NodeNameError> {
    let refuse = |reason| {
        Err(NodeNameError {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("it is empty");
    }
    if name.len() > NODE_NAME_MAX_LEN {
        return refuse("it is longer than 253 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return refuse("only lowercase letters, digits, '-' and '.' are allowed");
    }
    for label in name.split('.') {
        let (Some(first), Some(last)) = (label.bytes().next(), label.bytes().last()) else {
            return refuse("it has an empty label (leading, trailing or doubled '.')");
        };
        if first == b'-' || last == b'-' {
            return refuse("each label must start and end with a letter or digit");
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap in a test names its line, which is enough
mod tests {
    use super::*;

    #[test]
    fn kubernetes_style_names_are_accepted() {
        for name in [
            "node-a",
            "ip-10-0-0-1.ec2.internal",
            "a",
            "0",
            "rke2-server-1",
        ] {
            validate_node_name(name).unwrap();
        }
        validate_node_name(&"a".repeat(253)).unwrap();
    }

    #[test]
    fn names_outside_dns_1123_are_refused_with_the_rule() {
        for (name, rule) in [
            ("", "empty"),
            ("Node-A", "lowercase"),
            ("node_a", "lowercase"),
            ("node a", "lowercase"),
            ("-node", "start and end"),
            ("node-", "start and end"),
            ("node..a", "empty label"),
            (".node", "empty label"),
            ("node\n", "lowercase"),
            ("admin:root", "lowercase"),
        ] {
            let err = validate_node_name(name).unwrap_err();
            assert!(err.reason.contains(rule), "{name:?}: {err}");
        }
        assert!(validate_node_name(&"a".repeat(254)).is_err());
    }
}
