//! docs/adoption.md's local-path-provisioner recipe, on three directories made the way
//! local-path-provisioner makes them (`<base>/pvc-<uid>_<namespace>_<pvc-name>`, mode 0777, the
//! application's files inside): its base becomes ferrovol's hostpath base, each directory is
//! adopted with `ferrovol ctl adopt dir`, and the data is read back through a real NodeStage
//! and NodePublish of each adopted volume.

use super::*;

const OLD: [(&str, &str, &str); 3] = [
    ("1c0a4e36-5b7e-4d1f-9a55-0d2c3f9b7a01", "shop", "db"),
    ("7f3e2b10-8c44-4e0a-b1d2-6a9e8f7c5d02", "shop", "cache"),
    ("a2d9c7e4-1f36-4b8a-9e05-3c7b6d5e4f03", "blog", "uploads"),
];

#[tokio::test(flavor = "multi_thread")]
async fn local_path_provisioner_volumes_move_to_ferrovol_one_at_a_time() {
    let b = Driver::builder();
    // local-path-provisioner's default base, /opt/local-path-provisioner, here in the scratch dir.
    let lpp = b.path().join("opt/local-path-provisioner");
    let mut dirs = Vec::new();
    for (uid, ns, pvc) in OLD {
        let dir = lpp.join(format!("pvc-{uid}_{ns}_{pvc}"));
        make_data_dir(&dir, pvc);
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o7777,
            0o777
        );
        dirs.push(dir);
    }
    let d = b.hostpath_base(&lpp).start().await;

    for ((uid, _, pvc), dir) in OLD.iter().zip(&dirs) {
        let name = format!("pvc-{uid}");
        let pv = ctl_adopt(&d, dir, &name, "1Gi", "ferrovol-local");
        let id = pv["spec"]["csi"]["volumeHandle"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(id, d.volume_id(&name));
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert!(
            !dir.exists(),
            "{}: renamed into the volume's place",
            dir.display()
        );
        let (staging, target) = d.stage_and_publish(&id, &name, mount_cap()).await;
        assert_data(&target, pvc);
        d.unpublish_and_unstage(&id, &target, &staging).await;
    }
    let mut names: Vec<String> = OLD.iter().map(|(uid, _, _)| format!("pvc-{uid}")).collect();
    names.sort();
    assert_eq!(d.state_records(), names);
    // The mode the pods relied on is kept.
    for n in &names {
        assert_eq!(
            fs::metadata(d.volume_dir(n)).unwrap().permissions().mode() & 0o7777,
            0o777
        );
    }
}
