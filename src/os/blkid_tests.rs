//! blkid probes and wipes on real loop devices (root only).

use super::*;
use crate::os::loopdev;
use std::path::PathBuf;
use std::process::Command;

/// A loop device over a sparse file in a temp dir; detached on drop, even when a test fails.
struct Loop {
    dev: PathBuf,
    _dir: tempfile::TempDir,
}

impl Loop {
    fn new(size_mib: u64) -> Loop {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        File::create(&img).unwrap().set_len(size_mib << 20).unwrap();
        let dev = loopdev::attach(&img, false).unwrap();
        Loop { dev, _dir: dir }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = Command::new(tool)
            .args(args)
            .arg(&self.dev)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = loopdev::detach(&self.dev);
    }
}

fn types(sigs: &[Signature]) -> Vec<&str> {
    sigs.iter().map(|s| s.fs_type.as_str()).collect()
}

#[test]
fn blank_device_has_no_signature() {
    let d = Loop::new(16);
    assert!(probe_all(&d.dev).unwrap().is_empty());
    assert!(can_open_exclusive(&d.dev).unwrap());
}

#[test]
fn ext4_with_label_and_uuid() {
    let d = Loop::new(32);
    d.run("mkfs.ext4", &["-q", "-L", "data1"]);
    let sigs = probe_all(&d.dev).unwrap();
    assert_eq!(types(&sigs), ["ext4"]);
    let s = &sigs[0];
    assert_eq!(s.kind, Kind::Filesystem);
    assert_eq!(s.label.as_deref(), Some("data1"));
    assert_eq!(s.offset, 0x438, "ext4 magic sits at 1080");
    assert_eq!(s.magic_len, 2);
    assert!(s.uuid.as_deref().is_some_and(|u| u.len() == 36));
}

#[test]
fn xfs_then_wipe_all_leaves_it_blank() {
    let d = Loop::new(320);
    d.run("mkfs.xfs", &["-q", "-f"]);
    let sigs = probe_all(&d.dev).unwrap();
    assert_eq!(types(&sigs), ["xfs"]);
    assert_eq!(sigs[0].offset, 0);
    let erased = wipe_all(&open_for_wipe(&d.dev).unwrap(), &d.dev).unwrap();
    assert_eq!(types(&erased), ["xfs"]);
    assert!(probe_all(&d.dev).unwrap().is_empty());
}

#[test]
fn swap_and_lvm_are_their_own_kinds() {
    let d = Loop::new(16);
    d.run("mkswap", &[]);
    let sigs = probe_all(&d.dev).unwrap();
    assert_eq!(
        (sigs[0].kind, sigs[0].fs_type.as_str()),
        (Kind::Swap, "swap")
    );
    assert_eq!(kind_of("raid", "LVM2_member"), Kind::Lvm);
    assert_eq!(kind_of("raid", "linux_raid_member"), Kind::Raid);
    assert_eq!(kind_of("crypto", "crypto_LUKS"), Kind::Crypto);
}

#[test]
fn gpt_shows_primary_backup_and_pmbr_and_wipes_clean() {
    let d = Loop::new(16);
    d.run("sgdisk", &["-o", "-n", "1:0:0"]);
    let sigs = probe_all(&d.dev).unwrap();
    assert!(sigs.iter().all(|s| s.kind == Kind::PartitionTable));
    assert!(types(&sigs).contains(&"gpt"), "{sigs:?}");
    assert!(
        sigs.iter().any(|s| s.offset == 0x200),
        "primary header: {sigs:?}"
    );
    wipe_all(&open_for_wipe(&d.dev).unwrap(), &d.dev).unwrap();
    assert!(probe_all(&d.dev).unwrap().is_empty());
}

#[test]
fn wipe_at_erases_only_the_named_offset() {
    // An MBR table on a disk whose first partition area also carries swap: two signatures at
    // different offsets. Wiping the table's offset must leave the swap signature alone.
    let d = Loop::new(16);
    d.run("mkswap", &[]);
    let out = Command::new("sfdisk")
        .args(["-q", "--wipe", "never"])
        .arg(&d.dev)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"label: dos\n,,L\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    let sigs = probe_all(&d.dev).unwrap();
    let dos = sigs.iter().find(|s| s.fs_type == "dos").expect("dos table");
    assert_eq!(
        (dos.kind, dos.offset, dos.magic_len),
        (Kind::PartitionTable, 0x1fe, 2)
    );
    assert!(types(&sigs).contains(&"swap"), "{sigs:?}");
    let erased = wipe_at(&open_for_wipe(&d.dev).unwrap(), &d.dev, &[0x1fe]).unwrap();
    assert_eq!(types(&erased), ["dos"]);
    assert_eq!(types(&probe_all(&d.dev).unwrap()), ["swap"]);
}

#[test]
fn wipe_refuses_a_mounted_device() {
    let d = Loop::new(32);
    d.run("mkfs.ext4", &["-q"]);
    let mnt = tempfile::tempdir().unwrap();
    let st = Command::new("mount")
        .arg(&d.dev)
        .arg(mnt.path())
        .status()
        .unwrap();
    assert!(st.success());
    let busy = open_for_wipe(&d.dev);
    let excl = can_open_exclusive(&d.dev).unwrap();
    Command::new("umount").arg(mnt.path()).status().unwrap();
    assert_eq!(busy.unwrap_err().kind(), io::ErrorKind::ResourceBusy);
    assert!(!excl);
    assert_eq!(types(&probe_all(&d.dev).unwrap()), ["ext4"]);
}
