//! The hub's environment variables: `RKE2OPS_HUB_<SETTING>`, under the `RKE2OPS_` prefix the
//! agent uses too (`RKE2OPS_<SETTING>`), so a shell holding both binaries' settings never
//! crosses them. clap reads these names itself (the `env = ...` of each flag).
//!
//! The hub's earlier names, `RKE2_HUB_<SETTING>`, are still read: [`with_legacy_names`] gives
//! each flag whose new variable is unset the value of its old one (as a default, so a flag on
//! the command line still wins), and [`used_legacy_names`] lists the old names the invoked
//! command reads, for one deprecation warning each. When both names are set, the new one wins.
//!
//! The mapping ([`legacy_name`], [`lookup`]) is pure over an environment passed in, so it is
//! tested without touching the process's environment.

use std::ffi::{OsStr, OsString};

/// The prefix of every hub variable.
pub const PREFIX: &str = "RKE2OPS_HUB_";
/// The deprecated prefix the hub used before.
pub const LEGACY_PREFIX: &str = "RKE2_HUB_";
/// The log filter (`tracing_subscriber`'s `EnvFilter` syntax, e.g. `debug`).
pub const LOG: &str = "RKE2OPS_HUB_LOG";

/// The deprecated name of the hub variable `name` (`RKE2OPS_HUB_STATE_DIR` →
/// `RKE2_HUB_STATE_DIR`); none for a name without the hub's prefix.
#[must_use]
pub fn legacy_name(name: &str) -> Option<String> {
    name.strip_prefix(PREFIX)
        .filter(|rest| !rest.is_empty())
        .map(|rest| format!("{LEGACY_PREFIX}{rest}"))
}

/// A deprecated variable that is set, for its warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyName {
    /// The old name (`RKE2_HUB_...`), set in the environment.
    pub old: String,
    /// The name that replaces it (`RKE2OPS_HUB_...`).
    pub new: String,
    /// The new name is set too, so the old one is ignored.
    pub ignored: bool,
}

impl std::fmt::Display for LegacyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ignored {
            write!(
                f,
                "environment variable {} is deprecated and ignored: {} is set and wins",
                self.old, self.new
            )
        } else {
            write!(
                f,
                "environment variable {} is deprecated: rename it to {} (read this time)",
                self.old, self.new
            )
        }
    }
}

