"""Gather a snapshot from a metrics provider: the I/O half of an analysis look.

The operator calls :func:`collect_snapshot` at every interval with the window since the candidate started
receiving traffic, then hands the typed :class:`Snapshot` to :func:`mlrollout.analysis.judge`. Any failed
query makes the whole snapshot a failed one (judged ``inconclusive``): half a snapshot is worse than none.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from mlrollout.analysis.histogram import parse_buckets
from mlrollout.analysis.provider import Measurement, MetricsProvider, Sample
from mlrollout.analysis.queries import (
    QueryError,
    backend_split_query,
    feedback_queries,
    render_custom,
    split_queries,
    track_queries,
)
from mlrollout.analysis.snapshot import (
    CustomValue,
    Labels,
    Pairs,
    RoutedCounts,
    Snapshot,
    Split,
    TrackCounts,
    forced_monotone,
)
from mlrollout.api.analysis import QualityDesign
from mlrollout.api.rolloutpolicy import CustomMetric
from mlrollout_serving.contract.metrics import DEFAULT_ERROR_BOUND
from mlrollout_serving.contract.profile import Profile

__all__ = [
    "SPLIT_MIRROR_UNCOUNTED",
    "SPLIT_SETTLE_SECONDS",
    "SPLIT_UNCOUNTED",
    "AnalysisTarget",
    "BackendCounter",
    "collect_snapshot",
]

SPLIT_SETTLE_SECONDS = 30.0
"""The traffic split is counted from this long after the step started. A window's first sample is the last
scrape before its start, up to one scrape interval earlier, so without it the counts would include the
previous step's split; the route table itself reaches the gateways within about a second (docs/gateway.md).
Two scrape intervals of the chart's ServiceMonitor (15 s)."""

SPLIT_UNCOUNTED = (
    "not checked: the built-in gateway does not route (traffic.provider), and only its counts come from one "
    "process that splits, in one scrape; the model servers' counts are scraped at different instants and miss "
    "what the proxy never delivered (with gatewayAPI, set the implementation's per-backend counter: "
    "gatewayAPI.splitQuery)"
)
"""Why the traffic split is not counted without the built-in gateway (docs/traffic.md, "The split")."""

SPLIT_MIRROR_UNCOUNTED = (
    "not checked in a mirroring step: the implementation's per-backend counter counts the mirrored copies "
    "with the candidate's routed requests"
)
"""Why a mirroring step's split is not counted from a Gateway API implementation's per-backend counter."""


@dataclass(frozen=True)
class BackendCounter:
    """The per-backend request counter of the Gateway API implementation that routes (a checked template,
    ``mlrollout.analysis.queries.backend_split_template``) and each revision's backend: Service and port.
    Counted by the process that splits, in one scrape, it is the routed counts the built-in gateway's
    series would be."""

    template: str
    stable: tuple[str, int]
    candidate: tuple[str, int]


@dataclass(frozen=True)
class AnalysisTarget:
    """What to measure.

    ``source="gateway"``: the built-in gateway's series per track (canary steps: what clients see).
    ``source="model"``: the model servers' own series (shadow and blue-green preview steps: the candidate
    only answers mirrored traffic; and every step when Gateway API or Istio routes, without our gateway).
    The pods carry ``track`` and ``revision`` labels set by the servers themselves. Predictions and input
    features always come from the model servers. ``reference`` is the candidate's reference profile, if any.
    ``split`` is the step's configured traffic split; with it the gateway's routed counts are gathered too.
    ``gateway_in_path`` false (Gateway API, Istio): no series of the built-in gateway exist, so neither the
    routed counts (the split is marked :data:`SPLIT_UNCOUNTED`, never counted from other series) nor the
    labelled pairs of mirrored answers (:attr:`paired`) are asked for; ``backend_counter`` (Gateway API with
    the implementation's per-backend counter set) counts the split instead, in steps that mirror nothing.
    ``design`` is the quality test the step's configuration fixes (``rollout.looks.quality_design``: paired
    in the steps that mirror); None, for a target built without a step, takes it from the evidence source
    (the model servers' series with the gateway in the path are read exactly in the mirroring steps).
    """

    namespace: str
    model_deployment: str
    stable_revision: str
    candidate_revision: str
    source: Literal["gateway", "model"] = "gateway"
    reference: Profile | None = None
    split: Split | None = None  # the step's configured split; its realised counts are gathered with it
    gateway_in_path: bool = True
    backend_counter: BackendCounter | None = None
    error_bound: float = DEFAULT_ERROR_BOUND  # quality, mae: the clip bound whose clipped-error sums are read
    design: QualityDesign | None = None  # the step's quality design; None: from the evidence source

    @property
    def quality_design(self) -> QualityDesign:
        """The step's quality design (``design``, or for a target built without one: paired exactly when the
        model servers' series are read with the gateway in the path, which is in the mirroring steps)."""
        if self.design is not None:
            return self.design
        return "paired" if self.gateway_in_path and self.source == "model" else "unpaired"

    @property
    def paired(self) -> bool:
        """Whether labelled pairs are asked for: only in the steps that mirror (in a canary, labels of the
        shadow step that arrive late are not its evidence), and only where the built-in gateway mirrors, for
        it is what pairs a mirrored answer with stable's."""
        return self.gateway_in_path and self.quality_design == "paired"


