//! Undoing a create that never reached `Ready` (a crash, a failed step, a retried CreateVolume or
//! a DeleteVolume meeting its `Creating` record), then dropping its record. Only callers that
//! hold the volume's lock (or recovery) come here. The directory goes by layout.rs's rules for
//! `Creating`: one RMDIR (refused unless empty), only with the recorded handle or, without one,
//! with the handle found now, written first so a retry never acts on a directory made since;
//! and not at all when another record names the subDir. A restore's copy already renamed to the
//! subDir is removed whole, proven by the staging handle kept before the copy began
//! (restore.rs); a record of an earlier version names its staging copy by fileid only, which
//! proves nothing, so such a subDir stays.

use super::layout::{self, VolumeRecord};
use super::{map_nfs_error, names, remove_record, write_record};
use crate::error::Result;
use crate::nfs::{Guarded, NfsClient, Rmdir};
use std::time::Duration;

pub(super) fn undo_create(c: &NfsClient, rec: &VolumeRecord, timeout: Duration) -> Result<()> {
    let vid = &rec.id;
    let err = |e| map_nfs_error(vid, timeout, e);
    if let Some(staging) = &rec.staging {
        c.remove_tree(staging).map_err(err)?;
    }
    if let Some(copy) = &rec.staging_handle {
        if c.remove_tree_if(&rec.sub_dir, Some(copy)).map_err(err)? == Guarded::Done {
            tracing::info!(volume = %vid, dir = %rec.sub_dir, "removed the copy of a restore cut off after its rename");
        }
    }
    let handle = match &rec.dir_handle {
        Some(h) => Some(h.clone()),
        None if named_by_another(c, rec, timeout)? => {
            tracing::warn!(volume = %vid, dir = %rec.sub_dir,
                "unfinished create without a recorded handle: another volume's record names its directory; left in place");
            None
        }
        None => match c.handle_of(&rec.sub_dir).map_err(err)? {
            Some((h, attr)) if attr.is_dir() => {
                let mut intent = rec.clone();
                intent.dir_handle = Some(h.clone());
                write_record(c, &intent, timeout)?;
                Some(h)
            }
            _ => None,
        },
    };
    if let Some(h) = handle {
        match c.rmdir_if_empty(&rec.sub_dir, Some(&h)).map_err(err)? {
            Rmdir::Removed | Rmdir::Absent => {}
            Rmdir::Kept => tracing::warn!(volume = %vid, dir = %rec.sub_dir,
                "unfinished create: the directory is not empty or not the one it made; left in place"),
        }
    }
    remove_record(c, rec, timeout)?;
    tracing::info!(volume = %vid, server = %c.server(), "rolled back an unfinished create");
    Ok(())
}

/// Whether another record on the share names `rec`'s subDir (an unreadable one counts): every
/// create writes its record before its MKDIR, so a directory no other record names was made by
/// this create or by hand. Reads every record: only creates cut off before their handle come here.
fn named_by_another(c: &NfsClient, rec: &VolumeRecord, timeout: Duration) -> Result<bool> {
    let err = |e| map_nfs_error(&rec.id, timeout, e);
    let own = layout::parse_volume_id(&rec.id).expect("records carry our ids");
    for name in names(c, layout::RECORDS_DIR).map_err(err)? {
        let Some(key) = layout::key_of_record_file(&name).filter(|k| *k != own) else {
            continue;
        };
        let Some(bytes) = c.read_file(&layout::record_path(key)).map_err(err)? else {
            continue;
        };
        match VolumeRecord::from_bytes(key, &bytes) {
            Ok(other) if other.sub_dir != rec.sub_dir => {}
            _ => return Ok(true),
        }
    }
    Ok(false)
}
