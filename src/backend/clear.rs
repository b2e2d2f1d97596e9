//! Clearing a Released device: an operator's call through the admin API (never a CO's), after
//! they checked the disk a delete could not hand back and wiped it by hand. docs/adoption.md
//! ("A Released device") describes it.

use crate::error::Result;

/// The Released device to hand back, and the volume its claim names (the operator's
/// confirmation of which release they checked).
#[derive(Debug, Clone)]
pub struct ClearReleased {
    pub device_uid: String,
    pub volume: String,
}

/// What a clear did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleared {
    /// The release was removed: the device is Unclaimed. `reason` is why it had been released.
    Cleared {
        reason: String,
        candidate: bool,
        device_path: String,
    },
    /// The device was Unclaimed already: nothing was changed.
    AlreadyUnclaimed {
        candidate: bool,
        device_path: String,
    },
}

/// A backend whose devices can be left Released (`Backend::releases`).
pub trait ReleaseBackend: Send + Sync {
    /// Clears `req`'s Released claim, which only this node's own state may hold; every other
    /// claim is refused, and an Unclaimed device answers `AlreadyUnclaimed`. Writes nothing to
    /// the device.
    fn clear_released(&self, req: &ClearReleased) -> Result<Cleared>;
}
