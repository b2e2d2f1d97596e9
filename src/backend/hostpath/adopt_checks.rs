//! The checks a directory passes before it is adopted (`adopt`): what it is, where it lies,
//! whose it is, who uses it. Each refusal names the directory and the cause; none changes
//! anything.
//!
//! A directory a pod of this node uses is refused too (`backend::pod_paths` says why the
//! mount and /proc checks of `os::inuse` cannot see such a pod). The pods' host paths come from
//! the lister the request carries; the directory is refused when it equals, lies under or
//! contains one of them. A pod's path is resolved in this process's view of the node (symbolic
//! links followed); one that does not exist there names nothing the directory could hold.

use super::HostpathBackend;
use crate::backend::pod_paths::{PodPath, PodPaths, PodsError};
use crate::error::{Error, Result};
use crate::os::btrfs::BtrfsQgroups;
use crate::os::{inuse, markers, mountinfo};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// The device of the filesystem (btrfs: the subvolume) a rename of `dir` must stay in: its
/// own, or for a btrfs subvolume, which has a device of its own, the one it sits in.
pub(super) fn fs_dev(dir: &Path) -> io::Result<u64> {
    if BtrfsQgroups::is_subvolume(dir) {
        Ok(std::fs::metadata(dir.parent().unwrap_or(Path::new("/")))?.dev())
    } else {
        Ok(std::fs::metadata(dir)?.dev())
    }
}

/// Whether `a` and `b` lie on one filesystem (by the device the mount table shows for the mount
/// holding each: on btrfs the same for all its subvolumes), as a reflink copy needs.
pub(super) fn same_filesystem(a: &Path, b: &Path) -> io::Result<bool> {
    Ok(mountinfo::holding_mount(a)?.device == mountinfo::holding_mount(b)?.device)
}

/// Whether `dir` and `path` are one directory or one lies below the other, comparing whole
/// components (`/data/a` and `/data/ab` do not overlap); `.` and trailing slashes do not count.
pub(super) fn overlaps(dir: &Path, path: &Path) -> bool {
    let (dir, path): (PathBuf, PathBuf) = (dir.components().collect(), path.components().collect());
    dir.starts_with(&path) || path.starts_with(&dir)
}

/// `path` as this process finds it on the node: canonical; None when it does not exist. A path
/// that cannot be resolved otherwise is compared as written, so that doubt refuses.
pub(super) fn resolve(path: &Path) -> Option<PathBuf> {
    match std::fs::canonicalize(path) {
        Ok(real) => Some(real),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            None
        }
        Err(_) => Some(path.components().collect()),
    }
}

/// The first of `uses` whose path, resolved by `resolve`, overlaps `dir` (canonical), with
/// that resolved path. A pod that mounts a directory above `dir` only read-only (a node agent
/// with `hostPath: /`) writes nothing there and follows the rename within the filesystem: no
/// user. The same pod on `dir` itself or below it is one: adoption would take its data away.
pub(super) fn user_of<'a>(
    dir: &Path,
    uses: &'a [PodPath],
    resolve: impl Fn(&Path) -> Option<PathBuf>,
) -> Option<(&'a PodPath, PathBuf)> {
    uses.iter().find_map(|u| {
        let real = resolve(&u.path)?;
        let (d, r): (PathBuf, PathBuf) = (dir.components().collect(), real.components().collect());
        let reads_above = u.read_only && d.starts_with(&r) && d != r;
        (overlaps(dir, &real) && !reads_above).then_some((u, real))
    })
}

/// Without Kubernetes the check is skipped; said once.
static STANDALONE: std::sync::Once = std::sync::Once::new();

