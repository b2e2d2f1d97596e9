//! The NFS driver (`serve --driver nfs`) through real gRPC against the real binary and a real
//! nfs-ganesha; every outcome is checked on the exported directory's disk.
//! Needs root, nfs-ganesha (VFS) and rpcbind: skipped, saying so, without them.

mod common;
#[path = "support/deadserver.rs"]
mod deadserver;
#[path = "support/ganesha.rs"]
mod ganesha;

use common::*;
use ferrovol::proto as csi;
use ganesha::Ganesha;
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::Code;

fn usable() -> bool {
    // SAFETY: geteuid has no preconditions.
    let ok = unsafe { libc::geteuid() } == 0 && ganesha::available();
    if !ok {
        eprintln!("nfs_backend: needs root, nfs-ganesha, nfs-ganesha-vfs and rpcbind: skipped");
    }
    ok
}

async fn nfs_driver(g: &Ganesha, extra: &[&str]) -> Driver {
    let mut b = Driver::builder()
        .arg("--driver")
        .arg("nfs")
        .arg("--nfs-test-export-root")
        .arg(&g.export);
    for a in extra {
        b = b.arg(*a);
    }
    b.start().await
}

fn class(g: &Ganesha, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut m = HashMap::from([
        ("server".to_string(), "127.0.0.1".to_string()),
        ("share".to_string(), g.share()),
    ]);
    m.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    m
}

fn req(name: &str, params: &HashMap<String, String>) -> csi::CreateVolumeRequest {
    let mut r = create_req(name, 64 * MIB, mount_cap());
    r.parameters = params.clone();
    r
}

/// Parameters external-provisioner adds with --extra-create-metadata.
fn pvc(
    params: &HashMap<String, String>,
    ns: &str,
    name: &str,
    pv: &str,
) -> HashMap<String, String> {
    let mut p = params.clone();
    p.insert("csi.storage.k8s.io/pvc/namespace".into(), ns.into());
    p.insert("csi.storage.k8s.io/pvc/name".into(), name.into());
    p.insert("csi.storage.k8s.io/pv/name".into(), pv.into());
    p
}

async fn create(d: &Driver, name: &str, params: &HashMap<String, String>) -> csi::Volume {
    d.controller()
        .create_volume(req(name, params))
        .await
        .unwrap_or_else(|e| panic!("CreateVolume {name}: {e}\n{}", d.log()))
        .into_inner()
        .volume
        .unwrap()
}

fn sub_dir(v: &csi::Volume) -> String {
    v.volume_context["subDir"].clone()
}

fn records(g: &Ganesha) -> Vec<String> {
    dir_names(&g.export.join(".ferrovol/volumes"))
        .into_iter()
        .filter(|n| n.ends_with(".json"))
        .collect()
}

#[tokio::test]
async fn create_delete_retain_archive_on_the_exports_disk() {
    if !usable() {
        return;
    }
    let g = Ganesha::start();
    let d = nfs_driver(&g, &[]).await;
    let mut ids = HashMap::new();
    for mode in ["delete", "retain", "archive"] {
        let p = class(
            &g,
            &[
                ("onDelete", mode),
                ("mountPermissions", "0750"),
                ("uid", "1234"),
                ("gid", "2345"),
            ],
        );
        let v = create(&d, &format!("pvc-{mode}"), &p).await;
        assert_eq!(v.volume_id, format!("nfs/pvc-{mode}"));
        assert_eq!(v.volume_context["server"], "127.0.0.1");
        assert_eq!(v.volume_context["share"], g.share());
        let dir = g.export.join(sub_dir(&v));
        let md = fs::metadata(&dir).unwrap();
        assert!(md.is_dir());
        assert_eq!(
            (md.permissions().mode() & 0o7777, md.uid(), md.gid()),
            (0o750, 1234, 2345)
        );
        fs::write(dir.join("data"), mode).unwrap();
        // Idempotent by name; a different class for the same name is AlreadyExists.
        assert_eq!(
            create(&d, &format!("pvc-{mode}"), &p).await.volume_id,
            v.volume_id
        );
        let other = class(
            &g,
            &[(
                "onDelete",
                if mode == "retain" { "delete" } else { "retain" },
            )],
        );
        let st = d
            .controller()
            .create_volume(req(&format!("pvc-{mode}"), &other))
            .await;
        let st = expect_code(st, Code::AlreadyExists, "same name, other onDelete");
        assert!(
            st.message().contains(&v.volume_id) && st.message().contains("onDelete"),
            "{st:?}"
        );
        ids.insert(mode, v);
    }
    assert_eq!(records(&g).len(), 3);
    for (mode, v) in &ids {
        d.delete(&v.volume_id).await;
        d.delete(&v.volume_id).await; // idempotent
        let dir = g.export.join(sub_dir(v));
        match *mode {
            "delete" => assert!(!dir.exists()),
            "retain" => assert_eq!(fs::read_to_string(dir.join("data")).unwrap(), "retain"),
            _ => {
                assert!(!dir.exists());
                let archived: Vec<_> = dir_names(&g.export)
                    .into_iter()
                    .filter(|n| n.starts_with("archived-pvc-archive-"))
                    .collect();
                assert_eq!(archived.len(), 1, "{archived:?}");
                let kept = g.export.join(&archived[0]).join("data");
                assert_eq!(fs::read_to_string(kept).unwrap(), "archive");
            }
        }
    }
    assert!(records(&g).is_empty(), "{:?}", records(&g));
    expect_code(
        d.controller()
            .controller_get_volume(get_req("nfs/pvc-delete"))
            .await,
        Code::NotFound,
        "get after delete",
    );
}

