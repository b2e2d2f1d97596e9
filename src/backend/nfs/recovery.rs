//! Recovery of what long copies leave after a crash, by the holder of each share's lease when it
//! takes the lease (lease.rs; at start, or when another controller lets it go), on a thread per
//! share (so a dead server delays nothing; its share is recovered by the calls that meet its
//! records):
//!
//! | found | meaning | action |
//! |---|---|---|
//! | a `Creating` record whose copy another process shows life for (alive.rs) | a copy in flight | none: looked at again every `TTL` while this process holds the lease |
//! | snapshot record `Creating` | a copy cut off | discard the partial content, copy again |
//! | snapshot record `Deleting` | a delete cut off | finish it |
//! | snapshot content, no record | the record went first (only by hand) | remove the content |
//! | staging dir, volume record `Creating` naming it | a restore cut off | roll it back |
//! | staging dir, no such record | a rollback cut off after the record | remove it |
//!
//! Everything removed here lies under `.ferrovol/`, which only this driver writes, or is a
//! subDir proven to be a cut-off restore's by its file handle (rollback.rs).

use super::alive::TTL;
use super::layout::{
    self, key_of_snap_record, snapshot_id, staging_path, RecordState, SNAP_DATA_DIR,
    SNAP_RECORDS_DIR, STAGING_DIR,
};
use super::restore::restore_name;
use super::rollback::undo_create;
use super::snapshots::{copy_name, finish_delete, read_snap_record, start_copy};
use super::work::Work;
use super::{map_nfs_error, names};
use crate::error::Result;
use crate::nfs::{NfsClient, Version};
use std::collections::HashSet;
use std::sync::Arc;

/// The share's client in one NFS version, for records whose handles are in it.
pub(super) type ClientOf<'a> = &'a dyn Fn(Version) -> Result<Arc<NfsClient>>;

/// Recovers one share; run by its lease's holder each time it takes the lease, and again every
/// `TTL` while copies of other processes are in flight and `holds` (the lease) is true.
pub(super) fn recover(
    c: &Arc<NfsClient>,
    work: &Arc<Work>,
    of: ClientOf<'_>,
    holds: &dyn Fn() -> bool,
) {
    loop {
        match recover_share(c, work, of) {
            Ok(0) => return,
            Ok(_) if !holds() => return,
            Ok(_) => std::thread::sleep(TTL),
            Err(e) => {
                tracing::warn!(server = %c.server(), share = %c.share(), error = %e,
                    "recovery of snapshots and restores not finished; calls that meet their records finish it");
                return;
            }
        }
    }
}

/// One pass; how many copies of other processes it left alone.
fn recover_share(c: &Arc<NfsClient>, work: &Arc<Work>, of: ClientOf<'_>) -> Result<usize> {
    let t = work.timeout;
    let list = |dir| names(c, dir).map_err(|e| map_nfs_error("(recovery)", t, e));
    let (mut resumed, mut finished, mut removed, mut in_flight) = (0, 0, 0, 0);
    let elsewhere = |name: &str, id: &str| {
        let shown = work.copies.others_copying(c, name);
        shown.map_err(|e| map_nfs_error(id, t, e))
    };
    let mut live: HashSet<String> = HashSet::new();
    let records = list(SNAP_RECORDS_DIR)?;
    for key in records.iter().filter_map(|n| key_of_snap_record(n)) {
        let Some(rec) = read_snap_record(c, key, t)? else {
            continue;
        };
        match rec.state {
            RecordState::Ready => {}
            // Already copying here (resumed by an earlier pass, or a call).
            RecordState::Creating if work.running(&rec.id) => {}
            RecordState::Creating if elsewhere(&copy_name(key), &rec.id)? => in_flight += 1,
            RecordState::Creating => {
                tracing::info!(snapshot = %rec.id, "resuming a snapshot copy cut off by a restart");
                start_copy(work, of(rec.version())?, rec);
                resumed += 1;
            }
            RecordState::Deleting => {
                finish_delete(c, &rec, t)?;
                finished += 1;
                continue;
            }
        }
        live.insert(key.to_string());
    }
    for key in list(SNAP_DATA_DIR)? {
        if live.contains(&key) {
            continue;
        }
        // Claim the id, so a CreateSnapshot starting now cannot copy into what is removed, and
        // look again: a record written since the listing makes the content its.
        let id = snapshot_id(&key).map(|s| s.to_string()).unwrap_or_default();
        let Some(_claim) = work.claim(&id, "") else {
            continue;
        };
        let gone = read_snap_record(c, &key, t).and_then(|r| match r {
            Some(_) => Ok(false),
            None => (c.remove_tree(&format!("{SNAP_DATA_DIR}/{key}")))
                .map(|_| true)
                .map_err(|e| map_nfs_error(&id, t, e)),
        });
        // Whatever happened, the claim ends: a call waiting for it would wait forever.
        work.finish(&id, None);
        removed += usize::from(gone?);
    }
    for key in list(STAGING_DIR)? {
        if elsewhere(&restore_name(&key), &layout::volume_id(&key))? {
            in_flight += 1;
            continue;
        }
        let Some(res) = work.restoring(&key, || recover_staging(c, work, &key, of)) else {
            continue; // a restore here is using it
        };
        res?;
        removed += 1;
    }
    tracing::info!(server = %c.server(), share = %c.share(), resumed, finished_deletes = finished,
        removed, in_flight_elsewhere = in_flight, "NFS snapshots and restores recovered");
    Ok(in_flight)
}

fn recover_staging(c: &NfsClient, work: &Work, key: &str, of: ClientOf<'_>) -> Result<()> {
    let t = work.timeout;
    let vid = layout::volume_id(key);
    let err = |e| map_nfs_error(&vid, t, e);
    let staging = staging_path(key);
    let bytes = c.read_file(&layout::record_path(key)).map_err(err)?;
    let rec = bytes.and_then(|b| layout::VolumeRecord::from_bytes(key, &b).ok());
    match rec {
        Some(rec)
            if rec.state == RecordState::Creating
                && rec.staging.as_deref() == Some(staging.as_str()) =>
        {
            tracing::info!(volume = %rec.id, "rolling back a restore cut off by a restart");
            undo_create(&*of(rec.version())?, &rec, t)?;
            work.copies.forget(c, &restore_name(key));
            Ok(())
        }
        _ => c.remove_tree(&staging).map(|_| ()).map_err(err),
    }
}
