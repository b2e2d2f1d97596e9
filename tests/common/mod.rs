//! Test harness: runs the real `ferrovol serve` binary on a Unix socket inside a fresh temporary
//! directory, hands out typed CSI clients, and on drop kills the driver and removes every mount
//! and loop device it (or the test) left under that directory.
//!
//! Layout of a scratch directory:
//!   csi.sock        the endpoint
//!   driver.log      stdout and stderr of every run of the driver (shown when a start fails)
//!   data/           --data-dir
//!   state/          --state-dir (records live in the journal, state/journal/)
//!   hostpath/       --hostpath-base unless the test picks another one
//!   kubelet/        staging and target paths handed to NodeStage / NodePublish

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use ferrovol::proto as csi;
use ferrovol::proto::{
    controller_client::ControllerClient, identity_client::IdentityClient, node_client::NodeClient,
};
use std::ffi::OsString;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

pub use csi::volume_capability::access_mode::Mode;

/// The node id every test driver runs as.
pub const NODE: &str = "test-node";
pub const MIB: i64 = 1 << 20;

/// How long a driver gets to answer Probe after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Child processes and open files

/// Tests run as threads of one process, and a child that one test spawns holds a copy of every
/// file descriptor of the process from fork until exec (close-on-exec closes them only at
/// exec). A file another test has open inside a volume then pins that mount for a moment, and
/// an unmount the test does right after closing the file (NodeUnpublishVolume) fails with
/// EBUSY. So children are spawned only while no test holds such a file open: spawning takes
/// this lock exclusively, holding a file open in a volume takes it shared.
static SPAWN_LOCK: RwLock<()> = RwLock::new(());

/// Spawns `cmd` while no test thread holds a file open in a volume ([`hold_files_open`]).
/// When this returns the child has exec'd, so it holds none of this process's descriptors.
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    let _no_open_files = SPAWN_LOCK.write().unwrap_or_else(PoisonError::into_inner);
    cmd.spawn()
}

/// Like [`Command::output`], through [`spawn`].
pub fn output(cmd: &mut Command) -> std::io::Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    spawn(cmd)?.wait_with_output()
}

/// Like [`Command::status`], through [`spawn`].
pub fn status(cmd: &mut Command) -> std::io::Result<ExitStatus> {
    spawn(cmd)?.wait()
}

/// Keep this guard alive while the test holds a file open inside a volume (or any mount it is
/// about to unmount), and declare it before the file so it is dropped after it. Holding it
/// blocks [`spawn`] in other tests; never spawn a process while holding it.
pub fn hold_files_open() -> RwLockReadGuard<'static, ()> {
    SPAWN_LOCK.read().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// Scratch directory

/// A fresh temporary directory that, when dropped, lazily unmounts everything mounted at or
/// below it and detaches every loop device whose backing file lies below it.
pub struct Scratch {
    root: PathBuf,
    // Dropped after `Drop for Scratch` has cleaned up, so the tree is removed last.
    _dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ferrovol-test-")
            .tempdir()
            .expect("create temp dir");
        // Canonical, so it compares equal to what the kernel reports in mountinfo and sysfs.
        let root = fs::canonicalize(dir.path()).expect("canonicalize temp dir");
        Scratch { root, _dir: dir }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        cleanup_under(&self.root);
    }
}

