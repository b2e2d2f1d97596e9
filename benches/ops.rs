//! Operation benchmark of the real `ferrovol serve` over its Unix socket, each figure judged
//! against a baseline measured in the same run:
//!
//! 1. CreateVolume+DeleteVolume pairs/s at concurrency 1 and 16, on a driver with no volumes
//!    and on one holding N (10,000) volumes, the durable commits per pair (the driver's own
//!    counter), the driver's CPU time and context switches per pair (/proc), and the time to
//!    pre-create those N.
//! 2. The same pairs as the durable minimum in-process (mkdir, ownership xattr, one fsync;
//!    rmdir, one fsync), plus an in-process replay of the backend's calls with the driver's
//!    journal; optionally the same pairs on a build of an older release (see below).
//! 3. VmRSS/VmHWM of the driver idle after start, with N volumes, after churn (ten full
//!    ListVolumes and N create+delete pairs), and restarted with N; start-up time with N.
//! 4. NodePublish (bind mount) latency against mount(2) and `mount --bind`; then NodePublish and
//!    NodeUnpublish with a busy node's mount table (2,000 more mounts) against a near-empty one.
//!
//! Two drivers run side by side on the same filesystem (one empty, one with N volumes), and
//! every measurement of a group runs in short interleaved rounds, so a slow spell of the disk
//! hits all of them alike and the ratios stay meaningful on a noisy machine.
//!
//! Runs as root on an XFS (or btrfs) loop filesystem inside a private mount namespace.
//!
//!     cargo bench --bench ops                 # full run, about two minutes (btrfs: five)
//!     cargo bench --bench ops -- --quick      # CI smoke, seconds (or FERROVOL_BENCH_QUICK=1)
//!
//! With FERROVOL_BENCH_BASELINE_BIN=<path to another ferrovol binary> (scripts/bench-vs-main.sh
//! builds the release before the state journal), a third, empty driver of that binary runs in the
//! same interleaved rounds, and the pair rates are also reported as new/old ratios.
//! Commits per pair come from the driver's own counter (`ferrovol_state_commits_total` on
//! `--metrics-address`), scraped before and after every measured round.
//!
//! Knobs: FERROVOL_BENCH_SECS (per measurement), FERROVOL_BENCH_ROUNDS, FERROVOL_BENCH_VOLUMES
//! (existing volumes), FERROVOL_BENCH_PUBLISH_ITERS, FERROVOL_BENCH_EXTRA_MOUNTS (mount table
//! size for the last NodePublish measurement), FERROVOL_BENCH_FS=xfs|btrfs (btrfs: subvolume and
//! qgroup per volume, the limit this machine's kernel can enforce when XFS quota is compiled
//! out), FERROVOL_BENCH_BACKING=disk|memory (where the image lives: the temp dir on disk, real
//! fsync costs; or /dev/shm, fsyncs nearly free, which shows pure CPU cost). Results: a table on
//! stdout and target/bench-ops.json.

#[path = "ops/baseline.rs"]
mod baseline;
#[path = "common/child.rs"]
mod child;
#[path = "ops/config.rs"]
mod config;
#[path = "ops/driver.rs"]
mod driver;
#[path = "ops/environment.rs"]
mod environment;
#[path = "ops/fixture.rs"]
mod fixture;
#[path = "ops/memory.rs"]
mod memory;
#[path = "ops/pairs.rs"]
mod pairs;
#[path = "ops/publish.rs"]
mod publish;
#[path = "ops/report.rs"]
mod report;
#[path = "../tests/common/serve.rs"]
mod serve;
#[path = "ops/side.rs"]
mod side;

use config::Config;
use fixture::LoopFs;
use pairs::PairSet;
use report::Report;
use side::Side;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

const MIB: f64 = 1024.0 * 1024.0;
const CONCURRENCY: [usize; 2] = [1, 16];
pub const PRECREATE_CONCURRENCY: usize = 16;
pub const RESTARTS: usize = 3;

fn main() {
    let Some(cfg) = Config::parse() else { return };
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("ops: needs root (loop devices, mounts, trusted.* xattrs, quotas)");
        std::process::exit(2);
    }
    // Before any thread exists: unshare(CLONE_NEWNS) refuses multithreaded processes.
    if let Err(e) = fixture::enter_private_mount_ns() {
        eprintln!("ops: cannot enter a private mount namespace: {e}");
        std::process::exit(2);
    }
    fixture::install_signal_handlers();
    let started = Instant::now();
    eprintln!(
        "ops: {} run, config {cfg:?}",
        if cfg.quick { "quick" } else { "full" }
    );

    let mut fx =
        LoopFs::new(cfg.fs, cfg.image_bytes, &cfg.backing).expect("set up the loop filesystem");
    // The load generator runs on one thread, like a provisioner's single connection: on two
    // cores a multi-threaded client adds its own cross-CPU wake-ups to every round trip, which
    // are not the driver's cost (about 6% of a pair at c=1 here).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut report = run(&cfg, &fx, &rt);
    drop(rt);
    fx.cleanup();
    report.env("total_run_seconds", started.elapsed().as_secs_f64());

    println!("\n{}", report.table());
    let json_path = target_dir().join("bench-ops.json");
    let text = serde_json::to_string_pretty(&report.json()).expect("serialize report");
    match std::fs::write(&json_path, text + "\n") {
        Ok(()) => println!("results written to {}", json_path.display()),
        Err(e) => eprintln!("ops: cannot write {}: {e}", json_path.display()),
    }
    println!("total run time: {:.1} s", started.elapsed().as_secs_f64());
}

