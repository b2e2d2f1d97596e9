#!/usr/bin/env bash
# ferrovol's end-to-end suite against a real Kubernetes control plane, run as plain
# processes on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, and on
# each of two fake nodes ferrovol (hostpath and device backends, loop devices as disks) with a
# node-deployed csi-provisioner; NFS on nfs-ganesha with the central controller, csi-resizer, the
# snapshot controller with node-deployed csi-snapshotters, and the node-loss controller
# (tests/e2e/device.sh, nfs.sh, expand.sh, snapshots.sh, nodeloss.sh).
# There is no kubelet: the harness writes the Node and CSINode objects and drives NodeStage and
# NodePublish over the driver's socket itself.
#
# Then the real-node phase (tests/e2e/realnodes.sh), on a fresh control plane of its own: two real
# nodes (containerd, kubelet, kube-proxy, each in its own network and mount namespace) on this
# kernel, the chart installed with `helm install` from images built here (scripts/image.sh), and
# the scenarios of tests/e2e/real_scenarios.sh (hostpath, device, NFS, lifecycle).
#
# Builds what it needs first (scripts/e2e-build.sh, cached; cargo build of ferrovol; the images).
# Ends with `e2e: N passed, N failed` over both phases. On failure the logs stay in the
# directories it prints.
# Env: FERROVOL_E2E_PHASES  the phases to run, "fake real" by default; "real" runs only the
#                           real-node phase, "fake" only the fake-node one.
#      FERROVOL_E2E_BENCH=1 runs the real-node benchmark after the phase's scenarios,
#      FERROVOL_E2E_REAL_SCENARIOS=0 skips them (scripts/bench-nodes.sh sets both).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PHASES=" ${FERROVOL_E2E_PHASES:-fake real} "

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/e2e.sh: the e2e suite mounts filesystems and loop devices; run as root" >&2
    exit 1