/// Unmounts (lazily, deepest first) all mounts at or below `root`, then detaches loop devices
/// backed by files below it. Best effort: never panics, so it is safe during unwinding.
pub fn cleanup_under(root: &Path) {
    // Loop devices are found by their backing file's path, so list them before unmounting: a
    // lazily unmounted file system is detached from the tree, and the backing path of an image
    // on it (a block volume's disk.img on a loop-mounted base) then reads as relative to that
    // file system ("/hostpath/blk/disk.img"), no longer below `root`. Left attached, such a
    // device would also keep the base file system and its own loop device alive.
    let loops = loop_devices_under(root);
    for _ in 0..8 {
        let mut mounts = mounts_under(root);
        if mounts.is_empty() {
            break;
        }
        // Later entries of mountinfo sit on top of earlier ones: undo them first.
        mounts.reverse();
        for m in mounts {
            let _ = status(
                Command::new(tool("umount"))
                    .arg("-l")
                    .arg(&m.mount_point)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            );
        }
    }
    let mut devices: Vec<String> = loops
        .into_iter()
        .chain(loop_devices_under(root))
        .map(|(device, _)| device)
        .collect();
    devices.sort();
    devices.dedup();
    // A device still held open (a file system on it that the lazy unmount has not released
    // yet) is only marked for auto-clear and goes when its last user does.
    for device in devices {
        let _ = status(
            Command::new(tool("losetup"))
                .arg("-d")
                .arg(&device)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The driver process

/// How to start a driver: extra arguments and environment on top of the harness defaults.
pub struct Builder {
    scratch: Scratch,
    base: Option<PathBuf>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
}

impl Builder {
    pub fn with_scratch(scratch: Scratch) -> Self {
        Builder {
            scratch,
            base: None,
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// The scratch directory the driver will run in, to prepare file systems before it starts.
    pub fn path(&self) -> &Path {
        self.scratch.path()
    }

    /// `--hostpath-base` (default: `<scratch>/hostpath`).
    pub fn hostpath_base(mut self, base: impl Into<PathBuf>) -> Self {
        self.base = Some(base.into());
        self
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets FERROVOL_CRASH_AT: the driver SIGKILLs itself when it reaches that point.
    pub fn crash_at(self, point: &str) -> Self {
        self.env("FERROVOL_CRASH_AT", point)
    }

    pub async fn start(self) -> Driver {
        let root = self.scratch.path().to_path_buf();
        let mut driver = Driver {
            child: None,
            base: self.base.unwrap_or_else(|| root.join("hostpath")),
            args: self.args,
            env: self.env,
            clients: None,
            scratch: self.scratch,
        };
        driver.spawn_and_wait().await;
        driver
    }
}

struct Clients {
    identity: IdentityClient<Channel>,
    controller: ControllerClient<Channel>,
    node: NodeClient<Channel>,
}

/// A running `ferrovol serve`.
pub struct Driver {
    child: Option<Child>,
    base: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    clients: Option<Clients>,
    // Last: dropped (mounts and loop devices cleaned up) after the child was killed.
    scratch: Scratch,
}

impl Driver {
    /// A driver with the default settings in a fresh scratch directory.
    pub async fn start() -> Driver {
        Driver::builder().start().await
    }

    pub fn builder() -> Builder {
        Builder::with_scratch(Scratch::new())
    }

    pub fn root(&self) -> &Path {
        self.scratch.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.root().join("csi.sock")
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root().join("state")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root().join("driver.log")
    }

    /// Everything the driver wrote to stdout/stderr so far (all runs).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn volume_dir(&self, name: &str) -> PathBuf {
        self.base.join(name)
    }

    pub fn volume_id(&self, name: &str) -> String {
        format!("hostpath/{NODE}/{name}")
    }

    /// A staging path, as the kubelet would hand it to NodeStageVolume.
    pub fn staging(&self, name: &str) -> PathBuf {
        self.root().join("kubelet/staging").join(name)
    }

    /// A target path for pod `pod`, as the kubelet would hand it to NodePublishVolume.
    pub fn target(&self, name: &str, pod: &str) -> PathBuf {
        self.root().join("kubelet/pods").join(pod).join(name)
    }

    /// The names of the hostpath volume records in the state journal.
    pub fn state_records(&self) -> Vec<String> {
        let dir = self.state_dir().join("journal");
        if !dir.exists() {
            return Vec::new();
        }
        let live = ferrovol::state::journal::peek(&dir).expect("read the state journal");
        let mut out: Vec<String> = live
            .keys()
            .filter_map(|k| k.strip_prefix("hostpath/"))
            .map(str::to_string)
            .collect();
        out.sort();
        out
    }

    /// The committed record of volume `name`, as JSON, if there is one.
    pub fn state_record(&self, name: &str) -> Option<serde_json::Value> {
        let live = ferrovol::state::journal::peek(&self.state_dir().join("journal")).ok()?;
        let bytes = live.get(&format!("hostpath/{name}"))?;
        Some(serde_json::from_slice(bytes).expect("records are JSON"))
    }

    /// Names in the hostpath base directory.
    pub fn base_entries(&self) -> Vec<String> {
        dir_names(&self.base)
    }

    pub fn identity(&self) -> IdentityClient<Channel> {
        self.clients().identity.clone()
    }

    pub fn controller(&self) -> ControllerClient<Channel> {
        self.clients().controller.clone()
    }

    pub fn node(&self) -> NodeClient<Channel> {
        self.clients().node.clone()
    }

    fn clients(&self) -> &Clients {
        self.clients.as_ref().expect("the driver is not running")
    }

    pub fn set_env(&mut self, key: &str, value: &str) {
        self.remove_env(key);
        self.env.push((key.into(), value.into()));
    }

    pub fn remove_env(&mut self, key: &str) {
        self.env.retain(|(k, _)| k != key);
    }

    /// The process id of the running driver.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// kill -9 the driver and reap it.
    pub fn kill9(&mut self) {
        self.clients = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL; fails only if it already exited
            child.wait().expect("reap killed driver");
        }
    }

    /// Waits (bounded) for the driver to exit on its own, e.g. at a crash point; returns how.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.clients = None;
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("driver was started");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "driver did not exit within {timeout:?}\n--- driver log ---\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for a driver that should have SIGKILLed itself at a crash point.
    pub async fn expect_crash(&mut self) {
        let status = self.wait_exit(Duration::from_secs(20)).await;
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "driver should have killed itself with SIGKILL, exited {status:?}\n--- driver log ---\n{}",
            self.log()
        );
    }

    /// Starts the driver again on the same directories (kill -9 first if it still runs).
    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn_and_wait().await;
    }

    fn command(&self) -> Command {
        let root = self.root();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open driver log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrovol"));
        cmd.arg("serve")
            .arg("--endpoint")
            .arg(format!("unix://{}", self.socket().display()))
            .arg("--node-id")
            .arg(NODE)
            .arg("--data-dir")
            .arg(root.join("data"))
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--hostpath-base")
            .arg(&self.base)
            .arg("--default-volume-size")
            .arg("16Mi")
            .arg("--publish-root")
            .arg(root.join("kubelet"))
            .args(&self.args)
            .env_remove("FERROVOL_CRASH_AT")
            .env_remove("CSI_ENDPOINT")
            .env_remove("NODE_ID")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        cmd
    }

    async fn spawn_and_wait(&mut self) {
        assert!(self.child.is_none(), "driver already running");
        let child = spawn(&mut self.command()).expect("spawn ferrovol serve");
        self.child = Some(child);
        let endpoint = ferrovol::server::Endpoint::Unix(self.socket());
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last_err = String::new();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("try_wait") {
                self.child = None;
                panic!(
                    "driver exited during start with {status:?}\n--- driver log ---\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "driver did not answer Probe within {START_TIMEOUT:?} (last error: {last_err})\n--- driver log ---\n{}",
                    self.log()
                );
            }
            match ferrovol::client::connect(&endpoint).await {
                Ok(channel) => {
                    let mut identity = IdentityClient::new(channel.clone());
                    match identity.probe(csi::ProbeRequest {}).await {
                        Ok(r) if r.get_ref().ready != Some(false) => {
                            self.clients = Some(Clients {
                                identity,
                                controller: ControllerClient::new(channel.clone()),
                                node: NodeClient::new(channel),
                            });
                            return;
                        }
                        Ok(r) => last_err = format!("probe answered {:?}", r.get_ref()),
                        Err(e) => last_err = format!("probe: {e}"),
                    }
                }
                Err(e) => last_err = format!("connect: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    // -- short-hands for whole steps ------------------------------------------------------

    pub async fn create(&self, name: &str, bytes: i64, cap: csi::VolumeCapability) -> csi::Volume {
        self.controller()
            .create_volume(create_req(name, bytes, cap))
            .await
            .unwrap_or_else(|e| panic!("CreateVolume {name}: {e}"))
            .into_inner()
            .volume
            .expect("CreateVolume returned no volume")
    }

    pub async fn controller_publish(&self, id: &str, cap: csi::VolumeCapability, readonly: bool) {
        self.controller()
            .controller_publish_volume(controller_publish_req(id, cap, readonly))
            .await
            .unwrap_or_else(|e| panic!("ControllerPublishVolume {id}: {e}"));
    }

    pub async fn controller_unpublish(&self, id: &str) {
        self.controller()
            .controller_unpublish_volume(controller_unpublish_req(id))
            .await
            .unwrap_or_else(|e| panic!("ControllerUnpublishVolume {id}: {e}"));
    }

    pub async fn stage(&self, id: &str, staging: &Path, cap: csi::VolumeCapability) {
        self.node()
            .node_stage_volume(stage_req(id, staging, cap))
            .await
            .unwrap_or_else(|e| panic!("NodeStageVolume {id}: {e}"));
    }

    pub async fn unstage(&self, id: &str, staging: &Path) {
        self.node()
            .node_unstage_volume(unstage_req(id, staging))
            .await
            .unwrap_or_else(|e| panic!("NodeUnstageVolume {id}: {e}"));
    }

    pub async fn publish(
        &self,
        id: &str,
        staging: &Path,
        target: &Path,
        cap: csi::VolumeCapability,
        readonly: bool,
    ) {
        self.node()
            .node_publish_volume(publish_req(id, staging, target, cap, readonly))
            .await
            .unwrap_or_else(|e| panic!("NodePublishVolume {id} at {}: {e}", target.display()));
    }

    /// CreateVolume, then stage_and_publish: (id, staging, target).
    pub async fn create_published(
        &self,
        name: &str,
        bytes: i64,
        cap: csi::VolumeCapability,
    ) -> (String, PathBuf, PathBuf) {
        let id = self.create(name, bytes, cap.clone()).await.volume_id;
        let (staging, target) = self.stage_and_publish(&id, name, cap).await;
        (id, staging, target)
    }

    /// NodeGetVolumeStats of `id` at `path`; panics on error.
    pub async fn stats(&self, id: &str, path: &Path) -> csi::NodeGetVolumeStatsResponse {
        self.node()
            .node_get_volume_stats(stats_req(id, path))
            .await
            .unwrap_or_else(|e| panic!("NodeGetVolumeStats {id} at {}: {e}", path.display()))
            .into_inner()
    }

    /// NodeStage at this volume's staging path, then NodePublish read-write at its "pod" target.
    pub async fn stage_and_publish(
        &self,
        id: &str,
        name: &str,
        cap: csi::VolumeCapability,
    ) -> (PathBuf, PathBuf) {
        let staging = self.staging(name);
        let target = self.target(name, "pod");
        self.stage(id, &staging, cap.clone()).await;
        self.publish(id, &staging, &target, cap, false).await;
        (staging, target)
    }

    /// Unpublish, unstage and delete a volume, then check that nothing is left behind.
    pub async fn tear_down(&self, id: &str, target: &Path, staging: &Path) {
        self.unpublish_and_unstage(id, target, staging).await;
        self.delete(id).await;
        self.assert_nothing_leaked(&[]);
    }

    /// NodeUnpublish, then NodeUnstage.
    pub async fn unpublish_and_unstage(&self, id: &str, target: &Path, staging: &Path) {
        self.unpublish(id, target).await;
        self.unstage(id, staging).await;
    }

    pub async fn unpublish(&self, id: &str, target: &Path) {
        self.node()
            .node_unpublish_volume(unpublish_req(id, target))
            .await
            .unwrap_or_else(|e| panic!("NodeUnpublishVolume {id} at {}: {e}", target.display()));
    }

    pub async fn delete(&self, id: &str) {
        self.controller()
            .delete_volume(delete_req(id))
            .await
            .unwrap_or_else(|e| panic!("DeleteVolume {id}: {e}"));
    }

    pub async fn get(&self, id: &str) -> csi::ControllerGetVolumeResponse {
        self.controller()
            .controller_get_volume(get_req(id))
            .await
            .unwrap_or_else(|e| panic!("ControllerGetVolume {id}: {e}"))
            .into_inner()
    }

    /// All volumes, following next_token.
    pub async fn list_all(&self) -> Vec<csi::list_volumes_response::Entry> {
        let mut out = Vec::new();
        let mut token = String::new();
        for _ in 0..1000 {
            let page = self
                .controller()
                .list_volumes(csi::ListVolumesRequest {
                    max_entries: 0,
                    starting_token: token,
                })
                .await
                .expect("ListVolumes")
                .into_inner();
            out.extend(page.entries);
            if page.next_token.is_empty() {
                return out;
            }
            token = page.next_token;
        }
        panic!("ListVolumes never ended");
    }

    /// Volume ids ListVolumes reports.
    pub async fn list_ids(&self) -> Vec<String> {
        self.list_all()
            .await
            .into_iter()
            .map(|e| e.volume.expect("entry without volume").volume_id)
            .collect()
    }

    /// Asserts nothing of any volume is left: no volume directory, no record, no mount or
    /// loop device under the scratch directory except those listed in `keep_mounts`.
    pub fn assert_nothing_leaked(&self, keep_mounts: &[&Path]) {
        assert_eq!(
            self.base_entries(),
            Vec::<String>::new(),
            "hostpath base is not empty"
        );
        assert_eq!(
            self.state_records(),
            Vec::<String>::new(),
            "volume records left behind"
        );
        let mounts: Vec<PathBuf> = mounts_under(self.root())
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|p| !keep_mounts.contains(&p.as_path()))
            .collect();
        assert_eq!(
            mounts,
            Vec::<PathBuf>::new(),
            "mounts left under the scratch dir"
        );
        let loops: Vec<(String, String)> = loop_devices_under(&self.base);
        assert_eq!(
            loops,
            Vec::<(String, String)>::new(),
            "loop devices left on volume images"
        );
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.clients = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: String = log
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            eprintln!(
                "--- last lines of the driver log ({}) ---\n{tail}",
                self.log_path().display()
            );
        }
        // `scratch` drops next: unmounts and detaches what is left under the directory.
    }
}

// ---------------------------------------------------------------------------------------------
// Requests

pub fn mount_cap() -> csi::VolumeCapability {
    mount_cap_with(Mode::SingleNodeWriter, &[])
}

pub fn mount_cap_with(mode: Mode, flags: &[&str]) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_type: Some(csi::volume_capability::AccessType::Mount(
            csi::volume_capability::MountVolume {
                fs_type: String::new(),
                mount_flags: flags.iter().map(|f| f.to_string()).collect(),
                volume_mount_group: String::new(),
            },
        )),
        access_mode: Some(csi::volume_capability::AccessMode { mode: mode as i32 }),
    }
}

pub fn block_cap() -> csi::VolumeCapability {
    block_cap_with(Mode::SingleNodeWriter)
}

pub fn block_cap_with(mode: Mode) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_type: Some(csi::volume_capability::AccessType::Block(
            csi::volume_capability::BlockVolume {},
        )),
        access_mode: Some(csi::volume_capability::AccessMode { mode: mode as i32 }),
    }
}

