"""The gatherer against a scripted provider: snapshot format, errors as values, custom queries."""

from __future__ import annotations

import math
import re

import pytest
from tests.support.procs import free_port

from mlrollout.analysis import (
    AnalysisTarget,
    Measurement,
    NullProvider,
    PrometheusProvider,
    Sample,
    StaticProvider,
    collect_snapshot,
    judge,
)
from mlrollout.analysis.collect import SPLIT_SETTLE_SECONDS, SPLIT_UNCOUNTED
from mlrollout.analysis.histogram import Histogram
from mlrollout.analysis.prometheus import _to_measurement
from mlrollout.analysis.queries import answered_by_stable
from mlrollout.analysis.snapshot import CustomValue, RoutedCounts, Split, TrackCounts
from mlrollout.api.rolloutpolicy import CustomMetric
from mlrollout_serving.contract.profile import from_dict

TARGET = AnalysisTarget("team-a", "wine", "rev-1", "rev-2", "gateway", reference=None)


def fake_prometheus(promql: str) -> Measurement:
    """Answers like Prometheus would for a healthy pair: counts depend on the track in the selector."""
    track = re.search(r'track="(\w+)"', promql)
    scale = 9 if track and track.group(1) == "stable" else 1
    if promql.startswith("sum by (le)") and "duration" in promql:
        return Measurement(tuple(Sample({"le": le}, v * scale) for le, v in
                                 (("0.01", 100.4), ("0.05", 590.2), ("0.1", 588.0), ("+Inf", 600.0))))  # fmt: skip
    if "5.." in promql:
        return Measurement((Sample({}, 6.2 * scale),))
    if promql.startswith("sum (((mlrollout_gateway_requests_total"):
        return Measurement((Sample({}, 600.3 * scale),))
    if "predictions_total" in promql:
        return Measurement((Sample({"output": "label", "class": "0"}, 200.0 * scale),
                            Sample({"output": "label", "class": "1"}, 394.0 * scale)))  # fmt: skip
    if "input_feature_bin_total" in promql:
        return Measurement((Sample({"feature": "f0", "bin": "1"}, 3.0), Sample({"feature": "f0", "bin": "0"}, 2.0)))
    if promql.startswith("queue_depth"):
        return Measurement((Sample({}, 4.0),))
    return Measurement()


def test_snapshot_format_and_integer_counts() -> None:
    provider = StaticProvider(fake_prometheus)
    snap = collect_snapshot(provider, TARGET, 300.0)
    assert snap.elapsed_seconds == 300.0
    assert snap.stable.requests == 5403 and snap.candidate.requests == 600
    assert snap.candidate.errors == 6
    # 590 then 588: counts taken over a window are forced monotone, and the snapshot says so
    assert snap.candidate.latency == Histogram((0.01, 0.05, 0.1, math.inf), (100, 590, 590, 600))
    assert any("forced monotone" in w for w in snap.warnings)
    assert snap.candidate.predictions == {"0": 200, "1": 394}
    assert snap.candidate.features == {"f0": [2, 3]}
    assert all("[300s]" in q for q in provider.queries)
    result = judge(snap)
    assert any("forced monotone" in w for w in result.warnings)
    assert result.verdict in ("continue", "promote")


def test_regressor_predictions_become_bins() -> None:
    def answers(promql: str) -> Measurement:
        if "prediction_value_bucket" in promql:
            return Measurement(tuple(Sample({"le": le}, v) for le, v in (("1", 3.0), ("2", 7.0), ("+Inf", 10.0))))
        return Measurement()

    snap = collect_snapshot(StaticProvider(answers), TARGET, 60)
    assert snap.candidate.predictions == {"1": 3, "2": 4, "+Inf": 3}


