# Sourced by scripts/e2e.sh: the node side of each fake node, as the chart's DaemonSet pod would
# run it: ferrovol (local driver, hostpath and device backends) on its own socket, and a node-deployed
# csi-provisioner that talks to the API server with the ferrovol-node ServiceAccount's token.
#
# Each node's hostpath base is its own small ext4 filesystem on a loop device (mount -o loop,
# so unmounting frees the device), which makes the nodes' capacities differ for the scheduler.
#
# Needs: BIN, E2E_DIR, FERROVOL (the ferrovol binary), KUBECONFIG, the cluster.sh functions.

MOUNTS=()

node_dir() { echo "$E2E_DIR/nodes/$1"; }
node_base() { echo "$E2E_DIR/nodes/$1/base/volumes"; }
node_socket() { echo "$E2E_DIR/nodes/$1/csi.sock"; }
# Where the fake kubelet of the node keeps its pods (the node plugin's publish root).
node_kubelet() { echo "$E2E_DIR/nodes/$1/kubelet"; }

# node_up NAME BASE_SIZE: the node's API objects, its base filesystem, ferrovol and its
# csi-provisioner.
node_up() {
    local n=$1 size=$2 d
    d=$(node_dir "$n")
    mkdir -p "$d/base" "$(node_kubelet "$n")"
    fake_node "$n" || return 1
    truncate -s "$size" "$d/base.img"
    mkfs.ext4 -q -F "$d/base.img" || return 1
    mount -o loop "$d/base.img" "$d/base" || return 1
    MOUNTS+=("$d/base")
    mkdir -p "$(node_base "$n")"

    # The node plugin's Pod, owned by the DaemonSet: the provisioner reads both to set the
    # owner of its CSIStorageCapacity objects (--capacity-ownerref-level=1).
    local ds_uid
    ds_uid=$("$BIN/kubectl" -n ferrovol get daemonset ferrovol-node -o jsonpath='{.metadata.uid}')
    "$BIN/kubectl" apply -f - >/dev/null <<EOF || return 1
apiVersion: v1
kind: Pod
metadata:
  name: ferrovol-node-$n
  namespace: ferrovol
  labels: {app: ferrovol-node}
  ownerReferences:
    - {apiVersion: apps/v1, kind: DaemonSet, name: ferrovol-node, uid: $ds_uid, controller: true}
spec:
  nodeName: $n
  serviceAccountName: ferrovol-node
  automountServiceAccountToken: false
  containers:
    - {name: ferrovol, image: "ghcr.io/ferrovol/ferrovol:e2e"}
EOF

    # Both ferrovol and the provisioner act as the chart's ServiceAccount, through a
    # TokenRequest token bound to the node plugin's Pod, as the kubelet projects it: the API
    # server then names the node in the token's user info, which the chart's admission policy
    # on PersistentVolumes checks. ferrovol syncs the node's BlockDevices with it.
    local token
    token=$("$BIN/kubectl" -n ferrovol create token ferrovol-node --duration 2h \
        --bound-object-kind Pod --bound-object-name "ferrovol-node-$n") || return 1
    kubeconfig "$d/provisioner.kubeconfig" --token "$token"
    # The device backend's disks: loop devices only this node's include filter names (device.sh).
    device_node_up "$n" || return 1
    local devargs
    read -ra devargs <<<"$(device_serve_args "$n")"
    start "ferrovol-$n" env KUBECONFIG="$d/provisioner.kubeconfig" \
        "$FERROVOL" serve --driver local --backends hostpath,device --node-id "$n" \
        --endpoint "unix://$(node_socket "$n")" --data-dir "$d/ferrovol" \
        --hostpath-base "$(node_base "$n")" --publish-root "$(node_kubelet "$n")" "${devargs[@]}"
    wait_for 60 "ferrovol's socket on $n" test -S "$(node_socket "$n")" || return 1

    # The chart's flags, plus a short capacity poll so the suite need not wait a minute.
    # KUBECONFIG in the environment overrides --kubeconfig in csi-provisioner: set both.
    start "csi-provisioner-$n" env NODE_NAME="$n" NAMESPACE=ferrovol POD_NAME="ferrovol-node-$n" \
        KUBECONFIG="$d/provisioner.kubeconfig" \
        "$BIN/csi-provisioner" --csi-address "$(node_socket "$n")" \
        --kubeconfig "$d/provisioner.kubeconfig" \
        --node-deployment=true --enable-capacity=true --capacity-ownerref-level=1 \
        --strict-topology=true --default-fstype=ext4 --timeout=120s \
        --capacity-poll-interval=3s -v=4
}

# kubelet_publish NODE POD_UID PV HANDLE: kubelet's NodeStage + NodePublish over the node's
# socket, with the pod volume path kubelet uses; prints the target.
kubelet_publish() {
    local target
    target="$(node_kubelet "$1")/pods/$2/volumes/kubernetes.io~csi/$3/mount"
    "$FERROVOL" ctl --endpoint "unix://$(node_socket "$1")" --data-dir "$(node_kubelet "$1")" \
        publish "$4" "$target" >>"$E2E_DIR/logs/ctl.log" 2>&1 || return 1
    echo "$target"
}

kubelet_unpublish() {
    "$FERROVOL" ctl --endpoint "unix://$(node_socket "$1")" --data-dir "$(node_kubelet "$1")" \
        unpublish "$2" "$3" >>"$E2E_DIR/logs/ctl.log" 2>&1
}

# unmount_all: every mount left below E2E_DIR (publishes a failed test left, then the bases).
unmount_all() {
    local m
    findmnt -rn -o TARGET | grep "^$E2E_DIR/" | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    MOUNTS=()
}