pub fn range(required: i64, limit: i64) -> Option<csi::CapacityRange> {
    Some(csi::CapacityRange {
        required_bytes: required,
        limit_bytes: limit,
    })
}

pub fn create_req(name: &str, bytes: i64, cap: csi::VolumeCapability) -> csi::CreateVolumeRequest {
    csi::CreateVolumeRequest {
        name: name.to_string(),
        capacity_range: range(bytes, 0),
        volume_capabilities: vec![cap],
        ..Default::default()
    }
}

pub fn delete_req(id: &str) -> csi::DeleteVolumeRequest {
    csi::DeleteVolumeRequest {
        volume_id: id.to_string(),
        ..Default::default()
    }
}

pub fn get_req(id: &str) -> csi::ControllerGetVolumeRequest {
    csi::ControllerGetVolumeRequest {
        volume_id: id.to_string(),
    }
}

pub fn controller_publish_req(
    id: &str,
    cap: csi::VolumeCapability,
    readonly: bool,
) -> csi::ControllerPublishVolumeRequest {
    csi::ControllerPublishVolumeRequest {
        volume_id: id.to_string(),
        node_id: NODE.to_string(),
        volume_capability: Some(cap),
        readonly,
        ..Default::default()
    }
}

pub fn controller_unpublish_req(id: &str) -> csi::ControllerUnpublishVolumeRequest {
    csi::ControllerUnpublishVolumeRequest {
        volume_id: id.to_string(),
        node_id: NODE.to_string(),
        ..Default::default()
    }
}

