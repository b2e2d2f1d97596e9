# Sourced by tests/e2e/realnodes.sh: hostpath pools on real nodes (docs/install.md, "Hostpath
# pools"). The chart is installed with two pools on the first node only, `small` and `big` below
# /var/lib/ferrovol/pools, and a class for each (ferrovol-small, ferrovol-big); their paths are
# missing until the scenario mounts a tmpfs of each size there.

RN_POOLS_VALUES=$E2E_DIR/pools-values.yaml
RN_POOLS_DIR=/var/lib/ferrovol/pools

# rn_pools_values: the chart values of the pools and their classes.
rn_pools_values() {
    cat >"$RN_POOLS_VALUES" <<EOF
local:
  hostpath:
    pools:
      nodes:
        - name: ${NODES[0]}
          pools: {small: $RN_POOLS_DIR/small, big: $RN_POOLS_DIR/big}
storageClasses:
  hostpath:
    additional:
      - {name: ferrovol-small, pool: small}
      - {name: ferrovol-big, pool: big}
EOF
}

# class_capacity CLASS NODE: bytes the CSIStorageCapacity of CLASS on NODE reports.
class_capacity() {
    local q
    q=$(k -n ferrovol get csistoragecapacities -o json |
        jq -r --arg c "$1" --arg n "$2" \
            '[.items[] | select(.storageClassName == $c
                and .nodeTopology.matchLabels["topology.ferrovol.io/node"] == $n) | .capacity]
             | if length == 1 then .[0] else empty end')
    [ -n "$q" ] && [ "$q" != null ] || return 1
    case $q in
    *Ki) echo $((${q%Ki} * 1024)) ;;
    *Mi) echo $((${q%Mi} * 1024 ** 2)) ;;
    *Gi) echo $((${q%Gi} * 1024 ** 3)) ;;
    *) echo "$q" ;;
    esac
}
# capacity_within CLASS NODE LOW HIGH: LOW < capacity <= HIGH (bytes).
capacity_within() {
    local c
    c=$(class_capacity "$1" "$2") || return 1
    [ "$c" -gt "$3" ] && [ "$c" -le "$4" ]
}

# pool_claim_and_pod NAME CLASS SIZE: a claim of CLASS and a pod using it, on whatever node the
# scheduler picks (it sees capacity for the class on the first node only).
pool_claim_and_pod() {
    k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $1, namespace: default}
spec:
  storageClassName: $2
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: $3}}
---
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: default}
spec:
  terminationGracePeriodSeconds: 1
  automountServiceAccountToken: false
  containers:
    - name: app
      image: $(image_ref busybox)
      imagePullPolicy: Never
      command: [sh, -c, "trap 'exit 0' TERM; while :; do sleep 1; done"]
      volumeMounts: [{name: data, mountPath: /data}]
  volumes:
    - name: data
      persistentVolumeClaim: {claimName: $1}
EOF
}

# rn_pools_unmount: the pools' tmpfs unmounted and their mount points removed (missing again).
rn_pools_unmount() {
    in_node "${NODES[0]}" sh -c "for p in small big; do umount $RN_POOLS_DIR/\$p; rmdir $RN_POOLS_DIR/\$p; done" 2>/dev/null
    return 0
}

# Two classes whose pools differ in size on one node: while the pools' disks are missing both
# classes report no capacity there; once mounted (no restart), each class's CSIStorageCapacity
# is its own pool's size, each claim lands in its own pool on that node (the other node has
# neither pool, so no capacity), and each class's capacity drops by its own claim.
scenario_pools() {
    SCENARIO="real nodes: two hostpath pools of different sizes, a class each, capacity per pool"
    local a=${NODES[0]} b=${NODES[1]} mib=$((1 << 20)) n pv path
    { capacity_within ferrovol-small "$a" -1 0 && capacity_within ferrovol-big "$a" -1 0; } ||
        fail "missing pools do not report zero capacity" || return 1
    capacity_within ferrovol-big "$b" -1 0 || fail "a node without the pool reports capacity" || return 1
    in_node "$a" sh -c "mkdir -p $RN_POOLS_DIR/small $RN_POOLS_DIR/big &&
        mount -t tmpfs -o size=64m tmpfs $RN_POOLS_DIR/small &&
        mount -t tmpfs -o size=256m tmpfs $RN_POOLS_DIR/big" || fail "cannot mount the pools" || return 1
    # The provisioner polls GetCapacity once a minute; the pools are picked up at that call.
    wait_for 150 "ferrovol-small's capacity on $a" capacity_within ferrovol-small "$a" $((48 * mib)) $((64 * mib)) ||
        fail "ferrovol-small reports $(class_capacity ferrovol-small "$a"), not its 64 MiB pool" || return 1
    wait_for 60 "ferrovol-big's capacity on $a" capacity_within ferrovol-big "$a" $((192 * mib)) $((256 * mib)) ||
        fail "ferrovol-big reports $(class_capacity ferrovol-big "$a"), not its 256 MiB pool" || return 1
    # 100 MiB is more than the small pool holds: only the big pool's class can take it.
    { pool_claim_and_pod rn-pool-small ferrovol-small 16Mi && pool_claim_and_pod rn-pool-big ferrovol-big 100Mi; } ||
        fail "cannot create the claims" || return 1
    for n in small big; do
        wait_for 120 "pod rn-pool-$n Ready" pod_running "rn-pool-$n" || fail "pod rn-pool-$n not Ready" || return 1
        [ "$(k -n default get pod "rn-pool-$n" -o jsonpath='{.spec.nodeName}')" = "$a" ] ||
            fail "rn-pool-$n was not scheduled to $a, the node with the pool" || return 1
        pv=$(pv_of_claim "rn-pool-$n")
        path=$(k get pv "$pv" -o jsonpath='{.spec.csi.volumeAttributes.ferrovol\.io/path}')
        [ "$path" = "$RN_POOLS_DIR/$n/$pv" ] || fail "rn-pool-$n's volume is at $path, not in pool $n" || return 1
        { in_pod "rn-pool-$n" "echo $n >/data/f && sync" && in_node "$a" test -f "$path/f"; } ||
            fail "rn-pool-$n's data is not in its pool's directory" || return 1
    done
    wait_for 150 "ferrovol-big's capacity to drop by its claim" \
        capacity_within ferrovol-big "$a" $((92 * mib)) $((156 * mib)) ||
        fail "ferrovol-big reports $(class_capacity ferrovol-big "$a") with 100 MiB claimed" || return 1
    wait_for 60 "ferrovol-small's capacity to drop by its claim" \
        capacity_within ferrovol-small "$a" $((32 * mib)) $((48 * mib)) ||
        fail "ferrovol-small reports $(class_capacity ferrovol-small "$a") with 16 MiB claimed" || return 1
    drop_pods_and_claims rn-pool-small rn-pool-big || fail "claims or PVs stayed" || return 1
    rn_pools_unmount
    ok
}
