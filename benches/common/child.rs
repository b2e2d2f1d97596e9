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
