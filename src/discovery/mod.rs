//! NDM-style discovery of the node's block devices: scan (udev enumeration + sysfs + blkid),
//! stable identity, include/exclude filters, hotplug from kernel uevents, and a persisted
//! [`Inventory`] with claims, which the device backend uses; in a cluster, [`sync`] mirrors it
//! into `BlockDevice` objects ([`crd`]).

pub mod crd;
pub mod device;
pub mod filter;
pub mod identity;
pub mod inventory;
pub mod monitor;
mod placement;
pub mod scan;
pub mod sync;

pub mod sysfs;

pub use device::{Device, DeviceType};
pub use filter::Filters;
pub use inventory::{Claim, Claims, Entry, Inventory, State};
