//! Protocol-neutral shapes the client's callers and both protocol versions share.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// RFC 1813, through portmap and MOUNT3.
    V3,
    /// RFC 8881, on the NFS port alone (2049 unless told otherwise).
    V41,
}

impl Version {
    /// How StorageClasses and records spell it: `3` or `4.1`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V3 => "3",
            Version::V41 => "4.1",
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which version a client uses: one, or `Auto` (NFSv4.1 when the server serves the share so,
/// else NFSv3; decided at the client's first call that reaches the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Want {
    Only(Version),
    #[default]
    Auto,
}

/// A file handle (at most 64 bytes in NFSv3, 128 in NFSv4; they differ between versions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fh(pub Vec<u8>);

impl crate::nfs::xdr::Xdr for Fh {
    fn enc(&self, e: &mut crate::nfs::xdr::Encoder) {
        e.opaque(&self.0);
    }
}

impl Fh {
    /// The handle as lowercase hex: how records keep a directory's identity. Unlike a fileid,
    /// a handle is not reused when the object goes (RFC 1813 asks for persistent handles; Linux
    /// and nfs-ganesha put the inode generation in it).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

pub const NAME_MAX: usize = 255;
/// Largest READ reply accepted.
pub const IO_MAX: usize = 1 << 20;

/// File type (ftype3, nfs_ftype4: the numbers agree for the types named here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileType {
    #[default]
    Regular,
    Directory,
    Symlink,
    /// Block/char device, socket, fifo: carries the ftype3 number.
    Other(u32),
}

impl FileType {
    pub fn from_wire(n: u32) -> FileType {
        match n {
            1 => FileType::Regular,
            2 => FileType::Directory,
            5 => FileType::Symlink,
            n => FileType::Other(n),
        }
    }
}

/// An owner or group the server named (`user@domain`) instead of numbering: NFSv4 without
/// numeric owners. Never a real id (it is chown's "leave unchanged").
pub const UNKNOWN_ID: u32 = u32::MAX;

/// The attributes callers need, from fattr3 or fattr4.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attr {
    pub kind: FileType,
    /// Permission bits (mode & 0o7777).
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub fileid: u64,
    /// Modification time: seconds since the epoch, nanoseconds.
    pub mtime: u32,
    pub mtime_nsec: u32,
}

impl Attr {
    pub fn is_dir(&self) -> bool {
        self.kind == FileType::Directory
    }
}

/// Attributes to change (sattr3); `None` leaves a field as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// Space on the export (FSSTAT, or the space_* attributes of NFSv4), in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsStat {
    pub total: u64,
    pub free: u64,
    /// Free to the calling user (what quotas and reserved blocks leave).
    pub avail: u64,
}

/// createmode3 / createmode4; Exclusive's verifier makes a retransmitted create succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateHow {
    Guarded(u32),
    Exclusive([u8; 8]),
}

/// Every settable attribute a copy carries over (sattr3 in full, or its fattr4 equivalents);
/// a copy that skipped zero chunks sets the size last.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FullAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub mtime: Option<(u32, u32)>,
}

impl FullAttr {
    pub fn mode(mode: u32) -> FullAttr {
        FullAttr {
            mode: Some(mode),
            ..FullAttr::default()
        }
    }
}

/// One directory entry (READDIRPLUS, or READDIR with attributes and handle): name, cookie, and
/// the handle and attributes when the server sent both.
pub type DirEntry = (String, u64, Option<(Fh, Attr)>);
