//! Signatures on a block device, from libblkid's low-level probe: the same calls `wipefs -n`
//! and `blkid -p` make. We declare the few C functions we need ourselves (no bindgen, no
//! clang at build time); libblkid-dev provides the library to link against.
//!
//! A device is "blank" only when [`probe_all`] finds nothing: not a filesystem, not a RAID or
//! LVM member, not swap, not LUKS, not a partition table. The device backend formats only
//! blank devices, and wipes back only the signatures it wrote ([`wipe_at`]), through a
//! descriptor it has proven to be the volume's device.

use super::fsutil::at;
use serde::{Deserialize, Serialize};
use std::ffi::{c_char, c_int, CStr};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

#[allow(non_camel_case_types)]
type blkid_probe = *mut std::ffi::c_void;

#[link(name = "blkid")]
extern "C" {
    fn blkid_new_probe() -> blkid_probe;
    fn blkid_free_probe(pr: blkid_probe);
    fn blkid_probe_set_device(pr: blkid_probe, fd: c_int, off: i64, size: i64) -> c_int;
    fn blkid_probe_enable_superblocks(pr: blkid_probe, enable: c_int) -> c_int;
    fn blkid_probe_set_superblocks_flags(pr: blkid_probe, flags: c_int) -> c_int;
    fn blkid_probe_enable_partitions(pr: blkid_probe, enable: c_int) -> c_int;
    fn blkid_probe_set_partitions_flags(pr: blkid_probe, flags: c_int) -> c_int;
    fn blkid_do_probe(pr: blkid_probe) -> c_int;
    fn blkid_do_wipe(pr: blkid_probe, dryrun: c_int) -> c_int;
    fn blkid_probe_lookup_value(
        pr: blkid_probe,
        name: *const c_char,
        data: *mut *const c_char,
        len: *mut usize,
    ) -> c_int;
}

// From blkid.h.
const SUBLKS_LABEL: c_int = 1 << 1;
const SUBLKS_UUID: c_int = 1 << 3;
const SUBLKS_TYPE: c_int = 1 << 5;
const SUBLKS_USAGE: c_int = 1 << 7;
const SUBLKS_VERSION: c_int = 1 << 8;
const SUBLKS_MAGIC: c_int = 1 << 9;
// A superblock with a bad checksum is still someone's data: report it too, as wipefs does.
const SUBLKS_BADCSUM: c_int = 1 << 10;
const SUBLKS_WANTED: c_int = SUBLKS_LABEL
    | SUBLKS_UUID
    | SUBLKS_TYPE
    | SUBLKS_USAGE
    | SUBLKS_VERSION
    | SUBLKS_MAGIC
    | SUBLKS_BADCSUM;
const PARTS_MAGIC: c_int = 1 << 3;

/// What a signature is, from blkid's USAGE (and TYPE for the cases USAGE lumps together).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Filesystem,
    PartitionTable,
    Raid,
    Lvm,
    Swap,
    Crypto,
    Other,
}

/// One signature found on a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub kind: Kind,
    /// blkid's TYPE or PTTYPE: ext4, xfs, LVM2_member, swap, crypto_LUKS, gpt, dos, PMBR, ...
    pub fs_type: String,
    pub uuid: Option<String>,
    pub label: Option<String>,
    /// Byte offset of the magic string (SBMAGIC_OFFSET / PTMAGIC_OFFSET).
    pub offset: u64,
    /// Length of the magic string: what a wipe erases.
    pub magic_len: usize,
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {:#x}", self.fs_type, self.offset)
    }
}

/// A probe over an open device; freed on drop. The `File` outlives the probe that reads it.
struct Probe {
    pr: blkid_probe,
    _file: File,
}

impl Drop for Probe {
    fn drop(&mut self) {
        // SAFETY: `pr` came from blkid_new_probe and is freed exactly once.
        unsafe { blkid_free_probe(self.pr) }
    }
}

impl Probe {
    fn open(path: &Path, file: File) -> io::Result<Probe> {
        // SAFETY: plain constructor; null on allocation failure.
        let pr = unsafe { blkid_new_probe() };
        let dev = path.display();
        if pr.is_null() {
            return Err(failed(format!("cannot allocate a probe for {dev}")));
        }
        let probe = Probe { pr, _file: file };
        let fd = probe._file.as_raw_fd();
        // SAFETY: `pr` is live; `fd` stays open as long as the probe (same struct).
        let ok = unsafe {
            blkid_probe_set_device(pr, fd, 0, 0) == 0
                && blkid_probe_enable_superblocks(pr, 1) == 0
                && blkid_probe_set_superblocks_flags(pr, SUBLKS_WANTED) == 0
                && blkid_probe_enable_partitions(pr, 1) == 0
                && blkid_probe_set_partitions_flags(pr, PARTS_MAGIC) == 0
        };
        if !ok {
            return Err(failed(format!("cannot set up a probe on {dev}")));
        }
        Ok(probe)
    }

    fn value(&self, name: &CStr) -> Option<String> {
        self.raw(name).map(|b| {
            let text = b.strip_suffix(&[0]).unwrap_or(&b);
            String::from_utf8_lossy(text).into_owned()
        })
    }

