# Sourced by tests/e2e/realnodes.sh: the benchmark on the real nodes (scripts/bench-nodes.sh), not
# a timed test. PVC-to-pod-Ready latency of ferrovol's hostpath class against local-path-provisioner
# v0.0.30 (tests/e2e/manifests/local-path.yaml; its helper pods use the local busybox image), both
# on the same node in the same run: one pod at a time (RN_BENCH_SINGLE runs), then 30 pods created
# at once by one StatefulSet. A pod's latency runs from the moment the harness creates the
# StatefulSet (its controller creates the claims straight away) to the moment the harness sees
# the pod Ready in a watch. Also the node plugin's VmRSS with 30 volumes published.

RN_BENCH_SINGLE=${RN_BENCH_SINGLE:-5}
RN_BENCH_MANY=${RN_BENCH_MANY:-30}

local_path_up() {
    sed -e "s|LPP_IMAGE|$(image_ref local-path-provisioner)|" -e "s|BUSYBOX_IMAGE|$(image_ref busybox)|" \
        tests/e2e/manifests/local-path.yaml | k apply -f - >/dev/null || return 1
    k -n local-path-storage rollout status deployment/local-path-provisioner --timeout "$RN_TIMEOUT" >/dev/null
}

# bench_statefulset NAME CLASS REPLICAS NODE: REPLICAS pods on NODE created in parallel, each with
# a 16Mi claim of CLASS.
bench_statefulset() {
    k apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: $1, namespace: default}
spec:
  serviceName: $1
  replicas: $3
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: $1}}
  template:
    metadata: {labels: {app: $1}}
    spec:
      terminationGracePeriodSeconds: 1
      automountServiceAccountToken: false
      nodeSelector: {kubernetes.io/hostname: $4}
      containers:
        - name: app
          image: $(image_ref busybox)
          imagePullPolicy: Never
          command: [sh, -c, "trap 'exit 0' TERM; while :; do sleep 1; done"]
          volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
    - metadata: {name: data}
      spec:
        storageClassName: $2
        accessModes: [ReadWriteOnce]
        resources: {requests: {storage: 16Mi}}
EOF
}

# bench_run NAME CLASS REPLICAS NODE: prints the seconds from creating the StatefulSet to each of
# its pods being Ready, one line per pod; leaves the StatefulSet running.
bench_run() {
    local name=$1 n=$3 t0 out=$E2E_DIR/bench-$1.events hdr=$E2E_DIR/bench-$1.headers
    : >"$out"
    : >"$hdr"
    # A watch on the API server stamps every event as it arrives; a pod's first Ready event is its
    # time. The server sends the response headers once the watch is in place.
    curl -sN --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" -D "$hdr" \
        "$APISERVER/api/v1/namespaces/default/pods?watch=1&labelSelector=app%3D$name" \
        > >(jq -r --unbuffered '.object.metadata.name + " " +
                ([.object.status.conditions[]? | select(.type == "Ready") | .status][0] // "-")' |
            while read -r pod ready; do echo "$EPOCHREALTIME $pod $ready"; done >"$out") &
    local watch=$!
    wait_for 30 "the watch of $name's pods" test -s "$hdr" || { kill "$watch"; return 1; }
    t0=$EPOCHREALTIME
    bench_statefulset "$name" "$2" "$n" "$4" || return 1
    all_ready() { [ "$(awk '$3 == "True" {print $2}' "$out" | sort -u | wc -l)" -ge "$n" ]; }
    wait_for 600 "$n pods of $name Ready" all_ready
    local rc=$?
    kill "$watch" 2>/dev/null
    [ $rc -eq 0 ] || return 1
    awk -v t0="$t0" '$3 == "True" && !seen[$2]++ {printf "%.3f\n", $1 - t0}' "$out"
}

bench_drop() {
    local pvcs
    pvcs=$(k -n default get pvc -o name | grep "data-$1-")
    k -n default delete statefulset "$1" --wait=true >/dev/null
    k -n default wait --for=delete pod -l "app=$1" --timeout 300s >/dev/null
    # shellcheck disable=SC2086
    k -n default delete $pvcs --wait=true >/dev/null
    wait_for 300 "the PVs of $1 gone" no_pvs_of "$1"
}
no_pvs_of() {
    ! k get pv -o jsonpath='{range .items[*]}{.spec.claimRef.name}{"\n"}{end}' | grep -q "^data-$1-"
}

# pct FILE P: the P-th percentile (nearest rank) of the numbers in FILE.
pct() { sort -n "$1" | awk -v p="$2" '{a[NR] = $1} END {i = int((p * NR + 99) / 100); if (i < 1) i = 1; print a[i]}'; }

# plugin_rss NODE: VmRSS (kB) of the ferrovol process of NODE's node pod.
plugin_rss() {
    local pod id pid
    pod=$(plugin_pod "$1")
    id=$(container_id "$pod" ferrovol ferrovol)
    pid=$(node_ctr "$1" tasks ls | awk -v id="$id" '$1 == id {print $2}')
    awk '/^VmRSS/ {print $2}' "/proc/$pid/status"
}

real_bench() {
    local node=${NODES[1]} class i f rss=""
    local_path_up || { echo "bench: local-path-provisioner did not start"; return 1; }
    for class in ferrovol-hostpath local-path; do
        f=$E2E_DIR/bench-$class-1.txt
        : >"$f"
        for i in $(seq 1 "$RN_BENCH_SINGLE"); do
            bench_run "b1-$class-$i" "$class" 1 "$node" >>"$f" || return 1
            bench_drop "b1-$class-$i" || return 1
        done
        f=$E2E_DIR/bench-$class-$RN_BENCH_MANY.txt
        bench_run "bn-$class" "$class" "$RN_BENCH_MANY" "$node" >"$f" || return 1
        [ "$class" = ferrovol-hostpath ] && rss=$(plugin_rss "$node")
        bench_drop "bn-$class" || return 1
    done
    echo "== bench: PVC-to-pod-Ready latency in seconds, node $node"
    printf '%-20s %10s %10s %10s %10s\n' provisioner "1 pod p50" "1 pod p95" "$RN_BENCH_MANY p50" "$RN_BENCH_MANY p95"
    for class in ferrovol-hostpath local-path; do
        printf '%-20s %10s %10s %10s %10s\n' "$class" \
            "$(pct "$E2E_DIR/bench-$class-1.txt" 50)" "$(pct "$E2E_DIR/bench-$class-1.txt" 95)" \
            "$(pct "$E2E_DIR/bench-$class-$RN_BENCH_MANY.txt" 50)" "$(pct "$E2E_DIR/bench-$class-$RN_BENCH_MANY.txt" 95)"
    done
    awk -v a="$(pct "$E2E_DIR/bench-local-path-$RN_BENCH_MANY.txt" 50)" \
        -v b="$(pct "$E2E_DIR/bench-ferrovol-hostpath-$RN_BENCH_MANY.txt" 50)" \
        'BEGIN {r = a / b; printf "bench: at %d pods ferrovol p50 is %.1fx local-path-provisioner'"'"'s (goal: at least 3x): %s\n", '"$RN_BENCH_MANY"', r, (r >= 3 ? "met" : "NOT met")}'
    echo "bench: ferrovol node plugin VmRSS with $RN_BENCH_MANY volumes published: ${rss:-?} kB"
}
