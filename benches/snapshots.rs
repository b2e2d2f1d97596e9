//! Snapshot and restore cost through the real driver, against what the peer drivers do.
//!
//! For each filesystem (btrfs with quota: subvolume snapshots; XFS with reflink=1: reflink
//! copies; each on its own loop device) and each volume content (1 GiB in one file, 1 MiB in
//! one file, 10,000 small files), the benchmark times over gRPC on the driver's Unix socket:
//! CreateSnapshot, and CreateVolume from that snapshot (restore); and in the same run, on the
//! same filesystem and data, `tar -cf` of the volume (csi-driver-host-path's snapshot) and
//! `cp -a --reflink=never` (a restore by plain copy).
//!
//! Caches: before every timed operation the driver is stopped, the filesystem unmounted and
//! mounted again (its page, inode and dentry caches start empty), and the driver started
//! again; the loop device uses direct I/O, so the host's page cache holds no copy of the image
//! either. Every operation therefore starts cold. The driver's calls return when durable (the
//! record's fsync, and for reflink copies a syncfs); tar and cp are timed to their exit, which
//! is what the ratios use (the stricter comparison), and their syncfs is shown beside.
//!
//!     cargo bench --bench snapshots                      # full run, about 2-3 minutes
//!     FERROVOL_BENCH_QUICK=1 cargo bench --bench snapshots  # smoke: 64 MiB, 1,000 files
//!
//! Knobs: FERROVOL_BENCH_QUICK=1 (or `-- --quick`), FERROVOL_BENCH_FS=btrfs,xfs[,ext4] (ext4:
//! byte copies, for reference), FERROVOL_BENCH_REPS (driver operations per cell, median kept).
//! Needs root, mkfs.btrfs/btrfs, mkfs.xfs, losetup, mount, tar, cp.

#[path = "common/child.rs"]
mod child;
#[path = "snapshots/data.rs"]
mod data;
#[path = "snapshots/driver.rs"]
mod driver;
#[path = "snapshots/world.rs"]
mod world;

use data::Content;
use driver::Driver;
use std::path::Path;
use std::time::{Duration, Instant};
use world::{sh, FsKind, LoopFs};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// One measured cell: median driver times and the baselines, all cold.
struct Row {
    fs: FsKind,
    content: String,
    bytes: u64,
    snapshot: Duration,
    restore: Duration,
    tar: Duration,
    tar_sync: Duration,
    cp: Duration,
    cp_sync: Duration,
    snap_space: u64,
    tar_space: u64,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 10_000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1e3)
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

fn times(r: f64) -> String {
    if r < 10.0 {
        format!("{r:.1}x")
    } else {
        format!("{r:.0}x")
    }
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let t = Instant::now();
    let out = f.await;
    (out, t.elapsed())
}

/// Every timed step starts on a freshly mounted filesystem. The driver keeps running: it holds
/// nothing open on the base between calls, so the unmount succeeds.
fn cold(fs: &LoopFs) {
    fs.remount().expect("remount the filesystem under test");
}

async fn measure(d: &Driver, fs: &LoopFs, base: &Path, content: &Content, reps: usize) -> Row {
    let name = format!("vol-{}", content.tag);
    let capacity = (content.bytes + 256 * MIB).next_multiple_of(MIB) as i64;
    let vol = d.create_volume(&name, capacity, None).await;
    let src = base.join(&name);
    content.write(&src).expect("write the volume's content");
    fs.sync().unwrap();
    let (mut snaps, mut restores, mut snap_space) = (Vec::new(), Vec::new(), 0);
    for rep in 0..reps {
        cold(fs);
        let before = fs.used();
        let (snap, t) = timed(d.create_snapshot(&format!("s-{}-{rep}", content.tag), &vol)).await;
        snaps.push(t);
        fs.sync().unwrap();
        snap_space = fs.used().saturating_sub(before);
        cold(fs);
        let restored_name = format!("r-{}-{rep}", content.tag);
        let (restored, t) = timed(d.create_volume(&restored_name, capacity, Some(&snap))).await;
        restores.push(t);
        d.delete_volume(&restored).await;
        d.delete_snapshot(&snap).await;
        assert!(
            src.is_dir(),
            "{} vanished after deleting its restore and snapshot; driver log:\n{}",
            src.display(),
            d.log()
        );
    }
    let src_s = src.to_str().unwrap();
    let archive = fs.mnt.join("bench.tar");
    let archive_s = archive.to_str().unwrap();
    cold(fs);
    let before = fs.used();
    let t = Instant::now();
    sh("tar", &["-cf", archive_s, "-C", src_s, "."]).unwrap();
    let tar = t.elapsed();
    fs.sync().unwrap();
    let tar_sync = t.elapsed();
    let tar_space = fs.used().saturating_sub(before);
    std::fs::remove_file(&archive).unwrap();
    let copy = fs.mnt.join("bench-cp");
    cold(fs);
    let t = Instant::now();
    sh(
        "cp",
        &["-a", "--reflink=never", src_s, copy.to_str().unwrap()],
    )
    .unwrap();
    let cp = t.elapsed();
    fs.sync().unwrap();
    let cp_sync = t.elapsed();
    std::fs::remove_dir_all(&copy).unwrap();
    d.delete_volume(&vol).await;
    fs.sync().unwrap();
    Row {
        fs: fs.kind,
        content: content.label.clone(),
        bytes: content.bytes,
        snapshot: median(snaps),
        restore: median(restores),
        tar,
        tar_sync,
        cp,
        cp_sync,
        snap_space,
        tar_space,
    }
}

