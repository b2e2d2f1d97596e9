//! Errors of the NFS client. Every variant names the server, so a caller juggling several
//! servers can tell which one failed without context of its own.

use std::fmt;

/// An NFSv3 status (nfsstat3, RFC 1813 section 2.6) or a MOUNT3 status (mountstat3, which shares
/// the numbers it has in common with nfsstat3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NfsStatus(pub u32);

impl NfsStatus {
    pub const OK: NfsStatus = NfsStatus(0);
    pub const PERM: NfsStatus = NfsStatus(1);
    pub const NOENT: NfsStatus = NfsStatus(2);
    pub const IO: NfsStatus = NfsStatus(5);
    pub const ACCES: NfsStatus = NfsStatus(13);
    pub const EXIST: NfsStatus = NfsStatus(17);
    pub const NOTDIR: NfsStatus = NfsStatus(20);
    pub const ISDIR: NfsStatus = NfsStatus(21);
    pub const INVAL: NfsStatus = NfsStatus(22);
    pub const NOSPC: NfsStatus = NfsStatus(28);
    pub const ROFS: NfsStatus = NfsStatus(30);
    pub const NAMETOOLONG: NfsStatus = NfsStatus(63);
    pub const NOTEMPTY: NfsStatus = NfsStatus(66);
    pub const DQUOT: NfsStatus = NfsStatus(69);
    pub const STALE: NfsStatus = NfsStatus(70);
    pub const BADHANDLE: NfsStatus = NfsStatus(10001);
    pub const NOTSUPP: NfsStatus = NfsStatus(10004);
    pub const SERVERFAULT: NfsStatus = NfsStatus(10006);
    pub const JUKEBOX: NfsStatus = NfsStatus(10008);

    /// The protocol's name for the status, `NFS3ERR_<NAME>`.
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "NFS3_OK",
            1 => "NFS3ERR_PERM",
            2 => "NFS3ERR_NOENT",
            5 => "NFS3ERR_IO",
            6 => "NFS3ERR_NXIO",
            13 => "NFS3ERR_ACCES",
            17 => "NFS3ERR_EXIST",
            18 => "NFS3ERR_XDEV",
            19 => "NFS3ERR_NODEV",
            20 => "NFS3ERR_NOTDIR",
            21 => "NFS3ERR_ISDIR",
            22 => "NFS3ERR_INVAL",
            27 => "NFS3ERR_FBIG",
            28 => "NFS3ERR_NOSPC",
            30 => "NFS3ERR_ROFS",
            31 => "NFS3ERR_MLINK",
            63 => "NFS3ERR_NAMETOOLONG",
            66 => "NFS3ERR_NOTEMPTY",
            69 => "NFS3ERR_DQUOT",
            70 => "NFS3ERR_STALE",
            71 => "NFS3ERR_REMOTE",
            10001 => "NFS3ERR_BADHANDLE",
            10002 => "NFS3ERR_NOT_SYNC",
            10003 => "NFS3ERR_BAD_COOKIE",
            10004 => "NFS3ERR_NOTSUPP",
            10005 => "NFS3ERR_TOOSMALL",
            10006 => "NFS3ERR_SERVERFAULT",
            10007 => "NFS3ERR_BADTYPE",
            10008 => "NFS3ERR_JUKEBOX",
            _ => "NFS3ERR_UNKNOWN",
        }
    }
}

impl fmt::Display for NfsStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NfsError {
    /// The server could not be reached: connection refused or reset, no route, or portmap has no
    /// TCP mapping for the program.
    #[error("NFS server {server} unavailable: {cause}")]
    Unavailable { server: String, cause: String },
    /// The server accepted the connection (or did not refuse it) but did not answer in time.
    #[error("NFS server {server} did not answer {op} within the deadline")]
    DeadlineExceeded { server: String, op: String },
    /// The server answered with an error status.
    #[error("NFS server {server}: {op} {path:?} failed: {status}")]
    Status {
        server: String,
        op: String,
        path: String,
        status: NfsStatus,
    },
    /// A path given to the client is not a clean relative path.
    #[error("invalid NFS path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    /// The server answered something this client cannot use (RPC denied, garbled reply, a file
    /// where a directory was expected).
    #[error("NFS server {server}: {op}: {detail}")]
    Protocol {
        server: String,
        op: String,
        detail: String,
    },
    /// A long operation (a tree copy) stopped because its caller asked it to.
    #[error("NFS server {server}: {op} of {path:?} cancelled")]
    Cancelled {
        server: String,
        op: String,
        path: String,
    },
}

impl NfsError {
    /// The NFS status when the server answered with one.
    pub fn status(&self) -> Option<NfsStatus> {
        match self {
            NfsError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn is_status(&self, s: NfsStatus) -> bool {
        self.status() == Some(s)
    }

    /// True when the server could not be reached or did not answer: the operation may be retried
    /// later and says nothing about the files.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            NfsError::Unavailable { .. } | NfsError::DeadlineExceeded { .. }
        ) || self.is_status(NfsStatus::JUKEBOX)
    }
}

pub type Result<T, E = NfsError> = std::result::Result<T, E>;

/// `NFS3ERR_NOENT` as `None`: for calls where a missing object is an answer, not a failure.
pub trait Found<T> {
    fn found(self) -> Result<Option<T>>;
}

impl<T> Found<T> for Result<T> {
    fn found(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_status(NfsStatus::NOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_have_protocol_names() {
        assert_eq!(NfsStatus::NOTEMPTY.name(), "NFS3ERR_NOTEMPTY");
        assert_eq!(NfsStatus::DQUOT.name(), "NFS3ERR_DQUOT");
        assert_eq!(NfsStatus(4242).name(), "NFS3ERR_UNKNOWN");
        let e = NfsError::Status {
            server: "10.0.0.1".into(),
            op: "MKDIR".into(),
            path: "a/b".into(),
            status: NfsStatus::EXIST,
        };
        assert_eq!(
            e.to_string(),
            "NFS server 10.0.0.1: MKDIR \"a/b\" failed: NFS3ERR_EXIST (17)"
        );
        assert!(e.is_status(NfsStatus::EXIST));
        assert!(!e.is_transient());
    }
}
