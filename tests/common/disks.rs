//! Loop devices and file systems for tests that need a real one (quota, devices).

use super::*;

/// mkfs.xfs (6.x) refuses file systems below 300 MB, so the image is a little larger; it is
/// sparse, so it costs only what XFS writes.
pub const XFS_IMAGE_BYTES: u64 = 320 << 20;

pub fn require_tool(name: &str, package: &str) -> PathBuf {
    let path = tool(name);
    assert!(
        path.is_file(),
        "{name} is not installed: these tests need real file systems; install {package} (CI installs it)"
    );
    path
}

/// Makes a file system in a sparse image of `size` bytes under `root` and attaches it to a
/// loop device; returns the device. The scratch dir's cleanup detaches it.
pub fn make_fs(root: &Path, name: &str, mkfs: &[&str], size: u64) -> String {
    let image = root.join(format!("{name}.img"));
    fs::File::create(&image).unwrap().set_len(size).unwrap();
    let mut args: Vec<&std::ffi::OsStr> = mkfs[1..].iter().map(|a| a.as_ref()).collect();
    args.push(image.as_os_str());
    run(mkfs[0], &args);
    let dev = run(
        "losetup",
        &["--find".as_ref(), "--show".as_ref(), image.as_os_str()],
    );
    let dev = dev.trim().to_string();
    assert!(dev.starts_with("/dev/loop"), "losetup printed {dev:?}");
    dev
}

/// Mounts `dev` at `<root>/<name>` with `options`; the scratch dir's cleanup unmounts it.
pub fn try_mount(root: &Path, name: &str, dev: &str, options: &str) -> Result<PathBuf, String> {
    let mnt = root.join(name);
    fs::create_dir_all(&mnt).unwrap();
    let out = output(
        std::process::Command::new(tool("mount"))
            .args(["-o", options, dev])
            .arg(&mnt),
    )
    .expect("run mount");
    if !out.status.success() {
        return Err(format!(
            "mount -o {options} {dev} {}: {}{}",
            mnt.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    assert_eq!(mounts_at(&mnt).len(), 1, "{} is not mounted", mnt.display());
    Ok(mnt)
}

pub fn mount_image(root: &Path, name: &str, mkfs: &[&str], size: u64, options: &str) -> PathBuf {
    let dev = make_fs(root, name, mkfs, size);
    try_mount(root, name, &dev, options).unwrap_or_else(|e| panic!("{e}"))
}
