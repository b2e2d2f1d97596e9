//! A kill -9 campaign against the device backend (root only, real loop devices): each run drives
//! one volume through claim, format, stage, write, unstage and release, and kills the driver at
//! a random moment; the restarted driver must have lost no acknowledged volume or data, touched
//! no foreign byte and leaked no claim. `FERROVOL_FAULT_RUNS` sets the number of runs (20),
//! `FERROVOL_FAULT_SEED` the seed (printed, so a failing run can be repeated).

use crate::common;
use crate::common::disks;

use common::*;
use disks::{image, run, Disk};
use ferrovol::cli::devices::read_inventory;
use ferrovol::discovery::Claim;
use ferrovol::os::blkid::probe_all;
use ferrovol::proto as csi;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the workload saw acknowledged before the kill.
#[derive(Debug, Default, Clone)]
struct Progress {
    id: Option<String>,
    written: bool,
    delete_sent: bool,
    deleted: bool,
}

#[derive(Debug, Default)]
struct Counts {
    runs: u32,
    volumes_lost: u32,
    data_lost: u32,
    foreign_changed: u32,
    claims_leaked: u32,
    released: u32,
    left_unwiped: u32,
    cleanup_failed: u32,
    /// Where the kills landed: the last step acknowledged before each.
    killed_after: std::collections::BTreeMap<&'static str, u32>,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const MARK_AT: u64 = 1 << 20;

fn cap(block: bool) -> csi::VolumeCapability {
    if block {
        block_cap()
    } else {
        mount_cap()
    }
}

fn marker(run: u32) -> Vec<u8> {
    format!("written by run {run}").into_bytes()
}

/// The pod's write: a file on the filesystem, or bytes on the raw device; fsynced.
fn write_marker(target: &Path, block: bool, run: u32) -> std::io::Result<()> {
    if block {
        let mut f = std::fs::OpenOptions::new().write(true).open(target)?;
        f.seek(SeekFrom::Start(MARK_AT))?;
        f.write_all(&marker(run))?;
        f.sync_all()
    } else {
        let mut f = std::fs::File::create(target.join("marker"))?;
        f.write_all(&marker(run))?;
        f.sync_all()
    }
}

fn read_marker(target: &Path, block: bool, run: u32) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; marker(run).len()];
    if block {
        let mut f = std::fs::File::open(target)?;
        f.seek(SeekFrom::Start(MARK_AT))?;
        f.read_exact(&mut buf)?;
        Ok(buf)
    } else {
        std::fs::read(target.join("marker"))
    }
}

/// One volume's life; records each acknowledged step in `p`. Stops at the first error (the
/// kill).
async fn workload(
    controller: csi::controller_client::ControllerClient<tonic::transport::Channel>,
    node: csi::node_client::NodeClient<tonic::transport::Channel>,
    paths: (PathBuf, PathBuf),
    run: u32,
    block: bool,
    p: Arc<Mutex<Progress>>,
) -> Result<(), String> {
    let (staging, target) = paths;
    let (mut c, mut n) = (controller, node);
    let mut req = create_req(&format!("v{run}"), 0, cap(block));
    req.parameters.insert("backend".into(), "device".into());
    if !block {
        req.parameters.insert("fsType".into(), "ext4".into());
    }
    let e = |e: tonic::Status| e.to_string();
    let id = c
        .create_volume(req)
        .await
        .map_err(e)?
        .into_inner()
        .volume
        .unwrap()
        .volume_id;
    p.lock().unwrap().id = Some(id.clone());
    n.node_stage_volume(stage_req(&id, &staging, cap(block)))
        .await
        .map_err(e)?;
    n.node_publish_volume(publish_req(&id, &staging, &target, cap(block), false))
        .await
        .map_err(e)?;
    write_marker(&target, block, run).map_err(|e| e.to_string())?;
    p.lock().unwrap().written = true;
    n.node_unpublish_volume(unpublish_req(&id, &target))
        .await
        .map_err(e)?;
    n.node_unstage_volume(unstage_req(&id, &staging))
        .await
        .map_err(e)?;
    p.lock().unwrap().delete_sent = true;
    c.delete_volume(delete_req(&id)).await.map_err(e)?;
    p.lock().unwrap().deleted = true;
    Ok(())
}

async fn try_tear_down(d: &Driver, id: &str, staging: &Path, target: &Path) -> Result<(), String> {
    let mut n = d.node();
    n.node_unpublish_volume(unpublish_req(id, target))
        .await
        .map_err(|e| format!("unpublish: {e}"))?;
    n.node_unstage_volume(unstage_req(id, staging))
        .await
        .map_err(|e| format!("unstage: {e}"))?;
    d.controller()
        .delete_volume(delete_req(id))
        .await
        .map_err(|e| format!("delete: {e}"))?;
    Ok(())
}

