//! Hostpath pools (`--hostpath-pool NAME=PATH`) through the real driver: a btrfs pool with
//! quota and a plain ext4 pool on loop devices beside the default base, each with its own
//! volumes, capacity, enforcement and snapshots; a pool whose path is missing reported while
//! the others serve, and picked up when it appears; a class naming a pool the node lacks; a
//! pool's base under another name refused rather than swept.

use crate::common::hostpath_snap::{from_source, snapshot};
use crate::common::*;
use ferrovol::proto as csi;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use tonic::Code;

fn with_pool(mut req: csi::CreateVolumeRequest, pool: &str) -> csi::CreateVolumeRequest {
    req.parameters.insert("pool".into(), pool.into());
    req
}

async fn create_in(d: &Driver, name: &str, pool: &str) -> csi::Volume {
    d.controller()
        .create_volume(with_pool(create_req(name, 64 * MIB, mount_cap()), pool))
        .await
        .unwrap_or_else(|e| panic!("create {name} in {pool}: {e}\n{}", d.log()))
        .into_inner()
        .volume
        .unwrap()
}

/// GetCapacity for a class naming `pool` (None: no pool parameter).
async fn capacity(d: &Driver, pool: Option<&str>) -> i64 {
    let parameters = pool
        .map(|p| [("pool".to_string(), p.to_string())].into())
        .unwrap_or_default();
    d.controller()
        .get_capacity(csi::GetCapacityRequest {
            volume_capabilities: vec![mount_cap()],
            parameters,
            accessible_topology: None,
        })
        .await
        .unwrap()
        .into_inner()
        .available_capacity
}

fn journal_keys(d: &Driver) -> Vec<String> {
    let live = ferrovol::state::journal::peek(&d.state_dir().join("journal")).unwrap();
    let mut keys: Vec<String> = live.into_keys().collect();
    keys.sort();
    keys
}

fn mkdir(p: &Path) -> PathBuf {
    fs::create_dir(p).unwrap();
    p.to_path_buf()
}

