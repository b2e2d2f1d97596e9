//! Copies a directory tree for snapshots and clones, by reflink (FICLONE) where the filesystem
//! shares extents, by a sparse byte copy otherwise. Preserves modes, owners, times, xattrs,
//! hard links, holes, symlinks (never followed) and device nodes.
//!
//! The walk is descriptor-relative and iterative (`dirwalk`): a tree of any depth is copied with
//! a bounded number of open descriptors, listings are streamed, and a pod that swaps a directory
//! for a symlink while its volume is copied cannot make the copy read or write outside the two
//! trees. Each entry is held by an O_PATH descriptor before anything else happens to it, so a
//! file swapped for a fifo or a device node is never opened. Directories on another device
//! (mounts, nested btrfs subvolumes) are recreated empty, as a btrfs snapshot would show them.
//! Xattrs of symlinks are not copied (Linux allows no user.* xattrs on them). The driver's own
//! `trusted.ferrovol.*` markers are never copied.

use super::dirwalk::{fstat, open_at, open_dir, open_dir_at, Cursor};
pub use super::filecopy::{clone_or_copy_file, reflink_supported, Mode};
use super::sys::none_on;
use rustix::fs::{self as rfs, AtFlags, Gid, OFlags, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

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

/// Copies every xattr of `src` to `dst` except the driver's markers. Security and system
/// attributes the destination refuses are skipped; user.* and trusted.* must copy.
fn copy_xattrs(src: BorrowedFd, dst: BorrowedFd) -> io::Result<()> {
    let mut names = vec![0u8; 4096];
    let list = |b: &mut [u8]| rfs::flistxattr(src, b);
    let Some(n) = none_on(fill(&mut names, list), &[libc::ENOTSUP])? else {
        return Ok(());
    };
    let mut value = vec![0u8; 4096];
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        if name.starts_with(PRIVATE_XATTR_PREFIX) {
            continue;
        }
        let cname = CString::new(name).expect("split at NUL");
        let len = fill(&mut value, |b| rfs::fgetxattr(src, &cname, b))?;
        if let Err(e) = rfs::fsetxattr(dst, &cname, &value[..len], XattrFlags::empty()) {
            if !(name.starts_with(b"security.") || name.starts_with(b"system.")) {
                let why = format!("set xattr {}: {e}", String::from_utf8_lossy(name));
                return Err(io::Error::new(e.kind(), why));
            }
        }
    }
    Ok(())
}

/// Runs `call` (a list or get of xattrs) into `buf`, growing it while the kernel says ERANGE.
fn fill(
    buf: &mut Vec<u8>,
    call: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
) -> io::Result<usize> {
    loop {
        match call(buf) {
            Err(Errno::RANGE) => buf.resize(buf.len() * 4, 0),
            r => return Ok(r?),
        }
    }
}

/// Access and modification times of `st`, as futimens and utimensat take them.
fn stat_times(st: &libc::stat) -> Timestamps {
    let ts = |tv_sec, tv_nsec| Timespec { tv_sec, tv_nsec };
    Timestamps {
        last_access: ts(st.st_atime, st.st_atime_nsec),
        last_modification: ts(st.st_mtime, st.st_mtime_nsec),
    }
}

/// Owner, then mode (chown clears set-id bits), then times, all through `fd`.
fn copy_attrs(st: &libc::stat, fd: BorrowedFd) -> io::Result<()> {
    let (uid, gid) = (Uid::from_raw(st.st_uid), Gid::from_raw(st.st_gid));
    rfs::fchown(fd, Some(uid), Some(gid))?;
    rfs::fchmod(fd, rfs::Mode::from_raw_mode(st.st_mode & 0o7777))?;
    Ok(rfs::futimens(fd, &stat_times(st))?)
}

struct Walk {
    mode: Mode,
    dev: libc::dev_t,
    src: Cursor,
    dst: Cursor,
    /// The stat of each directory on the way down, applied to its copy once it is filled.
    dir_stats: Vec<libc::stat>,
    /// (dev, ino) of a multiply linked source file -> the names leading to its copy, and how
    /// many of its other names are still to come (forgotten at 0, so the map holds only files
    /// whose links are not all met yet).
    links: HashMap<(libc::dev_t, libc::ino_t), (Vec<CString>, libc::nlink_t)>,
    stats: Stats,
}

/// What to do with an entry once it is held.
enum Next {
    Done,
    Descend(OwnedFd, OwnedFd),
}

