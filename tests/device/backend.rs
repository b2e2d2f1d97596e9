//! The device backend through real gRPC, on real loop devices named by --device-include (root
//! only): format once, keep data across stages, wipe only what we made, release a device that
//! shows someone else's filesystem, and recover from kill -9 at every step of claim, format and
//! release.

use crate::common;
use crate::common::disks;

use common::*;
use disks::{image, run, Disk};
use ferrovol::cli::devices::read_inventory;
use ferrovol::discovery::{Claim, Entry};
use ferrovol::os::blkid::probe_all;
use ferrovol::proto as csi;
use std::collections::BTreeMap;
use std::path::Path;
use tonic::Code;

const MIB: i64 = 1 << 20;

/// Blank loop devices of the given sizes (MiB), in a temp dir that outlives them.
fn disks(sizes: &[u64]) -> (tempfile::TempDir, Vec<Disk>) {
    let dir = tempfile::tempdir().unwrap();
    let disks = sizes
        .iter()
        .enumerate()
        .map(|(i, s)| Disk::attach(&image(dir.path(), &format!("d{i}.img"), *s)))
        .collect();
    (dir, disks)
}

async fn driver_for(disks: &[&Disk], crash_at: Option<&str>) -> Driver {
    let mut b = Driver::builder().arg("--backends").arg("device");
    for d in disks {
        b = b.arg("--device-include").arg(d.path());
    }
    if let Some(p) = crash_at {
        b = b.crash_at(p);
    }
    b.start().await
}

fn params(fs: Option<&str>) -> BTreeMap<String, String> {
    let mut p = BTreeMap::from([("backend".to_string(), "device".to_string())]);
    if let Some(fs) = fs {
        p.insert("fsType".into(), fs.into());
    }
    p
}

fn create_req_dev(name: &str, bytes: i64, cap: csi::VolumeCapability) -> csi::CreateVolumeRequest {
    let fs = matches!(
        cap.access_type,
        Some(csi::volume_capability::AccessType::Mount(_))
    )
    .then_some("ext4");
    csi::CreateVolumeRequest {
        parameters: params(fs).into_iter().collect(),
        ..create_req(name, bytes, cap)
    }
}

async fn create(d: &Driver, name: &str, bytes: i64, cap: csi::VolumeCapability) -> csi::Volume {
    d.controller()
        .create_volume(create_req_dev(name, bytes, cap))
        .await
        .unwrap_or_else(|e| panic!("CreateVolume {name}: {e}\n{}", d.log()))
        .into_inner()
        .volume
        .unwrap()
}

fn inventory(d: &Driver) -> Vec<Entry> {
    read_inventory(&d.state_dir()).expect("read inventory")
}

fn claim_of(d: &Driver, disk: &Disk) -> Claim {
    inventory(d)
        .into_iter()
        .find(|e| e.device.backing_file.as_deref() == Some(disk.image.as_path()))
        .unwrap_or_else(|| panic!("{} not in the inventory", disk.path()))
        .claim
}

fn uuid_on(dev: &Path) -> Option<String> {
    let sigs = probe_all(dev).unwrap();
    assert!(sigs.len() <= 1, "{sigs:?}");
    sigs.first().and_then(|s| s.uuid.clone())
}

