//! Request validation against the real driver: missing fields, names and ids that try to leave
//! the base path, unknown ids, conflicting repeats, impossible sizes and topologies, bad
//! StorageClass parameters, and concurrent creates of one name.

use crate::common;
mod creates;
mod escapes;
mod fields;

use common::*;
use ferrovol::proto as csi;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use tonic::Code;

/// Every path below `dir`, recursively, sorted (directories end in '/').
fn tree(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = format!("{prefix}{}", e.file_name().to_string_lossy());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(format!("{name}/"));
                walk(&e.path(), &format!("{name}/"), out);
            } else {
                out.push(name);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out);
    out.sort();
    out
}

/// A driver whose base sits two directories deep, so what lies around it can be watched.
async fn nested_driver() -> Driver {
    let b = Driver::builder();
    let base = b.path().join("nest/deeper/hostpath");
    b.hostpath_base(base).start().await
}

fn topology(node: &str) -> csi::Topology {
    csi::Topology {
        segments: HashMap::from([("topology.ferrovol.io/node".to_string(), node.to_string())]),
    }
}

/// The publish root exists (the driver creates it at start); a refused request leaves it empty.
fn kubelet_is_empty(d: &Driver) -> bool {
    std::fs::read_dir(d.root().join("kubelet"))
        .map(|mut entries| entries.next().is_none())
        .unwrap_or(true)
}
