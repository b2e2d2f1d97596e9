//! DeleteVolume of the NFS backend: the record turns `Deleting`, then the directory is removed,
//! archived or retained by its class's `onDelete` (each only while its file handle is the one
//! recorded), and the record goes last. See the module doc for the record protocol.

use super::layout::{self, VolumeRecord};
use super::params::OnDelete;
use super::{remove_record, NfsBackend};
use crate::error::{Error, Result};
use crate::nfs::{Guarded, NfsClient};
use std::time::SystemTime;

/// Archive names taken in the same second get `-<n>`; give up after this many.
const ARCHIVE_ATTEMPTS: u32 = 100;

impl NfsBackend {
    /// Carries out onDelete on the volume's own directory (never a parent, never a directory
    /// without the recorded handle), then drops the record. Each step is idempotent, so a retry
    /// after a crash or a failed step finishes the job.
    pub(super) fn finish_delete(&self, c: &NfsClient, rec: &VolumeRecord) -> Result<()> {
        let vid = &rec.id;
        let err = |e| self.err(vid, e);
        let done = match (rec.on_delete, &rec.dir_handle) {
            (OnDelete::Retain, _) => Guarded::Absent,
            (OnDelete::Archive, Some(handle)) => self.archive(c, rec, handle)?,
            (OnDelete::Delete, Some(h)) => c.remove_tree_if(&rec.sub_dir, Some(h)).map_err(err)?,
            (_, None) if c.lookup(&rec.sub_dir).map_err(err)?.is_some() => {
                let (dir, server, share) = (&rec.sub_dir, &rec.server, &rec.share);
                let record = layout::record_path(rec.key());
                return Err(Error::precondition(vid, format!("its record, from an earlier driver version, was being deleted and keeps no file handle: {dir} on {server}:{share} cannot be proven to be this volume's directory rather than one made since; remove the directory or the record {record} by hand")));
            }
            (_, None) => Guarded::Absent,
        };
        if done == Guarded::Foreign {
            tracing::warn!(volume = %vid, dir = %rec.sub_dir, server = %rec.server,
                "the directory there is not the one made for this volume (another file handle): left untouched, only the record goes");
        }
        remove_record(c, rec, self.cfg.timeout)?;
        tracing::info!(volume = %vid, server = %rec.server, dir = %rec.sub_dir, on_delete = ?rec.on_delete, "volume deleted");
        Ok(())
    }

    /// Moves the volume's directory (the one with `handle`) to a free archive name beside it.
    fn archive(&self, c: &NfsClient, rec: &VolumeRecord, handle: &str) -> Result<Guarded> {
        let vid = &rec.id;
        let err = |e| self.err(vid, e);
        match c.handle_of(&rec.sub_dir).map_err(err)? {
            Some((h, _)) if h == handle => {}
            // Already archived by an earlier attempt (or removed by hand): nothing to move.
            None => return Ok(Guarded::Absent),
            Some(_) => return Ok(Guarded::Foreign),
        }
        let at = SystemTime::now();
        for attempt in 0..ARCHIVE_ATTEMPTS {
            let to = layout::archive_path(&rec.sub_dir, at, attempt);
            // RENAME replaces an empty directory silently: only onto a name that is free.
            let done = c.rename_if(&rec.sub_dir, handle, &to, None).map_err(err)?;
            if done == Guarded::Done {
                tracing::info!(volume = %vid, to = %to, "volume directory archived");
            }
            if done != Guarded::Foreign {
                return Ok(done);
            }
        }
        let (dir, server) = (&rec.sub_dir, &rec.server);
        let why = format!("volume {vid}: no free archive name beside {dir} on {server}");
        Err(Error::Internal(why))
    }
}
