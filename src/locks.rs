//! Per-volume operation locks: a second operation on a volume that is busy answers Aborted
//! (the CSI spec's "operation pending for volume") instead of queueing behind the first.
//!
//! A copy (a restore, a clone, a snapshot) also holds its source for reading: any number of
//! copies may read one source, and a delete of that source answers Aborted until they end, so
//! a tree is never removed under a copy that would then be answered ready with part of it.

use crate::error::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Held {
    /// Volumes and snapshots an operation holds.
    busy: HashSet<String>,
    /// Those of `busy` being deleted: no copy may start reading them.
    deleting: HashSet<String>,
    /// Sources and how many copies read each.
    read: HashMap<String, usize>,
}

#[derive(Debug, Default, Clone)]
pub struct VolumeLocks {
    held: Arc<Mutex<Held>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Hold {
    Operation,
    Delete,
    Read,
}

#[must_use = "the lock is released when the guard drops"]
#[derive(Debug)]
pub struct VolumeGuard {
    held: Arc<Mutex<Held>>,
    key: String,
    hold: Hold,
}

impl VolumeLocks {
    pub fn try_lock(&self, key: &str) -> Result<VolumeGuard> {
        self.take(key, Hold::Operation)
    }

    /// For a delete: also Busy while a copy reads `key`.
    pub fn try_lock_delete(&self, key: &str) -> Result<VolumeGuard> {
        self.take(key, Hold::Delete)
    }

    /// For a copy reading `key`: Busy only while `key` is being deleted.
    pub fn try_read(&self, key: &str) -> Result<VolumeGuard> {
        self.take(key, Hold::Read)
    }

    fn take(&self, key: &str, hold: Hold) -> Result<VolumeGuard> {
        let mut held = self.held.lock().expect("lock poisoned");
        let readers = held.read.get(key).copied().unwrap_or(0);
        match hold {
            Hold::Read if held.deleting.contains(key) => {
                return Err(Error::Busy(format!("{key} (being deleted)")));
            }
            Hold::Read => *held.read.entry(key.to_string()).or_default() += 1,
            Hold::Delete if readers > 0 => {
                return Err(Error::Busy(format!("{key} (a copy is reading it)")));
            }
            _ if !held.busy.insert(key.to_string()) => return Err(Error::Busy(key.to_string())),
            Hold::Delete => _ = held.deleting.insert(key.to_string()),
            Hold::Operation => {}
        }
        let (held, key) = (self.held.clone(), key.to_string());
        Ok(VolumeGuard { held, key, hold })
    }
}

impl Drop for VolumeGuard {
    fn drop(&mut self) {
        let mut held = self.held.lock().expect("lock poisoned");
        if self.hold == Hold::Read {
            let left = held.read.get_mut(&self.key).map(|n| {
                *n -= 1;
                *n
            });
            if left == Some(0) {
                held.read.remove(&self.key);
            }
            return;
        }
        held.busy.remove(&self.key);
        held.deleting.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_busy_until_first_drops() {
        let locks = VolumeLocks::default();
        let g = locks.try_lock("v").unwrap();
        assert!(matches!(locks.try_lock("v"), Err(Error::Busy(_))));
        assert!(locks.try_lock("w").is_ok());
        drop(g);
        assert!(locks.try_lock("v").is_ok());
    }

    #[test]
    fn a_source_read_by_copies_is_deleted_only_when_they_end() {
        let locks = VolumeLocks::default();
        let (a, b) = (locks.try_read("s").unwrap(), locks.try_read("s").unwrap());
        assert!(matches!(locks.try_lock_delete("s"), Err(Error::Busy(_))));
        // Other operations on the source go on while it is read.
        drop(locks.try_lock("s").unwrap());
        drop(a);
        assert!(matches!(locks.try_lock_delete("s"), Err(Error::Busy(_))));
        drop(b);
        let delete = locks.try_lock_delete("s").unwrap();
        assert!(matches!(locks.try_read("s"), Err(Error::Busy(_))));
        assert!(matches!(locks.try_lock("s"), Err(Error::Busy(_))));
        drop(delete);
        assert!(locks.try_read("s").is_ok());
    }
}