#[tokio::test]
async fn each_pool_holds_its_volumes_capacity_enforcement_and_snapshots() {
    require_tool("mkfs.btrfs", "btrfs-progs");
    let b = Driver::builder();
    let btrfs_mnt = mount_image(b.path(), "btrfs", &["mkfs.btrfs", "-q"], 1 << 30, "rw");
    let mnt = path_str(&btrfs_mnt);
    disks::run("btrfs", &["quota", "enable", &mnt]);
    disks::run("btrfs", &["quota", "rescan", "-w", &mnt]);
    let ext4_mnt = mount_image(b.path(), "ext4", &["mkfs.ext4", "-q"], 256 << 20, "rw");
    let fast = mkdir(&btrfs_mnt.join("pool"));
    let slow = mkdir(&ext4_mnt.join("pool"));
    let mut d = b
        .arg("--hostpath-pool")
        .arg(format!("fast={}", fast.display()))
        .arg("--hostpath-pool")
        .arg(format!("slow={}", slow.display()))
        .start()
        .await;

    let vf = create_in(&d, "v-fast", "fast").await;
    let vs = create_in(&d, "v-slow", "slow").await;
    let vd = d.create("v-default", 16 * MIB, mount_cap()).await;
    // Ids do not name the pool: the same form as before pools existed.
    assert_eq!(vf.volume_id, d.volume_id("v-fast"));
    assert_eq!(vs.volume_id, d.volume_id("v-slow"));
    // Each lands in its pool: a btrfs subvolume with a qgroup, a plain ext4 directory.
    assert_eq!(fs::metadata(fast.join("v-fast")).unwrap().ino(), 256);
    assert!(slow.join("v-slow").is_dir() && d.volume_dir("v-default").is_dir());
    let ctx = |v: &csi::Volume, k: &str| v.volume_context[k].clone();
    assert_eq!(ctx(&vf, "ferrovol.io/path"), path_str(&fast.join("v-fast")));
    assert_eq!(ctx(&vs, "ferrovol.io/path"), path_str(&slow.join("v-slow")));
    assert_eq!(ctx(&vf, "ferrovol.io/capacity-enforced"), "true");
    assert_eq!(ctx(&vs, "ferrovol.io/capacity-enforced"), "false");
    assert_eq!(ctx(&vd, "ferrovol.io/capacity-enforced"), "false");
    // The records: the default pool's under the keys of earlier versions.
    let keys = journal_keys(&d);
    for k in [
        "hostpath/v-default",
        "hostpath@fast/v-fast",
        "hostpath@slow/v-slow",
    ] {
        assert!(keys.contains(&k.to_string()), "{k} not in {keys:?}");
    }

    // Capacity per pool: each its own filesystem's free space less what its volumes reserve.
    let (cap_fast, cap_slow, cap_default) = (
        capacity(&d, Some("fast")).await,
        capacity(&d, Some("slow")).await,
        capacity(&d, None).await,
    );
    let free = |p: &Path| {
        let s = nix::sys::statvfs::statvfs(p).unwrap();
        (s.blocks_available() as i64) * (s.fragment_size() as i64)
    };
    let near = |got: i64, want: i64| (got - want).abs() <= 16 * MIB;
    assert!(near(cap_fast, free(&fast) - 64 * MIB), "{cap_fast}");
    assert!(near(cap_slow, free(&slow) - 64 * MIB), "{cap_slow}");
    assert!(
        cap_slow < 256 * MIB && cap_fast > 512 * MIB,
        "{cap_slow} {cap_fast}"
    );
    assert!(
        near(cap_default, free(d.base()) - 16 * MIB),
        "{cap_default}"
    );
    assert_eq!(
        capacity(&d, Some("nvme")).await,
        0,
        "a pool this node lacks"
    );

    // Snapshots live in their volume's pool, made the way that pool's filesystem can.
    fs::write(fast.join("v-fast/data"), b"fast").unwrap();
    fs::write(slow.join("v-slow/data"), b"slow").unwrap();
    let sf = snapshot(&d, "s-fast", &vf.volume_id).await;
    let ss = snapshot(&d, "s-slow", &vs.volume_id).await;
    assert_eq!(
        fs::metadata(fast.join(".snapshots/s-fast/data"))
            .unwrap()
            .ino(),
        256,
        "a btrfs snapshot"
    );
    assert_eq!(
        fs::read(slow.join(".snapshots/s-slow/data/data")).unwrap(),
        b"slow"
    );
    let c = d.controller();
    let restore = |name: &str, snap: &str, pool: &str| {
        with_pool(
            from_source(name, 64 * MIB, mount_cap(), Some(snap), None),
            pool,
        )
    };
    c.clone()
        .create_volume(restore("r-fast", &sf.snapshot_id, "fast"))
        .await
        .unwrap();
    assert_eq!(fs::read(fast.join("r-fast/data")).unwrap(), b"fast");
    let s = expect_code(
        c.clone()
            .create_volume(restore("r-cross", &ss.snapshot_id, "fast"))
            .await,
        Code::InvalidArgument,
        "restore of another pool's snapshot",
    );
    assert!(s.message().contains("slow"), "{s:?}");
    assert!(!fast.join("r-cross").exists());
    // A name is one volume across the node's pools.
    expect_code(
        c.clone()
            .create_volume(with_pool(
                create_req("v-fast", 64 * MIB, mount_cap()),
                "slow",
            ))
            .await,
        Code::AlreadyExists,
        "the name of another pool's volume",
    );
    // The same request again is the same volume.
    assert_eq!(
        create_in(&d, "v-fast", "fast").await.volume_id,
        vf.volume_id
    );

    // Everything reads back after a restart, listed across pools in name order.
    d.restart().await;
    let ids: Vec<String> = d
        .list_all()
        .await
        .into_iter()
        .map(|e| e.volume.unwrap().volume_id)
        .collect();
    let want: Vec<String> = ["r-fast", "v-default", "v-fast", "v-slow"]
        .iter()
        .map(|n| d.volume_id(n))
        .collect();
    assert_eq!(ids, want);
    let page = c
        .clone()
        .list_volumes(csi::ListVolumesRequest {
            max_entries: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.entries.len(), 3);
    let rest = c
        .clone()
        .list_volumes(csi::ListVolumesRequest {
            max_entries: 3,
            starting_token: page.next_token,
        })
        .await
        .unwrap()
        .into_inner();
    let last: Vec<String> = rest
        .entries
        .into_iter()
        .map(|e| e.volume.unwrap().volume_id)
        .collect();
    assert_eq!(last, [d.volume_id("v-slow")]);
    assert_eq!(rest.next_token, "");
    let snaps = c
        .clone()
        .list_snapshots(csi::ListSnapshotsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(snaps.len(), 2);

    for id in [&sf.snapshot_id, &ss.snapshot_id] {
        crate::common::hostpath_snap::delete_snapshot(&d, id).await;
    }
    for v in ["r-fast", "v-fast", "v-slow", "v-default"] {
        d.delete(&d.volume_id(v)).await;
    }
    assert_eq!(dir_names(&fast), [".snapshots"]);
    assert_eq!(dir_names(&slow), [".snapshots"]);
    assert!(journal_keys(&d).iter().all(|k| !k.starts_with("hostpath")));
}

/// A loopback port nothing listens on right now.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn metrics(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test]
async fn a_missing_pool_is_reported_while_the_others_serve_and_is_picked_up_when_it_appears() {
    let b = Driver::builder();
    let here = mkdir(&b.path().join("disk-here"));
    let gone = b.path().join("disk-gone");
    let addr = free_port();
    let d = b
        .arg("--hostpath-pool")
        .arg(format!("here={}", here.display()))
        .arg("--hostpath-pool")
        .arg(format!("gone={}", gone.display()))
        .arg(format!("--metrics-address={addr}"))
        .start()
        .await;
    d.identity()
        .probe(csi::ProbeRequest {})
        .await
        .expect("ready while one pool is missing");
    assert!(d.log().contains("hostpath pool unusable"), "{}", d.log());
    let m = metrics(addr);
    assert!(
        m.contains(r#"ferrovol_pool_up{backend="hostpath",pool="gone"} 0"#),
        "{m}"
    );
    assert!(
        m.contains(r#"ferrovol_pool_up{backend="hostpath",pool="here"} 1"#),
        "{m}"
    );
    assert_eq!(capacity(&d, Some("gone")).await, 0);
    assert!(capacity(&d, Some("here")).await > 0);
    let s = expect_code(
        d.controller()
            .create_volume(with_pool(create_req("v1", 16 * MIB, mount_cap()), "gone"))
            .await,
        Code::ResourceExhausted,
        "create in a missing pool",
    );
    assert!(s.message().contains("disk-gone"), "{s:?}");
    assert!(
        !gone.exists(),
        "a missing pool's path must never be created"
    );
    create_in(&d, "v-here", "here").await;

    // The disk is mounted: the pool serves without a restart.
    fs::create_dir(&gone).unwrap();
    assert!(capacity(&d, Some("gone")).await > 0);
    let v = create_in(&d, "v-gone", "gone").await;
    assert!(gone.join("v-gone").is_dir());
    let m = metrics(addr);
    assert!(
        m.contains(r#"ferrovol_pool_up{backend="hostpath",pool="gone"} 1"#),
        "{m}"
    );
    d.delete(&v.volume_id).await;
    d.delete(&d.volume_id("v-here")).await;
}

#[tokio::test]
async fn a_class_naming_a_pool_the_node_lacks_gets_no_capacity_and_no_volume() {
    let d = Driver::start().await;
    assert_eq!(capacity(&d, Some("fast")).await, 0);
    assert!(capacity(&d, None).await > 0);
    let c = d.controller();
    let s = expect_code(
        c.clone()
            .create_volume(with_pool(create_req("v", 16 * MIB, mount_cap()), "fast"))
            .await,
        Code::ResourceExhausted,
        "unknown pool",
    );
    assert!(s.message().contains("no hostpath pool \"fast\""), "{s:?}");
    expect_code(
        c.clone()
            .create_volume(with_pool(create_req("v", 16 * MIB, mount_cap()), "Fast/x"))
            .await,
        Code::InvalidArgument,
        "a pool name that cannot be one",
    );
    // `default` by name is the class without a pool.
    let v = d
        .controller()
        .create_volume(with_pool(create_req("v", 16 * MIB, mount_cap()), "default"))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert!(d.volume_dir("v").is_dir());
    d.delete(&v.volume_id).await;
}

/// A driver with pool `fast` (its flag is the returned string) on a plain directory, holding
/// volume `kept` with a file.
async fn fast_pool_with_a_volume() -> (Driver, PathBuf, String, csi::Volume) {
    let b = Driver::builder();
    let disk = mkdir(&b.path().join("disk"));
    let flag = format!("fast={}", disk.display());
    let d = b.arg("--hostpath-pool").arg(&flag).start().await;
    let v = create_in(&d, "kept", "fast").await;
    fs::write(disk.join("kept/data"), b"precious").unwrap();
    (d, disk, flag, v)
}

#[tokio::test]
async fn a_pool_base_configured_under_another_name_is_refused_not_swept() {
    let (mut d, disk, flag, v) = fast_pool_with_a_volume().await;

    // Renamed: its records are pool fast's, so under the name quick the volume has none.
    d.replace_arg(&flag, &format!("quick={}", disk.display()));
    d.restart().await;
    assert_eq!(fs::read(disk.join("kept/data")).unwrap(), b"precious");
    assert_eq!(capacity(&d, Some("quick")).await, 0);
    let s = expect_code(
        d.controller()
            .create_volume(with_pool(create_req("new", 16 * MIB, mount_cap()), "quick"))
            .await,
        Code::FailedPrecondition,
        "create in a refused pool",
    );
    assert!(s.message().contains("pool \"fast\""), "{s:?}");

    // Named fast again, it serves its volume.
    d.replace_arg(&format!("quick={}", disk.display()), &flag);
    d.restart().await;
    assert!(capacity(&d, Some("fast")).await > 0);
    d.delete(&v.volume_id).await;
    assert!(!disk.join("kept").exists());
}

#[tokio::test]
async fn a_delete_of_what_a_pool_no_longer_configured_holds_is_refused() {
    let (mut d, disk, flag, v) = fast_pool_with_a_volume().await;
    let s = snapshot(&d, "kept-snap", &v.volume_id).await;

    // The pool left out of the configuration: its records stay in the journal, unserved.
    let other = format!("other={}", mkdir(&d.root().join("other")).display());
    d.replace_arg(&flag, &other);
    d.restart().await;
    let r = d
        .controller()
        .delete_volume(csi::DeleteVolumeRequest {
            volume_id: v.volume_id.clone(),
            ..Default::default()
        })
        .await;
    let st = expect_code(
        r,
        Code::FailedPrecondition,
        "delete in an unconfigured pool",
    );
    assert!(st.message().contains("pool \"fast\""), "{st:?}");
    let r = d
        .controller()
        .delete_snapshot(csi::DeleteSnapshotRequest {
            snapshot_id: s.snapshot_id.clone(),
            ..Default::default()
        })
        .await;
    expect_code(
        r,
        Code::FailedPrecondition,
        "snapshot delete in an unconfigured pool",
    );

    // Configured again, both are there to delete.
    d.replace_arg(&other, &flag);
    d.restart().await;
    assert_eq!(fs::read(disk.join("kept/data")).unwrap(), b"precious");
    crate::common::hostpath_snap::delete_snapshot(&d, &s.snapshot_id).await;
    d.delete(&v.volume_id).await;
    assert!(!disk.join("kept").exists());
}
