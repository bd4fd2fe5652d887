//! RKE2 versions (`v1.34.1+rke2r1`): parsing and ordering, shared by the hub's upgrade guards
//! and the agent's "already at or above the target" check.

use std::fmt;
use std::str::FromStr;

/// An RKE2 version: Kubernetes `major.minor.patch` plus RKE2's release number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rke2Version {
    /// Kubernetes major.
    pub major: u32,
    /// Kubernetes minor.
    pub minor: u32,
    /// Kubernetes patch.
    pub patch: u32,
    /// RKE2 release (`rke2rN`).
    pub release: u32,
}

/// A string that is not an RKE2 version. Holds the input as [`crate::text::quoted`] shows it
/// (escaped and clipped: it may come from a peer).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{0} is not a canonical RKE2 version like v1.34.1+rke2r1 (vMAJOR.MINOR.PATCH+rke2rN, no leading zeros)"
)]
pub struct VersionError(pub String);

impl FromStr for Rke2Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || VersionError(crate::text::quoted(s));
        let rest = s.strip_prefix('v').ok_or_else(bad)?;
        let (k8s, rke2) = rest.split_once('+').ok_or_else(bad)?;
        let release = rke2
            .strip_prefix("rke2r")
            .ok_or_else(bad)?
            .parse()
            .map_err(|_| bad())?;
        let mut parts = k8s.split('.').map(|p| p.parse::<u32>().map_err(|_| bad()));
        let (Some(major), Some(minor), Some(patch), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let version = Self {
            major: major?,
            minor: minor?,
            patch: patch?,
            release,
        };
        // Canonical only: no leading zeros, no signs, nothing after the release. The string
        // names a download folder and is compared as text elsewhere, so two spellings of one
        // version must not both pass.
        if version.to_string() != s {
            return Err(bad());
        }
        Ok(version)
    }
}

impl fmt::Display for Rke2Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "v{}.{}.{}+rke2r{}",
            self.major, self.minor, self.patch, self.release
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_round_trip_and_order_by_release_last() {
        let old: Rke2Version = "v1.33.5+rke2r1".parse().expect("valid");
        let new: Rke2Version = "v1.34.1+rke2r1".parse().expect("valid");
        assert!(old < new);
        assert_eq!(new.to_string(), "v1.34.1+rke2r1");
        assert!("1.34.1".parse::<Rke2Version>().is_err());
    }

    #[test]
    fn only_the_canonical_spelling_parses() {
        for bad in [
            "v01.34.1+rke2r1",
            "v1.034.1+rke2r1",
            "v1.34.01+rke2r1",
            "v1.34.1+rke2r01",
            "v1.+34.1+rke2r1",
            "v1.34.1+rke2r+1",
            "v1.34.1+rke2r1 ",
            "v1.34.1+rke2r1/../x",
            "v1.34.1-rc1+rke2r1",
            "V1.34.1+rke2r1",
        ] {
            assert!(bad.parse::<Rke2Version>().is_err(), "{bad:?} accepted");
        }
        assert!("v1.34.10+rke2r10".parse::<Rke2Version>().is_ok());
    }
}