#[tokio::test]
async fn nested_pattern_delete_and_archive_touch_only_the_volume() {
    if !usable() {
        return;
    }
    let g = Ganesha::start();
    let d = nfs_driver(&g, &[]).await;
    let pattern = ("subDir", "${pvc.metadata.namespace}/${pvc.metadata.name}");
    let del = class(&g, &[pattern]);
    let arc = class(&g, &[pattern, ("onDelete", "archive")]);
    let a = create(&d, "pvc-a", &pvc(&del, "team", "data-a", "pvc-a")).await;
    let b = create(&d, "pvc-b", &pvc(&del, "team", "data-b", "pvc-b")).await;
    let c = create(&d, "pvc-c", &pvc(&arc, "team", "data-c", "pvc-c")).await;
    assert_eq!(
        (sub_dir(&a).as_str(), sub_dir(&b).as_str()),
        ("team/data-a", "team/data-b")
    );
    let team = g.export.join("team");
    fs::write(team.join("data-b/keep"), "b").unwrap();
    fs::write(team.join("shared-file"), "not a volume").unwrap();

    d.delete(&a.volume_id).await;
    assert_eq!(dir_names(&team), vec!["data-b", "data-c", "shared-file"]);
    d.delete(&c.volume_id).await;
    let names = dir_names(&team);
    assert!(
        names.iter().any(|n| n.starts_with("archived-data-c-"))
            && names.contains(&"data-b".to_string()),
        "{names:?}"
    );
    assert_eq!(fs::read_to_string(team.join("data-b/keep")).unwrap(), "b");
    assert_eq!(
        fs::read_to_string(team.join("shared-file")).unwrap(),
        "not a volume"
    );

    // A directory that exists and is not ours: FailedPrecondition, left untouched.
    fs::create_dir(team.join("foreign")).unwrap();
    fs::write(team.join("foreign/precious"), "x").unwrap();
    let st = d
        .controller()
        .create_volume(req("pvc-f", &pvc(&del, "team", "foreign", "pvc-f")))
        .await;
    let st = expect_code(st, Code::FailedPrecondition, "foreign directory");
    assert!(
        st.message().contains("team/foreign") && st.message().contains("nfs/pvc-f"),
        "{st:?}"
    );
    assert_eq!(
        fs::read_to_string(team.join("foreign/precious")).unwrap(),
        "x"
    );
    d.delete("nfs/pvc-f").await;
    assert!(team.join("foreign/precious").exists());
    d.delete(&b.volume_id).await;
    assert!(team.is_dir(), "the shared parent stays");
    assert!(records(&g).is_empty());
}

#[tokio::test]
async fn hostile_names_stay_inside_the_share() {
    if !usable() {
        return;
    }
    let g = Ganesha::start();
    let d = nfs_driver(&g, &[]).await;
    let sentinel = g.dir().join("outside");
    fs::create_dir(&sentinel).unwrap();
    fs::write(sentinel.join("f"), "outside").unwrap();
    let before: Vec<String> = dir_names(g.dir());
    let p = class(
        &g,
        &[("subDir", "${pvc.metadata.namespace}/${pvc.metadata.name}")],
    );
    let long = "n".repeat(253);
    let hostile = [
        "..",
        "../..",
        "/",
        "a/../../outside",
        "-rf",
        ".ferrovol",
        "ünïcødé",
        long.as_str(),
        "x\0y",
        "archived-x",
    ];
    let mut made = Vec::new();
    for (i, ns) in hostile.iter().enumerate() {
        for (j, name) in hostile.iter().enumerate() {
            let vol = format!("pvc-h{i}-{j}");
            match d
                .controller()
                .create_volume(req(&vol, &pvc(&p, ns, name, &vol)))
                .await
            {
                Ok(r) => made.push(r.into_inner().volume.unwrap()),
                Err(s) => assert_eq!(s.code(), Code::InvalidArgument, "{ns:?}/{name:?}: {s:?}"),
            }
        }
    }
    assert!(
        made.len() > 50,
        "most hostile values are escaped, not refused: {}",
        made.len()
    );
    let real_export = fs::canonicalize(&g.export).unwrap();
    for v in &made {
        let dir = fs::canonicalize(g.export.join(sub_dir(v))).unwrap();
        assert!(dir.starts_with(&real_export) && dir.is_dir(), "{dir:?}");
        assert_ne!(sub_dir(v).split('/').next(), Some(".ferrovol"));
    }
    let distinct: std::collections::HashSet<_> = made.iter().map(sub_dir).collect();
    assert_eq!(
        distinct.len(),
        made.len(),
        "no two volumes share a directory"
    );
    assert_eq!(
        dir_names(g.dir()),
        before,
        "nothing created beside the export"
    );
    for v in &made {
        d.delete(&v.volume_id).await;
    }
    assert_eq!(fs::read_to_string(sentinel.join("f")).unwrap(), "outside");
    assert!(records(&g).is_empty());
    // Only the namespace parents (shared, never removed) are left besides .ferrovol.
    for ns in dir_names(&g.export) {
        if ns != ".ferrovol" {
            assert!(dir_names(&g.export.join(&ns)).is_empty(), "{ns} not empty");
        }
    }
}

