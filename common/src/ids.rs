//! Identifiers one side of the hub link chooses and the other side uses as a file name or a
//! log field: checked by syntax before any use, so a hostile peer cannot name a path.

/// Longest operation id accepted.
pub const MAX_OPERATION_ID: usize = 128;

/// Why a string is not an operation id. The display never repeats the whole input (it may
/// be kilobytes long, or carry control characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty.
    #[error("operation_id is empty")]
    Empty,
    /// Longer than [`MAX_OPERATION_ID`].
    #[error("operation_id is {len} bytes long (at most {MAX_OPERATION_ID})")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A character outside `[A-Za-z0-9._-]`, or a first character that is not alphanumeric.
    #[error(
        "operation_id has {found:?} at position {index}: ids match [A-Za-z0-9][A-Za-z0-9._-]{{0,127}}"
    )]
    BadChar {
        /// Position of the first offending character (in characters).
        index: usize,
        /// That character.
        found: char,
    },
}

/// Checks `id` against `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`: a single, ordinary path component
/// (never `.`, `..`, absolute, or with a separator), printable, and short.
///
/// # Errors
/// [`IdError`] naming the first fault.
pub fn check_operation_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > MAX_OPERATION_ID {
        return Err(IdError::TooLong { len: id.len() });
    }
    for (index, c) in id.chars().enumerate() {
        let ok = c.is_ascii_alphanumeric() || (index > 0 && matches!(c, '.' | '_' | '-'));
        if !ok {
            return Err(IdError::BadChar { index, found: c });
        }
    }
    Ok(())
}

/// The cluster an agent belongs to when its config names none, and the cluster of every
/// node enrolled before clusters existed: a single-cluster fleet never has to name one.
pub const DEFAULT_CLUSTER: &str = "default";

/// Longest cluster name accepted (a DNS label).
pub const MAX_CLUSTER_NAME: usize = 63;

/// Why a string is not a cluster name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterNameError {
    /// Empty.
    #[error("cluster name is empty")]
    Empty,
    /// Longer than [`MAX_CLUSTER_NAME`].
    #[error("cluster name is {len} bytes long (at most {MAX_CLUSTER_NAME})")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// Not a lowercase DNS label.
    #[error(
        "cluster name has {found:?} at position {index}: names are DNS labels, [a-z0-9] with inner '-'"
    )]
    BadChar {
        /// Position of the first offending character (in characters).
        index: usize,
        /// That character.
        found: char,
    },
}

/// Checks a cluster name: a lowercase DNS label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63
/// bytes), so it can be a file name, a metric label, a hub.toml table key and an etcd key
/// component without quoting.
///
/// # Errors
/// [`ClusterNameError`] naming the first fault.
pub fn check_cluster_name(name: &str) -> Result<(), ClusterNameError> {
    if name.is_empty() {
        return Err(ClusterNameError::Empty);
    }
    if name.len() > MAX_CLUSTER_NAME {
        return Err(ClusterNameError::TooLong { len: name.len() });
    }
    let last = name.chars().count() - 1;
    for (index, c) in name.chars().enumerate() {
        let ok =
            c.is_ascii_lowercase() || c.is_ascii_digit() || (c == '-' && index > 0 && index < last);
        if !ok {
            return Err(ClusterNameError::BadChar { index, found: c });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_are_dns_labels() {
        for good in ["default", "prod-eu", "a", "x1", &"c".repeat(63)] {
            assert_eq!(check_cluster_name(good), Ok(()), "{good}");
        }
        assert_eq!(check_cluster_name(""), Err(ClusterNameError::Empty));
        assert_eq!(
            check_cluster_name(&"c".repeat(64)),
            Err(ClusterNameError::TooLong { len: 64 })
        );
        for (bad, index) in [
            ("Prod", 0),
            ("-a", 0),
            ("a-", 1),
            ("a_b", 1),
            ("a/b", 1),
            ("a b", 1),
        ] {
            assert!(
                matches!(check_cluster_name(bad), Err(ClusterNameError::BadChar { index: i, .. }) if i == index),
                "{bad}"
            );
        }
    }

    #[test]
    fn ids_are_single_plain_path_components() {
        for good in ["plan1-server-1-1", "a", "A.b_c-9", &"x".repeat(128)] {
            assert_eq!(check_operation_id(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "/var/lib/rancher/rke2",
            "a/b",
            "-a",
            "_a",
            ".hidden",
            "a b",
            "a\nb",
            "é",
            &"x".repeat(129),
        ] {
            assert!(check_operation_id(bad).is_err(), "{bad:?} accepted");
        }
        let long = "x".repeat(10_000);
        let msg = check_operation_id(&long).expect_err("long").to_string();
        assert!(msg.len() < 100 && msg.contains("10000 bytes"), "{msg}");
    }
}
