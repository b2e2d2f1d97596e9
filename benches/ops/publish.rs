//! NodePublish latency against bind mounts, with a small and with a large mount table.

use crate::config::Config;
use crate::driver::{self, Published};
use crate::fixture::{self, LoopFs};
use crate::report::{self, Report};
use crate::side::Side;
use crate::{baseline, mib, phase};
use std::time::Duration;
use tokio::runtime::Runtime;

/// NodePublish latencies of both drivers and the three references, interleaved in rounds; then
/// NodePublish and mount(2) with a small and with a large mount table, interleaved too.
#[derive(Default)]
pub struct PublishSet {
    pub driver: [Vec<Duration>; 2],
    pub bind_syscall: Vec<Duration>,
    pub bind_command: Vec<Duration>,
    pub write_atomic: Vec<Duration>,
    /// [few mounts, many mounts]
    pub driver_mounts: [Vec<Duration>; 2],
    pub driver_unpublish_mounts: [Vec<Duration>; 2],
    pub bind_syscall_mounts: [Vec<Duration>; 2],
    /// ferrovol::os::mountinfo::mount_at (read and parse the whole table), in-process.
    pub mount_at: [Vec<Duration>; 2],
    /// Reading /proc/self/mountinfo alone.
    pub read_table: [Vec<Duration>; 2],
    /// Mount table sizes of the two cases.
    pub mount_counts: [usize; 2],
}

pub fn measure_publish(
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
pub fn measure_publish_mounts(
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

/// The NodePublish rows: against bind mounts, with N volumes, and with many mounts on the node;
/// `hwm` is the empty driver's VmHWM before and after the many-mounts rounds.
pub fn rows(r: &mut Report, n: usize, publish: &mut PublishSet, hwm: [driver::Memory; 2]) {
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
        mib(hwm[1].hwm_kib),
        "MiB",
        "VmHWM, 0 vols, before",
        mib(hwm[0].hwm_kib),
        false,
    );
    r.env("write_atomic_p50_us", np(&mut publish.write_atomic, 50.0));
}
