//! Which long copies still run, as other controllers on the share see them. The share's lease
//! (lease.rs) decides who recovers, but not whether the work it finds is cut off: during a
//! rollout, or with more than one replica, the lease holder may find a `Creating` snapshot or
//! restore that another live controller is still copying. Rolling that back, or copying it
//! again, would remove what the copy writes, and the copy would answer for data that is gone.
//!
//! So a copy shows life: from before its intent record is written until after its last step,
//! its process rewrites `.ferrovol/copies/<name>.json` every `RENEW` (a counter goes up; each
//! copy carries an id of its own, so a new copy of a name never passes for an earlier one). A
//! controller that meets a `Creating` record no copy of its own is making acts on it only when
//! no other process shows life for it:
//! - no liveness record: no copy runs (the record is written before the intent);
//! - a record of this instance (host and state directory): this process's own copies are in
//!   its work map, so the one that wrote it is a process that restarted;
//! - a record seen unchanged for `TTL` by this process's own clock (no clock is compared
//!   across machines).
//!
//! A copy that could not rewrite its record within `VALID` (< `TTL`), or whose rewrite took
//! `TTL - VALID` or more to land, has lapsed for good ([`Standing`]): it rewrites nothing more,
//! stops before its last step and removes nothing, since by then the lease holder may be
//! undoing or redoing it. The 6 s between `VALID` and `TTL` are what that last step (one or two
//! NFS calls) may take.

use super::{in_meta_dir, names};
use crate::error::{Error, Result};
use crate::nfs::NfsClient;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const COPIES_DIR: &str = ".ferrovol/copies";
const RENEW: Duration = Duration::from_secs(3);
const VALID: Duration = Duration::from_secs(9);
pub const TTL: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Beat {
    /// The controller instance (host and state directory) whose process copies.
    instance: String,
    /// The id of the volume or snapshot the copy reads.
    source: String,
    /// This copy among all copies of the name (pid, time and a count): a new copy of a name
    /// never matches what was seen of an earlier one.
    copy: String,
    beats: u64,
}

/// A copy's name on a share: (server, share, name).
type Key = (String, String, String);

/// One copy of this process, shown to the others.
struct Shown {
    client: Arc<NfsClient>,
    /// What was last written (or is written first).
    beat: Beat,
    /// Guards holding it; the record goes with the last.
    holders: usize,
    standing: Standing,
    /// Set when the record was removed: a rewrite after that would resurrect it.
    ended: bool,
}

/// Whether a copy may still count itself alive. It stands while its record was last rewritten
/// within `VALID` by a write that landed within `TTL - VALID` of its start; once it did not,
/// it has lapsed for good: another controller may have seen its record stand still for `TTL`
/// (a write landing late cannot undo that), so it rewrites nothing more and stops.
#[derive(Debug, Clone, Copy)]
struct Standing {
    /// When the last write that counts began.
    last: Instant,
    lapsed: bool,
}

impl Standing {
    fn new(now: Instant) -> Self {
        Standing {
            last: now,
            lapsed: false,
        }
    }

    /// A write that began at `began` succeeded at `now`.
    fn written(&mut self, began: Instant, now: Instant) {
        if now.duration_since(began) >= TTL - VALID {
            self.lapsed = true;
        }
        if !self.lapsed {
            self.last = began;
        }
    }

    /// None while the copy stands, else how long ago its record was last written.
    fn since(&mut self, now: Instant) -> Option<Duration> {
        let since = now.duration_since(self.last);
        self.lapsed |= since >= VALID;
        self.lapsed.then_some(since)
    }

    /// Whether a rewrite may be tried at `now`.
    fn may_renew(&mut self, now: Instant) -> bool {
        self.since(now).is_none()
    }
}

