//! A driver started on state an earlier build wrote (root only, real loop devices) serves it:
//! every volume and snapshot is listed with its fields, a device volume it made is deleted
//! (its disk wiped after the identity proof) and a new one created on the freed disk, and a
//! hostpath snapshot it made restores; with hostpath pools configured, its ids still name its
//! volume and snapshot (in the pool `default`).
//!
//! `tests/fixtures/state-34f8f54.tar.gz` was written by `ferrovol serve --backends
//! hostpath,device` built at commit 34f8f54, node `test-node`, hostpath base on ext4 (copies):
//! two 32 MiB loop devices whose image files were removed once attached (their uids are
//! `loop:test-node:/tmp/ferrovol-fixture-pool/pool<N>.img (deleted):`), the device volumes
//! `dev-block` (raw block, on pool0) and `dev-fs` (ext4 planned, never staged, on pool1), the
//! 16 MiB hostpath volume `hp-src` holding `data.txt`, and its snapshot `hp-snap`; then
//! killed. It holds that build's journal (device claims in `devices.json`, without their
//! node), its `devices.json` and the hostpath base with its markers (xattrs; tar --xattrs).

use crate::common;
use crate::common::fake_sysfs;
use crate::common::loopdisks;

use common::*;
use fake_sysfs::FakeSysfs;
use ferrovol::cli::devices::read_inventory;
use ferrovol::discovery::Claim;
use ferrovol::os::blkid::probe_all;
use ferrovol::proto as csi;
use loopdisks::{image, run, Disk};
use std::collections::BTreeMap;
use std::path::Path;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/state-34f8f54.tar.gz"
);
const DATA: &[u8] = b"written by the old driver\n";

/// Shows `disk` in the test sysfs tree with the backing file the fixture's pool disk had, so
/// it presents that disk's identity.
fn present_as_pool(fake: &FakeSysfs, disk: &Disk, n: usize) {
    fake.add(&disk.dev, None);
    let name = disk.dev.file_name().unwrap();
    let real = std::fs::canonicalize(Path::new("/sys/class/block").join(name)).unwrap();
    let mine = fake.root().join(real.strip_prefix("/sys").unwrap());
    let loop_dir = mine.join("loop");
    std::fs::remove_file(&loop_dir).unwrap();
    std::fs::create_dir(&loop_dir).unwrap();
    for e in std::fs::read_dir(real.join("loop")).unwrap().flatten() {
        if e.file_name() != "backing_file" {
            std::os::unix::fs::symlink(e.path(), loop_dir.join(e.file_name())).unwrap();
        }
    }
    let old = format!("/tmp/ferrovol-fixture-pool/pool{n}.img (deleted)\n");
    std::fs::write(loop_dir.join("backing_file"), old).unwrap();
}

fn device_req(name: &str) -> csi::CreateVolumeRequest {
    let mut req = create_req(name, 0, block_cap());
    req.parameters.insert("backend".into(), "device".into());
    req
}

/// The claim each pool disk shows, by volume id (None: unclaimed).
fn claims(d: &Driver, pool: &[Disk]) -> Vec<Option<String>> {
    let inv = read_inventory(&d.state_dir()).unwrap();
    pool.iter()
        .map(|disk| {
            let e = inv.iter().find(|e| e.device.dev_path == disk.dev).unwrap();
            match &e.claim {
                Claim::Unclaimed => None,
                Claim::Claimed { volume, node } => {
                    assert_eq!(node, NODE);
                    Some(volume.clone())
                }
                other => panic!("{} is {other:?}\n{}", disk.path(), d.log()),
            }
        })
        .collect()
}

async fn listed(d: &Driver) -> BTreeMap<String, csi::Volume> {
    d.list_all()
        .await
        .into_iter()
        .map(|e| e.volume.unwrap())
        .map(|v| (v.volume_id.clone(), v))
        .collect()
}

