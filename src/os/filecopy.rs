//! One file's contents copied into another: by reflink (FICLONE) where the filesystem shares
//! extents and the caller allows it, else by a sparse copy of the data extents (holes stay
//! holes). The tree walk around it is `copytree`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// How file contents reach the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// FICLONE each file (shared extents); a file the kernel refuses to clone is copied.
    Reflink,
    /// Copy the bytes of each data extent, leaving holes as holes.
    Copy,
}

// _IOW(0x94, 9, int)
const FICLONE: libc::c_ulong = 0x4004_9409;

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
