//! Loading the binaries' TOML configuration files, with one error type. Each binary keeps its
//! own schema (a `#[serde(deny_unknown_fields)]` struct) and its own defaults and overrides;
//! what they share is how a file is read and how a bad one is reported: naming the file, and
//! toml's message naming the key and line, because a typo in a safety tool's configuration
//! must not silently fall back to a default.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (the message names key and line).
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with line and column and the offending key.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid value for `{key}`: {message}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// Why.
        message: String,
    },
}

/// Parses TOML `text` into the schema `T`; `path` only names the source in errors.
///
/// # Errors
/// [`ConfigError::Parse`] naming the file, key and line.
pub fn parse_toml<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_owned(),
    })
}

/// Loads `path`. A missing file is the empty (default) configuration only when `required` is
/// false: the default path may legitimately be absent, an explicit `--config` may not.
///
/// # Errors
/// [`ConfigError`] naming the file.
pub fn load_toml<T: DeserializeOwned + Default>(
    path: &Path,
    required: bool,
) -> Result<T, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_toml(&text, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(T::default()),
        Err(source) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize, PartialEq, Eq)]
    #[serde(deny_unknown_fields)]
    struct Schema {
        port: Option<u16>,
    }

    #[test]
    fn unknown_keys_name_the_file_key_and_line() {
        let err = parse_toml::<Schema>("port = 1\nprot = 2\n", Path::new("/etc/x.toml"))
            .expect_err("unknown key");
        let msg = err.to_string();
        assert!(
            msg.contains("/etc/x.toml") && msg.contains("prot") && msg.contains("line 2"),
            "{msg}"
        );
    }

    #[test]
    fn a_missing_file_is_empty_only_when_optional() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("absent.toml");
        assert_eq!(
            load_toml::<Schema>(&path, false).expect("optional"),
            Schema::default()
        );
        let err = load_toml::<Schema>(&path, true).expect_err("required");
        assert!(err.to_string().contains("absent.toml"), "{err}");
        std::fs::write(&path, "port = 9810\n").expect("write");
        assert_eq!(
            load_toml::<Schema>(&path, true).expect("loads"),
            Schema { port: Some(9810) }
        );
    }
}
