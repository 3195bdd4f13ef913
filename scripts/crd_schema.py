#!/usr/bin/env python3
"""Write a focused JSON schema for one custom resource from its CustomResourceDefinition.

The CRD's ``openAPIV3Schema`` is kept to ``--depth`` levels of properties: every field name,
type, enum, pattern, bounds and ``required`` list down to there, types only below. An object
the CRD lists properties for (and does not mark ``x-kubernetes-preserve-unknown-fields``) is
closed with ``additionalProperties: false``, as the API server's strict field validation
treats it, so a misspelt field fails. Used for deploy/kubernetes/schemas/ (their ``$comment``
names the CRD's repository, commit and path); scripts/check_manifests.py reads them.

Usage: scripts/crd_schema.py CRD.yaml VERSION SOURCE [--depth N] [--shallow a,b] > schema.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

KEEP = ("type", "enum", "pattern", "minimum", "maximum", "minItems", "maxItems", "minLength",
        "maxLength", "format")
METADATA = {  # the CRDs say only "type: object"; what a manifest of ours may carry
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["name"],
    "additionalProperties": False,
}


def focus(node: dict[str, Any], depth: int, shallow: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The schema ``node`` with property detail kept ``depth`` levels down (types only for
    properties named in ``shallow``)."""
    if node.get("x-kubernetes-int-or-string"):
        return {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    out = {k: node[k] for k in KEEP if k in node}
    if "items" in node:
        out["items"] = focus(node["items"], depth, shallow)
    if "properties" in node:
        if depth <= 0:
            return out
        out["properties"] = {k: focus(v, 0 if k in shallow else depth - 1, shallow)
                             for k, v in node["properties"].items()}
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        if node.get("required"):
            out["required"] = node["required"]
    elif isinstance(node.get("additionalProperties"), dict) and depth > 0:
        out["additionalProperties"] = focus(node["additionalProperties"], depth - 1, shallow)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crd", type=Path)
    parser.add_argument("version", help="the CRD version, e.g. v1alpha1")
    parser.add_argument("source", help="where the CRD came from: repository@commit:path")
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--shallow", default="", help="comma-separated property names kept as types only "
                        "(large pod-spec parts a manifest of ours does not use)")
    args = parser.parse_args()
    crd = next(d for d in yaml.safe_load_all(args.crd.read_text())
               if d and d.get("kind") == "CustomResourceDefinition")
    version = next(v for v in crd["spec"]["versions"] if v["name"] == args.version)
    root = version["schema"]["openAPIV3Schema"]
    shallow = frozenset(filter(None, args.shallow.split(",")))
    schema = focus(root, args.depth, shallow)
    schema["properties"]["metadata"] = METADATA
    schema["properties"]["apiVersion"] = {"const": f"{crd['spec']['group']}/{args.version}"}
    schema["properties"]["kind"] = {"const": crd["spec"]["names"]["kind"]}
    schema["required"] = sorted({"apiVersion", "kind", "metadata", "spec"} & set(root["properties"]))
    how = f"depth {args.depth}" + (f"; types only: {args.shallow}" if shallow else "")
    doc = {"$schema": "https://json-schema.org/draft/2020-12/schema",
           "$comment": f"focused ({how}) from {args.source} by scripts/crd_schema.py",
           **schema}
    json.dump(doc, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
