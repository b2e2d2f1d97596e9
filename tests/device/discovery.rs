//! Discovery over real loop devices (root only): the zoo, hotplug, renumbering.

use crate::common::disks;

use disks::{image, wait_until, Content, Disk};
use ferrovol::cli::devices::table;
use ferrovol::discovery::{scan, Claim, Entry, Filters, Inventory, State};
use std::path::Path;
use std::time::{Duration, Instant};

fn filters(include: &[String]) -> Filters {
    Filters::for_node(include, &[], None, &[], None).unwrap()
}

fn entry_for<'a>(entries: &'a [Entry], img: &Path) -> Vec<&'a Entry> {
    entries
        .iter()
        .filter(|e| e.device.backing_file.as_deref() == Some(img))
        .collect()
}

#[test]
fn zoo_only_blank_devices_are_candidates() {
    let dir = tempfile::tempdir().unwrap();
    let zoo = [
        Content::Blank,
        Content::Blank,
        Content::Ext4,
        Content::Xfs,
        Content::Gpt,
        Content::Mbr,
        Content::LvmPv,
        Content::Swap,
    ];
    let disks: Vec<(Content, Disk)> = zoo
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let d = Disk::attach(&image(dir.path(), &format!("zoo{i}.img"), 320));
            c.write(d.path());
            (*c, d)
        })
        .collect();
    // Name every zoo disk explicitly, and the machine's own root disk too: it must still
    // never be a candidate.
    let mut include: Vec<String> = disks.iter().map(|(_, d)| d.path().to_string()).collect();
    let all = scan::scan_all("node-a", &filters(&[])).unwrap();
    let root: Vec<_> = all
        .iter()
        .filter(|d| d.holds_os.iter().any(|p| p == Path::new("/")))
        .collect();
    assert!(!root.is_empty(), "no device holds /");
    include.extend(root.iter().map(|d| d.dev_path.display().to_string()));

    let devs = scan::scan_all("node-a", &filters(&include)).unwrap();
    let shown: Vec<_> = devs
        .iter()
        .filter(|d| include.contains(&d.dev_path.display().to_string()))
        .cloned()
        .collect();
    println!("{}", table(&shown));
    for (content, disk) in &disks {
        let d = devs
            .iter()
            .find(|d| d.dev_path == disk.dev)
            .unwrap_or_else(|| panic!("{} not found", disk.path()));
        assert_eq!(d.backing_file.as_deref(), Some(disk.image.as_path()));
        match content.signature() {
            None => {
                assert!(d.candidate, "{}: {:?}", disk.path(), d.excluded_reason);
                assert_eq!(d.excluded_reason, None);
            }
            Some(sig) => {
                assert!(
                    !d.candidate,
                    "{content:?} on {} is a candidate",
                    disk.path()
                );
                let reason = d.excluded_reason.as_deref().unwrap();
                assert!(
                    reason.starts_with("has signatures:") && reason.contains(sig),
                    "{content:?}: {reason}"
                );
            }
        }
    }
    for r in &root {
        let d = devs.iter().find(|d| d.dev_path == r.dev_path).unwrap();
        assert!(!d.candidate);
        assert!(d
            .excluded_reason
            .as_deref()
            .unwrap()
            .starts_with("holds the OS"));
    }
    // Blank disks: distinct uids, DNS-label safe.
    let uids: std::collections::BTreeSet<_> = devs.iter().map(|d| &d.uid).collect();
    assert_eq!(uids.len(), devs.len());
}

