# Sourced by scripts/e2e.sh: hostpath snapshots through the VolumeSnapshot API.
#
# external-snapshotter v8.7.0 builds here (scripts/e2e-build.sh): snapshot-controller runs with
# upstream's RBAC and --enable-distributed-snapshotting (so it labels each VolumeSnapshotContent
# with the node that holds the volume), and every fake node runs a node-deployed csi-snapshotter
# (--node-deployment, NODE_NAME; the flag exists since v8.1) with the ferrovol-node
# ServiceAccount's token, as the chart's snapshots section does. The VolumeSnapshotClass is the
# chart's (snapshots.enabled=true).
#
# A restore must land on the node that holds the snapshot; the scheduler does not know that, so
# the restoring Pod is pinned there with a nodeSelector, as a user of local snapshots would.
#
# Needs: BIN (with snapshot-manifests), the cluster.sh, nodes.sh, scenarios.sh, nfs.sh functions.

SNAP_MANIFESTS=$BIN/snapshot-manifests
SNAP_CLASS=ferrovol-local

# snapshot_crds: the snapshot.storage.k8s.io CRDs (before the chart's VolumeSnapshotClasses).
snapshot_crds() {
    local f args=()
    for f in "$SNAP_MANIFESTS"/snapshot.storage.k8s.io_*.yaml; do args+=(-f "$f"); done
    k apply "${args[@]}" >/dev/null || return 1
    local crd
    for crd in volumesnapshotclasses volumesnapshotcontents volumesnapshots; do
        k wait --for condition=Established --timeout 60s "crd/$crd.snapshot.storage.k8s.io" >/dev/null || return 1
    done
}

# snapshots_up: snapshot-controller as its own ServiceAccount, and a csi-snapshotter per node.
snapshots_up() {
    k apply -f "$SNAP_MANIFESTS/rbac-snapshot-controller.yaml" \
        -f tests/e2e/manifests/snapshot-controller-nodes.yaml >/dev/null || return 1
    local token n d
    token=$(k -n kube-system create token snapshot-controller --duration 2h) || return 1
    kubeconfig "$E2E_DIR/snapshot-controller.kubeconfig" --token "$token"
    start snapshot-controller env KUBECONFIG="$E2E_DIR/snapshot-controller.kubeconfig" \
        "$BIN/snapshot-controller" --kubeconfig "$E2E_DIR/snapshot-controller.kubeconfig" \
        --leader-election=false --enable-distributed-snapshotting=true -v=4
    for n in "${NODES[@]}"; do
        d=$(node_dir "$n")
        sa_kubeconfig ferrovol-node "$d/snapshotter.kubeconfig" || return 1
        start "csi-snapshotter-$n" env NODE_NAME="$n" KUBECONFIG="$d/snapshotter.kubeconfig" \
            "$BIN/csi-snapshotter" --csi-address "$(node_socket "$n")" \
            --kubeconfig "$d/snapshotter.kubeconfig" --node-deployment=true --timeout=300s -v=4
    done
}

snapshot_ready() {
    [ "$(k -n default get volumesnapshot "$1" -o jsonpath='{.status.readyToUse}')" = true ]
}

# i) A VolumeSnapshot of a hostpath claim becomes readyToUse (made by the csi-snapshotter of the
#    volume's node), and a claim restored from it on that node holds the content of the moment
#    of the snapshot, not what was written after.
scenario_snapshot_restore() {
    SCENARIO="i) hostpath VolumeSnapshot and restore to a new claim"
    local c=e2e-s r=e2e-s-restore node pv handle uid target content managed rnode rpv rhandle rtarget
    claim_and_pod "$c" 16Mi || fail "cannot create claim and pod $c" || return 1
    node=$(check_placed "$c") || { echo "$node"; return 1; }
    pv=$(pv_of "$c")
    handle=$(k get pv "$pv" -o jsonpath='{.spec.csi.volumeHandle}')
    uid=$(k -n default get pod "$c" -o jsonpath='{.metadata.uid}')
    target=$(kubelet_publish "$node" "$uid" "$pv" "$handle") ||
        fail "NodeStage/NodePublish of $handle failed (logs/ctl.log)" || return 1
    echo "before the snapshot" >"$target/data" || fail "cannot write into $target" || return 1

    k apply -f - >/dev/null <<EOF || fail "cannot create VolumeSnapshot $c" || return 1
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: $c, namespace: default}
spec:
  volumeSnapshotClassName: $SNAP_CLASS
  source: {persistentVolumeClaimName: $c}
