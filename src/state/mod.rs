//! Durable volume state shared by every backend.
//!
//! - `journal`: one append-only log with group commit; a change is acknowledged only after the
//!   one `fdatasync` that carries it (shared by concurrent changes). `group_commit` queues the
//!   changes and leads the batches, `frame` is its on-disk frame, `files` its files and replay,
//!   `compact` its background compaction, `damage` what it knows it lost.
//! - `ledger`: a backend's records, indexed in memory over the journal.
//! - `record`: the record every backend keeps (identity, size, publications).
//! - `legacy`: adoption of the per-volume JSON files of ferrovol 0.1.

mod compact;
mod damage;
mod files;
mod frame;
mod group_commit;
pub mod journal;
pub mod ledger;
pub mod legacy;
pub mod record;

pub use damage::Damage;
pub use group_commit::{on_blocking_pool, Ticket};
pub use journal::{Journal, Update};
pub use ledger::{Ledger, Pending, Queued};
pub use record::{Phase, Publication, Record, VolumeRecord};