pub fn expand_req(id: &str, bytes: i64) -> csi::ControllerExpandVolumeRequest {
    csi::ControllerExpandVolumeRequest {
        volume_id: id.to_string(),
        capacity_range: range(bytes, 0),
        ..Default::default()
    }
}

pub fn node_expand_req(id: &str, path: &Path, bytes: i64) -> csi::NodeExpandVolumeRequest {
    csi::NodeExpandVolumeRequest {
        volume_id: id.to_string(),
        volume_path: path_str(path),
        capacity_range: range(bytes, 0),
        ..Default::default()
    }
}

pub fn validate_req(
    id: &str,
    cap: csi::VolumeCapability,
) -> csi::ValidateVolumeCapabilitiesRequest {
    csi::ValidateVolumeCapabilitiesRequest {
        volume_id: id.to_string(),
        volume_capabilities: vec![cap],
        ..Default::default()
    }
}

pub fn stage_req(
    id: &str,
    staging: &Path,
    cap: csi::VolumeCapability,
) -> csi::NodeStageVolumeRequest {
    csi::NodeStageVolumeRequest {
        volume_id: id.to_string(),
        staging_target_path: path_str(staging),
        volume_capability: Some(cap),
        ..Default::default()
    }
}

pub fn unstage_req(id: &str, staging: &Path) -> csi::NodeUnstageVolumeRequest {
    csi::NodeUnstageVolumeRequest {
        volume_id: id.to_string(),
        staging_target_path: path_str(staging),
    }
}