/// The cargo target directory: the driver binary lives in target/<profile>/.
fn target_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_ferrovol"));
    bin.parent().and_then(Path::parent).map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")),
        Path::to_path_buf,
    )
}

fn mib(kib: u64) -> f64 {
    kib as f64 * 1024.0 / MIB
}

fn phase(name: &str) {
    fixture::check_stop();
    eprintln!("ops: {name}");
}

fn run(cfg: &Config, fx: &LoopFs, rt: &Runtime) -> Report {
    let mut r = Report::default();
    let n = cfg.volumes;
    let bin = Path::new(env!("CARGO_BIN_EXE_ferrovol"));
    let mut sides = [Side::new(fx, "0", bin), Side::new(fx, &n.to_string(), bin)];
    let mut old = cfg
        .baseline_bin
        .as_deref()
        .map(|b| Side::new(fx, "main", b));
    environment::environment(&mut r, cfg, fx, &sides);

    // Memory and startup of a fresh driver, then the second driver filled with N volumes.
    phase("starting the empty driver");
    let ready_fresh = sides[0].start(rt);
    std::thread::sleep(Duration::from_millis(300));
    let idle = sides[0].memory();
    let old_idle = old.as_mut().map(|o| {
        phase(&format!(
            "starting the baseline driver ({})",
            cfg.baseline_rev
        ));
        o.start(rt);
        std::thread::sleep(Duration::from_millis(300));
        o.memory()
    });
    phase(&format!("starting the second driver, pre-creating {n} volumes (concurrency {PRECREATE_CONCURRENCY})"));
    sides[1].start(rt);
    let pre = rt.block_on(driver::precreate(sides[1].ch(), PRECREATE_CONCURRENCY, n));
    eprintln!("ops:   {n} volumes in {:.2} s", pre.as_secs_f64());
    std::thread::sleep(Duration::from_millis(300));
    let with_n = sides[1].memory();
    let churn = memory::measure_churn(cfg, rt, &sides[1]);
    phase(&format!(
        "pre-creating {n} durable-minimum volumes ({PRECREATE_CONCURRENCY} threads)"
    ));
    let bare_pre = sides[1].bare.precreate(PRECREATE_CONCURRENCY, n);

    let pairs: Vec<(usize, PairSet)> = CONCURRENCY
        .iter()
        .map(|&c| (c, pairs::measure_pairs(cfg, rt, &sides, old.as_ref(), c)))
        .collect();
    if let Some(o) = old.as_mut() {
        o.stop();
    }

    phase("staging one volume on each driver for NodePublish");
    let kubelet = fx
        .root
        .join("kubelet/plugins/kubernetes.io/csi/local.csi.ferrovol.io/staging");
    let vols = [0, 1].map(|i| {
        rt.block_on(driver::prepare_publish(
            sides[i].ch(),
            "pvc-publish",
            &kubelet.join(format!("pvc-publish-{}", sides[i].label)),
        ))
        .unwrap_or_else(|e| panic!("prepare NodePublish volume: {e}"))
    });
    let mounts = fixture::mount_count();
    let mut publish = publish::measure_publish(cfg, rt, &sides, &vols, fx);
    let after_runs = [sides[0].memory(), sides[1].memory()];
    publish::measure_publish_mounts(cfg, rt, &sides, &vols, fx, &mut publish);
    let after_mounts = sides[0].memory();
    for (side, vol) in sides.iter().zip(&vols) {
        rt.block_on(driver::release_publish(side.ch(), vol));
    }

    // Restarts: recovery of N records against recovery of none, alternating.
    let mut ready = [Vec::new(), Vec::new()];
    let mut restarted = None;
    for round in 1..=RESTARTS {
        phase(&format!(
            "restarting both drivers: round {round}/{RESTARTS}"
        ));
        for (i, side) in sides.iter_mut().enumerate() {
            side.stop();
            ready[i].push(side.start(rt));
        }
        if round == 1 {
            std::thread::sleep(Duration::from_millis(300));
            restarted = Some(sides[1].memory());
        }
    }
    let restarted = restarted.expect("restarted at least once");
    for side in &mut sides {
        side.stop();
    }

    eprintln!("ops: results");
    pairs::rows(&mut r, cfg, &pairs, n);
    let mut figures = memory::Figures {
        idle,
        with_n,
        churn,
        after_runs,
        restarted,
        old_idle,
        ready,
        precreate: pre,
        bare_precreate: bare_pre,
    };
    memory::rows(&mut r, cfg, n, &mut figures);
    publish::rows(&mut r, n, &mut publish, [after_runs[0], after_mounts]);
    r.env("mounts_in_namespace_during_publish", mounts);
    r.env("first_start_ms", ready_fresh.as_secs_f64() * 1e3);
    memory::goals(&mut r, cfg, n, &figures);
    environment::trust_notes(&mut r, &pairs);
    r
}
