# Sourced by scripts/e2e.sh: volume expansion through a PVC edit, with csi-resizer.
#
# NFS: the csi-resizer beside the NFS controller (nfs.sh) calls ControllerExpandVolume, which
# records the new size on the export; no node step.
# hostpath: as the chart's templates/local-resizer.yaml does, one csi-resizer (the
# ferrovol-local-resizer ServiceAccount) beside a ferrovol controller that holds no volumes
# (--node-id _local-resizer): ControllerExpandVolume answers node_expansion_required, and kubelet
# of the volume's node then calls NodeExpandVolume. There is no kubelet, so the harness does its
# part: NodeExpandVolume over the node's socket (`ferrovol ctl node-expand`) and the PVC status
# update kubelet makes afterwards.
#
# Needs: the cluster.sh, nodes.sh, scenarios.sh and nfs.sh functions.

RESIZER_DIR=$E2E_DIR/local-resizer
NFS_GROWN=64Mi
HOSTPATH_CLAIM=16Mi
HOSTPATH_GROWN=32Mi

resizer_socket() { echo "$RESIZER_DIR/csi.sock"; }

# expand_up: the local resizer pod's two processes.
expand_up() {
    mkdir -p "$RESIZER_DIR"
    start ferrovol-local-resizer "$FERROVOL" serve --driver local --backends hostpath \
        --roles controller --node-id _local-resizer --endpoint "unix://$(resizer_socket)" \
        --data-dir "$RESIZER_DIR/data"
    wait_for 60 "the local resizer's socket" test -S "$(resizer_socket)" || return 1
    sa_kubeconfig ferrovol-local-resizer "$RESIZER_DIR/kubeconfig" || return 1
    start csi-resizer-local env KUBECONFIG="$RESIZER_DIR/kubeconfig" \
        "$BIN/csi-resizer" --csi-address "$(resizer_socket)" --kubeconfig "$RESIZER_DIR/kubeconfig" \
        --leader-election=true --leader-election-namespace=ferrovol --timeout=30s -v=4
}

# pvc_field NS NAME JSONPATH
pvc_field() { k -n "$1" get pvc "$2" -o jsonpath="$3"; }

# f) NFS: edit the claim's size; the PV, the claim's capacity and the record on the export grow.
scenario_expand_nfs() {
    SCENARIO="f) NFS expansion through a PVC edit"
    local c=nfs-delete pv rec want got
    pv=$(nfs_pv_of "$c")
    [ -n "$pv" ] || fail "claim $NFS_NS/$c is not bound (scenario e)" || return 1
    want=$(bytes "$NFS_GROWN")
    k -n "$NFS_NS" patch pvc "$c" --type merge \
        -p "{\"spec\":{\"resources\":{\"requests\":{\"storage\":\"$NFS_GROWN\"}}}}" >/dev/null ||
        fail "cannot edit $c's size" || return 1
    grown() { [ "$(pvc_field "$NFS_NS" "$c" '{.status.capacity.storage}')" = "$NFS_GROWN" ]; }
    wait_for 60 "$c's capacity to reach $NFS_GROWN" grown ||
        fail "$c capacity $(pvc_field "$NFS_NS" "$c" '{.status.capacity.storage}'), want $NFS_GROWN (logs/csi-resizer-nfs.log)" || return 1
    [ "$(k get pv "$pv" -o jsonpath='{.spec.capacity.storage}')" = "$NFS_GROWN" ] ||
        fail "pv $pv capacity not $NFS_GROWN" || return 1
    rec=$(nfs_record "$pv")
    got=$(jq -r .capacity_bytes "$rec" 2>/dev/null)
    [ "$got" = "$want" ] || fail "record $rec says $got bytes, want $want" || return 1
    echo "ok $SCENARIO ($c: $NFS_CLAIM -> $NFS_GROWN; record on the export: $got bytes)"
}

