# Sourced by scripts/e2e.sh: the last scenario. Every sidecar and controller runs with the token
# of its chart (or upstream) ServiceAccount; many of them survive a denied verb (an informer that
# cannot watch retries forever, an optional finalizer is skipped), so a missing verb can leave
# every other scenario green. This one reads their logs for any RBAC denial.
#
# One denial is by design: ferrovol serves no GroupController, so the chart grants nothing on
# groupsnapshot.storage.k8s.io; csi-snapshotter probes those resources at start and, denied,
# turns volume group snapshots off.
#
# Needs: E2E_DIR (logs), the scenarios.sh functions.

# rbac_denials: the denial messages in all logs, less the by-design one.
rbac_denials() {
    grep -h -o 'is forbidden: User [^ ]* cannot [a-z]* resource [^ ]* in API group [^ ]*' \
        "$E2E_DIR"/logs/*.log 2>/dev/null | tr -d '\\"' | grep -v 'in API group groupsnapshot.storage.k8s.io'
}

scenario_no_rbac_denials() {
    SCENARIO="l) no RBAC denial in any component's log"
    local denied
    denied=$(rbac_denials | sort | uniq -c)
    [ -z "$denied" ] || fail "denied by RBAC (logs/*.log):"$'\n'"$denied" || return 1
    echo "ok $SCENARIO"
}
