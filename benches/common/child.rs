//! Stopping a driver process a bench started: shared by the benches that run `ferrovol serve`.

use std::process::Child;
use std::time::{Duration, Instant};

/// SIGTERM, up to `grace` for the process to exit, then SIGKILL; reaps it either way.
pub fn terminate(mut child: Child, grace: Duration) {
    // SAFETY: a signal to our own child, which has not been reaped yet.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The started process gets SIGKILL when the bench dies, so no driver outlives an aborted run.
pub fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
