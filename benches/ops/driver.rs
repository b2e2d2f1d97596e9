//! The real `ferrovol serve` process and a CSI client that drives it over its Unix socket.

use crate::fixture;
use crate::report::Run;
use crate::serve::{serve_command, wait_started, ServeDirs};
use csi::controller_client::ControllerClient;
use csi::identity_client::IdentityClient;
use csi::node_client::NodeClient;
use csi::volume_capability::{access_mode::Mode, AccessMode, AccessType, MountVolume};
use ferrovol::proto as csi;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::Status;

pub const NODE: &str = "bench-node";
/// Small volumes: the size does not change what create and delete do.
pub const CAPACITY: i64 = 1 << 20;

/// Which binary one driver is, where it keeps its socket, log, state and volumes, and where it
/// serves its metrics.
#[derive(Debug, Clone)]
pub struct DriverPaths {
    pub bin: PathBuf,
    pub dirs: ServeDirs,
    pub metrics: SocketAddr,
    /// `--publish-root` for binaries that have it (the release before the journal has not).
    pub publish_root: Option<PathBuf>,
}

/// A loopback address with a port nobody listens on right now (the driver binds it soon after;
/// the kernel hands out ephemeral ports round-robin, so a reuse in between is unlikely).
pub fn free_local_addr() -> io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// The driver's sync counters: commits the operations waited for, and syncs of its background
/// compaction, which none waits for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Syncs {
    pub commits: u64,
    pub background: u64,
}

/// `ferrovol_state_commits_total` and `ferrovol_state_background_syncs_total` from the driver's
/// `/metrics` (plain HTTP/1.1 GET); None when the driver does not export the commits (releases
/// before the state journal). A driver without the background counter compacted in line, so
/// its commits count every sync.
pub fn scrape_syncs(addr: SocketAddr) -> io::Result<Option<Syncs>> {
    let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    sock.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    sock.read_to_string(&mut text)?;
    if !text.starts_with("HTTP/1.1 200") {
        let head = text.lines().next().unwrap_or("");
        return Err(io::Error::other(format!(
            "GET http://{addr}/metrics answered {head:?}"
        )));
    }
    let counter = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|e| io::Error::other(format!("{name} {v:?} from {addr}: {e}")))
            })
            .transpose()
    };
    let Some(commits) = counter("ferrovol_state_commits_total")? else {
        return Ok(None);
    };
    let background = counter("ferrovol_state_background_syncs_total")?.unwrap_or(0);
    Ok(Some(Syncs {
        commits,
        background,
    }))
}

/// The driver's CPU time and context switches, from /proc (see `DriverProc::sched`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sched {
    pub cpu: Duration,
    pub switches: u64,
}

impl std::ops::Sub for Sched {
    type Output = Sched;
    fn sub(self, earlier: Sched) -> Sched {
        Sched {
            cpu: self.cpu.saturating_sub(earlier.cpu),
            switches: self.switches.saturating_sub(earlier.switches),
        }
    }
}

impl std::ops::AddAssign for Sched {
    fn add_assign(&mut self, more: Sched) {
        self.cpu += more.cpu;
        self.switches += more.switches;
    }
}

/// A running `ferrovol serve`; killed when dropped.
pub struct DriverProc {
    child: Option<Child>,
    started: Instant,
}

/// Resident memory of a process, KiB, and its thread count (each allocating thread may hold
/// a glibc arena).
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub anon_kib: u64,
    pub threads: u64,
}

