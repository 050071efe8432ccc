"""Per-metric results, shaped exactly like the status model ``MetricResult`` (camelCase keys).

The operator copies these dicts into ``status.analysis.metrics`` without translation, so the keys here and
the fields of ``mlrollout.api.modeldeployment.MetricResult`` must stay the same (a unit test checks it).
"""

from __future__ import annotations

import math
from typing import Literal, TypedDict

__all__ = ["Decision", "MetricDict", "TrackPairDict", "metric_result"]

Decision = Literal["pass", "fail", "inconclusive"]


class TrackPairDict(TypedDict):
    stable: float | None
    candidate: float | None


class MetricDict(TypedDict):
    name: str
    decision: Decision
    test: str | None
    samples: TrackPairDict | None
    estimate: TrackPairDict | None
    effect: float | None
    interval: list[float] | None
    statistic: float | None
    eValue: float | None
    pValue: float | None
    threshold: float | None
    reason: str


_BIG = 1e300  # status is JSON: infinities are clipped to a large finite number


def _num(x: float | None, digits: int = 6) -> float | None:
    if x is None or math.isnan(x):
        return None
    x = max(-_BIG, min(_BIG, float(x)))
    return float(f"{x:.{digits}g}")


def _pair(pair: tuple[float | None, float | None] | None) -> TrackPairDict | None:
    if pair is None:
        return None
    return {"stable": _num(pair[0]), "candidate": _num(pair[1])}


def metric_result(
    name: str,
    decision: Decision,
    reason: str,
    *,
    test: str | None = None,
    samples: tuple[float | None, float | None] | None = None,
    estimate: tuple[float | None, float | None] | None = None,
    effect: float | None = None,
    interval: tuple[float, float] | None = None,
    statistic: float | None = None,
    e_value: float | None = None,
    threshold: float | None = None,
) -> MetricDict:
    """One metric's evidence; the anytime-valid p-value is ``min(1, 1/e)`` when an e-value is given."""
    p_value = None if e_value is None else (1.0 if e_value <= 1.0 else 1.0 / e_value)
    lo, hi = interval if interval is not None else (None, None)
    return {
        "name": name,
        "decision": decision,
        "test": test,
        "samples": _pair(samples),
        "estimate": _pair(estimate),
        "effect": _num(effect),
        "interval": None if lo is None or hi is None else [_num(lo) or 0.0, _num(hi) or 0.0],
        "statistic": _num(statistic),
        "eValue": _num(e_value),
        "pValue": _num(p_value),
        "threshold": _num(threshold),
        "reason": reason[:1024],
    }
