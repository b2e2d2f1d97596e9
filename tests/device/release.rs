//! A Released device, on a real loop device (root): a delete that cannot prove what is on the
//! device leaves it Released and no volume gets it; the operator checks and wipes it, clears
//! the claim (`ferrovol ctl clear-released`, the admin API's ClearReleasedDevice) naming the
//! volume the release names, and the next CreateVolume takes it.

use crate::common;
use crate::common::disks;

use common::*;
use disks::{image, run, Disk};
use ferrovol::cli::devices::read_inventory;
use ferrovol::discovery::{Claim, Entry};
use ferrovol::proto as csi;
use ferrovol::proto::admin::{
    admin_client::AdminClient, ClearReleasedDeviceRequest, ClearReleasedDeviceResponse,
};
use std::process::Command;
use tonic::Code;

fn entry_of(d: &Driver, disk: &Disk) -> Entry {
    read_inventory(&d.state_dir())
        .expect("read inventory")
        .into_iter()
        .find(|e| e.device.backing_file.as_deref() == Some(disk.image.as_path()))
        .expect("the disk is in the inventory")
}

async fn clear(
    d: &Driver,
    uid: &str,
    volume: &str,
) -> Result<ClearReleasedDeviceResponse, tonic::Status> {
    let endpoint = ferrovol::server::Endpoint::Unix(d.socket());
    let mut admin = AdminClient::new(ferrovol::client::connect(&endpoint).await.unwrap());
    admin
        .clear_released_device(ClearReleasedDeviceRequest {
            device_uid: uid.to_string(),
            volume: volume.to_string(),
        })
        .await
        .map(|r| r.into_inner())
}

/// A driver serving only the device backend, with `disk` its one included device.
async fn driver_on(disk: &Disk) -> Driver {
    Driver::builder()
        .arg("--backends")
        .arg("device")
        .arg("--device-include")
        .arg(disk.path())
        .start()
        .await
}

fn req(name: &str) -> csi::CreateVolumeRequest {
    csi::CreateVolumeRequest {
        parameters: [("backend".to_string(), "device".to_string())].into(),
        ..create_req(name, 0, mount_cap())
    }
}

async fn create(d: &Driver, name: &str) -> Result<csi::Volume, tonic::Status> {
    let resp = d.controller().create_volume(req(name)).await?;
    Ok(resp.into_inner().volume.expect("a volume"))
}

fn refused(result: Result<ClearReleasedDeviceResponse, tonic::Status>, code: Code) -> String {
    let s = result.expect_err("refused");
    assert_eq!(s.code(), code, "{s:?}");
    s.message().to_string()
}

#[tokio::test]
async fn a_released_device_is_cleared_by_the_operator_and_given_out_again() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Disk::attach(&image(dir.path(), "u.img", 64));
    let mut d = driver_on(&disk).await;
    let id = create(&d, "v").await.expect("the blank device").volume_id;
    // Something the volume did not make lands on the device: its delete cannot prove the
    // device holds only what the volume wrote, so it wipes nothing and keeps it Released.
    run("mkfs.ext4", &["-q", "-F", disk.path()]);
    d.delete(&id).await;
    let uid = entry_of(&d, &disk).device.uid;
    assert!(
        matches!(&entry_of(&d, &disk).claim, Claim::Released { volume, .. } if *volume == id),
        "{:?}",
        entry_of(&d, &disk).claim
    );
    let none = create(&d, "w")
        .await
        .expect_err("a Released device is given to none");
    assert_eq!(none.code(), Code::ResourceExhausted, "{none:?}");

    // The confirmation names another volume: refused, naming the one the claim names.
    let why = refused(
        clear(&d, &uid, "device/x/other").await,
        Code::FailedPrecondition,
    );
    assert!(why.contains(&uid) && why.contains(&id), "{why}");
    let why = refused(clear(&d, "bd-0000", &id).await, Code::NotFound);
    assert!(why.contains("bd-0000"), "{why}");
    assert!(matches!(entry_of(&d, &disk).claim, Claim::Released { .. }));

    // The operator checked the disk and wiped it by hand, then clears the claim.
    run("wipefs", &["-q", "-a", disk.path()]);
    let out = output(
        Command::new(env!("CARGO_BIN_EXE_ferrovol"))
            .arg("ctl")
            .arg("--endpoint")
            .arg(format!("unix://{}", d.socket().display()))
            .args(["clear-released", &uid, "--volume", &id]),
    )
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    assert!(
        stdout.contains("cleared") && stdout.contains("candidate"),
        "{stdout}"
    );
    assert_eq!(entry_of(&d, &disk).claim, Claim::Unclaimed);
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("operator cleared a Released device"))
        .unwrap_or_else(|| panic!("no log line of the clear:\n{log}"));
    assert!(line.contains(&uid) && line.contains(&id), "{line}");
    // A repeat has nothing to do.
    let again = clear(&d, &uid, &id).await.expect("idempotent");
    assert!(!again.cleared, "{again:?}");
    // Durable: a restart does not bring the release back.
    d.restart().await;
    assert_eq!(entry_of(&d, &disk).claim, Claim::Unclaimed);

    // A candidate again: the next volume takes it.
    let w = create(&d, "w").await.expect("the cleared device");
    assert_eq!(
        w.volume_context.get("ferrovol.io/device-uid"),
        Some(&uid),
        "{w:?}"
    );
    // Claimed by w now: never cleared.
    let why = refused(clear(&d, &uid, &id).await, Code::FailedPrecondition);
    assert!(
        why.contains(&format!("claimed by volume {}", w.volume_id)),
        "{why}"
    );
    d.delete(&w.volume_id).await;
}

#[tokio::test]
async fn a_device_another_process_held_at_the_scan_is_given_out_once_free() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Disk::attach(&image(dir.path(), "held.img", 64));
    // Another process (a probe, LVM, a second scanner) holds the device exclusively while
    // the driver starts and scans.
    use std::os::unix::fs::OpenOptionsExt;
    let holder = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(disk.path())
        .unwrap();
    let d = driver_on(&disk).await;
    drop(holder);
    let made = create(&d, "v").await;
    assert!(made.is_ok(), "a free blank device was refused: {made:?}");
}
