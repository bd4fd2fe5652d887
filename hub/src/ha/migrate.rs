//! `rke2-hub migrate --to etcd`: moves a stopped single-machine hub's state (its SQLite
//! database, whole) into an empty etcd prefix as the first snapshot, so replicas started with
//! `store = "etcd"` continue exactly where it stopped: same nodes, same identities' serials,
//! same plans. No agent re-enrolls, because the identities and the CA (its files, copied to
//! each replica) are the same.

use anyhow::Context as _;

use crate::config::{Config, StoreConfig};
use crate::store::Store;

/// Moves the state of the hub at `config.state_dir` into etcd; returns what was moved, in
/// words.
///
/// # Errors
/// The hub still running (its state dir lock), no database, etcd unreachable, or a prefix
/// that already holds a hub's state.
pub async fn to_etcd(config: &Config) -> anyhow::Result<String> {
    let StoreConfig::Etcd { settings, .. } = &config.store else {
        anyhow::bail!("migrate --to etcd needs etcd_endpoints (hub.toml or --etcd-endpoint)");
    };
    let _lock = crate::serve::lock_state_dir(&config.state_dir)
        .context("stop the hub first (`systemctl stop rke2-hub`): migrate reads a quiet state")?;
    let db = config.state_dir.join("hub.db");
    anyhow::ensure!(
        db.exists(),
        "{} does not exist: nothing to migrate",
        db.display()
    );
    let store = Store::open(&db).with_context(|| format!("cannot open {}", db.display()))?;
    let (nodes, plans) = (store.nodes()?.len(), store.plans(false)?.len());
    let copy = config.state_dir.join("migrate.snapshot.tmp");
    store.copy_to(&copy, || 0)?;
    let bytes = std::fs::read(&copy).with_context(|| format!("cannot read {}", copy.display()))?;
    let _ = std::fs::remove_file(&copy);
    let log = super::EtcdLog::connect(settings.clone(), super::Role::replica("migrate"))
        .await
        .context("cannot reach etcd")?;
    log.seed(&bytes).await?;
    Ok(format!(
        "moved the hub state ({nodes} nodes, {plans} plans, {} bytes) from {} into etcd under \
         {}. Next: set store = \"etcd\" and etcd_endpoints in every replica's hub.toml, copy \
         {}/pki/ca.crt and ca.key to each replica's state dir (mode 0600), and start them; \
         agents keep their identities (list every replica in their hub_addresses).",
        bytes.len(),
        db.display(),
        settings.prefix,
        config.state_dir.display()
    ))
}
