//! Every refusal of adoption, each leaving the directory exactly as it was: mounted, with a mount
//! below it, bind-mounted as a pod's volume, open by a process, another volume's, inside the
//! base's volumes, on another filesystem, a symlink, the base or a parent of it, too big, a name
//! taken.

use super::*;
use tonic::Code;

/// Asserts a refusal with `code` whose message names the directory and contains `cause`.
fn refused(r: Result<AdoptResponse, tonic::Status>, code: Code, dir: &Path, cause: &str) {
    let s = match r {
        Ok(resp) => panic!("adopting {} should be refused, got {resp:?}", dir.display()),
        Err(s) => s,
    };
    assert_eq!(s.code(), code, "{s:?}");
    assert!(
        s.message().contains(&dir.display().to_string()),
        "the error names the directory: {}",
        s.message()
    );
    assert!(
        s.message().contains(cause),
        "the error says {cause:?}: {}",
        s.message()
    );
}

fn mount_tmpfs(at: &Path) {
    fs::create_dir_all(at).unwrap();
    run(
        "mount",
        &[
            "-t".as_ref(),
            "tmpfs".as_ref(),
            "tmpfs".as_ref(),
            at.as_os_str(),
        ],
    );
}

fn bind(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    run(
        "mount",
        &["--bind".as_ref(), from.as_os_str(), to.as_os_str()],
    );
}