impl DriverProc {
    /// Starts the driver. Call from the main thread: the child is bound to its parent thread's
    /// life with PR_SET_PDEATHSIG, so it dies with the benchmark however the benchmark ends.
    pub fn spawn(p: &DriverPaths) -> io::Result<Self> {
        let mut cmd = serve_command(&p.bin, NODE, &p.dirs)?;
        cmd.args(["--max-volumes-per-node", "0"])
            .arg("--metrics-address")
            .arg(p.metrics.to_string())
            .args(
                p.publish_root
                    .iter()
                    .flat_map(|r| [std::ffi::OsStr::new("--publish-root"), r.as_os_str()]),
            )
            .env_remove("RUST_LOG")
            // Its own process group: a terminal ^C reaches only the benchmark, which then
            // stops the driver itself after the measurement loops have wound down.
            .process_group(0);
        crate::child::die_with_parent(&mut cmd);
        let started = Instant::now();
        let child = cmd.spawn()?;
        Ok(DriverProc {
            child: Some(child),
            started,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Connects and waits until Probe answers; returns the channel and the time since spawn.
    pub async fn wait_ready(&mut self, p: &DriverPaths, timeout: Duration) -> (Channel, Duration) {
        let child = self.child.as_mut().expect("driver spawned");
        let deadline = self.started + timeout;
        let poll = Duration::from_millis(2);
        let (ch, _) = wait_started(child, &p.dirs, true, deadline, poll, fixture::check_stop).await;
        (ch, self.started.elapsed())
    }

    /// CPU time the driver used so far (all its threads, exited ones included) and the context
    /// switches of its live threads.
    pub fn sched(&self) -> io::Result<Sched> {
        let pid = self.pid();
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let ticks: u64 = after
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|v| v.parse::<u64>().ok())
            .sum();
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as u64;
        let mut switches = 0;
        for task in fs::read_dir(format!("/proc/{pid}/task"))? {
            // A thread may exit between the listing and the read.
            let Ok(status) = fs::read_to_string(task?.path().join("status")) else {
                continue;
            };
            switches += status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
        Ok(Sched {
            cpu: Duration::from_micros(ticks * 1_000_000 / hz),
            switches,
        })
    }

    pub fn memory(&self) -> io::Result<Memory> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| -> io::Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .ok_or_else(|| io::Error::other(format!("{name} missing in /proc/<pid>/status")))
        };
        Ok(Memory {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
            anon_kib: field("RssAnon:")?,
            threads: field("Threads:")?,
        })
    }

    /// SIGTERM, a grace period, then SIGKILL.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::child::terminate(child, Duration::from_secs(5));
        }
    }
}

impl Drop for DriverProc {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn mount_capability() -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

pub async fn create(c: &mut ControllerClient<Channel>, name: &str) -> Result<String, Status> {
    let resp = c
        .create_volume(csi::CreateVolumeRequest {
            name: name.to_string(),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: CAPACITY,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![mount_capability()],
            ..Default::default()
        })
        .await?;
    Ok(resp
        .into_inner()
        .volume
        .map(|v| v.volume_id)
        .unwrap_or_default())
}

pub async fn delete(c: &mut ControllerClient<Channel>, id: &str) -> Result<(), Status> {
    c.delete_volume(csi::DeleteVolumeRequest {
        volume_id: id.to_string(),
        ..Default::default()
    })
    .await?;
    Ok(())
}

async fn join_all<T: Send + 'static>(mut set: tokio::task::JoinSet<T>) -> Vec<T> {
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(v) => out.push(v),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("worker task failed: {e}"),
        }
    }
    out
}

/// CreateVolume+DeleteVolume pairs from `conc` concurrent callers on one channel (like a
/// provisioner sidecar) for `dur`; every name starts with `pvc-{tag}-`.
pub async fn pairs(ch: &Channel, conc: usize, dur: Duration, tag: &str) -> Run {
    let start = Instant::now();
    let deadline = start + dur;
    let mut set = tokio::task::JoinSet::new();
    for w in 0..conc {
        let mut c = ControllerClient::new(ch.clone());
        let prefix = format!("pvc-{tag}-{w}");
        set.spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline && !fixture::stopping() {
                let name = format!("{prefix}-{i}");
                let t = Instant::now();
                let id = create(&mut c, &name)
                    .await
                    .unwrap_or_else(|e| panic!("CreateVolume {name}: {e}"));
                delete(&mut c, &id)
                    .await
                    .unwrap_or_else(|e| panic!("DeleteVolume {id}: {e}"));
                lat.push(t.elapsed());
                i += 1;
            }
            lat
        });
    }
    let lat: Vec<Duration> = join_all(set).await.into_iter().flatten().collect();
    fixture::check_stop();
    Run::new(lat, start.elapsed())
}

/// The transport alone, shaped like a pair: two GetPluginInfo round trips (answered in place,
/// no I/O) per iteration from `conc` callers over the same channel. What any driver served on
/// this socket pays per create+delete pair before doing any work.
pub async fn noop_pairs(ch: &Channel, conc: usize, dur: Duration) -> Run {
    let start = Instant::now();
    let deadline = start + dur;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..conc {
        let mut c = IdentityClient::new(ch.clone());
        set.spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline && !fixture::stopping() {
                let t = Instant::now();
                for _ in 0..2 {
                    c.get_plugin_info(csi::GetPluginInfoRequest {})
                        .await
                        .unwrap_or_else(|e| panic!("GetPluginInfo: {e}"));
                }
                lat.push(t.elapsed());
            }
            lat
        });
    }
    let lat: Vec<Duration> = join_all(set).await.into_iter().flatten().collect();
    fixture::check_stop();
    Run::new(lat, start.elapsed())
}