fn print_table(rows: &[Row]) {
    println!("| fs | volume holds | CreateSnapshot | restore (CreateVolume from snapshot) | tar -cf (+ syncfs) | cp -a --reflink=never (+ syncfs) | tar / snapshot | cp / restore | space: snapshot | space: tar |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} ({}) | {} ({}) | {} | {} | {} KiB | {} KiB |",
            r.fs.label(),
            r.content,
            ms(r.snapshot),
            ms(r.restore),
            ms(r.tar),
            ms(r.tar_sync),
            ms(r.cp),
            ms(r.cp_sync),
            times(ratio(r.tar, r.snapshot)),
            times(ratio(r.cp, r.restore)),
            r.snap_space >> 10,
            r.tar_space >> 10,
        );
    }
}

/// The goals for copy-on-write filesystems, judged on this run.
fn print_goals(rows: &[Row], big: u64) -> bool {
    let mut all = true;
    for fs in [FsKind::Btrfs, FsKind::Xfs] {
        let of = |tag: &str| {
            rows.iter()
                .find(|r| r.fs == fs && r.content.starts_with(tag))
        };
        let (Some(b), Some(s), Some(many)) = (of("big"), of("small"), of("files")) else {
            continue;
        };
        let size_ratio = ratio(b.snapshot, s.snapshot);
        let size_ok = (0.5..=2.0).contains(&size_ratio);
        let speedup = ratio(b.tar, b.snapshot);
        let fast_ok = speedup >= 100.0;
        all &= size_ok && fast_ok;
        println!(
            "goal {}: snapshot time independent of data size: CreateSnapshot {} MiB / {} MiB = {size_ratio:.2} (goal 0.5-2): {}",
            fs.label(),
            b.bytes / MIB,
            s.bytes / MIB,
            if size_ok { "met" } else { "MISSED" }
        );
        println!(
            "goal {}: CreateSnapshot of {} MiB >= 100x faster than tar -cf: {speedup:.0}x: {}",
            fs.label(),
            big / MIB,
            if fast_ok { "met" } else { "MISSED" }
        );
        println!(
            "     {}: CreateSnapshot {} MiB / {} = {:.3}; restore {} MiB / {} MiB = {:.2}",
            fs.label(),
            b.bytes / MIB,
            many.content,
            ratio(b.snapshot, many.snapshot),
            b.bytes / MIB,
            s.bytes / MIB,
            ratio(b.restore, s.restore)
        );
    }
    all
}

fn main() {
    let quick = std::env::var_os("FERROVOL_BENCH_QUICK").is_some_and(|v| v != "0")
        || std::env::args().any(|a| a == "--quick");
    let reps: usize = std::env::var("FERROVOL_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1 } else { 3 });
    let kinds: Vec<FsKind> = std::env::var("FERROVOL_BENCH_FS")
        .unwrap_or_else(|_| "btrfs,xfs".into())
        .split(',')
        .map(|s| {
            FsKind::parse(s.trim()).unwrap_or_else(|| panic!("FERROVOL_BENCH_FS: unknown {s:?}"))
        })
        .collect();
    let (big, files) = if quick {
        (64 * MIB, 1_000)
    } else {
        (GIB, 10_000)
    };
    let contents = [
        Content::one_file("big", big),
        Content::one_file("small", MIB),
        Content::many_files("files", files),
    ];
    world::enter_private_mount_ns().expect("unshare the mount namespace (run as root)");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::Builder::new()
        .prefix("ferrovol-bench-snap-")
        .tempdir()
        .unwrap();
    let started = Instant::now();
    let mut rows = Vec::new();
    for kind in kinds {
        let dir = tmp.path().join(format!("{kind:?}"));
        std::fs::create_dir_all(dir.join("driver")).unwrap();
        // Room for the volume, its restore's reservation, the archive and the copy at once.
        let fs = LoopFs::make(&dir, kind, 4 * big + 2 * GIB).expect("make the filesystem");
        let base = fs.mnt.join("hostpath");
        rt.block_on(async {
            let d = Driver::start(&dir.join("driver"), &base).await.unwrap();
            for c in &contents {
                let row = measure(&d, &fs, &base, c, reps).await;
                eprintln!(
                    "{}: {} done ({:.0?} so far)",
                    kind.label(),
                    c.label,
                    started.elapsed()
                );
                rows.push(row);
            }
            let log = d.log();
            let method = log
                .lines()
                .find(|l| l.contains("hostpath snapshots recovered"))
                .unwrap_or("");
            eprintln!("{}: driver says: {}", kind.label(), method.trim());
        });
    }
    println!(
        "\nsnapshot benchmark: {} driver operations per cell (median), every operation cold; {:.0?} in all",
        reps,
        started.elapsed()
    );
    print_table(&rows);
    let met = print_goals(&rows, big);
    if quick {
        println!(
            "quick mode ({} MiB): a smoke run; the goals are set for 1 GiB (full run)",
            big / MIB
        );
    } else {
        println!("goals {}", if met { "met" } else { "MISSED (see above)" });
    }
}
