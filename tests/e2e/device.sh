# Sourced by scripts/e2e.sh: the device backend through the control plane.
#
# Each fake node serves hostpath and device volumes. Its disks are loop devices over files in
# $E2E_DIR/devices, at loop numbers from a block of ten reserved for it (node A /dev/loopP0-P9,
# node B the next ten), and its --device-include names only that block: both nodes run on one
# machine and see every loop device, so the filter is what makes a disk one node's. Only loop
# devices whose backing file lies under $E2E_DIR/devices are ever attached, detached or read.
#
# The node plugin runs with the ferrovol-node ServiceAccount's token (nodes.sh), so the
# BlockDevice sync proves the chart's RBAC, and reads the chart's device-config ConfigMap.
#
# Needs: E2E_DIR, NODE_SMALL, NODE_BIG, NODES, the cluster.sh, nodes.sh and scenarios.sh helpers.

DEV_CLASS=ferrovol-device
DEV_SIZE=64M
DEV_BYTES=$((64 * 1024 * 1024))
DEV_CLAIM=32Mi
LOOP_BLOCK= # first number of the reserved block of twenty loop numbers

dev_dir() { echo "$E2E_DIR/devices"; }
# node_slot NODE: 0 for node A, 1 for node B (which block of ten it owns).
node_slot() { [ "$1" = "$NODE_SMALL" ] && echo 0 || echo 1; }
loop_number() { echo $((LOOP_BLOCK + 10 * $(node_slot "$1") + $2)); }
node_loop_glob() { echo "/dev/loop$(((LOOP_BLOCK + 10 * $(node_slot "$1")) / 10))?"; }
backing_file() { echo "$(dev_dir)/$1-$2.img"; }

# device_setup: reserves twenty loop numbers none of which backs a file now, ours for the run.
# (Unbound loop devices stay in /sys/block after a detach, ours from earlier runs too: only
# a backing file means someone uses one. `losetup -f` of others takes the lowest free number,
# far below these.)
device_setup() {
    mkdir -p "$(dev_dir)"
    local b i free
    for ((b = 600; b < 1000; b += 20)); do
        free=1
        for ((i = b; i < b + 20; i++)); do
            [ -e "/sys/block/loop$i/loop/backing_file" ] && { free=0 && break; }
        done
        [ "$free" = 1 ] && { LOOP_BLOCK=$b && return 0; }
    done
    echo "e2e: no block of twenty unused loop numbers in 600-999" >&2
    return 1
}

# attach_loop NODE SLOT [NUMBER]: backs loop NUMBER (default: the slot's own) with the node's
# image file SLOT (made blank on first use); prints the device.
attach_loop() {
    local file num dev
    file=$(backing_file "$1" "$2")
    num=${3:-$(loop_number "$1" "$2")}
    dev=/dev/loop$num
    [ -e "$file" ] || truncate -s "$DEV_SIZE" "$file" || return 1
    losetup "$dev" "$file" || return 1
    echo "$dev"
}

# loop_of FILE: the loop device backed by FILE, if any (read from sysfs, ours only).
loop_of() {
    local f
    for f in /sys/block/loop*/loop/backing_file; do
        [ "$(cat "$f" 2>/dev/null)" = "$1" ] && { basename "$(dirname "$(dirname "$f")")" | sed 's|^|/dev/|'; return 0; }
    done
    return 1
}

# device_node_up NODE: the node's two disks and the filter config from the chart's ConfigMap.
device_node_up() {
    local n=$1 i
    for i in 0 1; do attach_loop "$n" "$i" >/dev/null || return 1; done
    k -n ferrovol get configmap ferrovol-device-config -o jsonpath='{.data.device-config\.yaml}' \
        >"$(node_dir "$n")/device-config.yaml" || return 1
}

# device_serve_args NODE: ferrovol serve's device flags for NODE.
device_serve_args() {
    echo "--device-config $(node_dir "$1")/device-config.yaml --device-include $(node_loop_glob "$1")"
}

