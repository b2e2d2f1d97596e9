//! Enumerates the `block` subsystem and reads each device's facts. The udev crate lists the
//! devices (it walks sysfs); every fact comes from sysfs (under [`sysfs::root`]), blkid and
//! /proc/self/mountinfo, never from the udev database alone, so a node without udevd (no
//! /run/udev) sees the same thing.

use super::device::{Device, DeviceType, Filesystem};
use super::filter::Filters;
use super::{identity, sysfs};
use crate::os::blkid::{self, Kind};
use crate::os::mountinfo::{self, MountEntry};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};

/// What one scan reads once and shares across devices.
pub struct Context<'a> {
    pub node: &'a str,
    pub filters: &'a Filters,
    mounts: Vec<MountEntry>,
    /// canonical /dev node -> its by-id and by-path links
    links: HashMap<PathBuf, Vec<PathBuf>>,
    /// kernel name -> protected paths it holds
    os: HashMap<String, Vec<PathBuf>>,
}

impl<'a> Context<'a> {
    pub fn load(node: &'a str, filters: &'a Filters) -> io::Result<Context<'a>> {
        let mounts = mountinfo::read()?;
        let os = sysfs::os_devices(&filters.protected_paths, &mounts);
        Ok(Context {
            node,
            filters,
            mounts,
            links: links(),
            os,
        })
    }
}

/// Every block device with a medium (size > 0), evaluated by the filters.
pub fn scan_all(node: &str, filters: &Filters) -> io::Result<Vec<Device>> {
    let ctx = Context::load(node, filters)?;
    let mut en = udev::Enumerator::new()?;
    en.match_subsystem("block")?;
    let devices = en.scan_devices()?;
    let mut out: Vec<Device> = devices.filter_map(|d| read_udev(&ctx, &d)).collect();
    mark_duplicates(&mut out);
    out.sort_by(|a, b| a.kernel_name.cmp(&b.kernel_name));
    Ok(out)
}

/// One device by kernel name (after a uevent). None when it is gone or has no medium.
pub fn scan_one(ctx: &Context, kernel_name: &str) -> Option<Device> {
    let d = udev::Device::from_subsystem_sysname("block".into(), kernel_name.into()).ok()?;
    read_udev(ctx, &d)
}

fn read_udev(ctx: &Context, d: &udev::Device) -> Option<Device> {
    let name = d.sysname().to_string_lossy().into_owned();
    let devnode = d.devnode().map(Path::to_path_buf);
    let dev_path = devnode.unwrap_or_else(|| PathBuf::from("/dev").join(&name));
    let is_partition = d.devtype().is_some_and(|t| t == "partition");
    // The device's directory under the sysfs root (the real /sys, or a test's tree): a device
    // that root does not show is not seen.
    let sys = std::fs::canonicalize(sysfs::class_block(&name)).ok()?;
    let (name, sys, dev_path) = (name.as_str(), sys.as_path(), dev_path.as_path());
    let size_bytes = sysfs::read_u64(&sys.join("size"))? * 512;
    if size_bytes == 0 {
        return None;
    }
    // A partition's disk facts (queue, serial, WWN, backing file) live on its parent.
    let disk = if is_partition { sys.parent()? } else { sys };
    let device_type = DeviceType::classify(name, is_partition);
    let disk_type = DeviceType::classify(&sysfs::name_of(disk), false);
    let q = disk.join("queue");
    // The links found in /dev/disk (sorted), then any more that udev knows of (sorted).
    let canonical = std::fs::canonicalize(dev_path).unwrap_or_else(|_| dev_path.to_path_buf());
    let mut links = ctx.links.get(&canonical).cloned().unwrap_or_default();
    let devlinks = (d.property_value("DEVLINKS").unwrap_or_default()).to_string_lossy();
    let mut udev_links: Vec<PathBuf> = devlinks.split_whitespace().map(PathBuf::from).collect();
    udev_links.sort();
    udev_links.dedup();
    udev_links.retain(|l| !links.contains(l));
    links.extend(udev_links);
    let under = |dir: &str| -> Vec<PathBuf> {
        let under_dir = |l: &&PathBuf| l.to_string_lossy().starts_with(dir);
        links.iter().filter(under_dir).cloned().collect()
    };
    let (by_id, by_path) = (under("/dev/disk/by-id/"), under("/dev/disk/by-path/"));
    let loop_file = (disk_type == DeviceType::Loop).then(|| disk.join("loop/backing_file"));
    let backing_file = loop_file.and_then(|f| sysfs::read_string(&f).map(PathBuf::from));
    let backing_inode = backing_file.as_deref().and_then(|f| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(f).ok().map(|m| m.ino())
    });
    let dev_number = sysfs::read_string(&sys.join("dev"))?;
    let mounts = ctx.mounts.iter().filter(|m| m.device == dev_number);
    let mount_points = mounts.map(|m| m.mount_point.clone()).collect();
    let mut dev = Device {
        kernel_name: name.to_string(),
        dev_path: dev_path.to_path_buf(),
        sys_path: sys.to_path_buf(),
        by_id,
        by_path,
        size_bytes,
        logical_sector_size: sysfs::read_u64(&q.join("logical_block_size")).unwrap_or(512) as u32,
        physical_sector_size: sysfs::read_u64(&q.join("physical_block_size")).unwrap_or(512) as u32,
        rotational: sysfs::read_u64(&q.join("rotational")) == Some(1),
        removable: sysfs::read_u64(&disk.join("removable")) == Some(1),
        model: sysfs::read_string(&disk.join("device/model")),
        vendor: sysfs::read_string(&disk.join("device/vendor")),
        serial: sysfs::serial(disk),
        wwn: sysfs::wwn(disk),
        dm_uuid: sysfs::read_string(&disk.join("dm/uuid")),
        device_type,
        partition_number: sysfs::read_u64(&sys.join("partition")).map(|n| n as u32),
        parent: is_partition.then(|| sysfs::name_of(disk)),
        holders: sysfs::list(&sys.join("holders")),
        slaves: sysfs::list(&sys.join("slaves")),
        partitions: sysfs::partitions(sys),
        mount_points,
        holds_os: ctx.os.get(name).cloned().unwrap_or_default(),
        backing_file,
        backing_inode,
        dev_number,
        ..Device::default()
    };
    // Optical and floppy drives can block or spin up on open; their type excludes them.
    if !matches!(device_type, DeviceType::Rom | DeviceType::Floppy) {
        probe(&mut dev);
    }
    dev.uid = identity::uid(&identity::key(&dev, ctx.node));
    dev.selected = ctx.filters.selects(&dev);
    match ctx.filters.evaluate(&dev) {
        Ok(()) => dev.candidate = true,
        Err(reason) => dev.excluded_reason = Some(reason),
    }
    Some(dev)
}