pub fn publish_req(
    id: &str,
    staging: &Path,
    target: &Path,
    cap: csi::VolumeCapability,
    readonly: bool,
) -> csi::NodePublishVolumeRequest {
    csi::NodePublishVolumeRequest {
        volume_id: id.to_string(),
        staging_target_path: path_str(staging),
        target_path: path_str(target),
        volume_capability: Some(cap),
        readonly,
        ..Default::default()
    }
}

pub fn unpublish_req(id: &str, target: &Path) -> csi::NodeUnpublishVolumeRequest {
    csi::NodeUnpublishVolumeRequest {
        volume_id: id.to_string(),
        target_path: path_str(target),
    }
}

pub fn stats_req(id: &str, path: &Path) -> csi::NodeGetVolumeStatsRequest {
    csi::NodeGetVolumeStatsRequest {
        volume_id: id.to_string(),
        volume_path: path_str(path),
        ..Default::default()
    }
}

pub fn path_str(p: &Path) -> String {
    p.to_str().expect("test paths are UTF-8").to_string()
}

/// Asserts that an RPC failed with `code`; returns the status for further checks.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: tonic::Code,
    what: &str,
) -> tonic::Status {
    match result {
        Ok(r) => panic!("{what}: expected {code:?}, got OK: {:?}", r.into_inner()),
        Err(s) => {
            assert_eq!(s.code(), code, "{what}: wrong code, status: {s:?}");
            s
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Inspecting the system

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The directory of the mounted filesystem that appears at the mount point.
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub options: Vec<String>,
    pub fs_type: String,
}

impl MountEntry {
    pub fn read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }

    pub fn has_option(&self, opt: &str) -> bool {
        self.options.iter().any(|o| o == opt)
    }
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x"), 8)
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn mount_table() -> Vec<MountEntry> {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    text.lines()
        .filter_map(|line| {
            let (head, tail) = line.split_once(" - ")?;
            let f: Vec<&str> = head.split(' ').collect();
            if f.len() < 6 {
                return None;
            }
            Some(MountEntry {
                root: PathBuf::from(unescape_mountinfo(f[3])),
                mount_point: PathBuf::from(unescape_mountinfo(f[4])),
                options: f[5].split(',').map(str::to_string).collect(),
                fs_type: tail.split(' ').next().unwrap_or("").to_string(),
            })
        })
        .collect()
}

/// Mounts at or below `dir`, in mount order.
pub fn mounts_under(dir: &Path) -> Vec<MountEntry> {
    mount_table()
        .into_iter()
        .filter(|m| m.mount_point.starts_with(dir))
        .collect()
}

/// Mounts exactly at `path`, in mount order (the last one is visible).
pub fn mounts_at(path: &Path) -> Vec<MountEntry> {
    mount_table()
        .into_iter()
        .filter(|m| m.mount_point == path)
        .collect()
}

/// (device, backing file) of each loop device whose backing file is at or below `dir`,
/// read from /sys/block/loop*/loop/backing_file.
pub fn loop_devices_under(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = fs::read_to_string(e.path().join("loop/backing_file")) else {
            continue;
        };
        let backing = backing
            .trim_end()
            .trim_end_matches(" (deleted)")
            .to_string();
        if Path::new(&backing).starts_with(dir) {
            out.push((format!("/dev/{name}"), backing));
        }
    }
    out.sort();
    out
}

/// Sorted names in a directory (empty if it does not exist).
pub fn dir_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| {
            e.expect("read dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Finds a system tool in PATH or the sbin directories (CI's PATH may lack /usr/sbin).
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Runs a system command, panicking with its output if it fails or is missing.
#[track_caller]
pub fn run(program: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = output(Command::new(tool(program)).args(args))
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (is it installed?)"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed with {}:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Size of a block device in bytes, by BLKGETSIZE64 (`blockdev --getsize64`).
pub fn block_size(dev: &Path) -> u64 {
    run("blockdev", &["--getsize64".as_ref(), dev.as_os_str()])
        .trim()
        .parse()
        .expect("blockdev prints a number")
}

/// Writes `len` bytes of a pattern to `path` in 1 MiB chunks, then fsyncs; returns the first
/// error (from a write or from the sync).
pub fn write_file(path: &Path, len: usize) -> std::io::Result<()> {
    use std::io::Write;
    let _open = hold_files_open();
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let chunk = vec![0xa5u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        f.write_all(&chunk[..n])?;
        left -= n;
    }
    f.sync_all()
}

/// The usage entry of one unit in a stats reply.
pub fn usage(
    stats: &csi::NodeGetVolumeStatsResponse,
    unit: csi::volume_usage::Unit,
) -> Option<csi::VolumeUsage> {
    stats.usage.iter().find(|u| u.unit == unit as i32).cloned()
}
