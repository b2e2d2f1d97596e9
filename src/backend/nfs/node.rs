//! Node side of the NFS backend: mount `server:share/subdir` at the pod's target with the kernel
//! NFS client, taking server, share and subdir from the volume context alone (the node keeps no
//! records: the PV carries everything). Kernel calls run under a deadline, bounded per server
//! (`os::nfscalls`). NodeGetVolumeStats for a server known not to answer says so at once, as an
//! abnormal volume condition, without another kernel call that would hang too.

use super::shares::parse_share;
use super::{needless, NfsBackend, BACKEND, CAPS, CTX_NFSVERS, CTX_SERVER, CTX_SHARE, CTX_SUBDIR};
use crate::backend::NodeBackend;
use crate::error::{Error, Result};
use crate::node::Target;
use crate::os::mount::BindOptions;
use crate::os::nfsmount::NfsMount;
use crate::os::{mountinfo, nfscalls, nfsmount, statfs};
use crate::volume::{
    CapacityRange, PublishRequest, StageRequest, VolumeCondition, VolumeId, VolumeStats,
};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// Where a volume lives, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Location {
    pub server: String,
    pub share: String,
    pub subdir: String,
    /// The NFS version the volume was made with (`3`, `4.1`); `None` for volumes made before
    /// the context carried it (the kernel then negotiates).
    pub nfs_vers: Option<String>,
}

/// Reads and checks the volume context: a plain host, an absolute clean share, a relative clean
/// subdir. The context comes from the PV, which anyone who can write PVs controls, so nothing in
/// it may add mount options or climb out of the share.
pub(super) fn location(vid: &str, ctx: &BTreeMap<String, String>) -> Result<Location> {
    let get = |k: &str| {
        ctx.get(k).filter(|v| !v.is_empty()).ok_or_else(|| {
            Error::invalid(format!(
                "volume {vid}: volume_context has no {k:?} (it is set by CreateVolume)"
            ))
        })
    };
    let (server, share, subdir) = (get(CTX_SERVER)?, get(CTX_SHARE)?, get(CTX_SUBDIR)?);
    let bad = |what: &str, v: &str| {
        Error::invalid(format!(
            "volume {vid}: {what} {v:?} in volume_context is not valid"
        ))
    };
    let host_char = |c: char| c.is_ascii_alphanumeric() || ".-:[]".contains(c);
    if server.len() > 253 || server.starts_with('-') || !server.chars().all(host_char) {
        return Err(bad("server", server));
    }
    let clean = |p: &str| {
        p.split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains(['\0', ',', '\n']))
    };
    let share_ok = share == "/"
        || (share.starts_with('/') && clean(share.trim_start_matches('/').trim_end_matches('/')));
    if !share_ok || share.len() > 1024 {
        return Err(bad("share", share));
    }
    let top = subdir.split('/').next();
    if !clean(subdir) || subdir.len() > 4096 || top == Some(super::layout::META_DIR) {
        return Err(bad("subDir", subdir));
    }
    let nfs_vers = match ctx.get(CTX_NFSVERS).map(String::as_str) {
        None => None,
        Some(v @ ("3" | "4.1")) => Some(v.to_string()),
        Some(v) => return Err(bad("nfsvers", v)),
    };
    // Round-trips through the parser the CLI uses, so both agree on what a share is.
    let (server, share) = parse_share(&format!("{server}:{share}"))
        .map_err(|e| Error::invalid(format!("volume {vid}: {e}")))?;
    Ok(Location {
        server,
        share,
        subdir: subdir.clone(),
        nfs_vers,
    })
}

impl NfsBackend {
    /// Kernel mounts and unmounts may take several round trips (portmap, MOUNT, NFS).
    fn kernel_deadline(&self) -> Duration {
        self.cfg.timeout * 3
    }

    /// `--nfs-test-export-root`: bind-mount the directory the test's NFS server exports.
    fn bind_from_export(
        &self,
        vid: &str,
        root: &Path,
        loc: &Location,
        req: &PublishRequest,
    ) -> Result<()> {
        // The same option checks as a real mount, so tests exercise them.
        let plan = plan(vid, loc, req, None)?;
        let source = root.join(&loc.subdir);
        let real = std::fs::canonicalize(&source)
            .map_err(|e| Error::not_found_because(vid, format!("{}: {e}", source.display())))?;
        let real_root =
            std::fs::canonicalize(root).map_err(Error::os(vid, "resolve test export root"))?;
        if !real.starts_with(&real_root) || !real.is_dir() {
            let (source, root) = (source.display(), root.display());
            let why = format!("{source} is not a directory inside {root}");
            return Err(Error::precondition(vid, why));
        }
        req.target
            .bind_dir(vid, &real, BindOptions { flags: plan.flags })
    }