class _Failed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _ask(provider: MetricsProvider, promql: str, at: float | None) -> Measurement:
    m = provider.query(promql, at)
    if m.error is not None:
        raise _Failed(m.error)
    return m


def _count(x: float) -> int:
    return max(0, round(x)) if math.isfinite(x) else 0


def _buckets(m: Measurement) -> dict[str, int]:
    """``sum by (le)`` samples as ``{"0.005": n, ..., "+Inf": n}``; normalised bound spelling."""
    out: dict[str, int] = {}
    for s in m.samples:
        le = s.labels.get("le")
        if le is None:
            continue
        bound = float(le)
        key = "+Inf" if math.isinf(bound) else f"{bound:g}"
        out[key] = out.get(key, 0) + _count(s.value)
    return out


def _predictions(classes: Measurement, buckets: Measurement) -> dict[str, int] | None:
    """Class counts for classifiers, or per-bin counts of a regressor's prediction histogram.

    A classifier with several outputs (``label`` and ``probabilities``) counts every row once per output;
    one output is used (``label`` when present, else the first by name) so no row is counted twice.
    """
    for m in (classes, buckets):
        outputs = sorted({s.labels.get("output", "") for s in m.samples})
        if outputs:
            chosen = "label" if "label" in outputs else outputs[0]
            samples = [s for s in m.samples if s.labels.get("output", "") == chosen]
            if m is classes:
                out: dict[str, int] = {}
                for s in samples:
                    key = s.labels.get("class", "")
                    out[key] = out.get(key, 0) + _count(s.value)
                return out
            return _bins(samples)
    return None


def _bins(samples: list[Sample]) -> dict[str, int]:
    """Per-bin counts from cumulative ``le`` samples."""
    cumulative = sorted((float(s.labels["le"]), _count(s.value)) for s in samples if "le" in s.labels)
    out: dict[str, int] = {}
    previous = running = 0
    for bound, count in cumulative:
        running = max(running, count)
        out["+Inf" if math.isinf(bound) else f"{bound:g}"] = running - previous
        previous = running
    return out


def _features(m: Measurement) -> dict[str, list[int]] | None:
    if not m.samples:
        return None
    out: dict[str, list[int]] = {}
    for s in m.samples:
        feature, bin_label = s.labels.get("feature"), s.labels.get("bin", "")
        if feature is None or not bin_label.isdigit():
            continue
        index = int(bin_label)
        bins = out.setdefault(feature, [])
        bins.extend([0] * (index + 1 - len(bins)))
        bins[index] += _count(s.value)
    return out


def _by(m: Measurement, label: str) -> dict[str, float]:
    """Sample values by one label's value."""
    out: dict[str, float] = {}
    for s in m.samples:
        key = s.labels.get(label, "")
        out[key] = out.get(key, 0.0) + s.value
    return out


def _clipped(provider: MetricsProvider, promql: str, at: float | None) -> float | None:
    """A clipped-error sum; None when the gateway exports no such series (one older than the clip bounds)."""
    m = _ask(provider, promql, at)
    return max(m.scalar(), 0.0) if m.samples else None


def _labels(provider: MetricsProvider, q: Mapping[str, str], at: float | None) -> Labels:
    outcomes = _by(_ask(provider, q["labels"], at), "outcome")
    labelled = sum(_count(v) for v in outcomes.values())
    return Labels(
        labelled=labelled,
        incorrect=min(_count(outcomes.get("incorrect", 0.0)), labelled),
        abs_error_sum=max(_ask(provider, q["abs_error"], at).scalar(), 0.0),
        abs_error_sumsq=max(_ask(provider, q["squared_error"], at).scalar(), 0.0),
        clipped_sum=_clipped(provider, q["clipped_abs_error"], at),
        clipped_sumsq=_clipped(provider, q["clipped_squared_error"], at),
    )


