//! Mounts onto an open file descriptor, never onto a path the kernel would resolve again.
//!
//! A path checked and then handed to mount(2) can be swapped for a symlink in between; a
//! descriptor cannot. The new mount API (Linux 5.2: open_tree, move_mount, fsopen, fsconfig,
//! fsmount; 5.12: mount_setattr) takes descriptors on both sides. On kernels without it the
//! fallback is mount(2) on `/proc/self/fd/N`, which the kernel resolves to exactly the file
//! the descriptor holds (a magic link, not a re-walk of the original path).
//!
//! The calls go through rustix::mount, except mount_setattr, which rustix lacks.

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::mount::{self as rmount, FsMountFlags, FsOpenFlags, MountAttrFlags};
use rustix::mount::{MoveMountFlags, OpenTreeFlags, UnmountFlags};
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use sys_mount::MountFlags;

const EMPTY: &CStr = c"";

fn proc_fd(fd: RawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{fd}"))
}

fn is_enosys(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSYS)
}

/// sys_mount's flags (the ones callers use) as rustix takes them: the same MS_* bits.
fn ms(flags: MountFlags) -> rmount::MountFlags {
    rmount::MountFlags::from_bits_retain(flags.bits() as _)
}

/// MOUNT_ATTR_* bits (set, clear) for the per-mount flags of `flags`.
fn mount_attrs(flags: MountFlags) -> (u64, u64) {
    let set = [
        (MountFlags::RDONLY, libc::MOUNT_ATTR_RDONLY),
        (MountFlags::NOSUID, libc::MOUNT_ATTR_NOSUID),
        (MountFlags::NODEV, libc::MOUNT_ATTR_NODEV),
        (MountFlags::NOEXEC, libc::MOUNT_ATTR_NOEXEC),
        (MountFlags::NODIRATIME, libc::MOUNT_ATTR_NODIRATIME),
    ]
    .into_iter()
    .filter(|(ms, _)| flags.contains(*ms))
    .fold(0, |set, (_, attr)| set | attr);
    // The access-time mode is one field: replacing it means clearing the whole field.
    let atime = [
        (MountFlags::NOATIME, libc::MOUNT_ATTR_NOATIME),
        (MountFlags::STRICTATIME, libc::MOUNT_ATTR_STRICTATIME),
        (MountFlags::RELATIME, libc::MOUNT_ATTR_RELATIME),
    ];
    match atime.into_iter().find(|(ms, _)| flags.contains(*ms)) {
        Some((_, attr)) => (set | attr, libc::MOUNT_ATTR__ATIME),
        None => (set, 0),
    }
}

/// The per-mount flags mount(2) applies on a bind remount.
const PER_MOUNT: MountFlags = MountFlags::RDONLY
    .union(MountFlags::NOSUID)
    .union(MountFlags::NODEV)
    .union(MountFlags::NOEXEC)
    .union(MountFlags::NOATIME)
    .union(MountFlags::NODIRATIME)
    .union(MountFlags::RELATIME)
    .union(MountFlags::STRICTATIME);

fn open_tree_clone(source: BorrowedFd) -> io::Result<OwnedFd> {
    let flags = OpenTreeFlags::OPEN_TREE_CLONE
        | OpenTreeFlags::OPEN_TREE_CLOEXEC
        | OpenTreeFlags::AT_EMPTY_PATH;
    Ok(rmount::open_tree(source, EMPTY, flags)?)
}

fn move_mount_onto(mount: BorrowedFd, target: BorrowedFd) -> io::Result<()> {
    let flags = MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH;
    Ok(rmount::move_mount(mount, EMPTY, target, EMPTY, flags)?)
}

fn mount_setattr(mount: BorrowedFd, set: u64, clear: u64) -> io::Result<()> {
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `attr` lives across the call and its size is passed alongside.
    super::sys::check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mount.as_raw_fd(),
            EMPTY.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    })
    .map(drop)
}

