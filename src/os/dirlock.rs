//! A directory's single-writer lock: an exclusive `flock` on `<dir>/lock`, held for as long as
//! the returned guard lives. The kernel drops a flock when its process dies (kill -9 included),
//! so a crash never leaves a stale lock behind. The holder writes its pid into the file, so the
//! process that is refused can say who holds it.

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::Path;

const LOCK_FILE: &str = "lock";

/// An exclusive lock on a directory; released when dropped or when the process ends.
#[derive(Debug)]
pub struct DirLock {
    _file: Flock<File>,
}

/// Takes the exclusive lock on `dir` without waiting. Another holder is an error naming the
/// directory and the holder's pid.
pub fn lock_exclusive(dir: &Path, what: &str) -> io::Result<DirLock> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)?;
    let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "a process whose pid is not written yet".to_string(),
                pid => format!("pid {pid}"),
            };
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "{what} {} is in use by another ferrovol process ({holder} holds {}); only one driver may use it at a time",
                    dir.display(),
                    path.display()
                ),
            ));
        }
        Err((_, errno)) => return Err(io::Error::from(errno)),
    };
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(DirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_exclusive(dir.path(), "state dir").unwrap();
        // flock locks belong to the open file description: a second open conflicts even in
        // one process.
        let err = lock_exclusive(dir.path(), "state dir").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        drop(first);
        lock_exclusive(dir.path(), "state dir").unwrap();
    }
}
