//! A blocking, user-space NFS client, NFSv3 or NFSv4.1: XDR, ONC RPC v2 over TCP with record
//! marking and AUTH_SYS (shared), portmap GETPORT, MOUNT3 MNT and the NFSv3 procedures a
//! provisioner needs (v3/), and NFSv4.1 COMPOUNDs on a session (v4/), behind one API
//! (`NfsClient`; each version implements the primitive operations of client/ops.rs `Proto`,
//! on which client/ builds everything else once).
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
//! (the default): NFSv4.1 when the server serves the share so, else NFSv3, decided at the
//! client's first call and kept for its life (client/select.rs). NFSv3 and NFSv4.1 handles of
//! one object differ: `handle_of` and the guarded operations compare handles of the client's
//! own version only, so a caller that records handles records the version too.
//!
//! The share over NFSv4.1 is a path in the server's pseudo-filesystem, resolved with
//! PUTROOTFH and a LOOKUP per component: nfs-ganesha's `Pseudo` path of the export; knfsd's
//! export path, or the path below the `fsid=0` export when there is one. Where the NFSv4 path
//! differs from the NFSv3 export path, `Auto` does not find the share over NFSv4.1 and speaks
//! NFSv3; `Only(V41)` then needs the NFSv4 path.
//!
//! NFSv4.1 operations: EXCHANGE_ID (SP4_NONE, no pNFS), CREATE_SESSION (fore channel only,
//! no callbacks), SEQUENCE first in every compound (slots and sequence ids; this also renews
//! the lease, so a copy's stream of compounds keeps it), RECLAIM_COMPLETE at once (nothing is
//! reclaimed: the client holds opens only for the length of one method), BIND_CONN_TO_SESSION
//! on every new connection, DESTROY_SESSION and DESTROY_CLIENTID when the client is dropped;
//! PUTROOTFH, PUTFH, LOOKUP, LOOKUPP, GETFH, GETATTR (type, size, fsid, fileid, mode, numlinks,
//! owner, owner_group, space_used, time_modify; space_avail/free/total for `fsstat`), SETATTR,
//! CREATE (directories, symlinks), OPEN (CLAIM_NULL with GUARDED4 or EXCLUSIVE4 create, or
//! CLAIM_FH) / READ / WRITE / COMMIT / CLOSE for every file read and written, REMOVE (with
//! VERIFY/NVERIFY of the type where the caller means a directory or a file), RENAME (SAVEFH;
//! guarded renames VERIFY the source's handle in the same compound), LINK, READLINK, READDIR
//! (with each entry's handle and attributes). A small record is read with OPEN, READ and CLOSE
//! in one compound (the current stateid links them) and written with WRITE and CLOSE in one;
//! a path resolves in one compound of LOOKUPs. Owners travel as numeric strings under AUTH_SYS;
//! an owner the server names (`user@domain`) reads as `UNKNOWN_ID`, which a copy refuses with
//! the remedy (v4/attr.rs).
//!
//! Refused: delegations (every OPEN asks for none with OPEN4_SHARE_ACCESS_WANT_NO_DELEG; one
//! granted anyway is returned at once), pNFS (EXCHANGE_ID asks for a non-pNFS server role;
//! no layouts), Kerberos and RPCSEC_GSS (AUTH_SYS only), NFSv4.0 and 4.2 (4.1 only), state
//! protection other than SP4_NONE, and reclaiming state after a server restart.
//!
//! Behaviour:
//! - Deadlines: every RPC exchange (connect, send, receive) is bounded by
//!   `ClientOptions::timeout` (default 5 s). A call fails at its first failed exchange, so a dead
//!   server costs one deadline per call: `DeadlineExceeded` when it does not answer,
//!   `Unavailable` when it refuses or resets, or when portmap has no mapping. NFS4ERR_GRACE and
//!   NFS4ERR_DELAY are retried with short pauses within the same deadline, then `Unavailable`:
//!   a call never waits out a server's grace period. Name resolution uses the system resolver
//!   and is not bounded (use addresses where that matters).
//! - Connections: each client pools its own idle connections (no lock is held across network
//!   I/O, except that concurrent callers wait for one NFSv4.1 session establishment; nothing is
//!   shared between clients, so a dead server never slows another). A pooled connection the
//!   server closed is retried once on a fresh one. NFSv3: any transport failure forgets the
//!   ports and root handle, so the next call asks portmap and MOUNT again. NFSv4.1: a server
//!   that lost the session (BADSESSION, DEADSESSION, STALE_CLIENTID after a restart) gets a new
//!   one and the compound is sent again. A stale handle (NFS3ERR_STALE, NFS4ERR_STALE) resolves
//!   the share again and retries the call once. Together these survive a server restart
//!   without a client restart.
//! - Source port: a reserved port (< 1024) is tried first (root or CAP_NET_BIND_SERVICE); when
//!   binding is not permitted the client falls back to an ephemeral port and logs that once.
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
