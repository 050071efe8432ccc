"""Query building: contract names, label checking and escaping, custom templates."""

from __future__ import annotations

import pytest

from mlrollout.analysis.queries import (
    QueryError,
    counter_delta,
    escape_label_value,
    promql_duration,
    render_custom,
    split_queries,
    track_queries,
)


def test_gateway_queries_select_track_and_revision() -> None:
    q = track_queries("gateway", "team-a", "wine", "candidate", "rev-2", 125.2)
    sel = '{namespace="team-a",model_deployment="wine",track="candidate",revision="rev-2"}'
    assert q["requests"] == counter_delta(f"mlrollout_gateway_requests_total{sel}", "126s")
    assert 'code=~"5.."' in q["errors"] and "mlrollout_gateway_requests_total" in q["errors"]
    assert q["latency"] == counter_delta(f"mlrollout_gateway_request_duration_seconds_bucket{sel}", "126s", "le")
    assert "mlrollout_model_predictions_total" in q["predictions"]
    assert "mlrollout_model_input_feature_bin_total" in q["features"]


def test_gateway_errors_include_failures_answered_without_a_5xx() -> None:
    q = track_queries("gateway", "team-a", "wine", "candidate", "rev-2", 60)
    sel = 'namespace="team-a",model_deployment="wine",track="candidate",revision="rev-2"'
    rescued = f'{sel},reason!="low_confidence",answered=~"stable|backup|default"'
    assert q["rescued_failures"] == counter_delta(f"mlrollout_gateway_fallback_requests_total{{{rescued}}}", "60s")
    # the requests stable answered for the candidate: the same query the traffic-split check moves back
    assert q["answered_by_stable"] == counter_delta(
        f'mlrollout_gateway_fallback_requests_total{{{sel},answered="stable"}}', "60s"
    )
    assert q["answered_by_stable"] == split_queries("team-a", "wine", "rev-1", "rev-2", 60)["answered_by_stable"]


def test_model_source_uses_the_servers_series() -> None:
    q = track_queries("model", "ns", "md", "candidate", "abc", 60)
    assert "mlrollout_model_inference_requests_total" in q["requests"]
    assert "mlrollout_model_inference_duration_seconds_bucket" in q["latency"]
    assert "rescued_failures" not in q and "answered_by_stable" not in q  # model servers see no fallbacks


@pytest.mark.parametrize(
    ("namespace", "name", "track", "revision"),
    [
        ('ns"} or vector(1) #', "md", "stable", "r"),
        ("ns", 'md",track=~".*', "stable", "r"),
        ("ns", "md", "stable|candidate", "r"),
        ("ns", "md", "stable", 'r"}[5m]) + on() vector(1e9'),
        ("NS", "md", "stable", "r"),
        ("ns", "md", "stable", "r\n"),
    ],
)
def test_unsafe_label_values_are_refused(namespace: str, name: str, track: str, revision: str) -> None:
    with pytest.raises(QueryError):
        track_queries("gateway", namespace, name, track, revision, 60)


def test_counter_delta_is_exact_without_resets_and_uses_increase_after_one() -> None:
    q = counter_delta('c{a="b"}', "60s", "le")
    assert q.startswith("sum by (le) (")
    assert '(c{a="b"} - c{a="b"} offset 60s) and (resets(c{a="b"}[60s]) == 0)' in q
    assert '(c{a="b"} unless c{a="b"} offset 60s)' in q
    assert 'increase(c{a="b"}[60s]) and (resets(c{a="b"}[60s]) > 0)' in q
    assert counter_delta("c", "5s").startswith("sum ((")


def test_escaping() -> None:
    assert escape_label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_durations() -> None:
    assert promql_duration(0.2) == "1s"
    assert promql_duration(60) == "60s"
    for bad in (0, -5, float("inf"), float("nan")):
        with pytest.raises(QueryError):
            promql_duration(bad)


def test_custom_templates_fill_only_known_placeholders() -> None:
    template = (
        'avg_over_time(x{namespace="{{namespace}}",md="{{ modelDeployment }}",t="{{track}}",r="{{revision}}"}'
        "[{{window}}])"
    )
    out = render_custom(
        template, namespace="ns", model_deployment="md", track="stable", revision="r1", window_seconds=30
    )
    assert out == 'avg_over_time(x{namespace="ns",md="md",t="stable",r="r1"}[30s])'
    with pytest.raises(QueryError, match="unknown placeholder"):
        render_custom("x{a='{{secret}}'}", namespace="ns", model_deployment="md", track="stable", revision="r",
                      window_seconds=30)  # fmt: skip
    with pytest.raises(QueryError):
        render_custom("{{namespace}", namespace="ns", model_deployment="md", track="stable", revision="r",
                      window_seconds=30)  # fmt: skip
    with pytest.raises(QueryError):
        render_custom("{{track}}", namespace="ns", model_deployment="md", track='x"', revision="r", window_seconds=3)
