#!/usr/bin/env bash
# Runs the real csi-sanity against `ferrovol serve` for both access types (mount, block) on three
# base filesystems: btrfs with quota enabled (capacity enforced, snapshots are btrfs snapshots),
# XFS with reflink (snapshots are reflink copies) and the plain work directory (capacity
# advisory, snapshots are full copies). Prints passed/failed/skipped per run; exits non-zero if any run fails or
# skips a test for a capability the driver advertises.
# Then the NFS driver (`--driver nfs`) against a real nfs-ganesha started here (VFS backend),
# provisioning through NFS and publishing with --nfs-test-export-root (this kernel has no NFS
# client): once with ganesha serving NFSv3 and v4 on free ports through rpcbind (the driver's
# `nfsvers: auto` speaks NFSv3 there, nothing listening on 2049), once with ganesha serving
# NFSv4 alone on 127.0.0.1:2049 with its rpcbind registration deleted (`nfsvers: "4.1"`). SANITY_ONLY=hostpath|device|nfs runs only that part; KEEP_WORK=1 keeps the logs.
# Needs root, csi-sanity on PATH (or $CSI_SANITY), mkfs.btrfs, mkfs.xfs, ganesha.nfsd and rpcbind
# (nfs-ganesha, nfs-ganesha-vfs), and a release build of ferrovol.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${FERROVOL_BIN:-$ROOT/target/release/ferrovol}
SANITY=${CSI_SANITY:-$(command -v csi-sanity || echo "$HOME/go/bin/csi-sanity")}
WORK=$(mktemp -d /tmp/ferrovol-sanity.XXXXXX)
LOOP=""
PID=""

GPID=""
LOCKFD=""
EXPORT=""

cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
    [ -n "$GPID" ] && kill "$GPID" 2>/dev/null && wait "$GPID" 2>/dev/null || true
    # Lazy-unmount anything the runs left below WORK, deepest first.
    findmnt -rn -o TARGET | grep "^$WORK" | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    [ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null || true
    for l in $(losetup -n -O NAME,BACK-FILE | awk -v w="$WORK" 'index($2, w) == 1 {print $1}'); do
        losetup -d "$l" || true
    done
    [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

# A btrfs filesystem with quota, so volume sizes are enforced by qgroups.
setup_btrfs() {
    truncate -s 3G "$WORK/btrfs.img"
    mkfs.btrfs -q "$WORK/btrfs.img" >/dev/null
    LOOP=$(losetup --find --show "$WORK/btrfs.img")
    mkdir -p "$WORK/btrfs"
    mount "$LOOP" "$WORK/btrfs"
    btrfs quota enable "$WORK/btrfs"
}

# XFS with reflink (the mkfs default): snapshots and clones are reflink copies.
setup_xfs() {
    truncate -s 2G "$WORK/xfs.img"
    mkfs.xfs -q -m reflink=1 "$WORK/xfs.img"
    mkdir -p "$WORK/xfs"
    mount -o loop "$WORK/xfs.img" "$WORK/xfs"
}

# Waits until the driver under $1 answers GetPluginInfo and Probe on its socket (up to 60 s):
# a socket file alone can precede the server, and csi-sanity's first connection must find it.
wait_serving() { # wait_serving <dir>
    local _
    for _ in $(seq 600); do
        "$BIN" ctl --endpoint "unix://$1/data/csi.sock" info >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "the driver under $1 did not answer within 60 s; its log:"
    cat "$1/driver.log"
    return 1
}

# csi-sanity with its log in $1. csi-test's Connect (utils/grpcutil.go) reads the connection's
# state after dialling and then waits for it to change: a connection already Ready by then never
# changes, and the spec fails after a minute with "Connection timed out" before any call reached
# the driver. A run whose every failure is that one runs once more, saying so; any other failure
# stands.
sanity() { # sanity <log> <csi-sanity args...>
    local log=$1 rc=0 failed missed
    shift
    "$SANITY" "$@" --ginkgo.v --ginkgo.no-color >"$log" 2>&1 || rc=$?
    failed=$(grep -cE "^\s*\[FAIL\]" "$log" || true)
    missed=$(grep -cE "^\s+Connection timed out$" "$log" || true)
    if [ "$rc" -ne 0 ] && [ "$failed" -gt 0 ] && [ "$failed" -eq "$missed" ]; then
        echo "csi-sanity: csi-test's connect missed a ready connection in $failed spec(s); running it once more ($log.connect-race keeps the first log)"
        mv "$log" "$log.connect-race"
        rc=0
        "$SANITY" "$@" --ginkgo.v --ginkgo.no-color >"$log" 2>&1 || rc=$?
    fi
    return "$rc"
}

status=0
summary=""
run() { # run <label> <access type> <hostpath base | nfs> [extra csi-sanity args...]
    local label=$1 access=$2 base=$3 dir="$WORK/$1-$2"
    shift 3
    mkdir -p "$dir"
    if [ "$base" = nfs ]; then
        "$BIN" serve --driver nfs --data-dir "$dir/data" --nfs-test-export-root "$EXPORT" \
            --node-id sanity-node --publish-root "$dir" >"$dir/driver.log" 2>&1 &
    else
        "$BIN" serve --data-dir "$dir/data" --hostpath-base "$base/$label-$access" \
            --node-id sanity-node --max-volumes-per-node 16 --publish-root "$dir" >"$dir/driver.log" 2>&1 &
    fi
    PID=$!
    wait_serving "$dir"
    local rc=0
    sanity "$dir/sanity.log" --csi.endpoint="$dir/data/csi.sock" \
        --csi.mountdir="$dir/target" --csi.stagingdir="$dir/staging" \
        --csi.testvolumeaccesstype="$access" \
        --csi.testvolumesize=67108864 --csi.testvolumeexpandsize=134217728 \
        --csi.testnodevolumeattachlimit "$@" || rc=$?
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
    local counts
    counts=$(grep -E "^(SUCCESS|FAIL)!" "$dir/sanity.log" | tail -1)
    summary+="csi-sanity $label/$access: $counts"$'\n'
    # Skips are allowed only for what the driver does not advertise.
    local bad_skips
    bad_skips=$(grep -E "^\s+\[SKIPPED\] " "$dir/sanity.log" | sed 's/^\s*\[SKIPPED\] //' | grep -v '^in \[' | sort -u |
        grep -vE "^(GroupControllerService|ControllerModifyVolume|Modify [Vv]olume) not supported$" |
        grep -vE "^(${ALLOWED_EXTRA_SKIPS:-})$" || true)
    if [ "$rc" -ne 0 ] || [ -n "$bad_skips" ]; then
        status=1
        echo "=== csi-sanity $label/$access failed (exit $rc) ==="
        grep -E "^\s*\[FAIL\]" "$dir/sanity.log" || true
        [ -n "$bad_skips" ] && echo "unexpected skips:" && echo "$bad_skips"
        echo "--- driver log (tail) ---"; tail -15 "$dir/driver.log"
    fi
}

# ganesha on 127.0.0.1 exporting $WORK/export-<mode>: `v3` serves NFSv3 and v4 on free ports,
# registered with rpcbind; `v4` serves NFSv4 alone on port 2049 and its registration is deleted
# once it listens (ganesha will not start without registering). It holds the host-wide lock of
# the Rust ganesha fixture (tests/common/ganesha.rs): one rpcbind serves the host, and port 2049
# is one per host.
start_ganesha() { # start_ganesha v3|v4
    local mode=$1 protocols="3, 4"
    EXPORT="$WORK/export-$mode"
    mkdir -p "$EXPORT" "$WORK/ganesha-recovery-$mode"
    if [ -z "$LOCKFD" ]; then
        exec {LOCKFD}>/tmp/ferrovol-ganesha.lock
        flock "$LOCKFD"
    fi
    rpcinfo -p 127.0.0.1 >/dev/null 2>&1 || rpcbind -w
    local ports
    ports=$(python3 -c 'import socket
ps = [socket.socket() for _ in range(3)]
for s in ps: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ps))')
    read -r NFSP MNTP NLMP <<<"$ports"
    if [ "$mode" = v4 ]; then NFSP=2049; protocols=4; fi
    cat >"$WORK/ganesha-$mode.conf" <<GANESHA
NFS_CORE_PARAM { NFS_Port = $NFSP; MNT_Port = $MNTP; NLM_Port = $NLMP;
    Bind_addr = 127.0.0.1; Protocols = $protocols; Enable_RQUOTA = false; }
NFSV4 { Graceless = true; Only_Numeric_Owners = true; RecoveryBackend = fs;
    RecoveryRoot = $WORK/ganesha-recovery-$mode; }
EXPORT { Export_Id = 1; Path = $EXPORT; Pseudo = $EXPORT; Access_Type = RW;
    Squash = No_Root_Squash; Protocols = $protocols; Transports = TCP; SecType = sys; FSAL { Name = VFS; } }
LOG { Default_Log_Level = WARN; }
GANESHA
    ganesha.nfsd -F -f "$WORK/ganesha-$mode.conf" -L "$WORK/ganesha-$mode.log" \
        -p "$WORK/ganesha-$mode.pid" >"$WORK/ganesha-$mode.out" 2>&1 &
    GPID=$!
    for _ in $(seq 300); do
        if [ "$mode" = v4 ]; then
            if (exec 3<>/dev/tcp/127.0.0.1/2049) 2>/dev/null; then
                rpcinfo -d 100003 4 2>/dev/null || true
                return 0
            fi
        else
            # Mapped, then answering: a NULL call to each program (ganesha maps them first).
            rpcinfo -p 127.0.0.1 2>/dev/null | awk -v p="$NFSP" '$1 == 100003 && $2 == 3 && $3 == "tcp" && $4 == p {f = 1} END {exit !f}' &&
                rpcinfo -T tcp 127.0.0.1 100003 3 >/dev/null 2>&1 &&
                rpcinfo -T tcp 127.0.0.1 100005 3 >/dev/null 2>&1 && return 0
        fi
        sleep 0.1
    done
    echo "ganesha ($mode) did not come up"
    cat "$WORK/ganesha-$mode.log" "$WORK/ganesha-$mode.out"
    exit 1
}

stop_ganesha() {
    [ -n "$GPID" ] && kill "$GPID" 2>/dev/null && wait "$GPID" 2>/dev/null || true
    GPID=""
}

# Device backend: a process serving only `--backends device` over a pool of
# blank loop devices named one by one with --device-include; mount (ext4) and block access.
# Half the pool is 64 MiB, half 128 MiB: a volume is a whole device (the smallest that fits), so
# a repeated create asking for twice the size must find the 64 MiB volume too small
# (AlreadyExists), and expansion stays within the device (nothing to do). The attach limit is
# below the pool size so the limit test can exceed it. NodeExpandVolume is not offered (a
# device never grows), so its tests skip.
run_device() { # run_device <access>
    local access=$1 dir="$WORK/device-$1" includes=()
    mkdir -p "$dir/pool"
    for i in $(seq 1 16); do
        truncate -s $(( i % 2 ? 64 : 128 ))M "$dir/pool/d$i.img"
        includes+=(--device-include "$(losetup --find --show "$dir/pool/d$i.img")")
    done
    printf 'backend: device\nfsType: ext4\n' >"$dir/params.yaml"
    "$BIN" serve --backends device "${includes[@]}" --data-dir "$dir/data" \
        --node-id sanity-node --max-volumes-per-node 4 --publish-root "$dir" >"$dir/driver.log" 2>&1 &
    PID=$!
    wait_serving "$dir"
    local rc=0
    sanity "$dir/sanity.log" --csi.endpoint="$dir/data/csi.sock" \
        --csi.mountdir="$dir/target" --csi.stagingdir="$dir/staging" \
        --csi.testvolumeaccesstype="$access" \
        --csi.testvolumeparameters="$dir/params.yaml" \
        --csi.testvolumesize=67108864 --csi.testvolumeexpandsize=67108864 \
        --csi.testnodevolumeattachlimit || rc=$?
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
    local counts
    counts=$(grep -E "^(SUCCESS|FAIL)!" "$dir/sanity.log" | tail -1)
    summary+="csi-sanity device/$access: $counts"$'\n'
    local bad_skips
    bad_skips=$(grep -E "^\s+\[SKIPPED\] " "$dir/sanity.log" | sed 's/^\s*\[SKIPPED\] //' | grep -v '^in \[' | sort -u |
        grep -vE "^(CreateSnapshot|DeleteSnapshot|ListSnapshots|Snapshot|Volume Cloning|GroupControllerService|ControllerModifyVolume|Modify [Vv]olume|NodeExpandVolume) not supported$" || true)
    if [ "$rc" -ne 0 ] || [ -n "$bad_skips" ]; then
        status=1
        echo "=== csi-sanity device/$access failed (exit $rc) ==="
        grep -E "^\s*\[FAIL\]" "$dir/sanity.log" || true
        [ -n "$bad_skips" ] && echo "unexpected skips:" && echo "$bad_skips"
        echo "--- driver log (tail) ---"; tail -15 "$dir/driver.log"
    fi
}

if [ -z "${SANITY_ONLY:-}" ] || [ "${SANITY_ONLY}" = hostpath ]; then
    setup_btrfs
    setup_xfs
    for access in mount block; do
        run btrfs-qgroup "$access" "$WORK/btrfs"
        run xfs-reflink "$access" "$WORK/xfs"
        run plain-advisory "$access" "$WORK/plain"
    done
fi
if [ -z "${SANITY_ONLY:-}" ] || [ "${SANITY_ONLY}" = device ]; then
    for access in mount block; do
        run_device "$access"
    done
fi

if [ -z "${SANITY_ONLY:-}" ] || [ "${SANITY_ONLY}" = nfs ]; then
# The NFS driver advertises neither PUBLISH_UNPUBLISH_VOLUME (nothing to attach), nor
# STAGE_UNSTAGE_VOLUME (the kubelet publishes directly), nor a node EXPAND_VOLUME (sizes are
# recorded by the controller): csi-sanity skips those tests. Snapshots and cloning are served
# (copies through the user-space client), so none of their tests may be skipped.
export ALLOWED_EXTRA_SKIPS="NodeStageVolume not supported|NodeUnstageVolume not supported|NodeExpandVolume not supported|ControllerPublishVolume not supported|ControllerUnpublishVolume not supported|Controller Publish, UnpublishVolume not supported"
start_ganesha v3
printf 'server: 127.0.0.1\nshare: %s\nsubDir: sanity/${pv.metadata.name}\n' "$EXPORT" >"$WORK/nfs-params-v3.yaml"
run nfs-ganesha mount nfs --csi.testvolumeparameters="$WORK/nfs-params-v3.yaml"
stop_ganesha
start_ganesha v4
printf 'server: 127.0.0.1\nshare: %s\nsubDir: sanity/${pv.metadata.name}\nnfsvers: "4.1"\n' "$EXPORT" >"$WORK/nfs-params-v4.yaml"
run nfs-ganesha-v4 mount nfs --csi.testvolumeparameters="$WORK/nfs-params-v4.yaml"
stop_ganesha
unset ALLOWED_EXTRA_SKIPS
fi
printf '%s' "$summary"
exit $status
