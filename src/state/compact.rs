//! Journal compaction, in its own thread so no commit waits for it.
//!
//! The leader has already switched appends to log `gen` (made ahead of use); the logs from the
//! newest snapshot up to `gen - 1` are finished and nothing writes them any more. The thread
//! replays them into `journal.<gen>.snap` (temp name, synced, renamed), makes the next spare log
//! `gen + 1`, syncs the directory once for both names, and only then removes the older files. A
//! crash anywhere leaves either the old snapshot with every log after it, or the new snapshot:
//! both replay to the same records.

use super::files::{self, log_path, snap_path, Listing, Records};
use super::frame::encode_put;
use super::journal::{open_log, remove_older, Journal, COMPACT_SLACK};
use std::fs::File;
use std::io::{self, Write};

/// What one compaction does.
#[derive(Debug, Clone, Copy)]
pub(super) struct Job {
    /// The log now appended to; the snapshot (if any) covers everything before it.
    pub gen: u64,
    /// The newest snapshot when the job started.
    pub snap_gen: u64,
    /// Write the snapshot (false: appends could not switch, only make the spare log).
    pub snapshot: bool,
}

impl Journal {
    pub(super) fn run_compaction(&self, job: Job) {
        let result = self.compact_files(job);
        let mut inner = self.lock();
        let listing = match result {
            Ok((spare, snap)) => {
                inner.spare = Some(spare);
                if let Some((n, _)) = &snap {
                    inner.snap_gen = job.gen;
                    inner.snap_records = *n;
                    // No switch happens while compacting: the current log is still `job.gen`.
                    inner.frames_since_snap = inner.frames_in_log;
                }
                inner.retry_at = 0;
                snap.map(|(_, listing)| listing)
            }
            Err(e) => {
                tracing::warn!(error = %e, "state journal compaction failed; the logs keep growing and compaction is retried later");
                inner.retry_at = inner.frames_since_snap + COMPACT_SLACK;
                None
            }
        };
        inner.compacting = false;
        drop(inner);
        self.committed.notify_all();
        if let Some(listing) = listing {
            remove_older(&self.dir, &listing, job.gen);
            tracing::debug!(generation = job.gen, "state journal compacted");
        }
    }

    /// Writes the snapshot (when the job asks for one) and the spare log; returns the spare and,
    /// with a snapshot, its record count and the files that were there.
    fn compact_files(&self, job: Job) -> io::Result<(File, Option<(usize, Listing)>)> {
        let mut snap = None;
        if job.snapshot {
            crate::failpoint::fail("journal:compact")?;
            let found = Listing::read(&self.dir)?;
            let mut live = Records::new();
            files::replay_snapshot(&self.dir, job.snap_gen, &mut live)?;
            for g in found
                .logs
                .iter()
                .filter(|g| **g >= job.snap_gen && **g < job.gen)
            {
                files::replay(&log_path(&self.dir, *g), true, &mut live)?;
            }
            let mut bytes = Vec::new();
            for (key, value) in live.iter() {
                // Encoded straight from the map: a copy of every record would double the peak.
                encode_put(key, value, &mut bytes);
            }
            let records = live.len();
            drop(live);
            let tmp = self.dir.join(format!(".journal.{}.snap.tmp", job.gen));
            {
                let mut f = File::create(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
                crate::metrics::count_background_sync();
            }
            std::fs::rename(&tmp, snap_path(&self.dir, job.gen))?;
            snap = Some((records, found));
        }
        let spare = open_log(&self.dir, job.gen + 1, true)?;
        // Its zeros on disk now, so the first commits into it change no extents.
        spare.sync_data()?;
        crate::os::fsutil::fsync_dir(&self.dir)?;
        crate::metrics::count_background_sync();
        crate::metrics::count_background_sync();
        Ok((spare, snap))
    }
}