# h) hostpath: edit the claim's size; the resizer defers to the node, the harness does kubelet's
#    NodeExpandVolume there, and the node's record and the volume's stats follow.
scenario_expand_hostpath() {
    SCENARIO="h) hostpath expansion through a PVC edit (controller defers, NodeExpandVolume)"
    local c=e2e-g node pv handle uid target want pending total listed
    want=$(bytes "$HOSTPATH_GROWN")
    claim_and_pod "$c" "$HOSTPATH_CLAIM" || fail "cannot create claim and pod $c" || return 1
    node=$(check_placed "$c") || { echo "$node"; return 1; }
    pv=$(pv_of "$c")
    handle=$(k get pv "$pv" -o jsonpath='{.spec.csi.volumeHandle}')
    uid=$(k -n default get pod "$c" -o jsonpath='{.metadata.uid}')
    target=$(kubelet_publish "$node" "$uid" "$pv" "$handle") ||
        fail "NodeStage/NodePublish of $handle failed (logs/ctl.log)" || return 1

    k -n default patch pvc "$c" --type merge \
        -p "{\"spec\":{\"resources\":{\"requests\":{\"storage\":\"$HOSTPATH_GROWN\"}}}}" >/dev/null ||
        fail "cannot edit $c's size" || return 1
    # The resizer's half: the PV grows and the claim waits for the node (NodeResizePending).
    node_pending() {
        [ "$(k get pv "$pv" -o jsonpath='{.spec.capacity.storage}')" = "$HOSTPATH_GROWN" ] &&
            [ "$(pvc_field default "$c" '{.status.allocatedResourceStatuses.storage}')" = NodeResizePending ]
    }
    wait_for 60 "pv $pv to grow and $c to wait for the node" node_pending ||
        fail "after the edit: pv $(k get pv "$pv" -o jsonpath='{.spec.capacity.storage}'), claim status $(pvc_field default "$c" '{.status.allocatedResourceStatuses}') (logs/csi-resizer-local.log)" ||
        return 1
    pending=$(pvc_field default "$c" '{.status.capacity.storage}')
    # kubelet's half, on the volume's node.
    "$FERROVOL" ctl --endpoint "unix://$(node_socket "$node")" --data-dir "$(node_kubelet "$node")" \
        node-expand "$handle" "$want" "$target" >>"$E2E_DIR/logs/ctl.log" 2>&1 ||
        fail "NodeExpandVolume of $handle on $node failed (logs/ctl.log)" || return 1
    k -n default patch pvc "$c" --subresource=status --type merge -p "{\"status\":{
        \"capacity\":{\"storage\":\"$HOSTPATH_GROWN\"},\"allocatedResourceStatuses\":null,\"conditions\":null}}" >/dev/null ||
        fail "cannot record the node resize in $c's status" || return 1
    [ "$(pvc_field default "$c" '{.status.capacity.storage}')" = "$HOSTPATH_GROWN" ] ||
        fail "$c capacity not $HOSTPATH_GROWN" || return 1
    listed=$("$FERROVOL" ctl --endpoint "unix://$(node_socket "$node")" list |
        awk -v h="$handle" '$1 == h {print $2}')
    [ "$listed" = "$want" ] || fail "$node's record of $handle says ${listed:-nothing}, want $want" || return 1
    total=$("$FERROVOL" ctl --endpoint "unix://$(node_socket "$node")" stats "$handle" "$target" |
        sed -n 's/^bytes: total=\([0-9]*\) .*/\1/p')
    [ "$total" = "$want" ] || fail "NodeGetVolumeStats of $handle: total ${total:-none}, want $want" || return 1
    kubelet_unpublish "$node" "$handle" "$target" || fail "NodeUnpublish of $handle failed" || return 1
    k -n default delete pod "$c" --grace-period=0 --force --wait=false >/dev/null 2>&1
    k -n default delete pvc "$c" --wait=false >/dev/null
    wait_for 120 "pv $pv to go" bash -c "! '$BIN/kubectl' get pv '$pv'" || fail "pv $pv still exists" || return 1
    echo "ok $SCENARIO ($c on $node: $HOSTPATH_CLAIM -> $HOSTPATH_GROWN; claim showed $pending until the node step; record and stats $want bytes)"
}
