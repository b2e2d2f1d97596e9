//! NodeStage + NodePublish of a fresh 1 GiB device through the device backend (probe, mkfs
//! with our UUID, probe, record, mount, bind) against doing it by hand on the same kind of
//! device: `mkfs.ext4 -q` + `mount` + `mount --bind`. Goal: ratio <= 1.05. Root only.
//! FERROVOL_BENCH_QUICK=1 runs 3 rounds instead of 10.

#[path = "../tests/common/disks.rs"]
mod disks;

use disks::{image, run, wait_until, Disk};
use ferrovol::backend::device::DeviceBackend;
use ferrovol::backend::{ControllerBackend, NodeBackend};
use ferrovol::discovery::{Filters, State};
use ferrovol::node::Target;
use ferrovol::state::Journal;
use ferrovol::volume::{
    AccessKind, AccessMode, Capability, CapacityRange, CreateRequest, PublishRequest, StageRequest,
    VolumeId,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;

fn cap() -> Capability {
    Capability {
        kind: AccessKind::Mount,
        mode: AccessMode::SingleNodeWriter,
        fs_type: String::new(),
        mount_flags: Vec::new(),
    }
}

/// One round through the backend: the timed part is stage + publish only.
fn ours(dir: &Path, round: usize) -> Duration {
    let disk = Disk::attach(&image(dir, &format!("ours{round}.img"), 1024));
    let state = dir.join(format!("state{round}"));
    let filters = Filters::for_node(&[disk.path().to_string()], &[], None, &[], None).unwrap();
    let (journal, live) = Journal::open(&state.join("journal")).unwrap();
    let b = DeviceBackend::open("bench".into(), &state, filters, journal, &live, false).unwrap();
    assert!(wait_until(b.inventory(), Duration::from_secs(5), |es| es
        .iter()
        .any(|e| e.state == State::Active && e.device.candidate)));
    let info = b
        .create(&CreateRequest {
            name: format!("v{round}"),
            capacity: CapacityRange::default(),
            capabilities: vec![cap()],
            parameters: BTreeMap::from([("fsType".to_string(), "ext4".to_string())]),
            topology: None,
            content_source: None,
        })
        .and_then(|done| done.wait())
        .unwrap();
    let id = VolumeId::parse(&info.id).unwrap().unwrap();
    let staging = Target::unchecked(&dir.join(format!("ours-staging{round}")));
    let target = Target::unchecked(&dir.join(format!("ours-target{round}")));
    let t = Instant::now();
    b.stage(&StageRequest {
        id: id.clone(),
        staging: staging.clone(),
        capability: cap(),
        volume_context: BTreeMap::new(),
        publish_context: BTreeMap::new(),
    })
    .unwrap();
    b.publish(&PublishRequest {
        id: id.clone(),
        staging: Some(staging.clone()),
        target: target.clone(),
        read_only: false,
        capability: cap(),
        volume_context: BTreeMap::new(),
        publish_context: BTreeMap::new(),
    })
    .unwrap();
    let took = t.elapsed();
    b.unpublish(&id, &target).unwrap();
    b.unstage(&id, &staging).unwrap();
    b.delete(&id).and_then(|done| done.wait()).unwrap();
    took
}

/// The same by hand.
fn by_hand(dir: &Path, round: usize) -> Duration {
    let disk = Disk::attach(&image(dir, &format!("hand{round}.img"), 1024));
    let staging = dir.join(format!("hand-staging{round}"));
    let target = dir.join(format!("hand-target{round}"));
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::create_dir_all(&target).unwrap();
    let (s, tg) = (staging.to_str().unwrap(), target.to_str().unwrap());
    let t = Instant::now();
    run("mkfs.ext4", &["-q", disk.path()]);
    run("mount", &[disk.path(), s]);
    run("mount", &["--bind", s, tg]);
    let took = t.elapsed();
    run("umount", &[tg]);
    run("umount", &[s]);
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rounds = if std::env::var_os("FERROVOL_BENCH_QUICK").is_some() {
        3
    } else {
        10
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut h) = (Vec::new(), Vec::new());
    // Interleaved, so both see the same machine load.
    for r in 0..rounds {
        h.push(by_hand(dir.path(), r));
        a.push(ours(dir.path(), r));
    }
    let (a, h) = (median(a), median(h));
    println!(
        "NodeStage + NodePublish of a fresh {} GiB device (median of {rounds}):",
        GIB >> 30
    );
    println!("  device backend:                          {a:>10.2?}");
    println!("  mkfs.ext4 -q + mount + mount --bind:     {h:>10.2?}");
    println!(
        "  ratio: {:.3} (goal <= 1.05)",
        a.as_secs_f64() / h.as_secs_f64()
    );
}
