//! The scratch directory each test runs in, cleaned up on drop.

use super::*;

/// A fresh temporary directory that, when dropped, lazily unmounts everything mounted at or
/// below it and detaches every loop device whose backing file lies below it.
pub struct Scratch {
    root: PathBuf,
    // Dropped after `Drop for Scratch` has cleaned up, so the tree is removed last.
    _dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ferrovol-test-")
            .tempdir()
            .expect("create temp dir");
        // Canonical, so it compares equal to what the kernel reports in mountinfo and sysfs.
        let root = fs::canonicalize(dir.path()).expect("canonicalize temp dir");
        Scratch { root, _dir: dir }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        cleanup_under(&self.root);
    }
}

/// Unmounts (lazily, deepest first) all mounts at or below `root`, then detaches loop devices
/// backed by files below it. Best effort: never panics, so it is safe during unwinding.
pub fn cleanup_under(root: &Path) {
    // Loop devices are found by their backing file's path, so list them before unmounting: a
    // lazily unmounted file system is detached from the tree, and the backing path of an image
    // on it (a block volume's disk.img on a loop-mounted base) then reads as relative to that
    // file system ("/hostpath/blk/disk.img"), no longer below `root`. Left attached, such a
    // device would also keep the base file system and its own loop device alive.
    let loops = loop_devices_under(root);
    for _ in 0..8 {
        let mut mounts = mounts_under(root);
        if mounts.is_empty() {
            break;
        }
        // Later entries of mountinfo sit on top of earlier ones: undo them first.
        mounts.reverse();
        for m in mounts {
            let _ = status(
                Command::new(tool("umount"))
                    .arg("-l")
                    .arg(&m.mount_point)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            );
        }
    }
    let mut devices: Vec<String> = loops
        .into_iter()
        .chain(loop_devices_under(root))
        .map(|(device, _)| device)
        .collect();
    devices.sort();
    devices.dedup();
    // A device still held open (a file system on it that the lazy unmount has not released
    // yet) is only marked for auto-clear and goes when its last user does.
    for device in devices {
        let _ = status(
            Command::new(tool("losetup"))
                .arg("-d")
                .arg(&device)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
    }
}
