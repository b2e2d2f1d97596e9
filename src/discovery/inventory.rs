//! The node's device inventory: every device ever seen, keyed by uid (not /dev name, so a
//! renumbered device stays one entry), with its state and claim. The scans' findings and other
//! nodes' claims are persisted atomically as JSON in the state dir, so uids and Inactive devices
//! survive restarts; this node's own claims live in the state journal (the device backend hands
//! them over at open). A device that disappears turns Inactive and is kept.

use super::device::Device;
use super::filter::Filters;
use super::monitor::{Event, Monitor};
use super::placement;
use super::scan::{self, Context};
use crate::os::fsutil::{at, write_atomic};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

const FILE: &str = "devices.json";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    #[default]
    Active,
    Inactive,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "claim")]
pub enum Claim {
    #[default]
    Unclaimed,
    /// `node` holds the device for `volume`. A node never changes, wipes or formats a device
    /// another node claimed; it learns of such claims from the cluster's BlockDevice objects.
    Claimed {
        volume: String,
        #[serde(default)]
        node: String,
    },
    Released {
        volume: String,
        reason: String,
        #[serde(default)]
        node: String,
    },
}

impl State {
    pub fn as_str(self) -> &'static str {
        ["Active", "Inactive"][self as usize]
    }
}

impl Claim {
    /// Unclaimed, Claimed or Released.
    pub fn kind(&self) -> &'static str {
        match self {
            Claim::Unclaimed => "Unclaimed",
            Claim::Claimed { .. } => "Claimed",
            Claim::Released { .. } => "Released",
        }
    }

    /// The node that holds or held the claim; None when unclaimed.
    pub fn node(&self) -> Option<&str> {
        match self {
            Claim::Unclaimed => None,
            Claim::Claimed { node, .. } | Claim::Released { node, .. } => Some(node),
        }
    }

    /// The volume that holds or held the claim; empty when unclaimed.
    pub fn volume(&self) -> &str {
        match self {
            Claim::Unclaimed => "",
            Claim::Claimed { volume, .. } | Claim::Released { volume, .. } => volume,
        }
    }

    fn fill_node(&mut self, recorder: &str) {
        if let Claim::Claimed { node, .. } | Claim::Released { node, .. } = self {
            if node.is_empty() {
                *node = recorder.to_string();
            }
        }
    }
}

/// A device with its state and claim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub device: Device,
    pub state: State,
    /// Written to `devices.json` only when another node holds it.
    #[serde(default)]
    pub claim: Claim,
    /// Kernel names of other devices that present this uid too (one identity on two devices:
    /// a shared or cloned WWN, a second disk with the same serial). The entry keeps the device
    /// it had; none of them is a candidate or written while this is not empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflict: Vec<String>,
}

/// What `devices.json` holds: the node that wrote it and its entries.
#[derive(Serialize, Deserialize)]
pub(crate) struct Persisted {
    pub(crate) node: String,
    pub(crate) devices: Vec<Entry>,
}

impl Persisted {
    pub(crate) fn parse(file: &Path, bytes: &[u8]) -> io::Result<Persisted> {
        let invalid = |e| io::Error::new(io::ErrorKind::InvalidData, e);
        serde_json::from_slice(bytes).map_err(|e| at("device inventory ", file)(invalid(e)))
    }
}

pub struct Inventory {
    file: PathBuf,
    node: String,
    filters: Filters,
    entries: Mutex<BTreeMap<String, Entry>>,
    changed: watch::Sender<()>,
    monitor: Mutex<Option<Monitor>>,
    /// Claims of this node that only the cluster's BlockDevice objects remember (the node's
    /// state lost them), by uid: shown as Released on devices that show no other claim, never
    /// persisted, recomputed at every sync (see [`Inventory::set_remembered_claims`]).
    remembered: Mutex<Claims>,
    /// False while a device may be a claim only the cluster remembers, not yet merged.
    reconciled: AtomicBool,
}

