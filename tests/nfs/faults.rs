//! A fault campaign against the NFS driver, through real gRPC against the real binary and a
//! real nfs-ganesha, once over NFSv3 and once over NFSv4.1 (`<test>::v3`, `<test>::v41`). Each run either starts an operation (create, delete or archive, snapshot,
//! restore, clone) under a fault (kill -9 at a crash point, a failed record removal, kill -9
//! after a random delay, or the server stalled with SIGSTOP for up to 2.5 s against a 1 s NFS
//! deadline), or, as a CO's backoff does, comes back to one whose first attempt failed and
//! retries it until it succeeds or is refused for good; at the end every pending one is. SubDirs
//! are drawn from a small pool, so volumes keep meeting directories other volumes had or have.
//! After every run it counts acknowledged volumes whose data is lost and foreign bytes changed;
//! at the end, with everything deleted, what is left behind, and operations that never
//! succeeded. It prints the counts and requires all of them to be zero.
//!
//! `FERROVOL_NFS_FAULT_RUNS` (default 20) and `FERROVOL_NFS_FAULT_SEED` (default 1) choose the
//! campaign. Needs root, nfs-ganesha (VFS) and rpcbind: skipped, saying so, without them.

use crate::common;
use crate::common::ganesha;
use crate::common::nfs;
use crate::common::nfs_snap;

use common::*;
use ferrovol::proto as csi;
use ganesha::Ganesha;
use nfs::*;
use nfs_snap::*;
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::PathBuf;
use std::time::Duration;
use tonic::Code;

const POOL: [&str; 4] = ["a", "b", "c", "d"];
const PATTERN: (&str, &str) = ("subDir", "${pvc.metadata.namespace}/${pvc.metadata.name}");

/// xorshift64: a campaign is reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Create,
    Delete,
    Snapshot,
    Restore,
    Clone,
}

impl Op {
    fn crash_points(self) -> &'static [&'static str] {
        match self {
            Op::Create => &["nfs-create:after-intent", "nfs-create:before-ready"],
            Op::Delete => &["nfs-delete:after-intent", "nfs-record:remove"],
            Op::Snapshot => &[
                "nfs-snapshot:after-intent",
                "nfs-snapshot:before-copy",
                "nfs-copy:after-file",
                "nfs-snapshot:before-ready",
            ],
            Op::Restore | Op::Clone => &[
                "nfs-restore:after-intent",
                "nfs-copy:after-file",
                "nfs-restore:before-rename",
                "nfs-restore:before-ready",
            ],
        }
    }
}