#[tokio::test]
async fn kill_9_at_random_points_loses_nothing_acknowledged() {
    let runs: u32 = std::env::var("FERROVOL_FAULT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("FERROVOL_FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("device fault campaign: {runs} runs, FERROVOL_FAULT_SEED={seed}");
    let mut rng = Rng(seed);

    let dir = tempfile::tempdir().unwrap();
    let pool: Vec<Disk> = (0..2)
        .map(|i| Disk::attach(&image(dir.path(), &format!("pool{i}.img"), 64)))
        .collect();
    // Someone else's disk, named by the include rules like the pool: never to be written.
    let foreign = Disk::attach(&image(dir.path(), "foreign.img", 64));
    run("mkfs.ext4", &["-q", "-F", foreign.path()]);
    let foreign_bytes = std::fs::read(&foreign.image).unwrap();

    let mut b = Driver::builder().arg("--backends").arg("device");
    for disk in pool.iter().chain([&foreign]) {
        b = b.arg("--device-include").arg(disk.path());
    }
    let mut d = b.start().await;
    let mut counts = Counts::default();
    // Kills land uniformly over a whole volume's life, as long as the last complete one took.
    let mut span = Duration::from_millis(300);
    for run in 0..runs {
        counts.runs += 1;
        let block = rng.next() % 2 == 0;
        let delay = span.mul_f64((rng.next() % 1000) as f64 / 1000.0);
        let name = format!("v{run}");
        let (staging, target) = (d.staging(&name), d.target(&name, "pod"));
        let progress = Arc::new(Mutex::new(Progress::default()));
        let started = std::time::Instant::now();
        let task = tokio::spawn(workload(
            d.controller(),
            d.node(),
            (staging.clone(), target.clone()),
            run,
            block,
            progress.clone(),
        ));
        tokio::time::sleep(delay).await;
        if task.is_finished() {
            span = started.elapsed();
        }
        d.kill9();
        let outcome = task.await.unwrap();
        let p = progress.lock().unwrap().clone();
        let step = match (&p.id, p.written, p.delete_sent, p.deleted) {
            (_, _, _, true) => "all done",
            (_, _, true, _) => "unstaged, delete sent",
            (_, true, _, _) => "written",
            (Some(_), ..) => "created",
            (None, ..) => "nothing",
        };
        *counts.killed_after.entry(step).or_default() += 1;
        d.restart().await;

        let ids = d.list_ids().await;
        let id = p.id.clone().or_else(|| {
            ids.iter()
                .find(|i| i.ends_with(&format!("/{name}")))
                .cloned()
        });
        if let Some(id) = id.filter(|_| !p.deleted) {
            let listed = ids.contains(&id);
            if p.id.is_some() && !p.delete_sent && !listed {
                println!("run {run}: acknowledged volume {id} is gone ({outcome:?})");
                counts.volumes_lost += 1;
            }
            if listed && p.written && !p.delete_sent {
                let mut n = d.node();
                let staged = n
                    .node_stage_volume(stage_req(&id, &staging, cap(block)))
                    .await
                    .map_err(|e| e.to_string());
                let published = n
                    .node_publish_volume(publish_req(&id, &staging, &target, cap(block), false))
                    .await
                    .map_err(|e| e.to_string());
                let read = staged
                    .and(published)
                    .and_then(|_| read_marker(&target, block, run).map_err(|e| e.to_string()));
                match read {
                    Ok(m) if m == marker(run) => {}
                    other => {
                        println!("run {run}: {id} lost its data: {other:?}");
                        counts.data_lost += 1;
                    }
                }
            }
            if listed {
                if let Err(e) = try_tear_down(&d, &id, &staging, &target).await {
                    println!("run {run}: cleaning up {id} failed: {e}\n{}", d.log());
                    counts.cleanup_failed += 1;
                }
            }
        }

        if std::fs::read(&foreign.image).unwrap() != foreign_bytes {
            println!("run {run}: the foreign disk changed");
            counts.foreign_changed += 1;
        }
        for e in read_inventory(&d.state_dir()).unwrap() {
            if !pool.iter().any(|disk| disk.dev == e.device.dev_path) {
                continue;
            }
            match e.claim {
                Claim::Unclaimed => {}
                Claim::Claimed { volume, .. } => {
                    println!(
                        "run {run}: {volume} still claims {}",
                        e.device.dev_path.display()
                    );
                    counts.claims_leaked += 1;
                }
                Claim::Released { volume, reason, .. } => {
                    println!(
                        "run {run}: {volume} left {} Released: {reason}",
                        e.device.dev_path.display()
                    );
                    counts.released += 1;
                }
            }
        }
        for disk in &pool {
            if !probe_all(&disk.dev).unwrap().is_empty() {
                println!("run {run}: {} not wiped", disk.path());
                counts.left_unwiped += 1;
            }
        }
        // Leave the pool as the next run expects it, whatever this one found.
        for disk in &pool {
            run_quiet_wipe(disk);
        }
    }
    println!("device fault campaign (seed {seed}): {counts:?}");
    assert_eq!(
        (
            counts.volumes_lost,
            counts.data_lost,
            counts.foreign_changed,
            counts.claims_leaked,
            counts.released,
            counts.left_unwiped,
            counts.cleanup_failed
        ),
        (0, 0, 0, 0, 0, 0, 0),
        "seed {seed}: {counts:?}\n{}",
        d.log()
    );
}

/// Blanks a pool disk the campaign found not wiped, so one finding does not cascade.
fn run_quiet_wipe(disk: &Disk) {
    if !probe_all(&disk.dev).unwrap().is_empty() {
        run("wipefs", &["-a", "-q", disk.path()]);
    }
}
