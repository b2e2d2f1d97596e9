# Sourced by scripts/e2e.sh: access control. scenario_node_pv_policy tries the chart's admission
# policy on PersistentVolumes with a node plugin's token. scenario_no_rbac_denials is the last
# scenario: every sidecar and controller runs with the token of its chart (or upstream)
# ServiceAccount; many of them survive a denied verb (an informer that cannot watch retries
# forever, an optional finalizer is skipped), so a missing verb can leave every other scenario
# green. It reads their logs for any RBAC or admission policy denial.
#
# One denial is by design: ferrovol serves no GroupController, so the chart grants nothing on
# groupsnapshot.storage.k8s.io; csi-snapshotter probes those resources at start and, denied,
# turns volume group snapshots off.
#
# Needs: E2E_DIR (logs), BIN, NODE_SMALL, NODE_BIG, the scenarios.sh, cluster.sh and nodes.sh
# functions.

# rbac_denials: the denial messages in all logs, less the by-design one.
rbac_denials() {
    grep -h -o 'is forbidden: User [^ ]* cannot [a-z]* resource [^ ]* in API group [^ ]*' \
        "$E2E_DIR"/logs/*.log 2>/dev/null | tr -d '\\"' | grep -v 'in API group groupsnapshot.storage.k8s.io'
}

# admission_denials: requests the chart's admission policy refused a component, less the
# by-design ones: a node-deployed csi-provisioner puts its finalizer back on any PV of the driver
# that lacks it, whichever node the PV is pinned to (node loss strips it from a lost node's PVs),
# and the policy refuses that change to another node's PV.
admission_denials() {
    grep -h "ValidatingAdmissionPolicy '[^']*' with binding '[^']*' denied request" \
        "$E2E_DIR"/logs/*.log 2>/dev/null |
        grep -v 'failed to modify finalizers to \[[^]]*external-provisioner.volume.kubernetes.io/finalizer\]' |
        grep -o "ValidatingAdmissionPolicy '[^']*' with binding '[^']*' denied request"
}

# node_pv NAME DRIVER NODE: an Available PV of DRIVER pinned to NODE (a class no claim asks for,
# reclaim policy Retain, so nothing but the test acts on it).
node_pv() {
    k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata: {name: $1}
spec:
  capacity: {storage: 8Mi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: node-pv-policy
  csi: {driver: $2, volumeHandle: "$3/hostpath/$1"}
  nodeAffinity:
    required:
      nodeSelectorTerms:
        - matchExpressions: [{key: $TOPO, operator: In, values: [$3]}]
EOF
}

# node_pv_denied KUBECONFIG VERB PV [ARGS...]: VERB (delete, patch) on PV as that kubeconfig's
# user must be refused by the chart's admission policy, and the PV must stay.
node_pv_denied() {
    local kc=$1 verb=$2 pv=$3 out
    shift 3
    if out=$("$BIN/kubectl" --kubeconfig "$kc" "$verb" pv "$pv" "$@" 2>&1); then
        fail "the node plugin's token could $verb PV $pv" || return 1
    fi
    grep -q "ValidatingAdmissionPolicy 'ferrovol-node-pvs'" <<<"$out" ||
        fail "$verb of PV $pv failed, but not by the admission policy: $out" || return 1
    k get pv "$pv" >/dev/null || fail "PV $pv is gone after a refused $verb" || return 1
}

# The chart's ValidatingAdmissionPolicy on the real API server. RBAC lets the node pod's
# ServiceAccount delete and patch every PV; with the token of NODE_SMALL's node plugin (bound to
# its Pod, so the API server names the node), only a PV of local.csi.ferrovol.io pinned to
# NODE_SMALL may be patched and deleted. A PV pinned to NODE_BIG, a PV of another driver pinned
# to NODE_SMALL, and any PV with a token bound to no node are refused. Runs while both nodes
# exist.
scenario_node_pv_policy() {
    SCENARIO="m) a node plugin may patch and delete only its own node's PVs"
    local kc unbound token
    kc="$(node_dir "$NODE_SMALL")/provisioner.kubeconfig"
    unbound="$E2E_DIR/node-unbound.kubeconfig"
    k get validatingadmissionpolicybinding ferrovol-node-pvs >/dev/null 2>&1 ||
        fail "the chart's ValidatingAdmissionPolicyBinding ferrovol-node-pvs is not installed (needs helm)" || return 1
    token=$(k -n ferrovol create token ferrovol-node --duration 10m) || return 1
    kubeconfig "$unbound" --token "$token"
    { node_pv np-own local.csi.ferrovol.io "$NODE_SMALL" &&
        node_pv np-other local.csi.ferrovol.io "$NODE_BIG" &&
        node_pv np-foreign other.csi.example "$NODE_SMALL"; } || fail "creating the PVs" || return 1
    local label=(--type=merge -p '{"metadata":{"labels":{"ferrovol-e2e":"patched"}}}')
    node_pv_denied "$kc" delete np-other --wait=false || return 1
    node_pv_denied "$kc" patch np-other "${label[@]}" || return 1
    node_pv_denied "$kc" delete np-foreign --wait=false || return 1
    node_pv_denied "$kc" patch np-foreign "${label[@]}" || return 1
    node_pv_denied "$unbound" delete np-own --wait=false || return 1
    "$BIN/kubectl" --kubeconfig "$kc" patch pv np-own "${label[@]}" >/dev/null ||
        fail "the node plugin of $NODE_SMALL could not patch its own PV np-own" || return 1
    "$BIN/kubectl" --kubeconfig "$kc" delete pv np-own --wait=false >/dev/null ||
        fail "the node plugin of $NODE_SMALL could not delete its own PV np-own" || return 1
    wait_for 30 "PV np-own to go" node_pv_gone np-own || fail "PV np-own was not deleted" || return 1
    k delete pv np-other np-foreign --wait=false >/dev/null
    echo "ok $SCENARIO"
}
node_pv_gone() { ! k get pv "$1" >/dev/null 2>&1; }

scenario_no_rbac_denials() {
    SCENARIO="l) no RBAC or admission denial in any component's log"
    local denied
    denied=$({ rbac_denials; admission_denials; } | sort | uniq -c)
    [ -z "$denied" ] || fail "denied by RBAC or admission (logs/*.log):"$'\n'"$denied" || return 1
    echo "ok $SCENARIO"
}
