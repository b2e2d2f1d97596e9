//! Bare NFS calls for one create+delete pair, against a real nfs-ganesha (VFS) on 127.0.0.1:
//! mkdir the volume directory, write its record atomically, then rmdir the directory (via
//! remove_tree) and remove the record. This is the floor the NFS backend's CreateVolume +
//! DeleteVolume pairs are measured against.
//!
//! Then the driver (`nfs/driver.rs`): CreateVolume + DeleteVolume pairs/s through real gRPC at
//! concurrency 1 and 16, against the same NFS calls those pairs make issued directly with the
//! same client (the driver's protocol: intent records, see src/backend/nfs/mod.rs), and the p50
//! and p99 of CreateVolume on the live server, alone and while CreateVolumes against a hung
//! second server (ports 111 and 2049 accept, never answer; `tests/common/deadserver.rs`) are in
//! flight.
//!
//! Everything twice in one run: over NFSv3 (ganesha serving v3 and v4 on free ports, the
//! driver's `nfsvers: auto` settling on NFSv3), then over NFSv4.1 (ganesha serving v4 alone on
//! 2049; auto speaks NFSv4.1, and the hung server hangs on 2049).
//!
//!     cargo bench --bench nfs                        # 5 s per concurrency level
//!     FERROVOL_BENCH_QUICK=1 cargo bench --bench nfs # smoke, about a second per level
//!
//! Needs root (ganesha, rpcbind, reserved source ports) and the Debian packages nfs-ganesha,
//! nfs-ganesha-vfs and rpcbind (scripts/test.sh installs them).

#[path = "../tests/common/deadserver.rs"]
mod deadserver;
#[path = "nfs/driver.rs"]
mod driver;
#[path = "../tests/common/ganesha.rs"]
mod ganesha;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrovol::nfs::{ClientOptions, NfsClient, Version, Want};

fn pair(c: &NfsClient, worker: usize, n: u64) {
    let dir = format!("vols/w{worker}-{n}");
    let rec = format!(".ferrovol/volumes/w{worker}-{n}.json");
    c.mkdir(&dir, 0o777).expect("mkdir");
    c.write_file_atomic(&rec, br#"{"version":1,"state":"ready"}"#)
        .expect("write record");
    assert!(c.remove_tree(&dir).expect("remove dir"));
    assert!(c.remove_file(&rec).expect("remove record"));
}

/// Pairs per second with `conc` threads sharing one client for `secs`.
fn run(c: &Arc<NfsClient>, conc: usize, secs: Duration) -> (f64, u64) {
    run_with(c, conc, secs, pair)
}

fn run_with(
    c: &Arc<NfsClient>,
    conc: usize,
    secs: Duration,
    pair: fn(&NfsClient, usize, u64),
) -> (f64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let workers: Vec<_> = (0..conc)
        .map(|w| {
            let (c, stop, done) = (c.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    pair(&c, w, n);
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(secs);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
    let n = done.load(Ordering::Relaxed);
    (n as f64 / t0.elapsed().as_secs_f64(), n)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("nfs: not run by `cargo bench` (no --bench): skipped");
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !ganesha::available() {
        eprintln!("nfs: needs root and nfs-ganesha, nfs-ganesha-vfs, rpcbind installed: skipped");
        return;
    }
    let quick = std::env::var("FERROVOL_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let secs = Duration::from_secs(if quick { 1 } else { 5 });
    for v in [Version::V3, Version::V41] {
        let g = match v {
            Version::V3 => ganesha::Ganesha::start(),
            Version::V41 => ganesha::Ganesha::start_v4(),
        };
        version_section(&g, v, secs);
    }
}

fn version_section(g: &ganesha::Ganesha, v: Version, secs: Duration) {
    let opts = ClientOptions {
        version: Want::Only(v),
        ..ClientOptions::default()
    };
    let c = Arc::new(NfsClient::new("127.0.0.1", &g.share(), opts).expect("client"));
    c.mkdir_all(".ferrovol/volumes", 0o755)
        .expect("records dir");
    c.mkdir("vols", 0o755).expect("volume dir");
    pair(&c, 999, 0); // warm up: mount, first connection
    println!("NFSv{v}: bare NFS calls per create+delete pair (mkdir, write record, rmdir, remove record), ganesha VFS on 127.0.0.1");
    for conc in [1, 16] {
        let (rate, n) = run(&c, conc, secs);
        println!(
            "  concurrency {conc:>2}: {rate:>8.0} pairs/s ({n} pairs in {:.0} s)",
            secs.as_secs_f64()
        );
    }
    assert_eq!(
        std::fs::read_dir(g.export.join("vols")).unwrap().count(),
        0,
        "every pair cleaned up"
    );
    driver_section(g, &c, secs);
}

fn driver_section(g: &ganesha::Ganesha, c: &Arc<NfsClient>, secs: Duration) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let live = std::collections::HashMap::from([
        ("server".to_string(), "127.0.0.1".to_string()),
        ("share".to_string(), g.share()),
    ]);
    rt.block_on(async {
        let served = driver::Served::start("1s").await;
        driver::pair(&mut served.controller(), &live, "warm-up").await;
        println!("CreateVolume+DeleteVolume pairs through the driver (nfsvers auto) vs the same NFS calls made directly");
        for conc in [1, 16] {
            let c2 = c.clone();
            let (bare, _) = tokio::task::spawn_blocking(move || {
                run_with(&c2, conc, secs, driver::driver_sequence_pair)
            })
            .await
            .unwrap();
            let driver = driver::driver_rate(&served, &live, conc, secs).await;
            println!(
                "  concurrency {conc:>2}: driver {driver:>7.0} pairs/s, bare calls {bare:>7.0} pairs/s, ratio {:.2} (goal >= 0.8)",
                driver / bare
            );
        }
        let n = if secs.as_secs() > 1 { 400 } else { 100 };
        let (p50, p99) = driver::create_latencies(&served, &live, "alone", n).await;
        println!("CreateVolume on the live server, {n} calls: alone p50 {p50:?} p99 {p99:?}");
        let dead = deadserver::DeadServer::start();
        let mut hung = live.clone();
        hung.insert("server".into(), dead.addr.clone());
        let (stop, failed) = driver::hammer_dead(&served, hung, 4);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (d50, d99) = driver::create_latencies(&served, &live, "dead", n).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        println!(
            "  while 4 CreateVolumes at a time hang on {} (--nfs-timeout 1s): p50 {d50:?} p99 {d99:?} ({} failed meanwhile)",
            dead.addr,
            failed.load(std::sync::atomic::Ordering::Relaxed)
        );
    });
    let left: Vec<_> = std::fs::read_dir(g.export.join(".ferrovol/volumes"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "records left: {left:?}");
}
