//! Existing NFS directories under the NFS driver, against a real nfs-ganesha: a static
//! PersistentVolume (`nfs/static/<name>`, volumeAttributes server, share, subDir) is published as
//! it is and never deleted; `ferrovol ctl adopt nfs` makes a directory a managed volume (its
//! record on the share), after which DeleteVolume applies its onDelete. This kernel has no NFS
//! client: NodePublishVolume binds the export's directory (`--nfs-test-export-root`, the seam
//! tests/nfs uses), after the same checks of the volume context a kernel mount gets.
//! Needs root, nfs-ganesha (VFS) and rpcbind: skipped without them.

use crate::common;
use crate::common::ganesha;
use crate::common::nfs;

use common::*;
use ferrovol::proto::admin::{admin_client::AdminClient, AdoptNfsDirectoryRequest, AdoptResponse};
use ganesha::Ganesha;
use nfs::*;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use tonic::Code;

fn data_dir(dir: &Path, tag: &str) {
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("data.txt"), tag).unwrap();
    fs::write(dir.join("sub/more.txt"), format!("more {tag}")).unwrap();
}

fn assert_data(dir: &Path, tag: &str) {
    assert_eq!(
        fs::read_to_string(dir.join("data.txt")).unwrap(),
        tag,
        "{}",
        dir.display()
    );
    assert_eq!(
        fs::read_to_string(dir.join("sub/more.txt")).unwrap(),
        format!("more {tag}")
    );
}

fn context(g: &Ganesha, sub_dir: &str) -> HashMap<String, String> {
    HashMap::from([
        ("server".to_string(), "127.0.0.1".to_string()),
        ("share".to_string(), g.share()),
        ("subDir".to_string(), sub_dir.to_string()),
    ])
}

/// NodePublishVolume of `id` at a pod target, with the PersistentVolume's attributes.
async fn publish(d: &Driver, id: &str, ctx: &HashMap<String, String>, pod: &str) -> PathBuf {
    let target = d.root().join(format!("kubelet/pods/{pod}/vol"));
    let mut r = publish_req(id, Path::new(""), &target, mount_cap(), false);
    r.staging_target_path.clear();
    r.volume_context = ctx.clone();
    d.node()
        .node_publish_volume(r)
        .await
        .unwrap_or_else(|e| panic!("NodePublishVolume {id}: {e}\n{}", d.log()));
    target
}

