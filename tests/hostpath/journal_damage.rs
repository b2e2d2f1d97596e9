//! A damaged or outdated state journal must never turn into deletion. A flipped byte in an
//! acknowledged frame, or a state dir restored from an old backup, leaves directories that no
//! intact record explains: the driver keeps them, serves what its records still prove, and says
//! what it could not explain.

use crate::common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};

const NAMES: [&str; 3] = ["first", "second", "third"];

async fn create_with_file(d: &Driver, name: &str) -> String {
    let id = d.create(name, 4 * MIB, mount_cap()).await.volume_id;
    fs::write(d.volume_dir(name).join("data"), name.as_bytes()).unwrap();
    id
}

fn assert_data_kept(d: &Driver, names: &[&str]) {
    for name in names {
        let file = d.volume_dir(name).join("data");
        assert_eq!(
            fs::read(&file).ok().as_deref(),
            Some(name.as_bytes()),
            "{} lost its data\n--- driver log ---\n{}",
            file.display(),
            d.log()
        );
    }
}

fn copy_tree(from: &Path, to: &Path) {
    let ok = status(std::process::Command::new("cp").arg("-a").arg(from).arg(to))
        .expect("run cp")
        .success();
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

/// Flips a byte in the payload (after its length and CRC, 8 bytes) of the first frame of the
/// stopped driver's journal whose record key starts with `key`.
fn flip_a_byte_of_record(d: &Driver, key: &str) {
    let log = d.state_dir().join("journal/journal.0.log");
    let mut bytes = fs::read(&log).unwrap();
    let frame = record_frame(&bytes, key);
    bytes[frame + 8 + 12] ^= 0x20;
    fs::write(&log, &bytes).unwrap();
}

/// A driver with volume "old" (id returned), restarted after its journal was copied into the
/// returned backup directory.
async fn driver_with_backup() -> (Driver, String, PathBuf) {
    let mut d = Driver::start().await;
    let old = create_with_file(&d, "old").await;
    d.kill9();
    let backup = d.root().join("backup");
    fs::create_dir(&backup).unwrap();
    copy_tree(&d.state_dir().join("journal"), &backup);

    d.restart().await;
    (d, old, backup)
}

#[tokio::test]
async fn a_flipped_byte_in_the_first_frame_deletes_no_volume() {
    let mut d = Driver::start().await;
    let mut ids = Vec::new();
    for name in NAMES {
        ids.push(create_with_file(&d, name).await);
    }
    d.kill9();
    // The first frame that holds a record: the first volume's.
    flip_a_byte_of_record(&d, "hostpath/first");

    d.restart().await;
    assert_data_kept(&d, &NAMES);
    assert!(
        d.log().contains("state journal is damaged"),
        "the damage is not reported:\n{}",
        d.log()
    );
    // The volumes whose records are intact are served as before.
    for id in &ids[1..] {
        d.get(id).await;
    }
    // A create of the name whose record was lost does not clear its directory away.
    let refused = d
        .controller()
        .create_volume(create_req(NAMES[0], 4 * MIB, mount_cap()))
        .await
        .expect_err("a create over a directory the journal may have lost");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert_data_kept(&d, &NAMES);
    // The next start still keeps the directory the lost frame explained.
    d.restart().await;
    assert_data_kept(&d, &NAMES);
}

#[tokio::test]
async fn a_state_dir_restored_from_an_old_backup_deletes_no_volume() {
    let (mut d, old, backup) = driver_with_backup().await;
    for name in NAMES {
        create_with_file(&d, name).await;
    }
    assert_behind_is_kept(&mut d, &backup, &old).await;
}

#[tokio::test]
async fn a_backup_missing_a_single_create_deletes_no_volume() {
    let (mut d, old, backup) = driver_with_backup().await;
    create_with_file(&d, NAMES[0]).await;
    create_with_file(&d, NAMES[1]).await;
    d.delete(&d.volume_id(NAMES[1])).await;
    assert_behind_is_kept_for(&mut d, &backup, &old, &NAMES[..1]).await;
}

/// Stops the driver, puts the backup's journal back, starts it again: every volume made since
/// the backup keeps its data, the one in the backup is served, and the driver says why.
async fn assert_behind_is_kept(d: &mut Driver, backup: &Path, old: &str) {
    assert_behind_is_kept_for(d, backup, old, &NAMES).await
}

async fn assert_behind_is_kept_for(d: &mut Driver, backup: &Path, old: &str, names: &[&str]) {
    d.kill9();
    fs::remove_dir_all(d.state_dir().join("journal")).unwrap();
    copy_tree(&backup.join("journal"), &d.state_dir());

    d.restart().await;
    assert_data_kept(d, &["old"]);
    assert_data_kept(d, names);
    assert!(
        d.log().contains("state journal is behind"),
        "the outdated journal is not reported:\n{}",
        d.log()
    );
    d.get(old).await;
    d.restart().await;
    assert_data_kept(d, names);
}

/// Where the first frame of a log whose record key starts with `key` begins (a frame is
/// `len u32 | crc u32 | op u8 | key len u32 | key | value`; a zero length ends them).
fn record_frame(bytes: &[u8], key: &str) -> usize {
    let mut pos = 0;
    loop {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        assert!(len != 0, "no frame of {key} in the log");
        let key_len = u32::from_le_bytes(bytes[pos + 9..pos + 13].try_into().unwrap()) as usize;
        if bytes[pos + 13..pos + 13 + key_len].starts_with(key.as_bytes()) {
            return pos;
        }
        pos += 8 + len;
    }
}

#[tokio::test]
async fn a_flipped_byte_in_a_snapshots_frame_deletes_no_snapshot() {
    let mut d = Driver::start().await;
    let src = create_with_file(&d, "src").await;
    let snap = d
        .controller()
        .create_snapshot(ferrovol::proto::CreateSnapshotRequest {
            name: "snap".into(),
            source_volume_id: src.clone(),
            ..Default::default()
        })
        .await
        .expect("CreateSnapshot")
        .into_inner()
        .snapshot
        .expect("a snapshot");
    let snapshots = d.base().join(".snapshots");
    let before: Vec<_> = fs::read_dir(&snapshots)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(before.len(), 1, "{before:?}");
    d.kill9();
    // The snapshot's record.
    flip_a_byte_of_record(&d, "hostpath-snap/");

    d.restart().await;
    assert!(
        before[0].join("data/data").exists(),
        "the snapshot {} lost its content\n--- driver log ---\n{}",
        snap.snapshot_id,
        d.log()
    );
    assert_data_kept(&d, &["src"]);
}
