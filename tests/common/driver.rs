//! The driver process and typed CSI calls against it.

use super::*;

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

    /// A staging path, as the kubelet would hand it to NodeStageVolume.
    pub fn staging(&self, name: &str) -> PathBuf {
        self.root().join("kubelet/staging").join(name)
    }

    /// A target path for pod `pod`, as the kubelet would hand it to NodePublishVolume.
    pub fn target(&self, name: &str, pod: &str) -> PathBuf {
        self.root().join("kubelet/pods").join(pod).join(name)
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

    /// Replaces argument `old` (given to the builder) by `new` for the next start.
    pub fn replace_arg(&mut self, old: &str, new: &str) {
        let at = self.args.iter().position(|a| a == old);
        let at = at.unwrap_or_else(|| panic!("no argument {old:?} in {:?}", self.args));
        self.args[at] = new.into();
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

    /// kill -9 the driver and start it again with every journal sync failing with EIO
    /// (`FERROVOL_FAIL_AT=journal:sync`): the disk under the state is dying.
    pub async fn restart_failing_commits(&mut self) {
        self.set_env("FERROVOL_FAIL_AT", "journal:sync");
        self.restart().await;
    }

    /// kill -9 the driver and start it again with working journal syncs.
    pub async fn restart_healthy(&mut self) {
        self.remove_env("FERROVOL_FAIL_AT");
        self.restart().await;
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

    /// kill -9 the driver and start it again where it must come up not ready: waits until Probe
    /// answers with an error and returns that error (the clients work for other calls).
    pub async fn restart_unready(&mut self) -> tonic::Status {
        self.kill9();
        match self.spawn_and_wait_for(false).await {
            Some(status) => status,
            None => panic!("driver came up ready\n--- driver log ---\n{}", self.log()),
        }
    }

    async fn spawn_and_wait(&mut self) {
        self.spawn_and_wait_for(true).await;
    }

    /// Spawns the driver and waits for Probe to answer ready (`ready`) or to answer at all;
    /// returns Probe's error if it answered one.
    async fn spawn_and_wait_for(&mut self, ready: bool) -> Option<tonic::Status> {
        assert!(self.child.is_none(), "driver already running");
        let socket = self.socket();
        let child = spawn(&mut self.command()).expect("spawn ferrovol serve");
        let child = self.child.insert(child);
        let deadline = Instant::now() + START_TIMEOUT;
        let poll = Duration::from_millis(25);
        match wait_for_probe(child, &socket, ready, deadline, poll, || {}).await {
            Ok((channel, error)) => {
                self.clients = Some(Clients {
                    identity: IdentityClient::new(channel.clone()),
                    controller: ControllerClient::new(channel.clone()),
                    node: NodeClient::new(channel),
                });
                error
            }
            Err(StartFailure::Exited(status)) => {
                self.child = None;
                panic!(
                    "driver exited during start with {status:?}\n--- driver log ---\n{}",
                    self.log()
                );
            }
            Err(StartFailure::TimedOut(last_err)) => panic!(
                "driver did not answer Probe within {START_TIMEOUT:?} (last error: {last_err})\n--- driver log ---\n{}",
                self.log()
            ),
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

    /// DeleteVolume that must fail; returns its status.
    pub async fn delete_refused(&self, id: &str) -> tonic::Status {
        match self.controller().delete_volume(delete_req(id)).await {
            Ok(_) => panic!("DeleteVolume {id} succeeded; it had to fail"),
            Err(status) => status,
        }
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
