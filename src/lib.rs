//! ferrovol: a Kubernetes CSI driver for node-local volumes.
//!
//! Layers, top to bottom: `csi` (thin gRPC services) -> `backend` (one module per kind of
//! storage behind one trait) -> `state` (atomic per-volume records) -> `os` (the only code
//! that touches the kernel). See docs/architecture.md.

// Unsafe code lives under `os/` alone, where each module that needs it allows it.
#![deny(unsafe_code)]

pub mod backend;
pub mod cli;
pub mod client;
pub mod csi;
pub mod discovery;
pub mod error;
pub mod failpoint;
pub mod locks;
pub mod metrics;
pub mod nfs;
pub mod node;
pub mod nodeloss;
pub mod os;
pub mod proto;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod volume;
