#!/usr/bin/env bash
# Checks the Helm chart and the plain manifests, offline (docs/install.md, "Checks").
#   - installs helm v4 and kubeconform with `go install` when missing;
#   - `helm lint --strict` and `helm template` for the default values and each combination in
#     charts/ferrovol/ci/ (hostpath, device, nfs, all, snapshots, sidecar, pools);
#   - kubeconform -strict over every rendered resource and every file in deploy/, against JSON
#     schemas generated here from the OpenAPI documents in the k8s.io/kubernetes Go module and
#     from the CRDs (BlockDevice, the snapshot.storage.k8s.io CRDs, prometheus-operator's
#     ServiceMonitor);
#   - deploy/ferrovol*.yaml equal a fresh render.
# `scripts/chart-check.sh --update` rewrites deploy/ferrovol*.yaml from the chart first.
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION=v4.3.1
KUBECONFORM_VERSION=v0.8.0
K8S_MODULE=k8s.io/kubernetes@v1.37.2
SNAPSHOT_MODULE=github.com/kubernetes-csi/external-snapshotter/client/v8@v8.7.0
PROMOP_MODULE=github.com/prometheus-operator/prometheus-operator@v0.85.0
CHART=charts/ferrovol
export GOFLAGS="${GOFLAGS:-} -modcacherw"
GOBIN="$(go env GOBIN)"
GOBIN="${GOBIN:-$(go env GOPATH)/bin}"
export PATH="$PATH:$GOBIN"

# True when the binary $1 on PATH was built from module $2 at version $3.
built_from() {
    command -v "$1" >/dev/null && go version -m "$(command -v "$1")" | grep -q "mod[[:space:]]*$2[[:space:]]*$3"
}
# The module's directory in the Go module cache, downloading it if needed.
module_dir() {
    go mod download -json "$1" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error")))'
}

if ! built_from helm helm.sh/helm/v4 "$HELM_VERSION"; then
    echo "== installing helm $HELM_VERSION (go install; minutes from a cold cache)"
    if ! go install "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"; then
        # go install refuses modules whose go.mod has replace directives: build a writable copy.
        src=$(mktemp -d)
        cp -r "$(module_dir "helm.sh/helm/v4@$HELM_VERSION")/." "$src"
        chmod -R u+w "$src"
        (cd "$src" && go build -o "$GOBIN/helm" ./cmd/helm)
        rm -rf "$src"
    fi
fi
if ! built_from kubeconform github.com/yannh/kubeconform "$KUBECONFORM_VERSION"; then
    echo "== installing kubeconform $KUBECONFORM_VERSION"
    go install "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
k8s_dir=$(module_dir "$K8S_MODULE")
snap_dir=$(module_dir "$SNAPSHOT_MODULE")
promop_dir=$(module_dir "$PROMOP_MODULE")
python3 scripts/chart-schemas.py "$work/schemas" "$k8s_dir/api/openapi-spec/v3" \
    "$CHART"/crds/*.yaml "$snap_dir"/config/crd/snapshot.storage.k8s.io_*.yaml \
    "$promop_dir/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml"

# kubeconform -strict over files $2..., reported under the name $1; fails on any invalid,
# erroneous or skipped resource (a missing schema is an error here, never ignored).
validate() {
    local name=$1
    shift
    kubeconform -strict -summary -output json -kubernetes-version "${K8S_MODULE#*@v}" \
        -schema-location "$work/schemas/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json" \
        "$@" >"$work/result.json" || true
    python3 - "$name" "$work/result.json" "$@" <<'EOF'
import json, sys, yaml
name, result, files = sys.argv[1], sys.argv[2], sys.argv[3:]
rendered = sum(1 for f in files for d in yaml.safe_load_all(open(f)) if d)
out = json.load(open(result))
s = out["summary"]
bad = [r for r in out.get("resources", []) if r.get("status") != "statusValid"]
print(f"{name:<10} {rendered:3} resources rendered, {s['valid']:3} valid, {s['invalid']} invalid, "
      f"{s['errors']} errors, {s['skipped']} skipped")
for r in bad:
    print(f"    {r.get('filename')}: {r.get('kind')} {r.get('name')}: {r.get('msg')}")
if bad or s["valid"] != rendered:
    sys.exit(f"chart-check: {name}: not every resource is valid")
EOF
}

render() { # render NAME [helm args...] -> $work/NAME.yaml
    local name=$1
    shift
    helm lint --strict --quiet "$CHART" "$@" >"$work/lint.txt" 2>&1 || { cat "$work/lint.txt"; exit 1; }
    helm template ferrovol "$CHART" --namespace ferrovol --include-crds "$@" >"$work/$name.yaml"
}

# The checks must be able to fail: a typo in values and two broken manifests are rejected.
if helm template ferrovol "$CHART" --set nfs.servr=x >/dev/null 2>&1; then
    echo "chart-check: values.schema.json accepted the unknown key nfs.servr" >&2
    exit 1
fi
cat >"$work/broken.yaml" <<'BROKEN'
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: broken}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers: [{name: c, image: i, volumeMount: []}]
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotClass
metadata: {name: broken}
driver: local.csi.ferrovol.io
deletionPolicy: Sometimes
BROKEN
if kubeconform -strict -schema-location "$work/schemas/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json" \
    "$work/broken.yaml" >/dev/null; then
    echo "chart-check: the generated schemas accepted broken manifests" >&2
    exit 1
fi

echo "== helm lint --strict, helm template, kubeconform -strict (helm $HELM_VERSION, kubeconform $KUBECONFORM_VERSION, schemas of ${K8S_MODULE})"
render default
validate default "$work/default.yaml"
for values in "$CHART"/ci/*-values.yaml; do
    combo=$(basename "$values" -values.yaml)
    render "$combo" -f "$values"
    validate "$combo" "$work/$combo.yaml"
done

# The plain manifests: one file per values set in deploy/values/.
for values in deploy/values/*.yaml; do
    out="deploy/ferrovol-$(basename "$values")"
    [ "$(basename "$values")" = default.yaml ] && out=deploy/ferrovol.yaml
    render deploy-render -f "$values"
    if [ "${1:-}" = --update ]; then
        cp "$work/deploy-render.yaml" "$out"
    elif ! diff -u "$out" "$work/deploy-render.yaml" >"$work/diff.txt"; then
        head -40 "$work/diff.txt"
        echo "chart-check: $out differs from a fresh render; run scripts/chart-check.sh --update" >&2
        exit 1
    fi
done
validate deploy deploy/*.yaml deploy/examples/*.yaml
echo "== chart checks passed"
