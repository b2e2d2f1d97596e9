#!/usr/bin/env bash
# Builds the Kubernetes control plane the e2e suite runs as plain processes:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, csi-provisioner,
# csi-resizer, snapshot-controller and csi-snapshotter (with the snapshot CRDs); for real nodes
# kubelet and kube-proxy, a static `pause` program (tests/e2e/images/pause) and
# local-path-provisioner; into a cache directory, skipping each binary already built at the
# pinned version (pause: at its source's hash).
#
# None of these can be `go install`ed (their go.mod files carry replace lines), so:
#  - Kubernetes and etcd are built from small wrapper modules that name the commands in
#    `tool` lines; for Kubernetes every staging module (`=> ./staging/...` in its go.mod)
#    is replaced by its published v0.<minor>.<patch> release.
#  - local-path-provisioner has no replace lines: `go install`ed, static (CGO_ENABLED=0) so its
#    image needs no libc; pause likewise.
#  - external-provisioner, external-resizer and external-snapshotter are built inside a
#    writable copy of their own module directory, so their own replace lines apply.
#    external-snapshotter replaces its client module with ./client, which its module zip
#    leaves out: the copy gets the published client/v8 module of the same version there.
# GOMODCACHE and GOCACHE are the machine's usual ones, so a second run takes seconds.
#
# Usage: scripts/e2e-build.sh            (prints the bin directory on its last line)
# Env:   FERROVOL_E2E_CACHE  cache root (default $HOME/.cache/ferrovol-e2e)
#        FERROVOL_FREE_DISK=1  build with a throw-away GOCACHE, removed at exit (.ci/run sets
#                            it: the build cache is ~5 GB and a fresh machine builds only once)
set -euo pipefail

K8S_VERSION=v1.37.2
ETCD_VERSION=v3.7.3
PROVISIONER_VERSION=v6.4.0
RESIZER_VERSION=v2.3.0
SNAPSHOTTER_VERSION=v8.7.0
LOCAL_PATH_VERSION=v0.0.30

CACHE=${FERROVOL_E2E_CACHE:-$HOME/.cache/ferrovol-e2e}
BIN=$CACHE/bin
SRC=$CACHE/src
mkdir -p "$BIN" "$SRC"
export GOFLAGS=-buildvcs=false GOTOOLCHAIN=local
if [ "${FERROVOL_FREE_DISK:-0}" = 1 ]; then
    GOCACHE=$(mktemp -d /var/tmp/ferrovol-e2e-gocache.XXXXXX)
    export GOCACHE
    trap 'rm -rf "$GOCACHE"' EXIT
fi
# The machine is shared: build at low priority.
NICE=(nice -n 10)

# up_to_date NAME VERSION: the binary exists and its stamp names VERSION.
up_to_date() { [ -x "$BIN/$1" ] && [ "$(cat "$BIN/.$1.version" 2>/dev/null)" = "$2" ]; }
stamp() { echo "$2" >"$BIN/.$1.version"; }