def test_custom_queries_are_rendered_per_track() -> None:
    provider = StaticProvider(fake_prometheus)
    metric = CustomMetric(name="queue", query='queue_depth{track="{{track}}",revision="{{revision}}"}', max=5)
    snap = collect_snapshot(provider, TARGET, 60, custom=[metric])
    assert snap.custom == {"queue": CustomValue(stable=4.0, candidate=4.0)}
    assert 'queue_depth{track="candidate",revision="rev-2"}' in provider.queries


def test_failed_query_makes_an_error_snapshot() -> None:
    def answers(promql: str) -> Measurement:
        return Measurement(error="prometheus query failed: timeout") if "5.." in promql else Measurement()

    snap = collect_snapshot(StaticProvider(answers), TARGET, 60)
    assert snap.error == "prometheus query failed: timeout"
    assert judge(snap).verdict == "inconclusive"


def test_unsafe_target_is_an_error_snapshot_not_an_exception() -> None:
    bad = AnalysisTarget('x"}', "wine", "a", "b", "gateway", None)
    snap = collect_snapshot(NullProvider(), bad, 60)
    assert snap.error is not None and "not a valid label value" in snap.error


def test_no_data_is_inconclusive() -> None:
    snap = collect_snapshot(NullProvider(), TARGET, 60)
    assert snap.candidate == TrackCounts(0, 0, None, None, None)
    assert judge(snap).verdict == "inconclusive"


def test_reference_is_carried() -> None:
    ref = from_dict({"version": 1, "features": []})
    snap = collect_snapshot(NullProvider(), AnalysisTarget("a", "b", "c", "d", "model", ref), 60)
    assert snap.reference == ref


def test_prometheus_answers_are_parsed() -> None:
    vector = [{"metric": {"le": "0.1"}, "value": [1.0, "3"]}, {"metric": {}, "value": [1.0, "NaN"]}]
    m = _to_measurement(vector)
    assert m.ok and m.samples == (Sample({"le": "0.1"}, 3.0),)
    assert _to_measurement([1.0, "2.5"]).scalar() == 2.5
    assert _to_measurement([]).no_data
    assert _to_measurement([{"bad": 1}]).error is not None


def test_unreachable_prometheus_is_an_error_value() -> None:
    provider = PrometheusProvider(f"http://127.0.0.1:{free_port()}", timeout=2.0)
    m = provider.query("up")
    assert not m.ok and m.error == f"Prometheus at {provider.url} is unreachable: Connection refused"
    assert math.isclose(m.scalar(), 0.0)


@pytest.mark.parametrize("source", ["gateway", "model"])
def test_sources_query_different_series(source: str) -> None:
    provider = StaticProvider()
    collect_snapshot(provider, AnalysisTarget("a", "b", "c", "d", source), 60)  # type: ignore[arg-type]
    expected = "mlrollout_gateway_requests_total" if source == "gateway" else "mlrollout_model_inference_requests_total"
    assert any(expected in q for q in provider.queries)


SPLIT_TARGET = AnalysisTarget("team-a", "wine", "rev-1", "rev-2", "gateway", split=Split(0.9, 0.1))


def gateway_counts(promql: str) -> Measurement:
    """The gateway's routed counts: 5400 stable answers, 500 candidate ones and 100 candidate requests that
    failed and were answered by stable (counted under stable, rescued by the `stable` fallback)."""
    if promql.startswith("sum (((mlrollout_gateway_fallback_requests_total") and 'answered="stable"' in promql:
        return Measurement((Sample({}, 100.0),))
    if promql.startswith("sum (((mlrollout_gateway_requests_total"):
        if 'code="200"' in promql:
            return Measurement((Sample({}, 5350.0),))
        return Measurement((Sample({}, 5500.0 if 'track="stable"' in promql else 500.0),))
    return fake_prometheus(promql)


