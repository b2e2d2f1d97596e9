# Sourced by tests/e2e/realnodes.sh: adoption of a directory on a real node refuses one a running
# pod uses (docs/adoption.md): the pod's container reaches it through a bind mount in its own
# mount namespace and its processes are outside the node plugin's PID namespace, so only the
# node plugin's look at the node's pods through the API finds it.

RN_ADOPT_BASE=/var/lib/ferrovol/hostpath

# adopt_in_plugin NODE DIR NAME: `ferrovol ctl adopt dir` in NODE's node plugin, as an operator
# runs it; the printed PersistentVolume on stdout, a refusal on stderr.
adopt_in_plugin() {
    k -n ferrovol exec "$(plugin_pod "$1")" -c ferrovol -- ferrovol ctl --endpoint unix:///csi/csi.sock \
        adopt dir "$2" --name "$3" --size 32Mi --storage-class ferrovol-hostpath
}

# adopt_refused NODE DIR NAME WANT...: the adoption fails, its message holds every WANT, and
# DIR is where it was with its data.
adopt_refused() {
    local node=$1 dir=$2 name=$3 out w
    shift 3
    if out=$(adopt_in_plugin "$node" "$dir" "$name" 2>&1); then
        fail "adopting $dir succeeded while a pod uses it: $out" || return 1
    fi
    for w in "$@"; do
        [[ $out == *"$w"* ]] || fail "the refusal does not say \"$w\": $out" || return 1
    done
    [ "$(in_node "$node" cat "$dir/f")" = "data to adopt" ] || fail "$dir changed after a refusal" || return 1
}

# A directory in the second node's hostpath base, used by a pod through a hostPath volume, then
# by another through a static hostPath PersistentVolume and its claim: each adoption is refused
# naming the pod; with the pods gone it is adopted, and a pod reads its data through ferrovol.
scenario_adopt_in_use() {
    SCENARIO="real nodes: adoption refuses a directory a pod uses through hostPath or a hostPath PV"
    local node=${NODES[1]} dir=$RN_ADOPT_BASE/rn-adopt-src pv
    in_node "$node" sh -c "mkdir -p $dir && echo 'data to adopt' >$dir/f" || fail "cannot make $dir" || return 1

    pod_with rn-adopt-hp "$node" "      hostPath: {path: $dir, type: Directory}"
    wait_for 120 "pod rn-adopt-hp Ready" pod_running rn-adopt-hp || fail "pod rn-adopt-hp not Ready" || return 1
    adopt_refused "$node" "$dir" rn-adopted "pod default/rn-adopt-hp" "hostPath volume" "Nothing was changed" ||
        return 1
    k -n default delete pod rn-adopt-hp --wait=true >/dev/null || fail "cannot delete rn-adopt-hp" || return 1

    k apply -f - >/dev/null <<EOF || fail "cannot create the static PV and claim" || return 1
apiVersion: v1
kind: PersistentVolume
metadata: {name: rn-adopt-static}
spec:
  capacity: {storage: 32Mi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  hostPath: {path: $dir, type: Directory}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: rn-adopt-static, namespace: default}
spec:
  storageClassName: ""
  volumeName: rn-adopt-static
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 32Mi}}
EOF
    pod_with rn-adopt-pvc "$node" "      persistentVolumeClaim: {claimName: rn-adopt-static}"
    wait_for 120 "pod rn-adopt-pvc Ready" pod_running rn-adopt-pvc || fail "pod rn-adopt-pvc not Ready" || return 1
    adopt_refused "$node" "$dir" rn-adopted "pod default/rn-adopt-pvc" "claim default/rn-adopt-static" \
        "Nothing was changed" || return 1
    k -n default delete pod rn-adopt-pvc --wait=true >/dev/null || fail "cannot delete rn-adopt-pvc" || return 1
    k -n default delete pvc rn-adopt-static --wait=true >/dev/null || return 1
    k delete pv rn-adopt-static --wait=true >/dev/null || return 1

    # No pod uses it now (the node plugin's own pod, which mounts the whole base, does not count).
    pv=$(adopt_in_plugin "$node" "$dir" rn-adopted) || fail "adoption refused with no pod using it: $pv" || return 1
    in_node "$node" test ! -e "$dir" || fail "$dir is still in place after its adoption" || return 1
    # The printed PV, bound by a claim; deleted with it by the node's provisioner (DeleteVolume).
    k apply -f - >/dev/null <<<"$pv" || fail "cannot apply the printed PV: $pv" || return 1
    k annotate pv rn-adopted pv.kubernetes.io/provisioned-by=local.csi.ferrovol.io >/dev/null &&
        k patch pv rn-adopted -p '{"spec":{"persistentVolumeReclaimPolicy":"Delete"}}' >/dev/null ||
        fail "cannot make the adopted PV the provisioner's" || return 1
    claim rn-adopted 32Mi "  volumeName: rn-adopted"
    pod_with rn-adopted "$node" "      persistentVolumeClaim: {claimName: rn-adopted}"
    wait_for 120 "pod rn-adopted Ready" pod_running rn-adopted || fail "pod rn-adopted not Ready" || return 1
    [ "$(in_pod rn-adopted "cat /data/f")" = "data to adopt" ] || fail "the adopted data is not intact" || return 1
    drop_pods_and_claims rn-adopted || fail "the adopted volume's claim or PV stayed" || return 1
    in_node "$node" test ! -e "$RN_ADOPT_BASE/rn-adopted" || fail "the adopted volume's directory stayed" || return 1
    ok
}
