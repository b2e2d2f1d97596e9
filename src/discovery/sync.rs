//! Mirrors one node's inventory into `BlockDevice` objects: a pure diff ([`desired`], [`plan`])
//! carried out by server-side apply, again whenever the inventory or the watched objects change
//! ([`spawn`]). Only stale *unclaimed* objects are deleted: an object that records a claim is
//! the cluster's memory of whose data is on that disk.
//!
//! Only devices the filters select are mirrored (plus any that hold or held a claim of this
//! node): devices nobody opted in are none of the cluster's business, and a disk visible to
//! several nodes would otherwise have every node fight over one object. An object recording
//! another node's claim is never overwritten; its claim is copied into this node's inventory
//! ([`Inventory::set_foreign_claims`]), so this node neither gives that device out nor writes
//! to it. An object recording a claim of this node that the node's own state lacks is usually
//! just behind (a DeleteVolume released the device since the last sync) and is brought to the
//! state's view. But when the state did not exist before this start (its state dir lost: a raw
//! device without a signature then looks blank), the first sync keeps such a claim: it is held
//! in the inventory as Released ([`Inventory::set_remembered_claims`]) and mirrored back with
//! that hold, which later syncs and starts keep until an operator deletes the object or clears
//! its claim ([`plan`]). No device is given out before the first sync merged these claims.

use super::crd::{from_entry, BlockDevice, BlockDeviceStatus, NODE_LABEL};
use super::inventory::{Claim, Claims, Entry, Inventory, State};
use backon::{ExponentialBuilder, Retryable};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_stream::StreamExt;

pub const FIELD_MANAGER: &str = "ferrovol";

/// The objects this node should have: every Active device the filters select, and every
/// device that holds or held a claim of this node (Inactive included). Unclaimed Inactive
/// devices, and devices another node claimed, are not mirrored.
pub fn desired(node: &str, entries: &[Entry]) -> Vec<BlockDevice> {
    entries
        .iter()
        .filter(|e| match e.claim.node() {
            None => e.state == State::Active && e.device.selected,
            Some(holder) => holder == node,
        })
        .map(|e| from_entry(node, e))
        .collect()
}

/// The claims other nodes hold, by uid, from their objects: a device this node may see too (a
/// LUN named by its WWN) that another node's object records as Claimed or Released.
pub fn foreign_claims(node: &str, all: &[BlockDevice]) -> BTreeMap<String, Claim> {
    all.iter()
        .filter(|o| o.spec.node_name != node)
        .filter_map(|o| {
            let s = o.status.as_ref()?;
            let holder = s.claim_node.as_ref().unwrap_or(&o.spec.node_name);
            let volume = s.volume.clone().unwrap_or_default();
            let claim = match s.claim_state.as_str() {
                "Claimed" => Claim::Claimed {
                    volume,
                    node: holder.clone(),
                },
                "Released" => Claim::Released {
                    volume,
                    reason: s.reason.clone().unwrap_or_default(),
                    node: holder.clone(),
                },
                _ => return None,
            };
            (holder != node).then(|| (o.name_any(), claim))
        })
        .collect()
}

#[derive(Debug, Default)]
pub struct Plan {
    /// Objects to create or update (spec and status differ, or missing).
    pub apply: Vec<BlockDevice>,
    /// Names of this node's objects to delete: not desired and unclaimed.
    pub delete: Vec<String>,
    /// Claims of this node, by uid, that only its objects remember (this node's state shows
    /// the device unclaimed) and that are kept ([`plan`]): shown Released in the inventory
    /// until an operator clears them.
    pub remembered: Claims,
}

/// Why a device is held that this node's object records as claimed by `volume` while this
/// node's state records no claim on it. Later starts recognise the hold by this exact text in
/// the object (`plan`): changing it would drop the holds objects carry now (a test pins it).
pub fn remembered_reason(volume: &str) -> String {
    format!(
        "claimed by volume {volume} per its BlockDevice; this node's state has no record of it: \
         not reused until an operator releases it (delete the BlockDevice object or clear its claim)"
    )
}

/// The volume whose claim (Claimed or Released) of this node the object `o` records.
fn claimed_by(node: &str, o: &BlockDevice) -> Option<String> {
    let s = o.status.as_ref().filter(|_| o.spec.node_name == node)?;
    let holder = s.claim_node.as_deref().unwrap_or(node);
    let claimed = matches!(s.claim_state.as_str(), "Claimed" | "Released");
    (claimed && holder == node).then(|| s.volume.clone().unwrap_or_default())
}

