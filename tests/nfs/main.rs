//! The NFS driver and its user-space client against a real nfs-ganesha (VFS) on 127.0.0.1, with
//! the driver started as `serve --driver nfs` (root: ganesha, rpcbind, reserved ports).
//!
//! `faults` is a seeded fault campaign (kill -9 and server stalls): `FERROVOL_NFS_FAULT_RUNS`
//! and `FERROVOL_NFS_FAULT_SEED` widen or repeat it (`cargo test --test nfs faults::`).

#[path = "../common/mod.rs"]
mod common;

mod backend;
mod backend_io;
mod client;
mod client_v4;
mod deep;
mod faults;
mod node_stats;
mod ownership;
mod shares;
mod snapshots;
mod two_controllers;
