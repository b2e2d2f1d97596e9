//! The state journal: an append-only log of record updates with group commit.
//!
//! Every acknowledged change costs one `fdatasync` of one file, and concurrent changes share it:
//! the first writer to find no commit in flight becomes the leader, writes everything queued so
//! far in one `write`, syncs once and wakes the others (classic group commit, no extra thread).
//! A frame is `len u32 | crc32 u32 | payload`, so a torn tail (power cut mid-write) is detected
//! and cut off at open: it was never acknowledged, because acknowledgement follows the sync.
//!
//! The log is compacted into a snapshot when it grows past a multiple of the live records:
//! `journal.<g+1>.snap` is written and synced beside an empty `journal.<g+1>.log`, then
//! generation `g` is removed. Open picks the newest complete snapshot.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

const OP_PUT: u8 = b'P';
const OP_DELETE: u8 = b'D';
/// Compact when the log holds this many frames more than twice the live records.
const COMPACT_SLACK: usize = 4096;
/// A frame larger than this is corruption, not a record.
const MAX_FRAME: usize = 16 << 20;

/// Every live record, by key: what a journal replays to.
pub type Records = HashMap<String, Vec<u8>>;

/// One change to a keyed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

pub struct Journal {
    dir: PathBuf,
    store_id: String,
    inner: Mutex<Inner>,
    committed: Condvar,
}

struct Inner {
    gen: u64,
    file: File,
    /// Length of the log up to the last durable frame.
    durable_len: u64,
    frames_in_log: usize,
    /// Encoded frames queued for the next batch, and how many.
    queued: Vec<u8>,
    queued_frames: usize,
    /// Sequence numbers: the last one handed out, and the last one whose batch is decided.
    issued: u64,
    decided: u64,
    leader_active: bool,
    /// Batches that failed, as (first, last, cause); kept until every waiter has seen them.
    failed: Vec<(u64, u64, Arc<io::Error>)>,
    /// Once a sync fails the file's state is unknown: every later commit fails with the cause.
    poisoned: Option<Arc<io::Error>>,
    /// Records in the current generation's snapshot: the log is compacted once it holds far
    /// more frames than that. (The live records themselves are not kept here: the ledgers hold
    /// them, and compaction rebuilds them from the files, so memory holds each record once.)
    snap_records: usize,
}

fn crc(payload: &[u8]) -> u32 {
    crc32fast::hash(payload)
}

fn encode(update: &Update, out: &mut Vec<u8>) {
    let mut payload = Vec::with_capacity(64);
    let (op, key, value) = match update {
        Update::Put { key, value } => (OP_PUT, key, value.as_slice()),
        Update::Delete { key } => (OP_DELETE, key, &[][..]),
    };
    payload.push(op);
    payload.extend_from_slice(&(key.len() as u32).to_le_bytes());
    payload.extend_from_slice(key.as_bytes());
    payload.extend_from_slice(value);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// Decodes frames from `bytes`; returns the updates and the length of the intact prefix.
fn decode(bytes: &[u8]) -> (Vec<Update>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while bytes.len() - pos >= 8 {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let sum = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
        if !(5..=MAX_FRAME).contains(&len) || bytes.len() - pos - 8 < len {
            break;
        }
        let payload = &bytes[pos + 8..pos + 8 + len];
        if crc(payload) != sum {
            break;
        }
        let key_len = u32::from_le_bytes(payload[1..5].try_into().expect("4 bytes")) as usize;
        if 5 + key_len > payload.len() {
            break;
        }
        let Ok(key) = std::str::from_utf8(&payload[5..5 + key_len]) else {
            break;
        };
        let key = key.to_string();
        let update = match payload[0] {
            OP_PUT => Update::Put {
                key,
                value: payload[5 + key_len..].to_vec(),
            },
            OP_DELETE => Update::Delete { key },
            _ => break,
        };
        out.push(update);
        pos += 8 + len;
    }
    (out, pos)
}

fn log_path(dir: &Path, gen: u64) -> PathBuf {
    dir.join(format!("journal.{gen}.log"))
}

fn snap_path(dir: &Path, gen: u64) -> PathBuf {
    dir.join(format!("journal.{gen}.snap"))
}

/// Generations present in `dir` that have a complete snapshot (generation 0 needs none).
fn generations(dir: &Path) -> io::Result<Vec<u64>> {
    let mut gens = vec![0];
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(g) = name
            .strip_prefix("journal.")
            .and_then(|r| r.strip_suffix(".snap"))
            .and_then(|g| g.parse().ok())
        {
            gens.push(g);
        }
    }
    gens.sort_unstable();
    Ok(gens)
}

