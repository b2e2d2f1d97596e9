//! A sysfs tree for `FERROVOL_SYSFS_ROOT`: it shows only the block devices a test adds, each
//! mirrored from the real /sys entry by entry (symlinks, so size, backing file and holders stay
//! live), with a WWN the test chooses. Loop devices have none, so this is how a test presents
//! two devices with one WWN, or a disk swapped behind an unchanged identity.
#![allow(dead_code)]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

pub struct FakeSysfs {
    dir: tempfile::TempDir,
}

impl FakeSysfs {
    pub fn new() -> FakeSysfs {
        let dir = tempfile::tempdir().unwrap();
        for d in ["class/block", "dev/block", "devices"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        FakeSysfs { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Shows the block device `dev` (/dev/loopN) and its partitions, with `wwid` as its WWN.
    pub fn add(&self, dev: &Path, wwid: Option<&str>) {
        let name = dev.file_name().unwrap().to_str().unwrap();
        let real = std::fs::canonicalize(Path::new("/sys/class/block").join(name)).unwrap();
        let mine = self.mirror(&real);
        if let Some(w) = wwid {
            std::fs::write(mine.join("wwid"), format!("{w}\n")).unwrap();
        }
    }

    /// Mirrors one device directory (partitions as directories of their own) and links it
    /// under class/block and dev/block; returns the mirrored directory.
    fn mirror(&self, real: &Path) -> PathBuf {
        let mine = self
            .root()
            .join(real.strip_prefix("/sys").expect("a /sys path"));
        std::fs::create_dir_all(&mine).unwrap();
        for e in std::fs::read_dir(real).unwrap().flatten() {
            let (from, to) = (e.path(), mine.join(e.file_name()));
            if from.join("partition").exists() && !from.is_symlink() {
                self.mirror(&from);
            } else if !to.exists() {
                symlink(&from, &to).unwrap();
            }
        }
        let name = e_name(real);
        let number = std::fs::read_to_string(real.join("dev")).unwrap();
        for link in [
            self.root().join("class/block").join(&name),
            self.root().join("dev/block").join(number.trim()),
        ] {
            let _ = std::fs::remove_file(&link);
            symlink(&mine, &link).unwrap();
        }
        mine
    }
}

fn e_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}
