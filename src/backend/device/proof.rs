//! Proof, at the moment of writing, that a device node is the device a volume claimed. The
//! inventory may lag behind the hardware (a uevent not handled yet, another disk in the same
//! bay under the same number and identity), so a format, wipe or discard first opens the node,
//! then reads through that descriptor and the sysfs entry of its exact device number what the
//! claim recorded, and writes only through that descriptor, or while holding it (a held device
//! can neither be detached from its loop nor give its number to another disk).

use super::{DeviceBackend, VolumeRecord};
use crate::discovery::{Entry, State};
use crate::error::{Error, Result};
use crate::os::{blkid, blockdev, loopdev};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// What a volume's record keeps of the device it claimed, read through a descriptor at claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// major:minor when claimed.
    pub dev_number: String,
    /// For a loop device, its backing file as (st_dev, inode), from the kernel.
    #[serde(default)]
    pub loop_backing: Option<(u64, u64)>,
}

/// How the proven device is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hold {
    /// Read-only and shared: kept open while a tool (mkfs) writes by path.
    Shared,
    /// Read-write and O_EXCL: the descriptor a wipe or discard writes through.
    Exclusive,
}

/// A device number as the mount table and sysfs write it, `major:minor`.
pub(super) fn number_of(rdev: u64) -> String {
    format!("{}:{}", libc::major(rdev), libc::minor(rdev))
}

pub(super) fn fingerprint(file: &File) -> std::io::Result<Fingerprint> {
    Ok(Fingerprint {
        dev_number: number_of(file.metadata()?.rdev()),
        loop_backing: loopdev::backing_of(file)?,
    })
}

/// Why the entry may not be written now, for any volume: another device presents its uid.
pub(super) fn conflict(e: &Entry) -> Option<String> {
    (!e.conflict.is_empty()).then(|| {
        let others: Vec<String> = e.conflict.iter().map(|n| format!("/dev/{n}")).collect();
        format!(
            "device {} at {} shares its identity with {}; not used while they coexist",
            e.device.uid,
            e.device.dev_path.display(),
            others.join(", ")
        )
    })
}

impl DeviceBackend {
    /// Opens `path` as `hold` and proves it is `rec`'s device, returning the descriptor:
    /// claimed by this volume, no other device presenting its uid, the uid read afresh for the
    /// descriptor's device number, the size, and the fingerprint taken at claim (a loop
    /// device's backing file always; the device number too when `strict`, for writes no
    /// content of ours can vouch for: a raw volume's wipe, a first format). Anything else is
    /// FailedPrecondition, nothing written.
    pub(super) fn prove(
        &self,
        rec: &VolumeRecord,
        path: &Path,
        hold: Hold,
        strict: bool,
    ) -> Result<File> {
        let at = path.display();
        let refuse = |why: String| {
            let not = "is not proven to be the device this volume claimed";
            Error::precondition(&rec.id, format!("{at} {not} ({why}); nothing written"))
        };
        let file = match hold {
            Hold::Exclusive => blkid::open_for_wipe(path),
            Hold::Shared => File::open(path),
        }
        .map_err(Error::os(&rec.id, format!("open {at}")))?;
        let meta = file
            .metadata()
            .map_err(Error::os(&rec.id, format!("stat {at}")))?;
        if !meta.file_type().is_block_device() {
            return Err(refuse("not a block device".into()));
        }
        let number = number_of(meta.rdev());
        let uid = &rec.backend.uid;
        let entry = self
            .inventory
            .get(uid)
            .ok_or_else(|| refuse(format!("device {uid} is not in the inventory")))?;
        if let Some(why) = conflict(&entry).or_else(|| self.contested(rec)) {
            return Err(refuse(why));
        }
        if entry.state != State::Active || entry.claim != self.ours(rec) {
            return Err(refuse(format!(
                "device {uid} is {:?} with claim {:?}",
                entry.state, entry.claim
            )));
        }
        if entry.device.dev_number != number {
            return Err(refuse(format!(
                "it is device {number}; the inventory has {uid} at {}",
                entry.device.dev_number
            )));
        }
        let now = self
            .inventory
            .identify(&number)
            .map_err(Error::os(&rec.id, format!("identify device {number}")))?
            .ok_or_else(|| refuse(format!("no device {number} in sysfs")))?;
        if &now.uid != uid {
            return Err(refuse(format!(
                "device {number} presents identity {} now, not {uid}",
                now.uid
            )));
        }
        let size =
            blockdev::size_of(&file, path).map_err(Error::os(&rec.id, format!("size of {at}")))?;
        if size != rec.backend.device_size {
            return Err(refuse(format!(
                "it is {size} bytes; the volume was made on {}",
                rec.backend.device_size
            )));
        }
        if let Some(then) = &rec.backend.claimed_as {
            let fp =
                fingerprint(&file).map_err(Error::os(&rec.id, format!("read identity of {at}")))?;
            if fp.loop_backing != then.loop_backing {
                return Err(refuse(format!(
                    "its backing file is {:?}, the claimed device's was {:?}",
                    fp.loop_backing, then.loop_backing
                )));
            }
            if strict && fp.dev_number != then.dev_number {
                return Err(refuse(format!(
                    "it is device {}, the claimed one was {}",
                    fp.dev_number, then.dev_number
                )));
            }
        }
        Ok(file)
    }
}
