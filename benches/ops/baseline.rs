//! In-process baselines: the same kernel work the driver does for a volume, with none of the
//! driver around it (no gRPC, no locks, no index, no logging), on the same filesystem.

use crate::fixture;
use crate::report::Run;
use ferrovol::os::{btrfs::BtrfsQgroups, fsutil, markers, quota::ProjectQuota, statfs};
use ferrovol::state::{Journal, Update};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which syscall sequence one create+delete pair runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The durable minimum of issue 6: mkdir (a subvolume on btrfs), the ownership xattr, the
    /// capacity limit where the filesystem enforces one (the driver sets it too), and ONE
    /// fsync, of the new directory (on XFS and ext4 that forces the log holding the mkdir and
    /// the xattr); then limit off, rmdir and ONE fsync of the parent. No sharing between
    /// threads: each operation pays its own fsync.
    DurableMinimum,
    /// The hostpath backend's calls, in order, with the driver's own journal (group commit
    /// included): statfs (once a second), mkdir, chmod, the markers xattr, quota, one journal commit; then the
    /// check for mounts inside (statx per entry), one journal commit, quota 0, an unsynced
    /// rmdir. What is left between it and the driver is
    /// gRPC, the ledger's index and locks, and logging.
    DriverEquivalent,
}

/// The capacity limit the driver would pick for the same base path, driven by the same calls.
enum Limit {
    /// XFS/ext4 project quota: the directory joins a project, the project gets a block limit.
    Project(ProjectQuota),
    /// btrfs: the volume directory is a subvolume whose qgroup gets a limit (and goes with it).
    Btrfs(BtrfsQgroups),
}

impl Limit {
    fn probe(base: &Path) -> io::Result<Option<Self>> {
        if let Some(q) = ProjectQuota::probe(base)? {
            return Ok(Some(Limit::Project(q)));
        }
        Ok(BtrfsQgroups::probe(base)?.map(Limit::Btrfs))
    }

    fn describe(&self) -> &'static str {
        match self {
            Limit::Project(_) => "project quota",
            Limit::Btrfs(_) => "btrfs qgroup",
        }
    }
}

pub struct Baseline {
    base: PathBuf,
    state: PathBuf,
    limit: Option<Limit>,
    next_project: AtomicU32,
    /// The driver's state journal, used in-process by the driver-equivalent replay.
    journal: Arc<Journal>,
    /// When the replay last ran statfs: like the driver, it reuses one for a second.
    statfs_at: std::sync::Mutex<Option<Instant>>,
}

/// Phases a record passes through, as the driver's records spell them (the journal writes
/// only Ready records; the others remain for the record-size figure's sake).
#[derive(Debug, Clone, Copy)]
#[allow(dead_code)]
pub enum Phase {
    Creating,
    Ready,
    Deleting,
}

/// A record shaped like the driver's hostpath record for volume `name`, pretty-printed as the
/// driver's store writes it (kept as plain JSON so the bench does not break when that type
/// changes; its size is what matters, and it is reported).
pub fn record_json(name: &str, phase: Phase, project_id: Option<u32>) -> Vec<u8> {
    let phase = match phase {
        Phase::Creating => "creating",
        Phase::Ready => "ready",
        Phase::Deleting => "deleting",
    };
    let rec = serde_json::json!({
        "id": format!("hostpath/{}/{name}", crate::driver::NODE),
        "name": name,
        "phase": phase,
        "kind": "mount",
        "capacity_bytes": crate::driver::CAPACITY,
        "parameters": {},
        "project_id": project_id,
        "controller_published": {},
        "staged_at": null,
        "published": {},
    });
    serde_json::to_vec_pretty(&rec).expect("record serializes")
}

impl Baseline {
    /// Volumes under `dir/volumes`, records under `dir/state`; `dir` must be on the bench fs.
    pub fn new(dir: &Path) -> io::Result<Self> {
        let base = dir.join("volumes");
        let state = dir.join("state");
        fs::create_dir_all(&base)?;
        fs::create_dir_all(&state)?;
        let limit = Limit::probe(&base)?;
        let (journal, _) = Journal::open(&state.join("journal"))?;
        Ok(Baseline {
            base,
            state,
            limit,
            journal,
            // Far from the driver's range (1<<20 + hash), so the two never share a project.
            next_project: AtomicU32::new(1 << 31),
            statfs_at: std::sync::Mutex::new(None),
        })
    }

