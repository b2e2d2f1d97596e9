//! The hostpath backend through the real driver: volume lifecycles, request validation, path
//! confinement, capacity enforcement (`quota`: XFS project quota, btrfs qgroups, plain bases),
//! snapshots and copies, the state journal across restarts, crashes, power cuts and damage,
//! state an earlier build wrote (`old_state`, device volumes too), and the base's identity.
//! Needs root (mounts, loop devices, btrfs and XFS).
//!
//! The XFS quota tests are `#[ignore]`d where the kernel lacks XFS quota; scripts/test.sh runs
//! them with `cargo test --test hostpath quota::xfs:: -- --ignored` where it has it.

#[path = "../common/mod.rs"]
mod common;

mod adopt;
mod base_identity;
mod base_unprivileged;
mod copy;
mod delete_leftover;
mod expansion;
mod journal_damage;
mod lifecycle;
mod node_crash;
mod old_state;
mod path_confinement;
mod pools;
mod quota;
mod recovery_incarnation;
mod restart;
mod restart_concurrent;
mod snapshots;
mod snapshots_crash;
mod snapshots_leftover;
mod sources_in_use;
mod state_dir_lock;
mod validation;
