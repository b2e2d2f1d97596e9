//! Snapshots of NFS volumes: copies of the volume's directory into `.ferrovol/snapshot-data/`
//! on the same share, made by READ and WRITE through the user-space client (see
//! `NfsClient::copy_dir_contents` for what a copy keeps and what NFSv3 cannot carry).
//!
//! A copy can take long, so it runs on a thread of its own: CreateSnapshot writes the intent
//! record (`Creating`), starts the copy, waits up to `FERROVOL_NFS_SNAPSHOT_WAIT_MS` (default
//! 1000 ms) and answers ready_to_use=false if the copy still runs; the snapshotter polls with
//! repeated CreateSnapshots. The copy rewrites the record `Ready` after the last byte. A failed
//! copy removes its content and record, and the next CreateSnapshot of the name answers that
//! failure once. A `Creating` record left by a controller that died mid-copy is copied afresh
//! by recovery (recovery.rs) or the first call that meets it.

use super::alive::Alive;
use super::layout::{
    self, key_of_snap_record, snap_record_path, RecordState, SnapParams, SnapshotRecord,
    SNAP_DATA_DIR, SNAP_RECORDS_DIR, SNAP_RECORD_VERSION,
};
use super::readers::volume_still_ready;
use super::work::Work;
use super::{in_meta_dir, map_nfs_error, names, read_json, recorded_handle, NfsBackend, BACKEND};
use crate::backend::SnapshotBackend;
use crate::error::{Error, Result};
use crate::nfs::NfsClient;
use crate::snapshot::{SnapshotFilter, SnapshotId, SnapshotInfo, SnapshotPage, SnapshotRequest};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long CreateSnapshot waits for its copy before answering ready_to_use=false.
const WAIT_ENV: &str = "FERROVOL_NFS_SNAPSHOT_WAIT_MS";
const DEFAULT_WAIT: Duration = Duration::from_millis(1000);

fn wait_budget() -> Duration {
    let ms = std::env::var(WAIT_ENV).ok().and_then(|v| v.parse().ok());
    ms.map_or(DEFAULT_WAIT, Duration::from_millis)
}

pub(super) fn info(rec: &SnapshotRecord) -> SnapshotInfo {
    SnapshotInfo {
        id: rec.id.clone(),
        source_volume_id: rec.source_volume_id.clone(),
        size_bytes: rec.size_bytes,
        created: UNIX_EPOCH + Duration::from_millis(rec.created_at_ms),
        ready: rec.state == RecordState::Ready,
    }
}

pub(super) fn read_snap_record(
    c: &NfsClient,
    key: &str,
    timeout: Duration,
) -> Result<Option<SnapshotRecord>> {
    let sid = super::layout::snapshot_id(key).map(|s| s.to_string());
    let what = ("snapshot", sid.as_deref().unwrap_or(key));
    let decode = |b: &[u8]| SnapshotRecord::from_bytes(key, b);
    read_json(c, &snap_record_path(key), what, timeout, decode)
}

pub(super) fn write_snap_record(c: &NfsClient, rec: &SnapshotRecord, t: Duration) -> Result<()> {
    let (path, bytes) = (snap_record_path(&rec.key()), layout::to_bytes(rec));
    in_meta_dir(c, SNAP_RECORDS_DIR, || c.write_file_atomic(&path, &bytes))
        .map_err(|e| map_nfs_error(&rec.id, t, e))
}

/// Removes the content, then the record. Idempotent: a retry after a crash finishes it.
pub(super) fn finish_delete(c: &NfsClient, rec: &SnapshotRecord, timeout: Duration) -> Result<()> {
    let err = |e| map_nfs_error(&rec.id, timeout, e);
    c.remove_tree(&rec.data_path()).map_err(err)?;
    c.remove_file(&snap_record_path(&rec.key())).map_err(err)?;
    tracing::info!(snapshot = %rec.id, server = %rec.server, "snapshot deleted");
    Ok(())
}

/// The name a snapshot's copy shows life under (alive.rs).
pub(super) fn copy_name(key: &str) -> String {
    format!("snapshot-{key}")
}

