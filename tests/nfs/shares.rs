//! The NFS controller's share registry, through real gRPC against the real binary and a real
//! nfs-ganesha: a controller replaced with an empty state directory (a new pod) still finds its
//! volumes through the registry; an id whose share no registry knows is never answered OK; ids
//! of the older form (`nfs/<key>`, no share) keep working. The ConfigMap registry against a real
//! API server is in the e2e suite (tests/e2e/nfs.sh). Needs root, nfs-ganesha (VFS) and rpcbind.

use crate::common;
use crate::common::ganesha;
use crate::common::nfs;

use common::*;
use ferrovol::proto as csi;
use ganesha::Ganesha;
use nfs::*;
use std::fs;
use tonic::Code;

/// A registry file outside every driver's scratch directory: it outlives the "pod".
fn registry_file(dir: &tempfile::TempDir) -> String {
    dir.path()
        .join("nfs-shares.json")
        .to_string_lossy()
        .into_owned()
}

#[tokio::test]
async fn a_controller_on_an_empty_state_dir_finds_and_deletes_its_volumes() {
    if !usable("nfs_shares") {
        return;
    }
    let g = Ganesha::start();
    let keep = tempfile::tempdir().unwrap();
    let reg = registry_file(&keep);
    let p = class(&g, &[]);
    let d = nfs_driver(&g, &["--nfs-registry-file", &reg]).await;
    let v = create(&d, "pvc-kept", &p).await;
    let dir = g.export.join(sub_dir(&v));
    fs::write(dir.join("data"), "x").unwrap();
    drop(d);

    // A new pod: fresh scratch, so an empty state directory; the registry is the one kept.
    let d = nfs_driver(&g, &["--nfs-registry-file", &reg]).await;
    assert!(!d.state_dir().join("nfs-shares.json").exists());
    assert_eq!(d.list_ids().await, vec![v.volume_id.clone()]);
    assert_eq!(
        d.get(&v.volume_id).await.volume.unwrap().volume_id,
        v.volume_id
    );
    d.delete(&v.volume_id).await;
    assert!(!dir.exists(), "DeleteVolume removed the directory");
    assert!(records(&g).is_empty());
}

#[tokio::test]
async fn an_id_whose_share_is_not_registered_is_never_deleted_as_gone() {
    if !usable("nfs_shares") {
        return;
    }
    let g = Ganesha::start();
    let p = class(&g, &[]);
    let d = nfs_driver(&g, &[]).await;
    let v = create(&d, "pvc-lost", &p).await;
    let dir = g.export.join(sub_dir(&v));
    fs::write(dir.join("data"), "precious").unwrap();
    drop(d);

    // A new pod whose registry went with its state directory.
    let d = nfs_driver(&g, &[]).await;
    let st = d.delete_refused(&v.volume_id).await;
    assert_eq!(st.code(), Code::FailedPrecondition, "{st:?}");
    assert!(
        st.message().contains(&v.volume_id) && st.message().contains("not registered"),
        "the error names the volume and what is missing: {st:?}"
    );
    let st = d
        .controller()
        .controller_get_volume(get_req(&v.volume_id))
        .await;
    expect_code(st, Code::FailedPrecondition, "ControllerGetVolume");
    assert_eq!(fs::read_to_string(dir.join("data")).unwrap(), "precious");
    assert_eq!(records(&g).len(), 1, "the record stays");
    drop(d);

    // Once the share is given again, the same id deletes.
    let share = format!("127.0.0.1:{}", g.share());
    let d = nfs_driver(&g, &["--nfs-share", &share]).await;
    d.delete(&v.volume_id).await;
    assert!(!dir.exists());
    assert!(records(&g).is_empty());
    // An id that is not ours at all is still deleted OK (csi-sanity expects it).
    d.delete("reallyfakevolumeid").await;
}

#[tokio::test]
async fn ids_of_the_older_form_keep_working() {
    if !usable("nfs_shares") {
        return;
    }
    let g = Ganesha::start();
    let p = class(&g, &[]);
    let mut d = nfs_driver(&g, &[]).await;
    let v = create(&d, "pvc-old", &p).await;
    let (prefix, key) = v.volume_id.rsplit_once('/').unwrap();
    assert!(prefix.starts_with("nfs/") && prefix.len() == 12, "{prefix}");
    let old_id = format!("nfs/{key}");
    // The older form of a volume that has the newer id is not that volume.
    d.delete(&old_id).await;
    let dir = g.export.join(sub_dir(&v));
    assert!(dir.is_dir());

    // As a controller before ids named their share recorded it.
    let record = g
        .export
        .join(".ferrovol/volumes")
        .join(format!("{key}.json"));
    let text = fs::read_to_string(&record).unwrap();
    let needle = format!("\"{}\"", v.volume_id);
    assert!(text.contains(&needle), "{text}");
    fs::write(&record, text.replace(&needle, &format!("\"{old_id}\""))).unwrap();
    d.restart().await;

    assert_eq!(d.list_ids().await, vec![old_id.clone()]);
    assert_eq!(d.get(&old_id).await.volume.unwrap().volume_id, old_id);
    d.controller()
        .controller_expand_volume(csi::ControllerExpandVolumeRequest {
            volume_id: old_id.clone(),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: 128 * MIB,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("ControllerExpandVolume {old_id}: {e}"));
    // The newer id of the same name is not the older volume.
    d.delete(&v.volume_id).await;
    assert!(dir.is_dir());
    d.delete(&old_id).await;
    assert!(!dir.exists());
    assert!(records(&g).is_empty());
}
