//! What the journal knows it lost. Damage found at open (bytes that are no frame, followed by
//! later batches; a damaged snapshot), or a journal proven behind the directories it describes
//! (restored from an older copy), is committed as a record of its own, `journal/damaged`: it
//! survives compaction and restarts, so every later start still knows which directories no
//! intact record may explain (those marked at or before `through`).

use super::frame::Update;
use super::journal::Journal;
use serde::{Deserialize, Serialize};
use std::io;

pub(super) const DAMAGE_KEY: &str = "journal/damaged";

/// How many descriptions of damage the record keeps (the newest).
const KEEP_FOUND: usize = 16;

/// The journal's damage: changes up to sequence number `through` may be missing from it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Damage {
    /// The last sequence number whose batch may be lost: directories marked at or before the
    /// next one may belong to a change the journal no longer shows.
    pub through: u64,
    /// What was found, newest last.
    pub found: Vec<String>,
}

impl Damage {
    /// Whether a directory marked with sequence number `seq` (None: marked by a build that did
    /// not record one) may be explained by a change the journal lost. Its create's batch is
    /// `seq` or later; the damage record itself is batch `through + 1` or later.
    pub fn may_explain(&self, seq: Option<u64>) -> bool {
        seq.is_none_or(|s| s <= self.through + 1)
    }

    pub(super) fn decode(raw: &[u8]) -> Damage {
        serde_json::from_slice(raw).unwrap_or_else(|e| Damage {
            // Unreadable, it proves nothing about any directory: trust none.
            through: u64::MAX - 1,
            found: vec![format!("unreadable {DAMAGE_KEY} record: {e}")],
        })
    }
}

impl Journal {
    /// The damage this journal knows of, if any.
    pub fn damage(&self) -> Option<Damage> {
        self.lock().damage.clone()
    }

    /// Records durably that changes up to `through` may be missing, with what was found. Later
    /// batches (and the directories marked after this commit) are numbered past `through`.
    pub fn mark_damaged(&self, through: u64, found: Vec<String>) -> io::Result<()> {
        let record = {
            let mut inner = self.lock();
            inner.seq = inner.seq.max(through);
            let mut damage = inner.damage.clone().unwrap_or_default();
            damage.through = damage.through.max(through);
            damage.found.extend(found);
            let extra = damage.found.len().saturating_sub(KEEP_FOUND);
            damage.found.drain(..extra);
            damage
        };
        self.commit(vec![Update::Put {
            key: DAMAGE_KEY.to_string(),
            value: serde_json::to_vec(&record).map_err(io::Error::other)?,
        }])?;
        self.lock().damage = Some(record);
        crate::metrics::set_journal_damaged(true);
        Ok(())
    }
}
