"""Paired differences summarised with intervals, for benchmarks that compare variants run side by side.

A benchmark that runs two variants in pairs (interleaved runs, or blocks of requests alternating between
them) gets one difference per pair; :func:`paired_summary` gives their median and mean, each with a 95%
interval, so that a claim such as "at most 5 µs" can be checked against the interval, not against a median
whose spread is not shown:

- the median's distribution-free interval from order statistics (the sign test's: the k-th smallest and
  k-th largest difference, k from the binomial(n, 1/2) quantile; exact coverage at least 95% whatever the
  distribution, for independent pairs);
- the median's and the mean's percentile bootstrap intervals (``resamples`` resamples, a fixed seed: the
  same differences always give the same interval).
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["bootstrap_interval", "paired_summary", "sign_test_interval"]


def sign_test_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """The distribution-free interval for the median of ``values`` (independent draws): the k-th smallest and
    the k-th largest, k the largest with P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2. None when n is too
    small for any such interval (n < 6 at 95%)."""
    n = len(values)
    tail = (1.0 - confidence) / 2
    ordered = sorted(values)
    cumulative, k = 0.0, 0
    # P(B < j + 1) = sum_{i <= j} C(n, i) / 2^n; k is the number of terms that keep it within the tail
    for i in range(n + 1):
        cumulative += math.comb(n, i) / 2.0**n if n <= 1000 else math.exp(_log_binom_half(n, i))
        if cumulative > tail:
            break
        k = i + 1
    if k == 0:
        return None
    return ordered[k - 1], ordered[n - k]


def _log_binom_half(n: int, i: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2.0)


def bootstrap_interval(
    values: Sequence[float], statistic: str = "median", resamples: int = 4000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """The percentile bootstrap interval of the median (or the mean) of ``values``."""
    rng = random.Random(seed)
    data = list(values)
    n = len(data)
    stat = statistics.median if statistic == "median" else statistics.fmean
    estimates = sorted(stat(rng.choices(data, k=n)) for _ in range(resamples))
    tail = (1.0 - confidence) / 2
    low = estimates[math.floor(tail * (resamples - 1))]
    high = estimates[math.ceil((1.0 - tail) * (resamples - 1))]
    return low, high


def paired_summary(differences: Sequence[float], bound: float | None = None) -> dict[str, Any]:
    """Median, mean, spread and 95% intervals of paired differences; with ``bound``, whether each interval lies
    wholly above it (the difference is surely more) or wholly at or below it (surely at most)."""
    data = [float(d) for d in differences]
    if not data:
        return {"n": 0}
    out: dict[str, Any] = {
        "n": len(data),
        "median": statistics.median(data),
        "mean": statistics.fmean(data),
        "min": min(data),
        "max": max(data),
        "positive": sum(d > 0 for d in data),
        "quartiles": statistics.quantiles(data, n=4) if len(data) >= 2 else [data[0]] * 3,
        "median_ci95_sign_test": sign_test_interval(data),
        "median_ci95_bootstrap": bootstrap_interval(data, "median") if len(data) >= 2 else None,
        "mean_ci95_bootstrap": bootstrap_interval(data, "mean") if len(data) >= 2 else None,
    }
    if bound is not None:
        out["bound"] = bound
        for key in ("median_ci95_sign_test", "median_ci95_bootstrap", "mean_ci95_bootstrap"):
            interval = out[key]
            verdict = None
            if interval is not None:
                verdict = "above" if interval[0] > bound else "at_or_below" if interval[1] <= bound else "undecided"
            out[key.replace("ci95", "vs_bound")] = verdict
    return out
