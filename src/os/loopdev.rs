//! Loop devices over the sparse image files of block volumes, driven by the loop ioctls.

use super::sys::{ioctl, ioctl_ptr, none_on};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_CAPACITY: libc::c_ulong = 0x4C07;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LOOP_MAJOR: u64 = 7;
/// How long a detach waits for another opener of the device to close it.
const DETACH_WAIT: Duration = Duration::from_secs(2);

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// A loop device currently attached to some file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub device: PathBuf,
    pub read_only: bool,
}

/// Attaches `image` to a free loop device and returns the device path.
pub fn attach(image: &Path, read_only: bool) -> io::Result<PathBuf> {
    let backing = File::options().read(true).write(!read_only).open(image)?;
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    // Another process may take the free device between GET_FREE and CONFIGURE: retry then.
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument.
        let n = unsafe { ioctl(&control, LOOP_CTL_GET_FREE, 0) }? as u64;
        let device = ensure_node(n)?;
        let dev = OpenOptions::new().read(true).write(true).open(&device)?;
        // SAFETY: LoopConfig is plain old data; all-zero is its documented default.
        let mut config: LoopConfig = unsafe { std::mem::zeroed() };
        config.fd = backing.as_raw_fd() as u32;
        if read_only {
            config.info.lo_flags = LO_FLAGS_READ_ONLY;
        }
        // SAFETY: LOOP_CONFIGURE reads a LoopConfig.
        let configured = unsafe { ioctl_ptr(&dev, LOOP_CONFIGURE, &mut config) };
        if none_on(configured, &[libc::EBUSY])?.is_some() {
            return Ok(device);
        }
    }
    Err(io::Error::other("no free loop device after 16 attempts"))
}

// Inside a container /dev may be a copy that lacks nodes the host created later.
fn ensure_node(n: u64) -> io::Result<PathBuf> {
    let device = PathBuf::from(format!("/dev/loop{n}"));
    if !device.exists() {
        let mode = Mode::from_bits_truncate(0o660);
        mknod(&device, SFlag::S_IFBLK, mode, makedev(LOOP_MAJOR, n)).map_err(io::Error::from)?;
    }
    Ok(device)
}

/// Every loop device whose backing file is `image`.
pub fn find_by_backing_file(image: &Path) -> io::Result<Vec<Attached>> {
    let image = fs::canonicalize(image)?;
    let mut found = Vec::new();
    for entry in fs::read_dir("/sys/block")? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = fs::read_to_string(entry.path().join("loop/backing_file")) else {
            continue; // not attached
        };
        if Path::new(backing.trim_end()) == image {
            let ro = fs::read_to_string(entry.path().join("ro")).unwrap_or_default();
            found.push(Attached {
                device: PathBuf::from("/dev").join(&name),
                read_only: ro.trim() == "1",
            });
        }
    }
    found.sort_by(|a, b| a.device.cmp(&b.device));
    Ok(found)
}

/// The backing file of the open loop device `dev` as (st_dev, inode), asked of the kernel
/// through that descriptor; None when `dev` is no loop device or is not attached.
pub fn backing_of(dev: &fs::File) -> io::Result<Option<(u64, u64)>> {
    use std::os::unix::fs::MetadataExt;
    let rdev = dev.metadata()?.rdev();
    if u64::from(libc::major(rdev)) != LOOP_MAJOR {
        return Ok(None);
    }
    // SAFETY: all-zero bytes are a valid LoopInfo64 (integers and byte arrays).
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    // SAFETY: LOOP_GET_STATUS64 writes one LoopInfo64 through the pointer.
    let got = unsafe { ioctl_ptr(dev, LOOP_GET_STATUS64, &mut info) };
    Ok(none_on(got, &[libc::ENXIO])?.map(|_| (info.lo_device, info.lo_inode)))
}

/// Detaches `device`; succeeds when it is already free. The kernel defers the detach of a
/// device another process holds open (udev or a discovery scan probing it) to its last close,
/// and answers at once: this waits `DETACH_WAIT` for it, then fails with EBUSY, so a caller
/// never answers for a device still attached (a retry finds it and waits again).
pub fn detach(device: &Path) -> io::Result<()> {
    let name = device.file_name().unwrap_or_default();
    let bound = Path::new("/sys/block").join(name).join("loop/backing_file");
    let backing = || {
        let file = fs::read_to_string(&bound).ok()?;
        Some(file.trim_end().trim_end_matches(" (deleted)").to_string())
    };
    let ours = backing();
    let dev = OpenOptions::new().read(true).open(device)?;
    // SAFETY: LOOP_CLR_FD takes no argument.
    none_on(unsafe { ioctl(&dev, LOOP_CLR_FD, 0) }, &[libc::ENXIO])?;
    drop(dev); // an opener too: the deferred detach waits for this close
    let deadline = Instant::now() + DETACH_WAIT;
    // Done once it backs no file, or another one (an attach took the freed device at once).
    while ours.is_some() && backing() == ours {
        if Instant::now() > deadline {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Makes the device pick up a grown backing file.
pub fn refresh_capacity(device: &Path) -> io::Result<()> {
    let dev = OpenOptions::new().read(true).open(device)?;
    // SAFETY: LOOP_SET_CAPACITY takes no argument.
    unsafe { ioctl(&dev, LOOP_SET_CAPACITY, 0) }.map(|_| ())
}

/// Writes what `image`'s loop devices hold in their page cache back to `image`, so a copy or
/// snapshot of the file holds what the pod last wrote. A no-op when none is attached.
pub fn flush_backing(image: &Path) -> io::Result<()> {
    for a in find_by_backing_file(image)? {
        fs::File::open(&a.device)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "loopdev_tests.rs"]
mod tests;
