//! The cost of NFS snapshots, against a real nfs-ganesha (VFS) on 127.0.0.1, for a
//! volume holding one 64 MiB file and one holding 2,000 small files (4 KiB, in 20 directories):
//!
//! - `copy`: the tree copy snapshots and restores use (`NfsClient::copy_dir_contents`: 1 MiB
//!   UNSTABLE writes, one COMMIT per file, attributes, links);
//! - `plain`: a plain read+write copy through the same client's public calls (`readdir`,
//!   `mkdir`, `read_file`, `create_file`), the baseline the ratio is against;
//! - `CreateSnapshot` and `CreateVolume` from it through the driver (real gRPC; CreateSnapshot
//!   polled until ready_to_use), which add the records to the copy;
//! - `cp -a` of the same tree on the server's own disk, the floor no NFSv3 copy reaches.
//!
//! ```text
//! cargo bench --bench nfs_snapshots
//! FERROVOL_BENCH_QUICK=1 cargo bench --bench nfs_snapshots   # smoke: 16 MiB, 500 files
//! ```
//!
//! Needs root and nfs-ganesha, nfs-ganesha-vfs, rpcbind (scripts/test.sh installs them).

#[allow(dead_code)]
#[path = "nfs/driver.rs"]
mod driver;
#[path = "../tests/common/ganesha.rs"]
mod ganesha;

use ferrovol::nfs::{ClientOptions, NfsClient};
use ferrovol::proto as csi;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// Copies directory `from` into the existing directory `to` with the client's plain calls.
fn plain_copy(c: &NfsClient, from: &str, to: &str) -> u64 {
    let mut bytes = 0;
    for (name, attr) in c.readdir(from).expect("readdir") {
        let (f, t) = (format!("{from}/{name}"), format!("{to}/{name}"));
        if attr.is_dir() {
            c.mkdir(&t, attr.mode).expect("mkdir");
            bytes += plain_copy(c, &f, &t);
        } else {
            let data = c.read_file(&f).expect("read").expect("file");
            bytes += data.len() as u64;
            c.create_file(&t, &data).expect("write");
        }
    }
    bytes
}

fn fill_big(dir: &Path, mib: usize) {
    let data: Vec<u8> = (0..mib << 20)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 11) as u8 | 1)
        .collect();
    std::fs::write(dir.join("big.bin"), data).unwrap();
}

fn fill_small(dir: &Path, files: usize) {
    for i in 0..files {
        let d = dir.join(format!("d{:02}", i % 20));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i:05}")), vec![(i % 251) as u8 + 1; 4096]).unwrap();
    }
}

fn mbs(bytes: u64, t: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / t.as_secs_f64()
}

async fn snapshot_ready(ctl: &mut driver::Served, name: &str, source: &str) -> Duration {
    let t0 = Instant::now();
    loop {
        let s = ctl
            .controller()
            .create_snapshot(csi::CreateSnapshotRequest {
                source_volume_id: source.into(),
                name: name.into(),
                ..Default::default()
            })
            .await
            .expect("CreateSnapshot")
            .into_inner()
            .snapshot
            .unwrap();
        if s.ready_to_use {
            return t0.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("nfs_snapshots: not run by `cargo bench` (no --bench): skipped");
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !ganesha::available() {
        eprintln!("nfs_snapshots: needs root and nfs-ganesha, nfs-ganesha-vfs, rpcbind: skipped");
        return;
    }
    let quick = std::env::var("FERROVOL_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let (mib, files) = if quick { (16, 500) } else { (64, 2000) };
    let g = ganesha::Ganesha::start();
    let c = NfsClient::new("127.0.0.1", &g.share(), ClientOptions::default()).expect("client");
    let class = HashMap::from([
        ("server".to_string(), "127.0.0.1".to_string()),
        ("share".to_string(), g.share()),
    ]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("NFS snapshot cost, ganesha VFS on 127.0.0.1 (times of one run each)");
    type Fill = Box<dyn Fn(&Path)>;
    let sets: [(&str, Fill); 2] = [
        ("one file", Box::new(move |d: &Path| fill_big(d, mib))),
        (
            "small files",
            Box::new(move |d: &Path| fill_small(d, files)),
        ),
    ];
    rt.block_on(async {
        let mut served = driver::Served::start("5s").await;
        for (i, (label, fill)) in sets.iter().enumerate() {
            let vol = format!("bench-{i}");
            let source = served
                .controller()
                .create_volume(driver::request(&vol, &class))
                .await
                .expect("CreateVolume")
                .into_inner()
                .volume
                .expect("a volume")
                .volume_id;
            fill(&g.export.join(&vol));
            let what = match i {
                0 => format!("{label} of {mib} MiB"),
                _ => format!("{files} {label} of 4 KiB"),
            };

            let t0 = Instant::now();
            c.mkdir(&format!("plain-{i}"), 0o755).unwrap();
            let bytes = plain_copy(&c, &vol, &format!("plain-{i}"));
            let plain = t0.elapsed();

            c.mkdir(&format!("copy-{i}"), 0o755).unwrap();
            let t0 = Instant::now();
            let st = c
                .copy_dir_contents(&vol, &format!("copy-{i}"), &AtomicBool::new(false))
                .expect("copy");
            let copy = t0.elapsed();
            assert_eq!(st.bytes, bytes);

            let snap = snapshot_ready(&mut served, &format!("snap-{i}"), &source).await;
            let mut restore = driver::request(&format!("restored-{i}"), &class);
            restore.volume_content_source = Some(csi::VolumeContentSource {
                r#type: Some(csi::volume_content_source::Type::Snapshot(
                    csi::volume_content_source::SnapshotSource {
                        snapshot_id: format!("nfs/snap/snap-{i}"),
                    },
                )),
            });
            let t0 = Instant::now();
            served
                .controller()
                .create_volume(restore)
                .await
                .expect("restore");
            let restored = t0.elapsed();

            let t0 = Instant::now();
            let st = std::process::Command::new("cp")
                .args(["-a", "--reflink=never"])
                .arg(g.export.join(&vol))
                .arg(g.export.join(format!("cp-{i}")))
                .status()
                .unwrap();
            assert!(st.success());
            let cp = t0.elapsed();

            println!("  {what} ({:.1} MiB):", bytes as f64 / (1 << 20) as f64);
            println!(
                "    plain read+write copy {plain:>10.2?} {:>7.1} MB/s   (baseline)",
                mbs(bytes, plain)
            );
            for (name, t) in [
                ("tree copy            ", copy),
                ("CreateSnapshot (ready)", snap),
                ("CreateVolume from it ", restored),
                ("cp -a on the server  ", cp),
            ] {
                println!(
                    "    {name} {t:>10.2?} {:>7.1} MB/s   ratio to plain {:.2}",
                    mbs(bytes, t),
                    t.as_secs_f64() / plain.as_secs_f64()
                );
            }
        }
    });
}
