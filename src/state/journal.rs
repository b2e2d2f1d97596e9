//! The state journal: an append-only log of record updates with group commit.
//!
//! Every acknowledged change costs one `fdatasync` of one file, and concurrent changes share it:
//! the first writer to find no commit in flight becomes the leader, writes everything queued so
//! far in one `pwrite`, syncs once and wakes the others of its batch and one writer of the next
//! batch, to lead it (classic group commit, no extra thread).
//! A frame is `len u32 | crc32 u32 | payload` (`frame`), and each batch ends with a frame carrying
//! its sequence number, so a torn tail (power cut mid-write) is detected and cut off at open: it
//! was never acknowledged, because acknowledgement follows the sync. Bytes that fail the check
//! anywhere else are damage: stepped over, kept, and recorded (`damage`), never cut.
//!
//! Compaction never stalls a commit: when the logs hold far more frames than live records, the
//! leader switches appends to the next log, which was created and its name synced ahead of use
//! (so the switch costs no sync), and a background thread folds the finished logs into a
//! snapshot (`compact`). The file layout and how it replays is in `files`.

use super::damage::{Damage, DAMAGE_KEY};
use super::files::{self, log_path, Listing};
pub use super::files::{peek, Records};
pub use super::frame::Update;
use super::frame::SEQ_KEY;
use super::group_commit::Batch;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::task::Waker;

/// Compact when the logs since the snapshot hold this many frames more than twice the live
/// records.
pub(super) const COMPACT_SLACK: usize = 4096;

/// Every log is filled with this many zero bytes when it is made, and frames overwrite them: a
/// commit's `fdatasync` then flushes data blocks that are already allocated and written, with no
/// size or extent change for the filesystem to log (on XFS and ext4 that halves its cost). Zeros
/// end the frames (a zero length is no frame). A batch that does not fit is appended past the end,
/// and the full log is switched for the spare after it.
pub(super) const LOG_PREALLOC: u64 = 1 << 20;

pub struct Journal {
    pub(super) dir: PathBuf,
    store_id: String,
    pub(super) inner: Mutex<Inner>,
    /// Signalled when a compaction ends.
    pub(super) committed: Condvar,
    /// The journal itself, handed to the compaction thread and to spawned leaders.
    pub(super) me: Weak<Journal>,
    /// The last sequence number replayed at open, before this run committed anything.
    opened_seq: u64,
}

pub(super) struct Inner {
    /// Generation of the log being appended to.
    pub gen: u64,
    pub(super) file: Arc<File>,
    /// Length of the log up to the last durable frame: the next batch is written there.
    pub(super) durable_len: u64,
    /// Frames in the current log.
    pub frames_in_log: usize,
    /// Frames in every log after the newest snapshot: what the next snapshot folds in.
    pub frames_since_snap: usize,
    /// Encoded frames queued for the next batch, and how many.
    pub(super) queued: Vec<u8>,
    pub(super) queued_frames: usize,
    /// Sequence numbers: the last one handed out, and the last one whose batch is decided.
    pub(super) issued: u64,
    pub(super) decided: u64,
    /// Sequence number of the last change a leader took into a batch in flight.
    pub(super) taken: u64,
    /// A thread is leading a batch (its write and sync in flight).
    pub(super) leader_active: bool,
    /// A leader was started off-thread and has not begun yet. Threads that find no batch in
    /// flight still lead themselves meanwhile: were they to wait for it, a blocking pool full of
    /// such threads would leave the started leader no thread to run on.
    pub(super) leader_started: bool,
    /// The next batch: what its callers wait on and where its outcome will be. A leader takes
    /// it with the queue and wakes exactly its own batch when the batch is decided, then one
    /// caller of the batch queued meanwhile, to lead it: nobody else wakes only to sleep again.
    pub(super) queue_cv: Arc<Batch>,
    /// Threads blocked on `queue_cv` (the queued batch), to lead it when the leader is done.
    pub(super) queued_blocking: usize,
    /// Tasks awaiting their change's batch (`submit` then `wait`): (sequence, waker).
    pub(super) wakers: Vec<(u64, Waker)>,
    /// Once a sync fails the file's state is unknown: every later commit fails with the cause.
    pub(super) poisoned: Option<Arc<io::Error>>,
    /// The sequence number of the last durable batch (each batch ends with a frame carrying
    /// its own, `frame::SEQ_KEY`).
    pub(super) seq: u64,
    /// What the journal knows it lost.
    pub(super) damage: Option<Damage>,
    /// Generation of the newest snapshot (0: none) and how many records it holds. (The live
    /// records themselves are not kept here: the ledgers hold them, and compaction rebuilds
    /// them from the files, so memory holds each record once.)
    pub snap_gen: u64,
    pub snap_records: usize,
    /// Log `gen + 1`, created and its directory entry synced ahead of use.
    pub spare: Option<File>,
    /// A compaction thread is running; no switch happens meanwhile.
    pub compacting: bool,
    /// After a failed compaction: wait until the logs hold this many frames before the next try.
    pub retry_at: usize,
}

