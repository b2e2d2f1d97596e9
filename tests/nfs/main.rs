//! The NFS driver and its user-space client against a real nfs-ganesha (VFS) on 127.0.0.1, with
//! the driver started as `serve --driver nfs` (root: ganesha, rpcbind, reserved ports).
//!
//! Most modules run their tests over NFSv3 and over NFSv4.1 (`both_versions!`).
//!
//! `faults` is a seeded fault campaign (kill -9 and server stalls): `FERROVOL_NFS_FAULT_RUNS`
//! and `FERROVOL_NFS_FAULT_SEED` widen or repeat it (`cargo test --test nfs faults::`).

#[path = "../common/mod.rs"]
mod common;

/// Runs each named test once per protocol version (`<module>::v3::<name>`,
/// `<module>::v41::<name>`): the test takes a `common::nfs::Proto`.
macro_rules! both_versions {
    ($($name:ident),* $(,)?) => {
        mod v3 {
            $(#[test] fn $name() { super::$name(super::Proto::V3) })*
        }
        mod v41 {
            $(#[test] fn $name() { super::$name(super::Proto::V41) })*
        }
    };
}

/// `both_versions!` for async tests.
macro_rules! both_versions_async {
    ($($name:ident),* $(,)?) => {
        mod v3 {
            $(#[tokio::test] async fn $name() { super::$name(super::Proto::V3).await })*
        }
        mod v41 {
            $(#[tokio::test] async fn $name() { super::$name(super::Proto::V41).await })*
        }
    };
}

mod adopt;
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
mod two_controllers_races;
mod versions;
