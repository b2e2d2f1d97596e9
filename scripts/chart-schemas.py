#!/usr/bin/env python3
"""Writes kubeconform JSON schemas, offline, for scripts/chart-check.sh.

Usage: chart-schemas.py OUT_DIR OPENAPI_V3_DIR CRD_YAML...

Sources: the OpenAPI v3 documents that ship in the k8s.io/kubernetes Go module
(api/openapi-spec/v3/*.json) for built-in kinds, and the openAPIV3Schema of each CRD given.
Layout: OUT_DIR/<group>/<kind>_<version>.json, read by kubeconform with
-schema-location 'OUT_DIR/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json'
(for core kinds kubeconform's .Group is "v1").

Schemas are made strict the way kubeconform -strict expects: an object that lists its properties
rejects any other key, unless it preserves unknown fields. OpenAPI's int-or-string and quantity
formats become "integer or string" since JSON Schema has no such format.
"""
import json
import pathlib
import sys

import yaml

INT_OR_STRING = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
NUMBER_OR_STRING = {"anyOf": [{"type": "number"}, {"type": "string"}]}


def tighten(node):
    """Rewrites one schema tree in place into strict JSON Schema (draft 2019-09 and later)."""
    if isinstance(node, list):
        return [tighten(n) for n in node]
    if not isinstance(node, dict):
        return node
    if node.get("x-kubernetes-int-or-string") or node.get("format") == "int-or-string":
        return INT_OR_STRING
    node.pop("format", None)  # int32, int64, byte...: not JSON Schema formats
    if isinstance(node.get("$ref"), str):
        node["$ref"] = "#/$defs/" + node["$ref"].rsplit("/", 1)[1]
    for key, value in list(node.items()):
        if key in ("properties", "$defs"):
            node[key] = {k: tighten(v) for k, v in value.items()}
        elif key != "enum" and key != "default" and key != "example":
            node[key] = tighten(value)
    if "properties" in node and "additionalProperties" not in node:
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
    return node


def refs(node, found):
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):  # not a property named "$ref"
            found.add(node["$ref"].rsplit("/", 1)[1])
        for v in node.values():
            refs(v, found)
    elif isinstance(node, list):
        for v in node:
            refs(v, found)


def write(out, group, kind, version, schema):
    path = out / (group or "v1") / f"{kind.lower()}_{version}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    path.write_text(json.dumps(schema))


def builtin(out, spec_dir):
    count = 0
    for doc in sorted(pathlib.Path(spec_dir).glob("*.json")):
        defs = json.loads(doc.read_text()).get("components", {}).get("schemas", {})
        for name, schema in defs.items():
            for gvk in schema.get("x-kubernetes-group-version-kind", []):
                if name.endswith("List") or gvk["kind"] in ("WatchEvent", "DeleteOptions"):
                    continue
                needed, todo = set(), {name}
                while todo:  # only the definitions this kind reaches
                    n = todo.pop()
                    needed.add(n)
                    found = set()
                    refs(defs[n], found)
                    todo |= found - needed
                top = json.loads(json.dumps(schema))
                top["$defs"] = {n: json.loads(json.dumps(defs[n])) for n in needed}
                write(out, gvk["group"], gvk["kind"], gvk["version"], tighten(top))
                count += 1
    return count


def crds(out, files):
    count = 0
    for f in files:
        for crd in yaml.safe_load_all(pathlib.Path(f).read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for v in spec["versions"]:
                schema = v.get("schema", {}).get("openAPIV3Schema")
                if schema is None:
                    raise SystemExit(f"{f}: {spec['names']['kind']} {v['name']} has no schema")
                props = schema.setdefault("properties", {})
                # metadata is validated by the API server, not by the CRD's schema.
                props.setdefault("apiVersion", {"type": "string"})
                props.setdefault("kind", {"type": "string"})
                props["metadata"] = {"type": "object"}
                write(out, spec["group"], spec["names"]["kind"], v["name"], tighten(schema))
                count += 1
    return count


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    out_dir = pathlib.Path(sys.argv[1])
    n = builtin(out_dir, sys.argv[2])
    c = crds(out_dir, sys.argv[3:])
    print(f"schemas: {n} built-in kinds, {c} CRD versions -> {out_dir}")