/// Exactly `n` CreateVolume+DeleteVolume pairs from `conc` concurrent callers (churn).
pub async fn pairs_count(ch: &Channel, conc: usize, n: usize, tag: &str) -> Duration {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..conc {
        let mut c = ControllerClient::new(ch.clone());
        let next = next.clone();
        let tag = tag.to_string();
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || fixture::stopping() {
                    break;
                }
                let name = format!("pvc-{tag}-{i}");
                let id = create(&mut c, &name)
                    .await
                    .unwrap_or_else(|e| panic!("CreateVolume {name}: {e}"));
                delete(&mut c, &id)
                    .await
                    .unwrap_or_else(|e| panic!("DeleteVolume {id}: {e}"));
            }
        });
    }
    join_all(set).await;
    fixture::check_stop();
    start.elapsed()
}

/// One ListVolumes of everything in a single answer (max_entries 0: the largest response the
/// driver builds); returns the number of entries.
pub async fn list_all(ch: &Channel) -> usize {
    let mut c = ControllerClient::new(ch.clone()).max_decoding_message_size(256 << 20);
    let resp = c
        .list_volumes(csi::ListVolumesRequest {
            max_entries: 0,
            starting_token: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("ListVolumes: {e}"))
        .into_inner();
    assert!(
        resp.next_token.is_empty(),
        "ListVolumes with max_entries 0 returned a partial page"
    );
    resp.entries.len()
}

/// Creates `n` volumes from `conc` concurrent callers; returns how long it took.
pub async fn precreate(ch: &Channel, conc: usize, n: usize) -> Duration {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..conc {
        let mut c = ControllerClient::new(ch.clone());
        let next = next.clone();
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || fixture::stopping() {
                    break;
                }
                let name = format!("pvc-existing-{i:06}");
                create(&mut c, &name)
                    .await
                    .unwrap_or_else(|e| panic!("CreateVolume {name}: {e}"));
            }
        });
    }
    join_all(set).await;
    fixture::check_stop();
    start.elapsed()
}

/// A volume made ready for NodePublish: created, ControllerPublished and NodeStaged.
pub struct Published {
    pub id: String,
    pub staging: PathBuf,
}

pub async fn prepare_publish(
    ch: &Channel,
    name: &str,
    staging: &Path,
) -> Result<Published, Status> {
    let mut ctl = ControllerClient::new(ch.clone());
    let id = create(&mut ctl, name).await?;
    ctl.controller_publish_volume(csi::ControllerPublishVolumeRequest {
        volume_id: id.clone(),
        node_id: NODE.to_string(),
        volume_capability: Some(mount_capability()),
        ..Default::default()
    })
    .await?;
    NodeClient::new(ch.clone())
        .node_stage_volume(csi::NodeStageVolumeRequest {
            volume_id: id.clone(),
            staging_target_path: staging.display().to_string(),
            volume_capability: Some(mount_capability()),
            ..Default::default()
        })
        .await?;
    Ok(Published {
        id,
        staging: staging.to_path_buf(),
    })
}

/// NodePublish then NodeUnpublish of one target, `iters` times; returns the latencies of each.
pub async fn publish_loop(
    ch: &Channel,
    vol: &Published,
    target: &Path,
    iters: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let mut node = NodeClient::new(ch.clone());
    let mut publish = Vec::with_capacity(iters);
    let mut unpublish = Vec::with_capacity(iters);
    for _ in 0..iters {
        fixture::check_stop();
        let t = Instant::now();
        node.node_publish_volume(csi::NodePublishVolumeRequest {
            volume_id: vol.id.clone(),
            staging_target_path: vol.staging.display().to_string(),
            target_path: target.display().to_string(),
            volume_capability: Some(mount_capability()),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("NodePublishVolume {}: {e}", vol.id));
        publish.push(t.elapsed());
        let t = Instant::now();
        node.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
            volume_id: vol.id.clone(),
            target_path: target.display().to_string(),
        })
        .await
        .unwrap_or_else(|e| panic!("NodeUnpublishVolume {}: {e}", vol.id));
        unpublish.push(t.elapsed());
    }
    (publish, unpublish)
}

/// Undoes `prepare_publish` (best effort: the run is ending anyway).
pub async fn release_publish(ch: &Channel, vol: &Published) {
    let _ = NodeClient::new(ch.clone())
        .node_unstage_volume(csi::NodeUnstageVolumeRequest {
            volume_id: vol.id.clone(),
            staging_target_path: vol.staging.display().to_string(),
        })
        .await;
    let mut ctl = ControllerClient::new(ch.clone());
    let _ = ctl
        .controller_unpublish_volume(csi::ControllerUnpublishVolumeRequest {
            volume_id: vol.id.clone(),
            node_id: NODE.to_string(),
            ..Default::default()
        })
        .await;
    let _ = delete(&mut ctl, &vol.id).await;
}