    /// How volume sizes are enforced here, if they are.
    pub fn limit(&self) -> Option<&'static str> {
        self.limit.as_ref().map(Limit::describe)
    }

    fn project(&self) -> Option<u32> {
        match self.limit {
            Some(Limit::Project(_)) => Some(self.next_project.fetch_add(1, Ordering::Relaxed)),
            _ => None,
        }
    }

    fn make_dir(&self, dir: &Path) -> io::Result<()> {
        match &self.limit {
            Some(Limit::Btrfs(b)) => b.create_subvolume(dir),
            _ => fs::create_dir(dir),
        }
    }

    fn apply_limit(&self, dir: &Path, project: Option<u32>) -> io::Result<()> {
        let bytes = crate::driver::CAPACITY as u64;
        match (&self.limit, project) {
            (Some(Limit::Project(q)), Some(p)) => {
                q.assign(dir, p)?;
                q.set_limit(p, bytes)
            }
            (Some(Limit::Btrfs(b)), _) => b.set_limit(dir, bytes),
            _ => Ok(()),
        }
    }

    fn release_limit(&self, project: Option<u32>) -> io::Result<()> {
        match (&self.limit, project) {
            (Some(Limit::Project(q)), Some(p)) => q.set_limit(p, 0),
            _ => Ok(()),
        }
    }

    /// DurableMinimum, create half.
    fn create_durable(&self, name: &str, project: Option<u32>) -> io::Result<()> {
        let dir = self.base.join(name);
        let id = format!("hostpath/{}/{name}", crate::driver::NODE);
        self.make_dir(&dir)?;
        markers::set_owner_marker(&dir, &id)?;
        self.apply_limit(&dir, project)?;
        fs::File::open(&dir)?.sync_all()
    }

    /// DurableMinimum, delete half.
    fn delete_durable(&self, name: &str, project: Option<u32>) -> io::Result<()> {
        self.release_limit(project)?;
        fs::remove_dir(self.base.join(name))?;
        fsutil::fsync_dir(&self.base)
    }

    fn pair_driver_equivalent(&self, name: &str, project: Option<u32>) -> io::Result<()> {
        let dir = self.base.join(name);
        let id = format!("hostpath/{}/{name}", crate::driver::NODE);
        let key = format!("hostpath/{name}");
        // CreateVolume: space check (a statfs at most once a second, as the driver's creates
        // with room to spare), make and mark the directory unsynced, one commit.
        {
            let mut at = self.statfs_at.lock().expect("statfs time");
            if at.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                statfs::fs_stats(&self.base)?;
                *at = Some(Instant::now());
            }
        }
        self.make_dir(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777))?;
        markers::set_markers(
            &dir,
            &id,
            self.journal.store_id(),
            Some("0123456789abcdef"),
            self.journal.next_seq(),
        )?;
        self.apply_limit(&dir, project)?;
        self.journal.commit(vec![Update::Put {
            key: key.clone(),
            value: record_json(name, Phase::Ready, project),
        }])?;
        // DeleteVolume: nothing mounted inside, one commit, then limit off and the unsynced
        // removal (one rmdir: nobody wrote to it).
        std::hint::black_box(ferrovol::os::mountinfo::first_mount_below(&dir)?);
        self.journal.commit(vec![Update::Delete { key }])?;
        self.release_limit(project)?;
        fs::remove_dir(&dir)
    }

    fn pair(&self, kind: Kind, name: &str) -> io::Result<()> {
        let project = self.project();
        match kind {
            Kind::DurableMinimum => {
                self.create_durable(name, project)?;
                self.delete_durable(name, project)
            }
            Kind::DriverEquivalent => self.pair_driver_equivalent(name, project),
        }
    }

    /// Pairs from `threads` threads for `dur`; every name starts with `pvc-{tag}-`.
    pub fn pairs(&self, kind: Kind, threads: usize, dur: Duration, tag: &str) -> Run {
        let start = Instant::now();
        let deadline = start + dur;
        let lat: Vec<Duration> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    s.spawn(move || {
                        let mut lat = Vec::new();
                        let mut i = 0u64;
                        while Instant::now() < deadline && !fixture::stopping() {
                            let name = format!("pvc-{tag}-{t}-{i}");
                            let t0 = Instant::now();
                            self.pair(kind, &name)
                                .unwrap_or_else(|e| panic!("baseline pair {name}: {e}"));
                            lat.push(t0.elapsed());
                            i += 1;
                        }
                        lat
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        fixture::check_stop();
        Run::new(lat, start.elapsed())
    }

    /// Creates `n` volumes (the create half of the durable-minimum pair) from `threads` threads.
    pub fn precreate(&self, threads: usize, n: usize) -> Duration {
        let next = AtomicUsize::new(0);
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n || fixture::stopping() {
                        break;
                    }
                    let name = format!("pvc-existing-{i:06}");
                    self.create_durable(&name, self.project())
                        .unwrap_or_else(|e| panic!("baseline create {name}: {e}"));
                });
            }
        });
        fixture::check_stop();
        start.elapsed()
    }

    /// One atomic record write, timed alone, `iters` times (what NodePublish persists).
    pub fn write_atomic_loop(&self, iters: usize) -> Vec<Duration> {
        let path = self.state.join("pvc-write-probe.json");
        let bytes = record_json("pvc-write-probe", Phase::Ready, None);
        let lat = (0..iters)
            .map(|_| {
                fixture::check_stop();
                let t = Instant::now();
                fsutil::write_atomic(&path, &bytes).expect("write_atomic");
                t.elapsed()
            })
            .collect();
        let _ = fs::remove_file(&path);
        lat
    }
}

