//! The device backend proves a device's identity at the moment it writes (root only, real loop
//! devices): a device swapped behind a claim, or a second device presenting the claimed one's
//! WWN, is never wiped, formatted or taken for the claimed one. Loop devices have no WWN; the
//! driver reads sysfs from a test tree (`FERROVOL_SYSFS_ROOT`) that gives them one.

use crate::common;
use crate::common::disks;
use crate::common::fake_sysfs;

use common::*;
use disks::{image, run, Disk};
use fake_sysfs::FakeSysfs;
use ferrovol::cli::devices::read_inventory;
use ferrovol::discovery::{Claim, Entry};
use ferrovol::os::blkid::probe_all;
use ferrovol::proto as csi;
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::Code;

const WWN: &str = "naa.600140500000000000000000000000a1";

async fn driver(fake: &FakeSysfs, disks: &[&Disk]) -> Driver {
    let mut b = Driver::builder()
        .arg("--backends")
        .arg("device")
        .env("FERROVOL_SYSFS_ROOT", fake.root());
    for d in disks {
        b = b.arg("--device-include").arg(d.path());
    }
    b.start().await
}

async fn create(d: &Driver, name: &str, cap: csi::VolumeCapability) -> String {
    let mount = matches!(
        cap.access_type,
        Some(csi::volume_capability::AccessType::Mount(_))
    );
    let mut req = create_req(name, 0, cap);
    req.parameters.insert("backend".into(), "device".into());
    if mount {
        req.parameters.insert("fsType".into(), "ext4".into());
    }
    d.controller()
        .create_volume(req)
        .await
        .unwrap_or_else(|e| panic!("CreateVolume {name}: {e}\n{}", d.log()))
        .into_inner()
        .volume
        .unwrap()
        .volume_id
}

fn inventory(d: &Driver) -> Vec<Entry> {
    read_inventory(&d.state_dir()).expect("read inventory")
}

fn claimed_by<'a>(entries: &'a [Entry], id: &str) -> Vec<&'a Entry> {
    entries
        .iter()
        .filter(|e| matches!(&e.claim, Claim::Claimed { volume, .. } if volume == id))
        .collect()
}

