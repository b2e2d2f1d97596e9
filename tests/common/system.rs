//! The system: mount table, loop devices, tools, and file systems on loop devices to mount.

use super::*;

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The directory of the mounted filesystem that appears at the mount point.
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub options: Vec<String>,
    pub fs_type: String,
}

impl MountEntry {
    pub fn read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }

    pub fn has_option(&self, opt: &str) -> bool {
        self.options.iter().any(|o| o == opt)
    }
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x"), 8)
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn mount_table() -> Vec<MountEntry> {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    text.lines()
        .filter_map(|line| {
            let (head, tail) = line.split_once(" - ")?;
            let f: Vec<&str> = head.split(' ').collect();
            if f.len() < 6 {
                return None;
            }
            Some(MountEntry {
                root: PathBuf::from(unescape_mountinfo(f[3])),
                mount_point: PathBuf::from(unescape_mountinfo(f[4])),
                options: f[5].split(',').map(str::to_string).collect(),
                fs_type: tail.split(' ').next().unwrap_or("").to_string(),
            })
        })
        .collect()
}

/// Mounts at or below `dir`, in mount order.
pub fn mounts_under(dir: &Path) -> Vec<MountEntry> {
    mount_table()
        .into_iter()
        .filter(|m| m.mount_point.starts_with(dir))
        .collect()
}

/// Mounts exactly at `path`, in mount order (the last one is visible).
pub fn mounts_at(path: &Path) -> Vec<MountEntry> {
    mount_table()
        .into_iter()
        .filter(|m| m.mount_point == path)
        .collect()
}

/// (device, backing file) of each loop device whose backing file is at or below `dir`,
/// read from /sys/block/loop*/loop/backing_file.
pub fn loop_devices_under(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = fs::read_to_string(e.path().join("loop/backing_file")) else {
            continue;
        };
        let backing = backing
            .trim_end()
            .trim_end_matches(" (deleted)")
            .to_string();
        if Path::new(&backing).starts_with(dir) {
            out.push((format!("/dev/{name}"), backing));
        }
    }
    out.sort();
    out
}

/// Sorted names in a directory (empty if it does not exist).
pub fn dir_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| {
            e.expect("read dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Finds a system tool in PATH or the sbin directories (CI's PATH may lack /usr/sbin).
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Runs a system command, panicking with its output if it fails or is missing.
#[track_caller]
pub fn run(program: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = output(Command::new(tool(program)).args(args))
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (is it installed?)"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed with {}:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Size of a block device in bytes, by BLKGETSIZE64 (`blockdev --getsize64`).
/// `chattr <flag> <path>` (e.g. `+i`: a file or directory nothing can remove until `-i`).
pub fn chattr(flag: &str, path: &Path) {
    let out = Command::new("chattr").arg(flag).arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "chattr {flag} {}: {out:?}",
        path.display()
    );
}

pub fn block_size(dev: &Path) -> u64 {
    run("blockdev", &["--getsize64".as_ref(), dev.as_os_str()])
        .trim()
        .parse()
        .expect("blockdev prints a number")
}

/// Writes `len` bytes of a pattern to `path` in 1 MiB chunks, then fsyncs; returns the first
/// error (from a write or from the sync).
pub fn write_file(path: &Path, len: usize) -> std::io::Result<()> {
    use std::io::Write;
    let _open = hold_files_open();
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let chunk = vec![0xa5u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        f.write_all(&chunk[..n])?;
        left -= n;
    }
    f.sync_all()
}

/// The usage entry of one unit in a stats reply.
pub fn usage(
    stats: &csi::NodeGetVolumeStatsResponse,
    unit: csi::volume_usage::Unit,
) -> Option<csi::VolumeUsage> {
    stats.usage.iter().find(|u| u.unit == unit as i32).cloned()
}

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
