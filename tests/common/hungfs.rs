//! A FUSE filesystem whose statfs can be made to never answer: the stand-in for the mount of a
//! hung NFS server on a kernel without an NFS client. The mount table names it by its fsname
//! (`server:/export`), as it names an NFS mount by its source. It counts the statfs requests
//! the kernel sends it, so a test can tell whether the driver made a new kernel call.
//! Needs root and /dev/fuse.

#![allow(dead_code)]

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, INodeNo,
    MountOption, ReplyAttr, ReplyStatfs, Request,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

/// What the healthy statfs answers: 1000 blocks of 4 KiB, 400 available; 100 inodes, 30 free.
pub const BLOCKS: u64 = 1000;
pub const BLOCKS_AVAILABLE: u64 = 400;
pub const BLOCK_SIZE: u32 = 4096;
pub const INODES: u64 = 100;
pub const INODES_FREE: u64 = 30;

#[derive(Default)]
struct Shared {
    hang: AtomicBool,
    statfs_calls: AtomicUsize,
    /// Requests held unanswered while hanging (dropping a reply would answer EIO).
    held: Mutex<Vec<ReplyStatfs>>,
}

struct Fs(Arc<Shared>);

const ROOT_ATTR: FileAttr = FileAttr {
    ino: INodeNo::ROOT,
    size: 0,
    blocks: 0,
    atime: UNIX_EPOCH,
    mtime: UNIX_EPOCH,
    ctime: UNIX_EPOCH,
    crtime: UNIX_EPOCH,
    kind: FileType::Directory,
    perm: 0o755,
    nlink: 2,
    uid: 0,
    gid: 0,
    rdev: 0,
    flags: 0,
    blksize: 4096,
};

impl Filesystem for Fs {
    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino == INodeNo::ROOT {
            reply.attr(&Duration::from_secs(3600), &ROOT_ATTR);
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.0.statfs_calls.fetch_add(1, Ordering::SeqCst);
        if self.0.hang.load(Ordering::SeqCst) {
            self.0.held.lock().unwrap().push(reply);
        } else {
            answer(reply);
        }
    }
}

fn answer(reply: ReplyStatfs) {
    reply.statfs(
        BLOCKS,
        BLOCKS_AVAILABLE,
        BLOCKS_AVAILABLE,
        INODES,
        INODES_FREE,
        BLOCK_SIZE,
        255,
        BLOCK_SIZE,
    );
}

/// The mounted filesystem. Dropping it answers every held request, aborts the FUSE connection
/// and detaches the mount, so no thread stays stuck in it.
pub struct HungFs {
    shared: Arc<Shared>,
    path: PathBuf,
    session: Option<BackgroundSession>,
}

impl HungFs {
    /// Mounts at `path` (created if missing) with `fsname` as the mount table's source; statfs
    /// hangs from the start.
    pub fn mount(path: &Path, fsname: &str) -> HungFs {
        std::fs::create_dir_all(path).unwrap();
        let shared = Arc::new(Shared::default());
        shared.hang.store(true, Ordering::SeqCst);
        let mut cfg = Config::default();
        cfg.mount_options = vec![MountOption::FSName(fsname.to_string())];
        let session = fuser::spawn_mount(Fs(shared.clone()), path, &cfg)
            .unwrap_or_else(|e| panic!("FUSE mount at {}: {e}", path.display()));
        HungFs {
            shared,
            path: path.to_path_buf(),
            session: Some(session),
        }
    }

    /// statfs requests the kernel sent so far.
    pub fn statfs_calls(&self) -> usize {
        self.shared.statfs_calls.load(Ordering::SeqCst)
    }

    /// Requests waiting for an answer now.
    pub fn held(&self) -> usize {
        self.shared.held.lock().unwrap().len()
    }

    /// Answers the oldest held request alone; later ones still hang.
    pub fn answer_one(&self) {
        let mut held = self.shared.held.lock().unwrap();
        assert!(!held.is_empty(), "no statfs request is waiting");
        answer(held.remove(0));
    }

    /// The server comes back: answers every held request and all later ones at once.
    pub fn recover(&self) {
        self.shared.hang.store(false, Ordering::SeqCst);
        for reply in self.shared.held.lock().unwrap().drain(..) {
            answer(reply);
        }
    }

    /// The FUSE connection's number in /sys/fs/fuse/connections: the minor of its device.
    fn connection(&self) -> Option<String> {
        let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let me = self.path.to_str()?;
        table.lines().rev().find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.get(4) == Some(&me)).then(|| f[2].split(':').nth(1).map(str::to_string))?
        })
    }
}

impl Drop for HungFs {
    fn drop(&mut self) {
        self.recover();
        if let Some(n) = self.connection() {
            let abort = Path::new("/sys/fs/fuse/connections").join(n).join("abort");
            let _ = std::fs::write(abort, "1");
        }
        // Dropping the session detaches the mount (umount2 MNT_DETACH) without waiting for
        // its thread, which ends once the connection is gone.
        drop(self.session.take());
    }
}
