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
        let mut others: Vec<String> = devs.iter().map(|d| d.kernel_name.clone()).collect();
        if let Some(i) = keep {
            others.remove(i);
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
        let entry = map.get(&dev.uid);
        // A known newcomer: whether or not the incumbent is still there, it is not taken for it.
        let known_newcomer = entry.is_some_and(|e| e.conflict.contains(&dev.kernel_name));
        // Looked at once: the incumbent may go between two looks (a loop device detached).
        let incumbent = entry
            .filter(|e| !known_newcomer && e.state == State::Active)
            .filter(|e| e.device.kernel_name != dev.kernel_name)
            .and_then(|e| look(&e.device.kernel_name))
            .filter(|o| o.uid == dev.uid);
        match incumbent {
            _ if known_newcomer => {}
            Some(incumbent) => {
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
            None => upsert(map, dev),
        }
    }
    // The incumbent of a settled conflict is a candidate again if its facts say so.
    for n in settled {
        let found = look(&n).filter(|d| map.get(&d.uid).is_some_and(|e| e.device.kernel_name == n));
        if let Some(d) = found {
            upsert(map, d);
        }
    }
}

/// Inserts or refreshes a seen device, keeping its claim and conflict.
fn upsert(map: &mut Map, device: Device) {
    let e = map.entry(device.uid.clone()).or_default();
    e.device = device;
    e.state = State::Active;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::device::DeviceType;

    fn dev(name: &str, number: &str, uid: &str) -> Device {
        let mut d = Device::fake(name, DeviceType::Disk);
        d.dev_number = number.into();
        d.uid = uid.into();
        d.candidate = true;
        d
    }

    fn claimed(map: &mut Map, uid: &str) {
        map.get_mut(uid).unwrap().claim = Claim::Claimed {
            volume: "v".into(),
            node: "n".into(),
        };
    }

    #[test]
    fn a_newcomer_with_the_claimed_uid_is_a_conflict_and_never_takes_the_claim() {
        let mut map = Map::new();
        place_all(&mut map, vec![dev("sdb", "8:16", "bd-w")]);
        claimed(&mut map, "bd-w");
        let sdb = dev("sdb", "8:16", "bd-w");
        let look = |n: &str| (n == "sdb").then(|| sdb.clone());
        place_one(&mut map, "sdc", Some(dev("sdc", "8:32", "bd-w")), look);
        let e = &map["bd-w"];
        assert_eq!(
            (e.device.kernel_name.as_str(), e.conflict.as_slice()),
            ("sdb", &["sdc".to_string()][..])
        );
        assert!(!e.device.candidate);

        // The incumbent leaves; the newcomer stays and is still not taken for it, neither
        // after its own uevent nor after a full scan.
        place_one(&mut map, "sdb", None, |_| None);
        place_one(&mut map, "sdc", Some(dev("sdc", "8:32", "bd-w")), |_| None);
        place_all(&mut map, vec![dev("sdc", "8:32", "bd-w")]);
        let e = &map["bd-w"];
        assert_eq!(e.device.kernel_name, "sdb");
        assert_eq!(e.state, State::Inactive);
        assert_eq!(e.conflict, ["sdc"]);

        // The newcomer goes away for good: the conflict is over.
        place_one(&mut map, "sdc", None, |_| None);
        assert!(map["bd-w"].conflict.is_empty());
    }

    #[test]
    fn a_full_scan_keeps_the_incumbent_of_a_claimed_uid_and_renumbering_still_moves_it() {
        let mut map = Map::new();
        place_all(&mut map, vec![dev("sdb", "8:16", "bd-w")]);
        claimed(&mut map, "bd-w");
        place_all(
            &mut map,
            vec![dev("sda", "8:0", "bd-w"), dev("sdb", "8:16", "bd-w")],
        );
        assert_eq!(map["bd-w"].device.kernel_name, "sdb");
        assert_eq!(map["bd-w"].conflict, ["sda"]);

        // No conflict: a device seen under a new name is the same disk renumbered.
        let mut map = Map::new();
        place_all(&mut map, vec![dev("sdb", "8:16", "bd-x")]);
        claimed(&mut map, "bd-x");
        place_one(&mut map, "sdb", None, |_| None);
        place_one(&mut map, "sdd", Some(dev("sdd", "8:48", "bd-x")), |_| None);
        let e = &map["bd-x"];
        assert_eq!(
            (e.device.kernel_name.as_str(), e.state),
            ("sdd", State::Active)
        );
    }

    #[test]
    fn an_incumbent_that_goes_while_a_newcomer_is_placed_is_no_panic() {
        let mut map = Map::new();
        place_all(&mut map, vec![dev("sdb", "8:16", "bd-w")]);
        claimed(&mut map, "bd-w");
        // The incumbent is there at the first look and gone at any later one.
        let looks = std::cell::Cell::new(0);
        let sdb = dev("sdb", "8:16", "bd-w");
        let look = |n: &str| {
            looks.set(looks.get() + 1);
            (n == "sdb" && looks.get() == 1).then(|| sdb.clone())
        };
        place_one(&mut map, "sdc", Some(dev("sdc", "8:32", "bd-w")), look);
        let e = &map["bd-w"];
        assert_eq!(
            e.device.kernel_name, "sdb",
            "the claim moved to the newcomer"
        );
        assert_eq!(e.conflict, ["sdc"]);
    }
}
