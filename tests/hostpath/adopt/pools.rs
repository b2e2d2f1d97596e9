//! Adoption on a node with hostpath pools: a directory becomes a volume of the pool whose
//! filesystem holds it; one on no pool's filesystem is refused, naming the pools.

use super::*;
use tonic::Code;

fn mount_tmpfs(at: &Path) {
    fs::create_dir_all(at).unwrap();
    run(
        "mount",
        &[
            "-t".as_ref(),
            "tmpfs".as_ref(),
            "tmpfs".as_ref(),
            at.as_os_str(),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_joins_the_pool_on_its_filesystem() {
    let b = Driver::builder();
    let fast = b.path().join("fast");
    mount_tmpfs(&fast);
    fs::create_dir(fast.join("pool")).unwrap();
    let other = b.path().join("other");
    mount_tmpfs(&other);
    let d = b
        .arg("--hostpath-pool")
        .arg(format!("fast={}", fast.join("pool").display()))
        .start()
        .await;

    let on_fast = fast.join("old-data");
    make_data_dir(&on_fast, "fast");
    let r = adopt(&d, &on_fast, "in-fast", 64 * MIB)
        .await
        .expect("adopt on the fast pool");
    assert_eq!(r.volume_id, d.volume_id("in-fast"));
    assert_data(&fast.join("pool/in-fast"), "fast");
    let on_default = outside_dir(&d, "slow");
    adopt(&d, &on_default, "in-default", 64 * MIB)
        .await
        .expect("adopt on the default pool");
    assert_data(&d.volume_dir("in-default"), "slow");

    let live = ferrovol::state::journal::peek(&d.state_dir().join("journal")).unwrap();
    assert!(
        live.contains_key("hostpath@fast/in-fast"),
        "{:?}",
        live.keys().collect::<Vec<_>>()
    );
    assert!(live.contains_key("hostpath/in-default"));
    assert!(
        !live.keys().any(|k| k.starts_with("hostpath-adopt")),
        "intents left"
    );

    // Names are unique across pools.
    let again = outside_dir(&d, "again");
    let s = adopt(&d, &again, "in-fast", 64 * MIB)
        .await
        .expect_err("name taken");
    assert_eq!(s.code(), Code::AlreadyExists, "{s:?}");

    // A third filesystem is no pool's.
    let elsewhere = other.join("data");
    make_data_dir(&elsewhere, "other");
    let s = adopt(&d, &elsewhere, "nowhere", 64 * MIB)
        .await
        .expect_err("no pool");
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert!(
        s.message()
            .contains("lies on no hostpath pool's filesystem"),
        "{s:?}"
    );
    assert!(s.message().contains("fast at"), "names the pools: {s:?}");
    assert_untouched(&elsewhere, "other");
    // A pool's path, or a parent of it, is refused.
    let s = adopt(&d, &fast, "whole", 64 * MIB)
        .await
        .expect_err("a pool's parent");
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");

    // Published through its pool.
    let id = d.volume_id("in-fast");
    let (staging, target) = d.stage_and_publish(&id, "in-fast", mount_cap()).await;
    assert_data(&target, "fast");
    d.unpublish_and_unstage(&id, &target, &staging).await;
}