fn umount(at: &Path) {
    run("umount", &[at.as_os_str()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mounted_directory_or_one_with_a_mount_below_is_refused() {
    let d = Driver::start().await;
    let src = outside_dir(&d, "mounted");
    // Data written before the mount hides under it; the check sees the mount.
    let below = src.join("sub");
    mount_tmpfs(&below);
    let r = adopt(&d, &src, "v", 64 * MIB).await;
    refused(r, Code::FailedPrecondition, &src, "is a mount point");
    umount(&below);
    assert_untouched(&src, "mounted");

    mount_tmpfs(&src);
    let r = adopt(&d, &src, "v", 64 * MIB).await;
    refused(r, Code::FailedPrecondition, &src, "is a mount point");
    umount(&src);
    assert_untouched(&src, "mounted");
    assert!(d.state_records().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_a_pod_mounts_is_refused() {
    let d = Driver::start().await;
    let src = outside_dir(&d, "pod-data");
    // What kubelet makes of a local PersistentVolume: a bind mount into the pod's volume dir.
    let pod_volume = d
        .root()
        .join("kubelet/pods/1234/volumes/kubernetes.io~local-volume/pvc-1");
    bind(&src, &pod_volume);
    let r = adopt(&d, &src, "v", 64 * MIB).await;
    refused(r, Code::FailedPrecondition, &src, "a pod's volume?");
    umount(&pod_volume);
    // A bind of a directory below it counts too (a subPath mount).
    bind(&src.join("sub"), &pod_volume);
    let r = adopt(&d, &src, "v", 64 * MIB).await;
    refused(r, Code::FailedPrecondition, &src, "is mounted at");
    umount(&pod_volume);
    assert_untouched(&src, "pod-data");
    // Unmounted, it is adopted.
    adopt(&d, &src, "v", 64 * MIB)
        .await
        .expect("adopt once unused");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_a_process_holds_open_is_refused() {
    let d = Driver::start().await;
    let src = outside_dir(&d, "busy");
    let mut holder = Command::new("sleep")
        .arg("60")
        .current_dir(src.join("sub"))
        .spawn()
        .unwrap();
    let r = adopt(&d, &src, "v", 64 * MIB).await;
    holder.kill().unwrap();
    holder.wait().unwrap();
    refused(
        r,
        Code::FailedPrecondition,
        &src,
        &format!("process {}", holder.id()),
    );
    assert_untouched(&src, "busy");

    let file = fs::File::open(src.join("data.txt")).unwrap();
    let r = adopt(&d, &src, "v", 64 * MIB).await;
    drop(file);
    // The test process itself holds it.
    refused(r, Code::FailedPrecondition, &src, "data.txt open");
    assert_untouched(&src, "busy");
}

#[tokio::test(flavor = "multi_thread")]
async fn another_volumes_directory_is_refused() {
    let d = Driver::start().await;
    let id = d.create("owner", 16 * MIB, mount_cap()).await.volume_id;
    let own = d.volume_dir("owner");
    fs::create_dir(own.join("inner")).unwrap();
    // The volume's own directory, a directory inside it, and a copy carrying its marker.
    let r = adopt(&d, &own, "v", 64 * MIB).await;
    refused(r, Code::FailedPrecondition, &own, &format!("volume {id}"));
    let inner = own.join("inner");
    let r = adopt(&d, &inner, "v", 64 * MIB).await;
    refused(r, Code::FailedPrecondition, &inner, &format!("volume {id}"));
    let marked = outside_dir(&d, "marked");
    let m = get_xattr(&own, "trusted.ferrovol.markers").unwrap();
    set_xattr(&marked, "trusted.ferrovol.markers", &m);
    let r = adopt(&d, &marked, "v", 64 * MIB).await;
    refused(
        r,
        Code::FailedPrecondition,
        &marked,
        "carries the ownership marker",
    );
    assert!(own.is_dir() && inner.is_dir() && marked.is_dir());
    assert_eq!(d.state_records(), vec!["owner".to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_on_another_filesystem_is_refused() {
    let d = Driver::start().await;
    let other = d.root().join("otherfs");
    mount_tmpfs(&other);
    let src = other.join("data");
    make_data_dir(&src, "elsewhere");
    let r = adopt(&d, &src, "v", 64 * MIB).await;
    refused(
        r,
        Code::FailedPrecondition,
        &src,
        "is on another filesystem",
    );
    assert_data(&src, "elsewhere");
    assert!(!d.volume_dir("v").exists());
    umount(&other);
}

#[tokio::test(flavor = "multi_thread")]
async fn symlinks_the_base_and_its_parents_and_bad_paths_are_refused() {
    let d = Driver::start().await;
    // The base exists once a volume was made.
    d.create("first", 16 * MIB, mount_cap()).await;
    let src = outside_dir(&d, "real");
    let link = d.root().join("old/link");
    std::os::unix::fs::symlink(&src, &link).unwrap();
    refused(
        adopt(&d, &link, "v", 64 * MIB).await,
        Code::InvalidArgument,
        &link,
        "symbolic link",
    );
    let through = d.root().join("old/linkdir");
    std::os::unix::fs::symlink(d.root().join("old"), &through).unwrap();
    let via = through.join("real");
    refused(
        adopt(&d, &via, "v", 64 * MIB).await,
        Code::InvalidArgument,
        &via,
        "behind a symbolic link",
    );
    let base = d.base().to_path_buf();
    refused(
        adopt(&d, &base, "v", 64 * MIB).await,
        Code::InvalidArgument,
        &base,
        "base path",
    );
    let root = d.root().to_path_buf();
    refused(
        adopt(&d, &root, "v", 64 * MIB).await,
        Code::InvalidArgument,
        &root,
        "parent of it",
    );
    let rel = Path::new("old/real");
    refused(
        adopt(&d, rel, "v", 64 * MIB).await,
        Code::InvalidArgument,
        rel,
        "not an absolute path",
    );
    let gone = d.root().join("old/missing");
    refused(
        adopt(&d, &gone, "v", 64 * MIB).await,
        Code::InvalidArgument,
        &gone,
        "No such file",
    );
    let file = src.join("data.txt");
    refused(
        adopt(&d, &file, "v", 64 * MIB).await,
        Code::InvalidArgument,
        &file,
        "not a directory",
    );
    assert_untouched(&src, "real");
    assert_eq!(d.state_records(), vec!["first".to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn too_small_a_size_and_a_taken_name_are_refused() {
    let d = Driver::start().await;
    d.create("taken", 16 * MIB, mount_cap()).await;
    let src = outside_dir(&d, "big");
    refused(
        adopt(&d, &src, "v", 4096).await,
        Code::OutOfRange,
        &src,
        "more than the capacity",
    );
    let r = adopt(&d, &src, "taken", 64 * MIB).await;
    let s = r.expect_err("a taken name");
    assert_eq!(s.code(), Code::AlreadyExists, "{s:?}");
    // The place in the base is taken by something that is no volume.
    fs::create_dir(d.volume_dir("squatter")).unwrap();
    let r = adopt(&d, &src, "squatter", 64 * MIB).await;
    refused(r, Code::AlreadyExists, &src, "exists already");
    let r = adopt(&d, &src, "v", 0).await;
    assert_eq!(r.expect_err("no size").code(), Code::InvalidArgument);
    assert_untouched(&src, "big");
}
