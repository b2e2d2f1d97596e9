//! Adoption's refusal of a directory a pod of this node uses (`backend::pod_paths` says why the
//! mount and /proc checks of `os::inuse` cannot see such a pod). The pods' host paths come from
//! the lister the request carries; the directory is refused when it equals, lies under or
//! contains one of them. A pod's path is resolved in this process's view of the node (symbolic
//! links followed); one that does not exist there names nothing the directory could hold.

use super::HostpathBackend;
use crate::backend::pod_paths::{PodPath, PodPaths, PodsError};
use crate::error::{Error, Result};
use std::io;
use std::path::{Path, PathBuf};

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
