//! Command line: `ferrovol serve` runs the driver, `ferrovol ctl` talks to one.

pub mod crd;
pub mod ctl;
pub mod ctl_adopt;
pub mod ctl_kubelet;
pub mod ctl_release;
pub mod devices;
pub mod metrics;
pub mod nodeloss;
pub mod pools;
pub mod serve;
pub mod size;

use crate::server::Endpoint;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

/// Where the embedded standalone default keeps its socket, state and volumes.
pub const DEFAULT_DATA_DIR: &str = "ferrovol-data";

#[derive(Debug, Parser)]
#[command(
    name = "ferrovol",
    version,
    about = "Kubernetes CSI driver for node-local volumes (hostpath directories and block images)",
    long_about = "ferrovol serves the CSI Identity, Controller and Node services on a socket.\n\
                  Run `ferrovol serve` with no flags to start a standalone driver under ./ferrovol-data \
                  (no Kubernetes needed), then drive it with `ferrovol ctl`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the CSI driver.
    Serve(Box<serve::ServeArgs>),
    /// A small CSI client: create, list, publish, unpublish, stat and delete volumes.
    Ctl(ctl::CtlArgs),
    /// Scan the node's block devices once and print what discovery sees, with reasons.
    Devices(devices::DevicesArgs),
    /// Print the BlockDevice CustomResourceDefinition (YAML) that the chart ships.
    Crd,
    /// Act on local volumes whose Node object is deleted, by an opt-in policy (off by default).
    NodeLoss(nodeloss::NodeLossArgs),
}

/// `endpoint`, else the socket of the standalone driver under a data directory.
pub fn endpoint_or_default(endpoint: &Option<Endpoint>, data_dir: &Path) -> Endpoint {
    let default = || Endpoint::Unix(absolute(data_dir).join("csi.sock"));
    endpoint.clone().unwrap_or_else(default)
}

pub fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(p)
    }
}
