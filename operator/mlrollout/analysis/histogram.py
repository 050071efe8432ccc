"""Prometheus-style cumulative histograms: parsing, forcing monotone, aligning two tracks, quantiles."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Histogram", "align", "interpolate_quantile", "parse_buckets"]


@dataclass(frozen=True)
class Histogram:
    """Cumulative counts ``cumulative[i]`` of observations ``<= bounds[i]``; the last bound is ``+Inf``."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]

    @property
    def total(self) -> int:
        return self.cumulative[-1] if self.cumulative else 0

    def count_le(self, bound: float) -> int:
        """Observations at or below ``bound``, which must be one of the bounds."""
        return self.cumulative[self.bounds.index(bound)]

    def restrict(self, bounds: Sequence[float]) -> Histogram:
        """The same histogram on a subset of its bounds (cumulative counts need no re-summing)."""
        return Histogram(tuple(bounds), tuple(self.count_le(b) for b in bounds))


def _bound(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise ValueError(f"{where}: bucket bound {text!r} is not a number") from exc
    if math.isnan(value) or value < 0:
        raise ValueError(f"{where}: bucket bound {text!r} must be a non-negative number or +Inf")
    return value


def parse_buckets(buckets: Mapping[str, int], where: str = "latency_buckets") -> tuple[Histogram, bool]:
    """Parse ``{"0.005": 3, ..., "+Inf": 10}``; return the histogram and whether counts were forced monotone.

    Counts taken with ``increase()`` over a window are extrapolated and rounded per bucket, so a bucket can
    come out a little below the one before it; the running maximum restores a valid cumulative histogram.
    """
    items = sorted((_bound(k, where), int(v)) for k, v in buckets.items())
    if not items or not math.isinf(items[-1][0]):
        raise ValueError(f"{where} must include the +Inf bucket")
    bounds, cumulative, forced, running = [], [], False, 0
    for bound, count in items:
        if count < running:
            forced = True
        running = max(running, count)
        bounds.append(bound)
        cumulative.append(running)
    return Histogram(tuple(bounds), tuple(cumulative)), forced


def align(a: Histogram, b: Histogram) -> tuple[Histogram, Histogram, bool]:
    """Restrict both histograms to the bounds they share (always including ``+Inf``).

    Returns whether any bound had to be dropped, which means the tracks were built with different bucket
    layouts and comparisons are coarser than they could be.
    """
    common = sorted(set(a.bounds) & set(b.bounds))
    dropped = len(common) != len(a.bounds) or len(common) != len(b.bounds)
    return a.restrict(common), b.restrict(common), dropped


def interpolate_quantile(bounds: Sequence[float], cdf: Sequence[float], q: float) -> float:
    """The ``q`` quantile of a bucketed distribution, linear within the bucket (like ``histogram_quantile``).

    ``cdf[i]`` is the (estimated or bounding) fraction ``<= bounds[i]``; it must be non-decreasing. The
    first bucket starts at 0. A quantile that falls in the ``+Inf`` bucket is ``inf``: we cannot say more.
    """
    lower_bound, lower_cdf = 0.0, 0.0
    for bound, value in zip(bounds, cdf, strict=True):
        if value >= q:
            if math.isinf(bound):
                return math.inf
            if value <= lower_cdf:
                return bound
            return lower_bound + (bound - lower_bound) * (q - lower_cdf) / (value - lower_cdf)
        lower_bound, lower_cdf = bound, value
    return math.inf
