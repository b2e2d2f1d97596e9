//! Directory operations: listing page by page, removing trees, filesystem statistics.
//!
//! Memory does not grow with what a directory holds: removal and copies work one listing page
//! at a time (`PAGE_BYTES` of reply), and removal keeps only the fileids of the directories
//! above the one it empties, going back up with LOOKUP "..". Only `readdir`, for the driver's
//! own metadata directories, collects a whole listing.

use super::*;

/// Bytes of reply per listing page (and a quarter of it for names and cookies).
pub(super) const PAGE_BYTES: u32 = CHUNK as u32;

/// One page of a directory listing.
pub(super) struct Page {
    pub entries: Vec<Entry>,
    /// Where the next page starts: cookie and verifier.
    pub next: (u64, [u8; 8]),
    pub eof: bool,
}

impl dyn Proto + '_ {
    /// The page of `dir` after cookie `at` (0: the start) of at most `bytes` of reply, without
    /// `.` and `..`, every entry with its handle and attributes.
    pub(super) fn page(
        &self,
        dir: &Fh,
        path: &str,
        at: (u64, [u8; 8]),
        bytes: u32,
    ) -> Result<Page> {
        let (raw, verf, eof) = self.readdir(dir, at, bytes, path)?;
        let mut next = at.0;
        let mut entries = Vec::with_capacity(raw.len());
        for (name, cookie, found) in raw {
            next = cookie;
            if name == "." || name == ".." {
                continue;
            }
            let (fh, attr) = match found {
                Some(found) => found,
                None => self.lookup_attr_in(dir, &name, &join(path, &name))?,
            };
            entries.push(Entry {
                name,
                attr,
                fh,
                cookie,
            });
        }
        // A page that moved nothing forward ends the listing rather than loop.
        let eof = eof || next == at.0;
        Ok(Page {
            entries,
            next: (next, verf),
            eof,
        })
    }

    /// Empties directory `top` (fileid `top_id`) depth first: a directory's entries are removed,
    /// a non-empty subdirectory entered; an emptied directory is left through LOOKUP "..", whose
    /// fileid must be the one recorded on the way down (a tree moved while it is removed stops
    /// the removal rather than lead it outside). Symlinks are removed, never followed.
    fn clear(&self, top: &Fh, top_id: u64, path: &str) -> Result<()> {
        let (mut cur, mut cur_id) = (top.clone(), top_id);
        // Fileids of the directories above `cur`, up to `top`.
        let mut above: Vec<u64> = Vec::new();
        'dirs: loop {
            let mut at = (0, [0; 8]);
            loop {
                let page = self.page(&cur, path, at, PAGE_BYTES)?;
                let removed = !page.entries.is_empty();
                for ent in page.entries {
                    let is_dir = ent.attr.is_dir();
                    match self.remove(&cur, &ent.name, is_dir, path) {
                        Ok(_) => {}
                        Err(e) if is_dir && e.is_any(&[NfsStatus::NOTEMPTY, NfsStatus::EXIST]) => {
                            above.push(cur_id);
                            (cur, cur_id) = (ent.fh, ent.attr.fileid);
                            continue 'dirs;
                        }
                        Err(e) => return Err(e),
                    }
                }
                if page.eof {
                    break;
                }
                // Removing entries may move the others: list again from the start.
                at = if removed { (0, [0; 8]) } else { page.next };
            }
            let Some(parent_id) = above.pop() else {
                return Ok(());
            };
            let (parent, attr) = self.lookup_attr_in(&cur, "..", path)?;
            if attr.fileid != parent_id {
                return Err(self.ep().protocol("remove_tree", format!(
                    "{path:?}: a directory was moved while its tree was removed (\"..\" is fileid {}, not {parent_id}); nothing above it was touched", attr.fileid
                )));
            }
            (cur, cur_id) = (parent, attr.fileid);
        }
    }
}

impl NfsClient {
    /// Names and attributes of the entries of directory `path`, without `.` and `..`. Collects
    /// the whole listing: for the driver's own metadata directories, never a volume's content.
    pub fn readdir(&self, path: &str) -> Result<Vec<(String, Attr)>> {
        let comps = components(path)?;
        self.with_session(|s| {
            let dir = s.walk_dir(&comps, path)?;
            let mut out = Vec::new();
            let mut at = (0, [0; 8]);
            loop {
                let page = s.page(&dir, path, at, PAGE_BYTES)?;
                out.extend(page.entries.into_iter().map(|e| (e.name, e.attr)));
                if page.eof {
                    return Ok(out);
                }
                at = page.next;
            }
        })
    }

    /// Removes `path` and everything below it (symlinks themselves, never their targets);
    /// `false` when it was not there. For the driver's own directories; a volume's directory
    /// goes with `remove_tree_if`.
    pub fn remove_tree(&self, path: &str) -> Result<bool> {
        self.remove_tree_if(path, None).map(|g| g == Guarded::Done)
    }

    /// Like `remove_tree`, but given `handle`, only when `path` is the object whose handle that
    /// is (see `handle_of`): another object there is `Foreign` and left untouched.
    pub fn remove_tree_if(&self, path: &str, handle: Option<&str>) -> Result<Guarded> {
        let (parent, name) = split_last(path)?;
        self.with_session(|s| {
            let Some(dir) = s.parent_dir(&parent).found()? else {
                return Ok(Guarded::Absent);
            };
            let Some((fh, attr)) = s.lookup_attr_in(&dir, name, path).found()? else {
                return Ok(Guarded::Absent);
            };
            if handle.is_some_and(|h| h != fh.to_hex()) {
                return Ok(Guarded::Foreign);
            }
            if attr.is_dir() {
                s.clear(&fh, attr.fileid, path)?;
            }
            Ok(if s.remove(&dir, name, attr.is_dir(), path)? {
                Guarded::Done
            } else {
                Guarded::Absent
            })
        })
    }

    pub fn fsstat(&self) -> Result<FsStat> {
        self.with_session(|s| s.fsstat())
    }
}

pub(super) fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}