impl HostpathBackend {
    /// The canonical path of a directory that may be adopted, or why not.
    pub(super) fn check_source(&self, id: &str, path: &Path) -> Result<PathBuf> {
        let shown = path.display();
        let invalid = |why: String| Err(Error::invalid(format!("volume {id}: {shown} {why}")));
        let refuse = |why: String| {
            Err(Error::precondition(
                id,
                format!("{shown} {why}; nothing was changed"),
            ))
        };
        if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
            return invalid("is not an absolute path without '..'".into());
        }
        let meta = std::fs::symlink_metadata(path)
            .map_err(|e| Error::invalid(format!("volume {id}: cannot adopt {shown}: {e}")))?;
        if meta.file_type().is_symlink() {
            return invalid(
                "is a symbolic link; adopt the directory it points to, by its own path".into(),
            );
        }
        if !meta.is_dir() {
            return invalid("is not a directory".into());
        }
        let real =
            std::fs::canonicalize(path).map_err(Error::os(id, format!("resolve {shown}")))?;
        if real != path.components().collect::<PathBuf>() {
            return invalid(format!(
                "lies behind a symbolic link (it is {}); give that path",
                real.display()
            ));
        }
        let base = &self.base;
        if base.starts_with(&real) {
            return invalid(format!(
                "is the base path {} or a parent of it",
                base.display()
            ));
        }
        let journal = self.ledger.journal().dir();
        if journal.starts_with(&real) {
            return invalid(format!(
                "holds the driver's state journal {}",
                journal.display()
            ));
        }
        if let Ok(inside) = real.strip_prefix(base) {
            let first = inside.iter().next().unwrap_or_default().to_string_lossy();
            let top = base.join(first.as_ref());
            if inside.components().count() > 1 || first.starts_with('.') {
                let whose = match markers::owner_marker(&top).ok().flatten() {
                    Some(o) => format!("the directory of volume {o}"),
                    None if first.starts_with('.') => "the driver's own".to_string(),
                    None => {
                        "a directory of the base that is no volume: adopt that one, whole".into()
                    }
                };
                return refuse(format!(
                    "lies inside {} in the base, {whose}",
                    top.display()
                ));
            }
            if let Some(rec) = self.ledger.get(&first) {
                return refuse(format!("is the directory of volume {}", rec.id));
            }
        }
        match markers::read_markers(&real) {
            Ok(None) => {}
            Ok(Some(m)) => {
                return refuse(format!(
                    "carries the ownership marker of volume {} (state store {}); it belongs to that volume",
                    m.volume,
                    m.store.as_deref().unwrap_or("?")
                ))
            }
            Err(e) => return Err(Error::os(id, format!("read the markers of {shown}"))(e)),
        }
        Ok(real)
    }

    /// The directory must lie in the base's filesystem (and btrfs subvolume): adoption renames,
    /// it never copies across filesystems.
    pub(super) fn check_same_fs(&self, id: &str, dir: &Path) -> Result<()> {
        let base = std::fs::metadata(&self.base)
            .map_err(Error::os(id, format!("stat {}", self.base.display())))?;
        let dev = fs_dev(dir).map_err(Error::os(id, format!("stat {}", dir.display())))?;
        if dev != base.dev() {
            let show = |d: u64| format!("{}:{}", libc::major(d), libc::minor(d));
            return Err(Error::precondition(
                id,
                format!(
                    "{} is on another filesystem (device {}) than the base path {} (device {}); adoption moves no data across filesystems: copy it into a new volume instead. Nothing was changed",
                    dir.display(),
                    show(dev),
                    self.base.display(),
                    show(base.dev())
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a directory something on this node uses (see `os::inuse` for the proof).
    pub(super) fn check_unused(&self, id: &str, dir: &Path) -> Result<()> {
        let what = format!("find the users of {}", dir.display());
        let why =
            crate::backend::done::long_step(|| inuse::in_use(dir)).map_err(Error::os(id, what))?;
        why.map_or(Ok(()), |why| {
            Err(Error::precondition(
                id,
                format!(
                    "{} is in use: {why}; stop the pod or process using it first. Nothing was changed",
                    dir.display()
                ),
            ))
        })
    }

    /// Refuses `dir` (canonical) when a pod of this node uses it, or when the pods' paths
    /// cannot be known (see the module doc).
    pub(super) fn check_no_pod_uses(
        &self,
        id: &str,
        dir: &Path,
        pods: Option<&dyn PodPaths>,
    ) -> Result<()> {
        let Some(pods) = pods else {
            STANDALONE.call_once(|| {
                tracing::info!(
                    "no Kubernetes configured: adoption checks no pods (none can run here)"
                );
            });
            return Ok(());
        };
        let shown = dir.display();
        let uses = crate::backend::done::long_step(|| pods.pod_paths()).map_err(|e| match e {
            PodsError::Unavailable(cause) => Error::Unavailable {
                server: "Kubernetes API".to_string(),
                detail: format!(
                    "volume {id}: cannot list this node's pods to prove that none uses {shown}: {cause}; nothing was changed"
                ),
            },
            PodsError::Unproven(why) => Error::precondition(
                id,
                format!("cannot prove that no pod uses {shown}: {why}; nothing was changed"),
            ),
        })?;
        let Some((u, real)) = user_of(dir, &uses, resolve) else {
            return Ok(());
        };
        let resolved = (real != u.path).then(|| format!(" (resolved: {})", real.display()));
        Err(Error::precondition(
            id,
            format!(
                "{shown} is in use by pod {}: its {} is {}{}; stop the pod first. Nothing was changed",
                u.pod,
                u.via,
                u.path.display(),
                resolved.unwrap_or_default()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_path(pod: &str, path: &str) -> PodPath {
        PodPath {
            pod: pod.to_string(),
            via: "hostPath volume \"v\"".to_string(),
            path: PathBuf::from(path),
            read_only: false,
        }
    }

    #[test]
    fn a_pod_reading_a_directory_above_is_no_user_but_one_reading_it_or_below_is() {
        let read_only = |pod: &str, path: &str| PodPath {
            read_only: true,
            ..pod_path(pod, path)
        };
        let as_is = |p: &Path| Some(p.components().collect());
        let dir = Path::new("/data/a");
        let table = [
            // (the pod's path, mounted read-only, a user of /data/a)
            ("/", true, false),
            ("/data", true, false),
            ("/data/", true, false),
            ("/", false, true),
            ("/data", false, true),
            ("/data/a", true, true),
            ("/data/a/", true, true),
            ("/data/a/sub", true, true),
            ("/data/a/sub", false, true),
            ("/data/ab", false, false),
        ];
        for (path, ro, user) in table {
            let u = if ro {
                read_only("ns/p", path)
            } else {
                pod_path("ns/p", path)
            };
            assert_eq!(
                user_of(dir, std::slice::from_ref(&u), as_is).is_some(),
                user,
                "a pod's {path} (read-only: {ro})"
            );
        }
    }

    #[test]
    fn a_directory_overlaps_what_it_equals_lies_under_or_contains_by_whole_components() {
        let table = [
            // (directory, pod's path, overlaps)
            ("/data/a", "/data/a", true),
            ("/data/a", "/data/a/", true),
            ("/data/a/", "/data/a", true),
            ("/data/a", "/data/./a", true),
            ("/data/a", "/data", true),
            ("/data/a", "/data/", true),
            ("/data/a", "/", true),
            ("/data/a", "/data/a/b", true),
            ("/data/a", "/data/a/b/c/", true),
            ("/data/a", "/data/ab", false),
            ("/data/ab", "/data/a", false),
            ("/data/a", "/data/a-old", false),
            ("/data/a", "/data/b", false),
            ("/data/a", "/srv/data/a", false),
            ("/data/a/b", "/data/a/c", false),
        ];
        for (dir, path, want) in table {
            assert_eq!(
                overlaps(Path::new(dir), Path::new(path)),
                want,
                "directory {dir} against a pod's {path}"
            );
        }
    }

    #[test]
    fn the_first_overlapping_pod_is_named_and_a_path_that_does_not_exist_matches_nothing() {
        let uses = [
            pod_path("ns/gone", "/data"),
            pod_path("ns/sibling", "/data/ab"),
            pod_path("ns/inside", "/data/a/sub/"),
            pod_path("ns/parent", "/"),
        ];
        // "/data" does not exist on this node: it cannot hold the directory.
        let exists = |p: &Path| (p != Path::new("/data")).then(|| p.components().collect());
        let (u, real) = user_of(Path::new("/data/a"), &uses, exists).expect("a pod uses it");
        assert_eq!(u.pod, "ns/inside");
        assert_eq!(real, Path::new("/data/a/sub"));
        assert_eq!(
            user_of(Path::new("/data/a"), &uses[..2], exists),
            None,
            "a sibling with a common prefix and a path that does not exist are no users"
        );
    }

    #[test]
    fn a_pods_path_through_a_symbolic_link_is_resolved() {
        let t = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(t.path()).unwrap();
        let dir = root.join("pool/app");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::create_dir_all(root.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(root.join("pool"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(dir.join("sub"), root.join("elsewhere/sub-link")).unwrap();
        let table = [
            // A link to the directory's parent, the directory reached through it, a link to a
            // directory inside it: each is the directory's path once resolved.
            (root.join("link"), Some(root.join("pool"))),
            (root.join("link/app/"), Some(dir.clone())),
            (root.join("elsewhere/sub-link"), Some(dir.join("sub"))),
            // Resolved elsewhere, or missing: no user.
            (root.join("elsewhere"), None),
            (root.join("link/app-old"), None),
            (root.join("missing/app"), None),
        ];
        for (path, want) in table {
            let uses = [pod_path("ns/p", path.to_str().unwrap())];
            let got = user_of(&dir, &uses, resolve).map(|(_, real)| real);
            assert_eq!(got, want, "a pod's {}", path.display());
        }
        assert_eq!(resolve(&dir.join("sub/../x")), None);
    }
}