async fn capacity(d: &Driver) -> (i64, i64) {
    let r = d
        .controller()
        .get_capacity(csi::GetCapacityRequest {
            parameters: params(None).into_iter().collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    (
        r.available_capacity,
        r.maximum_volume_size.unwrap_or_default(),
    )
}

#[tokio::test]
async fn mount_volume_formats_once_keeps_data_and_wipes_only_ours() {
    let (_dir, disks) = disks(&[96, 64]);
    let d = driver_for(&[&disks[0], &disks[1]], None).await;
    assert_eq!(capacity(&d).await, (160 * MIB, 96 * MIB));

    // The smallest device that fits is claimed; the capacity is the whole device.
    let vol = create(&d, "v1", 40 * MIB, mount_cap()).await;
    assert_eq!(vol.capacity_bytes, 64 * MIB);
    assert_eq!(
        claim_of(&d, &disks[1]),
        Claim::Claimed {
            volume: vol.volume_id.clone(),
            node: NODE.into(),
        }
    );
    assert_eq!(claim_of(&d, &disks[0]), Claim::Unclaimed);
    assert_eq!(capacity(&d).await, (96 * MIB, 96 * MIB));
    let id = vol.volume_id;

    // Expansion: within the device nothing to do; beyond it OutOfRange.
    let r = d
        .controller()
        .controller_expand_volume(expand_req(&id, 50 * MIB))
        .await
        .unwrap();
    assert_eq!(r.get_ref().capacity_bytes, 64 * MIB);
    assert!(!r.get_ref().node_expansion_required);
    expect_code(
        d.controller()
            .controller_expand_volume(expand_req(&id, 65 * MIB))
            .await,
        Code::OutOfRange,
        "expand beyond the device",
    );
    // Nothing left fits 200 MiB.
    expect_code(
        d.controller()
            .create_volume(create_req_dev("big", 200 * MIB, mount_cap()))
            .await,
        Code::ResourceExhausted,
        "create 200 MiB",
    );

    let dev = disks[1].dev.clone();
    assert_eq!(uuid_on(&dev), None, "nothing is written before stage");
    let (staging, target) = d.stage_and_publish(&id, "v1", mount_cap()).await;
    let uuid = uuid_on(&dev).expect("stage made a filesystem");
    std::fs::write(target.join("data"), b"kept").unwrap();
    let stats = d.stats(&id, &target).await;
    assert!(stats.usage[0].total > 50 * MIB, "{stats:?}");
    assert!(!stats.volume_condition.unwrap().abnormal);
    d.unpublish_and_unstage(&id, &target, &staging).await;

    // Stage again: our filesystem is found, not made again; the data is there.
    let (staging, target) = d.stage_and_publish(&id, "v1", mount_cap()).await;
    assert_eq!(
        uuid_on(&dev).as_deref(),
        Some(uuid.as_str()),
        "no second mkfs"
    );
    assert_eq!(std::fs::read(target.join("data")).unwrap(), b"kept");

    // Delete refuses while staged, then wipes exactly our signature.
    d.unpublish(&id, &target).await;
    expect_code(
        d.controller().delete_volume(delete_req(&id)).await,
        Code::FailedPrecondition,
        "delete while staged",
    );
    d.unstage(&id, &staging).await;
    d.delete(&id).await;
    assert!(probe_all(&dev).unwrap().is_empty(), "our signature wiped");
    assert_eq!(claim_of(&d, &disks[1]), Claim::Unclaimed);
    assert_eq!(
        capacity(&d).await,
        (160 * MIB, 96 * MIB),
        "the device is a candidate again"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrovol"))
        .args(["ctl", "devices", "--state-dir"])
        .arg(d.state_dir())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(disks[1].path()) && table.contains("Unclaimed"),
        "{table}"
    );
}

#[tokio::test]
async fn foreign_signatures_are_never_formatted_nor_wiped() {
    let (_dir, disks) = disks(&[64, 64]);
    let d = driver_for(&[&disks[0], &disks[1]], None).await;

    // A foreign filesystem appears on a claimed device between unstage and delete.
    let id = create(&d, "a", 0, mount_cap()).await.volume_id;
    let (staging, target) = d.stage_and_publish(&id, "a", mount_cap()).await;
    let dev = [
        "/dev/",
        &inventory(&d)
            .iter()
            .find(|e| matches!(&e.claim, Claim::Claimed { volume, .. } if volume == &id))
            .unwrap()
            .device
            .kernel_name,
    ]
    .concat();
    d.unpublish_and_unstage(&id, &target, &staging).await;
    run("mkfs.ext4", &["-q", "-F", &dev]);
    let foreign = uuid_on(Path::new(&dev)).unwrap();
    d.delete(&id).await;
    assert_eq!(
        uuid_on(Path::new(&dev)),
        Some(foreign),
        "the foreign filesystem is untouched"
    );
    let released = inventory(&d)
        .into_iter()
        .find(|e| e.device.dev_path == Path::new(&dev))
        .unwrap();
    match released.claim {
        Claim::Released { volume, reason, .. } => {
            assert_eq!(volume, id);
            assert!(reason.contains("not wiped"), "{reason}");
        }
        other => panic!("expected Released, got {other:?}"),
    }

    // A device that gained a signature after the claim is never formatted at stage.
    let id = create(&d, "b", 0, mount_cap()).await.volume_id;
    let other = disks.iter().find(|x| x.path() != dev).unwrap();
    run("mkswap", &[other.path()]);
    let swap = uuid_on(&other.dev).unwrap();
    let st = expect_code(
        d.node()
            .node_stage_volume(stage_req(&id, &d.staging("b"), mount_cap()))
            .await,
        Code::FailedPrecondition,
        "stage over a foreign filesystem",
    );
    assert!(st.message().contains("never formatted"), "{st:?}");
    assert_eq!(uuid_on(&other.dev), Some(swap), "never formatted");
}

#[tokio::test]
async fn block_volume_read_only_publish_and_full_wipe() {
    let (_dir, disks) = disks(&[64]);
    let d = driver_for(&[&disks[0]], None).await;
    let id = create(&d, "blk", 0, block_cap()).await.volume_id;
    let staging = d.staging("blk");
    d.stage(&id, &staging, block_cap()).await;
    let rw = d.target("blk", "writer");
    d.publish(&id, &staging, &rw, block_cap(), false).await;
    // The "pod" puts a filesystem on its raw device.
    run("mkfs.ext4", &["-q", "-F", rw.to_str().unwrap()]);
    d.unpublish(&id, &rw).await;

    // Read-only: the kernel refuses writes to the device node.
    let ro = d.target("blk", "reader");
    d.publish(&id, &staging, &ro, block_cap(), true).await;
    let write = std::fs::OpenOptions::new()
        .write(true)
        .open(&ro)
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, &[0u8; 4096]).and_then(|_| f.sync_all())
        });
    assert!(
        write.is_err(),
        "a read-only block publication must refuse writes"
    );
    let mixed = d.target("blk", "mixed");
    expect_code(
        d.node()
            .node_publish_volume(publish_req(&id, &staging, &mixed, block_cap(), false))
            .await,
        Code::FailedPrecondition,
        "rw beside ro",
    );
    d.unpublish(&id, &ro).await;
    assert!(!ferrovol::os::blockdev::is_read_only(&disks[0].dev).unwrap());
    d.unstage(&id, &staging).await;

    // The claim is the proof of ownership: everything on the device is wiped.
    assert!(!probe_all(&disks[0].dev).unwrap().is_empty());
    d.delete(&id).await;
    assert!(probe_all(&disks[0].dev).unwrap().is_empty());
    assert_eq!(claim_of(&d, &disks[0]), Claim::Unclaimed);
}

