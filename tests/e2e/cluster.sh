# Sourced by scripts/e2e.sh: a Kubernetes control plane as plain processes on 127.0.0.1
# (etcd, kube-apiserver, kube-controller-manager, kube-scheduler), with certificates and the
# service-account key pair made by openssl. There is no kubelet and no container engine: Nodes,
# CSINodes and the node plugin's Pod are API objects the harness writes itself.
#
# Needs: BIN (the e2e-build.sh bin dir), E2E_DIR (scratch and logs). Sets KUBECONFIG (admin).
# With CLUSTER_REAL_NODES=1 (tests/e2e/realnodes.sh) the control plane serves real kubelets: it
# listens on CLUSTER_ADDR (an address in a network namespace the test made), publishes itself as
# the `kubernetes` Service's endpoint, authorizes nodes (Node,RBAC), reaches kubelets with a
# client certificate, and runs every default controller.
CLUSTER_ADDR=${CLUSTER_ADDR:-127.0.0.1}
CLUSTER_REAL_NODES=${CLUSTER_REAL_NODES:-0}

PIDS=()

# start NAME CMD...: runs CMD in the background, logging to $E2E_DIR/logs/NAME.log.
start() {
    local name=$1
    shift
    "$@" >"$E2E_DIR/logs/$name.log" 2>&1 &
    PIDS+=($!)
    echo "$!" >"$E2E_DIR/logs/$name.pid"
}

# wait_for SECONDS WHAT CMD...: polls CMD every half second until it succeeds.
wait_for() {
    local limit=$1 what=$2 i
    shift 2
    for ((i = 0; i < limit * 2; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    echo "e2e: timed out after ${limit}s waiting for $what" >&2
    return 1
}

free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 30000))
        ss -Hltn "sport = :$p" | grep -q . || { echo "$p"; return; }
    done
}

# client_cert NAME CN [O]: a client certificate signed by the cluster CA.
client_cert() {
    local subj="/CN=$2"
    [ -n "${3:-}" ] && subj="/O=$3$subj"
    openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$1.key" -subj "$subj" \
        -out "$PKI/$1.csr" 2>/dev/null
    openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
        -days 2 -out "$PKI/$1.crt" 2>/dev/null
}

# kubeconfig FILE USER (cert files $PKI/USER.*) or kubeconfig FILE --token TOKEN.
kubeconfig() {
    local file=$1
    local user=(--client-certificate="$PKI/$2.crt" --client-key="$PKI/$2.key" --embed-certs)
    [ "$2" = --token ] && user=(--token="$3")
    "$BIN/kubectl" config --kubeconfig="$file" set-cluster e2e --server="$APISERVER" \
        --certificate-authority="$PKI/ca.crt" --embed-certs >/dev/null
    "$BIN/kubectl" config --kubeconfig="$file" set-credentials u "${user[@]}" >/dev/null
    "$BIN/kubectl" config --kubeconfig="$file" set-context e2e --cluster=e2e --user=u >/dev/null
    "$BIN/kubectl" config --kubeconfig="$file" use-context e2e >/dev/null
}

make_pki() {
    PKI=$E2E_DIR/pki
    mkdir -p "$PKI"
    openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -subj "/CN=e2e-ca" \
        -days 2 -out "$PKI/ca.crt" 2>/dev/null
    # The serving certificate must name the address every client dials, and the `kubernetes`
    # Service's address, where pods dial.
    openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/apiserver.key" -subj "/CN=kube-apiserver" \
        -out "$PKI/apiserver.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,IP:%s,IP:10.96.0.1,DNS:localhost,DNS:kubernetes.default.svc\n' \
        "$CLUSTER_ADDR" >"$PKI/san.ext"
    openssl x509 -req -in "$PKI/apiserver.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
        -CAcreateserial -days 2 -extfile "$PKI/san.ext" -out "$PKI/apiserver.crt" 2>/dev/null
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
    client_cert admin admin system:masters
    client_cert controller-manager system:kube-controller-manager
    client_cert scheduler system:kube-scheduler
    client_cert apiserver-kubelet kube-apiserver-kubelet-client system:masters
}