/// Bind-mounts `source` (a path the driver owns: a volume directory or device; a path from a
/// request goes through [`bind_fd_mount_onto`] after an open beneath its root) onto the file
/// or directory `target` refers to. The per-mount bits of `flags` (ro, nosuid, nodev, noexec,
/// atime modes) apply to the new mount only, atomically on Linux 5.12+: the mount is never
/// visible writable when read-only was asked for.
pub fn bind_mount_onto(source: &Path, target: BorrowedFd, flags: MountFlags) -> io::Result<()> {
    let src = rustix::fs::open(source, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| super::fsutil::at("opening ", source)(e.into()))?;
    bind_fd_mount_onto(src.as_fd(), target, flags)
        .map_err(super::fsutil::at("bind-mounting ", source))
}

/// Bind-mounts the file or directory the descriptor `source` holds (O_PATH is enough) onto
/// `target`, with `flags` as [`bind_mount_onto`] applies them.
pub fn bind_fd_mount_onto(
    source: BorrowedFd,
    target: BorrowedFd,
    flags: MountFlags,
) -> io::Result<()> {
    bind_fd_onto(source, target, flags, Api::Newest)
}

/// Which mount interface to use; tests force the older ones to cover the fallbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// open_tree + mount_setattr + move_mount (5.12+).
    Newest,
    /// open_tree + move_mount, then a bind remount of the new mount through its own fd (5.2+).
    NoSetattr,
    /// mount(2) on /proc/self/fd/N (any kernel; plain binds only).
    Legacy,
}

pub(crate) fn bind_fd_onto(
    source: BorrowedFd,
    target: BorrowedFd,
    flags: MountFlags,
    api: Api,
) -> io::Result<()> {
    let per_mount = flags & PER_MOUNT;
    if api == Api::Legacy {
        return bind_legacy(source, target, per_mount);
    }
    let tree = match open_tree_clone(source) {
        Err(e) if is_enosys(&e) => return bind_legacy(source, target, per_mount),
        r => r?,
    };
    let remount_after = match mount_attrs(per_mount) {
        (0, 0) => false,
        _ if api == Api::NoSetattr => true,
        (set, clear) => match mount_setattr(tree.as_fd(), set, clear) {
            Err(e) if is_enosys(&e) => true,
            r => r.map(|()| false)?,
        },
    };
    // On failure the detached clone goes away when `tree` is closed.
    move_mount_onto(tree.as_fd(), target)?;
    if remount_after {
        // The tree fd is the root of the new mount itself, so this cannot touch another one.
        let path = proc_fd(tree.as_raw_fd());
        if let Err(e) = rmount::mount_remount(&path, ms(MountFlags::BIND | per_mount), "") {
            // Never leave a writable mount where a read-only one was asked for.
            let _ = rmount::unmount(&path, UnmountFlags::DETACH);
            return Err(e.into());
        }
    }
    Ok(())
}

fn bind_legacy(source: BorrowedFd, target: BorrowedFd, per_mount: MountFlags) -> io::Result<()> {
    // The kernel ignores per-mount flags on the first MS_BIND and needs a remount of the new
    // mount, which only a path can name: /proc/self/fd/N of the target still resolves to the
    // covered directory, not to the mount stacked on it (the remount fails with EINVAL), and
    // re-walking the original path is what this module exists to avoid. So without open_tree
    // a flagged bind is refused rather than made writable or made on an unchecked path.
    if !per_mount.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this kernel lacks open_tree/move_mount (Linux 5.2+), needed to apply read-only \
             or other per-mount flags to a bind mount made through a descriptor",
        ));
    }
    let src = proc_fd(source.as_raw_fd());
    let dst = proc_fd(target.as_raw_fd());
    Ok(rmount::mount_bind(&src, &dst)?)
}

