//! The benchmark's filesystems: one loop device per filesystem, attached with direct I/O so
//! the host's page cache keeps no copy of the image, inside a private mount namespace so every
//! mount dies with the benchmark however it ends.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs a command; its stdout, or an error naming the command and its stderr.
pub fn sh(cmd: &str, args: &[&str]) -> io::Result<String> {
    let out = Command::new(cmd).args(args).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Moves this process into its own mount namespace with private propagation. Must run before
/// any thread starts (unshare(CLONE_NEWNS) refuses multithreaded callers).
pub fn enter_private_mount_ns() -> io::Result<()> {
    // SAFETY: plain syscall without pointers.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    sh("mount", &["--make-rprivate", "/"]).map(|_| ())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// btrfs with quota: volumes are subvolumes, snapshots are subvolume snapshots.
    Btrfs,
    /// XFS with reflink=1: snapshots and restores are reflink copies.
    Xfs,
    /// ext4: no reflink, byte copies (only when asked for: FERROVOL_BENCH_FS).
    Ext4,
}

impl FsKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "btrfs" => Some(FsKind::Btrfs),
            "xfs" => Some(FsKind::Xfs),
            "ext4" => Some(FsKind::Ext4),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            FsKind::Btrfs => "btrfs (quota)",
            FsKind::Xfs => "xfs (reflink=1)",
            FsKind::Ext4 => "ext4 (copy)",
        }
    }

    fn mkfs(self) -> &'static [&'static str] {
        match self {
            FsKind::Btrfs => &["mkfs.btrfs", "-q"],
            FsKind::Xfs => &["mkfs.xfs", "-q", "-m", "reflink=1"],
            FsKind::Ext4 => &["mkfs.ext4", "-q"],
        }
    }
}

/// A filesystem on a sparse image under `dir`, mounted at `<dir>/mnt`.
pub struct LoopFs {
    pub kind: FsKind,
    pub mnt: PathBuf,
    dev: String,
}

impl LoopFs {
    pub fn make(dir: &Path, kind: FsKind, size: u64) -> io::Result<Self> {
        let image = dir.join("fs.img");
        fs::File::create(&image)?.set_len(size)?;
        let image = image.to_str().expect("temp paths are UTF-8");
        let mkfs = kind.mkfs();
        let mut args = mkfs[1..].to_vec();
        args.push(image);
        sh(mkfs[0], &args)?;
        let dev = sh("losetup", &["--find", "--show", "--direct-io=on", image])?;
        let mnt = dir.join("mnt");
        fs::create_dir(&mnt)?;
        let f = LoopFs { kind, mnt, dev };
        f.mount()?;
        if kind == FsKind::Btrfs {
            let m = f.mnt.to_str().unwrap();
            sh("btrfs", &["quota", "enable", m])?;
            sh("btrfs", &["quota", "rescan", "-w", m])?;
        }
        Ok(f)
    }

    fn mount(&self) -> io::Result<()> {
        sh("mount", &[&self.dev, self.mnt.to_str().unwrap()]).map(|_| ())
    }

    /// Unmounts and mounts again: the filesystem's page, inode and dentry caches start empty,
    /// and (direct I/O loop) nothing of it is cached below. Nobody may hold it open.
    pub fn remount(&self) -> io::Result<()> {
        sh("umount", &[self.mnt.to_str().unwrap()])?;
        self.mount()
    }

    /// syncfs(2) of this filesystem.
    pub fn sync(&self) -> io::Result<()> {
        let f = fs::File::open(&self.mnt)?;
        // SAFETY: plain syscall on a live descriptor.
        if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Bytes in use (statfs), for the space each method takes.
    pub fn used(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(&self.mnt).expect("statvfs");
        (st.blocks() - st.blocks_free()) * st.fragment_size()
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = sh("umount", &["-l", self.mnt.to_str().unwrap()]);
        let _ = sh("losetup", &["-d", &self.dev]);
    }
}