#[test]
fn hotplug_attach_shows_up_within_a_second_and_detach_turns_inactive() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let inv =
        Inventory::open_with_claims(state.path(), "node-a", filters(&["/dev/loop*".into()]), Ok)
            .unwrap();
    inv.start_monitor().unwrap();
    let img = image(dir.path(), "hot.img", 64);
    let t0 = Instant::now();
    let mut disk = Disk::attach(&img);
    let seen = wait_until(&inv, Duration::from_secs(1), |es| {
        entry_for(es, &img)
            .iter()
            .any(|e| e.state == State::Active && e.device.candidate)
    });
    let took = t0.elapsed();
    assert!(seen, "{} not in the inventory within 1 s", disk.path());
    println!("attach -> inventory: {took:?}");
    let uid = entry_for(&inv.snapshot(), &img)[0].device.uid.clone();
    assert_eq!(
        inv.candidates()
            .iter()
            .filter(|e| e.device.uid == uid)
            .count(),
        1
    );
    assert_eq!(inv.resolve_path(&uid), Some(disk.dev.clone()));

    disk.detach();
    let gone = wait_until(&inv, Duration::from_secs(1), |es| {
        entry_for(es, &img)
            .iter()
            .all(|e| e.state == State::Inactive)
    });
    assert!(gone, "detached device still Active");
    assert_eq!(inv.resolve_path(&uid), None);
    assert!(
        inv.get(&uid).is_some(),
        "a removed device is kept, Inactive"
    );
}

#[test]
fn renumbered_device_keeps_uid_and_claim_without_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "renum.img", 64);
    let mut first = Disk::attach(&img);
    let inv =
        Inventory::open_with_claims(state.path(), "node-a", filters(&["/dev/loop*".into()]), Ok)
            .unwrap();
    let uid = entry_for(&inv.snapshot(), &img)[0].device.uid.clone();
    let claim = Claim::Claimed {
        volume: "device/node-a/pvc-1".into(),
        node: "node-a".into(),
    };
    inv.set_claim(&uid, claim.clone()).unwrap();
    inv.start_monitor().unwrap();

    let old_dev = first.dev.clone();
    first.detach();
    // Occupy the freed number so the image comes back under another one.
    let _filler = Disk::attach_at(&old_dev, &image(dir.path(), "filler.img", 16));
    let second = Disk::attach(&img);
    assert_ne!(second.dev, old_dev);
    let moved = wait_until(&inv, Duration::from_secs(2), |es| {
        entry_for(es, &img)
            .iter()
            .any(|e| e.state == State::Active && e.device.dev_path == second.dev)
    });
    assert!(moved, "renumbered device not picked up");
    inv.rescan().unwrap();
    let snap = inv.snapshot();
    let mine = entry_for(&snap, &img);
    assert_eq!(mine.len(), 1, "duplicate entries: {mine:?}");
    assert_eq!(mine[0].device.uid, uid);
    assert_eq!(mine[0].claim, claim);
    assert_eq!(inv.resolve_path(&uid), Some(second.dev.clone()));
    assert!(inv.candidates().iter().all(|e| e.device.uid != uid));

    // A restart keeps the uid. The node's own claims live in the state journal, which hands
    // them to the inventory when it opens; the inventory's file does not hold them.
    drop(inv);
    let again =
        Inventory::open_with_claims(state.path(), "node-a", filters(&["/dev/loop*".into()]), Ok)
            .unwrap();
    assert_eq!(again.get(&uid).unwrap().claim, Claim::Unclaimed);
    drop(again);
    let own = |_| Ok([(uid.clone(), claim.clone())].into());
    let again =
        Inventory::open_with_claims(state.path(), "node-a", filters(&["/dev/loop*".into()]), own)
            .unwrap();
    assert_eq!(again.get(&uid).unwrap().claim, claim);
    assert_eq!(entry_for(&again.snapshot(), &img).len(), 1);
}

#[test]
fn chart_crd_matches_ferrovol_crd() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrovol"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success());
    let chart = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/ferrovol/crds/blockdevices.ferrovol.io.yaml"
    ))
    .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        chart,
        "regenerate with: ferrovol crd > charts/ferrovol/crds/blockdevices.ferrovol.io.yaml"
    );
    assert!(chart.contains("scope: Cluster") && chart.contains("name: CLAIM"));
}