/// Copies the contents of directory `src` into the existing directory `dst`, and `src`'s own
/// owner, mode, times and xattrs onto `dst`.
///
/// A volume in use changes while it is copied; the copy is not a point-in-time image. An entry
/// removed or renamed between its listing and its copy is skipped; one replaced by another kind
/// of file is copied as what was found when it was held. Errors name the entry by its path
/// inside `src`, never the host paths of the two trees.
pub fn copy_tree(src: &Path, dst: &Path, mode: Mode) -> io::Result<Stats> {
    let s = open_dir(src)?;
    let d = open_dir(dst)?;
    let st = fstat(s.as_fd())?;
    copy_xattrs(s.as_fd(), d.as_fd())?;
    let mut walk = Walk {
        mode,
        dev: st.st_dev,
        src: Cursor::new(s)?,
        dst: Cursor::new(d)?,
        dir_stats: vec![st],
        links: HashMap::new(),
        stats: Stats::default(),
    };
    walk.run()?;
    copy_attrs(&st, walk.dst.root_fd())?;
    Ok(walk.stats)
}

impl Walk {
    fn run(&mut self) -> io::Result<()> {
        loop {
            let name = self.src.next_entry();
            let Some(name) = name.map_err(|e| self.fail(None, "list", e))? else {
                if self.src.depth() == 0 {
                    return Ok(());
                }
                self.leave_dir()?;
                continue;
            };
            match self.entry(&name) {
                Ok(Next::Done) => {}
                Ok(Next::Descend(s, d)) => {
                    let entered = self.src.push(&name, s);
                    entered.map_err(|e| self.fail(Some(&name), "enter", e))?;
                    let entered = self.dst.push(&name, d);
                    entered.map_err(|e| self.fail(Some(&name), "enter the copy of", e))?;
                }
                Err(e) => return Err(self.fail(Some(&name), "copy", e)),
            }
        }
    }

    fn fail(&self, name: Option<&CStr>, what: &str, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("{what} {}: {e}", self.src.describe(name)))
    }

    /// Finishes the copy of the current directory (xattrs, owner, mode, times) and returns to
    /// its parent in both trees.
    fn leave_dir(&mut self) -> io::Result<()> {
        let st = self.dir_stats.pop().expect("one stat per level");
        let d = self.dst.fd().expect("the copy's directories stay ours");
        let finished = (|| {
            // A source directory moved away mid-copy keeps the xattrs it was created without.
            if let Some(s) = self.src.fd() {
                copy_xattrs(s, d)?;
            }
            copy_attrs(&st, d)
        })();
        finished.map_err(|e| self.fail(None, "finish", e))?;
        self.stats.dirs += 1;
        let back = self.src.pop();
        back.map_err(|e| self.fail(None, "return from", e))?;
        let moved = || io::Error::other("the copy's directory was moved during the copy");
        let back = self.dst.pop();
        let back = back.and_then(|found| found.then_some(()).ok_or_else(moved));
        back.map_err(|e| self.fail(None, "return from the copy of", e))
    }

    fn entry(&mut self, name: &CStr) -> io::Result<Next> {
        let s = self.src.fd().expect("a directory being read is open");
        // What is there now, held: nothing below can be swapped for something else.
        let Some(held) = none_on(open_at(s, name, OFlags::PATH), &[libc::ENOENT])? else {
            return Ok(Next::Done);
        };
        let st = fstat(held.as_fd())?;
        before_open(s, name);
        let d = self.dst.fd().expect("the copy's directories stay ours");
        let made = match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => return self.dir(&held, name, st),
            libc::S_IFREG => self.file(&held, name, &st),
            libc::S_IFLNK => {
                // An empty name reads the link the descriptor holds.
                let target = rfs::readlinkat(&held, c"", Vec::new())?;
                let made = rfs::symlinkat(&target, d, name).map_err(io::Error::from);
                made.and_then(|()| finish_at(d, name, &st))
            }
            // Fifos, sockets and device nodes: recreated, never opened.
            _ => {
                let kind = rfs::FileType::from_raw_mode(st.st_mode);
                let made = rfs::mknodat(d, name, kind, rfs::Mode::from_raw_mode(0o600), st.st_rdev);
                made.map_err(io::Error::from)
                    .and_then(|()| finish_at(d, name, &st))
            }
        };
        // EEXIST: the name was listed twice (renamed back and forth during the listing); the
        // first copy stands.
        if none_on(made, &[libc::EEXIST])?.is_some() {
            self.stats.files += 1;
        }
        Ok(Next::Done)
    }

    fn dir(&mut self, held: &OwnedFd, name: &CStr, st: libc::stat) -> io::Result<Next> {
        let d = self.dst.fd().expect("the copy's directories stay ours");
        // Mode bits fixed up by copy_attrs once filled.
        match rfs::mkdirat(d, name, rfs::Mode::from_raw_mode(0o700)) {
            Err(Errno::EXIST) => return Ok(Next::Done),
            r => r?,
        };
        let dst = open_dir_at(d, name)?;
        // A mount or nested subvolume is recreated empty. Else the held directory itself is
        // opened for reading; removed meanwhile, its copy stays empty.
        let src = match (st.st_dev == self.dev).then(|| open_dir_at(held.as_fd(), c".")) {
            Some(Ok(fd)) => Some(fd),
            Some(Err(e)) if e.raw_os_error() != Some(libc::ENOENT) => return Err(e),
            _ => None,
        };
        let Some(src) = src else {
            copy_attrs(&st, dst.as_fd())?;
            self.stats.dirs += 1;
            return Ok(Next::Done);
        };
        self.dir_stats.push(st);
        Ok(Next::Descend(src, dst))
    }

    fn file(&mut self, held: &OwnedFd, name: &CStr, st: &libc::stat) -> io::Result<()> {
        let d = self.dst.fd().expect("the copy's directories stay ours");
        let key = (st.st_dev, st.st_ino);
        if st.st_nlink > 1 {
            if let Some((first, to_come)) = self.links.get_mut(&key) {
                *to_come = to_come.saturating_sub(1);
                let (first, done) = (first.clone(), *to_come == 0);
                if done {
                    self.links.remove(&key);
                }
                self.link_to(&first, d, name)?;
                self.stats.hard_links += 1;
                return Ok(());
            }
        }
        // Reopened through the held descriptor: the same inode, a regular file. Not
        // O_NOFOLLOW: the /proc entry is the magic link to the held file.
        let src = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(format!("/proc/self/fd/{}", held.as_raw_fd()))?;
        let now = fstat(src.as_fd())?;
        if (now.st_dev, now.st_ino) != key || now.st_mode & libc::S_IFMT != libc::S_IFREG {
            let why = "the file changed identity while it was opened";
            return Err(io::Error::other(why));
        }
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL;
        let dst = File::from(open_at(d, name, flags)?);
        if st.st_nlink > 1 {
            let mut path: Vec<CString> = self.dst.names().map(CStr::to_owned).collect();
            path.push(name.to_owned());
            self.links.insert(key, (path, st.st_nlink - 1));
        }
        if clone_or_copy_file(&src, &dst, self.mode)? {
            self.stats.reflinked += 1;
        } else {
            self.stats.bytes_copied += st.st_size as u64;
        }
        copy_xattrs(src.as_fd(), dst.as_fd())?;
        copy_attrs(st, dst.as_fd())
    }

    /// Hard-links `name` in `d` to the copy at `first` (names from the destination's root),
    /// walked one directory at a time: the path may be longer than a path can be.
    fn link_to(&self, first: &[CString], d: BorrowedFd, name: &CStr) -> io::Result<()> {
        let (last, parents) = first.split_last().expect("a path has a name");
        let mut cur: Option<OwnedFd> = None;
        for p in parents {
            let at = cur.as_ref().map_or(self.dst.root_fd(), |f| f.as_fd());
            cur = Some(open_at(at, p, OFlags::PATH | OFlags::DIRECTORY)?);
        }
        let at = cur.as_ref().map_or(self.dst.root_fd(), |f| f.as_fd());
        Ok(rfs::linkat(at, last, d, name, AtFlags::empty())?)
    }
}

