//! The journal's files in its directory and how they replay.
//!
//! Generation g has at most a snapshot `journal.<g>.snap` (every live record up to the start of
//! log g; written to a temp name, synced and renamed, so it is complete or absent) and a log
//! `journal.<g>.log`. The state is the newest snapshot G (none: empty) followed by every log of
//! generation >= G in order: a log is started (and the next one made, empty, ahead of use) before
//! the snapshot that will cover its predecessors exists, so several logs can follow one snapshot.

use super::frame::{decode, Update};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Every live record, by key: what a journal replays to.
pub type Records = HashMap<String, Vec<u8>>;

pub(super) fn log_path(dir: &Path, gen: u64) -> PathBuf {
    dir.join(format!("journal.{gen}.log"))
}

pub(super) fn snap_path(dir: &Path, gen: u64) -> PathBuf {
    dir.join(format!("journal.{gen}.snap"))
}

/// The journal files of a directory: generations with a snapshot and with a log, ascending.
#[derive(Debug, Default)]
pub(super) struct Listing {
    pub snaps: Vec<u64>,
    pub logs: Vec<u64>,
}

impl Listing {
    pub fn read(dir: &Path) -> io::Result<Listing> {
        let mut out = Listing::default();
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            let Some(rest) = name.strip_prefix("journal.") else {
                continue;
            };
            if let Some(g) = rest.strip_suffix(".snap").and_then(|g| g.parse().ok()) {
                out.snaps.push(g);
            } else if let Some(g) = rest.strip_suffix(".log").and_then(|g| g.parse().ok()) {
                out.logs.push(g);
            }
        }
        out.snaps.sort_unstable();
        out.logs.sort_unstable();
        Ok(out)
    }

    /// The generation of the newest snapshot (0 when there is none: generation 0 needs none).
    pub fn snap_gen(&self) -> u64 {
        self.snaps.last().copied().unwrap_or(0)
    }

    /// The logs that replay after that snapshot.
    pub fn live_logs(&self) -> impl Iterator<Item = u64> + '_ {
        let base = self.snap_gen();
        self.logs.iter().copied().filter(move |g| *g >= base)
    }
}

pub(super) fn read_file(path: &Path) -> io::Result<Vec<u8>> {
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

pub(super) fn apply(live: &mut Records, update: Update) {
    match update {
        Update::Put { key, value } => {
            live.insert(key, value);
        }
        Update::Delete { key } => {
            live.remove(&key);
        }
    }
}

/// Applies snapshot `gen` (none for generation 0) to `live`; returns how many records it held.
/// A snapshot is renamed into place only after it is synced: damage in it is not a torn write
/// but corruption, and guessing would lose volumes.
pub(super) fn replay_snapshot(dir: &Path, gen: u64, live: &mut Records) -> io::Result<usize> {
    if gen == 0 {
        return Ok(0);
    }
    let path = snap_path(dir, gen);
    let bytes = read_file(&path)?;
    let (updates, intact) = decode(&bytes);
    if intact != bytes.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is damaged at byte {intact}", path.display()),
        ));
    }
    let n = updates.len();
    updates.into_iter().for_each(|u| apply(live, u));
    Ok(n)
}

/// Applies the intact frames of log `gen` (up to `limit` bytes) to `live`; returns the number of
/// frames, the intact length and the end of the last non-zero byte. Non-zero bytes after the
/// intact prefix are a torn write that was never acknowledged; zeros are the log's unused space.
pub(super) fn replay_log(
    dir: &Path,
    gen: u64,
    limit: usize,
    live: &mut Records,
) -> io::Result<(usize, usize, usize)> {
    let bytes = read_file(&log_path(dir, gen))?;
    let (updates, intact) = decode(&bytes[..bytes.len().min(limit)]);
    let frames = updates.len();
    updates.into_iter().for_each(|u| apply(live, u));
    let dirty_end = bytes[intact..]
        .iter()
        .rposition(|b| *b != 0)
        .map_or(intact, |p| intact + p + 1);
    Ok((frames, intact, dirty_end))
}

/// Writes zeros over `from..to` of `file` (not synced).
pub(super) fn zero_fill(file: &File, from: u64, to: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// The live records of a journal directory, read without changing anything (tests, tools).
pub fn peek(dir: &Path) -> io::Result<Records> {
    let files = Listing::read(dir)?;
    let mut live = HashMap::new();
    replay_snapshot(dir, files.snap_gen(), &mut live)?;
    for gen in files.live_logs() {
        replay_log(dir, gen, usize::MAX, &mut live)?;
    }
    Ok(live)
}

/// The store's identity: written once, when the state directory is first used. Volume markers
/// carry it, so recovery can tell "made by this store, never recorded" from "someone else's".
pub(super) fn store_id(dir: &Path) -> io::Result<String> {
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
