//! This node's hostpath pools, from `--hostpath-pool`, `--hostpath-pool-config` and
//! `--hostpath-base` (`backend::hostpath::pool_config`). A config with sections by node label
//! needs the Node's labels: read once at start from the API server; when that fails the label
//! sections do not apply (their pools are missing and reported), and the plugin serves on.

use crate::backend::hostpath::pool_config::{self, PoolConfig, PoolSpec};
use k8s_openapi::api::core::v1::Node;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long start-up waits for the Node's labels.
const LABELS_TIMEOUT: Duration = Duration::from_secs(15);

pub fn node_pools(
    node: &str,
    config: Option<&Path>,
    flags: &[(String, PathBuf)],
    hostpath_base: &Path,
) -> io::Result<Vec<PoolSpec>> {
    let from_config = match config {
        Some(path) => {
            let cfg = PoolConfig::read(path)?;
            let labels = if cfg.needs_labels() {
                node_labels(node).unwrap_or_else(|e| {
                    tracing::error!(node, error = %e,
                        "cannot read this Node's labels: the hostpath pool config's label sections do not apply (restart to retry)");
                    BTreeMap::new()
                })
            } else {
                BTreeMap::new()
            };
            cfg.for_node(node, &labels)?
        }
        None => BTreeMap::new(),
    };
    let pools = pool_config::node_pools(&from_config, flags, hostpath_base);
    for p in &pools {
        tracing::info!(pool = %p.name, path = %p.path.display(), "hostpath pool configured");
    }
    Ok(pools)
}

fn node_labels(node: &str) -> io::Result<BTreeMap<String, String>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let get = async {
            let client = kube::Client::try_default().await?;
            kube::Api::<Node>::all(client).get(node).await
        };
        match tokio::time::timeout(LABELS_TIMEOUT, get).await {
            Err(_) => Err(io::Error::other("the API server did not answer in time")),
            Ok(Err(e)) => Err(io::Error::other(e.to_string())),
            Ok(Ok(n)) => Ok(n.metadata.labels.unwrap_or_default()),
        }
    })
}
