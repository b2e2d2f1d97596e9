//! What the device backend does at start with records it cannot trust (root only, real loop
//! devices, the backend opened in this process on a journal the test writes): two records
//! naming one device, and a `Deleting` record in a damaged journal, never lead to a wipe.

use crate::common::disks;

use disks::{image, Disk};
use ferrovol::backend::device::{DeviceBackend, DeviceData, OurFs, VolumeRecord, BACKEND};
use ferrovol::discovery::{Filters, Inventory};
use ferrovol::os::blkid::probe_all;
use ferrovol::state::{Journal, Ledger, Phase};
use ferrovol::volume::{AccessKind, VolumeId};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

const NODE: &str = "n1";
const AT: u64 = 1 << 20;
const LIVE: &[u8] = b"live data of volume w";

fn filters(disk: &Disk) -> Filters {
    Filters::for_node(&[disk.path().to_string()], &[], None, &[], None).unwrap()
}

/// A raw block volume `name` on the device `disk` in `phase`, as a create would record it.
fn raw_record(state: &Path, disk: &Disk, name: &str, phase: Phase) -> VolumeRecord {
    let inv = Inventory::open_with_claims(state, NODE, filters(disk), Ok).unwrap();
    let e = inv
        .snapshot()
        .into_iter()
        .find(|e| e.device.dev_path == disk.dev)
        .expect("the disk is in the inventory");
    let id = VolumeId::for_volume(BACKEND, NODE, name)
        .unwrap()
        .to_string();
    let size = e.device.size_bytes;
    let data = DeviceData {
        uid: e.device.uid.clone(),
        device_size: size,
        ..Default::default()
    };
    let mut rec = VolumeRecord::new(id, name.into(), AccessKind::Block, size, data);
    rec.phase = phase;
    rec
}

fn journal(state: &Path) -> (Arc<Journal>, std::collections::HashMap<String, Vec<u8>>) {
    Journal::open(&state.join("journal")).unwrap()
}

fn commit(state: &Path, recs: &[VolumeRecord], damaged: bool) {
    let (j, live) = journal(state);
    let ledger: Ledger<VolumeRecord> =
        Ledger::open_counted(j.clone(), BACKEND, BACKEND, &live).unwrap();
    for r in recs {
        ledger.save(r.clone()).unwrap();
    }
    if damaged {
        let lost = "a batch of this journal was lost (test)".to_string();
        j.mark_damaged(j.next_seq(), vec![lost]).unwrap();
    }
}

/// Opens the backend as a start does; returns the names it still has records of.
fn start(state: &Path, disk: &Disk) -> Vec<String> {
    let (j, live) = journal(state);
    let backend = DeviceBackend::open(NODE.into(), state, filters(disk), j, &live, false).unwrap();
    drop(backend);
    let (j, live) = journal(state);
    let ledger: Ledger<VolumeRecord> = Ledger::open_counted(j, BACKEND, BACKEND, &live).unwrap();
    ledger.records().into_iter().map(|r| r.name).collect()
}

fn write_live(disk: &Disk) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&disk.dev)
        .unwrap();
    f.seek(SeekFrom::Start(AT)).unwrap();
    f.write_all(LIVE).unwrap();
    f.sync_all().unwrap();
}

fn read_live(disk: &Disk) -> Vec<u8> {
    let mut f = std::fs::File::open(&disk.dev).unwrap();
    f.seek(SeekFrom::Start(AT)).unwrap();
    let mut buf = vec![0; LIVE.len()];
    f.read_exact(&mut buf).unwrap();
    buf
}