/// What to change so that `existing` (this node's objects, by label) matches `desired`,
/// leaving alone every object that records another node's claim (`foreign`). `desired` comes
/// from the inventory as this node's own state shows it ([`Inventory::own_view`]). Where that
/// shows no claim but this node's object does, the object is either behind (a DeleteVolume
/// released the device since the last sync: it is brought to the state's view) or the only
/// memory of whose data is on the device. Its claim is kept (`remembered`) and mirrored back
/// as Released only when this node's state was `fresh` at this start (state dir lost or first
/// start, and this is the first sync), when the inventory already holds that volume's claim
/// there (`held`: an earlier sync of this process kept it; the watched object may lag behind
/// the hold sent), or when the object already shows the hold (Released with
/// [`remembered_reason`]: kept at an earlier start until an operator clears it).
pub fn plan(
    node: &str,
    desired: Vec<BlockDevice>,
    existing: &[BlockDevice],
    foreign: &BTreeMap<String, Claim>,
    fresh: bool,
    held: &Claims,
) -> Plan {
    let have: BTreeMap<String, &BlockDevice> = existing.iter().map(|o| (o.name_any(), o)).collect();
    let named = desired.into_iter().map(|o| (o.name_any(), o));
    let mut want: BTreeMap<String, BlockDevice> =
        named.filter(|(n, _)| !foreign.contains_key(n)).collect();
    let mut remembered = Claims::new();
    for (name, o) in have.iter().filter(|(n, _)| !foreign.contains_key(*n)) {
        let Some(volume) = claimed_by(node, o) else {
            continue;
        };
        // Released: this node cannot tell what is on the device now.
        let reason = remembered_reason(&volume);
        let status = o.status.as_ref();
        let shows_hold = status.is_some_and(|s| {
            s.claim_state == "Released" && s.reason.as_deref() == Some(reason.as_str())
        });
        let holding = held.get(name).is_some_and(|c| c.volume() == volume);
        if !(fresh || holding || shows_hold) {
            continue;
        }
        let hold = |s: &mut BlockDeviceStatus| {
            s.claim_state = "Released".into();
            s.volume = Some(volume.clone());
            s.claim_node = Some(node.to_string());
            s.reason = Some(reason.clone());
        };
        match want.get_mut(name).and_then(|w| w.status.as_mut()) {
            Some(s) if s.claim_state != "Unclaimed" => continue,
            Some(s) => hold(s),
            None => {
                // The device is missing now: the hold still goes into its object (as it is,
                // Inactive), so that a later start keeps it once the device is back.
                let mut kept = BlockDevice::new(name, o.spec.clone());
                kept.metadata.labels = o.metadata.labels.clone();
                kept.status = o.status.clone().map(|mut s| {
                    hold(&mut s);
                    (s.state, s.candidate) = (State::Inactive.as_str().into(), false);
                    s
                });
                want.insert(name.clone(), kept);
            }
        }
        let node = node.to_string();
        let claim = Claim::Released {
            volume,
            reason,
            node,
        };
        remembered.insert(name.clone(), claim);
    }
    let same = |a: &BlockDevice, b: &BlockDevice| a.spec == b.spec && a.status == b.status;
    let apply = (want.iter())
        .filter(|(name, o)| !have.get(*name).is_some_and(|h| same(h, o)))
        .map(|(_, o)| o.clone())
        .collect();
    let delete = (have.into_iter())
        .filter(|(name, o)| o.spec.node_name == node && !want.contains_key(name))
        .filter(|(_, o)| !matches!(&o.status, Some(s) if s.claim_state != "Unclaimed"))
        .map(|(name, _)| name)
        .collect();
    Plan {
        apply,
        delete,
        remembered,
    }
}

/// Whether this process has a Kubernetes identity to sync with: it runs in a pod (the
/// service account's token is mounted) or KUBECONFIG names one. A standalone driver has none
/// and keeps its inventory to itself.
pub fn in_cluster() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::env::var_os("KUBECONFIG").is_some()
}

/// Full resync even when nothing changed: repairs what the watch missed.
const RESYNC: Duration = Duration::from_secs(60);

fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(30))
        .without_max_times()
}

/// Starts, on the current runtime, the task that mirrors `inventory` into `BlockDevice`
/// objects: at once, after every change of the inventory (scan, hotplug, claim) or of the
/// objects (watched), and every [`RESYNC`]. Failures (API server down, a verb the role lacks)
/// are logged with the cause and retried with backoff; the driver serves volumes meanwhile,
/// but gives out no device before the first sync merged the claims the objects remember.
/// `fresh`: this node's state did not exist before this start (see [`plan`]).
pub fn spawn(inventory: Arc<Inventory>, fresh: bool) -> std::io::Result<()> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
        std::io::Error::other(format!("the BlockDevice sync needs a tokio runtime: {e}"))
    })?;
    inventory.await_reconcile();
    runtime.spawn(run(inventory, fresh));
    Ok(())
}

