//! The operations' step machines, as pure data and transitions.
//!
//! A step is written to the journal *before* its side effect, so after a crash the agent
//! re-runs the recorded step; every step is therefore safe to run twice (see the runner).
//! Failures before anything was changed only make sure the unit runs again; failures after
//! the certificates were touched restore the backup first.

use serde::{Deserialize, Serialize};

/// What an operation does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum OpKind {
    /// `rke2 certificate rotate` (all services, or the listed ones), then restart.
    Rotate {
        /// `--service` names; empty = all.
        services: Vec<String>,
        /// Servers: take an etcd snapshot after the preflight, before the unit stops (a way
        /// back when the rotation leaves the control plane broken).
        #[serde(default)]
        etcd_snapshot: bool,
    },
    /// Restart the unit so RKE2 reissues leaves inside the renewal window.
    RenewByRestart,
    /// Install another RKE2 release from its tarball and restart into it.
    Upgrade {
        /// Target version, e.g. `v1.34.1+rke2r1`.
        version: String,
        /// Artifact source (URL prefix or absolute folder); `None`: the configured one.
        #[serde(default)]
        source: Option<String>,
        /// Put the previous files back when the new release does not become ready.
        allow_rollback: bool,
    },
    /// Stage a release's air-gap image archives into `<data-dir>/agent/images/` (before any
    /// node of a plan is upgraded). Never stops or restarts the unit.
    StageImages {
        /// The release whose archives are staged.
        version: String,
        /// Artifact source (URL prefix or absolute folder); `None`: the configured one.
        #[serde(default)]
        source: Option<String>,
    },
    /// Remove the image archives of every release but `version` that staging placed (or
    /// RKE2's install put) there; the operator's own archives stay.
    PruneImages {
        /// The release whose archives stay.
        version: String,
    },
}

impl OpKind {
    /// Short name for logs and reports.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Rotate { .. } => "rotate",
            Self::RenewByRestart => "renew-by-restart",
            Self::Upgrade { .. } => "upgrade",
            Self::StageImages { .. } => "stage-images",
            Self::PruneImages { .. } => "prune-images",
        }
    }
}

/// Every step of every operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Servers: etcd healthy, no alarms, quorum kept without this member.
    Preflight,
    /// Stop the unit (D-Bus) and wait for the job.
    StopUnit,
    /// `rke2 certificate rotate [--service ...]`.
    Rotate,
    /// The backup folder exists and holds the old certificates.
    VerifyBackup,
    /// Start the unit and wait for the job.
    StartUnit,
    /// Restart the unit (renew-by-restart).
    RestartUnit,
    /// Unit active, apiserver ready with the new certificates (servers), kubelet healthy.
    WaitReady,
    /// Every rotated leaf is fresh (NotBefore ≈ now, ~365 days) and every file parses.
    VerifyFresh,
    /// Leaves that were inside the renewal window were reissued (renew-by-restart).
    VerifyRenewed,
    /// Configured kubeconfig copies refreshed from `rke2.yaml`, keeping their `server:`.
    RefreshKubeconfigs,
    /// The apiserver serves the certificate that is in the file (servers).
    VerifyServed,
    /// Finished successfully.
    Done,
    /// Put the backup back and remove RKE2's regeneration triggers.
    RestoreBackup,
    /// Start the unit again after a failure.
    StartAfterFailure,
    /// Wait for it to be ready again (bounded).
    WaitAfterFailure,
    /// Finished with a failure (reason in the record).
    Failed,
    /// Upgrade: compare the installed version with the target (at or above: skipped).
    CheckVersion,
    /// Upgrade: download (or copy, air-gap) the tarball and the checksum file.
    FetchArtifacts,
    /// Upgrade: the tarball's sha256 matches its line in the checksum file.
    VerifyChecksum,
    /// Servers, upgrade (always) and rotation (when asked): `rke2 etcd-snapshot save` (a way
    /// back), checked non-empty; nothing on the node has changed yet.
    EtcdSnapshot,
    /// Upgrade: keep the previous files, then install the new ones atomically.
    InstallFiles,
    /// Upgrade: systemd reloads the (possibly new) unit files.
    DaemonReload,
    /// Upgrade: the installed binary reports the target and the unit runs it.
    VerifyVersion,
    /// Upgrade failure: put the previous files back and reload systemd.
    RestorePrevious,
    /// Nothing to do (already at or above the target); terminal.
    Skipped,
    /// Images: free space checked, the sum file and the chosen archives downloaded (or
    /// copied) into a staging folder under the data dir.
    FetchImages,
    /// Images: every chosen archive's sha256 matches its line in the sum file.
    VerifyImages,
    /// Images: each archive copied into `agent/images/` under a versioned name (temporary
    /// file, fsync, rename): only adds files.
    PlaceImages,
    /// Images: other releases' archives removed from `agent/images/`.
    PruneImages,
}