fn apply(live: &mut HashMap<String, Vec<u8>>, update: Update) {
    match update {
        Update::Put { key, value } => {
            live.insert(key, value);
        }
        Update::Delete { key } => {
            live.remove(&key);
        }
    }
}

fn read_file(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)?;
            Ok(bytes)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(bytes),
        Err(e) => Err(e),
    }
}

/// The store's identity: written once, when the state directory is first used. Volume markers
/// carry it, so recovery can tell "made by this store, never recorded" from "someone else's".
fn store_id(dir: &Path) -> io::Result<String> {
    let path = dir.join("store-id");
    match fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut raw = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut raw)?;
    let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    crate::os::fsutil::write_atomic(&path, id.as_bytes())?;
    Ok(id)
}

/// The live records of a journal directory, read without changing anything (tests, tools).
/// A torn tail is ignored here, as open would cut it off.
pub fn peek(dir: &Path) -> io::Result<Records> {
    let gen = *generations(dir)?
        .last()
        .expect("generation 0 is always present");
    peek_until(dir, gen, usize::MAX)
}

/// The records of generation `gen`: its snapshot, then its log up to `log_len` bytes.
fn peek_until(dir: &Path, gen: u64, log_len: usize) -> io::Result<Records> {
    let mut live = HashMap::new();
    if gen > 0 {
        decode(&read_file(&snap_path(dir, gen))?)
            .0
            .into_iter()
            .for_each(|u| apply(&mut live, u));
    }
    let log = read_file(&log_path(dir, gen))?;
    decode(&log[..log.len().min(log_len)])
        .0
        .into_iter()
        .for_each(|u| apply(&mut live, u));
    Ok(live)
}