def test_routed_counts_are_the_gateways_since_the_split_settled() -> None:
    provider = StaticProvider(gateway_counts)
    snap = collect_snapshot(provider, SPLIT_TARGET, 300.0)
    assert snap.split is not None and snap.split.observed == RoutedCounts(5400, 600, 0, 5350)
    settled = f"{300 - SPLIT_SETTLE_SECONDS:.0f}s"
    assert answered_by_stable("team-a", "wine", "candidate", "rev-2", settled) in provider.queries
    assert all(f"[{settled}]" in q for q in provider.queries if "mirrored_requests" in q)
    # the error analysis' request counts move the same requests back (over its whole window)
    assert (snap.stable.requests, snap.candidate.requests) == (5400, 600)
    assert next(m for m in judge(snap).metrics if m.name == "split").decision == "pass"


def test_no_split_counts_before_the_split_settles_or_without_a_gateway() -> None:
    early = collect_snapshot(StaticProvider(gateway_counts), SPLIT_TARGET, SPLIT_SETTLE_SECONDS)
    assert early.split == Split(0.9, 0.1) and early.split.observed is None
    silent = collect_snapshot(NullProvider(), SPLIT_TARGET, 300.0)  # the gateway exported nothing yet
    assert silent.split is not None and silent.split.observed is None
    assert "split: no routed counts in the snapshot" in judge(silent).skipped
    assert collect_snapshot(StaticProvider(gateway_counts), TARGET, 300.0).split is None


def test_without_the_builtin_gateway_the_split_is_said_to_be_unchecked() -> None:
    """Gateway API or Istio: the model servers' counts are not the router's (scraped at different instants,
    blind to what the proxy never delivered), so they are never held to the configured split: the split is
    marked uncounted, no routed count is asked for, and the judgement says why it skipped the check."""
    provider = StaticProvider(fake_prometheus)
    mesh = AnalysisTarget("team-a", "wine", "rev-1", "rev-2", "model", split=Split(0.9, 0.1), gateway_in_path=False)
    snap = collect_snapshot(provider, mesh, 300.0)
    assert snap.split is not None and snap.split.observed is None and snap.split.uncounted == SPLIT_UNCOUNTED
    assert not any("mlrollout_gateway" in q for q in provider.queries)
    result = judge(snap)
    assert f"split: {SPLIT_UNCOUNTED}" in result.skipped
    assert all(m.name != "split" for m in result.metrics)


def test_mirror_copies_count_queue_drops_as_not_delivered() -> None:
    def mirrored(promql: str) -> Measurement:
        if "mirrored_requests_total" in promql:
            return Measurement((Sample({}, 3000.0),))
        if "mirror_dropped_total" in promql and 'reason="queue_full"' in promql:
            return Measurement((Sample({}, 500.0),))
        if promql.startswith("sum (((mlrollout_gateway_requests_total"):
            return Measurement((Sample({}, 5000.0 if 'track="stable"' in promql else 0.0),))
        return Measurement()

    target = AnalysisTarget("team-a", "wine", "rev-1", "rev-2", "model", split=Split(1.0, 0.0, mirror=1.0))
    snap = collect_snapshot(StaticProvider(mirrored), target, 300.0)
    assert snap.split is not None and snap.split.observed == RoutedCounts(5000, 0, 3500, 5000)
    result = judge(snap)
    assert result.verdict == "inconclusive" and "mirror share 70% observed vs 100% configured" in result.reason


Series = tuple[str, dict[str, str], float]
_SELECTED = re.compile(r"^sum (?:by \([^)]*\) )?\(\(\((\w+)\{([^}]*)\}")
_MATCHER = re.compile(r'(\w+)(=~|!=|=)"([^"]*)"')


def exported(series: list[Series]) -> StaticProvider:
    """A provider holding exported counter deltas: a ``counter_delta`` query sums the samples its selector
    matches (``=``, ``!=``, ``=~``), as Prometheus would over the window."""

    def matches(op: str, actual: str, wanted: str) -> bool:
        return {"=": actual == wanted, "!=": actual != wanted, "=~": re.fullmatch(wanted, actual) is not None}[op]

    def answer(promql: str) -> Measurement:
        selected = _SELECTED.match(promql)
        if selected is None:
            return Measurement()
        name, matchers = selected.group(1), _MATCHER.findall(selected.group(2))
        values = [v for n, labels, v in series
                  if n == name and all(matches(op, labels.get(k, ""), want) for k, op, want in matchers)]  # fmt: skip
        return Measurement((Sample({}, sum(values)),)) if values else Measurement()

    return StaticProvider(answer)