/// Starts the backend several times (the order the records are read in varies) on records
/// `recs` of two volumes on one device holding w's data; fails naming every start that wiped
/// the data or dropped a record. A dropped record is committed again for the next start.
fn contested_starts(state: &Path, disk: &Disk, recs: &[VolumeRecord], damaged: bool) {
    commit(state, recs, damaged);
    write_live(disk);
    let mut failed = Vec::new();
    for run in 0..8 {
        let names = start(state, disk);
        if read_live(disk) != LIVE {
            failed.push(format!("start {run} wiped w's data"));
            write_live(disk);
        }
        if names.len() != 2 {
            failed.push(format!("start {run} left only the records {names:?}"));
            commit(state, recs, false);
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// Raw volume v was deleted and its device given to raw volume w; the batch that removed v's
/// record is lost. At every start both records claim the device: neither may be wiped for, and
/// both records stay until an operator settles whose it is.
#[test]
fn two_records_on_one_device_never_wipe_it() {
    raw_v_deleting_and_w_ready_on_one_device(true);
}

/// The same without journal damage: two records on one device are never settled by a wipe.
#[test]
fn two_records_on_one_device_in_an_intact_journal_never_wipe_it() {
    raw_v_deleting_and_w_ready_on_one_device(false);
}

/// Raw v `Deleting` and raw w `Ready` on one device, started repeatedly (`damaged`: with the
/// journal's damage recorded).
fn raw_v_deleting_and_w_ready_on_one_device(damaged: bool) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let disk = Disk::attach(&image(dir.path(), "u.img", 64));
    let v = raw_record(&state, &disk, "v", Phase::Deleting);
    let w = raw_record(&state, &disk, "w", Phase::Ready);
    contested_starts(&state, &disk, &[v, w], damaged);
}

/// A raw volume `Deleting` in a damaged journal: the lost batches may have finished its delete
/// and given the device to a volume whose record is lost too, so the claim proves nothing and
/// the start does not wipe; the record stays.
#[test]
fn a_raw_delete_in_a_damaged_journal_is_not_finished_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let disk = Disk::attach(&image(dir.path(), "u.img", 64));
    let v = raw_record(&state, &disk, "v", Phase::Deleting);
    commit(&state, &[v], true);
    write_live(&disk);
    let names = start(&state, &disk);
    assert_eq!(read_live(&disk), LIVE, "the start wiped the device");
    assert_eq!(names, ["v"], "the record stays");
}

/// Without damage the start finishes the same delete: the raw device is wiped and released.
#[test]
fn a_raw_delete_in_an_intact_journal_is_finished_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let disk = Disk::attach(&image(dir.path(), "u.img", 64));
    let v = raw_record(&state, &disk, "v", Phase::Deleting);
    commit(&state, &[v], false);
    write_live(&disk);
    let names = start(&state, &disk);
    assert_ne!(read_live(&disk), LIVE, "the raw device is wiped");
    assert!(names.is_empty(), "{names:?}");
}

/// A filesystem volume `Deleting` in a damaged journal: the device's content proves whose it
/// is. Its own filesystem (the UUID its record holds) is wiped and the delete finished; another
/// filesystem is left as it is, with the record.
#[test]
fn a_filesystem_delete_in_a_damaged_journal_goes_by_the_device_content() {
    const OURS: &str = "0b7d1e2a-57c5-4a55-9c8e-3f3a1d6b9e01";
    const OTHER: &str = "6c1f0f0e-2b7b-4f7e-8f55-7b0b1c2d3e4f";
    for (on_disk, finished) in [(OURS, true), (OTHER, false)] {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let disk = Disk::attach(&image(dir.path(), "u.img", 64));
        disks::run("mkfs.ext4", &["-q", "-F", "-U", on_disk, disk.path()]);
        let mut v = raw_record(&state, &disk, "v", Phase::Deleting);
        v.kind = AccessKind::Mount;
        v.backend.fs = Some(OurFs {
            fs_type: "ext4".into(),
            uuid: OURS.into(),
            offsets: Vec::new(),
        });
        commit(&state, &[v], true);
        let names = start(&state, &disk);
        let uuids: Vec<Option<String>> = probe_all(&disk.dev)
            .unwrap()
            .into_iter()
            .map(|s| s.uuid)
            .collect();
        if finished {
            assert!(names.is_empty() && uuids.is_empty(), "{names:?} {uuids:?}");
        } else {
            assert_eq!(names, ["v"], "the record stays");
            assert_eq!(
                uuids,
                [Some(OTHER.to_string())],
                "the other filesystem stays"
            );
        }
    }
}

/// In a cluster, a blank device may be a volume's whose claim only its BlockDevice object
/// remembers (the node's state dir lost): until the first sync merged those claims, a create
/// takes no device.
#[test]
fn a_create_waits_until_the_inventory_is_reconciled_with_the_cluster() {
    use ferrovol::backend::local::LocalVolumes;
    use ferrovol::volume::{AccessMode, Capability, CreateRequest};
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let disk = Disk::attach(&image(dir.path(), "u.img", 64));
    let (j, live) = journal(&state);
    let backend =
        DeviceBackend::open(NODE.into(), &state, filters(&disk), j, &live, false).unwrap();
    let req = CreateRequest {
        name: "v".into(),
        capacity: Default::default(),
        capabilities: vec![Capability {
            kind: AccessKind::Block,
            mode: AccessMode::SingleNodeWriter,
            fs_type: String::new(),
            mount_flags: Vec::new(),
        }],
        parameters: Default::default(),
        topology: None,
        content_source: None,
    };
    backend.inventory().await_reconcile();
    let err = backend.create_volume(&req).err().expect("held back");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert!(err.to_string().contains("not yet reconciled"), "{err}");
    backend.inventory().mark_reconciled();
    let made = backend
        .create_volume(&req)
        .expect("given out once reconciled");
    assert!(matches!(made, ferrovol::backend::Done::Now(_)));
}
