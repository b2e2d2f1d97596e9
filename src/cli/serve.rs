//! `ferrovol serve`.

use super::{absolute, size::parse_size, DEFAULT_DATA_DIR};
use crate::backend::nfs::RegistryConfig;
use crate::backend::registry::{self, DriverKind, Settings};
use crate::csi::Driver;
use crate::server::registration::Registration;
use crate::server::{self, BoxResult, Endpoint, Role};
use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Which CSI driver this process is: `local` (local.csi.ferrovol.io: hostpath and device
    /// volumes, provisioned on the node they live on) or `nfs` (nfs.csi.ferrovol.io: NFS subdir
    /// volumes, provisioned centrally and usable on any node).
    #[arg(long, value_enum, default_value = "local")]
    pub driver: DriverKind,

    /// Backends of that driver to serve, comma separated (local: hostpath,device; nfs: nfs).
    /// Default: hostpath for local, nfs for nfs. The driver advertises what the served
    /// backends support together.
    #[arg(long, value_delimiter = ',')]
    pub backends: Vec<String>,

    /// CSI endpoint to listen on: unix:///path/csi.sock or tcp://IP:PORT.
    /// Default: <data-dir>/csi.sock.
    #[arg(long, env = "CSI_ENDPOINT")]
    pub endpoint: Option<Endpoint>,

    /// This node's id as reported by NodeGetInfo and written into volume ids and topology
    /// (in Kubernetes: the node name). Default: the hostname.
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,

    /// CSI services to serve, comma separated. The node plugin of a distributed deployment
    /// serves both (it provisions its own node-local volumes).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "controller,node"
    )]
    pub roles: Vec<Role>,

    /// Root of the embedded standalone default: socket, state and hostpath volumes live below
    /// it unless --endpoint, --state-dir or --hostpath-base say otherwise. Created if missing.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// Where volume records are kept: a journal with group commit; an operation is answered
    /// once its record is durable. Must survive restarts: in Kubernetes a hostPath such as
    /// /var/lib/ferrovol/state. Default: <data-dir>/state.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,

    /// Directory holding one directory per hostpath volume. Volume sizes become hard limits on
    /// XFS (or ext4 with the project feature) mounted with prjquota, and on btrfs after
    /// `btrfs quota enable`; elsewhere they are advisory.
    /// Default: <data-dir>/hostpath. This is the pool `default` (created if missing) unless
    /// --hostpath-pool or --hostpath-pool-config name a pool `default`.
    #[arg(long)]
    pub hostpath_base: Option<PathBuf>,

    /// A named hostpath pool: a base path (usually a disk's mount point, or a directory on it)
    /// that StorageClasses choose with the parameter `pool: NAME` (repeatable). A missing path
    /// is never created: the pool reports no capacity until it appears. Replaces a pool of the
    /// same name from --hostpath-pool-config.
    #[arg(long = "hostpath-pool", value_name = "NAME=PATH", value_parser = crate::backend::hostpath::pool_config::parse_flag)]
    pub hostpath_pools: Vec<(String, PathBuf)>,

    /// YAML file of hostpath pools for every node and for nodes matched by name glob or labels
    /// (docs/install.md, "Hostpath pools"); the chart renders it from local.hostpath.pools.
    #[arg(long = "hostpath-pool-config", value_name = "FILE")]
    pub hostpath_pool_config: Option<PathBuf>,

    /// Staging and target paths must lie below one of these directories (repeatable). A
    /// NodeStage or NodePublish outside them is refused with InvalidArgument, and mounts are
    /// made through file descriptors opened beneath the root, never following symlinks.
    /// Default: /var/lib/kubelet and <data-dir>/pods.
    #[arg(long = "publish-root", value_name = "DIR")]
    pub publish_roots: Vec<PathBuf>,

    #[command(flatten)]
    pub nfs: Box<NfsArgs>,

    #[command(flatten)]
    pub devices: super::devices::DeviceFilterArgs,

    /// Capacity of a volume whose request names none (bytes, or with Ki/Mi/Gi/Ti).
    #[arg(long, default_value = "1Gi", value_parser = parse_size)]
    pub default_volume_size: u64,

    /// Most volumes ControllerPublish attaches to one node, reported by NodeGetInfo (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub max_volumes_per_node: i64,

    #[command(flatten)]
    pub metrics: super::metrics::MetricsArgs,

    #[command(flatten)]
    pub registration: RegistrationArgs,

    /// Group allowed to use the Unix socket (name or gid): the socket is then 0660 owned by
    /// it. Without this flag the socket is 0600, usable by the driver's user (root) only.
    #[arg(long)]
    pub socket_group: Option<String>,

    /// Allow a tcp:// endpoint on a non-loopback address. The CSI API has no authentication:
    /// every host that can reach the port can mount and delete volumes as root on this node.
    #[arg(long)]
    pub insecure_remote_endpoint: bool,

    /// Log format: text for people, json for log pipelines. Level from RUST_LOG (default info).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Args)]