    /// A value's raw bytes as blkid stores them (a magic is binary, not text).
    fn raw(&self, name: &CStr) -> Option<Vec<u8>> {
        let mut data: *const c_char = std::ptr::null();
        let mut len = 0usize;
        // SAFETY: `pr` is live; blkid points `data` at a NUL-terminated string it owns until
        // the next probe call, and we copy it out at once.
        let rc = unsafe { blkid_probe_lookup_value(self.pr, name.as_ptr(), &mut data, &mut len) };
        if rc != 0 || data.is_null() {
            return None;
        }
        // SAFETY: see above; `len` bytes are readable at `data`.
        Some(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) }.to_vec())
    }

    /// Steps to the next signature: Ok(true) found one, Ok(false) no more.
    fn next(&self, path: &Path) -> io::Result<bool> {
        // SAFETY: `pr` is live.
        match unsafe { blkid_do_probe(self.pr) } {
            0 => Ok(true),
            1 => Ok(false),
            _ => Err(failed(format!("probing {} failed", path.display()))),
        }
    }

    /// The signature the probe stands on now.
    fn current(&self) -> Option<Signature> {
        if let Some(pt) = self.value(c"PTTYPE") {
            return Some(Signature {
                kind: Kind::PartitionTable,
                fs_type: pt,
                uuid: self.value(c"PTUUID"),
                label: None,
                offset: self.value(c"PTMAGIC_OFFSET")?.parse().ok()?,
                magic_len: self.raw(c"PTMAGIC").map_or(0, |m| m.len()),
            });
        }
        let fs_type = self.value(c"TYPE")?;
        let usage = self.value(c"USAGE").unwrap_or_default();
        Some(Signature {
            kind: kind_of(&usage, &fs_type),
            uuid: self.value(c"UUID"),
            label: self.value(c"LABEL"),
            offset: self.value(c"SBMAGIC_OFFSET")?.parse().ok()?,
            magic_len: self.raw(c"SBMAGIC").map_or(0, |m| m.len()),
            fs_type,
        })
    }
}

fn failed(what: String) -> io::Error {
    io::Error::other(format!("blkid: {what}"))
}

fn kind_of(usage: &str, fs_type: &str) -> Kind {
    match (usage, fs_type) {
        (_, "LVM2_member" | "LVM1_member") => Kind::Lvm,
        (_, "swap" | "swsuspend") => Kind::Swap,
        ("filesystem", _) => Kind::Filesystem,
        ("raid", _) => Kind::Raid,
        ("crypto", _) => Kind::Crypto,
        _ => Kind::Other,
    }
}

/// Every signature on `path`, in blkid's probing order (superblocks, then partition tables).
/// A blank device gives an empty vector.
pub fn probe_all(path: &Path) -> io::Result<Vec<Signature>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(at("open ", path))?;
    let probe = Probe::open(path, file)?;
    let mut found = Vec::new();
    while probe.next(path)? {
        if let Some(sig) = probe.current() {
            found.push(sig);
        }
    }
    Ok(found)
}

/// Opens `path` for [`wipe_at`] and [`wipe_all`]: read-write and O_EXCL, so a mounted or
/// held device fails with EBUSY instead of losing a signature under a live filesystem.
pub fn open_for_wipe(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL)
        .open(path)
        .map_err(at("open ", path))
}

/// Erases the signatures whose magic starts at one of `offsets`, and nothing else, on the
/// device open as `dev` (from [`open_for_wipe`]; `path` names it in errors); returns what it
/// erased, fsynced.
pub fn wipe_at(dev: &File, path: &Path, offsets: &[u64]) -> io::Result<Vec<Signature>> {
    wipe_matching(dev, path, |s| offsets.contains(&s.offset))
}

/// Erases every signature (like `wipefs -a`) on the device open as `dev`, as [`wipe_at`].
pub fn wipe_all(dev: &File, path: &Path) -> io::Result<Vec<Signature>> {
    let mut erased = Vec::new();
    // Erasing one table can uncover another (a GPT's backup header, a PMBR): probe again
    // until nothing is left, a bounded number of times.
    for _ in 0..4 {
        let round = wipe_matching(dev, path, |_| true)?;
        if round.is_empty() {
            break;
        }
        erased.extend(round);
    }
    Ok(erased)
}

fn wipe_matching(
    dev: &File,
    path: &Path,
    want: impl Fn(&Signature) -> bool,
) -> io::Result<Vec<Signature>> {
    let probe = Probe::open(path, dev.try_clone()?)?;
    let mut erased = Vec::new();
    while probe.next(path)? {
        let Some(sig) = probe.current() else { continue };
        if !want(&sig) {
            continue;
        }
        // SAFETY: `pr` is live and set on a writable fd. blkid_do_wipe zeroes the current
        // magic and steps the probe back so the loop re-probes the same chain.
        if unsafe { blkid_do_wipe(probe.pr, 0) } != 0 {
            return Err(failed(format!("wiping {sig} on {} failed", path.display())));
        }
        erased.push(sig);
    }
    dev.sync_all().map_err(at("fsync ", path))?;
    Ok(erased)
}

/// Whether `path` can be opened O_EXCL right now (nobody mounts or holds it). The descriptor
/// is closed at once.
pub fn can_open_exclusive(path: &Path) -> io::Result<bool> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::EXCL | OFlags::CLOEXEC;
    match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(_fd) => Ok(true),
        Err(rustix::io::Errno::BUSY) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
#[path = "blkid_tests.rs"]
mod tests;
