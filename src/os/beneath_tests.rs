//! Tests of path confinement and fd mounts, as root with real directories and real mounts.

use super::*;
use crate::os::mountfd::{bind_fd_onto, fs_mount_with, Api};
use crate::os::mountinfo;
use std::fs;
use std::os::unix::fs::symlink;
use sys_mount::MountFlags;

/// A canonical temp dir; drop lazily unmounts everything below it, deepest first.
struct Scratch {
    root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        Scratch { root, _dir: dir }
    }
    fn dir(&self, rel: &str) -> PathBuf {
        let p = self.root.join(rel);
        fs::create_dir_all(&p).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for _ in 0..4 {
            let mut mounts = mountinfo::mounts_under(&self.root).unwrap_or_default();
            if mounts.is_empty() {
                break;
            }
            mounts.reverse();
            for m in mounts {
                let _ = nix::mount::umount2(&m.mount_point, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

fn roots(paths: &[&str]) -> PublishRoots {
    PublishRoots::new(paths.iter().map(PathBuf::from).collect()).unwrap()
}

#[test]
fn locate_picks_the_deepest_root_and_names_path_and_roots() {
    let r = roots(&[
        "/var/lib/kubelet",
        "/data/pods",
        "/var/lib/kubelet/plugins/x",
    ]);
    let (root, rel) = r.locate(Path::new("/var/lib/kubelet/pods/u/vol")).unwrap();
    assert_eq!(
        (root, rel.as_path()),
        (Path::new("/var/lib/kubelet"), Path::new("pods/u/vol"))
    );
    let (root, rel) = r
        .locate(Path::new("/var/lib/kubelet/plugins/x/s/"))
        .unwrap();
    assert_eq!(
        (root, rel.as_path()),
        (Path::new("/var/lib/kubelet/plugins/x"), Path::new("s"))
    );
    // Normalised before the check: `..` cannot climb out, `.` and `//` are ignored.
    let (_, rel) = r.locate(Path::new("/data//pods/./a/../b")).unwrap();
    assert_eq!(rel, Path::new("b"));
    for bad in [
        "/etc/x",
        "/var/lib/kubelet/../../../etc",
        "/data/podsX/a",
        "/data/pods",
    ] {
        let err = r.locate(Path::new(bad)).unwrap_err();
        assert!(err.contains(bad), "{err}");
        assert!(err.contains("/var/lib/kubelet, /data/pods"), "{err}");
    }
    assert!(r
        .locate(Path::new("relative/x"))
        .unwrap_err()
        .contains("absolute"));
    assert!(PublishRoots::new(vec!["rel".into()]).is_err());
    assert!(PublishRoots::new(vec!["/a/..".into()]).is_err());
    assert!(PublishRoots::new(vec![]).is_err());
}

#[test]
fn symlinked_parent_pointing_outside_is_refused_and_nothing_lands_outside() {
    let s = Scratch::new();
    let root = s.dir("root");
    let outside = s.dir("outside");
    let src = s.dir("src");
    symlink(&outside, root.join("abs")).unwrap();
    symlink("../outside", root.join("rel")).unwrap();
    for link in ["abs", "rel"] {
        let rel = Path::new(link).join("target");
        let err = open_beneath(&root, &rel, OFlag::O_PATH).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(
            err.to_string()
                .contains(&*root.join(&rel).to_string_lossy()),
            "{err}"
        );
        assert!(mkdir_beneath(&root, &rel, 0o750).is_err());
        assert!(create_file_beneath(&root, &rel, 0o640).is_err());
        // The last component a symlink: refused too.
        assert!(mkdir_beneath(&root, Path::new(link), 0o750).is_err());
        assert!(open_beneath(&root, Path::new(link), OFlag::O_PATH).is_err());
    }
    assert!(
        !outside.join("target").exists(),
        "created a directory outside the root"
    );
    // `..` in a relative path is refused outright.
    assert!(open_beneath(&root, Path::new("../outside"), OFlag::O_PATH).is_err());
    assert!(mkdir_beneath(&root, Path::new("a/../../outside/x"), 0o750).is_err());
    assert!(!outside.join("x").exists());
    // Unmount through a symlinked target never reaches the mount it points at.
    let m = s.dir("outside/m");
    let fd = open_beneath(&s.root, Path::new("outside/m"), OFlag::O_PATH).unwrap();
    bind_mount_onto(&src, fd.as_fd(), MountFlags::empty()).unwrap();
    symlink(&m, root.join("lm")).unwrap();
    assert!(!unmount_beneath(&root, Path::new("lm")).unwrap());
    assert!(unmount_beneath(&root, Path::new("abs/m")).is_err());
    assert!(
        mountinfo::is_mount_point(&m).unwrap(),
        "outside mount was removed"
    );
    assert!(mountinfo::mounts_under(&root).unwrap().is_empty());
}

#[test]
fn a_path_swapped_after_open_still_gets_the_mount_where_the_fd_points() {
    let s = Scratch::new();
    let root = s.dir("root");
    let outside = s.dir("outside/t");
    let src = s.dir("src");
    fs::write(src.join("marker"), b"volume").unwrap();
    let fd = mkdir_beneath(&root, Path::new("pods/t"), 0o750).unwrap();
    // Swap the parent for a symlink to a directory outside, after the open.
    fs::rename(root.join("pods"), root.join("pods-old")).unwrap();
    symlink(s.root.join("outside"), root.join("pods")).unwrap();
    bind_mount_onto(&src, fd.as_fd(), MountFlags::empty()).unwrap();
    assert_eq!(fs::read(root.join("pods-old/t/marker")).unwrap(), b"volume");
    assert!(mountinfo::is_mount_point(&root.join("pods-old/t")).unwrap());
    assert!(
        !outside.join("marker").exists(),
        "the mount followed the symlink"
    );
    assert!(!mountinfo::is_mount_point(&outside).unwrap());
    // A fresh open sees the mount; the pre-mount fd still names the covered directory.
    let fresh = open_beneath(&root, Path::new("pods-old/t"), OFlag::O_PATH).unwrap();
    assert!(is_mount_root(fresh.as_fd()).unwrap());
    assert!(!is_mount_root(fd.as_fd()).unwrap());
    // An open descriptor on the mount would make it busy.
    drop(fresh);
    assert!(unmount_beneath(&root, Path::new("pods-old/t")).unwrap());
    assert!(!unmount_beneath(&root, Path::new("pods-old/t")).unwrap());
    assert!(!unmount_beneath(&root, Path::new("missing/t")).unwrap());
}

#[test]
fn legacy_bind_works_plain_and_refuses_flags_it_cannot_apply() {
    let s = Scratch::new();
    let src = s.dir("src");
    fs::write(src.join("marker"), b"v").unwrap();
    let src_fd = open_beneath(&s.root, Path::new("src"), OFlag::O_PATH).unwrap();
    let t = mkdir_beneath(&s.root, Path::new("ro"), 0o750).unwrap();
    let err = bind_fd_onto(src_fd.as_fd(), t.as_fd(), MountFlags::RDONLY, Api::Legacy);
    assert_eq!(err.unwrap_err().kind(), io::ErrorKind::Unsupported);
    assert!(!mountinfo::is_mount_point(&s.root.join("ro")).unwrap());
    let t = mkdir_beneath(&s.root, Path::new("rw"), 0o750).unwrap();
    bind_fd_onto(src_fd.as_fd(), t.as_fd(), MountFlags::empty(), Api::Legacy).unwrap();
    assert_eq!(fs::read(s.root.join("rw/marker")).unwrap(), b"v");
}

/// Read-only bind through every interface. The target's directory sits on a tmpfs of our own,
/// so a remount that hit the wrong mount would show as that tmpfs turning read-only.
#[test]
fn read_only_is_honoured_by_every_bind_interface() {
    for api in [Api::Newest, Api::NoSetattr] {
        let s = Scratch::new();
        let lower = s.dir("lower");
        let fd = open_beneath(&s.root, Path::new("lower"), OFlag::O_PATH).unwrap();
        fs_mount_onto(
            Path::new("tmpfs"),
            "tmpfs",
            MountFlags::empty(),
            "size=4m",
            fd.as_fd(),
        )
        .unwrap();
        let src = s.dir("src");
        let target = mkdir_beneath(&lower, Path::new("t"), 0o750).unwrap();
        let src_fd = open_beneath(&s.root, Path::new("src"), OFlag::O_PATH).unwrap();
        let flags = MountFlags::RDONLY | MountFlags::NOEXEC | MountFlags::NOATIME;
        bind_fd_onto(src_fd.as_fd(), target.as_fd(), flags, api)
            .unwrap_or_else(|e| panic!("{api:?}: {e}"));
        let err = fs::write(lower.join("t/x"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{api:?}: {err}");
        let entry = mountinfo::mount_at(&lower.join("t")).unwrap().unwrap();
        for opt in ["ro", "noexec", "noatime"] {
            assert!(entry.has_option(opt), "{api:?}: {:?}", entry.options);
        }
        fs::write(src.join("x"), b"x").expect("the source stays writable");
        fs::write(lower.join("y"), b"y").expect("the lower tmpfs stays writable");
        assert!(!mountinfo::mount_at(&lower).unwrap().unwrap().read_only());
    }
}

#[test]
fn a_file_target_takes_a_file_bind_mount() {
    let s = Scratch::new();
    let root = s.dir("root");
    let src = s.root.join("disk.img");
    fs::write(&src, b"block").unwrap();
    let fd = create_file_beneath(&root, Path::new("pods/u/dev/vol"), 0o640).unwrap();
    bind_mount_onto(&src, fd.as_fd(), MountFlags::RDONLY).unwrap();
    assert_eq!(fs::read(root.join("pods/u/dev/vol")).unwrap(), b"block");
    // Idempotent: the mounted file is reused, not refused.
    create_file_beneath(&root, Path::new("pods/u/dev/vol"), 0o640).unwrap();
    // A directory, or a symlink, where the file should be is refused.
    s.dir("root/d");
    assert!(create_file_beneath(&root, Path::new("d"), 0o640).is_err());
    symlink(&src, root.join("l")).unwrap();
    let err = create_file_beneath(&root, Path::new("l"), 0o640).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(unmount_beneath(&root, Path::new("pods/u/dev/vol")).unwrap());
}

#[test]
fn a_filesystem_mounts_onto_the_fd_with_its_options() {
    for api in [Api::Newest, Api::Legacy] {
        let s = Scratch::new();
        let root = s.dir("root");
        let fd = mkdir_beneath(&root, Path::new("stage/v"), 0o750).unwrap();
        let flags = MountFlags::RDONLY | MountFlags::NOSUID;
        fs_mount_with(
            Path::new("tmpfs"),
            "tmpfs",
            flags,
            "size=2m,mode=0711",
            fd.as_fd(),
            api,
        )
        .unwrap();
        let target = root.join("stage/v");
        let entry = mountinfo::mount_at(&target).unwrap().unwrap();
        assert_eq!(entry.fs_type, "tmpfs", "{api:?}");
        assert!(
            entry.read_only() && entry.has_option("nosuid"),
            "{api:?}: {entry:?}"
        );
        assert_eq!(
            crate::os::statfs::fs_stats(&target).unwrap().total_bytes,
            2 << 20
        );
        let mode = fs::metadata(&target).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o7777,
            0o711
        );
    }
    // A bad option is an error naming the source, the type and the file system's complaint.
    let s = Scratch::new();
    let fd = mkdir_beneath(&s.root, Path::new("bad"), 0o750).unwrap();
    let err = fs_mount_onto(
        Path::new("tmpfs"),
        "tmpfs",
        MountFlags::empty(),
        "bogus=1",
        fd.as_fd(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("tmpfs") && err.contains("bogus"), "{err}");
    assert!(!mountinfo::is_mount_point(&s.root.join("bad")).unwrap());
}
