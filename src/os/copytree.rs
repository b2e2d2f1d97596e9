//! Copies a directory tree for snapshots and clones, by reflink (FICLONE) where the filesystem
//! shares extents, by a sparse byte copy otherwise. Preserves modes, owners, times, xattrs,
//! hard links, holes, symlinks (never followed) and device nodes.
//!
//! The walk is descriptor-relative (`openat` with O_NOFOLLOW): a pod that swaps a directory
//! for a symlink while its volume is copied cannot make the copy read or write outside the
//! two trees. Directories on another device (mounts, nested btrfs subvolumes) are recreated
//! empty, as a btrfs snapshot would show them. Xattrs of symlinks are not copied (Linux allows
//! no user.* xattrs on them). The driver's own `trusted.ferrovol.*` markers are never copied.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// How file contents reach the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// FICLONE each file (shared extents); a file the kernel refuses to clone is copied.
    Reflink,
    /// Copy the bytes of each data extent, leaving holes as holes.
    Copy,
}

/// What a copy did, for logs and the benchmark.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub files: u64,
    pub dirs: u64,
    pub reflinked: u64,
    pub bytes_copied: u64,
    pub hard_links: u64,
}

/// Xattrs of the driver itself: they name the volume a directory belongs to and must not
/// follow the data into a copy.
const PRIVATE_XATTR_PREFIX: &[u8] = b"trusted.ferrovol.";

// _IOW(0x94, 9, int)
const FICLONE: libc::c_ulong = 0x4004_9409;

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::other("file name contains NUL"))
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn open_at(dir: RawFd, name: &CStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    // SAFETY: a valid NUL-terminated name; the returned fd is owned by us alone.
    let fd = check(unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: fd was just returned by openat.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let p = cstr(path.as_os_str())?;
    open_at(libc::AT_FDCWD, &p, libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

fn lstat_at(dir: RawFd, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: as in fstat; the name is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

/// The names in a directory, read through a duplicate of its descriptor.
fn entries(dir: RawFd) -> io::Result<Vec<CString>> {
    // SAFETY: dup returns a new fd that fdopendir takes over (closedir closes it).
    let dup = check(unsafe { libc::fcntl(dir, libc::F_DUPFD_CLOEXEC, 0) })?;
    let d = unsafe { libc::fdopendir(dup) };
    if d.is_null() {
        let e = io::Error::last_os_error();
        unsafe { libc::close(dup) };
        return Err(e);
    }
    unsafe { libc::rewinddir(d) };
    let mut out = Vec::new();
    loop {
        // SAFETY: d is a live DIR*; the entry is read before the next readdir call.
        let ent = unsafe { libc::readdir(d) };
        if ent.is_null() {
            break;
        }
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            out.push(name.to_owned());
        }
    }
    unsafe { libc::closedir(d) };
    Ok(out)
}

/// Copies every xattr of `src` to `dst` except the driver's markers. Security and system
/// attributes the destination refuses are skipped; user.* and trusted.* must copy.
fn copy_xattrs(src: RawFd, dst: RawFd) -> io::Result<()> {
    let mut names = vec![0u8; 4096];
    let n = loop {
        // SAFETY: the buffer is valid for its length.
        let n = unsafe { libc::flistxattr(src, names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(()),
            _ => return Err(e),
        }
    };
    let mut value = vec![0u8; 4096];
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        if name.starts_with(PRIVATE_XATTR_PREFIX) {
            continue;
        }
        let cname = CString::new(name).expect("split at NUL");
        let len = loop {
            // SAFETY: as above.
            let len = unsafe {
                libc::fgetxattr(src, cname.as_ptr(), value.as_mut_ptr().cast(), value.len())
            };
            if len >= 0 {
                break len as usize;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) => value.resize(value.len() * 4, 0),
                _ => return Err(e),
            }
        };
        // SAFETY: value holds len initialized bytes.
        let rc = unsafe { libc::fsetxattr(dst, cname.as_ptr(), value.as_ptr().cast(), len, 0) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            let optional = name.starts_with(b"security.") || name.starts_with(b"system.");
            if !optional {
                return Err(io::Error::new(
                    e.kind(),
                    format!("set xattr {}: {e}", String::from_utf8_lossy(name)),
                ));
            }
        }
    }
    Ok(())
}

/// Owner, then mode (chown clears set-id bits), then times, all through `fd`.
fn copy_attrs(st: &libc::stat, fd: RawFd) -> io::Result<()> {
    // SAFETY: plain syscalls on a live fd; times is a 2-element array as futimens wants.
    check(unsafe { libc::fchown(fd, st.st_uid, st.st_gid) })?;
    check(unsafe { libc::fchmod(fd, st.st_mode & 0o7777) })?;
    let times = [
        libc::timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec,
        },
        libc::timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec,
        },
    ];
    check(unsafe { libc::futimens(fd, times.as_ptr()) })?;
    Ok(())
}

