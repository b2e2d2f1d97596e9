# Sourced by scripts/e2e.sh: the NFS driver (nfs.csi.ferrovol.io) through the control plane.
#
# A real nfs-ganesha (VFS backend, rpcbind) on 127.0.0.1 exports NFS_EXPORT. ferrovol runs in the
# chart's NFS controller role (--driver nfs --roles controller, its share registry in ConfigMap
# ferrovol/ferrovol-nfs-shares), with a central csi-provisioner (--extra-create-metadata, so the
# subDir pattern sees the PVC's namespace and name) and a csi-resizer beside it, all three with
# the token of the chart's ferrovol-nfs-controller ServiceAccount. One fake node runs the NFS node
# plugin (--driver nfs --roles node).
#
# This kernel has no NFS client, so the node plugin runs with the driver's test seam
# --nfs-test-export-root NFS_EXPORT: NodePublishVolume bind-mounts the volume's directory from
# the export instead of mounting it over NFS (after the same option checks). Provisioning,
# deletion, archiving and expansion all go over NFS to ganesha, through ferrovol's own client.
#
# Needs: BIN, E2E_DIR, FERROVOL, the cluster.sh, nodes.sh and scenarios.sh functions.

NFS_DIR=$E2E_DIR/nfs
NFS_EXPORT=$NFS_DIR/export
NFS_NODE=${NODES[0]}
NFS_NS=e2e-nfs
NFS_DRIVER=nfs.csi.ferrovol.io
NFS_POLICIES=(delete retain archive)
NFS_CLAIM=32Mi
# The lock every ganesha user on this host takes (tests/common/ganesha.rs, tests/sanity/run.sh):
# one rpcbind serves the host and a second ganesha would take over the first one's programs.
# A fixed descriptor, so rpcbind (a daemon that outlives the suite) can be started without it.
NFS_LOCK=/tmp/ferrovol-ganesha.lock
NFS_LOCK_FD=7

nfs_socket() { echo "$NFS_DIR/controller.sock"; }
nfs_node_socket() { echo "$(node_dir "$1")/nfs.sock"; }

# start_ganesha: ganesha exporting NFS_EXPORT (NFS on 2049, MOUNT and NLM on free ports),
# registered with rpcbind.
start_ganesha() {
    mkdir -p "$NFS_EXPORT" "$NFS_DIR/ganesha-recovery"
    eval "exec $NFS_LOCK_FD>$NFS_LOCK"
    flock -w 600 "$NFS_LOCK_FD" || {
        echo "e2e: another ganesha user held $NFS_LOCK for 10 minutes" >&2
        return 1
    }
    if ! rpcinfo -p 127.0.0.1 >/dev/null 2>&1; then
        eval "rpcbind -w $NFS_LOCK_FD>&-" || return 1
    fi
    local nfs_port mnt_port nlm_port
    # 2049: the class mounts with nfsvers=4.1, so the controller provisions over NFSv4.1, which
    # finds the server there (the ganesha lock held above keeps the port ours).
    nfs_port=2049
    mnt_port=$(free_port)
    nlm_port=$(free_port)
    cat >"$NFS_DIR/ganesha.conf" <<EOF
NFS_CORE_PARAM { NFS_Port = $nfs_port; MNT_Port = $mnt_port; NLM_Port = $nlm_port;
    Bind_addr = 127.0.0.1; Protocols = 3, 4; Enable_RQUOTA = false; }
NFSV4 { Graceless = true; Only_Numeric_Owners = true; RecoveryBackend = fs;
    RecoveryRoot = $NFS_DIR/ganesha-recovery; }
EXPORT { Export_Id = 1; Path = $NFS_EXPORT; Pseudo = $NFS_EXPORT; Access_Type = RW;
    Squash = No_Root_Squash; Protocols = 3, 4; Transports = TCP; SecType = sys; FSAL { Name = VFS; } }
LOG { Default_Log_Level = WARN; }
EOF
    start ganesha ganesha.nfsd -F -f "$NFS_DIR/ganesha.conf" -L "$E2E_DIR/logs/ganesha.nfsd.log" \
        -p "$NFS_DIR/ganesha.pid"
    ganesha_registered() {
        rpcinfo -p 127.0.0.1 | awk -v p="$nfs_port" \
            '$1 == 100003 && $2 == 3 && $3 == "tcp" && $4 == p {f = 1} END {exit !f}'
    }
    wait_for 60 "ganesha to register with rpcbind" ganesha_registered
}

