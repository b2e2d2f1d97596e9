//! The journal's files in its directory and how they replay.
//!
//! Generation g has at most a snapshot `journal.<g>.snap` (every live record up to the start of
//! log g; written to a temp name, synced and renamed, so it is complete or absent) and a log
//! `journal.<g>.log`. The state is the newest snapshot G (none: empty) followed by every log of
//! generation >= G in order: a log is started (and the next one made, empty, ahead of use) before
//! the snapshot that will cover its predecessors exists, so several logs can follow one snapshot.

use super::frame::{scan, Update};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
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

/// What replaying one file found: how many frames it applied, where the next frame goes, a
/// torn tail (never acknowledged) to zero, and damage (what it held is lost), described.
#[derive(Debug, Default)]
pub(super) struct Replayed {
    pub frames: usize,
    pub end: usize,
    pub torn: Option<(usize, usize)>,
    pub damaged: Vec<String>,
}

/// Applies the intact frames of the file at `path` (none when it is missing) to `live`. In a
/// log (`log`), zeros after the frames are its unused space; other bytes are a torn write (the
/// last batch, never acknowledged) or damage (`frame::scan` tells which).
pub(super) fn replay(path: &Path, log: bool, live: &mut Records) -> io::Result<Replayed> {
    let bytes = match fs::read(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        read => read?,
    };
    let scan = scan(&bytes, log);
    let frames = scan.updates.len();
    for update in scan.updates {
        match update {
            Update::Put { key, value } => live.insert(key, value),
            Update::Delete { key } => live.remove(&key),
        };
    }
    Ok(Replayed {
        frames,
        end: scan.end,
        torn: scan.torn,
        damaged: scan
            .damaged
            .iter()
            .map(|(from, to)| format!("{} bytes {from}..{to}", path.display()))
            .collect(),
    })
}

/// Applies snapshot `gen` (none for generation 0) to `live`. A snapshot is renamed into place
/// only after it is synced: bytes in it that are no frame are damage, never a torn write.
pub(super) fn replay_snapshot(dir: &Path, gen: u64, live: &mut Records) -> io::Result<Replayed> {
    if gen == 0 {
        return Ok(Replayed::default());
    }
    replay(&snap_path(dir, gen), false, live)
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
        replay(&log_path(dir, gen), true, &mut live)?;
    }
    // The journal's own records (sequence number, damage) are no backend's.
    live.retain(|key, _| !key.starts_with(super::frame::JOURNAL_PREFIX));
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
    let id = crate::os::fsutil::hex(&crate::os::fsutil::random_bytes::<16>()?);
    crate::os::fsutil::write_atomic(&path, id.as_bytes())?;
    Ok(id)
}
