//! What an upgrade would do on each node, for `rke2-hub upgrade --dry-run`: the install
//! method its agent reported, the version it runs, what it would fetch from where, whether
//! images would be staged and whether an etcd snapshot would be taken. Pure: the caller
//! passes the plan's nodes, the agents' install reports and the artifact source.

use rke2ops_common::install::{InstallMethod, MIXED, minor_of, pinned_packages};
use rke2ops_common::version::Rke2Version;

use super::decide::Role;
use super::model::{NodePhase, PlanNode};
use crate::engine::messages::InstallFacts;

/// One node's preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePreview {
    /// `rpm`, `tarball`, `mixed`, or `unknown` (not reported yet).
    pub method: String,
    /// The version it runs.
    pub current_version: String,
    /// What would be fetched from where (or why nothing).
    pub fetch: String,
    /// The release's image archives would be staged first.
    pub stage_images: bool,
    /// An etcd snapshot would be taken before it changes.
    pub etcd_snapshot: bool,
}

/// The tarball's URL (or folder) as the agent builds it from `source`.
fn tarball_location(source: &str, target: &Rke2Version) -> String {
    let file = format!("rke2.linux-{}.tar.gz", "amd64");
    if source.is_empty() {
        return format!("{file} from the agent's artifact_source");
    }
    if source.starts_with('/') {
        return format!("{file} from the folder {source} (or its {target}/)");
    }
    format!(
        "{}/{}/{file} (with sha256sum-amd64.txt)",
        source.trim_end_matches('/'),
        target.to_string().replace('+', "%2B")
    )
}

/// The preview of `node` for an upgrade to `target`; `source` is the tarball source the
/// plan sends (its `--source`, else the hub's mirror; empty: the agent's own).
#[must_use]
pub fn preview(
    node: &PlanNode,
    install: Option<&InstallFacts>,
    target: &Rke2Version,
    source: &str,
    stage_images: bool,
) -> NodePreview {
    let method = install.map_or("unknown", |i| i.method.as_str()).to_owned();
    let skipped = node.phase == NodePhase::Skipped;
    let role = match node.role {
        Role::Server => "server",
        Role::Agent => "agent",
    };
    let fetch = if skipped {
        format!("nothing ({})", node.detail)
    } else {
        match install.map(|i| (InstallMethod::from_name(&i.method), i)) {
            Some((Some(InstallMethod::Rpm), i)) => format!(
                "{} with {} from {}{}",
                pinned_packages(role, target).join(" "),
                if i.package_manager.is_empty() {
                    "the package manager"
                } else {
                    &i.package_manager
                },
                i.rpm_repository,
                if i.rpm_repository.starts_with('/') {
                    String::new()
                } else {
                    format!(" ({} repository)", minor_of(target))
                }
            ),
            Some((Some(InstallMethod::Tarball), i)) => {
                format!("{} into {}", tarball_location(source, target), i.detail)
            }
            Some((None, i)) if i.method == MIXED => format!("refused: {}", i.detail),
            _ => format!(
                "{} (install method not reported yet)",
                tarball_location(source, target)
            ),
        }
    };
    NodePreview {
        method,
        current_version: node.from_version.clone(),
        fetch,
        stage_images: stage_images && !skipped,
        etcd_snapshot: node.role == Role::Server && !skipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Rke2Version {
        "v1.34.1+rke2r1".parse().expect("version")
    }

    fn facts(method: &str, detail: &str, pm: &str, repo: &str) -> InstallFacts {
        InstallFacts {
            method: method.into(),
            detail: detail.into(),
            package_manager: pm.into(),
            rpm_repository: repo.into(),
        }
    }

    #[test]
    fn each_method_says_what_it_would_fetch_from_where() {
        let server = PlanNode::pending("server-1", 0, Role::Server, "v1.33.5+rke2r1");
        let rpm = facts(
            "rpm",
            "rke2-common-1.33.5~rke2r1-0",
            "dnf",
            "https://rpm.rancher.io/rke2/stable",
        );
        let p = preview(&server, Some(&rpm), &target(), "https://mirror", true);
        assert_eq!(p.method, "rpm");
        assert_eq!(p.current_version, "v1.33.5+rke2r1");
        assert_eq!(
            p.fetch,
            "rke2-common-1.34.1~rke2r1 rke2-server-1.34.1~rke2r1 with dnf from https://rpm.rancher.io/rke2/stable (1.34 repository)"
        );
        assert!(p.stage_images && p.etcd_snapshot);

        let worker = PlanNode::pending("agent-1", 3, Role::Agent, "v1.33.5+rke2r1");
        let tar = facts("tarball", "/usr/local", "", "");
        let p = preview(&worker, Some(&tar), &target(), "https://mirror/", false);
        assert_eq!(
            p.fetch,
            "https://mirror/v1.34.1%2Brke2r1/rke2.linux-amd64.tar.gz (with sha256sum-amd64.txt) into /usr/local"
        );
        assert!(!p.etcd_snapshot && !p.stage_images);
    }

    #[test]
    fn mixed_skipped_and_unreported_nodes_say_so() {
        let server = PlanNode::pending("server-1", 0, Role::Server, "v1.33.5+rke2r1");
        let mixed = facts("mixed", "both installs found: ...", "", "");
        assert!(
            preview(&server, Some(&mixed), &target(), "", false)
                .fetch
                .starts_with("refused: both installs found")
        );
        let p = preview(&server, None, &target(), "/srv/rke2", false);
        assert_eq!(p.method, "unknown");
        assert!(p.fetch.contains("from the folder /srv/rke2"), "{}", p.fetch);
        let mut done = server.clone();
        done.phase = NodePhase::Skipped;
        done.detail = "already at v1.34.1+rke2r1".into();
        let p = preview(&done, None, &target(), "", true);
        assert_eq!(p.fetch, "nothing (already at v1.34.1+rke2r1)");
        assert!(!p.etcd_snapshot && !p.stage_images);
    }
}