async fn adopt(
    d: &Driver,
    g: &Ganesha,
    sub_dir: &str,
    name: &str,
    on_delete: &str,
) -> Result<AdoptResponse, tonic::Status> {
    let endpoint = ferrovol::server::Endpoint::Unix(d.socket());
    let mut admin = AdminClient::new(ferrovol::client::connect(&endpoint).await.unwrap());
    admin
        .adopt_nfs_directory(AdoptNfsDirectoryRequest {
            server: "127.0.0.1".into(),
            share: g.share(),
            sub_dir: sub_dir.into(),
            name: name.into(),
            capacity_bytes: 64 * MIB,
            on_delete: on_delete.into(),
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn a_static_volume_is_published_as_is_and_never_deleted() {
    if !usable("nfs_adopt") {
        return;
    }
    let g = Ganesha::start();
    let d = nfs_driver(&g, &[]).await;
    let dir = g.export.join("media/library");
    data_dir(&dir, "static");
    let id = "nfs/static/media-library";
    let ctx = context(&g, "media/library");
    let target = publish(&d, id, &ctx, "a").await;
    assert_data(&target, "static");
    fs::write(target.join("from-pod"), "written").unwrap();
    d.unpublish(id, &target).await;
    assert_eq!(fs::read_to_string(dir.join("from-pod")).unwrap(), "written");

    // DeleteVolume of a static handle answers OK and touches nothing.
    d.delete(id).await;
    assert_data(&dir, "static");
    assert!(records(&g).is_empty(), "a static volume has no record");
    assert!(!d.list_ids().await.contains(&id.to_string()));
    let get = d.controller().controller_get_volume(get_req(id)).await;
    assert_eq!(get.expect_err("no record").code(), Code::NotFound);
}

#[tokio::test]
async fn an_existing_directory_becomes_a_managed_volume_and_its_on_delete_applies() {
    if !usable("nfs_adopt") {
        return;
    }
    let g = Ganesha::start();
    let d = nfs_driver(&g, &[]).await;
    data_dir(&g.export.join("legacy/app1"), "app1");
    data_dir(&g.export.join("legacy/app2"), "app2");

    let out = output(
        Command::new(env!("CARGO_BIN_EXE_ferrovol"))
            .arg("ctl")
            .arg("--endpoint")
            .arg(format!("unix://{}", d.socket().display()))
            .args([
                "adopt",
                "nfs",
                "--server",
                "127.0.0.1",
                "--share",
                &g.share(),
            ])
            .args([
                "--sub-dir",
                "legacy/app1",
                "--name",
                "app1",
                "--size",
                "1Gi",
            ])
            .args(["--on-delete", "archive", "--storage-class", "ferrovol-nfs"]),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    let pv: serde_json::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    let id = nfs_id(&g, "app1");
    assert_eq!(pv["spec"]["csi"]["driver"], "nfs.csi.ferrovol.io");
    assert_eq!(pv["spec"]["csi"]["volumeHandle"], id.as_str());
    assert_eq!(
        pv["spec"]["csi"]["volumeAttributes"]["subDir"],
        "legacy/app1"
    );
    assert_eq!(
        pv["spec"]["csi"]["volumeAttributes"]["share"],
        g.share().as_str()
    );
    assert_eq!(pv["spec"]["accessModes"][0], "ReadWriteMany");
    assert!(pv["spec"].get("nodeAffinity").is_none());
    assert_eq!(records(&g), vec!["app1.json".to_string()]);
    let rec: serde_json::Value =
        serde_json::from_slice(&fs::read(g.export.join(".ferrovol/volumes/app1.json")).unwrap())
            .unwrap();
    assert_eq!(rec["state"], "ready");
    assert_eq!(rec["on_delete"], "archive");
    assert!(
        rec["dir_handle"].as_str().is_some_and(|h| !h.is_empty()),
        "{rec}"
    );
    assert_eq!(d.list_ids().await, vec![id.clone()]);
    assert_eq!(
        adopt(&d, &g, "legacy/app1", "app1", "archive")
            .await
            .unwrap()
            .volume_id,
        id
    );

    // Published from the PersistentVolume's attributes, as any volume.
    let ctx: HashMap<String, String> =
        serde_json::from_value(pv["spec"]["csi"]["volumeAttributes"].clone()).unwrap();
    let target = publish(&d, &id, &ctx, "p").await;
    assert_data(&target, "app1");
    d.unpublish(&id, &target).await;

    // What cannot be adopted: the directory of a volume, one inside it, one holding it, one
    // that is not there, the driver's own, an unknown onDelete, a name taken.
    let made = create(&d, "pvc-made", &class(&g, &[])).await;
    let made_dir = sub_dir(&made);
    fs::create_dir(g.export.join(&made_dir).join("inner")).unwrap();
    let cases: [(&str, &str, &str, Code, &str); 7] = [
        (
            &made_dir,
            "x1",
            "",
            Code::FailedPrecondition,
            "is or lies inside",
        ),
        (
            &format!("{made_dir}/inner"),
            "x2",
            "",
            Code::FailedPrecondition,
            "is or lies inside",
        ),
        (
            "legacy",
            "x3",
            "",
            Code::FailedPrecondition,
            "holds the directory legacy/app1",
        ),
        (
            "legacy/missing",
            "x4",
            "",
            Code::InvalidArgument,
            "does not exist",
        ),
        (
            ".ferrovol/volumes",
            "x5",
            "",
            Code::InvalidArgument,
            "subDir",
        ),
        (
            "legacy/app2",
            "x6",
            "shred",
            Code::InvalidArgument,
            "onDelete",
        ),
        (
            "legacy/app2",
            "app1",
            "",
            Code::AlreadyExists,
            "choose another name",
        ),
    ];
    for (dir, name, on_delete, code, why) in cases {
        let s = adopt(&d, &g, dir, name, on_delete).await.expect_err(why);
        assert_eq!(s.code(), code, "{dir}: {s:?}");
        assert!(s.message().contains(why), "{dir}: {}", s.message());
    }
    assert_data(&g.export.join("legacy/app2"), "app2");

    // DeleteVolume applies the record's onDelete: archived beside it, data intact.
    d.delete(&id).await;
    assert!(!g.export.join("legacy/app1").exists());
    let archived: Vec<String> = dir_names(&g.export.join("legacy"))
        .into_iter()
        .filter(|n| n.starts_with("archived-app1-"))
        .collect();
    assert_eq!(archived.len(), 1, "{archived:?}");
    assert_data(&g.export.join("legacy").join(&archived[0]), "app1");
    // Adopted with the default, retain: DeleteVolume takes the record and leaves the directory.
    let kept = adopt(&d, &g, "legacy/app2", "app2", "").await.unwrap();
    d.delete(&kept.volume_id).await;
    assert_data(&g.export.join("legacy/app2"), "app2");
    d.delete(&made.volume_id).await;
    assert!(records(&g).is_empty(), "{:?}", records(&g));
}

#[tokio::test]
async fn a_node_plugin_adopts_nothing() {
    if !usable("nfs_adopt") {
        return;
    }
    let g = Ganesha::start();
    let d = nfs_driver(&g, &["--roles", "node"]).await;
    data_dir(&g.export.join("legacy/app"), "app");
    let s = adopt(&d, &g, "legacy/app", "app", "")
        .await
        .expect_err("node role");
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert!(s.message().contains("NFS controller"), "{s:?}");
    assert!(records(&g).is_empty());
}

/// During a rollout two controllers serve one share. Only the holder of the share's lease
/// adopts: each controller's check that no record names a directory comes before its record is
/// written, so two controllers adopting one directory under two names at once would both pass
/// it, and a delete of either volume would then remove what the other still publishes.
#[tokio::test]
async fn only_the_holder_of_the_shares_lease_adopts() {
    if !usable("nfs_adopt") {
        return;
    }
    let g = Ganesha::start();
    let keep = tempfile::tempdir().unwrap();
    let reg = keep.path().join("nfs-shares.json");
    let reg = reg.to_str().unwrap();
    data_dir(&g.export.join("legacy/first"), "first");
    data_dir(&g.export.join("legacy/other"), "other");
    let first = nfs_driver(&g, &["--nfs-registry-file", reg]).await;
    adopt(&first, &g, "legacy/first", "first", "delete")
        .await
        .unwrap_or_else(|e| panic!("the lease holder adopts: {e}\n{}", first.log()));

    let second = nfs_driver(&g, &["--nfs-registry-file", reg]).await;
    let refused = adopt(&second, &g, "legacy/other", "other", "delete")
        .await
        .expect_err("a controller without the share's lease adopts nothing");
    assert_eq!(refused.code(), Code::Aborted, "{refused:?}");
    assert!(
        refused.message().contains("lease"),
        "the refusal names the lease: {}",
        refused.message()
    );
    assert_eq!(records(&g).len(), 1, "the refused adoption wrote no record");
    assert_data(&g.export.join("legacy/other"), "other");

    adopt(&first, &g, "legacy/other", "other", "delete")
        .await
        .unwrap_or_else(|e| panic!("the lease holder adopts: {e}\n{}", first.log()));
    assert_eq!(records(&g).len(), 2);
}

#[tokio::test]
async fn a_directory_holding_another_share_is_not_adopted() {
    if !usable("nfs_adopt") {
        return;
    }
    let g = Ganesha::start();
    // projects/team is a share of its own (a nested export) this controller knows.
    let nested = format!("127.0.0.1:{}/projects/team", g.share());
    let d = nfs_driver(&g, &["--nfs-share", &nested]).await;
    data_dir(&g.export.join("projects/team"), "nested");
    // team/ is the root of another ferrovol share this controller does not know: its
    // metadata directory shows it.
    data_dir(&g.export.join("team"), "team");
    fs::create_dir_all(g.export.join("team/.ferrovol/volumes")).unwrap();
    for (sub, name, why) in [
        ("team", "a", "team/.ferrovol"),
        ("projects", "b", "projects/team"),
        ("projects/team", "c", "projects/team"),
        ("team/.ferrovol", "d", ".ferrovol"),
    ] {
        let got = adopt(&d, &g, sub, name, "delete").await;
        let e = got.expect_err(&format!("adopting {sub} must be refused"));
        assert_eq!(e.code(), Code::FailedPrecondition, "{sub}: {e}");
        assert!(e.message().contains(why), "{sub}: {e}");
    }
    assert!(records(&g).is_empty(), "{:?}", records(&g));
    assert_data(&g.export.join("team"), "team");
    assert_data(&g.export.join("projects/team"), "nested");
}
