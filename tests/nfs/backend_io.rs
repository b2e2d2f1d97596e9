//! The NFS driver against a real nfs-ganesha: NodePublishVolume (bind mounts of the subDir with
//! --nfs-test-export-root, read-write and read-only), and servers that stop or hang (deadlines,
//! recovery without a restart), over NFSv3 and NFSv4.1. Needs root, nfs-ganesha (VFS) and rpcbind:
//! skipped without them.

use crate::common;
use crate::common::deadserver;
use crate::common::nfs;

use common::*;
use ferrovol::proto as csi;
use nfs::*;
use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::Code;

both_versions_async!(
    server_down_is_unavailable_in_time_and_recovers_without_restart,
    publish_binds_the_subdir_read_write_and_read_only,
    a_hung_server_costs_one_deadline_and_slows_no_other,
);

async fn server_down_is_unavailable_in_time_and_recovers_without_restart(proto: Proto) {
    if !usable("nfs_backend_io") {
        return;
    }
    let mut g = proto.start();
    let d = nfs_driver(&g, &["--nfs-timeout", "2s"]).await;
    let p = class(&g, &[]);
    let a = create(&d, "pvc-before", &p).await;
    g.stop();
    let t0 = Instant::now();
    let mut ctl = d.controller();
    let (created, probe_ms) = tokio::join!(ctl.create_volume(req("pvc-down", &p)), async {
        // Other RPCs keep answering while CreateVolume waits on the dead server.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t = Instant::now();
        d.identity().probe(csi::ProbeRequest {}).await.unwrap();
        d.node()
            .node_get_capabilities(csi::NodeGetCapabilitiesRequest {})
            .await
            .unwrap();
        t.elapsed()
    });
    let took = t0.elapsed();
    let st = expect_code(
        created,
        Code::Unavailable,
        "CreateVolume with ganesha stopped",
    );
    assert!(
        st.message().contains("127.0.0.1") && st.message().contains(&nfs_id(&g, "pvc-down")),
        "{st:?}"
    );
    assert!(took < Duration::from_secs(3), "CreateVolume took {took:?}");
    assert!(
        probe_ms < Duration::from_millis(500),
        "probe took {probe_ms:?}"
    );
    eprintln!("CreateVolume against a stopped server failed in {took:?}");
    expect_code(
        d.controller().delete_volume(delete_req(&a.volume_id)).await,
        Code::Unavailable,
        "delete while down",
    );

    g.resume();
    let b = create(&d, "pvc-down", &p).await;
    assert!(g.export.join(sub_dir(&b)).is_dir());
    d.delete(&b.volume_id).await;
    d.delete(&a.volume_id).await;
    assert!(records(&g).is_empty());
}

