#!/usr/bin/env bash
# ferrovol's test command (README.md, .ci/run). Runs, in order, the stages:
#
#   install       Debian packages and csi-sanity, each only when missing
#   lint          cargo fmt --check, cargo clippy -D warnings
#   tests         unit and integration tests as root (real mounts, loop devices, btrfs/XFS,
#                 nfs-ganesha, FUSE), plus the XFS quota tests where the kernel has XFS quota
#   unprivileged  the in-process CSI service tests again as uid 65534
#   sanity        the real csi-sanity against every backend (tests/sanity/run.sh)
#   benches       benchmark smoke runs (figures: docs/benchmarks.md)
#   chart         scripts/chart-check.sh, then the chart tests with helm present
#   e2e           a real Kubernetes control plane (scripts/e2e.sh); FERROVOL_E2E=0 skips it
#
# `scripts/test.sh STAGE...` runs only the stages named. FERROVOL_FREE_DISK=1 removes the debug
# build before the e2e, which needs only the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."

CSI_SANITY_VERSION=v5.4.0
export PATH="$PATH:$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"

# The Debian packages the stages need: package, then a command (or a file, glob allowed) that
# shows it is installed. The e2e installs its own extra packages (scripts/e2e.sh).
PACKAGES=(
    xfsprogs mkfs.xfs                                  # XFS test and bench filesystems
    btrfs-progs mkfs.btrfs                             # btrfs qgroup tests, snapshot benches
    mount losetup                                      # loop devices
    libcap2-bin setcap                                 # file capability test (tests/process)
    libudev-dev /usr/include/libudev.h                 # device discovery links libudev ...
    libblkid-dev /usr/include/blkid/blkid.h            # ... and libblkid (every build)
    pkg-config pkg-config
    lvm2 pvcreate                                      # signatures written by device tests
    gdisk sgdisk
    fdisk sfdisk
    nfs-ganesha ganesha.nfsd                           # the NFS server of tests and benches
    nfs-ganesha-vfs '/usr/lib/*/ganesha/libfsalvfs.so'
    rpcbind rpcbind
    iproute2 ip                                        # network namespaces (hung-server fixture)
)

installed() {
    case "$1" in
    /*) compgen -G "$1" >/dev/null ;;
    *) command -v "$1" >/dev/null ;;
    esac
}

stage_install() {
    local missing=() i
    for ((i = 0; i < ${#PACKAGES[@]}; i += 2)); do
        installed "${PACKAGES[i + 1]}" || missing+=("${PACKAGES[i]}")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "== installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if ! { command -v csi-sanity >/dev/null &&
        go version -m "$(command -v csi-sanity)" | grep -q "csi-test/v5[[:space:]]*$CSI_SANITY_VERSION"; }; then
        echo "== installing csi-sanity $CSI_SANITY_VERSION"
        go install "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$CSI_SANITY_VERSION"
    fi
}

stage_lint() {
    echo "== cargo fmt --check"
    cargo fmt --all -- --check
    echo "== cargo clippy"
    cargo clippy --all-targets -- -D warnings
}

stage_tests() {
    echo "== unit and integration tests"
    cargo test --lib --bins --tests
    if [ -e /proc/fs/xfs/xqmstat ]; then
        echo "== XFS project quota tests (this kernel has XFS quota)"
        cargo test --test hostpath quota::xfs:: -- --ignored
    else
        echo "== XFS project quota tests: not run, this kernel lacks XFS quota (btrfs qgroup tests cover enforcement)"
    fi
}

# The in-process service tests (tests/inprocess) need no mounts and no chown: they must pass
# without root too.
stage_unprivileged() {
    echo "== in-process CSI service tests as uid 65534"
    local bin tmp
    bin=$(cargo test --test inprocess --no-run --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*inprocess[^"]*\)".*/\1/p' | tail -1)
    tmp=$(mktemp -d)
    install -m 0755 "$bin" "$tmp/inprocess"
    chown 65534:65534 "$tmp"
    (cd "$tmp" && setpriv --reuid=65534 --regid=65534 --clear-groups \
        env HOME="$tmp" TMPDIR="$tmp" ./inprocess --quiet)
    rm -rf "$tmp"
}

stage_sanity() {
    echo "== csi-sanity $CSI_SANITY_VERSION"
    cargo build --release --bin ferrovol
    CSI_SANITY=$(command -v csi-sanity) tests/sanity/run.sh
}

stage_benches() {
    local bench
    for bench in ops nfs devices snapshots; do
        echo "== benchmark smoke run: $bench (figures: cargo bench --bench $bench)"
        FERROVOL_BENCH_QUICK=1 cargo bench --bench "$bench"
    done
}

# helm lint/template per values combination, kubeconform -strict on generated schemas, deploy/
# equal to a fresh render; installs helm v4 and kubeconform with `go install` when missing (the
# first helm build takes minutes). Then the cargo tests that need helm run again with it present.
stage_chart() {
    echo "== chart checks (scripts/chart-check.sh)"
    scripts/chart-check.sh
    cargo test --test chart
}

# etcd, kube-apiserver, controller-manager, scheduler and the CSI sidecars, built by
# scripts/e2e.sh (cached in ~/.cache/ferrovol-e2e and the Go caches).
stage_e2e() {
    if [ "${FERROVOL_E2E:-1}" = 0 ]; then
        echo "== e2e: skipped (FERROVOL_E2E=0)"
        return
    fi
    if [ "${FERROVOL_FREE_DISK:-0}" = 1 ]; then
        echo "== FERROVOL_FREE_DISK=1: removing target/debug ($(du -sh target/debug 2>/dev/null | cut -f1))"
        rm -rf target/debug
    fi
    echo "== e2e on a real Kubernetes control plane (scripts/e2e.sh)"
    scripts/e2e.sh
}

STAGES=(install lint tests unprivileged sanity benches chart e2e)

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: the tests mount filesystems and attach loop devices; run as root" >&2
    exit 1
fi
[ $# -gt 0 ] || set -- "${STAGES[@]}"
for stage in "$@"; do
    if ! declare -F "stage_$stage" >/dev/null; then
        echo "scripts/test.sh: no stage '$stage' (stages: ${STAGES[*]})" >&2
        exit 2
    fi
done
for stage in "$@"; do
    "stage_$stage"
done
