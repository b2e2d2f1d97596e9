//! Operation benchmark of the real `ferrovol serve` over its Unix socket, each figure judged
//! against a baseline measured in the same run:
//!
//! 1. CreateVolume+DeleteVolume pairs/s at concurrency 1 and 16, on a driver with no volumes
//!    and on one holding N (10,000) volumes, the durable commits per pair (the driver's own
//!    counter), and the time to pre-create those N.
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
#[path = "ops/driver.rs"]
mod driver;
#[path = "ops/fixture.rs"]
mod fixture;
#[path = "ops/report.rs"]
mod report;

use baseline::{Baseline, Kind};
use driver::{DriverPaths, DriverProc, Published};
use fixture::{FsKind, LoopFs};
use report::{Report, Run};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tonic::transport::Channel;

const MIB: f64 = 1024.0 * 1024.0;
const IDLE_RSS_GOAL_MIB: f64 = 10.0;
const CHURN_RSS_GOAL_MIB: f64 = 16.0;
const CONCURRENCY: [usize; 2] = [1, 16];
const PRECREATE_CONCURRENCY: usize = 16;
const RESTARTS: usize = 3;

#[derive(Debug, Clone)]
struct Config {
    quick: bool,
    /// Measured time of each measurement, split over `rounds`.
    secs: Duration,
    warmup: Duration,
    rounds: usize,
    volumes: usize,
    publish_iters: usize,
    image_bytes: u64,
    backing: PathBuf,
    backing_kind: &'static str,
    fs: FsKind,
    /// Bind mounts added to the mount table for the NodePublish-under-many-mounts measurement.
    extra_mounts: usize,
    /// Create+delete pairs of the memory-under-churn measurement (after ten full listings).
    churn_pairs: usize,
    /// A second driver binary (the release before the state journal) measured in the same
    /// rounds as the empty driver: FERROVOL_BENCH_BASELINE_BIN.
    baseline_bin: Option<PathBuf>,
    /// What that binary was built from, for the report: FERROVOL_BENCH_BASELINE_REV.
    baseline_rev: String,
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
    fn parse() -> Option<Config> {
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

    fn slice(&self) -> Duration {
        self.secs / self.rounds as u32
    }
}

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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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

/// One driver with its own socket, state and volume directories on the bench filesystem.
struct Side {
    /// "0", the number of existing volumes, or "main" (the baseline binary).
    label: String,
    paths: DriverPaths,
    proc: Option<DriverProc>,
    ch: Option<Channel>,
    /// The bare-syscall twin with the same number of existing volumes.
    bare: Baseline,
}

impl Side {
    fn new(fx: &LoopFs, label: &str, bin: &Path) -> Side {
        let dir = fx.mnt.join(format!("driver-{label}"));
        Side {
            label: label.to_string(),
            paths: DriverPaths {
                bin: bin.to_path_buf(),
                data: fx.root.join(format!("driver-{label}-data")),
                socket: fx.root.join(format!("csi-{label}.sock")),
                log: fx.root.join(format!("driver-{label}.log")),
                state: dir.join("state"),
                base: dir.join("volumes"),
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
    fn start(&mut self, rt: &Runtime) -> Duration {
        self.paths.metrics = driver::free_local_addr().expect("a free loopback port");
        let mut p = DriverProc::spawn(&self.paths).expect("spawn ferrovol serve");
        let (ch, ready) = rt.block_on(p.wait_ready(&self.paths.socket, Duration::from_secs(120)));
        self.proc = Some(p);
        self.ch = Some(ch);
        ready
    }

    fn stop(&mut self) {
        self.ch = None;
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
    }

    fn ch(&self) -> &Channel {
        self.ch.as_ref().expect("driver running")
    }

    fn memory(&self) -> driver::Memory {
        self.proc
            .as_ref()
            .expect("driver running")
            .memory()
            .expect("driver memory")
    }

    /// The driver's durable commits so far; None for a binary that does not count them. The
    /// metrics server starts just after the socket, so the first scrape retries briefly.
    fn commits(&self) -> Option<u64> {
        let mut tries = 0;
        loop {
            match driver::scrape_commits(self.paths.metrics) {
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

/// The pair measurements of one concurrency level, on the empty driver [0] and the one with
/// N volumes [1] (and their bare-syscall twins).
#[derive(Default)]
struct PairSet {
    driver: [Run; 2],
    /// The baseline binary's empty driver, when one was given.
    old: Option<Run>,
    durable: [Run; 2],
    equivalent: [Run; 2],
    /// Durable commits the driver counted during the measured rounds, and the pairs they served.
    commits: [Option<u64>; 2],
}

impl PairSet {
    fn commits_per_pair(&self, i: usize) -> f64 {
        self.commits[i].map_or(f64::NAN, |c| c as f64 / self.driver[i].ops as f64)
    }
}

/// What one slot of a measurement round runs.
#[derive(Clone, Copy)]
enum Job {
    Driver(usize),
    Old,
    Durable(usize),
    Equivalent(usize),
}

fn measure_pairs(
    cfg: &Config,
    rt: &Runtime,
    sides: &[Side; 2],
    old: Option<&Side>,
    conc: usize,
) -> PairSet {
    let mut set = PairSet::default();
    let mut jobs = vec![Job::Driver(0)];
    if old.is_some() {
        jobs.push(Job::Old);
    }
    jobs.extend([
        Job::Driver(1),
        Job::Durable(0),
        Job::Durable(1),
        Job::Equivalent(0),
        Job::Equivalent(1),
    ]);
    for round in 0..=cfg.rounds {
        // Round 0 is the warm-up of every measurement and is thrown away.
        let (dur, name) = if round == 0 {
            (cfg.warmup, "warm-up".to_string())
        } else {
            (cfg.slice(), format!("round {round}/{}", cfg.rounds))
        };
        phase(&format!("pairs, concurrency {conc}: {name}"));
        // Every round runs each measurement once, and the order reverses from round to round
        // (ABC CBA), so a drift of the machine's speed falls on all of them alike.
        let mut order = jobs.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for job in order {
            let (run, slot, commits) = match job {
                Job::Driver(i) => {
                    let side = &sides[i];
                    let tag = format!("driver{}c{conc}r{round}", side.label);
                    let before = side.commits();
                    let run = rt.block_on(driver::pairs(side.ch(), conc, dur, &tag));
                    let used = before.zip(side.commits()).map(|(b, a)| (i, a - b));
                    (run, &mut set.driver[i], used)
                }
                Job::Old => {
                    let side = old.expect("baseline driver running");
                    let tag = format!("mainc{conc}r{round}");
                    let run = rt.block_on(driver::pairs(side.ch(), conc, dur, &tag));
                    (run, set.old.get_or_insert_with(Run::default), None)
                }
                Job::Durable(i) => {
                    let side = &sides[i];
                    let tag = format!("bare{}c{conc}r{round}", side.label);
                    let run = side.bare.pairs(Kind::DurableMinimum, conc, dur, &tag);
                    (run, &mut set.durable[i], None)
                }
                Job::Equivalent(i) => {
                    let side = &sides[i];
                    let tag = format!("equiv{}c{conc}r{round}", side.label);
                    let run = side.bare.pairs(Kind::DriverEquivalent, conc, dur, &tag);
                    (run, &mut set.equivalent[i], None)
                }
            };
            if round == 0 {
                continue;
            }
            if round == 1 {
                *slot = run;
            } else {
                slot.merge(run);
            }
            if let Some((i, c)) = commits {
                set.commits[i] = Some(set.commits[i].unwrap_or(0) + c);
            }
        }
    }
    set
}

/// NodePublish latencies of both drivers and the three references, interleaved in rounds; then
/// NodePublish and mount(2) with a small and with a large mount table, interleaved too.
#[derive(Default)]
struct PublishSet {
    driver: [Vec<Duration>; 2],
    bind_syscall: Vec<Duration>,
    bind_command: Vec<Duration>,
    write_atomic: Vec<Duration>,
    /// [few mounts, many mounts]
    driver_mounts: [Vec<Duration>; 2],
    driver_unpublish_mounts: [Vec<Duration>; 2],
    bind_syscall_mounts: [Vec<Duration>; 2],
    /// ferrovol::os::mountinfo::mount_at (read and parse the whole table), in-process.
    mount_at: [Vec<Duration>; 2],
    /// Reading /proc/self/mountinfo alone.
    read_table: [Vec<Duration>; 2],
    /// Mount table sizes of the two cases.
    mount_counts: [usize; 2],
}

fn measure_publish(
    cfg: &Config,
    rt: &Runtime,
    sides: &[Side; 2],
    vols: &[Published; 2],
    fx: &LoopFs,
) -> PublishSet {
    let kubelet = fx.root.join("kubelet/pods");
    let bind_src = fx.mnt.join("bind-source");
    std::fs::create_dir_all(&bind_src).expect("bind source");
    let bind_target = kubelet.join("0000-baseline/volumes/bind/mount");
    let mut out = PublishSet::default();
    let per_round = cfg.publish_iters.div_ceil(cfg.rounds);
    for round in 1..=cfg.rounds {
        phase(&format!(
            "NodePublish and bind mounts: round {round}/{}",
            cfg.rounds
        ));
        for (i, (side, vol)) in sides.iter().zip(vols).enumerate() {
            let target = kubelet.join(format!(
                "0000-bench-{}/volumes/kubernetes.io~csi/pvc-publish/mount",
                side.label
            ));
            let (publish, _) =
                rt.block_on(driver::publish_loop(side.ch(), vol, &target, per_round));
            out.driver[i].extend(publish);
        }
        out.bind_syscall.extend(baseline::bind_syscall_loop(
            &bind_src,
            &bind_target,
            per_round,
        ));
        out.bind_command.extend(baseline::bind_command_loop(
            &bind_src,
            &bind_target,
            per_round,
        ));
        out.write_atomic
            .extend(sides[0].bare.write_atomic_loop(per_round));
    }
    out
}

/// NodePublish/NodeUnpublish on the empty driver, mount(2) and the driver's mount-table lookup,
/// with the namespace's few mounts and with `extra_mounts` more, interleaved in rounds.
fn measure_publish_mounts(
    cfg: &Config,
    rt: &Runtime,
    sides: &[Side; 2],
    vols: &[Published; 2],
    fx: &LoopFs,
    out: &mut PublishSet,
) {
    let kubelet = fx.root.join("kubelet/pods");
    let bind_src = fx.mnt.join("bind-source");
    let bind_target = kubelet.join("0000-baseline/volumes/bind/mount");
    let per_round = cfg.publish_iters.div_ceil(cfg.rounds);
    let target = kubelet.join("0000-bench-mounts/volumes/kubernetes.io~csi/pvc-publish/mount");
    let extra_dir = kubelet.join("extra");
    for round in 1..=cfg.rounds {
        phase(&format!(
            "NodePublish with {} more mounts: round {round}/{}",
            cfg.extra_mounts, cfg.rounds
        ));
        for many in [false, true] {
            let extra =
                many.then(|| baseline::ExtraMounts::new(&bind_src, &extra_dir, cfg.extra_mounts));
            let i = usize::from(many);
            out.mount_counts[i] = fixture::mount_count();
            let (publish, unpublish) = rt.block_on(driver::publish_loop(
                sides[0].ch(),
                &vols[0],
                &target,
                per_round,
            ));
            out.driver_mounts[i].extend(publish);
            out.driver_unpublish_mounts[i].extend(unpublish);
            out.bind_syscall_mounts[i].extend(baseline::bind_syscall_loop(
                &bind_src,
                &bind_target,
                per_round,
            ));
            out.mount_at[i].extend(baseline::mount_at_loop(&target, per_round));
            out.read_table[i].extend(baseline::read_mountinfo_loop(per_round));
            drop(extra);
        }
    }
}

/// Memory under churn (issue 6): ten full ListVolumes of the N volumes, then `churn_pairs`
/// create+delete pairs at concurrency 16.
struct Churn {
    after: driver::Memory,
    list_seconds: f64,
    pairs_seconds: f64,
}

fn measure_churn(cfg: &Config, rt: &Runtime, side: &Side) -> Churn {
    phase(&format!(
        "churn: ten full ListVolumes of {} volumes, then {} pairs",
        cfg.volumes, cfg.churn_pairs
    ));
    let t = Instant::now();
    for _ in 0..10 {
        let listed = rt.block_on(driver::list_all(side.ch()));
        assert_eq!(listed, cfg.volumes, "ListVolumes of driver {}", side.label);
    }
    let list_seconds = t.elapsed().as_secs_f64();
    let pairs = rt.block_on(driver::pairs_count(
        side.ch(),
        PRECREATE_CONCURRENCY,
        cfg.churn_pairs,
        "churn",
    ));
    // The driver returns freed heap pages every 5 s (malloc_trim); measure after one has run.
    std::thread::sleep(Duration::from_millis(5500));
    Churn {
        after: side.memory(),
        list_seconds,
        pairs_seconds: pairs.as_secs_f64(),
    }
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
    environment(&mut r, cfg, fx, &sides);

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
    let churn = measure_churn(cfg, rt, &sides[1]);
    phase(&format!(
        "pre-creating {n} durable-minimum volumes ({PRECREATE_CONCURRENCY} threads)"
    ));
    let bare_pre = sides[1].bare.precreate(PRECREATE_CONCURRENCY, n);

    let pairs: Vec<(usize, PairSet)> = CONCURRENCY
        .iter()
        .map(|&c| (c, measure_pairs(cfg, rt, &sides, old.as_ref(), c)))
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
    let mut publish = measure_publish(cfg, rt, &sides, &vols, fx);
    let after_runs = [sides[0].memory(), sides[1].memory()];
    measure_publish_mounts(cfg, rt, &sides, &vols, fx, &mut publish);
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
    pair_rows(&mut r, cfg, &pairs, n);
    r.add(
        "precreate_seconds",
        &format!("pre-create {n} vols via driver, c={PRECREATE_CONCURRENCY}"),
        pre.as_secs_f64(),
        "s",
        &format!("durable-minimum creates, {PRECREATE_CONCURRENCY} thr"),
        bare_pre.as_secs_f64(),
        false,
    );

    r.section("memory of the driver process (/proc/<pid>/status)");
    for (key, label, value) in [
        ("rss_idle_mib", "VmRSS idle after start", idle.rss_kib),
        ("hwm_idle_mib", "VmHWM idle after start", idle.hwm_kib),
    ] {
        r.add(
            key,
            label,
            mib(value),
            "MiB",
            "goal",
            IDLE_RSS_GOAL_MIB,
            false,
        );
    }
    for (key, label, value, base_label, base) in [
        (
            "rss_with_n_mib",
            format!("VmRSS with {n} vols"),
            with_n.rss_kib,
            "VmRSS idle after start",
            idle.rss_kib,
        ),
        (
            "hwm_with_n_mib",
            format!("VmHWM after all runs, {n} vols"),
            after_runs[1].hwm_kib,
            "VmHWM after all runs, 0 vols",
            after_runs[0].hwm_kib,
        ),
        (
            "rss_restart_n_mib",
            format!("VmRSS restarted with {n} vols"),
            restarted.rss_kib,
            "VmRSS idle after start",
            idle.rss_kib,
        ),
        (
            "hwm_restart_n_mib",
            format!("VmHWM restarted with {n} vols"),
            restarted.hwm_kib,
            "VmHWM idle after start",
            idle.hwm_kib,
        ),
    ] {
        r.add(key, &label, mib(value), "MiB", base_label, mib(base), false);
    }

    r.add(
        "rss_after_churn_mib",
        &format!(
            "VmRSS after 10 ListVolumes of {n} + {} pairs",
            cfg.churn_pairs
        ),
        mib(churn.after.rss_kib),
        "MiB",
        "goal",
        CHURN_RSS_GOAL_MIB,
        false,
    );
    r.add(
        "rss_anon_after_churn_mib",
        "RssAnon after churn (heap, arenas, stacks)",
        mib(churn.after.anon_kib),
        "MiB",
        "RssAnon with N vols, before churn",
        mib(with_n.anon_kib),
        false,
    );
    r.env("threads_after_churn", churn.after.threads);
    r.env("threads_idle", idle.threads);
    r.env("churn_list_seconds", churn.list_seconds);
    r.env("churn_pairs_seconds", churn.pairs_seconds);
    if let Some(m) = old_idle {
        r.add(
            "rss_idle_vs_main_mib",
            "VmRSS idle after start",
            mib(idle.rss_kib),
            "MiB",
            &format!("{} VmRSS idle after start", cfg.baseline_rev),
            mib(m.rss_kib),
            false,
        );
    }

    r.section("startup: spawn to first successful Probe");
    let median = |v: &mut Vec<Duration>| report::percentile_us(report::sorted_mut(v), 50.0) / 1e3;
    let ready_n = median(&mut ready[1]);
    let ready_0 = median(&mut ready[0]);
    r.add(
        "startup_n_ms",
        &format!("restart with {n} vols (median of {RESTARTS})"),
        ready_n,
        "ms",
        &format!("restart with 0 vols (median of {RESTARTS})"),
        ready_0,
        false,
    );

    r.section("NodePublish (bind mount of the staged volume)");
    let np = |v: &mut Vec<Duration>, p| report::percentile_us(report::sorted_mut(v), p);
    for (p, tag) in [(50.0, "p50"), (95.0, "p95")] {
        let d0 = np(&mut publish.driver[0], p);
        let sys = np(&mut publish.bind_syscall, p);
        let cmd = np(&mut publish.bind_command, p);
        let write = np(&mut publish.write_atomic, p);
        r.add(
            &format!("node_publish_{tag}_us_vs_mount_syscall"),
            &format!("NodePublish {tag}, 0 vols"),
            d0,
            "us",
            &format!("mount(2) MS_BIND {tag}"),
            sys,
            false,
        );
        r.add(
            &format!("node_publish_{tag}_us_vs_mount_command"),
            &format!("NodePublish {tag}, 0 vols"),
            d0,
            "us",
            &format!("`mount --bind` {tag}"),
            cmd,
            false,
        );
        r.add(
            &format!("node_publish_{tag}_us_vs_mount_and_write"),
            &format!("NodePublish {tag}, 0 vols"),
            d0,
            "us",
            &format!("mount(2) {tag} + write_atomic {tag}"),
            sys + write,
            false,
        );
        r.add(
            &format!("node_publish_{tag}_us_n"),
            &format!("NodePublish {tag}, {n} vols"),
            np(&mut publish.driver[1], p),
            "us",
            &format!("NodePublish {tag}, 0 vols"),
            d0,
            false,
        );
    }
    let [few, many] = publish.mount_counts;
    for (p, tag) in [(50.0, "p50"), (95.0, "p95")] {
        r.add(
            &format!("node_publish_{tag}_us_many_mounts"),
            &format!("NodePublish {tag}, {many} mounts on node"),
            np(&mut publish.driver_mounts[1], p),
            "us",
            &format!("NodePublish {tag}, {few} mounts on node"),
            np(&mut publish.driver_mounts[0], p),
            false,
        );
        r.add(
            &format!("node_unpublish_{tag}_us_many_mounts"),
            &format!("NodeUnpublish {tag}, {many} mounts on node"),
            np(&mut publish.driver_unpublish_mounts[1], p),
            "us",
            &format!("NodeUnpublish {tag}, {few} mounts on node"),
            np(&mut publish.driver_unpublish_mounts[0], p),
            false,
        );
        r.add(
            &format!("mount_at_{tag}_us_many_mounts"),
            &format!("mountinfo::mount_at {tag}, {many} mounts"),
            np(&mut publish.mount_at[1], p),
            "us",
            &format!("mountinfo::mount_at {tag}, {few} mounts"),
            np(&mut publish.mount_at[0], p),
            false,
        );
        r.add(
            &format!("read_mountinfo_{tag}_us_many_mounts"),
            &format!("read /proc/self/mountinfo {tag}, {many} mounts"),
            np(&mut publish.read_table[1], p),
            "us",
            &format!("read /proc/self/mountinfo {tag}, {few} mounts"),
            np(&mut publish.read_table[0], p),
            false,
        );
        r.add(
            &format!("bind_syscall_{tag}_us_many_mounts"),
            &format!("mount(2) MS_BIND {tag}, {many} mounts"),
            np(&mut publish.bind_syscall_mounts[1], p),
            "us",
            &format!("mount(2) MS_BIND {tag}, {few} mounts"),
            np(&mut publish.bind_syscall_mounts[0], p),
            false,
        );
    }
    r.add(
        "hwm_after_many_mounts_mib",
        &format!("VmHWM, 0 vols, after NodePublish with {many} mounts"),
        mib(after_mounts.hwm_kib),
        "MiB",
        "VmHWM, 0 vols, before",
        mib(after_runs[0].hwm_kib),
        false,
    );
    r.env("mounts_in_namespace_during_publish", mounts);
    r.env("write_atomic_p50_us", np(&mut publish.write_atomic, 50.0));
    r.env("precreate_volumes_per_s", n as f64 / pre.as_secs_f64());
    r.env("first_start_ms", ready_fresh.as_secs_f64() * 1e3);
    r.env(
        "loadavg_at_end",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim(),
    );

    let idle_mib = mib(idle.rss_kib);
    r.goal(
        "idle VmRSS <= 10 MiB",
        idle_mib <= IDLE_RSS_GOAL_MIB,
        format!("{idle_mib:.2} MiB, VmHWM {:.2} MiB", mib(idle.hwm_kib)),
    );
    let load_1m = |key: &str| {
        r.env
            .get(key)
            .and_then(|v| v.as_str())
            .and_then(|s| s.split_whitespace().next())
            .and_then(|l| l.parse::<f64>().ok())
    };
    if let (Some(a), Some(b)) = (load_1m("loadavg_at_start"), load_1m("loadavg_at_end")) {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
        // Before the bench starts, any load is someone else's.
        if a > cores * 0.5 {
            r.note(format!(
                "the machine was shared: 1-minute load average {a:.1} before the run ({b:.1} at \
                 its end, the bench's own included) on {cores:.0} cores; absolute rates are \
                 depressed and noisy, the interleaved ratios much less so"
            ));
        }
    }
    let steadiness = pairs
        .iter()
        .flat_map(|(_, p)| {
            p.driver
                .iter()
                .chain(&p.durable)
                .chain(&p.equivalent)
                .chain(&p.old)
        })
        .map(Run::steadiness)
        .fold(f64::NAN, f64::min);
    r.env("worst_round_steadiness", steadiness);
    if steadiness < 0.7 {
        r.note(format!(
            "the filesystem was unsteady: in one measurement the slowest round ran at {:.0}% of \
             the fastest (see measurements.*.round_per_s in the JSON); the interleaved rounds keep \
             the ratios fair, the absolute rates are less trustworthy",
            steadiness * 100.0
        ));
    }
    let churn_mib = mib(churn.after.rss_kib);
    r.goal(
        &format!("VmRSS after churn <= {CHURN_RSS_GOAL_MIB} MiB"),
        churn_mib <= CHURN_RSS_GOAL_MIB,
        format!(
            "{churn_mib:.2} MiB (RssAnon {:.2} MiB, {} threads) after 10 ListVolumes of {n} and {} pairs",
            mib(churn.after.anon_kib),
            churn.after.threads,
            cfg.churn_pairs
        ),
    );
    r.note(
        "a driver pair commits the state journal twice (create, delete; fdatasync of one \
         append-only file, shared by concurrent commits); the durable minimum fsyncs twice too, \
         but unshared; 'driver-equiv. in-process' runs the backend's calls and the same journal \
         without gRPC, so driver/equiv. is the cost of gRPC and the driver around them",
    );
    r
}

const COMMITS_GOAL_C1: f64 = 2.0;
const COMMITS_GOAL_C16: f64 = 1.0;
const VS_MAIN_GOAL: f64 = 3.0;
const VS_DURABLE_GOAL: f64 = 0.8;

/// The pair rows: against main, commits per pair, against the durable minimum and the
/// in-process replay, and scaling from 0 to N volumes; with the goals of issue 6.
fn pair_rows(r: &mut Report, cfg: &Config, pairs: &[(usize, PairSet)], n: usize) {
    let rev = &cfg.baseline_rev;
    if pairs.iter().any(|(_, p)| p.old.is_some()) {
        r.section("against the release before the state journal (same rounds, both empty)");
        for (conc, p) in pairs {
            let Some(old) = &p.old else { continue };
            let new = p.driver[0].median_rate();
            let base = old.median_rate();
            r.add(
                &format!("vs_main_c{conc}"),
                &format!("driver pairs/s, c={conc}, 0 vols"),
                new,
                "pairs/s",
                &format!("{rev} pairs/s, c={conc}, 0 vols"),
                base,
                true,
            );
            r.add(
                &format!("vs_main_p50_c{conc}"),
                &format!("driver pair p50, c={conc}, 0 vols"),
                p.driver[0].pct_us(50.0),
                "us",
                &format!("{rev} pair p50, c={conc}, 0 vols"),
                old.pct_us(50.0),
                false,
            );
            r.series(&format!("main_pairs_c{conc}"), old);
            r.goal(
                &format!("pairs/s c={conc} >= {VS_MAIN_GOAL}x {rev}"),
                new / base >= VS_MAIN_GOAL,
                format!("{:.2}x: {new:.0} against {base:.0} pairs/s", new / base),
            );
        }
    }

    r.section("durable commits per create+delete pair (ferrovol_state_commits_total)");
    for (conc, p) in pairs {
        let goal = if *conc == 1 {
            COMMITS_GOAL_C1
        } else {
            COMMITS_GOAL_C16
        };
        for (i, stage) in ["0", n.to_string().as_str()].iter().enumerate() {
            r.add(
                &format!("commits_per_pair_c{conc}_{stage}"),
                &format!("commits per pair, c={conc}, {stage} vols"),
                p.commits_per_pair(i),
                "commits",
                "goal",
                goal,
                false,
            );
        }
        let got = p.commits_per_pair(0);
        r.goal(
            &format!("commits per pair at c={conc} <= {goal}"),
            got <= goal,
            format!(
                "{got:.3} ({} commits for {} pairs, 0 vols)",
                p.commits[0].map_or("n/a".to_string(), |c| c.to_string()),
                p.driver[0].ops
            ),
        );
    }

    r.section("driver against the durable minimum (mkdir, xattr, one fsync; rmdir, one fsync)");
    for (conc, p) in pairs {
        for (i, stage) in ["0", n.to_string().as_str()].iter().enumerate() {
            let k = format!("c{conc}_{stage}");
            r.add(
                &format!("pairs_per_s_{k}"),
                &format!("driver pairs/s, c={conc}, {stage} vols"),
                p.driver[i].median_rate(),
                "pairs/s",
                &format!("durable minimum, {conc} thr, {stage} vols"),
                p.durable[i].median_rate(),
                true,
            );
            r.add(
                &format!("pairs_per_s_{k}_vs_equivalent"),
                &format!("driver pairs/s, c={conc}, {stage} vols"),
                p.driver[i].median_rate(),
                "pairs/s",
                &format!("driver-equiv. in-process, {conc} thr, {stage} vols"),
                p.equivalent[i].median_rate(),
                true,
            );
            r.add(
                &format!("pair_p50_us_{k}"),
                &format!("driver pair p50, c={conc}, {stage} vols"),
                p.driver[i].pct_us(50.0),
                "us",
                &format!("durable minimum p50, {conc} thr, {stage} vols"),
                p.durable[i].pct_us(50.0),
                false,
            );
            r.series(&format!("driver_pairs_{k}"), &p.driver[i]);
            r.series(&format!("durable_pairs_{k}"), &p.durable[i]);
            r.series(&format!("equivalent_pairs_{k}"), &p.equivalent[i]);
        }
        let ratio = p.driver[0].median_rate() / p.durable[0].median_rate();
        r.goal(
            &format!("pairs/s c={conc} >= {VS_DURABLE_GOAL} of the durable minimum"),
            ratio >= VS_DURABLE_GOAL,
            format!("{ratio:.2}, 0 vols"),
        );
    }

    r.section("scaling: the same operation with 0 and with N existing volumes");
    for (conc, p) in pairs {
        r.add(
            &format!("scaling_driver_c{conc}"),
            &format!("driver pairs/s, c={conc}, {n} vols"),
            p.driver[1].median_rate(),
            "pairs/s",
            &format!("driver pairs/s, c={conc}, 0 vols"),
            p.driver[0].median_rate(),
            true,
        );
        r.add(
            &format!("scaling_net_c{conc}"),
            &format!("driver {n}/0 vols pairs/s ratio, c={conc}"),
            p.driver[1].median_rate() / p.driver[0].median_rate(),
            "x",
            &format!("durable minimum {n}/0 vols ratio, {conc} thr"),
            p.durable[1].median_rate() / p.durable[0].median_rate(),
            true,
        );
    }
}

fn environment(r: &mut Report, cfg: &Config, fx: &LoopFs, sides: &[Side; 2]) {
    r.env("mode", if cfg.quick { "quick" } else { "full" });
    r.env("measure_seconds", cfg.secs.as_secs_f64());
    r.env("rounds", cfg.rounds);
    r.env("warmup_seconds", cfg.warmup.as_secs_f64());
    r.env("existing_volumes", cfg.volumes);
    r.env("publish_iterations", cfg.publish_iters);
    r.env("volume_capacity_bytes", driver::CAPACITY);
    r.env(
        "cores",
        std::thread::available_parallelism().map_or(0, |c| c.get()),
    );
    r.env(
        "kernel",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
    );
    r.env("driver_binary", env!("CARGO_BIN_EXE_ferrovol"));
    r.env(
        "loadavg_at_start",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim(),
    );
    r.env("backing", cfg.backing_kind);
    r.env(
        "filesystem",
        format!(
            "{} on {} (sparse {} GiB image in {}), {}",
            fx.kind.name(),
            fx.loop_device.as_deref().unwrap_or("a loop device"),
            cfg.image_bytes >> 30,
            fx.root.display(),
            fx.quota_how.unwrap_or("no quota")
        ),
    );
    r.env(
        "capacity_limit",
        sides[0].bare.limit().unwrap_or("none (advisory sizes)"),
    );
    r.env(
        "state_dir",
        format!(
            "same filesystem as the volumes: {} and {}",
            sides[0].paths.state.display(),
            sides[1].paths.state.display()
        ),
    );
    r.env(
        "record_bytes",
        baseline::record_json("pvc-driver0c1r1-0-0", baseline::Phase::Ready, None).len(),
    );
    if sides[0].bare.limit().is_none() {
        r.note(format!(
            "capacity limits are NOT exercised: {}. The driver then runs with advisory sizes and \
             skips the quota calls, and so do the baselines (like for like){}.",
            if fx.quota_note.is_empty() {
                "the filesystem does not enforce them".to_string()
            } else {
                fx.quota_note.clone()
            },
            if cfg.fs == FsKind::Xfs {
                "; FERROVOL_BENCH_FS=btrfs exercises btrfs qgroups instead"
            } else {
                ""
            }
        ));
    }
}
