"""Custom PromQL checks: the candidate's value held to the policy's ``min``/``max``."""

from __future__ import annotations

from mlrollout.analysis.result import metric_result
from mlrollout.analysis.snapshot import CustomValue
from mlrollout.api.analysis import MetricResult
from mlrollout.api.rolloutpolicy import CustomMetric

__all__ = ["custom_result"]


def custom_result(metric: CustomMetric, value: CustomValue | None) -> MetricResult:
    """A plain threshold, not a statistical test: it is outside the alpha budget (see docs/analysis.md)."""
    name = f"custom.{metric.name}"
    if value is None or value.candidate is None:
        why = value.error if value is not None and value.error else "no value for the candidate"
        return metric_result(name, "inconclusive", why, test="threshold")
    v = value.candidate
    estimate = (value.stable, v)
    if metric.min is not None and v < metric.min:
        return metric_result(name, "fail", f"{v:g} below the minimum {metric.min:g}", test="threshold",
                             estimate=estimate, effect=v - metric.min, threshold=metric.min)  # fmt: skip
    if metric.max is not None and v > metric.max:
        return metric_result(name, "fail", f"{v:g} above the maximum {metric.max:g}", test="threshold",
                             estimate=estimate, effect=v - metric.max, threshold=metric.max)  # fmt: skip
    limit = metric.max if metric.max is not None else metric.min
    return metric_result(name, "pass", f"{v:g} within limits", test="threshold", estimate=estimate, threshold=limit)