impl Beat {
    /// The first record of a new copy by `instance` reading `source`.
    fn first(instance: &str, source: &str) -> Beat {
        static COPIES: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH);
        let (pid, nanos) = (std::process::id(), nanos.map_or(0, |d| d.as_nanos()));
        let n = COPIES.fetch_add(1, Ordering::Relaxed);
        Beat {
            instance: instance.to_string(),
            source: source.to_string(),
            copy: format!("pid {pid} at {nanos} copy {n}"),
            beats: 0,
        }
    }
}

#[derive(Default)]
pub struct Copies {
    instance: String,
    /// This process's copies, per share: a share's lock is held through its records' writes
    /// and removals, so a slow share delays no other share's copies.
    mine: Mutex<HashMap<(String, String), Arc<ShareCopies>>>,
    seen: Mutex<HashMap<Key, (Beat, Instant)>>,
}

fn path(name: &str) -> String {
    format!("{COPIES_DIR}/{name}.json")
}

/// This process's copies on one share, by name.
type ShareCopies = Mutex<HashMap<String, Arc<Mutex<Shown>>>>;

fn key(c: &NfsClient, name: &str) -> Key {
    (c.server().into(), c.share().into(), name.into())
}

fn write(shown: &mut Shown, name: &str) -> crate::nfs::Result<()> {
    let began = Instant::now();
    let mut beat = shown.beat.clone();
    beat.beats += 1;
    let bytes = serde_json::to_vec(&beat).expect("a liveness record serialises");
    let c = &shown.client;
    in_meta_dir(c, COPIES_DIR, || c.write_file_atomic(&path(name), &bytes))?;
    shown.beat = beat;
    shown.standing.written(began, Instant::now());
    Ok(())
}

impl Copies {
    pub fn new(instance: &str) -> Self {
        Copies {
            instance: instance.to_string(),
            ..Copies::default()
        }
    }

    /// Shows copy `name` of `source` on `c`'s share as running until the returned guard (and
    /// every other guard of it) drops. Fails when its record cannot be written: nothing may
    /// start then.
    pub fn show(&self, c: &Arc<NfsClient>, name: &str, source: &str) -> Result<Alive> {
        let share = (c.server().to_string(), c.share().to_string());
        let share = (self.mine.lock().expect("copies poisoned"))
            .entry(share)
            .or_default()
            .clone();
        let mut mine = share.lock().expect("copies poisoned");
        let shown = match mine.get(name) {
            Some(s) => s.clone(),
            None => {
                let mut s = Shown {
                    client: c.clone(),
                    beat: Beat::first(&self.instance, source),
                    holders: 0,
                    standing: Standing::new(Instant::now()),
                    ended: false,
                };
                write(&mut s, name).map_err(|e| cannot_show(c, name, &e.to_string()))?;
                let s = Arc::new(Mutex::new(s));
                mine.insert(name.to_string(), s.clone());
                Copies::renew(s.clone(), name.to_string());
                s
            }
        };
        shown.lock().expect("copy poisoned").holders += 1;
        drop(mine);
        Ok(Alive {
            share,
            name: name.to_string(),
            shown,
        })
    }

    /// Rewrites the record of one copy every `RENEW` until it ends, on a thread of its own (a
    /// slow share delays no other share's copies).
    fn renew(shown: Arc<Mutex<Shown>>, name: String) {
        let thread = std::thread::Builder::new().name("nfs-copy-alive".into());
        let spawned = thread.spawn(move || loop {
            std::thread::sleep(RENEW);
            let mut s = shown.lock().expect("copy poisoned");
            if s.ended || !s.standing.may_renew(Instant::now()) {
                return;
            }
            if let Err(e) = write(&mut s, &name) {
                tracing::warn!(copy = %name, error = %e, "the liveness record of a copy in flight was not rewritten");
            }
        });
        if let Err(e) = spawned {
            // The copy then fails its check before its last step, which is safe.
            tracing::warn!(error = %e, "cannot start the thread that shows a copy in flight");
        }
    }

