//! One file's contents copied into another: by reflink (FICLONE) where the filesystem shares
//! extents and the caller allows it, else by a sparse copy of the data extents (holes stay
//! holes). The tree walk around it is `copytree`.

use rustix::fs::{copy_file_range, SeekFrom};
use rustix::io::Errno;
use std::fs::File;
use std::io;
use std::path::Path;

/// How file contents reach the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// FICLONE each file (shared extents); a file the kernel refuses to clone is copied.
    Reflink,
    /// Copy the bytes of each data extent, leaving holes as holes.
    Copy,
}

/// Clones `src` into `dst` (an empty file) when `mode` allows and the kernel can, else copies
/// its data extents sparsely. Returns whether it was a clone. `dst` gets `src`'s length.
pub fn clone_or_copy_file(src: &File, dst: &File, mode: Mode) -> io::Result<bool> {
    if mode == Mode::Reflink {
        match rustix::fs::ioctl_ficlone(dst, src) {
            Ok(()) => return Ok(true),
            // Not supported here, across filesystems, or between CoW and no-CoW files.
            Err(Errno::OPNOTSUPP | Errno::XDEV | Errno::INVAL | Errno::NOTTY) => {}
            Err(e) => return Err(e.into()),
        }
    }
    sparse_copy(src, dst)?;
    Ok(false)
}

/// Copies the data extents of `src` found by SEEK_DATA/SEEK_HOLE; holes stay holes.
fn sparse_copy(src: &File, dst: &File) -> io::Result<u64> {
    let len = src.metadata()?.len();
    let mut pos = 0;
    let mut copied = 0u64;
    while pos < len {
        let data = match rustix::fs::seek(src, SeekFrom::Data(pos)) {
            Ok(data) => data,
            Err(Errno::NXIO) => break, // only a hole remains
            Err(e) => return Err(e.into()),
        };
        let hole = rustix::fs::seek(src, SeekFrom::Hole(data))?;
        let (mut off_in, mut off_out) = (data, data);
        while off_in < hole {
            let want = (hole - off_in) as usize;
            let n = copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want)?;
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
        Ok(rustix::fs::ioctl_ficlone(&fb, &fa).is_ok())
    })();
    let _ = std::fs::remove_file(&a);
    let _ = std::fs::remove_file(&b);
    result
}
