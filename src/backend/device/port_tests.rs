use super::*;
use crate::backend::device::claims::from_records;
use crate::backend::device::proof::Fingerprint;
use crate::backend::device::{DeviceData, OurFs, BACKEND};
use crate::backend::local::LocalVolumes;
use crate::backend::CapacityRequest;
use crate::discovery::{Claim, DeviceType, Inventory, State};
use crate::error::Error;
use crate::state::{Journal, Ledger, Phase};
use crate::volume::{AccessMode, Capability, CapacityRange, CreateRequest};
use std::path::Path;
use std::sync::{Arc, Mutex};

fn entry(name: &str, serial: Option<&str>) -> Entry {
    let mut device = Device::fake(name, DeviceType::Disk);
    device.serial = serial.map(Into::into);
    device.uid = name.into();
    Entry {
        device,
        ..Default::default()
    }
}

fn rec(kind: AccessKind) -> VolumeRecord {
    let fs = (kind == AccessKind::Mount).then(|| OurFs {
        fs_type: "ext4".into(),
        uuid: "u".into(),
        offsets: vec![1080],
    });
    let data = DeviceData {
        uid: "bd-1".into(),
        fs,
        ..Default::default()
    };
    VolumeRecord::new("device/n/v".into(), "v".into(), kind, 1 << 30, data)
}

#[test]
fn a_raw_volume_is_never_placed_on_a_device_identified_by_its_port() {
    let found = || {
        vec![
            entry("vda", None),
            entry("sdb", Some("S1")),
            entry("vdc", None),
        ]
    };
    let names =
        |es: &[Entry]| -> Vec<String> { es.iter().map(|e| e.device.kernel_name.clone()).collect() };
    let (block, passed) = placeable(AccessKind::Block, found());
    assert_eq!((names(&block), passed), (vec!["sdb".to_string()], 2));
    let (mount, passed) = placeable(AccessKind::Mount, found());
    assert_eq!((names(&mount).len(), passed), (3, 0));
    let why = passed_over(2);
    assert!(
        why.contains("2 ") && why.contains("port") && why.contains("raw block"),
        "{why}"
    );
    assert_eq!(passed_over(0), "");
}

#[test]
fn a_raw_volume_on_a_port_identified_device_is_released_unwiped() {
    let port = entry("vda", None).device;
    let serial = entry("sdb", Some("S1")).device;
    let why = unprovable(&rec(AccessKind::Block), &port).expect("not provable");
    assert!(
        why.contains("device/n/v") && why.contains("port") && why.contains("not wiped"),
        "{why}"
    );
    assert_eq!(unprovable(&rec(AccessKind::Block), &serial), None);
    // A filesystem volume proves its device by the UUID it drew.
    assert_eq!(unprovable(&rec(AccessKind::Mount), &port), None);
    // Staged and published still, with a warning.
    let risk = stage_risk(&rec(AccessKind::Block), &port).expect("a risk");
    assert!(
        risk.contains("device/n/v") && risk.contains("port"),
        "{risk}"
    );
    assert_eq!(stage_risk(&rec(AccessKind::Block), &serial), None);
    assert_eq!(stage_risk(&rec(AccessKind::Mount), &port), None);
}

/// A backend on node n1 over a journal in `dir` and an inventory of `entries` that never
/// scanned (a rescan finds none of them: their names are not the kernel's).
fn backend(dir: &Path, entries: Vec<Entry>) -> DeviceBackend {
    let (journal, live) = Journal::open(&dir.join("state")).unwrap();
    let ledger = Ledger::open_counted(journal, BACKEND, BACKEND, &live).unwrap();
    let file = dir.join("devices.json");
    let inventory = Arc::new(Inventory::fake(file, "n1", entries));
    DeviceBackend {
        node: "n1".into(),
        inventory,
        ledger,
        claiming: Mutex::new(()),
    }
}

/// A blank, selected candidate known only by its port, under a name no kernel device has.
fn port_candidate() -> Entry {
    let mut e = entry("vdzz", None);
    (e.device.uid, e.device.candidate, e.device.selected) = ("bd-port".into(), true, true);
    e.state = State::Active;
    e
}

fn cap(kind: AccessKind) -> Capability {
    Capability {
        kind,
        mode: AccessMode::SingleNodeWriter,
        fs_type: String::new(),
        mount_flags: Vec::new(),
    }
}

#[test]
fn create_and_capacity_leave_port_identified_devices_to_filesystem_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path(), vec![port_candidate()]);
    let req = CreateRequest {
        name: "raw".into(),
        capacity: CapacityRange::default(),
        capabilities: vec![cap(AccessKind::Block)],
        parameters: Default::default(),
        topology: None,
        content_source: None,
    };
    match b.create_volume(&req) {
        Err(Error::NoSpace { detail, .. }) => assert!(
            detail.contains("1 device(s)") && detail.contains("only their port"),
            "{detail}"
        ),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("a raw volume was placed on a port-identified device"),
    }
    assert!(b.ledger.records().is_empty(), "nothing claimed");
    assert_eq!(b.inventory.get("bd-port").unwrap().claim, Claim::Unclaimed);
    let capacity = |caps: Vec<Capability>| {
        let req = CapacityRequest {
            parameters: Default::default(),
            capabilities: caps,
            topology: None,
        };
        b.capacity_for(&req).unwrap().available
    };
    assert_eq!(capacity(vec![cap(AccessKind::Block)]), 0);
    assert_eq!(capacity(vec![cap(AccessKind::Mount)]), 1 << 30);
    assert_eq!(capacity(Vec::new()), 1 << 30);
}

#[test]
fn deleting_a_raw_volume_on_a_port_identified_device_releases_it_unwiped() {
    let dir = tempfile::tempdir().unwrap();
    // A block node of a number no driver serves (major 240 is for local use): the delete may
    // stat it as the device's node; an open, which any write needs, fails.
    let node = dir.path().join("vdzz");
    use rustix::fs::{self as rfs, FileType, Mode};
    let made = rfs::mknodat(
        rfs::CWD,
        &node,
        FileType::BlockDevice,
        Mode::from_raw_mode(0o600),
        rfs::makedev(240, 7),
    );
    if let Err(e) = made {
        eprintln!("skipped: mknod needs CAP_MKNOD: {e}");
        return;
    }
    let mut rec = rec(AccessKind::Block);
    (rec.backend.uid, rec.backend.device_size) = ("bd-port".into(), 1 << 30);
    rec.backend.claimed_as = Some(Fingerprint {
        dev_number: "240:7".into(),
        loop_backing: None,
    });
    rec.phase = Phase::Deleting;
    let mut e = port_candidate();
    (e.device.dev_path, e.device.dev_number) = (node.clone(), "240:7".into());
    e.device.candidate = false;
    e.claim = Claim::Claimed {
        volume: rec.id.clone(),
        node: "n1".into(),
    };
    let b = backend(dir.path(), vec![e]);
    b.ledger.save(rec.clone()).unwrap();

    b.finish_delete(&rec).expect("released");
    assert!(b.ledger.get("v").is_none(), "the record is gone");
    let shown = b.inventory.get("bd-port").unwrap().claim;
    drop(b);
    let (_j, live) = Journal::open(&dir.path().join("state")).unwrap();
    let kept = from_records(&live, "n1").unwrap().remove("bd-port");
    assert_eq!(kept.as_ref(), Some(&shown), "committed as shown");
    match kept {
        Some(Claim::Released { volume, reason, .. }) => {
            assert_eq!(volume, rec.id);
            assert!(
                reason.contains(&rec.id) && reason.contains("only its port"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
}
