# Sourced by tests/e2e/realnodes.sh: what the real-node cluster has besides its nodes: nfs-ganesha
# (with its own rpcbind) in a network and mount namespace of its own at RN_NET.2, the
# snapshot-controller, and the chart installed with `helm install` as an operator does it.
#
# Needs: BIN, E2E_DIR, RN_NET, RN_CP_NS, RN_IMAGES, the cluster.sh and kubelet.sh functions.

k() { "$BIN/kubectl" "$@"; }
RN_NFS_NS=ferrovol-e2e-nfs-$$
RN_NFS_ADDR=$RN_NET.2
RN_EXPORT=$E2E_DIR/nfs/export
RN_HELM_TIMEOUT=180s

# nfs_server_up: rpcbind and ganesha exporting RN_EXPORT at RN_NFS_ADDR, on the standard ports.
# The namespace has its own /run, so its rpcbind socket is not the host's.
nfs_server_up() {
    local d=$E2E_DIR/nfs mnt=$E2E_DIR/ns/nfs.mnt
    mkdir -p "$RN_EXPORT" "$d/recovery"
    ip netns add "$RN_NFS_NS" || return 1
    ip -n "$RN_NFS_NS" link set lo up
    ip -n "$RN_NFS_NS" link add eth0 type veth peer name vnfs netns "$RN_CP_NS" || return 1
    ip -n "$RN_CP_NS" link set vnfs master br0 up
    ip -n "$RN_NFS_NS" addr add "$RN_NFS_ADDR/24" dev eth0
    ip -n "$RN_NFS_NS" link set eth0 up
    touch "$mnt"
    unshare --mount="$mnt" --propagation private true || return 1
    nsenter --mount="$mnt" -- mount -t tmpfs tmpfs /run || return 1
    cat >"$d/ganesha.conf" <<EOF
NFS_CORE_PARAM { Bind_addr = $RN_NFS_ADDR; Protocols = 3, 4; Enable_RQUOTA = false; }
NFSV4 { Graceless = true; Only_Numeric_Owners = true; RecoveryBackend = fs; RecoveryRoot = $d/recovery; }
EXPORT { Export_Id = 1; Path = $RN_EXPORT; Pseudo = $RN_EXPORT; Access_Type = RW;
    Squash = No_Root_Squash; Protocols = 3, 4; Transports = TCP; SecType = sys; FSAL { Name = VFS; } }
LOG { Default_Log_Level = WARN; }
EOF
    local in=(nsenter --mount="$mnt" --net="/run/netns/$RN_NFS_NS" --)
    start rpcbind "${in[@]}" rpcbind -f -w || return 1
    wait_for 30 "rpcbind in $RN_NFS_NS" "${in[@]}" rpcinfo -p 127.0.0.1 || return 1
    start ganesha "${in[@]}" ganesha.nfsd -F -f "$d/ganesha.conf" -L "$E2E_DIR/logs/ganesha.nfsd.log" \
        -p "$d/ganesha.pid"
    ganesha_registered() {
        rpcinfo -p "$RN_NFS_ADDR" | awk '$1 == 100003 && $2 == 3 && $3 == "tcp" {f = 1} END {exit !f}'
    }
    wait_for 60 "ganesha to register at $RN_NFS_ADDR" ganesha_registered
}

nfs_server_down() {
    local mnt=$E2E_DIR/ns/nfs.mnt
    [ -e "$mnt" ] && { umount "$mnt" 2>/dev/null; rm -f "$mnt"; }
    ip netns del "$RN_NFS_NS" 2>/dev/null
    return 0
}

# image_ref NAME: the reference scripts/image.sh gave image NAME.
image_ref() { awk -v n="$1" '$1 == n {print $2}' "$RN_IMAGES/refs"; }