/// Starts the copy of `rec` (a `Creating` record) unless one is already running here; the copy
/// shows life from now until it ends.
pub(super) fn start_copy(work: &Arc<Work>, c: Arc<NfsClient>, rec: SnapshotRecord) {
    let Some(cancel) = work.claim(&rec.id, &rec.source_volume_id) else {
        return;
    };
    let alive = match work
        .copies
        .show(&c, &copy_name(&rec.key()), &rec.source_volume_id)
    {
        Ok(alive) => alive,
        Err(e) => return work.finish(&rec.id, Some(e)),
    };
    let (w, id) = (work.clone(), rec.id.clone());
    let thread = std::thread::Builder::new().name("nfs-snapshot".into());
    let spawned = thread.spawn(move || {
        let id = rec.id.clone();
        let outcome = copy(&w, &c, rec, &cancel, &alive);
        drop(alive);
        w.finish(&id, outcome.err());
    });
    if let Err(e) = spawned {
        // No thread will finish the job: fail it now, so callers do not wait for it.
        let failed = format!("snapshot {id}: cannot start the copy thread: {e}");
        work.finish(&id, Some(Error::Internal(failed)));
    }
}

/// The copy itself: clear what an earlier attempt left, copy, then the `Ready` record. On
/// failure (not cancellation, whose caller deletes) the content and record are removed; a copy
/// that cannot read its record first changes nothing, nor does one that stopped showing life
/// (the lease holder may be copying it again).
fn copy(
    work: &Work,
    c: &NfsClient,
    read: SnapshotRecord,
    cancel: &AtomicBool,
    alive: &Alive,
) -> Result<()> {
    let (sid, t) = (read.id.clone(), work.timeout);
    let err = |e| map_nfs_error(&sid, t, e);
    // The caller read its record before this copy held the claim, and a copy that ended since
    // wrote `Ready`: copying again would replace a ready snapshot with the source as it is now.
    // Under the claim no other copy runs, so the record read here is the one to go by.
    let now = read_snap_record(c, &read.key(), t).inspect_err(|e| {
        tracing::warn!(snapshot = %sid, error = %e, "snapshot copy not started: its record cannot be read; nothing was changed, and the next call tries again");
    })?;
    let Some(mut rec) = now.filter(|r| r.state == RecordState::Creating) else {
        return Ok(());
    };
    let data = rec.data_path();
    let started = std::time::Instant::now();
    let res = (|| {
        // This copy shows life already (`alive`): a delete of the source whose intent came
        // before is seen here, one whose intent comes later sees this copy (readers.rs). A
        // record without a source handle gets the same look from `legacy_source_handle`.
        if let Some(h) = &rec.source_handle {
            let source = (rec.source_volume_id.as_str(), rec.source_sub_dir.as_str());
            volume_still_ready(c, &sid, (source.0, source.1, h), t)?;
        }
        c.remove_tree(&data).map_err(err)?;
        c.mkdir_all(SNAP_DATA_DIR, 0o700).map_err(err)?;
        c.mkdir(&data, 0o700).map_err(err)?;
        crate::failpoint::hit("nfs-snapshot:before-copy");
        let handle = match &rec.source_handle {
            Some(h) => h.clone(),
            None => legacy_source_handle(c, &rec, t)?,
        };
        let stats = c
            .copy_dir_contents_if(&rec.source_sub_dir, Some(&handle), &data, cancel)
            .map_err(err)?
            .ok_or_else(|| {
                let (dir, source) = (&rec.source_sub_dir, &rec.source_volume_id);
                Error::precondition(&sid, format!("the directory {dir} of source volume {source} is not the one made for it (another file handle, or gone); nothing copied"))
            })?;
        crate::failpoint::hit("nfs-snapshot:before-ready");
        alive.check()?;
        rec.state = RecordState::Ready;
        rec.content_bytes = stats.bytes;
        write_snap_record(c, &rec, t)?;
        tracing::info!(snapshot = %sid, source = %rec.source_volume_id, server = %c.server(),
            files = stats.files, dirs = stats.dirs, symlinks = stats.symlinks,
            hard_links = stats.hard_links, skipped = stats.skipped, bytes = stats.bytes,
            ms = started.elapsed().as_millis() as u64, "snapshot copied");
        Ok(())
    })();
    if let (Err(e), false) = (&res, cancel.load(Ordering::Relaxed) || alive.lost()) {
        tracing::warn!(snapshot = %sid, error = %e, "snapshot copy failed: its content and record are removed");
        let record = snap_record_path(&rec.key());
        if let Err(undo) = c.remove_tree(&data).and_then(|_| c.remove_file(&record)) {
            tracing::warn!(snapshot = %sid, error = %undo, "cleanup of a failed snapshot incomplete; recovery at the next start finishes it");
        }
    }
    res
}

