//! Directory operations of the NFS client: listing, removing trees, filesystem statistics.

use super::*;

impl NfsClient {
    /// All entries of directory `dir` except `.` and `..`, with handles (READDIRPLUS pages).
    pub(super) fn list(&self, s: &Arc<Session>, dir: &Fh, path: &str) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        let (mut cookie, mut verf) = (0u64, [0u8; 8]);
        loop {
            let mut e = Encoder::new();
            proto::enc_fh(&mut e, dir);
            e.u64(cookie).fixed(&verf).u32(16 * 1024).u32(CHUNK as u32);
            let r = self.nfs(s, Proc::Readdirplus, path, e)?;
            let (entries, v, eof) = self.xdr(
                Proc::Readdirplus,
                proto::dec_readdirplus(&mut Decoder::new(&r)),
            )?;
            verf = v;
            let progressed = !entries.is_empty();
            for ent in entries {
                cookie = ent.cookie;
                if ent.name == "." || ent.name == ".." {
                    continue;
                }
                let child = if path.is_empty() {
                    ent.name.clone()
                } else {
                    format!("{path}/{}", ent.name)
                };
                let (fh, attr) = match (ent.fh, ent.attr) {
                    (Some(fh), Some(a)) => (fh, a),
                    _ => {
                        let (fh, a) = self.lookup_in(s, dir, &ent.name, &child)?;
                        let a = match a {
                            Some(a) => a,
                            None => self.getattr(s, &fh, &child)?,
                        };
                        (fh, a)
                    }
                };
                out.push(Entry {
                    name: ent.name,
                    attr,
                    fh,
                });
            }
            if eof || !progressed {
                return Ok(out);
            }
        }
    }

    /// Names and attributes of the entries of directory `path` (`""` is the share root),
    /// without `.` and `..`, in the server's order.
    pub fn readdir(&self, path: &str) -> Result<Vec<(String, Attr)>> {
        let comps = components(path)?;
        self.with_session(|s| {
            let dir = self.walk_dir(s, &comps, path)?;
            Ok(self
                .list(s, &dir, path)?
                .into_iter()
                .map(|e| (e.name, e.attr))
                .collect())
        })
    }

    /// Empties directory `dir` depth first. Symlinks are removed, never followed.
    fn clear(&self, s: &Arc<Session>, dir: &Fh, path: &str, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(NfsError::Protocol {
                server: self.t.server.clone(),
                op: "remove_tree".into(),
                detail: format!("{path:?} is nested deeper than {MAX_DEPTH} directories"),
            });
        }
        for ent in self.list(s, dir, path)? {
            let child = if path.is_empty() {
                ent.name.clone()
            } else {
                format!("{path}/{}", ent.name)
            };
            if ent.attr.is_dir() {
                self.clear(s, &ent.fh, &child, depth + 1)?;
                self.remove_in(s, dir, &ent.name, &child, Proc::Rmdir)?;
            } else {
                self.remove_in(s, dir, &ent.name, &child, Proc::Remove)?;
            }
        }
        Ok(())
    }

    /// Removes `path` and everything below it, depth first; a symlink is removed itself, its
    /// target untouched. `false` when `path` was not there. Each RPC has its own deadline.
    pub fn remove_tree(&self, path: &str) -> Result<bool> {
        let (parent, name) = split_last(path)?;
        self.with_session(|s| {
            let dir = match self.walk_dir(s, &parent, &parent.join("/")) {
                Ok(d) => d,
                Err(e) if e.is_status(NfsStatus::NOENT) => return Ok(false),
                Err(e) => return Err(e),
            };
            let (fh, attr) = match self.lookup_in(s, &dir, name, path) {
                Ok((fh, Some(a))) => (fh, a),
                Ok((fh, None)) => {
                    let a = self.getattr(s, &fh, path)?;
                    (fh, a)
                }
                Err(e) if e.is_status(NfsStatus::NOENT) => return Ok(false),
                Err(e) => return Err(e),
            };
            if attr.is_dir() {
                self.clear(s, &fh, path, 0)?;
                self.remove_in(s, &dir, name, path, Proc::Rmdir)
            } else {
                self.remove_in(s, &dir, name, path, Proc::Remove)
            }
        })
    }

    /// Size and free space of the export.
    pub fn fsstat(&self) -> Result<FsStat> {
        self.with_session(|s| {
            let mut e = Encoder::new();
            proto::enc_fh(&mut e, &s.root);
            let r = self.nfs(s, Proc::Fsstat, "", e)?;
            self.xdr(Proc::Fsstat, proto::dec_fsstat(&mut Decoder::new(&r)))
        })
    }
}
