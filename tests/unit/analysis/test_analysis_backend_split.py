"""The traffic split of a Gateway API implementation, from its own per-backend request counter: the
template (a preset or the operator's setting), its checks at start-up, and the split it gives the judge."""

from __future__ import annotations

import re

import pytest

from mlrollout.analysis import AnalysisTarget, Measurement, Sample, StaticProvider, collect_snapshot, judge
from mlrollout.analysis.collect import SPLIT_MIRROR_UNCOUNTED, SPLIT_SETTLE_SECONDS, SPLIT_UNCOUNTED, BackendCounter
from mlrollout.analysis.queries import (
    BACKEND_SPLIT_PRESETS,
    QueryError,
    backend_split_query,
    backend_split_template,
    counter_delta,
)
from mlrollout.analysis.snapshot import RoutedCounts, Split
from mlrollout.controller.settings import OperatorSettings

TRAEFIK = BACKEND_SPLIT_PRESETS["traefik"]
COUNTER = BackendCounter(TRAEFIK, ("wine-rev-1", 8080), ("wine-rev-2", 8080))


def target(split: Split, counter: BackendCounter | None = COUNTER) -> AnalysisTarget:
    return AnalysisTarget(
        "team-a", "wine", "rev-1", "rev-2", "model", split=split, gateway_in_path=False, backend_counter=counter
    )


def test_the_traefik_preset_names_the_backendrefs_as_traefik_does() -> None:
    assert backend_split_template("traefik") == TRAEFIK
    promql = backend_split_query(TRAEFIK, "team-a", ("wine-rev-1", 8080), ("wine-rev-2", 8080), 300.0)
    stable = 'traefik_service_requests_total{service="team-a-wine-rev-1-http-8080@kubernetesgateway"}'
    candidate = 'traefik_service_requests_total{service="team-a-wine-rev-2-http-8080@kubernetesgateway"}'
    # one query: both tracks from the same evaluation, each answer labelled with its track
    assert promql == (
        f'label_replace({counter_delta(stable, "300s")}, "track", "stable", "", "") or '
        f'label_replace({counter_delta(candidate, "300s")}, "track", "candidate", "", "")'
    )


def test_a_template_of_ones_own_fills_namespace_service_and_port() -> None:
    cluster = "outbound|{{ port }}||{{service}}.{{namespace}}.svc.cluster.local"
    envoy = f'envoy_cluster_upstream_rq_total{{cluster_name="{cluster}"}}'
    assert backend_split_template(envoy) == envoy
    promql = backend_split_query(envoy, "team-a", ("wine-rev-1", 8080), ("wine-rev-2", 9000), 60.0)
    assert 'cluster_name="outbound|8080||wine-rev-1.team-a.svc.cluster.local"' in promql
    assert 'cluster_name="outbound|9000||wine-rev-2.team-a.svc.cluster.local"' in promql


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ('x_total{service="{{revision}}"}', "unknown placeholder"),
        ('x_total{service="{{service}}",w="{{window}}"}', "unknown placeholder"),
        ('x_total{service="{{service}"}', "not part of a placeholder"),
        ('x_total{namespace="{{namespace}}"}', "must use {{service}}"),
        ('sum(rate(x_total{service="{{service}}"}[5m]))', "one series selector"),
        ('x_total{service="{{service}}"}[5m]', "one series selector"),
        ("treafik", "no preset (traefik)"),
    ],
)
def test_bad_templates_are_refused_with_the_reason(template: str, problem: str) -> None:
    with pytest.raises(QueryError, match=re.escape(problem)):
        backend_split_template(template)


