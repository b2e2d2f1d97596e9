//! Small sysfs readers for discovery, and the set of devices that hold the OS.

use crate::os::mountinfo::MountEntry;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Sorted entry names of a directory (holders/, slaves/); empty when absent.
pub fn list(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Partitions of a disk: its sysfs children that have a `partition` attribute.
pub fn partitions(sys: &Path) -> Vec<String> {
    list(sys)
        .into_iter()
        .filter(|n| sys.join(n).join("partition").exists())
        .collect()
}

/// The serial: virtio's `serial`, NVMe's `device/serial`, else SCSI VPD page 0x80.
pub fn serial(disk: &Path) -> Option<String> {
    read_string(&disk.join("serial"))
        .or_else(|| read_string(&disk.join("device/serial")))
        .or_else(|| {
            let page = std::fs::read(disk.join("device/vpd_pg80")).ok()?;
            let len = *page.get(3)? as usize;
            let s = String::from_utf8_lossy(page.get(4..4 + len)?)
                .trim()
                .to_string();
            (!s.is_empty()).then_some(s)
        })
}

/// The world-wide name: NVMe's `wwid`, SCSI's `device/wwid` (naa., eui., t10. designators).
pub fn wwn(disk: &Path) -> Option<String> {
    read_string(&disk.join("wwid"))
        .or_else(|| read_string(&disk.join("device/wwid")))
        .map(|w| w.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Kernel names of the devices under each protected path: the device of its filesystem, the
/// disk of that partition, and everything below it through dm/md slaves (so a root on LVM
/// marks the physical disks too). Paths that do not exist are skipped.
pub fn os_devices(protected: &[PathBuf], mounts: &[MountEntry]) -> HashMap<String, Vec<PathBuf>> {
    let mut out: HashMap<String, Vec<PathBuf>> = HashMap::new();
    for p in protected {
        let Some((major, minor)) = device_of(p, mounts) else {
            continue;
        };
        let Ok(link) = std::fs::read_link(format!("/sys/dev/block/{major}:{minor}")) else {
            continue;
        };
        let mut stack = vec![name_of(&link)];
        while let Some(n) = stack.pop() {
            let v = out.entry(n.clone()).or_default();
            if v.contains(p) {
                continue;
            }
            v.push(p.clone());
            let sys = Path::new("/sys/class/block").join(&n);
            if sys.join("partition").exists() {
                if let Ok(real) = std::fs::canonicalize(&sys) {
                    stack.push(name_of(real.parent().unwrap_or(Path::new("/"))));
                }
            }
            stack.extend(list(&sys.join("slaves")));
        }
    }
    out
}

/// The block device a path's filesystem lives on. Filesystems with an anonymous device
/// (btrfs, overlay: major 0) fall back to the source of the mount that contains the path.
fn device_of(p: &Path, mounts: &[MountEntry]) -> Option<(u32, u32)> {
    let md = std::fs::metadata(p).ok()?;
    let dev = md.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    if major != 0 {
        return Some((major, minor));
    }
    let canon = std::fs::canonicalize(p).ok()?;
    let m = mounts
        .iter()
        .filter(|m| canon.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.as_os_str().len())?;
    if !m.source.starts_with("/dev/") {
        return None;
    }
    let rdev = std::fs::metadata(&m.source).ok()?.rdev();
    Some((libc::major(rdev), libc::minor(rdev)))
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
