"""Per-metric results: the status model's ``MetricResult``, built once here with numbers fit for JSON.

The three kinds of check every family (errors, latency, drift) runs share their decision rules here, so
a harm test, a non-inferiority check and an SLO mean the same thing whichever metric they look at. The
margin of a non-inferiority check is the policy's :class:`~mlrollout.api.rolloutpolicy.Margin` (relative
to stable's level, with an absolute floor); :func:`within_margin` is the one rule that compares a
candidate with a margin of stable's *estimated* level and stays valid (docs/analysis.md, "Margins").
"""

from __future__ import annotations

import math
from typing import Literal

from mlrollout.api.analysis import MetricDecision, MetricResult, TrackPair
from mlrollout.api.rolloutpolicy import Margin

__all__ = ["harm_decision", "metric_result", "non_inferiority_decision", "slo_decision", "within_margin"]

_BIG = 1e300  # status is JSON: infinities are clipped to a large finite number


def _num(x: float | None, digits: int = 6) -> float | None:
    if x is None or math.isnan(x):
        return None
    x = max(-_BIG, min(_BIG, float(x)))
    return float(f"{x:.{digits}g}")


def _pair(pair: tuple[float | None, float | None] | None) -> TrackPair | None:
    if pair is None:
        return None
    return TrackPair(stable=_num(pair[0]), candidate=_num(pair[1]))


def metric_result(
    name: str,
    decision: MetricDecision,
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
) -> MetricResult:
    """One metric's evidence; the anytime-valid p-value is ``min(1, 1/e)`` when an e-value is given."""
    p_value = None if e_value is None else (1.0 if e_value <= 1.0 else 1.0 / e_value)
    lo, hi = interval if interval is not None else (None, None)
    return MetricResult(
        name=name,
        decision=decision,
        test=test,
        samples=_pair(samples),
        estimate=_pair(estimate),
        effect=_num(effect),
        interval=None if lo is None or hi is None else [_num(lo) or 0.0, _num(hi) or 0.0],
        statistic=_num(statistic),
        e_value=_num(e_value),
        p_value=_num(p_value),
        threshold=_num(threshold),
        reason=reason,
    )


def harm_decision(e_value: float, alpha: float) -> tuple[Literal["pass", "fail"], float]:
    """A harm test fails once its e-value reaches ``1/alpha`` (Ville: at most alpha under no harm), else
    passes; returns the decision and the threshold."""
    threshold = 1.0 / alpha
    return ("fail" if e_value >= threshold else "pass"), threshold


def non_inferiority_decision(worst: float, allowed: float, enough: bool) -> MetricDecision:
    """Non-inferiority passes once the worst plausible effect is within the margin on enough samples; it
    never fails (harm tests roll back), it keeps collecting."""
    return "pass" if enough and worst <= allowed else "inconclusive"


def within_margin(candidate_upper: float, stable_lower: float, margin: Margin) -> bool:
    """Non-inferiority of a lower-is-better metric (error rate, latency, misclassification): the candidate's
    worst plausible level is within the margin of stable's best plausible one, ``U_c <= limit(L_s)``.

    Valid whatever the margin's relative part and however stable's level is estimated: ``limit(x) = x +
    max(relative * x, floor)`` is increasing, so when ``U_c`` bounds the candidate's level ``c`` from above
    and ``L_s`` bounds stable's ``s`` from below, ``c <= U_c <= limit(L_s) <= limit(s)``: the candidate is
    within the margin of stable's *true* level. A candidate beyond it (``c > limit(s)``) passes only when a
    bound misses, so with anytime-valid bounds at levels ``a_c`` and ``a_s`` it is promoted with probability
    at most ``a_c + a_s`` however often it is looked at. (Plugging stable's point estimate into the margin
    instead would not be: noise that raises stable's estimate widens the margin.)
    """
    return candidate_upper <= margin.limit(stable_lower)


def slo_decision(lower: float, upper: float, limit: float, enough: bool) -> MetricDecision:
    """An SLO fails when its interval lies above the limit, passes when below it on enough samples."""
    if lower > limit:
        return "fail"
    return "pass" if upper <= limit and enough else "inconclusive"
