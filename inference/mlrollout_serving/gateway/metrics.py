"""The gateway's Prometheus series, named and labelled exactly as docs/metrics.md says.

The two series touched by every request (requests by code, duration histogram) are plain dicts of ints
turned into metric families only when scraped: prometheus_client's label lookup, lock and validation
per request cost more than the rest of the gateway's Python work. Everything else uses the client.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ..contract import metrics as contract
from ..contract.metrics import LATENCY_BUCKETS
from .feedback import Feedback

__all__ = ["ABS_DIFF_BUCKETS", "GatewayMetrics"]

# Absolute differences between shadow and primary regressor outputs: the same buckets as the feedback errors.
ABS_DIFF_BUCKETS: tuple[float, ...] = contract.ABS_ERROR_BUCKETS

_F = TypeVar("_F", bound=Metric)


def _counter(series: contract.Series, registry: CollectorRegistry) -> Counter:
    """A prometheus_client Counter for a contract series (the client appends `_total` itself)."""
    return Counter(series.counter_stem, series.help, series.label_names, registry=registry)


def _family(kind: Callable[..., _F], series: contract.Series) -> _F:
    """An empty metric family for a contract series, filled at scrape time."""
    return kind(series.name, series.help, labels=series.label_names)


class GatewayMetrics:
    """Owns a private registry (so tests can run several gateways in one process)."""

    def __init__(self, namespace: str, model_deployment: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._ns = namespace
        self._md = model_deployment
        self.namespace = namespace
        self.model_deployment = model_deployment
        r = self.registry
        self._hot = _HotRequests(namespace, model_deployment)
        r.register(self._hot)
        self.fallbacks = _counter(contract.GATEWAY_FALLBACKS, r)
        self.fallback_requests = _counter(contract.GATEWAY_FALLBACK_REQUESTS, r)
        self.reviews_sent = _counter(contract.GATEWAY_REVIEWS_SENT, r)
        self.reviews_failed = _counter(contract.GATEWAY_REVIEWS_FAILED, r)
        self.reviews_dropped = _counter(contract.GATEWAY_REVIEWS_DROPPED, r)
        self.mirrored = _counter(contract.GATEWAY_MIRRORED, r)
        self.mirror_dropped = _counter(contract.GATEWAY_MIRROR_DROPPED, r)
        self.agreement = _counter(contract.GATEWAY_SHADOW_AGREEMENT, r)
        abs_diff = contract.GATEWAY_SHADOW_ABS_DIFF
        self.abs_difference = Histogram(
            abs_diff.name, abs_diff.help, abs_diff.label_names, buckets=ABS_DIFF_BUCKETS, registry=r
        )
        version = contract.GATEWAY_ROUTE_VERSION
        self.route_version = Gauge(version.name, version.help, version.label_names, registry=r)
        self.observe_request = self._hot.observe
        self.upstream_retries: Callable[[], list[tuple[str, str, str, int]]] = list
        """(track, revision, upstream, count) rows, set by the gateway that owns the upstream pools."""
        r.register(_UpstreamRetries(self))
        self.feedback: Feedback | None = None
        """The feedback state whose counters the feedback series show (set by the gateway that has one)."""
        r.register(_FeedbackSeries(self))

    def fallback(self, track: str, revision: str, reason: str, action: str) -> None:
        self.fallbacks.labels(self._ns, self._md, track, revision, reason, action).inc()

    def fallback_request(self, track: str, revision: str, reason: str, answered: str) -> None:
        """One request whose routed track's answer was not served (the fallback path only, never the hot one)."""
        self.fallback_requests.labels(self._ns, self._md, track, revision, reason, answered).inc()

    def review_sent(self, track: str, revision: str) -> None:
        self.reviews_sent.labels(self._ns, self._md, track, revision).inc()

    def review_failed(self, track: str, revision: str, reason: str) -> None:
        self.reviews_failed.labels(self._ns, self._md, track, revision, reason).inc()

    def review_dropped(self, track: str, revision: str, reason: str) -> None:
        self.reviews_dropped.labels(self._ns, self._md, track, revision, reason).inc()

    def mirror_sent(self, revision: str) -> None:
        self.mirrored.labels(self._ns, self._md, "shadow", revision).inc()

    def mirror_drop(self, revision: str, reason: str) -> None:
        self.mirror_dropped.labels(self._ns, self._md, "shadow", revision, reason).inc()

    def shadow_agreement(self, revision: str, output: str, agree: int, disagree: int) -> None:
        if agree:
            self.agreement.labels(self._ns, self._md, "shadow", revision, output, "agree").inc(agree)
        if disagree:
            self.agreement.labels(self._ns, self._md, "shadow", revision, output, "disagree").inc(disagree)

    def shadow_abs_difference(self, revision: str, output: str, values: list[float]) -> None:
        hist = self.abs_difference.labels(self._ns, self._md, "shadow", revision, output)
        for value in values:
            hist.observe(value)

    def set_route_version(self, version: int) -> None:
        self.route_version.labels(self._ns, self._md, "gateway", "").set(version)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Series:
    """Counts of one (track, revision): requests by code, duration bucket counts and their sum."""

    __slots__ = ("buckets", "codes", "total")

    def __init__(self, n_buckets: int) -> None:
        self.codes: dict[int, int] = {}
        self.buckets = [0] * n_buckets
        self.total = 0.0


