//! The run's environment in the report, and notes on how far its figures can be trusted.

use crate::config::Config;
use crate::fixture::{FsKind, LoopFs};
use crate::pairs::PairSet;
use crate::report::{Report, Run};
use crate::side::Side;
use crate::{baseline, driver};

pub fn environment(r: &mut Report, cfg: &Config, fx: &LoopFs, sides: &[Side; 2]) {
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
            sides[0].paths.dirs.state.display(),
            sides[1].paths.dirs.state.display()
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

/// Notes on the machine's load and the filesystem's steadiness during the pair rounds.
pub fn trust_notes(r: &mut Report, pairs: &[(usize, PairSet)]) {
    r.env(
        "loadavg_at_end",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim(),
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
}
