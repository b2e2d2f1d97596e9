# Sourced by tests/e2e/realnodes.sh: real nodes on one kernel. Each node is containerd + kubelet
# + kube-proxy in a network namespace of its own (a veth pair to the control plane's bridge) and a
# mount namespace of its own, where per-node directories are bind-mounted over the paths the chart,
# containerd and the kubelet use whatever their configuration says (/var/lib/kubelet,
# /var/lib/ferrovol, /var/lib/containerd, /run/containerd, /var/lib/cni, /etc/cni/net.d,
# /var/log/pods, /var/log/containers; /var/lib/local-path for the benchmark). Every process of a
# node lives in the cgroup RN_CG/<node> of every hierarchy (the kubelet's cgroupRoot is below it),
# so a node can be "powered off" by killing that cgroup. /dev and /sys are the host's, shared by
# both nodes.
#
# Needs: BIN, E2E_DIR, RN_NET (network prefix, e.g. 10.99.0), the cluster.sh functions.

RN_CG=ferrovol-e2e-$$
RN_NODE_PATHS=(/var/lib/kubelet /var/lib/ferrovol /var/lib/containerd /run/containerd /var/lib/cni
    /etc/cni/net.d /var/log/pods /var/log/containers /var/lib/local-path)

rn_dir() { echo "$E2E_DIR/nodes/$1"; }
rn_mntns() { echo "$E2E_DIR/ns/$1.mnt"; }
rn_netns() { echo "/run/netns/$1-$$"; }
# in_node NODE CMD...: CMD in NODE's mount and network namespaces.
in_node() {
    local n=$1
    shift
    nsenter --mount="$(rn_mntns "$n")" --net="$(rn_netns "$n")" -- "$@"
}
# node_ctr NODE ARGS...: containerd's ctr on NODE, in the namespace the kubelet uses.
node_ctr() {
    local n=$1
    shift
    in_node "$n" ctr -a /run/containerd/containerd.sock -n k8s.io "$@"
}

# rn_cgroups_make NODE: RN_CG/NODE in every cgroup v1 hierarchy (cpuset needs cpus and mems
# before a process may join).
rn_cgroups_make() {
    local h d
    for h in /sys/fs/cgroup/*/; do
        for d in "$h$RN_CG" "$h$RN_CG/$1" "$h$RN_CG/$1/runtime"; do
            mkdir -p "$d"
            if [ -f "$d/cpuset.cpus" ]; then
                cat "$(dirname "$d")/cpuset.cpus" >"$d/cpuset.cpus"
                cat "$(dirname "$d")/cpuset.mems" >"$d/cpuset.mems"
            fi
        done
    done
}

# rn_cgroup_kill NODE: kills every process in NODE's cgroups until none is left.
rn_cgroup_kill() {
    local i pids
    for ((i = 0; i < 50; i++)); do
        pids=$(find /sys/fs/cgroup/pids/"$RN_CG/$1" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
        [ -z "$pids" ] && return 0
        # shellcheck disable=SC2086
        kill -9 $pids 2>/dev/null
        sleep 0.2
    done
    echo "e2e: processes of $1 survive SIGKILL: $pids" >&2
    return 1
}

rn_cgroups_remove() {
    local h
    for h in /sys/fs/cgroup/*/; do
        [ -d "$h$RN_CG" ] && find "$h$RN_CG" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    return 0
}

# node_start_in_cgroup NAME NODE CMD...: `start`, with CMD in NODE's runtime cgroup and namespaces.
node_start() {
    local name=$1 n=$2
    shift 2
    start "$name" sh -c 'for h in /sys/fs/cgroup/*/; do echo $$ >"$h$0/cgroup.procs"; done; exec "$@"' \
        "$RN_CG/$n/runtime" nsenter --mount="$(rn_mntns "$n")" --net="$(rn_netns "$n")" -- "$@"
}

# rn_network NODE INDEX: the node's network namespace with INDEX's address on a veth pair whose
# other end is on the control plane's bridge; pods get 10.244.INDEX.0/24 and are masqueraded.
rn_network() {
    local n=$1 i=$2 ns=$n-$$
    ip netns add "$ns" || return 1
    ip -n "$ns" link set lo up
    ip -n "$ns" link add eth0 type veth peer name "v$i" netns "$RN_CP_NS" || return 1
    ip -n "$RN_CP_NS" link set "v$i" master br0 up
    ip -n "$ns" addr add "$RN_NET.$((10 + i))/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "$RN_NET.1"
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
}

# rn_mounts NODE: NODE's mount namespace with its own copy of RN_NODE_PATHS, shared so pod mounts
# propagate (the kubelet dir, the hostpath base) and a shared /dev for the chart's HostToContainer.
rn_mounts() {
    local n=$1 d p
    d=$(rn_dir "$n")
    touch "$(rn_mntns "$n")"
    unshare --mount="$(rn_mntns "$n")" --propagation private true || return 1
    for p in "${RN_NODE_PATHS[@]}"; do mkdir -p "$d/root$p" "$p"; done
    nsenter --mount="$(rn_mntns "$n")" -- sh -ec '
        d=$1; shift
        for p in "$@"; do mount --bind "$d/root$p" "$p"; mount --make-rshared "$p"; done
        mount --make-rshared /dev' sh "$d" "${RN_NODE_PATHS[@]}"
}