build_kubernetes() {
    local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
    local missing=() c
    for c in "${cmds[@]}"; do up_to_date "$c" "$K8S_VERSION" || missing+=("$c"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "== building ${missing[*]} $K8S_VERSION"
    local dir=$SRC/kubernetes-$K8S_VERSION staging=v0.${K8S_VERSION#v1.}
    mkdir -p "$dir"
    (
        cd "$dir"
        if [ ! -s go.sum ]; then
            rm -f go.mod
            go mod init ferrovol-e2e/kubernetes >/dev/null 2>&1
            go mod edit -require "k8s.io/kubernetes@$K8S_VERSION"
            go mod download "k8s.io/kubernetes@$K8S_VERSION"
            local kdir
            kdir=$(go list -m -f '{{.Dir}}' "k8s.io/kubernetes@$K8S_VERSION" 2>/dev/null ||
                echo "$(go env GOMODCACHE)/k8s.io/kubernetes@$K8S_VERSION")
            # The staging list comes from Kubernetes' own go.mod, so it follows the version.
            local m
            for m in $(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$kdir/go.mod"); do
                go mod edit -replace "$m=$m@$staging"
            done
        fi
        # A command added to the list after the first run gets its tool line and a new tidy.
        local untracked=()
        for c in "${cmds[@]}"; do
            grep -q "k8s.io/kubernetes/cmd/$c\$" go.mod || untracked+=("$c")
        done
        if [ ${#untracked[@]} -gt 0 ]; then
            for c in "${untracked[@]}"; do go mod edit -tool "k8s.io/kubernetes/cmd/$c"; done
            "${NICE[@]}" go mod tidy
        fi
        local v=k8s.io/component-base/version cv=k8s.io/client-go/pkg/version
        local minor=${K8S_VERSION#v1.}
        minor=${minor%%.*}
        local ld="-s -w"
        for p in $v $cv; do
            ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
            ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
        done
        local pkgs=()
        for c in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
        "${NICE[@]}" go build -trimpath -ldflags "$ld" -o "$BIN/" "${pkgs[@]}"
    )
    for c in "${missing[@]}"; do stamp "$c" "$K8S_VERSION"; done
}

build_etcd() {
    up_to_date etcd "$ETCD_VERSION" && return 0
    echo "== building etcd $ETCD_VERSION"
    local dir=$SRC/etcd-$ETCD_VERSION
    mkdir -p "$dir"
    (
        cd "$dir"
        if [ ! -s go.sum ]; then
            rm -f go.mod
            go mod init ferrovol-e2e/etcd >/dev/null 2>&1
            go mod edit -require "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
            go mod edit -tool go.etcd.io/etcd/server/v3
            "${NICE[@]}" go mod tidy
        fi
        "${NICE[@]}" go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
    )
    stamp etcd "$ETCD_VERSION"
}

build_pause() {
    local src hash
    src=$(cd "$(dirname "$0")/.." && pwd)/tests/e2e/images/pause/main.go
    hash=$(sha256sum "$src" | cut -c1-16)
    up_to_date pause "$hash" && return 0
    echo "== building pause"
    (cd "$(dirname "$src")" && CGO_ENABLED=0 GO111MODULE=off "${NICE[@]}" go build -trimpath \
        -ldflags "-s -w" -o "$BIN/pause" main.go)
    stamp pause "$hash"
}

build_local_path() {
    up_to_date local-path-provisioner "$LOCAL_PATH_VERSION" && return 0
    echo "== building local-path-provisioner $LOCAL_PATH_VERSION"
    (cd "$SRC" && CGO_ENABLED=0 GOBIN=$BIN "${NICE[@]}" go install -trimpath \
        -ldflags "-s -w -X main.VERSION=$LOCAL_PATH_VERSION" \
        "github.com/rancher/local-path-provisioner@$LOCAL_PATH_VERSION")
    stamp local-path-provisioner "$LOCAL_PATH_VERSION"
}

# module_copy MODULE VERSION DIR: a writable copy of MODULE@VERSION from the module cache at DIR.
module_copy() {
    local mod=$1 version=$2 dir=$3 from
    [ -f "$dir/go.mod" ] && return 0
    from=$(cd "$SRC" && go mod download -json "$mod@$version" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [ -d "$from" ] || {
        echo "e2e-build: module $mod@$version not found in the module cache" >&2
        exit 1
    }
    rm -rf "$dir"
    cp -r "$from" "$dir"
    chmod -R u+w "$dir"
}

# build_in DIR VERSION NAME...: go build of ./cmd/NAME inside DIR for each NAME.
build_in() {
    local dir=$1 version=$2 name
    shift 2
    for name in "$@"; do
        # The module zips carry no vendor directory: resolve from the module cache.
        (cd "$dir" && "${NICE[@]}" go build -mod=mod -trimpath \
            -ldflags "-s -w -X main.version=$version" -o "$BIN/$name" "./cmd/$name")
        stamp "$name" "$version"
    done
}

build_provisioner() {
    up_to_date csi-provisioner "$PROVISIONER_VERSION" && return 0
    echo "== building csi-provisioner (external-provisioner) $PROVISIONER_VERSION"
    local dir=$SRC/external-provisioner-$PROVISIONER_VERSION
    module_copy github.com/kubernetes-csi/external-provisioner/v6 "$PROVISIONER_VERSION" "$dir"
    build_in "$dir" "$PROVISIONER_VERSION" csi-provisioner
}

build_resizer() {
    up_to_date csi-resizer "$RESIZER_VERSION" && return 0
    echo "== building csi-resizer (external-resizer) $RESIZER_VERSION"
    local dir=$SRC/external-resizer-$RESIZER_VERSION
    module_copy github.com/kubernetes-csi/external-resizer/v2 "$RESIZER_VERSION" "$dir"
    build_in "$dir" "$RESIZER_VERSION" csi-resizer
}

# The snapshot CRDs come with the client module (config/crd), snapshot-controller's RBAC with
# the main module (deploy/kubernetes); both are copied next to the binaries (snapshot-manifests)
# so the harness needs no module lookup.
build_snapshotter() {
    local missing=() c
    for c in snapshot-controller csi-snapshotter; do
        up_to_date "$c" "$SNAPSHOTTER_VERSION" || missing+=("$c")
    done
    [ ${#missing[@]} -eq 0 ] && [ -d "$BIN/snapshot-manifests" ] && return 0
    echo "== building ${missing[*]} (external-snapshotter) $SNAPSHOTTER_VERSION"
    local dir=$SRC/external-snapshotter-$SNAPSHOTTER_VERSION
    module_copy github.com/kubernetes-csi/external-snapshotter/v8 "$SNAPSHOTTER_VERSION" "$dir"
    [ -f "$dir/client/go.mod" ] || {
        rmdir "$dir/client" 2>/dev/null || true
        module_copy github.com/kubernetes-csi/external-snapshotter/client/v8 "$SNAPSHOTTER_VERSION" "$dir/client"
    }
    rm -rf "$BIN/snapshot-manifests"
    mkdir -p "$BIN/snapshot-manifests"
    cp "$dir"/client/config/crd/snapshot.storage.k8s.io_*.yaml \
        "$dir/deploy/kubernetes/snapshot-controller/rbac-snapshot-controller.yaml" \
        "$BIN/snapshot-manifests/"
    [ ${#missing[@]} -eq 0 ] || build_in "$dir" "$SNAPSHOTTER_VERSION" "${missing[@]}"
}

build_etcd
build_kubernetes
build_provisioner
build_resizer
build_snapshotter
build_pause
build_local_path
echo "$BIN"
