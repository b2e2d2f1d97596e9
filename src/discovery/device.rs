//! One block device as discovery sees it: facts read from sysfs, blkid and the mount table,
//! plus the verdict of the filters (candidate, or excluded with a reason).

use crate::os::blkid::Signature;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The kind of block device, from its kernel name and sysfs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceType {
    #[default]
    Disk,
    Partition,
    Loop,
    Dm,
    Md,
    Ram,
    Zram,
    Rom,
    Nbd,
    Floppy,
}

impl DeviceType {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceType::Disk => "disk",
            DeviceType::Partition => "partition",
            DeviceType::Loop => "loop",
            DeviceType::Dm => "dm",
            DeviceType::Md => "md",
            DeviceType::Ram => "ram",
            DeviceType::Zram => "zram",
            DeviceType::Rom => "rom",
            DeviceType::Nbd => "nbd",
            DeviceType::Floppy => "fd",
        }
    }

    /// From the kernel name (sda, loop3, dm-0, ...) and udev's DEVTYPE (disk/partition).
    pub fn classify(kernel_name: &str, is_partition: bool) -> DeviceType {
        if is_partition {
            return DeviceType::Partition;
        }
        let starts = |p: &str| {
            let rest = kernel_name.strip_prefix(p).unwrap_or_default();
            rest.starts_with(|c: char| c.is_ascii_digit() || c == '-')
        };
        use DeviceType::*;
        // Named after their class, except optical drives (sr0).
        let prefix = |t: DeviceType| if t == Rom { "sr" } else { t.as_str() };
        let classes = [Loop, Dm, Md, Zram, Ram, Rom, Nbd, Floppy];
        let class = classes.into_iter().find(|t| starts(prefix(*t)));
        class.unwrap_or(Disk)
    }
}

/// The filesystem on a device, if blkid found one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filesystem {
    pub fs_type: String,
    pub uuid: Option<String>,
    pub label: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// sda, nvme0n1, loop3, ...
    pub kernel_name: String,
    /// /dev/sda
    pub dev_path: PathBuf,
    /// major:minor
    pub dev_number: String,
    /// The sysfs path under /sys (…/block/sda): stable for a port, like udev's by-path.
    pub sys_path: PathBuf,
    pub by_id: Vec<PathBuf>,
    pub by_path: Vec<PathBuf>,
    pub size_bytes: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    pub rotational: bool,
    pub removable: bool,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub vendor: Option<String>,
    pub wwn: Option<String>,
    /// device-mapper UUID (dm devices only).
    pub dm_uuid: Option<String>,
    pub device_type: DeviceType,
    /// For a partition: its number and its disk's kernel name.
    pub partition_number: Option<u32>,
    pub parent: Option<String>,
    pub partition_table: Option<String>,
    pub filesystem: Option<Filesystem>,
    pub signatures: Vec<Signature>,
    /// Kernel names of devices stacked on this one (/sys/block/X/holders).
    pub holders: Vec<String>,
    /// Kernel names of devices this one is stacked on (/sys/block/X/slaves).
    pub slaves: Vec<String>,
    pub partitions: Vec<String>,
    pub mount_points: Vec<PathBuf>,
    /// Protected paths (/, /boot, state dir, kubelet dir) whose filesystem lives on this
    /// device, or on a device it shares a disk or a holder/slave chain with (a sibling
    /// partition of the OS partition included).
    pub holds_os: Vec<PathBuf>,
    /// open(O_EXCL) failed with EBUSY: someone holds it (a mount, LVM, md, a process).
    pub held_exclusively: bool,
    pub backing_file: Option<PathBuf>,
    pub backing_inode: Option<u64>,
    /// Errors met while reading this device (a failed probe means "not blank").
    pub probe_error: Option<String>,
    pub uid: String,
    pub candidate: bool,
    pub excluded_reason: Option<String>,
    /// The operator's include rules name it and no exclude rule does (see
    /// [`Filters::selects`](super::Filters::selects)): the node reports it to the cluster.
    #[serde(default)]
    pub selected: bool,
}

impl Device {
    /// /dev path and every link: what include/exclude patterns match against.
    pub fn names(&self) -> impl Iterator<Item = &PathBuf> {
        std::iter::once(&self.dev_path)
            .chain(self.by_id.iter())
            .chain(self.by_path.iter())
    }
}

#[cfg(test)]
impl Device {
    /// A blank 1 GiB device with no identity, for pure unit tests.
    pub(crate) fn fake(name: &str, t: DeviceType) -> Device {
        Device {
            kernel_name: name.into(),
            dev_path: PathBuf::from("/dev").join(name),
            dev_number: "8:0".into(),
            sys_path: PathBuf::from("/sys/devices/pci0000:00/0000:00:05.0/block").join(name),
            size_bytes: 1 << 30,
            logical_sector_size: 512,
            physical_sector_size: 512,
            device_type: t,
            ..Device::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_kernel_names() {
        let t = |n, p| DeviceType::classify(n, p);
        assert_eq!(t("loop12", false), DeviceType::Loop);
        assert_eq!(t("dm-0", false), DeviceType::Dm);
        assert_eq!(t("md127", false), DeviceType::Md);
        assert_eq!(t("zram0", false), DeviceType::Zram);
        assert_eq!(t("ram3", false), DeviceType::Ram);
        assert_eq!(t("sr0", false), DeviceType::Rom);
        assert_eq!(t("nbd1", false), DeviceType::Nbd);
        assert_eq!(t("fd0", false), DeviceType::Floppy);
        assert_eq!(t("sda", false), DeviceType::Disk);
        assert_eq!(t("sda1", true), DeviceType::Partition);
        // A disk whose name merely begins like a class is still a disk.
        assert_eq!(t("sdm", false), DeviceType::Disk);
        assert_eq!(t("mdisk", false), DeviceType::Disk);
    }
}
