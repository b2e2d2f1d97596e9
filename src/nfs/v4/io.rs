//! File I/O as NFSv4.1 compounds: OPEN (asking for no delegation, returning one granted
//! anyway), READ, WRITE, COMMIT, CLOSE. A small record is read with OPEN, READ and CLOSE in one
//! compound (the current stateid links them) and written with WRITE and CLOSE in one.

use super::proto::{self, Stateid, Step};
use super::transport::Transport;
use crate::nfs::error::Result;
use crate::nfs::types::{CreateHow, Fh};

/// An open file: its handle and the open stateid READ, WRITE and CLOSE name.
#[derive(Debug, Clone)]
pub struct Open {
    pub fh: Fh,
    pub stateid: Stateid,
}

impl Transport {
    /// OPEN of `name` in `dir` (created as `how` says when given), or of `fh` itself, for
    /// reading (and writing with `write`). A delegation the server grants anyway is returned.
    pub fn open(
        &self,
        at: &Fh,
        name: Option<&str>,
        how: Option<CreateHow>,
        write: bool,
        path: &str,
    ) -> Result<Open> {
        let access = if write {
            proto::ACCESS_BOTH
        } else {
            proto::ACCESS_READ
        };
        let owner = self.owner.open_owner.clone();
        let (open, deleg) = self.run(
            |s, o| {
                o.putfh(at)
                    .open(s.clientid, &owner, access, name, how)
                    .getfh();
            },
            |r, _| {
                if let Err(f) = Self::plain(r, 1)? {
                    return Ok(Err(f));
                }
                if let Step::Failed(f) = r.step()? {
                    return Ok(Err(f));
                }
                let (stateid, deleg) = proto::dec_open(&mut r.d)?;
                if let Step::Failed(f) = r.step()? {
                    return Ok(Err(f));
                }
                let fh = proto::dec_fh(&mut r.d)?;
                Ok(Ok((Open { fh, stateid }, deleg)))
            },
            self.fail_at(path),
        )?;
        if let Some(d) = deleg {
            self.return_delegation(&open.fh, &d, path);
        }
        Ok(open)
    }

    /// OPEN of `fh` for reading, READ of its first `count` bytes and CLOSE, in one compound
    /// (the current stateid carries the open to READ and CLOSE): a small record in one round
    /// trip. Returns the data and eof.
    pub fn read_whole(&self, fh: &Fh, count: u32, path: &str) -> Result<(Vec<u8>, bool)> {
        let owner = self.owner.open_owner.clone();
        let cur = Stateid::CURRENT;
        let (data, deleg) = self.run(
            |s, o| {
                o.putfh(fh)
                    .open(s.clientid, &owner, proto::ACCESS_READ, None, None)
                    .read(&cur, 0, count)
                    .close(&cur);
            },
            |r, _| {
                if let Err(f) = Self::plain(r, 1)? {
                    return Ok(Err(f));
                }
                if let Step::Failed(f) = r.step()? {
                    return Ok(Err(f));
                }
                let (_, deleg) = proto::dec_open(&mut r.d)?;
                if let Step::Failed(f) = r.step()? {
                    return Ok(Err(f));
                }
                let data = proto::dec_read(&mut r.d)?;
                Ok(Self::plain(r, 1)?.map(|()| (data, deleg)))
            },
            self.fail_at(path),
        )?;
        if let Some(d) = deleg {
            self.return_delegation(fh, &d, path);
        }
        Ok(data)
    }

    fn return_delegation(&self, fh: &Fh, d: &Stateid, path: &str) {
        tracing::debug!(server = %self.server, path, "returning a delegation this client did not ask for");
        let _ = self.run(
            |_, o| {
                o.putfh(fh).delegreturn(d);
            },
            |r, _| Self::plain(r, 2),
            self.fail_at(path),
        );
    }

    pub fn close(&self, f: &Open, path: &str) -> Result<()> {
        self.run(
            |_, o| {
                o.putfh(&f.fh).close(&f.stateid);
            },
            |r, _| Self::plain(r, 2),
            self.fail_at(path),
        )
    }

    pub fn read(&self, f: &Open, off: u64, count: u32, path: &str) -> Result<(Vec<u8>, bool)> {
        self.run(
            |_, o| {
                o.putfh(&f.fh).read(&f.stateid, off, count);
            },
            |r, _| match Self::plain(r, 2)? {
                Err(f) => Ok(Err(f)),
                Ok(()) => proto::dec_read(&mut r.d).map(Ok),
            },
            self.fail_at(path),
        )
    }

    pub fn write(
        &self,
        f: &Open,
        off: u64,
        stable: u32,
        data: &[u8],
        path: &str,
    ) -> Result<(u32, u32, [u8; 8])> {
        self.run(
            |_, o| {
                o.putfh(&f.fh).write(&f.stateid, off, stable, data);
            },
            |r, _| match Self::plain(r, 2)? {
                Err(f) => Ok(Err(f)),
                Ok(()) => proto::dec_write(&mut r.d).map(Ok),
            },
            self.fail_at(path),
        )
    }

    /// WRITE of all of `data` at offset 0 and CLOSE, in one compound (a small record).
    pub fn write_close(
        &self,
        f: &Open,
        stable: u32,
        data: &[u8],
        path: &str,
    ) -> Result<(u32, u32)> {
        self.run(
            |_, o| {
                o.putfh(&f.fh)
                    .write(&f.stateid, 0, stable, data)
                    .close(&f.stateid);
            },
            |r, _| {
                if let Err(f) = Self::plain(r, 2)? {
                    return Ok(Err(f));
                }
                let (n, committed, _) = proto::dec_write(&mut r.d)?;
                Ok(Self::plain(r, 1)?.map(|()| (n, committed)))
            },
            self.fail_at(path),
        )
    }

    pub fn commit(&self, fh: &Fh, path: &str) -> Result<[u8; 8]> {
        self.run(
            |_, o| {
                o.putfh(fh).commit();
            },
            |r, _| match Self::plain(r, 2)? {
                Err(f) => Ok(Err(f)),
                Ok(()) => r.d.verf().map(Ok),
            },
            self.fail_at(path),
        )
    }
}
