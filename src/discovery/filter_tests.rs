use super::*;
use crate::os::blkid::{Kind, Signature};

fn filters(include: &[&str], exclude: &[&str]) -> Filters {
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Filters::for_node(&s(include), &s(exclude), None, &[], None).unwrap()
}

fn disk(name: &str) -> Device {
    Device::fake(name, DeviceType::Disk)
}

#[test]
fn nothing_is_a_candidate_without_an_include_pattern() {
    let f = filters(&[], &[]);
    assert_eq!(
        f.evaluate(&disk("sdb")).unwrap_err(),
        "not named by any include pattern"
    );
    let lp = Device::fake("loop0", DeviceType::Loop);
    assert!(f
        .evaluate(&lp)
        .unwrap_err()
        .contains("loop device: excluded by default"));
}

#[test]
fn include_by_path_or_link_admits_a_blank_disk() {
    let f = filters(&["/dev/sd[b-c]"], &[]);
    assert_eq!(f.evaluate(&disk("sdb")), Ok(()));
    assert!(f.evaluate(&disk("sdd")).is_err());
    let f = filters(&["/dev/disk/by-id/wwn-*"], &[]);
    let mut d = disk("sdq");
    d.by_id = vec!["/dev/disk/by-id/wwn-0x5000".into()];
    assert_eq!(f.evaluate(&d), Ok(()));
}

#[test]
fn exclude_beats_include() {
    let f = filters(&["/dev/sd*"], &["/dev/sdb"]);
    assert_eq!(
        f.evaluate(&disk("sdb")).unwrap_err(),
        "excluded by pattern /dev/sdb"
    );
    assert_eq!(f.evaluate(&disk("sdc")), Ok(()));
}

#[test]
fn loop_needs_an_explicit_pattern() {
    let lp = Device::fake("loop3", DeviceType::Loop);
    assert_eq!(filters(&["/dev/loop3"], &[]).evaluate(&lp), Ok(()));
    assert_eq!(filters(&["/dev/loop*"], &[]).evaluate(&lp), Ok(()));
    let broad = filters(&["/dev/*"], &[]).evaluate(&lp).unwrap_err();
    assert!(broad.contains("does not name it explicitly"), "{broad}");
    let ram = Device::fake("ram0", DeviceType::Ram);
    assert!(filters(&["/dev/*"], &[]).evaluate(&ram).is_err());
    // A wildcard never crosses a '/': /dev/* does not reach the by-id links.
    let mut d = disk("sdx");
    d.dev_path = "/dev/other/sdx".into();
    assert!(filters(&["/dev/*"], &[]).evaluate(&d).is_err());
}

#[test]
fn no_pattern_admits_a_device_in_use() {
    let f = filters(&["/dev/sd*"], &[]);
    let cases: Vec<(Device, &str)> = vec![
        (
            {
                let mut d = disk("sda");
                d.holds_os = vec!["/".into()];
                d
            },
            "holds the OS: /",
        ),
        (
            {
                let mut d = disk("sda");
                d.partitions = vec!["sda1".into()];
                d
            },
            "has partitions: sda1",
        ),
        (
            {
                let mut d = disk("sda");
                d.signatures = vec![Signature {
                    kind: Kind::Lvm,
                    fs_type: "LVM2_member".into(),
                    uuid: None,
                    label: None,
                    offset: 0x218,
                    magic_len: 8,
                }];
                d
            },
            "has signatures: LVM2_member at 0x218",
        ),
        (
            {
                let mut d = disk("sda");
                d.mount_points = vec!["/mnt".into()];
                d
            },
            "mounted at /mnt",
        ),
        (
            {
                let mut d = disk("sda");
                d.holders = vec!["dm-0".into()];
                d
            },
            "held by dm-0",
        ),
        (
            {
                let mut d = disk("sda");
                d.held_exclusively = true;
                d
            },
            "open exclusively by another user (O_EXCL open failed)",
        ),
    ];
    for (d, want) in cases {
        assert_eq!(f.evaluate(&d).unwrap_err(), want);
    }
}

#[test]
fn vendor_and_model_rules_from_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("devices.yaml");
    std::fs::write(
        &cfg,
        "include:\n  models: ['samsung ssd*']\nexclude:\n  vendors: [VMware*]\n",
    )
    .unwrap();
    let f = Filters::for_node(&[], &[], Some(&cfg), &[], None).unwrap();
    let mut d = disk("sdb");
    d.model = Some("Samsung SSD 870".into());
    assert_eq!(f.evaluate(&d), Ok(()));
    d.vendor = Some("VMware  ".into());
    assert_eq!(
        f.evaluate(&d).unwrap_err(),
        "excluded by vendor rule VMware*"
    );
    let mut lp = Device::fake("loop1", DeviceType::Loop);
    lp.model = Some("Samsung SSD 870".into());
    assert!(f.evaluate(&lp).is_err());
}

#[test]
fn bad_config_and_bad_glob_name_the_culprit() {
    let e = Filters::parse_config("include: {pathz: []}").unwrap_err();
    assert!(e.to_string().contains("pathz"), "{e}");
    let e = Filters::for_node(&["/dev/[".into()], &[], None, &[], None).unwrap_err();
    assert!(e.to_string().contains("\"/dev/[\""), "{e}");
    let f = Filters::for_node(&[], &[], None, &["/var/lib/kubelet".into()], None).unwrap();
    assert_eq!(f.protected_paths.len(), 3);
}