/// The source handle of a snapshot record written before handles were kept (a copy resumed
/// after an upgrade): the source volume's, while its record is still `Ready` with the same
/// directory (then no delete has removed that directory; layout.rs). Otherwise the copy fails.
fn legacy_source_handle(c: &NfsClient, rec: &SnapshotRecord, t: Duration) -> Result<String> {
    let source = &rec.source_volume_id;
    let gone = || {
        let why = format!(
            "source volume {source} is gone or changed since the snapshot began; nothing copied"
        );
        Error::precondition(&rec.id, why)
    };
    let err = |e| map_nfs_error(&rec.id, t, e);
    let key = layout::parse_volume_id(&rec.source_volume_id).ok_or_else(gone)?;
    let path = layout::record_path(key);
    let bytes = c.read_file(&path).map_err(err)?.ok_or_else(gone)?;
    let vol = layout::VolumeRecord::from_bytes(key, &bytes).map_err(|_| gone())?;
    if vol.state != RecordState::Ready || vol.sub_dir != rec.source_sub_dir {
        return Err(gone());
    }
    recorded_handle(c, &vol).map_err(err)?.ok_or_else(gone)
}

impl NfsBackend {
    /// Whether another process shows life for the copy of `rec` (alive.rs).
    fn copying_elsewhere(&self, c: &NfsClient, rec: &SnapshotRecord) -> Result<bool> {
        let shown = self.work.copies.others_copying(c, &copy_name(&rec.key()));
        shown.map_err(|e| map_nfs_error(&rec.id, self.cfg.timeout, e))
    }

    /// The record of snapshot `key` on the known shares (`Ok(None)` only when all answered).
    pub(super) fn find_snapshot(
        &self,
        sid: &str,
        key: &str,
    ) -> Result<Option<(Arc<NfsClient>, SnapshotRecord)>> {
        self.search(sid, SnapshotRecord::version, |c| {
            read_snap_record(c, key, self.cfg.timeout)
        })
    }

    /// Waits for the copy of `rec` up to `budget` (resuming it when no copy runs here, as after
    /// a restart, but only while this process holds the share's lease: another controller may
    /// be copying it); the record as it is then. A failed copy is its error.
    pub(super) fn settle(
        &self,
        c: &Arc<NfsClient>,
        rec: SnapshotRecord,
        budget: Option<Duration>,
    ) -> Result<SnapshotRecord> {
        if rec.state != RecordState::Creating {
            return Ok(rec);
        }
        crate::failpoint::hit("nfs-snapshot:before-resume");
        if !self.work.running(&rec.id) {
            let (id, server, share) = (&rec.id, c.server(), c.share());
            let elsewhere = if !self.leases.holds(c) {
                Some(format!(
                    "another controller holds the lease of {server}:{share}"
                ))
            } else if self.copying_elsewhere(c, &rec)? {
                Some(format!(
                    "another controller on {server}:{share} is copying it"
                ))
            } else {
                None
            };
            if let Some(why) = elsewhere {
                // A caller that must have the whole copy (a restore) is told to come back.
                if budget.is_some() {
                    return Ok(rec);
                }
                return Err(Error::Busy(format!(
                    "{id} (its copy is not running here: {why})"
                )));
            }
            // `rec` may predate the end of a copy that ran here: go by the record as it is now.
            let Some(now) = read_snap_record(c, &rec.key(), self.cfg.timeout)? else {
                // A copy that failed took the record with it: its failure is the answer.
                let gone =
                    || Error::not_found_because(&rec.id, "the snapshot vanished while copied");
                return Err(self.work.take_failure(&rec.id).unwrap_or_else(gone));
            };
            if now.state != RecordState::Creating {
                return Ok(now);
            }
            start_copy(&self.work, c.clone(), now.clone());
            return self.settle_started(c, now, budget);
        }
        self.settle_started(c, rec, budget)
    }

