//! The one raw ioctl(2) wrapper the OS seam shares.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Issues `req` on `file` with `arg` (an integer, or a pointer cast to one).
///
/// # Safety
/// When `req` takes a pointer, `arg` must point to a live value of the size and layout the
/// request encodes, for the duration of the call.
pub unsafe fn ioctl(
    file: &File,
    req: libc::c_ulong,
    arg: libc::c_ulong,
) -> io::Result<libc::c_int> {
    // SAFETY: the caller upholds the argument contract above.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), req as _, arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}
