# Sourced by scripts/e2e.sh: node loss. MUST RUN LAST: it stops one fake node's
# processes and deletes its Node object, and the other scenarios need both nodes.
#
# `ferrovol node-loss` runs with the identity of the chart's node-loss ServiceAccount (a
# TokenRequest token), so a verb missing from the chart's ClusterRole fails the scenario. It runs
# three times against the same lost node, each start also being the restart case (the node was
# deleted before the controller started):
#   off      : nothing is written, the lost volumes are only logged;
#   report   : lost PVs and their claims are annotated, claims get a Warning event;
#   recreate : the opted-in claim and its PV, and an unclaimed lost PV (with the provisioner's
#              finalizer), are deleted; the claim made anew lands on the surviving node.
# Throughout, the survivor's PV, a PV of another driver pinned to the lost node, and a claim
# that did not opt in keep their state.
#
# Needs: the scenarios.sh helpers (k, fail, check_placed, claim_and_pod, pv_of, pvc_bound),
# helm (the chart renders the ServiceAccount and its RBAC).

NL_LOST=$NODE_SMALL
NL_SURVIVOR=$NODE_BIG
NL_PID=
NL_PORT=

# nl_claim NAME NODE OPT_IN: a 8Mi hostpath claim (annotated ferrovol.io/node-loss=OPT_IN unless
# OPT_IN is empty) and a Pod that uses it, placed on NODE by a node selector.
nl_claim() {
    local annotations="{}"
    [ -n "$3" ] && annotations="{ferrovol.io/node-loss: $3}"
    k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $1, namespace: default, annotations: $annotations}
spec:
  storageClassName: $CLASS
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 8Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: default}
spec:
  automountServiceAccountToken: false
  nodeSelector: {kubernetes.io/hostname: $2}
  containers:
    - {name: app, image: "registry.k8s.io/pause:3.10", volumeMounts: [{name: data, mountPath: /data}]}
  volumes:
    - {name: data, persistentVolumeClaim: {claimName: $1}}
EOF
}