pub struct RegistrationArgs {
    /// Register the driver with the kubelet: serve the kubelet's plugin registration API on
    /// <DIR>/<driver name>-reg.sock, DIR being the kubelet's plugins_registry directory (e.g.
    /// /var/lib/kubelet/plugins_registry). Off when unset (node-driver-registrar's job then).
    #[arg(long, value_name = "DIR")]
    pub kubelet_registration_dir: Option<PathBuf>,

    /// The CSI socket path as the kubelet sees it, told to the kubelet at registration (like
    /// node-driver-registrar's --kubelet-registration-path). Default: the --endpoint path, right
    /// when the driver sees the host's paths.
    #[arg(long, value_name = "PATH", requires = "kubelet_registration_dir")]
    pub kubelet_csi_endpoint: Option<PathBuf>,
}

impl RegistrationArgs {
    /// What to register, or None when registration is off. The kubelet reaches drivers only
    /// over Unix sockets.
    pub fn registration(
        &self,
        driver_name: &str,
        endpoint: &Endpoint,
    ) -> BoxResult<Option<Registration>> {
        let Some(dir) = &self.kubelet_registration_dir else {
            return Ok(None);
        };
        let kubelet_csi_endpoint = match (&self.kubelet_csi_endpoint, endpoint) {
            (Some(path), _) | (None, Endpoint::Unix(path)) => path.clone(),
            (None, Endpoint::Tcp(_)) => {
                return Err("--kubelet-registration-dir needs a unix:// endpoint or \
                            --kubelet-csi-endpoint: the kubelet reaches drivers over Unix sockets"
                    .into())
            }
        };
        if !kubelet_csi_endpoint.is_absolute() {
            let path = kubelet_csi_endpoint.display();
            return Err(format!("--kubelet-csi-endpoint {path}: must be an absolute path").into());
        }
        Ok(Some(Registration {
            dir: absolute(dir),
            driver_name: driver_name.to_string(),
            kubelet_csi_endpoint,
        }))
    }
}

/// Options of the NFS driver (`--driver nfs`).
#[derive(Debug, Args)]
pub struct NfsArgs {
    /// NFS driver: deadline of every call to an NFS server (provisioning; an NFSv4.1 server in
    /// its grace period is retried within it, then Unavailable) and, tripled, of every kernel
    /// mount, unmount and statfs on the node (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = super::nodeloss::positive_duration)]
    pub nfs_timeout: std::time::Duration,

    /// NFS driver: an export known whether or not the share registry holds it (repeatable,
    /// server:/path). Exports named by CreateVolume are registered anyway.
    #[arg(long = "nfs-share", value_name = "SERVER:/PATH", value_parser = crate::backend::nfs::parse_share)]
    pub nfs_shares: Vec<(String, String)>,

    /// NFS driver: keep the share registry (every export a volume was created on) in this
    /// ConfigMap, which outlives the pod; the controller needs get, create and update on it.
    /// Without it the registry is a file (--nfs-registry-file).
    #[arg(long, value_name = "NAME", conflicts_with = "nfs_registry_file")]
    pub nfs_registry_configmap: Option<String>,

    /// NFS driver: the namespace of --nfs-registry-configmap (default: POD_NAMESPACE).
    #[arg(long, value_name = "NAMESPACE", env = "POD_NAMESPACE")]
    pub nfs_registry_namespace: Option<String>,

    /// NFS driver: keep the share registry in this file (default <state-dir>/nfs-shares.json).
    /// It must outlive the process as long as its volumes do.
    #[arg(long, value_name = "FILE")]
    pub nfs_registry_file: Option<PathBuf>,