impl Step {
    /// Terminal steps.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Skipped)
    }

    /// Whether the step changes the node (units, RKE2's files). An operation may be cancelled
    /// only while none of these has run.
    #[must_use]
    pub fn changes_node(self) -> bool {
        matches!(
            self,
            Self::StopUnit
                | Self::Rotate
                | Self::StartUnit
                | Self::RestartUnit
                | Self::RestoreBackup
                | Self::StartAfterFailure
                | Self::InstallFiles
                | Self::DaemonReload
                | Self::RestorePrevious
                | Self::PlaceImages
                | Self::PruneImages
        )
    }

    /// The kebab-case name used in the journal and progress lines.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Preflight => "preflight",
            Self::StopUnit => "stop-unit",
            Self::Rotate => "rotate",
            Self::VerifyBackup => "verify-backup",
            Self::StartUnit => "start-unit",
            Self::RestartUnit => "restart-unit",
            Self::WaitReady => "wait-ready",
            Self::VerifyFresh => "verify-fresh",
            Self::VerifyRenewed => "verify-renewed",
            Self::RefreshKubeconfigs => "refresh-kubeconfigs",
            Self::VerifyServed => "verify-served",
            Self::Done => "done",
            Self::RestoreBackup => "restore-backup",
            Self::StartAfterFailure => "start-after-failure",
            Self::WaitAfterFailure => "wait-after-failure",
            Self::Failed => "failed",
            Self::CheckVersion => "check-version",
            Self::FetchArtifacts => "fetch-artifacts",
            Self::VerifyChecksum => "verify-checksum",
            Self::EtcdSnapshot => "etcd-snapshot",
            Self::InstallFiles => "install-files",
            Self::DaemonReload => "daemon-reload",
            Self::VerifyVersion => "verify-version",
            Self::RestorePrevious => "restore-previous",
            Self::Skipped => "skipped",
            Self::FetchImages => "fetch-images",
            Self::VerifyImages => "verify-images",
            Self::PlaceImages => "place-images",
            Self::PruneImages => "prune-images",
        }
    }

    /// Parses a name (used by the test-only crash switch).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        ALL_STEPS.iter().copied().find(|s| s.name() == name)
    }
}

/// Every step, for lookups.
pub const ALL_STEPS: [Step; 29] = [
    Step::Preflight,
    Step::StopUnit,
    Step::Rotate,
    Step::VerifyBackup,
    Step::StartUnit,
    Step::RestartUnit,
    Step::WaitReady,
    Step::VerifyFresh,
    Step::VerifyRenewed,
    Step::RefreshKubeconfigs,
    Step::VerifyServed,
    Step::Done,
    Step::RestoreBackup,
    Step::StartAfterFailure,
    Step::WaitAfterFailure,
    Step::Failed,
    Step::CheckVersion,
    Step::FetchArtifacts,
    Step::VerifyChecksum,
    Step::EtcdSnapshot,
    Step::InstallFiles,
    Step::DaemonReload,
    Step::VerifyVersion,
    Step::RestorePrevious,
    Step::Skipped,
    Step::FetchImages,
    Step::VerifyImages,
    Step::PlaceImages,
    Step::PruneImages,
];

/// The node's role, which decides the server-only steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Runs rke2-server (apiserver, etcd).
    Server,
    /// Runs rke2-agent.
    Agent,
}

