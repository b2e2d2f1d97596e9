//! NodeGetVolumeStats of the NFS driver while one NFS server hangs, through real gRPC against
//! the real binary. This kernel has no NFS client, so the mounts are stand-ins that the node
//! cannot tell apart from NFS ones where it matters: the node finds a mount's server in the
//! mount table's source (`server:/export`), which a FUSE mount sets with fsname= and a tmpfs
//! with its source. Server A is a FUSE filesystem whose statfs never answers
//! (tests/common/hungfs.rs), server B a tmpfs. Needs root and /dev/fuse.

use crate::common;
use crate::common::hungfs;

use common::*;
use ferrovol::os::nfscalls::CALLS_PER_SERVER;
use ferrovol::proto as csi;
use hungfs::HungFs;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::Code;

/// `--nfs-timeout`; the node's kernel calls get three times as long.
const TIMEOUT: &str = "1s";
const KERNEL_DEADLINE: Duration = Duration::from_secs(3);

fn usable() -> bool {
    // SAFETY: geteuid has no preconditions.
    let ok = unsafe { libc::geteuid() } == 0 && Path::new("/dev/fuse").exists();
    if !ok {
        eprintln!("nfs_node_stats: needs root and /dev/fuse: skipped");
    }
    ok
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn metrics(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// The value of `ferrovol_nfs_abandoned_kernel_calls` for `server`, 0 when it has no series.
fn abandoned(text: &str, server: &str) -> u64 {
    let series = format!("ferrovol_nfs_abandoned_kernel_calls{{server=\"{server}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.trim().parse().unwrap())
}

fn condition(r: &csi::NodeGetVolumeStatsResponse) -> (bool, String) {
    let c = r.volume_condition.as_ref().expect("a volume condition");
    (c.abnormal, c.message.clone())
}

#[tokio::test]
async fn a_hung_server_costs_its_own_budget_and_stats_answer_without_new_calls() {
    if !usable() {
        return;
    }
    let port = free_port();
    let d = Driver::builder()
        .arg("--driver")
        .arg("nfs")
        .arg("--roles")
        .arg("node")
        .arg("--nfs-timeout")
        .arg(TIMEOUT)
        .arg("--metrics-address")
        .arg(format!("127.0.0.1:{port}"))
        .start()
        .await;
    let a_path = d.target("pvc-a", "pod-a");
    let a = HungFs::mount(&a_path, "server-a:/export");
    let b_path = d.target("pvc-b", "pod-b");
    fs::create_dir_all(&b_path).unwrap();
    nix::mount::mount(
        Some("server-b:/export"),
        &b_path,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=64m"),
    )
    .unwrap();

    // Concurrent stats on A, in rounds. A round's calls that reach the server before the first
    // deadline hang there; later ones find A known hung. Between rounds A answers one held
    // call, which clears that state, so the next round sends new calls until A's budget is full.
    let mut answers = Vec::new();
    for round in 0..12 {
        if round > 0 {
            a.answer_one();
            let held = a.held() as u64;
            let t0 = Instant::now();
            while abandoned(&metrics(port), "server-a") != held {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "the answered call never returned"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let mut burst = tokio::task::JoinSet::new();
        for i in 0..CALLS_PER_SERVER + 8 {
            let mut node = d.node();
            let req = stats_req(&format!("nfs/pvc-a{i}"), &a_path);
            burst.spawn(async move { node.node_get_volume_stats(req).await });
        }
        answers.extend(burst.join_all().await);
        if a.held() >= CALLS_PER_SERVER {
            break;
        }
    }

    // B is another server: its stats answer, correctly, although A used its whole budget.
    let t0 = Instant::now();
    let b = d.stats("nfs/pvc-b", &b_path).await;
    assert!(t0.elapsed() < KERNEL_DEADLINE, "B took {:?}", t0.elapsed());
    assert_eq!(b.usage[0].total, 64 * MIB, "{b:?}");
    assert!(!condition(&b).0, "{b:?}");

    // A's hung calls never exceed its budget; each answer names A: abnormal when its call was
    // abandoned at the deadline or A was known hung, Unavailable when the budget was full.
    assert_eq!(a.held(), CALLS_PER_SERVER, "statfs calls hung on A");
    let mut refused = 0;
    for r in &answers {
        match r {
            Ok(r) => {
                let (abnormal, msg) = condition(r.get_ref());
                assert!(abnormal && msg.contains("server-a"), "{msg}");
            }
            Err(st) => {
                assert_eq!(st.code(), Code::Unavailable, "{st:?}");
                assert!(
                    st.message().contains(&format!(
                        "{CALLS_PER_SERVER} kernel calls to NFS server server-a"
                    )),
                    "{st:?}"
                );
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "A's budget never refused a call");
    let reached = a.statfs_calls();
    assert_eq!(
        abandoned(&metrics(port), "server-a"),
        CALLS_PER_SERVER as u64
    );
    assert_eq!(abandoned(&metrics(port), "server-b"), 0);

    // While A's calls are outstanding, its stats answer at once from what is known, without a
    // new kernel call: abnormal, naming the server and how long it has not answered.
    for i in 0..3 {
        let t0 = Instant::now();
        let r = d.stats(&format!("nfs/pvc-a{i}"), &a_path).await;
        assert!(t0.elapsed() < KERNEL_DEADLINE, "A took {:?}", t0.elapsed());
        let (abnormal, msg) = condition(&r);
        assert!(
            abnormal && msg.contains("server-a") && msg.contains("has not answered for"),
            "{msg}"
        );
    }
    assert_eq!(
        a.statfs_calls(),
        reached,
        "known-hung A got new kernel calls"
    );

    // A answers again: its outstanding calls return, its state clears, stats call it again.
    a.recover();
    let t0 = Instant::now();
    let healthy = loop {
        let r = d.stats("nfs/pvc-a0", &a_path).await;
        if !condition(&r).0 {
            break r;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "A never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let bs = hungfs::BLOCK_SIZE as i64;
    let bytes = &healthy.usage[0];
    assert_eq!(
        (bytes.total, bytes.available),
        (
            hungfs::BLOCKS as i64 * bs,
            hungfs::BLOCKS_AVAILABLE as i64 * bs
        ),
        "{healthy:?}"
    );
    assert!(a.statfs_calls() > reached);
    assert_eq!(abandoned(&metrics(port), "server-a"), 0);
    drop(a);
}
