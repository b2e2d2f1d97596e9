# Sourced by tests/e2e/realnodes.sh: the scenarios on real nodes. Each prints `ok NAME` or
# `FAIL NAME: why` and returns non-zero on failure. Pods run the busybox image; their data is
# written and read with `kubectl exec`, through the kubelet.

RN_TIMEOUT=120s

fail() {
    echo "FAIL $SCENARIO: $*"
    return 1
}
ok() { echo "ok $SCENARIO"; }

# statefulset NAME CLASS SIZE [Block]: a one-replica StatefulSet whose pod mounts (or, with
# Block, attaches as /dev/xvda) a claim of CLASS.
statefulset() {
    local name=$1 class=$2 size=$3 mode=${4:-Filesystem} use
    use="volumeMounts: [{name: data, mountPath: /data}]"
    [ "$mode" = Block ] && use="volumeDevices: [{name: data, devicePath: /dev/xvda}]"
    k apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: $name, namespace: default}
spec:
  serviceName: $name
  replicas: 1
  selector: {matchLabels: {app: $name}}
  template:
    metadata: {labels: {app: $name}}
    spec:
      terminationGracePeriodSeconds: 1
      automountServiceAccountToken: false
      containers:
        - name: app
          image: $(image_ref busybox)
          imagePullPolicy: Never
          command: [sh, -c, "trap 'exit 0' TERM; while :; do sleep 1; done"]
          $use
  volumeClaimTemplates:
    - metadata: {name: data}
      spec:
        storageClassName: $class
        volumeMode: $mode
        accessModes: [ReadWriteOnce]
        resources: {requests: {storage: $size}}
EOF
}

# pod_running POD: POD exists, is Ready, and (with UID) is not the pod of that UID.
pod_running() {
    local uid
    uid=$(k -n default get pod "$1" -o jsonpath='{.metadata.uid}' 2>/dev/null) || return 1
    [ -n "${2:-}" ] && [ "$uid" = "$2" ] && return 1
    [ "$(k -n default get pod "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

in_pod() { k -n default exec "$1" -- sh -c "$2"; }

# write_data POD MODE TEXT / read_data POD MODE: TEXT into the volume (a file, or the first
# block of the raw device) and back.
write_data() {
    if [ "$2" = Block ]; then
        in_pod "$1" "printf '%-512s' '$3' | dd of=/dev/xvda bs=512 count=1 conv=fsync 2>/dev/null"
    else
        in_pod "$1" "echo '$3' >/data/f && sync"
    fi
}
read_data() {
    if [ "$2" = Block ]; then
        in_pod "$1" "dd if=/dev/xvda bs=512 count=1 2>/dev/null" | sed 's/ *$//'
    else
        in_pod "$1" "cat /data/f"
    fi
}

pv_of_claim() { k -n default get pvc "$1" -o jsonpath='{.spec.volumeName}'; }

# scenario_backend NAME CLASS SIZE MODE GONE [IN-USE]: a StatefulSet pod with a claim of CLASS is
# Running and writes (IN-USE PV-JSON checks the backend's view of the volume then); deleted, its
# pod comes back with the data; the claim deleted, its PV goes (the classes' reclaimPolicy is
# Delete) and GONE PV HANDLE PV-JSON confirms the backend let the volume go.
scenario_backend() {
    local name=$1 class=$2 size=$3 mode=$4 gone=$5 inuse=${6:-} pod uid pv handle pvjson
    SCENARIO="real nodes: $class ($mode) StatefulSet pod writes, survives its pod, goes with its claim"
    pod=$name-0
    statefulset "$name" "$class" "$size" "$mode" || fail "cannot create StatefulSet" || return 1
    wait_for 120 "pod $pod Ready" pod_running "$pod" || fail "pod $pod not Ready" || return 1
    write_data "$pod" "$mode" "data of $name" || fail "cannot write in $pod" || return 1
    pv=$(pv_of_claim "data-$pod")
    pvjson=$(k get pv "$pv" -o json) || fail "no PV for data-$pod" || return 1
    [ -z "$inuse" ] || "$inuse" "$pvjson" || return 1
    uid=$(k -n default get pod "$pod" -o jsonpath='{.metadata.uid}')
    k -n default delete pod "$pod" --wait=true >/dev/null || fail "cannot delete $pod" || return 1
    wait_for 120 "pod $pod back" pod_running "$pod" "$uid" || fail "pod $pod did not come back" || return 1
    [ "$(read_data "$pod" "$mode")" = "data of $name" ] || fail "the data did not survive the pod" || return 1
    handle=$(jq -r .spec.csi.volumeHandle <<<"$pvjson")
    k -n default delete statefulset "$name" --wait=true >/dev/null || return 1
    k -n default wait --for=delete "pod/$pod" --timeout "$RN_TIMEOUT" >/dev/null || fail "pod stayed" || return 1
    k -n default delete pvc "data-$pod" --wait=true >/dev/null || return 1
    k wait --for=delete "pv/$pv" --timeout "$RN_TIMEOUT" >/dev/null || fail "PV $pv stayed" || return 1
    "$gone" "$pv" "$handle" "$pvjson" || return 1
    ok
}

# hostpath_gone PV HANDLE: no node's hostpath base has a directory for the volume any more.
hostpath_gone() {
    local n left
    for n in "${NODES[@]}"; do
        left=$(find "$(rn_dir "$n")/root/var/lib/ferrovol/hostpath" -mindepth 1 -maxdepth 2 -name "*${2##*/}*" 2>/dev/null)
        [ -z "$left" ] || fail "hostpath directory left on $n: $left" || return 1
    done
}
# nfs_gone PV HANDLE: the class's onDelete is delete: the directory is gone from the export.
nfs_gone() {
    local left
    left=$(find "$RN_EXPORT" -mindepth 2 -maxdepth 2 -name "*_$1" 2>/dev/null)
    [ -z "$left" ] || fail "NFS directory left: $left"
}

scenario_hostpath() { scenario_backend rn-hostpath ferrovol-hostpath 32Mi Filesystem hostpath_gone; }
scenario_nfs() { scenario_backend rn-nfs ferrovol-nfs 32Mi Filesystem nfs_gone; }

