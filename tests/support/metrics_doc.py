"""docs/metrics.md as the tests read it: the series tables (name, type, labels) and the names they are queried by.

Stable API:

- ``METRICS_DOC``: the page; ``documented_series(text)``: ``{name: Documented(kind, labels)}`` of every row of
  its series tables (data plane rows list the labels beyond the identity labels, operator rows all of them).
- ``OPERATOR_PREFIX``: the operator's own series start with it (the rest are the data plane's contract).
- ``operator_series()``: ``{name: type}`` of the operator's own registry (``mlrollout.controller.metrics``).
- ``exposed_names(name, kind)``: what a query names a series by (a histogram by its ``_bucket``, ``_count``,
  ``_sum``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mlrollout.controller.metrics import REGISTRY

METRICS_DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
OPERATOR_PREFIX = "mlrollout_operator_"
# | `name` | type | labels | meaning |
_ROW = re.compile(r"^\| `(mlrollout_\w+)` \| (\w+) \|([^|]*)\|", re.MULTILINE)


@dataclass(frozen=True)
class Documented:
    """A series row of docs/metrics.md: its type and the labels of its labels column."""

    kind: str
    labels: tuple[str, ...]


def documented_series(text: str) -> dict[str, Documented]:
    return {name: Documented(kind, tuple(re.findall(r"`(\w+)`", labels))) for name, kind, labels in _ROW.findall(text)}


def exposed_names(name: str, kind: str) -> set[str]:
    """The names a series is queried by: a histogram's ``_bucket``, ``_count`` and ``_sum``, else its own."""
    return {f"{name}_bucket", f"{name}_count", f"{name}_sum"} if kind == "histogram" else {name}


def operator_series() -> dict[str, str]:
    """``{exported name: type}`` of the operator's registry (prometheus_client drops a counter's ``_total``)."""
    return {f.name + ("_total" if f.type == "counter" else ""): f.type for f in REGISTRY.collect()}