cluster_up() {
    mkdir -p "$E2E_DIR/logs"
    make_pki
    local etcd_port etcd_peer api_port
    etcd_port=$(free_port)
    etcd_peer=$(free_port)
    api_port=$(free_port)
    APISERVER=https://$CLUSTER_ADDR:$api_port
    local real=(--endpoint-reconciler-type none --authorization-mode RBAC)
    local controllers=persistentvolume-binder-controller,persistentvolume-protection-controller,persistentvolumeclaim-protection-controller,serviceaccount-controller,namespace-controller,garbage-collector-controller
    if [ "$CLUSTER_REAL_NODES" = 1 ]; then
        real=(--authorization-mode Node,RBAC --kubelet-preferred-address-types InternalIP
            --kubelet-client-certificate "$PKI/apiserver-kubelet.crt"
            --kubelet-client-key "$PKI/apiserver-kubelet.key")
        controllers='*'
    fi
    start etcd "$BIN/etcd" --name e2e --data-dir "$E2E_DIR/etcd" \
        --listen-client-urls "http://127.0.0.1:$etcd_port" \
        --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
        --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
        --initial-cluster "e2e=http://127.0.0.1:$etcd_peer" \
        --unsafe-no-fsync
    # endpoint-reconciler none: there is no routable address to publish for the kubernetes
    # Service. RBAC is the authorizer, so a verb missing from our roles fails the test.
    # Privileged containers are allowed, as on every cluster that runs CSI node plugins, so the
    # chart's DaemonSet is accepted as written.
    start kube-apiserver "$BIN/kube-apiserver" \
        --etcd-servers "http://127.0.0.1:$etcd_port" \
        --bind-address "$CLUSTER_ADDR" --advertise-address "$CLUSTER_ADDR" --secure-port "$api_port" \
        "${real[@]}" \
        --allow-privileged=true \
        --client-ca-file "$PKI/ca.crt" \
        --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
        --service-account-issuer https://kubernetes.default.svc \
        --service-account-key-file "$PKI/sa.pub" \
        --service-account-signing-key-file "$PKI/sa.key" \
        --service-cluster-ip-range 10.96.0.0/24 \
        --cert-dir "$E2E_DIR/apiserver-certs"
    kubeconfig "$E2E_DIR/admin.kubeconfig" admin
    kubeconfig "$E2E_DIR/controller-manager.kubeconfig" controller-manager
    kubeconfig "$E2E_DIR/scheduler.kubeconfig" scheduler
    export KUBECONFIG=$E2E_DIR/admin.kubeconfig
    wait_for 120 "kube-apiserver /readyz" "$BIN/kubectl" get --raw /readyz || return 1
    # The PV binder, the protection finalizers, service accounts and namespaces are what a PVC
    # needs to reach the provisioner and to go away again. Each controller acts as its own
    # ServiceAccount, as in a real cluster: the controller-manager's user alone may not update PVCs.
    start kube-controller-manager "$BIN/kube-controller-manager" \
        --kubeconfig "$E2E_DIR/controller-manager.kubeconfig" \
        --secure-port 0 --leader-elect=false --use-service-account-credentials=true \
        --root-ca-file "$PKI/ca.crt" --controllers "$controllers"
    start kube-scheduler "$BIN/kube-scheduler" \
        --kubeconfig "$E2E_DIR/scheduler.kubeconfig" \
        --authentication-kubeconfig "$E2E_DIR/scheduler.kubeconfig" \
        --authorization-kubeconfig "$E2E_DIR/scheduler.kubeconfig" \
        --secure-port 0 --leader-elect=false
    wait_for 60 "the default ServiceAccount" "$BIN/kubectl" -n default get serviceaccount default
}

# fake_node NAME: what kubelet and node-driver-registrar would write for NAME: a Ready Node
# with room for pods and the driver's topology label, and its CSINode entry.
fake_node() {
    local n=$1
    "$BIN/kubectl" apply -f - >/dev/null <<EOF || return 1
apiVersion: v1
kind: Node
metadata:
  name: $n
  labels:
    kubernetes.io/hostname: $n
    topology.ferrovol.io/node: $n
---
apiVersion: storage.k8s.io/v1
kind: CSINode
metadata:
  name: $n
spec:
  drivers:
    - name: local.csi.ferrovol.io
      nodeID: $n
      topologyKeys: [topology.ferrovol.io/node]
EOF
    # The NodeTaint admission plugin taints a new Node not-ready; the node lifecycle
    # controller would lift it once kubelet reports Ready. Neither exists here.
    "$BIN/kubectl" taint node "$n" node.kubernetes.io/not-ready:NoSchedule- >/dev/null 2>&1 || true
    local now
    now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    "$BIN/kubectl" patch node "$n" --subresource=status --type=merge -p "{\"status\":{
        \"capacity\":{\"cpu\":\"4\",\"memory\":\"8Gi\",\"pods\":\"110\"},
        \"allocatable\":{\"cpu\":\"4\",\"memory\":\"8Gi\",\"pods\":\"110\"},
        \"conditions\":[{\"type\":\"Ready\",\"status\":\"True\",\"reason\":\"E2E\",
          \"lastHeartbeatTime\":\"$now\",\"lastTransitionTime\":\"$now\"}]}}" >/dev/null
}

# stop_all: stops every process this harness started, newest first, by pid, each before the
# next: kube-apiserver does not exit on SIGTERM while etcd is gone, so etcd must go last.
stop_all() {
    local i pid t
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[i]}
        kill "$pid" 2>/dev/null || continue
        for ((t = 0; t < 20; t++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}
