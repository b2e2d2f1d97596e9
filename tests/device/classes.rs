//! "fast" and "slow" device classes (docs/install.md, "Fast and slow classes"): two loop
//! devices of different kinds and sizes, one an SSD and one an HDD by their rotational flag,
//! and a class for each by `deviceSelector`; each class's volume lands on its own device, and
//! a class whose devices are all taken gets none of the other class's.

use crate::common;
use crate::common::disks;

use common::*;
use disks::{image, Disk};
use ferrovol::cli::devices::read_inventory;
use ferrovol::discovery::Claim;
use ferrovol::proto as csi;
use std::path::Path;
use tonic::Code;

fn class_req(name: &str, selector: &str) -> csi::CreateVolumeRequest {
    let mut req = create_req(name, 0, block_cap());
    req.parameters.insert("backend".into(), "device".into());
    req.parameters
        .insert("deviceSelector".into(), selector.into());
    req
}

/// Marks a loop device rotational (an HDD) or not (an SSD), as discovery reads it.
fn set_rotational(disk: &Disk, rotational: bool) {
    let name = Path::new(disk.path())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    std::fs::write(
        format!("/sys/block/{name}/queue/rotational"),
        if rotational { "1" } else { "0" },
    )
    .expect("set the loop device's rotational flag");
}

/// The volume that claims `disk`, if any.
fn claim_of(d: &Driver, disk: &Disk) -> Option<String> {
    let inv = read_inventory(&d.state_dir()).unwrap();
    let e = inv.iter().find(|e| e.device.dev_path == disk.dev).unwrap();
    match &e.claim {
        Claim::Claimed { volume, .. } => Some(volume.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn fast_and_slow_classes_land_on_their_own_devices() {
    let dir = tempfile::tempdir().unwrap();
    let ssd = Disk::attach(&image(dir.path(), "ssd.img", 64));
    let hdd = Disk::attach(&image(dir.path(), "hdd.img", 128));
    set_rotational(&ssd, false);
    set_rotational(&hdd, true);
    let d = Driver::builder()
        .arg("--backends")
        .arg("device")
        .arg("--device-include")
        .arg(ssd.path())
        .arg("--device-include")
        .arg(hdd.path())
        .start()
        .await;
    let (fast, slow) = ("rotational=false", "rotational=true");
    let mut c = d.controller();

    // Each class's capacity is its own disks'.
    for (selector, bytes) in [(fast, 64 << 20), (slow, 128 << 20)] {
        let cap = c
            .get_capacity(csi::GetCapacityRequest {
                volume_capabilities: vec![block_cap()],
                parameters: class_req("x", selector).parameters,
                accessible_topology: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(cap.available_capacity, bytes, "{selector}");
    }

    // Slow first: a picker that ignored the selector would take either disk.
    let vs = c
        .create_volume(class_req("v-slow", slow))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()))
        .into_inner()
        .volume
        .unwrap();
    let vf = c
        .create_volume(class_req("v-fast", fast))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()))
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(claim_of(&d, &hdd), Some(vs.volume_id.clone()));
    assert_eq!(claim_of(&d, &ssd), Some(vf.volume_id.clone()));
    assert_eq!(vs.capacity_bytes, 128 << 20, "the whole HDD");
    assert_eq!(vf.capacity_bytes, 64 << 20, "the whole SSD");

    // With its SSD taken, the fast class gets no disk, not the other class's.
    d.delete(&vs.volume_id).await;
    let s = c.create_volume(class_req("v-fast-2", fast)).await;
    expect_code(
        s,
        Code::ResourceExhausted,
        "fast class with its only SSD taken",
    );
    assert_eq!(claim_of(&d, &hdd), None);
    d.delete(&vf.volume_id).await;
}
