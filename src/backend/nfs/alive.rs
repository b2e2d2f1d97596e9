//! Which long copies still run, as other controllers on the share see them. The share's lease
//! (lease.rs) decides who recovers, but not whether the work it finds is cut off: during a
//! rollout, or with more than one replica, the lease holder may find a `Creating` snapshot or
//! restore that another live controller is still copying. Rolling that back, or copying it
//! again, would remove what the copy writes, and the copy would answer for data that is gone.
//!
//! So a copy shows life: from before its intent record is written until after its last step,
//! its process rewrites `.ferrovol/copies/<name>.json` every `RENEW` (a counter goes up). A
//! controller that meets a `Creating` record no copy of its own is making acts on it only when
//! no other process shows life for it:
//! - no liveness record: no copy runs (the record is written before the intent);
//! - a record of this instance (host and state directory): this process's own copies are in
//!   its work map, so the one that wrote it is a process that restarted;
//! - a record seen unchanged for `TTL` by this process's own clock (no clock is compared
//!   across machines).
//!
//! A copy that could not rewrite its record within `VALID` (< `TTL`) stops before its last
//! step and removes nothing: by then the lease holder may be undoing or redoing it.

use super::{in_meta_dir, names};
use crate::error::{Error, Result};
use crate::nfs::NfsClient;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

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
    beats: u64,
}

/// A copy's name on a share: (server, share, name).
type Key = (String, String, String);

/// One copy of this process, shown to the others.
struct Shown {
    client: Arc<NfsClient>,
    source: String,
    /// Guards holding it; the record goes with the last.
    holders: usize,
    beats: u64,
    /// When the last write that succeeded began.
    written: Instant,
    /// Set when the record was removed: a rewrite after that would resurrect it.
    ended: bool,
}

#[derive(Default)]
pub struct Copies {
    instance: String,
    mine: Arc<Mutex<HashMap<Key, Arc<Mutex<Shown>>>>>,
    seen: Mutex<HashMap<Key, (Beat, Instant)>>,
    renewer: OnceLock<()>,
}

fn path(name: &str) -> String {
    format!("{COPIES_DIR}/{name}.json")
}

fn key(c: &NfsClient, name: &str) -> Key {
    (c.server().into(), c.share().into(), name.into())
}

fn write(shown: &mut Shown, instance: &str, name: &str) -> crate::nfs::Result<()> {
    let began = Instant::now();
    let beat = Beat {
        instance: instance.to_string(),
        source: shown.source.clone(),
        beats: shown.beats + 1,
    };
    let bytes = serde_json::to_vec(&beat).expect("a liveness record serialises");
    let c = &shown.client;
    in_meta_dir(c, COPIES_DIR, || c.write_file_atomic(&path(name), &bytes))?;
    shown.beats = beat.beats;
    shown.written = began;
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
    pub fn show(self: &Arc<Self>, c: &Arc<NfsClient>, name: &str, source: &str) -> Result<Alive> {
        let key = key(c, name);
        let mut mine = self.mine.lock().expect("copies poisoned");
        let shown = match mine.get(&key) {
            Some(s) => s.clone(),
            None => {
                let mut s = Shown {
                    client: c.clone(),
                    source: source.to_string(),
                    holders: 0,
                    beats: 0,
                    written: Instant::now(),
                    ended: false,
                };
                write(&mut s, &self.instance, name)
                    .map_err(|e| cannot_show(c, name, &e.to_string()))?;
                let s = Arc::new(Mutex::new(s));
                mine.insert(key.clone(), s.clone());
                s
            }
        };
        shown.lock().expect("copy poisoned").holders += 1;
        drop(mine);
        self.renewer.get_or_init(|| self.start_renewing());
        Ok(Alive {
            copies: self.clone(),
            key,
            shown,
        })
    }

    fn start_renewing(self: &Arc<Self>) {
        let me = self.clone();
        let thread = std::thread::Builder::new().name("nfs-copies".into());
        let spawned = thread.spawn(move || loop {
            std::thread::sleep(RENEW);
            let all: Vec<_> = me.mine.lock().expect("copies poisoned").clone().into_iter().collect();
            for ((_, _, name), shown) in all {
                let mut s = shown.lock().expect("copy poisoned");
                if s.ended {
                    continue;
                }
                if let Err(e) = write(&mut s, &me.instance, &name) {
                    tracing::warn!(copy = %name, error = %e, "the liveness record of a copy in flight was not rewritten");
                }
            }
        });
        if let Err(e) = spawned {
            // Copies then fail their check before their last step, which is safe.
            tracing::warn!(error = %e, "cannot start the thread that shows copies in flight");
        }
    }

    /// Whether another process may still be copying `name` on `c`'s share (see the module doc).
    /// The first sighting of a record counts as life: the caller asks again later.
    pub fn others_copying(&self, c: &NfsClient, name: &str) -> crate::nfs::Result<bool> {
        let beat = match c.read_file(&path(name))? {
            Some(b) => serde_json::from_slice::<Beat>(&b).ok(),
            None => None,
        };
        Ok(self.shows_life(c, name, beat))
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
            if reads && self.shows_life(c, name, beat) {
                return Ok(Some(name.to_string()));
            }
        }
        Ok(None)
    }

    fn shows_life(&self, c: &NfsClient, name: &str, beat: Option<Beat>) -> bool {
        let key = key(c, name);
        let mut seen = self.seen.lock().expect("copies poisoned");
        let Some(beat) = beat.filter(|b| b.instance != self.instance) else {
            seen.remove(&key);
            return false;
        };
        match seen.get(&key) {
            Some((b, at)) if *b == beat => at.elapsed() < TTL,
            _ => {
                seen.insert(key, (beat, Instant::now()));
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
    copies: Arc<Copies>,
    key: Key,
    shown: Arc<Mutex<Shown>>,
}

impl Alive {
    /// Before a copy's last step: an error unless its record was rewritten within `VALID`, so
    /// no other controller can have counted it dead.
    pub fn check(&self) -> Result<()> {
        let s = self.shown.lock().expect("copy poisoned");
        if s.written.elapsed() < VALID {
            return Ok(());
        }
        let why = format!(
            "its liveness record was last written {:?} ago",
            s.written.elapsed()
        );
        Err(cannot_show(&s.client, &self.key.2, &why))
    }

    /// Whether the copy has lost its standing: then its failure path removes nothing.
    pub fn lost(&self) -> bool {
        self.check().is_err()
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        let mut mine = self.copies.mine.lock().expect("copies poisoned");
        let mut s = self.shown.lock().expect("copy poisoned");
        s.holders -= 1;
        if s.holders > 0 {
            return;
        }
        s.ended = true;
        // Under the map's lock, so a copy of the same name shown again now writes after this.
        mine.remove(&self.key);
        if let Err(e) = s.client.remove_file(&path(&self.key.2)) {
            tracing::warn!(copy = %self.key.2, error = %e, "the liveness record of a finished copy was not removed; it is harmless, and the next copy of that name rewrites it");
        }
    }
}
