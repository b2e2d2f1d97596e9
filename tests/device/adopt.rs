//! Adoption of devices that carry a filesystem (`ferrovol ctl adopt device`, the admin API), on
//! real loop devices: the dynamic path never claims them; adoption claims one by its uid, keeps
//! its filesystem (its UUID becomes the proven identity), publishes its data, and a delete
//! releases the claim and keeps the data. Each refusal leaves the device as it was.

use crate::common;
use crate::common::disks;

use common::*;
use disks::{image, run, Disk};
use ferrovol::cli::devices::read_inventory;
use ferrovol::discovery::{Claim, Entry};
use ferrovol::os::blkid::probe_all;
use ferrovol::proto as csi;
use ferrovol::proto::admin::{admin_client::AdminClient, AdoptDeviceRequest, AdoptResponse};
use std::fs;
use std::path::Path;
use std::process::Command;
use tonic::Code;

fn inventory(d: &Driver) -> Vec<Entry> {
    read_inventory(&d.state_dir()).expect("read inventory")
}

fn entry_of(d: &Driver, disk: &Disk) -> Entry {
    inventory(d)
        .into_iter()
        .find(|e| e.device.backing_file.as_deref() == Some(disk.image.as_path()))
        .expect("the disk is in the inventory")
}

fn uuid_on(dev: &Path) -> Option<String> {
    probe_all(dev).unwrap().first().and_then(|s| s.uuid.clone())
}

/// An ext4 filesystem on `disk` holding `data.txt`, written through a mount that is gone again.
fn ext4_with_data(disk: &Disk, at: &Path, text: &str) -> String {
    run("mkfs.ext4", &["-q", "-F", disk.path()]);
    fs::create_dir_all(at).unwrap();
    run("mount", &[disk.path(), at.to_str().unwrap()]);
    fs::write(at.join("data.txt"), text).unwrap();
    run("umount", &[at.to_str().unwrap()]);
    uuid_on(&disk.dev).expect("a UUID")
}

async fn adopt(d: &Driver, uid: &str, name: &str) -> Result<AdoptResponse, tonic::Status> {
    let endpoint = ferrovol::server::Endpoint::Unix(d.socket());
    let mut admin = AdminClient::new(ferrovol::client::connect(&endpoint).await.unwrap());
    admin
        .adopt_device(AdoptDeviceRequest {
            device_uid: uid.to_string(),
            name: name.to_string(),
        })
        .await
        .map(|r| r.into_inner())
}

/// A mount of a disk that goes (lazily) when dropped, even when the test panics first.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn dev_params() -> std::collections::HashMap<String, String> {
    [("backend".to_string(), "device".to_string())].into()
}

#[tokio::test]
async fn a_device_with_data_is_adopted_published_and_kept_on_delete() {
    let dir = tempfile::tempdir().unwrap();
    let full = Disk::attach(&image(dir.path(), "full.img", 64));
    let blank = Disk::attach(&image(dir.path(), "blank.img", 64));
    let uuid = ext4_with_data(&full, &dir.path().join("m"), "kept");
    let d = Driver::builder()
        .arg("--backends")
        .arg("device")
        .arg("--device-include")
        .arg(full.path())
        .arg("--device-include")
        .arg(blank.path())
        .start()
        .await;

    // The dynamic path takes the blank device and never the one with a filesystem.
    let req = |name: &str| csi::CreateVolumeRequest {
        parameters: dev_params(),
        ..create_req(name, 0, mount_cap())
    };
    d.controller()
        .create_volume(req("dynamic"))
        .await
        .expect("the blank device");
    let none = d.controller().create_volume(req("more")).await;
    assert_eq!(
        none.expect_err("no blank device left").code(),
        Code::ResourceExhausted
    );
    assert_eq!(entry_of(&d, &full).claim, Claim::Unclaimed);

    let uid = entry_of(&d, &full).device.uid;
    let out = output(
        Command::new(env!("CARGO_BIN_EXE_ferrovol"))
            .arg("ctl")
            .arg("--endpoint")
            .arg(format!("unix://{}", d.socket().display()))
            .args([
                "adopt",
                "device",
                &uid,
                "--name",
                "old-disk",
                "--storage-class",
                "ferrovol-device",
            ]),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    let pv: serde_json::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    let id = format!("device/{NODE}/old-disk");
    assert_eq!(pv["spec"]["csi"]["volumeHandle"], id.as_str());
    assert_eq!(pv["spec"]["csi"]["fsType"], "ext4");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["spec"]["capacity"]["storage"], (64 * MIB).to_string());
    assert_eq!(
        pv["spec"]["csi"]["volumeAttributes"]["ferrovol.io/device-uid"],
        uid.as_str()
    );
    assert!(matches!(entry_of(&d, &full).claim, Claim::Claimed { volume, .. } if volume == id));
    assert_eq!(uuid_on(&full.dev), Some(uuid.clone()), "nothing written");
    // A repeat answers the same volume.
    assert_eq!(adopt(&d, &uid, "old-disk").await.unwrap().volume_id, id);

    // Staged and published as it is: the data is there, never formatted.
    let (staging, target) = d.stage_and_publish(&id, "old-disk", mount_cap()).await;
    assert_eq!(fs::read_to_string(target.join("data.txt")).unwrap(), "kept");
    fs::write(target.join("new.txt"), "through ferrovol").unwrap();
    d.unpublish_and_unstage(&id, &target, &staging).await;
    assert_eq!(uuid_on(&full.dev), Some(uuid.clone()));

    // Deleting it releases the claim and keeps the filesystem and its data.
    d.delete(&id).await;
    assert_eq!(
        uuid_on(&full.dev),
        Some(uuid.clone()),
        "an adopted device is never wiped"
    );
    assert_eq!(entry_of(&d, &full).claim, Claim::Unclaimed);
    assert!(!d.list_ids().await.contains(&id));
    let m = dir.path().join("m");
    run("mount", &[full.path(), m.to_str().unwrap()]);
    let held = Mounted(m.clone());
    let kept = (
        fs::read_to_string(m.join("data.txt")),
        fs::read_to_string(m.join("new.txt")),
    );
    drop(held);
    assert_eq!(kept.0.unwrap(), "kept");
    assert_eq!(kept.1.unwrap(), "through ferrovol");
    // Still no candidate for the dynamic path.
    let none = d.controller().create_volume(req("more")).await;
    assert_eq!(
        none.expect_err("still no blank device").code(),
        Code::ResourceExhausted
    );
}

