//! Helpers of the NFS driver tests (tests/nfs, tests/chart): the driver
//! started with `--driver nfs` against a `Ganesha`, StorageClass parameters, CreateVolume.

#![allow(dead_code)]

use super::ganesha::{self, Ganesha};
use super::*;
use ferrovol::proto as csi;
use std::collections::HashMap;

pub fn usable(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let ok = unsafe { libc::geteuid() } == 0 && ganesha::available();
    if !ok {
        eprintln!("{test}: needs root, nfs-ganesha, nfs-ganesha-vfs and rpcbind: skipped");
    }
    ok
}

pub async fn nfs_driver(g: &Ganesha, extra: &[&str]) -> Driver {
    let mut b = Driver::builder()
        .arg("--driver")
        .arg("nfs")
        .arg("--nfs-test-export-root")
        .arg(&g.export);
    for a in extra {
        b = b.arg(*a);
    }
    b.start().await
}

pub fn class(g: &Ganesha, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut m = HashMap::from([
        ("server".to_string(), "127.0.0.1".to_string()),
        ("share".to_string(), g.share()),
    ]);
    m.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    m
}

pub fn req(name: &str, params: &HashMap<String, String>) -> csi::CreateVolumeRequest {
    let mut r = create_req(name, 64 * MIB, mount_cap());
    r.parameters = params.clone();
    r
}

/// Parameters external-provisioner adds with --extra-create-metadata.
pub fn pvc(
    params: &HashMap<String, String>,
    ns: &str,
    name: &str,
    pv: &str,
) -> HashMap<String, String> {
    let mut p = params.clone();
    p.insert("csi.storage.k8s.io/pvc/namespace".into(), ns.into());
    p.insert("csi.storage.k8s.io/pvc/name".into(), name.into());
    p.insert("csi.storage.k8s.io/pv/name".into(), pv.into());
    p
}

/// A driver (`--driver nfs`) killed at crash point `point` in CreateVolume `name` of `params`;
/// the crash point is cleared for its next start.
pub async fn crashed_in_create(
    point: &str,
    name: &str,
    params: &HashMap<String, String>,
) -> Driver {
    let mut d = Driver::builder()
        .arg("--driver")
        .arg("nfs")
        .crash_at(point)
        .start()
        .await;
    let _ = d.controller().create_volume(req(name, params)).await;
    d.expect_crash().await;
    d.remove_env("FERROVOL_CRASH_AT");
    d
}

pub async fn create(d: &Driver, name: &str, params: &HashMap<String, String>) -> csi::Volume {
    d.controller()
        .create_volume(req(name, params))
        .await
        .unwrap_or_else(|e| panic!("CreateVolume {name}: {e}\n{}", d.log()))
        .into_inner()
        .volume
        .unwrap()
}

/// The id CreateVolume gives volume key `key` on `g`'s share (`nfs/<share key>/<key>`).
pub fn nfs_id(g: &Ganesha, key: &str) -> String {
    use ferrovol::backend::nfs::layout;
    layout::share_volume_id(&layout::share_key("127.0.0.1", &g.share()), key)
}

pub fn sub_dir(v: &csi::Volume) -> String {
    v.volume_context["subDir"].clone()
}

pub fn records(g: &Ganesha) -> Vec<String> {
    dir_names(&g.export.join(".ferrovol/volumes"))
        .into_iter()
        .filter(|n| n.ends_with(".json"))
        .collect()
}

/// The protocol a test runs over: NFSv3 against ganesha serving v3 and v4, or NFSv4.1 against
/// ganesha serving v4 alone (no portmap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    V3,
    V41,
}

impl Proto {
    pub fn start(self) -> Ganesha {
        match self {
            Proto::V3 => Ganesha::start(),
            Proto::V41 => Ganesha::start_v4(),
        }
    }

    pub fn version(self) -> ferrovol::nfs::Version {
        match self {
            Proto::V3 => ferrovol::nfs::Version::V3,
            Proto::V41 => ferrovol::nfs::Version::V41,
        }
    }

    /// Client options that speak this version only.
    pub fn opts(self) -> ferrovol::nfs::ClientOptions {
        ferrovol::nfs::ClientOptions {
            version: ferrovol::nfs::Want::Only(self.version()),
            ..Default::default()
        }
    }

    /// The protocol's name of a status: `NFS3ERR_<s>` or `NFS4ERR_<s>`.
    pub fn name(self, s: &str) -> String {
        match self {
            Proto::V3 => format!("NFS3ERR_{s}"),
            Proto::V41 => format!("NFS4ERR_{s}"),
        }
    }
}