impl Journal {
    /// Opens (creating) the journal in `dir` and replays it. Returns the journal and every live
    /// record, by key.
    pub fn open(dir: &Path) -> io::Result<(Arc<Journal>, Records)> {
        fs::create_dir_all(dir)?;
        let store_id = files::store_id(dir)?;
        let listing = Listing::read(dir)?;
        let snap_gen = listing.snap_gen();
        let mut live = Records::new();
        let snap = files::replay_snapshot(dir, snap_gen, &mut live)?;
        let mut damaged = snap.damaged;
        // (generation, frames, where the next frame goes) of every log after the snapshot.
        let mut replayed = Vec::new();
        for g in listing.live_logs() {
            let log = log_path(dir, g);
            let r = files::replay(&log, true, &mut live)?;
            if let Some((from, to)) = r.torn {
                tracing::warn!(log = %log.display(), dropped_bytes = to - from,
                    "state journal ends in a torn write (never acknowledged); zeroing it");
                // Zeroed, not left: a later frame of the same length written over its start
                // would make the torn batch's later frames readable again.
                let f = OpenOptions::new().write(true).open(&log)?;
                files::zero_fill(&f, from as u64, to as u64)?;
                f.sync_data()?;
            }
            if !r.damaged.is_empty() {
                keep_damaged_copy(&log);
            }
            damaged.extend(r.damaged);
            replayed.push((g, r.frames, r.end));
        }
        let seq = live
            .remove(SEQ_KEY)
            .and_then(|v| Some(u64::from_le_bytes(v.get(..8)?.try_into().ok()?)))
            .unwrap_or(0);
        let damage = live.remove(DAMAGE_KEY).map(|raw| Damage::decode(&raw));
        let frames_since_snap: usize = replayed.iter().map(|(_, f, _)| f).sum();
        // Appends go to the newest log, except when that is the empty spare made ahead of use:
        // then to the one before it, and the spare stays the spare (files do not pile up
        // across restarts).
        let current = match replayed.as_slice() {
            [.., before, (newest, _, 0)] if *newest == before.0 + 1 => Some(before),
            all => all.last(),
        };
        let (gen, frames_in_log, intact) = current.copied().unwrap_or((snap_gen, 0, 0));
        // A log written by 0.2 (or the first log of a new journal) gets its zeros now, synced
        // with the opening batch below.
        let file = open_log(dir, gen, false)?;
        // A batch of its own for this run, so every directory this run marks carries a number
        // past the journal's end at open: a copy of the state dir taken while the driver was
        // stopped is then proven behind by the first directory marked after it.
        let mut opening = Vec::new();
        super::frame::encode_put(SEQ_KEY, &(seq + 1).to_le_bytes(), &mut opening);
        file.write_all_at(&opening, intact as u64)?;
        file.sync_data()?;
        crate::metrics::count_background_sync();
        let spare = open_log(dir, gen + 1, true)?;
        spare.sync_data()?;
        // Makes the current log's and the spare's names durable.
        crate::os::fsutil::fsync_dir(dir)?;
        // Older generations are complete in the newest snapshot; leftovers of a compaction that
        // crashed half-way go now.
        remove_older(dir, &listing, snap_gen);
        let journal = Arc::new_cyclic(|me| Journal {
            dir: dir.to_path_buf(),
            store_id,
            inner: Mutex::new(Inner {
                gen,
                file: Arc::new(file),
                durable_len: (intact + opening.len()) as u64,
                frames_in_log: frames_in_log + 1,
                frames_since_snap: frames_since_snap + 1,
                queued: Vec::new(),
                queued_frames: 0,
                issued: 0,
                decided: 0,
                taken: 0,
                leader_active: false,
                leader_started: false,
                queue_cv: Arc::default(),
                queued_blocking: 0,
                wakers: Vec::new(),
                poisoned: None,
                seq: seq + 1,
                damage: damage.clone(),
                snap_gen,
                snap_records: snap.frames,
                spare: Some(spare),
                compacting: false,
                retry_at: 0,
            }),
            opened_seq: seq,
            committed: Condvar::new(),
            me: me.clone(),
        });
        crate::metrics::set_journal_damaged(damage.is_some());
        if let Some(d) = &damage {
            tracing::error!(through = d.through, found = ?d.found,
                "state journal is damaged: changes up to this sequence number may be missing; directories they may explain are kept, never removed without a record");
        }
        // Damage already recorded is still in the log until compaction folds it away: it is
        // not new, and the sequence numbers marked since then stay provable.
        damaged.retain(|d| damage.as_ref().is_none_or(|known| !known.found.contains(d)));
        if !damaged.is_empty() {
            tracing::error!(sequence = seq, damaged = ?damaged,
                "state journal is damaged: bytes that are no frame lie before acknowledged frames (not a torn write); their changes are lost, everything intact is replayed, and directories they may explain are kept");
            journal.mark_damaged(seq, damaged)?;
        }
        Ok((journal, live))
    }

    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The sequence number the next batch will carry at the earliest: a directory marked with
    /// it now is committed by that batch or a later one.
    pub fn next_seq(&self) -> u64 {
        self.lock().seq + 1
    }

