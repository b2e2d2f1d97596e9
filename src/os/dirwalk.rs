//! Iterative walks of directory trees of any depth, with a bounded number of open descriptors
//! and a bounded buffer per listing.
//!
//! A [`Cursor`] is a stack of levels from a root directory down to the directory being read.
//! Each level keeps its name, its identity (device, inode) and its read position; only the root
//! and the deepest [`MAX_OPEN`] levels hold a descriptor. Returning to a level whose descriptor
//! was closed reopens it through `..` of the level below, or failing that by name from the
//! nearest open ancestor, and accepts it only if it is still the same directory: a tree
//! renamed by someone else while it is walked is never confused with another directory. The
//! listing is read through getdents64 (rustix's `Dir`, a buffer of at most a few dozen KiB) and
//! resumed by seeking to the offset of the last entry handed out.
//!
//! Memory is one small record per level (name, identity, position), never the whole path or
//! the whole listing; the thread stack does not grow with the depth.

use super::sys::{check, none_on};
use rustix::fs::{openat, Dir, Mode, OFlags};
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// How many levels below the root keep their descriptor open.
pub const MAX_OPEN: usize = 16;
/// How much of a path within the tree messages show (its end).
const MESSAGE_PATH_BYTES: usize = 256;

pub(crate) fn fstat(fd: BorrowedFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

pub(crate) fn lstat_at(dir: BorrowedFd, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: as in fstat; the name is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let nofollow = libc::AT_SYMLINK_NOFOLLOW;
    check(unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, nofollow) })?;
    Ok(st)
}

/// `openat` that never follows a symlink in the last component (a file it creates gets 0600).
pub(crate) fn open_at(dir: BorrowedFd, name: &CStr, flags: OFlags) -> io::Result<OwnedFd> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(openat(dir, name, flags, Mode::from_raw_mode(0o600))?)
}

/// Opens the directory `path` for reading, never through a symlink in its last component.
pub(crate) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::open(path, flags, Mode::empty())?)
}

/// Opens the directory `name` in `dir` for reading, never through a symlink.
pub(crate) fn open_dir_at(dir: BorrowedFd, name: &CStr) -> io::Result<OwnedFd> {
    open_at(dir, name, OFlags::RDONLY | OFlags::DIRECTORY)
}

pub(crate) type Id = (libc::dev_t, libc::ino_t);

pub(crate) fn id_of(st: &libc::stat) -> Id {
    (st.st_dev, st.st_ino)
}

/// The descriptor a directory stream reads.
fn dir_fd(dir: &Dir) -> BorrowedFd<'_> {
    dir.fd().expect("a stream holds its descriptor")
}

struct Level {
    name: CString,
    id: Id,
    /// The offset after the last name handed out; None before the first.
    pos: Option<i64>,
    open: Option<Dir>,
    /// The directory could not be found again (moved or removed by someone else).
    gone: bool,
}

impl Level {
    fn open(name: CString, dir: OwnedFd) -> io::Result<Self> {
        Ok(Level {
            name,
            id: id_of(&fstat(dir.as_fd())?),
            pos: None,
            open: Some(Dir::new(dir)?),
            gone: false,
        })
    }
}

/// A position in a directory tree: the root down to the directory being read.
pub struct Cursor {
    levels: Vec<Level>,
}

impl Cursor {
    /// Starts at the directory `root` (opened for reading).
    pub fn new(root: OwnedFd) -> io::Result<Self> {
        Ok(Cursor {
            levels: vec![Level::open(CString::default(), root)?],
        })
    }

    /// Levels below the root.
    pub fn depth(&self) -> usize {
        self.levels.len() - 1
    }

    fn top(&self) -> &Level {
        self.levels.last().expect("the root level is never popped")
    }

