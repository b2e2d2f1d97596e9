//! One driver process under test, with its socket, state, metrics and bare-syscall twin.

use crate::baseline::Baseline;
use crate::driver::{self, DriverPaths, DriverProc};
use crate::fixture::LoopFs;
use crate::serve::ServeDirs;
use std::path::Path;
use std::time::Duration;
use tokio::runtime::Runtime;
use tonic::transport::Channel;

/// One driver with its own socket, state and volume directories on the bench filesystem.
pub struct Side {
    /// "0", the number of existing volumes, or "main" (the baseline binary).
    pub label: String,
    pub paths: DriverPaths,
    pub proc: Option<DriverProc>,
    pub ch: Option<Channel>,
    /// The bare-syscall twin with the same number of existing volumes.
    pub bare: Baseline,
}

impl Side {
    pub fn new(fx: &LoopFs, label: &str, bin: &Path) -> Side {
        let dir = fx.mnt.join(format!("driver-{label}"));
        Side {
            label: label.to_string(),
            paths: DriverPaths {
                bin: bin.to_path_buf(),
                dirs: ServeDirs {
                    data: fx.root.join(format!("driver-{label}-data")),
                    socket: fx.root.join(format!("csi-{label}.sock")),
                    log: fx.root.join(format!("driver-{label}.log")),
                    state: dir.join("state"),
                    base: dir.join("volumes"),
                },
                metrics: driver::free_local_addr().expect("a free loopback port"),
                // Only this build knows --publish-root; its NodePublish paths lie below it.
                publish_root: (bin == Path::new(env!("CARGO_BIN_EXE_ferrovol")))
                    .then(|| fx.root.join("kubelet")),
            },
            proc: None,
            ch: None,
            bare: Baseline::new(&fx.mnt.join(format!("baseline-{label}")))
                .expect("baseline directories"),
        }
    }

    /// Starts the driver and waits for Probe; returns the time from spawn to ready.
    pub fn start(&mut self, rt: &Runtime) -> Duration {
        self.paths.metrics = driver::free_local_addr().expect("a free loopback port");
        let mut p = DriverProc::spawn(&self.paths).expect("spawn ferrovol serve");
        let (ch, ready) = rt.block_on(p.wait_ready(&self.paths, Duration::from_secs(120)));
        self.proc = Some(p);
        self.ch = Some(ch);
        ready
    }

    pub fn stop(&mut self) {
        self.ch = None;
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
    }

    pub fn ch(&self) -> &Channel {
        self.ch.as_ref().expect("driver running")
    }

    pub fn sched(&self) -> driver::Sched {
        self.proc
            .as_ref()
            .expect("driver running")
            .sched()
            .expect("driver CPU time and context switches")
    }

    pub fn memory(&self) -> driver::Memory {
        self.proc
            .as_ref()
            .expect("driver running")
            .memory()
            .expect("driver memory")
    }

    /// The driver's sync counters so far; None for a binary that does not count them. The
    /// metrics server starts just after the socket, so the first scrape retries briefly.
    pub fn syncs(&self) -> Option<driver::Syncs> {
        let mut tries = 0;
        loop {
            match driver::scrape_syncs(self.paths.metrics) {
                Ok(c) => return c,
                Err(e) if tries < 50 => {
                    tries += 1;
                    if tries == 50 {
                        eprintln!("ops: scraping driver {}: {e}", self.label);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("scrape metrics of driver {}: {e}", self.label),
            }
        }
    }
}
