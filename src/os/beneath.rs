//! Mount targets confined to publish roots.
//!
//! A staging or target path from a CSI request must lie under one of the operator's publish
//! roots (`--publish-root`, default the kubelet directory). The check is lexical
//! ([`PublishRoots::locate`]); the path is then opened relative to the root without following
//! any symlink, and the mount goes onto the descriptor (`mountfd`), so a component swapped for a
//! symlink at any moment cannot move the mount out of the root. A bind source that is itself a
//! path from a request (a staging path) is opened beneath its root the same way.
//!
//! Mount points are crossed (no RESOLVE_NO_XDEV): kubelet's pod directories often sit on other
//! file systems than the root, and a published target is itself a mount point.

pub use super::mountfd::{bind_fd_mount_onto, bind_mount_onto, fs_mount_onto, is_mount_root};
use nix::errno::Errno;
use nix::fcntl::{self, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{self, Mode};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// The directories mount targets must lie under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRoots {
    roots: Vec<PathBuf>,
}

impl PublishRoots {
    /// Roots must be absolute; they are normalised (`.`, `..`, repeated `/`) but not
    /// resolved: a root may itself be a symlink the operator set up (it is trusted).
    pub fn new(roots: Vec<PathBuf>) -> Result<Self, String> {
        let mut out = Vec::new();
        for root in roots {
            let norm = normalise(&root)
                .ok_or_else(|| format!("publish root {} must be absolute", root.display()))?;
            if norm == Path::new("/") {
                return Err("publish root / would allow mounting over any directory".into());
            }
            if !out.contains(&norm) {
                out.push(norm);
            }
        }
        if out.is_empty() {
            return Err("at least one publish root is required".into());
        }
        Ok(PublishRoots { roots: out })
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Splits `path` into the deepest root containing it and the path relative to that root
    /// (never empty, never with `..`). The error names the path and the roots, ready to be
    /// returned as InvalidArgument.
    pub fn locate(&self, path: &Path) -> Result<(&Path, PathBuf), String> {
        let norm = normalise(path)
            .ok_or_else(|| format!("path {:?} must be absolute", path.display().to_string()))?;
        let best = self
            .roots
            .iter()
            .filter(|r| norm.starts_with(r) && norm != **r)
            .max_by_key(|r| r.components().count());
        match best {
            Some(root) => {
                let rel = norm.strip_prefix(root).expect("starts_with checked");
                Ok((root.as_path(), rel.to_path_buf()))
            }
            None => Err(format!(
                "path {} is not below a publish root ({}); the driver mounts only under these \
                 (see --publish-root)",
                path.display(),
                self.roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

/// Lexical normalisation of an absolute path; None for a relative one.
fn normalise(path: &Path) -> Option<PathBuf> {
    if !path.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

/// The components of a relative path, refusing `..` and absolute paths (the walkers below
/// must never leave the root).
fn components(rel: &Path) -> io::Result<Vec<&OsStr>> {
    let refuse = || {
        let why = format!(
            "{} must be relative to the root, without '..'",
            rel.display()
        );
        io::Error::new(io::ErrorKind::InvalidInput, why)
    };
    rel.components()
        .filter(|c| *c != Component::CurDir)
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(refuse()),
        })
        .collect()
}

fn open_root(root: &Path) -> io::Result<OwnedFd> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    fcntl::open(root, flags, Mode::empty())
        .map_err(|e| context(root, Path::new(""), "opening publish root", e))
}

/// An io::Error naming `root/rel` and explaining the errnos path confinement produces.
fn context(root: &Path, rel: &Path, what: &str, e: Errno) -> io::Error {
    let path = root.join(rel);
    let why = match e {
        Errno::ELOOP => {
            "a component is a symbolic link, which is not followed below a publish root".to_string()
        }
        Errno::EXDEV => format!("the path leads out of {}", root.display()),
        Errno::ENOTDIR => "a component is not a directory (or is a symbolic link)".to_string(),
        e => e.desc().to_string(),
    };
    let kind = io::Error::from(e).kind();
    io::Error::new(kind, format!("{what} {}: {why}", path.display()))
}

const CONFINED: ResolveFlag = ResolveFlag::RESOLVE_BENEATH
    .union(ResolveFlag::RESOLVE_NO_SYMLINKS)
    .union(ResolveFlag::RESOLVE_NO_MAGICLINKS);

/// Opens `root/rel` with `flags` (O_CLOEXEC is added), refusing any symlink on the way,
/// including the last component, and any escape from `root`. Use O_PATH for a mount target.
pub fn open_beneath(root: &Path, rel: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    let comps = components(rel)?;
    let dir = open_root(root)?;
    open_at_beneath(dir.as_fd(), &comps, flags).map_err(|e| context(root, rel, "opening", e))
}

fn open_at_beneath(dir: BorrowedFd, comps: &[&OsStr], flags: OFlag) -> Result<OwnedFd, Errno> {
    let rel: PathBuf = if comps.is_empty() {
        PathBuf::from(".")
    } else {
        comps.iter().collect()
    };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(CONFINED);
    for _ in 0..8 {
        match fcntl::openat2(dir, rel.as_path(), how) {
            // A concurrent rename anywhere on the system can make the kernel ask for a retry.
            Err(Errno::EAGAIN) => continue,
            // Before Linux 5.6: walk one component at a time instead.
            Err(Errno::ENOSYS) => return walk(dir, comps, flags),
            r => return r,
        }
    }
    Err(Errno::EAGAIN)
}

/// Component-by-component equivalent of openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS: `comps`
/// has no `..`, and every step is O_NOFOLLOW, so the walk cannot leave `dir`.
fn walk(dir: BorrowedFd, comps: &[&OsStr], flags: OFlag) -> Result<OwnedFd, Errno> {
    let Some((last, parents)) = comps.split_last() else {
        return fcntl::openat(dir, ".", flags | OFlag::O_CLOEXEC, Mode::empty());
    };
    let mut cur: Option<OwnedFd> = None;
    for c in parents {
        let at = cur.as_ref().map_or(dir, |f| f.as_fd());
        cur = Some(step_dir(at, c)?);
    }
    let at = cur.as_ref().map_or(dir, |f| f.as_fd());
    open_last(at, last, flags).map(|(fd, _)| fd)
}

/// Opens `name` in `at` with O_NOFOLLOW, with its file type. A symlink is ELOOP:
/// O_PATH|O_NOFOLLOW opens a symlink itself instead of failing.
fn open_last(at: BorrowedFd, name: &OsStr, flags: OFlag) -> Result<(OwnedFd, libc::mode_t), Errno> {
    let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = fcntl::openat(at, name, flags, Mode::empty())?;
    match stat::fstat(&fd)?.st_mode & libc::S_IFMT {
        libc::S_IFLNK => Err(Errno::ELOOP),
        kind => Ok((fd, kind)),
    }
}

/// Opens the directory `name` in `at` without following a symlink.
fn step_dir(at: BorrowedFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    fcntl::openat(at, name, flags, Mode::empty())
}

/// Creates the directories of `root/rel` that are missing, one at a time through directory
/// descriptors and never through a symlink, and returns an O_PATH descriptor of the last one
/// (`mode` applies to the directories created, minus the umask).
pub fn mkdir_beneath(root: &Path, rel: &Path, mode: u32) -> io::Result<OwnedFd> {
    let comps = components(rel)?;
    let dir = open_root(root)?;
    mkdir_at(dir, &comps, mode).map_err(|e| context(root, rel, "creating directory", e))
}

fn mkdir_at(mut cur: OwnedFd, comps: &[&OsStr], mode: u32) -> Result<OwnedFd, Errno> {
    for c in comps {
        match stat::mkdirat(&cur, *c, Mode::from_bits_truncate(mode)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e),
        }
        cur = step_dir(cur.as_fd(), c)?;
    }
    Ok(cur)
}

/// Creates the file `root/rel` if missing (parents as by [`mkdir_beneath`] with 0750) and
/// returns an O_PATH descriptor of it: the target of a raw block volume. An existing regular
/// file is reused, and so is a block device node (a device already bind-mounted there);
/// anything else (symlink, directory, fifo) is refused.
pub fn create_file_beneath(root: &Path, rel: &Path, mode: u32) -> io::Result<OwnedFd> {
    let comps = components(rel)?;
    let Some((name, parents)) = comps.split_last() else {
        let why = format!("{}: a file needs a name below the root", root.display());
        return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
    };
    let fail = |e| context(root, rel, "creating file", e);
    let parent = mkdir_at(open_root(root)?, parents, 0o750).map_err(fail)?;
    // O_CREAT|O_EXCL never follows a symlink and never opens an existing file (a fifo there
    // would block an O_RDONLY open).
    let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
    match fcntl::openat(&parent, *name, flags, Mode::from_bits_truncate(mode)) {
        Ok(_) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(fail(e)),
    }
    match open_last(parent.as_fd(), name, OFlag::O_PATH).map_err(fail)? {
        (fd, libc::S_IFREG | libc::S_IFBLK) => Ok(fd),
        _ => {
            let why = "something other than a file is there";
            let msg = format!("creating file {}: {why}", root.join(rel).display());
            Err(io::Error::new(io::ErrorKind::AlreadyExists, msg))
        }
    }
}

/// Unmounts the top mount at `root/rel`. The parent is opened beneath the root and the last
/// component is looked up by name in it with UMOUNT_NOFOLLOW, so neither a symlinked parent
/// nor a symlinked target redirects the unmount. Ok(false): nothing was mounted there (or the
/// path does not exist), which CSI's unpublish and unstage treat as done.
pub fn unmount_beneath(root: &Path, rel: &Path) -> io::Result<bool> {
    let comps = components(rel)?;
    let Some((name, parents)) = comps.split_last() else {
        let why = format!("refusing to unmount the publish root {}", root.display());
        return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
    };
    let dir = open_root(root)?;
    let parent = match open_at_beneath(dir.as_fd(), parents, OFlag::O_PATH | OFlag::O_DIRECTORY) {
        Ok(p) => p,
        Err(Errno::ENOENT) => return Ok(false),
        Err(e) => return Err(context(root, rel, "unmounting", e)),
    };
    let mut path = PathBuf::from(format!("/proc/self/fd/{}", parent.as_raw_fd()));
    path.push(name);
    match nix::mount::umount2(&path, nix::mount::MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) => Ok(true),
        Err(Errno::EINVAL | Errno::ENOENT) => Ok(false),
        Err(e) => Err(context(root, rel, "unmounting", e)),
    }
}

#[cfg(test)]
#[path = "beneath_tests.rs"]
mod tests;