# sa_kubeconfig SA FILE: a kubeconfig with a TokenRequest token of the chart's ServiceAccount SA.
sa_kubeconfig() {
    local token
    token=$("$BIN/kubectl" -n ferrovol create token "$1" --duration 2h) || return 1
    kubeconfig "$2" --token "$token"
}

# nfs_controller_up SUFFIX: the NFS controller pod's processes, as the chart runs them: ferrovol
# (state under NFS_DIR/controller, the pod's emptyDir; share registry in the ConfigMap) and its
# provisioner and resizer. SUFFIX tells the logs of a second pod from the first one's.
nfs_controller_up() {
    local kc=$NFS_DIR/controller.kubeconfig
    start "ferrovol-nfs-controller$1" env KUBECONFIG="$kc" POD_NAMESPACE=ferrovol \
        "$FERROVOL" serve --driver nfs --backends nfs --roles controller \
        --node-id "$NFS_NODE" --endpoint "unix://$(nfs_socket)" --data-dir "$NFS_DIR/controller" \
        --state-dir "$NFS_DIR/controller/state" --nfs-timeout 5s \
        --nfs-registry-configmap ferrovol-nfs-shares
    wait_for 60 "the NFS controller's socket" test -S "$(nfs_socket)" || return 1
    # The chart's flags; KUBECONFIG in the environment wins over --kubeconfig: set both.
    start "csi-provisioner-nfs$1" env KUBECONFIG="$kc" \
        "$BIN/csi-provisioner" --csi-address "$(nfs_socket)" --kubeconfig "$kc" \
        --leader-election=true --leader-election-namespace=ferrovol \
        --extra-create-metadata=true --timeout=60s -v=4
    start "csi-resizer-nfs$1" env KUBECONFIG="$kc" \
        "$BIN/csi-resizer" --csi-address "$(nfs_socket)" --kubeconfig "$kc" \
        --leader-election=true --leader-election-namespace=ferrovol --timeout=60s -v=4
}

# nfs_controller_down SUFFIX: ends the processes nfs_controller_up SUFFIX started and waits for
# them, as when the pod is deleted.
nfs_controller_down() {
    local name pid
    for name in "ferrovol-nfs-controller$1" "csi-provisioner-nfs$1" "csi-resizer-nfs$1"; do
        pid=$(cat "$E2E_DIR/logs/$name.pid") || return 1
        kill "$pid" 2>/dev/null
        wait_for 30 "$name to exit" bash -c "! kill -0 $pid" || return 1
    done
}

# nfs_up: ganesha, the NFS controller with its sidecars, the node plugin on NFS_NODE, and one
# StorageClass per onDelete policy.
nfs_up() {
    mkdir -p "$NFS_DIR"
    start_ganesha || return 1
    sa_kubeconfig ferrovol-nfs-controller "$NFS_DIR/controller.kubeconfig" || return 1
    nfs_controller_up "" || return 1

    local d
    d=$(node_dir "$NFS_NODE")
    start "ferrovol-nfs-$NFS_NODE" "$FERROVOL" serve --driver nfs --backends nfs --roles node \
        --node-id "$NFS_NODE" --endpoint "unix://$(nfs_node_socket "$NFS_NODE")" \
        --data-dir "$d/nfs" --state-dir "$d/nfs/state" \
        --publish-root "$(node_kubelet "$NFS_NODE")" --nfs-test-export-root "$NFS_EXPORT"
    wait_for 60 "the NFS node plugin's socket on $NFS_NODE" \
        test -S "$(nfs_node_socket "$NFS_NODE")" || return 1
    # What node-driver-registrar would add for the NFS plugin: its CSINode entry (no topology).
    k patch csinode "$NFS_NODE" --type strategic \
        -p "{\"spec\":{\"drivers\":[{\"name\":\"$NFS_DRIVER\",\"nodeID\":\"$NFS_NODE\"}]}}" >/dev/null ||
        return 1

    k create namespace "$NFS_NS" >/dev/null || return 1
    local p
    for p in "${NFS_POLICIES[@]}"; do
        k apply -f - >/dev/null <<EOF || return 1
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: ferrovol-nfs-$p}
provisioner: $NFS_DRIVER
volumeBindingMode: Immediate
reclaimPolicy: Delete
allowVolumeExpansion: true
mountOptions: [nfsvers=4.1]
parameters:
  backend: nfs
  server: 127.0.0.1
  share: "$NFS_EXPORT"
  subDir: "\${pvc.metadata.namespace}/\${pvc.metadata.name}"
  onDelete: $p
  mountPermissions: "0770"
  uid: "0"
  gid: "0"
