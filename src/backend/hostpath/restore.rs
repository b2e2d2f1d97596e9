//! CreateVolume with a content source: a new volume holding a snapshot's or another volume's
//! content. On btrfs the new volume is a writable snapshot of the source subvolume (O(1));
//! elsewhere the content is reflinked or copied into a freshly made volume directory. Either
//! way the new volume shares nothing a later delete of the source could take away.

use super::record::VolumeRecord;
use super::snapshot::{is_subvolume, SnapMethod};
use super::HostpathBackend;
use crate::backend::local::LocalVolumes;
use crate::error::{Error, Result};
use crate::os::{btrfs, copytree};
use crate::snapshot::ContentSource;
use crate::volume::AccessKind;
use std::path::PathBuf;

/// A resolved content source.
pub(super) struct Source {
    /// What the CO named (recorded on the new volume for idempotency).
    pub id: String,
    /// The directory whose content the new volume gets.
    pub dir: PathBuf,
    pub kind: AccessKind,
    pub capacity: u64,
}

impl HostpathBackend {
    /// Finds the source: NotFound when unknown, InvalidArgument when on another node.
    pub(super) fn resolve_source(&self, volume: &str, src: &ContentSource) -> Result<Source> {
        if src.backend() != super::BACKEND {
            return Err(Error::invalid(format!(
                "volume {volume}: content source {} belongs to backend {}, not {}",
                src.id(),
                src.backend(),
                super::BACKEND
            )));
        }
        // A restore from another node is impossible, not merely missing.
        let node = match src {
            ContentSource::Snapshot(s) => &s.node,
            ContentSource::Volume(v) => &v.node,
        };
        if !self.is_local(node.as_deref()) {
            return Err(Error::invalid(format!(
                "volume {volume}: source {} lives on node {}, not on node {}",
                src.id(),
                node.as_deref().unwrap_or("?"),
                self.node
            )));
        }
        match src {
            ContentSource::Snapshot(id) => {
                let rec = (self.snaps.by_id(&id.to_string()))
                    .ok_or_else(|| Error::not_found_because(id.to_string(), "no such snapshot"))?;
                Ok(Source {
                    id: rec.id.clone(),
                    dir: self.snapshot_data(&rec)?,
                    kind: rec.kind,
                    capacity: rec.capacity_bytes,
                })
            }
            ContentSource::Volume(id) => {
                let rec = self.record(id)?;
                if rec.kind == AccessKind::Block {
                    crate::os::loopdev::flush_backing(&self.image_path(&rec.name))
                        .map_err(Error::os(&rec.id, "flush the loop device of"))?;
                }
                Ok(Source {
                    id: rec.id.clone(),
                    dir: self.volume_dir(&rec.name),
                    kind: rec.kind,
                    capacity: rec.capacity_bytes,
                })
            }
        }
    }

    /// Makes the volume `rec` describes with `src`'s content, durably; the caller commits the
    /// record. Unlike an empty volume, which recovery may recreate empty if a power cut lost
    /// it, a restored one must be on disk before its record says it exists: one syncfs of the
    /// base (see `copytree::FsSync`) after the copy, and on btrfs after claiming the snapshot
    /// (the snapshot ioctl commits the content, but not the markers and qgroup limit set on it
    /// afterwards).
    pub(super) fn materialize_from(&self, rec: &VolumeRecord, src: &Source) -> Result<()> {
        let dir = self.volume_dir(&rec.name);
        let os = |what: &str| Error::os(&rec.id, format!("{what} the volume's directory"));
        let sync = copytree::FsSync::begin(&self.base).map_err(os("open the filesystem of"))?;
        let method = self.probed()?.snap_method;
        tracing::info!(volume = %rec.id, source = %src.id, ?method, "restore: writing content");
        if method == SnapMethod::Btrfs && is_subvolume(&src.dir) {
            btrfs::snapshot(&src.dir, &dir, false).map_err(os("snapshot into"))?;
            // The snapshot carries the source's markers: claim it at once, so a rollback (or
            // the next start) recognizes it as this create's.
            if let Err(e) = self.mark(&dir, &rec.id, rec.backend.incarnation.as_deref()) {
                let _ = btrfs::destroy_subvolume(&dir);
                return Err(os("mark")(e));
            }
            crate::failpoint::hit("restore:after-snapshot");
            self.make_dir(rec)?;
        } else {
            self.make_dir(rec)?;
            copytree::copy_tree(&src.dir, &dir, method.copy_mode()).map_err(Error::os(
                &rec.id,
                format!("copy the content of {} into it", src.id),
            ))?;
            // The copy skips our `trusted.ferrovol.*` xattrs, so the markers make_dir set stay;
            // the root takes the source's owner and mode.
            crate::failpoint::hit("restore:after-copy");
        }
        if rec.kind == AccessKind::Block {
            self.size_image(rec, rec.capacity_bytes, "size")?;
        }
        sync.commit().map_err(os("make durable the content of"))?;
        crate::failpoint::hit("restore:after-sync");
        tracing::info!(volume = %rec.id, "restore: content durable");
        Ok(())
    }
}