# rn_btrfs_base NODE: a btrfs filesystem with quotas (a loop device over a sparse file) as NODE's
# hostpath base, so hostpath volumes there get qgroup limits.
rn_btrfs_base() {
    local img loop
    img=$(rn_dir "$1")/btrfs.img
    truncate -s 1G "$img"
    loop=$(losetup --find --show "$img") || return 1
    LOOPS+=("$loop")
    mkfs.btrfs -q "$loop" >/dev/null || return 1
    nsenter --mount="$(rn_mntns "$1")" -- sh -ec '
        mkdir -p /var/lib/ferrovol/hostpath
        mount -t btrfs "$1" /var/lib/ferrovol/hostpath
        btrfs quota enable /var/lib/ferrovol/hostpath' sh "$loop"
}

# rn_configs NODE INDEX: containerd's, the CNI's, the kubelet's and kube-proxy's configuration.
rn_configs() {
    local n=$1 i=$2 d
    d=$(rn_dir "$n")
    mkdir -p "$d/pki" "$d/root/etc/cni/net.d"
    client_cert "node-$n" "system:node:$n" system:nodes
    kubeconfig "$d/kubelet.kubeconfig" "node-$n"
    client_cert "proxy-$n" system:kube-proxy
    kubeconfig "$d/proxy.kubeconfig" "proxy-$n"
    cat >"$d/containerd.toml" <<EOF
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$RN_PAUSE_IMAGE"
  # runc cannot lower the sandbox's oom_score_adj without CAP_SYS_RESOURCE.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
EOF
    cat >"$d/root/etc/cni/net.d/10-e2e.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "e2e", "plugins": [{"type": "bridge", "bridge": "cni0",
  "isGateway": true, "ipMasq": true, "hairpinMode": true,
  "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.$i.0/24"}]],
           "routes": [{"dst": "0.0.0.0/0"}]}}]}
EOF
    cat >"$d/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# The CI machine has cgroup v1 hierarchies; containerd 1.6 cannot tell the driver.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$RN_CG/$n
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
address: $RN_NET.$((10 + i))
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
# Volume stats (NodeGetVolumeStats) are read this often; the expansion scenario waits for them.
volumeStatsAggPeriod: 2s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
failSwapOn: false
podLogsDir: /var/log/pods
# Nodes share one disk with everything else on the machine: never evict for it.
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
syncFrequency: 10s
nodeStatusUpdateFrequency: 4s
EOF
}

# rn_import_images NODE: every e2e image into NODE's containerd (no registry).
rn_import_images() {
    local name ref archive
    while read -r name ref archive; do
        node_ctr "$1" images import "$archive" >/dev/null || {
            echo "e2e: cannot import $name ($archive) on $1" >&2
            return 1
        }
    done <"$RN_IMAGES/refs"
}

# rn_runtime_up NODE: containerd on NODE, with the images imported.
rn_runtime_up() {
    node_start "containerd-$1" "$1" containerd --config "$(rn_dir "$1")/containerd.toml"
    wait_for 60 "containerd on $1" in_node "$1" ctr -a /run/containerd/containerd.sock version || return 1
}

# rn_kubelet_up NODE INDEX: the kubelet and kube-proxy of NODE.
rn_kubelet_up() {
    local n=$1 i=$2 d
    d=$(rn_dir "$n")
    node_start "kubelet-$n" "$n" "$BIN/kubelet" --config "$d/kubelet.yaml" \
        --kubeconfig "$d/kubelet.kubeconfig" --root-dir /var/lib/kubelet --cert-dir "$d/pki" \
        --hostname-override "$n" --node-ip "$RN_NET.$((10 + i))" --v=2
    node_start "kube-proxy-$n" "$n" "$BIN/kube-proxy" --kubeconfig "$d/proxy.kubeconfig" \
        --hostname-override "$n" --cluster-cidr 10.244.0.0/16 --proxy-mode iptables \
        --conntrack-max-per-core 0 --metrics-bind-address 127.0.0.1:10249 \
        --healthz-bind-address 127.0.0.1:10256 --v=2
}

# rn_node_up NODE INDEX: a whole node, up to its Node object being Ready.
rn_node_up() {
    local n=$1 i=$2
    mkdir -p "$(rn_dir "$n")" "$E2E_DIR/ns"
    rn_cgroups_make "$n" && rn_network "$n" "$i" && rn_mounts "$n" || return 1
    if [ "$n" = "$RN_BTRFS_NODE" ]; then rn_btrfs_base "$n" || return 1; fi
    rn_configs "$n" "$i" && rn_runtime_up "$n" && rn_import_images "$n" && rn_kubelet_up "$n" "$i"
}

# rn_node_down NODE: kills every process of NODE (pods, containerd, kubelet, kube-proxy) and
# tears down every mount below its paths: a power cut, then the mounts a reboot would not keep.
rn_node_down() {
    local n=$1 p
    rn_cgroup_kill "$n" || return 1
    [ -e "$(rn_mntns "$n")" ] || return 0
    for p in "${RN_NODE_PATHS[@]}"; do
        nsenter --mount="$(rn_mntns "$n")" -- sh -c \
            'findmnt -rn -o TARGET | grep "^$1/" | sort -r | xargs -r -n1 umount -l' sh "$p"
    done
}

# rn_node_teardown NODE: rn_node_down, then the namespaces, the node's dirs and its cgroups go.
rn_node_teardown() {
    local n=$1 p
    rn_node_down "$n"
    if [ -e "$(rn_mntns "$n")" ]; then
        for p in "${RN_NODE_PATHS[@]}"; do
            nsenter --mount="$(rn_mntns "$n")" -- umount -l "$p" 2>/dev/null
        done
        umount "$(rn_mntns "$n")" 2>/dev/null
        rm -f "$(rn_mntns "$n")"
    fi
    ip netns del "$n-$$" 2>/dev/null
    return 0
}
