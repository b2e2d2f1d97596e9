//! A copy (snapshot, restore, clone) and a delete of what it reads, on two controllers. Each
//! looks at the other before it acts, and a look alone can miss the other: the copy may read
//! its source `Ready` just before the delete writes its intent, while the delete looks for
//! readers just before the copy shows life. So each side writes, then reads the other's state,
//! and whichever reads last sees the other's write:
//! - a copy shows life (alive.rs) and only then reads its source's record again: it goes on
//!   only while that is still `Ready` (a volume: with the directory and handle it resolved);
//!   otherwise it stops before copying, removing nothing of the source (Aborted);
//! - a delete writes its `Deleting` intent and only then looks for another controller's copy
//!   reading it again: when one shows life, nothing was removed yet, so the record goes back to
//!   what it was before the intent and the delete answers Aborted.
//!
//! Both may stop at once; the CO retries both.

use super::layout::{self, RecordState, SnapshotRecord, VolumeRecord};
use super::snapshots::{read_snap_record, write_snap_record};
use super::{read_json, recorded_handle, write_record, NfsBackend};
use crate::error::{Error, Result};
use crate::nfs::NfsClient;
use std::time::Duration;

/// Why copy `copy` stops before copying: Aborted while its source's record is `Deleting`
/// (`deleting`), rather than FailedPrecondition, since that delete is the operation pending: it
/// may yet back off and leave the source `Ready`, so the CO retries with back-off, and the retry
/// either copies or finds the source gone. A source gone or replaced since it was resolved is
/// FailedPrecondition, as when a copy finds its source directory changed.
fn stopped(copy: &str, kind: &str, source: &str, deleting: bool) -> Error {
    if deleting {
        let why = format!("{copy} (its source {kind} {source} is being deleted; nothing copied)");
        return Error::Busy(why);
    }
    let why =
        format!("source {kind} {source} is gone or changed since the copy began; nothing copied");
    Error::precondition(copy, why)
}

/// Copy side, volume source: after the copy shows life, Ok only while volume `source`'s record
/// is still `Ready` with directory `dir` and the handle `handle` the copy checks.
pub(super) fn volume_still_ready(
    c: &NfsClient,
    copy: &str,
    (source, dir, handle): (&str, &str, &str),
    timeout: Duration,
) -> Result<()> {
    let stop = |deleting| stopped(copy, "volume", source, deleting);
    let key = layout::parse_volume_id(source).ok_or_else(|| stop(false))?;
    let decode = |b: &[u8]| VolumeRecord::from_bytes(key, b);
    let path = layout::record_path(key);
    let rec = read_json(c, &path, ("volume", source), timeout, decode)?;
    let Some(rec) = rec.filter(|r| r.id == source && r.sub_dir == dir) else {
        return Err(stop(false));
    };
    if rec.state != RecordState::Ready {
        return Err(stop(rec.state == RecordState::Deleting));
    }
    let now = recorded_handle(c, &rec).map_err(|e| super::map_nfs_error(copy, timeout, e))?;
    if now.as_deref() != Some(handle) {
        return Err(stop(false));
    }
    Ok(())
}

/// Copy side, snapshot source: after the copy shows life, Ok only while snapshot `sid`'s
/// record is still `Ready`.
pub(super) fn snapshot_still_ready(
    c: &NfsClient,
    copy: &str,
    (sid, key): (&str, &str),
    timeout: Duration,
) -> Result<()> {
    match read_snap_record(c, key, timeout)?.filter(|r| r.id == sid) {
        Some(r) if r.state == RecordState::Ready => Ok(()),
        Some(r) => Err(stopped(
            copy,
            "snapshot",
            sid,
            r.state == RecordState::Deleting,
        )),
        None => Err(stopped(copy, "snapshot", sid, false)),
    }
}

impl NfsBackend {
    /// Busy while another controller on `c`'s share shows life for a copy reading `source`.
    pub(super) fn refuse_read_elsewhere(&self, c: &NfsClient, source: &str) -> Result<()> {
        let reader = self.work.copies.others_reading(c, source);
        match reader.map_err(|e| self.err(source, e))? {
            None => Ok(()),
            Some(copy) => Err(Error::Busy(format!(
                "{source} (copy {copy} of another controller on {} reads it)",
                c.server()
            ))),
        }
    }

    /// Delete side, after volume `before`'s intent `intent` was written: Busy when another
    /// controller's copy reading it shows life now; its record is then put back as `before`.
    pub(super) fn recheck_volume_readers(
        &self,
        c: &NfsClient,
        before: &VolumeRecord,
        intent: &VolumeRecord,
    ) -> Result<()> {
        let t = self.cfg.timeout;
        self.recheck_readers(c, &before.id, || {
            let now = self.read_record(&before.id, c, before.key())?;
            put_back(&before.id, now.as_ref() == Some(intent), || {
                write_record(c, before, t)
            })
        })
    }

    /// As `recheck_volume_readers`, for snapshot `before` and its intent `intent`.
    pub(super) fn recheck_snapshot_readers(
        &self,
        c: &NfsClient,
        before: &SnapshotRecord,
        intent: &SnapshotRecord,
    ) -> Result<()> {
        let t = self.cfg.timeout;
        self.recheck_readers(c, &before.id, || {
            let now = read_snap_record(c, &before.key(), t)?;
            put_back(&before.id, now.as_ref() == Some(intent), || {
                write_snap_record(c, before, t)
            })
        })
    }

    /// Busy when another controller's copy reading `id` shows life, after `undo` ran. A reader
    /// that cannot be looked for is the error, and the intent stays: a retry finishes the
    /// delete (a copy that shows life later finds the source being deleted and stops).
    fn recheck_readers(
        &self,
        c: &NfsClient,
        id: &str,
        undo: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let reader = self.work.copies.others_reading(c, id);
        let Some(copy) = reader.map_err(|e| self.err(id, e))? else {
            return Ok(());
        };
        if let Err(e) = undo() {
            tracing::warn!(id, copy = %copy, error = %e, "a delete that met a copy reading what it would remove left its intent in place; nothing was removed, and a retry finishes the delete once the copy ended");
        }
        Err(Error::Busy(format!(
            "{id} (copy {copy} of another controller on {} reads it; nothing removed)",
            c.server()
        )))
    }
}

/// Puts record `id` back as it was before a delete's intent, only while it still is that
/// intent (`unchanged`): a record another call changed or removed since is left as it is.
fn put_back(id: &str, unchanged: bool, write: impl FnOnce() -> Result<()>) -> Result<()> {
    if !unchanged {
        tracing::info!(
            id,
            "the record changed since this delete's intent: not put back"
        );
        return Ok(());
    }
    write()?;
    tracing::info!(
        id,
        "a copy of another controller reads it: the delete backed off, the record is as before"
    );
    Ok(())
}