    /// What is mounted at `target` when it is not the volume's directory (a retry finds its
    /// own). A kernel mount's source names the path on the server (the server itself may be
    /// written as a name or an address); the test seam's bind is the export's directory itself.
    fn other_mount(
        &self,
        vid: &str,
        loc: &Location,
        target: &Path,
        entry: Option<&mountinfo::MountEntry>,
    ) -> Result<Option<String>> {
        let Some(root) = &self.cfg.test_export_root else {
            let source = entry.map(|m| m.source.clone());
            return Ok(source.filter(|s| !mounts_dir(s, &loc.share, &loc.subdir)));
        };
        use std::os::unix::fs::MetadataExt;
        let dir = root.join(&loc.subdir);
        let id = |p: &Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
        let at = id(target).map_err(Error::os(vid, format!("stat {}", target.display())))?;
        Ok((id(&dir).ok() != Some(at)).then(|| "another directory".to_string()))
    }

    fn kernel_mount(&self, vid: &str, loc: &Location, req: &PublishRequest) -> Result<()> {
        if !nfsmount::kernel_has_nfs() {
            let why = "this node's kernel has no NFS client (no nfs in /proc/filesystems): load the nfs module or install the NFS client";
            return Err(Error::precondition(vid, why));
        }
        let deadline = self.kernel_deadline();
        let server = loc.server.clone();
        let addr = nfscalls::with_deadline_as(
            nfscalls::RESOLVER,
            &loc.server,
            &format!("resolve {server} for volume {vid}"),
            deadline,
            move || {
                nfsmount::resolve(&server).map_err(|e| Error::Unavailable {
                    server: server.clone(),
                    detail: format!("cannot resolve: {e}"),
                })
            },
        )?;
        let plan = plan(vid, loc, req, Some(addr))?;
        tracing::info!(volume = %vid, source = %plan.source, fstype = plan.fstype, options = %plan.data, "mounting NFS");
        let (target, v) = (req.target.clone(), vid.to_string());
        let action = format!("mount {} for volume {vid}", plan.source);
        nfscalls::with_deadline(&loc.server, &action, deadline, move || {
            target.mount_fs(
                &v,
                Path::new(&plan.source),
                plan.fstype,
                plan.flags,
                &plan.data,
            )
        })
    }
}

/// The mount of `loc` that `req` asks for (InvalidArgument when its options are refused).
fn plan(vid: &str, loc: &Location, req: &PublishRequest, addr: Option<IpAddr>) -> Result<NfsMount> {
    let read_only = read_only(req);
    let (flags, vers) = (&req.capability.mount_flags, loc.nfs_vers.as_deref());
    let (server, share, sub) = (&loc.server, &loc.share, &loc.subdir);
    nfsmount::plan(server, share, sub, flags, read_only, addr, vers)
        .map_err(|e| Error::invalid(format!("volume {vid}: {e}")))
}

/// Whether an NFS mount source (`server:/path`, the server as a name or an address) is the
/// directory `subdir` of `share`.
fn mounts_dir(source: &str, share: &str, subdir: &str) -> bool {
    let norm = |p: &str| {
        p.split('/')
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>()
            .join("/")
    };
    let path = source.rsplit_once(":/").map(|(_, p)| norm(p));
    path == Some(norm(&format!("{share}/{subdir}")))
}

/// Whether `req`'s mount is read-only: asked for, or an access mode that only reads.
fn read_only(req: &PublishRequest) -> bool {
    req.read_only || req.capability.mode.read_only()
}

/// The source of the mount at `path` (`None` when it cannot be read).
fn mount_source(path: &Path) -> Option<String> {
    mountinfo::mount_at(path).ok().flatten().map(|m| m.source)
}

/// Stats of a volume whose server does not answer: the condition says why, the usage is zeros
/// (not measured; the kubelet drops a response that has no usage, condition and all).
fn not_measured(message: String) -> VolumeStats {
    VolumeStats {
        total_bytes: 0,
        used_bytes: 0,
        available_bytes: 0,
        inodes: None,
        condition: Some(VolumeCondition {
            abnormal: true,
            message,
        }),
    }
}