/// The first step of `kind`.
#[must_use]
pub fn first_step(kind: &OpKind) -> Step {
    match kind {
        OpKind::Upgrade { .. } => Step::CheckVersion,
        OpKind::StageImages { .. } => Step::FetchImages,
        OpKind::PruneImages { .. } => Step::PruneImages,
        _ => Step::Preflight,
    }
}

/// The step after `step` found nothing to do (only the upgrade's version check can).
#[must_use]
pub fn on_skip(kind: &OpKind, step: Step) -> Step {
    match (kind, step) {
        (OpKind::Upgrade { .. }, Step::CheckVersion) => Step::Skipped,
        (_, s) => s,
    }
}

/// The step after `step` succeeded.
#[must_use]
pub fn on_success(kind: &OpKind, role: Role, step: Step) -> Step {
    match (kind, step) {
        (
            OpKind::Rotate {
                etcd_snapshot: true,
                ..
            },
            Step::Preflight,
        ) if role == Role::Server => Step::EtcdSnapshot,
        (OpKind::Rotate { .. }, Step::Preflight | Step::EtcdSnapshot) => Step::StopUnit,
        (OpKind::Rotate { .. }, Step::StopUnit) => Step::Rotate,
        (OpKind::Rotate { .. }, Step::Rotate) => Step::VerifyBackup,
        (OpKind::Rotate { .. }, Step::VerifyBackup) => Step::StartUnit,
        (OpKind::Rotate { .. }, Step::StartUnit) => Step::WaitReady,
        (OpKind::Rotate { .. }, Step::WaitReady) => Step::VerifyFresh,
        (OpKind::Rotate { .. }, Step::VerifyFresh) => Step::RefreshKubeconfigs,
        (OpKind::Rotate { .. }, Step::RefreshKubeconfigs) if role == Role::Server => {
            Step::VerifyServed
        }
        (OpKind::Rotate { .. }, Step::RefreshKubeconfigs | Step::VerifyServed) => Step::Done,
        (OpKind::RenewByRestart, Step::Preflight) => Step::RestartUnit,
        (OpKind::RenewByRestart, Step::RestartUnit) => Step::WaitReady,
        (OpKind::RenewByRestart, Step::WaitReady) => Step::VerifyRenewed,
        (OpKind::RenewByRestart, Step::VerifyRenewed) => Step::RefreshKubeconfigs,
        (OpKind::RenewByRestart, Step::RefreshKubeconfigs) => Step::Done,
        (OpKind::Upgrade { .. }, Step::CheckVersion) => Step::Preflight,
        (OpKind::Upgrade { .. }, Step::Preflight) => Step::FetchArtifacts,
        (OpKind::Upgrade { .. }, Step::FetchArtifacts) => Step::VerifyChecksum,
        // Servers keep a way back before anything changes: an etcd snapshot.
        (OpKind::Upgrade { .. }, Step::VerifyChecksum) if role == Role::Server => {
            Step::EtcdSnapshot
        }
        (OpKind::Upgrade { .. }, Step::VerifyChecksum | Step::EtcdSnapshot) => Step::InstallFiles,
        (OpKind::Upgrade { .. }, Step::InstallFiles) => Step::DaemonReload,
        (OpKind::Upgrade { .. }, Step::DaemonReload) => Step::RestartUnit,
        (OpKind::Upgrade { .. }, Step::RestartUnit) => Step::WaitReady,
        (OpKind::Upgrade { .. }, Step::WaitReady) => Step::VerifyVersion,
        (OpKind::Upgrade { .. }, Step::VerifyVersion) => Step::Done,
        (OpKind::StageImages { .. }, Step::FetchImages) => Step::VerifyImages,
        (OpKind::StageImages { .. }, Step::VerifyImages) => Step::PlaceImages,
        (OpKind::StageImages { .. }, Step::PlaceImages) => Step::Done,
        (OpKind::PruneImages { .. }, Step::PruneImages) => Step::Done,
        (_, Step::RestorePrevious) => Step::StartAfterFailure,
        // The failure path ends in Failed whatever happens.
        (_, Step::RestoreBackup) => Step::StartAfterFailure,
        (_, Step::StartAfterFailure) => Step::WaitAfterFailure,
        (_, Step::WaitAfterFailure) => Step::Failed,
        (_, terminal @ (Step::Done | Step::Failed | Step::Skipped)) => terminal,
        // Steps that do not belong to this kind cannot succeed into anything sensible.
        _ => Step::Failed,
    }
}

