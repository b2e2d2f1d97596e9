//! Discovery figures on real loop devices (root): full scan of 1, 8 and 32 devices, and the
//! hotplug latency from `losetup` to the device in the inventory (goal <= 100 ms).
//! FERROVOL_BENCH_QUICK=1 runs a few seconds' worth.

#[path = "../tests/common/disks.rs"]
mod disks;

use disks::{image, wait_until, Disk};
use ferrovol::discovery::{scan, Filters, Inventory, State};
use std::time::{Duration, Instant};

fn main() {
    let quick = std::env::var_os("FERROVOL_BENCH_QUICK").is_some();
    let rounds = if quick { 3 } else { 20 };
    let dir = tempfile::tempdir().unwrap();
    let filters = Filters::for_node(&["/dev/loop*".into()], &[], None, &[], None).unwrap();

    println!("full discovery scan (median of {rounds}, all block devices on the node):");
    let mut disks: Vec<Disk> = Vec::new();
    let mut base = None;
    for n in [1usize, 8, 32] {
        while disks.len() < n {
            let i = disks.len();
            disks.push(Disk::attach(&image(dir.path(), &format!("d{i}.img"), 16)));
        }
        let mut times: Vec<Duration> = (0..rounds)
            .map(|_| {
                let t = Instant::now();
                let devs = scan::scan_all("bench", &filters).unwrap();
                assert!(devs.len() >= n);
                t.elapsed()
            })
            .collect();
        times.sort();
        let med = times[times.len() / 2];
        let per = med / n as u32;
        let ratio = base.map_or(1.0, |b: Duration| med.as_secs_f64() / b.as_secs_f64());
        base.get_or_insert(med);
        println!("  {n:>2} loop devices: {med:>10.2?}  ({per:.2?}/device, x{ratio:.1} vs 1)");
    }
    drop(disks);

    let state = tempfile::tempdir().unwrap();
    let inv = Inventory::open_with_claims(state.path(), "bench", filters, Ok).unwrap();
    inv.start_monitor().unwrap();
    let tries = if quick { 3 } else { 20 };
    let mut lat = Vec::new();
    for i in 0..tries {
        let img = image(dir.path(), &format!("hot{i}.img"), 16);
        let t = Instant::now();
        let d = Disk::attach(&img);
        let ok = wait_until(&inv, Duration::from_secs(2), |es| {
            es.iter()
                .any(|e| e.state == State::Active && e.device.backing_file.as_deref() == Some(&img))
        });
        assert!(ok, "{} never showed up", d.path());
        lat.push(t.elapsed());
    }
    lat.sort();
    let med = lat[lat.len() / 2];
    println!(
        "hotplug losetup -> inventory (incl. the losetup process): median {med:.2?}, max {:.2?} \
         over {tries} (goal <= 100 ms: {})",
        lat[lat.len() - 1],
        if med <= Duration::from_millis(100) {
            "met"
        } else {
            "MISSED"
        }
    );
}
