//! The device backend and discovery on real loop devices (root): the discovery zoo and hotplug,
//! the backend through real gRPC, "fast" and "slow" classes by deviceSelector, device identity,
//! and a seeded fault campaign (`faults`: kill -9
//! across claim, format, stage and release; `FERROVOL_FAULT_RUNS`, `FERROVOL_FAULT_SEED`, run
//! with `cargo test --test device faults::`).

#[path = "../common/mod.rs"]
mod common;

mod adopt;
mod backend;
mod classes;
mod damage;
mod discovery;
mod faults;
mod identity;
mod release;
