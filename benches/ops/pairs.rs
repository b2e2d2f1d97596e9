//! Create+delete pairs: the driver against the release before the journal, the durable
//! minimum and the in-process replay, in interleaved rounds; their rows and their speed goals.

use crate::baseline::Kind;
use crate::config::Config;
use crate::report::{Report, Run};
use crate::side::Side;
use crate::{driver, phase};
use tokio::runtime::Runtime;

/// The pair measurements of one concurrency level, on the empty driver [0] and the one with
/// N volumes [1] (and their bare-syscall twins).
#[derive(Default)]
pub struct PairSet {
    pub driver: [Run; 2],
    /// The baseline binary's empty driver, when one was given.
    pub old: Option<Run>,
    pub durable: [Run; 2],
    pub equivalent: [Run; 2],
    /// Two no-op RPCs per iteration on the empty driver: the transport's share of a pair.
    pub transport: Run,
    /// Syncs the driver counted during the measured rounds: commits the operations waited for,
    /// and its background compaction's syncs (counted apart: no operation waits for them).
    pub syncs: [Option<driver::Syncs>; 2],
    /// The driver process's CPU time and context switches during the measured rounds.
    pub sched: [driver::Sched; 2],
}

impl PairSet {
    fn commits_per_pair(&self, i: usize) -> f64 {
        self.syncs[i].map_or(f64::NAN, |c| c.commits as f64 / self.driver[i].ops as f64)
    }

    fn cpu_us_per_pair(&self, i: usize) -> f64 {
        self.sched[i].cpu.as_secs_f64() * 1e6 / self.driver[i].ops as f64
    }

    fn switches_per_pair(&self, i: usize) -> f64 {
        self.sched[i].switches as f64 / self.driver[i].ops as f64
    }

    fn background_per_pair(&self, i: usize) -> f64 {
        self.syncs[i].map_or(f64::NAN, |c| {
            c.background as f64 / self.driver[i].ops as f64
        })
    }
}

/// What one slot of a measurement round runs.
#[derive(Clone, Copy)]
enum Job {
    Driver(usize),
    Old,
    Durable(usize),
    Equivalent(usize),
    Transport,
}

