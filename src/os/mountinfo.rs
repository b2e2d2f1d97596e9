//! The kernel's mount table (/proc/self/mountinfo), parsed.

use super::sys::none_on;
use rustix::fs::{AtFlags, StatxAttributes, StatxFlags, CWD};
use rustix::io::Errno;
use rustix::path::Arg;
use std::io;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// major:minor of the mounted filesystem.
    pub device: String,
    /// The directory of that filesystem that is mounted here ("/" for a whole-fs mount).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    /// Per-mount options (ro/rw, nosuid, ...).
    pub options: Vec<String>,
    pub fs_type: String,
    pub source: String,
}

impl MountEntry {
    pub fn has_option(&self, opt: &str) -> bool {
        self.options.iter().any(|o| o == opt)
    }

    pub fn read_only(&self) -> bool {
        self.has_option("ro")
    }
}

pub fn read() -> io::Result<Vec<MountEntry>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

/// Whether `path` is a mount point. One statx(2) asks the kernel about this path alone, so the
/// cost does not grow with the node's mount table (secrets, config maps and tokens are each a
/// mount). Falls back to the table where statx cannot tell (kernels before 5.8).
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    match mount_root(CWD, path, AtFlags::empty()) {
        Ok(Some(root)) => Ok(root),
        Ok(None) => Ok(mount_at(path)?.is_some()),
        Err(Errno::NOENT | Errno::NOTDIR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The first mount found at or below `dir` (a mount point inside a tree about to be removed),
/// by one statx per entry: the cost follows the tree, not the node's mount table (reading the
/// table costs a millisecond per delete on a node with a few hundred mounts). Symlinks are never
/// followed; the walk is iterative (`dirwalk`), so a tree of any depth is searched. Falls back to
/// the table where statx cannot tell (kernels before 5.8).
pub fn first_mount_below(dir: &Path) -> io::Result<Option<std::path::PathBuf>> {
    use super::dirwalk::{self, Cursor};
    match mount_root_nofollow(CWD, dir)? {
        None => return Ok(mounts_under(dir)?.first().map(|m| m.mount_point.clone())),
        Some(true) => return Ok(Some(dir.to_path_buf())),
        Some(false) => {}
    }
    let root = dirwalk::open_dir(dir);
    let Some(root) = none_on(root, &[libc::ENOENT])? else {
        return Ok(None);
    };
    let mut cur = Cursor::new(root)?;
    while let Some(name) = cur.next_below()? {
        let at = cur.fd().expect("a directory being read is open");
        if mount_root_nofollow(at, name.as_c_str())? == Some(true) {
            // A directory, or a file bind-mounted over a file inside the tree.
            let mut found = dir.to_path_buf();
            found.extend(cur.names().chain([name.as_c_str()]).map(|n| {
                use std::os::unix::ffi::OsStrExt;
                std::ffi::OsStr::from_bytes(n.to_bytes())
            }));
            return Ok(Some(found));
        }
        if let Some(fd) = none_on(dirwalk::open_dir_at(at, &name), dirwalk::GONE)? {
            cur.push(&name, fd)?;
        }
    }
    Ok(None)
}

/// Some(whether `path` in `dir` is a mount root); None when the kernel cannot say.
pub(crate) fn mount_root(
    dir: BorrowedFd<'_>,
    path: impl Arg,
    flags: AtFlags,
) -> Result<Option<bool>, Errno> {
    let st = rustix::fs::statx(dir, path, flags, StatxFlags::empty())?;
    let root = StatxAttributes::MOUNT_ROOT;
    Ok((st.stx_attributes_mask.contains(root)).then_some(st.stx_attributes.contains(root)))
}

/// As [`mount_root`], without following a final symlink; a name that is gone is no mount.
fn mount_root_nofollow(dir: BorrowedFd<'_>, name: impl Arg) -> io::Result<Option<bool>> {
    match mount_root(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => Ok(Some(false)),
        r => Ok(r?),
    }
}

/// The mount that holds `path` (absolute, resolved): the deepest mount point above or at it,
/// the topmost one there.
pub fn holding_mount(path: &Path) -> io::Result<MountEntry> {
    read()?
        .into_iter()
        .rev()
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.as_os_str().len())
        .ok_or_else(|| io::Error::other(format!("no mount holds {}", path.display())))
}

/// The topmost mount at exactly `path`, if `path` is a mount point.
pub fn mount_at(path: &Path) -> io::Result<Option<MountEntry>> {
    Ok(read()?.into_iter().rev().find(|m| m.mount_point == path))
}

/// All mounts at or below `dir`.
pub fn mounts_under(dir: &Path) -> io::Result<Vec<MountEntry>> {
    Ok(read()?
        .into_iter()
        .filter(|m| m.mount_point.starts_with(dir))
        .collect())
}

pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

// Format: id parent major:minor root mount_point options [optional fields...] - fstype source super_options
fn parse_line(line: &str) -> Option<MountEntry> {
    let (head, tail) = line.split_once(" - ")?;
    let fields: Vec<&str> = head.split(' ').collect();
    if fields.len() < 6 {
        return None;
    }
    let mut tail = tail.split(' ');
    let fs_type = tail.next()?.to_string();
    let source = unescape(tail.next().unwrap_or(""));
    Some(MountEntry {
        device: fields[2].to_string(),
        root: PathBuf::from(unescape(fields[3])),
        mount_point: PathBuf::from(unescape(fields[4])),
        options: fields[5].split(',').map(str::to_string).collect(),
        fs_type,
        source,
    })
}

/// Undoes the kernel's octal escaping of space, tab, newline and backslash.
fn unescape(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        let octal = |o: &[u8]| u8::from_str_radix(std::str::from_utf8(o).ok()?, 8).ok();
        let (byte, next) = match tail.get(..3).filter(|_| b == b'\\').and_then(octal) {
            Some(v) => (v, &tail[3..]),
            None => (b, tail),
        };
        out.push(byte);
        rest = next;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bind_mount_with_escaped_space() {
        let text = "36 35 98:0 /vol\\040one /mnt/t\\040x rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n";
        let m = &parse(text)[0];
        assert_eq!(m.root, PathBuf::from("/vol one"));
        assert_eq!(m.mount_point, PathBuf::from("/mnt/t x"));
        assert!(m.has_option("noatime"));
        assert!(!m.read_only());
        assert_eq!(m.fs_type, "ext3");
        assert_eq!(m.source, "/dev/root");
        assert_eq!(m.device, "98:0");
    }

    #[test]
    fn statx_agrees_with_the_mount_table() {
        for p in ["/", "/proc", "/proc/self", "/definitely/not/here"] {
            let p = Path::new(p);
            assert_eq!(
                is_mount_point(p).unwrap(),
                mount_at(p).unwrap().is_some(),
                "{}",
                p.display()
            );
        }
    }

    #[test]
    fn skips_garbage_lines() {
        assert!(parse("not a mount line\n").is_empty());
    }
}
