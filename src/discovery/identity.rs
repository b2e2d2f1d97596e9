//! Stable device identity. A uid must survive reboots and new /dev names, and two different
//! disks must never share one (the wrong disk could be formatted). So, in order:
//! 1. the WWN (globally unique by design);
//! 2. the serial, together with vendor and model (serials are unique per vendor/model);
//! 3. for a loop device: its backing file (path and inode), qualified by the node;
//! 4. for a device-mapper device: its dm UUID, qualified by the node;
//! 5. else the by-path link, or the sysfs path it is derived from (the port the disk sits
//!    in), qualified by the node. Such an identity ([`port_only`]) does not tell the disk from
//!    another put into that port later; the device backend makes only filesystem volumes on it
//!    (their filesystem UUID tells the disks apart).
//!
//! Vendor+model alone is never an identity: identical disks would merge. A partition is its
//! disk's identity plus its number. Nothing is ever written to a disk to give it an identity.
//! When two present devices show one uid anyway (a cloned WWN, a multipath leg), the inventory
//! records a conflict and uses neither; a claim never moves to the second one.

use super::device::{Device, DeviceType};
use sha2::{Digest, Sha256};

/// The identity key of `dev` (readable, unhashed). A partition carries its disk's facts
/// (WWN, serial, backing file: scan reads them from the disk), so its key is the disk's key
/// plus its number.
pub fn key(dev: &Device, node: &str) -> String {
    let base = disk_key(dev, node);
    match dev.partition_number {
        Some(n) => format!("{base}/part{n}"),
        None => base,
    }
}

