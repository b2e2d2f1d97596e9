//! Project quotas (XFS, or ext4 with the `project` feature mounted with `prjquota`): one project
//! per volume directory, so a directory volume cannot grow past its capacity.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::sys::{check, ioctl_ptr};

// quotactl_fd(2) takes any open file on the filesystem, so no block device path is needed
// (works the same on loop devices, LVM and inside a container).
const SYS_QUOTACTL_FD: libc::c_long = 443;
const PRJQUOTA: u32 = 2;
const Q_GETQUOTA: u32 = 0x80_0007;
const Q_SETQUOTA: u32 = 0x80_0008;
const Q_XGETQSTAT: u32 = (b'X' as u32) << 8 | 5;
const FS_QUOTA_PDQ_ENFD: u16 = 0x20;
const QIF_BLIMITS: u32 = 1;
const QIF_SPACE: u32 = 2;
const QIF_INODES: u32 = 8;

const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801C_581F;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401C_5820;
const FS_XFLAG_PROJINHERIT: u32 = 0x200;

#[repr(C)]
#[derive(Default)]
struct IfDqblk {
    bhardlimit: u64,
    bsoftlimit: u64,
    curspace: u64,
    ihardlimit: u64,
    isoftlimit: u64,
    curinodes: u64,
    btime: u64,
    itime: u64,
    valid: u32,
}

#[repr(C)]
#[derive(Default)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

/// Whether quotactl's error `errno` means "no project quota to use here" rather than a failure:
/// quotas off (ESRCH), a kernel or filesystem without them (ENOSYS, EINVAL, ENOTTY,
/// EOPNOTSUPP), or a seccomp filter refusing the call (EPERM: container runtimes' default
/// profiles do: the state query needs no privilege, so EPERM comes from such a filter).
fn means_no_quota(errno: i32) -> bool {
    matches!(
        errno,
        libc::ESRCH | libc::ENOSYS | libc::EINVAL | libc::ENOTTY | libc::EOPNOTSUPP | libc::EPERM
    )
}

/// Handle on a filesystem whose project quotas are enforced.
#[derive(Debug)]
pub struct ProjectQuota {
    root: File,
}

impl ProjectQuota {
    /// Some(handle) when `base` sits on a filesystem that enforces project quotas.
    pub fn probe(base: &Path) -> io::Result<Option<Self>> {
        let root = File::open(base)?;
        let mut stat = [0u8; 256];
        match quotactl(&root, Q_XGETQSTAT, 0, stat.as_mut_ptr().cast()) {
            Ok(()) => {
                let flags = u16::from_ne_bytes([stat[2], stat[3]]);
                Ok((flags & FS_QUOTA_PDQ_ENFD != 0).then_some(ProjectQuota { root }))
            }
            Err(e) if e.raw_os_error().is_some_and(means_no_quota) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Puts `dir` into project `id`, inherited by everything created below it.
    pub fn assign(&self, dir: &Path, id: u32) -> io::Result<()> {
        set_project(&File::open(dir)?, id, true)
    }

    /// The project id `dir` belongs to (0: none).
    pub fn project_of(&self, dir: &Path) -> io::Result<u32> {
        Ok(fs_xattr(&File::open(dir)?)?.projid)
    }

    /// Sets the hard block limit of project `id` (0 removes the limit).
    pub fn set_limit(&self, id: u32, bytes: u64) -> io::Result<()> {
        let mut q = IfDqblk {
            bhardlimit: bytes.div_ceil(1024),
            bsoftlimit: 0,
            valid: QIF_BLIMITS,
            ..Default::default()
        };
        quotactl(&self.root, Q_SETQUOTA, id, (&mut q as *mut IfDqblk).cast())
    }

    /// (limit bytes, used bytes, used inodes) of project `id`.
    pub fn get(&self, id: u32) -> io::Result<(u64, u64, u64)> {
        let mut q = IfDqblk::default();
        quotactl(&self.root, Q_GETQUOTA, id, (&mut q as *mut IfDqblk).cast())?;
        let valid = |flag: u32, v: u64| if q.valid & flag != 0 { v } else { 0 };
        Ok((
            q.bhardlimit * 1024,
            valid(QIF_SPACE, q.curspace),
            valid(QIF_INODES, q.curinodes),
        ))
    }
}

/// Puts `dir`, every directory below it (inheriting) and every regular file below it into
/// project `id`, as `xfs_quota -x -c 'project -s'` does: a project quota counts only the inodes
/// in the project. Symbolic links, devices, fifos and sockets cannot be opened to be changed and
/// are left out (they hold next to no data). Never follows a symlink; a tree of any depth.
pub fn assign_project_tree(dir: &Path, id: u32) -> io::Result<()> {
    use super::dirwalk::{self, Cursor};
    use rustix::fs::OFlags;
    let root = File::open(dir)?;
    set_project(&root, id, true)?;
    let mut cur = Cursor::new(root.into())?;
    while let Some(name) = cur.next_below()? {
        let at = cur.fd().expect("a directory being read is open");
        let st = dirwalk::lstat_at(at, &name)?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                let f = File::from(dirwalk::open_dir_at(at, &name)?);
                set_project(&f, id, true)?;
                cur.push(&name, f.into())?;
            }
            libc::S_IFREG => {
                let fd = dirwalk::open_at(at, &name, OFlags::RDONLY | OFlags::NONBLOCK)?;
                set_project(&File::from(fd), id, false)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Puts the open file or directory `f` into project `id`; `inherit`: what is created below it
/// too.
fn set_project(f: &File, id: u32, inherit: bool) -> io::Result<()> {
    let mut attr = fs_xattr(f)?;
    attr.projid = id;
    if inherit {
        attr.xflags |= FS_XFLAG_PROJINHERIT;
    }
    // SAFETY: the request reads one FsXattr.
    unsafe { ioctl_ptr(f, FS_IOC_FSSETXATTR, &mut attr) }.map(drop)
}

/// The extended attributes (project id, flags) of an open file or directory.
fn fs_xattr(f: &File) -> io::Result<FsXattr> {
    let mut attr = FsXattr::default();
    // SAFETY: the request writes one FsXattr.
    unsafe { ioctl_ptr(f, FS_IOC_FSGETXATTR, &mut attr) }?;
    Ok(attr)
}

/// quotactl_fd(2) of `cmd` on the project quotas of the filesystem `fs` is on.
fn quotactl(fs: &File, cmd: u32, id: u32, addr: *mut libc::c_void) -> io::Result<()> {
    let cmd = (cmd << 8) | PRJQUOTA;
    // SAFETY: addr points to a buffer at least as large as the structure `cmd` reads or writes.
    check(unsafe { libc::syscall(SYS_QUOTACTL_FD, fs.as_raw_fd(), cmd, id, addr) }).map(drop)
}

#[cfg(test)]
mod tests {
    use super::means_no_quota;

    #[test]
    fn seccomp_refusal_means_no_quota_and_io_errors_stay_errors() {
        for errno in [libc::EPERM, libc::ESRCH, libc::ENOSYS, libc::EOPNOTSUPP] {
            assert!(means_no_quota(errno), "errno {errno}");
        }
        for errno in [libc::EIO, libc::EACCES, libc::ENOENT, libc::EBADF] {
            assert!(!means_no_quota(errno), "errno {errno}");
        }
    }
}