/// What the hub variable `name` says in the environment `env`: its own value, else its
/// deprecated name's; with the deprecated name when that one is set.
#[must_use]
pub fn lookup(
    name: &str,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> (Option<OsString>, Option<LegacyName>) {
    let value = env(name);
    let Some(old) = legacy_name(name) else {
        return (value, None);
    };
    match (value, env(&old)) {
        (value, None) => (value, None),
        (Some(value), Some(_)) => (
            Some(value),
            Some(LegacyName {
                old,
                new: name.to_owned(),
                ignored: true,
            }),
        ),
        (None, Some(legacy)) => (
            Some(legacy),
            Some(LegacyName {
                old,
                new: name.to_owned(),
                ignored: false,
            }),
        ),
    }
}

/// `command` (and every subcommand) with each hub flag whose `RKE2OPS_HUB_*` variable is
/// unset but whose `RKE2_HUB_*` one is set taking that value as its default: clap's order
/// then gives flag > new variable > old variable > built-in default.
#[must_use]
pub fn with_legacy_names(
    command: clap::Command,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> clap::Command {
    command
        .mut_args(|arg| {
            let Some(name) = arg.get_env().and_then(OsStr::to_str) else {
                return arg;
            };
            match lookup(name, env) {
                (Some(value), Some(legacy)) if !legacy.ignored => {
                    // clap keeps defaults as `&'static`; this runs once per process, for the
                    // few variables an operator still sets under their old names.
                    let value: &'static OsStr = Box::leak(value.into_boxed_os_str());
                    arg.default_value(value)
                }
                _ => arg,
            }
        })
        .mut_subcommands(|sub| with_legacy_names(sub, env))
}

/// The deprecated names set in `env` that the command `matches` invoked reads (its flags'
/// variables, and the log filter's), each once, in the order of its flags.
#[must_use]
pub fn used_legacy_names(
    command: &clap::Command,
    matches: &clap::ArgMatches,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Vec<LegacyName> {
    let mut invoked = command;
    let mut at = matches;
    while let Some((name, sub)) = at.subcommand() {
        match invoked.find_subcommand(name) {
            Some(next) => {
                invoked = next;
                at = sub;
            }
            None => break,
        }
    }
    let names = invoked
        .get_arguments()
        .filter_map(|arg| arg.get_env().and_then(OsStr::to_str))
        .chain([LOG]);
    let mut used: Vec<LegacyName> = Vec::new();
    for name in names {
        if let (_, Some(legacy)) = lookup(name, env)
            && !used.iter().any(|u| u.old == legacy.old)
        {
            used.push(legacy);
        }
    }
    used
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::{Arg, Command};

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn every_hub_variable_maps_to_its_old_name() {
        assert_eq!(
            legacy_name("RKE2OPS_HUB_STATE_DIR").as_deref(),
            Some("RKE2_HUB_STATE_DIR")
        );
        assert_eq!(legacy_name(LOG).as_deref(), Some("RKE2_HUB_LOG"));
        assert_eq!(
            legacy_name("RKE2OPS_HUB_SOCKET").as_deref(),
            Some("RKE2_HUB_SOCKET")
        );
        // The agent's variables are not the hub's.
        assert_eq!(legacy_name("RKE2OPS_STATE_DIR"), None);
        assert_eq!(legacy_name("RKE2OPS_HUB_"), None);
    }

    #[test]
    fn the_new_name_wins_and_the_old_one_is_read_with_a_warning() {
        let env = env_of(&[("RKE2_HUB_STATE_DIR", "/old")]);
        let (value, legacy) = lookup("RKE2OPS_HUB_STATE_DIR", &env);
        assert_eq!(value.as_deref(), Some(OsStr::new("/old")));
        let legacy = legacy.expect("deprecated name used");
        assert!(!legacy.ignored);
        assert!(
            legacy.to_string().contains("RKE2_HUB_STATE_DIR")
                && legacy.to_string().contains("RKE2OPS_HUB_STATE_DIR"),
            "{legacy}"
        );

        let env = env_of(&[
            ("RKE2_HUB_STATE_DIR", "/old"),
            ("RKE2OPS_HUB_STATE_DIR", "/new"),
        ]);
        let (value, legacy) = lookup("RKE2OPS_HUB_STATE_DIR", &env);
        assert_eq!(value.as_deref(), Some(OsStr::new("/new")));
        assert!(legacy.expect("still warned about").ignored);

        let env = env_of(&[("RKE2OPS_HUB_STATE_DIR", "/new")]);
        assert_eq!(
            lookup("RKE2OPS_HUB_STATE_DIR", &env),
            (Some(OsString::from("/new")), None)
        );
    }

    fn command() -> Command {
        Command::new("rke2-hub").subcommand(
            Command::new("serve")
                .arg(
                    Arg::new("state_dir")
                        .long("state-dir")
                        .env("RKE2OPS_HUB_STATE_DIR"),
                )
                .arg(
                    Arg::new("sans")
                        .long("server-san")
                        .env("RKE2OPS_HUB_SERVER_SANS")
                        .value_delimiter(',')
                        .action(clap::ArgAction::Append),
                )
                .arg(
                    Arg::new("socket")
                        .long("admin-socket")
                        .env("RKE2OPS_HUB_ADMIN_SOCKET")
                        .default_value("/run/default.sock"),
                ),
        )
    }

    fn serve_value(env: &[(&str, &str)], args: &[&str], id: &str) -> Option<Vec<String>> {
        // Only the legacy names are passed here; clap reads the new ones from the process,
        // where the tests set none.
        let env = env_of(env);
        let matches = with_legacy_names(command(), &env)
            .try_get_matches_from(["rke2-hub", "serve"].iter().chain(args))
            .expect("parses");
        let (_, serve) = matches.subcommand().expect("serve");
        serve.get_many::<String>(id).map(|v| v.cloned().collect())
    }

    #[test]
    fn an_old_variable_fills_a_flag_that_is_not_given() {
        let env = [
            ("RKE2_HUB_STATE_DIR", "/old"),
            ("RKE2_HUB_SERVER_SANS", "a,b"),
        ];
        assert_eq!(
            serve_value(&env, &[], "state_dir"),
            Some(vec!["/old".to_owned()])
        );
        assert_eq!(
            serve_value(&env, &[], "sans"),
            Some(vec!["a".to_owned(), "b".to_owned()]),
            "lists split as from the new name"
        );
        assert_eq!(
            serve_value(&env, &["--state-dir", "/flag"], "state_dir"),
            Some(vec!["/flag".to_owned()]),
            "a flag beats the environment"
        );
        assert_eq!(
            serve_value(&[("RKE2_HUB_ADMIN_SOCKET", "/old.sock")], &[], "socket"),
            Some(vec!["/old.sock".to_owned()]),
            "the environment beats the built-in default"
        );
        assert_eq!(
            serve_value(&[], &[], "socket"),
            Some(vec!["/run/default.sock".to_owned()])
        );
        assert_eq!(serve_value(&[], &[], "state_dir"), None);
    }

    #[test]
    fn only_the_invoked_commands_old_names_are_reported_once_each() {
        let env = env_of(&[
            ("RKE2_HUB_STATE_DIR", "/old"),
            ("RKE2_HUB_LOG", "debug"),
            ("RKE2_HUB_SOCKET", "/not-read-by-serve"),
        ]);
        let command = with_legacy_names(command(), &env);
        let matches = command
            .clone()
            .try_get_matches_from(["rke2-hub", "serve"])
            .expect("parses");
        let used: Vec<String> = used_legacy_names(&command, &matches, &env)
            .into_iter()
            .map(|l| l.old)
            .collect();
        assert_eq!(used, ["RKE2_HUB_STATE_DIR", "RKE2_HUB_LOG"]);
    }
}