def _pairs(provider: MetricsProvider, q: Mapping[str, str], at: float | None) -> Pairs | None:
    results = _by(_ask(provider, q["pairs"], at), "result")
    if not results:
        return None
    sides = _by(_ask(provider, q["pair_abs_error"], at), "side")
    clipped = _by(_ask(provider, q["pair_clipped_abs_error"], at), "side")
    return Pairs(
        both_right=_count(results.get("both_right", 0.0)),
        both_wrong=_count(results.get("both_wrong", 0.0)),
        stable_only=_count(results.get("stable_only", 0.0)),
        candidate_only=_count(results.get("candidate_only", 0.0)),
        stable_error_sum=max(sides.get("stable", 0.0), 0.0),
        candidate_error_sum=max(sides.get("candidate", 0.0), 0.0),
        diff_sumsq=max(_ask(provider, q["pair_diff_squares"], at).scalar(), 0.0),
        stable_clipped_sum=max(clipped["stable"], 0.0) if "stable" in clipped else None,
        candidate_clipped_sum=max(clipped["candidate"], 0.0) if "candidate" in clipped else None,
        clipped_diff_sumsq=_clipped(provider, q["pair_clipped_diff_squares"], at),
    )


def _track(provider: MetricsProvider, target: AnalysisTarget, track: str, revision: str, window: float,
           at: float | None, warnings: list[str], quality: bool) -> tuple[TrackCounts, int]:  # fmt: skip
    """The track's counts as its answers were labelled, and how many requests routed to it stable answered
    (:func:`_rerouted` moves them; gateway evidence only). A failure the fallback chain answered without a
    5xx (stable, a backup, a default response) is the track's error all the same: the model failed it."""
    q = track_queries(target.source, target.namespace, target.model_deployment, track, revision, window)
    requests = _count(_ask(provider, q["requests"], at).scalar())
    errors = _count(_ask(provider, q["errors"], at).scalar())
    moved = 0
    if "rescued_failures" in q:
        errors += _count(_ask(provider, q["rescued_failures"], at).scalar())
        moved = _count(_ask(provider, q["answered_by_stable"], at).scalar())
    latency = None
    buckets = _buckets(_ask(provider, q["latency"], at))
    if buckets:
        if "+Inf" not in buckets:
            buckets["+Inf"] = max(buckets.values())
            warnings.append(f"{track}: latency histogram had no +Inf bucket; used the largest bucket")
        latency, forced = parse_buckets(buckets, f"{track}.latency_buckets")
        if forced:
            warnings.append(forced_monotone(track))
    predictions = _predictions(_ask(provider, q["predictions"], at), _ask(provider, q["prediction_buckets"], at))
    features = _features(_ask(provider, q["features"], at))
    labels = None
    if quality:
        fq = feedback_queries(target.namespace, target.model_deployment, track, revision, window, target.error_bound)
        labels = _labels(provider, fq, at)
    return TrackCounts(requests, errors, latency, predictions, features, labels), moved


def _rerouted(stable: int, candidate: int, moved: int) -> tuple[int, int]:
    """Requests routed to stable and to the candidate, from the requests answered under each: ``moved``
    candidate requests were answered by stable through the ``stable`` fallback (counted under stable).

    The one rule for the error analysis' request counts and the traffic-split check's routed counts."""
    moved = min(moved, stable)
    return stable - moved, candidate + moved


def _routed_tracks(stable: TrackCounts, candidate: TrackCounts, moved: int) -> tuple[TrackCounts, TrackCounts]:
    """Both tracks' counts with the requests routed to each (:func:`_rerouted`); errors at most those."""
    s, c = _rerouted(stable.requests, candidate.requests, moved)
    return (
        dataclasses.replace(stable, requests=s, errors=min(stable.errors, s)),
        dataclasses.replace(candidate, requests=c, errors=min(candidate.errors, c)),
    )


