//! Memory of the driver (idle, with N volumes, after churn, restarted) and its start-up time.

use crate::config::Config;
use crate::driver::{self, Memory};
use crate::report::{self, Report};
use crate::side::Side;
use crate::{mib, phase, PRECREATE_CONCURRENCY, RESTARTS};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// Memory under churn: ten full ListVolumes of the N volumes, then `churn_pairs`
/// create+delete pairs at concurrency 16.
pub struct Churn {
    pub after: driver::Memory,
    pub list_seconds: f64,
    pub pairs_seconds: f64,
}

pub fn measure_churn(cfg: &Config, rt: &Runtime, side: &Side) -> Churn {
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

const IDLE_RSS_GOAL_MIB: f64 = 10.0;
const CHURN_RSS_GOAL_MIB: f64 = 16.0;

/// What the run measured about memory and start-up, for the rows below.
pub struct Figures {
    pub idle: Memory,
    pub with_n: Memory,
    pub churn: Churn,
    /// Both drivers after the pair and NodePublish runs.
    pub after_runs: [Memory; 2],
    pub restarted: Memory,
    /// The baseline binary's empty driver, idle after start.
    pub old_idle: Option<Memory>,
    /// Spawn to first Probe of every restart, with 0 and with N volumes.
    pub ready: [Vec<Duration>; 2],
    /// Pre-creating the N volumes through the driver, and as durable-minimum creates.
    pub precreate: Duration,
    pub bare_precreate: Duration,
}

pub fn rows(r: &mut Report, cfg: &Config, n: usize, f: &mut Figures) {
    r.add(
        "precreate_seconds",
        &format!("pre-create {n} vols via driver, c={PRECREATE_CONCURRENCY}"),
        f.precreate.as_secs_f64(),
        "s",
        &format!("durable-minimum creates, {PRECREATE_CONCURRENCY} thr"),
        f.bare_precreate.as_secs_f64(),
        false,
    );
    r.env(
        "precreate_volumes_per_s",
        n as f64 / f.precreate.as_secs_f64(),
    );

    r.section("memory of the driver process (/proc/<pid>/status)");
    let idle = f.idle;
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
            f.with_n.rss_kib,
            "VmRSS idle after start",
            idle.rss_kib,
        ),
        (
            "hwm_with_n_mib",
            format!("VmHWM after all runs, {n} vols"),
            f.after_runs[1].hwm_kib,
            "VmHWM after all runs, 0 vols",
            f.after_runs[0].hwm_kib,
        ),
        (
            "rss_restart_n_mib",
            format!("VmRSS restarted with {n} vols"),
            f.restarted.rss_kib,
            "VmRSS idle after start",
            idle.rss_kib,
        ),
        (
            "hwm_restart_n_mib",
            format!("VmHWM restarted with {n} vols"),
            f.restarted.hwm_kib,
            "VmHWM idle after start",
            idle.hwm_kib,
        ),
    ] {
        r.add(key, &label, mib(value), "MiB", base_label, mib(base), false);
    }
    let after = f.churn.after;
    r.add(
        "rss_after_churn_mib",
        &format!(
            "VmRSS after 10 ListVolumes of {n} + {} pairs",
            cfg.churn_pairs
        ),
        mib(after.rss_kib),
        "MiB",
        "goal",
        CHURN_RSS_GOAL_MIB,
        false,
    );
    r.add(
        "rss_anon_after_churn_mib",
        "RssAnon after churn (heap, arenas, stacks)",
        mib(after.anon_kib),
        "MiB",
        "RssAnon with N vols, before churn",
        mib(f.with_n.anon_kib),
        false,
    );
    r.env("threads_after_churn", after.threads);
    r.env("threads_idle", idle.threads);
    r.env("churn_list_seconds", f.churn.list_seconds);
    r.env("churn_pairs_seconds", f.churn.pairs_seconds);
    if let Some(m) = f.old_idle {
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
    let ready_n = median(&mut f.ready[1]);
    let ready_0 = median(&mut f.ready[0]);
    r.add(
        "startup_n_ms",
        &format!("restart with {n} vols (median of {RESTARTS})"),
        ready_n,
        "ms",
        &format!("restart with 0 vols (median of {RESTARTS})"),
        ready_0,
        false,
    );
}

/// The two memory goals.
pub fn goals(r: &mut Report, cfg: &Config, n: usize, f: &Figures) {
    let idle_mib = mib(f.idle.rss_kib);
    r.goal(
        &format!("idle VmRSS <= {IDLE_RSS_GOAL_MIB} MiB"),
        idle_mib <= IDLE_RSS_GOAL_MIB,
        format!("{idle_mib:.2} MiB, VmHWM {:.2} MiB", mib(f.idle.hwm_kib)),
    );
    let after = f.churn.after;
    let churn_mib = mib(after.rss_kib);
    r.goal(
        &format!("VmRSS after churn <= {CHURN_RSS_GOAL_MIB} MiB"),
        churn_mib <= CHURN_RSS_GOAL_MIB,
        format!(
            "{churn_mib:.2} MiB (RssAnon {:.2} MiB, {} threads) after 10 ListVolumes of {n} and {} pairs",
            mib(after.anon_kib),
            after.threads,
            cfg.churn_pairs
        ),
    );
}
