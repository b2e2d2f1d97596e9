//! The benchmark's scratch world: a private mount namespace, an XFS (mounted with prjquota where
//! the kernel allows it) or btrfs (quota enabled) filesystem on a loop device, and cleanup that
//! runs on every way out short of SIGKILL (and even then the namespace takes its mounts with it,
//! and the next run removes the image).

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT/SIGTERM only raise a flag: measurement loops stop, and the run unwinds through the
/// destructors that kill the driver and unmount everything.
pub fn install_signal_handlers() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

pub fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Panics (and so unwinds into the cleanup) when a signal asked us to stop.
pub fn check_stop() {
    if stopping() {
        panic!("interrupted: cleaning up");
    }
}

/// Moves this process into its own mount namespace with private propagation, so every mount the
/// benchmark and its driver make is invisible to the host and dies with the namespace.
/// Must run before any thread is started (unshare(CLONE_NEWNS) refuses multithreaded callers).
pub fn enter_private_mount_ns() -> io::Result<()> {
    // SAFETY: plain syscall without pointers.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(io::Error::from)
}

/// Which filesystem the volumes live on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// XFS mounted with prjquota: project quotas.
    Xfs,
    /// btrfs with quota enabled: a subvolume and qgroup per volume.
    Btrfs,
}

impl FsKind {
    pub fn name(self) -> &'static str {
        match self {
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
        }
    }
}

/// A filesystem on a sparse image attached to a loop device, mounted in a temp dir.
pub struct LoopFs {
    pub kind: FsKind,
    /// Holds the image, the mount point and everything else of the run.
    pub root: PathBuf,
    /// The mount point.
    pub mnt: PathBuf,
    /// How capacity limits were switched on ("-o prjquota", "btrfs quota enable"), if they were.
    pub quota_how: Option<&'static str>,
    /// Why capacity limits are not in effect, when they are not.
    pub quota_note: String,
    pub loop_device: Option<String>,
    image: PathBuf,
    _tmp: tempfile::TempDir,
}

fn run(cmd: &mut Command) -> io::Result<String> {
    let out = cmd.output()?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(io::Error::other(format!(
            "{:?} failed ({}): {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The last kernel log line mentioning `needle` (without its timestamp), if the log is readable.
fn dmesg_line(needle: &str) -> Option<String> {
    let out = Command::new("dmesg").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find(|l| l.contains(needle))
        .map(|l| {
            let l = l.trim();
            let l = l.split_once("] ").map_or(l, |(_, rest)| rest);
            l.trim_end_matches('.').to_string()
        })
}

const PREFIX: &str = "ferrovol-bench-";
const OWNER_FILE: &str = "owner.pid";

/// Removes the scratch directories of earlier runs that were SIGKILLed (their namespace took the
/// mounts and loop devices with it, but the sparse image stays). A directory is stale when the
/// process named in its owner.pid is gone; removal never crosses a mount point.
fn remove_stale_runs(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if !entry.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let Some(pid) = fs::read_to_string(dir.join(OWNER_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
        if alive {
            continue;
        }
        match ferrovol::os::fsutil::remove_tree_one_fs(&dir) {
            Ok(()) => eprintln!(
                "ops: removed {} left by an earlier killed run",
                dir.display()
            ),
            Err(e) => eprintln!("ops: leaving {}: {e}", dir.display()),
        }
    }
}

impl LoopFs {
    /// Everything of the run, the image included, goes in a new directory under `parent`.
    pub fn new(kind: FsKind, size_bytes: u64, parent: &Path) -> io::Result<Self> {
        remove_stale_runs(parent);
        let tmp = tempfile::Builder::new().prefix(PREFIX).tempdir_in(parent)?;
        let root = tmp.path().to_path_buf();
        fs::write(root.join(OWNER_FILE), std::process::id().to_string())?;
        let image = root.join(format!("{}.img", kind.name()));
        File::create(&image)?.set_len(size_bytes)?;
        let mkfs = format!("mkfs.{}", kind.name());
        run(Command::new(&mkfs).args(["-q", "-f"]).arg(&image))?;
        let mnt = root.join(kind.name());
        fs::create_dir(&mnt)?;
        let mut fx = LoopFs {
            kind,
            root,
            mnt,
            quota_how: None,
            quota_note: String::new(),
            loop_device: None,
            image,
            _tmp: tmp,
        };
        // `mount -o loop` sets LO_FLAGS_AUTOCLEAR: the loop device goes away with the mount.
        let mount = |opts: &str| {
            run(Command::new("mount")
                .args(["-t", kind.name(), "-o", opts])
                .arg(&fx.image)
                .arg(&fx.mnt))
        };
        match kind {
            FsKind::Xfs => match mount("loop,prjquota") {
                Ok(_) => fx.quota_how = Some("mounted -o prjquota"),
                Err(e) => {
                    let why = dmesg_line("quota").unwrap_or_else(|| e.to_string());
                    fx.quota_note = format!("mount -o prjquota refused: {why}");
                    mount("loop")?;
                }
            },
            FsKind::Btrfs => {
                mount("loop")?;
                match run(Command::new("btrfs").args(["quota", "enable"]).arg(&fx.mnt)) {
                    Ok(_) => fx.quota_how = Some("btrfs quota enable"),
                    Err(e) => fx.quota_note = format!("btrfs quota enable failed: {e}"),
                }
            }
        }
        fx.loop_device = ferrovol::os::mountinfo::mount_at(&fx.mnt)?.map(|m| m.source);
        Ok(fx)
    }

    /// Unmounts everything below the run's root, deepest first, then makes sure the loop
    /// device is detached. Safe to call twice.
    pub fn cleanup(&mut self) {
        for attempt in 0..3 {
            let mut mounts = match ferrovol::os::mountinfo::mounts_under(&self.root) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("ops: cleanup: read mount table: {e}");
                    break;
                }
            };
            if mounts.is_empty() {
                break;
            }
            mounts.reverse();
            for m in mounts {
                let flags = if attempt == 2 {
                    MntFlags::MNT_DETACH
                } else {
                    MntFlags::empty()
                };
                if let Err(e) = umount2(&m.mount_point, flags) {
                    if attempt == 2 {
                        eprintln!("ops: cleanup: umount {}: {e}", m.mount_point.display());
                    }
                }
            }
        }
        if let Some(dev) = self.loop_device.take() {
            let name = dev.trim_start_matches("/dev/");
            let backing = fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"));
            if backing.is_ok_and(|b| Path::new(b.trim()) == self.image) {
                if let Err(e) = run(Command::new("losetup").args(["-d", &dev])) {
                    eprintln!("ops: cleanup: {e}");
                }
            }
        }
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Number of mounts in this namespace (NodePublish reads the whole table on every call).
pub fn mount_count() -> usize {
    ferrovol::os::mountinfo::read().map_or(0, |m| m.len())
}
