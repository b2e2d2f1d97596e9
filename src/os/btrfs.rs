//! Btrfs subvolumes with qgroup limits: a volume directory made a subvolume gets its own qgroup
//! (0/<subvolume id>), and a limit on its referenced bytes makes writes past the capacity fail
//! with EDQUOT. Needs `btrfs quota enable <mount>` once; no CONFIG_QUOTA in the kernel.

use super::fsutil::uuid_text;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Issues a btrfs ioctl whose argument is a `T` of the size the request encodes.
fn btrfs_ioctl<T>(f: &File, req: libc::c_ulong, arg: &mut T) -> io::Result<()> {
    // SAFETY: callers pass a T matching `req`'s encoded size.
    unsafe { super::sys::ioctl_ptr(f, req, arg) }.map(drop)
}

// _IOW(0x94, 14, btrfs_ioctl_vol_args[4096])
const BTRFS_IOC_SUBVOL_CREATE: libc::c_ulong = 0x5000_940E;
// _IOR(0x94, 43, btrfs_ioctl_qgroup_limit_args[48])
const BTRFS_IOC_QGROUP_LIMIT: libc::c_ulong = 0x8030_942B;
// _IOR(0x94, 31, btrfs_ioctl_fs_info_args[1024])
const BTRFS_IOC_FS_INFO: libc::c_ulong = 0x8400_941F;
// _IOWR(0x94, 18, btrfs_ioctl_ino_lookup_args[4096])
const BTRFS_IOC_INO_LOOKUP: libc::c_ulong = 0xD000_9412;
const BTRFS_QGROUP_LIMIT_MAX_RFER: u64 = 1;
// _IOW(0x94, 23, btrfs_ioctl_vol_args_v2[4096])
const BTRFS_IOC_SNAP_CREATE_V2: libc::c_ulong = 0x5000_9417;
// _IOW(0x94, 15, btrfs_ioctl_vol_args[4096])
const BTRFS_IOC_SNAP_DESTROY: libc::c_ulong = 0x5000_940F;
const BTRFS_SUBVOL_RDONLY: u64 = 1 << 1;
/// Inode number of every subvolume's root directory.
const BTRFS_FIRST_FREE_OBJECTID: u64 = 256;

#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; 4040],
}

#[repr(C)]
#[derive(Default)]
struct QgroupLimitArgs {
    qgroupid: u64,
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; 4080],
}

/// Handle on a btrfs filesystem whose quota (qgroups) is enabled.
#[derive(Debug)]
pub struct BtrfsQgroups {
    sysfs: PathBuf,
}

impl BtrfsQgroups {
    /// Some(handle) when `base` is on btrfs with quota enabled.
    pub fn probe(base: &Path) -> io::Result<Option<Self>> {
        if !is_btrfs(base)? {
            return Ok(None);
        }
        let f = File::open(base)?;
        let mut info = [0u8; 1024];
        btrfs_ioctl(&f, BTRFS_IOC_FS_INFO, &mut info)?;
        let uuid = uuid_text(&info[16..32]);
        let sysfs = Path::new("/sys/fs/btrfs").join(uuid).join("qgroups");
        Ok(sysfs.is_dir().then_some(BtrfsQgroups { sysfs }))
    }

    /// Creates `dir` as a subvolume (AlreadyExists if the name is taken).
    pub fn create_subvolume(&self, dir: &Path) -> io::Result<()> {
        let (parent, mut args) = vol_args(dir)?;
        btrfs_ioctl(&parent, BTRFS_IOC_SUBVOL_CREATE, &mut args)
    }

    /// Whether `dir` is the root of a subvolume.
    pub fn is_subvolume(dir: &Path) -> bool {
        fs::metadata(dir).is_ok_and(|m| m.ino() == BTRFS_FIRST_FREE_OBJECTID)
    }

    /// Limits the bytes the subvolume at `dir` may reference (0 lifts the limit).
    pub fn set_limit(&self, dir: &Path, bytes: u64) -> io::Result<()> {
        let mut args = QgroupLimitArgs {
            // 0: the qgroup of the subvolume the ioctl is issued on.
            qgroupid: 0,
            flags: BTRFS_QGROUP_LIMIT_MAX_RFER,
            max_rfer: if bytes == 0 { u64::MAX } else { bytes },
            ..Default::default()
        };
        btrfs_ioctl(&File::open(dir)?, BTRFS_IOC_QGROUP_LIMIT, &mut args)
    }

    /// Bytes the subvolume at `dir` references, from its qgroup in sysfs.
    pub fn usage(&self, dir: &Path) -> io::Result<u64> {
        let id = subvolume_id(dir)?;
        let text = fs::read_to_string(self.sysfs.join(format!("0_{id}")).join("referenced"))?;
        text.trim().parse().map_err(io::Error::other)
    }
}

/// The parent directory of `path`, its last component copied into the ioctl's `name` field.
fn parent_naming(path: &Path, name: &mut [u8]) -> io::Result<File> {
    let parent = path.parent().ok_or_else(|| io::Error::other("no parent"))?;
    let last = path
        .file_name()
        .ok_or_else(|| io::Error::other("no name"))?
        .as_bytes();
    if last.len() >= name.len() {
        return Err(io::Error::other("subvolume name too long"));
    }
    name[..last.len()].copy_from_slice(last);
    File::open(parent)
}

/// Snapshots the subvolume at `src` as a new subvolume `dst` (O(1): extents are shared until
/// either side writes). `read_only` makes it immutable, as a CSI snapshot must be.
pub fn snapshot(src: &Path, dst: &Path, read_only: bool) -> io::Result<()> {
    let source = File::open(src)?;
    let mut args = VolArgsV2 {
        fd: source.as_raw_fd() as i64,
        transid: 0,
        flags: if read_only { BTRFS_SUBVOL_RDONLY } else { 0 },
        unused: [0; 4],
        name: [0; 4040],
    };
    let parent = parent_naming(dst, &mut args.name)?;
    btrfs_ioctl(&parent, BTRFS_IOC_SNAP_CREATE_V2, &mut args)
}

/// Deletes the subvolume at `dir` with everything in it, read-only or not.
pub fn destroy_subvolume(dir: &Path) -> io::Result<()> {
    let (parent, mut args) = vol_args(dir)?;
    btrfs_ioctl(&parent, BTRFS_IOC_SNAP_DESTROY, &mut args)
}

/// The parent directory of `dir`, and the ioctl arguments that name `dir` in it.
fn vol_args(dir: &Path) -> io::Result<(File, VolArgs)> {
    let mut args = VolArgs {
        fd: 0,
        name: [0; 4088],
    };
    Ok((parent_naming(dir, &mut args.name)?, args))
}

/// Whether `path` is on btrfs.
pub fn is_btrfs(path: &Path) -> io::Result<bool> {
    Ok(super::statfs::fs_type(path)? == "btrfs")
}

fn subvolume_id(dir: &Path) -> io::Result<u64> {
    let mut args = InoLookupArgs {
        treeid: 0,
        objectid: BTRFS_FIRST_FREE_OBJECTID,
        name: [0; 4080],
    };
    btrfs_ioctl(&File::open(dir)?, BTRFS_IOC_INO_LOOKUP, &mut args)?;
    Ok(args.treeid)
}