/// Owner, mode and times of an entry that cannot be opened (links, nodes), by name.
fn finish_at(d: BorrowedFd, name: &CStr, st: &libc::stat) -> io::Result<()> {
    let nofollow = AtFlags::SYMLINK_NOFOLLOW;
    let (uid, gid) = (Uid::from_raw(st.st_uid), Gid::from_raw(st.st_gid));
    rfs::chownat(d, name, Some(uid), Some(gid), nofollow)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
        rfs::chmodat(
            d,
            name,
            rfs::Mode::from_raw_mode(st.st_mode & 0o7777),
            AtFlags::empty(),
        )?;
    }
    Ok(rfs::utimensat(d, name, &stat_times(st), nofollow)?)
}

/// Makes what was written to one filesystem durable with syncfs(2): every dirty inode written
/// back and its journal committed once. Begin before writing: syncfs reports the writeback
/// errors since its descriptor was opened (Linux 5.8+), so an error during the copy is caught.
///
/// Why not fsync: the tree must be durable before the record pointing at it commits, and an
/// fsync per file and directory costs a journal commit per inode (seconds for 10,000 small
/// files). syncfs also flushes other dirty data of that filesystem, but only what was dirty
/// when it started (writeback does not chase new writes), which would reach the disk within
/// the writeback interval anyway.
pub struct FsSync {
    fd: OwnedFd,
}

impl FsSync {
    /// Starts watching the filesystem that holds directory `dir`.
    pub fn begin(dir: &Path) -> io::Result<Self> {
        Ok(FsSync { fd: open_dir(dir)? })
    }

    /// Writes back and commits everything on the filesystem; fails on any writeback error
    /// since `begin`.
    pub fn commit(self) -> io::Result<()> {
        rustix::fs::syncfs(&self.fd).map_err(|e| {
            let e = io::Error::from(e);
            io::Error::new(e.kind(), format!("syncfs: {e}"))
        })
    }
}

/// Test hook between holding an entry and acting on it (a no-op outside the tests).
#[cfg(not(test))]
fn before_open(_: BorrowedFd, _: &CStr) {}

#[cfg(test)]
use tests::before_open;

#[cfg(test)]
#[path = "copytree_tests.rs"]
mod tests;
