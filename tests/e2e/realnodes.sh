#!/usr/bin/env bash
# The real-node phase of scripts/e2e.sh: two real nodes on one kernel (tests/e2e/kubelet.sh), the
# chart installed with `helm install` as an operator does, and the scenarios of
# tests/e2e/real_scenarios.sh. Networking uses only namespaces it makes: the control plane (etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, snapshot-controller, and this script's
# kubectl and helm) runs in a network namespace with a bridge at RN_NET.1, each node's namespace is
# joined to that bridge by a veth pair (RN_NET.11, RN_NET.12), and nfs-ganesha with its own rpcbind
# serves NFS from a namespace of its own at RN_NET.2. Pods reach the API server through the
# `kubernetes` Service (kube-proxy on each node) and ganesha through the node's masquerade. Each
# node's disks for the device backend are loop devices of its own (tests/e2e/real_devices.sh).
#
# Usage: tests/e2e/realnodes.sh RESULTS   (run by scripts/e2e.sh, as root)
# Needs in the environment: BIN (scripts/e2e-build.sh's bin dir), RN_IMAGES (scripts/image.sh's
# images dir), HELM. RN_SCENARIOS=0 skips the scenarios; RN_BENCH=1 runs the benchmark
# (tests/e2e/real_bench.sh) after them. Prints `ok NAME` / `FAIL NAME: why` per scenario and writes "PASSED FAILED" to
# RESULTS. Everything it starts is stopped and removed on exit; on failure the logs stay in the
# scratch directory it prints.
set -uo pipefail
cd "$(dirname "$0")/../.."
RESULTS=$1
RN_NET=10.99.0
RN_CP_NS=ferrovol-e2e-cp-$$

# Outside: the control plane's namespace and bridge, then this script again inside it.
if [ -z "${RN_INSIDE:-}" ]; then
    ip netns add "$RN_CP_NS" || exit 1
    ip -n "$RN_CP_NS" link set lo up
    ip -n "$RN_CP_NS" link add br0 type bridge
    ip -n "$RN_CP_NS" addr add "$RN_NET.1/24" dev br0
    ip -n "$RN_CP_NS" link set br0 up
    trap 'ip netns del "$RN_CP_NS"' EXIT
    RN_INSIDE=$RN_CP_NS nsenter --net="/run/netns/$RN_CP_NS" -- "$0" "$@"
    exit $?
fi
RN_CP_NS=$RN_INSIDE

E2E_DIR=$(mktemp -d /tmp/ferrovol-e2e-real.XXXXXX)
mkdir -p "$E2E_DIR/logs" "$E2E_DIR/ns"
# Namespace files can only be bound below a private mount.
mount --bind "$E2E_DIR/ns" "$E2E_DIR/ns" && mount --make-private "$E2E_DIR/ns"
NODES=(e2e-real-a e2e-real-b)
# The first node's hostpath base is btrfs with quotas, the second's a plain directory.
RN_BTRFS_NODE=${NODES[0]}
RN_PAUSE_IMAGE=$(awk '$1 == "pause" {print $2}' "$RN_IMAGES/refs")
passed=0
failed=0
LOOPS=()

CLUSTER_ADDR=$RN_NET.1
CLUSTER_REAL_NODES=1
# shellcheck source=tests/e2e/cluster.sh
source tests/e2e/cluster.sh
# shellcheck source=tests/e2e/kubelet.sh
source tests/e2e/kubelet.sh
# shellcheck source=tests/e2e/real_install.sh
source tests/e2e/real_install.sh
# shellcheck source=tests/e2e/real_scenarios.sh
source tests/e2e/real_scenarios.sh
# shellcheck source=tests/e2e/real_devices.sh
source tests/e2e/real_devices.sh
# shellcheck source=tests/e2e/real_volumes.sh
source tests/e2e/real_volumes.sh
# shellcheck source=tests/e2e/real_lifecycle.sh
source tests/e2e/real_lifecycle.sh
# shellcheck source=tests/e2e/real_bench.sh
source tests/e2e/real_bench.sh
# shellcheck source=tests/e2e/real_pools.sh
source tests/e2e/real_pools.sh
# shellcheck source=tests/e2e/real_adopt.sh
source tests/e2e/real_adopt.sh
# The uninstall needs every volume gone; the upgrade from an earlier chart installs it again.
REAL_SCENARIOS=(scenario_hostpath scenario_device_fs scenario_device_block scenario_nfs scenario_snapshot scenario_ephemeral
    scenario_btrfs_expand scenario_pools scenario_adopt_in_use scenario_upgrade_roll scenario_kill_plugin scenario_reboot
    scenario_uninstall scenario_upgrade_from_old)

finish() {
    local n l
    rn_pools_unmount
    for n in "${NODES[@]}"; do rn_node_teardown "$n"; done
    nfs_server_down
    stop_all
    for n in "${NODES[@]}"; do rn_cgroup_kill "$n" >/dev/null 2>&1; done
    rn_cgroups_remove
    for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
    rn_devices_down
    umount "$E2E_DIR/ns" 2>/dev/null
    if [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]; then
        rm -rf "$E2E_DIR"
    else
        echo "e2e real nodes: logs are in $E2E_DIR/logs"
    fi
    echo "$passed $failed" >"$RESULTS"
}
trap finish EXIT

node_ready() { [ "$(k get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }

t0=$SECONDS
echo "== real nodes: control plane (logs: $E2E_DIR/logs)"
if ! cluster_up || ! nfs_server_up || ! rn_devices_up || ! rn_pools_values; then
    echo "FAIL real nodes: control plane, NFS server or loop devices"
    failed=$((failed + 1))
    exit 1
fi
i=1
for n in "${NODES[@]}"; do
    rn_node_up "$n" "$i" || {
        echo "FAIL real nodes: bringing up $n"
        failed=$((failed + 1))
        exit 1
    }
    i=$((i + 1))
done
for n in "${NODES[@]}"; do
    wait_for 120 "node $n Ready" node_ready "$n" || {
        echo "FAIL real nodes: $n not Ready"
        failed=$((failed + 1))
        exit 1
    }
done
echo "== real nodes: both Ready after $((SECONDS - t0))s"
t1=$SECONDS
if ! real_install; then
    echo "FAIL real nodes: helm install"
    failed=$((failed + 1))
    exit 1
fi
echo "== real nodes: chart installed and its pods Ready in $((SECONDS - t1))s"
[ "${RN_SCENARIOS:-1}" = 1 ] || REAL_SCENARIOS=()
for s in "${REAL_SCENARIOS[@]}"; do
    ts=$SECONDS
    if "$s"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
    echo "   ($s: $((SECONDS - ts))s)"
done
if [ "${RN_BENCH:-0}" = 1 ]; then
    tb=$SECONDS
    if real_bench; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
    echo "== real nodes: bench took $((SECONDS - tb))s"
fi
echo "== real nodes: done in $((SECONDS - t0))s"
