# Sourced by tests/e2e/realnodes.sh: the chart's and the nodes' lifecycle with volumes in use:
# helm upgrade, the node plugin killed mid-provisioning, a node reboot, helm uninstall, and an
# upgrade from the chart of an earlier commit (helpers in real_scenarios.sh and real_volumes.sh).

# The commit whose chart the upgrade-from scenario installs first.
RN_OLD_CHART_COMMIT=d9f3789

nfs_claim() {
    k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $1, namespace: default}
spec:
  storageClassName: ferrovol-nfs
  accessModes: [ReadWriteMany]
  resources: {requests: {storage: 16Mi}}
EOF
}

# pod_on_claim NAME NODE: a pod on NODE using claim NAME, Ready, with "NAME" written in it.
pod_on_claim() {
    pod_with "$1" "$2" "      persistentVolumeClaim: {claimName: $1}" &&
        wait_for 120 "pod $1 Ready" pod_running "$1" &&
        in_pod "$1" "echo $1 >/data/f && sync"
}
data_is_intact() { [ "$(in_pod "$1" "cat /data/f")" = "$1" ]; }
nfs_dir_of() { find "$RN_EXPORT" -mindepth 2 -maxdepth 2 -name "*_$1" 2>/dev/null; }

# helm upgrade with a changed value rolls the node DaemonSet and the NFS controller while a
# hostpath and an NFS volume are in use: both stay usable, new claims provision afterwards, and
# the NFS claim made before the upgrade is deleted per its class's onDelete (delete).
scenario_upgrade_roll() {
    SCENARIO="real nodes: helm upgrade rolls the node and NFS controller pods with volumes in use"
    local node=${NODES[1]} gen_ds gen_nfs pv dir
    claim rn-up-h 16Mi && pod_on_claim rn-up-h "$node" || fail "hostpath pod" || return 1
    nfs_claim rn-up-n && pod_on_claim rn-up-n "$node" || fail "NFS pod" || return 1
    gen_ds=$(k -n ferrovol get ds ferrovol-node -o jsonpath='{.metadata.generation}')
    gen_nfs=$(k -n ferrovol get deploy ferrovol-nfs-controller -o jsonpath='{.metadata.generation}')
    # shellcheck disable=SC2046
    "$HELM" upgrade ferrovol charts/ferrovol -n ferrovol $(chart_values) --set logging.level=debug \
        >"$E2E_DIR/logs/helm-upgrade.log" 2>&1 || fail "helm upgrade failed" || return 1
    [ "$(k -n ferrovol get ds ferrovol-node -o jsonpath='{.metadata.generation}')" != "$gen_ds" ] &&
        [ "$(k -n ferrovol get deploy ferrovol-nfs-controller -o jsonpath='{.metadata.generation}')" != "$gen_nfs" ] ||
        fail "the upgrade did not change the pod templates" || return 1
    chart_ready || fail "the rollout did not finish" || return 1
    data_is_intact rn-up-h && in_pod rn-up-h "echo more >>/data/f" ||
        fail "the hostpath mount is not usable after the roll" || return 1
    data_is_intact rn-up-n && in_pod rn-up-n "echo more >/data/g" ||
        fail "the NFS mount is not usable after the roll" || return 1
    claim rn-up-h2 16Mi && pod_on_claim rn-up-h2 "${NODES[0]}" || fail "no new hostpath volume after the upgrade" || return 1
    nfs_claim rn-up-n2 &&
        k -n default wait --for=jsonpath='{.status.phase}'=Bound pvc/rn-up-n2 --timeout "$RN_TIMEOUT" >/dev/null ||
        fail "no new NFS volume after the upgrade" || return 1
    pv=$(pv_of_claim rn-up-n)
    dir=$(nfs_dir_of "$pv")
    [ -n "$dir" ] || fail "no directory for $pv in the export" || return 1
    drop_pods_and_claims rn-up-h rn-up-n rn-up-h2 rn-up-n2 || fail "claims or PVs stayed" || return 1
    [ ! -e "$dir" ] || fail "$dir stayed although onDelete is delete" || return 1
    ok
}

# container_id POD CONTAINER [NS]: the runtime's id of CONTAINER in POD.
container_id() {
    k -n "${3:-default}" get pod "$1" -o jsonpath="{.status.containerStatuses[?(@.name==\"$2\")].containerID}" |
        sed 's|^containerd://||'
}
plugin_pod() {
    k -n ferrovol get pod -l app.kubernetes.io/component=node --field-selector "spec.nodeName=$1" \
        -o jsonpath='{.items[0].metadata.name}'
}

# The ferrovol container of a node pod is killed while 10 claims provision on its node: every
# claim binds, every pod starts, and once they are deleted nothing is left in the hostpath base.
scenario_kill_plugin() {
    SCENARIO="real nodes: node plugin killed while 10 claims provision: all bind, nothing leaks"
    local node=${NODES[1]} plugin id i names=() base
    plugin=$(plugin_pod "$node")
    id=$(container_id "$plugin" ferrovol ferrovol)
    [ -n "$id" ] || fail "no ferrovol container on $node" || return 1
    for i in $(seq 1 10); do
        names+=("rn-kill-$i")
        claim "rn-kill-$i" 16Mi && pod_with "rn-kill-$i" "$node" "      persistentVolumeClaim: {claimName: rn-kill-$i}" ||
            return 1
    done
    node_ctr "$node" tasks kill -s SIGKILL "$id" >/dev/null || fail "cannot kill the ferrovol container" || return 1
    for i in "${names[@]}"; do
        wait_for 180 "pod $i Ready" pod_running "$i" || fail "pod $i not Ready" || return 1
    done
    [ "$(container_id "$plugin" ferrovol ferrovol)" != "$id" ] || fail "the container was not restarted" || return 1
    drop_pods_and_claims "${names[@]}" || fail "claims or PVs stayed" || return 1
    base=$(rn_dir "$node")/root/var/lib/ferrovol/hostpath
    [ -z "$(find "$base" -mindepth 1 -maxdepth 2 -name '*rn-kill*' -o -mindepth 1 -maxdepth 1 -type d -name 'pvc-*')" ] ||
        fail "volumes left in $base: $(ls "$base")" || return 1
    ok
}