    /// Waits for the copy of `rec` that runs here up to `budget`; the record as it is then.
    fn settle_started(
        &self,
        c: &Arc<NfsClient>,
        rec: SnapshotRecord,
        budget: Option<Duration>,
    ) -> Result<SnapshotRecord> {
        if !self.work.wait(&rec.id, budget) {
            return Ok(rec);
        }
        if let Some(e) = self.work.take_failure(&rec.id) {
            return Err(e);
        }
        read_snap_record(c, &rec.key(), self.cfg.timeout)?
            .ok_or_else(|| Error::not_found_because(&rec.id, "the snapshot vanished while copied"))
    }
}

impl SnapshotBackend for NfsBackend {
    fn snapshot_id(&self, name: &str) -> Result<SnapshotId> {
        SnapshotId::new(BACKEND, None, name)
    }

    fn create_snapshot(&self, req: &SnapshotRequest) -> Result<SnapshotInfo> {
        let id = SnapshotId::new(BACKEND, None, &req.name)?;
        let sid = id.to_string();
        crate::backend::params::decode::<SnapParams>(BACKEND, &req.parameters)?;
        let source = req.source.to_string();
        if let Some(e) = self.work.take_failure(&sid) {
            return Err(e);
        }
        if let Some((c, rec)) = self.find_snapshot(&sid, &id.key)? {
            let (name, theirs) = (&rec.name, &rec.source_volume_id);
            if *name != req.name {
                let why =
                    format!("this id already belongs to snapshot {name:?}; choose another name");
                return Err(Error::exists(&sid, why));
            }
            if *theirs != source {
                let why =
                    format!("snapshot {name:?} already exists for volume {theirs}, not {source}");
                return Err(Error::exists(&sid, why));
            }
            match rec.state {
                RecordState::Deleting => finish_delete(&c, &rec, self.cfg.timeout)?,
                _ => return Ok(info(&self.settle(&c, rec, Some(wait_budget()))?)),
            }
        }
        let Some(vkey) = layout::parse_volume_id(&source) else {
            return Err(Error::not_found(&source));
        };
        let (c, vol) = match self.find_live(&source, vkey)? {
            Some((c, v)) if v.state == RecordState::Ready => (c, v),
            _ => return Err(Error::not_found(&source)),
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH);
        let rec = SnapshotRecord {
            version: SNAP_RECORD_VERSION,
            id: sid.clone(),
            name: req.name.clone(),
            state: RecordState::Creating,
            source_volume_id: source.clone(),
            source_sub_dir: vol.sub_dir.clone(),
            server: vol.server.clone(),
            share: vol.share.clone(),
            size_bytes: vol.capacity_bytes,
            created_at_ms: now.map_or(0, |d| d.as_millis() as u64),
            content_bytes: 0,
            source_handle: Some(self.source_handle(&c, &vol)?),
            nfs_vers: vol.nfs_vers.clone(),
        };
        crate::failpoint::hit("nfs-snapshot:before-show");
        // Shown as copied before the intent exists, so no lease holder takes it for cut off.
        let _alive = (self.work.copies).show(&c, &copy_name(&rec.key()), &source)?;
        // The intent: from here a crash leaves a record recovery finds.
        write_snap_record(&c, &rec, self.cfg.timeout)?;
        crate::failpoint::hit("nfs-snapshot:after-intent");
        start_copy(&self.work, c.clone(), rec.clone());
        Ok(info(&self.settle_started(&c, rec, Some(wait_budget()))?))
    }

