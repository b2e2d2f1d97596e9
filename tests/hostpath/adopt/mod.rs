//! Adoption of existing directories (`ferrovol ctl adopt dir`, the admin API on the driver's
//! socket): in place, the refusals, crash safety, and the local-path-provisioner recipe of
//! docs/adoption.md.

mod copy;
mod crash;
mod pods;
mod pools;
mod quota;
mod recipe;
mod refusals;

use crate::common::*;
use ferrovol::proto::admin::{admin_client::AdminClient, AdoptDirectoryRequest, AdoptResponse};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The admin API on the test driver's socket.
async fn admin(d: &Driver) -> AdminClient<tonic::transport::Channel> {
    let endpoint = ferrovol::server::Endpoint::Unix(d.socket());
    AdminClient::new(ferrovol::client::connect(&endpoint).await.expect("connect"))
}

/// AdoptDirectory through the admin API.
async fn adopt(
    d: &Driver,
    dir: &Path,
    name: &str,
    bytes: i64,
) -> Result<AdoptResponse, tonic::Status> {
    admin(d)
        .await
        .adopt_directory(AdoptDirectoryRequest {
            path: dir.display().to_string(),
            name: name.to_string(),
            capacity_bytes: bytes,
            reflink_copy: false,
        })
        .await
        .map(|r| r.into_inner())
}

/// `ferrovol ctl adopt dir` as an operator runs it: the printed PersistentVolume, parsed.
fn ctl_adopt(d: &Driver, dir: &Path, name: &str, size: &str, class: &str) -> serde_json::Value {
    let out = output(
        Command::new(env!("CARGO_BIN_EXE_ferrovol"))
            .arg("ctl")
            .arg("--endpoint")
            .arg(format!("unix://{}", d.socket().display()))
            .args(["adopt", "dir"])
            .arg(dir)
            .args(["--name", name, "--size", size, "--storage-class", class]),
    )
    .expect("run ferrovol ctl adopt");
    assert!(
        out.status.success(),
        "ctl adopt {}: {}\n--- driver log ---\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    serde_yaml::from_slice(&out.stdout).expect("ctl adopt prints a PersistentVolume")
}

/// A directory with data, as an application left it: files, a subdirectory, mode 0777.
fn make_data_dir(dir: &Path, tag: &str) {
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("data.txt"), format!("data of {tag}")).unwrap();
    fs::write(dir.join("sub/more.bin"), vec![7u8; 100_000]).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o777)).unwrap();
}

fn assert_data(dir: &Path, tag: &str) {
    assert_eq!(
        fs::read_to_string(dir.join("data.txt")).unwrap(),
        format!("data of {tag}"),
        "{}",
        dir.display()
    );
    assert_eq!(
        fs::read(dir.join("sub/more.bin")).unwrap(),
        vec![7u8; 100_000]
    );
}

/// The directory as it was before a refused or rolled-back adoption: in place, with its data,
/// carrying no ferrovol marker.
fn assert_untouched(dir: &Path, tag: &str) {
    assert!(dir.is_dir(), "{} is gone", dir.display());
    assert_data(dir, tag);
    for name in [
        "trusted.ferrovol.markers",
        "trusted.ferrovol.volume",
        "trusted.ferrovol.store",
    ] {
        assert_eq!(
            get_xattr(dir, name),
            None,
            "{} carries {name}",
            dir.display()
        );
    }
}

fn inode(p: &Path) -> (u64, u64) {
    let m = fs::metadata(p).unwrap();
    (m.dev(), m.ino())
}

/// A directory beside the base on the same filesystem, with data.
fn outside_dir(d: &Driver, name: &str) -> PathBuf {
    let dir = d.root().join("old").join(name);
    make_data_dir(&dir, name);
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn adopts_a_directory_in_place_and_publishes_it() {
    let d = Driver::start().await;
    let src = outside_dir(&d, "app-data");
    let before = inode(&src);
    let pv = ctl_adopt(&d, &src, "adopted", "64Mi", "local");

    let id = d.volume_id("adopted");
    assert_eq!(pv["kind"], "PersistentVolume");
    assert_eq!(pv["metadata"]["name"], "adopted");
    assert_eq!(pv["spec"]["csi"]["volumeHandle"], id.as_str());
    assert_eq!(pv["spec"]["csi"]["driver"], "local.csi.ferrovol.io");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["spec"]["storageClassName"], "local");
    assert_eq!(pv["spec"]["capacity"]["storage"], (64 * MIB).to_string());
    let term =
        &pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0];
    assert_eq!(term["key"], "topology.ferrovol.io/node");
    assert_eq!(term["values"][0], NODE);
    assert_eq!(
        pv["spec"]["csi"]["volumeAttributes"]["ferrovol.io/capacity-enforced"], "false",
        "a plain ext4 base limits nothing"
    );

    // Moved, not copied: the same inode, now in the volume's place, marked as the volume's.
    assert!(!src.exists(), "the source name is gone after the rename");
    let dir = d.volume_dir("adopted");
    assert_eq!(inode(&dir), before, "adoption copied instead of renaming");
    assert_data(&dir, "app-data");
    let markers = get_xattr(&dir, "trusted.ferrovol.markers").expect("marked");
    assert!(markers.contains(&id), "{markers:?}");
    let rec = d.state_record("adopted").expect("a committed record");
    assert_eq!(rec["capacity_bytes"], 64 * MIB);
    assert_eq!(rec["adopted_from"], src.display().to_string());
    assert_eq!(d.list_ids().await, vec![id.clone()]);

    // A repeat (the operator ran it twice) answers the same volume.
    let again = adopt(&d, &src, "adopted", 64 * MIB).await.expect("repeat");
    assert_eq!(again.volume_id, id);

    // The pod sees the data through a real NodeStage and NodePublish.
    let (staging, target) = d.stage_and_publish(&id, "adopted", mount_cap()).await;
    assert_data(&target, "app-data");
    fs::write(target.join("new.txt"), b"written by the pod").unwrap();
    d.unpublish_and_unstage(&id, &target, &staging).await;
    assert_eq!(
        fs::read(dir.join("new.txt")).unwrap(),
        b"written by the pod"
    );

    // It survives a restart as any volume does.
    let mut d = d;
    d.restart().await;
    assert_eq!(d.list_ids().await, vec![id.clone()]);
    assert_data(&d.volume_dir("adopted"), "app-data");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_in_the_base_under_the_volumes_name_is_adopted_where_it_is() {
    let d = Driver::start().await;
    d.create("first", 16 * MIB, mount_cap()).await;
    let dir = d.volume_dir("pvc-1_shop_db");
    make_data_dir(&dir, "db");
    let before = inode(&dir);
    let r = adopt(&d, &dir, "pvc-1_shop_db", 64 * MIB)
        .await
        .expect("adopt in place");
    assert_eq!(r.volume_id, d.volume_id("pvc-1_shop_db"));
    assert_eq!(inode(&dir), before);
    assert_data(&dir, "db");
    let markers = get_xattr(&dir, "trusted.ferrovol.markers").expect("marked");
    assert!(markers.contains(&r.volume_id), "{markers:?}");
    let mut d = d;
    d.restart().await;
    assert_data(&d.volume_dir("pvc-1_shop_db"), "db");
    assert!(d.list_ids().await.contains(&r.volume_id));
}
