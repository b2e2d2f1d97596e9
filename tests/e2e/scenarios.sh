# Sourced by scripts/e2e.sh: the scenarios. Each prints `ok NAME` or `FAIL NAME: why` and
# returns non-zero on failure; scripts/e2e.sh counts them.
#
# Node A (NODE_SMALL) has a tiny hostpath base, node B (NODE_BIG) a larger one, so a claim too
# big for A must be steered to B by CSIStorageCapacity.

CLASS=ferrovol-hostpath
TOPO=topology.ferrovol.io/node
SMALL_CLAIM=16Mi
BIG_CLAIM=200Mi

k() { "$BIN/kubectl" "$@"; }
fail() {
    echo "FAIL $SCENARIO: $*"
    return 1
}

# bytes QUANTITY: a Kubernetes quantity (plain, Ki/Mi/Gi, k/M/G) in bytes.
bytes() {
    local q=$1
    case $q in
    *Ki) echo $((${q%Ki} * 1024)) ;;
    *Mi) echo $((${q%Mi} * 1024 ** 2)) ;;
    *Gi) echo $((${q%Gi} * 1024 ** 3)) ;;
    *k) echo $((${q%k} * 1000)) ;;
    *M) echo $((${q%M} * 1000 ** 2)) ;;
    *G) echo $((${q%G} * 1000 ** 3)) ;;
    *) echo "$q" ;;
    esac
}

# capacity NODE: the capacity the ferrovol-hostpath CSIStorageCapacity of NODE reports, in bytes
# (fails when there is no such object).
capacity() {
    local q
    q=$(k -n ferrovol get csistoragecapacities -o json |
        jq -r --arg c "$CLASS" --arg t "$TOPO" --arg n "$1" \
            '[.items[] | select(.storageClassName == $c and .nodeTopology.matchLabels[$t] == $n)
              | .capacity] | if length == 1 then .[0] else empty end')
    [ -n "$q" ] && [ "$q" != null ] && bytes "$q"
}

# claim_and_pod NAME SIZE: a PVC on the hostpath class and a Pod that mounts it.
claim_and_pod() {
    k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $1, namespace: default}
spec:
  storageClassName: $CLASS
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: $2}}
---
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: default}
spec:
  automountServiceAccountToken: false
  containers:
    - {name: app, image: "registry.k8s.io/pause:3.10", volumeMounts: [{name: data, mountPath: /data}]}
  volumes:
    - {name: data, persistentVolumeClaim: {claimName: $1}}
EOF
}

pvc_bound() { [ "$(k -n default get pvc "$1" -o jsonpath='{.status.phase}')" = Bound ]; }
pod_node() { k -n default get pod "$1" -o jsonpath='{.spec.nodeName}'; }
pod_scheduled() { [ -n "$(pod_node "$1")" ]; }
pv_of() { k -n default get pvc "$1" -o jsonpath='{.spec.volumeName}'; }

# check_placed NAME: the claim NAME is Bound, its Pod scheduled, and the PV pinned to the Pod's
# node, where the volume directory exists (and on no other node). Prints the node.
check_placed() {
    local name=$1 node pv affinity handle other
    # The scheduler binds the Pod only once its claim is Bound (VolumeBinding PreBind).
    wait_for 180 "pvc $name to be Bound" pvc_bound "$name" || fail "pvc $name never Bound" || return 1
    wait_for 60 "pod $name to be scheduled" pod_scheduled "$name" || fail "pod $name never scheduled" || return 1
    node=$(pod_node "$name")
    pv=$(pv_of "$name")
    [ "$(k -n default get pvc "$name" -o jsonpath='{.metadata.annotations.volume\.kubernetes\.io/selected-node}')" = "$node" ] ||
        fail "pvc $name: selected-node is not the pod's node $node" || return 1
    affinity=$(k get pv "$pv" -o json | jq -c '.spec.nodeAffinity.required.nodeSelectorTerms')
    [ "$affinity" = "[{\"matchExpressions\":[{\"key\":\"$TOPO\",\"operator\":\"In\",\"values\":[\"$node\"]}]}]" ] ||
        fail "pv $pv: node affinity $affinity, want $TOPO in [$node]" || return 1
    handle=$(k get pv "$pv" -o jsonpath='{.spec.csi.volumeHandle}')
    [ -d "$(node_base "$node")/$pv" ] || fail "pv $pv ($handle): no directory on $node's base" || return 1
    for other in "${NODES[@]}"; do
        [ "$other" = "$node" ] && continue
        [ ! -e "$(node_base "$other")/$pv" ] || fail "pv $pv: also provisioned on $other" || return 1
    done
    echo "$node"
}