# chart_image_args: --set flags pointing the chart at the imported images, never pulled.
chart_image_args() {
    local ref s
    ref=$(image_ref ferrovol)
    echo "--set image.repository=${ref%:*} --set image.tag=${ref##*:} --set image.pullPolicy=Never"
    for s in provisioner:csi-provisioner resizer:csi-resizer snapshotter:csi-snapshotter; do
        ref=$(image_ref "${s#*:}")
        echo "--set sidecars.${s%%:*}.repository=${ref%:*} --set sidecars.${s%%:*}.tag=${ref##*:}"
        echo "--set sidecars.${s%%:*}.pullPolicy=Never"
    done
}

# chart_values: everything `helm install` is given: images, the NFS server and share, the
# test-only bind mounts for NFS (this kernel has no NFS client), the features the scenarios use
# switched on, the device backend with each node's own loop devices (real_devices.sh), and the
# first node's hostpath pools with a class each (real_pools.sh).
chart_values() {
    # shellcheck disable=SC2046
    echo $(chart_image_args) -f "$RN_DEV_VALUES" -f "$RN_POOLS_VALUES" \
        --set nfs.enabled=true --set nfs.server="$RN_NFS_ADDR" --set nfs.share="$RN_EXPORT" \
        --set nfs.testOnly.exportRoot="$RN_EXPORT" --set snapshots.enabled=true
}

# snapshot_controller_up: the cluster's snapshot-controller (not part of the chart).
snapshot_controller_up() {
    local m=$BIN/snapshot-manifests f args=() crd token
    for f in "$m"/snapshot.storage.k8s.io_*.yaml; do args+=(-f "$f"); done
    k apply "${args[@]}" >/dev/null || return 1
    for crd in volumesnapshotclasses volumesnapshotcontents volumesnapshots; do
        k wait --for condition=Established --timeout 60s "crd/$crd.snapshot.storage.k8s.io" >/dev/null || return 1
    done
    k apply -f "$m/rbac-snapshot-controller.yaml" -f tests/e2e/manifests/snapshot-controller-nodes.yaml >/dev/null || return 1
    token=$(k -n kube-system create token snapshot-controller --duration 2h) || return 1
    kubeconfig "$E2E_DIR/snapshot-controller.kubeconfig" --token "$token"
    start snapshot-controller env KUBECONFIG="$E2E_DIR/snapshot-controller.kubeconfig" \
        "$BIN/snapshot-controller" --kubeconfig "$E2E_DIR/snapshot-controller.kubeconfig" \
        --leader-election=false --enable-distributed-snapshotting=true -v=4
}

# chart_ready: the node DaemonSet on every node and the controller Deployments are Ready.
chart_ready() {
    k -n ferrovol rollout status daemonset/ferrovol-node --timeout "$RN_HELM_TIMEOUT" >/dev/null &&
        k -n ferrovol rollout status deployment/ferrovol-nfs-controller --timeout "$RN_HELM_TIMEOUT" >/dev/null &&
        k -n ferrovol rollout status deployment/ferrovol-local-resizer --timeout "$RN_HELM_TIMEOUT" >/dev/null
}

# drivers_registered NODE: both drivers are in NODE's CSINode (the kubelet accepted them).
drivers_registered() {
    local ds
    ds=$(k get csinode "$1" -o jsonpath='{.spec.drivers[*].name}' 2>/dev/null)
    [[ $ds == *local.csi.ferrovol.io* && $ds == *nfs.csi.ferrovol.io* ]]
}

# real_install [CHART]: snapshot-controller, then `helm install` of CHART (default the tree's).
real_install() {
    local chart=${1:-charts/ferrovol} n
    snapshot_controller_up || return 1
    # shellcheck disable=SC2046
    "$HELM" install ferrovol "$chart" -n ferrovol --create-namespace $(chart_values) \
        >"$E2E_DIR/logs/helm-install.log" 2>&1 || { cat "$E2E_DIR/logs/helm-install.log"; return 1; }
    chart_ready || return 1
    for n in "${NODES[@]}"; do
        wait_for 60 "both drivers registered on $n" drivers_registered "$n" || return 1
    done
}
