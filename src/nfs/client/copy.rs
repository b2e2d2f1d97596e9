//! Copying a directory tree within one export by READ and WRITE through this client: the NFS
//! backend's snapshots and clones. NFSv3 and NFSv4.1 have no COPY or CLONE (NFSv4.2 has, and
//! nfs-ganesha implements neither), so every byte crosses the wire twice.
//!
//! Kept: the tree's shape, file content, mode (setuid/setgid/sticky too), owner and group of
//! everything, modification times of files and directories, hard links inside the tree (a
//! fileid seen again becomes a LINK to the first copy, for up to `MAX_LINKED` files), symlinks
//! as links (READLINK + SYMLINK, never followed). Lost: extended attributes and ACLs (this
//! client carries neither), holes (all-zero chunks are not written and the length is set last,
//! so they become holes again where the server makes sparse files), access and change times,
//! and device nodes, FIFOs and sockets (skipped and counted: fattr3 does not carry device
//! numbers reliably enough for MKNOD).
//!
//! Not atomic: files changed meanwhile may be copied old, new or mixed. Cancellable between
//! chunks; a failure leaves the partial destination to the caller, which owns it. Data is
//! written UNSTABLE and committed per file; a COMMIT verifier that differs from the writes'
//! (the server restarted and may have lost them) fails the copy.

use super::dirs::{join, PAGE_BYTES};
use super::*;
use crate::nfs::types::UNKNOWN_ID;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize};

/// Bytes per READ/WRITE of a copy: few round trips; 1 MiB is the most common servers accept
/// (nfs-ganesha's default MaxRead/MaxWrite).
const COPY_CHUNK: u32 = 1 << 20;
const UNSTABLE: u32 = 0;
/// Files of one directory copied at once: small files cost round trips, not bandwidth, and the
/// server serves concurrent requests on the client's pooled connections.
const PARALLEL_FILES: usize = 8;
/// Multiply-linked files whose copies are remembered for LINKs (about 100 bytes each); past
/// this, further names become copies of their own, so memory stays bounded.
const MAX_LINKED: usize = 100_000;

/// What a tree copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyStats {
    pub dirs: u64,
    pub files: u64,
    pub symlinks: u64,
    /// Names that became a LINK to a file already copied.
    pub hard_links: u64,
    /// Device nodes, FIFOs and sockets, which an NFSv3 copy cannot recreate.
    pub skipped: u64,
    pub bytes: u64,
}

struct Copier<'a> {
    s: Sess<'a>,
    cancel: &'a AtomicBool,
    /// Source fileid -> handle of its copy, for files with more than one link.
    links: HashMap<u64, Fh>,
    stats: CopyStats,
}

impl NfsClient {
    /// Copies the content of directory `from` into the existing, empty directory `to`, then
    /// gives `to` the mode, owner and mtime of `from`. `NfsError::Cancelled` soon after `cancel`
    /// becomes true. No retry on a stale handle: the caller removes the partial copy and retries.
    pub fn copy_dir_contents(
        &self,
        from: &str,
        to: &str,
        cancel: &AtomicBool,
    ) -> Result<CopyStats> {
        self.copy_dir_contents_if(from, None, to, cancel)
            .map(|s| s.expect("an unguarded copy always finds its source"))
    }

    /// Like `copy_dir_contents`, but given `from_handle`, only when `from` is the directory
    /// whose handle that is (see `handle_of`): `None`, copying nothing, when it is absent or
    /// another.
    pub fn copy_dir_contents_if(
        &self,
        from: &str,
        from_handle: Option<&str>,
        to: &str,
        cancel: &AtomicBool,
    ) -> Result<Option<CopyStats>> {
        let fc = components(from)?;
        let tc = components(to)?;
        let s = self.session()?;
        let (src, src_attr) = match s.walk_attr(&fc, from) {
            Err(e) if from_handle.is_some() && e.is_status(NfsStatus::NOENT) => return Ok(None),
            found => found?,
        };
        if from_handle.is_some_and(|h| h != src.to_hex()) {
            return Ok(None);
        }
        if !src_attr.is_dir() {
            return Err(s.status("LOOKUP", from, NfsStatus::NOTDIR));
        }
        let dst = s.walk_dir(&tc, to)?;
        let mut cp = Copier::new(s, cancel);
        cp.tree(src, dst.clone(), from, to)?;
        cp.set_attr(&dst, &src_attr, to)?;
        Ok(Some(cp.stats))
    }
}

