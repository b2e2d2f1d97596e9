//! File I/O as NFSv4.1 compounds: OPEN (asking for no delegation, returning one granted
//! anyway), READ, WRITE, COMMIT, CLOSE. A small record is read with OPEN, READ and CLOSE in one
//! compound (the current stateid links them) and written with WRITE and CLOSE in one.

use super::proto::{self, Op, Stateid};
use super::transport::Transport;
use crate::nfs::client::File;
use crate::nfs::error::Result;
use crate::nfs::types::{CreateHow, Fh};

impl Transport {
    /// OPEN of `name` in `at` created as `how` says, for reading and writing, or of `at` itself
    /// (both None) for reading. A delegation granted anyway is returned.
    pub fn open(
        &self,
        at: &Fh,
        name: Option<&str>,
        how: Option<CreateHow>,
        path: &str,
    ) -> Result<File> {
        let access = if how.is_some() {
            proto::ACCESS_BOTH
        } else {
            proto::ACCESS_READ
        };
        let owner = self.owner.open_owner.clone();
        let (f, deleg) = self.run(
            |s, o| {
                let opened = o.putfh(at).open(s.clientid, &owner, access, name, how);
                opened.bare(Op::GETFH)
            },
            |r| {
                let (stateid, deleg) = proto::dec_open(r.body(2)?)?;
                let fh = proto::dec_fh(r.body(1)?)?;
                let (stateid, path) = (Some(stateid), path.to_string());
                Ok((File { fh, stateid, path }, deleg))
            },
            path,
        )?;
        if let Some(d) = deleg {
            self.return_delegation(&f.fh, &d, path);
        }
        Ok(f)
    }

    /// OPEN of `fh` for reading, READ of its first `count` bytes and CLOSE in one compound (the
    /// current stateid carries the open to READ and CLOSE). Returns the data and eof.
    pub fn read_whole(&self, fh: &Fh, count: u32, path: &str) -> Result<(Vec<u8>, bool)> {
        let owner = self.owner.open_owner.clone();
        let cur = Stateid::CURRENT;
        let (data, deleg) = self.run(
            |s, o| {
                let opened = o
                    .putfh(fh)
                    .open(s.clientid, &owner, proto::ACCESS_READ, None, None);
                let read = opened.add(Op::READ, (cur, 0u64, count));
                read.add(Op::CLOSE, (0u32, cur))
            },
            |r| {
                let (_, deleg) = proto::dec_open(r.body(2)?)?;
                let data = proto::dec_read(r.body(1)?)?;
                r.ok(1)?;
                Ok((data, deleg))
            },
            path,
        )?;
        if let Some(d) = deleg {
            self.return_delegation(fh, &d, path);
        }
        Ok(data)
    }

    fn return_delegation(&self, fh: &Fh, d: &Stateid, path: &str) {
        tracing::debug!(server = %self.server, path, "returning a delegation this client did not ask for");
        let _ = self.exec(path, |_, o| o.putfh(fh).add(Op::DELEGRETURN, d));
    }
}
