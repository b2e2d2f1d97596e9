use super::*;
use crate::backend::device::claims::{from_records, release_update};
use crate::backend::device::{DeviceData, VolumeRecord, BACKEND};
use crate::discovery::{Claims, Device, DeviceType, Entry, Inventory, State};
use crate::error::Error;
use crate::state::{Journal, Ledger};
use crate::volume::AccessKind;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tonic::Code;

const V: &str = "device/n1/v";

fn released(volume: &str, node: &str) -> Claim {
    Claim::Released {
        volume: volume.into(),
        reason: "device holds ext4 (uuid x), not only the filesystem this volume made; not wiped"
            .into(),
        node: node.into(),
    }
}

/// An Active, blank, selected device `uid` showing `claim`, under a name no kernel device has.
fn entry(uid: &str, claim: Claim) -> Entry {
    let mut device = Device::fake(&format!("vdz{uid}"), DeviceType::Disk);
    (device.uid, device.candidate, device.selected) = (uid.into(), true, true);
    Entry {
        device,
        state: State::Active,
        claim,
        conflict: Vec::new(),
    }
}

/// A backend on node n1 over a journal in `dir` holding the release of every entry of
/// `entries` that shows one of n1, and an inventory of `entries` that never scanned.
fn backend(dir: &Path, entries: Vec<Entry>) -> DeviceBackend {
    let (journal, live) = Journal::open(&dir.join("state")).unwrap();
    let ledger = Ledger::open_counted(journal, BACKEND, BACKEND, &live).unwrap();
    let releases = entries
        .iter()
        .filter(|e| matches!(&e.claim, Claim::Released { node, .. } if node == "n1"))
        .map(|e| release_update(&e.device.uid, &e.claim).unwrap());
    ledger.journal().commit(releases.collect()).unwrap();
    let file = dir.join("devices.json");
    let inventory = Arc::new(Inventory::fake(file, "n1", entries));
    DeviceBackend {
        node: "n1".into(),
        inventory,
        ledger,
        claiming: Mutex::new(()),
    }
}

fn clear(b: &DeviceBackend, uid: &str, volume: &str) -> Result<Cleared> {
    b.clear_released(&ClearReleased {
        device_uid: uid.into(),
        volume: volume.into(),
    })
}

/// The claims on n1 the journal in `dir` holds, as a start reads them.
fn journal_claims(dir: &Path) -> Claims {
    let (_j, live) = Journal::open(&dir.join("state")).unwrap();
    from_records(&live, "n1").unwrap()
}

fn record(name: &str, uid: &str) -> VolumeRecord {
    let data = DeviceData {
        uid: uid.into(),
        ..Default::default()
    };
    let id = format!("device/n1/{name}");
    VolumeRecord::new(id, name.into(), AccessKind::Block, 1 << 30, data)
}

fn refused(result: Result<Cleared>) -> String {
    match result {
        Err(e) if e.code() == Code::FailedPrecondition => e.to_string(),
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn a_released_device_is_cleared_by_one_commit_and_a_repeat_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path(), vec![entry("bd-1", released(V, "n1"))]);
    assert!(journal_claims(dir.path()).contains_key("bd-1"));

    match clear(&b, "bd-1", V).expect("cleared") {
        Cleared::Cleared { reason, .. } => assert!(reason.contains("not wiped"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(b.inventory.get("bd-1").unwrap().claim, Claim::Unclaimed);
    assert!(
        !journal_claims(dir.path()).contains_key("bd-1"),
        "the release is gone from the journal"
    );
    // Unclaimed already: nothing to do, and nothing committed.
    assert!(matches!(
        clear(&b, "bd-1", V),
        Ok(Cleared::AlreadyUnclaimed { .. })
    ));
    assert_eq!(b.inventory.get("bd-1").unwrap().claim, Claim::Unclaimed);
}

#[test]
fn a_clear_naming_another_volume_is_refused_with_what_the_claim_says() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path(), vec![entry("bd-1", released(V, "n1"))]);
    let why = refused(clear(&b, "bd-1", "device/n1/other"));
    assert!(
        why.contains("bd-1") && why.contains(V) && why.contains("device/n1/other"),
        "{why}"
    );
    assert!(why.contains("not wiped"), "the claim's reason: {why}");
    assert_eq!(b.inventory.get("bd-1").unwrap().claim, released(V, "n1"));
    assert!(journal_claims(dir.path()).contains_key("bd-1"), "kept");
}

#[test]
fn a_device_a_record_names_is_never_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let claimed = Claim::Claimed {
        volume: "device/n1/w".into(),
        node: "n1".into(),
    };
    let contested = released("device/n1/x", "n1");
    let b = backend(
        dir.path(),
        vec![
            entry("bd-w", claimed.clone()),
            entry("bd-x", Claim::Unclaimed),
        ],
    );
    b.ledger.save(record("w", "bd-w")).unwrap();
    let why = refused(clear(&b, "bd-w", "device/n1/w"));
    assert!(
        why.contains("bd-w") && why.contains("claimed by volume device/n1/w"),
        "{why}"
    );
    assert_eq!(b.inventory.get("bd-w").unwrap().claim, claimed);

    // Two records name bd-x: whose it is cannot be told.
    b.ledger.save(record("x", "bd-x")).unwrap();
    b.ledger.save(record("y", "bd-x")).unwrap();
    b.inventory.set_claim("bd-x", contested.clone()).unwrap();
    let why = refused(clear(&b, "bd-x", "device/n1/x"));
    assert!(
        why.contains("device/n1/x") && why.contains("device/n1/y"),
        "{why}"
    );
    assert_eq!(b.inventory.get("bd-x").unwrap().claim, contested);
    assert_eq!(b.ledger.records().len(), 3, "every record is kept");
}

#[test]
fn a_hold_only_a_blockdevice_object_remembers_is_cleared_there() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path(), vec![entry("bd-1", Claim::Unclaimed)]);
    let reason = crate::discovery::sync::remembered_reason(V);
    let hold = Claim::Released {
        volume: V.into(),
        reason,
        node: "n1".into(),
    };
    b.inventory
        .set_remembered_claims(&Claims::from([("bd-1".into(), hold.clone())]));
    assert_eq!(b.inventory.get("bd-1").unwrap().claim, hold);
    let why = refused(clear(&b, "bd-1", V));
    assert!(
        why.contains("BlockDevice") && why.contains("bd-1") && why.contains(V),
        "{why}"
    );
    assert_eq!(b.inventory.get("bd-1").unwrap().claim, hold);
}

#[test]
fn a_claim_of_another_node_or_a_device_gone_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut gone = entry("bd-gone", released(V, "n1"));
    gone.state = State::Inactive;
    let b = backend(
        dir.path(),
        vec![entry("bd-n2", released(V, "n2")), gone.clone()],
    );
    let why = refused(clear(&b, "bd-n2", V));
    assert!(why.contains("node n2"), "{why}");
    let why = refused(clear(&b, "bd-gone", V));
    assert!(why.contains("gone"), "{why}");
    assert_eq!(b.inventory.get("bd-gone").unwrap().claim, gone.claim);
    assert!(journal_claims(dir.path()).contains_key("bd-gone"));
}

#[test]
fn an_unknown_device_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path(), vec![entry("bd-1", released(V, "n1"))]);
    let e = clear(&b, "bd-0000", V).expect_err("unknown");
    assert_eq!(e.code(), Code::NotFound, "{e}");
    assert!(matches!(e, Error::DeviceNotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("bd-0000"), "{e}");
}
