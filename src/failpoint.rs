//! Crash points for the restart tests: when FERROVOL_CRASH_AT names a point, the process
//! SIGKILLs itself there, exactly as a node losing power would stop it. Unset in production;
//! the check is one cached comparison.

use std::sync::OnceLock;

pub fn hit(point: &str) {
    static TARGET: OnceLock<Option<String>> = OnceLock::new();
    let target = TARGET.get_or_init(|| std::env::var("FERROVOL_CRASH_AT").ok());
    if target.as_deref() == Some(point) {
        tracing::warn!(point, "FERROVOL_CRASH_AT reached: killing the process");
        // SAFETY: sending a signal to ourselves has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