/// Clones `src` into `dst` (an empty file) when `mode` allows and the kernel can, else copies
/// its data extents sparsely. Returns whether it was a clone. `dst` gets `src`'s length.
pub fn clone_or_copy_file(src: &File, dst: &File, mode: Mode) -> io::Result<bool> {
    if mode == Mode::Reflink {
        // SAFETY: FICLONE takes the source fd as its integer argument.
        match unsafe { super::sys::ioctl(dst, FICLONE, src.as_raw_fd() as libc::c_ulong) } {
            Ok(_) => return Ok(true),
            // Not supported here, across filesystems, or between CoW and no-CoW files.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EXDEV | libc::EINVAL | libc::ENOTTY)
                ) => {}
            Err(e) => return Err(e),
        }
    }
    sparse_copy(src, dst)?;
    Ok(false)
}

/// Copies the data extents of `src` found by SEEK_DATA/SEEK_HOLE; holes stay holes.
fn sparse_copy(src: &File, dst: &File) -> io::Result<u64> {
    let len = src.metadata()?.len();
    let (s, d) = (src.as_raw_fd(), dst.as_raw_fd());
    let mut pos: i64 = 0;
    let mut copied = 0u64;
    while (pos as u64) < len {
        // SAFETY: lseek on a live fd.
        let data = unsafe { libc::lseek(s, pos, libc::SEEK_DATA) };
        if data < 0 {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::ENXIO) => break, // only a hole remains
                _ => return Err(io::Error::last_os_error()),
            }
        }
        let hole = check_off(unsafe { libc::lseek(s, data, libc::SEEK_HOLE) })?;
        let mut off_in = data;
        let mut off_out = data;
        while off_in < hole {
            // SAFETY: offsets are live locals; the kernel copies between the two fds.
            let n = unsafe {
                libc::copy_file_range(s, &mut off_in, d, &mut off_out, (hole - off_in) as usize, 0)
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                break; // the file shrank under us
            }
            copied += n as u64;
        }
        pos = hole;
    }
    dst.set_len(len)?;
    Ok(copied)
}

fn check_off(off: libc::off_t) -> io::Result<i64> {
    if off < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(off)
    }
}

struct Walk {
    mode: Mode,
    dev: libc::dev_t,
    dst_root: PathBuf,
    /// (dev, ino) of a multiply linked source file -> its copy, relative to dst_root.
    links: HashMap<(libc::dev_t, libc::ino_t), PathBuf>,
    stats: Stats,
}

/// Copies the contents of directory `src` into the existing directory `dst`, and `src`'s own
/// owner, mode, times and xattrs onto `dst`.
pub fn copy_tree(src: &Path, dst: &Path, mode: Mode) -> io::Result<Stats> {
    let s = open_dir(src)?;
    let d = open_dir(dst)?;
    let st = fstat(s.as_raw_fd())?;
    let mut walk = Walk {
        mode,
        dev: st.st_dev,
        dst_root: dst.to_path_buf(),
        links: HashMap::new(),
        stats: Stats::default(),
    };
    walk.dir(&s, &d, Path::new("")).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("copy {} to {}: {e}", src.display(), dst.display()),
        )
    })?;
    copy_xattrs(s.as_raw_fd(), d.as_raw_fd())?;
    copy_attrs(&st, d.as_raw_fd())?;
    Ok(walk.stats)
}

