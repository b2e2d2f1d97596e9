//! Mounts onto an open file descriptor, never onto a path the kernel would resolve again.
//!
//! A path checked and then handed to mount(2) can be swapped for a symlink in between; a
//! descriptor cannot. The new mount API (Linux 5.2: open_tree, move_mount, fsopen, fsconfig,
//! fsmount; 5.12: mount_setattr) takes descriptors on both sides. On kernels without it the
//! fallback is mount(2) on `/proc/self/fd/N`, which the kernel resolves to exactly the file
//! the descriptor holds (a magic link, not a re-walk of the original path).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use sys_mount::MountFlags;

const EMPTY: &CStr = c"";

fn cstring(s: &[u8], what: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn owned(rc: libc::c_long) -> io::Result<OwnedFd> {
    // SAFETY: a successful open_tree/fsopen/fsmount returns a new descriptor we now own.
    check(rc).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn proc_fd(fd: RawFd) -> CString {
    CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL in a /proc path")
}

fn is_enosys(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSYS)
}

/// MOUNT_ATTR_* bits (set, clear) for the per-mount flags of `flags`.
fn mount_attrs(flags: MountFlags) -> (u64, u64) {
    let mut set = 0;
    let mut clear = 0;
    for (ms, attr) in [
        (MountFlags::RDONLY, libc::MOUNT_ATTR_RDONLY),
        (MountFlags::NOSUID, libc::MOUNT_ATTR_NOSUID),
        (MountFlags::NODEV, libc::MOUNT_ATTR_NODEV),
        (MountFlags::NOEXEC, libc::MOUNT_ATTR_NOEXEC),
        (MountFlags::NODIRATIME, libc::MOUNT_ATTR_NODIRATIME),
    ] {
        if flags.contains(ms) {
            set |= attr;
        }
    }
    // The access-time mode is one field: replacing it means clearing the whole field.
    for (ms, attr) in [
        (MountFlags::NOATIME, libc::MOUNT_ATTR_NOATIME),
        (MountFlags::STRICTATIME, libc::MOUNT_ATTR_STRICTATIME),
        (MountFlags::RELATIME, libc::MOUNT_ATTR_RELATIME),
    ] {
        if flags.contains(ms) {
            set |= attr;
            clear |= libc::MOUNT_ATTR__ATIME;
            break;
        }
    }
    (set, clear)
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
    let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as u32;
    // SAFETY: plain syscall with a valid fd, a NUL-terminated path and flags.
    owned(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            source.as_raw_fd(),
            EMPTY.as_ptr(),
            flags,
        )
    })
}

fn move_mount_onto(mount: BorrowedFd, target: BorrowedFd) -> io::Result<()> {
    let flags = libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH;
    // SAFETY: plain syscall with valid fds and NUL-terminated empty paths.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            EMPTY.as_ptr(),
            target.as_raw_fd(),
            EMPTY.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

fn mount_setattr(mount: BorrowedFd, set: u64, clear: u64) -> io::Result<()> {
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `attr` lives across the call and its size is passed alongside.
    check(unsafe {
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

/// mount(2) with C strings; `None` passes NULL.
fn mount2(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: MountFlags,
    data: Option<&CStr>,
) -> io::Result<()> {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is NULL or a live NUL-terminated string.
    let rc = unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags.bits() as libc::c_ulong,
            ptr(data).cast(),
        )
    };
    check(rc as libc::c_long).map(drop)
}

/// Bind-mounts `source` (a path the driver owns: a volume directory or device; a path from a
/// request goes through [`bind_fd_mount_onto`] after an open beneath its root) onto the file
/// or directory `target` refers to. `read_only` and the per-mount bits of `flags` (ro, nosuid,
/// nodev, noexec, atime modes) apply to the new mount only, atomically on Linux 5.12+: the
/// mount is never visible writable when read-only was asked for.
pub fn bind_mount_onto(
    source: &Path,
    target: BorrowedFd,
    read_only: bool,
    flags: MountFlags,
) -> io::Result<()> {
    let src = nix::fcntl::open(
        source,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("opening {}: {e}", source.display()),
        )
    })?;
    let flags = if read_only {
        flags | MountFlags::RDONLY
    } else {
        flags
    };
    bind_fd_onto(src.as_fd(), target, flags, Api::Newest)
        .map_err(|e| io::Error::new(e.kind(), format!("bind-mounting {}: {e}", source.display())))
}

