//! Crash and failure points for the restart tests.
//!
//! - `FERROVOL_CRASH_AT=<point>`: the process SIGKILLs itself at that point, exactly as a node
//!   losing power would stop it.
//! - `FERROVOL_FAIL_AT=<point>`: the I/O at that point fails with EIO (a dying disk), so tests
//!   can show that a failed commit acknowledges nothing.
//! - `FERROVOL_PAUSE_AT=<point>` with `FERROVOL_PAUSE_FILE=<path>`: the thread reaching that point
//!   creates the file and waits while it exists, so a test can run other calls meanwhile.
//!
//! Compiled only with the `failpoints` feature, which the tests, the benches and the
//! fault-campaign builds enable (Cargo.toml: a dev-dependency of the crate on itself with the
//! feature) and the release image does not; without it [`hit`] and [`fail`] do nothing.

#[cfg(not(feature = "failpoints"))]
pub fn hit(_point: &str) {}

#[cfg(not(feature = "failpoints"))]
pub fn fail(_point: &str) -> std::io::Result<()> {
    Ok(())
}

#[cfg(feature = "failpoints")]
pub use points::*;

#[cfg(feature = "failpoints")]
mod points {
    use std::cell::RefCell;
    use std::io;
    use std::sync::OnceLock;

    /// The value of `var`, read once into `cell`.
    fn env(cell: &'static OnceLock<Option<String>>, var: &str) -> Option<&'static str> {
        cell.get_or_init(|| std::env::var(var).ok()).as_deref()
    }

    pub fn hit(point: &str) {
        pause(point);
        static CRASH_AT: OnceLock<Option<String>> = OnceLock::new();
        if env(&CRASH_AT, "FERROVOL_CRASH_AT") == Some(point) {
            tracing::warn!(point, "FERROVOL_CRASH_AT reached: killing the process");
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }

    thread_local! {
        // Set by unit tests for their own thread only, so parallel tests do not see it.
        static THREAD_FAIL_AT: RefCell<Option<String>> = const { RefCell::new(None) };
    }

    /// Fails with EIO when `point` is the configured failure point.
    pub fn fail(point: &str) -> io::Result<()> {
        static FAIL_AT: OnceLock<Option<String>> = OnceLock::new();
        let hit = env(&FAIL_AT, "FERROVOL_FAIL_AT") == Some(point)
            || THREAD_FAIL_AT.with(|t| t.borrow().as_deref() == Some(point));
        if hit {
            return Err(io::Error::other(format!(
                "failpoint {point}: {}",
                io::Error::from_raw_os_error(libc::EIO)
            )));
        }
        Ok(())
    }

    /// Sets (or clears) a failure point for the calling thread (unit tests).
    pub fn set_fail_at(point: Option<&str>) {
        THREAD_FAIL_AT.with(|t| *t.borrow_mut() = point.map(str::to_string));
    }

    /// Holds the calling thread at `point` while the pause file exists (see the module doc).
    fn pause(point: &str) {
        static TARGET: OnceLock<Option<(String, String)>> = OnceLock::new();
        let target = TARGET.get_or_init(|| {
            Some((
                std::env::var("FERROVOL_PAUSE_AT").ok()?,
                std::env::var("FERROVOL_PAUSE_FILE").ok()?,
            ))
        });
        let Some((at, file)) = target else { return };
        if at != point {
            return;
        }
        tracing::warn!(
            point,
            file,
            "FERROVOL_PAUSE_AT reached: waiting while the file exists"
        );
        if let Err(e) = std::fs::write(file, point) {
            tracing::warn!(point, error = %e, "cannot write the pause file: not pausing");
            return;
        }
        while std::path::Path::new(file).exists() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