    /// FOR TEST MACHINES WITHOUT A KERNEL NFS CLIENT ONLY: NodePublishVolume bind-mounts
    /// DIR/<subdir> instead of mounting server:share/<subdir> over NFS, where DIR is the
    /// directory the test's NFS server exports. Never set this in production.
    #[arg(long, value_name = "DIR")]
    pub nfs_test_export_root: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub(crate) fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub fn run(args: ServeArgs) -> BoxResult<()> {
    // First: start-up replays the journal, and its buffers should follow the same rules.
    crate::os::malloc::bound_arenas();
    init_logging(args.log_format);
    // Before any thread starts: threads inherit the capabilities of the one that spawns them.
    match crate::os::caps::raise_net_bind_service() {
        Ok(raised) => tracing::debug!(raised, "CAP_NET_BIND_SERVICE (reserved NFS source ports)"),
        Err(e) => tracing::warn!(error = %e, "could not raise CAP_NET_BIND_SERVICE"),
    }
    let data_dir = absolute(&args.data_dir);
    let endpoint = super::endpoint_or_default(&args.endpoint, &data_dir);
    let node_id = super::devices::node_or_hostname(args.node_id.clone())?;
    crate::volume::validate_component("node id", &node_id).map_err(|e| e.to_string())?;
    let state_dir = (args.state_dir.as_deref()).map_or_else(|| data_dir.join("state"), absolute);
    crate::os::perm::create_private_dir(&state_dir)?;
    // Held until the process ends: two drivers appending to one journal would corrupt it.
    let _state_lock = crate::os::dirlock::lock_exclusive(&state_dir, "state dir")?;
    let security = server::EndpointSecurity {
        socket_group: args.socket_group.clone(),
        insecure_remote: args.insecure_remote_endpoint,
    };
    let devices = registry::DeviceSettings {
        include: args.devices.include.clone(),
        exclude: args.devices.exclude.clone(),
        config: args.devices.config.as_deref().map(absolute),
        protected: vec![
            state_dir.clone(),
            PathBuf::from("/var/lib/kubelet"),
            data_dir.clone(),
        ],
    };
    let nfs_registry = nfs_registry(&args.nfs, &state_dir)?;
    let pool_config = args.hostpath_pool_config.as_deref().map(absolute);
    let settings = Settings {
        node_id: node_id.clone(),
        state_dir,
        devices,
        hostpath_pools: super::pools::node_pools(
            &node_id,
            pool_config.as_deref(),
            &args.hostpath_pools,
            &(args.hostpath_base.as_deref()).map_or_else(|| data_dir.join("hostpath"), absolute),
        )?,
        default_capacity: args.default_volume_size,
        nfs_timeout: args.nfs.nfs_timeout,
        nfs_shares: args.nfs.nfs_shares.clone(),
        nfs_registry,
        nfs_test_export_root: args.nfs.nfs_test_export_root.as_deref().map(absolute),
    };
    let names = if args.backends.is_empty() {
        vec![args.driver.backends()[0].to_string()]
    } else {
        args.backends.clone()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Blocking work is file system calls that mostly wait on one journal sync; more threads
        // add glibc arenas (memory) without adding throughput.
        .max_blocking_threads(BLOCKING_THREADS)
        // An idle blocking thread still holds its stack pages; after a burst (sixteen
        // concurrent creates) they go back within seconds instead of tokio's default ten.
        .thread_keep_alive(std::time::Duration::from_secs(2))
        .enable_all()
        .build()?;
    let backends = {
        // Backends start their background tasks (the BlockDevice sync) on this runtime.
        let _entered = runtime.enter();
        registry::open(args.driver, &names, &settings)?
    };
    // The journal's replay (every record decoded once more than the index keeps) is freed now.
    crate::os::malloc::trim();
    let roots = if args.publish_roots.is_empty() {
        // The kubelet's directory exists where a kubelet runs; the standalone one is ours.
        std::fs::create_dir_all(data_dir.join("pods"))?;
        vec![PathBuf::from("/var/lib/kubelet"), data_dir.join("pods")]
    } else {
        let roots: Vec<PathBuf> = args.publish_roots.iter().map(|p| absolute(p)).collect();
        for root in &roots {
            std::fs::create_dir_all(root)
                .map_err(|e| format!("publish root {}: {e}", root.display()))?;
        }
        roots
    };
    let paths = crate::os::beneath::PublishRoots::new(roots)?;
    tracing::info!(roots = ?paths.roots(), "staging and target paths must lie below these publish roots");
    let driver = Arc::new(Driver::new(
        args.driver,
        node_id,
        args.max_volumes_per_node,
        backends,
        paths,
    ));

    let registration = args.registration.registration(&driver.name, &endpoint)?;
    runtime.block_on(async move {
        tokio::spawn(return_freed_memory());
        server::metrics::check_driver(driver.clone());
        args.metrics.spawn(crate::metrics::render);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let registered = registration.map(|reg| {
            let (endpoint, stopped, stop) = (endpoint.clone(), stopped.clone(), stop.clone());
            tokio::spawn(async move {
                let done = server::registration::run(reg, endpoint, stopped).await;
                // Unregistered, the kubelet cannot use the driver: stop, to be restarted.
                if done.is_err() {
                    stop.send_replace(true);
                }
                done
            })
        });
        let mut csi_stopped = stopped;
        let served = server::serve(&endpoint, driver, &args.roles, &security, async move {
            tokio::select! {
                () = shutdown_signal() => {}
                _ = csi_stopped.wait_for(|s| *s) => {}
            }
        })
        .await;
        // The kubelet must not find the registration of a driver that no longer serves.
        stop.send_replace(true);
        if let Some(handle) = registered {
            handle
                .await?
                .map_err(|e| format!("kubelet registration: {e}"))?;
        }
        served
    })
}

/// Where the NFS share registry lives: the ConfigMap when one is named, else the file.
fn nfs_registry(args: &NfsArgs, state_dir: &Path) -> BoxResult<RegistryConfig> {
    Ok(match &args.nfs_registry_configmap {
        Some(name) => RegistryConfig::ConfigMap {
            namespace: args.nfs_registry_namespace.clone().ok_or(
                "--nfs-registry-configmap needs --nfs-registry-namespace or POD_NAMESPACE",
            )?,
            name: name.clone(),
        },
        None => RegistryConfig::File(
            args.nfs_registry_file
                .as_deref()
                .map_or_else(|| state_dir.join("nfs-shares.json"), absolute),
        ),
    })
}

const BLOCKING_THREADS: usize = 24;

/// A full ListVolumes of 10,000 volumes allocates and frees tens of thousands of small objects;
/// glibc keeps the freed pages (only the top of the heap is ever trimmed on its own), and
/// resident memory stays at its peak. `malloc_trim` returns free pages from anywhere in the heap;
/// once every few seconds costs nothing measurable.
async fn return_freed_memory() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tick.tick().await;
        crate::os::malloc::trim();
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: Option<&str>, csi: Option<&str>) -> RegistrationArgs {
        RegistrationArgs {
            kubelet_registration_dir: dir.map(PathBuf::from),
            kubelet_csi_endpoint: csi.map(PathBuf::from),
        }
    }

    #[test]
    fn the_kubelet_is_told_a_unix_socket_path() {
        let unix: Endpoint = "unix:///csi/csi.sock".parse().unwrap();
        let tcp: Endpoint = "tcp://127.0.0.1:10000".parse().unwrap();
        assert!(args(None, None).registration("d", &unix).unwrap().is_none());
        let reg = args(Some("/reg"), None)
            .registration("d", &unix)
            .unwrap()
            .unwrap();
        assert_eq!(reg.kubelet_csi_endpoint, PathBuf::from("/csi/csi.sock"));
        assert_eq!(reg.socket(), PathBuf::from("/reg/d-reg.sock"));
        let reg = args(Some("/reg"), Some("/var/lib/kubelet/plugins/d/csi.sock"))
            .registration("d", &tcp)
            .unwrap()
            .unwrap();
        assert_eq!(
            reg.kubelet_csi_endpoint,
            PathBuf::from("/var/lib/kubelet/plugins/d/csi.sock")
        );
        assert!(args(Some("/reg"), None).registration("d", &tcp).is_err());
        assert!(args(Some("/reg"), Some("csi.sock"))
            .registration("d", &unix)
            .is_err());
    }
}