impl NodeBackend for NfsBackend {
    fn stage(&self, req: &StageRequest) -> Result<()> {
        needless(&req.id, "are not staged")
    }

    fn unstage(&self, id: &VolumeId, _staging: &Target) -> Result<()> {
        needless(id, "are not staged")
    }

    fn publish(&self, req: &PublishRequest) -> Result<()> {
        let vid = req.id.to_string();
        if let Some(why) = CAPS.refuse(BACKEND, &req.capability) {
            return Err(Error::invalid(format!("volume {vid}: {why}")));
        }
        let loc = location(&vid, &req.volume_context)?;
        let read_only = read_only(req);
        let path = req.target.as_path();
        if req.target.is_mounted(&vid)? {
            if nfsmount::is_stale(path) {
                tracing::warn!(volume = %vid, target = %path.display(), "stale NFS mount: replacing it");
                let detach = format!("detach stale mount {}", path.display());
                nfsmount::lazy_unmount(path).map_err(Error::os(&vid, detach))?;
            } else {
                let entry =
                    mountinfo::mount_at(path).map_err(Error::os(&vid, "read mount table"))?;
                if entry.as_ref().is_some_and(|m| m.read_only() != read_only) {
                    let (path, was) = (path.display(), !read_only);
                    let why = format!("{path} is already published with read_only={was}");
                    return Err(Error::exists(&vid, why));
                }
                if let Some(other) = self.other_mount(&vid, &loc, path, entry.as_ref())? {
                    let (path, dir) = (path.display(), &loc.subdir);
                    let why = format!("{path} already holds {other}, not this volume's {dir}");
                    return Err(Error::exists(&vid, why));
                }
                return Ok(()); // a retry: already published
            }
        }
        match &self.cfg.test_export_root {
            Some(root) => self.bind_from_export(&vid, root, &loc, req),
            None => self.kernel_mount(&vid, &loc, req),
        }
    }

    fn unpublish(&self, id: &VolumeId, target: &Target) -> Result<()> {
        let vid = id.to_string();
        if target.is_mounted(&vid)? {
            let (t, v, deadline) = (target.clone(), vid.clone(), self.kernel_deadline());
            let server = mount_source(target.as_path()).unwrap_or_else(|| "(unknown)".into());
            let action = format!("unmount {} for volume {vid}", target.as_path().display());
            let unmounted =
                nfscalls::with_deadline(&server, &action, deadline, move || t.unmount_all(&v));
            if let Err(e) = unmounted {
                // The server is gone or the mount is busy: detach it now, the kernel frees it later.
                tracing::warn!(volume = %vid, target = %target.as_path().display(), error = %e, "unmount failed; detaching lazily");
                let path = target.as_path().to_path_buf();
                let detach = move || {
                    let detach = format!("detach {}", path.display());
                    nfsmount::lazy_unmount(&path).map_err(Error::os("", detach))
                };
                nfscalls::with_deadline(&server, &format!("lazy {action}"), deadline, detach)?;
            }
        }
        target.remove(&vid);
        Ok(())
    }

    fn stats(&self, id: &VolumeId, path: &Path) -> Result<VolumeStats> {
        let vid = id.to_string();
        if !mountinfo::is_mount_point(path).unwrap_or(false) {
            let why = format!("nothing is published at {}", path.display());
            return Err(Error::not_found_because(vid, why));
        }
        let source = mount_source(path).unwrap_or_default();
        let server = nfscalls::server_of(&source);
        if let Some(hung) = nfscalls::not_answering(server) {
            let (secs, calls) = (hung.silent_for.as_secs(), hung.abandoned);
            let why = format!("NFS server {server} has not answered for {secs} s ({calls} kernel calls to it still hung)");
            return Ok(not_measured(why));
        }
        // statfs on a mount whose server died blocks in the kernel: bound it too.
        let (p, v, deadline) = (path.to_path_buf(), vid.clone(), self.kernel_deadline());
        let action = format!("statfs {} for volume {vid}", path.display());
        let measure =
            move || statfs::fs_stats(&p).map_err(Error::os(v, format!("statfs {}", p.display())));
        let fs = match nfscalls::with_deadline(&source, &action, deadline, measure) {
            Ok(fs) => fs,
            Err(Error::DeadlineExceeded { .. }) => {
                let secs = deadline.as_secs().max(1);
                let why = format!("NFS server {server} did not answer statfs within {secs} s");
                return Ok(not_measured(why));
            }
            Err(e) => return Err(e),
        };
        let (inodes, free) = (fs.total_inodes, fs.free_inodes);
        Ok(VolumeStats {
            total_bytes: fs.total_bytes,
            used_bytes: fs.total_bytes.saturating_sub(fs.available_bytes),
            available_bytes: fs.available_bytes,
            inodes: (inodes > 0).then(|| (inodes, inodes - free, free)),
            condition: Some(VolumeCondition::healthy()),
        })
    }

