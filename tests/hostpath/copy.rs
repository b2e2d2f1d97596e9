//! Copies of hostpath volumes (snapshots and clones on a base without btrfs subvolumes) under
//! the conditions a live volume brings: a pod renaming files while the copy runs, and trees far
//! deeper than a path can name. Needs root (the driver binds and marks with trusted xattrs).

use crate::common;
use crate::common::hostpath_snap as support;

use common::*;
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use support::*;

/// How deep the chain of directories in the deep-tree test goes: far beyond PATH_MAX (4096
/// bytes) for its path and beyond any descriptor-per-level walk within the test's fd limit.
const DEPTH: usize = 10_000;
const LEAF: &[u8] = b"at the bottom";

fn open_dir_at(dir: RawFd, name: &str) -> OwnedFd {
    let c = CString::new(name).unwrap();
    // SAFETY: a valid NUL-terminated name; the fd is owned by the caller.
    let fd = unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    assert!(fd >= 0, "open {name}: {}", std::io::Error::last_os_error());
    // SAFETY: just returned by openat.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Makes `root/d/d/.../d/leaf` with `depth` directories `d`, one level at a time through
/// descriptors (the whole path is far too long for any path-based call).
fn make_chain(root: &Path, depth: usize) {
    let mut cur = fs::File::open(root).map(OwnedFd::from).unwrap();
    let d = CString::new("d").unwrap();
    for _ in 0..depth {
        // SAFETY: valid name and descriptor.
        assert_eq!(
            unsafe { libc::mkdirat(cur.as_raw_fd(), d.as_ptr(), 0o755) },
            0
        );
        cur = open_dir_at(cur.as_raw_fd(), "d");
    }
    let leaf = CString::new("leaf").unwrap();
    // SAFETY: as above; the new file's fd is closed right after the write.
    let fd = unsafe {
        libc::openat(
            cur.as_raw_fd(),
            leaf.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            0o644,
        )
    };
    assert!(fd >= 0);
    let f = unsafe { fs::File::from_raw_fd(fd) };
    std::io::Write::write_all(&mut &f, LEAF).unwrap();
}

/// Walks the chain under `root` and returns how deep it goes and what its leaf holds.
fn read_chain(root: &Path) -> (usize, Vec<u8>) {
    let mut cur = fs::File::open(root).map(OwnedFd::from).unwrap();
    let mut depth = 0;
    loop {
        let names = dir_entries(cur.as_raw_fd());
        if names == ["d"] {
            cur = open_dir_at(cur.as_raw_fd(), "d");
            depth += 1;
            continue;
        }
        assert_eq!(names, ["leaf"], "at depth {depth}");
        let leaf = CString::new("leaf").unwrap();
        // SAFETY: as in make_chain.
        let fd = unsafe { libc::openat(cur.as_raw_fd(), leaf.as_ptr(), libc::O_RDONLY) };
        assert!(fd >= 0);
        let data = std::io::read_to_string(unsafe { fs::File::from_raw_fd(fd) }).unwrap();
        return (depth, data.into_bytes());
    }
}

/// The names in the directory `fd`, sorted.
fn dir_entries(fd: RawFd) -> Vec<String> {
    let path = format!("/proc/self/fd/{fd}");
    let mut names: Vec<String> = fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_chain_ten_thousand_directories_deep_snapshots_clones_and_deletes() {
    let d = Driver::start().await;
    let src = d.create("deep", 64 * MIB, mount_cap()).await;
    make_chain(&d.volume_dir("deep"), DEPTH);

    let snap = snapshot(&d, "deep-snap", &src.volume_id).await;
    let mut ids = vec![src.volume_id.clone()];
    for (name, snap_id, vol_id) in [
        ("from-snap", Some(snap.snapshot_id.as_str()), None),
        ("clone", None, Some(src.volume_id.as_str())),
    ] {
        let v = d
            .controller()
            .create_volume(from_source(name, 64 * MIB, mount_cap(), snap_id, vol_id))
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e:?}"))
            .into_inner()
            .volume
            .unwrap();
        assert_eq!(
            read_chain(&d.volume_dir(name)),
            (DEPTH, LEAF.to_vec()),
            "{name}"
        );
        ids.push(v.volume_id);
    }

    // Stats walk the tree too where no quota counts it.
    let staging = d.staging("clone");
    d.stage(&ids[2], &staging, mount_cap()).await;
    let stats = d.stats(&ids[2], &staging).await;
    let inodes = stats
        .usage
        .iter()
        .find(|u| u.unit == ferrovol::proto::volume_usage::Unit::Inodes as i32)
        .expect("inode usage");
    assert!(inodes.used as usize > DEPTH, "{stats:?}");
    d.unstage(&ids[2], &staging).await;

    delete_snapshot(&d, &snap.snapshot_id).await;
    for id in &ids {
        d.delete(id).await;
    }
    assert_clean(&d);
}

#[tokio::test]
async fn snapshots_and_clones_of_a_volume_a_pod_keeps_renaming_succeed() {
    let d = Driver::start().await;
    let src = d.create("busy", 64 * MIB, mount_cap()).await;
    let dir = d.volume_dir("busy");
    fs::create_dir(dir.join("work")).unwrap();
    for i in 0..200 {
        fs::write(dir.join(format!("work/a{i}")), vec![b'x'; 4096]).unwrap();
    }
    // The pod: renames every file back and forth, and replaces directories, without pause.
    let stop = Arc::new(AtomicBool::new(false));
    let pod = {
        let (stop, dir) = (stop.clone(), dir.join("work"));
        std::thread::spawn(move || {
            let mut flip = false;
            while !stop.load(Ordering::Relaxed) {
                let (from, to) = if flip { ("b", "a") } else { ("a", "b") };
                for i in 0..200 {
                    let _ =
                        fs::rename(dir.join(format!("{from}{i}")), dir.join(format!("{to}{i}")));
                }
                let _ = fs::create_dir_all(dir.join(format!("sub-{to}/x")));
                let _ = fs::write(dir.join(format!("sub-{to}/x/f")), b"f");
                let _ = fs::remove_dir_all(dir.join(format!("sub-{from}")));
                flip = !flip;
            }
        })
    };
    let base = d.base().display().to_string();
    let mut failures = Vec::new();
    for i in 0..30 {
        let name = format!("snap-{i}");
        match d
            .controller()
            .create_snapshot(snap_req(&name, &src.volume_id))
            .await
        {
            Ok(_) => {}
            Err(e) => failures.push(format!("{name}: {:?} {}", e.code(), e.message())),
        }
    }
    for i in 0..5 {
        let name = format!("clone-{i}");
        match d
            .controller()
            .create_volume(from_source(
                &name,
                64 * MIB,
                mount_cap(),
                None,
                Some(&src.volume_id),
            ))
            .await
        {
            Ok(v) => d.delete(&v.into_inner().volume.unwrap().volume_id).await,
            Err(e) => failures.push(format!("{name}: {:?} {}", e.code(), e.message())),
        }
    }
    stop.store(true, Ordering::Relaxed);
    pod.join().unwrap();
    for f in &failures {
        assert!(!f.contains(&base), "a host path in the answer: {f}");
    }
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );

    for i in 0..30 {
        delete_snapshot(&d, &format!("hostpath/{NODE}/snap/snap-{i}")).await;
    }
    d.delete(&src.volume_id).await;
    assert_clean(&d);
}
