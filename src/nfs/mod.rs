//! A blocking, user-space NFS client, NFSv3 or NFSv4.1: XDR, ONC RPC v2 over TCP with record
//! marking and AUTH_SYS (shared), portmap GETPORT, MOUNT3 MNT and the NFSv3 procedures a
//! provisioner needs (v3/), and NFSv4.1 COMPOUNDs on a session (v4/), behind one API
//! (`NfsClient`, built once in client/ on the primitive operations of client/ops.rs `Proto`).
//!
//! Why our own client: the `nfs3_client` crate is async only (tokio or smol connectors), while
//! the backends are blocking by design (the service layer runs them on tokio's blocking pool),
//! and it connects through its own connector, so binding a reserved source port (knfsd
//! `secure` exports) and bounding every exchange by a deadline would both mean re-implementing
//! its transport. For NFSv4.1, `nfs-rs` is async (tokio) as well, and the blocking `nfs` crate
//! (a first 0.1 release) offers a path-oriented API that hides file handles, which the
//! ownership proofs compare, and gives no per-exchange deadline or source-port control. The
//! part of each protocol needed here is small (about a dozen operations), and owning it gives
//! exact control over deadlines, reconnects, sessions and error names.
//!
//! Versions (`ClientOptions::version`): `Want::Only(V3)`, `Want::Only(V41)`, or `Want::Auto`
//! (the default: NFSv4.1 when the server serves the share so, else NFSv3, decided at the first
//! call and kept; client/select.rs). NFSv3 and NFSv4.1 handles of one object differ, so a
//! caller that records handles records the version too.
//!
//! The share over NFSv4.1 is its path in the server's pseudo-filesystem (PUTROOTFH, then a
//! LOOKUP per component): nfs-ganesha's `Pseudo` path; knfsd's export path, or the path below
//! the `fsid=0` export. Where that differs from the NFSv3 export path, `Auto` speaks NFSv3 and
//! `Only(V41)` needs the NFSv4 path.
//!
//! NFSv4.1: EXCHANGE_ID (SP4_NONE), CREATE_SESSION (fore channel only, no callbacks), SEQUENCE
//! first in every compound (which renews the lease), RECLAIM_COMPLETE at once (opens last one
//! method, nothing is reclaimed), BIND_CONN_TO_SESSION on every new connection, DESTROY_SESSION
//! and DESTROY_CLIENTID on drop; files are OPENed (CLAIM_NULL with GUARDED4 or EXCLUSIVE4, or
//! CLAIM_FH) for every READ and WRITE; REMOVE VERIFYs the type where the caller means a
//! directory or a file, guarded RENAMEs VERIFY the source's handle in the same compound. Owners
//! travel as numeric strings under AUTH_SYS; a named owner (`user@domain`) reads as
//! `UNKNOWN_ID`, which a copy refuses with the remedy (v4/attr.rs). Refused: delegations (asked
//! for none; one granted anyway is returned at once), pNFS, Kerberos and RPCSEC_GSS, NFSv4.0
//! and 4.2, state protection other than SP4_NONE, reclaiming state after a server restart.
//!
//! Behaviour:
//! - Deadlines: every RPC exchange (connect, send, receive) is bounded by
//!   `ClientOptions::timeout` (default 5 s), and a call fails at its first failed exchange: a
//!   dead server costs one deadline per call (`DeadlineExceeded`; `Unavailable` when it refuses
//!   or resets, or portmap has no mapping). NFS4ERR_GRACE and NFS4ERR_DELAY are retried within
//!   the same deadline, then `Unavailable`: a call never waits out a server's grace period.
//!   Name resolution uses the system resolver, unbounded (use addresses where that matters).
//! - Connections: each client pools its own idle connections (no lock is held across network
//!   I/O, except that concurrent callers wait for one NFSv4.1 session establishment; nothing is
//!   shared between clients, so a dead server never slows another). A pooled connection the
//!   server closed is retried once on a fresh one. NFSv3: any transport failure forgets the
//!   ports and root handle, so the next call asks portmap and MOUNT again. NFSv4.1: a lost
//!   session (BADSESSION, DEADSESSION, STALE_CLIENTID) is made again and the compound resent.
//!   A stale handle resolves the share again and retries the call once. Together these survive
//!   a server restart without a client restart.
//! - Source port: a reserved port (< 1024) first (root or CAP_NET_BIND_SERVICE), else an
//!   ephemeral one, logged once.
//! - Durability: record writes use FILE_SYNC and COMMIT when the server kept any of it
//!   unstable; copies write UNSTABLE and COMMIT per file, checking the write verifier.
//! - Paths are relative to the share root, '/'-separated; empty, '.', '..' and NUL components
//!   are rejected before any I/O (`NfsError::InvalidPath`).

mod client;
mod endpoint;
mod error;
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
