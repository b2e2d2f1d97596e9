//! Filesystem size and type of a path.

use nix::sys::statfs::statfs;
use nix::sys::statvfs::statvfs;
use std::io;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStats {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub total_inodes: u64,
    pub free_inodes: u64,
}

pub fn fs_stats(path: &Path) -> io::Result<FsStats> {
    let st = statvfs(path).map_err(io::Error::from)?;
    let frsize = st.fragment_size();
    Ok(FsStats {
        total_bytes: st.blocks() * frsize,
        available_bytes: st.blocks_available() * frsize,
        total_inodes: st.files(),
        free_inodes: st.files_available(),
    })
}

/// The filesystem type of `path` by its superblock magic, for the kinds the driver cares about.
pub fn fs_type(path: &Path) -> io::Result<&'static str> {
    let st = statfs(path).map_err(io::Error::from)?;
    let magic = st.filesystem_type().0 as u64;
    Ok(match magic {
        0x5846_5342 => "xfs",
        0xEF53 => "ext4",
        0x0102_1994 => "tmpfs",
        0x9123_683E => "btrfs",
        0x794c_7630 => "overlayfs",
        _ => "other",
    })
}