async fn run(inventory: Arc<Inventory>, fresh: bool) {
    let node = inventory.node().to_string();
    let Ok(client) = kube::Client::try_default
        .retry(backoff())
        .notify(|e, wait| tracing::warn!(node = %node, error = %e, retry_in = ?wait, "no Kubernetes client for the BlockDevice sync"))
        .await
    else {
        return;
    };
    let api: Api<BlockDevice> = Api::all(client);
    // Every node's objects, cached by a watch: a sync reads them there instead of listing.
    let (store, writer) = reflector::store();
    let seen = Arc::new(Notify::new());
    let watch = watcher(api.clone(), watcher::Config::default());
    let events = watch.default_backoff().reflect(writer);
    tokio::spawn({
        let (seen, node) = (seen.clone(), node.clone());
        async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                if let Err(e) = event {
                    tracing::warn!(node = %node, error = %e, "BlockDevice watch failed");
                }
                seen.notify_one();
            }
        }
    });
    // Until the first full list, another node's claim could go unseen.
    if store.wait_until_ready().await.is_err() {
        tracing::error!(node = %node, "BlockDevice watch ended before its first list: no device is given out, since the objects may remember claims this node's state lacks");
        return;
    }
    let mut changes = inventory.changes();
    // Only the first sync trusts a claim only the objects record because the state is fresh:
    // later ones find it held in the inventory or shown as held in its object.
    let mut fresh = fresh;
    loop {
        let synced = (|| sync(&api, &store, &inventory, fresh))
            .retry(backoff())
            .notify(|e, wait| tracing::warn!(node = %node, error = %e, retry_in = ?wait, "BlockDevice sync failed"))
            .await;
        if let Ok(p) = synced {
            fresh = false;
            if !p.apply.is_empty() || !p.delete.is_empty() {
                tracing::info!(node = %node, applied = p.apply.len(), deleted = p.delete.len(), "BlockDevice objects synced");
            }
        }
        tokio::select! {
            _ = changes.changed() => {}
            () = seen.notified() => {}
            () = tokio::time::sleep(RESYNC) => {}
        }
    }
}

/// One sync against the cached objects (every node's, as the watch last saw them): the claims
/// only this node's objects remember held in the inventory, the plan carried out, spec and
/// status by server-side apply, stale unclaimed objects deleted, and the claims of other nodes
/// recorded in the inventory; the first one lets device creates in
/// ([`Inventory::mark_reconciled`]). A sync that finds nothing to change sends
/// nothing. Returns the plan it carried out.
async fn sync(
    api: &Api<BlockDevice>,
    store: &reflector::Store<BlockDevice>,
    inventory: &Inventory,
    fresh: bool,
) -> kube::Result<Plan> {
    let node = inventory.node();
    // All nodes' objects: a device this node sees may be another node's claim.
    let all: Vec<BlockDevice> = store.state().iter().map(|o| (**o).clone()).collect();
    let mine = |o: &BlockDevice| o.labels().get(NODE_LABEL).map(String::as_str) == Some(node);
    let (existing, others): (Vec<_>, Vec<_>) = all.into_iter().partition(mine);
    let want = desired(node, &inventory.own_view());
    let foreign = foreign_claims(node, &others);
    let held = inventory.remembered_claims();
    let p = plan(node, want, &existing, &foreign, fresh, &held);
    // Before anything is sent: the devices this node's objects remember are held at once.
    inventory.set_remembered_claims(&p.remembered);
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    for obj in &p.apply {
        let name = obj.name_any();
        let mut body = obj.clone();
        let status = body.status.take();
        api.patch(&name, &pp, &Patch::Apply(&body)).await?;
        if let Some(status) = status {
            let s = serde_json::json!({
                "apiVersion": "ferrovol.io/v1alpha1",
                "kind": "BlockDevice",
                "status": status,
            });
            api.patch_status(&name, &pp, &Patch::Apply(&s)).await?;
        }
    }
    for name in &p.delete {
        api.delete(name, &DeleteParams::default()).await?;
    }
    if let Err(e) = inventory.set_foreign_claims(&foreign) {
        tracing::warn!(node = %node, error = %e, "could not record other nodes' claims");
    }
    inventory.mark_reconciled();
    Ok(p)
}

#[cfg(test)]
#[path = "sync_tests.rs"]
mod tests;