    /// The last sequence number the journal held when it was opened. A directory marked with
    /// a later one than the batch after it was made by a run this journal has not seen: the
    /// journal is behind (restored from an older copy).
    pub fn opened_seq(&self) -> u64 {
        self.opened_seq
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Switches appends to the spare log (no I/O) when the current one has used its zeroed
    /// space, or when the logs have grown far past the live records; then a background thread
    /// makes the next spare and, in the second case, folds the finished logs into a snapshot.
    pub(super) fn maybe_compact(&self, inner: &mut Inner) {
        let due = inner.frames_since_snap > 2 * inner.snap_records + COMPACT_SLACK;
        let full = inner.durable_len >= LOG_PREALLOC;
        if !(due || full)
            || inner.frames_since_snap < inner.retry_at
            || inner.compacting
            || inner.poisoned.is_some()
        {
            return;
        }
        let Some(me) = self.me.upgrade() else {
            return;
        };
        // Without a spare (its making failed) the thread only makes one; the next batch then
        // switches.
        let switched = match inner.spare.take() {
            Some(spare) => {
                inner.gen += 1;
                inner.file = Arc::new(spare);
                inner.durable_len = 0;
                inner.frames_in_log = 0;
                true
            }
            None => false,
        };
        let job = super::compact::Job {
            gen: inner.gen,
            snap_gen: inner.snap_gen,
            snapshot: switched && due,
        };
        inner.compacting = true;
        let spawned = std::thread::Builder::new()
            .name("journal-compact".into())
            .spawn(move || me.run_compaction(job));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the state journal's compaction thread; retried later");
            inner.compacting = false;
            inner.retry_at = inner.frames_since_snap + COMPACT_SLACK;
        }
    }

    /// Waits until no compaction runs (tests and tools that look at the files).
    pub fn wait_compaction(&self) {
        let mut inner = self.lock();
        while inner.compacting {
            inner = self
                .committed
                .wait(inner)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Checks the journal can take commits (Probe).
    pub fn check_writable(&self) -> io::Result<()> {
        if let Some(cause) = &self.lock().poisoned {
            return Err(poisoned_error(cause));
        }
        let probe = self.dir.join(".probe");
        fs::write(&probe, b"ok")?;
        fs::remove_file(probe)
    }

    /// Number of frames in the current log (tests and the benchmark watch compaction).
    pub fn frames_in_log(&self) -> usize {
        self.lock().frames_in_log
    }
}

/// Opens (creating) the log of generation `gen`, emptied first when `empty`, and zero-fills it
/// to `LOG_PREALLOC` (neither its zeros nor its name is synced yet).
pub(super) fn open_log(dir: &Path, gen: u64, empty: bool) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(empty)
        .open(log_path(dir, gen))?;
    let len = file.metadata()?.len();
    files::zero_fill(&file, len, LOG_PREALLOC)?;
    Ok(file)
}

/// Removes the snapshots and logs older than generation `keep` (complete in its snapshot).
pub(super) fn remove_older(dir: &Path, listing: &Listing, keep: u64) {
    for g in listing.snaps.iter().filter(|g| **g < keep) {
        let _ = fs::remove_file(files::snap_path(dir, *g));
    }
    for g in listing.logs.iter().filter(|g| **g < keep) {
        let _ = fs::remove_file(log_path(dir, *g));
    }
}

/// Keeps a copy of a damaged log beside it (`<log>.damaged`, once), for whoever looks into it:
/// the log itself is folded into a snapshot at the next compaction.
fn keep_damaged_copy(log: &Path) {
    let mut name = log.as_os_str().to_owned();
    name.push(".damaged");
    let copy = PathBuf::from(name);
    if !copy.exists() {
        if let Err(e) = fs::copy(log, &copy) {
            tracing::warn!(log = %log.display(), error = %e, "cannot keep a copy of the damaged state journal log");
        }
    }
}

pub(super) fn poisoned_error(cause: &io::Error) -> io::Error {
    io::Error::new(
        cause.kind(),
        format!(
            "state journal failed earlier ({cause}); restart the driver once the disk is healthy"
        ),
    )
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
