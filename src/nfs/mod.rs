//! A blocking, user-space NFSv3 client: XDR, ONC RPC v2 over TCP with record marking, AUTH_SYS,
//! portmap GETPORT, MOUNT3 MNT and the NFSv3 procedures a provisioner needs.
//!
//! Why our own client and not the `nfs3_client` crate: that crate is async only (tokio or smol
//! connectors), while the backends are blocking by design (the service layer runs them on
//! tokio's blocking pool); it connects through its own connector, so binding a reserved source
//! port (knfsd `secure` exports) and bounding every exchange by a deadline would both mean
//! re-implementing its transport. The part of NFSv3 needed here is small (about a dozen
//! procedures), and owning it gives exact control over deadlines, reconnects and error names.
//!
//! Behaviour:
//! - Deadlines: every RPC exchange (connect, send, receive) is bounded by
//!   `ClientOptions::timeout` (default 5 s). A call fails at its first failed exchange, so a dead
//!   server costs one deadline per call: `DeadlineExceeded` when it does not answer,
//!   `Unavailable` when it refuses or resets, or when portmap has no mapping. Name resolution
//!   uses the system resolver and is not bounded (use addresses where that matters).
//! - Connections: each client pools its own idle connections (no lock is held across network
//!   I/O, and nothing is shared between clients, so a dead server never slows another).
//!   A pooled connection the server closed is retried once on a fresh one; any transport
//!   failure forgets the ports and root handle, so the next call asks portmap and MOUNT again.
//!   NFS3ERR_STALE re-mounts the share and retries the call once. Together these survive a
//!   server restart without a client restart.
//! - Source port: a reserved port (< 1024) is tried first (root or CAP_NET_BIND_SERVICE); when
//!   binding is not permitted the client falls back to an ephemeral port and logs that once.
//! - Paths are relative to the share root, '/'-separated; empty, '.', '..' and NUL components
//!   are rejected before any I/O (`NfsError::InvalidPath`).

mod client;
mod endpoint;
pub mod error;
mod path;
mod rpc;
mod types;
mod v3;
mod v4;
mod xdr;

pub use client::{CopyStats, Guarded, NfsClient, Outcome, Rmdir};
pub use endpoint::ClientOptions;
pub use error::{NfsError, NfsStatus, Result};
pub use types::{Attr, FileType, FsStat, SetAttr, Version, Want};
