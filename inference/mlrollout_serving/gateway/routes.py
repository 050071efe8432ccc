"""Reading the route table's text (YAML or JSON) into the contract's ``RouteTable``, with one-line errors."""

from __future__ import annotations

import json
from typing import Any

import yaml

from ..contract.routes import CONFIGMAP_KEY, RouteTable, RouteTableError

__all__ = ["parse_route_table", "route_table_from_configmap"]


def parse_route_table(text: str | bytes) -> RouteTable:
    """Parse a YAML or JSON route table; raise RouteTableError with a one-line reason."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RouteTableError(f"not valid YAML/JSON: {' '.join(str(exc).split())}") from exc
    if not isinstance(data, dict):
        raise RouteTableError(f"expected a mapping at the top level, got {type(data).__name__}")
    try:
        return RouteTable.model_validate(data)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise RouteTableError(_one_line(exc)) from exc


def route_table_from_configmap(configmap: dict[str, Any], key: str = CONFIGMAP_KEY) -> RouteTable:
    """Extract and validate the route table stored under `data[key]` of a ConfigMap (as a plain dict)."""
    data = configmap.get("data") or {}
    if key not in data:
        name = (configmap.get("metadata") or {}).get("name", "?")
        raise RouteTableError(f"ConfigMap {name} has no key {key!r} (keys: {sorted(data)})")
    return parse_route_table(data[key])


def _one_line(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        parts = []
        for err in errors():
            where = ".".join(str(p) for p in err.get("loc", ())) or "<table>"
            parts.append(f"{where}: {str(err.get('msg', '')).removeprefix('Value error, ')}")
        return "; ".join(parts)
    return json.dumps(str(exc))