/// What a disk's identity rests on, in the order of the module's list.
enum Basis<'a> {
    Wwn(&'a str),
    Serial(&'a str),
    Loop(&'a std::path::Path),
    Dm(&'a str),
    /// The by-path link, else the sysfs path: the port, not the disk.
    Port,
}

fn basis(dev: &Device) -> Basis<'_> {
    if let Some(wwn) = nonempty(&dev.wwn) {
        return Basis::Wwn(wwn);
    }
    if let Some(serial) = nonempty(&dev.serial) {
        return Basis::Serial(serial);
    }
    if let (DeviceType::Loop, Some(file)) = (dev.device_type, &dev.backing_file) {
        return Basis::Loop(file);
    }
    if let Some(uuid) = nonempty(&dev.dm_uuid) {
        return Basis::Dm(uuid);
    }
    Basis::Port
}

fn disk_key(dev: &Device, node: &str) -> String {
    match basis(dev) {
        Basis::Wwn(wwn) => format!("wwn:{wwn}"),
        Basis::Serial(serial) => {
            let vendor = nonempty(&dev.vendor).unwrap_or("");
            let model = nonempty(&dev.model).unwrap_or("");
            format!("serial:{vendor}:{model}:{serial}")
        }
        Basis::Loop(file) => {
            let inode = dev.backing_inode.map(|i| i.to_string()).unwrap_or_default();
            format!("loop:{node}:{}:{inode}", file.display())
        }
        Basis::Dm(uuid) => format!("dm:{node}:{uuid}"),
        Basis::Port => match dev.by_path.iter().min() {
            Some(link) => format!("path:{node}:{}", link.display()),
            None => format!("sysfs:{node}:{}", dev.sys_path.display()),
        },
    }
}

/// A short name from a key, safe as a DNS label and a Kubernetes object name: `bd-` and 32
/// hex digits of its SHA-256 (128 bits: no collision among any realistic number of disks).
pub fn uid(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    format!("bd-{}", crate::os::fsutil::hex(&digest[..16]))
}

/// Whether `dev`'s identity is only the port it sits in (the by-path link or sysfs path: no
/// WWN, serial, loop backing file or dm UUID). Another disk put into that port later shows the
/// same identity, so nothing read from the device tells the two apart.
pub fn port_only(dev: &Device) -> bool {
    matches!(basis(dev), Basis::Port)
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank(name: &str, t: DeviceType) -> Device {
        Device::fake(name, t)
    }

    #[test]
    fn wwn_beats_serial_and_is_not_node_qualified() {
        let mut d = blank("sda", DeviceType::Disk);
        d.wwn = Some("0x5000c500a1b2c3d4".into());
        d.serial = Some("S1".into());
        assert_eq!(key(&d, "n1"), "wwn:0x5000c500a1b2c3d4");
        assert_eq!(key(&d, "n1"), key(&d, "n2"));
    }

    #[test]
    fn identical_models_with_different_serials_differ() {
        let mut a = blank("sda", DeviceType::Disk);
        a.vendor = Some("ATA".into());
        a.model = Some("SAMSUNG SSD".into());
        let mut b = a.clone();
        a.serial = Some("S1".into());
        b.serial = Some("S2".into());
        assert_ne!(uid(&key(&a, "n")), uid(&key(&b, "n")));
        // Renamed (/dev/sdb after a reboot): same uid.
        let mut a2 = a.clone();
        a2.kernel_name = "sdb".into();
        a2.dev_path = "/dev/sdb".into();
        assert_eq!(key(&a, "n"), key(&a2, "n"));
    }

    #[test]
    fn vendor_and_model_alone_fall_back_to_the_port_per_node() {
        let mut a = blank("sda", DeviceType::Disk);
        a.vendor = Some("QEMU".into());
        a.model = Some("HARDDISK".into());
        let mut b = a.clone();
        b.sys_path = "/sys/devices/pci0000:00/0000:00:06.0/block/sdb".into();
        assert_ne!(key(&a, "n"), key(&b, "n"));
        assert_ne!(key(&a, "n1"), key(&a, "n2"));
        a.by_path = vec!["/dev/disk/by-path/pci-0000:00:05.0".into()];
        assert_eq!(key(&a, "n1"), "path:n1:/dev/disk/by-path/pci-0000:00:05.0");
    }

    #[test]
    fn loop_device_is_its_backing_file_on_its_node_whatever_its_number() {
        let mut a = blank("loop3", DeviceType::Loop);
        a.backing_file = Some("/var/disks/d1.img".into());
        a.backing_inode = Some(42);
        let mut b = a.clone();
        b.kernel_name = "loop9".into();
        b.dev_path = "/dev/loop9".into();
        b.sys_path = "/sys/devices/virtual/block/loop9".into();
        assert_eq!(uid(&key(&a, "n1")), uid(&key(&b, "n1")));
        assert_ne!(uid(&key(&a, "n1")), uid(&key(&a, "n2")));
    }

    #[test]
    fn only_a_port_derived_identity_is_port_only() {
        let port = blank("vda", DeviceType::Disk);
        assert!(port_only(&port), "sysfs path");
        let mut linked = port.clone();
        linked.vendor = Some("QEMU".into());
        linked.by_path = vec!["/dev/disk/by-path/pci-0000:00:05.0".into()];
        assert!(port_only(&linked), "by-path link, vendor and model");
        let mut part = linked.clone();
        (part.device_type, part.partition_number) = (DeviceType::Partition, Some(1));
        assert!(port_only(&part), "a partition of such a disk");
        let mut lone_loop = blank("loop4", DeviceType::Loop);
        lone_loop.sys_path = "/sys/devices/virtual/block/loop4".into();
        assert!(
            port_only(&lone_loop),
            "a loop device without a backing file"
        );

        let mut wwn = linked.clone();
        wwn.wwn = Some("0x5000c500a1b2c3d4".into());
        let mut serial = linked.clone();
        serial.serial = Some("S1".into());
        let mut lo = lone_loop.clone();
        lo.backing_file = Some("/var/disks/d1.img".into());
        let mut dm = blank("dm-0", DeviceType::Dm);
        dm.dm_uuid = Some("LVM-abc".into());
        for d in [&wwn, &serial, &lo, &dm] {
            assert!(!port_only(d), "{}", key(d, "n"));
        }
        let mut blank_serial = linked.clone();
        blank_serial.serial = Some("  ".into());
        assert!(port_only(&blank_serial), "a blank serial is no serial");
    }

    #[test]
    fn partition_extends_its_disk_and_uid_is_a_dns_label() {
        let mut p = blank("sda2", DeviceType::Partition);
        p.partition_number = Some(2);
        p.wwn = Some("x".into());
        assert_eq!(key(&p, "n"), "wwn:x/part2");
        let u = uid("wwn:x/part2");
        assert_eq!(u.len(), 35);
        assert!(u.starts_with("bd-"));
        assert!(u[3..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }
}