    /// The descriptor of the current directory; None when it could not be found again.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.top().open.as_ref().map(dir_fd)
    }

    /// The root's descriptor (always open).
    pub fn root_fd(&self) -> BorrowedFd<'_> {
        dir_fd(self.levels[0].open.as_ref().expect("the root stays open"))
    }

    /// The current directory's name in its parent (empty at the root).
    pub fn name(&self) -> &CStr {
        &self.top().name
    }

    /// The names from below the root down to the current directory.
    pub fn names(&self) -> impl Iterator<Item = &CStr> {
        self.levels[1..].iter().map(|l| l.name.as_c_str())
    }

    /// The next name in the current directory; None at its end (or when it is gone).
    pub fn next_entry(&mut self) -> io::Result<Option<CString>> {
        let top = self.levels.last_mut().expect("root");
        let Some(dir) = top.open.as_mut() else {
            return Ok(None);
        };
        // The end, or ENOENT: the directory was removed while it was read; nothing is left.
        while let Some(entry) = dir.read().transpose()? {
            top.pos = Some(entry.offset());
            let name = entry.file_name();
            if name != c"." && name != c".." {
                return Ok(Some(name.to_owned()));
            }
        }
        Ok(None)
    }

    /// The next name anywhere below the root, depth first: at the end of a directory's listing
    /// the walk returns to its parent's. None once the root's listing ends.
    pub fn next_below(&mut self) -> io::Result<Option<CString>> {
        loop {
            match self.next_entry()? {
                // Whether the parent is still there, its listing tells.
                None if self.depth() > 0 => _ = self.pop()?,
                name => return Ok(name),
            }
        }
    }

    /// Enters the directory `name` of the current one, given opened for reading by the caller
    /// (who checked what it is). Closes the shallowest open level beyond the budget.
    pub fn push(&mut self, name: &CStr, dir: OwnedFd) -> io::Result<()> {
        self.levels.push(Level::open(name.to_owned(), dir)?);
        let n = self.levels.len();
        if n > MAX_OPEN + 1 {
            self.levels[n - MAX_OPEN - 1].open = None;
        }
        Ok(())
    }

    /// Leaves the current directory for its parent, reopened if its descriptor was closed and
    /// resumed where its listing stopped. Returns false when the parent is no longer there as
    /// the same directory (it then lists nothing more, and `fd` is None).
    pub fn pop(&mut self) -> io::Result<bool> {
        let child = self.levels.pop().expect("never pops the root");
        assert!(!self.levels.is_empty(), "popped the root");
        let idx = self.levels.len() - 1;
        if self.levels[idx].open.is_some() || self.levels[idx].gone {
            return Ok(!self.levels[idx].gone);
        }
        // Through `..` of the level just left, which is cheap; by name from an open ancestor
        // if that is no longer the parent.
        if let Some(dir) = &child.open {
            if let Ok(fd) = open_dir_at(dir_fd(dir), c"..") {
                if id_of(&fstat(fd.as_fd())?) == self.levels[idx].id {
                    self.resume(idx, fd)?;
                    return Ok(true);
                }
            }
        }
        self.reopen_by_name(idx)
    }

    fn resume(&mut self, idx: usize, fd: OwnedFd) -> io::Result<()> {
        let level = &mut self.levels[idx];
        let mut dir = Dir::new(fd)?;
        if let Some(pos) = level.pos {
            dir.seek(pos)?;
        }
        level.open = Some(dir);
        Ok(())
    }

    /// Opens level `idx` by walking the names from its nearest open ancestor, each checked.
    fn reopen_by_name(&mut self, idx: usize) -> io::Result<bool> {
        let from = (0..idx)
            .rev()
            .find(|&i| self.levels[i].open.is_some())
            .expect("the root is open");
        let start = dir_fd(self.levels[from].open.as_ref().expect("open"));
        let mut cur: Option<OwnedFd> = None;
        for i in from + 1..=idx {
            let at = cur.as_ref().map_or(start, |f| f.as_fd());
            let found = match none_on(open_dir_at(at, &self.levels[i].name), GONE)? {
                Some(fd) if id_of(&fstat(fd.as_fd())?) == self.levels[i].id => fd,
                _ => {
                    for level in &mut self.levels[i..=idx] {
                        level.gone = true;
                    }
                    return Ok(false);
                }
            };
            cur = Some(found);
        }
        self.resume(idx, cur.expect("idx > from"))?;
        Ok(true)
    }

    /// The path of `name` in the current directory, relative to the root, for messages: its
    /// last few hundred bytes at most.
    pub fn describe(&self, name: Option<&CStr>) -> String {
        let mut parts: Vec<&[u8]> = Vec::new();
        let mut len = 0;
        let all: Vec<&CStr> = self.names().chain(name).collect();
        for n in all.iter().rev() {
            if len > MESSAGE_PATH_BYTES {
                parts.push("…".as_bytes());
                break;
            }
            len += n.to_bytes().len() + 1;
            parts.push(n.to_bytes());
        }
        parts.reverse();
        let joined = parts.join(&b'/');
        if joined.is_empty() {
            ".".to_string()
        } else {
            String::from_utf8_lossy(&joined).into_owned()
        }
    }
}

/// Errors that mean an entry is no longer there as it was listed: removed, renamed, or
/// replaced by something of another type. The walks treat them as a change by someone else.
pub(crate) const GONE: &[i32] = &[libc::ENOENT, libc::ENOTDIR, libc::ELOOP];

#[cfg(test)]
#[path = "dirwalk_tests.rs"]
mod tests;