impl Walk {
    fn dir(&mut self, src: &OwnedFd, dst: &OwnedFd, rel: &Path) -> io::Result<()> {
        let (s, d) = (src.as_raw_fd(), dst.as_raw_fd());
        for name in entries(s)? {
            let st = lstat_at(s, &name)?;
            let here = rel.join(OsStr::from_bytes(name.to_bytes()));
            let err = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", here.display()));
            self.entry(s, d, &name, &st, &here).map_err(err)?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        s: RawFd,
        d: RawFd,
        name: &CStr,
        st: &libc::stat,
        rel: &Path,
    ) -> io::Result<()> {
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                // SAFETY: valid name; mode bits fixed up by copy_attrs once filled.
                check(unsafe { libc::mkdirat(d, name.as_ptr(), 0o700) })?;
                let dst = open_at(d, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                if st.st_dev == self.dev {
                    let src = open_at(s, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                    self.dir(&src, &dst, rel)?;
                    copy_xattrs(src.as_raw_fd(), dst.as_raw_fd())?;
                }
                copy_attrs(st, dst.as_raw_fd())?;
                self.stats.dirs += 1;
            }
            libc::S_IFREG => {
                let key = (st.st_dev, st.st_ino);
                if st.st_nlink > 1 {
                    if let Some(first) = self.links.get(&key) {
                        let first = cstr(self.dst_root.join(first).as_os_str())?;
                        // SAFETY: valid names; both inside the destination tree we made.
                        check(unsafe {
                            libc::linkat(libc::AT_FDCWD, first.as_ptr(), d, name.as_ptr(), 0)
                        })?;
                        self.stats.hard_links += 1;
                        return Ok(());
                    }
                    self.links.insert(key, rel.to_path_buf());
                }
                let src = File::from(open_at(s, name, libc::O_RDONLY, 0)?);
                let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
                let dst = File::from(open_at(d, name, flags, 0o600)?);
                if clone_or_copy_file(&src, &dst, self.mode)? {
                    self.stats.reflinked += 1;
                } else {
                    self.stats.bytes_copied += st.st_size as u64;
                }
                copy_xattrs(src.as_raw_fd(), dst.as_raw_fd())?;
                copy_attrs(st, dst.as_raw_fd())?;
                self.stats.files += 1;
            }
            libc::S_IFLNK => {
                let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
                // SAFETY: the buffer is valid for its length; readlinkat does not NUL-terminate.
                let n = check_len(unsafe {
                    libc::readlinkat(s, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
                })?;
                buf.truncate(n);
                let target = CString::new(buf).map_err(|_| io::Error::other("NUL in link"))?;
                check(unsafe { libc::symlinkat(target.as_ptr(), d, name.as_ptr()) })?;
                self.finish_at(d, name, st)?;
                self.stats.files += 1;
            }
            _ => {
                // Fifos, sockets and device nodes: recreated, never opened.
                check(unsafe {
                    libc::mknodat(d, name.as_ptr(), st.st_mode & !0o7777 | 0o600, st.st_rdev)
                })?;
                self.finish_at(d, name, st)?;
                self.stats.files += 1;
            }
        }
        Ok(())
    }

    /// Owner, mode and times of an entry that cannot be opened (links, nodes), by name.
    fn finish_at(&self, d: RawFd, name: &CStr, st: &libc::stat) -> io::Result<()> {
        let nofollow = libc::AT_SYMLINK_NOFOLLOW;
        // SAFETY: valid name and fd; times is the 2-element array utimensat wants.
        check(unsafe { libc::fchownat(d, name.as_ptr(), st.st_uid, st.st_gid, nofollow) })?;
        if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
            check(unsafe { libc::fchmodat(d, name.as_ptr(), st.st_mode & 0o7777, 0) })?;
        }
        let times = [
            libc::timespec {
                tv_sec: st.st_atime,
                tv_nsec: st.st_atime_nsec,
            },
            libc::timespec {
                tv_sec: st.st_mtime,
                tv_nsec: st.st_mtime_nsec,
            },
        ];
        check(unsafe { libc::utimensat(d, name.as_ptr(), times.as_ptr(), nofollow) })?;
        Ok(())
    }
}

fn check_len(n: isize) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Makes what was written to one filesystem durable with syncfs(2), which writes back every
/// dirty inode of that filesystem and commits its journal once. Open it before writing:
/// syncfs reports the writeback errors that happened on the filesystem since its descriptor
/// was opened (Linux 5.8+), so an error during the copy is caught as well.
///
/// Why syncfs and not fsync: a copied or reflinked tree must be durable before the record that
/// points at it commits. fsync of each file, then of each directory, costs one journal commit
/// (XFS log force, ext4 jbd2 commit) per inode, which for 10,000 small files is seconds; syncfs
/// writes the same data and commits once. It also flushes other dirty data of that filesystem
/// (pods' writes), but only what was dirty when it started (writeback does not chase new
/// writes), and that data would reach the disk within the writeback interval anyway.
pub struct FsSync {
    fd: OwnedFd,
    dir: PathBuf,
}

impl FsSync {
    /// Starts watching the filesystem that holds directory `dir`.
    pub fn begin(dir: &Path) -> io::Result<Self> {
        Ok(FsSync {
            fd: open_dir(dir)?,
            dir: dir.to_path_buf(),
        })
    }

    /// Writes back and commits everything on the filesystem; fails on any writeback error
    /// since `begin`.
    pub fn commit(self) -> io::Result<()> {
        // SAFETY: plain syscall on a live descriptor.
        check(unsafe { libc::syncfs(self.fd.as_raw_fd()) })
            .map(|_| ())
            .map_err(|e| io::Error::new(e.kind(), format!("syncfs {}: {e}", self.dir.display())))
    }
}

/// Whether FICLONE works on the filesystem of `dir` (tried on two scratch files there).
pub fn reflink_supported(dir: &Path) -> io::Result<bool> {
    let a = dir.join(".ferrovol-reflink-probe-a");
    let b = dir.join(".ferrovol-reflink-probe-b");
    let result = (|| {
        use std::io::Write;
        let mut fa = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&a)?;
        fa.write_all(&[7u8; 4096])?;
        fa.sync_all()?;
        let fb = File::create(&b)?;
        // SAFETY: FICLONE takes the source fd as its integer argument.
        Ok(unsafe { super::sys::ioctl(&fb, FICLONE, fa.as_raw_fd() as libc::c_ulong) }.is_ok())
    })();
    let _ = std::fs::remove_file(&a);
    let _ = std::fs::remove_file(&b);
    result
}

#[cfg(test)]
#[path = "copytree_tests.rs"]
mod tests;
