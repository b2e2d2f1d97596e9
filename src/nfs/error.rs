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

    /// The protocol's name for the status, `NFS3ERR_<NAME>` or (`v4`) `NFS4ERR_<NAME>`: nfsstat4
    /// keeps the names of the numbers it shares with nfsstat3, save those it renamed
    /// (`V4_NAMES`) or dropped (NODEV, REMOTE, NOT_SYNC: NFSv3 only).
    pub fn name(self, v4: bool) -> String {
        let (prefix, ok) = match v4 {
            true => ("NFS4ERR_", "NFS4_OK"),
            false => ("NFS3ERR_", "NFS3_OK"),
        };
        let dropped = v4 && [19, 71, 10002].contains(&self.0);
        let v3 = || find(V3_NAMES, self.0).filter(|_| !dropped);
        match v4.then(|| find(V4_NAMES, self.0)).flatten().or_else(v3) {
            _ if self.0 == 0 => ok.to_string(),
            Some(name) => format!("{prefix}{name}"),
            None => format!("{prefix}UNKNOWN"),
        }
    }

    /// The name in the protocol version that answered it.
    pub fn describe(self, v4: bool) -> String {
        format!("{} ({})", self.name(v4), self.0)
    }
}

/// nfsstat3 names by number, `NFS3ERR_` left out.
const V3_NAMES: &str = "1 PERM 2 NOENT 5 IO 6 NXIO 13 ACCES 17 EXIST 18 XDEV 19 NODEV 20 NOTDIR \
    21 ISDIR 22 INVAL 27 FBIG 28 NOSPC 30 ROFS 31 MLINK 63 NAMETOOLONG 66 NOTEMPTY 69 DQUOT \
    70 STALE 71 REMOTE 10001 BADHANDLE 10002 NOT_SYNC 10003 BAD_COOKIE 10004 NOTSUPP \
    10005 TOOSMALL 10006 SERVERFAULT 10007 BADTYPE 10008 JUKEBOX";

/// nfsstat4 names where they differ from nfsstat3's or nfsstat3 has none, `NFS4ERR_` left out.
const V4_NAMES: &str = "13 ACCESS 10008 DELAY 10009 SAME 10010 DENIED 10011 EXPIRED \
    10012 LOCKED 10013 GRACE 10014 FHEXPIRED 10015 SHARE_DENIED 10016 WRONGSEC \
    10017 CLID_INUSE 10019 MOVED 10020 NOFILEHANDLE 10021 MINOR_VERS_MISMATCH \
    10022 STALE_CLIENTID 10023 STALE_STATEID 10024 OLD_STATEID 10025 BAD_STATEID \
    10026 BAD_SEQID 10029 SYMLINK 10032 ATTRNOTSUPP 10036 BADXDR 10038 OPENMODE 10039 BADOWNER \
    10041 BADNAME 10044 OP_ILLEGAL 10052 BADSESSION 10053 BADSLOT 10054 COMPLETE_ALREADY \
    10055 CONN_NOT_BOUND_TO_SESSION 10063 SEQ_MISORDERED 10064 SEQUENCE_POS 10066 REP_TOO_BIG \
    10071 OP_NOT_IN_SESSION 10078 DEADSESSION";

/// The name of `n` in a table of "number name" pairs.
fn find(table: &'static str, n: u32) -> Option<&'static str> {
    let words: Vec<&str> = table.split_whitespace().collect();
    let pair = words.chunks(2).find(|w| w[0].parse() == Ok(n));
    pair.map(|w| w[1])
}

impl fmt::Display for NfsStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(false))
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
    /// A tree copy stopped because its caller asked it to.
    #[error("NFS server {server}: copy of {path:?} cancelled")]
    Cancelled { server: String, path: String },
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
        assert_eq!(NfsStatus::NOTEMPTY.name(false), "NFS3ERR_NOTEMPTY");
        assert_eq!(NfsStatus::DQUOT.name(false), "NFS3ERR_DQUOT");
        assert_eq!(NfsStatus(4242).name(false), "NFS3ERR_UNKNOWN");
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
        assert_eq!(NfsStatus::GRACE.name(true), "NFS4ERR_GRACE");
        assert_eq!(NfsStatus::NOTEMPTY.name(true), "NFS4ERR_NOTEMPTY");
        assert_eq!(NfsStatus::DELAY.describe(true), "NFS4ERR_DELAY (10008)");
        assert_eq!(NfsStatus(4242).name(true), "NFS4ERR_UNKNOWN");
    }
}
