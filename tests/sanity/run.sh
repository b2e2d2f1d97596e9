#!/usr/bin/env bash
# Runs the real csi-sanity against `ferrovol serve` for both access types (mount, block) on two
# base filesystems: btrfs with quota enabled (capacity enforced) and the plain work directory
# (capacity advisory). Prints passed/failed/skipped per run; exits non-zero if any run fails or
# skips a test for a capability the driver advertises.
# Needs root, csi-sanity on PATH (or $CSI_SANITY), mkfs.btrfs, and a release build of ferrovol.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${FERROVOL_BIN:-$ROOT/target/release/ferrovol}
SANITY=${CSI_SANITY:-$(command -v csi-sanity || echo "$HOME/go/bin/csi-sanity")}
WORK=$(mktemp -d /tmp/ferrovol-sanity.XXXXXX)
LOOP=""
PID=""

cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
    # Lazy-unmount anything the runs left below WORK, deepest first.
    findmnt -rn -o TARGET | grep "^$WORK" | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    [ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null || true
    for l in $(losetup -n -O NAME,BACK-FILE | awk -v w="$WORK" 'index($2, w) == 1 {print $1}'); do
        losetup -d "$l" || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# A btrfs filesystem with quota, so volume sizes are enforced by qgroups.
truncate -s 3G "$WORK/btrfs.img"
mkfs.btrfs -q "$WORK/btrfs.img" >/dev/null
LOOP=$(losetup --find --show "$WORK/btrfs.img")
mkdir -p "$WORK/btrfs"
mount "$LOOP" "$WORK/btrfs"
btrfs quota enable "$WORK/btrfs"

status=0
summary=""
run() { # run <label> <access type> <hostpath base>
    local label=$1 access=$2 base=$3 dir="$WORK/$1-$2"
    mkdir -p "$dir"
    "$BIN" serve --data-dir "$dir/data" --hostpath-base "$base/$label-$access" \
        --node-id sanity-node --max-volumes-per-node 16 --publish-root "$dir" >"$dir/driver.log" 2>&1 &
    PID=$!
    for _ in $(seq 100); do [ -S "$dir/data/csi.sock" ] && break; sleep 0.1; done
    local rc=0
    "$SANITY" --csi.endpoint="$dir/data/csi.sock" \
        --csi.mountdir="$dir/target" --csi.stagingdir="$dir/staging" \
        --csi.testvolumeaccesstype="$access" \
        --csi.testvolumesize=67108864 --csi.testvolumeexpandsize=134217728 \
        --csi.testnodevolumeattachlimit \
        --ginkgo.v --ginkgo.no-color >"$dir/sanity.log" 2>&1 || rc=$?
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
    local counts
    counts=$(grep -E "^(SUCCESS|FAIL)!" "$dir/sanity.log" | tail -1)
    summary+="csi-sanity $label/$access: $counts"$'\n'
    # Skips are allowed only for what the driver does not advertise.
    local bad_skips
    bad_skips=$(grep -E "^\s+\[SKIPPED\] " "$dir/sanity.log" | sed 's/^\s*\[SKIPPED\] //' | grep -v '^in \[' | sort -u |
        grep -vE "^(GroupControllerService|ControllerModifyVolume|Modify [Vv]olume) not supported$" || true)
    if [ "$rc" -ne 0 ] || [ -n "$bad_skips" ]; then
        status=1
        echo "=== csi-sanity $label/$access failed (exit $rc) ==="
        grep -E "^\s*\[FAIL\]" "$dir/sanity.log" || true
        [ -n "$bad_skips" ] && echo "unexpected skips:" && echo "$bad_skips"
        echo "--- driver log (tail) ---"; tail -15 "$dir/driver.log"
    fi
}

for access in mount block; do
    run btrfs-qgroup "$access" "$WORK/btrfs"
    run plain-advisory "$access" "$WORK/plain"
done
printf '%s' "$summary"
exit $status