    fn delete_snapshot(&self, id: &SnapshotId) -> Result<()> {
        if id.backend != BACKEND || id.node.is_some() {
            return Ok(()); // not an id this backend issues
        }
        let sid = id.to_string();
        // A copy in flight stops at its next chunk; its partial content goes with the rest.
        self.work.cancel_and_wait(&sid);
        let _ = self.work.take_failure(&sid);
        let Some((c, mut rec)) = self.find_snapshot(&sid, &id.key)? else {
            return Ok(());
        };
        // Another controller's copy of it, or restore from it, would write on or read what
        // goes: the CO retries until it ended.
        if rec.state == RecordState::Creating && self.copying_elsewhere(&c, &rec)? {
            let why = format!("{sid} (another controller on {} is copying it)", c.server());
            return Err(Error::Busy(why));
        }
        self.refuse_read_elsewhere(&c, &sid)?;
        crate::failpoint::hit("nfs-snapshot-delete:before-intent");
        let before = rec.clone();
        if rec.state != RecordState::Deleting {
            rec.state = RecordState::Deleting;
            write_snap_record(&c, &rec, self.cfg.timeout)?;
        }
        crate::failpoint::hit("nfs-snapshot-delete:after-intent");
        // A restore that read the snapshot `Ready` before the intent shows life by now.
        self.recheck_snapshot_readers(&c, &before, &rec)?;
        finish_delete(&c, &rec, self.cfg.timeout)
    }

    fn list_snapshots(
        &self,
        filter: &SnapshotFilter,
        after: Option<&str>,
        max: usize,
    ) -> Result<SnapshotPage> {
        let foreign = |s: &SnapshotId| s.backend != BACKEND || s.node.is_some();
        let wanted_source = filter.source.as_ref().map(|v| v.to_string());
        let shares = if filter.snapshot.as_ref().is_some_and(foreign) {
            Vec::new() // another backend's snapshot: on no share
        } else {
            self.shares.list()
        };
        let mut keys: Vec<(String, usize)> = Vec::new();
        for (i, (server, share)) in shares.iter().enumerate() {
            let c = self.client(server, share)?;
            if let Some(s) = &filter.snapshot {
                keys.push((s.key.clone(), i));
                continue;
            }
            let files = names(&c, SNAP_RECORDS_DIR).map_err(|e| self.err("(list snapshots)", e))?;
            let found = files.iter().filter_map(|n| key_of_snap_record(n));
            keys.extend(found.map(|k| (k.to_string(), i)));
        }
        keys.retain(|(k, _)| after.is_none_or(|a| k.as_str() > a));
        keys.sort();
        let mut entries = Vec::new();
        let mut next_after = None;
        for (n, (key, i)) in keys.iter().enumerate() {
            if max != 0 && entries.len() == max {
                next_after = Some(keys[n - 1].0.clone());
                break;
            }
            let (server, share) = &shares[*i];
            let c = self.client(server, share)?;
            let Some(rec) = read_snap_record(&c, key, self.cfg.timeout)? else {
                continue; // gone since the listing, or on another share
            };
            let other_source = wanted_source
                .as_ref()
                .is_some_and(|w| rec.source_volume_id != *w);
            if rec.state == RecordState::Deleting || other_source {
                continue;
            }
            let resumable = |rec: &SnapshotRecord| -> Result<bool> {
                Ok(self.leases.holds(&c) && !self.copying_elsewhere(&c, rec)?)
            };
            if rec.state == RecordState::Creating && resumable(&rec)? {
                // A copy cut off by a restart resumes now rather than stay unready forever.
                start_copy(&self.work, c.clone(), rec.clone());
                if self.work.wait(&rec.id, Some(Duration::ZERO)) {
                    // Ended already: the record as it is now (none: the copy failed and took it).
                    let now = read_snap_record(&c, key, self.cfg.timeout)?;
                    entries.extend(now.as_ref().map(info));
                    continue;
                }
            }
            entries.push(info(&rec));
        }
        Ok(SnapshotPage {
            entries,
            next_after,
        })
    }
}