/// Invariants after any crash and restart: every claim belongs to one listed volume, every
/// volume holds one claim, and the foreign disk still carries its filesystem.
async fn assert_consistent(d: &Driver, foreign: &Disk, foreign_uuid: &str) {
    let ids = d.list_ids().await;
    let claims: Vec<String> = inventory(d)
        .into_iter()
        .filter_map(|e| match e.claim {
            Claim::Claimed { volume, .. } => Some(volume),
            Claim::Released { volume, reason, .. } => {
                panic!("{volume} released after a crash: {reason}")
            }
            Claim::Unclaimed => None,
        })
        .collect();
    let mut sorted = claims.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        claims.len(),
        "a volume claims two devices: {claims:?}"
    );
    let mut listed = ids.clone();
    listed.sort();
    assert_eq!(sorted, listed, "claims and volumes differ\n{}", d.log());
    assert_eq!(
        uuid_on(&foreign.dev).as_deref(),
        Some(foreign_uuid),
        "foreign disk touched"
    );
}

#[tokio::test]
async fn kill_9_at_every_step_of_claim_format_and_release() {
    let (_dir, disks) = disks(&[64, 64, 64]);
    run("mkfs.ext4", &["-q", "-F", disks[2].path()]);
    let foreign_uuid = uuid_on(&disks[2].dev).unwrap();
    let all = [&disks[0], &disks[1], &disks[2]];
    let cap = mount_cap;

    // Create: killed once the record (the claim) is committed, before the answer.
    let mut d = driver_for(&all, Some("device:create:after-commit")).await;
    assert!(d
        .controller()
        .create_volume(create_req_dev("c", 0, cap()))
        .await
        .is_err());
    d.expect_crash().await;
    d.remove_env("FERROVOL_CRASH_AT");
    d.restart().await;
    assert_consistent(&d, &disks[2], &foreign_uuid).await;
    let listed = d.list_ids().await;
    // The retry answers the committed volume; exactly one device is claimed.
    let id = create(&d, "c", 0, cap()).await.volume_id;
    assert_eq!(
        listed,
        std::slice::from_ref(&id),
        "the committed create is the volume"
    );
    assert_consistent(&d, &disks[2], &foreign_uuid).await;
    d.delete(&id).await;
    drop(d);

    // Format: killed right after mkfs, before the offsets are recorded.
    let mut d = driver_for(&all, Some("device:stage:after-mkfs")).await;
    let id = create(&d, "f", 0, cap()).await.volume_id;
    assert!(d
        .node()
        .node_stage_volume(stage_req(&id, &d.staging("f"), cap()))
        .await
        .is_err());
    d.expect_crash().await;
    d.remove_env("FERROVOL_CRASH_AT");
    d.restart().await;
    let (staging, target) = d.stage_and_publish(&id, "f", cap()).await;
    std::fs::write(target.join("x"), b"survives").unwrap();
    d.unpublish_and_unstage(&id, &target, &staging).await;
    let (staging, target) = d.stage_and_publish(&id, "f", cap()).await;
    assert_eq!(
        std::fs::read(target.join("x")).unwrap(),
        b"survives",
        "no data lost"
    );
    d.unpublish_and_unstage(&id, &target, &staging).await;
    assert_consistent(&d, &disks[2], &foreign_uuid).await;
    d.delete(&id).await;
    drop(d);

    // Release: killed after the intent, after the wipe, after the claim changed.
    for point in [
        "device:delete:after-intent",
        "device:delete:after-wipe",
        "device:delete:after-release",
    ] {
        let mut d = driver_for(&all, Some(point)).await;
        let id = create(&d, "r", 0, cap()).await.volume_id;
        let (staging, target) = d.stage_and_publish(&id, "r", cap()).await;
        d.unpublish_and_unstage(&id, &target, &staging).await;
        assert!(d.controller().delete_volume(delete_req(&id)).await.is_err());
        d.expect_crash().await;
        d.remove_env("FERROVOL_CRASH_AT");
        d.restart().await;
        assert!(
            d.list_ids().await.is_empty(),
            "{point}: the delete finished at restart"
        );
        assert_consistent(&d, &disks[2], &foreign_uuid).await;
        for disk in &disks[..2] {
            assert_eq!(claim_of(&d, disk), Claim::Unclaimed, "{point}");
            assert!(probe_all(&disk.dev).unwrap().is_empty(), "{point}: wiped");
        }
    }
}

