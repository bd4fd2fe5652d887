//! RKE2 versions (`v1.34.1+rke2r1`) and the upgrade guards: never downgrade, never skip a
//! minor version (unless explicitly allowed).

pub use rke2ops_common::version::{Rke2Version, VersionError};

/// Why an upgrade to a target is refused for a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// The target is older than what runs.
    #[error("{node} runs {current}, newer than the target {target}: rke2-ops never downgrades")]
    Downgrade {
        /// The node.
        node: String,
        /// What it runs.
        current: Rke2Version,
        /// The target.
        target: Rke2Version,
    },
    /// The target skips a minor version.
    // The next minor is computed in u64: `current.minor` may be u32::MAX (any number an
    // agent reports), and the message must not overflow.
    #[error("{node} runs {current}; {target} skips a minor version (go through v{}.{} first, or pass --allow-minor-skip)", current.major, u64::from(current.minor) + 1)]
    MinorSkip {
        /// The node.
        node: String,
        /// What it runs.
        current: Rke2Version,
        /// The target.
        target: Rke2Version,
    },
}

/// What an upgrade plan does with one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeStep {
    /// Already at the target (or above it, refused separately): nothing to do.
    AlreadyAtTarget,
    /// Upgrade this node.
    Upgrade,
}

/// Pure guard for one node: at the target → skip; older → upgrade unless it skips a minor;
/// newer → refuse (downgrade).
///
/// # Errors
/// [`GuardError`] naming the node and both versions.
pub fn guard(
    node: &str,
    current: Rke2Version,
    target: Rke2Version,
    allow_minor_skip: bool,
) -> Result<UpgradeStep, GuardError> {
    use std::cmp::Ordering;
    match current.cmp(&target) {
        Ordering::Equal => Ok(UpgradeStep::AlreadyAtTarget),
        Ordering::Greater => Err(GuardError::Downgrade {
            node: node.to_owned(),
            current,
            target,
        }),
        Ordering::Less => {
            // Saturating: at minor u32::MAX there is no higher minor to skip to, and an
            // overflow here panicked (debug) or refused a patch upgrade (release).
            let skips =
                target.major != current.major || target.minor > current.minor.saturating_add(1);
            if skips && !allow_minor_skip {
                Err(GuardError::MinorSkip {
                    node: node.to_owned(),
                    current,
                    target,
                })
            } else {
                Ok(UpgradeStep::Upgrade)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Rke2Version {
        s.parse().expect("valid version")
    }

    #[test]
    fn parses_and_prints_rke2_versions() {
        assert_eq!(
            v("v1.34.1+rke2r1"),
            Rke2Version {
                major: 1,
                minor: 34,
                patch: 1,
                release: 1
            }
        );
        assert_eq!(v("v1.33.5+rke2r2").to_string(), "v1.33.5+rke2r2");
        for bad in [
            "1.34.1+rke2r1",
            "v1.34+rke2r1",
            "v1.34.1",
            "v1.34.1+k3s1",
            "v1.34.x+rke2r1",
            "v1.34.1.2+rke2r1",
        ] {
            assert!(bad.parse::<Rke2Version>().is_err(), "{bad}");
        }
    }

    #[test]
    fn orders_by_kubernetes_then_rke2_release() {
        assert!(v("v1.33.5+rke2r1") < v("v1.33.5+rke2r2"));
        assert!(v("v1.33.5+rke2r9") < v("v1.33.6+rke2r1"));
        assert!(v("v1.33.10+rke2r1") > v("v1.33.9+rke2r1"));
    }

    #[test]
    fn next_minor_and_patches_are_allowed() {
        assert_eq!(
            guard("n", v("v1.33.5+rke2r1"), v("v1.34.1+rke2r1"), false),
            Ok(UpgradeStep::Upgrade)
        );
        assert_eq!(
            guard("n", v("v1.33.5+rke2r1"), v("v1.33.6+rke2r1"), false),
            Ok(UpgradeStep::Upgrade)
        );
        assert_eq!(
            guard("n", v("v1.33.5+rke2r1"), v("v1.33.5+rke2r2"), false),
            Ok(UpgradeStep::Upgrade)
        );
    }

    #[test]
    fn at_target_is_skipped() {
        assert_eq!(
            guard("n", v("v1.34.1+rke2r1"), v("v1.34.1+rke2r1"), false),
            Ok(UpgradeStep::AlreadyAtTarget)
        );
    }

    #[test]
    fn downgrades_are_refused_naming_the_node() {
        let err = guard("server-2", v("v1.34.1+rke2r1"), v("v1.33.5+rke2r1"), true)
            .expect_err("downgrade");
        assert!(
            err.to_string().contains("server-2") && err.to_string().contains("never downgrades"),
            "{err}"
        );
    }

    #[test]
    fn the_largest_minor_version_upgrades_its_patch_without_overflow() {
        // Found by the fuzz harness: `current.minor + 1` overflowed at u32::MAX.
        let max = u32::MAX;
        let current = v(&format!("v1.{max}.0+rke2r1"));
        let target = v(&format!("v1.{max}.1+rke2r1"));
        assert_eq!(guard("n", current, target, false), Ok(UpgradeStep::Upgrade));
        let err = guard("n", current, v(&format!("v2.{max}.0+rke2r1")), false)
            .expect_err("a major change skips");
        assert!(err.to_string().contains("v1.4294967296"), "{err}");
    }

    #[test]
    fn minor_skips_need_the_explicit_flag() {
        let err = guard("n", v("v1.32.9+rke2r1"), v("v1.34.1+rke2r1"), false).expect_err("skip");
        assert!(err.to_string().contains("v1.33"), "{err}");
        assert_eq!(
            guard("n", v("v1.32.9+rke2r1"), v("v1.34.1+rke2r1"), true),
            Ok(UpgradeStep::Upgrade)
        );
    }
}
