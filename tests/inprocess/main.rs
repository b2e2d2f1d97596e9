//! In-process tests of the CSI services over fake backends: a real tonic server on a Unix
//! socket in a temporary directory and real gRPC clients, but no files, mounts or root.
//!
//! - `fake_backend`: an in-memory `Backend` with configurable name and capabilities.
//! - `harness`: the server, the clients, the table row type.
//! - one table per service (`controller_table`, `node_table`, `identity_caps`), each row a
//!   request, the gRPC code expected and text the message must contain;
//! - `paging`: ListVolumes across backends; `attach_limit`: max_volumes_per_node;
//! - `metrics`: one metric sample and one log line per RPC.

mod attach_limit;
mod controller_table;
mod fake_backend;
mod harness;
mod identity_caps;
mod metrics;
mod node_table;
mod paging;