EOF
    done
}

nfs_pvc_bound() { [ "$(k -n "$NFS_NS" get pvc "$1" -o jsonpath='{.status.phase}')" = Bound ]; }
nfs_pv_of() { k -n "$NFS_NS" get pvc "$1" -o jsonpath='{.spec.volumeName}'; }
nfs_pod_scheduled() { [ -n "$(k -n "$NFS_NS" get pod "$1" -o jsonpath='{.spec.nodeName}')" ]; }

# nfs_record PV: the path of the volume's record on the export (.ferrovol/volumes/KEY.json).
nfs_record() {
    local handle
    handle=$(k get pv "$1" -o jsonpath='{.spec.csi.volumeHandle}')
    echo "$NFS_EXPORT/.ferrovol/volumes/${handle##*/}.json"
}

# e) A PVC per onDelete class: Bound to a PV ferrovol created with the right volume context and
#    no node affinity, its Pod scheduled, the pattern's directory on the export, and the node
#    plugin publishing it (bind from the export: --nfs-test-export-root, no kernel NFS client).
scenario_nfs_provision() {
    SCENARIO="e) NFS PVC (subDir pattern) to a published volume, on each onDelete class"
    local p c pv attrs want handle target uid node
    for p in "${NFS_POLICIES[@]}"; do
        c=nfs-$p
        k apply -f - >/dev/null <<EOF || fail "cannot create claim and pod $c" || return 1
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $c, namespace: $NFS_NS}
spec:
  storageClassName: ferrovol-nfs-$p
  accessModes: [ReadWriteMany]
  resources: {requests: {storage: $NFS_CLAIM}}
---
apiVersion: v1
kind: Pod
metadata: {name: $c, namespace: $NFS_NS}
spec:
  automountServiceAccountToken: false
  nodeSelector: {kubernetes.io/hostname: $NFS_NODE}
  containers:
    - {name: app, image: "registry.k8s.io/pause:3.10", volumeMounts: [{name: data, mountPath: /data}]}
  volumes:
    - {name: data, persistentVolumeClaim: {claimName: $c}}
EOF
    done
    for p in "${NFS_POLICIES[@]}"; do
        c=nfs-$p
        wait_for 120 "pvc $c to be Bound" nfs_pvc_bound "$c" || fail "pvc $c never Bound" || return 1
        wait_for 60 "pod $c to be scheduled" nfs_pod_scheduled "$c" || fail "pod $c never scheduled" || return 1
        pv=$(nfs_pv_of "$c")
        [ "$(k get pv "$pv" -o jsonpath='{.metadata.annotations.pv\.kubernetes\.io/provisioned-by}')" = "$NFS_DRIVER" ] ||
            fail "pv $pv was not provisioned by $NFS_DRIVER" || return 1
        attrs=$(k get pv "$pv" -o json | jq -c '.spec.csi.volumeAttributes | {server, share, subDir}')
        want=$(jq -nc --arg s "$NFS_EXPORT" --arg d "$NFS_NS/$c" '{server: "127.0.0.1", share: $s, subDir: $d}')
        [ "$attrs" = "$want" ] || fail "pv $pv: volume context $attrs, want $want" || return 1
        [ "$(k get pv "$pv" -o jsonpath='{.spec.nodeAffinity}')" = "" ] ||
            fail "pv $pv has a node affinity; an NFS volume is reachable from every node" || return 1
        [ -d "$NFS_EXPORT/$NFS_NS/$c" ] ||
            fail "the directory $NFS_NS/$c the pattern names is not on ganesha's export" || return 1
        [ -f "$(nfs_record "$pv")" ] || fail "no record of $pv at $(nfs_record "$pv")" || return 1

        # kubelet's part on the pod's node: NodePublish with the PV's volumeAttributes.
        node=$(k -n "$NFS_NS" get pod "$c" -o jsonpath='{.spec.nodeName}')
        uid=$(k -n "$NFS_NS" get pod "$c" -o jsonpath='{.metadata.uid}')
        handle=$(k get pv "$pv" -o jsonpath='{.spec.csi.volumeHandle}')
        target="$(node_kubelet "$node")/pods/$uid/volumes/kubernetes.io~csi/$pv/mount"
        local ctx=()
        while IFS= read -r kv; do ctx+=(--context "$kv"); done < <(k get pv "$pv" -o json |
            jq -r '.spec.csi.volumeAttributes | to_entries[] | "\(.key)=\(.value)"')
        "$FERROVOL" ctl --endpoint "unix://$(nfs_node_socket "$node")" --data-dir "$(node_kubelet "$node")" \
            publish "$handle" "$target" "${ctx[@]}" >>"$E2E_DIR/logs/ctl.log" 2>&1 ||
            fail "NodePublish of $handle on $node failed (logs/ctl.log)" || return 1
        mountpoint -q "$target" || fail "$target is not a mount point after NodePublish" || return 1
        echo "kept by $c" >"$target/data" || fail "cannot write into $target" || return 1
        [ "$(cat "$NFS_EXPORT/$NFS_NS/$c/data" 2>/dev/null)" = "kept by $c" ] ||
            fail "a file written at $target is not in $NFS_NS/$c on the export" || return 1
        "$FERROVOL" ctl --endpoint "unix://$(nfs_node_socket "$node")" --data-dir "$(node_kubelet "$node")" \
            unpublish "$handle" "$target" >>"$E2E_DIR/logs/ctl.log" 2>&1 ||
            fail "NodeUnpublish of $handle on $node failed (logs/ctl.log)" || return 1
        ! mountpoint -q "$target" || fail "$target still mounted after NodeUnpublish" || return 1
    done
    echo "ok $SCENARIO (${NFS_POLICIES[*]}; published by bind from the export, --nfs-test-export-root: no kernel NFS client here)"
}