/// Waits until the driver's inventory satisfies `pred` (it follows uevents on its own thread).
fn wait_inventory(d: &Driver, what: &str, pred: impl Fn(&[Entry]) -> bool) {
    let t0 = Instant::now();
    while !pred(&inventory(d)) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{what}: {:#?}\n{}",
            inventory(d),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Attaches `img` at a high loop number that `losetup --find` (what other tests use) does not
/// hand out while lower ones are free, so the number stays free while this test swaps the disk
/// behind it.
fn attach_high(img: &Path) -> Disk {
    let start = 200 + std::process::id() % 40;
    (start..start + 16)
        .find_map(|n| {
            let dev = format!("/dev/loop{n}");
            let bound = Path::new(&format!("/sys/block/loop{n}/loop/backing_file")).exists();
            (!bound)
                .then(|| Disk::attach_at(Path::new(&dev), img))
                .flatten()
        })
        .expect("no free high loop number")
}

/// Makes the kernel send a uevent for `dev`, as a hotplug would.
fn poke(dev: &Path) {
    let name = dev.file_name().unwrap().to_str().unwrap();
    std::fs::write(format!("/sys/class/block/{name}/uevent"), "change").unwrap();
}

#[tokio::test]
async fn raw_publish_and_delete_refuse_a_device_swapped_behind_the_claim() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSysfs::new();
    let mut claimed = attach_high(&image(dir.path(), "claimed.img", 64));
    // A SAN LUN: the WWN is its identity, and the driver sees it at this /dev node.
    fake.add(&claimed.dev, Some(WWN));
    let d = driver(&fake, &[&claimed]).await;
    let id = create(&d, "raw", block_cap()).await;
    let uid = claimed_by(&inventory(&d), &id)[0].device.uid.clone();

    // Another disk takes the same /dev node and shows the same WWN (a LUN remapped, a disk
    // swapped in a bay): same uid, same device number, same size.
    let at = claimed.dev.clone();
    claimed.detach();
    let other = image(dir.path(), "other.img", 64);
    run("mkfs.ext4", &["-q", "-F", other.to_str().unwrap()]);
    let before = std::fs::read(&other).unwrap();
    let _other = Disk::attach_at(&at, &other).expect("the freed loop number is taken");
    poke(&at);
    wait_inventory(&d, "the inventory sees the device again", |es| {
        es.iter().any(|e| {
            e.device.uid == uid && e.device.backing_file.as_deref() == Some(other.as_path())
        })
    });

    // A pod is not handed the other disk either.
    let staging = d.staging("raw");
    d.stage(&id, &staging, block_cap()).await;
    let target = d.target("raw", "pod");
    let st = expect_code(
        d.node()
            .node_publish_volume(publish_req(&id, &staging, &target, block_cap(), false))
            .await,
        Code::FailedPrecondition,
        "publish a swapped raw device",
    );
    assert!(st.message().contains("not proven"), "{st:?}");
    d.unstage(&id, &staging).await;

    let answer = d.controller().delete_volume(delete_req(&id)).await;
    assert!(
        std::fs::read(&other).unwrap() == before,
        "the other disk's bytes changed (DeleteVolume answered {answer:?})"
    );
    let st = answer.expect_err("DeleteVolume of a swapped device succeeded");
    assert_eq!(st.code(), Code::FailedPrecondition, "{st:?}");
    assert!(st.message().contains(&id), "{st:?}");
    assert_eq!(claimed_by(&inventory(&d), &id).len(), 1, "claim kept");
}

#[tokio::test]
async fn two_devices_with_one_wwn_are_a_conflict_and_never_formatted() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSysfs::new();
    let first = Disk::attach(&image(dir.path(), "first.img", 64));
    let second = Disk::attach(&image(dir.path(), "second.img", 64));
    fake.add(&first.dev, Some(WWN));
    let d = driver(&fake, &[&first, &second]).await;
    let id = create(&d, "m", mount_cap()).await;
    assert_eq!(
        claimed_by(&inventory(&d), &id)[0].device.dev_path,
        first.dev
    );

    // A second device appears presenting the claimed device's WWN.
    fake.add(&second.dev, Some(WWN));
    poke(&second.dev);
    let second_name = second
        .dev
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    wait_inventory(&d, "the second device is noticed", |es| {
        es.iter().any(|e| {
            e.device.dev_path == second.dev || e.conflict.iter().any(|c| c == &second_name)
        })
    });
    let entries = inventory(&d);
    let mine = claimed_by(&entries, &id);
    assert_eq!(mine.len(), 1);
    assert_eq!(
        mine[0].device.dev_path, first.dev,
        "the claim was re-pointed at the newcomer"
    );
    assert_eq!(mine[0].conflict, std::slice::from_ref(&second_name));
    let status = ferrovol::discovery::crd::from_entry("n", mine[0])
        .status
        .unwrap();
    let shown = status.conflict.unwrap_or_default();
    assert!(shown.contains(second.path()), "{shown}");

    // Nothing is formatted while two devices claim to be the one.
    let st = expect_code(
        d.node()
            .node_stage_volume(stage_req(&id, &d.staging("m"), mount_cap()))
            .await,
        Code::FailedPrecondition,
        "stage while the uid is in conflict",
    );
    assert!(st.message().contains(second.path()), "{st:?}");
    for disk in [&first, &second] {
        assert!(
            probe_all(&disk.dev).unwrap().is_empty(),
            "{} written",
            disk.path()
        );
    }
}

#[tokio::test]
async fn a_claim_recorded_by_another_node_is_never_touched() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeSysfs::new();
    // A LUN two nodes see; blank, so only node-b's claim keeps this node off it.
    let lun = Disk::attach(&image(dir.path(), "lun.img", 64));
    let blank = std::fs::read(&lun.image).unwrap();
    fake.add(&lun.dev, Some(WWN));
    let mut d = driver(&fake, &[&lun]).await;
    let uid = inventory(&d)
        .into_iter()
        .find(|e| e.device.dev_path == lun.dev)
        .unwrap()
        .device
        .uid;

    // The node's record learns node-b's claim (as the cluster sync records it).
    d.kill9();
    let file = d.state_dir().join("devices.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let theirs = serde_json::json!({
        "claim": "Claimed", "volume": "device/node-b/theirs", "node": "node-b"
    });
    for e in json["devices"].as_array_mut().unwrap() {
        if e["device"]["uid"] == uid.as_str() {
            e["claim"] = theirs.clone();
        }
    }
    std::fs::write(&file, serde_json::to_vec(&json).unwrap()).unwrap();
    d.restart().await;

    let entry = inventory(&d)
        .into_iter()
        .find(|e| e.device.uid == uid)
        .unwrap();
    assert_eq!(
        serde_json::to_value(&entry.claim).unwrap(),
        theirs,
        "node-b's claim was changed\n{}",
        d.log()
    );
    let mut req = create_req("mine", 0, block_cap());
    req.parameters.insert("backend".into(), "device".into());
    expect_code(
        d.controller().create_volume(req).await,
        Code::ResourceExhausted,
        "create with only node-b's device",
    );
    assert!(
        std::fs::read(&lun.image).unwrap() == blank,
        "node-b's device was written"
    );
}
