//! The bench's settings: command line and FERROVOL_BENCH_* environment (see benches/ops.rs).

use crate::driver;
use crate::fixture::FsKind;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    pub quick: bool,
    /// Measured time of each measurement, split over `rounds`.
    pub secs: Duration,
    pub warmup: Duration,
    pub rounds: usize,
    pub volumes: usize,
    pub publish_iters: usize,
    pub image_bytes: u64,
    pub backing: PathBuf,
    pub backing_kind: &'static str,
    pub fs: FsKind,
    /// Bind mounts added to the mount table for the NodePublish-under-many-mounts measurement.
    pub extra_mounts: usize,
    /// Create+delete pairs of the memory-under-churn measurement (after ten full listings).
    pub churn_pairs: usize,
    /// A second driver binary (the release before the state journal) measured in the same
    /// rounds as the empty driver: FERROVOL_BENCH_BASELINE_BIN.
    pub baseline_bin: Option<PathBuf>,
    /// What that binary was built from, for the report: FERROVOL_BENCH_BASELINE_REV.
    pub baseline_rev: String,
}

fn env_num<T: std::str::FromStr>(name: &str) -> Option<T> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => {
            eprintln!("ops: ignoring {name}={v:?}: not a number");
            None
        }
    }
}

impl Config {
    /// None when the binary is not run as a benchmark (e.g. `cargo test --all-targets`).
    pub fn parse() -> Option<Config> {
        let mut bench = false;
        let mut quick =
            std::env::var("FERROVOL_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        for arg in std::env::args().skip(1) {
            match arg.as_str() {
                "--bench" => bench = true,
                "--quick" => quick = true,
                "-h" | "--help" => {
                    println!(
                        "usage: cargo bench --bench ops [-- --quick]\n\
                         env: FERROVOL_BENCH_QUICK=1, FERROVOL_BENCH_SECS, FERROVOL_BENCH_ROUNDS, \
                         FERROVOL_BENCH_VOLUMES, FERROVOL_BENCH_PUBLISH_ITERS, \
                         FERROVOL_BENCH_EXTRA_MOUNTS, FERROVOL_BENCH_FS=xfs|btrfs, \
                         FERROVOL_BENCH_BACKING=disk|memory"
                    );
                    return None;
                }
                other => eprintln!("ops: ignoring argument {other:?}"),
            }
        }
        if !bench && !quick {
            println!("ops: not run by `cargo bench` (no --bench): skipped; see benches/ops.rs");
            return None;
        }
        let (secs, warmup, rounds, volumes, iters, mounts): (f64, f64, usize, usize, usize, usize) =
            if quick {
                (0.4, 0.1, 2, 500, 30, 200)
            } else {
                (5.0, 1.0, 10, 10_000, 200, 2000)
            };
        let extra_mounts: usize = env_num("FERROVOL_BENCH_EXTRA_MOUNTS").unwrap_or(mounts);
        let secs: f64 = env_num("FERROVOL_BENCH_SECS").unwrap_or(secs);
        let rounds: usize = env_num("FERROVOL_BENCH_ROUNDS").unwrap_or(rounds).max(1);
        let volumes: usize = env_num("FERROVOL_BENCH_VOLUMES").unwrap_or(volumes);
        let publish_iters: usize = env_num("FERROVOL_BENCH_PUBLISH_ITERS")
            .unwrap_or(iters)
            .max(rounds);
        let (backing, backing_kind) = match std::env::var("FERROVOL_BENCH_BACKING").as_deref() {
            Ok("memory") => (PathBuf::from("/dev/shm"), "memory"),
            Ok("disk") | Err(_) => (std::env::temp_dir(), "disk"),
            Ok(other) => {
                eprintln!("ops: FERROVOL_BENCH_BACKING={other:?}: use disk or memory");
                std::process::exit(2);
            }
        };
        let fs = match std::env::var("FERROVOL_BENCH_FS").as_deref() {
            Ok("xfs") | Err(_) => FsKind::Xfs,
            Ok("btrfs") => FsKind::Btrfs,
            Ok(other) => {
                eprintln!("ops: FERROVOL_BENCH_FS={other:?}: use xfs or btrfs");
                std::process::exit(2);
            }
        };
        // Room for every volume's reservation (the driver never overcommits) plus the churn.
        let need = (volumes as u64 + 2048) * (driver::CAPACITY as u64) * 3 / 2;
        let baseline_bin = std::env::var_os("FERROVOL_BENCH_BASELINE_BIN")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        if let Some(bin) = &baseline_bin {
            if !bin.is_file() {
                eprintln!(
                    "ops: FERROVOL_BENCH_BASELINE_BIN={}: no such file",
                    bin.display()
                );
                std::process::exit(2);
            }
        }
        let image_bytes = need.max(4 << 30).next_multiple_of(1 << 30);
        Some(Config {
            quick,
            secs: Duration::from_secs_f64(secs.max(0.05)),
            warmup: Duration::from_secs_f64(warmup.min(secs / 2.0)),
            rounds,
            volumes,
            publish_iters,
            image_bytes,
            backing,
            backing_kind,
            fs,
            extra_mounts,
            churn_pairs: volumes,
            baseline_bin,
            baseline_rev: std::env::var("FERROVOL_BENCH_BASELINE_REV")
                .unwrap_or_else(|_| "baseline".to_string()),
        })
    }

    pub fn slice(&self) -> Duration {
        self.secs / self.rounds as u32
    }
}