    /// Whether another process may still be copying `name` on `c`'s share (see the module doc).
    /// The first sighting of a record counts as life: the caller asks again later.
    pub fn others_copying(&self, c: &NfsClient, name: &str) -> crate::nfs::Result<bool> {
        let beat = match c.read_file(&path(name))? {
            Some(b) => serde_json::from_slice::<Beat>(&b).ok(),
            None => None,
        };
        Ok(self.shows_life(key(c, name), beat, Instant::now()))
    }

    /// A copy on `c`'s share that another process shows life for and that reads `source` (a
    /// volume or snapshot id): its source must not be deleted under it.
    pub fn others_reading(
        &self,
        c: &NfsClient,
        source: &str,
    ) -> crate::nfs::Result<Option<String>> {
        for name in names(c, COPIES_DIR)?
            .iter()
            .filter_map(|n| n.strip_suffix(".json"))
        {
            let Some(bytes) = c.read_file(&path(name))? else {
                continue;
            };
            let beat = serde_json::from_slice::<Beat>(&bytes).ok();
            let reads = beat.as_ref().is_some_and(|b| b.source == source);
            if reads && self.shows_life(key(c, name), beat, Instant::now()) {
                return Ok(Some(name.to_string()));
            }
        }
        Ok(None)
    }

    /// Whether `beat`, read at `now`, shows another process's copy alive (see the module doc).
    fn shows_life(&self, key: Key, beat: Option<Beat>, now: Instant) -> bool {
        let mut seen = self.seen.lock().expect("copies poisoned");
        let Some(beat) = beat.filter(|b| b.instance != self.instance) else {
            seen.remove(&key);
            return false;
        };
        match seen.get(&key) {
            Some((b, at)) if *b == beat => now.duration_since(*at) < TTL,
            _ => {
                seen.insert(key, (beat, now));
                true
            }
        }
    }

    /// Removes the liveness record of a copy found dead (after its work was undone or redone).
    pub fn forget(&self, c: &NfsClient, name: &str) {
        if let Err(e) = c.remove_file(&path(name)) {
            tracing::debug!(copy = %name, error = %e, "liveness record of a dead copy not removed");
        }
    }
}

fn cannot_show(c: &NfsClient, name: &str, why: &str) -> Error {
    Error::Unavailable {
        server: format!("{}:{}", c.server(), c.share()),
        detail: format!("copy {name} cannot show other controllers that it runs ({why}); stopped, nothing removed"),
    }
}

/// A copy shown as running; dropping the last guard of it removes its record.
pub struct Alive {
    share: Arc<ShareCopies>,
    name: String,
    shown: Arc<Mutex<Shown>>,
}

impl Alive {
    /// Before a copy's last step: an error unless its record was rewritten within `VALID`, so
    /// no other controller can have counted it dead.
    pub fn check(&self) -> Result<()> {
        let mut s = self.shown.lock().expect("copy poisoned");
        let since = s.standing.since(Instant::now());
        match since {
            None => Ok(()),
            Some(since) => {
                let why = format!("its liveness record was last written {since:?} ago");
                Err(cannot_show(&s.client, &self.name, &why))
            }
        }
    }

    /// Whether the copy has lost its standing: then its failure path removes nothing.
    pub fn lost(&self) -> bool {
        self.check().is_err()
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        let mut mine = self.share.lock().expect("copies poisoned");
        let mut s = self.shown.lock().expect("copy poisoned");
        s.holders -= 1;
        if s.holders > 0 {
            return;
        }
        s.ended = true;
        // Under the map's lock, so a copy of the same name shown again now writes after this.
        mine.remove(&self.name);
        if let Err(e) = s.client.remove_file(&path(&self.name)) {
            tracing::warn!(copy = %self.name, error = %e, "the liveness record of a finished copy was not removed; it is harmless, and the next copy of that name rewrites it");
        }
    }
}

#[cfg(test)]
#[path = "alive_tests.rs"]
mod tests;
