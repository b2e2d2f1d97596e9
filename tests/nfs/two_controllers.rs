//! Two NFS controllers on one share, as a rollout overlaps the old pod and the new one: the
//! second starts (and runs recovery) while the first is in the middle of a clone or a snapshot
//! copy, and is asked about what is being made. Only the holder of the share's lease recovers,
//! rolls back or resumes, so the first one's work finishes whole. Real gRPC, real binaries,
//! real nfs-ganesha (root only).

use crate::common;
use crate::common::ganesha;
use crate::common::nfs;
use crate::common::nfs_snap;

use common::*;
use ferrovol::proto as csi;
use ganesha::Ganesha;
use nfs::*;
use nfs_snap::{list, snapshot};
use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

const FILES: usize = 4000;

async fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn lease_names(export: &Path, state_dir: &Path) -> bool {
    fs::read_to_string(export.join(".ferrovol/controller-lease.json"))
        .is_ok_and(|l| l.contains(&format!("{}\"", state_dir.display())))
}

/// The first controller, sharing registry file `reg`, once it holds the share's lease, and a
/// volume of class `p` on it holding FILES files.
async fn first_with_source(
    g: &Ganesha,
    reg: &str,
    p: &HashMap<String, String>,
) -> (Driver, csi::Volume) {
    let first = nfs_driver(g, &["--nfs-registry-file", reg]).await;
    let src = create(&first, "src", p).await;
    let src_dir = g.export.join(sub_dir(&src));
    for i in 0..FILES {
        fs::write(src_dir.join(format!("f{i}")), i.to_string()).unwrap();
    }
    wait_for(
        "the first controller's lease",
        Duration::from_secs(20),
        || lease_names(&g.export, &first.state_dir()),
    )
    .await;
    (first, src)
}

#[tokio::test]
async fn a_second_controller_never_rolls_back_the_first_ones_create() {
    if !usable("nfs_two_controllers") {
        return;
    }
    let g = Ganesha::start();
    let keep = tempfile::tempdir().unwrap();
    let reg = keep.path().join("nfs-shares.json");
    let reg = reg.to_str().unwrap();
    let p = class(&g, &[]);
    let (first, src) = first_with_source(&g, reg, &p).await;

    let mut clone = req("clone", &p);
    clone.volume_content_source = Some(csi::VolumeContentSource {
        r#type: Some(csi::volume_content_source::Type::Volume(
            csi::volume_content_source::VolumeSource {
                volume_id: src.volume_id.clone(),
            },
        )),
    });
    let mut ctl = first.controller();
    let making = tokio::spawn(async move { ctl.create_volume(clone).await });
    let content = g.export.join(".ferrovol/staging/clone/content");
    wait_for("the clone's copy to begin", Duration::from_secs(20), || {
        content.is_dir()
    })
    .await;

    // The new pod's controller: recovery at its start, then a call about the volume in flight.
    let second = nfs_driver(&g, &["--nfs-registry-file", reg]).await;
    let id = nfs_id(&g, "clone");
    let got = second
        .controller()
        .controller_get_volume(get_req(&id))
        .await;
    assert!(got.is_err(), "the volume is not made yet: {got:?}");

    let made = making
        .await
        .unwrap()
        .unwrap_or_else(|e| {
            panic!(
                "the first controller's clone failed: {e}\n--- second controller ---\n{}",
                second.log()
            )
        })
        .into_inner()
        .volume
        .unwrap();
    let dir = g.export.join(sub_dir(&made));
    assert_eq!(
        dir_names(&dir).len(),
        FILES,
        "the clone has every file\n--- second controller ---\n{}",
        second.log()
    );
    assert!(
        lease_names(&g.export, &first.state_dir()),
        "the first controller keeps the lease while it lives"
    );
    assert_eq!(
        second.get(&made.volume_id).await.volume.unwrap().volume_id,
        id
    );

    // The first controller goes away: the second takes the lease over once it has seen it
    // unrenewed for its whole term.
    drop(first);
    wait_for(
        "the second controller to take the lease",
        Duration::from_secs(40),
        || lease_names(&g.export, &second.state_dir()),
    )
    .await;
    second.delete(&made.volume_id).await;
    second.delete(&src.volume_id).await;
    assert!(records(&g).is_empty());
}

#[tokio::test]
async fn a_second_controller_never_copies_over_the_first_ones_snapshot() {
    if !usable("nfs_two_controllers") {
        return;
    }
    let g = Ganesha::start();
    let keep = tempfile::tempdir().unwrap();
    let reg = keep.path().join("nfs-shares.json");
    let reg = reg.to_str().unwrap();
    let p = class(&g, &[]);
    let (first, src) = first_with_source(&g, reg, &p).await;

    let s = snapshot(&first, "snap", &src.volume_id).await;
    assert!(!s.ready_to_use, "{FILES} files take longer than the wait");
    // The new pod's controller lists and asks for the snapshot while the first one copies it.
    let second = nfs_driver(&g, &["--nfs-registry-file", reg]).await;
    assert!(!list(&second, &s.snapshot_id, "").await[0].ready_to_use);
    assert!(!snapshot(&second, "snap", &src.volume_id).await.ready_to_use);

    let t0 = Instant::now();
    while !snapshot(&first, "snap", &src.volume_id).await.ready_to_use {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the snapshot never became ready\n--- second controller ---\n{}",
            second.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        dir_names(&g.export.join(".ferrovol/snapshot-data/snap")).len(),
        FILES,
        "the snapshot has every file"
    );
    assert!(
        !second.log().contains("resuming") && !first.log().contains("snapshot copy failed"),
        "one copy, never restarted\n--- first ---\n{}\n--- second ---\n{}",
        first.log(),
        second.log()
    );
}
