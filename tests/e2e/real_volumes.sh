# Sourced by tests/e2e/realnodes.sh: hostpath snapshot and restore, a generic ephemeral volume, and
# expansion on the btrfs base, on real nodes (helpers in tests/e2e/real_scenarios.sh).

# pod_with NAME NODE VOLUME-YAML: a busybox pod on NODE with VOLUME-YAML as its volume "data",
# mounted at /data.
pod_with() {
    k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: default}
spec:
  terminationGracePeriodSeconds: 1
  automountServiceAccountToken: false
  nodeSelector: {kubernetes.io/hostname: $2}
  containers:
    - name: app
      image: $(image_ref busybox)
      imagePullPolicy: Never
      command: [sh, -c, "trap 'exit 0' TERM; while :; do sleep 1; done"]
      volumeMounts: [{name: data, mountPath: /data}]
  volumes:
    - name: data
$3
EOF
}

# claim NAME SIZE [DATASOURCE-YAML]: a hostpath claim.
claim() {
    k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $1, namespace: default}
spec:
  storageClassName: ferrovol-hostpath
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: $2}}
${3:-}
EOF
}

# drop_pods_and_claims NAME...: deletes the pods and claims NAME and waits for their PVs to go.
drop_pods_and_claims() {
    local n pvs=()
    for n in "$@"; do pvs+=("$(pv_of_claim "$n")"); done
    k -n default delete pod "$@" --wait=true >/dev/null 2>&1
    k -n default delete pvc "$@" --wait=true >/dev/null || return 1
    for n in "${pvs[@]}"; do
        [ -z "$n" ] || k wait --for=delete "pv/$n" --timeout "$RN_TIMEOUT" >/dev/null || return 1
    done
}

# A hostpath snapshot of a claim in use, restored into a new claim that a pod on the same node
# reads; the content is that of the moment of the snapshot.
scenario_snapshot() {
    SCENARIO="real nodes: hostpath snapshot, restore into a new claim, a pod reads the old content"
    local node=${NODES[1]}
    claim rn-snap 32Mi
    pod_with rn-snap "$node" "      persistentVolumeClaim: {claimName: rn-snap}"
    wait_for 120 "pod rn-snap Ready" pod_running rn-snap || fail "pod not Ready" || return 1
    in_pod rn-snap "echo before >/data/f && sync" || fail "cannot write" || return 1
    k apply -f - >/dev/null <<EOF || fail "cannot create the VolumeSnapshot" || return 1
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: rn-snap, namespace: default}
spec:
  volumeSnapshotClassName: ferrovol-local
  source: {persistentVolumeClaimName: rn-snap}
EOF
    k -n default wait --for=jsonpath='{.status.readyToUse}'=true volumesnapshot/rn-snap \
        --timeout "$RN_TIMEOUT" >/dev/null || fail "snapshot not ready" || return 1
    in_pod rn-snap "echo after >/data/f && sync" || return 1
    claim rn-restore 32Mi "  dataSource: {apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: rn-snap}"
    pod_with rn-restore "$node" "      persistentVolumeClaim: {claimName: rn-restore}"
    wait_for 120 "pod rn-restore Ready" pod_running rn-restore || fail "restoring pod not Ready" || return 1
    [ "$(in_pod rn-restore "cat /data/f")" = before ] ||
        fail "the restore does not hold the snapshot's content" || return 1
    k -n default delete volumesnapshot rn-snap --wait=true >/dev/null || return 1
    drop_pods_and_claims rn-restore rn-snap || fail "claims or PVs stayed" || return 1
    ok
}

# A generic ephemeral volume: provisioned for the pod, usable, and gone with it.
scenario_ephemeral() {
    SCENARIO="real nodes: generic ephemeral hostpath volume lives and goes with its pod"
    local pv
    pod_with rn-eph "${NODES[1]}" "      ephemeral:
        volumeClaimTemplate:
          spec:
            storageClassName: ferrovol-hostpath
            accessModes: [ReadWriteOnce]
            resources: {requests: {storage: 16Mi}}"
    wait_for 120 "pod rn-eph Ready" pod_running rn-eph || fail "pod not Ready" || return 1
    in_pod rn-eph "echo x >/data/f" || fail "cannot write" || return 1
    pv=$(pv_of_claim rn-eph-data)
    [ -n "$pv" ] || fail "no claim rn-eph-data" || return 1
    k -n default delete pod rn-eph --wait=true >/dev/null || return 1
    k -n default wait --for=delete pvc/rn-eph-data --timeout "$RN_TIMEOUT" >/dev/null ||
        fail "claim stayed" || return 1
    k wait --for=delete "pv/$pv" --timeout "$RN_TIMEOUT" >/dev/null || fail "PV stayed" || return 1
    ok
}

# volume_capacity NODE POD: the capacity of POD's volume "data" in the kubelet's stats (from
# NodeGetVolumeStats), in bytes.
volume_capacity() {
    k get --raw "/api/v1/nodes/$1/proxy/stats/summary" |
        jq -r --arg p "$2" '.pods[] | select(.podRef.name == $p) | .volume[]?
            | select(.name == "data") | .capacityBytes'
}
capacity_is() { [ "$(volume_capacity "$1" "$2")" = "$3" ]; }

# On the btrfs base (qgroups): a write past the size fails in the pod; the claim grown while the
# pod runs shows the new size in its status and in the kubelet's volume stats, and the same write
# then succeeds.
scenario_btrfs_expand() {
    SCENARIO="real nodes: hostpath on btrfs enforces the size; growing the claim in use lifts it"
    local node=$RN_BTRFS_NODE
    claim rn-grow 32Mi
    pod_with rn-grow "$node" "      persistentVolumeClaim: {claimName: rn-grow}"
    wait_for 120 "pod rn-grow Ready" pod_running rn-grow || fail "pod not Ready" || return 1
    if in_pod rn-grow "dd if=/dev/zero of=/data/big bs=1M count=48 conv=fsync 2>/dev/null" 2>/dev/null; then
        fail "a 48 MiB write into a 32 MiB volume succeeded"
        return 1
    fi
    in_pod rn-grow "rm -f /data/big && sync" || return 1
    k -n default patch pvc rn-grow --type merge -p '{"spec":{"resources":{"requests":{"storage":"64Mi"}}}}' \
        >/dev/null || fail "cannot patch the claim" || return 1
    k -n default wait --for=jsonpath='{.status.capacity.storage}'=64Mi pvc/rn-grow \
        --timeout "$RN_TIMEOUT" >/dev/null || fail "claim status did not reach 64Mi" || return 1
    wait_for 60 "volume stats of 64 MiB" capacity_is "$node" rn-grow $((64 * 1024 * 1024)) ||
        fail "NodeGetVolumeStats capacity is $(volume_capacity "$node" rn-grow), not 64 MiB" || return 1
    in_pod rn-grow "dd if=/dev/zero of=/data/big bs=1M count=48 conv=fsync 2>/dev/null" ||
        fail "a 48 MiB write fails after growing to 64 MiB" || return 1
    drop_pods_and_claims rn-grow || fail "claim or PV stayed" || return 1
    ok
}