/// The step after `step` of `kind` failed; `backup_exists` as in [`on_failure`] (for upgrades:
/// the previous files were kept).
#[must_use]
pub fn on_failure_of(kind: &OpKind, step: Step, backup_exists: bool) -> Step {
    match kind {
        OpKind::Upgrade { allow_rollback, .. } => {
            upgrade_on_failure(step, backup_exists, *allow_rollback)
        }
        // Images never touch the unit: a failure has nothing to undo (place only adds
        // verified files; a half-done prune removed only other releases' archives).
        OpKind::StageImages { .. } | OpKind::PruneImages { .. } => Step::Failed,
        _ => on_failure(step, backup_exists),
    }
}

/// Upgrade failures: before anything is installed, just report (nothing changed); a failed
/// install is undone whatever the policy (the unit still runs the old release, so this is
/// cleanup, not a rollback); after the restart the previous files come back only when
/// rollback is allowed, else the node is left as it is and the failure reported.
fn upgrade_on_failure(step: Step, previous_kept: bool, allow_rollback: bool) -> Step {
    match step {
        Step::CheckVersion
        | Step::Preflight
        | Step::FetchArtifacts
        | Step::VerifyChecksum
        | Step::EtcdSnapshot => Step::Failed,
        Step::InstallFiles if previous_kept => Step::RestorePrevious,
        Step::InstallFiles => Step::Failed,
        Step::DaemonReload | Step::RestartUnit | Step::WaitReady | Step::VerifyVersion => {
            if previous_kept && allow_rollback {
                Step::RestorePrevious
            } else {
                Step::Failed
            }
        }
        Step::RestorePrevious => Step::StartAfterFailure,
        other => on_failure(other, previous_kept),
    }
}