#[tokio::test]
async fn server_down_is_unavailable_in_time_and_recovers_without_restart() {
    if !usable() {
        return;
    }
    let mut g = Ganesha::start();
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
        st.message().contains("127.0.0.1") && st.message().contains("nfs/pvc-down"),
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

#[tokio::test]
async fn publish_binds_the_subdir_read_write_and_read_only() {
    if !usable() {
        return;
    }
    let g = Ganesha::start();
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

#[tokio::test]
async fn capacity_expand_list_and_crash_recovery() {
    if !usable() {
        return;
    }
    let g = Ganesha::start();
    let mut d = Driver::builder()
        .arg("--driver")
        .arg("nfs")
        .crash_at("nfs-create:after-intent")
        .start()
        .await;
    let p = class(&g, &[]);
    // Crash after the intent record: the retry rolls it back and creates the volume.
    let _ = d.controller().create_volume(req("pvc-crash", &p)).await;
    d.expect_crash().await;
    assert_eq!(records(&g), vec!["pvc-crash.json"]);
    d.remove_env("FERROVOL_CRASH_AT");
    d.restart().await;
    let v = create(&d, "pvc-crash", &p).await;
    assert!(g.export.join(sub_dir(&v)).is_dir());

    for i in 0..5 {
        create(&d, &format!("pvc-list-{i}"), &p).await;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let r = d
            .controller()
            .list_volumes(csi::ListVolumesRequest {
                max_entries: 2,
                starting_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.entries.len() <= 2);
        seen.extend(r.entries.into_iter().map(|e| e.volume.unwrap().volume_id));
        if r.next_token.is_empty() {
            break;
        }
        token = r.next_token;
    }
    assert_eq!(seen.len(), 6, "{seen:?}");

    let cap = d
        .controller()
        .get_capacity(csi::GetCapacityRequest {
            parameters: p.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let st = nix::sys::statvfs::statvfs(&g.export).unwrap();
    let avail = st.blocks_available() * st.fragment_size();
    let diff = (cap.available_capacity - avail as i64).abs();
    assert!(
        diff < 64 * MIB,
        "FSSTAT {} vs statvfs {avail}",
        cap.available_capacity
    );
    assert_eq!(cap.maximum_volume_size, Some(cap.available_capacity));

    let r = d
        .controller()
        .controller_expand_volume(expand_req(&v.volume_id, 256 * MIB))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.capacity_bytes, r.node_expansion_required),
        (256 * MIB, false)
    );
    let rec = fs::read_to_string(g.export.join(".ferrovol/volumes/pvc-crash.json")).unwrap();
    assert!(
        rec.contains(&format!("\"capacity_bytes\": {}", 256 * MIB)),
        "{rec}"
    );
    assert_eq!(
        d.get(&v.volume_id).await.volume.unwrap().capacity_bytes,
        256 * MIB
    );

    // Crash after the Deleting intent: the directory is still there, the retry finishes.
    d.set_env("FERROVOL_CRASH_AT", "nfs-delete:after-intent");
    d.restart().await;
    let _ = d.controller().delete_volume(delete_req(&v.volume_id)).await;
    d.expect_crash().await;
    let rec = fs::read_to_string(g.export.join(".ferrovol/volumes/pvc-crash.json")).unwrap();
    assert!(rec.contains("\"state\": \"deleting\""), "{rec}");
    assert!(g.export.join(sub_dir(&v)).is_dir());
    d.remove_env("FERROVOL_CRASH_AT");
    d.restart().await;
    d.delete(&v.volume_id).await;
    assert!(!g.export.join(sub_dir(&v)).exists());
    seen.retain(|id| id != &v.volume_id);
    for id in seen {
        d.delete(&id).await;
    }
    assert!(records(&g).is_empty());
}

#[tokio::test]
async fn a_hung_server_costs_one_deadline_and_slows_no_other() {
    if !usable() {
        return;
    }
    let g = Ganesha::start();
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
        st.message().contains(&dead.addr) && st.message().contains("nfs/pvc-dead"),
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
    d.delete("nfs/pvc-live").await;
    d.delete("nfs/pvc-warm").await;
}
