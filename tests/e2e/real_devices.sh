# Sourced by tests/e2e/realnodes.sh: the device backend on real nodes. Each node gets two loop
# devices over sparse files in $E2E_DIR/devices, at numbers from a block of twenty reserved for the
# run (the first node's ten, then the second's). Both nodes see every loop device (one kernel, one
# /dev), so the chart's per-node discovery rules (local.device.discovery.nodes) give each node only
# its own ten, as an operator with unlike nodes would. Only loop devices backed by files under
# $E2E_DIR/devices are ever attached, detached or read.

RN_DEV_SIZE=64M
RN_DEV_VALUES=$E2E_DIR/device-values.yaml
RN_LOOP_BLOCK=

rn_dev_file() { echo "$E2E_DIR/devices/$1-$2.img"; }
# rn_loop_of FILE: the loop device backed by FILE, if any.
rn_loop_of() {
    local f
    for f in /sys/block/loop*/loop/backing_file; do
        [ "$(cat "$f" 2>/dev/null)" = "$1" ] && { echo "/dev/$(basename "$(dirname "$(dirname "$f")")")"; return 0; }
    done
    return 1
}
rn_is_our_loop() { [[ $(cat "/sys/block/${1#/dev/}/loop/backing_file" 2>/dev/null) == "$E2E_DIR/devices/"* ]]; }

# rn_devices_up: two loop devices per node, and the chart values that split them between nodes.
rn_devices_up() {
    local b i s idx n free
    mkdir -p "$E2E_DIR/devices"
    # Unbound loop devices stay in /sys/block after a detach: only a backing file means one is used.
    for ((b = 1100; b < 2000; b += 20)); do
        free=1
        for ((i = b; i < b + 20; i++)); do
            [ -e "/sys/block/loop$i/loop/backing_file" ] && { free=0 && break; }
        done
        [ "$free" = 1 ] && { RN_LOOP_BLOCK=$b && break; }
    done
    [ -n "$RN_LOOP_BLOCK" ] || { echo "e2e: no block of twenty unused loop numbers in 1100-1999" >&2; return 1; }
    {
        printf 'local:\n  device:\n    enabled: true\n    discovery:\n      nodes:\n'
        for idx in "${!NODES[@]}"; do
            n=${NODES[idx]}
            echo "        - {name: $n, include: [\"/dev/loop$((RN_LOOP_BLOCK / 10 + idx))?\"]}"
            for s in 0 1; do
                truncate -s "$RN_DEV_SIZE" "$(rn_dev_file "$n" "$s")" &&
                    losetup "/dev/loop$((RN_LOOP_BLOCK + 10 * idx + s))" "$(rn_dev_file "$n" "$s")" || return 1
            done
        done
    } >"$RN_DEV_VALUES"
}

# rn_devices_down: detaches every loop device backed by one of our files.
rn_devices_down() {
    local f dev
    [ -d "$E2E_DIR/devices" ] || return 0
    for f in "$E2E_DIR"/devices/*.img; do
        while dev=$(rn_loop_of "$f"); do losetup -d "$dev" 2>/dev/null || break; done
    done
    return 0
}

device_uid() { jq -r '.spec.csi.volumeAttributes["ferrovol.io/device-uid"]' <<<"$1"; }

# device_in_use PV-JSON: the PV's BlockDevice is Claimed by it, at one of our loop devices.
device_in_use() {
    local bd
    bd=$(k get blockdevice "$(device_uid "$1")" -o json) || fail "no BlockDevice $(device_uid "$1")" || return 1
    jq -e --arg v "$(jq -r .spec.csi.volumeHandle <<<"$1")" \
        '.status.claimState == "Claimed" and .status.volume == $v' <<<"$bd" >/dev/null ||
        fail "BlockDevice $(device_uid "$1") is $(jq -c .status <<<"$bd"), want Claimed by the volume" || return 1
    rn_is_our_loop "$(jq -r .spec.path <<<"$bd")" || fail "the volume is on $(jq -r .spec.path <<<"$bd"), not ours"
}

# device_gone PV HANDLE PV-JSON: the BlockDevice is an Unclaimed candidate again and the disk is
# wiped: no signature left of a filesystem volume; a raw block volume's first MiB all zeros.
device_gone() {
    local uid dev
    uid=$(device_uid "$3")
    unclaimed() {
        k get blockdevice "$uid" -o json |
            jq -e '.status.claimState == "Unclaimed" and (.status.volume // "") == "" and .status.candidate' >/dev/null
    }
    wait_for 60 "BlockDevice $uid Unclaimed" unclaimed ||
        fail "BlockDevice $uid: $(k get blockdevice "$uid" -o json | jq -c .status)" || return 1
    dev=$(k get blockdevice "$uid" -o jsonpath='{.spec.path}')
    rn_is_our_loop "$dev" || fail "BlockDevice $uid names $dev, not one of ours" || return 1
    if [ "$(jq -r .spec.volumeMode <<<"$3")" = Block ]; then
        cmp -s -n 1048576 "$dev" /dev/zero || fail "the first MiB of $dev is not zero after the delete" || return 1
    elif blkid -p "$dev" >/dev/null 2>&1; then
        fail "$dev still carries $(blkid -p "$dev") after the delete"
        return 1
    fi
}

scenario_device_fs() { scenario_backend rn-devfs ferrovol-device 32Mi Filesystem device_gone device_in_use; }
scenario_device_block() { scenario_backend rn-devblk ferrovol-device 32Mi Block device_gone device_in_use; }