/// The step after `step` failed. `backup_exists`: whether this operation's backup was made
/// (certificates may have been changed, so they are restored).
#[must_use]
pub fn on_failure(step: Step, backup_exists: bool) -> Step {
    match step {
        // Nothing changed yet: the unit was never stopped.
        Step::Preflight => Step::Failed,
        // The unit may be down: bring it back, nothing to restore.
        Step::StopUnit | Step::RestartUnit => Step::StartAfterFailure,
        // Certificates changed and RKE2 did not come back healthy with them.
        Step::Rotate
        | Step::VerifyBackup
        | Step::StartUnit
        | Step::WaitReady
        | Step::VerifyFresh
        | Step::VerifyServed
            if backup_exists =>
        {
            Step::RestoreBackup
        }
        Step::Rotate
        | Step::VerifyBackup
        | Step::StartUnit
        | Step::WaitReady
        | Step::VerifyFresh
        | Step::VerifyServed => Step::StartAfterFailure,
        // RKE2 runs with new certificates; only the copies or the check failed: report.
        Step::VerifyRenewed | Step::RefreshKubeconfigs => Step::Failed,
        // A failing restore still tries to start the unit; a failing start after failure
        // ends the operation (the report carries the unit's journal).
        Step::RestoreBackup => Step::StartAfterFailure,
        Step::StartAfterFailure | Step::WaitAfterFailure | Step::Done | Step::Failed => {
            Step::Failed
        }
        // Upgrade steps (handled by `on_failure_of`; here for completeness).
        Step::RestorePrevious => Step::StartAfterFailure,
        Step::CheckVersion
        | Step::FetchArtifacts
        | Step::VerifyChecksum
        | Step::EtcdSnapshot
        | Step::InstallFiles
        | Step::DaemonReload
        | Step::VerifyVersion
        | Step::Skipped
        | Step::FetchImages
        | Step::VerifyImages
        | Step::PlaceImages
        | Step::PruneImages => Step::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(kind: &OpKind, role: Role) -> Vec<Step> {
        let mut steps = vec![first_step(kind)];
        while !steps.last().is_some_and(|s| s.is_terminal()) {
            let last = *steps.last().expect("non-empty");
            steps.push(on_success(kind, role, last));
            assert!(steps.len() < 20, "no loop");
        }
        steps
    }

    #[test]
    fn rotate_on_a_server_verifies_the_served_certificate() {
        let steps = walk(
            &OpKind::Rotate {
                services: vec![],
                etcd_snapshot: false,
            },
            Role::Server,
        );
        assert_eq!(
            steps,
            vec![
                Step::Preflight,
                Step::StopUnit,
                Step::Rotate,
                Step::VerifyBackup,
                Step::StartUnit,
                Step::WaitReady,
                Step::VerifyFresh,
                Step::RefreshKubeconfigs,
                Step::VerifyServed,
                Step::Done
            ]
        );
    }

    #[test]
    fn rotate_on_an_agent_has_no_apiserver_step() {
        let steps = walk(
            &OpKind::Rotate {
                services: vec![],
                etcd_snapshot: false,
            },
            Role::Agent,
        );
        assert!(!steps.contains(&Step::VerifyServed));
        assert_eq!(steps.last(), Some(&Step::Done));
    }

    #[test]
    fn renew_by_restart_restarts_and_verifies_renewal() {
        let steps = walk(&OpKind::RenewByRestart, Role::Server);
        assert_eq!(
            steps,
            vec![
                Step::Preflight,
                Step::RestartUnit,
                Step::WaitReady,
                Step::VerifyRenewed,
                Step::RefreshKubeconfigs,
                Step::Done
            ]
        );
    }

    #[test]
    fn failed_preflight_touches_nothing() {
        assert_eq!(on_failure(Step::Preflight, false), Step::Failed);
    }

    #[test]
    fn failure_after_rotation_restores_the_backup_then_starts_and_fails() {
        for step in [
            Step::StartUnit,
            Step::WaitReady,
            Step::VerifyFresh,
            Step::VerifyServed,
        ] {
            assert_eq!(on_failure(step, true), Step::RestoreBackup, "{step:?}");
        }
        let kind = OpKind::Rotate {
            services: vec![],
            etcd_snapshot: false,
        };
        assert_eq!(
            on_success(&kind, Role::Server, Step::RestoreBackup),
            Step::StartAfterFailure
        );
        assert_eq!(
            on_success(&kind, Role::Server, Step::StartAfterFailure),
            Step::WaitAfterFailure
        );
        assert_eq!(
            on_success(&kind, Role::Server, Step::WaitAfterFailure),
            Step::Failed
        );
    }

    #[test]
    fn failure_to_stop_only_restarts_the_unit() {
        assert_eq!(on_failure(Step::StopUnit, false), Step::StartAfterFailure);
    }

    #[test]
    fn failing_recovery_still_ends_failed() {
        assert_eq!(
            on_failure(Step::RestoreBackup, true),
            Step::StartAfterFailure
        );
        assert_eq!(on_failure(Step::StartAfterFailure, true), Step::Failed);
        assert_eq!(on_failure(Step::WaitAfterFailure, true), Step::Failed);
    }

    #[test]
    fn stale_kubeconfig_copy_is_reported_without_undoing_a_good_rotation() {
        assert_eq!(on_failure(Step::RefreshKubeconfigs, true), Step::Failed);
    }

    fn upgrade(allow_rollback: bool) -> OpKind {
        OpKind::Upgrade {
            version: "v1.34.1+rke2r1".into(),
            source: None,
            allow_rollback,
        }
    }

    #[test]
    fn upgrade_fetches_verifies_installs_restarts_and_checks_the_version() {
        assert_eq!(
            walk(&upgrade(true), Role::Server),
            vec![
                Step::CheckVersion,
                Step::Preflight,
                Step::FetchArtifacts,
                Step::VerifyChecksum,
                Step::EtcdSnapshot,
                Step::InstallFiles,
                Step::DaemonReload,
                Step::RestartUnit,
                Step::WaitReady,
                Step::VerifyVersion,
                Step::Done
            ]
        );
        let agent = walk(&upgrade(true), Role::Agent);
        assert!(!agent.contains(&Step::EtcdSnapshot), "agents have no etcd");
        assert_eq!(agent.len(), 10);
    }

    #[test]
    fn upgrade_already_at_target_is_skipped() {
        let kind = upgrade(true);
        assert_eq!(on_skip(&kind, Step::CheckVersion), Step::Skipped);
        assert!(Step::Skipped.is_terminal());
        assert_eq!(on_success(&kind, Role::Agent, Step::Skipped), Step::Skipped);
    }

    #[test]
    fn checksum_mismatch_or_a_failed_snapshot_installs_nothing() {
        for step in [
            Step::CheckVersion,
            Step::Preflight,
            Step::FetchArtifacts,
            Step::VerifyChecksum,
            Step::EtcdSnapshot,
        ] {
            assert_eq!(on_failure_of(&upgrade(true), step, false), Step::Failed);
        }
    }

    #[test]
    fn release_that_never_gets_ready_is_rolled_back_when_allowed() {
        for step in [Step::RestartUnit, Step::WaitReady, Step::VerifyVersion] {
            assert_eq!(
                on_failure_of(&upgrade(true), step, true),
                Step::RestorePrevious
            );
            assert_eq!(on_failure_of(&upgrade(false), step, true), Step::Failed);
        }
        let kind = upgrade(true);
        assert_eq!(
            on_success(&kind, Role::Server, Step::RestorePrevious),
            Step::StartAfterFailure
        );
        assert_eq!(
            on_failure_of(&kind, Step::RestorePrevious, true),
            Step::StartAfterFailure
        );
    }

    #[test]
    fn half_done_install_is_undone_even_without_rollback() {
        assert_eq!(
            on_failure_of(&upgrade(false), Step::InstallFiles, true),
            Step::RestorePrevious
        );
        assert_eq!(
            on_failure_of(&upgrade(false), Step::InstallFiles, false),
            Step::Failed
        );
    }

    #[test]
    fn only_read_only_steps_leave_room_to_cancel() {
        for step in [
            Step::CheckVersion,
            Step::Preflight,
            Step::FetchArtifacts,
            Step::VerifyChecksum,
            Step::EtcdSnapshot,
        ] {
            assert!(!step.changes_node(), "{step:?}");
        }
        for step in [Step::StopUnit, Step::InstallFiles, Step::RestartUnit] {
            assert!(step.changes_node(), "{step:?}");
        }
    }

    #[test]
    fn staging_images_fetches_verifies_places_and_never_touches_the_unit() {
        let stage = OpKind::StageImages {
            version: "v1.34.1+rke2r1".into(),
            source: None,
        };
        for role in [Role::Server, Role::Agent] {
            let steps = walk(&stage, role);
            assert_eq!(
                steps,
                vec![
                    Step::FetchImages,
                    Step::VerifyImages,
                    Step::PlaceImages,
                    Step::Done
                ]
            );
        }
        let prune = OpKind::PruneImages {
            version: "v1.34.1+rke2r1".into(),
        };
        assert_eq!(
            walk(&prune, Role::Agent),
            vec![Step::PruneImages, Step::Done]
        );
        for step in [
            Step::FetchImages,
            Step::VerifyImages,
            Step::PlaceImages,
            Step::PruneImages,
        ] {
            assert_eq!(on_failure_of(&stage, step, false), Step::Failed);
            assert_eq!(on_failure_of(&prune, step, true), Step::Failed);
        }
        // Cancel is honoured until place (which only adds files).
        assert!(!Step::FetchImages.changes_node() && !Step::VerifyImages.changes_node());
        assert!(Step::PlaceImages.changes_node() && Step::PruneImages.changes_node());
    }

    #[test]
    fn step_names_round_trip() {
        for step in ALL_STEPS {
            assert_eq!(Step::from_name(step.name()), Some(step));
        }
    }
}