/// This node's claims, by uid.
pub type Claims = BTreeMap<String, Claim>;

impl Inventory {
    /// Loads the inventory from `state_dir` (created if missing) and scans once. `own` gets
    /// this node's claims an older `devices.json` holds and answers the claims the node holds
    /// now, which the scan then places devices by.
    pub fn open_with_claims(
        state_dir: &Path,
        node: &str,
        filters: Filters,
        own: impl FnOnce(Claims) -> io::Result<Claims>,
    ) -> io::Result<Arc<Inventory>> {
        std::fs::create_dir_all(state_dir).map_err(at("", state_dir))?;
        let file = state_dir.join(FILE);
        let (mut entries, mut legacy) = (BTreeMap::new(), Claims::new());
        match std::fs::read(&file) {
            Ok(bytes) => {
                let p = Persisted::parse(&file, &bytes)?;
                for mut e in p.devices {
                    // Claims recorded before they named their node are the recorder's.
                    e.claim.fill_node(&p.node);
                    if e.claim.node() == Some(node) {
                        legacy.insert(e.device.uid.clone(), std::mem::take(&mut e.claim));
                    }
                    entries.insert(e.device.uid.clone(), e);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(at("", &file)(e)),
        }
        let inv = Arc::new(Inventory {
            file,
            node: node.to_string(),
            filters,
            entries: Mutex::new(entries),
            changed: watch::Sender::new(()),
            monitor: Mutex::new(None),
            remembered: Mutex::new(Claims::new()),
            reconciled: AtomicBool::new(true),
        });
        let adopting = !legacy.is_empty();
        let claims = own(legacy)?;
        inv.place_claims(&claims);
        inv.rescan()?;
        // Devices the scan saw for the first time.
        inv.place_claims(&claims);
        if adopting {
            // The claims are in the journal now: the file stops holding them.
            inv.persist(&inv.lock())?;
        }
        crate::metrics::count_devices(Arc::downgrade(&inv));
        Ok(inv)
    }

    /// Never over a claim another node holds.
    fn place_claims(&self, claims: &Claims) {
        let mut map = self.lock();
        for (uid, claim) in claims {
            match map.get_mut(uid) {
                Some(e) if e.claim.node().is_none_or(|n| n == self.node) => e.claim = claim.clone(),
                _ => {}
            }
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Scans every block device: seen ones are Active (facts refreshed), the others Inactive.
    pub fn rescan(&self) -> io::Result<()> {
        let found = scan::scan_all(&self.node, &self.filters)?;
        self.update(|map| placement::place_all(map, found))
    }

    /// Rescans one device by kernel name (and its disk, for a partition) after a uevent.
    pub fn rescan_device(&self, kernel_name: &str, parent: Option<&str>) -> io::Result<()> {
        let ctx = Context::load(&self.node, &self.filters)?;
        let names = std::iter::once(kernel_name).chain(parent);
        let scanned: Vec<_> = names.map(|n| (n, scan::scan_one(&ctx, n))).collect();
        self.update(|map| {
            for (name, dev) in scanned {
                placement::place_one(map, name, dev, |n| scan::scan_one(&ctx, n));
            }
        })
    }

    /// Applies `change` to the entries, persists them if they changed, and wakes waiters. On a
    /// failed write the in-memory state rolls back, so memory never runs ahead of the disk.
    fn update(&self, change: impl FnOnce(&mut BTreeMap<String, Entry>)) -> io::Result<()> {
        let mut map = self.lock();
        let before = map.clone();
        change(&mut map);
        // A device seen anew (or back) shows the claim the cluster remembers at once.
        self.hold_remembered(&mut map);
        if *map == before {
            return Ok(());
        }
        if let Err(e) = self.persist(&map) {
            *map = before;
            return Err(e);
        }
        drop(map);
        self.changed.send_replace(());
        Ok(())
    }

    fn persist(&self, map: &BTreeMap<String, Entry>) -> io::Result<()> {
        let mut devices: Vec<Entry> = map.values().cloned().collect();
        for e in &mut devices {
            // This node's claims live in the state journal.
            if e.claim.node() == Some(&self.node) {
                e.claim = Claim::Unclaimed;
            }
        }
        let node = self.node.clone();
        let bytes =
            serde_json::to_vec_pretty(&Persisted { node, devices }).map_err(io::Error::other)?;
        write_atomic(&self.file, &bytes).map_err(at("write device inventory ", &self.file))
    }

    /// Starts the hotplug thread (idempotent). Events lost to an overflow trigger a full rescan.
    pub fn start_monitor(self: &Arc<Self>) -> io::Result<()> {
        let mut slot = self.monitor.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return Ok(());
        }
        let weak = Arc::downgrade(self);
        let monitor = Monitor::start(move |ev| {
            let Some(inv) = weak.upgrade() else {
                return false;
            };
            let result = match &ev {
                Event::Block(u) => inv.rescan_device(&u.kernel_name, u.parent.as_deref()),
                Event::Lost => inv.rescan(),
            };
            if let Err(e) = result {
                tracing::warn!("device inventory: rescan after uevent failed: {e}");
            }
            true
        })?;
        *slot = Some(monitor);
        // Catch what changed between the first scan and the socket opening.
        drop(slot);
        self.rescan()
    }

    /// Every known device, Active and Inactive.
    pub fn snapshot(&self) -> Vec<Entry> {
        self.lock().values().cloned().collect()
    }

    /// Active, unclaimed devices the filters admit: what a volume may take.
    pub fn candidates(&self) -> Vec<Entry> {
        let map = self.lock();
        let free = |e: &&Entry| e.state == State::Active && e.claim == Claim::Unclaimed;
        let usable = |e: &&Entry| e.device.candidate && e.conflict.is_empty();
        let found = map.values().filter(|e| free(e) && usable(e));
        found.cloned().collect()
    }

    pub fn get(&self, uid: &str) -> Option<Entry> {
        self.lock().get(uid).cloned()
    }

    /// What the device with number `major:minor` presents right now, read afresh from sysfs
    /// and blkid (not from the inventory, which may lag behind a swap). None when no device
    /// has that number.
    pub fn identify(&self, number: &str) -> io::Result<Option<Device>> {
        let ctx = Context::load(&self.node, &self.filters)?;
        Ok(super::sysfs::name_by_number(number).and_then(|n| scan::scan_one(&ctx, &n)))
    }

    /// The current /dev path of an Active device.
    pub fn resolve_path(&self, uid: &str) -> Option<PathBuf> {
        let map = self.lock();
        let e = map.get(uid).filter(|e| e.state == State::Active)?;
        Some(e.device.dev_path.clone())
    }

    /// Shows a claim of this node, which the caller has made durable (in the state journal).
    /// Refused when another node holds the device, or when `claim` names another node.
    pub fn set_claim(&self, uid: &str, claim: Claim) -> io::Result<()> {
        let mut map = self.lock();
        let e = map.get_mut(uid).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no device with uid {uid}"))
        })?;
        for c in [&e.claim, &claim] {
            if let Some(other) = c.node().filter(|n| *n != self.node) {
                let node = &self.node;
                let msg =
                    format!("device {uid} is claimed by node {other}; node {node} leaves it alone");
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, msg));
            }
        }
        e.claim = claim;
        drop(map);
        self.changed.send_replace(());
        Ok(())
    }

    /// Records the claims other nodes hold (from the cluster, by uid) on devices this node
    /// sees too, and forgets those they gave up. A claim of this node is never replaced; two
    /// nodes claiming one device is logged as the error it is.
    pub fn set_foreign_claims(&self, foreign: &BTreeMap<String, Claim>) -> io::Result<()> {
        self.update(|map| {
            for (uid, e) in map.iter_mut() {
                let theirs = e.claim.node().is_some_and(|n| n != self.node);
                match foreign.get(uid) {
                    Some(c) if e.claim == Claim::Unclaimed || theirs => e.claim = c.clone(),
                    Some(c) => {
                        tracing::error!(uid = %uid, ours = ?e.claim, theirs = ?c, "two nodes claim one device");
                    }
                    None if theirs => e.claim = Claim::Unclaimed,
                    None => {}
                }
            }
        })
    }

    /// Shows the claims of this node that only the cluster remembers (`uid -> Released`) on
    /// the devices that show no claim, and releases those no longer remembered (an operator
    /// deleted the object or cleared its claim). Entries lock before `remembered`, as in
    /// [`Inventory::update`].
    pub fn set_remembered_claims(&self, claims: &Claims) {
        let mut map = self.lock();
        let before = map.clone();
        {
            let mut kept = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
            for (uid, e) in map.iter_mut() {
                if !claims.contains_key(uid) && kept.get(uid) == Some(&e.claim) {
                    tracing::info!(uid = %uid, device = %e.device.dev_path.display(), "the cluster no longer remembers a claim on the device: given out again");
                    e.claim = Claim::Unclaimed;
                }
            }
            *kept = claims.clone();
        }
        self.hold_remembered(&mut map);
        if *map != before {
            drop(map);
            self.changed.send_replace(());
        }
    }

    /// Shows each remembered claim on its device if that shows no claim (this node's state
    /// and other nodes' claims stand over it).
    fn hold_remembered(&self, map: &mut BTreeMap<String, Entry>) {
        let kept = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        for (uid, claim) in kept.iter() {
            match map.get_mut(uid) {
                Some(e) if e.claim == Claim::Unclaimed => {
                    let (device, volume) = (e.device.dev_path.display(), claim.volume());
                    tracing::error!(uid = %uid, device = %device, volume = %volume, node = %self.node,
                        "device claimed by volume {volume} per its BlockDevice, which this node's state does not record: not reused until an operator releases it");
                    e.claim = claim.clone();
                }
                _ => {}
            }
        }
    }

    /// The claims of this node that only the cluster remembers, as the last
    /// [`Inventory::set_remembered_claims`] set them.
    pub fn remembered_claims(&self) -> Claims {
        let kept = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        kept.clone()
    }

    /// The entries as this node's own state shows them: without the remembered claims.
    pub fn own_view(&self) -> Vec<Entry> {
        let kept = self.remembered_claims();
        let mut entries = self.snapshot();
        for e in &mut entries {
            if kept.get(&e.device.uid) == Some(&e.claim) {
                e.claim = Claim::Unclaimed;
            }
        }
        entries
    }

    /// Holds device creates back until [`Inventory::mark_reconciled`]: the BlockDevice sync
    /// calls it before it starts.
    pub fn await_reconcile(&self) {
        self.reconciled.store(false, Ordering::SeqCst);
    }

    /// The first sync has merged the claims the cluster remembers.
    pub fn mark_reconciled(&self) {
        self.reconciled.store(true, Ordering::SeqCst);
    }

    /// Whether devices may be given out: always in standalone mode, in a cluster once the
    /// first BlockDevice sync merged the claims the cluster remembers.
    pub fn reconciled(&self) -> bool {
        self.reconciled.load(Ordering::SeqCst)
    }

    /// Wakes on every change of the entries.
    pub fn changes(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
impl Inventory {
    /// An inventory of `entries` that never scanned, written to `file` on a change.
    pub(crate) fn fake(file: PathBuf, node: &str, entries: Vec<Entry>) -> Inventory {
        let map = entries.into_iter().map(|e| (e.device.uid.clone(), e));
        Inventory {
            file,
            node: node.into(),
            filters: Filters::default(),
            entries: Mutex::new(map.collect()),
            changed: watch::Sender::new(()),
            monitor: Mutex::new(None),
            remembered: Mutex::new(Claims::new()),
            reconciled: AtomicBool::new(true),
        }
    }
}

#[cfg(test)]
#[path = "inventory_tests.rs"]
mod tests;
