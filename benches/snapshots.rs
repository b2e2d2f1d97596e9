//! Snapshot cost on copy-on-write filesystems against the tar baseline of the peer drivers.
//! For btrfs (subvolume snapshot) and XFS (reflink copy, `os::copytree`): a directory holding
//! 256 MiB (32 MiB with FERROVOL_BENCH_QUICK=1) in one file plus 1,000 small files is
//! snapshotted, then archived with `tar -cf`; prints both times, their ratio and the space
//! each used (statfs delta). Needs root, mkfs.btrfs, mkfs.xfs, losetup, mount, tar.

use ferrovol::os::{btrfs, copytree};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn used(p: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(p).unwrap();
    (st.blocks() - st.blocks_free()) * st.fragment_size()
}

struct Fs {
    mnt: PathBuf,
    dev: String,
}

impl Drop for Fs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

fn make(root: &Path, name: &str, mkfs: &[&str]) -> Fs {
    let img = root.join(format!("{name}.img"));
    fs::File::create(&img).unwrap().set_len(2 << 30).unwrap();
    let mut args = mkfs[1..].to_vec();
    args.push(img.to_str().unwrap());
    sh(mkfs[0], &args);
    let dev = sh("losetup", &["--find", "--show", img.to_str().unwrap()]);
    let mnt = root.join(name);
    fs::create_dir(&mnt).unwrap();
    sh("mount", &[&dev, mnt.to_str().unwrap()]);
    Fs { mnt, dev }
}

fn fill(dir: &Path, bytes: usize) {
    let mut f = fs::File::create(dir.join("big")).unwrap();
    let chunk: Vec<u8> = (0..1 << 20).map(|i| (i * 7 + 3) as u8).collect();
    for _ in 0..bytes >> 20 {
        f.write_all(&chunk).unwrap();
    }
    for i in 0..1000 {
        fs::write(dir.join(format!("small-{i}")), format!("file {i}")).unwrap();
    }
    sh("sync", &[]);
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    sh("sync", &[]);
    t.elapsed()
}

fn main() {
    let quick = std::env::var_os("FERROVOL_BENCH_QUICK").is_some();
    let bytes = if quick { 32 << 20 } else { 256 << 20 };
    let tmp = tempfile::tempdir().unwrap();
    println!("| fs | method | snapshot | tar -cf | ratio | space: snapshot | space: tar |");
    println!("|---|---|---|---|---|---|---|");
    for (name, mkfs) in [
        ("btrfs", &["mkfs.btrfs", "-q"][..]),
        ("xfs", &["mkfs.xfs", "-q"][..]),
    ] {
        let f = make(tmp.path(), name, mkfs);
        let src = f.mnt.join("vol");
        if name == "btrfs" {
            // A volume on btrfs is a subvolume, as with qgroups enabled.
            sh("btrfs", &["subvolume", "create", src.to_str().unwrap()]);
        } else {
            fs::create_dir(&src).unwrap();
        }
        fill(&src, bytes);
        let snap = f.mnt.join("snap");
        let before = used(&f.mnt);
        let (method, t_snap) = if name == "btrfs" {
            (
                "subvolume snapshot",
                timed(|| btrfs::snapshot(&src, &snap, true).unwrap()),
            )
        } else {
            fs::create_dir(&snap).unwrap();
            let t = timed(|| {
                let s = copytree::copy_tree(&src, &snap, copytree::Mode::Reflink).unwrap();
                assert_eq!(s.reflinked, s.files, "XFS must reflink every file");
            });
            ("reflink copy", t)
        };
        let space_snap = used(&f.mnt).saturating_sub(before);
        let before = used(&f.mnt);
        let tar = f.mnt.join("vol.tar");
        let t_tar = timed(|| {
            sh(
                "tar",
                &[
                    "-cf",
                    tar.to_str().unwrap(),
                    "-C",
                    src.to_str().unwrap(),
                    ".",
                ],
            );
        });
        let space_tar = used(&f.mnt).saturating_sub(before);
        println!(
            "| {name} | {method} | {:.1} ms | {:.1} ms | {:.0}x | {} KiB | {} KiB |",
            t_snap.as_secs_f64() * 1e3,
            t_tar.as_secs_f64() * 1e3,
            t_tar.as_secs_f64() / t_snap.as_secs_f64(),
            space_snap >> 10,
            space_tar >> 10
        );
        if name == "btrfs" {
            btrfs::destroy_subvolume(&snap).unwrap();
        }
    }
    println!("data: {} MiB in one file + 1,000 small files", bytes >> 20);
}