EOF
    wait_for 120 "VolumeSnapshot $c to be readyToUse" snapshot_ready "$c" ||
        fail "VolumeSnapshot $c not readyToUse: $(k -n default get volumesnapshot "$c" -o jsonpath='{.status}') (logs/snapshot-controller.log, logs/csi-snapshotter-$node.log)" ||
        return 1
    content=$(k -n default get volumesnapshot "$c" -o jsonpath='{.status.boundVolumeSnapshotContentName}')
    managed=$(k get volumesnapshotcontent "$content" -o jsonpath='{.metadata.labels.snapshot\.storage\.kubernetes\.io/managed-by}')
    [ "$managed" = "$node" ] || fail "content $content managed by '$managed', want $node" || return 1
    echo "after the snapshot" >"$target/data"
    kubelet_unpublish "$node" "$handle" "$target" || fail "NodeUnpublish of $handle failed" || return 1

    k apply -f - >/dev/null <<EOF || fail "cannot create the restore claim $r" || return 1
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $r, namespace: default}
spec:
  storageClassName: $CLASS
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 16Mi}}
  dataSource: {apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: $c}
---
apiVersion: v1
kind: Pod
metadata: {name: $r, namespace: default}
spec:
  automountServiceAccountToken: false
  nodeSelector: {kubernetes.io/hostname: $node}
  containers:
    - {name: app, image: "registry.k8s.io/pause:3.10", volumeMounts: [{name: data, mountPath: /data}]}
  volumes:
    - {name: data, persistentVolumeClaim: {claimName: $r}}
EOF
    rnode=$(check_placed "$r") || { echo "$rnode"; return 1; }
    [ "$rnode" = "$node" ] || fail "restore placed on $rnode, the snapshot is on $node" || return 1
    rpv=$(pv_of "$r")
    rhandle=$(k get pv "$rpv" -o jsonpath='{.spec.csi.volumeHandle}')
    uid=$(k -n default get pod "$r" -o jsonpath='{.metadata.uid}')
    rtarget=$(kubelet_publish "$node" "$uid" "$rpv" "$rhandle") ||
        fail "NodeStage/NodePublish of $rhandle failed (logs/ctl.log)" || return 1
    [ "$(cat "$rtarget/data" 2>/dev/null)" = "before the snapshot" ] ||
        fail "restored $rhandle holds '$(cat "$rtarget/data" 2>/dev/null)', want 'before the snapshot'" || return 1
    kubelet_unpublish "$node" "$rhandle" "$rtarget" || fail "NodeUnpublish of $rhandle failed" || return 1

    # Clean up through the API: the snapshot content goes (deletionPolicy Delete), then the PVs.
    k -n default delete pod "$c" "$r" --grace-period=0 --force --wait=false >/dev/null 2>&1
    k -n default delete pvc "$r" --wait=false >/dev/null
    k -n default delete volumesnapshot "$c" --wait=false >/dev/null
    wait_for 120 "content $content to go" bash -c "! '$BIN/kubectl' get volumesnapshotcontent '$content'" ||
        fail "VolumeSnapshotContent $content still exists after its snapshot was deleted" || return 1
    k -n default delete pvc "$c" --wait=false >/dev/null
    wait_for 120 "pvs $pv $rpv to go" bash -c "! '$BIN/kubectl' get pv '$pv' && ! '$BIN/kubectl' get pv '$rpv'" ||
        fail "pv $pv or $rpv still exists" || return 1
    echo "ok $SCENARIO (on $node: snapshot $content managed by $node, restored $rhandle with the old content)"
}
