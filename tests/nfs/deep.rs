//! Trees a tenant can make in its own volume do not make it undeletable or uncopiable: a chain
//! of 10,000 nested directories is removed by DeleteVolume and copied whole by a snapshot and a
//! clone, through real gRPC against the real binary and a real nfs-ganesha. The trees are made
//! and checked on the exported directory's disk (through directory descriptors: the paths are
//! far longer than PATH_MAX), over NFSv3 and NFSv4.1. Needs root, nfs-ganesha (VFS) and rpcbind: skipped without them.

use crate::common::nfs;
use crate::common::nfs_snap;

use nfs::*;
use nfs_snap::*;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{mkdirat, Mode};
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

const DEPTH: usize = 10_000;

fn open_dir(at: impl AsFd, name: &str) -> nix::Result<OwnedFd> {
    openat(
        at,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
}

/// Makes `depth` directories named `d`, one inside the other, below `root`, and a file `leaf`
/// in the deepest.
fn make_chain(root: &Path, depth: usize) {
    let mut cur = fs::File::open(root).unwrap().into();
    for _ in 0..depth {
        mkdirat(&cur, "d", Mode::from_bits_truncate(0o755)).unwrap();
        cur = open_dir(&cur, "d").unwrap();
    }
    let f = openat(
        &cur,
        "leaf",
        OFlag::O_CREAT | OFlag::O_WRONLY,
        Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    nix::unistd::write(&f, b"bottom").unwrap();
}

/// How deep the chain below `root` goes, and whether its deepest directory holds `leaf`.
fn chain_depth(root: &Path) -> (usize, bool) {
    let mut cur: OwnedFd = fs::File::open(root).unwrap().into();
    let mut depth = 0;
    while let Ok(next) = open_dir(&cur, "d") {
        cur = next;
        depth += 1;
    }
    let leaf = openat(&cur, "leaf", OFlag::O_RDONLY, Mode::empty()).is_ok();
    (depth, leaf)
}

both_versions_async!(a_tree_10000_deep_is_copied_and_removed);

async fn a_tree_10000_deep_is_copied_and_removed(proto: Proto) {
    if !usable("nfs_deep") {
        return;
    }
    let g = proto.start();
    let d = nfs_driver(&g, &[]).await;
    let p = class(&g, &[("onDelete", "delete")]);
    let v = create(&d, "deep", &p).await;
    let dir = g.export.join(sub_dir(&v));
    make_chain(&dir, DEPTH);
    assert_eq!(chain_depth(&dir), (DEPTH, true));

    let s = snapshot(&d, "deep-snap", &v.volume_id).await;
    let data = g.export.join(".ferrovol/snapshot-data/deep-snap");
    let t0 = std::time::Instant::now();
    while !list(&d, &s.snapshot_id, "").await[0].ready_to_use {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(600),
            "snapshot never ready\n{}",
            d.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(chain_depth(&data), (DEPTH, true), "the snapshot is whole");
    let clone = create_from(&d, "deep-clone", &p, of_volume(&v.volume_id)).await;
    let clone_dir = g.export.join(sub_dir(&clone));
    assert_eq!(chain_depth(&clone_dir), (DEPTH, true), "the clone is whole");

    d.delete(&v.volume_id).await;
    assert!(!dir.exists(), "DeleteVolume removed the whole tree");
    d.delete(&clone.volume_id).await;
    assert!(!clone_dir.exists());
    delete_snapshot(&d, &s.snapshot_id).await;
    assert!(!data.exists());
    assert_no_leftovers(&g);
}
