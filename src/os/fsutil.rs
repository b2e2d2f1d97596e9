//! Durable writes, random tokens, and a removal that refuses to cross mount points.

use super::sys::none_on;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Prefixes an error with `what` and the path it is about (`{what}{path}: {error}`), keeping
/// its kind.
pub fn at(what: &str, path: &Path) -> impl FnOnce(io::Error) -> io::Error + use<> {
    let what = format!("{what}{}", path.display());
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new content:
/// write a temp file beside it, fsync it, rename it over, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let no = |what: &str| io::Error::other(format!("path has no {what}"));
    let dir = path.parent().ok_or_else(|| no("parent"))?;
    let file_name = path.file_name().ok_or_else(|| no("file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fsync_dir(dir)
}

/// Makes a rename, create or unlink inside `dir` durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Renames `from` to `to` only if `to` does not exist (renameat2 RENAME_NOREPLACE: a plain
/// rename would silently replace an empty directory), then makes both directories' entries
/// durable. EXDEV when the two lie on different filesystems (or btrfs subvolumes): nothing is
/// copied.
pub fn rename_noreplace_durable(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE)?;
    for dir in [to.parent(), from.parent()].into_iter().flatten() {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// A fresh random token (64 bits, hex) from the kernel's generator.
pub fn random_token() -> io::Result<String> {
    Ok(hex(&random_bytes::<8>()?))
}

/// `N` bytes from the kernel's random source (getrandom(2)).
pub fn random_bytes<const N: usize>() -> io::Result<[u8; N]> {
    let mut raw = [0u8; N];
    getrandom::fill(&mut raw).map_err(io::Error::from)?;
    Ok(raw)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 16 bytes in the usual UUID text form (8-4-4-4-12 hex digits).
pub fn uuid_text(b: &[u8]) -> String {
    let h = hex(b);
    let (a, b, c, d, e) = (&h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]);
    format!("{a}-{b}-{c}-{d}-{e}")
}

/// Removes a directory tree that must live on one filesystem (not synced: callers record the
/// removal in the state journal, and recovery finishes a removal a power cut undid). Refuses
/// (EXDEV) when anything is mounted below it, before removing anything, so a forgotten bind
/// mount never takes other data with it. Nested btrfs subvolumes (a different st_dev, but no
/// mount) are part of the tree and go too. Trees of any depth (`rmtree`).
pub fn remove_tree_one_fs(path: &Path) -> io::Result<()> {
    if none_on(fs::symlink_metadata(path), &[libc::ENOENT])?.is_none() {
        return Ok(());
    }
    if let Some(m) = super::mountinfo::first_mount_below(path)? {
        let why = format!("{} is a mount inside {}", m.display(), path.display());
        return Err(io::Error::new(io::ErrorKind::CrossesDevices, why));
    }
    super::rmtree::remove_tree(path)
}

/// Marks an empty file no-copy-on-write (btrfs `chattr +C`), so rewriting a block of a disk image
/// does not keep the old copy charged to the volume's qgroup. A no-op where unsupported.
pub fn set_nocow(file: &File) -> io::Result<()> {
    use rustix::{fs::IFlags, io::Errno};
    let flags = rustix::fs::ioctl_getflags(file)?;
    match rustix::fs::ioctl_setflags(file, flags | IFlags::NOCOW) {
        Ok(()) | Err(Errno::OPNOTSUPP | Errno::NOTTY | Errno::INVAL) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Bytes allocated and inodes used below `path` (a du walk; used only where no quota counts it).
/// Iterative (`dirwalk`), so a tree of any depth is measured; entries that vanish while it is
/// walked are not counted.
pub fn disk_usage(path: &Path) -> io::Result<(u64, u64)> {
    use super::dirwalk::{self, Cursor};
    let meta = fs::symlink_metadata(path)?;
    let (mut bytes, mut inodes) = (meta.blocks() * 512, 1);
    if !meta.is_dir() {
        return Ok((bytes, inodes));
    }
    let mut cur = Cursor::new(File::open(path)?.into())?;
    while let Some(name) = cur.next_below()? {
        let dir = cur.fd().expect("a directory being read is open");
        let Some(st) = none_on(dirwalk::lstat_at(dir, &name), dirwalk::GONE)? else {
            continue;
        };
        bytes += st.st_blocks as u64 * 512;
        inodes += 1;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            if let Some(fd) = none_on(dirwalk::open_dir_at(dir, &name), dirwalk::GONE)? {
                cur.push(&name, fd)?;
            }
        }
    }
    Ok((bytes, inodes))
}