# device_teardown: detaches every loop device backed by a file under $E2E_DIR/devices.
device_teardown() {
    local f dev
    [ -n "${E2E_DIR:-}" ] && [ -d "$E2E_DIR/devices" ] || return 0
    for f in "$E2E_DIR"/devices/*.img; do
        while dev=$(loop_of "$f"); do losetup -d "$dev" 2>/dev/null || break; done
    done
}

# bds NODE: the node's BlockDevice objects as a JSON array (by the node label).
bds() { k get blockdevices -l "ferrovol.io/node=$1" -o json | jq -c '.items'; }
bd_paths() { bds "$1" | jq -r '[.[].spec.path] | sort | join(" ")'; }
node_loops() {
    local i out=()
    for i in 0 1 2 3 4 5 6 7 8 9; do
        [ -e "$(backing_file "$1" "$i")" ] && out+=("$(loop_of "$(backing_file "$1" "$i")")")
    done
    printf '%s\n' "${out[@]}" | grep . | sort | paste -sd' '
}

# dev_capacity NODE: bytes the ferrovol-device CSIStorageCapacity of NODE reports.
dev_capacity() {
    local q
    q=$(k -n ferrovol get csistoragecapacities -o json |
        jq -r --arg c "$DEV_CLASS" --arg t "$TOPO" --arg n "$1" \
            '[.items[] | select(.storageClassName == $c and .nodeTopology.matchLabels[$t] == $n)
              | .capacity] | if length == 1 then .[0] else empty end')
    [ -n "$q" ] && [ "$q" != null ] && bytes "$q"
}
capacity_is() { [ "$(dev_capacity "$1")" = "$2" ]; }

# dev_claim_and_pod NAME [NODE]: a PVC on the device class and a Pod using it, pinned to NODE
# by a node selector when given.
dev_claim_and_pod() {
    local selector=
    [ -n "${2:-}" ] && selector="nodeSelector: {kubernetes.io/hostname: $2}"
    k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $1, namespace: default}
spec:
  storageClassName: $DEV_CLASS
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: $DEV_CLAIM}}
---
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: default}
spec:
  automountServiceAccountToken: false
  $selector
  containers:
    - {name: app, image: "registry.k8s.io/pause:3.10", volumeMounts: [{name: data, mountPath: /data}]}
  volumes:
    - {name: data, persistentVolumeClaim: {claimName: $1}}
EOF
}

# dev_check_placed NAME: the claim is Bound to a device PV pinned to its Pod's node, whose volume
# context names a BlockDevice of that node now Claimed by the volume. Prints "NODE BD".
dev_check_placed() {
    local name=$1 node pv pvj affinity uid bd want
    wait_for 180 "pvc $name to be Bound" pvc_bound "$name" || fail "pvc $name never Bound" || return 1
    wait_for 60 "pod $name to be scheduled" pod_scheduled "$name" || fail "pod $name never scheduled" || return 1
    node=$(pod_node "$name")
    pv=$(pv_of "$name")
    pvj=$(k get pv "$pv" -o json)
    affinity=$(jq -c '.spec.nodeAffinity.required.nodeSelectorTerms' <<<"$pvj")
    want="[{\"matchExpressions\":[{\"key\":\"$TOPO\",\"operator\":\"In\",\"values\":[\"$node\"]}]}]"
    [ "$affinity" = "$want" ] || fail "pv $pv: node affinity $affinity, want $TOPO in [$node]" || return 1
    jq -e '.spec.csi.volumeAttributes["ferrovol.io/backend"] == "device" and
           .spec.csi.volumeAttributes["ferrovol.io/access-type"] == "mount" and
           .spec.csi.volumeAttributes["ferrovol.io/fs-type"] == "ext4" and .spec.csi.fsType == "ext4"' \
        <<<"$pvj" >/dev/null || fail "pv $pv: volume context $(jq -c .spec.csi.volumeAttributes <<<"$pvj")" || return 1
    [ "$(bytes "$(jq -r .spec.capacity.storage <<<"$pvj")")" = "$DEV_BYTES" ] ||
        fail "pv $pv: capacity $(jq -r .spec.capacity.storage <<<"$pvj"), want the whole device $DEV_BYTES" || return 1
    uid=$(jq -r '.spec.csi.volumeAttributes["ferrovol.io/device-uid"]' <<<"$pvj")
    claimed() {
        bd=$(k get blockdevice "$uid" -o json 2>/dev/null) &&
            jq -e --arg n "$node" --arg v "$(jq -r .spec.csi.volumeHandle <<<"$pvj")" \
                '.spec.nodeName == $n and .status.claimState == "Claimed" and .status.volume == $v' <<<"$bd"
    }
    wait_for 30 "BlockDevice $uid to show Claimed" claimed ||
        fail "BlockDevice $uid of pv $pv: $(jq -c '{node: .spec.nodeName, status}' <<<"${bd:-null}"), want Claimed on $node" || return 1
    echo "$node $uid"
}

# 1. Each node's BlockDevices are exactly its own loop devices, Unclaimed, Active, candidates.
scenario_dev_blockdevices() {
    SCENARIO="dev1) BlockDevice objects per node"
    local n want got
    for n in "${NODES[@]}"; do
        want=$(node_loops "$n")
        synced() { [ "$(bd_paths "$n")" = "$want" ]; }
        wait_for 60 "$n's BlockDevices" synced ||
            fail "$n has BlockDevices at [$(bd_paths "$n")], want its loop devices [$want]" || return 1
        got=$(bds "$n" | jq -c --arg n "$n" --argjson size "$DEV_BYTES" \
            '[.[] | select(.spec.nodeName != $n or .status.claimState != "Unclaimed" or .status.state != "Active"
                   or .status.candidate != true or .spec.details.deviceType != "loop"
                   or .spec.capacity.storage != $size) | {name: .metadata.name, spec: .spec.path, status}]')
        [ "$got" = "[]" ] || fail "$n: BlockDevices not Unclaimed/Active candidates of $DEV_BYTES bytes: $got" || return 1
    done
    # Nothing else: neither the OS disk nor the other node's loops nor the hostpath bases.
    got=$(k get blockdevices -o json | jq '.items | length')
    want=$(($(node_loops "$NODE_SMALL" | wc -w) + $(node_loops "$NODE_BIG" | wc -w)))
    [ "$got" = "$want" ] || fail "$got BlockDevice objects in the cluster, want $want" || return 1
    echo "ok $SCENARIO ($NODE_SMALL: $(node_loops "$NODE_SMALL"); $NODE_BIG: $(node_loops "$NODE_BIG"))"
}

DEV_A_NODE= # node and BlockDevice of the volume made in scenario 2
DEV_A_BD=

# 2. A device PVC + Pod: Bound, scheduled, formatted and mounted by NodeStage/NodePublish, and a
#    file written in the pod is on that loop device.
scenario_dev_pod_ready() {
    SCENARIO="dev2) device PVC + Pod to a formatted, mounted disk"
    local c n placed pv handle uid target dev src
    for n in "${NODES[@]}"; do
        wait_for 60 "$n's device capacity" capacity_is "$n" $((2 * DEV_BYTES)) ||
            fail "$n reports device capacity '$(dev_capacity "$n")', want $((2 * DEV_BYTES))" || return 1
    done
    dev_claim_and_pod dev-a || fail "cannot create the claim and pod" || return 1
    placed=$(dev_check_placed dev-a) || { echo "$placed"; return 1; }
    read -r DEV_A_NODE DEV_A_BD <<<"$placed"
    n=$DEV_A_NODE
    dev=$(k get blockdevice "$DEV_A_BD" -o jsonpath='{.spec.path}')
    pv=$(pv_of dev-a)
    handle=$(k get pv "$pv" -o jsonpath='{.spec.csi.volumeHandle}')
    uid=$(k -n default get pod dev-a -o jsonpath='{.metadata.uid}')
    target=$(kubelet_publish "$n" "$uid" "$pv" "$handle") ||
        fail "NodeStage/NodePublish of $handle on $n failed (logs/ctl.log)" || return 1
    src=$(findmnt -rn -o SOURCE -M "$target")
    [ "$src" = "$dev" ] || fail "$target is mounted from '$src', want $dev" || return 1
    echo "written by the pod" >"$target/hello" || fail "cannot write into $target" || return 1
    kubelet_unpublish "$n" "$handle" "$target" || fail "NodeUnpublish/Unstage of $handle failed" || return 1
    ! findmnt -rn -S "$dev" >/dev/null || fail "$dev still mounted after NodeUnstage" || return 1
    c=$(debugfs -R "cat /hello" "$dev" 2>/dev/null)
    [ "$c" = "written by the pod" ] || fail "$dev does not hold the file written at $target (debugfs: '$c')" || return 1
    [ "$(blkid -p -o value -s TYPE "$dev")" = ext4 ] || fail "$dev holds no ext4" || return 1
    wait_for 30 "$n's capacity to drop by one device" capacity_is "$n" "$DEV_BYTES" ||
        fail "$n device capacity $(dev_capacity "$n") after the claim, want $DEV_BYTES" || return 1
    echo "ok $SCENARIO ($n, $dev, $DEV_A_BD)"
}

# 3. Capacity steers: fill the node with a free disk left, by pods pinned to it, until its
#    capacity is 0; the next unpinned pod goes to the other node, provisioned by that node only.
scenario_dev_steering() {
    SCENARIO="dev3) device capacity per node steers pods"
    local full other i placed node bd before pv
    [ -n "$DEV_A_NODE" ] || fail "scenario 2 placed no volume" || return 1
    full=$DEV_A_NODE
    for other in "${NODES[@]}"; do [ "$other" != "$full" ] && break; done
    before=$(dev_capacity "$other")
    [ "$(dev_capacity "$full")" = "$DEV_BYTES" ] && [ "$before" = $((2 * DEV_BYTES)) ] ||
        fail "setup: $full has $(dev_capacity "$full"), $other $before bytes" || return 1
    dev_claim_and_pod dev-fill "$full" || fail "cannot create claim dev-fill" || return 1
    placed=$(dev_check_placed dev-fill) || { echo "$placed"; return 1; }
    [ "${placed% *}" = "$full" ] || fail "dev-fill pinned to $full went to ${placed% *}" || return 1
    wait_for 30 "$full's device capacity to reach 0" capacity_is "$full" 0 ||
        fail "$full device capacity $(dev_capacity "$full") with both disks claimed, want 0" || return 1
    for i in 1 2; do
        dev_claim_and_pod "dev-s$i" || fail "cannot create claim dev-s$i" || return 1
        placed=$(dev_check_placed "dev-s$i") || { echo "$placed"; return 1; }
        read -r node bd <<<"$placed"
        [ "$node" = "$other" ] || fail "dev-s$i went to $node, which has no free disk" || return 1
        # Only the chosen node's provisioner started provisioning, and only its ferrovol was
        # asked to create the volume.
        pv=$(pv_of "dev-s$i")
        ! grep -q "\"Started\" PVC=\"default/dev-s$i\"" "$E2E_DIR/logs/csi-provisioner-$full.log" ||
            fail "$full's provisioner started provisioning default/dev-s$i" || return 1
        ! grep -q "method=\"CreateVolume\" volume=$pv " "$E2E_DIR/logs/ferrovol-$full.log" ||
            fail "$full's ferrovol got CreateVolume for $pv" || return 1
        grep -q "method=\"CreateVolume\" volume=$pv .*code=\"OK\"" "$E2E_DIR/logs/ferrovol-$other.log" ||
            fail "$other's ferrovol log shows no successful CreateVolume for $pv" || return 1
    done
    wait_for 30 "$other's device capacity to reach 0" capacity_is "$other" 0 ||
        fail "$other device capacity $(dev_capacity "$other") after two claims, want 0" || return 1
    echo "ok $SCENARIO (filled $full; dev-s1, dev-s2 on $other; $other capacity $before -> 0)"
}

# 4. Hotplug: a loop device attached now (kernel uevent, no udevd) becomes a BlockDevice of its
#    node, and the node's capacity grows by it.
scenario_dev_hotplug() {
    SCENARIO="dev4) hotplugged device appears"
    local n=$NODE_SMALL dev before appeared t0
    before=$(dev_capacity "$n") || fail "no device capacity for $n" || return 1
    t0=$SECONDS
    dev=$(attach_loop "$n" 2) || fail "cannot attach a third loop device on $n" || return 1
    appeared() {
        bds "$n" | jq -e --arg p "$dev" \
            '[.[] | select(.spec.path == $p and .status.claimState == "Unclaimed" and .status.candidate)] | length == 1'
    }
    wait_for 30 "a BlockDevice for $dev" appeared ||
        fail "no Unclaimed candidate BlockDevice for the hotplugged $dev on $n: [$(bd_paths "$n")]" || return 1
    appeared=$((SECONDS - t0))
    wait_for 30 "$n's capacity to grow" capacity_is "$n" $((before + DEV_BYTES)) ||
        fail "$n device capacity $(dev_capacity "$n") after hotplug, want $((before + DEV_BYTES))" || return 1
    echo "ok $SCENARIO ($dev on $n within ${appeared}s)"
}

# 5. Renumber: the claimed disk of scenario 2 detached and its file attached at another loop
#    number is still the one BlockDevice (same object, still Claimed), path updated, and the
#    volume publishes again with its data.
scenario_dev_renumber() {
    SCENARIO="dev5) renumbered device keeps its BlockDevice"
    local n=$DEV_A_NODE bd=$DEV_A_BD old new file kuid slot pv handle target
    [ -n "$bd" ] || fail "scenario 2 placed no volume" || return 1
    kuid=$(k get blockdevice "$bd" -o jsonpath='{.metadata.uid}')
    old=$(k get blockdevice "$bd" -o jsonpath='{.spec.path}')
    for slot in 0 1 2; do
        file=$(backing_file "$n" "$slot")
        [ "$(loop_of "$file")" = "$old" ] && break
    done
    [ "$(loop_of "$file")" = "$old" ] || fail "$old is not backed by one of $n's files" || return 1
    losetup -d "$old" || fail "cannot detach $old" || return 1
    inactive() { [ "$(k get blockdevice "$bd" -o jsonpath='{.status.state}')" = Inactive ]; }
    wait_for 30 "$bd to turn Inactive" inactive ||
        fail "BlockDevice $bd is $(k get blockdevice "$bd" -o jsonpath='{.status.state}') with $old detached" || return 1
    new=$(attach_loop "$n" "$slot" "$(loop_number "$n" 7)") || fail "cannot attach $file again" || return 1
    moved() {
        k get blockdevice "$bd" -o json | jq -e --arg p "$new" \
            '.spec.path == $p and .status.state == "Active" and .status.claimState == "Claimed"'
    }
    wait_for 30 "$bd to move to $new" moved ||
        fail "BlockDevice $bd: $(k get blockdevice "$bd" -o json | jq -c '{path: .spec.path, status}'), want Active, Claimed at $new" || return 1
    [ "$(k get blockdevice "$bd" -o jsonpath='{.metadata.uid}')" = "$kuid" ] ||
        fail "BlockDevice $bd was recreated, not updated" || return 1
    [ "$(bds "$n" | jq --arg f "$old" '[.[] | select(.spec.path == $f)] | length')" = 0 ] ||
        fail "an object still names $old" || return 1
    pv=$(pv_of dev-a)
    handle=$(k get pv "$pv" -o jsonpath='{.spec.csi.volumeHandle}')
    target=$(kubelet_publish "$n" "renumbered" "$pv" "$handle") ||
        fail "NodeStage/NodePublish of $handle at $new failed (logs/ctl.log)" || return 1
    [ "$(cat "$target/hello" 2>/dev/null)" = "written by the pod" ] ||
        fail "the file written in scenario 2 is not in the volume at $new" || return 1
    kubelet_unpublish "$n" "$handle" "$target" || fail "unpublish at $new failed" || return 1
    echo "ok $SCENARIO ($bd: $old -> $new, same object)"
}

# 6. Deleting the device claims deletes the PVs, wipes what ferrovol made (no signature left),
#    unclaims the BlockDevices and gives the capacity back.
scenario_dev_release() {
    SCENARIO="dev6) PVC delete releases the device"
    local claims=() pvs=() bdsv=() c i dev n total
    for c in dev-a dev-fill dev-s1 dev-s2; do
        k -n default get pvc "$c" >/dev/null 2>&1 || continue
        claims+=("$c")
        pvs+=("$(pv_of "$c")")
        bdsv+=("$(k get pv "${pvs[-1]}" -o jsonpath='{.spec.csi.volumeAttributes.ferrovol\.io/device-uid}')")
    done
    [ ${#claims[@]} -gt 0 ] || fail "no device claims left from the earlier scenarios" || return 1
    k -n default delete pod "${claims[@]}" --grace-period=0 --force --wait=false >/dev/null 2>&1
    k -n default delete pvc "${claims[@]}" --wait=false >/dev/null || fail "cannot delete ${claims[*]}" || return 1
    for i in "${!claims[@]}"; do
        wait_for 120 "pv ${pvs[i]} to go" bash -c "! '$BIN/kubectl' get pv '${pvs[i]}'" ||
            fail "pv ${pvs[i]} of ${claims[i]} still exists" || return 1
        unclaimed() {
            k get blockdevice "${bdsv[i]}" -o json |
                jq -e '.status.claimState == "Unclaimed" and (.status.volume // "") == "" and .status.candidate'
        }
        wait_for 30 "${bdsv[i]} to be Unclaimed" unclaimed ||
            fail "BlockDevice ${bdsv[i]} of ${claims[i]}: $(k get blockdevice "${bdsv[i]}" -o json | jq -c .status)" || return 1
        dev=$(k get blockdevice "${bdsv[i]}" -o jsonpath='{.spec.path}')
        blkid -p "$dev" >/dev/null 2>&1 && fail "$dev still carries $(blkid -p "$dev") after the delete" && return 1
    done
    for n in "${NODES[@]}"; do
        total=$(($(node_loops "$n" | wc -w) * DEV_BYTES))
        wait_for 30 "$n's device capacity to return" capacity_is "$n" "$total" ||
            fail "$n device capacity $(dev_capacity "$n") after the deletes, want $total" || return 1
    done
    echo "ok $SCENARIO (${#claims[@]} devices wiped and Unclaimed)"
}

DEVICE_SCENARIOS=(scenario_dev_blockdevices scenario_dev_pod_ready scenario_dev_steering
    scenario_dev_hotplug scenario_dev_renumber scenario_dev_release)
