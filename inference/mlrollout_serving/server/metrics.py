"""The model server's Prometheus series (docs/metrics.md), cheap on the hot path.

Counting happens in plain Python and numpy on the event-loop thread; prometheus_client only renders the
families at scrape time through a custom collector in a private registry (so every series, without
exception, carries the four identity labels). Prediction and input-bin counting is deferred: a batch's
arrays are queued and binned in bulk at scrape time, or when the queue grows, in a callback of its own
after the reply that filled it is out. That keeps per-request cost near zero even for many features, and
no request waits for the binning (when the request that filled a 4096-run queue binned it, that request
took 20-30 ms: the server's p99 at concurrency 1).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from mlrollout_serving.contract import metrics as contract
from mlrollout_serving.contract.profile import Profile
from mlrollout_serving.server.signature import Role, Signature

Array = npt.NDArray[Any]
DEFAULT_PREDICTION_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000)
_FLUSH_ROWS = 4096
_FLUSH_RUNS = 256
"""Bin at most this many queued runs at once: binning costs 1-2 µs per run, and it delays whatever request
arrives while it runs."""

log = logging.getLogger(__name__)


@dataclass
class _Histogram:
    bounds: tuple[float, ...]  # finite upper bounds, increasing

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def observe_many(self, values: Array) -> None:
        idx = np.searchsorted(np.asarray(self.bounds), values, side="left")
        for i, c in enumerate(np.bincount(idx, minlength=len(self.counts)).tolist()):
            self.counts[i] += c
        self.total += float(values.sum())

    def buckets(self) -> list[tuple[str, float]]:
        out, acc = [], 0
        for bound, c in zip((*self.bounds, math.inf), self.counts, strict=True):
            acc += c
            out.append((_go_float(bound), float(acc)))
        return out


def _go_float(value: float) -> str:
    """Bucket bound as Prometheus writes it ("+Inf", "0.5", "1.0")."""
    return "+Inf" if value == math.inf else repr(float(value))


def _finite(buckets: Iterable[float]) -> tuple[float, ...]:
    return tuple(sorted(b for b in buckets if math.isfinite(b)))


class ServerMetrics:
    """Counters of one server process; ``render()`` gives the exposition text."""

    def __init__(
        self,
        identity: Mapping[str, str],
        model_name: str,
        model_version: str,
        roles: Mapping[str, Role] | None = None,
        signature: Signature | None = None,
        profile: Profile | None = None,
        prediction_buckets: Sequence[float] | None = None,
    ) -> None:
        self.identity = tuple(identity.get(k, "") for k in contract.IDENTITY_LABELS)
        self.model_name = model_name
        self.model_version = model_version
        self.sha256 = ""
        self.requests: dict[int, int] = {}
        self.duration = _Histogram(_finite(contract.LATENCY_BUCKETS))
        self.batch_size = _Histogram(_finite(contract.BATCH_SIZE_BUCKETS))
        self._pending: list[tuple[Array, list[Array]]] = []
        self._pending_rows = 0
        self._flush_scheduled = False
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self.configure(roles or {}, signature, profile, prediction_buckets)

    def configure(
        self,
        roles: Mapping[str, Role],
        signature: Signature | None,
        profile: Profile | None,
        prediction_buckets: Sequence[float] | None = None,
    ) -> None:
        """Set up prediction and input-bin series once the model (and profile) are known."""
        self.roles = dict(roles)
        self.output_index = {o.name: i for i, o in enumerate(signature.outputs)} if signature else {}
        pred = profile.predictions if profile else None
        self.class_names: tuple[str, ...] = pred.classes if pred and pred.kind == "classification" else ()
        if prediction_buckets:
            bounds = _finite(prediction_buckets)
        elif pred and pred.kind == "regression" and pred.edges:
            bounds = _finite(pred.edges)
        else:
            bounds = DEFAULT_PREDICTION_BUCKETS
        self.values = {name: _Histogram(bounds) for name, r in self.roles.items() if r == "value"}
        self.classes: dict[str, dict[str, int]] = {n: {} for n, r in self.roles.items() if r in _CLASS_ROLES}
        for name, role in self.roles.items():
            spec = signature.output(name) if signature else None
            if role == "probabilities" and spec is not None and isinstance(spec.shape[-1], int):
                for i in range(spec.shape[-1]):
                    self.classes[name].setdefault(self._class_name(i, spec.shape[-1]), 0)
            if role == "label" and self.class_names:
                for c in self.class_names:
                    self.classes[name].setdefault(c, 0)
        self.features: tuple[str, ...] = ()
        self.bins = np.zeros((0, 0), dtype=np.int64)
        first = signature.inputs[0] if signature and signature.inputs else None
        columns_match = (
            first is not None
            and len(first.shape) == 2
            and first.shape[1] in (None, len(profile.features) if profile else -1)
        )
        if profile and profile.features and columns_match:
            self._set_bins(profile)

    def _set_bins(self, profile: Profile) -> None:
        self.features = tuple(f.name for f in profile.features)
        self.n_bins = [len(f.edges) + 1 for f in profile.features]
        width = max(self.n_bins)
        # Edges padded with +inf to one matrix: bin = number of edges <= x, for all features at once.
        self.edges = np.full((len(self.features), max(width - 1, 0)), np.inf)
        for i, f in enumerate(profile.features):
            self.edges[i, : len(f.edges)] = f.edges
        self.bins = np.zeros((len(self.features), width), dtype=np.int64)

    def _class_name(self, index: int, n_classes: int) -> str:
        return self.class_names[index] if len(self.class_names) == n_classes else str(index)

    # --- hot path ---

    def request(self, code: int, seconds: float) -> None:
        """Count one answered request (no allocation: int keys, a bisect into fixed bucket bounds)."""
        requests = self.requests
        requests[code] = requests.get(code, 0) + 1
        hist = self.duration  # _Histogram.observe, inline: this runs for every request
        hist.counts[bisect.bisect_left(hist.bounds, seconds)] += 1
        hist.total += seconds

    def batch(self, rows: int) -> None:
        hist = self.batch_size
        hist.counts[bisect.bisect_left(hist.bounds, rows)] += 1
        hist.total += rows

    def predictions(self, feed: Mapping[str, Array], outputs: list[Array]) -> None:
        """Queue one batch's first input and outputs for binning at the next scrape."""
        if not self.classes and not self.values and not self.features:
            return
        first = next(iter(feed.values()))
        pending = self._pending
        pending.append((first, outputs))
        self._pending_rows += len(first)
        if (self._pending_rows >= _FLUSH_ROWS or len(pending) >= _FLUSH_RUNS) and not self._flush_scheduled:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        """Bin the queue in the next callback of the event loop, after this request's reply is written."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on an event loop (a direct caller): bin now
            self.flush()
            return
        self._flush_scheduled = True
        loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        try:
            self.flush()
        except Exception:  # metrics must never break the server; the queue was taken, so it cannot grow
            log.exception("binning queued predictions failed")

    # --- deferred counting ---

    def flush(self) -> None:
        pending, self._pending, self._pending_rows = self._pending, [], 0
        if not pending:
            return
        # One concatenate per output, converted once: no numpy call per queued run.
        for name, role in self.roles.items():
            i = self.output_index[name]
            if role == "value":
                vals = np.concatenate([o[i] for _, o in pending], axis=None).astype(np.float64, copy=False)
                self.values[name].observe_many(vals)
            elif role in _CLASS_ROLES:
                self._count_classes(name, role, [o[i] for _, o in pending])
        if self.features:
            x = np.concatenate([f for f, _ in pending]).astype(np.float64, copy=False)
            if x.ndim == 2 and x.shape[1] == len(self.features):
                idx = (x[:, :, None] >= self.edges[None, :, :]).sum(axis=2)  # rows x features
                width = self.bins.shape[1]
                flat = idx + np.arange(len(self.features)) * width
                self.bins += np.bincount(flat.ravel(), minlength=self.bins.size).reshape(self.bins.shape)

    def _count_classes(self, name: str, role: Role, arrays: list[Array]) -> None:
        counts = self.classes[name]
        if role == "probabilities":
            probs = np.concatenate(arrays)
            probs = probs.reshape(len(probs), -1)
            n = probs.shape[1]
            for idx, c in enumerate(np.bincount(probs.argmax(axis=1), minlength=n).tolist()):
                if c:
                    key = self._class_name(idx, n)
                    counts[key] = counts.get(key, 0) + c
            return
        labels = np.concatenate(arrays, axis=None)
        values, freq = np.unique(labels, return_counts=True)
        for v, c in zip(values.tolist(), freq.tolist(), strict=True):
            key = v.decode(errors="replace") if isinstance(v, bytes) else str(v)
            counts[key] = counts.get(key, 0) + int(c)

    # --- exposition ---

    def collect(self) -> Iterable[Metric]:
        self.flush()
        idv = list(self.identity)
        req = _counter(contract.MODEL_REQUESTS)
        for code, n in sorted(self.requests.items()):
            req.add_metric([*idv, str(code)], n)
        yield req
        yield self._histogram(contract.MODEL_DURATION, self.duration)
        yield self._histogram(contract.MODEL_BATCH_SIZE, self.batch_size)
        preds = _counter(contract.MODEL_PREDICTIONS)
        for name, counts in self.classes.items():
            for cls, n in sorted(counts.items()):
                preds.add_metric([*idv, name, cls], n)
        yield preds
        series = contract.MODEL_PREDICTION_VALUE
        values = HistogramMetricFamily(series.name, series.help, labels=series.label_names)
        for name, hist in self.values.items():
            values.add_metric([*idv, name], hist.buckets(), hist.total)
        yield values
        bins = _counter(contract.MODEL_INPUT_BINS)
        for i, feature in enumerate(self.features):
            for b in range(self.n_bins[i]):
                bins.add_metric([*idv, feature, str(b)], float(self.bins[i, b]))
        yield bins
        info = GaugeMetricFamily(
            contract.MODEL_INFO.name, contract.MODEL_INFO.help, labels=contract.MODEL_INFO.label_names
        )
        if self.sha256:  # only once the model is verified and loaded
            info.add_metric([*idv, self.model_name, self.model_version, self.sha256], 1.0)
        yield info

    def _histogram(self, series: contract.Series, hist: _Histogram) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(series.name, series.help, labels=series.label_names)
        fam.add_metric(list(self.identity), hist.buckets(), hist.total)
        return fam

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _counter(series: contract.Series) -> CounterMetricFamily:
    return CounterMetricFamily(series.name, series.help, labels=series.label_names)


_CLASS_ROLES: frozenset[Role] = frozenset({"label", "probabilities"})
