//! ListVolumes across several backends: every page size walks every volume exactly once, in
//! backend order then name order, and tokens resume across the boundary between backends.

use crate::fake_backend::FakeBackend;
use crate::harness::*;
use ferrovol::backend::registry::DriverKind;
use ferrovol::proto as csi;

/// Three backends in this order: 3 node-local volumes, none, 4 cluster volumes.
async fn serve_three() -> (Served, Vec<String>) {
    let mut s = Served::start(
        DriverKind::Local,
        0,
        vec![
            FakeBackend::node_local("alpha", NODE),
            FakeBackend::node_local("empty", NODE),
            FakeBackend::cluster("beta"),
        ],
    )
    .await;
    let mut ids = Vec::new();
    for name in ["a1", "a2", "a3"] {
        ids.push(s.create("alpha", name).await);
    }
    for name in ["b1", "b2", "b3", "b4"] {
        ids.push(s.create("beta", name).await);
    }
    (s, ids)
}

async fn page(s: &mut Served, max: i32, token: &str) -> (Vec<String>, String) {
    let r = s
        .controller
        .list_volumes(csi::ListVolumesRequest {
            max_entries: max,
            starting_token: token.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("ListVolumes max {max} token {token:?}: {e:?}"))
        .into_inner();
    let ids = r
        .entries
        .into_iter()
        .map(|e| e.volume.expect("entry has a volume").volume_id)
        .collect();
    (ids, r.next_token)
}

/// All pages of size `max` from the start, as the CO walks them.
async fn walk(s: &mut Served, max: i32) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let (ids, next) = page(s, max, &token).await;
        pages.push(ids);
        assert!(
            pages.len() <= 20,
            "max {max}: the walk does not end: {pages:?}"
        );
        if next.is_empty() {
            return pages;
        }
        token = next;
    }
}

#[tokio::test]
async fn every_page_size_walks_every_volume_once() {
    let (mut s, all) = serve_three().await;
    assert_eq!(
        walk(&mut s, 0).await,
        vec![all.clone()],
        "max 0 is everything at once"
    );
    for max in 1..=all.len() as i32 + 1 {
        let pages = walk(&mut s, max).await;
        let seen: Vec<String> = pages.concat();
        assert_eq!(seen, all, "max {max}: pages {pages:?}");
        for (i, p) in pages.iter().enumerate() {
            assert!(
                p.len() <= max as usize,
                "max {max}: page {i} has {}",
                p.len()
            );
            // Only the last page may be short; no page is empty.
            if i + 1 < pages.len() {
                assert_eq!(
                    p.len(),
                    max as usize,
                    "max {max}: short page {i} of {pages:?}"
                );
            }
            assert!(!p.is_empty(), "max {max}: empty page {i} of {pages:?}");
        }
    }
}

#[tokio::test]
async fn a_page_that_ends_a_backend_resumes_in_the_next() {
    let (mut s, all) = serve_three().await;
    // alpha holds exactly 3: the first page ends with it, the token must lead into beta.
    let (first, token) = page(&mut s, 3, "").await;
    assert_eq!(first, all[..3]);
    assert!(!token.is_empty(), "beta's volumes follow; a token is due");
    let (second, _) = page(&mut s, 3, &token).await;
    assert_eq!(second, all[3..6]);
}

#[tokio::test]
async fn tokens_survive_volumes_coming_and_going() {
    let (mut s, all) = serve_three().await;
    let (first, token) = page(&mut s, 2, "").await;
    assert_eq!(first, all[..2]);
    // The volume the token names is deleted, and new ones appear on both sides of it.
    s.controller
        .delete_volume(csi::DeleteVolumeRequest {
            volume_id: all[1].clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let early = s.create("alpha", "a0").await;
    let late = s.create("beta", "b5").await;
    let mut rest = Vec::new();
    let mut token = token;
    while !token.is_empty() {
        let (ids, next) = page(&mut s, 2, &token).await;
        rest.extend(ids);
        token = next;
    }
    let mut want: Vec<String> = all[2..].to_vec();
    want.push(late);
    assert_eq!(
        rest, want,
        "resumed after the deleted one, {early} is before the token"
    );
}