fi
need_apt=()
command -v jq >/dev/null || need_apt+=(jq)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v mkfs.ext4 >/dev/null || need_apt+=(e2fsprogs)
command -v ss >/dev/null || need_apt+=(iproute2)
command -v curl >/dev/null || need_apt+=(curl)
# NFS scenarios: a user-space NFS server (VFS backend) and rpcbind.
command -v ganesha.nfsd >/dev/null || need_apt+=(nfs-ganesha)
ls /usr/lib/*/ganesha/libfsalvfs.so >/dev/null 2>&1 || need_apt+=(nfs-ganesha-vfs)
command -v rpcbind >/dev/null || need_apt+=(rpcbind)
# Real nodes: a container runtime with CNI plugins, and the tools scripts/image.sh builds the
# images with (a Debian rootfs, a static busybox).
command -v containerd >/dev/null || need_apt+=(containerd)
command -v runc >/dev/null || need_apt+=(runc)
[ -x /usr/lib/cni/bridge ] || need_apt+=(containernetworking-plugins)
dpkg -s busybox-static >/dev/null 2>&1 || need_apt+=(busybox-static)
command -v mmdebstrap >/dev/null || need_apt+=(mmdebstrap)
command -v iptables >/dev/null || need_apt+=(iptables)
command -v setcap >/dev/null || need_apt+=(libcap2-bin)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "== installing ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

BIN=$(scripts/e2e-build.sh | tail -1)
echo "== cargo build --release --bin ferrovol"
cargo build --quiet --release --bin ferrovol
FERROVOL=$ROOT/target/release/ferrovol

E2E_DIR=$(mktemp -d /tmp/ferrovol-e2e.XXXXXX)
NODE_SMALL=e2e-node-a
NODE_BIG=e2e-node-b
NODES=("$NODE_SMALL" "$NODE_BIG")
passed=0
failed=0

# shellcheck source=tests/e2e/cluster.sh
source tests/e2e/cluster.sh
# shellcheck source=tests/e2e/nodes.sh
source tests/e2e/nodes.sh
# shellcheck source=tests/e2e/scenarios.sh
source tests/e2e/scenarios.sh
# shellcheck source=tests/e2e/nfs.sh
source tests/e2e/nfs.sh
# shellcheck source=tests/e2e/expand.sh
source tests/e2e/expand.sh
# shellcheck source=tests/e2e/snapshots.sh
source tests/e2e/snapshots.sh
# shellcheck source=tests/e2e/device.sh
source tests/e2e/device.sh
# shellcheck source=tests/e2e/nodeloss.sh
source tests/e2e/nodeloss.sh
# shellcheck source=tests/e2e/rbac.sh
source tests/e2e/rbac.sh

fake_teardown() {
    stop_all
    unmount_all
    device_teardown
    if [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]; then
        rm -rf "$E2E_DIR"
    else
        echo "e2e: logs of the control plane, ferrovol and the provisioners are in $E2E_DIR/logs"
    fi
}
finish() {
    [ -n "${FAKE_UP:-}" ] && fake_teardown
    echo "e2e: $passed passed, $failed failed"
}
trap finish EXIT

# The chart's objects when the chart is in the tree and helm is installed, else the minimal
# manifests that follow its names.
apply_driver_objects() {
    if [ -d charts/ferrovol ] && command -v helm >/dev/null; then
        k create namespace ferrovol >/dev/null
        # The snapshot CRDs first: the chart's VolumeSnapshotClasses need them.
        snapshot_crds || return 1
        helm template ferrovol charts/ferrovol --namespace ferrovol --include-crds \
            --set local.device.enabled=true --set nfs.enabled=true --set snapshots.enabled=true |
            k apply -f - >/dev/null || return 1
    else
        k apply -f tests/e2e/manifests/ferrovol.yaml -f tests/e2e/manifests/node-owner.yaml >/dev/null &&
            "$FERROVOL" crd | k apply -f - >/dev/null &&
            k apply -f tests/e2e/manifests/device.yaml >/dev/null
    fi
}

# The fake-node phase: its scenarios, then its control plane stopped and its scratch dir removed.
fake_phase() {
echo "== control plane (logs: $E2E_DIR/logs)"
start_t=$SECONDS
FAKE_UP=1
if ! device_setup || ! cluster_up || ! apply_driver_objects ||
    ! node_up "$NODE_SMALL" 64M || ! node_up "$NODE_BIG" 1G ||
    ! nfs_up || ! expand_up || ! snapshots_up; then
    echo "FAIL setting up the control plane and nodes"
    failed=$((failed + 1))
    exit 1
fi
echo "== up in $((SECONDS - start_t))s; scenarios"
# scenario_node_loss deletes a Node: it runs after every scenario that needs both nodes, and
# the RBAC check reads every component's log at the end.
for s in scenario_pod_ready scenario_capacity scenario_steering scenario_delete "${DEVICE_SCENARIOS[@]}" \
    scenario_nfs_provision scenario_expand_nfs scenario_nfs_delete \
    scenario_expand_hostpath scenario_snapshot_restore scenario_node_pv_policy scenario_node_loss \
    scenario_no_rbac_denials; do
    if "$s"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
echo "== scenarios done in $((SECONDS - start_t))s"
fake_teardown
FAKE_UP=
}

# The real-node phase runs as its own process (in network namespaces it makes) and reports its
# counts in a file.
real_phase() {
    local start_t=$SECONDS images results
    images=$(scripts/image.sh | tail -1)
    results=$(mktemp /tmp/ferrovol-e2e-real-results.XXXXXX)
    BIN=$BIN RN_IMAGES=$images HELM=$(command -v helm) RN_BENCH=${FERROVOL_E2E_BENCH:-0} \
        RN_SCENARIOS=${FERROVOL_E2E_REAL_SCENARIOS:-1} tests/e2e/realnodes.sh "$results" || true
    local p=0 f=1
    read -r p f <"$results" || echo "FAIL real nodes: the phase reported no counts"
    rm -f "$results"
    passed=$((passed + p))
    failed=$((failed + f))
    echo "== real-node phase done in $((SECONDS - start_t))s"
}

[[ $PHASES == *" fake "* ]] && fake_phase
[[ $PHASES == *" real "* ]] && real_phase
[ "$failed" -eq 0 ]
