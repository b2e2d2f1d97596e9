//! The NFS driver (`serve --driver nfs`) through real gRPC against the real binary and a real
//! nfs-ganesha: provisioning (create, delete, retain, archive, patterns, hostile names,
//! capacity, expansion, listing, crash recovery). Publishing and server faults are in
//! nfs_backend_io.rs, snapshots in nfs_snapshots.rs. Every outcome is checked on the exported
//! directory's disk. Needs root, nfs-ganesha (VFS) and rpcbind: skipped, saying so, without them.
//! Each test runs against ganesha serving NFSv3 and v4 on free ports (the driver's default
//! `nfsvers: auto` then speaks NFSv3: nothing listens on 2049) and against ganesha serving
//! NFSv4 alone on 2049 (auto speaks NFSv4.1): `backend::v3::*`, `backend::v41::*`.

use crate::common;
use crate::common::nfs;

use common::*;
use ferrovol::proto as csi;
use nfs::*;
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use tonic::Code;

both_versions_async!(
    create_delete_retain_archive_on_the_exports_disk,
    nested_pattern_delete_and_archive_touch_only_the_volume,
    hostile_names_stay_inside_the_share,
    capacity_expand_list_and_crash_recovery,
);

async fn create_delete_retain_archive_on_the_exports_disk(proto: Proto) {
    if !usable("nfs_backend") {
        return;
    }
    let g = proto.start();
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
        assert_eq!(v.volume_id, nfs_id(&g, &format!("pvc-{mode}")));
        assert_eq!(v.volume_context["server"], "127.0.0.1");
        assert_eq!(v.volume_context["share"], g.share());
        // `auto` settled on the version the server serves; the node mounts with it.
        assert_eq!(v.volume_context["nfsvers"], proto.version().as_str());
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
            .controller_get_volume(get_req(&nfs_id(&g, "pvc-delete")))
            .await,
        Code::NotFound,
        "get after delete",
    );
}

async fn nested_pattern_delete_and_archive_touch_only_the_volume(proto: Proto) {
    if !usable("nfs_backend") {
        return;
    }
    let g = proto.start();
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
        st.message().contains("team/foreign") && st.message().contains(&nfs_id(&g, "pvc-f")),
        "{st:?}"
    );
    assert_eq!(
        fs::read_to_string(team.join("foreign/precious")).unwrap(),
        "x"
    );
    d.delete(&nfs_id(&g, "pvc-f")).await;
    assert!(team.join("foreign/precious").exists());
    d.delete(&b.volume_id).await;
    assert!(team.is_dir(), "the shared parent stays");
    assert!(records(&g).is_empty());
}

async fn hostile_names_stay_inside_the_share(proto: Proto) {
    if !usable("nfs_backend") {
        return;
    }
    let g = proto.start();
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

async fn capacity_expand_list_and_crash_recovery(proto: Proto) {
    if !usable("nfs_backend") {
        return;
    }
    let g = proto.start();
    let p = class(&g, &[]);
    // Crash after the intent record: the retry rolls it back and creates the volume.
    let mut d = crashed_in_create("nfs-create:after-intent", "pvc-crash", &p).await;
    assert_eq!(records(&g), vec!["pvc-crash.json"]);
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
