//! The per-node attach limit (max_volumes_per_node) counted across backends.

use crate::fake_backend::FakeBackend;
use crate::harness::*;
use ferrovol::backend::registry::DriverKind;
use ferrovol::proto as csi;
use tonic::Code;

async fn publish(s: &mut Served, id: &str, readonly: bool) -> Result<(), tonic::Status> {
    s.controller
        .controller_publish_volume(csi::ControllerPublishVolumeRequest {
            volume_id: id.into(),
            node_id: NODE.into(),
            volume_capability: Some(swr()),
            readonly,
            ..Default::default()
        })
        .await
        .map(drop)
}

async fn unpublish(s: &mut Served, id: &str) {
    s.controller
        .controller_unpublish_volume(csi::ControllerUnpublishVolumeRequest {
            volume_id: id.into(),
            node_id: NODE.into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn limit_counts_both_backends_and_not_republishes() {
    const LIMIT: i64 = 3;
    let mut s = Served::start(
        DriverKind::Local,
        LIMIT,
        vec![
            FakeBackend::node_local("alpha", NODE),
            FakeBackend::node_local("beta", NODE),
            FakeBackend::cluster("shared"),
        ],
    )
    .await;
    let a1 = s.create("alpha", "a1").await;
    let a2 = s.create("alpha", "a2").await;
    let b1 = s.create("beta", "b1").await;
    let b2 = s.create("beta", "b2").await;
    let shared = s.create("shared", "s1").await;

    for id in [&a1, &b1, &a2] {
        publish(&mut s, id, false).await.unwrap();
    }
    let full = publish(&mut s, &b2, false).await.unwrap_err();
    assert_eq!(full.code(), Code::ResourceExhausted, "{full:?}");
    assert!(
        full.message()
            .contains("node node-1 already has 3 volumes published"),
        "{}",
        full.message()
    );
    assert!(
        full.message().contains(&b2),
        "names the volume: {}",
        full.message()
    );
    assert!(
        s.backend("beta").calls_of("controller_publish").len() == 1,
        "the refused publish never reached the backend: {:?}",
        s.backend("beta").calls()
    );
    // Publishing again what is already attached is not a new attachment.
    publish(&mut s, &a1, false).await.unwrap();
    publish(&mut s, &b1, false).await.unwrap();
    // A republish with another readonly flag is still the backend's conflict, not the limit.
    let conflict = publish(&mut s, &a1, true).await.unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists, "{conflict:?}");
    // Volumes without an attach step don't count and are not refused.
    publish(&mut s, &shared, false).await.unwrap();
    // Freeing one slot on alpha makes room for beta's.
    unpublish(&mut s, &a2).await;
    publish(&mut s, &b2, false).await.unwrap();
    let again = publish(&mut s, &a2, false).await.unwrap_err();
    assert_eq!(again.code(), Code::ResourceExhausted, "{again:?}");
    let info = s
        .node
        .node_get_info(csi::NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.max_volumes_per_node, LIMIT);
}

// Several worker threads, so the publishes really race for the gate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_never_overrun_the_limit() {
    const LIMIT: i64 = 2;
    let mut s = Served::start(
        DriverKind::Local,
        LIMIT,
        vec![
            FakeBackend::node_local("alpha", NODE),
            FakeBackend::node_local("beta", NODE),
        ],
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(s.create("alpha", &format!("a{i}")).await);
        ids.push(s.create("beta", &format!("b{i}")).await);
    }
    let calls = ids.iter().map(|id| {
        let mut c = s.controller.clone();
        let id = id.clone();
        async move {
            c.controller_publish_volume(csi::ControllerPublishVolumeRequest {
                volume_id: id,
                node_id: NODE.into(),
                volume_capability: Some(swr()),
                ..Default::default()
            })
            .await
        }
    });
    let results = futures_join(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok as i64, LIMIT, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), Code::ResourceExhausted, "{r:?}");
    }
}

/// Runs the futures concurrently on the runtime and returns their results in order.
async fn futures_join<F, T>(futs: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("publish task"));
    }
    out
}