#[tokio::test]
async fn devices_that_cannot_be_adopted_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let blank = Disk::attach(&image(dir.path(), "blank.img", 64));
    let parted = Disk::attach(&image(dir.path(), "gpt.img", 64));
    let mounted = Disk::attach(&image(dir.path(), "mounted.img", 64));
    let unnamed = Disk::attach(&image(dir.path(), "unnamed.img", 64));
    disks::Content::Gpt.write(parted.path());
    let uuid = ext4_with_data(&mounted, &dir.path().join("m1"), "busy");
    ext4_with_data(&unnamed, &dir.path().join("m2"), "not mine");
    let mut b = Driver::builder().arg("--backends").arg("device");
    for disk in [&blank, &parted, &mounted] {
        b = b.arg("--device-include").arg(disk.path());
    }
    let d = b.start().await;
    let at = dir.path().join("m1");
    run("mount", &[mounted.path(), at.to_str().unwrap()]);
    let held = Mounted(at.clone());

    let cases = [
        (&blank, Code::FailedPrecondition, "carries no filesystem"),
        (&parted, Code::FailedPrecondition, "adoption takes one"),
        (&mounted, Code::FailedPrecondition, "is mounted at"),
        (
            &unnamed,
            Code::FailedPrecondition,
            "not named by this node's device include rules",
        ),
    ];
    for (disk, code, why) in cases {
        let uid = entry_of(&d, disk).device.uid;
        let s = adopt(&d, &uid, "v").await.expect_err(why);
        assert_eq!(s.code(), code, "{why}: {s:?}");
        assert!(s.message().contains(why), "{why}: {}", s.message());
        assert!(
            s.message().contains(&uid),
            "names the device: {}",
            s.message()
        );
    }
    let s = adopt(&d, "bd-0000", "v").await.expect_err("unknown uid");
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("no device bd-0000"), "{s:?}");
    drop(held);
    assert_eq!(uuid_on(&mounted.dev), Some(uuid));
    assert_eq!(probe_all(&blank.dev).unwrap(), vec![]);
    assert!(d.list_ids().await.is_empty());
    // Claimed by a volume: refused too.
    let id = d
        .controller()
        .create_volume(csi::CreateVolumeRequest {
            parameters: dev_params(),
            ..create_req("dyn", 0, mount_cap())
        })
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap()
        .volume_id;
    let s = adopt(&d, &entry_of(&d, &blank).device.uid, "v")
        .await
        .expect_err("claimed");
    assert!(
        s.message().contains(&format!("claimed by volume {id}")),
        "{s:?}"
    );
}

#[tokio::test]
async fn an_adoption_killed_after_its_commit_is_a_volume_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let full = Disk::attach(&image(dir.path(), "full.img", 64));
    let uuid = ext4_with_data(&full, &dir.path().join("m"), "kept");
    let mut d = Driver::builder()
        .arg("--backends")
        .arg("device")
        .arg("--device-include")
        .arg(full.path())
        .crash_at("device:adopt:after-commit")
        .start()
        .await;
    let uid = entry_of(&d, &full).device.uid;
    assert!(adopt(&d, &uid, "old").await.is_err());
    d.expect_crash().await;
    d.remove_env("FERROVOL_CRASH_AT");
    d.restart().await;
    let id = format!("device/{NODE}/old");
    assert_eq!(d.list_ids().await, vec![id.clone()]);
    assert!(matches!(entry_of(&d, &full).claim, Claim::Claimed { volume, .. } if volume == id));
    assert_eq!(adopt(&d, &uid, "old").await.unwrap().volume_id, id);
    let (staging, target) = d.stage_and_publish(&id, "old", mount_cap()).await;
    assert_eq!(fs::read_to_string(target.join("data.txt")).unwrap(), "kept");
    d.unpublish_and_unstage(&id, &target, &staging).await;
    assert_eq!(uuid_on(&full.dev), Some(uuid));
}