# a) PVC + Pod: the scheduler picks a node, that node's provisioner provisions, and kubelet's
#    NodeStage/NodePublish make the volume usable in the pod's directory.
scenario_pod_ready() {
    SCENARIO="a) hostpath PVC + Pod to a usable volume"
    claim_and_pod e2e-a "$SMALL_CLAIM" || fail "cannot create the claim and pod" || return 1
    local node pv handle uid target
    node=$(check_placed e2e-a) || { echo "$node"; return 1; }
    pv=$(pv_of e2e-a)
    handle=$(k get pv "$pv" -o jsonpath='{.spec.csi.volumeHandle}')
    uid=$(k -n default get pod e2e-a -o jsonpath='{.metadata.uid}')
    target=$(kubelet_publish "$node" "$uid" "$pv" "$handle") ||
        fail "NodeStage/NodePublish of $handle on $node failed (logs/ctl.log)" || return 1
    mountpoint -q "$target" || fail "$target is not a mount point after NodePublish" || return 1
    echo "written by the pod" >"$target/hello" || fail "cannot write into $target" || return 1
    [ "$(cat "$(node_base "$node")/$pv/hello" 2>/dev/null)" = "written by the pod" ] ||
        fail "a file written at $target is not in the volume directory on $node" || return 1
    kubelet_unpublish "$node" "$handle" "$target" || fail "NodeUnpublish/Unstage of $handle failed" || return 1
    ! mountpoint -q "$target" || fail "$target still mounted after NodeUnpublish" || return 1
    echo "ok $SCENARIO (node $node, $pv)"
}

# b) One CSIStorageCapacity per node and class, owned by the node DaemonSet, sized by the node's
#    base filesystem.
scenario_capacity() {
    SCENARIO="b) CSIStorageCapacity per node and class"
    local n c owner
    for n in "${NODES[@]}"; do
        wait_for 120 "capacity of $n" capacity "$n" || fail "no $CLASS capacity object for $n" || return 1
        c=$(capacity "$n")
        [ "$c" -gt 0 ] || fail "$n reports capacity $c" || return 1
    done
    owner=$(k -n ferrovol get csistoragecapacities -o json | jq -r '[.items[].metadata.ownerReferences[0].kind] | unique | join(",")')
    [ "$owner" = DaemonSet ] || fail "capacity objects owned by '$owner', want the DaemonSet" || return 1
    echo "ok $SCENARIO ($(for n in "${NODES[@]}"; do printf '%s=%s ' "$n" "$(capacity "$n")"; done))"
}

# c) WaitForFirstConsumer with two nodes: claims too big for the small node go to the big one,
#    provisioned only there, and the big node's capacity shrinks by what they reserve.
scenario_steering() {
    SCENARIO="c) capacity steers pods to the node with room"
    local want small big before after i node
    want=$(bytes "$BIG_CLAIM")
    small=$(capacity "$NODE_SMALL") || fail "no capacity for $NODE_SMALL" || return 1
    big=$(capacity "$NODE_BIG") || fail "no capacity for $NODE_BIG" || return 1
    [ "$small" -lt "$want" ] && [ "$big" -ge $((2 * want)) ] ||
        fail "setup: $NODE_SMALL has $small, $NODE_BIG has $big bytes for two claims of $want" || return 1
    before=$big
    for i in 1 2; do claim_and_pod "e2e-c$i" "$BIG_CLAIM" || fail "cannot create claim e2e-c$i" || return 1; done
    for i in 1 2; do
        node=$(check_placed "e2e-c$i") || { echo "$node"; return 1; }
        [ "$node" = "$NODE_BIG" ] || fail "e2e-c$i placed on $node, which lacks room" || return 1
    done
    shrunk() { after=$(capacity "$NODE_BIG") && [ "$after" -le $((before - 2 * want)) ]; }
    wait_for 60 "$NODE_BIG's capacity to shrink" shrunk ||
        fail "$NODE_BIG capacity $(capacity "$NODE_BIG") after two claims, was $before" || return 1
    echo "ok $SCENARIO (both on $NODE_BIG; capacity $before -> $after)"
}

# d) Deleting the pods and claims deletes the volumes (reclaimPolicy Delete): the PV objects go
#    and so do the directories on the nodes.
scenario_delete() {
    SCENARIO="d) PVC delete removes the volume"
    local claims=() pvs=() nodes=() c i
    for c in e2e-a e2e-c1 e2e-c2; do
        k -n default get pvc "$c" >/dev/null 2>&1 || continue
        claims+=("$c")
        pvs+=("$(pv_of "$c")")
        nodes+=("$(pod_node "$c")")
        [ -n "${pvs[-1]}" ] && [ -n "${nodes[-1]}" ] || fail "claim $c was never bound and placed" || return 1
    done
    [ ${#claims[@]} -gt 0 ] || fail "no claims left from the earlier scenarios" || return 1
    # No kubelet confirms a graceful pod deletion: delete the pods at once.
    k -n default delete pod "${claims[@]}" --grace-period=0 --force --wait=false >/dev/null 2>&1
    k -n default delete pvc "${claims[@]}" --wait=false >/dev/null ||
        fail "cannot delete ${claims[*]}" || return 1
    for i in "${!claims[@]}"; do
        wait_for 180 "pv ${pvs[i]} to go" bash -c "! '$BIN/kubectl' get pv '${pvs[i]}'" ||
            fail "pv ${pvs[i]} of ${claims[i]} still exists" || return 1
        [ ! -e "$(node_base "${nodes[i]}")/${pvs[i]}" ] ||
            fail "directory of ${pvs[i]} still on ${nodes[i]}" || return 1
    done
    echo "ok $SCENARIO (${#claims[@]} volumes)"
}