# A node "reboot": containerd, the kubelet and every pod killed, every mount below the node's
# paths torn down, /run/containerd emptied, then containerd and the kubelet started again: the
# node's pods come back Running with their data.
scenario_reboot() {
    SCENARIO="real nodes: node reboot: pods come back Running with their data"
    # The second node: its hostpath base is a plain directory, which a reboot keeps.
    local node=${NODES[1]} i=2 id
    claim rn-boot-h 16Mi && pod_on_claim rn-boot-h "$node" || fail "hostpath pod" || return 1
    nfs_claim rn-boot-n && pod_on_claim rn-boot-n "$node" || fail "NFS pod" || return 1
    id=$(container_id rn-boot-h app)
    rn_node_down "$node" || fail "cannot stop $node" || return 1
    rm -rf "$(rn_dir "$node")/root/run/containerd/"*
    rn_runtime_up "$node" || fail "containerd did not start again" || return 1
    rn_kubelet_up "$node" "$i" || return 1
    restarted() { [ "$(container_id rn-boot-h app)" != "$id" ] && pod_running rn-boot-h && pod_running rn-boot-n; }
    wait_for 240 "the pods of $node after the reboot" restarted || fail "pods did not come back" || return 1
    data_is_intact rn-boot-h || fail "hostpath data lost in the reboot" || return 1
    data_is_intact rn-boot-n || fail "NFS data lost in the reboot" || return 1
    chart_ready || fail "the chart's pods did not recover" || return 1
    drop_pods_and_claims rn-boot-h rn-boot-n || fail "claims or PVs stayed" || return 1
    ok
}

# helm uninstall with no volumes left: nothing of the chart remains in the cluster but what its
# policies keep (docs/install.md): the NFS share registry (ConfigMap ferrovol-nfs-shares), the
# BlockDevice CRD, which Helm never deletes, and the nodes' state directories.
scenario_uninstall() {
    SCENARIO="real nodes: helm uninstall leaves only what the policies keep"
    local left
    "$HELM" uninstall ferrovol -n ferrovol --wait --timeout "$RN_HELM_TIMEOUT" \
        >"$E2E_DIR/logs/helm-uninstall.log" 2>&1 || fail "helm uninstall failed" || return 1
    k -n ferrovol wait --for=delete pod --all --timeout "$RN_TIMEOUT" >/dev/null || fail "pods stayed" || return 1
    left=$({
        k -n ferrovol get all,configmaps,csistoragecapacities,serviceaccounts,roles,rolebindings -o name |
            grep -v -e '^configmap/kube-root-ca.crt$' -e '^serviceaccount/default$' \
                -e '^configmap/ferrovol-nfs-shares$'
        k get csidrivers,storageclasses,volumesnapshotclasses,clusterroles,clusterrolebindings,validatingadmissionpolicies -o name |
            grep ferrovol
        k get pv -o name
    } 2>/dev/null)
    [ -z "$left" ] || fail "left after uninstall: $left" || return 1
    ok
}

# The chart of an earlier commit installed (hostpath only: its schema has no test-only NFS
# value), a pod writing to a hostpath volume, then `helm upgrade` to this tree's chart with every
# backend: the volume stays usable, its data intact, and new claims provision.
scenario_upgrade_from_old() {
    SCENARIO="real nodes: helm upgrade from the chart of $RN_OLD_CHART_COMMIT with volumes in use"
    local old=$E2E_DIR/old-chart
    mkdir -p "$old"
    git archive "$RN_OLD_CHART_COMMIT" charts/ferrovol | tar -x -C "$old" || fail "git archive" || return 1
    # shellcheck disable=SC2046
    "$HELM" install ferrovol "$old/charts/ferrovol" -n ferrovol $(chart_image_args) \
        >"$E2E_DIR/logs/helm-install-old.log" 2>&1 || fail "install of the old chart failed" || return 1
    k -n ferrovol rollout status daemonset/ferrovol-node --timeout "$RN_HELM_TIMEOUT" >/dev/null ||
        fail "old chart's DaemonSet not Ready" || return 1
    claim rn-old 16Mi && pod_on_claim rn-old "${NODES[1]}" || fail "pod on the old chart" || return 1
    # shellcheck disable=SC2046
    "$HELM" upgrade ferrovol charts/ferrovol -n ferrovol $(chart_values) \
        >"$E2E_DIR/logs/helm-upgrade-old.log" 2>&1 || fail "helm upgrade failed" || return 1
    chart_ready || fail "the upgraded chart's pods are not Ready" || return 1
    data_is_intact rn-old && in_pod rn-old "echo more >>/data/f" || fail "the volume is not usable" || return 1
    claim rn-old2 16Mi && pod_on_claim rn-old2 "${NODES[0]}" || fail "no new volume after the upgrade" || return 1
    drop_pods_and_claims rn-old rn-old2 || fail "claims or PVs stayed" || return 1
    ok
}
