#!/usr/bin/env bash
# ferrovol's test command (README.md, .ci/run). Installs what it needs if missing, then runs:
# format and lint checks, unit and integration tests (as root: real mounts, loop devices,
# btrfs/XFS filesystems), the real csi-sanity for mount and block volumes, and a quick
# benchmark smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: the tests mount filesystems and attach loop devices; run as root" >&2
    exit 1
fi

CSI_SANITY_VERSION=v5.4.0
export PATH="$PATH:$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"

need_apt=()
command -v mkfs.xfs >/dev/null || need_apt+=(xfsprogs)
command -v mkfs.btrfs >/dev/null || need_apt+=(btrfs-progs)
command -v losetup >/dev/null || need_apt+=(mount)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "== installing ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# --- NFS (issue 8): a real nfs-ganesha server with rpcbind for tests/nfs_client.rs and
# benches/nfs.rs. Placed before the tests run, so they find it installed. ---
need_nfs=()
command -v ganesha.nfsd >/dev/null || need_nfs+=(nfs-ganesha)
[ -e /usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so ] || ls /usr/lib/*/ganesha/libfsalvfs.so >/dev/null 2>&1 ||
    need_nfs+=(nfs-ganesha-vfs)
command -v rpcbind >/dev/null || need_nfs+=(rpcbind)
# ip (netns, veth): the hung-server fixture of tests/nfs_backend.rs and benches/nfs.rs.
command -v ip >/dev/null || need_nfs+=(iproute2)
if [ ${#need_nfs[@]} -gt 0 ]; then
    echo "== installing ${need_nfs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_nfs[@]}" >/dev/null
fi
# --- end NFS ---
if ! { command -v csi-sanity >/dev/null &&
    go version -m "$(command -v csi-sanity)" | grep -q "csi-test/v5[[:space:]]*$CSI_SANITY_VERSION"; }; then
    echo "== installing csi-sanity $CSI_SANITY_VERSION"
    go install "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$CSI_SANITY_VERSION"
fi

# ---- device discovery (issue 7): libudev/libblkid to link (needed by every build below),
# tools that write test signatures ----
need_dev=()
[ -e /usr/include/libudev.h ] || need_dev+=(libudev-dev)
[ -e /usr/include/blkid/blkid.h ] || need_dev+=(libblkid-dev)
command -v pkg-config >/dev/null || need_dev+=(pkg-config)
command -v pvcreate >/dev/null || need_dev+=(lvm2)
command -v sgdisk >/dev/null || need_dev+=(gdisk)
command -v sfdisk >/dev/null || need_dev+=(fdisk)
if [ ${#need_dev[@]} -gt 0 ]; then
    echo "== installing ${need_dev[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_dev[@]}" >/dev/null
fi
# ---- end device discovery install ----

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== unit and integration tests"
cargo test --lib --bins --tests
if [ -e /proc/fs/xfs/xqmstat ]; then
    echo "== XFS project quota tests (this kernel has XFS quota)"
    cargo test --test quota xfs:: -- --ignored
else
    echo "== XFS project quota tests: not run, this kernel lacks XFS quota (btrfs qgroup tests cover enforcement)"
fi
# --- in-process CSI service tests as an unprivileged user (tests/inprocess) ---
# They ran as root above; they must hold without root too (no mounts, no chown).
echo "== in-process CSI service tests as uid 65534"
inprocess_bin=$(cargo test --test inprocess --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*inprocess[^"]*\)".*/\1/p' | tail -1)
inprocess_tmp=$(mktemp -d)
install -m 0755 "$inprocess_bin" "$inprocess_tmp/inprocess"
chown 65534:65534 "$inprocess_tmp"
(cd "$inprocess_tmp" && setpriv --reuid=65534 --regid=65534 --clear-groups \
    env HOME="$inprocess_tmp" TMPDIR="$inprocess_tmp" ./inprocess --quiet)
rm -rf "$inprocess_tmp"
# --- end in-process section ---
echo "== csi-sanity $CSI_SANITY_VERSION"
cargo build --release --bin ferrovol
CSI_SANITY=$(command -v csi-sanity) tests/sanity/run.sh
echo "== benchmark smoke run (figures: cargo bench --bench ops)"
FERROVOL_BENCH_QUICK=1 cargo bench --bench ops
# --- NFS (issue 8): NFS client and driver benchmark smoke run (figures: cargo bench --bench nfs) ---
echo "== NFS client and driver benchmark smoke run"
FERROVOL_BENCH_QUICK=1 cargo bench --bench nfs
# --- end NFS ---

# --- chart checks (issue 11; owner: chart branch) ---------------------------------------------
# helm lint/template per values combination, kubeconform -strict on generated schemas, deploy/
# equal to a fresh render. Installs helm v4 and kubeconform with `go install` when missing (the
# first helm build takes minutes). Then the cargo tests that need helm run again with it present.
echo "== chart checks (scripts/chart-check.sh)"
scripts/chart-check.sh
cargo test --test chart --test chart_classes
# --- end chart checks ---------------------------------------------------------------------------

# ---- device discovery (issue 7): bench smoke run (its tests ran with the integration tests) ----
echo "== discovery benchmark smoke run (figures: cargo bench --bench devices)"
FERROVOL_BENCH_QUICK=1 cargo bench --bench devices
# ---- end device discovery ----

# ---- hostpath snapshots (issue 9): bench smoke run (figures: cargo bench --bench snapshots) ----
echo "== snapshot benchmark smoke run (figures: cargo bench --bench snapshots)"
FERROVOL_BENCH_QUICK=1 cargo bench --bench snapshots
# ---- end hostpath snapshots ----

# --- e2e (issue 12): a real control plane (etcd, kube-apiserver, controller-manager, scheduler)
# with two fake nodes running ferrovol and csi-provisioner; scripts/e2e.sh builds them first
# (cached in ~/.cache/ferrovol-e2e and the Go caches). FERROVOL_E2E=0 skips it. ---
if [ "${FERROVOL_E2E:-1}" != 0 ]; then
    if [ "${FERROVOL_FREE_DISK:-0}" = 1 ]; then
        # The e2e runs the release binary; the debug build (test binaries) is not needed again.
        echo "== FERROVOL_FREE_DISK=1: removing target/debug ($(du -sh target/debug 2>/dev/null | cut -f1))"
        rm -rf target/debug
    fi
    echo "== e2e on a real Kubernetes control plane (scripts/e2e.sh)"
    scripts/e2e.sh
else
    echo "== e2e: skipped (FERROVOL_E2E=0)"
fi
# --- end e2e ---
