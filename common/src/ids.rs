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

#[cfg(test)]
mod tests {
    use super::*;

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