/// mount(2) with MS_BIND of `src` onto `target`, timed alone, then umount(2); `iters` times.
pub fn bind_syscall_loop(src: &Path, target: &Path, iters: usize) -> Vec<Duration> {
    fs::create_dir_all(target).expect("create bind target");
    let lat = (0..iters)
        .map(|_| {
            fixture::check_stop();
            let t = Instant::now();
            mount(
                Some(src),
                target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .unwrap_or_else(|e| panic!("bind {} on {}: {e}", src.display(), target.display()));
            let dt = t.elapsed();
            umount2(target, MntFlags::empty()).expect("umount bind target");
            dt
        })
        .collect();
    let _ = fs::remove_dir(target);
    lat
}

/// `mount --bind src target` (fork+exec of util-linux), timed alone, then umount(2).
pub fn bind_command_loop(src: &Path, target: &Path, iters: usize) -> Vec<Duration> {
    fs::create_dir_all(target).expect("create bind target");
    let lat = (0..iters)
        .map(|_| {
            fixture::check_stop();
            let t = Instant::now();
            let status = Command::new("mount")
                .arg("--bind")
                .arg(src)
                .arg(target)
                .status()
                .expect("run mount --bind");
            let dt = t.elapsed();
            assert!(status.success(), "mount --bind failed: {status}");
            umount2(target, MntFlags::empty()).expect("umount bind target");
            dt
        })
        .collect();
    let _ = fs::remove_dir(target);
    lat
}

/// `count` extra bind mounts of `src`, at kubelet-like paths below `dir`, so the mount table
/// looks like a busy node's (every published volume costs a node two mounts: staging, target).
pub struct ExtraMounts {
    targets: Vec<PathBuf>,
}

impl ExtraMounts {
    pub fn new(src: &Path, dir: &Path, count: usize) -> ExtraMounts {
        let mut targets = Vec::with_capacity(count);
        for i in 0..count {
            let target = dir.join(format!(
                "{i:08x}-5e1f-4c2b-9a7d-{i:012x}/volumes/kubernetes.io~csi/pvc-{i:08x}-3b6a-4f0e-8c21-{i:012x}/mount"
            ));
            fs::create_dir_all(&target).expect("create extra mount point");
            mount(
                Some(src),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .unwrap_or_else(|e| panic!("bind {} on {}: {e}", src.display(), target.display()));
            targets.push(target);
        }
        ExtraMounts { targets }
    }
}

impl Drop for ExtraMounts {
    fn drop(&mut self) {
        for t in self.targets.iter().rev() {
            if let Err(e) = umount2(t, MntFlags::empty()) {
                eprintln!("ops: umount {}: {e}", t.display());
            }
        }
    }
}

/// The driver's own mount-table lookup (read and parse all of /proc/self/mountinfo), in-process.
pub fn mount_at_loop(path: &Path, iters: usize) -> Vec<Duration> {
    (0..iters)
        .map(|_| {
            let t = Instant::now();
            let found = ferrovol::os::mountinfo::mount_at(path).expect("read mount table");
            let dt = t.elapsed();
            std::hint::black_box(found);
            dt
        })
        .collect()
}

/// Reading /proc/self/mountinfo, no parsing: what the kernel charges for the table.
pub fn read_mountinfo_loop(iters: usize) -> Vec<Duration> {
    (0..iters)
        .map(|_| {
            let t = Instant::now();
            let text = fs::read("/proc/self/mountinfo").expect("read mount table");
            let dt = t.elapsed();
            std::hint::black_box(text);
            dt
        })
        .collect()
}