/// A directory being copied, with where its listing of subdirectories resumes: one per level of
/// the tree (paths are kept once, for the whole descent), never a listing.
struct Level {
    src: Fh,
    dst: Fh,
    /// Given to the copy after its children (`None`: the top, which the caller sets).
    attr: Option<Attr>,
    /// The listing's cookie and verifier.
    at: (u64, [u8; 8]),
    /// Lengths of the paths of the level above, to cut back to when done.
    parent_lens: (usize, usize),
}

/// Reply bytes per page when looking for the next subdirectory: small, as the page is read
/// again after each subdirectory copied.
const DIR_PAGE_BYTES: u32 = 4096;

impl<'a> Copier<'a> {
    fn new(s: Sess<'a>, cancel: &'a AtomicBool) -> Self {
        Copier {
            s,
            cancel,
            links: HashMap::new(),
            stats: CopyStats::default(),
        }
    }

    fn check_cancel(&self, path: &str) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(NfsError::Cancelled {
                server: self.s.ep().server.clone(),
                path: path.to_string(),
            });
        }
        Ok(())
    }

    /// Copies the tree below `src` into `dst`, depth first on an explicit stack (any depth), one
    /// listing page at a time: a directory's other entries as it is entered, then its
    /// subdirectories, each resuming the listing at the cookie of the one before.
    fn tree(&mut self, src: Fh, dst: Fh, from: &str, to: &str) -> Result<()> {
        let (mut from, mut to) = (from.to_string(), to.to_string());
        self.check_cancel(&from)?;
        self.entries(&src, &dst, &from, &to)?;
        let mut stack = vec![Level {
            src,
            dst,
            attr: None,
            at: (0, [0; 8]),
            parent_lens: (from.len(), to.len()),
        }];
        while let Some(top) = stack.last_mut() {
            self.check_cancel(&from)?;
            match self.next_subdir(top, &from)? {
                Some(ent) => {
                    let lens = (from.len(), to.len());
                    (from, to) = (join(&from, &ent.name), join(&to, &ent.name));
                    let (made, fh) = self.s.mkdir_in(&top.dst, &ent.name, 0o700, &to)?;
                    if made == Outcome::Existed {
                        return Err(self.s.status("MKDIR", &to, NfsStatus::EXIST));
                    }
                    self.check_cancel(&from)?;
                    self.entries(&ent.fh, &fh, &from, &to)?;
                    stack.push(Level {
                        src: ent.fh,
                        dst: fh,
                        attr: Some(ent.attr),
                        at: (0, [0; 8]),
                        parent_lens: lens,
                    });
                }
                None => {
                    let done = stack.pop().expect("a level");
                    if let Some(a) = &done.attr {
                        // After the children: creating them changed the directory's mtime.
                        self.set_attr(&done.dst, a, &to)?;
                        self.stats.dirs += 1;
                    }
                    from.truncate(done.parent_lens.0);
                    to.truncate(done.parent_lens.1);
                }
            }
        }
        Ok(())
    }

    /// The next subdirectory of `level` after its cookie, which then points past it.
    fn next_subdir(&self, level: &mut Level, from: &str) -> Result<Option<Entry>> {
        loop {
            let page = self.s.page(&level.src, from, level.at, DIR_PAGE_BYTES)?;
            if let Some(ent) = page.entries.into_iter().find(|e| e.attr.is_dir()) {
                level.at = (ent.cookie, page.next.1);
                return Ok(Some(ent));
            }
            if page.eof {
                return Ok(None);
            }
            level.at = page.next;
        }
    }

    /// Copies what directory `src` holds besides subdirectories into `dst`.
    fn entries(&mut self, src: &Fh, dst: &Fh, from: &str, to: &str) -> Result<()> {
        let mut at = (0, [0; 8]);
        loop {
            let page = self.s.page(src, from, at, PAGE_BYTES)?;
            // Files with one link go in parallel; a file with several goes alone, so the first
            // of its names is copied before the others become LINKs to it.
            let (single, rest): (Vec<&Entry>, Vec<&Entry>) = page
                .entries
                .iter()
                .filter(|e| !e.attr.is_dir())
                .partition(|e| e.attr.kind == FileType::Regular && e.attr.nlink <= 1);
            self.files(&single, dst, from, to)?;
            for ent in rest {
                self.check_cancel(from)?;
                let (sp, dp) = (join(from, &ent.name), join(to, &ent.name));
                match ent.attr.kind {
                    FileType::Regular => self.file(ent, dst, &sp, &dp)?,
                    FileType::Symlink => self.symlink(ent, dst, &dp)?,
                    FileType::Directory => {}
                    FileType::Other(kind) => {
                        tracing::warn!(server = %self.s.ep().server, path = %sp, ftype = kind,
                            "special file not copied (NFSv3 copies keep files, directories and symlinks)");
                        self.stats.skipped += 1;
                    }
                }
            }
            if page.eof {
                return Ok(());
            }
            at = page.next;
        }
    }

    /// Copies `batch` (files with one link) into `dir` on up to PARALLEL_FILES threads; the first
    /// failure stops the others at their next file.
    fn files(&mut self, batch: &[&Entry], dir: &Fh, from: &str, to: &str) -> Result<()> {
        let next = AtomicUsize::new(0);
        let workers = PARALLEL_FILES.min(batch.len());
        let (s, cancel) = (&self.s, self.cancel);
        let work = || {
            let mut w = Copier::new(s.clone(), cancel);
            while let Some(e) = batch.get(next.fetch_add(1, Ordering::Relaxed)) {
                w.check_cancel(from)?;
                if let Err(err) = w.file(e, dir, &join(from, &e.name), &join(to, &e.name)) {
                    next.store(batch.len(), Ordering::Relaxed);
                    return Err(err);
                }
            }
            Ok(w.stats)
        };
        let done: Vec<Result<CopyStats>> = if workers <= 1 {
            vec![work()]
        } else {
            std::thread::scope(|sc| {
                let handles: Vec<_> = (0..workers).map(|_| sc.spawn(work)).collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("copy worker panicked"))
                    .collect()
            })
        };
        for st in done {
            let st = st?;
            self.stats.files += st.files;
            self.stats.bytes += st.bytes;
        }
        Ok(())
    }

    fn file(&mut self, ent: &Entry, dir: &Fh, from: &str, to: &str) -> Result<()> {
        if ent.attr.nlink > 1 {
            if let Some(first) = self.links.get(&ent.attr.fileid) {
                self.s.link(first, dir, &ent.name, to)?;
                self.stats.hard_links += 1;
                return Ok(());
            }
        }
        self.numeric_owner(&ent.attr, from)?;
        // Private until its attributes are set: nobody reads a half-made copy through it.
        let dst = self
            .s
            .create(dir, &ent.name, CreateHow::Guarded(0o600), to)?;
        let src = (self.s.open(&ent.fh, from)).inspect_err(|_| _ = self.s.close(&dst))?;
        let copied = self.data(&src, &dst);
        let closed = self.s.close(&src).and(self.s.close(&dst));
        let len = copied?;
        closed?;
        let fh = dst.fh;
        let attr = FullAttr {
            size: Some(len),
            ..full_attr(&ent.attr)
        };
        self.set_full(&fh, &attr, to)?;
        if ent.attr.nlink > 1 && self.links.len() < MAX_LINKED {
            self.links.insert(ent.attr.fileid, fh);
        }
        self.stats.files += 1;
        crate::failpoint::hit("nfs-copy:after-file");
        Ok(())
    }

    /// Copies the bytes of `src` into `dst`, but all-zero chunks; returns the length read.
    fn data(&mut self, src: &File, dst: &File) -> Result<u64> {
        let (from, to) = (&src.path, &dst.path);
        let mut off = 0u64;
        let mut verf: Option<[u8; 8]> = None;
        loop {
            self.check_cancel(from)?;
            let (data, eof) = self.s.read(src, off, COPY_CHUNK)?;
            if data.is_empty() {
                break;
            }
            if data.iter().any(|&b| b != 0) {
                let mut done = 0usize;
                while done < data.len() {
                    let at = off + done as u64;
                    let (n, _, v) = self.s.write(dst, at, UNSTABLE, &data[done..])?;
                    if n == 0 {
                        let why = format!("server wrote 0 bytes of {to:?}");
                        return Err(self.s.ep().protocol("WRITE", why));
                    }
                    self.same_verifier(&mut verf, v, to)?;
                    done += n as usize;
                }
            }
            off += data.len() as u64;
            self.stats.bytes += data.len() as u64;
            if eof {
                break;
            }
        }
        if verf.is_some() {
            let v = self.s.commit(dst)?;
            self.same_verifier(&mut verf, v, to)?;
        }
        Ok(off)
    }

    fn same_verifier(&self, seen: &mut Option<[u8; 8]>, v: [u8; 8], path: &str) -> Result<()> {
        match seen.get_or_insert(v) {
            s if *s == v => Ok(()),
            _ => Err(self.s.ep().protocol("COMMIT", format!(
                "the server restarted while {path:?} was written (write verifier changed); unstable data may be lost"
            ))),
        }
    }

    fn symlink(&mut self, ent: &Entry, dir: &Fh, to: &str) -> Result<()> {
        self.numeric_owner(&ent.attr, to)?;
        let target = self.s.readlink(&ent.fh, to)?;
        let attr = FullAttr {
            uid: Some(ent.attr.uid),
            gid: Some(ent.attr.gid),
            ..Default::default()
        };
        // Some servers ignore the owner in SYMLINK's attributes: set it on the link itself
        // (SETATTR acts on the link, as lchown does) when it was not applied.
        let (fh, made) = self.s.make(dir, &ent.name, Some(&target), &attr, to)?;
        if let (Some(fh), Some(made)) = (fh, made) {
            if (made.uid, made.gid) != (ent.attr.uid, ent.attr.gid) {
                self.set_full(&fh, &attr, to)?;
            }
        }
        self.stats.symlinks += 1;
        Ok(())
    }

    /// A named owner (NFSv4 without numeric owners) cannot be kept: stop rather than give the
    /// copy another owner.
    fn numeric_owner(&self, a: &Attr, path: &str) -> Result<()> {
        if a.uid == UNKNOWN_ID || a.gid == UNKNOWN_ID {
            let why = format!("{path:?}: {}", v4::attr::NAMED_OWNERS);
            return Err(self.s.ep().protocol("copy", why));
        }
        Ok(())
    }

    fn set_attr(&self, fh: &Fh, a: &Attr, path: &str) -> Result<()> {
        self.numeric_owner(a, path)?;
        self.set_full(fh, &full_attr(a), path)
    }

    fn set_full(&self, fh: &Fh, a: &FullAttr, path: &str) -> Result<()> {
        // A change of owner clears setuid/setgid (the server's chown does, as the kernel's
        // does), and servers apply mode before owner: give such a mode in a second SETATTR.
        if a.mode.is_some_and(|m| m & 0o6000 != 0) && (a.uid.is_some() || a.gid.is_some()) {
            let owner = FullAttr {
                mode: None,
                mtime: None,
                ..*a
            };
            self.s.setattr(fh, &owner, path)?;
            let then = FullAttr {
                mode: a.mode,
                mtime: a.mtime,
                ..Default::default()
            };
            return self.s.setattr(fh, &then, path);
        }
        self.s.setattr(fh, a, path)
    }
}

/// The attributes a copy gives its copy of an object with attributes `a`.
fn full_attr(a: &Attr) -> FullAttr {
    FullAttr {
        mode: Some(a.mode),
        uid: Some(a.uid),
        gid: Some(a.gid),
        size: None,
        mtime: Some((a.mtime, a.mtime_nsec)),
    }
}
