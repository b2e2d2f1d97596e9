//! Expansion of node-local volumes without a node-deployed resizer: the cluster's one resizer
//! reaches a ferrovol that does not hold the volume; it answers "the node does it", and the
//! volume's own node grows it in NodeExpandVolume.

use crate::common;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_controller_defers_and_the_owning_node_grows() {
    let d = Driver::start().await;
    // A volume of another node, as the central resizer's ferrovol sees it.
    let foreign = "hostpath/some-other-node/pvc-1";
    let r = d
        .controller()
        .controller_expand_volume(expand_req(foreign, 40 * MIB))
        .await
        .expect("a foreign node's volume defers its expansion to that node")
        .into_inner();
    assert_eq!(r.capacity_bytes, 40 * MIB);
    assert!(r.node_expansion_required);

    // On the owning node, NodeExpandVolume does the growth itself.
    let (id, staging, target) = d.create_published("grow", 16 * MIB, mount_cap()).await;
    let r = d
        .node()
        .node_expand_volume(node_expand_req(&id, &target, 40 * MIB))
        .await
        .expect("NodeExpandVolume grows a volume the controller could not reach")
        .into_inner();
    assert_eq!(r.capacity_bytes, 40 * MIB);
    let vol = d.get(&id).await.volume.unwrap();
    assert_eq!(
        vol.capacity_bytes,
        40 * MIB,
        "the record holds the new size"
    );
    // Repeating it is a no-op at the new size.
    let again = d
        .node()
        .node_expand_volume(node_expand_req(&id, &target, 40 * MIB))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.capacity_bytes, 40 * MIB);
    d.tear_down(&id, &target, &staging).await;
    d.assert_nothing_leaked(&[]);
}