/// Unmounts on drop, so a failing assertion does not leave the loop device busy.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Every partition of a disk that holds the OS is excluded, blank ones too (a BIOS-boot
/// partition carries no signature). The stand-in for the OS disk: a GPT loop disk whose first
/// partition is mounted at a protected path (what `serve` does with its state dir).
#[test]
fn blank_partitions_beside_the_os_partition_are_not_candidates() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "osdisk.img", 64);
    let out = disks::run(
        "losetup",
        &["--find", "--show", "--partscan", img.to_str().unwrap()],
    );
    let disk = Disk {
        image: img.clone(),
        dev: out.trim().into(),
    };
    disks::run(
        "sgdisk",
        &[
            "-o",
            "-n",
            "1:0:+24M",
            "-n",
            "2:0:+1M",
            "-t",
            "2:ef02",
            "-n",
            "3:0:0",
            disk.path(),
        ],
    );
    disks::run("partx", &["-u", disk.path()]);
    let part = |n: u32| format!("{}p{n}", disk.path());
    for n in 1..=3 {
        let p = part(n);
        let t0 = Instant::now();
        while !Path::new(&p).exists() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(Path::new(&p).exists(), "{p} did not appear");
    }
    disks::run("mkfs.ext4", &["-q", "-F", &part(1)]);
    let os = dir.path().join("os");
    std::fs::create_dir(&os).unwrap();
    disks::run("mount", &[&part(1), os.to_str().unwrap()]);
    let _mounted = Mounted(os.clone());

    let include: Vec<String> = std::iter::once(disk.path().to_string())
        .chain((1..=3).map(part))
        .collect();
    let filters = Filters::for_node(&include, &[], None, std::slice::from_ref(&os), None).unwrap();
    let devs = scan::scan_all("node-a", &filters).unwrap();
    for name in &include {
        let d = devs
            .iter()
            .find(|d| d.dev_path == Path::new(name))
            .unwrap_or_else(|| panic!("{name} not scanned"));
        assert!(!d.candidate, "{name} is a candidate: {d:?}");
        let reason = d.excluded_reason.as_deref().unwrap_or_default();
        assert!(reason.starts_with("holds the OS"), "{name}: {reason}");
    }
}

/// A claim another node holds (the cluster sync records it) keeps the device out of this
/// node's candidates and refuses this node's own claim, until that node lets go.
#[test]
fn another_nodes_claim_is_recorded_and_refuses_ours() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "shared.img", 64);
    let disk = Disk::attach(&img);
    let inv =
        Inventory::open_with_claims(state.path(), "node-a", filters(&[disk.path().into()]), Ok)
            .unwrap();
    let uid = entry_for(&inv.snapshot(), &img)[0].device.uid.clone();
    assert!(inv.candidates().iter().any(|e| e.device.uid == uid));

    let theirs = Claim::Claimed {
        volume: "device/node-b/v".into(),
        node: "node-b".into(),
    };
    inv.set_foreign_claims(&[(uid.clone(), theirs.clone())].into())
        .unwrap();
    assert_eq!(inv.get(&uid).unwrap().claim, theirs);
    assert!(inv.candidates().iter().all(|e| e.device.uid != uid));
    let ours = Claim::Claimed {
        volume: "device/node-a/v".into(),
        node: "node-a".into(),
    };
    let err = inv.set_claim(&uid, ours.clone()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
    assert_eq!(inv.get(&uid).unwrap().claim, theirs);

    // node-b let go: the device is this node's to use again.
    inv.set_foreign_claims(&Default::default()).unwrap();
    assert_eq!(inv.get(&uid).unwrap().claim, Claim::Unclaimed);
    inv.set_claim(&uid, ours.clone()).unwrap();
    // A claim of this node is never replaced by another node's.
    inv.set_foreign_claims(&[(uid.clone(), theirs)].into())
        .unwrap();
    assert_eq!(inv.get(&uid).unwrap().claim, ours);
}