fn probe(dev: &mut Device) {
    match blkid::probe_all(&dev.dev_path) {
        Ok(sigs) => {
            let table = sigs.iter().find(|s| s.kind == Kind::PartitionTable);
            let fs = sigs.iter().find(|s| s.kind != Kind::PartitionTable);
            dev.partition_table = table.map(|s| s.fs_type.clone());
            dev.filesystem = fs.map(|s| Filesystem {
                fs_type: s.fs_type.clone(),
                uuid: s.uuid.clone(),
                label: s.label.clone(),
            });
            dev.signatures = sigs;
        }
        Err(e) => dev.probe_error = Some(e.to_string()),
    }
    match blkid::can_open_exclusive(&dev.dev_path) {
        Ok(free) => dev.held_exclusively = !free,
        Err(e) if dev.probe_error.is_none() => {
            dev.probe_error = Some(format!("open {}: {e}", dev.dev_path.display()))
        }
        Err(_) => {}
    }
}

/// Two devices with one identity (the same file on two loop devices, multipath legs): neither
/// may be a candidate, since writing to one writes to the other.
pub fn mark_duplicates(devs: &mut [Device]) {
    let mut seen: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, d) in devs.iter().enumerate() {
        seen.entry(d.uid.clone()).or_default().push(i);
    }
    for idx in seen.values().filter(|v| v.len() > 1) {
        let path = |&i: &usize| devs[i].dev_path.display().to_string();
        let names = idx.iter().map(path).collect::<Vec<_>>().join(" and ");
        let reason = format!("one identity seen at {names} (the same disk twice?)");
        for &i in idx {
            devs[i].candidate = false;
            devs[i].excluded_reason = Some(reason.clone());
        }
    }
}

/// /dev/disk/by-id and by-path links where udev (or anyone) made them, by canonical target.
fn links() -> HashMap<PathBuf, Vec<PathBuf>> {
    let mut map: HashMap<PathBuf, Vec<PathBuf>> = HashMap::new();
    for dir in ["/dev/disk/by-id", "/dev/disk/by-path"] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if let Ok(target) = std::fs::canonicalize(e.path()) {
                map.entry(target).or_default().push(e.path());
            }
        }
    }
    map.values_mut().for_each(|v| v.sort());
    map
}
