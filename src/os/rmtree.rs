//! Removal of a directory tree of any depth, walked iteratively (see `dirwalk`): no recursion on
//! the thread stack, a bounded number of open descriptors, no listing held whole.

use super::dirwalk::{self, Cursor};
use super::mountfd::is_mount_root;
use super::sys::none_on;
use rustix::fs::AtFlags;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

fn unlink_at(dir: BorrowedFd, name: &CStr, flags: AtFlags) -> io::Result<()> {
    let unlinked = rustix::fs::unlinkat(dir, name, flags).map_err(Into::into);
    none_on(unlinked, &[libc::ENOENT]).map(drop)
}

/// Removes `path` and everything below it; a symlink is removed, never followed. Nothing there
/// is done. Refuses (EXDEV) to descend into a mount found on the way, so a forgotten bind mount
/// never takes other data with it; nested btrfs subvolumes (no mount) go with the tree.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let root = match dirwalk::open_dir(path) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {
            return none_on(std::fs::remove_file(path), &[libc::ENOENT]).map(drop)
        }
        Err(e) => return Err(e),
    };
    let mut cur = Cursor::new(root)?;
    let fail = |cur: &Cursor, name: Option<&CStr>, e: io::Error| {
        io::Error::new(e.kind(), format!("removing {}: {e}", cur.describe(name)))
    };
    loop {
        let Some(name) = cur.next_entry().map_err(|e| fail(&cur, None, e))? else {
            if cur.depth() == 0 {
                break;
            }
            let name = cur.name().to_owned();
            if !cur.pop().map_err(|e| fail(&cur, None, e))? {
                let moved = io::Error::other("the tree was moved while it was removed");
                return Err(fail(&cur, Some(&name), moved));
            }
            let dir = cur.fd().expect("a level found again is open");
            unlink_at(dir, &name, AtFlags::REMOVEDIR).map_err(|e| fail(&cur, Some(&name), e))?;
            continue;
        };
        let dir = cur.fd().expect("a level being read is open");
        // One call for anything but a directory, which answers EISDIR.
        match unlink_at(dir, &name, AtFlags::empty()) {
            Ok(()) => continue,
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {}
            Err(e) => return Err(fail(&cur, Some(&name), e)),
        }
        let child = none_on(dirwalk::open_dir_at(dir, &name), dirwalk::GONE);
        let Some(child) = child.map_err(|e| fail(&cur, Some(&name), e))? else {
            continue;
        };
        if is_mount_root(child.as_fd()).unwrap_or(false) {
            let why = "a mount point: refusing to remove what is mounted there";
            let e = io::Error::new(io::ErrorKind::CrossesDevices, why);
            return Err(fail(&cur, Some(&name), e));
        }
        cur.push(&name, child)
            .map_err(|e| fail(&cur, Some(&name), e))?;
    }
    drop(cur);
    none_on(std::fs::remove_dir(path), &[libc::ENOENT]).map(drop)
}