async fn publish_binds_the_subdir_read_write_and_read_only(proto: Proto) {
    if !usable("nfs_backend_io") {
        return;
    }
    let g = proto.start();
    let d = nfs_driver(&g, &[]).await;
    let v = create(&d, "pvc-pub", &class(&g, &[])).await;
    let dir = g.export.join(sub_dir(&v));
    let publish = |target: &Path, mode: Mode, ro: bool, ctx: &HashMap<String, String>| {
        let mut r = publish_req(
            &v.volume_id,
            Path::new(""),
            target,
            mount_cap_with(mode, &["nosuid"]),
            ro,
        );
        r.staging_target_path.clear();
        r.volume_context = ctx.clone();
        r
    };
    let rw = d.root().join("kubelet/pods/a/vol");
    let ro = d.root().join("kubelet/pods/b/vol");
    for _ in 0..2 {
        d.node()
            .node_publish_volume(publish(
                &rw,
                Mode::MultiNodeMultiWriter,
                false,
                &v.volume_context,
            ))
            .await
            .unwrap();
    }
    // Another volume's publish at that target is refused: what is mounted there is not its.
    let w = create(&d, "pvc-other", &class(&g, &[])).await;
    let mut other = publish(&rw, Mode::MultiNodeMultiWriter, false, &w.volume_context);
    other.volume_id = w.volume_id.clone();
    expect_code(
        d.node().node_publish_volume(other).await,
        Code::AlreadyExists,
        "another volume at a published target",
    );
    d.delete(&w.volume_id).await;
    d.node()
        .node_publish_volume(publish(
            &ro,
            Mode::MultiNodeReaderOnly,
            false,
            &v.volume_context,
        ))
        .await
        .unwrap();
    fs::write(rw.join("hello"), "from pod a").unwrap();
    assert_eq!(fs::read_to_string(dir.join("hello")).unwrap(), "from pod a");
    assert_eq!(fs::read_to_string(ro.join("hello")).unwrap(), "from pod a");
    let e = fs::write(ro.join("nope"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    assert!(mounts_at(&ro)[0].read_only() && !mounts_at(&rw)[0].read_only());
    let stats = d.stats(&v.volume_id, &rw).await;
    assert!(stats.usage[0].total > 0);

    // The volume context is the only source, and it is checked.
    let mut bad = v.volume_context.clone();
    bad.insert("subDir".into(), "../outside".into());
    let t = d.root().join("kubelet/pods/c/vol");
    expect_code(
        d.node()
            .node_publish_volume(publish(&t, Mode::SingleNodeWriter, false, &bad))
            .await,
        Code::InvalidArgument,
        "subDir ..",
    );
    let mut opts = publish(&t, Mode::SingleNodeWriter, false, &v.volume_context);
    opts.volume_capability = Some(mount_cap_with(
        Mode::SingleNodeWriter,
        &["sec=sys,evil opt"],
    ));
    expect_code(
        d.node().node_publish_volume(opts).await,
        Code::InvalidArgument,
        "bad option",
    );
    let stage = d
        .node()
        .node_stage_volume(stage_req(
            &v.volume_id,
            &d.root().join("kubelet/st"),
            mount_cap(),
        ))
        .await;
    assert!(stage.is_err());

    for t in [&rw, &ro] {
        for _ in 0..2 {
            d.node()
                .node_unpublish_volume(unpublish_req(&v.volume_id, t))
                .await
                .unwrap();
        }
        assert!(mounts_at(t).is_empty() && !t.exists());
    }
    d.delete(&v.volume_id).await;
    assert!(!dir.exists());

    // Without the test flag this kernel (no NFS client) is a FailedPrecondition saying so.
    if !fs::read_to_string("/proc/filesystems")
        .unwrap()
        .contains("\tnfs\n")
    {
        let k = Driver::builder().arg("--driver").arg("nfs").start().await;
        let v = create(&k, "pvc-kernel", &class(&g, &[])).await;
        let mut r = publish_req(
            &v.volume_id,
            Path::new(""),
            &k.root().join("kubelet/p/vol"),
            mount_cap(),
            false,
        );
        r.staging_target_path.clear();
        r.volume_context = v.volume_context.clone();
        let st = expect_code(
            k.node().node_publish_volume(r).await,
            Code::FailedPrecondition,
            "no kernel NFS",
        );
        assert!(st.message().contains("/proc/filesystems"), "{st:?}");
        k.delete(&v.volume_id).await;
    }
}

async fn a_hung_server_costs_one_deadline_and_slows_no_other(proto: Proto) {
    if !usable("nfs_backend_io") {
        return;
    }
    let g = proto.start();
    let dead = deadserver::DeadServer::start();
    let d = nfs_driver(&g, &["--nfs-timeout", "1s"]).await;
    let live = class(&g, &[]);
    let mut hung = live.clone();
    hung.insert("server".into(), dead.addr.clone());
    create(&d, "pvc-warm", &live).await;
    let t0 = Instant::now();
    let (dead_res, live_ms) = tokio::join!(
        async { d.controller().create_volume(req("pvc-dead", &hung)).await },
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let t = Instant::now();
            create(&d, "pvc-live", &live).await;
            t.elapsed()
        }
    );
    let took = t0.elapsed();
    let st = expect_code(
        dead_res,
        Code::DeadlineExceeded,
        "CreateVolume on a hung server",
    );
    assert!(
        st.message().contains(&dead.addr) && st.message().contains("/pvc-dead"),
        "{st:?}"
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(2500),
        "took {took:?}"
    );
    assert!(
        live_ms < Duration::from_millis(500),
        "live create took {live_ms:?}"
    );
    eprintln!("CreateVolume against a hung server failed after {took:?}; a live one meanwhile took {live_ms:?}");
    d.delete(&nfs_id(&g, "pvc-live")).await;
    d.delete(&nfs_id(&g, "pvc-warm")).await;
}
