//! Which CSI driver a process is, and the backends it serves, built from configuration.

use super::device::DeviceBackend;
use super::hostpath::pool_config::PoolSpec;
use super::hostpath::pools::HostpathPools;
use super::nfs::{NfsBackend, NfsConfig, RegistryConfig};
use super::Backend;
use crate::discovery::Filters;
use crate::state::Journal;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// The two CSI drivers of the one binary: Kubernetes runs one provisioner set per driver name,
/// so node-deployed provisioners (local volumes) and a central one (NFS) never race.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DriverKind {
    /// local.csi.ferrovol.io: node-local volumes (hostpath, device), provisioned on the node.
    Local,
    /// nfs.csi.ferrovol.io: NFS subdir volumes, provisioned centrally, usable on any node.
    Nfs,
}

impl DriverKind {
    pub fn csi_name(self) -> &'static str {
        match self {
            DriverKind::Local => "local.csi.ferrovol.io",
            DriverKind::Nfs => "nfs.csi.ferrovol.io",
        }
    }

    /// Backends this driver may serve, the default set first.
    pub fn backends(self) -> &'static [&'static str] {
        match self {
            DriverKind::Local => &[super::hostpath::BACKEND, super::device::BACKEND],
            DriverKind::Nfs => &[super::nfs::BACKEND],
        }
    }
}

/// Everything a backend may need to start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_id: String,
    pub state_dir: PathBuf,
    /// This node's hostpath pools (`default` among them).
    pub hostpath_pools: Vec<PoolSpec>,
    pub default_capacity: u64,
    /// NFS backend: deadline of every NFS call and kernel mount, known shares, test export root.
    pub nfs_timeout: std::time::Duration,
    pub nfs_shares: Vec<(String, String)>,
    pub nfs_registry: RegistryConfig,
    pub nfs_test_export_root: Option<PathBuf>,
    pub devices: DeviceSettings,
}

/// Which devices the device backend may claim (`--device-include`, `--device-exclude`,
/// `--device-config`), and the paths whose disks are never candidates.
#[derive(Debug, Clone, Default)]
pub struct DeviceSettings {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub config: Option<PathBuf>,
    /// Besides / and /boot: the state dir, the kubelet dir, the data dir.
    pub protected: Vec<PathBuf>,
}

/// Opens the state journal once and builds each named backend on it.
pub fn open(
    kind: DriverKind,
    names: &[String],
    settings: &Settings,
) -> io::Result<Vec<Arc<dyn Backend>>> {
    let journal_dir = settings.state_dir.join("journal");
    // Nothing of this node's state before this start (state dir lost, or first start): the
    // device backend then keeps the claims of this node that only the cluster records.
    let fresh = !std::fs::read_dir(&journal_dir).is_ok_and(|mut d| d.next().is_some());
    let (journal, live) = Journal::open(&journal_dir)?;
    let mut out: Vec<Arc<dyn Backend>> = Vec::new();
    for name in names {
        if !kind.backends().contains(&name.as_str()) {
            let (driver, known) = (kind.csi_name(), kind.backends());
            let why = format!("backend {name:?} is not one of the {driver} driver's: {known:?}");
            return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        }
        let backend: Arc<dyn Backend> = match name.as_str() {
            super::hostpath::BACKEND => HostpathPools::open(
                &settings.node_id,
                &settings.hostpath_pools,
                &settings.state_dir,
                settings.default_capacity,
                journal.clone(),
                &live,
            )?,
            super::nfs::BACKEND => {
                let host = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned());
                let host = host.unwrap_or_else(|_| settings.node_id.clone());
                Arc::new(NfsBackend::open(NfsConfig {
                    timeout: settings.nfs_timeout,
                    registry: settings.nfs_registry.clone(),
                    shares: settings.nfs_shares.clone(),
                    default_capacity: settings.default_capacity,
                    test_export_root: settings.nfs_test_export_root.clone(),
                    instance: format!("{host}:{}", settings.state_dir.display()),
                })?)
            }
            super::device::BACKEND => {
                let d = &settings.devices;
                let filters = Filters::for_node(
                    &d.include,
                    &d.exclude,
                    d.config.as_deref(),
                    &d.protected,
                    Some(&settings.node_id),
                )?;
                Arc::new(DeviceBackend::open(
                    settings.node_id.clone(),
                    &settings.state_dir,
                    filters,
                    journal.clone(),
                    &live,
                    fresh,
                )?)
            }
            other => unreachable!("{other:?} is none of the driver's backends, checked above"),
        };
        out.push(backend);
    }
    if out.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no backend to serve: --backends is empty",
        ));
    }
    Ok(out)
}
