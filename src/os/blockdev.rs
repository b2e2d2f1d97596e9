//! Whole-device ioctls the device backend needs: discard, and the kernel's read-only flag.

use super::fsutil::at;
use super::sys::{ioctl_ptr, none_on};
use std::fs::File;
use std::io;
use std::path::Path;

// From linux/fs.h.
const BLKROSET: libc::c_ulong = 0x125d; // _IO(0x12, 93)
const BLKROGET: libc::c_ulong = 0x125e; // _IO(0x12, 94)
const BLKDISCARD: libc::c_ulong = 0x1277; // _IO(0x12, 119)
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272; // _IOR(0x12, 114, size_t)

/// Discards (TRIM, or hole-punch for a loop device) the whole device open as `f` (for
/// writing); Ok(false) when the device cannot discard. `dev` names it in errors.
pub fn discard_all(f: &File, dev: &Path) -> io::Result<bool> {
    let mut range: [u64; 2] = [0, size_of(f, dev)?];
    // SAFETY: BLKDISCARD reads two u64 (start, length) through the pointer.
    let done = unsafe { ioctl_ptr(f, BLKDISCARD, &mut range) };
    let done = none_on(done, &[libc::EOPNOTSUPP, libc::ENOTTY, libc::EINVAL]);
    Ok(done.map_err(at("discard ", dev))?.is_some())
}

/// The size in bytes of the block device open as `f`, as the kernel sees it now.
pub fn size_of(f: &File, dev: &Path) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer.
    unsafe { ioctl_ptr(f, BLKGETSIZE64, &mut size) }.map_err(at("size of ", dev))?;
    Ok(size)
}

/// Sets or clears the kernel's read-only flag of the device: with it set, every write through
/// any open of the device node fails with EPERM (a read-only bind mount of a device node does
/// not stop writes to the device, so this is what makes a raw block publication read-only).
pub fn set_read_only(dev: &Path, read_only: bool) -> io::Result<()> {
    let f = File::open(dev).map_err(at("open ", dev))?;
    let mut flag: libc::c_int = read_only.into();
    // SAFETY: BLKROSET reads one int through the pointer.
    unsafe { ioctl_ptr(&f, BLKROSET, &mut flag) }.map_err(at("set read-only flag of ", dev))?;
    Ok(())
}

/// The kernel's read-only flag of the device.
pub fn is_read_only(dev: &Path) -> io::Result<bool> {
    let f = File::open(dev).map_err(at("open ", dev))?;
    let mut flag: libc::c_int = 0;
    // SAFETY: BLKROGET writes one int through the pointer.
    unsafe { ioctl_ptr(&f, BLKROGET, &mut flag) }.map_err(at("read read-only flag of ", dev))?;
    Ok(flag != 0)
}
