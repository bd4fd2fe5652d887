//! Renew-by-restart's own work: which leaves are inside the renewal window before the
//! restart, and whether RKE2 reissued them when it came back. The restart itself is a unit
//! job ([`super::units`]); the kubeconfig refresh is shared with rotation.

use rke2ops_common::certs::model::Origin;
use rke2ops_common::renewal;
use time::OffsetDateTime;

use super::files;
use super::journal::OpRecord;
use super::setup::NodeSetup;

/// Records in `record` the leaf files inside the renewal window (with their NotAfter), so
/// [`verify_renewed`] can tell they were reissued. Returns the step's detail.
pub fn note_due_leaves(setup: &NodeSetup, record: &mut OpRecord) -> String {
    let inventory = files::scan(&setup.data_dir, &setup.admin_kubeconfig);
    let now = OffsetDateTime::now_utc();
    let window = renewal::window(renewal::RENEW_WINDOW_DAYS);
    record.due_for_renewal = inventory
        .certificates
        .iter()
        .filter(|c| c.index == 0 && c.is_leaf() && c.origin == Origin::File)
        .filter(|c| c.not_after - now < window)
        .map(|c| (c.path.clone(), c.not_after.unix_timestamp()))
        .collect();
    format!(
        "{} leaves inside the renewal window",
        record.due_for_renewal.len()
    )
}

/// Every leaf noted by [`note_due_leaves`] now expires later than it did.
pub fn verify_renewed(setup: &NodeSetup, record: &OpRecord) -> Result<String, String> {
    let inventory = files::scan(&setup.data_dir, &setup.admin_kubeconfig);
    let stale: Vec<String> = record
        .due_for_renewal
        .iter()
        .filter(|(path, before)| {
            inventory
                .certificates
                .iter()
                .find(|c| &c.path == path && c.index == 0)
                .is_none_or(|c| c.not_after.unix_timestamp() <= *before)
        })
        .map(|(path, _)| path.clone())
        .collect();
    if stale.is_empty() {
        Ok(format!(
            "{} leaves inside the renewal window were reissued",
            record.due_for_renewal.len()
        ))
    } else {
        Err(format!("not reissued by the restart: {}", stale.join(", ")))
    }
}