#[derive(Debug)]
enum Fault {
    CrashAt(&'static str),
    KillAfter(Duration),
    Stall(Duration),
}

struct Vol {
    dir: PathBuf,
    content: String,
}

#[derive(Default)]
struct Counts {
    acknowledged: usize,
    lost: usize,
    foreign_changed: usize,
    leaked: usize,
    stuck: usize,
    crashes: usize,
    kills: usize,
    stalls: usize,
}

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn signal_server(g: &Ganesha, sig: i32) {
    let pid: i32 = fs::read_to_string(g.dir().join("ganesha.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: signalling the test's own ganesha.
    unsafe { libc::kill(pid, sig) };
}

/// One attempt of `op`; what it made, if anything.
async fn attempt(d: &Driver, op: Op, req: &Request) -> Result<Option<csi::Volume>, tonic::Status> {
    let mut ctl = d.controller();
    match (op, req) {
        (Op::Delete, Request::Delete(id)) => ctl.delete_volume(delete_req(id)).await.map(|_| None),
        (Op::Snapshot, Request::Snapshot(name, src)) => {
            let s = ctl
                .create_snapshot(snap_req(name, src))
                .await?
                .into_inner()
                .snapshot
                .unwrap();
            if s.ready_to_use {
                Ok(None)
            } else {
                Err(tonic::Status::unavailable("not ready yet"))
            }
        }
        (_, Request::Create(r)) => Ok(ctl.create_volume(*r.clone()).await?.into_inner().volume),
        _ => unreachable!("request matches its operation"),
    }
}

enum Request {
    Create(Box<csi::CreateVolumeRequest>),
    Delete(String),
    Snapshot(String, String),
}

both_versions_async!(fault_campaign_loses_and_touches_nothing);

async fn fault_campaign_loses_and_touches_nothing(proto: Proto) {
    if !usable("nfs_faults") {
        return;
    }
    let runs = env_or("FERROVOL_NFS_FAULT_RUNS", 20);
    let mut rng = Rng(env_or("FERROVOL_NFS_FAULT_SEED", 1)
        .max(1)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15));
    // The class says `nfsvers: auto`: NFSv4.1 against the v4-only server, NFSv3 against the other.
    let g = proto.start();
    let mut d = nfs_driver(&g, &["--nfs-timeout", "1s"]).await;
    let foreign = g.export.join("team/foreign");
    fs::create_dir_all(&foreign).unwrap();
    fs::write(foreign.join("precious"), "not a volume").unwrap();
    let mut vols: BTreeMap<String, Vol> = BTreeMap::new();
    let mut snaps: Vec<String> = Vec::new();
    let mut n = Counts::default();
    let mut deleting: HashSet<String> = HashSet::new();

    // Operations whose first attempt failed: the CO comes back to them later, after others ran.
    let mut pending: Vec<(Op, Request, u64)> = Vec::new();
    for run in 0..runs + 1 {
        let drain = run == runs;
        let retry = !pending.is_empty() && (drain || rng.next(2) == 0);
        let settled: Vec<(Op, Request, Option<Option<csi::Volume>>)> = if retry {
            let picked: Vec<_> = if drain {
                std::mem::take(&mut pending)
            } else {
                vec![pending.remove(rng.next(pending.len() as u64) as usize)]
            };
            let mut out = Vec::new();
            for (op, req, at) in picked {
                eprintln!("run {run}: the CO retries run {at}'s {op:?}");
                let made = settle(&d, op, &req, &mut n).await;
                out.push((op, req, made));
            }
            out
        } else if drain {
            break;
        } else {
            let (op, req) = pick_operation(&mut rng, &g, run, &vols, &snaps);
            let fault = match rng.next(3) {
                0 => {
                    let points = op.crash_points();
                    Fault::CrashAt(points[rng.next(points.len() as u64) as usize])
                }
                1 => Fault::KillAfter(Duration::from_millis(rng.next(40))),
                _ => Fault::Stall(Duration::from_millis(rng.next(2500))),
            };
            eprintln!("run {run}: {op:?} under {fault:?}");
            let first = under(&mut d, &g, op, &req, &fault, &mut n).await;
            match first {
                Ok(v) => vec![(op, req, Some(v))],
                Err(s) if refused(&s, &req) => vec![],
                Err(_) => {
                    if let Request::Delete(id) = &req {
                        deleting.insert(id.clone());
                    }
                    pending.push((op, req, run));
                    vec![]
                }
            }
        };
        for (_, req, made) in settled {
            match (made, &req) {
                (Some(Some(v)), Request::Create(_)) => {
                    let dir = g.export.join(sub_dir(&v));
                    let content = format!("{} of run {run}", v.volume_id);
                    fs::write(dir.join("data"), &content).unwrap();
                    vols.insert(v.volume_id, Vol { dir, content });
                    n.acknowledged += 1;
                }
                (Some(_), Request::Delete(id)) => {
                    vols.remove(id);
                    deleting.remove(id);
                }
                (Some(_), Request::Snapshot(s, _)) => snaps.push(format!("nfs/snap/{s}")),
                _ => {}
            }
        }
        // A volume the CO asked to delete may have lost its data already: not counted.
        for (id, v) in vols.iter().filter(|(id, _)| !deleting.contains(*id)) {
            if fs::read_to_string(v.dir.join("data")).ok().as_deref() != Some(v.content.as_str()) {
                eprintln!("run {run}: acknowledged volume {id} lost its data");
                n.lost += 1;
            }
        }
        if fs::read_to_string(foreign.join("precious")).ok().as_deref() != Some("not a volume")
            || dir_names(&foreign) != vec!["precious".to_string()]
        {
            eprintln!("run {run}: the foreign directory changed");
            n.foreign_changed += 1;
        }
    }

    // Everything goes, without faults; what is left besides the foreign directory and the
    // archives the deletes made is leaked.
    for s in &snaps {
        d.controller()
            .delete_snapshot(csi::DeleteSnapshotRequest {
                snapshot_id: s.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let ids: Vec<String> = vols.keys().cloned().collect();
    for id in ids {
        d.delete(&id).await;
    }
    let archives = count_archived(&g);
    let mut left: Vec<String> = dir_names(&g.export.join("team"))
        .into_iter()
        .filter(|e| e != "foreign" && !e.starts_with("archived-"))
        .collect();
    for dir in ["snapshot-data", "staging", "snapshots", "volumes"] {
        left.extend(
            dir_names(&g.export.join(".ferrovol").join(dir))
                .into_iter()
                .filter(|e| !e.starts_with(".ferrovol-tmp"))
                .map(|e| format!(".ferrovol/{dir}/{e}")),
        );
    }
    left.extend(
        dir_names(&g.export)
            .into_iter()
            .filter(|e| e != "team" && e != ".ferrovol"),
    );
    n.leaked = left.len();
    println!(
        "nfs fault campaign: {runs} runs ({} kill -9 at a crash point or failed record removal, {} kill -9 after a delay, {} server stalls): {} volumes acknowledged, {} lost, {} foreign changes, {} directories leaked {left:?}, {} operations stuck, {archives} archives kept",
        n.crashes, n.kills, n.stalls, n.acknowledged, n.lost, n.foreign_changed, n.leaked, n.stuck
    );
    assert_eq!(
        (n.lost, n.foreign_changed, n.leaked, n.stuck),
        (0, 0, 0, 0),
        "{}",
        d.log()
    );
}

fn count_archived(g: &Ganesha) -> usize {
    dir_names(&g.export.join("team"))
        .iter()
        .filter(|e| e.starts_with("archived-"))
        .count()
}

/// A new operation on what exists now; subDirs come from `POOL`, so they keep meeting.
fn pick_operation(
    rng: &mut Rng,
    g: &Ganesha,
    run: u64,
    vols: &BTreeMap<String, Vol>,
    snaps: &[String],
) -> (Op, Request) {
    let op = match rng.next(6) {
        2 if !vols.is_empty() => Op::Delete,
        3 if !vols.is_empty() => Op::Snapshot,
        4 if !snaps.is_empty() => Op::Restore,
        5 if !vols.is_empty() => Op::Clone,
        _ => Op::Create,
    };
    let on_delete = if rng.next(2) == 0 {
        "delete"
    } else {
        "archive"
    };
    let p = class(g, &[PATTERN, ("onDelete", on_delete)]);
    let leaf = POOL[rng.next(POOL.len() as u64) as usize];
    let name = format!("v{run}");
    let params = pvc(&p, "team", leaf, &name);
    let mut pick = |keys: Vec<String>| keys[rng.next(keys.len() as u64) as usize].clone();
    let req = match op {
        Op::Create => Request::Create(Box::new(req(&name, &params))),
        Op::Delete => Request::Delete(pick(vols.keys().cloned().collect())),
        Op::Snapshot => Request::Snapshot(format!("s{run}"), pick(vols.keys().cloned().collect())),
        Op::Restore => Request::Create(Box::new(from(
            &name,
            &params,
            of_snapshot(&pick(snaps.to_vec())),
        ))),
        Op::Clone => Request::Create(Box::new(from(
            &name,
            &params,
            of_volume(&pick(vols.keys().cloned().collect())),
        ))),
    };
    (op, req)
}

/// What the driver refuses for good: a create whose subDir is another's or whose name is
/// taken, a create or snapshot whose source is gone since.
fn refused(s: &tonic::Status, req: &Request) -> bool {
    match req {
        Request::Create(_) => matches!(
            s.code(),
            Code::FailedPrecondition | Code::AlreadyExists | Code::NotFound
        ),
        Request::Snapshot(..) => s.code() == Code::NotFound,
        Request::Delete(_) => false,
    }
}

/// The first attempt of `op` under `fault`; the driver runs again, without faults, after it.
async fn under(
    d: &mut Driver,
    g: &Ganesha,
    op: Op,
    req: &Request,
    fault: &Fault,
    n: &mut Counts,
) -> Result<Option<csi::Volume>, tonic::Status> {
    if let Fault::CrashAt(point) = fault {
        // Recovery at start resumes cut-off snapshot copies, which would meet the crash point
        // while the driver starts: let them finish first.
        snapshots_settled(d, g).await;
        let var = if *point == "nfs-record:remove" {
            "FERROVOL_FAIL_AT"
        } else {
            "FERROVOL_CRASH_AT"
        };
        d.set_env(var, point);
        d.restart().await;
        n.crashes += 1;
    }
    let first = {
        let fut = attempt(d, op, req);
        match fault {
            Fault::KillAfter(t) => {
                let r = tokio::time::timeout(*t, fut).await;
                d.kill9();
                n.kills += 1;
                r.unwrap_or_else(|_| Err(tonic::Status::cancelled("killed")))
            }
            Fault::Stall(t) => {
                signal_server(g, libc::SIGSTOP);
                let r = tokio::time::timeout(*t, fut).await;
                signal_server(g, libc::SIGCONT);
                n.stalls += 1;
                r.unwrap_or_else(|_| Err(tonic::Status::cancelled("stalled")))
            }
            Fault::CrashAt(_) => fut.await,
        }
    };
    if matches!(fault, Fault::CrashAt(_) | Fault::KillAfter(_)) {
        d.remove_env("FERROVOL_CRASH_AT");
        d.remove_env("FERROVOL_FAIL_AT");
        d.restart().await;
    }
    first
}

/// Retries `op` as a CO does until it succeeds: `None` when refused for good or stuck.
async fn settle(d: &Driver, op: Op, req: &Request, n: &mut Counts) -> Option<Option<csi::Volume>> {
    for _ in 0..100 {
        match attempt(d, op, req).await {
            Ok(v) => return Some(v),
            Err(s) if refused(&s, req) => return None,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    eprintln!("{op:?} never succeeded\n{}", d.log());
    n.stuck += 1;
    None
}

/// Waits (bounded) until no snapshot record says `creating`; ListSnapshots resumes copies a
/// failure cut off, as the snapshotter's polling does.
async fn snapshots_settled(d: &Driver, g: &Ganesha) {
    let dir = g.export.join(".ferrovol/snapshots");
    for _ in 0..300 {
        let _ = list(d, "", "").await;
        let copying = dir_names(&dir)
            .iter()
            .filter(|n| n.ends_with(".json"))
            .any(|n| {
                fs::read_to_string(dir.join(n)).is_ok_and(|r| r.contains("\"state\": \"creating\""))
            });
        if !copying {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("snapshot copies never finished\n{}", d.log());
}