class _HotRequests(Collector):
    """`requests_total` and `request_duration_seconds`, counted on the event-loop thread.

    Nested dicts keyed by track, then revision: no key tuple is built per request, and the histogram is a
    bisect into the fixed bucket bounds.
    """

    def __init__(self, namespace: str, model_deployment: str) -> None:
        self._ns = namespace
        self._md = model_deployment
        # Always ending in +Inf, so every value has a bucket whatever the contract's tuple ends with.
        self._bounds = (*(b for b in LATENCY_BUCKETS if b != math.inf), math.inf)
        self._series: dict[str, dict[str, _Series]] = {}

    def observe(self, track: str, revision: str, code: int, seconds: float) -> None:
        """Count one answered request and its duration (the hot path)."""
        by_revision = self._series.get(track)
        if by_revision is None:
            by_revision = self._series[track] = {}
        series = by_revision.get(revision)
        if series is None:
            series = by_revision[revision] = _Series(len(self._bounds))
        codes = series.codes
        codes[code] = codes.get(code, 0) + 1
        series.buckets[bisect_left(self._bounds, seconds)] += 1
        series.total += seconds

    def collect(self) -> Iterator[Metric]:
        rows = [(t, r, s) for t, by_rev in list(self._series.items()) for r, s in list(by_rev.items())]
        requests = _family(CounterMetricFamily, contract.GATEWAY_REQUESTS)
        for track, revision, series in rows:
            for code, count in sorted(series.codes.items()):
                requests.add_metric([self._ns, self._md, track, revision, str(code)], count)
        yield requests
        duration = _family(HistogramMetricFamily, contract.GATEWAY_DURATION)
        for track, revision, series in rows:
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, in_bucket in zip(self._bounds, series.buckets, strict=True):
                cumulative += in_bucket
                buckets.append((floatToGoString(bound), float(cumulative)))  # type: ignore[no-untyped-call]
            duration.add_metric([self._ns, self._md, track, revision], buckets, sum_value=series.total)
        yield duration