def test_the_operator_refuses_a_bad_setting_at_start_up_naming_the_variable() -> None:
    with pytest.raises(ValueError, match=r"MLROLLOUT_GATEWAYAPI_SPLIT_QUERY: .*unknown placeholder"):
        OperatorSettings.from_env({"MLROLLOUT_GATEWAYAPI_SPLIT_QUERY": 'x{s="{{track}}"}'})
    assert OperatorSettings.from_env({"MLROLLOUT_GATEWAYAPI_SPLIT_QUERY": "traefik"}).gatewayapi_split_query == TRAEFIK
    assert OperatorSettings.from_env({}).gatewayapi_split_query == ""
    assert OperatorSettings.from_env({"MLROLLOUT_GATEWAYAPI_SPLIT_QUERY": " "}).gatewayapi_split_query == ""


def test_unsafe_backend_names_never_reach_a_query() -> None:
    with pytest.raises(QueryError, match="service"):
        backend_split_query(TRAEFIK, "team-a", ('x"} or vector(1) #', 8080), ("wine-rev-2", 8080), 60.0)
    with pytest.raises(QueryError, match="port"):
        backend_split_query(TRAEFIK, "team-a", ("wine-rev-1", 0), ("wine-rev-2", 8080), 60.0)


def counts(stable: float, candidate: float) -> StaticProvider:
    def answer(promql: str) -> Measurement:
        if promql.startswith("label_replace("):
            return Measurement((Sample({"track": "stable"}, stable), Sample({"track": "candidate"}, candidate)))
        return Measurement()

    return StaticProvider(answer)


def test_the_implementations_counts_are_the_realised_split_since_it_settled() -> None:
    provider = counts(9004.2, 996.0)
    snap = collect_snapshot(provider, target(Split(0.9, 0.1)), 300.0)
    assert snap.split is not None and snap.split.observed == RoutedCounts(9004, 996)
    asked = [q for q in provider.queries if q.startswith("label_replace(")]
    assert len(asked) == 1 and f"[{300 - SPLIT_SETTLE_SECONDS:.0f}s]" in asked[0]
    split = next(m for m in judge(snap).metrics if m.name == "split")
    assert split.decision == "pass", split.reason


def test_an_implementation_ignoring_the_weights_makes_the_verdict_inconclusive() -> None:
    snap = collect_snapshot(counts(5000.0, 5000.0), target(Split(0.9, 0.1)), 300.0)
    result = judge(snap)
    split = next(m for m in result.metrics if m.name == "split")
    assert split.decision == "inconclusive" and "SRM" in (split.reason or ""), split.reason
    assert result.verdict == "inconclusive"


def test_no_counts_before_the_split_settles_in_mirroring_steps_or_without_the_setting() -> None:
    early = collect_snapshot(counts(10.0, 10.0), target(Split(0.9, 0.1)), SPLIT_SETTLE_SECONDS)
    assert early.split is not None and early.split.observed is None and early.split.uncounted is None
    silent = collect_snapshot(counts(0.0, 0.0), target(Split(0.9, 0.1)), 300.0)
    assert silent.split is not None and silent.split.observed == RoutedCounts(0, 0)
    # a mirror's copies reach the candidate's backend too: its counter is not the routed share there
    mirrored = collect_snapshot(counts(10.0, 10.0), target(Split(1.0, 0.0, mirror=0.5)), 300.0)
    assert mirrored.split is not None and mirrored.split.uncounted == SPLIT_MIRROR_UNCOUNTED
    assert f"split: {SPLIT_MIRROR_UNCOUNTED}" in judge(mirrored).skipped
    provider = counts(10.0, 10.0)
    unset = collect_snapshot(provider, target(Split(0.9, 0.1), counter=None), 300.0)
    assert unset.split is not None and unset.split.uncounted == SPLIT_UNCOUNTED
    assert not any(q.startswith("label_replace(") for q in provider.queries)


def test_a_query_the_backend_refuses_makes_the_snapshot_a_failed_one() -> None:
    def refuse(promql: str) -> Measurement:
        if promql.startswith("label_replace("):
            return Measurement(error="bad_data: parse error")
        return Measurement()

    snap = collect_snapshot(StaticProvider(refuse), target(Split(0.9, 0.1)), 300.0)
    assert snap.error is not None and "parse error" in snap.error