# nl_static_pv NAME DRIVER FINALIZERS: an unclaimed PV pinned to the lost node (a class no claim
# asks for, so the binder leaves it Available).
nl_static_pv() {
    k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata: {name: $1, finalizers: $3}
spec:
  capacity: {storage: 8Mi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Delete
  storageClassName: nl-static
  csi: {driver: $2, volumeHandle: "$NL_LOST/hostpath/$1"}
  nodeAffinity:
    required:
      nodeSelectorTerms:
        - matchExpressions: [{key: $TOPO, operator: In, values: [$NL_LOST]}]
EOF
}

# nl_start POLICY: (re)starts the controller under the chart ServiceAccount's token.
nl_start() {
    nl_stop
    NL_PORT=$(free_port)
    start "node-loss-$1" env KUBECONFIG="$E2E_DIR/node-loss.kubeconfig" RUST_LOG=info,kube=warn \
        "$FERROVOL" node-loss --policy "$1" --grace-period 1s \
        --kubeconfig "$E2E_DIR/node-loss.kubeconfig" --metrics-address "127.0.0.1:$NL_PORT"
    NL_PID=${PIDS[-1]}
    wait_for 30 "node-loss metrics" curl -sf "http://127.0.0.1:$NL_PORT/metrics"
}
nl_stop() {
    [ -n "$NL_PID" ] || return 0
    kill "$NL_PID" 2>/dev/null && wait "$NL_PID" 2>/dev/null
    NL_PID=
}

# nl_metric ACTION: ferrovol_node_loss_volumes_total{action=ACTION} of the running controller.
nl_metric() {
    curl -sf "http://127.0.0.1:$NL_PORT/metrics" |
        awk -v a="ferrovol_node_loss_volumes_total{action=\"$1\"}" '$1 == a {print $2}'
}
nl_metric_is() { [ "$(nl_metric "$1")" = "$2" ]; }

nl_pv_mark() { k get pv "$1" -o jsonpath='{.metadata.annotations.ferrovol\.io/node-lost}'; }
nl_pvc_mark() { k -n default get pvc "$1" -o jsonpath='{.metadata.annotations.ferrovol\.io/node-lost}'; }
nl_gone() { ! k "$@" >/dev/null 2>&1; }
# nl_events CLAIM REASON: Warning events of REASON about CLAIM.
nl_events() {
    k -n default get events -o json | jq --arg n "$1" --arg r "$2" \
        '[.items[] | select(.involvedObject.name == $n and .reason == $r and .type == "Warning")] | length'
}
nl_has_event() { [ "$(nl_events "$1" "$2")" -ge 1 ]; }

# nl_untouched: the survivor's claim and PV, the other driver's PV: present, unmarked, and the
# survivor's claim still Bound with its directory on the surviving node.
nl_untouched() {
    local pv
    pv=$(pv_of nl-survivor)
    pvc_bound nl-survivor || fail "the survivor's claim nl-survivor is not Bound" || return 1
    [ -z "$(nl_pv_mark "$pv")$(nl_pvc_mark nl-survivor)" ] || fail "the survivor's PV $pv was marked" || return 1
    [ -d "$(node_base "$NL_SURVIVOR")/$pv" ] || fail "the survivor's volume directory $pv is gone" || return 1
    k get pv nl-other-driver >/dev/null 2>&1 || fail "the other driver's PV nl-other-driver was deleted" || return 1
    [ -z "$(nl_pv_mark nl-other-driver)" ] || fail "the other driver's PV nl-other-driver was marked" || return 1
}

# e) Node loss, by the opt-in policy.
scenario_node_loss() {
    SCENARIO="k) node loss: off, report, recreate"
    command -v helm >/dev/null || fail "helm is needed to render the chart's node-loss RBAC" || return 1
    helm template ferrovol charts/ferrovol --namespace ferrovol --set nodeLoss.enabled=true \
        --show-only templates/node-loss.yaml | k apply -f - >/dev/null ||
        fail "cannot apply the chart's node-loss objects" || return 1
    local token
    token=$(k -n ferrovol create token ferrovol-node-loss --duration 1h) ||
        fail "no token for the ferrovol-node-loss ServiceAccount" || return 1
    kubeconfig "$E2E_DIR/node-loss.kubeconfig" --token "$token"

    nl_claim nl-recreate "$NL_LOST" recreate && nl_claim nl-report "$NL_LOST" "" &&
        nl_claim nl-survivor "$NL_SURVIVOR" recreate || fail "cannot create the claims" || return 1
    nl_static_pv nl-orphan "local.csi.ferrovol.io" "[external-provisioner.volume.kubernetes.io/finalizer]" &&
        nl_static_pv nl-other-driver other.csi.example "[]" || fail "cannot create the static PVs" || return 1
    local c node want
    for c in nl-recreate nl-report nl-survivor; do
        node=$(check_placed "$c") || { echo "$node"; return 1; }
        want=$NL_LOST
        [ "$c" = nl-survivor ] && want=$NL_SURVIVOR
        [ "$node" = "$want" ] || fail "$c placed on $node, not $want" || return 1
    done
    local pv_recreate pv_report
    pv_recreate=$(pv_of nl-recreate)
    pv_report=$(pv_of nl-report)

    # The node dies: its driver and provisioner stop, then its Node object is deleted.
    nl_start off || fail "the controller (policy off) did not start (logs/node-loss-off.log)" || return 1
    local p
    for p in "csi-provisioner-$NL_LOST" "ferrovol-$NL_LOST"; do
        kill "$(cat "$E2E_DIR/logs/$p.pid")" 2>/dev/null
    done
    k delete csinode "$NL_LOST" >/dev/null 2>&1
    k delete node "$NL_LOST" >/dev/null || fail "cannot delete node $NL_LOST" || return 1

    # off: the three local PVs of the lost node are seen, and nothing is written.
    wait_for 60 "policy off to see 3 lost volumes" nl_metric_is left 3 ||
        fail "policy off: left=$(nl_metric left), want 3 (logs/node-loss-off.log)" || return 1
    sleep 2
    for c in "$pv_recreate" "$pv_report" nl-orphan; do
        [ -z "$(nl_pv_mark "$c")" ] || fail "policy off marked PV $c" || return 1
    done
    for c in nl-recreate nl-report; do
        pvc_bound "$c" || fail "policy off: claim $c is no longer Bound" || return 1
        [ -z "$(nl_pvc_mark "$c")" ] || fail "policy off marked claim $c" || return 1
    done
    [ "$(nl_events nl-report NodeLost)" = 0 ] || fail "policy off emitted an event" || return 1
    nl_untouched || return 1

    # report: marks and events, after a restart, and nothing deleted.
    nl_start report || fail "the controller (policy report) did not start" || return 1
    wait_for 60 "3 volumes reported" nl_metric_is reported 3 ||
        fail "policy report: reported=$(nl_metric reported), want 3 (logs/node-loss-report.log)" || return 1
    for c in "$pv_recreate" "$pv_report" nl-orphan; do
        [ "$(nl_pv_mark "$c")" = "$NL_LOST" ] || fail "PV $c not marked with $NL_LOST" || return 1
    done
    for c in nl-recreate nl-report; do
        [ "$(nl_pvc_mark "$c")" = "$NL_LOST" ] || fail "claim $c not marked" || return 1
        pvc_bound "$c" || fail "policy report: claim $c is no longer Bound" || return 1
        wait_for 10 "NodeLost event on $c" nl_has_event "$c" NodeLost ||
            fail "no Warning NodeLost event on claim $c" || return 1
    done
    nl_untouched || return 1

    # recreate: the pod garbage collector (not run here) deletes the pods of a deleted node;
    # then the opted-in claim, its PV and the unclaimed PV go; the claim that did not opt in stays.
    nl_start recreate || fail "the controller (policy recreate) did not start" || return 1
    k -n default delete pod nl-recreate nl-report --grace-period=0 --force --wait=false >/dev/null 2>&1
    wait_for 90 "claim nl-recreate to go" nl_gone -n default get pvc nl-recreate ||
        fail "policy recreate: claim nl-recreate still exists" || return 1
    wait_for 60 "PV $pv_recreate to go" nl_gone get pv "$pv_recreate" ||
        fail "policy recreate: PV $pv_recreate still exists ($(k get pv "$pv_recreate" -o jsonpath='{.metadata.finalizers}'))" || return 1
    wait_for 60 "PV nl-orphan to go" nl_gone get pv nl-orphan ||
        fail "policy recreate: unclaimed PV nl-orphan still exists ($(k get pv nl-orphan -o jsonpath='{.metadata.finalizers}'))" || return 1
    nl_metric_is recreated 2 || fail "recreated=$(nl_metric recreated), want 2" || return 1
    nl_has_event nl-recreate RecreatingClaim || fail "no RecreatingClaim event on nl-recreate" || return 1
    pvc_bound nl-report || fail "the claim nl-report (no opt-in) is no longer Bound" || return 1
    [ "$(nl_pv_mark "$pv_report")" = "$NL_LOST" ] || fail "PV $pv_report lost its mark" || return 1
    nl_untouched || return 1

    # The workload's controller makes the claim anew: it is provisioned on the surviving node.
    claim_and_pod nl-recreate 8Mi || fail "cannot make nl-recreate anew" || return 1
    node=$(check_placed nl-recreate) || { echo "$node"; return 1; }
    [ "$node" = "$NL_SURVIVOR" ] || fail "the new nl-recreate landed on $node" || return 1
    nl_stop
    echo "ok $SCENARIO (off: 3 left; report: 3 marked; recreate: 2 deleted, new claim on $node)"
}
