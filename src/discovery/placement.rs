//! Where scanned devices land in the inventory. An entry is keyed by uid, so two devices that
//! present one uid cannot both be in it: the entry keeps the device it had (the incumbent) and
//! records the other as a conflict. A newcomer is never put in the incumbent's place, so a
//! claim never moves to a device that merely shows the same identity.

use super::device::Device;
use super::inventory::{Claim, Entry, State};
use super::scan;
use std::collections::BTreeMap;

pub(super) type Map = BTreeMap<String, Entry>;

/// One device, the same kernel name and number.
fn same(a: &Device, b: &Device) -> bool {
    a.kernel_name == b.kernel_name && a.dev_number == b.dev_number
}

/// After a full scan: `found` is every device present; entries not found turn Inactive.
pub(super) fn place_all(map: &mut Map, found: Vec<Device>) {
    for e in map.values_mut() {
        e.state = State::Inactive;
    }
    let mut groups: BTreeMap<String, Vec<Device>> = BTreeMap::new();
    for d in found {
        groups.entry(d.uid.clone()).or_default().push(d);
    }
    for (uid, mut devs) in groups {
        let known = map.get(&uid);
        let incumbent = known.and_then(|e| devs.iter().position(|d| same(&e.device, d)));
        if devs.len() == 1 {
            let newcomer = incumbent.is_none()
                && known.is_some_and(|e| e.conflict.contains(&devs[0].kernel_name));
            if !newcomer {
                upsert(map, devs.remove(0));
                if let Some(e) = map.get_mut(&uid) {
                    e.conflict.clear();
                }
            }
            continue;
        }
        scan::mark_duplicates(&mut devs);
        // A claimed entry keeps its own device or none: never one of the others.
        let claimed = known.is_some_and(|e| e.claim != Claim::Unclaimed);
        let keep = incumbent.or((!claimed).then_some(0));
        let others: Vec<String> = devs
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != keep)
            .map(|(_, d)| d.kernel_name.clone())
            .collect();
        if let Some(i) = keep {
            upsert(map, devs.swap_remove(i));
        }
        if let Some(e) = map.get_mut(&uid) {
            e.conflict = others;
        }
    }
}

/// After a uevent for `name`: `dev` is what that name shows now (None: gone, no medium).
/// `look` scans another device by kernel name, to tell a conflict from a renumbering.
pub(super) fn place_one(
    map: &mut Map,
    name: &str,
    dev: Option<Device>,
    look: impl Fn(&str) -> Option<Device>,
) {
    let uid = dev.as_ref().map(|d| d.uid.clone());
    let mut settled = Vec::new();
    for e in map.values_mut() {
        if Some(&e.device.uid) == uid.as_ref() {
            continue;
        }
        // Whatever this name stood for before is gone from it: a detached loop, a pulled disk.
        if e.device.kernel_name == name {
            e.state = State::Inactive;
        }
        if let Some(i) = e.conflict.iter().position(|n| n == name) {
            e.conflict.remove(i);
            if e.conflict.is_empty() && e.state == State::Active {
                settled.push(e.device.kernel_name.clone());
            }
        }
    }
    if let Some(dev) = dev {
        match map.get(&dev.uid) {
            // A known newcomer: whether or not the incumbent is still there, it is not taken
            // for it.
            Some(e) if e.conflict.contains(&dev.kernel_name) => {}
            Some(e)
                if e.state == State::Active
                    && e.device.kernel_name != dev.kernel_name
                    && look(&e.device.kernel_name).is_some_and(|o| o.uid == dev.uid) =>
            {
                let incumbent = look(&e.device.kernel_name).expect("just seen");
                let mut pair = [incumbent, dev];
                scan::mark_duplicates(&mut pair);
                let [incumbent, newcomer] = pair;
                let uid = incumbent.uid.clone();
                upsert(map, incumbent);
                let e = map.get_mut(&uid).expect("just upserted");
                if !e.conflict.contains(&newcomer.kernel_name) {
                    e.conflict.push(newcomer.kernel_name);
                }
            }
            _ => upsert(map, dev),
        }
    }
    // The incumbent of a settled conflict is a candidate again if its facts say so.
    for n in settled {
        if let Some(d) = look(&n) {
            if map.get(&d.uid).is_some_and(|e| e.device.kernel_name == n) {
                upsert(map, d);
            }
        }
    }
}

/// Inserts or refreshes a seen device, keeping its claim and conflict.
pub(super) fn upsert(map: &mut Map, device: Device) {
    match map.get_mut(&device.uid) {
        Some(e) => {
            e.device = device;
            e.state = State::Active;
        }
        None => {
            map.insert(
                device.uid.clone(),
                Entry {
                    device,
                    state: State::Active,
                    claim: Claim::Unclaimed,
                    conflict: Vec::new(),
                },
            );
        }
    }
}
