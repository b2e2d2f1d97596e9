//! Errors of the NFS client. Every variant names the server, so a caller juggling several
//! servers can tell which one failed without context of its own.

use std::fmt;

/// An NFS status: nfsstat3 (RFC 1813 section 2.6), mountstat3 (which shares the numbers it has
/// in common with nfsstat3) or nfsstat4 (RFC 8881 section 15, which keeps nfsstat3's numbers for
/// the errors both have: NOENT, EXIST, NOTEMPTY, STALE, DELAY = JUKEBOX, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NfsStatus(pub u32);

impl NfsStatus {
    pub const OK: NfsStatus = NfsStatus(0);
    pub const PERM: NfsStatus = NfsStatus(1);
    pub const NOENT: NfsStatus = NfsStatus(2);
    pub const ACCES: NfsStatus = NfsStatus(13);
    pub const EXIST: NfsStatus = NfsStatus(17);
    pub const NOTDIR: NfsStatus = NfsStatus(20);
    pub const ISDIR: NfsStatus = NfsStatus(21);
    pub const NOSPC: NfsStatus = NfsStatus(28);
    pub const ROFS: NfsStatus = NfsStatus(30);
    pub const NOTEMPTY: NfsStatus = NfsStatus(66);
    pub const DQUOT: NfsStatus = NfsStatus(69);
    pub const STALE: NfsStatus = NfsStatus(70);
    pub const JUKEBOX: NfsStatus = NfsStatus(10008);
    /// NFS4ERR_DELAY: the same number as JUKEBOX.
    pub const DELAY: NfsStatus = NfsStatus(10008);
    pub const GRACE: NfsStatus = NfsStatus(10013);
    pub const STALE_CLIENTID: NfsStatus = NfsStatus(10022);
    pub const BADSESSION: NfsStatus = NfsStatus(10052);
    pub const SEQ_MISORDERED: NfsStatus = NfsStatus(10063);
    pub const DEADSESSION: NfsStatus = NfsStatus(10078);
    pub const COMPLETE_ALREADY: NfsStatus = NfsStatus(10054);

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

    /// The NFSv4 name of the status, `NFS4ERR_<NAME>`: nfsstat4 keeps the names of the
    /// numbers it shares with nfsstat3, save those it renamed or dropped.
    pub fn name_v4(self) -> String {
        let v4 = match self.0 {
            0 => "NFS4_OK",
            13 => "NFS4ERR_ACCESS",
            10003 => "NFS4ERR_BAD_COOKIE",
            10008 => "NFS4ERR_DELAY",
            10009 => "NFS4ERR_SAME",
            10010 => "NFS4ERR_DENIED",
            10011 => "NFS4ERR_EXPIRED",
            10012 => "NFS4ERR_LOCKED",
            10013 => "NFS4ERR_GRACE",
            10014 => "NFS4ERR_FHEXPIRED",
            10015 => "NFS4ERR_SHARE_DENIED",
            10016 => "NFS4ERR_WRONGSEC",
            10017 => "NFS4ERR_CLID_INUSE",
            10019 => "NFS4ERR_MOVED",
            10020 => "NFS4ERR_NOFILEHANDLE",
            10021 => "NFS4ERR_MINOR_VERS_MISMATCH",
            10022 => "NFS4ERR_STALE_CLIENTID",
            10023 => "NFS4ERR_STALE_STATEID",
            10024 => "NFS4ERR_OLD_STATEID",
            10025 => "NFS4ERR_BAD_STATEID",
            10026 => "NFS4ERR_BAD_SEQID",
            10029 => "NFS4ERR_SYMLINK",
            10032 => "NFS4ERR_ATTRNOTSUPP",
            10036 => "NFS4ERR_BADXDR",
            10038 => "NFS4ERR_OPENMODE",
            10039 => "NFS4ERR_BADOWNER",
            10041 => "NFS4ERR_BADNAME",
            10044 => "NFS4ERR_OP_ILLEGAL",
            10052 => "NFS4ERR_BADSESSION",
            10053 => "NFS4ERR_BADSLOT",
            10054 => "NFS4ERR_COMPLETE_ALREADY",
            10055 => "NFS4ERR_CONN_NOT_BOUND_TO_SESSION",
            10063 => "NFS4ERR_SEQ_MISORDERED",
            10064 => "NFS4ERR_SEQUENCE_POS",
            10066 => "NFS4ERR_REP_TOO_BIG",
            10071 => "NFS4ERR_OP_NOT_IN_SESSION",
            10078 => "NFS4ERR_DEADSESSION",
            19 | 71 | 10002 => "NFS4ERR_UNKNOWN", // NODEV, REMOTE, NOT_SYNC: NFSv3 only
            _ => return self.name().replace("NFS3ERR_", "NFS4ERR_"),
        };
        v4.to_string()
    }

    /// The name in the protocol version that answered it.
    pub fn describe(self, v4: bool) -> String {
        let name = if v4 {
            self.name_v4()
        } else {
            self.name().into()
        };
        format!("{name} ({})", self.0)
    }
}

impl fmt::Display for NfsStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum NfsError {
    /// The server could not be reached: connection refused or reset, no route, or portmap has no
    /// TCP mapping for the program.
    #[error("NFS server {server} unavailable: {cause}")]
    Unavailable { server: String, cause: String },
    /// The server accepted the connection (or did not refuse it) but did not answer in time.
    #[error("NFS server {server} did not answer {op} within the deadline")]
    DeadlineExceeded { server: String, op: String },
    /// The server answered with an error status (`v4`: an NFSv4 server, whose names differ).
    #[error("NFS server {server}: {op} {path:?} failed: {}", .status.describe(*.v4))]
    Status {
        server: String,
        op: String,
        path: String,
        status: NfsStatus,
        v4: bool,
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

    /// True when the server answered with one of `set`.
    pub fn is_any(&self, set: &[NfsStatus]) -> bool {
        self.status().is_some_and(|s| set.contains(&s))
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
            v4: false,
        };
        assert_eq!(
            e.to_string(),
            "NFS server 10.0.0.1: MKDIR \"a/b\" failed: NFS3ERR_EXIST (17)"
        );
        assert!(e.is_status(NfsStatus::EXIST));
        assert!(!e.is_transient());
        assert_eq!(NfsStatus::GRACE.name_v4(), "NFS4ERR_GRACE");
        assert_eq!(NfsStatus::NOTEMPTY.name_v4(), "NFS4ERR_NOTEMPTY");
        assert_eq!(NfsStatus::DELAY.describe(true), "NFS4ERR_DELAY (10008)");
        assert_eq!(NfsStatus(4242).name_v4(), "NFS4ERR_UNKNOWN");
    }
}