#[test]
fn selection_ignores_contents_but_not_the_rules() {
    let f = filters(&["/dev/loop7?"], &["/dev/loop79"]);
    let mut mine = Device::fake("loop71", DeviceType::Loop);
    assert!(f.selects(&mine));
    // Holding a filesystem makes it no candidate, but it is still this node's to report.
    mine.mount_points = vec!["/mnt".into()];
    assert!(f.evaluate(&mine).is_err());
    assert!(f.selects(&mine));
    assert!(!f.selects(&Device::fake("loop81", DeviceType::Loop)));
    assert!(!f.selects(&Device::fake("loop79", DeviceType::Loop)));
    assert!(!filters(&[], &[]).selects(&disk("sda")));
}

#[test]
fn the_charts_config_map_format_parses() {
    // What charts/ferrovol/templates/device-config.yaml renders.
    let text = "include:\n  paths: [\"/dev/sd*\"]\n  vendors: []\n  models: [\"Samsung*\"]\n\
                exclude:\n  paths: []\n  vendors: [\"ATA*\"]\n  models: []\n";
    let c = Filters::parse_config(text).unwrap();
    assert_eq!(c.include.paths, ["/dev/sd*"]);
    assert_eq!(c.include.models, ["Samsung*"]);
    assert_eq!(c.exclude.vendors, ["ATA*"]);
}

/// Filters of the device config `yaml` on node `node`.
fn on_node(yaml: &str, node: &str) -> io::Result<Filters> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("devices.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    Filters::for_node(&[], &[], Some(&cfg), &[], Some(node))
}

#[test]
fn node_sections_split_devices_between_nodes() {
    // Two nodes that see the same loop devices (one kernel): each claims only its own.
    let yaml = "nodes:\n\
                - {name: node-a, include: {paths: [/dev/loop10]}}\n\
                - {name: node-b, include: {paths: [/dev/loop11]}}\n";
    let loop10 = Device::fake("loop10", DeviceType::Loop);
    let loop11 = Device::fake("loop11", DeviceType::Loop);
    let a = on_node(yaml, "node-a").unwrap();
    assert_eq!(a.evaluate(&loop10), Ok(()));
    assert!(!a.selects(&loop11));
    let b = on_node(yaml, "node-b").unwrap();
    assert_eq!(b.evaluate(&loop11), Ok(()));
    assert!(!b.selects(&loop10));
    let other = on_node(yaml, "node-c").unwrap();
    assert!(!other.selects(&loop10) && !other.selects(&loop11));
}

#[test]
fn node_rules_add_to_the_global_ones() {
    let yaml = "include: {paths: [\"/dev/sd*\"]}\n\
                nodes:\n\
                - name: \"db-*\"\n  \
                  exclude: {paths: [/dev/sdb], vendors: [VMware*]}\n  \
                  include: {models: [\"Samsung*\"]}\n";
    let sdb = disk("sdb");
    assert_eq!(on_node(yaml, "web-1").unwrap().evaluate(&sdb), Ok(()));
    let db = on_node(yaml, "db-1").unwrap();
    assert_eq!(
        db.evaluate(&sdb).unwrap_err(),
        "excluded by pattern /dev/sdb"
    );
    assert_eq!(db.evaluate(&disk("sdc")), Ok(()));
    let mut vm = disk("sdc");
    vm.vendor = Some("VMware".into());
    assert_eq!(
        db.evaluate(&vm).unwrap_err(),
        "excluded by vendor rule VMware*"
    );
    let mut nvme = Device::fake("nvme0n1", DeviceType::Disk);
    nvme.model = Some("Samsung SSD 990".into());
    assert_eq!(db.evaluate(&nvme), Ok(()));
    assert!(on_node(yaml, "web-1").unwrap().evaluate(&nvme).is_err());
}

#[test]
fn every_node_section_is_checked_on_every_node() {
    // A typo in another node's section fails here too, not only on that node.
    let yaml = "nodes:\n- name: node-b\n  include: {paths: [\"/dev/[\"]}\n";
    let e = on_node(yaml, "node-a").unwrap_err();
    assert!(e.to_string().contains("\"/dev/[\""), "{e}");
    let e = on_node("nodes:\n- name: \"node-[\"\n", "node-a").unwrap_err();
    assert!(e.to_string().contains("node-["), "{e}");
    let e = on_node("nodes:\n- include: {paths: [/dev/sdb]}\n", "node-a").unwrap_err();
    assert!(e.to_string().contains("name"), "{e}");
    let e = on_node("nodes:\n- name: a\n  inclde: {}\n", "a").unwrap_err();
    assert!(e.to_string().contains("inclde"), "{e}");
}

#[test]
fn node_sections_need_the_node_name() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("devices.yaml");
    std::fs::write(&cfg, "nodes:\n- name: a\n  include: {paths: [/dev/sdb]}\n").unwrap();
    let e = Filters::for_node(&[], &[], Some(&cfg), &[], None).unwrap_err();
    assert!(e.to_string().contains("node name"), "{e}");
}
