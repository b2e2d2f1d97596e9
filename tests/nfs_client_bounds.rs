//! The NFS client's memory does not grow with what a tenant puts in a directory: removing and
//! copying a directory of many entries holds a bounded part of its listing at a time. Measured
//! with a counting allocator around the client calls, against a real nfs-ganesha.

#[path = "common/ganesha.rs"]
mod ganesha;

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use ferrovol::nfs::{ClientOptions, NfsClient};
use ganesha::Ganesha;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        System.dealloc(p, l)
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Bytes allocated at the peak of `f`, above what was live when it started.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

/// Entries in the wide directory; with 200-byte names a whole listing holds several MiB.
const ENTRIES: usize = 10_000;
/// What the client may hold at once: a few pages of a listing and the connections' buffers.
const BOUND: usize = 2 << 20;

fn wide_dir(root: &std::path::Path) {
    fs::create_dir(root).unwrap();
    for i in 0..ENTRIES {
        fs::write(root.join(format!("{i:06}-{}", "x".repeat(193))), "").unwrap();
    }
}

#[test]
fn removing_and_copying_a_wide_directory_hold_a_bounded_listing() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !ganesha::available() {
        eprintln!("nfs_client_bounds: needs root, nfs-ganesha and rpcbind: skipped");
        return;
    }
    let g = Ganesha::start();
    let opts = ClientOptions {
        timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    };
    let c = NfsClient::new("127.0.0.1", &g.share(), opts).unwrap();
    wide_dir(&g.export.join("wide"));
    c.mkdir("copy", 0o755).unwrap();
    c.connect().unwrap();
    // The measure sees a whole listing: readdir (for the driver's own directories) holds one.
    let (names, peak) = peak_during(|| c.readdir("wide").unwrap().len());
    assert_eq!(names, ENTRIES);
    assert!(peak > BOUND, "a whole listing held only {peak} bytes");

    let (stats, peak) = peak_during(|| {
        c.copy_dir_contents("wide", "copy", &AtomicBool::new(false))
            .unwrap()
    });
    assert_eq!(stats.files, ENTRIES as u64);
    assert_eq!(
        fs::read_dir(g.export.join("copy")).unwrap().count(),
        ENTRIES
    );
    assert!(peak < BOUND, "copying held {peak} bytes at once");

    let (removed, peak) = peak_during(|| c.remove_tree("wide").unwrap());
    assert!(removed && !g.export.join("wide").exists());
    assert!(peak < BOUND, "removing held {peak} bytes at once");
    assert!(c.remove_tree("copy").unwrap());
}
