//! The raw system-call helpers the OS seam shares: a failed call's errno, and ioctl(2).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// The return value of a raw call, or the errno it set when it returned a negative value.
pub(crate) fn check<T: Default + PartialOrd>(rc: T) -> io::Result<T> {
    if rc < T::default() {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `r`'s value, or None when it failed with one of `errnos` (an outcome the caller expects).
pub(crate) fn none_on<T>(r: io::Result<T>, errnos: &[i32]) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.raw_os_error().is_some_and(|n| errnos.contains(&n)) => Ok(None),
        Err(e) => Err(e),
    }
}

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
    check(unsafe { libc::ioctl(file.as_raw_fd(), req as _, arg) })
}

/// Issues `req` on `file` with a pointer to `arg`.
///
/// # Safety
/// `req` must read or write at most a `T`, laid out as the request encodes, through it.
pub unsafe fn ioctl_ptr<T>(
    file: &File,
    req: libc::c_ulong,
    arg: &mut T,
) -> io::Result<libc::c_int> {
    // SAFETY: `arg` is live across the call; the caller vouches for its layout.
    unsafe { ioctl(file, req, arg as *mut T as libc::c_ulong) }
}