# g) The controller's pod is replaced first, its emptyDir (state directory and all) gone: the share
#    registry in its ConfigMap is how the new one finds the volumes. Then deleting each claim does
#    what its class's onDelete says to the directory on the export: delete removes it, retain
#    keeps it, archive renames it archived-<name>-<time> beside it.
scenario_nfs_delete() {
    SCENARIO="g) NFS controller replaced with an empty state dir, then PVC delete: onDelete delete, retain, archive"
    local p c pvs=() i archived registered
    for p in "${NFS_POLICIES[@]}"; do
        pvs+=("$(nfs_pv_of "nfs-$p")")
        [ -n "${pvs[-1]}" ] || fail "claim nfs-$p was never bound" || return 1
    done
    registered=$(k -n ferrovol get configmap ferrovol-nfs-shares -o json | jq -r '.data[]')
    [ "$registered" = "127.0.0.1:$NFS_EXPORT" ] ||
        fail "share registry ferrovol/ferrovol-nfs-shares holds '$registered', want 127.0.0.1:$NFS_EXPORT" || return 1
    nfs_controller_down "" || fail "the NFS controller's processes did not stop" || return 1
    rm -rf "$NFS_DIR/controller" "$(nfs_socket)"
    nfs_controller_up -2 || fail "the NFS controller did not start again on an empty state dir" || return 1
    k -n "$NFS_NS" delete pod "${NFS_POLICIES[@]/#/nfs-}" --grace-period=0 --force --wait=false >/dev/null 2>&1
    k -n "$NFS_NS" delete pvc "${NFS_POLICIES[@]/#/nfs-}" --wait=false >/dev/null ||
        fail "cannot delete the NFS claims" || return 1
    for i in "${!NFS_POLICIES[@]}"; do
        p=${NFS_POLICIES[i]}
        c=nfs-$p
        wait_for 120 "pv ${pvs[i]} to go" bash -c "! '$BIN/kubectl' get pv '${pvs[i]}'" ||
            fail "pv ${pvs[i]} of $c still exists" || return 1
        case $p in
        delete)
            [ ! -e "$NFS_EXPORT/$NFS_NS/$c" ] || fail "$NFS_NS/$c still on the export (onDelete delete)" || return 1
            ;;
        retain)
            [ "$(cat "$NFS_EXPORT/$NFS_NS/$c/data" 2>/dev/null)" = "kept by $c" ] ||
                fail "$NFS_NS/$c or its data is gone (onDelete retain)" || return 1
            ;;
        archive)
            [ ! -e "$NFS_EXPORT/$NFS_NS/$c" ] || fail "$NFS_NS/$c still in place (onDelete archive)" || return 1
            archived=$(find "$NFS_EXPORT/$NFS_NS" -maxdepth 1 -name "archived-$c-*" | head -1)
            [ -n "$archived" ] && [ "$(cat "$archived/data" 2>/dev/null)" = "kept by $c" ] ||
                fail "no archived-$c-<time> with the data beside it (onDelete archive)" || return 1
            ;;
        esac
    done
    echo "ok $SCENARIO (retained $NFS_NS/nfs-retain, archived to ${archived#"$NFS_EXPORT/"})"
}