#[tokio::test]
async fn a_driver_serves_the_state_an_earlier_build_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let pool: Vec<Disk> = (0..2)
        .map(|i| Disk::attach(&image(dir.path(), &format!("pool{i}.img"), 32)))
        .collect();
    let fake = FakeSysfs::new();
    for (n, disk) in pool.iter().enumerate() {
        present_as_pool(&fake, disk, n);
    }
    let scratch = Driver::builder();
    let root = scratch.path().to_string_lossy().into_owned();
    run(
        "tar",
        &[
            "--xattrs",
            "--xattrs-include=*",
            "-xzf",
            FIXTURE,
            "-C",
            &root,
        ],
    );
    let mut b = scratch
        .arg("--backends")
        .arg("hostpath,device")
        .env("FERROVOL_SYSFS_ROOT", fake.root());
    for disk in &pool {
        b = b.arg("--device-include").arg(disk.path());
    }
    let mut d = b.start().await;

    // Everything is listed, with the fields it was made with.
    let vols = listed(&d).await;
    let ids: Vec<&str> = vols.keys().map(String::as_str).collect();
    let (blk, fs) = ("device/test-node/dev-block", "device/test-node/dev-fs");
    assert_eq!(ids, [blk, fs, "hostpath/test-node/hp-src"], "{}", d.log());
    for (id, access, uid) in [
        (blk, "block", "bd-3bd7260f1e935dd87a780c51a42a3cd4"),
        (fs, "mount", "bd-ffb6ad06e32a3a41b1af80d5f135ccc7"),
    ] {
        let v = &vols[id];
        assert_eq!(v.capacity_bytes, 32 << 20, "{id}");
        let ctx = &v.volume_context;
        assert_eq!(ctx["ferrovol.io/access-type"], access, "{id}");
        assert_eq!(ctx["ferrovol.io/device-uid"], uid, "{id}");
    }
    assert_eq!(vols[fs].volume_context["ferrovol.io/fs-type"], "ext4");
    assert_eq!(vols["hostpath/test-node/hp-src"].capacity_bytes, 16 << 20);
    assert_eq!(claims(&d, &pool), [Some(blk.into()), Some(fs.into())]);
    // The claims moved into the journal; the inventory's file keeps what the scans saw.
    let file = std::fs::read_to_string(d.state_dir().join("devices.json")).unwrap();
    assert!(
        !file.contains("Claimed"),
        "devices.json holds claims:\n{file}"
    );
    let snaps = d
        .controller()
        .list_snapshots(csi::ListSnapshotsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    let snap = snaps[0].snapshot.clone().unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snap.snapshot_id, "hostpath/test-node/snap/hp-snap");
    assert_eq!(snap.source_volume_id, "hostpath/test-node/hp-src");
    assert_eq!(snap.size_bytes, 16 << 20);
    assert!(snap.ready_to_use && snap.creation_time.is_some());

    // The raw volume's pod wrote a filesystem; the delete wipes it and frees the disk.
    run("mkfs.ext4", &["-q", "-F", pool[0].path()]);
    d.delete(blk).await;
    assert!(probe_all(&pool[0].dev).unwrap().is_empty(), "wiped");
    assert_eq!(claims(&d, &pool), [None, Some(fs.into())]);
    let new = d
        .controller()
        .create_volume(device_req("dev-new"))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()))
        .into_inner()
        .volume
        .unwrap();
    let new_id = "device/test-node/dev-new";
    assert_eq!(new.volume_id, new_id);
    assert_eq!(claims(&d, &pool), [Some(new_id.into()), Some(fs.into())]);

    // The snapshot restores what the old driver's volume held.
    let mut req = create_req("hp-restored", 16 << 20, mount_cap());
    req.volume_content_source = Some(csi::VolumeContentSource {
        r#type: Some(csi::volume_content_source::Type::Snapshot(
            csi::volume_content_source::SnapshotSource {
                snapshot_id: snap.snapshot_id.clone(),
            },
        )),
    });
    d.controller()
        .create_volume(req)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    let restored = std::fs::read(d.volume_dir("hp-restored").join("data.txt")).unwrap();
    assert_eq!(restored, DATA);

    // What this driver wrote over the old state reads back after a restart.
    d.restart().await;
    let ids: Vec<String> = listed(&d).await.into_keys().collect();
    assert_eq!(
        ids,
        [
            fs,
            new_id,
            "hostpath/test-node/hp-restored",
            "hostpath/test-node/hp-src"
        ]
    );
    assert_eq!(claims(&d, &pool), [Some(new_id.into()), Some(fs.into())]);
    d.delete(new_id).await;
    d.delete(fs).await;
    assert_eq!(claims(&d, &pool), [None, None]);
}

/// With pools configured, the ids the earlier build issued (before pools existed) still name
/// their volume and snapshot, in the pool `default`: listed, read, restored from, deleted; a
/// new volume of the old name in another pool is refused.
#[tokio::test]
async fn ids_issued_before_pools_existed_stay_valid_in_the_default_pool() {
    let scratch = Driver::builder();
    let root = scratch.path().to_path_buf();
    run(
        "tar",
        &[
            "--xattrs",
            "--xattrs-include=*",
            "-xzf",
            FIXTURE,
            "-C",
            root.to_str().unwrap(),
        ],
    );
    let fast = root.join("disk-fast");
    std::fs::create_dir(&fast).unwrap();
    let d = scratch
        .arg("--hostpath-pool")
        .arg(format!("fast={}", fast.display()))
        .start()
        .await;
    let (vol, snap) = (
        "hostpath/test-node/hp-src",
        "hostpath/test-node/snap/hp-snap",
    );
    let ids: Vec<String> = listed(&d).await.into_keys().collect();
    assert_eq!(ids, [vol], "{}", d.log());
    let got = d.get(vol).await.volume.unwrap();
    assert_eq!(
        got.volume_context["ferrovol.io/path"],
        path_str(&d.volume_dir("hp-src"))
    );
    let mut c = d.controller();
    let mut again = create_req("hp-src", 16 << 20, mount_cap());
    again.parameters.insert("pool".into(), "fast".into());
    let s = c.create_volume(again).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::AlreadyExists, "{s:?}");

    let mut req = create_req("hp-restored", 16 << 20, mount_cap());
    req.volume_content_source = Some(csi::VolumeContentSource {
        r#type: Some(csi::volume_content_source::Type::Snapshot(
            csi::volume_content_source::SnapshotSource {
                snapshot_id: snap.into(),
            },
        )),
    });
    c.create_volume(req)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    let restored = std::fs::read(d.volume_dir("hp-restored").join("data.txt")).unwrap();
    assert_eq!(restored, DATA);
    c.delete_snapshot(csi::DeleteSnapshotRequest {
        snapshot_id: snap.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    d.delete(vol).await;
    d.delete("hostpath/test-node/hp-restored").await;
    assert!(!d.volume_dir("hp-src").exists());
    assert_eq!(
        std::fs::read_dir(&fast).unwrap().count(),
        0,
        "nothing in pool fast"
    );
}
