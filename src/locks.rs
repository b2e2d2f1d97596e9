//! Per-volume operation locks: a second operation on a volume that is busy answers Aborted
//! (the CSI spec's "operation pending for volume") instead of queueing behind the first.

use crate::error::{Error, Result};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default, Clone)]
pub struct VolumeLocks {
    held: Arc<Mutex<HashSet<String>>>,
}

#[must_use = "the lock is released when the guard drops"]
#[derive(Debug)]
pub struct VolumeGuard {
    held: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl VolumeLocks {
    pub fn try_lock(&self, key: &str) -> Result<VolumeGuard> {
        let mut held = self.held.lock().expect("lock poisoned");
        if !held.insert(key.to_string()) {
            return Err(Error::Busy(key.to_string()));
        }
        let (held, key) = (self.held.clone(), key.to_string());
        Ok(VolumeGuard { held, key })
    }
}

impl Drop for VolumeGuard {
    fn drop(&mut self) {
        self.held.lock().expect("lock poisoned").remove(&self.key);
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
}