/// A raw publish killed after its bind, before the publication is recorded: after the restart
/// the mount shows the volume's own device (same device number), so NodeUnpublishVolume takes
/// it down instead of refusing it, and the device can be released.
#[tokio::test]
async fn a_raw_publish_killed_after_its_bind_unpublishes_after_restart() {
    let (_dir, disks) = disks(&[64]);
    let mut d = driver_for(&[&disks[0]], Some("device:publish:after-bind")).await;
    let id = create(&d, "rawkill", 0, block_cap()).await.volume_id;
    let staging = d.staging("rawkill");
    d.stage(&id, &staging, block_cap()).await;
    let target = d.target("rawkill", "pod");
    assert!(d
        .node()
        .node_publish_volume(publish_req(&id, &staging, &target, block_cap(), false))
        .await
        .is_err());
    d.expect_crash().await;
    d.remove_env("FERROVOL_CRASH_AT");
    d.restart().await;
    d.unpublish(&id, &target).await;
    assert!(
        !ferrovol::os::mountinfo::is_mount_point(&target).unwrap_or(false),
        "the bind left by the killed publish is gone"
    );
    d.unstage(&id, &staging).await;
    d.delete(&id).await;
    assert_eq!(claim_of(&d, &disks[0]), Claim::Unclaimed);
}

/// The kubelet repeats a NodePublishVolume that never answered. A raw publish killed after its
/// bind, before the publication is recorded, leaves the volume's device node bound at the
/// target: the repeat after the restart recognises it as the volume's own and answers OK.
#[tokio::test]
async fn a_raw_publish_killed_after_its_bind_is_repeated_after_restart() {
    let (_dir, disks) = disks(&[64]);
    let mut d = driver_for(&[&disks[0]], Some("device:publish:after-bind")).await;
    let id = create(&d, "rawagain", 0, block_cap()).await.volume_id;
    let staging = d.staging("rawagain");
    d.stage(&id, &staging, block_cap()).await;
    let target = d.target("rawagain", "pod");
    let publish = publish_req(&id, &staging, &target, block_cap(), false);
    assert!(d.node().node_publish_volume(publish.clone()).await.is_err());
    d.expect_crash().await;
    d.remove_env("FERROVOL_CRASH_AT");
    d.restart().await;
    d.node()
        .node_publish_volume(publish.clone())
        .await
        .unwrap_or_else(|e| panic!("the repeated publish: {e}\n{}", d.log()));
    assert!(
        ferrovol::os::mountinfo::is_mount_point(&target).unwrap_or(false),
        "the target still shows the device"
    );
    // A repeat with the publication recorded answers OK too; read-only is another publication.
    d.node().node_publish_volume(publish).await.unwrap();
    let ro = publish_req(&id, &staging, &target, block_cap(), true);
    let refused = d.node().node_publish_volume(ro).await;
    assert_eq!(
        refused.expect_err("other options").code(),
        tonic::Code::AlreadyExists
    );
    d.unpublish(&id, &target).await;
    d.unstage(&id, &staging).await;
    d.delete(&id).await;
    assert_eq!(claim_of(&d, &disks[0]), Claim::Unclaimed);
}