/// Mounts a new file system of type `fstype` from `source` (a block device, or a name such as
/// "tmpfs") onto `target`. `data` is the comma-separated option string mount(8) would take
/// (values must not contain commas); `flags` carries ro and the per-mount flags. Errors carry
/// the file system's own message when the kernel gives one ("ext4: bad geometry ...").
pub fn fs_mount_onto(
    source: &Path,
    fstype: &str,
    flags: MountFlags,
    data: &str,
    target: BorrowedFd,
) -> io::Result<()> {
    fs_mount_with(source, fstype, flags, data, target, Api::Newest).map_err(|e| {
        let why = format!("mounting {} ({fstype}): {e}", source.display());
        io::Error::new(e.kind(), why)
    })
}

pub(crate) fn fs_mount_with(
    source: &Path,
    fstype: &str,
    flags: MountFlags,
    data: &str,
    target: BorrowedFd,
    api: Api,
) -> io::Result<()> {
    if api != Api::Legacy {
        match rmount::fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC) {
            Err(rustix::io::Errno::NOSYS) => {}
            Err(e) => return Err(e.into()),
            Ok(fs) => return fs_mount_new(&fs, source, flags, data, target),
        }
    }
    let why = "mount options contain a NUL byte";
    let opts = std::ffi::CString::new(data)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, why))?;
    let dst = proc_fd(target.as_raw_fd());
    rmount::mount(source, &dst, fstype, ms(flags), opts.as_c_str()).map_err(Into::into)
}

fn fs_mount_new(
    fs: &OwnedFd,
    source: &Path,
    flags: MountFlags,
    data: &str,
    target: BorrowedFd,
) -> io::Result<()> {
    let configure = || -> rustix::io::Result<OwnedFd> {
        rmount::fsconfig_set_string(fs, "source", source)?;
        // Superblock flags: ro here keeps the file system itself read-only (no journal replay
        // writes), as MS_RDONLY does for mount(2).
        for (ms, name) in [
            (MountFlags::RDONLY, c"ro"),
            (MountFlags::SYNCHRONOUS, c"sync"),
            (MountFlags::DIRSYNC, c"dirsync"),
        ] {
            if flags.contains(ms) {
                rmount::fsconfig_set_flag(fs, name)?;
            }
        }
        for opt in data.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            match opt.split_once('=') {
                Some((key, value)) => rmount::fsconfig_set_string(fs, key, value)?,
                None => rmount::fsconfig_set_flag(fs, opt)?,
            }
        }
        rmount::fsconfig_create(fs)?;
        let (set, _) = mount_attrs(flags & PER_MOUNT);
        let attrs = MountAttrFlags::from_bits_retain(set as _);
        rmount::fsmount(fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
    };
    let mnt = configure().map_err(|e| with_fs_log(fs, e.into()))?;
    move_mount_onto(mnt.as_fd(), target)
}

/// Appends the messages the file system left in its context (read(2) on the fsopen fd).
fn with_fs_log(fs: &OwnedFd, e: io::Error) -> io::Error {
    let mut msgs = Vec::new();
    let mut buf = [0u8; 1024];
    for _ in 0..16 {
        match rustix::io::read(fs, &mut buf) {
            Ok(n) if n > 0 => msgs.push(String::from_utf8_lossy(&buf[..n]).trim().to_string()),
            _ => break,
        }
    }
    if msgs.is_empty() {
        e
    } else {
        io::Error::new(e.kind(), format!("{e} ({})", msgs.join("; ")))
    }
}

/// Whether `fd` is the root of a mount (something is mounted exactly there). Open the path
/// afresh to ask: a descriptor opened before a mount still refers to the covered directory.
pub fn is_mount_root(fd: BorrowedFd) -> io::Result<bool> {
    let why = "this kernel does not report mount roots in statx (Linux 5.8+)";
    let unknown = || io::Error::new(io::ErrorKind::Unsupported, why);
    super::mountinfo::mount_root(fd, EMPTY, AtFlags::EMPTY_PATH)?.ok_or_else(unknown)
}