    fn node_expand(&self, id: &VolumeId, _path: &Path, _range: CapacityRange) -> Result<u64> {
        needless(id, "grow without a node step")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_mount_is_the_volumes_only_at_its_own_path() {
        for source in [
            "10.0.0.5:/export/team/pvc-1",
            "nfs.example:/export//team/pvc-1/",
            "[fd00::1]:/export/team/pvc-1",
        ] {
            assert!(mounts_dir(source, "/export", "team/pvc-1"), "{source}");
        }
        for source in [
            "10.0.0.5:/export/team/pvc-2",
            "10.0.0.5:/export/team",
            "garbage",
        ] {
            assert!(!mounts_dir(source, "/export", "team/pvc-1"), "{source}");
        }
        assert!(mounts_dir("s:/pvc-1", "/", "pvc-1"));
    }

    fn ctx(server: &str, share: &str, sub: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (CTX_SERVER.into(), server.into()),
            (CTX_SHARE.into(), share.into()),
            (CTX_SUBDIR.into(), sub.into()),
        ])
    }

    #[test]
    fn context_is_validated() {
        let l = location("nfs/v", &ctx("10.0.0.5", "/srv/nfs/", "ns/pvc-1")).unwrap();
        assert_eq!(
            (l.server.as_str(), l.share.as_str(), l.subdir.as_str()),
            ("10.0.0.5", "/srv/nfs", "ns/pvc-1")
        );
        for (s, sh, sub) in [
            ("-oevil", "/e", "v"),
            ("a b", "/e", "v"),
            ("h", "rel", "v"),
            ("h", "/e/../x", "v"),
            ("h", "/e", "../x"),
            ("h", "/e", "a//b"),
            ("h", "/e", "/abs"),
            ("h", "/e", "v,ro"),
            ("h", "/e", ".ferrovol/volumes"),
            ("h", "/e", ""),
        ] {
            let e = location("nfs/v", &ctx(s, sh, sub)).unwrap_err();
            assert!(e.to_string().contains("nfs/v"), "{e}");
        }
    }

    #[test]
    fn the_provisioned_version_reaches_the_mount_options() {
        let mut c = ctx("10.0.0.5", "/srv/nfs", "pvc-1");
        assert_eq!(location("nfs/v", &c).unwrap().nfs_vers, None);
        c.insert(CTX_NFSVERS.into(), "4.1".into());
        let l = location("nfs/v", &c).unwrap();
        assert_eq!(l.nfs_vers.as_deref(), Some("4.1"));
        // The kernel mount the node makes (this kernel has no NFS client to make it).
        let addr = Some("10.0.0.5".parse().unwrap());
        let plan = |opts: &[&str]| {
            nfsmount::plan(
                &l.server,
                &l.share,
                &l.subdir,
                opts,
                false,
                addr,
                l.nfs_vers.as_deref(),
            )
            .unwrap()
        };
        let m = plan(&["hard"]);
        assert_eq!(
            (m.fstype, m.data.as_str()),
            ("nfs4", "hard,vers=4.1,addr=10.0.0.5")
        );
        assert_eq!(m.source, "10.0.0.5:/srv/nfs/pvc-1");
        // mountOptions that name a version win (CreateVolume refused a class where they disagree).
        let m = plan(&["nfsvers=4.2"]);
        assert_eq!(
            (m.fstype, m.data.as_str()),
            ("nfs4", "nfsvers=4.2,addr=10.0.0.5")
        );
        for bad in ["4", "2", "4.1,ro"] {
            c.insert(CTX_NFSVERS.into(), bad.into());
            assert!(location("nfs/v", &c).is_err(), "{bad}");
        }
    }
}
