//! Child processes and open files.

use super::*;

/// Tests run as threads of one process, and a child that one test spawns holds a copy of every
/// file descriptor of the process from fork until exec (close-on-exec closes them only at
/// exec). A file another test has open inside a volume then pins that mount for a moment, and
/// an unmount the test does right after closing the file (NodeUnpublishVolume) fails with
/// EBUSY. So children are spawned only while no test holds such a file open: spawning takes
/// this lock exclusively, holding a file open in a volume takes it shared.
static SPAWN_LOCK: RwLock<()> = RwLock::new(());

/// Spawns `cmd` while no test thread holds a file open in a volume ([`hold_files_open`]).
/// When this returns the child has exec'd, so it holds none of this process's descriptors.
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    let _no_open_files = SPAWN_LOCK.write().unwrap_or_else(PoisonError::into_inner);
    cmd.spawn()
}

/// Like [`Command::output`], through [`spawn`].
pub fn output(cmd: &mut Command) -> std::io::Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    spawn(cmd)?.wait_with_output()
}

/// Like [`Command::status`], through [`spawn`].
pub fn status(cmd: &mut Command) -> std::io::Result<ExitStatus> {
    spawn(cmd)?.wait()
}

/// Keep this guard alive while the test holds a file open inside a volume (or any mount it is
/// about to unmount), and declare it before the file so it is dropped after it. Holding it
/// blocks [`spawn`] in other tests; never spawn a process while holding it.
pub fn hold_files_open() -> RwLockReadGuard<'static, ()> {
    SPAWN_LOCK.read().unwrap_or_else(PoisonError::into_inner)
}