impl Journal {
    /// Opens (creating) the journal in `dir` and replays it. Returns the journal and every live
    /// record, by key.
    pub fn open(dir: &Path) -> io::Result<(Arc<Journal>, Records)> {
        fs::create_dir_all(dir)?;
        let store_id = store_id(dir)?;
        let gens = generations(dir)?;
        let gen = *gens.last().expect("generation 0 is always present");
        let mut live = HashMap::new();
        let mut snap_records = 0;
        if gen > 0 {
            let snap = read_file(&snap_path(dir, gen))?;
            let (updates, intact) = decode(&snap);
            if intact != snap.len() {
                // A snapshot is renamed into place only after it is synced: damage is not a
                // torn write but corruption, and guessing would lose volumes.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is damaged at byte {intact}",
                        snap_path(dir, gen).display()
                    ),
                ));
            }
            snap_records = updates.len();
            updates.into_iter().for_each(|u| apply(&mut live, u));
        }
        let log = log_path(dir, gen);
        let bytes = read_file(&log)?;
        let (updates, intact) = decode(&bytes);
        let frames_in_log = updates.len();
        updates.into_iter().for_each(|u| apply(&mut live, u));
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&log)?;
        if intact != bytes.len() {
            tracing::warn!(log = %log.display(), dropped_bytes = bytes.len() - intact,
                "state journal ends in a torn write (never acknowledged); cutting it off");
            file.set_len(intact as u64)?;
            file.sync_data()?;
        }
        crate::os::fsutil::fsync_dir(dir)?;
        // Older generations are complete in the newer snapshot; leftovers of a compaction that
        // crashed half-way go now.
        for old in gens.iter().filter(|g| **g < gen) {
            let _ = fs::remove_file(snap_path(dir, *old));
            let _ = fs::remove_file(log_path(dir, *old));
        }
        let journal = Journal {
            dir: dir.to_path_buf(),
            store_id,
            inner: Mutex::new(Inner {
                gen,
                file,
                durable_len: intact as u64,
                frames_in_log,
                queued: Vec::new(),
                queued_frames: 0,
                issued: 0,
                decided: 0,
                leader_active: false,
                failed: Vec::new(),
                poisoned: None,
                snap_records,
            }),
            committed: Condvar::new(),
        };
        Ok((Arc::new(journal), live))
    }

    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `updates` durable, together with whatever other threads commit at the same time.
    /// Returns only when they are on disk (or failed: then none of them is acknowledged).
    pub fn commit(&self, updates: Vec<Update>) -> io::Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let mut inner = self.lock();
        if let Some(cause) = &inner.poisoned {
            return Err(poisoned_error(cause));
        }
        for u in &updates {
            encode(u, &mut inner.queued);
        }
        inner.queued_frames += updates.len();
        inner.issued += 1;
        let mine = inner.issued;
        loop {
            if inner.decided >= mine {
                return match inner
                    .failed
                    .iter()
                    .find(|(lo, hi, _)| *lo <= mine && mine <= *hi)
                {
                    Some((_, _, cause)) => Err(io::Error::new(cause.kind(), cause.to_string())),
                    None => Ok(()),
                };
            }
            if inner.leader_active {
                inner = self
                    .committed
                    .wait(inner)
                    .unwrap_or_else(|p| p.into_inner());
                continue;
            }
            inner = self.lead_one_batch(inner);
        }
    }

    /// Writes and syncs everything queued, as the leader; the lock is released during I/O.
    fn lead_one_batch<'a>(&'a self, mut inner: MutexGuard<'a, Inner>) -> MutexGuard<'a, Inner> {
        inner.leader_active = true;
        let first = inner.decided + 1;
        let last = inner.issued;
        let bytes = std::mem::take(&mut inner.queued);
        let frames = std::mem::take(&mut inner.queued_frames);
        let file = inner.file.try_clone();
        let start_len = inner.durable_len;
        drop(inner);

        // (error, whether the sync itself failed)
        let outcome: Result<(), (io::Error, bool)> = file.map_err(|e| (e, false)).and_then(|f| {
            // Positioned at the durable end, never at the descriptor's offset: a log opened
            // at start sits at offset 0, and a failed batch cut back leaves the offset past
            // the end.
            crate::failpoint::fail("journal:write")
                .and_then(|()| f.write_all_at(&bytes, start_len))
                .map_err(|e| (e, false))?;
            crate::failpoint::hit("journal:before-sync");
            crate::metrics::count_commit();
            crate::failpoint::fail("journal:sync")
                .and_then(|()| f.sync_data())
                .map_err(|e| (e, true))
        });

        let mut inner = self.lock();
        match outcome {
            Ok(()) => {
                inner.durable_len = start_len + bytes.len() as u64;
                inner.frames_in_log += frames;
            }
            Err((e, sync_failed)) => {
                tracing::error!(error = %e, batch = last - first + 1, "state journal commit failed; no operation in the batch is acknowledged");
                let cause = Arc::new(e);
                // What was written but not synced must not be read back as committed: cut the
                // log back. If even that fails (or the sync failed, leaving the page cache in
                // an unknown state) the journal refuses further commits until restart.
                let truncated = inner.file.set_len(start_len).is_ok();
                if !truncated || sync_failed {
                    inner.poisoned = Some(cause.clone());
                }
                inner.failed.push((first, last, cause));
            }
        }
        inner.decided = last;
        inner.leader_active = false;
        // Failure records are only needed by waiters of batches that are decided; keep a few.
        if inner.failed.len() > 64 {
            let drop_n = inner.failed.len() - 64;
            inner.failed.drain(..drop_n);
        }
        if inner.poisoned.is_none()
            && inner.frames_in_log > 2 * inner.snap_records + COMPACT_SLACK
            && inner.queued.is_empty()
        {
            inner.leader_active = true;
            let result = self.compact(&mut inner);
            inner.leader_active = false;
            if let Err(e) = result {
                tracing::warn!(error = %e, "state journal compaction failed; the log keeps growing and compaction is retried later");
            }
        }
        self.committed.notify_all();
        inner
    }

    /// Writes the live records as the next generation's snapshot and starts its empty log.
    /// Runs with the lock held and no batch in flight, so the snapshot is exactly the durable
    /// state.
    fn compact(&self, inner: &mut Inner) -> io::Result<()> {
        let next = inner.gen + 1;
        // Everything up to durable_len is on disk and no batch is in flight: the files are the
        // exact durable state. Rebuild it from them (memory only for the length of this call).
        let live = peek_until(&self.dir, inner.gen, inner.durable_len as usize)?;
        let mut bytes = Vec::new();
        for (key, value) in live.iter() {
            encode(
                &Update::Put {
                    key: key.clone(),
                    value: value.clone(),
                },
                &mut bytes,
            );
        }
        let records = live.len();
        drop(live);
        let tmp = self.dir.join(format!(".journal.{next}.snap.tmp"));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        let log = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(true)
            .open(log_path(&self.dir, next))?;
        fs::rename(&tmp, snap_path(&self.dir, next))?;
        crate::os::fsutil::fsync_dir(&self.dir)?;
        crate::metrics::count_commit();
        let old = inner.gen;
        inner.gen = next;
        inner.file = log;
        inner.durable_len = 0;
        inner.frames_in_log = 0;
        inner.snap_records = records;
        let _ = fs::remove_file(snap_path(&self.dir, old));
        let _ = fs::remove_file(log_path(&self.dir, old));
        tracing::debug!(generation = next, records, "state journal compacted");
        Ok(())
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

fn poisoned_error(cause: &io::Error) -> io::Error {
    io::Error::new(
        cause.kind(),
        format!(
            "state journal failed earlier ({cause}); restart the driver once the disk is healthy"
        ),
    )
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("dir", &self.dir).finish()
    }
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
