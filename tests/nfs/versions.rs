//! The class parameter `nfsvers` and the version each volume keeps: against ganesha serving
//! NFSv3 and NFSv4 with its NFS port on 2049, so the driver can speak either.

use crate::common;
use crate::common::ganesha::{Config, Ganesha};
use crate::common::nfs;
use crate::common::nfs_snap;

use common::*;
use nfs::*;
use nfs_snap::{from, of_volume};
use std::fs;
use tonic::Code;

fn record(g: &Ganesha, key: &str) -> String {
    fs::read_to_string(g.export.join(format!(".ferrovol/volumes/{key}.json"))).unwrap()
}

#[tokio::test]
async fn volumes_keep_the_version_they_were_made_with() {
    if !usable("nfs_versions") {
        return;
    }
    let g = Ganesha::start_with(Config {
        v4_only: false,
        grace: None,
        both_on_2049: true,
    });
    let d = nfs_driver(&g, &[]).await;
    let v3 = class(&g, &[("nfsvers", "3")]);
    let auto = class(&g, &[]);

    let old = create(&d, "made-v3", &v3).await;
    assert_eq!(old.volume_context["nfsvers"], "3");
    assert!(record(&g, "made-v3").contains("\"nfs_vers\": \"3\""));
    let new = create(&d, "made-auto", &auto).await;
    assert_eq!(
        new.volume_context["nfsvers"], "4.1",
        "auto speaks NFSv4.1 where served"
    );
    assert!(record(&g, "made-auto").contains("\"nfs_vers\": \"4.1\""));
    // A repeated create answers from the record, in the record's version.
    let again = create(&d, "made-v3", &v3).await;
    assert_eq!(again.volume_id, old.volume_id);

    // nfsvers and a mount option that disagree: the controller and the node would differ.
    let mut bad = req("bad", &v3);
    bad.volume_capabilities = vec![mount_cap_with(Mode::SingleNodeWriter, &["hard,vers=4.1"])];
    let st = d.controller().create_volume(bad).await.unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    assert!(st.message().contains("disagrees"), "{st:?}");
    // auto follows a mount option.
    let mut follows = req("follows", &auto);
    follows.volume_capabilities = vec![mount_cap_with(Mode::SingleNodeWriter, &["nfsvers=3"])];
    let v = d
        .controller()
        .create_volume(follows)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.volume.as_ref().unwrap().volume_context["nfsvers"], "3");

    // A clone of the NFSv3 volume into an NFSv4.1 class cannot prove its source.
    fs::write(g.export.join(sub_dir(&old)).join("data"), b"x").unwrap();
    let st = d
        .controller()
        .create_volume(from("clone-41", &auto, of_volume(&old.volume_id)))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::FailedPrecondition, "{st:?}");
    assert!(st.message().contains("NFSv3"), "{st:?}");
    let clone = d
        .controller()
        .create_volume(from("clone-3", &v3, of_volume(&old.volume_id)))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(
        fs::read(g.export.join(sub_dir(&clone)).join("data")).unwrap(),
        b"x"
    );

    // Every volume is deleted through its own version's handle proof.
    for v in [&old, &new, &clone, v.volume.as_ref().unwrap()] {
        assert!(g.export.join(sub_dir(v)).is_dir());
        d.delete(&v.volume_id).await;
        assert!(!g.export.join(sub_dir(v)).exists(), "{}", v.volume_id);
    }
    assert!(records(&g).is_empty(), "{:?}", records(&g));
}
