//! End-to-end volume lifecycles against the real driver: mount and block volumes through
//! create, attach, stage, publish, unpublish, republish, teardown and delete, plus read-only
//! publications, idempotency, stats, conditions, pagination and expansion.

use crate::common;
mod controller;
mod mount_block;

use common::*;
use ferrovol::proto as csi;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use tonic::Code;

fn same_inode(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// The loop devices attached to a volume's image.
fn loops_of(d: &Driver, name: &str) -> Vec<String> {
    loop_devices_under(&d.volume_dir(name))
        .into_iter()
        .map(|(dev, _)| dev)
        .collect()
}

/// The loop device (one of `candidates`) that the device node at `path` is.
fn device_behind(path: &Path, candidates: &[String]) -> Option<PathBuf> {
    let rdev = fs::metadata(path).ok()?.rdev();
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|c| fs::metadata(c).is_ok_and(|m| m.rdev() == rdev))
}

fn read_ro_option(path: &Path) -> bool {
    let m = mounts_at(path);
    m.last()
        .unwrap_or_else(|| panic!("{} is not mounted", path.display()))
        .read_only()
}