pub fn measure_pairs(
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
        Job::Transport,
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
            let mut sched = None;
            let (run, slot, commits) = match job {
                Job::Driver(i) => {
                    let side = &sides[i];
                    let tag = format!("driver{}c{conc}r{round}", side.label);
                    let before = side.syncs();
                    let sched_before = side.sched();
                    let run = rt.block_on(driver::pairs(side.ch(), conc, dur, &tag));
                    sched = Some((i, side.sched() - sched_before));
                    let used = before.zip(side.syncs()).map(|(b, a)| {
                        let used = driver::Syncs {
                            commits: a.commits - b.commits,
                            background: a.background - b.background,
                        };
                        (i, used)
                    });
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
                Job::Transport => {
                    let run = rt.block_on(driver::noop_pairs(sides[0].ch(), conc, dur));
                    (run, &mut set.transport, None)
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
            if let Some((i, s)) = sched {
                set.sched[i] += s;
            }
            if let Some((i, c)) = commits {
                let sum = set.syncs[i].get_or_insert_with(Default::default);
                sum.commits += c.commits;
                sum.background += c.background;
            }
        }
    }
    set
}

const COMMITS_GOAL_C1: f64 = 2.0;
const COMMITS_GOAL_C16: f64 = 1.0;
const VS_MAIN_GOAL: f64 = 3.0;
const VS_DURABLE_GOAL: f64 = 0.8;

/// The pair rows: against main, commits per pair, against the durable minimum and the
/// in-process replay, and scaling from 0 to N volumes; with the bench's goals.
pub fn rows(r: &mut Report, cfg: &Config, pairs: &[(usize, PairSet)], n: usize) {
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

    // Exact goals: compaction's syncs run in their own thread and are counted apart
    // (ferrovol_state_background_syncs_total), so every counted commit is one an operation
    // waited for.
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
            r.add(
                &format!("background_syncs_per_pair_c{conc}_{stage}"),
                &format!("compaction syncs per pair, c={conc}, {stage} vols"),
                p.background_per_pair(i),
                "syncs",
                "commits per pair",
                p.commits_per_pair(i),
                false,
            );
        }
        let got = p.commits_per_pair(0);
        r.goal(
            &format!("commits per pair at c={conc} <= {goal}"),
            got <= goal,
            format!(
                "{got:.3} ({} commits for {} pairs, 0 vols; {} compaction syncs apart)",
                p.syncs[0].map_or("n/a".to_string(), |c| c.commits.to_string()),
                p.driver[0].ops,
                p.syncs[0].map_or("n/a".to_string(), |c| c.background.to_string()),
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
        // The transport's share: a pair's two round trips cost the same whatever the driver
        // does inside them, and the durable minimum (in-process syscalls) pays none.
        let transport_p50 = p.transport.pct_us(50.0);
        r.add(
            &format!("transport_pair_p50_us_c{conc}"),
            &format!("2 no-op RPCs (GetPluginInfo) p50, c={conc}"),
            transport_p50,
            "us",
            &format!("driver pair p50, c={conc}, 0 vols"),
            p.driver[0].pct_us(50.0),
            false,
        );
        r.add(
            &format!("pair_p50_minus_transport_us_c{conc}"),
            &format!("driver pair p50 - 2 no-op RPCs p50, c={conc}"),
            p.driver[0].pct_us(50.0) - transport_p50,
            "us",
            &format!("durable minimum p50, {conc} thr, 0 vols"),
            p.durable[0].pct_us(50.0),
            false,
        );
        r.series(&format!("transport_pairs_c{conc}"), &p.transport);
        if *conc == 1 {
            // One pair at a time, a pair's latency is its rate: a driver whose own work cost
            // exactly the minimum's would still add the two round trips. That bounds the ratio
            // any driver behind this transport can reach at c=1 on this machine.
            for (i, stage) in ["0", n.to_string().as_str()].iter().enumerate() {
                let minimum = p.durable[i].pct_us(50.0);
                r.add(
                    &format!("transport_ceiling_c1_{stage}"),
                    &format!("minimum p50 / (minimum p50 + 2 no-op RPCs p50), c=1, {stage} vols"),
                    minimum / (minimum + transport_p50),
                    "x",
                    "goal",
                    VS_DURABLE_GOAL,
                    true,
                );
            }
        }
        let ratio = p.driver[0].median_rate() / p.durable[0].median_rate();
        r.goal(
            &format!("pairs/s c={conc} >= {VS_DURABLE_GOAL} of the durable minimum"),
            ratio >= VS_DURABLE_GOAL,
            format!("{ratio:.2}, 0 vols"),
        );
    }

    // Where the driver's time goes when the cores are busy: its own CPU per pair (every
    // thread), and how often its threads sleep and wake (each wake-up of a thread is a context
    // switch; on a VM those cost more than the RPC's own code).
    r.section("driver CPU and context switches per pair (/proc/<pid>/stat and task/*/status)");
    let c1 = pairs.iter().find(|(c, _)| *c == 1).map(|(_, p)| p);
    for (conc, p) in pairs {
        for (i, stage) in ["0", n.to_string().as_str()].iter().enumerate() {
            // At c=1 a pair's floor is four sleeps: each RPC waits once for its request and
            // once for its commit's I/O. At c=16 the baseline is the same driver at c=1.
            let (base_cpu, cpu_label, base_sw, sw_label) = match c1 {
                Some(b) if *conc != 1 => (
                    b.cpu_us_per_pair(i),
                    "same, c=1".to_string(),
                    b.switches_per_pair(i),
                    "same, c=1".to_string(),
                ),
                _ => (
                    p.driver[i].pct_us(50.0),
                    format!("driver pair p50, c={conc}"),
                    4.0,
                    "2 per RPC: request and commit waits".to_string(),
                ),
            };
            r.add(
                &format!("driver_cpu_us_per_pair_c{conc}_{stage}"),
                &format!("driver CPU per pair, c={conc}, {stage} vols"),
                p.cpu_us_per_pair(i),
                "us",
                &cpu_label,
                base_cpu,
                false,
            );
            r.add(
                &format!("driver_switches_per_pair_c{conc}_{stage}"),
                &format!("driver context switches per pair, c={conc}, {stage} vols"),
                p.switches_per_pair(i),
                "switches",
                &sw_label,
                base_sw,
                false,
            );
        }
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
    r.note(
        "a driver pair commits the state journal twice (create, delete; fdatasync of one \
         zero-filled log, data only, shared by concurrent commits); the durable minimum fsyncs \
         twice too, but unshared; 'driver-equiv. in-process' runs the backend's calls and the same \
         journal without gRPC, so driver/equiv. is the cost of gRPC and the driver around them; \
         '2 no-op RPCs' is the transport alone (GetPluginInfo, answered in place): its p50 \
         subtracted from the driver's is the driver's own work, comparable with the in-process \
         durable minimum",
    );
}
