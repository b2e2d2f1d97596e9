//! Prometheus metrics: RPC counts and latencies by method and gRPC code, rendered as text
//! (served over HTTP by `crate::server::metrics`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

static COMMITS: AtomicU64 = AtomicU64::new(0);

/// Counts one durable commit (an fsync or fdatasync the driver waits for).
pub fn count_commit() {
    COMMITS.fetch_add(1, Ordering::Relaxed);
}

/// Durable commits so far in this process.
pub fn commits() -> u64 {
    COMMITS.load(Ordering::Relaxed)
}

static BACKGROUND_SYNCS: AtomicU64 = AtomicU64::new(0);

/// Counts one sync that no operation waits for (journal compaction, in its own thread).
pub fn count_background_sync() {
    BACKGROUND_SYNCS.fetch_add(1, Ordering::Relaxed);
}

/// Background syncs so far in this process.
pub fn background_syncs() -> u64 {
    BACKGROUND_SYNCS.load(Ordering::Relaxed)
}

static JOURNAL_DAMAGED: AtomicU64 = AtomicU64::new(0);
static UNEXPLAINED_DIRS: AtomicU64 = AtomicU64::new(0);

/// Whether the state journal knows it lost changes (damage found, or restored from an older
/// copy).
pub fn set_journal_damaged(damaged: bool) {
    JOURNAL_DAMAGED.store(damaged.into(), Ordering::Relaxed);
}

/// Counts directories found at start that no intact record explains and that were kept.
pub fn add_unexplained_dirs(n: u64) {
    UNEXPLAINED_DIRS.fetch_add(n, Ordering::Relaxed);
}

#[derive(Default, Clone, Copy)]
struct Series {
    count: u64,
    seconds: f64,
}

fn registry() -> &'static Mutex<BTreeMap<(&'static str, String), Series>> {
    static REG: OnceLock<Mutex<BTreeMap<(&'static str, String), Series>>> = OnceLock::new();
    REG.get_or_init(Default::default)
}

pub fn observe(method: &'static str, code: tonic::Code, millis: f64) {
    let mut reg = registry().lock().expect("metrics lock poisoned");
    let s = reg.entry((method, format!("{code:?}"))).or_default();
    s.count += 1;
    s.seconds += millis / 1000.0;
}

/// The Prometheus text exposition of everything observed so far.
pub fn render() -> String {
    let reg = registry().lock().expect("metrics lock poisoned");
    let mut out = String::new();
    out.push_str("# HELP ferrovol_rpc_total CSI calls served, by method and gRPC code.\n");
    out.push_str("# TYPE ferrovol_rpc_total counter\n");
    for ((m, c), s) in reg.iter() {
        let _ = writeln!(
            out,
            "ferrovol_rpc_total{{method=\"{m}\",code=\"{c}\"}} {}",
            s.count
        );
    }
    out.push_str("# HELP ferrovol_rpc_duration_seconds_sum Time spent serving CSI calls.\n");
    out.push_str("# TYPE ferrovol_rpc_duration_seconds_sum counter\n");
    for ((m, c), s) in reg.iter() {
        let _ = writeln!(
            out,
            "ferrovol_rpc_duration_seconds_sum{{method=\"{m}\",code=\"{c}\"}} {:.6}",
            s.seconds
        );
    }
    out.push_str("# HELP ferrovol_state_commits_total Durable commits (fsync/fdatasync) the driver waited for.\n");
    out.push_str("# TYPE ferrovol_state_commits_total counter\n");
    let _ = writeln!(out, "ferrovol_state_commits_total {}", commits());
    out.push_str("# HELP ferrovol_state_journal_damaged 1 when the state journal knows it lost changes (damaged, or restored from an older copy).\n");
    out.push_str("# TYPE ferrovol_state_journal_damaged gauge\n");
    let _ = writeln!(
        out,
        "ferrovol_state_journal_damaged {}",
        JOURNAL_DAMAGED.load(Ordering::Relaxed)
    );
    out.push_str("# HELP ferrovol_unexplained_directories Directories kept at start that no intact state record explains.\n");
    out.push_str("# TYPE ferrovol_unexplained_directories gauge\n");
    let _ = writeln!(
        out,
        "ferrovol_unexplained_directories {}",
        UNEXPLAINED_DIRS.load(Ordering::Relaxed)
    );
    out.push_str("# HELP ferrovol_state_background_syncs_total Syncs of journal compaction, which no operation waits for.\n");
    out.push_str("# TYPE ferrovol_state_background_syncs_total counter\n");
    let _ = writeln!(
        out,
        "ferrovol_state_background_syncs_total {}",
        background_syncs()
    );
    out.push_str("# HELP ferrovol_nfs_abandoned_kernel_calls Kernel calls to an NFS server still running past their deadline.\n");
    out.push_str("# TYPE ferrovol_nfs_abandoned_kernel_calls gauge\n");
    for (server, n) in crate::os::nfscalls::abandoned_calls() {
        let server = server
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = writeln!(
            out,
            "ferrovol_nfs_abandoned_kernel_calls{{server=\"{server}\"}} {n}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_observed_calls() {
        super::observe("CreateVolume", tonic::Code::Ok, 2.0);
        let text = super::render();
        assert!(
            text.contains("ferrovol_rpc_total{method=\"CreateVolume\",code=\"Ok\"}"),
            "{text}"
        );
    }
}
