//! Loop-device disks for tests and benches: sparse images attached with losetup,
//! detached on drop (even when a test panics), and the tools that put signatures on them.
#![allow(dead_code)]

use ferrovol::discovery::{Entry, Inventory};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A sparse image file; attach it to get a [`Disk`].
pub fn image(dir: &Path, name: &str, mib: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .and_then(|f| f.set_len(mib << 20))
        .unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
    p
}

/// An attached loop device; detached on drop.
pub struct Disk {
    pub image: PathBuf,
    pub dev: PathBuf,
}

impl Disk {
    pub fn attach(image: &Path) -> Disk {
        let out = run("losetup", &["--find", "--show", &image.to_string_lossy()]);
        Disk {
            image: image.to_path_buf(),
            dev: PathBuf::from(out.trim()),
        }
    }

    /// Attaches `image` at exactly `dev`; None if that device is taken.
    pub fn attach_at(dev: &Path, image: &Path) -> Option<Disk> {
        let ok = Command::new("losetup")
            .arg(dev)
            .arg(image)
            .stderr(Stdio::null())
            .status()
            .ok()?
            .success();
        ok.then(|| Disk {
            image: image.to_path_buf(),
            dev: dev.to_path_buf(),
        })
    }

    pub fn path(&self) -> &str {
        self.dev.to_str().unwrap()
    }

    /// Detaches now (the drop then has nothing to do).
    pub fn detach(&mut self) {
        if !self.dev.as_os_str().is_empty() {
            let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
            self.dev = PathBuf::new();
        }
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        self.detach();
    }
}

/// Runs a tool, panics with its stderr on failure, returns its stdout.
pub fn run(tool: &str, args: &[&str]) -> String {
    run_input(tool, args, None)
}

pub fn run_input(tool: &str, args: &[&str], input: Option<&str>) -> String {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        if let Some(text) = input {
            stdin.write_all(text.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What to put on a zoo disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    Blank,
    Ext4,
    Xfs,
    Gpt,
    Mbr,
    LvmPv,
    Swap,
}

impl Content {
    /// The signature type blkid reports for it.
    pub fn signature(self) -> Option<&'static str> {
        match self {
            Content::Blank => None,
            Content::Ext4 => Some("ext4"),
            Content::Xfs => Some("xfs"),
            Content::Gpt => Some("gpt"),
            Content::Mbr => Some("dos"),
            Content::LvmPv => Some("LVM2_member"),
            Content::Swap => Some("swap"),
        }
    }

    pub fn write(self, dev: &str) {
        match self {
            Content::Blank => {}
            Content::Ext4 => drop(run("mkfs.ext4", &["-q", "-F", dev])),
            Content::Xfs => drop(run("mkfs.xfs", &["-q", "-f", dev])),
            Content::Gpt => drop(run("sgdisk", &["-o", "-n", "1:0:0", dev])),
            Content::Mbr => drop(run_input("sfdisk", &["-q", dev], Some("label: dos\n,,L\n"))),
            // No udevd here: tell LVM not to wait for it.
            Content::LvmPv => drop(run(
                "pvcreate",
                &[
                    "-q",
                    "-ff",
                    "-y",
                    "--config",
                    "activation { udev_sync=0 udev_rules=0 } devices { use_devicesfile=0 }",
                    dev,
                ],
            )),
            Content::Swap => drop(run("mkswap", &[dev])),
        }
    }
}

/// Waits up to `timeout` until `pred` holds for the inventory's entries; true if it did.
pub fn wait_until(inv: &Inventory, timeout: Duration, pred: impl Fn(&[Entry]) -> bool) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut changes = inv.changes();
    let changed = async {
        while !pred(&inv.snapshot()) {
            changes.changed().await.unwrap();
        }
    };
    rt.block_on(async { tokio::time::timeout(timeout, changed).await })
        .is_ok()
}
