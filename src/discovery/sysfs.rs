//! Small sysfs readers for discovery, and the set of devices that hold the OS.

use crate::os::mountinfo::MountEntry;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A trimmed, non-empty attribute.
pub fn read_string(p: &Path) -> Option<String> {
    let s = std::fs::read_to_string(p).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

pub fn read_u64(p: &Path) -> Option<u64> {
    read_string(p)?.parse().ok()
}

pub fn name_of(p: &Path) -> String {
    let name = p.file_name().unwrap_or_default();
    name.to_string_lossy().into_owned()
}

/// Sorted entry names of a directory (holders/, slaves/); empty when absent.
pub fn list(dir: &Path) -> Vec<String> {
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    let mut v: Vec<String> =
        (entries.map(|e| e.file_name().to_string_lossy().into_owned())).collect();
    v.sort();
    v
}

/// Partitions of a disk: its sysfs children that have a `partition` attribute.
pub fn partitions(sys: &Path) -> Vec<String> {
    let mut names = list(sys);
    names.retain(|n| sys.join(n).join("partition").exists());
    names
}

/// The serial: virtio's `serial`, NVMe's `device/serial`, else SCSI VPD page 0x80.
pub fn serial(disk: &Path) -> Option<String> {
    read_string(&disk.join("serial"))
        .or_else(|| read_string(&disk.join("device/serial")))
        .or_else(|| {
            let page = std::fs::read(disk.join("device/vpd_pg80")).ok()?;
            let len = *page.get(3)? as usize;
            let s = String::from_utf8_lossy(page.get(4..4 + len)?);
            let s = s.trim();
            (!s.is_empty()).then(|| s.to_string())
        })
}

/// The world-wide name: NVMe's `wwid`, SCSI's `device/wwid` (naa., eui., t10. designators).
pub fn wwn(disk: &Path) -> Option<String> {
    read_string(&disk.join("wwid"))
        .or_else(|| read_string(&disk.join("device/wwid")))
        .map(|w| w.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Where sysfs is read: `/sys`, or the tree `FERROVOL_SYSFS_ROOT` names, a test seam that
/// mirrors a few devices with changed facts (a WWN a loop device lacks) to show discovery a
/// disk shared or swapped under one identity. A device absent from that tree is not seen.
pub fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        std::env::var_os("FERROVOL_SYSFS_ROOT").map_or_else(|| PathBuf::from("/sys"), PathBuf::from)
    })
}

/// The sysfs directory of a block device by kernel name (`<root>/class/block/<name>`).
pub fn class_block(name: &str) -> PathBuf {
    root().join("class/block").join(name)
}

/// The kernel name of the block device with number `major:minor`, from `<root>/dev/block`.
pub fn name_by_number(number: &str) -> Option<String> {
    let link = std::fs::read_link(root().join("dev/block").join(number)).ok()?;
    Some(name_of(&link))
}

/// Kernel names of the devices that hold each existing protected path or share a disk with it:
/// its filesystem's device and the closure over "partition of", "partitions of", slaves and
/// holders. So a root on a partition marks its disk and every sibling (a BIOS-boot partition has
/// no signature and would look blank), and a root on LVM or md marks the disks below and all
/// stacked on them.
pub fn os_devices(protected: &[PathBuf], mounts: &[MountEntry]) -> HashMap<String, Vec<PathBuf>> {
    let mut out: HashMap<String, Vec<PathBuf>> = HashMap::new();
    for p in protected {
        let Some(first) = device_of(p, mounts).and_then(|n| name_by_number(&n)) else {
            continue;
        };
        let mut stack = vec![first];
        while let Some(n) = stack.pop() {
            let v = out.entry(n.clone()).or_default();
            if v.contains(p) {
                continue;
            }
            v.push(p.clone());
            let sys = class_block(&n);
            if sys.join("partition").exists() {
                if let Ok(real) = std::fs::canonicalize(&sys) {
                    stack.push(name_of(real.parent().unwrap_or(Path::new("/"))));
                }
            }
            stack.extend(partitions(&sys));
            stack.extend(list(&sys.join("slaves")));
            stack.extend(list(&sys.join("holders")));
        }
    }
    out
}

/// The number (`major:minor`) of the block device a path's filesystem lives on. Filesystems
/// with an anonymous device (btrfs, overlay: major 0) fall back to the source of the mount that
/// contains the path.
fn device_of(p: &Path, mounts: &[MountEntry]) -> Option<String> {
    let mut dev = std::fs::metadata(p).ok()?.dev();
    if libc::major(dev) == 0 {
        let canon = std::fs::canonicalize(p).ok()?;
        let containing = mounts.iter().filter(|m| canon.starts_with(&m.mount_point));
        let m = containing.max_by_key(|m| m.mount_point.as_os_str().len())?;
        if !m.source.starts_with("/dev/") {
            return None;
        }
        dev = std::fs::metadata(&m.source).ok()?.rdev();
    }
    Some(format!("{}:{}", libc::major(dev), libc::minor(dev)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_filesystem_marks_its_disk() {
        let mounts = crate::os::mountinfo::read().unwrap();
        let os = os_devices(&["/".into(), "/does/not/exist".into()], &mounts);
        // This machine's root is a block device (vda here); whatever it is, it is marked,
        // and a missing path marks nothing.
        assert!(!os.is_empty(), "no device holds /");
        assert!(os.values().all(|v| v == &[PathBuf::from("/")]));
    }
}
