"""Generate the CustomResourceDefinitions from the pydantic models (`make crds`).

The models are the source of truth; `tests/unit/api/test_crds.py` regenerates and fails on any difference
from the committed YAML. Pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3
schema, so this module inlines `$ref`s, turns `anyOf [X, null]` into an optional X (`nullable` when the
default is not null, so that an explicit null survives the API server), drops titles and
defaults (defaults live in the models, where the operator applies them, so the API server never rewrites
what GitOps tools wrote), and translates numeric bounds and `const`.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from mlrollout.api.common import GROUP, VERSION
from mlrollout.api.fallbackpolicy import FallbackPolicy
from mlrollout.api.modeldeployment import ModelDeployment
from mlrollout.api.rolloutpolicy import RolloutPolicy

Schema = dict[str, Any]
ROOT = Path(__file__).resolve().parents[3]
OUTPUT_DIRS = (ROOT / "crds", ROOT / "charts" / "mlrollout" / "crds")

_DROP = {"title", "default", "$defs"}


def _structural(node: Any, defs: Schema) -> Any:
    """Rewrite one JSON-Schema node (recursively) into its structural OpenAPI v3 form."""
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").split("/")[-1]])
        target.update({k: v for k, v in node.items() if k == "description"})
        node = target
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o != {"type": "null"}]
        # null accepted and a non-null default: null is a choice (e.g. no SLO), which the API server only
        # keeps for `nullable` fields (it prunes other nulls, and the operator would apply the default)
        nullable = len(options) < len(node["anyOf"]) and node.get("default") is not None
        if len(options) == 1:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            merged = _structural(options[0], defs)
            merged.update({k: v for k, v in rest.items() if k == "description"})
            node = {**{k: v for k, v in rest.items() if k not in ("description",)}, **merged}
            if nullable:
                node["nullable"] = True
    out: Schema = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum" and not isinstance(value, bool):
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _structural(value, defs)
        else:
            out[key] = value
    if "properties" in out and out.get("additionalProperties") is False:
        del out["additionalProperties"]
    if out.get("additionalProperties") is True:
        del out["additionalProperties"]
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def openapi_schema(model: type[BaseModel]) -> Schema:
    """The structural schema of a top-level kind (apiVersion, kind, metadata, spec, status)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    schema: Schema = _structural(raw, defs)
    props = schema["properties"]
    props["apiVersion"] = {"type": "string", "description": props["apiVersion"]["description"]}
    props["kind"] = {"type": "string", "description": props["kind"]["description"]}
    props["metadata"] = {"type": "object"}
    schema["required"] = [r for r in schema.get("required", []) if r in ("spec",)]
    if not schema["required"]:
        del schema["required"]
    return schema


_PRINTER_COLUMNS: dict[str, list[Schema]] = {
    "ModelDeployment": [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Stable", "type": "string", "jsonPath": ".status.stableVersion"},
        {"name": "Candidate", "type": "string", "jsonPath": ".status.candidateVersion"},
        {"name": "Split", "type": "string", "jsonPath": ".status.trafficSplit"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
    "RolloutPolicy": [
        {"name": "Priority", "type": "integer", "jsonPath": ".spec.priority"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
    "FallbackPolicy": [
        {"name": "Priority", "type": "integer", "jsonPath": ".spec.priority"},
        {"name": "Timeout", "type": "string", "jsonPath": ".spec.requestTimeout"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
}

KIND_INFO: dict[str, tuple[type[BaseModel], str, str, str]] = {
    # kind: (model, plural, short name, scope)
    "ModelDeployment": (ModelDeployment, "modeldeployments", "md", "Namespaced"),
    "RolloutPolicy": (RolloutPolicy, "rolloutpolicies", "rp", "Cluster"),
    "FallbackPolicy": (FallbackPolicy, "fallbackpolicies", "fp", "Cluster"),
}


def crd(kind: str) -> Schema:
    """The complete CustomResourceDefinition object for one kind."""
    model, plural, short, scope = KIND_INFO[kind]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["mlrollout"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _PRINTER_COLUMNS[kind],
                    "schema": {"openAPIV3Schema": openapi_schema(model)},
                }
            ],
        },
    }


def render(kind: str) -> str:
    """One CRD as YAML text, with a header saying where it comes from."""
    header = "# Generated by `make crds` from operator/mlrollout/api; do not edit.\n"
    return header + yaml.safe_dump(crd(kind), sort_keys=False, width=120)


def filename(kind: str) -> str:
    """File name of a kind's CRD, after controller-gen's convention."""
    return f"{GROUP}_{KIND_INFO[kind][1]}.yaml"


def main() -> int:
    """Write every CRD into crds/ and the chart."""
    for directory in OUTPUT_DIRS:
        directory.mkdir(parents=True, exist_ok=True)
        for kind in KIND_INFO:
            (directory / filename(kind)).write_text(render(kind))
    print(f"wrote {len(KIND_INFO)} CRDs to " + ", ".join(str(d.relative_to(ROOT)) for d in OUTPUT_DIRS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