def canary(answered: str) -> list[Series]:
    """A canary step as the gateway exports it: stable routed 9000 requests and refused its 90 failures
    (503s); the candidate was routed 1000, failed 100 (10 %), each answered by ``answered`` without an error;
    50 more candidate answers were below the confidence threshold and replaced by stable's."""
    ident = {"namespace": "team-a", "model_deployment": "wine"}
    stable = {**ident, "track": "stable", "revision": "rev-1"}
    candidate = {**ident, "track": "candidate", "revision": "rev-2"}
    by_stable = 50 + (100 if answered == "stable" else 0)  # counted under stable
    requests, fallbacks = "mlrollout_gateway_requests_total", "mlrollout_gateway_fallback_requests_total"
    return [
        (requests, {**stable, "code": "200"}, 8910.0 + by_stable),
        (requests, {**stable, "code": "503"}, 90.0),
        (requests, {**candidate, "code": "200"}, 1000.0 - by_stable),
        (fallbacks, {**stable, "reason": "error", "answered": "refuse"}, 90.0),
        (fallbacks, {**candidate, "reason": "error", "answered": answered}, 100.0),
        (fallbacks, {**candidate, "reason": "low_confidence", "answered": "stable"}, 50.0),
    ]


@pytest.mark.parametrize("answered", ["stable", "default", "backup"])
def test_failures_the_fallback_chain_answered_are_the_candidates_errors(answered: str) -> None:
    target = AnalysisTarget("team-a", "wine", "rev-1", "rev-2", "gateway", split=Split(0.9, 0.1))
    series = canary(answered)
    snap = collect_snapshot(exported(series), target, 300.0)
    assert (snap.candidate.requests, snap.candidate.errors) == (1000, 100)  # routed to it; failed by it
    assert (snap.stable.requests, snap.stable.errors) == (9000, 90)
    stable_200 = round(series[0][2])  # the requests a mirror would copy
    assert snap.split is not None and snap.split.observed == RoutedCounts(9000, 1000, 0, stable_200)
    result = judge(snap)
    assert result.verdict == "rollback", result.reason
    assert next(m for m in result.metrics if m.name == "errorRate.harm").decision == "fail"


def test_refused_and_unanswered_failures_are_not_counted_twice() -> None:
    ident = {"namespace": "team-a", "model_deployment": "wine", "track": "candidate", "revision": "rev-2"}
    requests, fallbacks = "mlrollout_gateway_requests_total", "mlrollout_gateway_fallback_requests_total"
    provider = exported([
        (requests, {**ident, "code": "200"}, 900.0),
        (requests, {**ident, "code": "503"}, 60.0),  # refused by the chain
        (requests, {**ident, "code": "504"}, 40.0),  # no step left
        (fallbacks, {**ident, "reason": "error", "answered": "refuse"}, 60.0),
        (fallbacks, {**ident, "reason": "timeout", "answered": "none"}, 40.0),
        (fallbacks, {**ident, "reason": "low_confidence", "answered": "default"}, 30.0),  # answered, not failed
    ])  # fmt: skip
    snap = collect_snapshot(provider, TARGET, 300.0)
    assert (snap.candidate.requests, snap.candidate.errors) == (1000, 100)


def test_model_server_evidence_has_no_fallbacks() -> None:
    provider = StaticProvider()
    collect_snapshot(provider, AnalysisTarget("a", "b", "c", "d", "model"), 60)
    assert not any("fallback_requests" in q for q in provider.queries)
