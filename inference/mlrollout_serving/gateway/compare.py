"""Model-aware comparison of a primary and a shadow answer to the same OIP request (pure).

Classifier-like outputs (integer, boolean or string labels; or probability matrices, compared by arg-max)
give per-row agreement; regressor-like outputs (float vectors or [rows, 1]) give absolute differences, over
the elements both answered with a finite number: a NaN or ±Inf (``null`` in the model server's JSON) would
make the histogram's sum NaN for the rest of the gateway's life, and ``null`` is no number at all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Comparison", "compare_responses", "finite_number"]

_FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64", "BF16"})


@dataclass(slots=True)
class Comparison:
    """Per output name: label agreement counts, or absolute differences per element."""

    agreement: dict[str, tuple[int, int]] = field(default_factory=dict)  # output -> (agree, disagree)
    abs_differences: dict[str, list[float]] = field(default_factory=dict)
    non_finite: dict[str, int] = field(default_factory=dict)  # output -> elements left out of the differences


def _flat(data: Any) -> list[Any]:
    if isinstance(data, list):
        out: list[Any] = []
        for item in data:
            out.extend(_flat(item) if isinstance(item, list) else [item])
        return out
    return [data]


def _outputs(response: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {
        str(o["name"]): o
        for o in response.get("outputs") or ()
        if isinstance(o, Mapping) and "name" in o and "data" in o
    }


def finite_number(value: Any) -> bool:
    """Whether a JSON value is a finite number (not ``null``, not a bool, not NaN or ±Inf)."""
    return (type(value) is float or type(value) is int) and math.isfinite(value)


def _argmax_rows(values: list[Any], width: int) -> list[int]:
    rows = [values[i : i + width] for i in range(0, len(values), width)]
    return [max(range(width), key=row.__getitem__) for row in rows]


def compare_responses(primary: Mapping[str, Any], shadow: Mapping[str, Any]) -> Comparison:
    """Compare outputs present in both answers with the same shape; others are skipped silently."""
    result = Comparison()
    shadow_outputs = _outputs(shadow)
    for name, out in _outputs(primary).items():
        other = shadow_outputs.get(name)
        if other is None or list(out.get("shape") or ()) != list(other.get("shape") or ()):
            continue
        a, b = _flat(out["data"]), _flat(other["data"])
        if len(a) != len(b) or not a:
            continue
        shape = list(out.get("shape") or ())
        datatype = out.get("datatype")
        if datatype in _FLOAT_TYPES:
            width = int(shape[-1]) if len(shape) == 2 else 1
            if width > 1:  # probabilities: compare the arg-max class per row
                la, lb = _argmax_rows(a, width), _argmax_rows(b, width)
                agree = sum(1 for x, y in zip(la, lb, strict=True) if x == y)
                result.agreement[name] = (agree, len(la) - agree)
            else:
                finite = [(x, y) for x, y in zip(a, b, strict=True) if finite_number(x) and finite_number(y)]
                result.abs_differences[name] = [abs(float(x) - float(y)) for x, y in finite]
                if len(finite) < len(a):
                    result.non_finite[name] = len(a) - len(finite)
        else:
            agree = sum(1 for x, y in zip(a, b, strict=True) if x == y)
            result.agreement[name] = (agree, len(a) - agree)
    return result