class _UpstreamRetries(Collector):
    """Connect retries per upstream, read from the pools' plain counters at scrape time."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        family = _family(CounterMetricFamily, contract.GATEWAY_UPSTREAM_CONNECT_RETRIES)
        m = self._metrics
        for track, revision, upstream, count in m.upstream_retries():
            family.add_metric([m._ns, m._md, track, revision, upstream], count)
        yield family


class _FeedbackSeries(Collector):
    """The feedback series (docs/metrics.md), read from the gateway's feedback counters at scrape time."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        feedback = m.feedback
        if feedback is None:
            return
        ident = [m._ns, m._md]
        scores, dropped = feedback.snapshot()
        labels = _family(CounterMetricFamily, contract.GATEWAY_FEEDBACK_LABELS)
        for (track, revision, outcome), n in sorted(scores.labels.items()):
            labels.add_metric([*ident, track, revision, outcome], n)
        yield labels
        for series, values in (
            (contract.GATEWAY_FEEDBACK_ABS_ERROR, scores.abs_error),
            (contract.GATEWAY_FEEDBACK_SQUARED_ERROR, scores.squared_error),
        ):
            family = _family(CounterMetricFamily, series)
            for (track, revision), total in sorted(values.items()):
                family.add_metric([*ident, track, revision], total)
            yield family
        rows = _family(HistogramMetricFamily, contract.GATEWAY_FEEDBACK_ABS_ERROR_ROWS)
        for (track, revision), per_bucket in sorted(scores.abs_error_rows.items()):
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, in_bucket in zip(scores.abs_error_bounds, per_bucket, strict=True):
                cumulative += in_bucket
                buckets.append((floatToGoString(bound), float(cumulative)))  # type: ignore[no-untyped-call]
            rows.add_metric([*ident, track, revision], buckets, sum_value=scores.abs_error.get((track, revision), 0.0))
        yield rows
        pairs = _family(CounterMetricFamily, contract.GATEWAY_FEEDBACK_PAIRS)
        for (revision, result), n in sorted(scores.pairs.items()):
            pairs.add_metric([*ident, "shadow", revision, result], n)
        yield pairs
        pair_error = _family(CounterMetricFamily, contract.GATEWAY_FEEDBACK_PAIR_ABS_ERROR)
        for (revision, side), total in sorted(scores.pair_abs_error.items()):
            pair_error.add_metric([*ident, "shadow", revision, side], total)
        yield pair_error
        bounds = [contract.clip_label(b) for b in contract.CLIP_BOUNDS]
        for series, per_bound in (
            (contract.GATEWAY_FEEDBACK_CLIPPED_ABS_ERROR, scores.clipped_abs_error),
            (contract.GATEWAY_FEEDBACK_CLIPPED_SQUARED_ERROR, scores.clipped_squared_error),
        ):
            family = _family(CounterMetricFamily, series)
            for (track, revision), totals in sorted(per_bound.items()):
                for label, total in zip(bounds, totals, strict=True):
                    family.add_metric([*ident, track, revision, label], total)
            yield family
        clipped_pairs = _family(CounterMetricFamily, contract.GATEWAY_FEEDBACK_PAIR_CLIPPED_ABS_ERROR)
        for (revision, side), totals in sorted(scores.pair_clipped_abs_error.items()):
            for label, total in zip(bounds, totals, strict=True):
                clipped_pairs.add_metric([*ident, "shadow", revision, side, label], total)
        yield clipped_pairs
        clipped_squares = _family(CounterMetricFamily, contract.GATEWAY_FEEDBACK_PAIR_CLIPPED_DIFF_SQUARES)
        for revision, totals in sorted(scores.pair_clipped_diff_squares.items()):
            for label, total in zip(bounds, totals, strict=True):
                clipped_squares.add_metric([*ident, "shadow", revision, label], total)
        yield clipped_squares
        failed = _family(CounterMetricFamily, contract.GATEWAY_FEEDBACK_FAILED)
        for (track, revision, reason), n in sorted(scores.failed.items()):
            failed.add_metric([*ident, track, revision, reason], n)
        yield failed
        uncounted = _family(CounterMetricFamily, contract.GATEWAY_FEEDBACK_UNCOUNTED)
        for (track, revision, reason), n in sorted(scores.uncounted.items()):
            uncounted.add_metric([*ident, track, revision, reason], n)
        yield uncounted
        squares = _family(CounterMetricFamily, contract.GATEWAY_FEEDBACK_PAIR_DIFF_SQUARES)
        for revision, total in sorted(scores.pair_diff_squares.items()):
            squares.add_metric([*ident, "shadow", revision], total)
        yield squares
        for series, counts in (
            (contract.GATEWAY_FEEDBACK_REFUSED, scores.refused),
            (contract.GATEWAY_FEEDBACK_UNPAIRED, scores.unpaired),
            (contract.GATEWAY_FEEDBACK_PENDING_DROPPED, dropped),
        ):
            family = _family(CounterMetricFamily, series)
            for reason, n in sorted(counts.items()):
                family.add_metric([*ident, "gateway", "", reason], n)
            yield family