def _routed(provider: MetricsProvider, target: AnalysisTarget, window: float, at: float | None) -> RoutedCounts | None:
    """The gateway's routed counts since the split settled; None before that, or without gateway series (a
    mesh provider routes instead of our gateway)."""
    if window - SPLIT_SETTLE_SECONDS < 1.0:
        return None
    q = split_queries(target.namespace, target.model_deployment, target.stable_revision, target.candidate_revision,
                      window - SPLIT_SETTLE_SECONDS)  # fmt: skip
    answers = {key: _ask(provider, promql, at) for key, promql in q.items()}
    if not answers["stable"].samples and not answers["candidate"].samples:
        return None
    n = {key: _count(m.scalar()) if m.samples else 0 for key, m in answers.items()}
    stable, candidate = _rerouted(n["stable"], n["candidate"], n["answered_by_stable"])
    offered = n["mirrored"] + n["dropped"]
    return RoutedCounts(stable, candidate, offered, max(n["eligible"], offered))


def _backend_routed(
    provider: MetricsProvider, target: AnalysisTarget, counter: BackendCounter, window: float, at: float | None
) -> RoutedCounts | None:
    """Requests the implementation sent to each revision's backend since the split settled (the rule of
    :func:`_routed`); None before that or while neither backend has a series."""
    if window - SPLIT_SETTLE_SECONDS < 1.0:
        return None
    promql = backend_split_query(
        counter.template, target.namespace, counter.stable, counter.candidate, window - SPLIT_SETTLE_SECONDS
    )
    n = {track: _count(v) for track, v in _by(_ask(provider, promql, at), "track").items()}
    if not n:
        return None
    return RoutedCounts(n.get("stable", 0), n.get("candidate", 0))


def _realised(
    provider: MetricsProvider, target: AnalysisTarget, split: Split, window: float, at: float | None
) -> Split:
    """The step's split with its realised counts, or with why they are not counted."""
    if target.gateway_in_path:
        return dataclasses.replace(split, observed=_routed(provider, target, window, at))
    if target.backend_counter is None:
        return dataclasses.replace(split, uncounted=SPLIT_UNCOUNTED)
    if split.mirror > 0:
        return dataclasses.replace(split, uncounted=SPLIT_MIRROR_UNCOUNTED)
    return dataclasses.replace(split, observed=_backend_routed(provider, target, target.backend_counter, window, at))


def collect_snapshot(
    provider: MetricsProvider,
    target: AnalysisTarget,
    window_seconds: float,
    *,
    custom: Sequence[CustomMetric] = (),
    quality: bool = False,
    at: float | None = None,
) -> Snapshot:
    """Cumulative counts per track over the last ``window_seconds`` (evaluated at ``at``, default now).

    A snapshot whose ``error`` says why when a query failed or the target's labels are not safe to query
    (judged ``inconclusive``). Never raises for backend trouble.
    """
    warnings: list[str] = []
    try:
        stable, _ = _track(provider, target, "stable", target.stable_revision, window_seconds, at, warnings, quality)
        candidate, moved = _track(
            provider, target, "candidate", target.candidate_revision, window_seconds, at, warnings, quality
        )
        stable, candidate = _routed_tracks(stable, candidate, moved)
        pairs = None
        # labelled mirrored answers (the gateway labels them with the shadow's track and revision)
        if quality and target.paired:
            fq = feedback_queries(
                target.namespace, target.model_deployment, "shadow", target.candidate_revision, window_seconds,
                target.error_bound,
            )  # fmt: skip
            pairs = _pairs(provider, fq, at)
        values: dict[str, CustomValue] = {}
        for metric in custom:
            by_track: dict[str, float | None] = {}
            for track, revision in (("stable", target.stable_revision), ("candidate", target.candidate_revision)):
                promql = render_custom(
                    metric.query,
                    namespace=target.namespace,
                    model_deployment=target.model_deployment,
                    track=track,
                    revision=revision,
                    window_seconds=window_seconds,
                )
                m = _ask(provider, promql, at)
                by_track[track] = m.scalar() if m.samples else None
            values[metric.name] = CustomValue(by_track["stable"], by_track["candidate"])
        split = target.split
        if split is not None:
            split = _realised(provider, target, split, window_seconds, at)
    except (_Failed, QueryError) as exc:
        return Snapshot.failed(str(exc), window_seconds, warnings)
    return Snapshot(
        stable,
        candidate,
        elapsed_seconds=window_seconds,
        reference=target.reference,
        custom=values,
        warnings=tuple(warnings),
        pairs=pairs,
        split=split,
        quality_design=target.quality_design,
    )