/// Bind-mounts the file or directory the descriptor `source` holds (O_PATH is enough) onto
/// `target`, with `read_only` and `flags` as [`bind_mount_onto`] applies them.
pub fn bind_fd_mount_onto(
    source: BorrowedFd,
    target: BorrowedFd,
    read_only: bool,
    flags: MountFlags,
) -> io::Result<()> {
    let flags = if read_only {
        flags | MountFlags::RDONLY
    } else {
        flags
    };
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
    let tree_fd = tree.as_fd();
    let (set, clear) = mount_attrs(per_mount);
    let mut remount_after = false;
    if set != 0 || clear != 0 {
        if api == Api::NoSetattr {
            remount_after = true;
        } else {
            match mount_setattr(tree_fd, set, clear) {
                Err(e) if is_enosys(&e) => remount_after = true,
                r => r?,
            }
        }
    }
    // On failure the detached clone goes away when `tree` is closed.
    move_mount_onto(tree_fd, target)?;
    if remount_after {
        // The tree fd is the root of the new mount itself, so this cannot touch another one.
        let path = proc_fd(tree.as_raw_fd());
        let r = mount2(
            None,
            &path,
            None,
            MountFlags::BIND | MountFlags::REMOUNT | per_mount,
            None,
        );
        if let Err(e) = r {
            undo(&path);
            return Err(e);
        }
    }
    Ok(())
}

/// Detaches a mount we just made because its flags could not be applied: never leave a
/// writable mount where a read-only one was asked for.
fn undo(path: &CStr) {
    // SAFETY: NUL-terminated path.
    unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
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
    mount2(Some(&src), &dst, None, MountFlags::BIND, None)
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
        io::Error::new(
            e.kind(),
            format!("mounting {} ({fstype}): {e}", source.display()),
        )
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
    let src = cstring(source.as_os_str().as_bytes(), "mount source")?;
    let fst = cstring(fstype.as_bytes(), "file system type")?;
    if api != Api::Legacy {
        // SAFETY: NUL-terminated name and flags.
        match owned(unsafe { libc::syscall(libc::SYS_fsopen, fst.as_ptr(), libc::FSOPEN_CLOEXEC) })
        {
            Err(e) if is_enosys(&e) => {}
            Err(e) => return Err(e),
            Ok(fs) => return fs_mount_new(&fs, &src, flags, data, target),
        }
    }
    let opts = cstring(data.as_bytes(), "mount options")?;
    let dst = proc_fd(target.as_raw_fd());
    mount2(Some(&src), &dst, Some(&fst), flags, Some(&opts))
}

fn fsconfig(
    fs: &OwnedFd,
    cmd: libc::c_uint,
    key: Option<&CStr>,
    value: Option<&CStr>,
) -> io::Result<()> {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: valid fd; key/value are NULL or live NUL-terminated strings; aux unused (0).
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            cmd,
            ptr(key),
            ptr(value),
            0,
        )
    })
    .map(drop)
}

fn fs_mount_new(
    fs: &OwnedFd,
    source: &CStr,
    flags: MountFlags,
    data: &str,
    target: BorrowedFd,
) -> io::Result<()> {
    let configure = || -> io::Result<OwnedFd> {
        fsconfig(fs, libc::FSCONFIG_SET_STRING, Some(c"source"), Some(source))?;
        // Superblock flags: ro here keeps the file system itself read-only (no journal replay
        // writes), as MS_RDONLY does for mount(2).
        for (ms, name) in [
            (MountFlags::RDONLY, c"ro"),
            (MountFlags::SYNCHRONOUS, c"sync"),
            (MountFlags::DIRSYNC, c"dirsync"),
        ] {
            if flags.contains(ms) {
                fsconfig(fs, libc::FSCONFIG_SET_FLAG, Some(name), None)?;
            }
        }
        for opt in data.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(cstring(v.as_bytes(), "mount option")?)),
                None => (opt, None),
            };
            let key = cstring(key.as_bytes(), "mount option")?;
            match &value {
                Some(v) => fsconfig(fs, libc::FSCONFIG_SET_STRING, Some(&key), Some(v))?,
                None => fsconfig(fs, libc::FSCONFIG_SET_FLAG, Some(&key), None)?,
            }
        }
        fsconfig(fs, libc::FSCONFIG_CMD_CREATE, None, None)?;
        let (set, _) = mount_attrs(flags & PER_MOUNT);
        // SAFETY: valid fd, flags and attribute bits.
        owned(unsafe {
            libc::syscall(
                libc::SYS_fsmount,
                fs.as_raw_fd(),
                libc::FSMOUNT_CLOEXEC,
                set,
            )
        })
    };
    let mnt = configure().map_err(|e| with_fs_log(fs, e))?;
    move_mount_onto(mnt.as_fd(), target)
}

/// Appends the messages the file system left in its context (read(2) on the fsopen fd).
fn with_fs_log(fs: &OwnedFd, e: io::Error) -> io::Error {
    let mut msgs = Vec::new();
    let mut buf = [0u8; 1024];
    for _ in 0..16 {
        // SAFETY: reading into a live buffer of the given length.
        let n = unsafe { libc::read(fs.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        msgs.push(
            String::from_utf8_lossy(&buf[..n as usize])
                .trim()
                .to_string(),
        );
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
    // SAFETY: statx fills the zeroed struct; fd and empty path are valid.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_BASIC_STATS,
            &mut stx,
        )
    };
    check(rc as libc::c_long)?;
    let bit = libc::STATX_ATTR_MOUNT_ROOT as u64;
    if stx.stx_attributes_mask & bit == 0 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this kernel does not report mount roots in statx (Linux 5.8+)",
        ));
    }
    Ok(stx.stx_attributes & bit != 0)
}
